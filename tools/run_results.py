"""A regression run directory, read: test results, failure signatures, coverage, performance, history.

The run directory (tools/regression_plugin.py writes most of it):

    junit.xml                 pytest --junitxml (required)
    functional_coverage.json  merged bins: {"format": 1, "bins": {name: hits}, "unreachable": [{"bin", "reason"}]}
    code_coverage.json        optional, per RTL block:
                              {"format": 1, "blocks": {"hw_tile": {"lines_hit": 10, "lines_total": 12,
                               "toggles_hit": 80, "toggles_total": 100, "uncovered": ["tile.v:120", ...]}}}
                              (toggles_* may be left out; "lines_waived" and "waived": [{"unit", "lines",
                               "reason"}] list the lines left out of the counts as unreachable on their module);
                              written by tools/code_coverage.py with --hw-coverage,
                              beside coverage.dat (Verilator's, merged) and coverage.info (lcov, lines)
    perf.json                 optional: {"format": 1, "figures": {die: {"cycles_per_token": ..,
                               "sim_s_per_token": .., "build_s": .., "tokens": ..}}}
    history.jsonl             one JSON record per run (history_record), oldest first

Conventions read from the JUnit XML, for each failing test:
    reproduction  properties named `reproduce`, and lines of the failure text starting with "reproduce:"
                  (pytest's "E" prefix allowed); a failure may carry several (a `hardwire run` and a pytest
                  command, say), each a whole command on one line
    seeds         properties named `seed` or `*_seed`, or "seed: N", "seed=N", "--hypothesis-seed=N",
                  "@seed(N)" in the failure text
"""

from __future__ import annotations

import hashlib
import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from hardwire.cosim.functional_coverage import Coverage, group_of
from hardwire.golden.errors import HardwireError

JUNIT_FILE, COVERAGE_FILE, CODE_COVERAGE_FILE = "junit.xml", "functional_coverage.json", "code_coverage.json"
PERF_FILE, HISTORY_FILE = "perf.json", "history.jsonl"
STATUSES = ("failed", "error", "passed", "skipped")  # the order tests are listed in

_PATH = re.compile(r"(?:[A-Za-z]:)?(?:[\w.~-]*[/\\])+[\w.-]*")
_ADDRESS = re.compile(r"\b0x[0-9a-fA-F]+\b")
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
_SEED = re.compile(r"(?:--hypothesis-seed=|@seed\(|\bseed\s*[:=]\s*)(-?\d+)", re.IGNORECASE)
_REPRODUCE = re.compile(r"^(?:E\s)?\s*reproduce:\s*(.+?)\s*$", re.MULTILINE)


def failure_signature(message: str) -> str:
    """The cause of a failure with what differs between occurrences taken out: paths, addresses,
    numbers. Equal causes (the same op failing at other positions or cycles) group together."""
    line = next((s.strip() for s in message.splitlines() if s.strip()), "(no message)")
    line = _PATH.sub("<path>", line)
    line = _ADDRESS.sub("<addr>", line)
    line = _NUMBER.sub("N", line)
    return re.sub(r"\s+", " ", line)[:300]


@dataclass
class CaseResult:
    classname: str
    name: str
    status: str  # one of STATUSES
    time: float = 0.0
    message: str = ""
    text: str = ""
    properties: list[tuple[str, str]] = field(default_factory=list)

    @property
    def test_id(self) -> str:
        return f"{self.classname}::{self.name}" if self.classname else self.name

    @property
    def seeds(self) -> list[str]:
        found = [v for k, v in self.properties if k == "seed" or k.endswith("_seed")]
        found += _SEED.findall(f"{self.message}\n{self.text}")
        return sorted(set(found), key=found.index)

    @property
    def reproductions(self) -> list[str]:
        found = [value for key, value in self.properties if key == "reproduce"]
        found += _REPRODUCE.findall(f"{self.message}\n{self.text}")
        return list(dict.fromkeys(found))

    @property
    def signature(self) -> str:
        return failure_signature(self.message or self.text)


@dataclass
class FailureGroup:
    signature: str
    tests: list[CaseResult]

    @property
    def seeds(self) -> list[str]:
        return sorted({s for t in self.tests for s in t.seeds}, key=_natural)

    @property
    def reproductions(self) -> list[str]:
        """The commands of the group's first failure that has any: one cause, one place to start."""
        return next((t.reproductions for t in self.tests if t.reproductions), [])


def group_failures(tests: list[CaseResult]) -> list[FailureGroup]:
    """Failed and erroring tests by signature, the largest group first."""
    groups: dict[str, list[CaseResult]] = {}
    for test in tests:
        if test.status in ("failed", "error"):
            groups.setdefault(test.signature, []).append(test)
    return sorted((FailureGroup(sig, members) for sig, members in groups.items()),
                  key=lambda g: (-len(g.tests), g.signature))


def _natural(text: str):
    return [(1, int(part), "") if part.lstrip("-").isdigit() else (0, 0, part)
            for part in re.split(r"(-?\d+)", text) if part]


# --- reading ---------------------------------------------------------------------------------------

@dataclass
class RunData:
    run_dir: Path
    suite: dict
    tests: list[CaseResult]
    run_id: str
    coverage: Coverage | None = None
    code_coverage: dict | None = None
    perf: dict | None = None
    history: list[dict] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(t.status == status for t in self.tests)


def load_run(run_dir: Path) -> RunData:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise HardwireError(f"run directory {run_dir} does not exist")
    junit = run_dir / JUNIT_FILE
    if not junit.is_file():
        raise HardwireError(f"{junit} is missing (run pytest with --junitxml {junit})")
    suite, tests = read_junit(junit)
    coverage = Coverage.load(run_dir / COVERAGE_FILE) if (run_dir / COVERAGE_FILE).is_file() else None
    return RunData(run_dir, suite, tests, hashlib.sha256(junit.read_bytes()).hexdigest()[:16], coverage,
                   _read_code_coverage(run_dir / CODE_COVERAGE_FILE), _read_perf(run_dir / PERF_FILE),
                   read_history(run_dir / HISTORY_FILE))


def read_junit(path: Path) -> tuple[dict, list[CaseResult]]:
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise HardwireError(f"{path} is not valid JUnit XML ({exc})") from None
    if root.tag not in ("testsuite", "testsuites"):
        raise HardwireError(f"{path} is not JUnit XML (its root is <{root.tag}>)")
    suite_el = root if root.tag == "testsuite" else root.find("testsuite")
    suite = dict(suite_el.attrib) if suite_el is not None else {}
    return suite, [_test_result(case) for case in root.iter("testcase")]


def _test_result(case: ET.Element) -> CaseResult:
    props = [(p.get("name", ""), p.get("value", "")) for p in case.iter("property")]
    result = CaseResult(case.get("classname", ""), case.get("name", "?"), "passed", _float(case.get("time")),
                        properties=props)
    for tag, status in (("failure", "failed"), ("error", "error"), ("skipped", "skipped")):
        element = case.find(tag)
        if element is not None:
            result.status, result.message, result.text = status, element.get("message", ""), element.text or ""
            break
    return result


def _float(text: str | None) -> float:
    try:
        return float(text or 0)
    except ValueError:
        return 0.0


def _read_json(path: Path, what: str) -> dict | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise HardwireError(f"{path} is not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise HardwireError(f"{path} is not a {what} file (expected a JSON object)")
    return data


def _read_code_coverage(path: Path) -> dict | None:
    data = _read_json(path, "code-coverage")
    if data is None:
        return None
    blocks = data.get("blocks")
    ok = isinstance(blocks, dict) and all(
        isinstance(b, dict) and all(isinstance(b.get(k, 0), int) for k in ("lines_hit", "lines_total",
                                                                           "toggles_hit", "toggles_total"))
        and isinstance(b.get("uncovered", []), list) for b in blocks.values())
    if not ok:
        raise HardwireError(f"{path} is not a code-coverage file (blocks: name -> lines_hit, lines_total, ...)")
    return blocks


def _read_perf(path: Path) -> dict | None:
    data = _read_json(path, "performance")
    if data is None:
        return None
    figures = data.get("figures")
    if not isinstance(figures, dict) or not all(isinstance(f, dict) for f in figures.values()):
        raise HardwireError(f"{path} is not a performance file (figures: die -> {{name: value}})")
    return figures


def read_history(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise HardwireError(f"{path} line {number} is not a JSON record") from None
        if not isinstance(record, dict):
            raise HardwireError(f"{path} line {number} is not a JSON object")
        records.append(record)
    return records


# --- coverage and history figures ----------------------------------------------------------------

@dataclass
class CoverageGroup:
    name: str
    bins: dict[str, int]  # reachable bins
    unreachable: dict[str, str]
    unexpected: dict[str, int]  # declared unreachable, and hit all the same

    @property
    def covered(self) -> int:
        return sum(1 for hits in self.bins.values() if hits > 0)

    @property
    def holes(self) -> list[str]:
        return [name for name, hits in self.bins.items() if hits == 0]


def coverage_groups(coverage: Coverage) -> list[CoverageGroup]:
    groups: dict[str, CoverageGroup] = {}

    def group(name: str) -> CoverageGroup:
        return groups.setdefault(group_of(name), CoverageGroup(group_of(name), {}, {}, {}))

    for name, hits in coverage.bins.items():
        if name in coverage.unreachable:
            if hits:
                group(name).unexpected[name] = hits
        else:
            group(name).bins[name] = hits
    for name, reason in coverage.unreachable.items():
        group(name).unreachable[name] = reason
    return list(groups.values())


def percent(hit: int, total: int) -> float | None:
    return round(100.0 * hit / total, 1) if total else None


def functional_percent(coverage: Coverage | None) -> float | None:
    if coverage is None:
        return None
    groups = coverage_groups(coverage)
    return percent(sum(g.covered for g in groups), sum(len(g.bins) for g in groups))


def code_percent(blocks: dict | None) -> float | None:
    if not blocks:
        return None
    return percent(sum(b.get("lines_hit", 0) for b in blocks.values()),
                   sum(b.get("lines_total", 0) for b in blocks.values()))


def history_record(run: RunData) -> dict:
    """The run in one line of history.jsonl."""
    perf = {die: f.get("cycles_per_token") for die, f in (run.perf or {}).items() if "cycles_per_token" in f}
    return {"run": run.run_id, "timestamp": run.suite.get("timestamp", ""), "tests": len(run.tests),
            **{status: run.count(status) for status in STATUSES},
            "failure_groups": len(group_failures(run.tests)),
            "functional_coverage": functional_percent(run.coverage), "code_coverage": code_percent(run.code_coverage),
            "cycles_per_token": perf}


def append_history(run: RunData) -> bool:
    """Append this run's record unless the history already ends with it (a report written twice)."""
    record = history_record(run)
    if run.history and run.history[-1].get("run") == record["run"]:
        return False
    with (run.run_dir / HISTORY_FILE).open("a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
    run.history.append(record)
    return True


def history_with_this_run(run: RunData) -> list[dict]:
    """The history to draw: the file's records, and this run at the end if it was not appended."""
    record = history_record(run)
    if run.history and run.history[-1].get("run") == record["run"]:
        return list(run.history)
    return [*run.history, record]
