"""The scoreboard: every debug-tap beat against the golden trace, word for word.

A beat carries (op, block, exponent, 32 words) from one tile at one position.
The golden trace holds whole vectors per (layer, op, position); a beat is
compared with its 32-word slice (zero beyond the vector's end) and, for B16
taps, with that block's exponent. The first mismatch names everything needed
to find it again.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hardwire.golden.intref import Trace
from hardwire.golden.spec import BLOCK
from hardwire.rtl.isa import TAP_NAME


@dataclass(frozen=True)
class Mismatch:
    layer: int
    op: str
    position: int
    index: int  # element index in the op's vector; -1 for a block exponent or a missing beat
    expected: int
    actual: int
    cycle: int

    def __str__(self) -> str:
        where = f"element {self.index}" if self.index >= 0 else "block exponent"
        return (f"(layer {self.layer}, op {self.op}, position {self.position}): {where} expected {self.expected}, "
                f"got {self.actual} at cycle {self.cycle}")


class Scoreboard:
    def __init__(self, trace: Trace):
        self.trace = trace
        self.checked: dict[tuple[int, str, int], int] = {}  # beats seen per (layer, op, position)
        self.first_mismatch: Mismatch | None = None

    def check(self, layer: int, position: int, op_id: int, block: int, exp: int, words: np.ndarray,
              cycle: int) -> Mismatch | None:
        op = TAP_NAME.get(op_id, f"op#{op_id}")
        key = (layer, op, position)
        if key not in self.trace.taps:
            return self._fail(Mismatch(layer, op, position, -1, 0, 1, cycle))
        mant, exps = self.trace.taps[key]
        expected = np.zeros(BLOCK, np.int64)
        chunk = mant[block * BLOCK:(block + 1) * BLOCK]
        expected[:len(chunk)] = chunk
        self.checked[key] = self.checked.get(key, 0) + 1
        bad = np.flatnonzero(expected != words)
        if bad.size:
            i = int(bad[0])
            return self._fail(Mismatch(layer, op, position, block * BLOCK + i, int(expected[i]), int(words[i]), cycle))
        if exps is not None and int(exps[block]) != exp:
            return self._fail(Mismatch(layer, op, position, -1, int(exps[block]), exp, cycle))
        return None

    def missing(self, layers, positions) -> list[tuple[int, str, int]]:
        """Golden taps of these layers and positions that no beat covered completely."""
        out = []
        for (layer, op, pos), (mant, _) in self.trace.taps.items():
            if layer in layers and pos in positions:
                if self.checked.get((layer, op, pos), 0) < -(-len(mant) // BLOCK):
                    out.append((layer, op, pos))
        return out

    def _fail(self, mismatch: Mismatch) -> Mismatch:
        if self.first_mismatch is None:
            self.first_mismatch = mismatch
        return mismatch
