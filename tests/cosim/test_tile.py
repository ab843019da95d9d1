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
