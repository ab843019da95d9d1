"""Benchmark: the speed-up of a sharded verification run, `pytest -n N` against `pytest -n 0`.

The run is a fixed set of layer-sharded tile tests (default: the nightly's, all 30 SmolLM2-135M
layers, each on the hw-s135 tile fed golden inputs over a 7-token prompt; every test is the same
amount of work, so N workers can share them evenly. Each worker loads the model and computes the
golden trace once, about 2 s: a set of a few layers measures that, not the sharding). One warm-up run
first fills the build caches (MyHDL conversion, Verilator builds, the model), so compile time is
excluded; then the serial and the sharded run alternate, each repeated, and the medians of their
wall times give the ratio. Prints JSON.

    python tools/bench_shard.py --repeats 3
    python tools/bench_shard.py --tests tests/cosim/test_tile.py   # the hw-tiny tile tests
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from hardwire.cli_common import EXIT_OK

DEFAULT_TESTS = ["tests/cosim/test_tile_smollm2.py"]
TARGET = 1.7  # the speed-up two workers should reach on two cores
ROOT = Path(__file__).resolve().parent.parent


def pytest_argv(tests: list[str], select: str, workers: int) -> list[str]:
    # no random order, no cache files: each run does the same work
    argv = [sys.executable, "-m", "pytest", *tests, "-q", "-p", "no:randomly", "-p", "no:cacheprovider",
            "-n", str(workers), "-W", "ignore"]
    return argv + (["-k", select] if select else [])


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_run(tests: list[str], select: str, workers: int) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds of pytest and its workers, tests passed) of one run; a failing run
    ends the benchmark."""
    cpu0, t0 = children_cpu_s(), time.perf_counter()
    result = subprocess.run(pytest_argv(tests, select, workers), cwd=ROOT, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t0, children_cpu_s() - cpu0
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr.strip()
    if result.returncode != 0:
        raise SystemExit(f"bench_shard: error: the run with -n {workers} failed: {summary}")
    passed = re.search(r"(\d+) passed", summary)
    return wall, cpu, int(passed.group(1)) if passed else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tests", nargs="+", default=DEFAULT_TESTS, help="test files or node ids (default: %(default)s)")
    ap.add_argument("--select", default="", help="a pytest -k expression over the tests (default: all of them)")
    ap.add_argument("--workers", type=int, default=2, help="xdist workers of the sharded run (default: %(default)s)")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each kind (default: %(default)s)")
    args = ap.parse_args(argv)
    if args.workers < 2 or args.repeats < 1:
        raise SystemExit(f"bench_shard: error: --workers must be >= 2 and --repeats >= 1 "
                         f"(got {args.workers} and {args.repeats})")
    load_before = os.getloadavg()[0]
    warm_s, _, count = timed_run(args.tests, args.select, 0)  # fills every cache the runs read
    if count == 0:
        raise SystemExit("bench_shard: error: the selection runs no tests")
    runs = {0: [], args.workers: []}  # workers -> [(wall s, CPU s)]
    for i in range(args.repeats):
        for workers in (0, args.workers) if i % 2 == 0 else (args.workers, 0):  # alternate: drift hits both
            wall, cpu, _ = timed_run(args.tests, args.select, workers)
            runs[workers].append((round(wall, 2), round(cpu, 2)))
    serial, sharded = ([wall for wall, _ in runs[w]] for w in (0, args.workers))
    ratio = statistics.median(serial) / statistics.median(sharded)
    json.dump({
        "tests": args.tests, "select": args.select, "tests_passed": count, "workers": args.workers,
        "repeats": args.repeats, "warmup_s": round(warm_s, 2),
        "serial_s": serial, "sharded_s": sharded,
        "serial_cpu_s": [cpu for _, cpu in runs[0]], "sharded_cpu_s": [cpu for _, cpu in runs[args.workers]],
        "serial_median_s": statistics.median(serial), "sharded_median_s": statistics.median(sharded),
        "speedup": round(ratio, 3), "target": TARGET, "meets_target": ratio >= TARGET,
        # other work on the machine takes cores from the sharded run: the load says how much
        "cpus": os.cpu_count(), "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2),
    }, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
