"""Benchmark: loading a cached chip with the cache's integrity checks, against loading it without them.

A cached load is what `hardwire run` does once its entries exist: resolve the model (checked against its
pinned sha256), take the metal's via maps, the die's base grid and the Verilator build from the cache
(each checked against its manifest: golden/cache.py) and start the chip, whose ROM macros read every via
map. The baseline is the same load with the checks switched off, measured in the same run, alternated
with the checked loads after one warm-up load that is not counted (it pays the library's first dlopen).
Each checked load hashes from scratch: the in-process memo of hashes is cleared before it.

    python tools/bench_load.py --model smollm2-135m --repeats 3
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from contextlib import contextmanager
from unittest import mock

from hardwire.cli_common import EXIT_OK, add_die_option, add_model_option
from hardwire.cosim import chip_sim
from hardwire.golden import cache, models
from hardwire.golden.gguf_model import load_model
from hardwire.rtl import metal
from hardwire.rtl.die import get_die


def cached_load(model_spec: str, image, die) -> float:
    """Seconds from a warm cache to a chip ready for its first token."""
    t0 = time.perf_counter()
    models.resolve_model(model_spec)
    maps, maps_hit = chip_sim.metal_maps(image)
    _, grid_hit = chip_sim.grid_sources(die)
    sim = chip_sim.ChipSim(die, maps)
    seconds = time.perf_counter() - t0
    if not (maps_hit and grid_hit and sim.cache_hit):
        raise SystemExit("the cache was not warm: run `hardwire build` for this model and die first")
    del sim
    gc.collect()
    return seconds


@contextmanager
def unchecked():
    """Today's load without the checks: every entry and the model taken as they are."""
    with mock.patch.object(cache, "entry_problem", return_value=None), \
            mock.patch.object(models, "_problem", lambda path, model: None if path.is_file() else "missing"):
        yield


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_option(ap)
    add_die_option(ap)
    ap.add_argument("--repeats", type=int, default=3, help="checked and unchecked loads, alternated")
    args = ap.parse_args(argv)
    model = load_model(models.resolve_model(args.model))
    die = get_die(args.die) if args.die else metal.smallest_die(model)
    image = metal.generate(model, die)
    cached_load(args.model, image, die)  # warm-up: builds nothing if the cache is warm, pays the first dlopen
    checked, baseline = [], []
    for _ in range(args.repeats):
        cache._DIGESTS.clear()  # every checked load hashes every file again, as a new process would
        checked.append(cached_load(args.model, image, die))
        with unchecked():
            baseline.append(cached_load(args.model, image, die))
    checked_s, baseline_s = statistics.median(checked), statistics.median(baseline)
    json.dump({"model": args.model, "die": die.name, "repeats": args.repeats,
               "checked_load_s": [round(s, 2) for s in checked], "baseline_load_s": [round(s, 2) for s in baseline],
               "checked_median_s": round(checked_s, 2), "baseline_median_s": round(baseline_s, 2),
               "ratio": round(checked_s / baseline_s, 4)}, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
