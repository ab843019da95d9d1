"""The via ROM the RTL suite builds: wider than 64 bits (the multi-word port path), a depth
that is not a power of two, seeded contents with the all-0 / all-1 / top-bit words first."""

from __future__ import annotations

import random

ROM_WIDTH, ROM_DEPTH, ROM_SEED = 72, 300, 7


def rom_words() -> list[int]:
    rng = random.Random(ROM_SEED)
    words = [rng.getrandbits(ROM_WIDTH) for _ in range(ROM_DEPTH)]
    words[:3] = [0, (1 << ROM_WIDTH) - 1, 1 << (ROM_WIDTH - 1)]
    return words
