"""Section 3 of docs/numerics.md for every weight format: the exact integer block dot product.

A weight row is cut into sub-blocks of 16 (a format with sub-blocks of 32
repeats each scale over two of them). Per sub-block `k` the chip sums
integers, `S_k = sum q_j a_j` and, for formats with offsets or mins,
`A_k = sum a_j`; per activation block `b` of 32 it forms

    P_b = sum_{k in b} sc_k * S_k        O_b = sum_{k in b} o_k * A_k

and the block term `floor_shift(M_d P_b, E_d + e_b + 24) + floor_shift(M_o O_b, E_o + e_b + 24)`,
each product saturated to TERM_BITS. `d` is the fp16 of the 32-block or of
the 256-weight super-block the activation block lies in. The offset is
Q4_1/Q5_1's `+m` (o = 1) or the K quants' `-dmin` (o = the sub-block min).
Q8_0, Q4_0 and Q4_1 give the same words as `block_matmul.IntTensor`.
"""

from __future__ import annotations

import numpy as np

from . import spec
from .errors import HardwireError
from .kquants import BlockFields
from .spec import ACC_BITS, ACC_FRAC, BLOCK, floor_shift, sat

SUB = 16


class FormatTensor:
    """One weight tensor in section 3's general form, from a `QuantTensor` or `kquants.BlockFields`."""

    def __init__(self, t):
        if isinstance(t, BlockFields):
            self._from_fields(t)
        else:  # gguf_model.QuantTensor: Q8_0, Q4_0, Q4_1
            rows, cols = t.shape
            self.q = t.q.reshape(rows, cols).astype(np.int16)
            self.sc = np.ones((rows, cols // SUB), np.int64)
            self.o = None if t.m_bits is None else np.ones((rows, cols // SUB), np.int64)
            self.md, self.ed = spec.fp16_parts(t.d_bits)
            self.mo, self.eo = (None, None) if t.m_bits is None else spec.fp16_parts(t.m_bits)
        self.rows = self.q.shape[0]

    def _from_fields(self, f: BlockFields) -> None:
        fmt = f.format
        per_sub = fmt.sub // SUB
        self.q = f.q.astype(np.int16)
        self.sc = np.repeat(f.sc.astype(np.int64), per_sub, axis=1)
        self.md, self.ed = (np.repeat(x, fmt.block // BLOCK, axis=1) for x in f.d_parts())
        self.o = self.mo = self.eo = None
        if fmt.has_min:
            self.o = np.repeat(f.mn.astype(np.int64), per_sub, axis=1)
            mo, eo = f.dmin_parts()
            self.mo, self.eo = -np.repeat(mo, fmt.block // BLOCK, axis=1), np.repeat(eo, fmt.block // BLOCK, axis=1)
        elif fmt.has_offset:
            self.o = np.ones_like(self.sc)
            self.mo, self.eo = f.dmin_parts()


class FormatMatmul:
    """Several tensors that read the same input, stacked by rows (Q|K|V, gate|up), whatever their formats."""

    def __init__(self, *parts):
        ts = [FormatTensor(p) for p in parts]
        cols = {t.q.shape[1] for t in ts}
        if len(cols) != 1:
            raise HardwireError("stacked tensors differ in row length")
        self.cols = cols.pop()
        self.nb = self.cols // BLOCK
        if self.nb > spec.MAX_BLOCKS_PER_ROW:
            raise HardwireError(f"rows of {self.cols} elements exceed the {spec.MAX_BLOCKS_PER_ROW * BLOCK} limit")
        self.rows = sum(t.rows for t in ts)
        self.splits = np.cumsum([t.rows for t in ts])[:-1]
        nsub = self.cols // SUB
        # (nsub, rows, 16) float64: sub-block sums of |q| <= 128 by |a| < 2**15 stay far below 2**53
        self.codes = np.ascontiguousarray(
            np.concatenate([t.q for t in ts]).reshape(self.rows, nsub, SUB).transpose(1, 0, 2), dtype=np.float64)
        self.sc = np.concatenate([t.sc for t in ts]).T.astype(np.float64)  # (nsub, rows)
        self.md = np.concatenate([t.md for t in ts]).T  # (nb, rows)
        self.ed = np.concatenate([t.ed for t in ts]).T
        self.has_offset = any(t.o is not None for t in ts)
        if self.has_offset:  # formats without an offset stack with zero coefficients
            zeros = [(np.zeros_like(t.sc), np.zeros_like(t.md), np.zeros_like(t.ed)) for t in ts]
            self.o = np.concatenate([z[0] if t.o is None else t.o for t, z in zip(ts, zeros, strict=True)]).T
            self.mo = np.concatenate([z[1] if t.o is None else t.mo for t, z in zip(ts, zeros, strict=True)]).T
            self.eo = np.concatenate([z[2] if t.o is None else t.eo for t, z in zip(ts, zeros, strict=True)]).T

    def split(self, y: np.ndarray) -> list[np.ndarray]:
        return np.split(y, self.splits, axis=-1)

    def block_products(self, am: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(P, O) per (block, row, position) as int64 for B16 mantissas am (T, cols)."""
        T = am.shape[0]
        a = am.reshape(T, -1, SUB).transpose(1, 2, 0).astype(np.float64)  # (nsub, 16, T)
        s = np.matmul(self.codes, a) * self.sc[:, :, None]  # sc_k S_k, exact: |.| < 2**32
        p = s.reshape(self.nb, 2, self.rows, T).sum(axis=1).astype(np.int64)
        if not self.has_offset:
            return p, None
        asum = a.sum(axis=1)  # (nsub, T)
        o = (self.o[:, :, None] * asum[:, None, :]).reshape(self.nb, 2, self.rows, T).sum(axis=1)
        return p, o.astype(np.int64)

    def matmul(self, am: np.ndarray, ae: np.ndarray) -> np.ndarray:
        """B16 activations (T, cols) mantissas, (T, nb) exponents -> ACC (T, rows)."""
        p, o = self.block_products(am)
        e = ae.T[:, None, :]  # (nb, 1, T)
        terms = spec.sat_shift(self.md[:, :, None] * p, self.ed[:, :, None] + e + ACC_FRAC, spec.TERM_BITS)
        if o is not None:
            terms = terms + spec.sat_shift(self.mo[:, :, None] * o, self.eo[:, :, None] + e + ACC_FRAC,
                                           spec.TERM_BITS)
        return sat(terms.sum(axis=0).T, ACC_BITS)

    matmul_exact = matmul  # there is only the exact path

    def embed_rows(self, tokens: np.ndarray) -> np.ndarray:
        """Section 4's lookup: rows of the tensor as ACC words, x = d sc q (+ offset o), floored at 2**-24."""
        n = len(tokens)
        q = self.codes.transpose(1, 0, 2)[tokens].astype(np.int64)  # (n, nsub, 16)
        dsc = self.sc.T[tokens][..., None].astype(np.int64) * q  # sc q per element
        md = np.repeat(self.md.T[tokens], BLOCK // SUB, axis=1)[..., None]
        ed = np.repeat(self.ed.T[tokens], BLOCK // SUB, axis=1)[..., None]
        x = floor_shift(md * dsc, ed + ACC_FRAC)
        if self.has_offset:
            mo = np.repeat(self.mo.T[tokens], BLOCK // SUB, axis=1) * self.o.T[tokens]
            eo = np.repeat(self.eo.T[tokens], BLOCK // SUB, axis=1)
            x = x + floor_shift(mo, eo + ACC_FRAC)[..., None]
        return sat(x.reshape(n, -1), ACC_BITS)
