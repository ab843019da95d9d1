"""Float reference: the Llama forward pass on dequantized weights, with a KV cache.

This is the accuracy yardstick for the integer reference, not a spec: the chip
never runs it. RoPE rotates adjacent pairs (2i, 2i+1), which is what GGUF's
permuted Q/K weights expect.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .gguf_model import LayerWeights, Model


@dataclass
class FloatLayer:
    """One transformer layer on dequantized float32 weights, (rows, cols) each."""

    attn_norm: np.ndarray
    wq: np.ndarray
    wk: np.ndarray
    wv: np.ndarray
    wo: np.ndarray
    ffn_norm: np.ndarray
    w_gate: np.ndarray
    w_up: np.ndarray
    w_down: np.ndarray

    @classmethod
    def dequantized(cls, lw: LayerWeights) -> FloatLayer:
        return cls(attn_norm=lw.attn_norm, wq=lw.wq.dequantize(), wk=lw.wk.dequantize(), wv=lw.wv.dequantize(),
                   wo=lw.wo.dequantize(), ffn_norm=lw.ffn_norm, w_gate=lw.w_gate.dequantize(),
                   w_up=lw.w_up.dequantize(), w_down=lw.w_down.dequantize())


class FloatModel:
    def __init__(self, model: Model):
        self.model = model
        cfg = self.cfg = model.config
        self.embed = model.embed.dequantize()
        self.lm_head = self.embed if model.lm_head is model.embed else model.lm_head.dequantize()
        self.layers = [FloatLayer.dequantized(lw) for lw in model.layers]
        half = cfg.head_dim // 2
        self.inv_freq = cfg.rope_theta ** (-np.arange(half, dtype=np.float64) * 2.0 / cfg.head_dim)

    def new_cache(self, max_len: int) -> dict:
        kv = self.cfg.n_kv_heads * self.cfg.head_dim
        shape = (self.cfg.n_layers, max_len, kv)
        return {"k": np.zeros(shape, np.float32), "v": np.zeros(shape, np.float32), "len": 0}

    def _rms(self, x: np.ndarray, g: np.ndarray) -> np.ndarray:
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.cfg.rms_eps) * g

    def _rope(self, x: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """x: (T, heads, head_dim); rotate pairs (2i, 2i+1) by pos * inv_freq[i]."""
        ang = pos[:, None].astype(np.float64) * self.inv_freq[None, :]
        c = np.cos(ang)[:, None, :].astype(np.float32)
        s = np.sin(ang)[:, None, :].astype(np.float32)
        a, b = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = a * c - b * s
        out[..., 1::2] = a * s + b * c
        return out

    def forward(self, tokens: np.ndarray, cache: dict) -> np.ndarray:
        """Run T new tokens after cache['len'] cached ones; return logits (T, vocab)."""
        cfg = self.cfg
        tokens = np.asarray(tokens, dtype=np.int64)
        T, start = len(tokens), cache["len"]
        pos = np.arange(start, start + T)
        hd, nh, nkv = cfg.head_dim, cfg.n_heads, cfg.n_kv_heads
        x = self.embed[tokens].astype(np.float32)
        mask = np.triu(np.full((T, start + T), -np.inf, np.float32), k=start + 1)
        for li, L in enumerate(self.layers):
            h = self._rms(x, L.attn_norm)
            q = self._rope((h @ L.wq.T).reshape(T, nh, hd), pos)
            k = self._rope((h @ L.wk.T).reshape(T, nkv, hd), pos)
            v = h @ L.wv.T
            cache["k"][li, start:start + T] = k.reshape(T, -1)
            cache["v"][li, start:start + T] = v
            K = cache["k"][li, :start + T].reshape(-1, nkv, hd)
            V = cache["v"][li, :start + T].reshape(-1, nkv, hd)
            att = np.empty((T, nh, hd), np.float32)
            for hq in range(nh):
                kh = hq // cfg.group
                s = (q[:, hq] @ K[:, kh].T) / np.sqrt(hd) + mask
                p = np.exp(s - s.max(axis=-1, keepdims=True))
                att[:, hq] = (p / p.sum(axis=-1, keepdims=True)) @ V[:, kh]
            x = x + att.reshape(T, -1) @ L.wo.T
            h = self._rms(x, L.ffn_norm)
            g = h @ L.w_gate.T
            x = x + ((g / (1.0 + np.exp(-g))) * (h @ L.w_up.T)) @ L.w_down.T
        cache["len"] = start + T
        return self._rms(x, self.model.out_norm) @ self.lm_head.T
