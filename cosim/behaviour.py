"""What a chip run does, as a fingerprint: per token the answer, the cycle count and a digest of every tap beat.

A change that must not change the chip (a redesign of how the RTL is written down, a faster simulator)
is checked against a fingerprint recorded from the tree before it: the tap beats (unit, op, block,
exponent, words, cycle), the tokens and the cycle counts must all be identical. Fingerprints live in
`tests/data/behaviour/<die>/<case>.json`; `pytest --hw-record-behaviour` writes them anew.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .chip_sim import Beat, TokenRun

FORMAT = 1


def beat_digest(beats: list[Beat]) -> str:
    """sha256 over every beat's (unit, op, block, exp, cycle) and its 32 words as little-endian int64."""
    h = hashlib.sha256()
    for b in beats:
        h.update(np.array([b.unit, b.op, b.block, b.exp, b.cycle], "<i8").tobytes())
        h.update(np.asarray(b.words, "<i8").tobytes())
    return h.hexdigest()


@dataclass
class TokenPrint:
    position: int
    token: int  # the chip's answer
    cycles: int
    beats: int
    beat_sha256: str


@dataclass
class Fingerprint:
    case: str
    die: str
    tokens: list[TokenPrint] = field(default_factory=list)

    def observe(self, position: int, run: TokenRun, trace) -> None:
        """An observer for cosim.generation.generate: every token the chip answered."""
        self.tokens.append(TokenPrint(position, run.token, run.cycles, len(run.beats), beat_digest(run.beats)))

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        body = {"format": FORMAT, "case": self.case, "die": self.die, "tokens": [asdict(t) for t in self.tokens]}
        path.write_text(json.dumps(body, indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> Fingerprint:
        body = json.loads(path.read_text())
        if body.get("format") != FORMAT:
            raise ValueError(f"{path}: fingerprint format {body.get('format')}, expected {FORMAT}")
        return cls(body["case"], body["die"], [TokenPrint(**t) for t in body["tokens"]])

    def differences(self, recorded: Fingerprint) -> list[str]:
        """Where this run departs from the recorded one, token by token; empty when identical."""
        diffs = []
        if len(self.tokens) != len(recorded.tokens):
            diffs.append(f"{len(self.tokens)} tokens ran, {len(recorded.tokens)} were recorded")
        for now, then in zip(self.tokens, recorded.tokens, strict=False):
            for name in ("position", "token", "cycles", "beats", "beat_sha256"):
                if getattr(now, name) != getattr(then, name):
                    diffs.append(f"position {then.position}: {name} {getattr(now, name)} (recorded "
                                 f"{getattr(then, name)})")
        return diffs


def observers(*fns):
    """One observer for cosim.generation.generate that calls each of `fns` in turn."""

    def observe(position: int, run: TokenRun, trace) -> None:
        for fn in fns:
            fn(position, run, trace)

    return observe
