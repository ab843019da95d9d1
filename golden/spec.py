"""The constants, tables and primitive integer ops of docs/numerics.md, executable.

Every function here works on int64 numpy arrays and is exact; the section
numbers refer to docs/numerics.md.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import HardwireError

BLOCK = 32  # a GGUF block of weights, and the chip's block of activations sharing one exponent
ACT_BITS = 16  # section 1: B16 mantissas, for activations and the KV cache alike
ACT_MAX = (1 << (ACT_BITS - 1)) - 1
ACC_BITS, ACC_FRAC = 48, 24  # section 1
TERM_BITS = 52  # section 3: each shifted product saturates here; 2 x 512 of them fit 64 bits
MAX_BLOCKS_PER_ROW = 512
NORM_GAIN_BITS = 24  # section 5
RMS_EPS_FRAC = 64
RSQRT_INDEX_BITS = 11  # t >> 21 indexes [512, 2048)
ROPE_FRAC = 14  # section 6
SCORE_FRAC, SCORE_BITS = 16, 40  # section 7
ATTN_OUT_FRAC, ATTN_OUT_BITS = 48, 63
RQ_IN_BITS = 63  # section 1.1
LOG2E_Q = round(math.log2(math.e) * 2**15)
EXP2_LUT_BITS = 10
SIGMOID_GRID_FRAC, SIGMOID_ENTRIES, SIGMOID_FRAC = 8, 8192, 15  # section 8

STATUS_OK, STATUS_BAD_TOKEN, STATUS_KV_OVERFLOW = 0, 1, 2  # section 11


# --- primitives (section 0) --------------------------------------------------------------------

def floor_shift(v, s):
    """v * 2**s, flooring for negative s (arithmetic right shift)."""
    v = np.asarray(v, dtype=np.int64)
    up = np.maximum(s, 0)
    down = np.minimum(up - s, 63)  # max(-s, 0); a shift of 63 already gives 0 or -1
    return (v << up) >> down


def sat_shift(v, s, bits: int):
    """sat(floor_shift(v, s), bits), computed without int64 overflow for any s."""
    v = np.asarray(v, dtype=np.int64)
    room = bits - 1 - bitlen(np.abs(v))
    over = (s > room) & (v != 0)
    shifted = floor_shift(v, np.where(over, 0, s))  # not over: the result fits `bits`
    limit = (1 << (bits - 1)) - 1
    return np.where(over, np.where(v < 0, -limit - 1, limit), sat(shifted, bits))


def sat(v, bits: int):
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return np.minimum(np.maximum(np.asarray(v, dtype=np.int64), lo), hi)  # np.clip is slower here


def bitlen(m):
    """Bit length of non-negative int64 values (0 for 0), exact for all int64."""
    m = np.asarray(m, dtype=np.int64)
    _, e = np.frexp(m.astype(np.float64))
    e = e.astype(np.int64)
    if m.size and m.max() < 2**53:  # the float conversion was exact
        return e
    rounded_up = (m >> np.maximum(e - 1, 0)) == 0  # the conversion rounded up to a power of two
    return np.where(m == 0, 0, np.where(rounded_up, e - 1, e))


def rq(v, e_in, bits: int):
    """Requantizer (section 1.1): int64 (..., nblocks, 32) -> (mantissas, per-block exponents).

    Inputs are at most RQ_IN_BITS wide, so |v| and v + half stay inside int64.
    """
    lim = (1 << (bits - 1)) - 1
    m, s = rq_rounded(v, bits)
    return np.minimum(np.maximum(m, -lim), lim), np.asarray(e_in, dtype=np.int64) + s


def rq_rounded(v, bits: int):
    """rq's mantissas before the clamp, and its per-block shift s: (m, s)."""
    v = np.asarray(v, dtype=np.int64)
    s = np.maximum(bitlen(np.abs(v).max(axis=-1)) - (bits - 1), 0)
    half = (1 << s) >> 1  # 2**(s-1), or 0 when s == 0
    return (v + half[..., None]) >> s[..., None], s


def blocks(v):
    """View a flat vector (or a batch of them) as (..., nblocks, 32)."""
    v = np.asarray(v)
    return v.reshape(*v.shape[:-1], v.shape[-1] // BLOCK, BLOCK)


# --- fp16 held exactly (section 2) ------------------------------------------------------------

def fp16_parts(bits):
    """Split fp16 bit patterns into (M, E) with value = M * 2**E exactly."""
    bits = np.asarray(bits, dtype=np.uint16).astype(np.int64)
    sign = np.where(bits >> 15, -1, 1)
    x = (bits >> 10) & 0x1F
    f = bits & 0x3FF
    if np.any(x == 31):
        raise HardwireError("a block scale is inf or NaN; the model cannot be printed")
    mant = np.where(x == 0, f, f + 1024) * sign
    exp = np.where(x == 0, -24, x - 25)
    return mant, exp


# --- tables (the metal holds these; both golden and the metal generator build them here) ------

def rsqrt_lut() -> np.ndarray:
    k = np.arange(512, 2048, dtype=np.float64)
    return np.rint(2.0**31 / np.sqrt((k + 0.5) * 2.0**21)).astype(np.int64)


def exp2_lut() -> np.ndarray:
    k = np.arange(1 << EXP2_LUT_BITS, dtype=np.float64)
    return np.rint(2.0**16 * np.exp2(-k / (1 << EXP2_LUT_BITS))).astype(np.int64)


def sigmoid_lut() -> np.ndarray:
    x = (np.arange(SIGMOID_ENTRIES, dtype=np.float64) - SIGMOID_ENTRIES // 2 + 0.5) / (1 << SIGMOID_GRID_FRAC)
    return np.rint(2.0**SIGMOID_FRAC / (1.0 + np.exp(-x))).astype(np.int64)


def rope_tables(head_dim: int, theta: float, positions: int) -> tuple[np.ndarray, np.ndarray]:
    """(cos, sin) int16 tables, shape (positions, head_dim // 2)."""
    inv = theta ** (-np.arange(head_dim // 2, dtype=np.float64) * 2.0 / head_dim)
    ang = np.arange(positions, dtype=np.float64)[:, None] * inv[None, :]
    scale = float(1 << ROPE_FRAC)
    return np.rint(np.cos(ang) * scale).astype(np.int64), np.rint(np.sin(ang) * scale).astype(np.int64)


def attn_scale(head_dim: int) -> int:
    return round(2**15 / math.sqrt(head_dim))


def eps_q(n: int, eps: float) -> int:
    return round(n * eps * 2.0**RMS_EPS_FRAC)


def norm_gains(g: np.ndarray) -> tuple[np.ndarray, int]:
    """(G, e_G): signed 24-bit gains with sqrt(n) folded in, one exponent per vector (section 5)."""
    scaled = np.asarray(g, dtype=np.float64) * math.sqrt(g.size)
    peak = float(np.abs(scaled).max())
    if peak == 0.0:
        return np.zeros(g.size, np.int64), 0
    e = math.frexp(peak)[1] - (NORM_GAIN_BITS - 1)
    while np.abs(np.rint(scaled * 2.0**-e)).max() >= 2 ** (NORM_GAIN_BITS - 1):
        e += 1
    return np.rint(scaled * 2.0**-e).astype(np.int64), e


# --- LoRA adapters in SRAM (section 12) ---------------------------------------------------------

LORA_BITS = 8  # signed mantissas in [-127, 127], one power-of-two exponent per block of 32
LORA_MAX = (1 << (LORA_BITS - 1)) - 1
LORA_EXP_MIN, LORA_EXP_MAX = -24, 15  # a 6-bit exponent field
LORA_MAX_RANK = 64  # the default die's slot per projection
