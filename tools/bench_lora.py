"""Benchmark: the cost of a LoRA adapter on the chip.

Writes a seeded synthetic PEFT adapter (rank --rank on all seven projections of every layer),
builds the model's chip once and, in the same run on the same chip, generates from the prompt
without an adapter and with it (loaded through the adapter-load port), alternating --repeats
times; every token is checked bit-exact against the golden reference (with the adapter where
one is loaded). Reports:
  - the adapter load time in cycles and in microseconds at the die's clock;
  - median simulation seconds per token (the chip's native run only) with and without, and their
    ratio;
  - cycles per token with and without;
  - the LoRA SRAM bits of the die, and the bits the adapter uses.

    taskset -c 0 python tools/bench_lora.py --model smollm2-135m --rank 64 --tokens 4
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")  # one core: BLAS must not spread

from hardwire.cli_common import EXIT_MISMATCH, EXIT_OK, add_die_option, add_model_option  # noqa: E402
from hardwire.cosim.chip_sim import ChipSim, metal_maps  # noqa: E402
from hardwire.cosim.generation import generate  # noqa: E402
from hardwire.golden.gguf_model import load_model  # noqa: E402
from hardwire.golden.lora import load_adapter  # noqa: E402
from hardwire.golden.lora_synth import LoraSpec, write_peft  # noqa: E402
from hardwire.golden.models import resolve_model  # noqa: E402
from hardwire.golden.tokenizer import GGUFTokenizer  # noqa: E402
from hardwire.rtl import metal  # noqa: E402
from hardwire.rtl.adapter_image import adapter_image  # noqa: E402
from hardwire.rtl.die import get_die  # noqa: E402

PROMPT = "The capital of France is"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_option(ap)
    add_die_option(ap)
    ap.add_argument("--prompt", default=PROMPT)
    ap.add_argument("--tokens", type=int, default=4, help="tokens generated after the prompt")
    ap.add_argument("--rank", type=int, default=None, help="adapter rank (default: the die's largest)")
    ap.add_argument("--repeats", type=int, default=1, help="base/adapter generations, alternated")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    model = load_model(resolve_model(args.model))
    die = get_die(args.die) if args.die else metal.smallest_die(model)
    rank = args.rank or die.lora_rank
    with tempfile.TemporaryDirectory() as tmp:
        spec = LoraSpec(rank=rank, alpha=2.0 * rank, seed=args.seed)
        adapter = load_adapter(write_peft(spec, model.config, Path(tmp) / "adapter"), model.config)
    image = adapter_image(adapter, model.config, die)
    maps, _ = metal_maps(metal.generate(model, die))
    sim = ChipSim(die, maps)
    prompt = GGUFTokenizer(model.tokenizer_meta).encode(args.prompt)
    walls = {"base": [], "lora": []}
    cycles = {"base": [], "lora": []}
    load_cycles, load_wall = 0, 0.0
    for _ in range(args.repeats):
        for mode in ("base", "lora"):
            if mode == "lora":
                t0 = time.perf_counter()
                load_cycles = sim.load_adapter(image, adapter)
                load_wall = time.perf_counter() - t0
            else:
                sim.clear_adapter()
            gen = generate(model, sim, prompt, args.tokens)
            if not gen.bit_exact:
                print(f"{mode}: the chip departs from the golden reference at {gen.mismatch}", file=sys.stderr)
                return EXIT_MISMATCH
            walls[mode] += gen.sim_wall_s
            cycles[mode] += gen.cycles
    base, lora = statistics.median(walls["base"]), statistics.median(walls["lora"])
    json.dump({
        "model": args.model, "die": die.name, "rank": rank, "targets": len(adapter.pairs),
        "tokens_timed_each": len(walls["base"]),
        "adapter_load_cycles": load_cycles, "adapter_load_us_at_clock": load_cycles / die.clock_mhz,
        "adapter_load_wall_s": round(load_wall, 3), "clock_mhz": die.clock_mhz,
        "sim_s_per_token_base": round(base, 4), "sim_s_per_token_lora": round(lora, 4),
        "lora_over_base_sim_time": round(lora / base, 3),
        "cycles_per_token_base": statistics.median(cycles["base"]),
        "cycles_per_token_lora": statistics.median(cycles["lora"]),
        "lora_sram_bits_per_die": die.lora_sram_bits, "lora_sram_bits_used": image.sram_bits_used,
    }, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
