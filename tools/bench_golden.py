"""Benchmark: integer-reference decoding speed on one core, against the float reference.

Decodes greedily after a short prompt and reports the median seconds per token
of several repeats, for the integer reference and, as the baseline measured in
the same run, the float reference: wall time, and the process's CPU time, which
other work on a shared machine disturbs less. Run it pinned to one core, as
tox -e bench does:

    taskset -c 0 python tools/bench_golden.py --model smollm2-135m --tokens 16 --repeats 5
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

from hardwire.cli_common import EXIT_OK, add_model_option  # noqa: E402
from hardwire.golden.float_ref import FloatModel  # noqa: E402
from hardwire.golden.gguf_model import load_model  # noqa: E402
from hardwire.golden.intref import IntModel  # noqa: E402
from hardwire.golden.models import resolve_model  # noqa: E402
from hardwire.golden.tokenizer import GGUFTokenizer  # noqa: E402

PROMPT = "The old stone bridge over the river was built"


def decode_seconds_per_token(step, prompt_ids: list[int], n_tokens: int) -> tuple[float, float]:
    """Median (wall, CPU) seconds of one decode step over n_tokens greedy steps."""
    logits = step(np.asarray(prompt_ids))
    token, walls, cpus = int(logits[-1].argmax()), [], []
    for _ in range(n_tokens):
        t0, c0 = time.perf_counter(), time.process_time()
        logits = step(np.asarray([token]))
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
        token = int(logits[-1].argmax())
    return statistics.median(walls), statistics.median(cpus)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_option(ap)
    ap.add_argument("--tokens", type=int, default=16, help="decode steps per repeat")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    model = load_model(resolve_model(args.model))
    prompt = GGUFTokenizer(model.tokenizer_meta).encode(PROMPT)
    capacity = len(prompt) + args.tokens
    im, fm = IntModel(model, capacity=capacity), FloatModel(model)
    int_runs, float_runs = [], []
    for _ in range(args.repeats):
        cache = im.new_cache()
        int_runs.append(decode_seconds_per_token(lambda t, c=cache: im.forward(t, c), prompt, args.tokens))
        fcache = fm.new_cache(capacity)
        float_runs.append(decode_seconds_per_token(lambda t, c=fcache: fm.forward(t, c), prompt, args.tokens))
    int_s, int_cpu = (statistics.median(x) for x in zip(*int_runs, strict=True))
    float_s, float_cpu = (statistics.median(x) for x in zip(*float_runs, strict=True))
    json.dump({
        "model": args.model,
        "int_s_per_token": int_s,
        "int_tokens_per_s": 1.0 / int_s,
        "float_s_per_token": float_s,
        "int_over_float": int_s / float_s,
        "int_cpu_s_per_token": int_cpu,
        "int_cpu_tokens_per_s": 1.0 / int_cpu,
        "float_cpu_s_per_token": float_cpu,
        "int_over_float_cpu": int_cpu / float_cpu,
        "repeats": args.repeats,
        "tokens_per_repeat": args.tokens,
    }, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
