"""The block matmul of docs/numerics.md section 3, exact and fast: `IntTensor`.

The integer reference's matmuls take a float fast path where it is exact: products and sums stay
below 2**53 and are whole numbers, which each call checks (against bounds worked out once per
weight tensor) before trusting it, falling back to the int64 path otherwise. `matmul_exact` is
the int64 path alone, the check of the fast one.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np

from . import spec
from .errors import HardwireError
from .gguf_model import QuantTensor
from .spec import ACC_BITS, ACC_FRAC, ACT_MAX, BLOCK, sat

EXACT_F64 = 2.0**53
# block exponents the float matmul path takes: scaled activations and sums stay float32 normal numbers
FLOAT_EXP_MIN, FLOAT_EXP_MAX = -99, 31


class IntTensor:
    """Quantized weights laid out for the block dot product of section 3.

    Several tensors that read the same input (Q|K|V, gate|up) may be stacked by
    rows so that one pass over the activations serves them all.
    """

    def __init__(self, *parts: QuantTensor):
        q = np.concatenate([p.q for p in parts])
        rows, nb = q.shape[0], q.shape[1]
        self.rows, self.nb, self.splits = rows, nb, np.cumsum([p.shape[0] for p in parts])[:-1]
        if nb > spec.MAX_BLOCKS_PER_ROW:
            raise HardwireError(f"rows of {nb * BLOCK} elements exceed the {spec.MAX_BLOCKS_PER_ROW * BLOCK} limit")
        self.max_code = int(np.abs(q.astype(np.int16)).max(initial=0))  # |-128| overflows int8
        # block sums |S| <= max_code * ACT_MAX * 32 are exact in float32 BLAS below 2**24; else split a
        self.split_act = self.max_code * ACT_MAX * BLOCK >= 2**24
        self.codes = np.ascontiguousarray(q.transpose(1, 0, 2), dtype=np.float32)  # (nb, rows, 32)
        self.md, self.ed = (x.T.copy() for x in spec.fp16_parts(np.concatenate([p.d_bits for p in parts])))
        self.cd = (self.md * np.exp2(self.ed + ACC_FRAC))[:, None, :]  # (nb, 1, rows), exact float64
        self.cd_peak = float(np.abs(self.cd).max(initial=0.0))
        self.mm = self.em = self.cm = None
        self.cm_peak = 0.0
        if any(p.m_bits is not None for p in parts):
            if not all(p.m_bits is not None for p in parts):
                raise HardwireError("stacked tensors mix Q4_1 with other formats")
            self.mm, self.em = (x.T.copy() for x in spec.fp16_parts(np.concatenate([p.m_bits for p in parts])))
            self.cm = (self.mm * np.exp2(self.em + ACC_FRAC))[:, None, :]
            self.cm_peak = float(np.abs(self.cm).max(initial=0.0))
        # a block term is at most peak * 2**e for block exponents e (two floors add < 2 to it)
        peak = (self.cd_peak * self.max_code + self.cm_peak) * ACT_MAX * BLOCK
        # the float path is exact: nb terms sum below 2**53, and no term reaches TERM_BITS saturation
        self.e_fast = _largest_exponent(lambda b: b * self.nb < EXACT_F64 and b < 2.0 ** (spec.TERM_BITS - 1), peak)
        # and no row can reach ACC saturation either (with a factor 2 for the rounding of these bounds)
        self.e_in_range = min(self.e_fast, _largest_exponent(lambda b: self.nb * (b + 2) < 2.0 ** (ACC_BITS - 2), peak))

    @cached_property
    def codes_t(self) -> np.ndarray:
        """Codes as (nb, 32, rows), built at the first single-position call: BLAS streams this layout
        faster as a matrix-vector product than (nb, rows, 32), which serves batches better."""
        return np.ascontiguousarray(self.codes.transpose(0, 2, 1))

    def split(self, y: np.ndarray) -> list[np.ndarray]:
        """Undo the row stacking of a (T, rows) result."""
        return np.split(y, self.splits, axis=-1)

    def block_sums(self, am: np.ndarray) -> np.ndarray:
        """S = sum_j q_j a_j per (block, row, position), exact, as float (nb, rows, T)."""
        T = am.shape[0]
        a = am.reshape(T, self.nb, BLOCK).transpose(1, 2, 0)  # (nb, 32, T)
        if not self.split_act:
            return np.matmul(self.codes, a.astype(np.float32))
        # split a = 256 hi + lo so that each half's sums are exact in float32; one pass over the codes
        s = np.matmul(self.codes, np.concatenate([a >> 8, a & 0xFF], axis=-1).astype(np.float32)).astype(np.float64)
        return s[..., :T] * 256.0 + s[..., T:]

    def matmul(self, am: np.ndarray, ae: np.ndarray) -> np.ndarray:
        """B16 activations (T, cols) mantissas, (T, nb) exponents -> ACC (T, rows)."""
        e_top = int(ae.max())
        if e_top > self.e_fast or int(ae.min()) < FLOAT_EXP_MIN:
            return self._matmul_int(am, ae)
        T = am.shape[0]
        a = am.reshape(T, self.nb, BLOCK).transpose(1, 0, 2)  # (nb, T, 32)
        scale = np.exp2(ae.T.astype(np.float64))[:, :, None]  # (nb, T, 1)
        # every block term floored on its own (section 3): floor(M_d S 2**(E_d+e+24)) [+ Q4_1's offset term]
        terms = np.multiply(self._scaled_block_sums(a, scale), self.cd, dtype=np.float64)
        np.floor(terms, out=terms)
        if self.cm is not None:
            offsets = np.multiply(self.cm, a.sum(axis=-1, keepdims=True) * scale)
            terms += np.floor(offsets, out=offsets)
        y = terms.sum(axis=0).astype(np.int64)
        return y if e_top <= self.e_in_range else sat(y, ACC_BITS)

    def _scaled_block_sums(self, a: np.ndarray, scale: np.ndarray) -> np.ndarray:
        """S * 2**e per (block, position, row) for a (nb, T, 32), scale (nb, T, 1): exact float32 or float64.

        Scaling a block's activations by a power of two scales its float sums exactly.
        """
        T = a.shape[1]
        if T == 1 and not self.split_act:
            return np.matmul((a * scale).astype(np.float32), self.codes_t)
        if not self.split_act:
            return np.matmul(self.codes, (a * scale).astype(np.float32).transpose(0, 2, 1)).transpose(0, 2, 1)
        # a = 256 hi + lo: each half's sums are exact in float32, and so are they times 256 2**e
        halves = np.concatenate([(a >> 8) * (256.0 * scale), (a & 0xFF) * scale], axis=1).astype(np.float32)
        s = np.matmul(self.codes, halves.transpose(0, 2, 1)).transpose(0, 2, 1)
        return np.add(s[:, :T], s[:, T:], dtype=np.float64)

    def _matmul_int(self, am: np.ndarray, ae: np.ndarray) -> np.ndarray:
        """The int64 path for exponents beyond the float path's exact range (exact float block sums)."""
        T = am.shape[0]
        asum = am.reshape(T, self.nb, BLOCK).sum(axis=-1).T if self.cm is not None else None  # (nb, T)
        y = self._terms_exact(self.block_sums(am).astype(np.int64), asum, ae.T).sum(axis=0)
        return sat(y.T, ACC_BITS)

    def matmul_exact(self, am: np.ndarray, ae: np.ndarray) -> np.ndarray:
        """The same result through int64 only (the check for the fast path)."""
        T = am.shape[0]
        a3 = am.reshape(T, self.nb, BLOCK).astype(np.int64)
        s = np.einsum("brj,tbj->brt", self.codes.astype(np.int64), a3)
        asum = a3.sum(axis=-1).T if self.cm is not None else None
        return sat(self._terms_exact(s, asum, ae.T).sum(axis=0).T, ACC_BITS)

    def _terms_exact(self, s, asum, e):
        terms = spec.sat_shift(self.md[:, :, None] * s, self.ed[:, :, None] + e[:, None, :] + ACC_FRAC,
                               spec.TERM_BITS)
        if asum is not None:
            terms = terms + spec.sat_shift(self.mm[:, :, None] * asum[:, None, :],
                                           self.em[:, :, None] + e[:, None, :] + ACC_FRAC, spec.TERM_BITS)
        return terms


def _largest_exponent(holds, peak: float) -> int:
    """The largest e in the float path's range with holds(peak * 2**e), monotone in e (below the range if none)."""
    for e in range(FLOAT_EXP_MAX, FLOAT_EXP_MIN - 1, -1):
        if holds(peak * 2.0**e):
            return e
    return FLOAT_EXP_MIN - 1  # the int64 path serves every call
