"""A LoRA adapter in the integer datapath (docs/numerics.md section 12), as the chip's SRAM holds it.

A (rank, in) and B' = scale * B (out, rank) are stored as LORA_BITS-bit mantissas with one
power-of-two exponent per block of 32 (A along its input, B' along the rank, padded with zeros to
a multiple of 32). Such a block is a Q8_0 block whose scale is an exact power of two, so both
products are section 3's block matmul as IntTensor already implements it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from gguf import GGMLQuantizationType as QT

from .block_matmul import IntTensor
from .errors import HardwireError
from .gguf_model import ModelConfig, QuantTensor
from .lora import Adapter, projection_shape
from .spec import ACC_BITS, ACC_FRAC, ACT_BITS, BLOCK, LORA_EXP_MAX, LORA_EXP_MIN, LORA_MAX, blocks, rq, sat

# the base datapath's row stacking: projections that read the same input share one pass
GROUPS = {"qkv": ("wq", "wk", "wv"), "wo": ("wo",), "gate_up": ("w_gate", "w_up"), "w_down": ("w_down",)}


@dataclass(frozen=True)
class StoredMatrix:
    """A matrix in the SRAM format: value = m * 2**e per block of 32 along the columns."""

    m: np.ndarray  # (rows, nb, 32) int8
    e: np.ndarray  # (rows, nb) int64 in [LORA_EXP_MIN, LORA_EXP_MAX]

    def value(self) -> np.ndarray:
        return (self.m * np.exp2(self.e.astype(np.float64))[..., None]).reshape(self.m.shape[0], -1)


def quantize(v: np.ndarray, what: str = "adapter") -> StoredMatrix:
    """The one lossy step: round each element to the nearest multiple of its block's 2**e (half to even),
    e the smallest exponent whose mantissas fit [-LORA_MAX, LORA_MAX], at least LORA_EXP_MIN."""
    b = blocks(np.asarray(v, dtype=np.float64))
    peak = np.abs(b).max(axis=-1)
    _, e = np.frexp(peak / (LORA_MAX + 0.5))
    e = e.astype(np.int64)
    # the division may round: step e by one where the exact test (powers of two scale exactly) says so
    e = np.where(np.rint(peak * np.exp2(-e)) > LORA_MAX, e + 1, e)
    e = np.where((peak > 0) & (np.rint(peak * np.exp2(1 - e)) <= LORA_MAX), e - 1, e)
    e = np.where(peak > 0, np.maximum(e, LORA_EXP_MIN), LORA_EXP_MIN)
    if int(e.max(initial=LORA_EXP_MIN)) > LORA_EXP_MAX:
        raise HardwireError(f"{what}: a weight of {float(peak.max()):.3g} is beyond the LoRA SRAM format "
                            f"(mantissas up to {LORA_MAX} x 2**{LORA_EXP_MAX})")
    m = np.rint(b * np.exp2(-e)[..., None]).astype(np.int8)
    return StoredMatrix(m, e)


def padded_rank(rank: int) -> int:
    return -(-rank // BLOCK) * BLOCK


def store_pair(adapter: Adapter, layer: int, proj: str) -> tuple[StoredMatrix, StoredMatrix]:
    """(A, B') of one projection in the SRAM format, the rank padded with zeros to a multiple of 32."""
    pair = adapter.pairs[(layer, proj)]
    r = padded_rank(pair.rank)
    a = np.zeros((r, pair.a.shape[1]))
    a[:pair.rank] = pair.a
    b = np.zeros((pair.b.shape[0], r))
    b[:, :pair.rank] = adapter.scale_of(layer, proj) * pair.b.astype(np.float64)  # the scale folds into B
    where = f"{adapter.path} layer {layer} {proj}"
    return quantize(a, where), quantize(b, where)


def _as_q8(m: np.ndarray, e: np.ndarray) -> QuantTensor:
    """Mantissas with power-of-two exponents as Q8_0 blocks: 2**e is an exact fp16 for e in [-24, 15]."""
    d = np.exp2(e.astype(np.float64)).astype(np.float16).view(np.uint16)
    return QuantTensor(QT.Q8_0, m.astype(np.int8), d, None)


@dataclass
class GroupLora:
    """The adapters of one row-stacked group (e.g. q|k|v) of one layer."""

    a: IntTensor  # the targeted projections' A, stacked by rows: (sum of padded ranks, in)
    b: IntTensor  # block-diagonal B': (the group's stacked out rows, sum of padded ranks)

    def add_to(self, acc: np.ndarray, am: np.ndarray, ae: np.ndarray) -> np.ndarray:
        """y = sat(acc + B'.rq(A.x), 48): the adapter joins the base projection's ACC result."""
        u = self.a.matmul(am, ae)
        um, ue = rq(blocks(u), -ACC_FRAC, ACT_BITS)
        z = self.b.matmul(um.reshape(u.shape), ue)
        return sat(acc + z, ACC_BITS)


class IntLora:
    """Every layer's adapter groups; absent groups leave the base result untouched."""

    def __init__(self, adapter: Adapter, config: ModelConfig):
        self.adapter = adapter
        self.groups: dict[tuple[int, str], GroupLora] = {}
        for layer in range(config.n_layers):
            for group, projs in GROUPS.items():
                g = _build_group(adapter, config, layer, projs)
                if g is not None:
                    self.groups[(layer, group)] = g

    def apply(self, layer: int, group: str, acc: np.ndarray, am: np.ndarray, ae: np.ndarray) -> np.ndarray:
        g = self.groups.get((layer, group))
        return acc if g is None else g.add_to(acc, am, ae)


def _build_group(adapter: Adapter, config: ModelConfig, layer: int, projs) -> GroupLora | None:
    stored = {p: store_pair(adapter, layer, p) for p in projs if (layer, p) in adapter.pairs}
    if not stored:
        return None
    a = [s[0] for s in stored.values()]
    ranks = [s.m.shape[0] for s in a]
    cols = np.cumsum([0, *ranks])
    b_m, b_e = [], []
    for p in projs:
        out = projection_shape(config, p)[0]
        m = np.zeros((out, cols[-1] // BLOCK, BLOCK), np.int8)
        e = np.zeros((out, cols[-1] // BLOCK), np.int64)  # 2**0 on zero blocks: their terms are 0
        if p in stored:
            k = list(stored).index(p)
            lo, hi = cols[k] // BLOCK, cols[k + 1] // BLOCK
            m[:, lo:hi], e[:, lo:hi] = stored[p][1].m, stored[p][1].e
        b_m.append(m)
        b_e.append(e)
    a_q = _as_q8(np.concatenate([s.m for s in a]), np.concatenate([s.e for s in a]))
    return GroupLora(IntTensor(a_q), IntTensor(_as_q8(np.concatenate(b_m), np.concatenate(b_e))))
