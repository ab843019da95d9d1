"""The metal generator: weights printed losslessly, programs that match the golden op order, clear refusals."""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType as QT

from hardwire.golden.errors import HardwireError
from hardwire.golden.gguf_model import load_model
from hardwire.golden.intref import IntModel, Trace
from hardwire.golden.synth import SynthSpec, write_synthetic
from hardwire.rtl import metal
from hardwire.rtl.die import DIES, SLOT_BITS, get_die
from hardwire.rtl.isa import LORA_PASS_LEN, LORA_PROJECTIONS, TAP_NAME, Instr, Op, executed, is_pass_head

TINY = get_die("hw-tiny")


def unpack_slot(word_bytes: np.ndarray, lane: int) -> tuple[np.ndarray, int, int]:
    slot = word_bytes[lane * SLOT_BITS // 8:(lane + 1) * SLOT_BITS // 8]
    return slot[:32], int(slot[32]) | int(slot[33]) << 8, int(slot[34]) | int(slot[35]) << 8


@pytest.mark.parametrize("quant", ["q8_0", "q4_0", "q4_1"])
def test_weights_round_trip_through_rom_words(tmp_path, quant):
    model = load_model(write_synthetic(SynthSpec(attn_quant=quant, ffn_quant=quant, embed_quant=quant, seed=5),
                                       tmp_path / "m.gguf"))
    image = metal.generate(model, TINY)
    words = image.roms["tile01_weights"].words
    program = image.programs["tile01"]
    t = model.layers[1].w_down  # rows = d_model, blocks over d_ffn
    base = next(i.rom for i in program if i.op == Op.MATMUL and i.src == metal.tile_layout(model.config).f)
    nb = t.q.shape[1]
    offset = 8 if t.qtype == QT.Q4_0 else 0
    for row in (0, 1, TINY.lanes, t.q.shape[0] - 1):
        for b in (0, nb - 1):
            codes, d, m = unpack_slot(words[base + (row // TINY.lanes) * nb + b], row % TINY.lanes)
            np.testing.assert_array_equal(codes.view(np.int8).astype(int) - offset, t.q[row, b])
            assert d == int(t.d_bits[row, b])
            assert m == (int(t.m_bits[row, b]) if t.m_bits is not None else 0)


def test_tap_order_matches_the_golden_trace(synth_model):
    trace = Trace()
    IntModel(synth_model, capacity=4).forward(np.array([3]), IntModel(synth_model, capacity=4).new_cache(), trace)
    golden_layer0 = [op for (layer, op, _pos) in trace.taps if layer == 0]
    image = metal.generate(synth_model, TINY)
    for loaded in (set(), set(LORA_PROJECTIONS), {"wo"}):  # the taps as the sequencer runs them, by adapter flags
        chip_layer0 = [TAP_NAME[i.tap] for i in executed(image.programs["tile00"], loaded) if i.tap]
        assert chip_layer0 == golden_layer0
    head = [TAP_NAME[i.tap] for i in image.programs["head"] if i.tap]
    golden_head = [op for (layer, op, _p) in trace.taps if layer in (-1, synth_model.config.n_layers)]
    assert head == golden_head


def test_every_projection_is_followed_by_its_adapter_pass(synth_model):
    """Each fused run's MATMUL is followed by the passes of its projections, in order; with no adapter
    loaded the tile steps over every pass, and over the SILU after gate|up's passes (the MATMUL's
    epilogue computes the SiLU gate)."""
    program = metal.generate(synth_model, TINY).programs["tile00"]
    slots = metal.lora_layout(synth_model.config, TINY)
    heads = [i for i, ins in enumerate(program) if is_pass_head(ins)]
    assert [LORA_PROJECTIONS[program[i].lora - 1] for i in heads] == list(LORA_PROJECTIONS)
    for i in heads:
        a, rq, b, add = program[i:i + LORA_PASS_LEN]
        proj = LORA_PROJECTIONS[a.lora - 1]
        base = max(j for j in range(i) if program[j].op == Op.MATMUL and not program[j].sram)
        assert (a.op, rq.op, b.op, add.op) == (Op.MATMUL, Op.RQ, Op.MATMUL, Op.ADD) and a.sram and b.sram
        assert (a.rom, b.rom) == (slots[proj].a_base, slots[proj].b_base) and a.src == program[base].src
        assert program[base].dst <= add.dst < program[base].dst + program[base].blocks
        assert add.src == add.dst and add.src2 == b.dst and rq.src == rq.dst == a.dst == b.src
    silu = [i for i, ins in enumerate(program) if ins.op == Op.SILU]
    assert len(silu) == 1 and program[silu[0] - LORA_PASS_LEN].lora == 1 + LORA_PROJECTIONS.index("w_up")
    assert len(executed(program, set())) == len(program) - len(heads) * LORA_PASS_LEN - len(silu)


def test_projections_of_one_format_fuse_into_one_matmul(synth_model):
    """q|k|v and gate|up each run as one MATMUL over their rows one after another, when they share a format."""
    image = metal.generate(synth_model, TINY)
    runs = metal.layer_runs(synth_model.layers[0])
    assert runs == [("wq", "wk", "wv"), ("wo",), ("w_gate", "w_up"), ("w_down",)]
    mats = [ins for ins in image.programs["tile00"] if ins.op == Op.MATMUL and not ins.sram]
    cfg = synth_model.config
    assert [ins.blocks * 32 for ins in mats] == [metal.run_rows(cfg, run) for run in runs]
    assert metal.fused_runs({"wq": 2, "wk": 2, "wv": 9, "wo": 2, "w_gate": 7, "w_up": 9, "w_down": 7}) == [
        ("wq", "wk"), ("wv",), ("wo",), ("w_gate",), ("w_up",), ("w_down",)]


def test_lora_sram_bits():
    """numerics 12.1: the die's SRAM, and SmolLM2-135M's slots at rank 64 on all seven projections of 30 layers."""
    from hardwire.golden.gguf_model import ModelConfig
    from hardwire.rtl.die import LORA_BLOCK_BITS

    s135 = get_die("hw-s135")
    assert s135.lora_sram_bits == 182_435_840 and s135.lora_sram_words == 2720
    cfg = ModelConfig(n_layers=30, d_model=576, d_ffn=1536, n_heads=9, n_kv_heads=3, vocab=49152, context=2048,
                      rope_theta=100000.0, rms_eps=1e-5)
    slots = metal.lora_layout(cfg, s135)
    words = sum(slot.a_words + slot.b_words for slot in slots.values())
    assert words * s135.lanes * LORA_BLOCK_BITS * cfg.n_layers == 159_966_720


def test_unused_tiles_pass_the_residual_on(synth_model):
    image = metal.generate(synth_model, TINY)
    assert synth_model.config.n_layers < TINY.tiles
    last = image.programs[f"tile{TINY.tiles - 1:02d}"]
    assert [i.op for i in last] == [Op.RECV, Op.SEND, Op.END]


def test_metal_is_deterministic_and_model_specific(tmp_path, synth_model):
    other = load_model(write_synthetic(SynthSpec(seed=9), tmp_path / "other.gguf"))
    a, b = metal.generate(synth_model, TINY), metal.generate(synth_model, TINY)
    assert a.sha256() == b.sha256()
    assert metal.generate(other, TINY).sha256() != a.sha256()
    assert a.roms["lut_sigmoid"].digest() == metal.generate(other, TINY).roms["lut_sigmoid"].digest()


def test_stats_count_bits(synth_model):
    stats = metal.generate(synth_model, TINY).stats()
    assert stats["tiles_used"] == synth_model.config.n_layers
    assert 0 < stats["via_bits_set"] < stats["rom_bits_used"] <= stats["via_bits"]


def test_a_model_too_big_says_what_overflows_and_by_how_much(tmp_path):
    big = load_model(write_synthetic(SynthSpec(layers=6, d_model=320, heads=5, kv_heads=5), tmp_path / "b.gguf"))
    with pytest.raises(HardwireError) as err:
        metal.check_fits(big, TINY)
    message = str(err.value)
    assert "layers 6 > tiles 4 (over by 2)" in message
    assert "d_model 320 > max_d_model 256 (over by 64)" in message


def test_smallest_die(synth_model):
    assert metal.smallest_die(synth_model).name == "hw-tiny"


def test_smollm2_fits_the_s135_dies_and_picks_the_wide_one(smollm2):
    """`hardwire demo` (smallest_die) runs SmolLM2-135M on hw-s135w: it has fewer ROM bits than hw-s135, whose
    ROM depths were sized for 8 lanes; both fit, with little slack on hw-s135w."""
    assert metal.smallest_die(smollm2).name == "hw-s135w"
    assert metal.overflows(smollm2.config, DIES["hw-s135"]) == []
    assert metal.tile_rom_words_needed(smollm2.config, DIES["hw-s135"].lanes) == 13824
    wide = DIES["hw-s135w"]
    assert metal.tile_rom_words_needed(smollm2.config, wide.lanes) == 210 <= wide.tile_rom_words
    assert metal.head_rom_words_needed(smollm2.config, wide.head_lanes, tied=True) == 864 <= wide.head_rom_words


def _config(d_model, d_ffn, heads, kv_heads, layers=32, vocab=49152):
    from hardwire.golden.gguf_model import ModelConfig

    return ModelConfig(n_layers=layers, d_model=d_model, d_ffn=d_ffn, n_heads=heads, n_kv_heads=kv_heads,
                       vocab=vocab, context=2048, rope_theta=100000.0, rms_eps=1e-5)


@pytest.mark.parametrize("cfg", [_config(960, 2560, 15, 5),  # SmolLM2-360M
                                 _config(1024, 2816, 16, 16),  # the class's corners: MHA at head_dim 64,
                                 _config(1024, 2816, 8, 8),  # and at head_dim 128
                                 _config(1024, 2816, 16, 4)], ids=["smollm2-360m", "mha64", "mha128", "gqa4"])
def test_the_m360_die_fits_the_360m_class(cfg):
    assert cfg.head_dim in (64, 128)
    assert metal.overflows(cfg, DIES["hw-m360"]) == []
    assert metal.overflows(cfg, DIES["hw-s135w"]) != []  # the class needs the bigger die


def test_wide_dies_print_and_program_a_360m_class_model(tmp_path):
    """A model of the 360M class's widest dims (two layers, a small vocabulary) on hw-m360: the metal fits its
    ROMs and every MATMUL is well-formed: row groups of `lanes` rows, `blocks` output blocks of those rows."""
    die = DIES["hw-m360"]
    spec = SynthSpec(layers=2, d_model=1024, d_ffn=2816, heads=8, kv_heads=2, vocab=1000, seed=3)
    model = load_model(write_synthetic(spec, tmp_path / "m360.gguf"))
    image = metal.generate(model, die)
    for name, rom in image.roms.items():
        assert rom.used <= rom.depth, name
    rows = {"q|k|v": 1024 + 256 + 256, "o": 1024, "gate|up": 2 * 2816, "down": 1024}
    matmuls = [i for i in image.programs["tile00"] if i.op == Op.MATMUL and not i.sram]
    assert [(i.groups, i.blocks) for i in matmuls] == [metal.matmul_shape(r, die.lanes) for r in rows.values()]
    assert [i.n for i in matmuls] == [32] * 3 + [88]
    head = [i for i in image.programs["head"] if i.op == Op.MATMUL]
    assert [(i.groups, i.blocks) for i in head] == [(1, 32)]  # 1000 rows: one 1024-row group, 32 blocks


def test_matmul_shape_counts_row_groups_and_output_blocks():
    assert metal.matmul_shape(96, 64) == (2, 3)  # a partly filled last group
    assert metal.matmul_shape(1536, 576) == (3, 48)
    assert metal.matmul_shape(301, 8) == (38, 10)  # narrow lanes: blocks = ceil(groups * lanes / 32)
    assert metal.matmul_shape(32, 576) == (1, 1)


def test_microcode_round_trip_and_field_overflow():
    ins = Instr(Op.MATMUL, tap=7, src=3, src2=4, dst=4095, n=48, groups=6144, rom=(1 << 20) - 1, fmt=2, aux=1,
                blocks=4095)
    assert Instr.decode(ins.encode()) == ins
    with pytest.raises(HardwireError, match="field dst=4096 does not fit 12 bits"):
        Instr(Op.ADD, dst=4096).encode()
