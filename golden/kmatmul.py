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

`FormatMatmul.matmul` is fast and exact: within an activation block, `P_b` is the dot product of
the activations with the integer codes `sc_k q_j` (at most 4096 in magnitude), which it sums in
float32 BLAS as IntTensor does, splitting the activations into parts narrow enough that every
sum stays below 2**24. `matmul_exact` is the int64 transcription of the sums above, its check.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np

from . import spec
from .block_matmul import EXACT_F64, FLOAT_EXP_MIN, _largest_exponent
from .errors import HardwireError
from .kquants import BlockFields
from .spec import ACC_BITS, ACC_FRAC, ACT_MAX, BLOCK, floor_shift, sat

SUB = 16
F32_EXACT = 2**24
# ways to cut a B16 mantissa into parts (shifts, the top part signed): the largest part magnitude
ACT_SPLITS = (((0,), ACT_MAX), ((8, 0), 255), ((10, 5, 0), 32))


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
        ts = self._tensors = [FormatTensor(p) for p in parts]
        cols = {t.q.shape[1] for t in ts}
        if len(cols) != 1:
            raise HardwireError("stacked tensors differ in row length")
        self.cols = cols.pop()
        self.nb = self.cols // BLOCK
        if self.nb > spec.MAX_BLOCKS_PER_ROW:
            raise HardwireError(f"rows of {self.cols} elements exceed the {spec.MAX_BLOCKS_PER_ROW * BLOCK} limit")
        self.rows = sum(t.rows for t in ts)
        self.splits = np.cumsum([t.rows for t in ts])[:-1]
        self.has_offset = any(t.o is not None for t in ts)
        self._build_fast(ts)

    def split(self, y: np.ndarray) -> list[np.ndarray]:
        return np.split(y, self.splits, axis=-1)

    def block_scales(self, offset: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(M_d, E_d), or the offset's (M_o, E_o), of every (row, activation block), the stacked tensors'
        rows in order; a tensor without an offset has M_o = 0."""
        names = ("mo", "eo") if offset else ("md", "ed")
        return tuple(np.concatenate([np.zeros_like(t.md) if getattr(t, n) is None else getattr(t, n)
                                     for t in self._tensors]) for n in names)

    def set_block_scale(self, row: int, block: int, offset: bool, mant: int, exp: int) -> None:
        """Replace one (row, activation block)'s d, or its offset scale, by M * 2**E: the golden
        reference of a mutant whose flip hits one slot's copy of a super-block scale (cosim/mutation.py)."""
        for t, first in zip(self._tensors, [0, *self.splits], strict=True):
            if first <= row < first + t.rows:
                m, e = (t.mo, t.eo) if offset else (t.md, t.ed)
                m[row - first, block], e[row - first, block] = mant, exp
        self._build_fast(self._tensors)
        self.__dict__.pop("_exact", None)  # the int64 path's cached arrays

    # --- the fast path: float32 BLAS on the codes sc_k q_j, exact by construction -------------------

    def _build_fast(self, ts: list[FormatTensor]) -> None:
        codes = np.concatenate([t.q.astype(np.int32) * np.repeat(t.sc, SUB, axis=1) for t in ts])
        self.max_code = int(np.abs(codes).max(initial=0))
        # the fewest activation parts whose block sums all stay below 2**24 (ACT_SPLITS' last always does)
        self.act_shifts = next(shifts for shifts, part_max in ACT_SPLITS
                               if self.max_code * part_max * BLOCK < F32_EXACT)
        self.codes_t = np.ascontiguousarray(  # (nb, 32, rows): BLAS streams it as one pass per block
            codes.reshape(self.rows, self.nb, BLOCK).transpose(1, 2, 0), dtype=np.float32)
        md, ed = (np.concatenate([getattr(t, n) for t in ts]).T for n in ("md", "ed"))  # (nb, rows)
        self.cd = (md * np.exp2(ed + ACC_FRAC))[:, None, :]  # (nb, 1, rows), exact float64
        peak_offset = 0.0
        if self.has_offset:  # coefficient M_o o_k 2**(E_o + 24) per half block, (2, nb, 1, rows)
            halves = [self._offset_halves(t) for t in ts]
            self.cm = np.concatenate(halves, axis=-1)
            peak_offset = float(np.abs(self.cm).max(initial=0.0))
        # a block term is at most peak * 2**e for block exponents e (two floors add < 2 to it)
        peak = (float(np.abs(self.cd).max(initial=0.0)) * self.max_code + peak_offset) * ACT_MAX * BLOCK
        self.e_fast = _largest_exponent(lambda b: b * self.nb < EXACT_F64 and b < 2.0 ** (spec.TERM_BITS - 1), peak)
        self.e_in_range = min(self.e_fast,
                              _largest_exponent(lambda b: self.nb * (b + 2) < 2.0 ** (ACC_BITS - 2), peak))

    def _offset_halves(self, t: FormatTensor) -> np.ndarray:
        if t.o is None:
            return np.zeros((2, self.nb, 1, t.rows))
        per_sub = np.repeat(t.mo * np.exp2(t.eo + ACC_FRAC), BLOCK // SUB, axis=1) * t.o  # (rows, nsub)
        return per_sub.reshape(t.rows, self.nb, 2).transpose(2, 1, 0)[:, :, None, :]

    def matmul(self, am: np.ndarray, ae: np.ndarray) -> np.ndarray:
        """B16 activations (T, cols) mantissas, (T, nb) exponents -> ACC (T, rows)."""
        e_top = int(ae.max())
        if e_top > self.e_fast or int(ae.min()) < FLOAT_EXP_MIN:
            return self.matmul_exact(am, ae)
        T = am.shape[0]
        a = am.reshape(T, self.nb, BLOCK).transpose(1, 0, 2)  # (nb, T, 32)
        scale = np.exp2(ae.T.astype(np.float64))[:, :, None]  # (nb, T, 1)
        # every block term floored on its own: floor(M_d P 2**(E_d+e+24)) [+ floor(M_o O 2**(E_o+e+24))]
        terms = np.multiply(self._scaled_block_sums(a, scale), self.cd)
        np.floor(terms, out=terms)
        if self.has_offset:  # O 2**e per half block times its coefficient: integers below 2**38, exact
            asum = a.reshape(self.nb, T, 2, SUB).sum(axis=-1) * scale  # (nb, T, 2)
            offsets = asum[:, :, :1] * self.cm[0] + asum[:, :, 1:] * self.cm[1]
            terms += np.floor(offsets, out=offsets)
        y = terms.sum(axis=0).astype(np.int64)
        return y if e_top <= self.e_in_range else sat(y, ACC_BITS)

    def _scaled_block_sums(self, a: np.ndarray, scale: np.ndarray) -> np.ndarray:
        """P 2**e per (block, position, row), exact: each part's float32 sums are integers below 2**24 times
        a power of two, and their weighted total (below 2**33 of them) is exact in float64."""
        T = a.shape[1]
        if len(self.act_shifts) == 1:
            return np.matmul((a * scale).astype(np.float32), self.codes_t).astype(np.float64)
        parts = [(a >> s if i == 0 else (a >> s) & ((1 << (self.act_shifts[i - 1] - s)) - 1)) * (scale * 2.0**s)
                 for i, s in enumerate(self.act_shifts)]
        sums = np.matmul(np.concatenate(parts, axis=1).astype(np.float32), self.codes_t)  # (nb, parts T, rows)
        total = sums[:, :T].astype(np.float64)
        for i in range(1, len(parts)):
            total += sums[:, i * T:(i + 1) * T]
        return total

    # --- the int64 path: section 3.1 transcribed (sub-block sums times sub-block scales) ------------

    @cached_property
    def _exact(self) -> dict:
        ts, nsub = self._tensors, self.cols // SUB
        # (nsub, rows, 16) float64: sub-block sums of |q| <= 128 by |a| < 2**15 stay far below 2**53
        arrays = {"codes": np.ascontiguousarray(np.concatenate([t.q for t in ts]).reshape(
                      self.rows, nsub, SUB).transpose(1, 0, 2), dtype=np.float64),
                  "sc": np.concatenate([t.sc for t in ts]).T.astype(np.float64),  # (nsub, rows)
                  "md": np.concatenate([t.md for t in ts]).T, "ed": np.concatenate([t.ed for t in ts]).T}
        if self.has_offset:  # formats without an offset stack with zero coefficients
            for key, like in (("o", "sc"), ("mo", "md"), ("eo", "ed")):
                arrays[key] = np.concatenate([np.zeros_like(getattr(t, like)) if t.o is None else getattr(t, key)
                                              for t in ts]).T
        return arrays

    def block_products(self, am: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(P, O) per (block, row, position) as int64 for B16 mantissas am (T, cols)."""
        x, T = self._exact, am.shape[0]
        a = am.reshape(T, -1, SUB).transpose(1, 2, 0).astype(np.float64)  # (nsub, 16, T)
        s = np.matmul(x["codes"], a) * x["sc"][:, :, None]  # sc_k S_k, exact: |.| < 2**32
        p = s.reshape(self.nb, 2, self.rows, T).sum(axis=1).astype(np.int64)
        if not self.has_offset:
            return p, None
        asum = a.sum(axis=1)  # (nsub, T)
        o = (x["o"][:, :, None] * asum[:, None, :]).reshape(self.nb, 2, self.rows, T).sum(axis=1)
        return p, o.astype(np.int64)

    def matmul_exact(self, am: np.ndarray, ae: np.ndarray) -> np.ndarray:
        """The same words through int64 only: the check of `matmul` and its path beyond the float range."""
        x = self._exact
        p, o = self.block_products(am)
        e = ae.T[:, None, :]  # (nb, 1, T)
        terms = spec.sat_shift(x["md"][:, :, None] * p, x["ed"][:, :, None] + e + ACC_FRAC, spec.TERM_BITS)
        if o is not None:
            terms = terms + spec.sat_shift(x["mo"][:, :, None] * o, x["eo"][:, :, None] + e + ACC_FRAC,
                                           spec.TERM_BITS)
        return sat(terms.sum(axis=0).T, ACC_BITS)

    def embed_rows(self, tokens: np.ndarray) -> np.ndarray:
        """Section 4's lookup: rows of the tensor as ACC words, x = d sc q (+ offset o), floored at 2**-24."""
        x, n = self._exact, len(tokens)
        q = x["codes"].transpose(1, 0, 2)[tokens].astype(np.int64)  # (n, nsub, 16)
        dsc = x["sc"].T[tokens][..., None].astype(np.int64) * q  # sc q per element
        md = np.repeat(x["md"].T[tokens], BLOCK // SUB, axis=1)[..., None]
        ed = np.repeat(x["ed"].T[tokens], BLOCK // SUB, axis=1)[..., None]
        out = floor_shift(md * dsc, ed + ACC_FRAC)
        if self.has_offset:
            mo = np.repeat(x["mo"].T[tokens], BLOCK // SUB, axis=1) * x["o"].T[tokens]
            eo = np.repeat(x["eo"].T[tokens], BLOCK // SUB, axis=1)
            out = out + floor_shift(mo, eo + ACC_FRAC)[..., None]
        return sat(out.reshape(n, -1), ACC_BITS)
