"""Code coverage of a run: .dat files merged by verilator_coverage, counts summed, a summary per block."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hardwire.code_coverage import merge_run, process_names, read_points, uncovered_ranges
from hardwire.golden.errors import HardwireError

KEY = "0123456789abcdef0123456789abcdef"
STAGING = f"/cache/builds/.{KEY}.building.x1y2/"
TILE, CHIP = f"{STAGING}parts/Vhw_tile_part/src/hw_tile.v", f"{STAGING}src/hw_chip.v"


def point(path, line, kind, count, lines="", comment="block", column=1, hier="TOP.hw_chip.u_tile00.hw_tile"):
    page = {"line": "v_line", "branch": "v_branch", "toggle": "v_toggle"}[kind]
    module = "hw_tile" if path == TILE else "hw_chip"
    keys = [("f", path), ("l", line), ("n", column), ("t", kind), ("page", f"{page}/{module}"), ("o", comment)]
    keys += [("S", lines)] if lines else []
    keys += [("h", hier)]
    return "C '" + "".join(f"\x01{k}\x02{v}" for k, v in keys) + f"' {count}\n"


def dat(points) -> str:
    return "# SystemC::Coverage-3\n" + "".join(points)


# (path, line, kind, lines covered, comment, counts in the first file and in the second)
POINTS = [
    (TILE, 10, "line", "10-12", "block", 3, 0),
    (TILE, 20, "line", "20", "block", 0, 0),
    (TILE, 21, "branch", "21-22", "if", 0, 0),
    (TILE, 30, "line", "30", "block", 0, 5),  # covered by the second file alone
    (TILE, 5, "toggle", "", "x[0]:0->1", 1, 0),
    (TILE, 5, "toggle", "", "x[0]:1->0", 0, 0),
    (CHIP, 7, "line", "7", "block", 2, 2),
    (CHIP, 3, "toggle", "", "y:0->1", 0, 1),
    (CHIP, 3, "toggle", "", "y:1->0", 0, 0),
]


def write_pair(directory):
    files = []
    for n in (0, 1):
        path = directory / "workers" / f"gw{n}" / f"hw-tiny.{KEY}.{100 + n}.0.dat"
        path.parent.mkdir(parents=True)
        path.write_text(dat(point(p, line, kind, counts[n], lines, comment, column=i)
                            for i, (p, line, kind, lines, comment, *counts) in enumerate(POINTS)))
        files.append(path)
    return files


def test_merged_counts_are_the_sums_and_the_blocks_are_summarised(tmp_path):
    files = write_pair(tmp_path)
    blocks = merge_run(tmp_path, files)
    first, second = (read_points(f) for f in files)
    merged = read_points(tmp_path / "coverage.dat")
    published = {key.replace(f"/.{KEY}.building.x1y2/".encode(), f"/{KEY}/".encode()) for key in first}
    assert set(merged) == published  # the same points, named by the build's published directory
    for key, count in first.items():
        assert merged[key.replace(f"/.{KEY}.building.x1y2/".encode(), f"/{KEY}/".encode())] == count + second[key]
    assert blocks == {
        "hw_chip": {"lines_hit": 1, "lines_total": 1, "toggles_hit": 1, "toggles_total": 2, "uncovered": [],
                    "lines_waived": 0, "waived": []},
        "hw_tile": {"lines_hit": 4, "lines_total": 7, "toggles_hit": 1, "toggles_total": 2,
                    "uncovered": ["hw-tiny/hw_tile.v:20-22"], "lines_waived": 0, "waived": []},
    }
    summary = json.loads((tmp_path / "code_coverage.json").read_text())
    assert summary["blocks"] == blocks
    assert summary["merged_from"] == [f"workers/gw0/{files[0].name}", f"workers/gw1/{files[1].name}"]
    info = (tmp_path / "coverage.info").read_text()
    assert f"SF:/cache/builds/{KEY}/parts/Vhw_tile_part/src/hw_tile.v" in info
    assert "DA:5," not in info and "DA:3," not in info  # toggles stay out of lcov's line records


def test_uncovered_ranges_break_at_covered_lines():
    assert uncovered_ranges({1: 0, 2: 0, 4: 0, 5: 3, 6: 0, 9: 1}) == [(1, 4), (6, 6)]
    assert uncovered_ranges({1: 1}) == []


def test_lines_are_named_after_their_process(tmp_path):
    source = tmp_path / "hw_tile.v"
    source.write_text("module hw_tile (\n    clk\n);\nalways @(posedge clk) begin: add_unit0_lane0_add\n"
                      "    if (a) begin: inner\n        x <= 1;\n    end\nend\n\nassign y = x;\nendmodule\n")
    assert process_names(source) == ["", "", "", "add_unit0_lane0_add", "add_unit0_lane0_add", "add_unit0_lane0_add",
                                     "add_unit0_lane0_add", "add_unit0_lane0_add", "", "", ""]
    assert process_names(tmp_path / "gone.v") == []


def test_a_broken_file_fails_loudly(tmp_path):
    """verilator_coverage itself skips what it cannot read: a file cut short must not lose counts silently."""
    good, _ = write_pair(tmp_path)
    bad = tmp_path / f"hw-tiny.{KEY}.1.0.dat"
    bad.write_text(good.read_text()[:-40])
    with pytest.raises(HardwireError, match="line 10 is not a coverage point"):
        merge_run(tmp_path, [good, bad])
    bad.write_text("C 'x' 1\n")
    with pytest.raises(HardwireError, match="not a Verilator coverage file"):
        merge_run(tmp_path, [bad])
    with pytest.raises(HardwireError, match="does not exist"):
        merge_run(tmp_path, [tmp_path / "gone.dat"])
    with pytest.raises(HardwireError, match="no coverage .dat files"):
        merge_run(tmp_path, [])


def run_pytest(tmp_path, *args, **env_changes):
    (tmp_path / "test_none.py").write_text("def test_asks(hw_coverage):\n    assert hw_coverage\n")
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", **env_changes}
    env.pop("PYTEST_XDIST_WORKER", None)  # this test may itself run inside a worker
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "hardwire.regression_plugin", "-p", "no:cacheprovider",
                           "-p", "no:xdist", *args, "test_none.py"], cwd=tmp_path, capture_output=True, text=True,
                          env=env, timeout=300)


def test_coverage_without_a_run_dir_or_the_tool_stops_at_the_start(tmp_path):
    result = run_pytest(tmp_path, "--hw-coverage")
    assert result.returncode == pytest.ExitCode.USAGE_ERROR and "--hw-coverage needs --hw-run-dir" in result.stderr
    result = run_pytest(tmp_path, "--hw-run-dir", "run", HARDWIRE_COVERAGE="1", PATH=str(Path(sys.executable).parent))
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, result.stdout + result.stderr
    assert "verilator_coverage is not on PATH" in result.stderr


def test_a_run_that_built_no_chip_for_coverage_says_so(tmp_path):
    result = run_pytest(tmp_path, "--hw-run-dir", "run", HARDWIRE_COVERAGE="1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "code coverage: no test built a chip for coverage" in result.stdout
    assert not (tmp_path / "run" / "code_coverage.json").exists()
