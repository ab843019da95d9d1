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
from hardwire.rtl.isa import TAP_NAME, Instr, Op

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
    chip_layer0 = [TAP_NAME[i.tap] for i in image.programs["tile00"] if i.tap]
    assert chip_layer0 == golden_layer0
    head = [TAP_NAME[i.tap] for i in image.programs["head"] if i.tap]
    golden_head = [op for (layer, op, _p) in trace.taps if layer in (-1, synth_model.config.n_layers)]
    assert head == golden_head


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


def test_smollm2_fits_the_s135_die(smollm2):
    assert metal.smallest_die(smollm2).name == "hw-s135"
    assert metal.tile_rom_words_needed(smollm2.config, DIES["hw-s135"].lanes) == 13824


def test_microcode_round_trip_and_field_overflow():
    ins = Instr(Op.MATMUL, tap=7, src=3, src2=4, dst=4095, n=48, groups=6144, rom=1 << 20, fmt=2, aux=1)
    assert Instr.decode(ins.encode()) == ins
    with pytest.raises(HardwireError, match="field dst=4096 does not fit 12 bits"):
        Instr(Op.ADD, dst=4096).encode()
