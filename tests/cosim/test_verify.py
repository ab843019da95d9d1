"""`hardwire verify`: every layer on the die's tile, sharded over worker processes, results as JUnit."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from hardwire.golden.synth import SynthSpec, write_synthetic

SPEC = SynthSpec(layers=2, d_model=128, d_ffn=256, heads=2, kv_heads=1, vocab=301, seed=4)


def hardwire(*args):
    return subprocess.run([sys.executable, "-m", "hardwire.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=1200)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return write_synthetic(SPEC, tmp_path_factory.mktemp("verify") / "m.gguf")


def test_every_layer_sharded_over_two_workers(model_path, tmp_path):
    done = hardwire("verify", "--model", model_path, "--die", "hw-tiny", "--prompt", "ab", "--jobs", 2,
                    "--run-dir", tmp_path, "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)  # stdout is the JSON document alone, even while Verilator builds
    assert report["bit_exact"] is True and report["layers"] == 2 and report["layers_failed"] == []
    assert report["tap_beats_checked"] > 0 and report["positions"] >= 1
    suite = ET.parse(tmp_path / "junit.xml").getroot()
    assert [c.get("name") for c in suite.iter("testcase")] == ["layer[00]", "layer[01]"]
    assert suite.get("failures") == "0" and not list(suite.iter("failure"))
    assert len(list((tmp_path / "workers").iterdir())) >= 1  # the shards' own work directories


@pytest.mark.parametrize("args, message", [
    (("--layers", "2"), "--layers '2' is outside the model's layers 0-1"),
    (("--layers", "0-x"), "--layers must be 'all' or a list"),
    (("--jobs", "0"), "--jobs must be at least 1"),
])
def test_bad_arguments_get_one_line(model_path, tmp_path, args, message):
    done = hardwire("verify", "--model", model_path, "--die", "hw-tiny", "--run-dir", tmp_path, *args)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and message in lines[0], done.stderr
    assert not (tmp_path / "junit.xml").exists()
