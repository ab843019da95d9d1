"""A chained run that fails leaves what it takes to debug it: both traces, a waveform window, a
command line that fails the same way."""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest

from hardwire.chip_cli import reproduce_command
from hardwire.cosim.chip_sim import ChipSim, metal_maps
from hardwire.cosim.failure import SUMMARY, replay_window, tap_key, write_chip_failure
from hardwire.cosim.generation import generate
from hardwire.cosim.mutation import Flip, flipped_maps
from hardwire.golden.gguf_model import load_model
from hardwire.golden.synth import SynthSpec, write_synthetic
from hardwire.rtl import metal
from hardwire.rtl.die import get_die
from hardwire.rtl.isa import TAP_ID

DIE = get_die("hw-tiny")
SPEC = SynthSpec(layers=2, d_model=128, d_ffn=256, heads=2, kv_heads=1, vocab=301, seed=4)
PROMPT, N_NEW = [3, 257, 42], 2
FLIP = Flip("tile01_weights", 0, 0)  # bit 0 of lane 0's first code of layer 1's W_q


@pytest.fixture(scope="module")
def failing_run(tmp_path_factory):
    """(model, the flipped via maps, the chip, its generation): a run that stops at (1, q)."""
    root = tmp_path_factory.mktemp("failing")
    model = load_model(write_synthetic(SPEC, root / "m.gguf"))
    image = metal.generate(model, DIE)
    maps = flipped_maps(metal_maps(image)[0], image, FLIP, root / "via_maps")
    sim = ChipSim(DIE, maps)
    gen = generate(model, sim, PROMPT, N_NEW)
    assert gen.mismatch is not None and (gen.mismatch.layer, gen.mismatch.op) == (1, "q"), gen.mismatch
    return model, maps, sim, gen


@pytest.fixture(scope="module")
def artifacts(failing_run, tmp_path_factory):
    model, maps, sim, gen = failing_run
    command = reproduce_command(str(model.path), DIE.name, N_NEW, prompt_ids=PROMPT, via_maps=maps)
    return write_chip_failure(tmp_path_factory.mktemp("artifacts"), DIE, maps, gen, model.config.n_layers, command)


def test_traces_hold_both_sides_of_the_failing_position(failing_run, artifacts):
    _, _, _, gen = failing_run
    m = gen.mismatch
    data = np.load(artifacts.traces)
    for side, fields in (("golden", ("mant", "exp")), ("chip", ("mant", "exp", "cycle"))):
        for field in fields:
            assert tap_key(side, 1, "q", m.position, field) in data.files, (side, field, data.files[:8])
    golden, chip = (data[tap_key(side, 1, "q", m.position, "mant")] for side in ("golden", "chip"))
    assert golden[m.index] == m.expected and chip[m.index] == m.actual and golden[m.index] != chip[m.index]
    assert data[tap_key("chip", 1, "q", m.position, "cycle")][m.index // 32] == m.cycle
    # what ran before the failing op agrees, word for word: the assembly places blocks right
    for op in ("attn_norm", "q", "k", "v", "attn", "o", "resid_attn", "ffn_norm", "ffn_act", "down", "resid_ffn"):
        np.testing.assert_array_equal(data[tap_key("chip", 0, op, m.position, "mant")][:len(
            data[tap_key("golden", 0, op, m.position, "mant")])], data[tap_key("golden", 0, op, m.position, "mant")])
    assert json.loads(str(data["mismatch"])) == dataclasses.asdict(m)
    assert (artifacts.directory / SUMMARY).is_file()


def read_vcd(path) -> tuple[dict[str, str], dict[int, dict[str, str]]]:
    """(top-level signal name -> id, time -> {id: value}) of a VCD file."""
    ids, changes, time, scope = {}, {}, None, []
    with open(path) as f:
        for line in f:
            words = line.split()
            if not words:
                continue
            if words[0] == "$scope":
                scope.append(words[2])
            elif words[0] == "$upscope":
                scope.pop()
            elif words[0] == "$var" and scope == ["TOP"]:
                ids[words[4]] = words[3]
            elif words[0].startswith("#"):
                time = int(words[0][1:])
                changes[time] = {}
            elif time is not None and words[0][0] == "b":
                changes[time][words[1]] = words[0][1:]
            elif time is not None and words[0][0] in "01xz":
                changes[time][words[0][1:]] = words[0][0]
    return ids, changes


def value_at(changes: dict[int, dict[str, str]], signal: str, time: int) -> int:
    last = None
    for t in sorted(changes):
        if t > time:
            break
        last = changes[t].get(signal, last)
    return int(last, 2)


def test_waveform_covers_the_window_with_the_tap_port(failing_run, artifacts):
    _, _, _, gen = failing_run
    m = gen.mismatch
    first, last = artifacts.window
    assert first == max(0, m.cycle - 400) and m.cycle < last <= m.cycle + 100 and artifacts.replay_matches
    ids, changes = read_vcd(artifacts.waveform)
    assert {"clk", "tap_valid", "tap_op", "tap_data", "tap_unit"} <= set(ids)
    assert min(changes) == 2 * first + 1 and max(changes) == 2 * last + 2  # only the window is dumped
    at = 2 * m.cycle + 1  # just after the rising edge of the mismatch cycle
    assert value_at(changes, ids["tap_valid"], at) == 1
    assert value_at(changes, ids["tap_op"], at) == TAP_ID["q"] and value_at(changes, ids["tap_unit"], at) == 1


def test_reproduce_line_fails_the_same_way(failing_run, artifacts, tmp_path):
    _, maps, _, gen = failing_run
    m = gen.mismatch
    line = artifacts.summary().splitlines()[-1]
    assert line.startswith("reproduce: hardwire run ") and f"--via-maps {maps.resolve()}" in line
    argv = shlex.split(line.removeprefix("reproduce: "))
    result = subprocess.run([sys.executable, "-m", "hardwire.cli", *argv[1:]], capture_output=True, text=True,
                            cwd=tmp_path, timeout=600)
    assert result.returncode == 1, result.stderr
    assert f"(layer {m.layer}, op {m.op}, position {m.position}): element {m.index} expected {m.expected}, got " \
           f"{m.actual}" in result.stderr
    assert re.search(r"^reproduce: hardwire run .*--via-maps", result.stderr, re.M), result.stderr
    assert list(tmp_path.glob("hardwire-failures/*/traces.npz"))  # the default artifacts directory


def test_window_replay_checks_the_failing_beat(failing_run, tmp_path):
    """A replay that does not show the failing beat at the mismatch cycle says so."""
    _, maps, _, gen = failing_run
    sent = (gen.prompt + gen.tokens)[:gen.failed.position] + [gen.failed.token]
    wrong = dataclasses.replace(gen.mismatch, op="logits")
    (first, last), matches = replay_window(DIE, maps, sent, wrong, tmp_path / "w.vcd", before=5, after=5)
    assert not matches and (first, last) == (wrong.cycle - 5, wrong.cycle + 5)
    (first, last), matches = replay_window(DIE, maps, sent, gen.mismatch, tmp_path / "w.vcd", before=5, after=5)
    assert matches


def test_a_failed_replay_leaves_the_other_artifacts(failing_run, tmp_path):
    model, _, _, gen = failing_run
    art = write_chip_failure(tmp_path, DIE, tmp_path / "no-maps", gen, model.config.n_layers, "hardwire run ...")
    assert art.waveform is None and "via-map directory not found" in art.waveform_error
    assert art.traces.is_file() and "waveform: none (the waveform replay failed" in art.summary()
