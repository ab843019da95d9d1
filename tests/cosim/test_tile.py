"""A layer tile on Verilator, fed golden blocks: every written block is checked word for word."""

from __future__ import annotations

import numpy as np
import pytest

from hardwire.cosim.tile_sim import TileSim
from hardwire.golden import spec
from hardwire.rtl.isa import TAP_ID, Instr, Op
from hardwire.rtl.metal import UCODE_BITS, RomImage, _int_bytes

LANES = 4


def ucode_image(program: list[Instr]) -> RomImage:
    return RomImage("ucode", UCODE_BITS, 32, np.stack([_int_bytes(i.encode(), UCODE_BITS) for i in program]))


def zero_weights(depth: int = 16) -> RomImage:
    return RomImage("weights", LANES * 288, depth, np.zeros((1, LANES * 36), np.uint8))


@pytest.fixture(scope="module")
def vector_tile(tmp_path_factory):
    program = [
        Instr(Op.RECV, dst=0, n=2),
        Instr(Op.RQ, tap=TAP_ID["v"], src=0, dst=4, n=2),
        Instr(Op.ADD, tap=TAP_ID["resid_attn"], src=0, src2=0, dst=8, n=2),
        Instr(Op.SEND, src=8, n=2),
        Instr(Op.END),
    ]
    return TileSim(ucode_image(program), zero_weights(), LANES, 16, tmp_path_factory.mktemp("tile"))


def test_recv_rq_add_send(vector_tile):
    rng = np.random.default_rng(1)
    x = rng.integers(-(2**40), 2**40, (2, 32))
    x[1, :4] = [2**47 - 1, -(2**47), 0, 1]  # saturating doubles and exact small words
    run = vector_tile.run([(x[0], 0), (x[1], 0)])
    want_m, want_e = spec.rq(x, -24, 16)
    want_sum = spec.sat(2 * x, 48)
    rq_beats = [b for b in run.taps if b.op == TAP_ID["v"]]
    add_beats = [b for b in run.taps if b.op == TAP_ID["resid_attn"]]
    assert [b.block for b in rq_beats] == [0, 1] and [b.block for b in add_beats] == [0, 1]
    for b in range(2):
        np.testing.assert_array_equal(rq_beats[b].words, want_m[b])
        assert rq_beats[b].exp == want_e[b]
        np.testing.assert_array_equal(add_beats[b].words, want_sum[b])
    assert [d[0].tolist() for d in run.down] == want_sum.tolist()


@pytest.fixture(scope="module")
def layer0(synth_model):
    """The golden trace of one token and the metal of the tiny die for the synthetic model."""
    from hardwire.golden.intref import IntModel, Trace
    from hardwire.rtl import metal
    from hardwire.rtl.die import get_die

    trace = Trace()
    im = IntModel(synth_model, capacity=4)
    im.forward(np.array([7]), im.new_cache(), trace)
    return trace, metal.generate(synth_model, get_die("hw-tiny"))


@pytest.fixture(scope="module")
def output_projection_tile(layer0, synth_model, tmp_path_factory):
    _, image = layer0
    nd = synth_model.config.d_model // 32
    wo = next(i for i in image.programs["tile00"] if i.tap == TAP_ID["o"])
    program = [
        Instr(Op.RECV, dst=0, n=2 * nd),  # the residual, then the attention output
        Instr(Op.MATMUL, tap=TAP_ID["o"], src=nd, dst=2 * nd, n=nd, groups=wo.groups, rom=wo.rom, fmt=wo.fmt),
        Instr(Op.ADD, tap=TAP_ID["resid_attn"], src=0, src2=2 * nd, dst=3 * nd, n=nd),
        Instr(Op.SEND, src=3 * nd, n=nd),
        Instr(Op.END),
    ]
    return TileSim(ucode_image(program), image.roms["tile00_weights"], LANES, 16, tmp_path_factory.mktemp("wo"))


def test_output_projection_and_residual_match_the_golden_taps(layer0, output_projection_tile, synth_model):
    from hardwire.cosim.scoreboard import Scoreboard

    trace, _ = layer0
    x, _ = trace.taps[(-1, "embed", 0)]
    attn, attn_exp = trace.taps[(0, "attn", 0)]
    nd = synth_model.config.d_model // 32
    upstream = [(x[b * 32:(b + 1) * 32], 0) for b in range(nd)]
    upstream += [(attn[b * 32:(b + 1) * 32], int(attn_exp[b])) for b in range(nd)]
    run = output_projection_tile.run(upstream)
    board = Scoreboard(trace)
    for beat in run.taps:
        mismatch = board.check(0, 0, beat.op, beat.block, beat.exp, beat.words, cycle=0)
        assert mismatch is None, str(mismatch)
    assert board.checked == {(0, "o", 0): nd, (0, "resid_attn", 0): nd}
    resid, _ = trace.taps[(0, "resid_attn", 0)]
    assert np.concatenate([d[0] for d in run.down]).tolist() == resid.tolist()


def test_a_flipped_via_bit_fails_at_the_output_projection(layer0, synth_model, tmp_path):
    """One via bit of the O weights flipped in the metal: the scoreboard must stop at (0, o)."""
    from hardwire.cosim.scoreboard import Scoreboard
    from hardwire.rtl.metal import RomImage

    trace, image = layer0
    nd = synth_model.config.d_model // 32
    wo = next(i for i in image.programs["tile00"] if i.tap == TAP_ID["o"])
    good = image.roms["tile00_weights"]
    words = good.words.copy()
    words[wo.rom, 0] ^= 0x04  # lane 0, code 0, bit 2 of the first O-projection word
    program = [
        Instr(Op.RECV, dst=0, n=2 * nd),
        Instr(Op.MATMUL, tap=TAP_ID["o"], src=nd, dst=2 * nd, n=nd, groups=wo.groups, rom=wo.rom, fmt=wo.fmt),
        Instr(Op.END),
    ]
    sim = TileSim(ucode_image(program), RomImage(good.name, good.width, good.depth, words), LANES, 16, tmp_path)
    x, _ = trace.taps[(-1, "embed", 0)]
    attn, attn_exp = trace.taps[(0, "attn", 0)]
    upstream = [(x[b * 32:(b + 1) * 32], 0) for b in range(nd)]
    upstream += [(attn[b * 32:(b + 1) * 32], int(attn_exp[b])) for b in range(nd)]
    board = Scoreboard(trace)
    mismatches = [board.check(0, 0, b.op, b.block, b.exp, b.words, 0) for b in sim.run(upstream).taps]
    first = board.first_mismatch
    assert first is not None and (first.layer, first.op, first.position) == (0, "o", 0)
    assert first.index == 0  # row 0 reads lane 0's slot
    assert sum(m is not None for m in mismatches) == 1  # only the block holding row 0
