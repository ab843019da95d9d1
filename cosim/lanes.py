"""Packing integer lanes into the flat buses of the cells, and back (lane 0 in the LSBs)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from hardwire.golden.errors import HardwireError


def pack_lanes(values: Iterable[int], width: int) -> int:
    """Two's complement lanes of `width` bits into one integer; each value must fit."""
    word = 0
    for j, v in enumerate(values):
        v = int(v)
        if not -(1 << (width - 1)) <= v < (1 << width):  # signed or unsigned lanes are both accepted
            raise HardwireError(f"lane {j} value {v} does not fit {width} bits")
        word |= (v & ((1 << width) - 1)) << (j * width)
    return word


def unpack_lanes(word: int, width: int, count: int, signed: bool = True) -> np.ndarray:
    """The inverse of pack_lanes, as int64 lanes."""
    mask = (1 << width) - 1
    lanes = [(int(word) >> (j * width)) & mask for j in range(count)]
    if signed:
        lanes = [to_signed(v, width) for v in lanes]
    return np.array(lanes, dtype=np.int64)


def to_signed(value: int, width: int) -> int:
    value = int(value) & ((1 << width) - 1)
    return value - (1 << width) if value >> (width - 1) else value


def to_unsigned(value: int, width: int) -> int:
    """A signed value as the `width`-bit pattern a port takes."""
    if not -(1 << (width - 1)) <= int(value) < (1 << (width - 1)):
        raise HardwireError(f"{value} does not fit a signed {width}-bit port")
    return int(value) & ((1 << width) - 1)
