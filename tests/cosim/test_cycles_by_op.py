"""The chip's performance probe: every cycle of a token counted on the RTL and charged to one op.

The counts come from the chip's perf port (rtl/chip.py), sampled by the capture loop in every cycle;
the labels from the metal's programs (cosim/cycles_by_op.py).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hardwire.cosim.chip_sim import ChipSim, metal_maps
from hardwire.cosim.cycles_by_op import MATMUL_OPS, OPS, address_labels, split
from hardwire.cosim.generation import generate
from hardwire.golden.errors import HardwireError
from hardwire.golden.gguf_model import load_model
from hardwire.golden.synth import SynthSpec, write_synthetic
from hardwire.rtl import chip, metal
from hardwire.rtl.die import get_die
from hardwire.rtl.isa import SILU_EPILOGUE, Op
from hardwire.rtl.units.vector import SILU_LATENCY

DIE = get_die("hw-tiny")
SPEC = SynthSpec(layers=2, d_model=128, d_ffn=256, heads=2, kv_heads=1, vocab=301, seed=4)
PIPELINE = 16  # cycles a MATMUL may spend in RUN after its last read: the lanes' latency and the write


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return write_synthetic(SPEC, tmp_path_factory.mktemp("cycles_model") / "m.gguf")


@pytest.fixture(scope="module")
def measured(model_path):
    """(metal, every TokenRun) of a bit-exact generation on hw-tiny."""
    model = load_model(model_path)
    image = metal.generate(model, DIE)
    sim = ChipSim(DIE, metal_maps(image)[0])
    runs = []
    gen = generate(model, sim, [3, 257, 42], 3, observe=lambda position, run, trace: runs.append(run))
    assert gen.bit_exact and len(runs) == 5
    return image, runs


def program_of(image, unit: int):
    return image.programs["head" if unit == chip.HEAD_TAG else chip.unit_name(unit)]


def assert_plausible(by_op: dict[str, int]) -> None:
    """Every projection and the LM head ran, and so did each op a layer always has (without adapters the SiLU
    gate is the gate|up MATMUL's epilogue: its SILU instruction is stepped over)."""
    always = (*MATMUL_OPS, "attention", "norm", "rope", "residual", "rq", "embed", "argmax",
              "link", "control")
    assert [op for op in always if by_op[op] <= 0] == []
    assert by_op["silu"] == 0


def test_every_cycle_of_every_token_is_charged_to_one_op(measured):
    image, runs = measured
    labels = address_labels(image)
    for run in runs:
        by_op = split(run.cycle_counts, labels, run.cycles)
        assert list(by_op) == list(OPS)
        assert sum(by_op.values()) == run.cycles == run.cycle_counts.total
        assert_plausible(by_op)
        assert by_op["lora"] == 0  # no adapter: the sequencer steps over every adapter pass
    first, last = (split(run.cycle_counts, labels, run.cycles) for run in (runs[0], runs[-1]))
    assert last["attention"] > first["attention"]  # more positions to attend to
    assert {op: n for op, n in last.items() if op != "attention"} == \
        {op: n for op, n in first.items() if op != "attention"}


def test_the_probe_shows_the_address_of_the_instruction_that_runs(measured):
    """A MATMUL's RUN cycles at its own address: one read a cycle for n x groups beats, then the pipeline;
    every projection's MATMUL of every layer, and the LM head, is counted there."""
    image, runs = measured
    for run in runs:
        matmuls = set()
        for (unit, pc, in_run), n in run.cycle_counts.at.items():
            ins = program_of(image, unit)[pc]
            if in_run and ins.op == Op.MATMUL:
                matmuls.add((unit, pc))
                drain = PIPELINE + (1 + SILU_LATENCY if ins.aux & SILU_EPILOGUE else 0)  # the last up block's f
                assert ins.n * ins.groups < n <= ins.n * ins.groups + drain, (unit, pc, ins)
        expected = {(unit, pc) for unit in [*range(SPEC.layers), chip.HEAD_TAG]
                    for pc, ins in enumerate(program_of(image, unit)) if ins.op == Op.MATMUL and not ins.sram}
        assert matmuls == expected


def test_a_missing_or_mislabelled_address_fails_the_check(measured):
    image, runs = measured
    labels, run = address_labels(image), runs[-1]
    counts = run.cycle_counts
    first_matmul = next(pc for pc, ins in enumerate(image.programs["tile00"]) if ins.op == Op.MATMUL)
    missing = {unit: list(program) for unit, program in labels.items()}
    missing[0][first_matmul] = None
    with pytest.raises(HardwireError, match=f"unit 0 at microcode address {first_matmul},"):
        split(counts, missing, run.cycles)
    shifted = {unit: program[1:] for unit, program in labels.items()}  # a probe one address late
    with pytest.raises(HardwireError, match="where its program has no instruction that runs"):
        split(counts, shifted, run.cycles)
    with pytest.raises(HardwireError, match=f"add up to {run.cycles}, not the token's {run.cycles + 1}"):
        split(counts, labels, run.cycles + 1)
    swapped = {unit: ["o" if label == "qkv" else label for label in program] for unit, program in labels.items()}
    by_op = split(counts, swapped, run.cycles)
    with pytest.raises(AssertionError, match="qkv"):
        assert_plausible(by_op)


def test_run_json_and_the_table_report_cycles_by_op(model_path):
    base = [sys.executable, "-m", "hardwire.cli", "run", "--model", str(model_path), "--die", DIE.name,
            "--prompt-ids", "3,257", "--tokens", "3"]
    result = subprocess.run([*base, "--json"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    per_token = report["cycles_by_op_per_token"]
    assert report["bit_exact"] and len(per_token) == 3 and all(list(t) == list(OPS) for t in per_token)
    for by_op in per_token:
        assert_plausible(by_op)
    assert report["cycles_by_op"] == {op: round(sum(t[op] for t in per_token) / 3, 1) for op in OPS}
    totals = [sum(t.values()) for t in per_token]  # each token's cycles: one more position to attend to each
    assert totals == sorted(totals) and abs(totals[0] - report["cycles_per_token"]) < 0.02 * totals[0]
    human = subprocess.run(base, capture_output=True, text=True, timeout=600)
    assert human.returncode == 0, human.stderr
    assert "cycles by op" in human.stdout and "gate_up" in human.stdout and "cycles_by_op_per_token" not in human.stdout
