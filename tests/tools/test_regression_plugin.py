"""The regression plugin under real xdist workers: a work directory and a file each, merged by the controller."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET

import pytest

from hardwire.cosim.mutation import Flip
from hardwire.golden.errors import HardwireError
from hardwire.regression_plugin import flip_every_metal
from hardwire.rtl import metal
from hardwire.rtl.die import get_die
from hardwire.run_results import read_junit

FAKE_SUITE = r'''
import os

import pytest


@pytest.mark.parametrize("n", range(6))
def test_hits(run_record, worker_run_dir, n):
    run_record.coverage.declare(["group/never"])
    run_record.coverage.hit("group/hit", n)
    run_record.perf.setdefault("die-x", {"cycles": [], "sim_s": [], "build_s": []})["cycles"].append(100 + n)
    (worker_run_dir / f"ran-{n}").write_text(os.environ.get("PYTEST_XDIST_WORKER", "master"))
    (worker_run_dir / f"blas-{n}").write_text(os.environ.get("OPENBLAS_NUM_THREADS", "unset"))


def test_fails(record_property):
    record_property("seed", 7)
    assert 1 == 2, "(layer 0, op q, position 1): element 2 expected 3, got 4 at cycle 5"


def test_explains_itself():
    assert 1 == 2, "(layer 0, op k, position 1): element 2 expected 3, got 4 at cycle 5\nreproduce: hardwire run -x"
'''


def run_fake_suite(tmp_path, *args):
    (tmp_path / "test_fake.py").write_text(textwrap.dedent(FAKE_SUITE))
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    for name in ("PYTEST_XDIST_WORKER", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):  # this test may run in a worker
        env.pop(name, None)
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "hardwire.regression_plugin", "-p",
                             "no:cacheprovider", "--hw-run-dir", str(run_dir), "--junitxml", str(run_dir / "junit.xml"),
                             "-q", *args, "test_fake.py"], cwd=tmp_path, capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr  # two tests fail, everything else passes
    return run_dir


@pytest.mark.parametrize("args, workers, blas_threads", [(["-n", "2"], {"gw0", "gw1"}, "1"),
                                                         (["-p", "no:xdist"], {"master"}, "unset")])
def test_workers_write_their_own_files_and_the_controller_merges_them(tmp_path, args, workers, blas_threads):
    run_dir = run_fake_suite(tmp_path, *args)
    assert {p.read_text() for p in (run_dir / "workers").glob("*/blas-*")} == {blas_threads}
    assert {p.name for p in (run_dir / "workers").iterdir()} == workers
    ran = {p.name: p.read_text() for w in workers for p in (run_dir / "workers" / w).glob("ran-*")}
    assert len(ran) == 6
    assert all(f"ran-{n}" in ran for n in range(6))
    for path in (run_dir / "workers").glob("*/ran-*"):  # each test wrote into its own worker's directory
        assert path.read_text() == path.parent.name
    merged = json.loads((run_dir / "functional_coverage.json").read_text())
    assert merged["bins"] == {"group/never": 0, "group/hit": sum(range(6))}
    perf = json.loads((run_dir / "perf.json").read_text())["figures"]["die-x"]
    assert perf["cycles_per_token"] == 102 and perf["tokens"] == 6


def test_a_failure_carries_its_reproduction_and_seed_into_junit(tmp_path):
    run_dir = run_fake_suite(tmp_path, "-n", "2")
    cases = {c.get("name"): c for c in ET.parse(run_dir / "junit.xml").getroot().iter("testcase")}
    props = {name: {p.get("name"): p.get("value") for p in case.iter("property")} for name, case in cases.items()}
    assert props.pop("test_fails") == {"seed": "7", "reproduce": "pytest test_fake.py::test_fails"}
    assert props.pop("test_explains_itself") == {}  # its failure text already says how
    assert len(props) == 6 and not any(props.values())  # passing tests carry nothing
    tests = {t.name: t for t in read_junit(run_dir / "junit.xml")[1]}
    assert tests["test_explains_itself"].reproductions == ["hardwire run -x"]
    assert tests["test_fails"].reproductions == ["pytest test_fake.py::test_fails"]
    assert tests["test_fails"].seeds == ["7"]


def test_a_new_run_clears_the_last_one(tmp_path):
    run_dir = run_fake_suite(tmp_path, "-n", "2")
    (run_dir / "workers" / "gw7").mkdir()
    (run_dir / "workers" / "gw7" / "functional_coverage.json").write_text('{"bins": {"group/hit": 1000}}')
    run_fake_suite(tmp_path, "-p", "no:xdist")
    assert {p.name for p in (run_dir / "workers").iterdir()} == {"master"}
    assert json.loads((run_dir / "functional_coverage.json").read_text())["bins"]["group/hit"] == sum(range(6))


@pytest.mark.parametrize("flip, message", [
    ("tile01_weights", "--hw-flip: 'tile01_weights' is not ROM:WORD:BIT"),
    ("tile01_weights:x:3", "--hw-flip: 'tile01_weights:x:3' is not ROM:WORD:BIT"),
])
def test_a_malformed_flip_stops_the_run_in_one_line(tmp_path, flip, message):
    (tmp_path / "test_none.py").write_text("def test_nothing():\n    pass\n")
    argv = [sys.executable, "-m", "pytest", "-p", "hardwire.regression_plugin", "-p", "no:cacheprovider", "-p",
            "no:xdist", "--hw-flip", flip, "test_none.py"]
    result = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 4 and message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("flip, message", [
    ("no_such_rom:0:0", "has no ROM 'no_such_rom'"),
    ("straps:0:999", "straps[0] bit 999 is outside straps"),
])
def test_a_flip_the_metal_cannot_take_is_an_error_not_a_pass(synth_model, flip, message, request):
    request.addfinalizer(flip_every_metal(Flip.parse(flip)))
    with pytest.raises(HardwireError, match=re.escape(message)):
        metal.generate(synth_model, get_die("hw-tiny"))


def assert_flipped_in_that_bit_alone(clean, flipped) -> None:
    """tile01_weights word 2 bit 13 (byte 1, bit 5) flipped, every other via bit as it was."""
    for name, rom in clean.roms.items():
        diff = rom.words ^ flipped.roms[name].words
        assert diff.sum() == (1 << 5 if name == "tile01_weights" else 0), name
    assert (clean.roms["tile01_weights"].words ^ flipped.roms["tile01_weights"].words)[2, 1] == 1 << 5


def test_a_flipped_metal_differs_in_that_bit_alone(synth_model, request):
    clean = metal.generate(synth_model, get_die("hw-tiny"))
    request.addfinalizer(flip_every_metal(Flip("tile01_weights", 2, 13)))
    assert_flipped_in_that_bit_alone(clean, metal.generate(synth_model, get_die("hw-tiny")))
    assert Flip.parse("tile01_weights:2:13").spec == "tile01_weights:2:13"


def test_a_caller_that_imported_generate_by_name_gets_the_flip_too(synth_model):
    from hardwire.rtl.metal import generate  # bound before the flip: a wrapper of the module attribute would miss it

    clean = generate(synth_model, get_die("hw-tiny"))
    withdraw = flip_every_metal(Flip("tile01_weights", 2, 13))
    try:
        assert_flipped_in_that_bit_alone(clean, generate(synth_model, get_die("hw-tiny")))
    finally:
        withdraw()
    assert generate(synth_model, get_die("hw-tiny")).sha256() == clean.sha256()  # withdrawn: the clean metal again
