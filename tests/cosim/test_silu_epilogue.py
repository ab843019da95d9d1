"""The SiLU gate as the gate|up MATMUL's epilogue (rtl/isa.py SILU_EPILOGUE), and the SILU instruction that
takes over while an adapter of w_gate or w_up is loaded (an adapter joins its projection's result before the
SiLU: docs/numerics.md 12): both forms bit-exact on a narrow and a wide die, and the SILU stepped over without
adapters."""

from __future__ import annotations

import pytest

from hardwire.cosim.chip_sim import ChipSim, metal_maps
from hardwire.cosim.cycles_by_op import address_labels, split
from hardwire.cosim.generation import generate
from hardwire.golden.gguf_model import ModelConfig, load_model
from hardwire.golden.lora import load_adapter
from hardwire.golden.lora_synth import LoraSpec, write_peft
from hardwire.golden.synth import SynthSpec, write_synthetic
from hardwire.rtl import metal
from hardwire.rtl.adapter_image import adapter_image
from hardwire.rtl.die import get_die
from hardwire.rtl.isa import LORA_PROJECTIONS, SILU_EPILOGUE, TAP_ID, Instr, Op, executed

# d_ffn 160: five gate blocks, so on hw-tiny-w (two output blocks a row group) one row group holds the last
# gate block and the first up block
MODEL = SynthSpec(layers=2, d_model=96, d_ffn=160, heads=3, kv_heads=1, vocab=290, seed=42)
PROMPT, N_NEW = [3, 257, 42], 2
CFG = ModelConfig(n_layers=1, d_model=64, d_ffn=128, n_heads=2, n_kv_heads=1, vocab=64, context=8,
                  rope_theta=10000.0, rms_eps=1e-5)
W_GATE = 1 + LORA_PROJECTIONS.index("w_gate")


def _program(formats: dict[str, int], die_name: str = "hw-tiny") -> list[Instr]:
    bases = dict.fromkeys(metal.LAYER_TENSORS, 0)
    return metal.layer_program(CFG, 2, bases, {"attn_norm": 0, "ffn_norm": 0}, formats, get_die(die_name))


def _ffn_act(program: list[Instr]) -> list[Instr]:
    return [ins for ins in program if ins.tap == TAP_ID["ffn_act"]]


def test_a_fused_gate_up_run_carries_the_silu_and_a_conditional_silu_follows_its_passes():
    program = _program(dict.fromkeys(metal.LAYER_TENSORS, 2))
    layout = metal.tile_layout(CFG)
    epilogue = [ins for ins in program if ins.op == Op.MATMUL and ins.aux & SILU_EPILOGUE]
    assert len(epilogue) == 1
    mm = epilogue[0]
    assert (mm.dst, mm.src2, mm.blocks, mm.lora, mm.span) == (layout.gate_up, layout.f, 2 * CFG.d_ffn // 32, W_GATE, 1)
    silu = [i for i, ins in enumerate(program) if ins.op == Op.SILU]
    assert len(silu) == 1 and (program[silu[0]].lora, program[silu[0]].span) == (W_GATE, 1)
    assert program.index(mm) < silu[0]  # after the MATMUL and both adapter passes
    assert [ins.lora for ins in program[silu[0] - 8:silu[0]] if ins.sram and ins.lora] == [W_GATE, W_GATE + 1]

    bare = executed(program, set())  # no adapter: the MATMUL taps f, the SILU is stepped over
    assert [ins.op for ins in _ffn_act(bare)] == [Op.MATMUL] and not any(ins.op == Op.SILU for ins in bare)
    for loaded in ({"w_up"}, {"w_gate"}, {"w_gate", "w_up"}):
        adapted = executed(program, loaded)  # the adapter joins first: the SILU after the passes taps f
        assert [ins.op for ins in _ffn_act(adapted)] == [Op.SILU]
        assert not any(ins.aux & SILU_EPILOGUE for ins in adapted if ins.op == Op.MATMUL)
    assert not any(ins.op == Op.SILU for ins in executed(program, {"wq", "w_down"}))  # other projections


def test_separate_gate_and_up_runs_keep_the_silu_instruction():
    """A mixed-format layer (gate and up in different formats: two MATMULs) runs its SILU always."""
    formats = dict.fromkeys(metal.LAYER_TENSORS, 2)
    formats["w_up"] = 0
    program = _program(formats)
    assert not any(ins.op == Op.MATMUL and ins.aux & SILU_EPILOGUE for ins in program)
    silu = [ins for ins in program if ins.op == Op.SILU]
    assert len(silu) == 1 and silu[0].lora == 0 and silu[0].tap == TAP_ID["ffn_act"]
    assert silu[0] in executed(program, set())


def test_a_die_without_adapters_has_no_silu_instruction():
    bases = dict.fromkeys(metal.LAYER_TENSORS, 0)
    program = metal.layer_program(CFG, 2, bases, {"attn_norm": 0, "ffn_norm": 0}, dict.fromkeys(bases, 2))
    assert not any(ins.op == Op.SILU for ins in program)
    assert [ins.op for ins in _ffn_act(program)] == [Op.MATMUL]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_model(write_synthetic(MODEL, tmp_path_factory.mktemp("epilogue_model") / "m.gguf"))


@pytest.fixture(scope="module")
def up_adapter(model, tmp_path_factory):
    spec = LoraSpec(rank=8, alpha=16.0, targets=("up",), seed=5, b_std=0.3)
    return load_adapter(write_peft(spec, model.config, tmp_path_factory.mktemp("up_adapter") / "a"), model.config)


def _generate(sim, model):
    runs = []
    gen = generate(model, sim, PROMPT, N_NEW, observe=lambda position, run, trace: runs.append(run))
    taps = [b.words.tobytes() for run in runs for b in run.beats if b.op == TAP_ID["ffn_act"]]
    return gen, runs, taps


@pytest.mark.parametrize("die_name", ["hw-tiny", "hw-tiny-w"])
def test_the_epilogue_and_the_silu_after_an_adapter_pass_are_bit_exact(model, up_adapter, die_name,
                                                                       explain_failure):
    """Without adapters the SiLU runs in the gate|up MATMUL (the SILU instruction never runs); with an adapter
    on w_up only, the MATMUL writes gate and up, the pass joins up, and the SILU runs: every tap bit-exact."""
    die = get_die(die_name)
    image = metal.generate(model, die)
    labels = address_labels(image)
    sim = ChipSim(die, metal_maps(image)[0])
    gen, runs, base_taps = _generate(sim, model)
    assert gen.mismatch is None and not gen.missing, explain_failure(sim, gen, model, PROMPT, N_NEW)
    assert len(base_taps) == len(runs) * model.config.n_layers * (model.config.d_ffn // 32)
    for run in runs:
        by_op = split(run.cycle_counts, labels, run.cycles)
        assert by_op["silu"] == 0 and by_op["lora"] == 0 and by_op["gate_up"] > 0

    sim.load_adapter(adapter_image(up_adapter, model.config, die), up_adapter)
    gen, runs, taps = _generate(sim, model)
    assert gen.mismatch is None and not gen.missing, explain_failure(sim, gen, model, PROMPT, N_NEW)
    assert len(taps) == len(base_taps) and taps != base_taps  # the adapter on up changes f
    for run in runs:
        by_op = split(run.cycle_counts, labels, run.cycles)
        assert by_op["silu"] > 0 and by_op["lora"] > 0
