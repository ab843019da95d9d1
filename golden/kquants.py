"""Every GGUF weight format that llama.cpp's standard recipes write, split into its integer fields.

A tensor of any of these types decodes into the same shape of fields: per
weight an integer code `q`, per sub-block an integer scale `sc` (and for the
affine K types an integer min `mn`), per block an fp16 `d` (and `dmin`, or
the offset `m` of Q4_1/Q5_1), so that

    Q8_0, Q4_0, Q5_0, Q3_K, Q6_K:  w = d * sc * q
    Q4_1, Q5_1:                    w = d * q + m
    Q2_K, Q4_K, Q5_K:              w = d * sc * q - dmin * mn

with `sc = 1` for the 32-weight types. Each fp16 is held exactly as an integer
mantissa and a power-of-two exponent (`spec.fp16_parts`). The float path does
not use these fields: `gguf.dequantize` decodes every type, and the tests hold
the fields to it bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from gguf import GGML_QUANT_SIZES
from gguf import GGMLQuantizationType as QT
from gguf import dequantize as gguf_dequantize

from . import spec
from .errors import HardwireError

QK_K = 256


@dataclass(frozen=True)
class Format:
    block: int  # weights per block (one fp16 d)
    sub: int  # weights per sub-block (one integer scale)
    q_range: tuple[int, int]  # the codes q as the value formula uses them
    sc_range: tuple[int, int]
    has_min: bool = False  # K types with 6- or 4-bit mins and an fp16 dmin
    has_offset: bool = False  # Q4_1/Q5_1: an fp16 offset m per block


FORMATS = {
    QT.Q8_0: Format(32, 32, (-128, 127), (1, 1)),
    QT.Q4_0: Format(32, 32, (-8, 7), (1, 1)),
    QT.Q4_1: Format(32, 32, (0, 15), (1, 1), has_offset=True),
    QT.Q5_0: Format(32, 32, (-16, 15), (1, 1)),
    QT.Q5_1: Format(32, 32, (0, 31), (1, 1), has_offset=True),
    QT.Q2_K: Format(QK_K, 16, (0, 3), (0, 15), has_min=True),
    QT.Q3_K: Format(QK_K, 16, (-4, 3), (-32, 31)),
    QT.Q4_K: Format(QK_K, 32, (0, 15), (0, 63), has_min=True),
    QT.Q5_K: Format(QK_K, 32, (0, 31), (0, 63), has_min=True),
    QT.Q6_K: Format(QK_K, 16, (-32, 31), (-128, 127)),
}
DECODABLE = tuple(FORMATS)


def format_names(types=DECODABLE) -> str:
    return ", ".join(t.name for t in types)


@dataclass
class BlockFields:
    """A (rows, cols) weight tensor's GGUF blocks as integers and fp16 bit patterns."""

    qtype: QT
    q: np.ndarray  # (rows, cols) int8 codes
    sc: np.ndarray  # (rows, cols // sub) int16 sub-block scales
    mn: np.ndarray | None  # (rows, cols // sub) int16 sub-block mins (Q2_K, Q4_K, Q5_K)
    d_bits: np.ndarray  # (rows, cols // block) uint16
    dmin_bits: np.ndarray | None  # (rows, cols // block) uint16: dmin (K types with mins) or m (Q4_1, Q5_1)

    @property
    def format(self) -> Format:
        return FORMATS[self.qtype]

    @property
    def shape(self) -> tuple[int, int]:
        return self.q.shape

    def d_parts(self) -> tuple[np.ndarray, np.ndarray]:
        """d as exact (mantissa, exponent) pairs: d = M * 2**E."""
        return spec.fp16_parts(self.d_bits)

    def dmin_parts(self) -> tuple[np.ndarray, np.ndarray]:
        return spec.fp16_parts(self.dmin_bits)

    def dequantize(self) -> np.ndarray:
        """The weights in float32 from the fields, in gguf's order: every product is exact, one rounding."""
        f = self.format
        rows, cols = self.shape
        per_sub = np.repeat(np.repeat(_fp16(self.d_bits), f.block // f.sub, axis=1) * self.sc.astype(np.float32),
                            f.sub, axis=1)
        w = per_sub * self.q.astype(np.float32)
        if f.has_min:
            dm = np.repeat(_fp16(self.dmin_bits), f.block // f.sub, axis=1) * self.mn.astype(np.float32)
            w = w - np.repeat(dm, f.sub, axis=1)
        elif f.has_offset:
            w = w + np.repeat(_fp16(self.dmin_bits), f.block, axis=1)
        return w.reshape(rows, cols)


def _fp16(bits: np.ndarray) -> np.ndarray:
    return bits.view(np.float16).astype(np.float32)


def row_bytes(qtype: QT, cols: int) -> int:
    block, size = GGML_QUANT_SIZES[qtype]
    return cols // block * size


def check_shape(qtype: QT, cols: int, name: str = "tensor") -> None:
    if qtype not in FORMATS:
        raise HardwireError(f"{name} has unsupported quant type {qtype.name} (supported: {format_names()})")
    block = FORMATS[qtype].block
    if cols % block:
        raise HardwireError(f"{name} is {qtype.name} with rows of {cols} weights, not a multiple of its "
                            f"block of {block}")


def dequantize(raw: np.ndarray, qtype: QT, rows: int, cols: int) -> np.ndarray:
    """The float path: gguf's own decoder."""
    check_shape(qtype, cols)
    return gguf_dequantize(np.ascontiguousarray(raw, np.uint8).reshape(rows, -1), qtype).reshape(rows, cols)


def decode(raw: np.ndarray, qtype: QT, rows: int, cols: int, name: str = "tensor") -> BlockFields:
    """Split a GGUF byte tensor (rows, bytes per row) into its integer fields."""
    check_shape(qtype, cols, name)
    block, size = GGML_QUANT_SIZES[qtype]
    raw = np.ascontiguousarray(raw, dtype=np.uint8)
    if raw.size != rows * cols // block * size:
        raise HardwireError(f"{name} holds {raw.size} bytes, {qtype.name} ({rows}, {cols}) needs "
                            f"{rows * cols // block * size}")
    b = raw.reshape(rows, cols // block, size)
    q, sc, mn, d, dmin = _DECODERS[qtype](b)
    nsub = cols // FORMATS[qtype].sub
    return BlockFields(qtype, q.reshape(rows, cols).astype(np.int8), sc.reshape(rows, nsub).astype(np.int16),
                       None if mn is None else mn.reshape(rows, nsub).astype(np.int16), d,
                       dmin)


# --- per-type decoders over (rows, blocks, bytes) --------------------------------------------------

def _u16(b: np.ndarray) -> np.ndarray:
    return b.copy().view("<u2")[..., 0]


def _ones(b: np.ndarray, n: int) -> np.ndarray:
    return np.ones(b.shape[:2] + (n,), np.int16)


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """ggml's 32-block packing: element j in the low nibble of byte j, element j + 16 in its high nibble."""
    return np.concatenate([qs & 0xF, qs >> 4], axis=-1).astype(np.int16)


def _high_bits(qh: np.ndarray) -> np.ndarray:
    """Q5_0/Q5_1: bit j of the little-endian 32-bit qh is element j's fifth bit."""
    return np.unpackbits(qh, axis=-1, bitorder="little").astype(np.int16)


def _q8_0(b):
    return b[..., 2:].view(np.int8), _ones(b, 1), None, _u16(b[..., 0:2]), None


def _q4_0(b):
    return _nibbles(b[..., 2:18]) - 8, _ones(b, 1), None, _u16(b[..., 0:2]), None


def _q4_1(b):
    return _nibbles(b[..., 4:20]), _ones(b, 1), None, _u16(b[..., 0:2]), _u16(b[..., 2:4])


def _q5_0(b):
    return _nibbles(b[..., 6:22]) + 16 * _high_bits(b[..., 2:6]) - 16, _ones(b, 1), None, _u16(b[..., 0:2]), None


def _q5_1(b):
    q = _nibbles(b[..., 8:24]) + 16 * _high_bits(b[..., 4:8])
    return q, _ones(b, 1), None, _u16(b[..., 0:2]), _u16(b[..., 2:4])


def _crumbs(qs: np.ndarray) -> np.ndarray:
    """Q2_K/Q3_K low bits: weight 128n + 32j + l is bits 2j..2j+1 of byte 32n + l."""
    halves = qs.reshape(qs.shape[:-1] + (2, 1, 32)).astype(np.int16)
    shifts = np.array([0, 2, 4, 6]).reshape(1, 4, 1)
    return ((halves >> shifts) & 3).reshape(qs.shape[:-1] + (QK_K,))


def _q2_k(b):
    scales = b[..., 0:16].astype(np.int16)
    return _crumbs(b[..., 16:80]), scales & 0xF, scales >> 4, _u16(b[..., 80:82]), _u16(b[..., 82:84])


def _q3_k(b):
    hbit = np.unpackbits(b[..., 0:32, None], axis=-1, bitorder="little")  # (.., byte l, bit k): weight 32k + l
    hbit = np.swapaxes(hbit, -1, -2).reshape(b.shape[:2] + (QK_K,)).astype(np.int16)
    q = _crumbs(b[..., 32:96]) - 4 * (1 - hbit)
    s = b[..., 96:108].astype(np.int16)
    low = np.concatenate([s[..., 0:8] & 0xF, s[..., 0:8] >> 4], axis=-1)
    high = np.concatenate([(s[..., 8:12] >> shift) & 3 for shift in (0, 2, 4, 6)], axis=-1)
    return q, (low | high << 4) - 32, None, _u16(b[..., 108:110]), None


def scale_min_k4(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ggml's get_scale_min_k4 for the eight 6-bit (scale, min) pairs in 12 bytes."""
    s = s.astype(np.int16)
    sc = np.concatenate([s[..., 0:4] & 63, (s[..., 8:12] & 0xF) | (s[..., 0:4] >> 6) << 4], axis=-1)
    mn = np.concatenate([s[..., 4:8] & 63, (s[..., 8:12] >> 4) | (s[..., 4:8] >> 6) << 4], axis=-1)
    return sc, mn


def _nibble_pairs(qs: np.ndarray) -> np.ndarray:
    """Q4_K/Q5_K low nibbles: weight 64k + l in the low nibble of byte 32k + l, 64k + 32 + l in its high one."""
    chunks = qs.reshape(qs.shape[:-1] + (4, 1, 32)).astype(np.int16)
    return ((chunks >> np.array([0, 4]).reshape(1, 2, 1)) & 0xF).reshape(qs.shape[:-1] + (QK_K,))


def _q4_k(b):
    sc, mn = scale_min_k4(b[..., 4:16])
    return _nibble_pairs(b[..., 16:144]), sc, mn, _u16(b[..., 0:2]), _u16(b[..., 2:4])


def _q5_k(b):
    sc, mn = scale_min_k4(b[..., 4:16])
    high = np.unpackbits(b[..., 16:48, None], axis=-1, bitorder="little")  # (.., byte l, bit s): weight 32s + l
    high = np.swapaxes(high, -1, -2).reshape(b.shape[:2] + (QK_K,)).astype(np.int16)
    return _nibble_pairs(b[..., 48:176]) + 16 * high, sc, mn, _u16(b[..., 0:2]), _u16(b[..., 2:4])


def _q6_k(b):
    ql = b[..., 0:128].reshape(b.shape[:2] + (2, 2, 32)).astype(np.int16)  # (half n, chunk c, l)
    qh = b[..., 128:192].reshape(b.shape[:2] + (2, 1, 32)).astype(np.int16)
    low = np.concatenate([ql & 0xF, ql >> 4], axis=-2)  # chunk k = 0..3: ql[c = k % 2] nibble k // 2
    high = (qh >> np.array([0, 2, 4, 6]).reshape(4, 1)) & 3
    q = (low | high << 4).reshape(b.shape[:2] + (QK_K,)) - 32
    return q, b[..., 192:208].view(np.int8).astype(np.int16), None, _u16(b[..., 208:210]), None


_DECODERS = {
    QT.Q8_0: _q8_0, QT.Q4_0: _q4_0, QT.Q4_1: _q4_1, QT.Q5_0: _q5_0, QT.Q5_1: _q5_1,
    QT.Q2_K: _q2_k, QT.Q3_K: _q3_k, QT.Q4_K: _q4_k, QT.Q5_K: _q5_k, QT.Q6_K: _q6_k,
}
