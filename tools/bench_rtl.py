"""Benchmark: simulation seconds per token of a whole model on the RTL, against the golden reference.

Sends a prompt and greedy continuation through the simulated chip of the model's die, one token
at a time, and times each token on the chip and on the golden integer reference (the baseline,
measured in the same run on the same tokens). Reports medians of wall and CPU seconds per token,
their ratio, cycles per token, where they go (cycles_by_op, the mean per timed token, counted by the
chip's performance probe) and simulated microseconds per cycle. The chip's tokens must equal
the golden ones, or the benchmark fails: a fast wrong simulator is no result. Run it on one core,
as tox -e bench does:

    taskset -c 0 python tools/bench_rtl.py --model smollm2-135m --tokens 8
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")  # one core: BLAS must not spread

import numpy as np  # noqa: E402

from hardwire.cli_common import EXIT_OK, add_die_option, add_model_option  # noqa: E402
from hardwire.cosim.chip_sim import ChipSim, metal_maps  # noqa: E402
from hardwire.cosim.cycles_by_op import address_labels, mean_split, split  # noqa: E402
from hardwire.golden.gguf_model import load_model  # noqa: E402
from hardwire.golden.intref import IntModel  # noqa: E402
from hardwire.golden.models import resolve_model  # noqa: E402
from hardwire.golden.tokenizer import GGUFTokenizer  # noqa: E402
from hardwire.rtl import metal  # noqa: E402
from hardwire.rtl.die import get_die  # noqa: E402

PROMPT = "The capital of France is"


def timed(fn):
    """(result, wall seconds, CPU seconds of this process)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def measure(model, sim: ChipSim, prompt: list[int], n_new: int, labels) -> dict[str, list]:
    golden = IntModel(model, capacity=len(prompt) + n_new)
    cache = golden.new_cache()
    sim.reset()
    figures = {"rtl_wall": [], "rtl_cpu": [], "golden_wall": [], "golden_cpu": [], "cycles": [], "by_op": []}
    pending, generated = list(prompt), 0
    while pending:
        token = pending.pop(0)
        run, wall, cpu = timed(lambda t=token: sim.token(t))
        logits, g_wall, g_cpu = timed(lambda t=token: golden.forward(np.array([t]), cache))
        expected = int(np.argmax(logits[-1]))  # the spec's tie rule: the lowest index wins
        if run.token != expected:
            raise SystemExit(f"the chip answered {run.token} where the golden reference says {expected}")
        by_op = split(run.cycle_counts, labels, run.cycles)
        for key, value in zip(figures, (wall, cpu, g_wall, g_cpu, run.cycles, by_op), strict=True):
            figures[key].append(value)
        if not pending and generated < n_new:
            pending.append(run.token)
            generated += 1
    return figures


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_option(ap)
    add_die_option(ap)
    ap.add_argument("--prompt", default=PROMPT)
    ap.add_argument("--tokens", type=int, default=8, help="tokens generated after the prompt")
    args = ap.parse_args(argv)
    model = load_model(resolve_model(args.model))
    die = get_die(args.die) if args.die else metal.smallest_die(model)
    image = metal.generate(model, die)
    maps, _ = metal_maps(image)
    sim, load_s, _ = timed(lambda: ChipSim(die, maps))
    prompt = GGUFTokenizer(model.tokenizer_meta).encode(args.prompt)
    figures = measure(model, sim, prompt, args.tokens, address_labels(image))
    by_op = mean_split(figures.pop("by_op"))
    f = {k: statistics.median(v) for k, v in figures.items()}
    json.dump({
        "model": args.model, "die": die.name, "tokens_timed": len(prompt) + args.tokens,
        "rtl_wall_s_per_token": f["rtl_wall"], "rtl_cpu_s_per_token": f["rtl_cpu"],
        "golden_wall_s_per_token": f["golden_wall"], "golden_cpu_s_per_token": f["golden_cpu"],
        "rtl_over_golden_wall": f["rtl_wall"] / f["golden_wall"], "rtl_over_golden_cpu": f["rtl_cpu"] / f["golden_cpu"],
        "cycles_per_token": f["cycles"], "cycles_by_op": by_op, "sim_us_per_cycle": f["rtl_wall"] / f["cycles"] * 1e6,
        "chip_load_s": load_s, "build_cache_hit": sim.cache_hit,
    }, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
