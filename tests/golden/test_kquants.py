"""Decoding every weight format into integer fields: the fields give gguf.dequantize back bit for bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES
from gguf import GGMLQuantizationType as QT
from gguf import dequantize as gguf_dequantize
from kquant_blocks import FP16_FIELDS, random_blocks

from hardwire.golden import kquants
from hardwire.golden.errors import HardwireError

RECORDED = Path(__file__).parent.parent / "data" / "llama_cpp_quant_rows.npz"
TYPES = list(kquants.DECODABLE)
def assert_same_floats(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype == np.float32
    assert np.array_equal(a.view(np.uint32), b.view(np.uint32))


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
def test_fields_reproduce_gguf_on_random_blocks(qtype):
    raw = random_blocks(np.random.default_rng(int(qtype)), qtype, 6, 1024)
    fields = kquants.decode(raw, qtype, 6, 1024)
    assert_same_floats(fields.dequantize(), gguf_dequantize(raw, qtype))
    assert_same_floats(kquants.dequantize(raw, qtype, 6, 1024), gguf_dequantize(raw, qtype))


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
def test_field_ranges_reach_their_extremes(qtype):
    """Random bytes cover every code and sub-scale: both ends of each range occur, nothing beyond."""
    f = kquants.FORMATS[qtype]
    fields = kquants.decode(random_blocks(np.random.default_rng(7), qtype, 16, 1024), qtype, 16, 1024)
    assert (int(fields.q.min()), int(fields.q.max())) == f.q_range
    assert (int(fields.sc.min()), int(fields.sc.max())) == f.sc_range
    if f.has_min:
        assert (int(fields.mn.min()), int(fields.mn.max())) == f.sc_range
    else:
        assert fields.mn is None
    assert (fields.dmin_bits is not None) == (f.has_min or f.has_offset)


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("bits", [0x0000, 0x8000, 0x0001, 0x83FF, 0x0400, 0x7BFF, 0xFBFF, 0x3C00],
                         ids=lambda b: f"fp16_{b:04x}")
def test_extreme_scales(qtype, bits):
    """Zero, signed zero, subnormal, smallest normal, largest finite and negative d/dmin."""
    raw = random_blocks(np.random.default_rng(bits), qtype, 4, 512, fp16=bits)
    fields = kquants.decode(raw, qtype, 4, 512)
    with np.errstate(over="ignore"):
        assert_same_floats(fields.dequantize(), gguf_dequantize(raw, qtype))
    m, e = fields.d_parts()
    assert np.array_equal(m * np.exp2(e), fields.d_bits.view(np.float16).astype(np.float64))


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
def test_all_zero_and_all_ones_blocks(qtype):
    for fill in (0x00, 0xFF):
        raw = np.full((2, kquants.row_bytes(qtype, 512)), fill, np.uint8)
        if fill == 0xFF:  # keep the fp16 fields finite (0xFFFF is NaN): -65504
            raw = raw.reshape(2, -1, GGML_QUANT_SIZES[qtype][1])
            for at in FP16_FIELDS[qtype]:
                raw[..., at:at + 2] = np.array([0xFF, 0xFB], np.uint8)
            raw = raw.reshape(2, -1)
        fields = kquants.decode(raw, qtype, 2, 512)
        with np.errstate(over="ignore"):
            assert_same_floats(fields.dequantize(), gguf_dequantize(raw, qtype))


def test_q3_k_and_q6_k_sub_scales_are_signed():
    raw = random_blocks(np.random.default_rng(3), QT.Q6_K, 1, 256)
    raw[0, 192:208] = np.arange(-128, 128, 16).astype(np.int8).view(np.uint8)
    assert list(kquants.decode(raw, QT.Q6_K, 1, 256).sc[0]) == list(range(-128, 128, 16))
    raw = np.zeros((1, 110), np.uint8)  # Q3_K: all 6-bit scales 0 -> sub-scale -32; codes 0 with no high bit -> -4
    fields = kquants.decode(raw, QT.Q3_K, 1, 256)
    assert set(fields.sc[0]) == {-32} and set(fields.q[0]) == {-4}


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
def test_fields_of_llama_cpp_blocks(qtype):
    """Blocks written by llama.cpp itself decode to gguf's floats, and lie close to the rows they came from."""
    rec = np.load(RECORDED)
    x, raw = rec["rows"], rec[qtype.name]
    fields = kquants.decode(raw, qtype, *x.shape)
    w = fields.dequantize()
    assert_same_floats(w, gguf_dequantize(raw, qtype))
    ordinary = slice(0, 8)  # the seeded normal rows
    rel = np.sqrt(np.mean((w[ordinary] - x[ordinary]) ** 2) / np.mean(x[ordinary] ** 2))
    assert rel < {QT.Q2_K: 0.4, QT.Q3_K: 0.2}.get(qtype, 0.1)


def test_bad_shapes_are_refused():
    with pytest.raises(HardwireError, match="not a multiple of its block of 256"):
        kquants.decode(np.zeros((1, 210), np.uint8), QT.Q6_K, 1, 288)
    with pytest.raises(HardwireError, match="unsupported quant type IQ4_NL"):
        kquants.decode(np.zeros((1, 18), np.uint8), QT.IQ4_NL, 1, 32)
    with pytest.raises(HardwireError, match="holds 209 bytes"):
        kquants.decode(np.zeros((1, 209), np.uint8), QT.Q6_K, 1, 256)
