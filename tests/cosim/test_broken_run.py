"""A deliberately broken run: one via bit flipped (pytest --hw-flip) in every metal the session prints.

The chained checks fail at the flipped bit's (layer, op); the dashboard groups the failures under
one signature; both of the group's reproduce commands, run as printed, fail the same way.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from hardwire.dashboard import render
from hardwire.run_results import group_failures, load_run

ROOT = Path(__file__).resolve().parents[2]
FLIP = "tile01_weights:0:0"  # layer 1's W_q: lane 0's first code, its least significant bit
MODELS = ("q4_1-gqa2-v301", "q4_0-gqa4-untied-v517")
TESTS = [f"tests/cosim/test_chip.py::test_generation_is_bit_exact[{name}]" for name in MODELS]
# cosim.scoreboard.Mismatch as printed: by the failure text ("mismatch: ...") and by `hardwire run`
MISMATCH = re.compile(r"\(layer (\d+), op (\w+), position (\d+)\): element (\d+) expected (-?\d+), got (-?\d+) "
                      r"at cycle (\d+)")


def run(cmd: list[str], cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTEST_XDIST_WORKER", None)  # this test may itself run inside a worker
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, timeout=1800)


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    root = tmp_path_factory.mktemp("broken")
    run_dir = root / "run"
    # its own basetemp: the `hardwire run` reproduce line names a model file written there
    result = run([sys.executable, "-m", "pytest", *TESTS, "-q", "-p", "no:randomly", "-p", "no:cacheprovider",
                  "-n", "2", "--basetemp", str(root / "tmp"), "--hw-flip", FLIP, "--hw-run-dir", str(run_dir),
                  "--junitxml", str(run_dir / "junit.xml")])
    return result, load_run(run_dir)


def test_every_test_fails_at_the_flipped_layer_and_op(broken):
    result, data = broken
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert sorted(t.status for t in data.tests) == ["failed"] * len(TESTS)
    for test in data.tests:
        found = MISMATCH.search(test.text)
        assert found and found.group(1, 2) == ("1", "q"), test.text[-1500:]


def test_the_dashboard_groups_them_with_the_commands(broken):
    _, data = broken
    groups = group_failures(data.tests)
    assert len(groups) == 1 and len(groups[0].tests) == len(TESTS)
    assert "layer N, op q" in groups[0].signature
    commands = groups[0].reproductions
    assert any(c.startswith("hardwire run ") and "--via-maps" in c for c in commands), commands
    assert any(c.startswith("python -m pytest ") and f"--hw-flip {FLIP}" in c for c in commands), commands
    page = render(data)
    assert 'class="failure-group" data-count="2"' in page and f"--hw-flip {FLIP}" in page


@pytest.mark.parametrize("kind", ["hardwire run", "python -m pytest"])
def test_the_reproduce_command_fails_the_same_way(broken, kind, tmp_path):
    _, data = broken
    group = group_failures(data.tests)[0]
    first = next(t for t in group.tests if t.reproductions == group.reproductions)  # the commands' own test
    expected = MISMATCH.search(first.text).groups()
    command = next(c for c in group.reproductions if c.startswith(kind))
    argv = shlex.split(command)
    argv[0:1] = [sys.executable, "-m", "hardwire.cli"] if kind == "hardwire run" else [sys.executable]
    result = run(argv, cwd=tmp_path if kind == "hardwire run" else ROOT)  # `run` leaves its artifacts in cwd
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-2000:]
    again = MISMATCH.search(output)
    assert again and again.groups() == expected, output[-2000:]
