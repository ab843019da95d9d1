"""Benchmark: cold and warm build times of a die, against the small die as the baseline.

Each build runs `hardwire build` in a fresh process. "Cold" starts from an empty build cache
(grid conversion, metal, Verilator and the C++ compile); "warm" repeats it on the filled cache
(the cached build loaded with the model's via maps). The baseline is the same pair for a small
synthetic model on hw-tiny, measured in the same run; the ratios divide by it. Medians over
--repeats cold/warm pairs:

    python tools/bench_build.py --model smollm2-135m --die hw-s135w --repeats 1

--warm-only times warm builds alone, on the cache `hardwire` uses ($HARDWIRE_CACHE): one untimed build
fills it (it builds only what is missing), then --repeats timed builds, the baseline's alternated with
the target's:

    python tools/bench_build.py --model smollm2-135m --die hw-s135w --warm-only --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hardwire.cli_common import EXIT_OK, add_die_option, add_model_option
from hardwire.golden.models import resolve_model
from hardwire.golden.synth import SynthSpec, write_synthetic

BASELINE_DIE = "hw-tiny"
BASELINE_SPEC = SynthSpec(layers=2, d_model=128, d_ffn=256, heads=2, kv_heads=1, vocab=301, seed=4)


def build_once(model: Path, die: str, cache: Path | None, out: Path) -> dict:
    """One `hardwire build` in its own process on cache `cache` (None: hardwire's own): its manifest and
    wall time."""
    env = {**os.environ, **({"HARDWIRE_CACHE": str(cache)} if cache is not None else {})}
    cmd = [sys.executable, "-m", "hardwire.cli", "build", "--model", str(model), "--die", die, "--out", str(out),
           "--json"]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"hardwire build failed on {die}: {done.stderr.strip().splitlines()[-1:]}")
    return {**json.loads(done.stdout), "wall_s": wall}


def cold_and_warm(model: Path, die: str, repeats: int, scratch: Path) -> dict:
    cold, warm = [], []
    for i in range(repeats):
        cache = scratch / f"{die}-{i}"
        first = build_once(model, die, cache, scratch / "out")
        second = build_once(model, die, cache, scratch / "out")
        if first["cache_hit"] or not second["cache_hit"]:
            raise SystemExit(f"{die}: expected a cold then a warm build, got cache_hit "
                             f"{first['cache_hit']} then {second['cache_hit']}")
        cold.append(first["wall_s"])
        warm.append(second["wall_s"])
    return {"cold_s": statistics.median(cold), "warm_s": statistics.median(warm), "cold_runs": cold,
            "warm_runs": warm}


def warm_only(model: Path, die: str, baseline_model: Path, repeats: int, scratch: Path) -> dict:
    runs = {die: [], BASELINE_DIE: []}
    for which, name in ((model, die), (baseline_model, BASELINE_DIE)):
        build_once(which, name, None, scratch / "out")  # fills the cache when it lacks something
    for _ in range(repeats):
        for which, name in ((baseline_model, BASELINE_DIE), (model, die)):
            done = build_once(which, name, None, scratch / "out")
            if not done["cache_hit"]:
                raise SystemExit(f"{name}: expected a warm build, got cache_hit false")
            runs[name].append(done["wall_s"])
    return {"warm_s": statistics.median(runs[die]), "warm_runs": runs[die],
            "baseline": {"die": BASELINE_DIE, "warm_s": statistics.median(runs[BASELINE_DIE]),
                         "warm_runs": runs[BASELINE_DIE]}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_option(ap)
    add_die_option(ap, default="hw-s135w")
    ap.add_argument("--repeats", type=int, default=1, help="cold/warm pairs per die (a cold build takes minutes)")
    ap.add_argument("--warm-only", action="store_true", help="warm builds alone, on hardwire's own cache")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hardwire-bench-build-") as tmp:
        scratch = Path(tmp)
        baseline_model = write_synthetic(BASELINE_SPEC, scratch / "baseline.gguf")
        if args.warm_only:
            warm = warm_only(resolve_model(args.model), args.die, baseline_model, args.repeats, scratch)
            json.dump({"model": args.model, "die": args.die, **warm,
                       "warm_over_baseline": warm["warm_s"] / warm["baseline"]["warm_s"], "repeats": args.repeats},
                      sys.stdout, indent=2)
            sys.stdout.write("\n")
            return EXIT_OK
        base = cold_and_warm(baseline_model, BASELINE_DIE, args.repeats, scratch)
        target = cold_and_warm(resolve_model(args.model), args.die, args.repeats, scratch)
    json.dump({
        "model": args.model, "die": args.die, **target,
        "baseline": {"die": BASELINE_DIE, **base},
        "cold_over_baseline": target["cold_s"] / base["cold_s"],
        "warm_over_baseline": target["warm_s"] / base["warm_s"],
        "repeats": args.repeats,
    }, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
