"""Integer reference: docs/numerics.md made executable, vectorized over positions.

Every op works on a batch of T new positions at once (one for decoding, a
chunk for evaluation); the integers do not depend on the batching. The block
matmul of section 3 and the checks that keep its float fast path exact are
golden/block_matmul.py's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import spec
from .block_matmul import IntTensor
from .errors import HardwireError
from .gguf_model import LayerWeights, Model, QuantTensor
from .kmatmul import FormatMatmul
from .lora_int import IntLora
from .spec import ACC_BITS, ACC_FRAC, ACT_BITS, BLOCK, blocks, floor_shift, rq, sat

# A tap is (mantissas, exponents): B16 taps carry one exponent per block, ACC taps None.
Tap = tuple[np.ndarray, "np.ndarray | None"]
Gains = tuple[np.ndarray, int]  # a norm's gains G and their exponent e_G (spec.norm_gains)


@dataclass
class IntLayer:
    """One transformer layer as the integer reference reads it: norm gains and block-matmul weights,
    the tensors that read the same input stacked by rows (one pass over the activations serves them)."""

    attn_norm: Gains
    qkv: IntTensor | FormatMatmul  # Q, K, V rows
    wo: IntTensor | FormatMatmul
    ffn_norm: Gains
    gate_up: IntTensor | FormatMatmul  # gate rows, then up rows
    w_down: IntTensor | FormatMatmul

    @classmethod
    def of(cls, lw: LayerWeights) -> IntLayer:
        return cls(attn_norm=spec.norm_gains(lw.attn_norm), qkv=linear(lw.wq, lw.wk, lw.wv), wo=linear(lw.wo),
                   ffn_norm=spec.norm_gains(lw.ffn_norm), gate_up=linear(lw.w_gate, lw.w_up),
                   w_down=linear(lw.w_down))


def linear(*parts) -> IntTensor | FormatMatmul:
    """The matmul of stacked weights: IntTensor's fast paths for the chip's formats, section 3.1 otherwise."""
    if all(isinstance(p, QuantTensor) for p in parts):
        return IntTensor(*parts)
    return FormatMatmul(*parts)


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
    def __init__(self, model: Model, capacity: int | None = None, adapter=None):
        cfg = self.cfg = model.config
        self.model = model
        self.lora = None  # a LoRA adapter in its SRAM format (section 12); None: the base chip
        if adapter is not None:
            self.lora = IntLora(adapter, cfg)
        self.capacity = capacity or cfg.context
        self.embed = model.embed
        self.embed_general = None if isinstance(model.embed, QuantTensor) else FormatMatmul(model.embed)
        if self.embed_general is None:
            self.embed_md, self.embed_ed = spec.fp16_parts(model.embed.d_bits)
            self.embed_mm = self.embed_em = None
            if model.embed.m_bits is not None:
                self.embed_mm, self.embed_em = spec.fp16_parts(model.embed.m_bits)
        self.lm_head = linear(model.lm_head)
        self.layers = [IntLayer.of(lw) for lw in model.layers]
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
        if self.embed_general is not None:
            return self.embed_general.embed_rows(tokens)
        q = self.embed.q[tokens].astype(np.int64)  # (T, nb, 32)
        x = floor_shift(self.embed_md[tokens][..., None] * q, self.embed_ed[tokens][..., None] + ACC_FRAC)
        if self.embed_mm is not None:
            x = x + floor_shift(self.embed_mm[tokens], self.embed_em[tokens] + ACC_FRAC)[..., None]
        return sat(x.reshape(len(tokens), -1), ACC_BITS)

    def rmsnorm(self, x: np.ndarray, gains: Gains) -> tuple[np.ndarray, np.ndarray]:
        G, e_g = gains
        x16, ex = rq(blocks(x), -ACC_FRAC, 16)  # (T, nb, 32), (T, nb)
        top = ex.max(axis=-1)  # X
        # P_b at the exponent 2X: a right shift, as ex <= X
        ss = ((x16 * x16).sum(axis=-1) >> np.minimum(2 * (top[:, None] - ex), 63)).sum(axis=-1)
        r, shift = self._rsqrt(ss.tolist(), top.tolist())
        y = x16 * blocks(G) * r[:, None, None]
        m, e = rq(y, ex + (e_g - 31) - shift[:, None], ACT_BITS)
        return m.reshape(x.shape), e

    def _rsqrt(self, ss: list[int], tops: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Section 5 steps 3-4 per position, on Python integers (a few scalars): R and j + X."""
        rs, shifts = [], []
        for s, top in zip(ss, tops, strict=True):
            s = max(s + (self.eps_q >> (spec.RMS_EPS_FRAC + 2 * top)), 1)  # X >= -24: a right shift
            j = -((32 - s.bit_length()) // 2)  # ceil((bitlen - 32) / 2)
            t = s >> 2 * j if j >= 0 else s << -2 * j
            rs.append(int(self.rsqrt[(t >> 21) - 512]))
            shifts.append(j + top)
        return np.array(rs, dtype=np.int64), np.array(shifts, dtype=np.int64)

    def rope(self, acc: np.ndarray, positions: np.ndarray, heads: int) -> tuple[np.ndarray, np.ndarray]:
        u, e = rq(blocks(acc), -ACC_FRAC, 16)
        return self._rotate(u, e, positions, heads)

    def _rotate(self, u: np.ndarray, e: np.ndarray, positions: np.ndarray, heads: int):
        """Section 6 steps 2-3 on (T, nb, 32) mantissas u with block exponents e."""
        T, hd = len(positions), self.cfg.head_dim
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
        return self._silu_stacked(np.concatenate([gate, up], axis=-1))

    def _silu_stacked(self, acc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Section 8 on (T, 2 d_ffn) ACC: the gate's rows, then the up rows (both requantized in one rq)."""
        m16, e16 = rq(blocks(acc), -ACC_FRAC, 16)
        nb = e16.shape[-1] // 2
        g16, u16, eg, eu = m16[:, :nb], m16[:, nb:], e16[:, :nb], e16[:, nb:]
        half = spec.SIGMOID_ENTRIES // 2
        k = floor_shift(g16, eg[..., None] + spec.SIGMOID_GRID_FRAC) + half
        np.minimum(np.maximum(k, 0, out=k), spec.SIGMOID_ENTRIES - 1, out=k)
        y = g16 * self.sigmoid[k] * u16
        m, e = rq(y, eg + eu - spec.SIGMOID_FRAC, ACT_BITS)
        return m.reshape(acc.shape[0], -1), e

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
        visible = None  # one new position sees every cached key; a batch needs the causal mask
        if T > 1:
            visible = np.repeat(np.arange(n_keys)[None, :] <= positions[:, None], cfg.group, axis=0)
        w = self._softmax_weights(qh, qhe, k, ke, visible)  # (nkv, T*group, S)
        o = self._weighted_values(w, v, ve)  # (nkv, T*group, hd) at 2**-48
        m, e = rq(blocks(o), -spec.ATTN_OUT_FRAC, ACT_BITS)
        m = m.reshape(nkv, T, cfg.group * hd).transpose(1, 0, 2).reshape(T, -1)
        e = e.reshape(nkv, T, cfg.group * nbh).transpose(1, 0, 2).reshape(T, -1)
        return m, e

    def _softmax_weights(self, qh, qhe, k, ke, visible):
        """Section 7 steps 1-3 for (heads, Q, ...) queries against (heads, S, ...) keys; visible None: all."""
        d = np.matmul(qh.transpose(0, 2, 1, 3).astype(np.float64),
                      k.transpose(0, 2, 3, 1).astype(np.float64)).astype(np.int64)  # (h, nbh, Q, S), < 2**35
        shift = qhe.transpose(0, 2, 1)[..., None] + ke.transpose(0, 2, 1)[:, :, None, :] + spec.SCORE_FRAC
        if int(np.abs(d).max(initial=0)).bit_length() + int(shift.max()) < spec.SCORE_BITS:
            d = floor_shift(d, shift)  # no block score reaches the saturation bound
        else:
            d = spec.sat_shift(d, shift, spec.SCORE_BITS)
        s = sat(d.sum(axis=1), spec.SCORE_BITS)  # (h, Q, S)
        s = (s * self.attn_scale) >> 15
        if visible is None:
            top = s.max(axis=-1, keepdims=True)
            delta = s - top
        else:
            top = np.where(visible, s, np.iinfo(np.int64).min).max(axis=-1, keepdims=True)
            delta = np.where(visible, s, top) - top
        u = -((delta * spec.LOG2E_Q) >> 15)
        p = np.right_shift(self.exp2[(u & 0xFFFF) >> 6], np.minimum(u >> 16, 63))
        if visible is not None:
            p = np.where(visible, p, 0)
        rcp = (1 << 48) // p.sum(axis=-1, keepdims=True)
        return (p * rcp) >> 24

    @staticmethod
    def _weighted_values(w, v, ve):
        """Section 7 step 4: w (h, Q, S) Q0.24 weights, v (h, S, hd) B16 values."""
        top = max(int(ve.max(initial=-24)) + 24, 0)  # the largest shift ve + 24 (>= 0 by construction)
        # sum_t w_t <= 2**24 and |v| < 2**15, so |sum| < 2**(39 + top)
        if top <= 53 - 39:  # every product and partial sum is whole and below 2**53
            h, S, hd = v.shape
            scaled = (v.reshape(h, S, -1, BLOCK) * np.exp2(ve + 24)[..., None]).reshape(h, S, hd)
            return np.matmul(w.astype(np.float64), scaled).astype(np.int64)
        shift = np.repeat(ve + 24, BLOCK, axis=-1)  # (h, S, hd)
        if top <= 62 - 39:  # below 2**62: int64 is exact and no saturation can apply
            return np.matmul(w, v << shift)
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
        if trace is not None:
            tap(n, "argmax", pos, argmax(logits)[:, None])
        return logits

    def _layer(self, li: int, L: IntLayer, x, pos, cache: KVCache, tap):
        cfg = self.cfg
        h, he = self.rmsnorm(x, L.attn_norm)
        tap(li, "attn_norm", pos, h, he)
        qk_blocks = (cfg.d_model + cfg.n_kv_heads * cfg.head_dim) // BLOCK
        nbq = cfg.d_model // BLOCK
        # one rq serves RoPE's input (Q and K heads rotate alike) and V
        u, ue = rq(blocks(self._adapted(li, "qkv", L.qkv.matmul(h, he), h, he)), -ACC_FRAC, 16)
        qk, qke = self._rotate(u[:, :qk_blocks], ue[:, :qk_blocks], pos, cfg.n_heads + cfg.n_kv_heads)
        q, k, qe, ke = qk[:, :cfg.d_model], qk[:, cfg.d_model:], qke[:, :nbq], qke[:, nbq:]
        v, ve = u[:, qk_blocks:].reshape(len(pos), -1), ue[:, qk_blocks:]
        tap(li, "k", pos, k, ke)  # k and v before q, as the chip taps them (docs/numerics.md section 10)
        tap(li, "v", pos, v, ve)
        tap(li, "q", pos, q, qe)
        new = slice(int(pos[0]), int(pos[-1]) + 1)  # positions are consecutive
        cache.k[li, new], cache.ke[li, new], cache.v[li, new], cache.ve[li, new] = k, ke, v, ve
        a, ae = self.attention(q, qe, cache, li, pos)
        tap(li, "attn", pos, a, ae)
        o = self._adapted(li, "wo", L.wo.matmul(a, ae), a, ae)
        tap(li, "o", pos, o)
        x = sat(x + o, ACC_BITS)
        tap(li, "resid_attn", pos, x)
        h, he = self.rmsnorm(x, L.ffn_norm)
        tap(li, "ffn_norm", pos, h, he)
        f, fe = self._silu_stacked(self._adapted(li, "gate_up", L.gate_up.matmul(h, he), h, he))
        tap(li, "ffn_act", pos, f, fe)
        d = self._adapted(li, "w_down", L.w_down.matmul(f, fe), f, fe)
        tap(li, "down", pos, d)
        x = sat(x + d, ACC_BITS)
        tap(li, "resid_ffn", pos, x)
        return x

    def _adapted(self, li: int, group: str, acc: np.ndarray, am: np.ndarray, ae: np.ndarray) -> np.ndarray:
        """A projection group's ACC result plus the LoRA adapter's, where one is loaded (section 12)."""
        return acc if self.lora is None else self.lora.apply(li, group, acc, am, ae)


def argmax(logits: np.ndarray) -> np.ndarray:
    """Largest logit per row; np.argmax returns the first (lowest id) on ties, as the spec says."""
    return np.argmax(logits, axis=-1).astype(np.int64)


def acc_to_float(v: np.ndarray) -> np.ndarray:
    return np.asarray(v, dtype=np.float64) * 2.0**-ACC_FRAC
