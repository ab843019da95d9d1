"""The requantizer cell against golden spec.rq (docs/numerics.md 1.1), word for word."""

from __future__ import annotations

import numpy as np
import pytest

from hardwire.golden import spec

SEEDS = [11, 12, 13]
EXP_MIN, EXP_MAX = -128, 127  # the cell's 8-bit exponent ports


def golden_width(width):
    """Section 1.1 takes inputs of at most RQ_IN_BITS; a 64-bit cell is compared inside that."""
    return min(width, spec.RQ_IN_BITS)


def check(cell, blocks, exps):
    """Every block through the cell, compared with spec.rq (mantissas and exponent)."""
    want_m, want_e = spec.rq(np.asarray(blocks, np.int64), np.asarray(exps, np.int64), cell.bits)
    for i, (v, e) in enumerate(zip(blocks, exps, strict=True)):
        m, e_out = cell(v, int(e))
        assert np.array_equal(m, want_m[i]) and e_out == want_e[i], (
            f"block {i}: v={list(v)} e_in={e}: rtl ({list(m)}, {e_out}) != golden ({list(want_m[i])}, {want_e[i]})")


def random_blocks(rng, count, width):
    """Blocks whose peak bit length covers 0..width, with a few lanes at the extremes."""
    blocks = []
    for _ in range(count):
        length = int(rng.integers(0, width))
        block = rng.integers(-(1 << length), 1 << length, 32, dtype=np.int64)
        if rng.random() < 0.2:
            block[rng.integers(32)] = -(1 << (width - 1))
        blocks.append(block)
    return np.array(blocks)


def legal_exponents(rng, blocks, width, bits):
    """e_in such that e_in + s stays inside the 8-bit exponent port."""
    s = np.maximum(spec.bitlen(np.abs(blocks).max(axis=-1)) - (bits - 1), 0)
    return rng.integers(EXP_MIN, EXP_MAX - s + 1)


def edge_blocks(width, bits):
    top, one = (1 << (width - 1)) - 1, np.ones(32, np.int64)
    half = 1 << (bits - 1)
    blocks = [
        0 * one,  # zero block: m = 0, e_out = e_in
        top * one, -(top + 1) * one,  # the extremes of the input word
        np.where(np.arange(32) % 2, top, -top - 1),
        (half - 1) * one, -(half - 1) * one,  # largest block with s = 0
        half * one, -half * one,  # the first s = 1
        ((1 << 20) - 1) * one,  # rounding reaches 2**(bits-1): the clamp brings it back
        np.arange(-16, 16) * (1 << 20) + (1 << 19),  # exact halves, both signs: round half up
        np.arange(-16, 16) * (1 << 20) - (1 << 19),
        np.eye(32, dtype=np.int64)[5] * -(top + 1),  # one lane, most negative
        np.eye(32, dtype=np.int64)[31] * 3,
    ]
    return np.array(blocks)


@pytest.mark.parametrize("seed", SEEDS)
def test_requant8_random(requant8, seed):
    rng = np.random.default_rng(seed)
    blocks = random_blocks(rng, 300, 48)
    check(requant8, blocks, legal_exponents(rng, blocks, 48, 8))


@pytest.mark.parametrize("seed", SEEDS)
def test_requant16_random(requant16, seed):
    rng = np.random.default_rng(seed)
    blocks = random_blocks(rng, 300, 48)
    check(requant16, blocks, legal_exponents(rng, blocks, 48, 16))


def test_requant8_64bit_words_random(requant8_w64):
    rng = np.random.default_rng(21)
    blocks = random_blocks(rng, 300, golden_width(64))
    check(requant8_w64, blocks, legal_exponents(rng, blocks, 64, 8))


def test_requant_64bit_extremes_by_definition(requant8_w64):
    """A 64-bit cell (wider than RQ_IN_BITS, which the golden stops at) at +-2**63, with
    section 1.1 worked by hand: bitlen 63 -> s = 56, bitlen 64 -> s = 57."""
    for v, want in (((1 << 63) - 1, (127, 56)), (-(1 << 63), (-64, 57))):
        block = np.zeros(32, np.int64)
        block[3] = v
        m, e_out = requant8_w64(block, 0)
        assert (m[3], e_out) == want and not m[np.arange(32) != 3].any()


@pytest.mark.parametrize("cell_name, width", [("requant8", 48), ("requant16", 48), ("requant8_w64", 64)])
def test_requant_edges(request, cell_name, width):
    cell = request.getfixturevalue(cell_name)
    blocks = edge_blocks(golden_width(width), cell.bits)
    s = np.maximum(spec.bitlen(np.abs(blocks).max(axis=-1)) - (cell.bits - 1), 0)
    for exps in (np.full(len(blocks), -24), np.full(len(blocks), EXP_MIN), EXP_MAX - s):
        check(cell, blocks, exps)


def test_requant_every_peak_length(requant8):
    """One block per peak bit length 0..48, largest lane positive then negative."""
    blocks = []
    for length in range(49):
        peak = (1 << length) - 1 if length < 48 else (1 << 47) - 1
        block = np.zeros(32, np.int64)
        block[length % 32] = peak
        blocks += [block, -block]
    blocks.append(np.eye(32, dtype=np.int64)[0] * -(1 << 47))
    check(requant8, np.array(blocks), np.full(len(blocks), -24))
