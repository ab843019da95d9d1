"""Every way IntTensor.matmul computes section 3 gives the int64 path's integers.

The float path serves one position from a (32, rows) layout and a batch from (rows, 32), splits
Q8_0's activations into bytes, and skips the row saturation when no row can reach it; large
exponents take the int64 fallback. Activations here follow the signs of one row's codes, so
that row's block sums pass 2**24, where a float32 sum would round.
"""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType as QT

from hardwire.golden.block_matmul import IntTensor
from hardwire.golden.gguf_model import QuantTensor

CODES = {QT.Q8_0: (-128, 127), QT.Q4_0: (-8, 7), QT.Q4_1: (0, 15)}
SCALES = [0x3C00, 0x2E66, 0x0001, 0x1234, 0xB800]  # 1.0, 0.1, the smallest subnormal, 2**-14-ish, -0.5
OFFSETS = [0xBE00, 0x8001, 0x3555]  # -1.5, minus the smallest subnormal, 0.333


def random_tensor(rng, qtype, rows=7, nb=3):
    lo, hi = CODES[qtype]
    codes = rng.integers(lo, hi + 1, (rows, nb, 32))
    d = rng.choice(SCALES, (rows, nb)).astype(np.uint16)
    m = rng.choice(OFFSETS, (rows, nb)).astype(np.uint16) if qtype == QT.Q4_1 else None
    return codes, IntTensor(QuantTensor(qtype, codes.astype(np.int8), d, m))


def large_sum_activations(rng, codes, T):
    signs = np.sign(codes[0].reshape(1, -1))
    return signs * rng.integers(16384, 32768, (T, signs.size))


@pytest.mark.parametrize("qtype", list(CODES))
@pytest.mark.parametrize("e", [-40, -12, -4, 0, 12])
def test_one_position_and_batch_equal_the_int64_path(qtype, e):
    rng = np.random.default_rng(abs(e) + 100 * list(CODES).index(qtype))
    codes, t = random_tensor(rng, qtype)
    T = 4
    am = large_sum_activations(rng, codes, T)
    ae = e + rng.integers(-2, 3, (T, t.nb))
    want = t.matmul_exact(am, ae)
    assert t.matmul(am, ae).tolist() == want.tolist()
    for i in range(T):
        assert t.matmul(am[i:i + 1], ae[i:i + 1]).tolist() == want[i:i + 1].tolist()


def test_the_exponents_above_reach_every_path():
    """Q8_0 with d = 1.0: -12 (+-2) needs no row saturation, -4 may saturate rows, 12 takes int64."""
    codes = np.full((2, 3, 32), 127)
    t = IntTensor(QuantTensor(QT.Q8_0, codes.astype(np.int8), np.full((2, 3), 0x3C00, np.uint16), None))
    assert t.split_act
    assert -12 + 2 <= t.e_in_range < -4 - 2 and -4 + 2 <= t.e_fast < 12 - 2
