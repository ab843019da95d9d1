"""Clock cycles per second: stepping from Python versus the native multi-cycle run.

    python tools/bench_sim_step.py [--repeats 5]

Designs: the loop counter (a trivial design, as in the toolchain notes) and the block
dot-product lane (eight 4-weight dot products, a 6-stage pipeline), fed a block in every
cycle and then idle (in_valid low).
Each figure is the median of --repeats runs; the ratio is native / python in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import time

from hardwire.cosim.cells import BlockMacCell, build_cycle_counter


def cycles_per_second(clock, cycles: int, repeats: int) -> float:
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        clock(cycles)
        rates.append(cycles / (time.perf_counter() - start))
    return statistics.median(rates)


def counter_sim():
    sim = build_cycle_counter()
    sim.io.limit = (1 << 32) - 1  # never done: every cycle counts
    return sim


def block_mac_sim():
    cell = BlockMacCell()
    io = cell.sim.io
    io.codes, io.acts = (1 << 256) - 1, 0x7F7F7F7F << 128
    io.d_bits, io.e_act, io.in_valid, io.first, io.last = 0x3C00, (-7) & 0xFF, 1, 1, 1
    return cell.sim


def idle_block_mac_sim():
    sim = block_mac_sim()
    sim.io.in_valid = 0  # a lane between rows: every stage's registers hold
    return sim


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--python-cycles", type=int, default=50_000)
    parser.add_argument("--native-cycles", type=int, default=5_000_000)
    args = parser.parse_args()
    print(f"{'design':<16}{'python cycles/s':>18}{'native cycles/s':>18}{'native/python':>15}")
    designs = (("cycle_counter", counter_sim), ("block_mac", block_mac_sim), ("block_mac idle", idle_block_mac_sim))
    for name, make in designs:
        sim = make()
        python = cycles_per_second(sim.step, args.python_cycles, args.repeats)
        native = cycles_per_second(sim.run, args.native_cycles, args.repeats)
        print(f"{name:<16}{python:>18,.0f}{native:>18,.0f}{native / python:>15,.0f}")


if __name__ == "__main__":
    main()
