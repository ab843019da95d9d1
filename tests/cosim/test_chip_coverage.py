"""Code coverage of the hw-tiny chip under real xdist workers: a .dat file each, summed by the controller."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

from hardwire.code_coverage import read_points
from hardwire.dashboard import render
from hardwire.run_results import load_run

SUITE = r'''
import pytest

from hardwire.cosim.chip_sim import ChipSim, metal_maps
from hardwire.cosim.generation import generate
from hardwire.golden.gguf_model import load_model
from hardwire.golden.synth import SynthSpec, write_synthetic
from hardwire.rtl import metal
from hardwire.rtl.die import get_die

DIE = get_die("hw-tiny")


@pytest.mark.parametrize("seed", [1, 2])
def test_one_token(hw_coverage, seed, tmp_path):
    model = load_model(write_synthetic(SynthSpec(layers=1, seed=seed), tmp_path / "m.gguf"))
    sim = ChipSim(DIE, metal_maps(metal.generate(model, DIE))[0], coverage=hw_coverage)
    assert hw_coverage and generate(model, sim, [3, 5], n_new=1).bit_exact
'''
BLOCKS = {"hw_tile", "hw_head", "hw_chip"}
STAGING = re.compile(rb"/\.([0-9a-f]{32})\.building\.[^/]+/")  # the build's staging directory, before its rename


def published(key: bytes) -> bytes:
    """A point's key as the merge names it: the build's published directory, not its staging one."""
    return STAGING.sub(rb"/\1/", key)


@pytest.mark.nightly
def test_two_workers_coverage_is_merged_summed_and_shown(tmp_path):
    (tmp_path / "test_tiny.py").write_text(textwrap.dedent(SUITE))
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTEST_XDIST_WORKER", None)  # this test may itself run inside a worker
    cmd = [sys.executable, "-m", "pytest", "-p", "hardwire.regression_plugin", "-p", "no:cacheprovider", "-n", "2",
           "--hw-coverage", "--hw-run-dir", str(run_dir), "--junitxml", str(run_dir / "junit.xml"), "test_tiny.py"]
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=3600)
    assert result.returncode == 0, result.stdout + result.stderr
    dats = {w: list((run_dir / "workers" / w).glob("*.dat")) for w in ("gw0", "gw1")}
    assert all(len(files) == 1 for files in dats.values()), dats
    first, second = (read_points(dats[w][0]) for w in ("gw0", "gw1"))
    assert sum(first.values()) > 0 and sum(second.values()) > 0
    sums: dict[bytes, int] = {}
    for points in (first, second):
        for key, count in points.items():
            sums[published(key)] = sums.get(published(key), 0) + count
    del first, second
    merged = read_points(run_dir / "coverage.dat")
    differ = [key for key in sums if merged.get(key) != sums[key]]
    assert not differ and len(merged) == len(sums), f"{len(differ)} of {len(sums)} points are not the sums"

    summary = json.loads((run_dir / "code_coverage.json").read_text())
    assert sorted(summary["merged_from"]) == sorted(f"workers/{w}/{dats[w][0].name}" for w in dats)
    blocks = summary["blocks"]
    assert BLOCKS <= set(blocks)
    for name in BLOCKS:
        b = blocks[name]
        assert 0 < b["lines_hit"] <= b["lines_total"] and 0 < b["toggles_hit"] <= b["toggles_total"], (name, b)
    assert all(u.startswith(("hw-tiny/hw_tile.v:", "...")) for u in blocks["hw_tile"]["uncovered"])
    page = render(load_run(run_dir))
    section = page[page.index('id="code-coverage"'):]
    assert "not collected" not in section.split("</section>")[0] and "<b>hw_tile</b>" in section
