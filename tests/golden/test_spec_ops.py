"""Hand-computed vectors for every primitive and op of docs/numerics.md (the normative spec).

Every expected value below was worked out from the spec text, not by running the
reference; the arithmetic is in the comments. Section numbers (§) refer to
docs/numerics.md.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from gguf import GGMLQuantizationType as QT

from hardwire.golden import spec
from hardwire.golden.block_matmul import IntTensor
from hardwire.golden.errors import HardwireError
from hardwire.golden.gguf_model import QuantTensor
from hardwire.golden.intref import IntModel, Trace, argmax

I64_MAX, I64_MIN = 2**63 - 1, -(2**63)


def f16(x: float) -> int:
    """fp16 bit pattern of x (x must be exactly representable)."""
    h = np.float16(x)
    assert float(h) == x
    return int(h.view(np.uint16))


def block(*head, fill=0, n=32):
    """A length-n int64 vector starting with `head`, the rest `fill`."""
    v = np.full(n, fill, dtype=np.int64)
    v[: len(head)] = head
    return v


# --- §1 constants -------------------------------------------------------------------------------

def test_constants_match_spec_text():
    assert spec.BLOCK == 32
    assert (spec.ACC_BITS, spec.ACC_FRAC) == (48, 24)
    assert spec.TERM_BITS == 52 and spec.MAX_BLOCKS_PER_ROW == 512
    assert spec.ATTN_OUT_BITS == 63 and spec.RQ_IN_BITS == 63
    assert spec.NORM_GAIN_BITS == 24 and spec.RMS_EPS_FRAC == 64
    # §1: B16 activations, mantissas in [-32767, 32767]
    assert spec.ACT_BITS == 16 and spec.ACT_MAX == 32767
    # §7: scores saturate at 40 bits (LSB 2**-16: magnitude 2**23)
    assert spec.SCORE_BITS == 40
    assert spec.ROPE_FRAC == 14 and spec.SCORE_FRAC == 16 and spec.ATTN_OUT_FRAC == 48
    # §7: LOG2E_Q = round(log2(e) * 2**15) = round(1.4426950408889634 * 32768) = round(47274.08) = 47274
    assert spec.LOG2E_Q == 47274
    # §7: ATTN_SCALE = round(2**15 / sqrt(64)) = 32768 / 8 = 4096 (exact for head_dim 64)
    assert spec.attn_scale(64) == 4096
    # head_dim 32: 32768 / 5.656854 = 5792.62 -> 5793
    assert spec.attn_scale(32) == 5793
    # §8: 2**-8 grid over [-16, 16) -> 8192 entries, Q15
    assert (spec.SIGMOID_GRID_FRAC, spec.SIGMOID_ENTRIES, spec.SIGMOID_FRAC) == (8, 8192, 15)
    # §11
    assert (spec.STATUS_OK, spec.STATUS_BAD_TOKEN, spec.STATUS_KV_OVERFLOW) == (0, 1, 2)


# --- §0 floor_shift -----------------------------------------------------------------------------

@pytest.mark.parametrize("v, s, want", [
    (7, 0, 7), (-7, 0, -7), (0, 5, 0),              # shift 0 is the identity
    (3, 4, 48), (-3, 4, -48),                       # left: v * 2**s
    (7, -1, 3),                                     # 3.5 floors to 3
    (-7, -1, -4),                                   # -3.5 floors to -4 (towards -inf, not 0)
    (-1, -1, -1),                                   # -0.5 -> -1
    (-8, -3, -1), (-9, -3, -2),                     # -1.0 -> -1, -1.125 -> -2
    (5, -100, 0), (-5, -100, -1),                   # huge right shifts: 0 or -1
    (I64_MAX, -63, 0), (I64_MIN, -63, -1), (I64_MIN, -64, -1), (I64_MAX, -200, 0),
    (1, 62, 2**62), (-1, 63, I64_MIN),              # largest left shifts that still fit int64
])
def test_floor_shift_vectors(v, s, want):
    assert int(spec.floor_shift(v, s)) == want


def test_floor_shift_elementwise_shifts():
    # one shift per element: [-7 >> 1, 6 << 2, -1 >> 70, 9 * 2**0]
    got = spec.floor_shift(np.array([-7, 6, -1, 9]), np.array([-1, 2, -70, 0]))
    assert got.tolist() == [-4, 24, -1, 9]


# --- §0 sat -------------------------------------------------------------------------------------

@pytest.mark.parametrize("v, w, want", [
    (127, 8, 127), (128, 8, 127), (-128, 8, -128), (-129, 8, -128), (0, 8, 0),
    (2**47 - 1, 48, 2**47 - 1), (2**47, 48, 2**47 - 1),
    (-(2**47), 48, -(2**47)), (-(2**47) - 1, 48, -(2**47)),
    (2**53, 54, 2**53 - 1), (-(2**53) - 5, 54, -(2**53)),
    (I64_MAX, 64, I64_MAX), (I64_MIN, 64, I64_MIN),
    (5, 2, 1), (-5, 2, -2),                         # W=2: [-2, 1]
])
def test_sat_vectors(v, w, want):
    assert int(spec.sat(v, w)) == want


# --- §0 bitlen ----------------------------------------------------------------------------------

@pytest.mark.parametrize("m, want", [
    (0, 0), (1, 1), (2, 2), (3, 2), (4, 3), (255, 8), (256, 9),
    (2**53 - 1, 53), (2**53, 54), (2**53 + 1, 54),  # 2**53+1 rounds to 2**53 in float64
    (2**54 - 1, 54),                                # rounds up to 2**54 in float64; still 54 bits
    (2**62, 63), (2**62 + 1, 63), (2**63 - 513, 63),
])
def test_bitlen_vectors(m, want):
    assert spec.bitlen(np.array([m])).tolist() == [want]
    assert want == m.bit_length()


def test_bitlen_vector_mixed_small():
    assert spec.bitlen(np.array([0, 1, 5, 2**52])).tolist() == [0, 1, 3, 53]


def test_bitlen_top_of_int64():
    # 2**63-1 converts to float64 2**63 (frexp: 64); the correction must bring it back to 63
    assert spec.bitlen(np.array([2**63 - 1])).tolist() == [63]


def test_bitlen_zero_next_to_large_value():
    # a value >= 2**53 takes the corrected path; zeros beside it must still give 0
    assert spec.bitlen(np.array([0, 2**62])).tolist() == [0, 63]


# --- §1.1 rq ------------------------------------------------------------------------------------

def rq1(v, e_in, bits):
    m, e = spec.rq(np.asarray(v, dtype=np.int64).reshape(1, 32), e_in, bits)
    return m[0].tolist(), int(e[0])


def test_rq8_zero_block():
    # L = bitlen(0) = 0, s = 0: m = 0, e_out = e_in
    assert rq1(block(), -24, 8) == ([0] * 32, -24)


def test_rq8_small_block_is_exact():
    # max |v| = 127: L = 7, s = max(7 - 7, 0) = 0 -> m = v, e unchanged
    v = block(127, -127, 5, -1, 0)
    assert rq1(v, -3, 8) == (v.tolist(), -3)


def test_rq8_round_half_up_and_clamp_128():
    # max |v| = 255: L = 8, s = 1, h = 1, m = (v + 1) >> 1
    #   255 -> 256 >> 1 = 128 -> clamped to 127
    #     3 ->   4 >> 1 = 2    (1.5 rounds up)
    #     1 ->   2 >> 1 = 1    (0.5 rounds up)
    #    -1 ->   0 >> 1 = 0    (-0.5 rounds up to 0)
    #    -3 ->  -2 >> 1 = -1   (-1.5 rounds up to -1)
    #  -255 -> -254 >> 1 = -127
    #     2 ->   3 >> 1 = 1
    m, e = rq1(block(255, 3, 1, -1, -3, -255, 2), 10, 8)
    assert m[:7] == [127, 2, 1, 0, -1, -127, 1] and set(m[7:]) == {0}
    assert e == 11


def test_rq8_128_alone():
    # 128: L = 8, s = 1 -> (128 + 1) >> 1 = 64, e + 1
    assert rq1(block(128), 0, 8) == (block(64).tolist(), 1)


def test_rq8_negative_clamp():
    # -511: L = bitlen(511) = 9, s = 2, h = 2 -> (-511 + 2) >> 2 = -509 >> 2 = floor(-127.25) = -128,
    # which the symmetric clamp brings to -127; 6 -> (6 + 2) >> 2 = 2; -6 -> -4 >> 2 = -1
    assert rq1(block(-511, 6, -6), -24, 8) == (block(-127, 2, -1).tolist(), -22)


def test_rq8_per_block_exponents():
    # block 0: max 1000, L = 10, s = 3, h = 4: 1000 -> 1004 >> 3 = 125; -13 -> -9 >> 3 = -2;  e = -24 + 3
    # block 1: max 5, s = 0: unchanged; e = -10
    # block 2: zero, e stays 7
    v = np.stack([block(1000, -13), block(5, -5), block()])
    m, e = spec.rq(v, np.array([-24, -10, 7]), 8)
    assert m.tolist() == [block(125, -2).tolist(), block(5, -5).tolist(), block().tolist()]
    assert e.tolist() == [-21, -10, 7]


def test_rq16_vectors():
    # 65535: L = 16, s = 1 -> 65536 >> 1 = 32768 -> clamped to 32767
    assert rq1(block(65535, -65535), -24, 16) == (block(32767, -32767).tolist(), -23)
    # -131071: L = 17, s = 2, (-131071 + 2) >> 2 = floor(-32767.25) = -32768 -> clamped to -32767
    # 131069: (131069 + 2) >> 2 = floor(32767.75) = 32767; 6 -> 8 >> 2 = 2; -6 -> -4 >> 2 = -1
    assert rq1(block(-131071, 131069, 6, -6), 0, 16) == (block(-32767, 32767, 2, -1).tolist(), 2)
    # 2**47 - 1 (the largest ACC word): L = 47, s = 32, h = 2**31
    #   (2**47 - 1 + 2**31) >> 32 = floor(32768 - 2**-32 + 0.5) = 32768 -> 32767; e = -24 + 32 = 8
    assert rq1(block(2**47 - 1), -24, 16) == (block(32767).tolist(), 8)
    # -2**47 (the smallest ACC word): L = 48, s = 33, h = 2**32
    #   (-2**47 + 2**32) >> 33 = floor(-16384 + 0.5) = -16384; e = -24 + 33 = 9 -> exactly -2**23
    assert rq1(block(-(2**47)), -24, 16) == (block(-16384).tolist(), 9)
    # 1.0 in ACC = 2**24: L = 25, s = 10 -> (2**24 + 2**9) >> 10 = 16384, e = -14
    assert rq1(block(2**24, 3 * 2**9, -(2**9)), -24, 16) == (block(16384, 2, 0).tolist(), -14)
    # 3*2**9 >> 10 = 1.5 -> rounds up to 2;  -2**9 >> 10 = -0.5 -> rounds up to 0


def test_rq16_top_of_63_bits():
    # §1.1 inputs are at most 63 bits: v = 2**62-1, e_in = -48: L = 62, s = 47,
    # (2**62-1 + 2**46) >> 47 = 32768 -> clamped to 32767, e = -1
    assert rq1(block(2**62 - 1), -48, 16) == (block(32767).tolist(), -1)


def test_rq16_bottom_of_63_bits():
    # v = -2**62: L = 63, s = 48, (-2**62 + 2**47) >> 48 = floor(-16384 + 0.5) = -16384, e = 0
    assert rq1(block(-(2**62)), -48, 16) == (block(-16384).tolist(), 0)


# --- §2 fp16_parts ------------------------------------------------------------------------------

@pytest.mark.parametrize("bits, M, E", [
    (0x3C00, 1024, -10),      # 1.0: x = 15, f = 0 -> M = 1024, E = 15 - 25 = -10
    (0xC000, -1024, -9),      # -2.0: x = 16 -> M = -1024, E = -9
    (0x3555, 1365, -12),      # 0.333: x = 13, f = 0x155 = 341 -> M = 1365, E = -12
    (0x7BFF, 2047, 5),        # 65504 = max: x = 30, f = 1023 -> 2047 * 2**5
    (0xFBFF, -2047, 5),       # -65504
    (0x0400, 1024, -24),      # smallest normal 2**-14: x = 1 -> 1024 * 2**-24
    (0x03FF, 1023, -24),      # largest subnormal: x = 0 -> M = f, E = -24
    (0x0001, 1, -24),         # smallest subnormal 2**-24
    (0x8001, -1, -24),        # -2**-24
    (0x0000, 0, -24),         # +0 (subnormal branch)
    (0x8000, 0, -24),         # -0: M = -0 = 0, so the value is exactly 0
])
def test_fp16_parts_vectors(bits, M, E):
    m, e = spec.fp16_parts(np.array([bits], dtype=np.uint16))
    assert (int(m[0]), int(e[0])) == (M, E)
    assert M * 2.0**E == float(np.array([bits], np.uint16).view(np.float16)[0])


@pytest.mark.parametrize("bits", [0x7C00, 0xFC00, 0x7E00, 0x7C01, 0xFFFF])
def test_fp16_parts_refuses_inf_nan(bits):
    with pytest.raises(HardwireError):
        spec.fp16_parts(np.array([0x3C00, bits], dtype=np.uint16))


# --- tables -------------------------------------------------------------------------------------

def test_rsqrt_lut():
    lut = spec.rsqrt_lut()
    # §5: 1536 entries, index k = (t >> 21) - 512 for t in [2**30, 2**32)
    assert lut.shape == (1536,)
    # k = 0: 2**31 / sqrt(512.5 * 2**21) = 2**16 / sqrt(1 + 1/1024) = 65504.03 -> 65504
    assert lut[0] == 65504
    # k = 1535: 2**31 / sqrt(2047.5 * 2**21) = 2**15 * sqrt(2048 / 2047.5) = 32772.0 -> 32772
    assert lut[-1] == 32772
    # k = 768 (t >> 21 = 1280): 2**31 / sqrt(1280.5 * 2**21) = 41440.51 -> 41441
    assert lut[768] == 41441
    # 17 bits unsigned and monotone decreasing
    assert lut.max() < 2**17 and lut.min() > 0 and np.all(np.diff(lut) <= 0)


def test_exp2_lut():
    lut = spec.exp2_lut()
    assert lut.shape == (1024,)
    assert lut[0] == 65536                        # 2**16 * 2**0 (needs the 17th bit)
    assert lut[512] == 46341                      # 65536 / sqrt(2) = 46340.95
    assert lut[1023] == 32790                     # 2**16 * 2**(-1023/1024) = 32768 * 2**(1/1024) = 32790.19
    assert lut.max() < 2**17 and np.all(np.diff(lut) < 0)


def test_sigmoid_lut():
    lut = spec.sigmoid_lut()
    assert lut.shape == (8192,)
    # k = 0: sigmoid(-4095.5/256 = -15.998) * 2**15 = 0.0037 -> 0
    # k = 8191: sigmoid(15.998) * 2**15 = 32767.996 -> 32768 (2**15, 16 bits unsigned)
    assert lut[0] == 0 and lut[-1] == 32768
    # k = 4096: sigmoid(0.5/256) * 2**15 = 32768 * (0.5 + 2**-11 - tiny) = 16400.0 -> 16400
    # k = 4095: sigmoid(-0.5/256) * 2**15 -> 16368;  k = 4097: sigmoid(1.5/256) * 2**15 = 16431.9999 -> 16432
    assert (lut[4095], lut[4096], lut[4097]) == (16368, 16400, 16432)
    # sigmoid(-x) = 1 - sigmoid(x) and the grid is symmetric about 0 (midpoints +-(j + 0.5)/256):
    # the table sums to 2**15 in mirrored pairs, i.e. it crosses 1/2 exactly at gate 0
    assert np.all(lut + lut[::-1] == 32768)
    assert np.all(np.diff(lut) >= 0) and lut.min() >= 0 and lut.max() <= 2**15


def test_rope_tables():
    cos, sin = spec.rope_tables(32, 10000.0, 64)
    assert cos.shape == sin.shape == (64, 16)
    # position 0: angle 0 -> cos = 2**14 = 16384, sin = 0 for every pair
    assert np.all(cos[0] == 16384) and np.all(sin[0] == 0)
    # pair 0 has theta_0 = 10000**0 = 1, so the angle is p radians:
    # p = 1: cos 1 * 16384 = 8852.3 -> 8852, sin 1 * 16384 = 13786.6 -> 13787
    assert (cos[1, 0], sin[1, 0]) == (8852, 13787)
    # p = 33 (33 - 10*pi/2 = 1.584 rad, ~90.8 degrees): cos 33 = -0.013277 -> -217.5x -> -218; sin -> 16383
    assert (cos[33, 0], sin[33, 0]) == (-218, 16383)
    assert round(math.cos(33) * 16384) == -218 and round(math.sin(33) * 16384) == 16383
    # pair 15: theta = 10000**(-30/32) = 1.778e-4; p = 1: cos -> 16384, sin = 2.91 -> 3
    assert (cos[1, 15], sin[1, 15]) == (16384, 3)
    assert np.abs(cos).max() <= 2**14 and np.abs(sin).max() <= 2**14   # int16


# --- §5 norm gains and epsilon ------------------------------------------------------------------

def test_norm_gains_unit_vector():
    # g = 1, n = 64: g * sqrt(n) = 8 = 2**3. The smallest e_G with |8 * 2**-e_G| < 2**23 is
    # e_G = -19 (8 * 2**19 = 2**22 < 2**23, while e_G = -20 gives 2**23, not < 2**23).
    G, e = spec.norm_gains(np.ones(64, np.float32))
    assert e == -19 and G.tolist() == [2**22] * 64


def test_norm_gains_rounding_pushes_exponent():
    # n = 1: g*sqrt(1) = 8388607.75. With e_G = 0, round(8388607.75) = 2**23, not < 2**23;
    # so e_G = 1: 4194303.875 -> 4194304 = 2**22.
    G, e = spec.norm_gains(np.array([8388607.75]))
    assert (G.tolist(), e) == ([2**22], 1)


def test_norm_gains_round_half_even_and_sqrt_n():
    # n = 4, sqrt(n) = 2: scaled = [4194304.5, 0.5, 1.5, 2.5]; peak in [2**22, 2**23) -> e_G = 0
    # round_half_even: 4194304.5 -> 4194304, 0.5 -> 0, 1.5 -> 2, 2.5 -> 2
    G, e = spec.norm_gains(np.array([2097152.25, 0.25, 0.75, 1.25]))
    assert (G.tolist(), e) == ([4194304, 0, 2, 2], 0)


def test_norm_gains_negative_and_bounds(rng):
    g = rng.normal(0.0, 3.0, 576).astype(np.float32)
    G, e = spec.norm_gains(g)
    peak = np.abs(G).max()
    assert peak < 2**23 and peak >= 2**22          # max within 24 signed bits, and e_G is the smallest
    assert np.all(np.abs(G - g.astype(np.float64) * math.sqrt(576) * 2.0**-e) <= 0.5)


def test_eps_q():
    # EPS_Q = round(n * eps * 2**64): 64 * 2**-20 * 2**64 = 2**50
    assert spec.eps_q(64, 2.0**-20) == 2**50
    # 576 * 1e-5 * 2**64 = 1.0625e17 (rounded integer of the float64 product)
    assert abs(spec.eps_q(576, 1e-5) - 576 * 1e-5 * 2**64) <= 2**57 * 2**-52


# --- §3 block dot products ----------------------------------------------------------------------

def qt(qtype, codes, d, m=None):
    """QuantTensor from codes (rows, nb, 32) and fp16 bit patterns (rows, nb)."""
    return QuantTensor(qtype, np.asarray(codes, np.int8), np.asarray(d, np.uint16),
                       None if m is None else np.asarray(m, np.uint16))


def both(t: IntTensor, am, ae):
    am, ae = np.asarray(am, np.int64), np.asarray(ae, np.int64)
    fast, exact = t.matmul(am, ae), t.matmul_exact(am, ae)
    assert fast.tolist() == exact.tolist()
    return fast.tolist()


def test_matmul_q8_0_hand():
    # row 0, block 0: d = 0.5 = 1024 * 2**-11, q_j = 1, a_j = 2, e_0 = -3
    #   S = 32 * 1 * 2 = 64;  T = floor_shift(1024 * 64, -11 - 3 + 24 = 10) = 2**16 * 2**10 = 2**26  (= 4.0)
    # row 0, block 1: d = 2**-24 (subnormal 0x0001: M = 1, E = -24), q = [-3, 0...], a = [5, 0...], e_1 = -1
    #   S = -15;  T = floor_shift(-15, -24 - 1 + 24 = -1) = -15 >> 1 = -8  (floor of -7.5)
    # y = sat(2**26 - 8, 48)
    codes = np.zeros((1, 2, 32), np.int64)
    codes[0, 0] = 1
    codes[0, 1, 0] = -3
    t = IntTensor(qt(QT.Q8_0, codes, [[f16(0.5), 0x0001]]))
    am = np.concatenate([np.full(32, 2), block(5)])[None]
    assert both(t, am, [[-3, -1]]) == [[2**26 - 8]]


def test_matmul_q8_0_extreme_codes():
    # B16 activations a = 32767 (the largest mantissa), d = 1.0 (1024 * 2**-10)
    # row 0: q = 127, -127 alternating: S = 16 * 127 * 32767 - 16 * 127 * 32767 = 0 -> T = 0
    # row 1: q = 127: S = 32 * 127 * 32767 = 4064 * 32767 = 133165088 (< 2**27, the 28-bit adder tree of §3)
    #   e = -20: T = floor_shift(1024 * 133165088, -10 - 20 + 24 = -6) = 133165088 * 2**4 = 2130641408
    #   e = 0:   T = 133165088 * 2**24 ~ 2**51 -> y = sat(., 48) = 2**47 - 1
    codes = np.array([[np.tile([127, -127], 16)], [np.full(32, 127)]])
    t = IntTensor(qt(QT.Q8_0, codes, [[f16(1.0)], [f16(1.0)]]))
    assert both(t, np.full((1, 32), 32767), [[-20]]) == [[0, 2130641408]]
    assert both(t, np.full((1, 32), 32767), [[0]]) == [[0, 2**47 - 1]]
    # a = -32767, e = -30: T = floor_shift(1024 * -133165088, -16) = -133165088 / 64 = floor(-2080704.5)
    #   = -2080705 (towards -inf)
    assert both(t, np.full((1, 32), -32767), [[-30]]) == [[0, -2080705]]


def test_matmul_q4_0_hand():
    # Q4_0 codes q_j = (j % 16) - 8 in [-8, 7]; d = 1.0 = 1024 * 2**-10; a_j = 1; e = 0
    # S = 2 * sum_{k=0}^{15} (k - 8) = 2 * (120 - 128) = -16
    # T = floor_shift(1024 * -16, -10 + 0 + 24 = 14) = -16384 * 16384 = -2**28  (= -16.0)
    codes = (np.arange(32) % 16 - 8)[None, None]
    t = IntTensor(qt(QT.Q4_0, codes, [[f16(1.0)]]))
    assert both(t, np.ones((1, 32)), [[0]]) == [[-(2**28)]]
    # same weights, a_0 = -1 (others 0), e = -30: S = -1 * -8 = 8
    # T = floor_shift(1024 * 8, -10 - 30 + 24 = -16) = 8192 >> 16 = 0
    # a_0 = 1: S = -8, T = -8192 >> 16 = floor(-0.125) = -1
    assert both(t, block(-1)[None], [[-30]]) == [[0]]
    assert both(t, block(1)[None], [[-30]]) == [[-1]]


def test_matmul_q4_1_hand():
    # Q4_1: codes q_j = j % 16 in [0, 15]
    # row 0: d = 0.25 = 1024 * 2**-12, m = -1.5 = -1536 * 2**-10
    # row 1: d = +0 (0x0000), m = -2**-24 (0x8001: M = -1, E = -24)
    codes = np.array([[np.arange(32) % 16], [np.arange(32) % 16]])
    t = IntTensor(qt(QT.Q4_1, codes, [[f16(0.25)], [0x0000]], [[f16(-1.5)], [0x8001]]))
    # a_j = 1 (all 32), e = -2 (activation 0.25): S = 2 * 120 = 240, A = 32
    # row 0: T = floor_shift(1024 * 240, -12 - 2 + 24 = 10) + floor_shift(-1536 * 32, -10 - 2 + 24 = 12)
    #          = 245760 * 1024 - 49152 * 4096 = 251658240 - 201326592 = 50331648 = 3 * 2**24   (= 3.0)
    #        check: sum_j (0.25 q_j - 1.5) * 0.25 = 0.25 * (60 - 48) = 3.0
    # row 1: T = 0 + floor_shift(-1 * 32, -24 - 2 + 24 = -2) = -32 >> 2 = -8
    assert both(t, np.ones((1, 32)), [[-2]]) == [[3 * 2**24, -8]]
    # a = [1, 1, 1, 0...], e = -1 (activation 0.5): S = 0 + 1 + 2 = 3, A = 3
    # row 0: floor_shift(1024 * 3, -12 - 1 + 24 = 11) + floor_shift(-1536 * 3, -10 - 1 + 24 = 13)
    #      = 6291456 - 37748736 = -31457280 = -1.875 * 2**24  (weights -1.5, -1.25, -1.0 times 0.5)
    # row 1: floor_shift(-3, -24 - 1 + 24 = -1) = -3 >> 1 = -2   (floor of -1.5)
    assert both(t, block(1, 1, 1)[None], [[-1]]) == [[-31457280, -2]]


def test_matmul_q8_0_code_minus_128_term_saturation():
    # |-128| must not wrap in int8 when the fast path's bound is computed
    # Q8_0, 2 blocks, all codes -128, d = 65504 (M = 2047, E = 5) in both blocks
    # block 0: a = +32767, e = 0: S = -128 * 32767 * 32 = -134213632
    #   floor_shift(2047 * S, 5 + 0 + 24) ~ -2**67 -> saturates to -2**51 (TERM_BITS = 52)
    # block 1: a = -32767, e = 1: S = +134213632 -> ~ +2**68 -> saturates to 2**51 - 1
    # y = sat(-2**51 + 2**51 - 1, 48) = -1
    t = IntTensor(qt(QT.Q8_0, np.full((1, 2, 32), -128), [[0x7BFF, 0x7BFF]]))
    am = np.concatenate([np.full(32, 32767), np.full(32, -32767)])[None]
    assert t.matmul_exact(am, np.array([[0, 1]])).tolist() == [[-1]]   # the int64 path follows the spec
    with np.errstate(invalid="ignore"):
        assert t.matmul(am, np.array([[0, 1]])).tolist() == [[-1]]     # the fast path gives -2**47


def test_matmul_term_saturation_hand():
    # Q8_0 codes 127 (not -128, so the fast-path guard works), d = 65504 (M = 2047, E = 5)
    # block 0: a = -32767, e = 0: S = -133169088; 2047 * S * 2**29 ~ -2**67 -> -2**51
    # block 1: a = +32767, e = 1: ~ +2**68 -> 2**51 - 1
    # y = sat(-2**51 + 2**51 - 1, 48) = -1   (without the per-term saturation it would be ~2**67 -> 2**47 - 1)
    t = IntTensor(qt(QT.Q8_0, np.full((1, 2, 32), 127), [[0x7BFF, 0x7BFF]]))
    am = np.concatenate([np.full(32, -32767), np.full(32, 32767)])[None]
    assert both(t, am, [[0, 1]]) == [[-1]]


# --- §4 embedding and residual --------------------------------------------------------------------

def test_embed_rows_q4_1_hand(tiny_model):
    # token 1: Q4_1 codes q_i = i % 16, d = 0.25 (M = 1024, E = -12), m = -1.5 (M = -1536, E = -10)
    # x_i = floor_shift(1024 q_i, -12 + 24) + floor_shift(-1536, -10 + 24) = q_i * 2**22 - 3 * 2**23
    #     = (q_i / 4 - 1.5) in ACC
    d = tiny_model.config.d_model
    codes = np.zeros((3, d // 32, 32), np.int64)
    codes[1] = np.arange(32) % 16
    emb = qt(QT.Q4_1, codes, np.full((3, d // 32), f16(0.25)), np.full((3, d // 32), f16(-1.5)))
    im = IntModel(dataclasses.replace(tiny_model, embed=emb))
    x = im.embed_rows(np.array([1, 0]))
    assert x[0].tolist() == [(i % 16) * 2**22 - 3 * 2**23 for i in range(d)]
    assert x[1].tolist() == [-3 * 2**23] * d                       # codes 0: only the offset


def test_embed_rows_q8_0_extremes(tiny_model):
    # d = 65504 = 2047 * 2**5; x_i = floor_shift(2047 q_i, 5 + 24) (no offset term for Q8_0)
    # q = 127: 259969 * 2**29 (= 65504 * 127 = 8319008.0, just below the 2**23 ACC limit: no saturation)
    # q = -128: -262016 * 2**29 (= -8384512.0); q = 1: 2047 * 2**29 (= 65504.0)
    # (|M_d q| <= 2047 * 128 < 2**18 and E_d + 24 <= 29, so an embedding can never reach sat(., 48))
    d = tiny_model.config.d_model
    codes = np.zeros((1, d // 32, 32), np.int64)
    codes[0, 0, 0], codes[0, 0, 1], codes[0, 0, 2] = 127, -128, 1
    emb = qt(QT.Q8_0, codes, np.full((1, d // 32), 0x7BFF))
    x = IntModel(dataclasses.replace(tiny_model, embed=emb)).embed_rows(np.array([0]))
    assert x[0, :3].tolist() == [259969 * 2**29, -262016 * 2**29, 2047 * 2**29] and not x[0, 3:].any()


# --- §5 RMSNorm ---------------------------------------------------------------------------------

def test_rmsnorm_constant_vector(tiny_int):
    # n = 64, x_i = 1.0 (ACC 2**24), gains g = 1 -> (G, e_G) = (2**22, -19) (see test_norm_gains_unit_vector)
    # 1. rq(x, -24, 16): L = 25, s = 10 -> x16 = 16384, ex = -14 in both blocks
    # 2. P_b = 32 * 2**28 = 2**33; X = -14; SS = 2**34 (at 2**-28: 64 = sum x**2)
    # 3. eps: EPS_Q = 2**50 (conftest: eps = 2**-20), shift -(64 - 28) = -36 -> 2**14; SS = 2**34 + 2**14
    # 4. bitlen(SS) = 35, j = ceil(3/2) = 2, t = SS >> 4 = 2**30 + 2**10; t >> 21 = 512
    #    -> R = RSQRT_LUT[0] = 65504
    # 5. y = 16384 * 2**22 * 65504 = 65504 * 2**36, exponent -14 - 19 - 31 - 2 + 14 = -52
    #    rq(y, -52, 16): L = 16 + 36 = 52, s = 37 -> floor(65504 / 2 + 0.5) = 32752, e = -52 + 37 = -15
    #    y = 32752 / 32768 = 0.99951 (float: 1/sqrt(1 + 2**-20) = 0.9999995; the table is 2**-11 low here)
    assert tiny_int.eps_q == 2**50
    gains = spec.norm_gains(np.ones(64, np.float32))
    m, e = tiny_int.rmsnorm(np.full((1, 64), 2**24, np.int64), gains)
    assert m.tolist() == [[32752] * 64] and e.tolist() == [[-15, -15]]


def test_rmsnorm_two_block_exponents(tiny_int):
    # block 0: x = 1.0 (2**24), block 1: x = 0.5 (2**23); g = 1 -> G = 2**22, e_G = -19
    # 1. x16 = 16384 in both; ex = [-14, -15]  (2**23: L = 24, s = 9)
    # 2. P = [2**33, 2**33]; X = -14; SS = 2**33 + floor_shift(2**33, 2 * (-15 + 14)) = 2**33 + 2**31  (= 40)
    # 3. + 2**50 >> 36 = 2**14 -> SS = 2**33 + 2**31 + 2**14
    # 4. bitlen = 34, j = 1, t = SS >> 2 = 2**31 + 2**29 + 2**12; t >> 21 = 1280 -> R = RSQRT_LUT[768] = 41441
    # 5. y = 16384 * 2**22 * 41441 = 41441 * 2**36; exponents -14 - 19 - 31 - 1 + 14 = -51 and -52
    #    rq16: L = 16 + 36 = 52, s = 37, h = 2**36 -> floor(41441 / 2 + 0.5) = floor(20721.0) = 20721
    #    (20720.5 rounds half up); e = [-51 + 37, -52 + 37] = [-14, -15]
    #    -> 20721 / 2**14 = 1.26471 and 0.63235 (float: sqrt(64/40) = 1.26491 and 0.63246)
    x = np.concatenate([np.full(32, 2**24), np.full(32, 2**23)])[None].astype(np.int64)
    m, e = tiny_int.rmsnorm(x, spec.norm_gains(np.ones(64, np.float32)))
    assert m.tolist() == [[20721] * 64] and e.tolist() == [[-14, -15]]


def test_rmsnorm_zero_vector(tiny_int):
    # x = 0: x16 = 0, ex = -24, X = -24; SS = 0 + 2**50 >> (64 - 48) = 2**34 ... y = 0 everywhere
    # rq of a zero block keeps its exponent: -24 - 19 - 31 - j + 24 with SS = 2**34 -> j = 2 -> -52
    m, e = tiny_int.rmsnorm(np.zeros((1, 64), np.int64), spec.norm_gains(np.ones(64, np.float32)))
    assert np.all(m == 0) and e.tolist() == [[-52, -52]]


# --- §6 RoPE ------------------------------------------------------------------------------------

def test_rope_position_0_is_identity_up_to_rq(tiny_int):
    # head 0, block 0: acc = [3.0, -1.0, 2.5, 0...] = [3 * 2**24, -2**24, 5 * 2**23]
    # 1. rq16: max 3 * 2**24, L = 26, s = 11 -> u = [24576, -8192, 20480], e = -13
    # 2. pos 0: C = 16384, S = 0 -> u' = u * 2**14 = [3 * 2**27, -2**27, 5 * 2**26]
    # 3. rq(u', -27, 16): L = 29, s = 14 -> u' >> 14 = u exactly, e = -13
    #    -> the rq16 of the input, bit for bit. Block 1 (head 1) is zero: e = -24 - 14 = -38.
    acc = np.zeros((1, 64), np.int64)
    acc[0, :3] = [3 * 2**24, -(2**24), 5 * 2**23]
    m, e = tiny_int.rope(acc, np.array([0]), 2)
    assert m[0, :3].tolist() == [24576, -8192, 20480] and not m[0, 3:].any()
    assert e.tolist() == [[-13, -38]]


def test_rope_position_0_small_input(tiny_int):
    # acc = [5, -3] (below 2**15: rq16 is exact, u = [5, -3], e = -24)
    # u' = [5 * 2**14, -3 * 2**14]: L = 3 + 14 = 17, s = 2 -> [5 * 2**12, -3 * 2**12], e = -38 + 2 = -36
    # value 5 * 2**12 * 2**-36 = 5 * 2**-24: unchanged
    acc = np.zeros((1, 64), np.int64)
    acc[0, :2] = [5, -3]
    m, e = tiny_int.rope(acc, np.array([0]), 2)
    assert m[0, :2].tolist() == [5 * 2**12, -3 * 2**12] and e[0, 0] == -36


def test_rope_position_33_near_90_degrees(tiny_int):
    # pair 0 of head 0 rotates by 33 rad = 90.8 degrees: C = -218, S = 16383 (test_rope_tables)
    # acc = [1.0, 0, ...]: u = [16384, 0], e = -14
    # u'_0 = 16384 * -218 - 0 = -3571712 = -436 * 2**13;  u'_1 = 16384 * 16383 + 0 = 268419072 = 32766 * 2**13
    # rq(u', -28, 16): L = bitlen(268419072) = 28, s = 13, h = 2**12
    #   u'_1 -> floor(32766 + 0.5) = 32766;  u'_0 -> floor(-436 + 0.5) = -436;  e = -15
    # -> (-0.013306, 0.999939) against (cos 33, sin 33) = (-0.013277, 0.999912)
    acc = np.zeros((1, 64), np.int64)
    acc[0, 0] = 2**24
    m, e = tiny_int.rope(acc, np.array([33]), 2)
    assert m[0, :2].tolist() == [-436, 32766] and not m[0, 2:].any()
    assert e[0, 0] == -15


def test_rope_second_element_of_pair(tiny_int):
    # acc = [0, 1.0]: u = [0, 16384], e = -14; pos 1, pair 0: C = 8852, S = 13787
    # u'_0 = 0 * 8852 - 16384 * 13787 = -225886208 = -27574 * 2**13
    # u'_1 = 0 * 13787 + 16384 * 8852 = 145031168 = 17704 * 2**13
    # rq(., -28, 16): L = bitlen(225886208) = 28, s = 13 -> [-27574, 17704] (exact), e = -15
    # -> (-0.84149, 0.54028) against (-sin 1, cos 1) = (-0.84147, 0.54030)
    acc = np.zeros((1, 64), np.int64)
    acc[0, 1] = 2**24
    m, e = tiny_int.rope(acc, np.array([1]), 2)
    assert m[0, :2].tolist() == [-27574, 17704] and e[0, 0] == -15


def test_rope_half_up_rounding(tiny_int):
    # acc = [1.0, 1.0]: u = [16384, 16384], e = -14; pos 1: C = 8852, S = 13787
    # u'_0 = 16384 * (8852 - 13787) = -80855040 = -9870 * 2**13
    # u'_1 = 16384 * (13787 + 8852) = 370917376 = 45278 * 2**13 -> L = 29, s = 14, h = 2**13
    #   u'_1 -> floor(22639 + 0.5) = 22639;  u'_0 -> -80855040 / 2**14 = -4935 -> floor(-4935 + 0.5) = -4935
    # e = -28 + 14 = -14
    acc = np.zeros((1, 64), np.int64)
    acc[0, :2] = 2**24
    m, e = tiny_int.rope(acc, np.array([1]), 2)
    assert m[0, :2].tolist() == [-4935, 22639] and e[0, 0] == -14


# --- §7 attention -------------------------------------------------------------------------------

def cache_with(im, keys, values, ke, ve):
    """A cache whose layer 0 holds the given B16 keys/values (one 32-wide KV head) at positions 0.."""
    c = im.new_cache()
    for t, (k, v) in enumerate(zip(keys, values, strict=True)):
        c.k[0, t], c.v[0, t] = k, v
        c.ke[0, t], c.ve[0, t] = ke, ve
    c.length = len(keys)
    return c


def test_attention_one_position(tiny_int):
    # one cached position: p_0 = 2**16, RCP = floor(2**48 / 2**16) = 2**32, w = (2**16 * 2**32) >> 24 = 2**24
    # o_i = 2**24 * v_i * 2**(ev + 24) with v = [3, -2, 1, 0...], ev = -10 -> o_i = v_i * 2**38
    # rq(o, -48, 16): L = bitlen(3) + 38 = 40, s = 25
    #   -> m_i = (v_i * 2**38 + 2**24) >> 25 = 2**13 v_i; e = -23
    # -> 2**13 v_i * 2**-23 = v_i * 2**-10: the value vector requantized. Both query heads share KV head 0.
    v = block(3, -2, 1)
    cache = cache_with(tiny_int, [block(50, -7, 9)], [v], -6, -10)
    q = np.tile(block(-100, 20, 3), 2)[None]
    m, e = tiny_int.attention(q, np.array([[-3, 2]]), cache, 0, np.array([0]))
    assert m[0].tolist() == (2**13 * v).tolist() * 2 and e.tolist() == [[-23, -23]]


def test_attention_two_equal_scores(tiny_int):
    # keys at positions 0 and 1 are equal, so s_0 = s_1 whatever q is: d = 0, u = 0 -> p = EXP2_LUT[0] = 2**16
    # sum p = 2**17, RCP = 2**48 / 2**17 = 2**31, w_t = (2**16 * 2**31) >> 24 = 2**23 (1/2 each)
    # v_0 = [10, -6], v_1 = [20, 2], ev = -5: o = 2**23 * (v_0 + v_1) * 2**19 = [30 * 2**42, -4 * 2**42]
    # rq(o, -48, 16): L = bitlen(30) + 42 = 47, s = 32, h = 2**31
    #   30 * 2**42 -> 30 * 2**10 = 30720;  -4 * 2**42 -> -4096;  e = -16
    # -> [15/32, -1/16] = the mean of [10, -6] * 2**-5 and [20, 2] * 2**-5
    k = block(77, -3, 5, fill=1)
    cache = cache_with(tiny_int, [k, k], [block(10, -6), block(20, 2)], -7, -5)
    q = np.tile(block(13, 100, -7, fill=-2), 2)[None]
    m, e = tiny_int.attention(q, np.array([[-4, -6]]), cache, 0, np.array([1]))
    assert m[0].tolist() == block(30720, -4096).tolist() * 2 and e.tolist() == [[-16, -16]]


def test_attention_causal_mask(tiny_int):
    # query at position 0 sees only t = 0 even though the cache holds t = 1: w_0 = 2**24
    cache = cache_with(tiny_int, [block(1), block(1)], [block(64), block(-64)], 0, -3)
    m, e = tiny_int.attention(np.ones((1, 64), np.int64), np.zeros((1, 2), np.int64), cache, 0, np.array([0]))
    # o = 2**24 * 64 * 2**21 = 2**51: L = 52, s = 37 -> 2**14, e = -11 (= 64 * 2**-3, the value itself)
    assert m[0].tolist() == block(2**14).tolist() * 2 and e.tolist() == [[-11, -11]]


def test_attention_score_octaves_hand(tiny_int):
    # hd = 32, ATTN_SCALE = 5793. q = [1, 0...] (qe = 0); k_0 = 0 (score 0), k_1 = [1, 0...] (ke = 0)
    # 1. D = 1: s_1 = floor_shift(1, 0 + 0 + 16) = 65536 -> floor(65536 * 5793 / 2**15) = 11586 (= 0.1768);
    #    s_0 = 0
    # 2. max = s_1; d_0 = -11586: z_0 = floor(-11586 * 47274 / 2**15) = floor(-16714.98) = -16715
    #    u = 16715, n = 0, f = 16715, f >> 6 = 261 -> p_0 = EXP2_LUT[261] = round(2**16 * 2**(-261/1024))
    #    = round(54922.79) = 54923;  p_1 = EXP2_LUT[0] = 65536
    # 3. RCP = floor(2**48 / 120459) = 2336686978; w_0 = (54923 * RCP) >> 24 = 7649532,
    #    w_1 = (65536 * RCP) >> 24 = 9127683
    # 4. v_0 = [64, 0...], v_1 = [0, 64], ev = 0: o = [w_0 * 64 * 2**24, w_1 * 64 * 2**24]
    #    rq(o, -48, 16): L = bitlen(9127683 * 64) + 24 = 30 + 24 = 54, s = 39, e = -9
    #    m = floor(w * 2**30 / 2**39 + 0.5) = floor(w / 512 + 0.5):
    #      7649532 = 14940 * 512 + 252 -> floor(14940.49 + 0.5) = 14940
    #      9127683 = 17827 * 512 + 259 -> floor(17827.51 + 0.5) = 17828
    # float: softmax([0, 1/sqrt(32)]) * 64 * 512 = [14939.6, 17828.4]
    assert round(2**16 * 2 ** (-261 / 1024)) == 54923 and spec.exp2_lut()[261] == 54923
    assert 2**48 // (54923 + 65536) == 2336686978
    assert (54923 * 2336686978) >> 24 == 7649532 and (65536 * 2336686978) >> 24 == 9127683
    cache = cache_with(tiny_int, [block(), block(1)], [block(64), block(0, 64)], 0, 0)
    q = np.tile(block(1), 2)[None]
    m, e = tiny_int.attention(q, np.zeros((1, 2), np.int64), cache, 0, np.array([1]))
    assert m[0, :2].tolist() == [14940, 17828] and not m[0, 2:32].any() and e[0].tolist() == [-9, -9]


def test_attention_score_saturates_at_40_bits(tiny_int):
    # §7 step 1 with q = [32767, 0...] and qe = ke = 2 (shift 2 + 2 + 16 = 20):
    #   key 0 = [32767, 0...]: D = 32767**2 = 1073676289, D * 2**20 ~ 2**50 -> sat(., 40) = 2**39 - 1
    #   key 1 = [16384, 0...]: D = 32767 * 16384 = 536854528, D * 2**20 ~ 2**49 -> sat(., 40) = 2**39 - 1
    # both scores saturate to the same word, so d = 0 for both: p = 2**16 each, w = 2**23 each
    # (without the saturation key 0 would win by ~2**48 at 2**-16 and take all the weight).
    # v_0 = [100, 0], v_1 = [0, 100], ev = 0: o = [2**23 * 100 * 2**24, same] = [100 * 2**47] * 2
    # rq16: L = 7 + 47 = 54, s = 39 -> 100 * 2**8 = 25600, e = -9 (= 50.0 each: the mean)
    cache = cache_with(tiny_int, [block(32767), block(16384)], [block(100), block(0, 100)], 2, 0)
    q = np.tile(block(32767), 2)[None]
    m, e = tiny_int.attention(q, np.full((1, 2), 2), cache, 0, np.array([1]))
    assert m[0, :2].tolist() == [25600, 25600] and e[0].tolist() == [-9, -9]


def test_attention_saturated_output_positive(tiny_int):
    # §7 step 4: v = 32767 at ev = 1 (a V value >= 32768): o = sat(2**24 * 32767 * 2**25, 63) = 2**62 - 1,
    # then rq(o, -48, 16): L = 62, s = 47 -> 32768 clamped to 32767, e = -1
    cache = cache_with(tiny_int, [block(1)], [block(32767)], 0, 1)
    m, e = tiny_int.attention(np.ones((1, 64), np.int64), np.zeros((1, 2), np.int64), cache, 0, np.array([0]))
    assert m[0, 0] == 32767 and e[0, 0] == -1


def test_attention_saturated_output_negative(tiny_int):
    # v = -32767 at ev = 1: o = sat(-32767 * 2**49, 63) = -2**62; rq: L = 63, s = 48 -> -16384, e = 0
    cache = cache_with(tiny_int, [block(1)], [block(-32767)], 0, 1)
    m, e = tiny_int.attention(np.ones((1, 64), np.int64), np.zeros((1, 2), np.int64), cache, 0, np.array([0]))
    assert m[0, 0] == -16384 and e[0, 0] == 0


# --- §8 SiLU gate -------------------------------------------------------------------------------

def test_silu_gate_at_zero(tiny_int):
    # gate = 0: g16 = 0, eg = -24; k = 0 + 4096; y = 0 * SIG * u16 = 0; e = -24 + eu - 15
    # up = 1.0 (2**24): u16 = 16384, eu = -14 -> e = -53 (rq of a zero block keeps its exponent)
    gate = np.zeros((1, 64), np.int64)
    up = np.full((1, 64), 2**24, np.int64)
    m, e = tiny_int.silu_gate(gate, up)
    assert not m.any() and e.tolist() == [[-53, -53]]


def test_silu_gate_just_above_and_below_zero(tiny_int):
    # gate element 0 = +2**-8 (ACC 2**16): rq16: L = 17, s = 2 -> g16 = (2**16 + 2) >> 2 = 16384, eg = -22
    #   k = floor_shift(16384, -22 + 8) + 4096 = 1 + 4096 = 4097 -> SIG = 16432 (sigmoid(1.5/256) * 2**15)
    # up element 0 = 1.0: u16 = 16384, eu = -14
    # y = 16384 * 16432 * 16384 = 16432 * 2**28, exponent -22 - 14 - 15 = -51
    # rq16: L = 15 + 28 = 43, s = 28 -> 16432 exactly, e = -23 -> 0.0019588 (float: silu(2**-8) = 0.0019569)
    # gate element 0 = -2**-8 (block 1): g16 = (-2**16 + 2) >> 2 = -16384, eg = -22
    #   k = floor_shift(-16384, -14) + 4096 = -1 + 4096 = 4095 -> SIG = 16368
    #   y = -16368 * 2**28; L = 14 + 28 = 42, s = 27 -> -32736 exactly, e = -24
    #   -> -0.0019512 (float: -0.0019493)
    gate = np.zeros((1, 64), np.int64)
    up = np.zeros((1, 64), np.int64)
    gate[0, 0], gate[0, 32] = 2**16, -(2**16)
    up[0, 0], up[0, 32] = 2**24, 2**24
    m, e = tiny_int.silu_gate(gate, up)
    assert m[0, 0] == 16432 and m[0, 32] == -32736 and np.count_nonzero(m) == 2
    assert e.tolist() == [[-23, -24]]


def test_silu_gate_clamps_index(tiny_int):
    # gate = 100.0 (ACC 100 * 2**24): rq16: L = 31, s = 16 -> g16 = 25600, eg = -8
    #   k = floor_shift(25600, 0) + 4096 = 29696 -> clamped to 8191 -> SIG = 32768
    # gate = -100.0: k = -25600 + 4096 < 0 -> 0 -> SIG = 0 -> y = 0
    # up = 1.0 (u16 = 16384, eu = -14): y = 25600 * 32768 * 16384 = 25600 * 2**29, e = -8 - 14 - 15 = -37
    #   rq16: L = 15 + 29 = 44, s = 29 -> 25600, e = -8 -> 100.0
    gate = np.zeros((1, 64), np.int64)
    up = np.zeros((1, 64), np.int64)
    gate[0, 0], gate[0, 32] = 100 * 2**24, -100 * 2**24
    up[0, 0], up[0, 32] = 2**24, 2**24
    m, e = tiny_int.silu_gate(gate, up)
    assert m[0, 0] == 25600 and e[0, 0] == -8 and not m[0, 32:].any()


# --- §9 argmax, §10 taps, §11 refusals ----------------------------------------------------------

def test_argmax_ties_lowest_id():
    logits = np.array([[5, 7, 7, 1], [-3, -3, -3, -3], [0, 0, 2**47 - 1, 2**47 - 1], [-(2**47), 1, 0, 1]])
    assert argmax(logits).tolist() == [1, 0, 2, 1]


def test_forward_taps_follow_section_10(tiny_int):
    trace = Trace()
    cache = tiny_int.new_cache()
    logits = tiny_int.forward(np.array([5, 7]), cache, trace)
    n = tiny_int.cfg.n_layers
    per_layer = ["attn_norm", "q", "k", "v", "attn", "o", "resid_attn", "ffn_norm", "ffn_act", "down",
                 "resid_ffn"]
    want = []
    for p in (0, 1):
        want += [(-1, "embed", p)] + [(0, op, p) for op in per_layer]
        want += [(n, "final_norm", p), (n, "logits", p), (n, "argmax", p)]
    assert sorted(trace.taps) == sorted(want)
    b16 = {"attn_norm", "q", "k", "v", "attn", "ffn_norm", "ffn_act", "final_norm"}
    for (_, op, _), (mant, exp) in trace.taps.items():
        if op in b16:      # B16: mantissas in [-32767, 32767] plus one exponent per block
            assert np.abs(mant).max() <= 32767 and exp.shape == (mant.size // 32,)
        elif op != "argmax":  # ACC: 48-bit words, no exponent
            assert exp is None and np.abs(mant).max() < 2**47 + 1
    assert cache.length == 2 and logits.shape == (2, tiny_int.cfg.vocab)
    # the residual adds of §4: x = sat(x + y, 48)
    emb, o, ra = (trace.taps[(li, op, 1)][0] for li, op in ((-1, "embed"), (0, "o"), (0, "resid_attn")))
    assert ra.tolist() == np.clip(emb + o, -(2**47), 2**47 - 1).tolist()


def test_forward_refuses_bad_token_and_overflow(tiny_int):
    cache = tiny_int.new_cache()
    with pytest.raises(HardwireError):
        tiny_int.forward(np.array([tiny_int.cfg.vocab]), cache)
    assert cache.length == 0
    cache.length = tiny_int.capacity - 1
    with pytest.raises(HardwireError):
        tiny_int.forward(np.array([1, 2]), cache)
    assert cache.length == tiny_int.capacity - 1
