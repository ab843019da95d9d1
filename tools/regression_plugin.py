"""pytest plugin for regression runs: a run directory that `hardwire report` turns into a dashboard.

    pytest -n auto --hw-run-dir RUN --junitxml RUN/junit.xml

RUN/workers/<worker id>/ is each process's own work directory (gw0, gw1, ... under xdist;
"master" without it). At the end of the session each process writes there what its tests
recorded (fixture `run_record`): functional_coverage.json (cosim/functional_coverage.py) and
perf.json (raw samples). The controller then merges every worker's files into
RUN/functional_coverage.json and RUN/perf.json. Files of an earlier run are cleared first.

With --hw-coverage (or HARDWIRE_COVERAGE=1) the chip tests build their chips for Verilator line and
toggle coverage (fixture `hw_coverage`); each process writes the counts of its coverage builds into
its work directory (after a test, those of a build with four models or more that no test holds any
more, which it then frees; the rest when it ends), and the controller merges them into
RUN/coverage.dat, RUN/coverage.info and RUN/code_coverage.json (tools/code_coverage.py; needs
verilator_coverage, checked at the start).

--hw-flip ROM:WORD:BIT injects a fault: every metal the session prints (rtl.metal.generate) has
that one via bit flipped, a mask edit registered with rtl.metal.add_mask_edit, so the chip and
tile tests fail where the flipped bit first shows (a deliberately broken run, to see the checks
and the dashboard catch it). A metal without that ROM, or a word or bit outside it, stops the
test with an error; the reproduce lines carry the flip.

Every failing test whose failure text carries no "reproduce:" line of its own gets a JUnit
property `reproduce`: the one-line command that runs it again (tools/run_results.py reads both).
A test may record a `seed` property (record_property) when its stimulus comes from one.

xdist workers start with one BLAS thread each (unless OPENBLAS_NUM_THREADS or OMP_NUM_THREADS says
otherwise): the workers already fill the cores.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hardwire import code_coverage
from hardwire.cosim.functional_coverage import ChainedRunCoverage, Coverage, merge_files
from hardwire.golden.errors import HardwireError

COVERAGE_FILE, PERF_FILE, JUNIT_FILE, WORKERS_DIR = "functional_coverage.json", "perf.json", "junit.xml", "workers"
PERF_FORMAT = 1
RECORD = pytest.StashKey["RunRecord"]()
CODE_COVERAGE = pytest.StashKey[dict]()
COVERAGE_ENV = "HARDWIRE_COVERAGE"
REPRODUCE_LINE = re.compile(r"^(?:E\s)?\s*reproduce:", re.MULTILINE)


@dataclass
class RunRecord:
    """What this process's tests recorded: functional coverage and performance samples per die."""

    coverage: Coverage = field(default_factory=Coverage)
    perf: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def observer(self, model, sim):
        """An observer for cosim.generation.generate: bins of the run and its cycles and seconds per token."""
        bins = ChainedRunCoverage(self.coverage, model, sim.die)
        samples = self.perf.setdefault(sim.die.name, {"cycles": [], "sim_s": [], "build_s": []})
        samples["build_s"].append(sim.build_s)

        def observe(position, run, trace):
            bins(position, run, trace)
            if trace is not None:
                samples["cycles"].append(run.cycles)
                samples["sim_s"].append(run.wall_s)

        return observe

    @property
    def empty(self) -> bool:
        return not self.coverage.bins and not self.perf

    def write(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.coverage.save(directory / COVERAGE_FILE)
        (directory / PERF_FILE).write_text(json.dumps({"format": PERF_FORMAT, "samples": self.perf}) + "\n")


def merge_run_dir(run_dir: Path) -> None:
    """The controller's merge: every worker's files into the run directory's own."""
    workers = sorted((run_dir / WORKERS_DIR).glob("*"))
    coverage_files = [w / COVERAGE_FILE for w in workers if (w / COVERAGE_FILE).is_file()]
    if coverage_files:
        merge_files(coverage_files).save(run_dir / COVERAGE_FILE)
    samples: dict[str, dict[str, list[float]]] = {}
    for path in (w / PERF_FILE for w in workers if (w / PERF_FILE).is_file()):
        for die, figures in json.loads(path.read_text())["samples"].items():
            for name, values in figures.items():
                samples.setdefault(die, {}).setdefault(name, []).extend(values)
    if samples:
        figures = {die: perf_figures(s) for die, s in sorted(samples.items())}
        (run_dir / PERF_FILE).write_text(json.dumps({"format": PERF_FORMAT, "figures": figures}, indent=1) + "\n")


def perf_figures(samples: dict[str, list[float]]) -> dict:
    """Medians per token (a cold build or a slow first token does not move them) and the longest build."""
    cycles, wall, builds = samples.get("cycles", []), samples.get("sim_s", []), samples.get("build_s", [])
    out: dict = {"tokens": len(cycles)}
    if cycles:
        out["cycles_per_token"] = int(statistics.median(cycles))
    if wall:
        out["sim_s_per_token"] = round(statistics.median(wall), 4)
    if builds:
        out["build_s"] = round(max(builds), 2)
    return out


def reproduce_command(nodeid: str, flip: str | None = None) -> str:
    return f"pytest {shlex.quote(nodeid)}" + (f" --hw-flip {shlex.quote(flip)}" if flip else "")


def flip_every_metal(flip) -> Callable[[], None]:
    """Register a mask edit (rtl.metal.add_mask_edit) so that every metal printed from now on carries
    `flip` (a mutation.Flip). Returns the call that withdraws it."""
    from hardwire.cosim import mutation  # pyverilator (through chip_sim): only when a flip is asked for
    from hardwire.rtl import metal

    def flip_via_bit(image, model):
        if flip.rom not in image.roms:
            raise HardwireError(f"--hw-flip {flip.spec}: the metal of {model.config.name} on {image.die.name} has "
                                f"no ROM {flip.rom!r} (it has {', '.join(sorted(image.roms))})")
        try:
            return mutation.apply_flip(image, flip)
        except ValueError as exc:
            raise HardwireError(f"--hw-flip: {exc}") from None

    return metal.add_mask_edit(flip_via_bit)


# --- hooks and fixtures ----------------------------------------------------------------------------

def pytest_addoption(parser) -> None:
    parser.addoption("--hw-run-dir", type=Path, default=None, metavar="DIR",
                     help="regression run directory: per-worker functional coverage and performance, "
                          "merged at the end (read by `hardwire report`)")
    parser.addoption("--hw-coverage", action="store_true", default=os.environ.get(COVERAGE_ENV, "") not in ("", "0"),
                     help="Verilator line and toggle coverage of the chips the tests build, merged into the run "
                          f"directory (needs --hw-run-dir and verilator_coverage; also ${COVERAGE_ENV}=1)")
    parser.addoption("--hw-flip", default=None, metavar="ROM:WORD:BIT",
                     help="fault injection: flip this via bit (LSB 0) in every metal the tests print, "
                          "e.g. tile01_weights:0:0; a deliberately broken run")


def pytest_configure(config) -> None:
    config.stash[RECORD] = RunRecord()
    if config.getoption("hw_flip"):
        flip_every_metal(_parse_flip(config.getoption("hw_flip")))
    run_dir = config.getoption("hw_run_dir")
    if config.getoption("hw_coverage"):
        _check_code_coverage(run_dir)
    if run_dir is not None and _is_controller(config):
        shutil.rmtree(run_dir / WORKERS_DIR, ignore_errors=True)  # an earlier run's worker files
        for name in (COVERAGE_FILE, PERF_FILE, JUNIT_FILE, code_coverage.MERGED_FILE, code_coverage.INFO_FILE,
                     code_coverage.SUMMARY_FILE):  # a crashed run must not report the last one's
            (run_dir / name).unlink(missing_ok=True)


@pytest.hookimpl(tryfirst=True)  # before xdist's own sessionstart starts the workers
def pytest_sessionstart(session) -> None:
    if _distributes(session.config):
        # a BLAS pool per worker spins against the other workers: SmolLM2's golden trace took 7x as long
        for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
            os.environ.setdefault(name, "1")


def pytest_sessionfinish(session) -> None:
    config = session.config
    run_dir = config.getoption("hw_run_dir")
    if run_dir is None:
        return
    record = config.stash[RECORD]
    if not (_distributes(config) and record.empty):  # an xdist controller runs no test of its own
        record.write(run_dir / WORKERS_DIR / _worker_id(config))
    coverage = config.getoption("hw_coverage")
    if coverage:
        write_code_coverage(run_dir / WORKERS_DIR / _worker_id(config))
    if _is_controller(config):
        merge_run_dir(run_dir)
        if coverage:
            config.stash[CODE_COVERAGE] = merge_code_coverage(run_dir)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """After each test of a coverage run, the counts of the chips no test holds any more are written and
    their models let go: a process that kept every coverage model of its session ran out of memory."""
    result = yield
    config = item.config
    if config.getoption("hw_coverage") and config.getoption("hw_run_dir") is not None:
        from hardwire.cosim.verilator_build import release_coverage_models  # pyverilator: only with coverage

        directory = config.getoption("hw_run_dir") / WORKERS_DIR / _worker_id(config)
        directory.mkdir(parents=True, exist_ok=True)
        release_coverage_models(directory)
    return result


def write_code_coverage(directory: Path) -> list[Path]:
    """This process's coverage builds, one .dat file each (none when it built no chip for coverage)."""
    from hardwire.cosim.verilator_build import write_coverage_files  # pyverilator: only when coverage is on

    return write_coverage_files(directory)


def merge_code_coverage(run_dir: Path) -> dict:
    """Every process's .dat files merged (tools/code_coverage.py); {} when no test built a chip for coverage."""
    dat_files = sorted((run_dir / WORKERS_DIR).glob("*/*.dat"))
    return code_coverage.merge_run(run_dir, dat_files) if dat_files else {}


def pytest_terminal_summary(terminalreporter, config) -> None:
    if CODE_COVERAGE not in config.stash:
        return
    blocks = config.stash[CODE_COVERAGE]
    if not blocks:
        terminalreporter.write_line("code coverage: no test built a chip for coverage; nothing merged", yellow=True)
    for name, b in blocks.items():
        waived = f" ({b['lines_waived']} waived as unreachable)" if b.get("lines_waived") else ""
        terminalreporter.write_line(f"code coverage {name}: lines {b['lines_hit']}/{b['lines_total']}{waived}, "
                                    f"toggles {b['toggles_hit']}/{b['toggles_total']}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed and not _carries_reproduction(item, report):
        # JUnit reads it at teardown
        item.user_properties.append(("reproduce", reproduce_command(item.nodeid, item.config.getoption("hw_flip"))))
    return report


@pytest.fixture(scope="session")
def run_record(request) -> RunRecord:
    """This process's record: `generate(..., observe=run_record.observer(model, sim))`."""
    return request.config.stash[RECORD]


@pytest.fixture(scope="session")
def hw_coverage(request) -> bool:
    """Whether this run measures code coverage: `ChipSim(die, maps, coverage=hw_coverage)`. The process
    writes its coverage builds' counts when it ends (every instance's, kept alive until then)."""
    return request.config.getoption("hw_coverage")


@pytest.fixture(scope="session")
def worker_run_dir(request, tmp_path_factory) -> Path:
    """This process's own work directory: under the run directory when there is one."""
    config = request.config
    run_dir = config.getoption("hw_run_dir")
    if run_dir is None:
        return tmp_path_factory.mktemp(f"work-{_worker_id(config)}")
    path = run_dir / WORKERS_DIR / _worker_id(config)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _check_code_coverage(run_dir: Path | None) -> None:
    """Code coverage is asked for: say now, not after the run, why it could not be merged."""
    if run_dir is None:
        raise pytest.UsageError("--hw-coverage needs --hw-run-dir (where the coverage files go)")
    try:
        code_coverage.coverage_tool()
    except HardwireError as exc:
        raise pytest.UsageError(str(exc)) from None


def _parse_flip(text: str):
    from hardwire.cosim.mutation import Flip  # as in flip_every_metal

    try:
        return Flip.parse(text)
    except ValueError as exc:
        raise pytest.UsageError(f"--hw-flip: {exc}") from None


def _carries_reproduction(item, report) -> bool:
    return any(name == "reproduce" for name, _ in item.user_properties) or \
        REPRODUCE_LINE.search(report.longreprtext) is not None


def _worker_id(config) -> str:
    if hasattr(config, "workerinput"):
        return config.workerinput["workerid"]
    return os.environ.get("PYTEST_XDIST_WORKER", "master")


def _is_controller(config) -> bool:
    return not hasattr(config, "workerinput")


def _distributes(config) -> bool:
    return config.pluginmanager.getplugin("dsession") is not None
