"""The numpy port of ggml's reference quantizers writes llama.cpp's bytes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as QT
from gguf import quantize as gguf_quantize

from hardwire.golden.errors import HardwireError
from hardwire.golden.quantize import QUANTIZABLE, nearest_int, quantize

RECORDED = np.load(Path(__file__).parent.parent / "data" / "llama_cpp_quant_rows.npz")


@pytest.mark.parametrize("qtype", QUANTIZABLE, ids=lambda t: t.name)
def test_bytes_equal_llama_cpp(qtype):
    """Seeded rows with edge blocks (zero, constant, outliers, subnormal and large scales, ties)."""
    got, want = quantize(RECORDED["rows"], qtype), RECORDED[qtype.name]
    assert got.shape == want.shape
    bad = np.argwhere(got != want)
    assert bad.size == 0, f"{len(bad)} bytes differ, first at (row, byte) {tuple(bad[0])}"


@pytest.mark.parametrize("qtype", [QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1, QT.Q8_0], ids=lambda t: t.name)
def test_32_blocks_equal_gguf_quantize(qtype):
    x = np.random.default_rng(int(qtype)).standard_normal((32, 256)).astype(np.float32)
    assert np.array_equal(quantize(x, qtype), gguf_quantize(x, qtype))


def test_nearest_int_rounds_half_to_even():
    v = np.array([0.5, 1.5, 2.5, -0.5, -1.5, 2.4999998, 1e6 + 0.5, -4194303.0], np.float32)
    assert list(nearest_int(v)) == [0, 2, 2, 0, -2, 2, 1000000, -4194303]


@pytest.mark.parametrize("qtype", QUANTIZABLE, ids=lambda t: t.name)
def test_all_zero_rows(qtype):
    """ggml writes zero blocks with codes at their zero point; they decode to zeros."""
    from gguf import dequantize

    out = quantize(np.zeros((2, 256), np.float32), qtype)
    assert not np.any(dequantize(out, qtype))


def test_bad_input_is_refused():
    with pytest.raises(HardwireError, match="multiple of 256"):
        quantize(np.zeros((1, 288), np.float32), QT.Q4_K)
    with pytest.raises(HardwireError, match="inf or NaN"):
        quantize(np.full((1, 32), np.inf, np.float32), QT.Q8_0)
    with pytest.raises(HardwireError, match="cannot quantize to IQ4_NL"):
        quantize(np.zeros((1, 32), np.float32), QT.IQ4_NL)
    with pytest.raises(HardwireError, match="2-D"):
        quantize(np.zeros(32, np.float32), QT.Q8_0)
