"""The block dot-product lane against the golden block term (section 3) and the golden matmul.

Each case streams whole rows through the cell, one block per cycle and rows back to back;
the harness also checks that every term and row result arrives at the documented latency.
Activations are B16 mantissas (the chip's lanes); one test runs the 8-bit-lane build.
"""

from __future__ import annotations

import numpy as np
import pytest
from block_golden import block_terms, row_results

from hardwire.golden import spec

FORMATS = ["Q8_0", "Q4_0", "Q4_1"]
CODE_RANGE = {"Q8_0": (-128, 128), "Q4_0": (-8, 8), "Q4_1": (0, 16)}  # golden codes, Q4_0's 8 folded in
FP16_ONE, FP16_NEG_ZERO, FP16_MAX, FP16_MIN_SUBNORMAL, FP16_MAX_SUBNORMAL = 0x3C00, 0x8000, 0x7BFF, 0x0001, 0x03FF


def random_fp16(rng, shape, subnormal_share=0.25):
    """fp16 bit patterns, finite (x = 31 never reaches the chip), a share of them subnormal."""
    sign = rng.integers(0, 2, shape) << 15
    x = np.where(rng.random(shape) < subnormal_share, 0, rng.integers(1, 31, shape))
    return sign | (x << 10) | rng.integers(0, 1024, shape)


def random_case(rng, fmt, rows, nb, act_bits=spec.ACT_BITS, e_range=(-48, 8)):
    lo, hi = CODE_RANGE[fmt]
    top = (1 << (act_bits - 1)) - 1
    return dict(q=rng.integers(lo, hi, (rows, nb, 32)), d_bits=random_fp16(rng, (rows, nb)),
                m_bits=random_fp16(rng, (rows, nb)), acts=rng.integers(-top, top + 1, (nb, 32)),
                e_act=rng.integers(*e_range, nb))


def check(cell, fmt, case, rng=None):
    """Stream the case through the cell; compare T_b and y_r with the golden, exactly."""
    q = case["q"]
    high = None if rng is None else rng.integers(0, 16, q.shape)  # Q4 formats must ignore the high nibble
    m_bits = case["m_bits"] if fmt == "Q4_1" else None
    terms, ys = cell.run_rows(fmt, cell.code_bytes(fmt, q, high), case["d_bits"], m_bits,
                              case["acts"], case["e_act"])
    want_terms = block_terms(fmt, q, case["d_bits"], case["m_bits"], case["acts"], case["e_act"])
    want_ys = row_results(fmt, q, case["d_bits"], case["m_bits"], case["acts"], case["e_act"])
    bad = np.argwhere(terms != want_terms)
    assert not bad.size, f"{fmt}: T_b differs at (row, block) {bad[0].tolist()}: rtl {terms[tuple(bad[0])]} " \
                         f"golden {want_terms[tuple(bad[0])]}; {len(bad)} of {terms.size} differ"
    assert np.array_equal(ys, want_ys), f"{fmt}: row results differ: rtl {ys.tolist()} golden {want_ys.tolist()}"
    return terms, ys


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("seed", [31, 32])
def test_random_rows(block_mac, fmt, seed):
    rng = np.random.default_rng(seed)
    check(block_mac, fmt, random_case(rng, fmt, rows=6, nb=8), rng)


@pytest.mark.parametrize("fmt", FORMATS)
def test_random_rows_8bit_activation_lanes(block_mac8, fmt):
    rng = np.random.default_rng(35)
    check(block_mac8, fmt, random_case(rng, fmt, rows=4, nb=6, act_bits=8), rng)


@pytest.mark.parametrize("fmt", FORMATS)
def test_single_block_rows(block_mac, fmt):
    """first and last on the same block, row after row."""
    rng = np.random.default_rng(41)
    check(block_mac, fmt, random_case(rng, fmt, rows=12, nb=1), rng)


@pytest.mark.parametrize("fmt", FORMATS)
def test_zero_vectors(block_mac, fmt):
    rng = np.random.default_rng(42)
    case = random_case(rng, fmt, rows=3, nb=4)
    case["acts"][:] = 0  # zero activations
    case["q"][1] = 0  # a zero weight row
    case["d_bits"][2] = np.where(np.arange(4) % 2, 0, FP16_NEG_ZERO)  # zero scales, both signs
    terms, ys = check(block_mac, fmt, case, rng)
    assert not terms[:, :].any() and not ys.any()


@pytest.mark.parametrize("fmt", FORMATS)
def test_extreme_codes_and_scales(block_mac, fmt):
    """The largest |S| (and |A|), the largest and smallest fp16 magnitudes, subnormals;
    activations at +-32767 and the never-produced -32768, which the lane still takes exactly."""
    lo, hi = CODE_RANGE[fmt]
    top = (1 << (spec.ACT_BITS - 1)) - 1
    scales = np.array([FP16_MAX, FP16_MAX | 0x8000, FP16_MIN_SUBNORMAL, FP16_MAX_SUBNORMAL | 0x8000,
                       0x0400, FP16_ONE])
    nb = len(scales)
    case = dict(q=np.stack([np.full((nb, 32), lo), np.full((nb, 32), hi - 1)]),
                d_bits=np.stack([scales, scales[::-1]]), m_bits=np.stack([scales[::-1], scales]),
                acts=np.where(np.arange(nb)[:, None] % 2, -top - 1, top) * np.ones((nb, 32), np.int64),
                e_act=np.array([-7, -30, 0, -24, 5, -13]))
    check(block_mac, fmt, case)


@pytest.mark.parametrize("fmt", FORMATS)
def test_term_saturation_and_deep_right_shifts(block_mac, fmt):
    """e_b at both ends of its 8-bit range: terms saturate at TERM_BITS, or floor to 0 / -1."""
    rng = np.random.default_rng(43)
    case = random_case(rng, fmt, rows=4, nb=8)
    case["e_act"] = np.array([127, 100, 40, 30, -128, -100, -60, -30])
    terms, _ = check(block_mac, fmt, case, rng)
    limit = 1 << (spec.TERM_BITS - 1)
    assert (np.abs(terms[:, :4]) >= limit - 1).any(), "no term reached saturation"
    assert np.isin(terms[:, 4:6], [-2, -1, 0]).all()  # each of the (up to) two terms is 0 or -1


def test_row_saturates_at_48_bits_but_sums_exactly(block_mac):
    """Big terms of both signs: the 64-bit accumulator is exact, only y saturates."""
    nb = 8
    q = np.full((3, nb, 32), 127)
    q[1, ::2] = -128  # +-terms cancel: the sum is back in range though partial sums are not
    q[2, :] = -128
    case = dict(q=q, d_bits=np.full((3, nb), FP16_MAX), m_bits=np.zeros((3, nb), np.int64),
                acts=np.full((nb, 32), 32767), e_act=np.full(nb, 2))
    _, ys = check(block_mac, "Q8_0", case)
    top = (1 << (spec.ACC_BITS - 1)) - 1
    assert ys[0] == top and ys[2] == -top - 1 and abs(ys[1]) < top


def test_longest_row(block_mac):
    """MAX_BLOCKS_PER_ROW saturated terms: the 64-bit accumulator must not wrap."""
    nb = spec.MAX_BLOCKS_PER_ROW
    case = dict(q=np.full((1, nb, 32), 15), d_bits=np.full((1, nb), FP16_MAX),
                m_bits=np.full((1, nb), FP16_MAX), acts=np.full((nb, 32), 32767), e_act=np.full(nb, 127))
    terms, ys = check(block_mac, "Q4_1", case)
    assert (terms == 2 * ((1 << (spec.TERM_BITS - 1)) - 1)).all()
    assert ys[0] == (1 << (spec.ACC_BITS - 1)) - 1


def test_reserved_format_strap_acts_as_q4_0(block_mac, monkeypatch):
    """Strap value 3 is no format; pinned so that a change is noticed (the metal never straps it)."""
    rng = np.random.default_rng(44)
    case = random_case(rng, "Q4_0", rows=2, nb=3)
    codes = block_mac.code_bytes("Q4_0", case["q"])
    args = (codes, case["d_bits"], case["m_bits"], case["acts"], case["e_act"])
    monkeypatch.setitem(block_mac.FORMATS, "reserved", 3)
    reserved = block_mac.run_rows("reserved", *args)
    q4_0 = block_mac.run_rows("Q4_0", *args)
    assert all(np.array_equal(a, b) for a, b in zip(reserved, q4_0, strict=True))
