"""ggml's reference quantizers, ported to numpy bit for bit.

A port of `quantize_row_*_ref` and their helpers (`make_qx_quants`,
`make_q3_quants`, `make_qkx2_quants`) from ggml's `src/ggml-quants.c`: what
llama.cpp's `llama-quantize` runs for every type here when no importance
matrix is given. The bytes equal llama.cpp's (tests/data holds its recorded
output), so every float operation keeps ggml's float32 order: each sum is a
sequential loop over a block's elements (vectorized across blocks, never
pairwise), and `nearest_int` is ggml's own bit trick.
"""

from __future__ import annotations

import numpy as np
from gguf import GGML_QUANT_SIZES
from gguf import GGMLQuantizationType as QT

from .errors import HardwireError

F = np.float32
QK_K = 256
GROUP_MAX_EPS = F(1e-15)
QUANTIZABLE = (QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1, QT.Q8_0, QT.Q2_K, QT.Q3_K, QT.Q4_K, QT.Q5_K, QT.Q6_K)
CHUNK_BLOCKS = 8192  # blocks per vectorized pass: bounds the temporaries of the K-quant searches


def quantize(x: np.ndarray, qtype: QT) -> np.ndarray:
    """Quantize float rows (rows, cols) to GGUF bytes (rows, bytes per row), as llama.cpp does."""
    if qtype not in QUANTIZABLE:
        raise HardwireError(f"cannot quantize to {qtype.name} (quantizable: {', '.join(t.name for t in QUANTIZABLE)})")
    x = np.ascontiguousarray(x, dtype=F)
    if x.ndim != 2:
        raise HardwireError(f"quantize takes a 2-D (rows, cols) array, not shape {x.shape}")
    block, size = GGML_QUANT_SIZES[qtype]
    rows, cols = x.shape
    if cols % block:
        raise HardwireError(f"{qtype.name} needs rows that are a multiple of {block}, not {cols}")
    if not np.all(np.isfinite(x)):
        raise HardwireError(f"cannot quantize to {qtype.name}: the weights hold inf or NaN")
    blocks = x.reshape(-1, block)
    out = np.empty((len(blocks), size), np.uint8)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for start in range(0, len(blocks), CHUNK_BLOCKS):
            out[start:start + CHUNK_BLOCKS] = _QUANTIZERS[qtype](blocks[start:start + CHUNK_BLOCKS])
    return out.reshape(rows, cols // block * size)


# --- ggml's scalar helpers, elementwise -----------------------------------------------------------

_MAGIC = F(12582912.0)  # 1.5 * 2**23


def nearest_int(v: np.ndarray) -> np.ndarray:
    """ggml's nearest_int: round half to even through the float32 mantissa (int32 result)."""
    bits = (np.asarray(v, F) + _MAGIC).view(np.int32)
    return (bits & 0x007FFFFF) - 0x00400000


def _trunc_int(v: np.ndarray) -> np.ndarray:
    """C's float-to-integer conversion: truncation toward zero."""
    return np.trunc(v).astype(np.int32)


def _roundf(v: np.ndarray) -> np.ndarray:
    """C's roundf: halves away from zero (exact: v - trunc(v) is exact in float)."""
    t = np.trunc(v)
    return (t + np.sign(v) * (np.abs(v - t) >= F(0.5))).astype(np.int32)


def _recip(d: np.ndarray) -> np.ndarray:
    """`d ? 1.0f/d : 0.0f`."""
    return np.where(d != 0, F(1) / d, F(0)).astype(F)


def _fp16(v: np.ndarray) -> np.ndarray:
    """GGML_FP32_TO_FP16 (round to nearest even) as uint16 bit patterns."""
    return np.asarray(v, F).astype(np.float16).view(np.uint16)


def _fp16_value(bits: np.ndarray) -> np.ndarray:
    return bits.view(np.float16).astype(F)


def _fp16_bytes(bits: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(bits, dtype="<u2").view(np.uint8).reshape(len(bits), 2)


def _seqsum(terms: np.ndarray) -> np.ndarray:
    """Sum over the last axis in element order, in float32, starting from 0 (ggml's `s += t`)."""
    s = np.zeros(terms.shape[:-1], F)
    for i in range(terms.shape[-1]):
        s += terms[..., i]
    return s


def _take(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return np.take_along_axis(x, idx[..., None], axis=-1)[..., 0]


def _signed_absmax(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(value, magnitude) of the first element of largest magnitude; +0 when all are zero (ggml's `>` scan)."""
    ax = np.abs(x)
    idx = np.argmax(ax, axis=-1)
    amax = _take(ax, idx)
    return np.where(amax > 0, _take(x, idx), F(0)).astype(F), amax


def _first_min_max(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first minimum and first maximum along the last axis (ggml's `<` and `>` scans)."""
    return _take(x, np.argmin(x, axis=-1)), _take(x, np.argmax(x, axis=-1))


def _pack_nibbles(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return ((lo & 0xF) | ((hi & 0xF) << 4)).astype(np.uint8)


def _bits_le(bits: np.ndarray) -> np.ndarray:
    """Bits (..., 8k) of 0/1 into k little-endian bytes."""
    return np.packbits(bits.astype(np.uint8), axis=-1, bitorder="little")


# --- 32-weight blocks -----------------------------------------------------------------------------

def _q8_0(x):
    _, amax = _signed_absmax(x)
    d = amax / F(127)
    q = _roundf(x * _recip(d)[:, None])
    return np.concatenate([_fp16_bytes(_fp16(d)), q.astype(np.int8).view(np.uint8)], axis=1)


def _symmetric(x, levels):
    """Q4_0 (levels 16) and Q5_0 (32): d = max / -(levels/2), codes (x/d + levels/2 + 0.5) truncated."""
    mx, _ = _signed_absmax(x)
    d = mx / F(-(levels // 2))
    xi = np.minimum(levels - 1, _trunc_int(x * _recip(d)[:, None] + F(levels // 2 + 0.5)).astype(np.int8))
    return _fp16(d), xi.astype(np.int32)


def _affine(x, levels, clamp):
    """Q4_1 (levels 16) and Q5_1 (32): d = (max - min) / (levels - 1), codes ((x - min)/d + 0.5) truncated."""
    mn, mx = _first_min_max(x)
    d = (mx - mn) / F(levels - 1)
    xi = _trunc_int((x - mn[:, None]) * _recip(d)[:, None] + F(0.5))
    xi = np.minimum(levels - 1, xi.astype(np.int8)) if clamp else xi.astype(np.uint8)
    return _fp16(d), _fp16(mn), xi.astype(np.int32)


def _q4_0(x):
    d, xi = _symmetric(x, 16)
    return np.concatenate([_fp16_bytes(d), _pack_nibbles(xi[:, :16], xi[:, 16:])], axis=1)


def _q4_1(x):
    d, m, xi = _affine(x, 16, clamp=True)
    return np.concatenate([_fp16_bytes(d), _fp16_bytes(m), _pack_nibbles(xi[:, :16], xi[:, 16:])], axis=1)


def _q5_0(x):
    d, xi = _symmetric(x, 32)
    return np.concatenate([_fp16_bytes(d), _bits_le(xi >> 4 & 1), _pack_nibbles(xi[:, :16], xi[:, 16:])], axis=1)


def _q5_1(x):
    d, m, xi = _affine(x, 32, clamp=False)
    return np.concatenate([_fp16_bytes(d), _fp16_bytes(m), _bits_le(xi >> 4 & 1),
                           _pack_nibbles(xi[:, :16], xi[:, 16:])], axis=1)


# --- the searches of the K quants, over groups (G, n) of one sub-block each -----------------------

def make_qx_quants(x: np.ndarray, nmax: int) -> tuple[np.ndarray, np.ndarray]:
    """ggml's make_qx_quants with rmse_type 1 and no importance: (scale (G,), codes L + nmax (G, n))."""
    mx, amax = _signed_absmax(x)
    zero = amax < GROUP_MAX_EPS
    w = x * x

    def fit(iscale):
        l_ = np.clip(nearest_int(iscale[:, None] * x), -nmax, nmax - 1)
        lf = l_.astype(F)
        return l_, _seqsum(w * x * lf), _seqsum(w * lf * lf)

    l_, sumlx, suml2 = fit(F(-nmax) / mx)
    scale = np.where(suml2 != 0, sumlx / suml2, F(0)).astype(F)
    best = scale * sumlx
    for step in range(-9, 10):
        if step == 0:
            continue
        cand, sumlx, suml2 = fit(-(F(nmax) + F(0.1) * F(step)) / mx)
        better = (suml2 > 0) & (sumlx * sumlx > best * suml2)
        l_ = np.where(better[:, None], cand, l_)
        scale = np.where(better, sumlx / suml2, scale).astype(F)
        best = np.where(better, scale * sumlx, best).astype(F)
    return np.where(zero, F(0), scale).astype(F), np.where(zero[:, None], 0, l_ + nmax)


def make_q3_quants(x: np.ndarray, nmax: int) -> tuple[np.ndarray, np.ndarray]:
    """ggml's make_q3_quants with do_rmse: (scale (G,), codes L + nmax (G, n))."""
    mx, amax = _signed_absmax(x)
    zero = amax < GROUP_MAX_EPS
    w = x * x
    L = np.clip(nearest_int((F(-nmax) / mx)[:, None] * x), -nmax, nmax - 1)
    lf = L.astype(F)
    sumlx, suml2 = _seqsum(w * x * lf), _seqsum(w * lf * lf)
    for _ in range(5):  # a pass that changes nothing changes nothing again, so converged groups may run on
        for i in range(x.shape[1]):
            xi, wi, li = x[:, i], w[:, i], L[:, i].astype(F)
            slx0 = sumlx - wi * xi * li
            sl20 = suml2 - wi * li * li
            new_l = np.clip(nearest_int(xi * sl20 / slx0), -nmax, nmax - 1)
            nf = new_l.astype(F)
            slx = slx0 + wi * xi * nf
            sl2 = sl20 + wi * nf * nf
            take = (slx0 > 0) & (new_l != L[:, i]) & (sl2 > 0) & (slx * slx * suml2 > sumlx * sumlx * sl2)
            L[:, i] = np.where(take, new_l, L[:, i])
            sumlx = np.where(take, slx, sumlx).astype(F)
            suml2 = np.where(take, sl2, suml2).astype(F)
    scale = np.where(suml2 > 0, sumlx / suml2, F(0)).astype(F)
    return np.where(zero, F(0), scale).astype(F), np.where(zero[:, None], 0, L + nmax)


def make_qkx2_quants(x: np.ndarray, weights: np.ndarray, nmax: int, rmin: float, rdelta: float, nstep: int,
                     use_mad: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ggml's make_qkx2_quants: (scale (G,), the_min (G,), codes (G, n)), with w = scale * q - the_min."""
    mn, mx = _first_min_max(x)
    sum_w = weights[:, 0].copy()
    sum_x = sum_w * x[:, 0]
    for i in range(1, x.shape[1]):
        sum_w += weights[:, i]
        sum_x += weights[:, i] * x[:, i]
    mn = np.where(mn > 0, F(0), mn).astype(F)
    flat, flat_min = mx == mn, -mn

    def codes(iscale, lo):
        return np.clip(nearest_int(iscale[:, None] * (x - lo[:, None])), 0, nmax)

    def error(scale, lo, L):
        diff = scale[:, None] * L.astype(F) + lo[:, None] - x
        return _seqsum(weights * (np.abs(diff) if use_mad else diff * diff))

    iscale = F(nmax) / (mx - mn)
    scale = F(1) / iscale
    L = codes(iscale, mn)
    best_error = error(scale, mn, L)
    for step in range(nstep + 1):
        aux = codes((F(rmin) + F(rdelta) * F(step) + F(nmax)) / (mx - mn), mn)
        lf = aux.astype(F)
        sum_l, sum_l2, sum_xl = _seqsum(weights * lf), _seqsum(weights * lf * lf), _seqsum(weights * lf * x)
        D = sum_w * sum_l2 - sum_l * sum_l
        this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
        this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
        positive = this_min > 0
        this_min = np.where(positive, F(0), this_min).astype(F)
        this_scale = np.where(positive, sum_xl / sum_l2, this_scale).astype(F)
        cur_error = error(this_scale, this_min, aux)
        better = (D > 0) & (cur_error < best_error)
        L = np.where(better[:, None], aux, L)
        best_error = np.where(better, cur_error, best_error).astype(F)
        scale = np.where(better, this_scale, scale).astype(F)
        mn = np.where(better, this_min, mn).astype(F)
    return np.where(flat, F(0), scale).astype(F), np.where(flat, flat_min, -mn).astype(F), np.where(flat[:, None], 0, L)


def _first_absmax_signed(v: np.ndarray) -> np.ndarray:
    """The first entry of largest magnitude, keeping its sign (+0 when all are zero)."""
    return _signed_absmax(v)[0]


def _max_positive(v: np.ndarray) -> np.ndarray:
    """ggml's `m = 0; if (v > m) m = v` over the last axis (+0 unless some v is positive)."""
    m = v.max(axis=-1)
    return np.where(m > 0, m, F(0)).astype(F)


# --- super-blocks of 256 --------------------------------------------------------------------------

def _pack_2bit(L: np.ndarray) -> np.ndarray:
    """Q2_K/Q3_K qs: per half of 128, byte l holds codes l, l+32, l+64, l+96 at bits 0, 2, 4, 6."""
    halves = L.reshape(-1, 2, 4, 32)
    q = halves[:, :, 0] | halves[:, :, 1] << 2 | halves[:, :, 2] << 4 | halves[:, :, 3] << 6
    return q.reshape(-1, 64).astype(np.uint8)


def _q2_k(x):
    nb = len(x)
    g = x.reshape(-1, 16)
    scales, mins, L = make_qkx2_quants(g, np.abs(g), 3, -0.5, 0.1, 15, True)
    scales, mins, L = scales.reshape(nb, 16), mins.reshape(nb, 16), L.reshape(nb, 256)
    max_scale, max_min = _max_positive(scales), _max_positive(mins)
    has_scale, has_min = max_scale > 0, max_min > 0
    sc = np.where(has_scale[:, None], nearest_int((F(15) / max_scale)[:, None] * scales), 0)
    mq = np.where(has_min[:, None], nearest_int((F(15) / max_min)[:, None] * mins), 0)
    packed = (sc | mq << 4) & 0xFF
    d = _fp16(np.where(has_scale, max_scale / F(15), F(0)))
    dmin = _fp16(np.where(has_min, max_min / F(15), F(0)))
    dl = _fp16_value(d)[:, None] * (packed & 0xF).astype(F)
    ml = _fp16_value(dmin)[:, None] * (packed >> 4).astype(F)
    requant = np.clip(nearest_int((g.reshape(nb, 16, 16) + ml[..., None]) / dl[..., None]), 0, 3)
    L = np.where((dl != 0)[..., None], requant, L.reshape(nb, 16, 16)).reshape(nb, 256)
    return np.concatenate([packed.astype(np.uint8), _pack_2bit(L), _fp16_bytes(d), _fp16_bytes(dmin)], axis=1)


def _sixteen_sub_blocks(x, make):
    """Q3_K/Q6_K's first step: a super-block's 16 sub-blocks quantized alone by `make`; (sub-blocks (nb, 16, 16),
    scales (nb, 16), codes (nb, 16, 16), the scale of largest magnitude, first one on ties)."""
    nb = len(x)
    scales, L = make(x.reshape(-1, 16))
    scales = scales.reshape(nb, 16)
    return x.reshape(nb, 16, 16), scales, L.reshape(nb, 16, 16), _first_absmax_signed(scales)


def _q3_k(x):
    nb = len(x)
    g, scales, L, max_scale = _sixteen_sub_blocks(x, lambda sub: make_q3_quants(sub, 4))
    has = max_scale != 0
    iscale = F(-32) / max_scale
    s6 = np.where(has[:, None], np.clip(nearest_int(iscale[:, None] * scales).astype(np.int8), -32, 31) + 32, 0)
    d = _fp16(np.where(has, F(1) / iscale, F(0)))
    dl = _fp16_value(d)[:, None] * np.where(has[:, None], s6 - 32, -32).astype(F)
    requant = np.clip(nearest_int(g / dl[..., None]), -4, 3) + 4
    L = np.where((dl != 0)[..., None], requant, L).reshape(nb, 256)
    high = L > 3
    L = np.where(high, L - 4, L)
    hmask = _bits_le(high.reshape(nb, 8, 32).transpose(0, 2, 1)).reshape(nb, 32)  # code j: byte j%32, bit j//32
    return np.concatenate([hmask, _pack_2bit(L), _pack_scales_q3(s6), _fp16_bytes(d)], axis=1)


def _pack_scales_q3(s6: np.ndarray) -> np.ndarray:
    """Sixteen 6-bit scales in 12 bytes: low nibbles of 0..7 | 8..15 in bytes 0..7, high pairs in 8..11."""
    low = s6 & 0xF
    first = low[:, :8] | low[:, 8:] << 4
    high = (s6 >> 4) & 3
    top = high[:, 0:4] | high[:, 4:8] << 2 | high[:, 8:12] << 4 | high[:, 12:16] << 6
    return np.concatenate([first, top], axis=1).astype(np.uint8)


def _pack_scales_k4(ls: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """Eight 6-bit scales and mins in 12 bytes (the layout get_scale_min_k4 reads)."""
    out = np.zeros((len(ls), 12), np.int32)
    out[:, 0:4] = ls[:, :4] | (ls[:, 4:] >> 4) << 6
    out[:, 4:8] = lm[:, :4] | (lm[:, 4:] >> 4) << 6
    out[:, 8:12] = (ls[:, 4:] & 0xF) | (lm[:, 4:] & 0xF) << 4
    return out.astype(np.uint8)


def _kx_affine(x, nmax, rmin, nstep):
    """Q4_K (nmax 15) and Q5_K (31): 8 sub-blocks of 32 with 6-bit scales and mins; (d, dmin, ls, lm, L)."""
    nb = len(x)
    g = x.reshape(-1, 32)
    weights = np.sqrt(_seqsum(g * g) / F(32))[:, None] + np.abs(g)
    scales, mins, L = make_qkx2_quants(g, weights, nmax, rmin, 0.1, nstep, False)
    scales, mins = scales.reshape(nb, 8), mins.reshape(nb, 8)
    max_scale, max_min = _max_positive(scales), _max_positive(mins)
    inv_scale = np.where(max_scale > 0, F(63) / max_scale, F(0)).astype(F)
    inv_min = np.where(max_min > 0, F(63) / max_min, F(0)).astype(F)
    ls = np.minimum(63, nearest_int(inv_scale[:, None] * scales) & 0xFF)  # stored through uint8_t
    lm = np.minimum(63, nearest_int(inv_min[:, None] * mins) & 0xFF)
    d, dmin = _fp16(max_scale / F(63)), _fp16(max_min / F(63))
    dl = _fp16_value(d)[:, None] * ls.astype(F)
    ml = _fp16_value(dmin)[:, None] * lm.astype(F)
    requant = np.clip(nearest_int((g.reshape(nb, 8, 32) + ml[..., None]) / dl[..., None]), 0, nmax)
    L = np.where((dl != 0)[..., None], requant, L.reshape(nb, 8, 32)).reshape(nb, 256)
    return d, dmin, ls, lm, L


def _q4_k(x):
    d, dmin, ls, lm, L = _kx_affine(x, 15, -1.0, 20)
    pairs = L.reshape(-1, 4, 2, 32)
    qs = _pack_nibbles(pairs[:, :, 0], pairs[:, :, 1]).reshape(-1, 128)
    return np.concatenate([_fp16_bytes(d), _fp16_bytes(dmin), _pack_scales_k4(ls, lm), qs], axis=1)


def _q5_k(x):
    d, dmin, ls, lm, L = _kx_affine(x, 31, -0.5, 15)
    pairs = L.reshape(-1, 4, 2, 32)
    qs = _pack_nibbles(pairs[:, :, 0], pairs[:, :, 1]).reshape(-1, 128)
    high = (L >> 4 & 1).reshape(-1, 8, 32).transpose(0, 2, 1)  # code of sub-block s, index l: byte l, bit s
    qh = _bits_le(high).reshape(-1, 32)
    return np.concatenate([_fp16_bytes(d), _fp16_bytes(dmin), _pack_scales_k4(ls, lm), qh, qs], axis=1)


def _q6_k(x):
    nb = len(x)
    g, scales, L, max_scale = _sixteen_sub_blocks(x, lambda sub: make_qx_quants(sub, 32))
    zero = np.abs(max_scale) < GROUP_MAX_EPS
    iscale = F(-128) / max_scale
    d = _fp16(F(1) / iscale)
    sc = (np.minimum(127, nearest_int(iscale[:, None] * scales)) & 0xFF).astype(np.uint8).view(np.int8)
    dl = _fp16_value(d)[:, None] * sc.astype(F)
    requant = np.clip(nearest_int(g / dl[..., None]), -32, 31) + 32
    L = np.where((dl != 0)[..., None], requant, L).reshape(nb, 2, 4, 32)
    ql = np.concatenate([_pack_nibbles(L[:, :, 0], L[:, :, 2]), _pack_nibbles(L[:, :, 1], L[:, :, 3])], axis=2)
    hi = L >> 4
    qh = hi[:, :, 0] | hi[:, :, 1] << 2 | hi[:, :, 2] << 4 | hi[:, :, 3] << 6
    out = np.concatenate([ql.reshape(nb, 128), qh.reshape(nb, 64).astype(np.uint8), sc.view(np.uint8),
                          _fp16_bytes(d)], axis=1)
    out[zero] = 0  # an all-zero super-block is written as zero bytes
    return out


_QUANTIZERS = {
    QT.Q4_0: _q4_0, QT.Q4_1: _q4_1, QT.Q5_0: _q5_0, QT.Q5_1: _q5_1, QT.Q8_0: _q8_0,
    QT.Q2_K: _q2_k, QT.Q3_K: _q3_k, QT.Q4_K: _q4_k, QT.Q5_K: _q5_k, QT.Q6_K: _q6_k,
}
