"""The block dot-product lane against the golden block term (section 3) and the golden matmul.

Each case streams whole rows through the cell, one block per cycle and rows back to back;
the harness also checks that every term and row result arrives at the documented latency.
Activations are B16 mantissas (the chip's lanes); one test runs the 8-bit-lane build. Every
`block_mac` test runs twice: on the lane with its own format decode and activation sums, and on
the lane as a wide engine wires it (the decode, the sums and the sign-extended activations shared).
"""

from __future__ import annotations

import block_golden
import numpy as np
import pytest
from block_golden import block_terms, row_results
from gguf import GGML_QUANT_SIZES
from gguf import GGMLQuantizationType as QT

from hardwire.golden import spec
from hardwire.rtl import metal

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


def test_unassigned_format_codes_read_every_weight_as_zero(block_mac, monkeypatch):
    """Codes 10..15 are no format: the lane reads zero codes, scales and offsets (the metal never
    straps them); pinned so that a change is noticed."""
    rng = np.random.default_rng(44)
    case = random_case(rng, "Q4_1", rows=2, nb=3)
    codes = block_mac.code_bytes("Q4_1", case["q"])
    monkeypatch.setitem(block_mac.FORMATS, "unassigned", 15)
    terms, ys = block_mac.run_rows("unassigned", codes, case["d_bits"], case["m_bits"], case["acts"], case["e_act"],
                                   np.full((2, 3, 2), 0xFF), np.full((2, 3, 2), 0xFF))
    assert not terms.any() and not ys.any()


# --- the other formats of section 2.1, through the metal's slot fields --------------------------------------

K_FORMATS = ["Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]
FILLS = (0x00, 0xFF, 0x80, 0x7F, 0x55, 0xAA)  # every field at 0 or its top, the int8 scales at -128 and 127


def check_format(cell, name, raw, acts, e_act, unused_bits=None):
    """Raw GGUF bytes (rows, bytes per row) through the loader's decoding and the metal's slot
    fields into the cell; T_b and y_r against golden/kmatmul, exactly. `unused_bits` (rows, nb, 32)
    sets the code bits above the format's code, which the lane must never read."""
    rows, cols = raw.shape[0], acts.size
    fields = block_golden.k_fields(QT[name], raw, rows, cols)
    slot = metal.slot_fields(fields)
    codes = slot.codes.astype(np.int64)
    if unused_bits is not None:
        codes |= unused_bits << CODE_WIDTH[name] & 0xFF
    terms, ys = cell.run_rows(name, codes, slot.d_bits, slot.m_bits, acts, e_act, slot.scales, slot.mins)
    want_terms = block_golden.format_terms(fields, acts, e_act)
    bad = np.argwhere(terms != want_terms)
    assert not bad.size, f"{name}: T_b differs at (row, block) {bad[0].tolist()}: rtl {terms[tuple(bad[0])]} " \
                         f"golden {want_terms[tuple(bad[0])]}; {len(bad)} of {terms.size} differ"
    want_ys = block_golden.format_rows(fields, acts, e_act)
    assert np.array_equal(ys, want_ys), f"{name}: row results differ: rtl {ys.tolist()} golden {want_ys.tolist()}"
    return fields, terms, ys


CODE_WIDTH = {"Q5_0": 5, "Q5_1": 5, "Q2_K": 2, "Q3_K": 3, "Q4_K": 4, "Q5_K": 5, "Q6_K": 6}


def random_acts(rng, nb, e_range=(-48, 8), act_bits=spec.ACT_BITS):
    top = (1 << (act_bits - 1)) - 1
    return rng.integers(-top, top + 1, (nb, 32)), rng.integers(*e_range, nb)


@pytest.mark.parametrize("name", K_FORMATS)
def test_every_format_random_rows(block_mac, name):
    """Random GGUF blocks (every code, scale, min and high bit at random: negative sub-scales
    included), two super-blocks a row; garbage in the code bits the format does not define."""
    rng = np.random.default_rng(51)
    acts, e_act = random_acts(rng, 16)
    raw = block_golden.random_raw(rng, QT[name], 4, 512)
    fields, _, _ = check_format(block_mac, name, raw, acts, e_act, rng.integers(0, 256, (4, 16, 32)))
    if fields.format.sc_range[0] < 0:
        assert (fields.sc < 0).any()


@pytest.mark.parametrize("name", ["Q6_K", "Q5_K", "Q5_1"])
def test_every_format_8bit_activation_lanes(block_mac8, name):
    rng = np.random.default_rng(54)
    acts, e_act = random_acts(rng, 8, act_bits=8)
    check_format(block_mac8, name, block_golden.random_raw(rng, QT[name], 3, 256), acts, e_act)


@pytest.mark.parametrize("name", K_FORMATS)
def test_every_format_edge_blocks(block_mac, name):
    """Blocks of one byte value throughout (all zero, all ones: the Q5 high-bit plane set, codes
    and 6-bit scales at their tops, Q6_K's int8 scales at -128 and 127), under the largest and
    the smallest fp16 d and dmin, with activations at +-32767."""
    rng = np.random.default_rng(52)
    block, size = GGML_QUANT_SIZES[QT[name]]
    rows = []
    for fill in FILLS:
        for fp16 in (FP16_MAX, FP16_MAX | 0x8000, FP16_MIN_SUBNORMAL, FP16_ONE):
            row = np.full((256 // block, size), fill, np.uint8)
            for at in block_golden.FP16_FIELDS[QT[name]]:
                row[:, at:at + 2] = np.array([fp16], "<u2").view(np.uint8)
            rows.append(row.reshape(-1))
    raw = np.stack(rows)
    raw[0] = 0  # an all-zero block, d = 0 included
    top = (1 << (spec.ACT_BITS - 1)) - 1
    acts = np.where(np.arange(8)[:, None] % 2, -top, top) * np.ones((8, 32), np.int64)
    acts[3] = rng.integers(-top, top + 1, 32)
    _, terms, ys = check_format(block_mac, name, raw, acts, np.array([-7, -30, 0, -24, 5, -13, 20, -48]))
    assert not terms[0].any() and ys[0] == 0


@pytest.mark.parametrize("name", ["Q6_K", "Q5_K"])
def test_every_format_saturation(block_mac, name):
    """Exponents at both ends: the terms saturate at TERM_BITS or floor to 0 / -1, the rows at 48 bits."""
    rng = np.random.default_rng(53)
    acts, _ = random_acts(rng, 8)
    raw = block_golden.random_raw(rng, QT[name], 3, 256)
    _, terms, _ = check_format(block_mac, name, raw, acts, np.array([127, 100, 40, 30, -128, -100, -60, -30]))
    assert (np.abs(terms[:, :2]) >= (1 << (spec.TERM_BITS - 1)) - 1).any(), "no term reached saturation"
