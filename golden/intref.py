"""Integer reference: docs/numerics.md made executable, vectorized over positions.

Every op works on a batch of T new positions at once (one for decoding, a
chunk for evaluation); the integers do not depend on the batching. Where a
float fast path is used it is exact: products and sums stay below 2**53 and
are whole numbers, which each call checks before trusting it, falling back to
the int64 path otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import spec
from .errors import HardwireError
from .gguf_model import Model, QuantTensor
from .spec import ACC_BITS, ACC_FRAC, ACT_BITS, ACT_MAX, BLOCK, blocks, floor_shift, rq, sat

EXACT_F64 = 2.0**53

# A tap is (mantissas, exponents): B16 taps carry one exponent per block, ACC taps None.
Tap = tuple[np.ndarray, "np.ndarray | None"]


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
        # codes as float32 (nb, rows, 32): block sums |S| < 2**19 are exact in float32 BLAS
        self.codes = np.ascontiguousarray(q.transpose(1, 0, 2), dtype=np.float32)
        self.max_code = int(np.abs(q.astype(np.int16)).max(initial=0))  # |-128| overflows int8
        self.md, self.ed = (x.T.copy() for x in spec.fp16_parts(np.concatenate([p.d_bits for p in parts])))
        self.cd = self.md * np.exp2(self.ed + ACC_FRAC)  # exact float64
        self.cd_peak = float(np.abs(self.cd).max(initial=0.0))
        # the smallest exponent of a non-zero scale: terms are whole numbers when it plus e + 24 >= 0
        self.ed_min = int(self.ed[self.md != 0].min(initial=0))
        self.mm = self.em = self.cm = None
        self.cm_peak = 0.0
        if any(p.m_bits is not None for p in parts):
            if not all(p.m_bits is not None for p in parts):
                raise HardwireError("stacked tensors mix Q4_1 with other formats")
            self.mm, self.em = (x.T.copy() for x in spec.fp16_parts(np.concatenate([p.m_bits for p in parts])))
            self.cm = self.mm * np.exp2(self.em + ACC_FRAC)
            self.cm_peak = float(np.abs(self.cm).max(initial=0.0))

    def split(self, y: np.ndarray) -> list[np.ndarray]:
        """Undo the row stacking of a (T, rows) result."""
        return np.split(y, self.splits, axis=-1)

    def block_sums(self, am: np.ndarray, scale: np.ndarray | None = None) -> np.ndarray:
        """S = sum_j q_j a_j per (block, row, position), times `scale` (nb, 1, T) if given.

        Exact: scaling every activation of a block by the same power of two scales
        its float sums exactly. Returns float32 or float64 (nb, rows, T).
        """
        T = am.shape[0]
        a = am.reshape(T, self.nb, BLOCK).transpose(1, 2, 0)  # (nb, 32, T)
        if self.max_code * ACT_MAX * BLOCK < 2**24:  # float32 BLAS sums are exact
            a32 = a.astype(np.float32)
            return np.matmul(self.codes, a32 if scale is None else a32 * scale.astype(np.float32))
        # split a = 256 hi + lo so that each half's sums are exact in float32; one pass over the codes
        halves = np.concatenate([a >> 8, a & 0xFF], axis=-1).astype(np.float32)
        if scale is not None:
            halves *= np.concatenate([scale, scale], axis=-1).astype(np.float32)
        s = np.matmul(self.codes, halves).astype(np.float64)
        return s[..., :T] * 256.0 + s[..., T:]

    def matmul(self, am: np.ndarray, ae: np.ndarray) -> np.ndarray:
        """B16 activations (T, cols) mantissas, (T, nb) exponents -> ACC (T, rows)."""
        T = am.shape[0]
        asum = am.reshape(T, self.nb, BLOCK).sum(axis=-1).T if self.cm is not None else None  # (nb, T)
        scale = np.exp2(ae.T.astype(np.float64))[:, None, :]  # (nb, 1, T)
        term_bound = (self.cd_peak * self.max_code + self.cm_peak) * ACT_MAX * BLOCK * scale.max()
        in_float_range = int(ae.min()) > -100  # scaled activations stay normal float32 numbers
        if term_bound * self.nb < EXACT_F64 and term_bound < 2.0 ** (spec.TERM_BITS - 1) and in_float_range:
            terms = np.multiply(self.block_sums(am, scale), self.cd[:, :, None], dtype=np.float64)
            if self.ed_min + int(ae.min()) + ACC_FRAC < 0:  # some terms have fractions: floor them
                np.floor(terms, out=terms)
            if asum is not None:  # Q4_1's offset term, floored on its own
                offsets = np.multiply(self.cm[:, :, None], asum[:, None, :] * scale)
                terms += np.floor(offsets, out=offsets)
            y = terms.sum(axis=0).astype(np.int64)
        else:
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


@dataclass
class KVCache:
    """B16 keys (after RoPE) and values per layer, for `capacity` positions."""

    k: np.ndarray  # (L, P, kv_dim) int64 mantissas
    ke: np.ndarray  # (L, P, kv_dim // 32) exponents
    v: np.ndarray
    ve: np.ndarray
    length: int = 0

    @property
    def capacity(self) -> int:
        return self.k.shape[1]


@dataclass
class Trace:
    """Per-op taps: (layer, op, position) -> (mantissas, exponents or None)."""

    taps: dict = field(default_factory=dict)

    def put(self, layer: int, op: str, positions: np.ndarray, mant: np.ndarray, exp=None) -> None:
        for i, p in enumerate(positions):
            self.taps[(layer, op, int(p))] = (mant[i].copy(), None if exp is None else exp[i].copy())


class IntModel:
    def __init__(self, model: Model, capacity: int | None = None):
        cfg = self.cfg = model.config
        self.model = model
        self.capacity = capacity or cfg.context
        self.embed = model.embed
        self.embed_md, self.embed_ed = spec.fp16_parts(model.embed.d_bits)
        self.embed_mm = self.embed_em = None
        if model.embed.m_bits is not None:
            self.embed_mm, self.embed_em = spec.fp16_parts(model.embed.m_bits)
        self.lm_head = IntTensor(model.lm_head)
        self.layers = [{
            "qkv": IntTensor(lw.wq, lw.wk, lw.wv),
            "wo": IntTensor(lw.wo),
            "gate_up": IntTensor(lw.w_gate, lw.w_up),
            "w_down": IntTensor(lw.w_down),
            "attn_norm": spec.norm_gains(lw.attn_norm),
            "ffn_norm": spec.norm_gains(lw.ffn_norm),
        } for lw in model.layers]
        self.out_norm = spec.norm_gains(model.out_norm)
        self.eps_q = spec.eps_q(cfg.d_model, cfg.rms_eps)
        if self.eps_q >= 1 << 62:
            raise HardwireError(f"rms epsilon {cfg.rms_eps} is too large for the norm unit")
        self.rsqrt = spec.rsqrt_lut()
        self.exp2 = spec.exp2_lut()
        self.sigmoid = spec.sigmoid_lut()
        self.rope_cos, self.rope_sin = spec.rope_tables(cfg.head_dim, cfg.rope_theta, self.capacity)
        self.attn_scale = spec.attn_scale(cfg.head_dim)

    # --- state -----------------------------------------------------------------------------------

    def new_cache(self) -> KVCache:
        cfg = self.cfg
        kv = cfg.n_kv_heads * cfg.head_dim
        shape, eshape = (cfg.n_layers, self.capacity, kv), (cfg.n_layers, self.capacity, kv // BLOCK)
        return KVCache(np.zeros(shape, np.int64), np.zeros(eshape, np.int64),
                       np.zeros(shape, np.int64), np.zeros(eshape, np.int64))

    # --- ops -------------------------------------------------------------------------------------

    def embed_rows(self, tokens: np.ndarray) -> np.ndarray:
        q = self.embed.q[tokens].astype(np.int64)  # (T, nb, 32)
        x = floor_shift(self.embed_md[tokens][..., None] * q, self.embed_ed[tokens][..., None] + ACC_FRAC)
        if self.embed_mm is not None:
            x = x + floor_shift(self.embed_mm[tokens], self.embed_em[tokens] + ACC_FRAC)[..., None]
        return sat(x.reshape(len(tokens), -1), ACC_BITS)

    def rmsnorm(self, x: np.ndarray, gains: tuple[np.ndarray, int]) -> tuple[np.ndarray, np.ndarray]:
        G, e_g = gains
        x16, ex = rq(blocks(x), -ACC_FRAC, 16)  # (T, nb, 32), (T, nb)
        top = ex.max(axis=-1)  # X
        ss = floor_shift((x16 * x16).sum(axis=-1), 2 * (ex - top[:, None])).sum(axis=-1)
        ss = np.maximum(ss + floor_shift(self.eps_q, -(spec.RMS_EPS_FRAC + 2 * top)), 1)
        j = -((32 - spec.bitlen(ss)) // 2)  # ceil((bitlen - 32) / 2)
        t = floor_shift(ss, -2 * j)
        r = self.rsqrt[(t >> 21) - 512]
        y = x16 * blocks(G) * r[:, None, None]
        m, e = rq(y, ex + e_g - 31 - (j + top)[:, None], ACT_BITS)
        return m.reshape(x.shape), e

    def rope(self, acc: np.ndarray, positions: np.ndarray, heads: int) -> tuple[np.ndarray, np.ndarray]:
        T, hd = len(positions), self.cfg.head_dim
        u, e = rq(blocks(acc), -ACC_FRAC, 16)
        u = u.reshape(T, heads, hd)
        c = self.rope_cos[positions][:, None, :]
        s = self.rope_sin[positions][:, None, :]
        a, b = u[..., 0::2], u[..., 1::2]
        out = np.empty_like(u)
        out[..., 0::2] = a * c - b * s
        out[..., 1::2] = a * s + b * c
        m, e2 = rq(blocks(out.reshape(T, -1)), e - spec.ROPE_FRAC, ACT_BITS)
        return m.reshape(T, -1), e2

    def silu_gate(self, gate: np.ndarray, up: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        g16, eg = rq(blocks(gate), -ACC_FRAC, 16)
        u16, eu = rq(blocks(up), -ACC_FRAC, 16)
        half = spec.SIGMOID_ENTRIES // 2
        k = np.clip(floor_shift(g16, eg[..., None] + spec.SIGMOID_GRID_FRAC) + half, 0, spec.SIGMOID_ENTRIES - 1)
        y = g16 * self.sigmoid[k] * u16
        m, e = rq(y, eg + eu - spec.SIGMOID_FRAC, ACT_BITS)
        return m.reshape(gate.shape), e

    def attention(self, q, qe, cache: KVCache, layer: int, positions: np.ndarray):
        """q: (T, d_model) B16 after RoPE; the cache already holds these positions."""
        cfg = self.cfg
        T, hd, nkv = len(positions), cfg.head_dim, cfg.n_kv_heads
        nbh, n_keys = hd // BLOCK, int(positions[-1]) + 1
        # queries grouped by the KV head they share: (nkv, T*group, ...)
        qh = q.reshape(T, nkv, cfg.group, nbh, BLOCK).transpose(1, 0, 2, 3, 4).reshape(nkv, -1, nbh, BLOCK)
        qhe = qe.reshape(T, nkv, cfg.group, nbh).transpose(1, 0, 2, 3).reshape(nkv, -1, nbh)
        k = cache.k[layer, :n_keys].reshape(n_keys, nkv, nbh, BLOCK).transpose(1, 0, 2, 3)
        ke = cache.ke[layer, :n_keys].reshape(n_keys, nkv, nbh).transpose(1, 0, 2)
        v = cache.v[layer, :n_keys].reshape(n_keys, nkv, hd).transpose(1, 0, 2)
        ve = cache.ve[layer, :n_keys].reshape(n_keys, nkv, nbh).transpose(1, 0, 2)
        visible = np.repeat(np.arange(n_keys)[None, :] <= positions[:, None], cfg.group, axis=0)  # causal
        w = self._softmax_weights(qh, qhe, k, ke, visible)  # (nkv, T*group, S)
        o = self._weighted_values(w, v, ve)  # (nkv, T*group, hd) at 2**-48
        m, e = rq(blocks(o), -spec.ATTN_OUT_FRAC, ACT_BITS)
        m = m.reshape(nkv, T, cfg.group * hd).transpose(1, 0, 2).reshape(T, -1)
        e = e.reshape(nkv, T, cfg.group * nbh).transpose(1, 0, 2).reshape(T, -1)
        return m, e

    def _softmax_weights(self, qh, qhe, k, ke, visible):
        """Section 7 steps 1-3 for (heads, Q, ...) queries against (heads, S, ...) keys."""
        d = np.matmul(qh.transpose(0, 2, 1, 3).astype(np.float64),
                      k.transpose(0, 2, 3, 1).astype(np.float64)).astype(np.int64)  # (h, nbh, Q, S), < 2**35
        shift = qhe.transpose(0, 2, 1)[..., None] + ke.transpose(0, 2, 1)[:, :, None, :] + spec.SCORE_FRAC
        s = sat(spec.sat_shift(d, shift, spec.SCORE_BITS).sum(axis=1), spec.SCORE_BITS)  # (h, Q, S)
        s = floor_shift(s * self.attn_scale, -15)
        top = np.where(visible, s, np.iinfo(np.int64).min).max(axis=-1, keepdims=True)
        u = -floor_shift((np.where(visible, s, top) - top) * spec.LOG2E_Q, -15)
        p = np.right_shift(self.exp2[(u & 0xFFFF) >> 6], np.minimum(u >> 16, 63))
        p = np.where(visible, p, 0)
        rcp = (1 << 48) // p.sum(axis=-1, keepdims=True)
        return (p * rcp) >> 24

    @staticmethod
    def _weighted_values(w, v, ve):
        """Section 7 step 4: w (h, Q, S) Q0.24 weights, v (h, S, hd) B16 values."""
        shift = np.repeat(ve + 24, BLOCK, axis=-1)  # (h, S, hd), >= 0 by construction
        top = int(shift.max(initial=0))
        # sum_t w_t <= 2**24 and |v| < 2**15, so |sum| < 2**(39 + top)
        if top <= 53 - 39:  # every product and partial sum is whole and below 2**53
            return np.matmul(w.astype(np.float64), v * np.exp2(shift)).astype(np.int64)
        if top <= 62 - 39:  # below 2**62: int64 is exact and no saturation can apply
            return np.einsum("hqs,hsd->hqd", w, v << shift)
        exact = np.einsum("hqs,hsd->hqd", w.astype(object), v.astype(object) * (2 ** shift.astype(object)))
        return sat(np.clip(exact, -(1 << 63), (1 << 63) - 1).astype(np.int64), spec.ATTN_OUT_BITS)

    # --- the forward pass ------------------------------------------------------------------------

    def forward(self, tokens, cache: KVCache, trace: Trace | None = None) -> np.ndarray:
        """Run new tokens after the cached ones; return ACC logits (T, vocab)."""
        cfg = self.cfg
        tokens = np.asarray(tokens, dtype=np.int64)
        bad = tokens[(tokens < 0) | (tokens >= cfg.vocab)]
        if bad.size:
            raise HardwireError(f"token id {int(bad[0])} is out of range for vocab size {cfg.vocab}")
        start = cache.length
        if start + len(tokens) > cache.capacity:
            raise HardwireError(f"KV cache overflow: {start + len(tokens)} positions exceed the "
                                f"capacity of {cache.capacity}")
        pos = np.arange(start, start + len(tokens))
        tap = trace.put if trace is not None else (lambda *a, **k: None)
        x = self.embed_rows(tokens)
        tap(-1, "embed", pos, x)
        for li, L in enumerate(self.layers):
            x = self._layer(li, L, x, pos, cache, tap)
        cache.length = start + len(tokens)
        n = cfg.n_layers
        h, he = self.rmsnorm(x, self.out_norm)
        tap(n, "final_norm", pos, h, he)
        logits = self.lm_head.matmul(h, he)
        tap(n, "logits", pos, logits)
        tap(n, "argmax", pos, argmax(logits)[:, None])
        return logits

    def _layer(self, li, L, x, pos, cache: KVCache, tap):
        nh, nkv = self.cfg.n_heads, self.cfg.n_kv_heads
        h, he = self.rmsnorm(x, L["attn_norm"])
        tap(li, "attn_norm", pos, h, he)
        d, kv = self.cfg.d_model, nkv * self.cfg.head_dim
        qkv = L["qkv"].matmul(h, he)
        qk, qke = self.rope(qkv[:, :d + kv], pos, nh + nkv)  # Q and K heads rotate alike
        q, k, qe, ke = qk[:, :d], qk[:, d:], qke[:, :d // BLOCK], qke[:, d // BLOCK:]
        v, ve = rq(blocks(qkv[:, d + kv:]), -ACC_FRAC, ACT_BITS)
        v = v.reshape(len(pos), -1)
        tap(li, "q", pos, q, qe)
        tap(li, "k", pos, k, ke)
        tap(li, "v", pos, v, ve)
        cache.k[li, pos], cache.ke[li, pos], cache.v[li, pos], cache.ve[li, pos] = k, ke, v, ve
        a, ae = self.attention(q, qe, cache, li, pos)
        tap(li, "attn", pos, a, ae)
        o = L["wo"].matmul(a, ae)
        tap(li, "o", pos, o)
        x = sat(x + o, ACC_BITS)
        tap(li, "resid_attn", pos, x)
        h, he = self.rmsnorm(x, L["ffn_norm"])
        tap(li, "ffn_norm", pos, h, he)
        f, fe = self.silu_gate(*L["gate_up"].split(L["gate_up"].matmul(h, he)))
        tap(li, "ffn_act", pos, f, fe)
        d = L["w_down"].matmul(f, fe)
        tap(li, "down", pos, d)
        x = sat(x + d, ACC_BITS)
        tap(li, "resid_ffn", pos, x)
        return x


def argmax(logits: np.ndarray) -> np.ndarray:
    """Largest logit per row; np.argmax returns the first (lowest id) on ties, as the spec says."""
    return np.argmax(logits, axis=-1).astype(np.int64)


def acc_to_float(v: np.ndarray) -> np.ndarray:
    return np.asarray(v, dtype=np.float64) * 2.0**-ACC_FRAC
