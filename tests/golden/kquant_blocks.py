"""Random GGUF blocks of any format, with finite (or chosen) fp16 fields."""

from __future__ import annotations

import numpy as np
from gguf import GGML_QUANT_SIZES
from gguf import GGMLQuantizationType as QT

FP16_FIELDS = {  # byte offsets of each block's fp16 fields
    QT.Q8_0: (0,), QT.Q4_0: (0,), QT.Q4_1: (0, 2), QT.Q5_0: (0,), QT.Q5_1: (0, 2),
    QT.Q2_K: (80, 82), QT.Q3_K: (108,), QT.Q4_K: (0, 2), QT.Q5_K: (0, 2), QT.Q6_K: (208,),
}


def random_blocks(rng, qtype, rows, cols, fp16=None) -> np.ndarray:
    """Random bytes, with every fp16 field finite (or set to the given bit pattern)."""
    block, size = GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, (rows, cols // block, size), dtype=np.uint8)
    for at in FP16_FIELDS[qtype]:
        bits = raw[..., at:at + 2].copy().view("<u2")
        if fp16 is None:
            bits[:] = np.where((bits & 0x7C00) == 0x7C00, bits & 0xBFFF, bits)  # exponent 31 -> 15: finite
        else:
            bits[:] = fp16
        raw[..., at:at + 2] = bits.view(np.uint8)
    return raw.reshape(rows, -1)
