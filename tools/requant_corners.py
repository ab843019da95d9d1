"""Which lanes of each requantizer clamp, on the golden reference: the search behind the chip tests' corner models.

Every requantizer of the chip (rq, docs/numerics.md 1.1) clamps a lane that rounds past +-(2**15 - 1). That
happens only for a value within 2**-16 of the top of its binade, so random models never reach most lanes,
and the RTL's clamp branches stay untested. This tool runs synthetic models through the golden integer
reference with rq instrumented, and reports for each requantizer site the lanes that clamped up and down:

    python tools/requant_corners.py   # greedy choice among layer counts, seeds, and weight, gain and FFN scales

The chip tests' corner models (tests/cosim/chip_models.py CORNER_MODELS) are its choice, and
tests/cosim/test_requant_corners.py checks that they still clamp every lane they were chosen for.

A site is the golden function calling rq and the variable it assigns (rmsnorm/x16 is the norm's input,
rmsnorm/m its output, and so on).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import linecache
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from hardwire.golden import intref, spec
from hardwire.golden.generate import greedy
from hardwire.golden.gguf_model import load_model
from hardwire.golden.synth import SynthSpec, write_synthetic

# the corner models' shape and run: 3 layers fill 3 of hw-tiny's 4 tiles, GQA 4
CORNER_SHAPE = dict(layers=3, d_model=256, d_ffn=512, heads=8, kv_heads=2, vocab=300, attn_quant="q8_0",
                    ffn_quant="q4_0")
CORNER_PROMPT, CORNER_NEW = [3, 257, 42, 11], 6
LAYERS, WEIGHT_SCALES, GAIN_SCALES, FFN_SCALES = (1, 3), (1.0, 300.0, 3000.0, 1e4), (1.0, 1e3, 1e4), (1.0, 1e-3, 1e-4)
VARIED = ("layers", "seed", "weight_scale", "gain_scale", "ffn_scale")
Hits = dict[str, np.ndarray]  # site -> (2, 32) bool: [0] lanes that clamped up, [1] down


@contextmanager
def recording() -> Iterator[Hits]:
    """Within the block, every rq call of the golden reference marks the lanes it clamps."""
    hits: Hits = {}
    original = intref.rq

    def rq(v, e_in, bits):
        caller = sys._getframe(1)  # the site's name: the golden code, not this tool, knows which rq it calls
        target = caller.f_code.co_name + "/" + _assigned(caller)
        if caller.f_code.co_name == "rmsnorm":  # the layers' norms run on the tiles, the final norm on the head
            target += " (final)" if caller.f_back.f_code.co_name == "forward" else " (layers)"
        lim = (1 << (bits - 1)) - 1
        m, _ = spec.rq_rounded(v, bits)
        lanes = hits.setdefault(target, np.zeros((2, spec.BLOCK), bool))
        lanes[0] |= (m > lim).reshape(-1, spec.BLOCK).any(axis=0)
        lanes[1] |= (m < -lim).reshape(-1, spec.BLOCK).any(axis=0)
        return original(v, e_in, bits)

    intref.rq = rq
    try:
        yield hits
    finally:
        intref.rq = original


def _assigned(frame) -> str:
    line = linecache.getline(frame.f_code.co_filename, frame.f_lineno)
    return line.split("=")[0].split(",")[0].strip() if "=" in line else "?"


def clamped_lanes(model_spec: SynthSpec, prompt: list[int], n_new: int, work: Path) -> Hits:
    """The lanes each rq site clamps while the model reads `prompt` and greedily generates n_new tokens
    (golden/generate.py greedy; the integer reference's rows do not depend on how positions are batched)."""
    golden = intref.IntModel(load_model(write_synthetic(model_spec, work / "corner.gguf")),
                             capacity=len(prompt) + n_new)
    with recording() as hits:
        greedy(golden, golden.new_cache(), prompt, n_new)
    return hits


def union(runs: list[Hits]) -> Hits:
    out: Hits = {}
    for hits in runs:
        for site, lanes in hits.items():
            out[site] = out.get(site, np.zeros_like(lanes)) | lanes
    return out


def summary(hits: Hits) -> dict[str, tuple[int, int]]:
    return {site: (int(lanes[0].sum()), int(lanes[1].sum())) for site, lanes in sorted(hits.items())}


def search(base: SynthSpec, seeds: int, prompt: list[int], n_new: int, work: Path, picks: int = 6):
    """Greedy: the variants of `base` (layers, seed and the three scales) that add the most clamped lanes."""
    found = {}
    for key in itertools.product(LAYERS, range(1, seeds + 1), WEIGHT_SCALES, GAIN_SCALES, FFN_SCALES):
        variant = dataclasses.replace(base, **dict(zip(VARIED, key, strict=True)))
        found[key] = clamped_lanes(variant, prompt, n_new, work)
    chosen, covered = [], {}
    for _ in range(picks):
        gains = {key: _new_lanes(hits, covered) for key, hits in found.items()}
        best = max(gains, key=gains.get)
        if gains[best] == 0:
            break
        chosen.append((best, gains[best]))
        covered = union([covered, found[best]])
    return chosen, covered


def _new_lanes(hits: Hits, covered: Hits) -> int:
    return sum(int((lanes & ~covered.get(site, False)).sum()) for site, lanes in hits.items())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=4, help="seeds 1..N of each variant (default: %(default)s)")
    p.add_argument("--picks", type=int, default=12, help="how many variants to choose (default: %(default)s)")
    args = p.parse_args(argv)
    if args.seeds < 1 or args.picks < 1:
        p.error("--seeds and --picks must be at least 1")
    with tempfile.TemporaryDirectory() as tmp:
        chosen, covered = search(SynthSpec(**CORNER_SHAPE), args.seeds, CORNER_PROMPT, CORNER_NEW, Path(tmp),
                                 args.picks)
    for key, added in chosen:
        print(", ".join(f"{name}={value:g}" for name, value in zip(VARIED, key, strict=True)) + f": {added} more lanes")
    for site, (up, down) in summary(covered).items():
        print(f"{site:24} clamps up in {up:2}/32 lanes, down in {down:2}/32")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
