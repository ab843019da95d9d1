"""`hardwire build`, `run` and `demo`: print a model onto a die and generate on the simulated chip."""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from .console import Console
from .golden.errors import HardwireError

EXIT_OK, EXIT_MISMATCH = 0, 1
DEMO_PROMPT = "The capital of France is"


def add_die_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--die", default=None, help="die name (hw-tiny, hw-s135; default: the smallest that fits)")


@dataclass
class Printed:
    """A model printed onto a die: its metal, via maps and the built chip."""

    model: object
    die: object
    metal: object
    maps: Path
    sources: dict
    sim: object
    build_s: float
    cache_hit: bool

    def manifest(self) -> dict:
        from .rtl.chip import base_grid_sha256

        return {"die": self.die.name, "base_grid_sha256": base_grid_sha256(self.sources),
                "metal_sha256": self.metal.sha256(), **self.metal.stats(), "build_s": round(self.build_s, 3),
                "cache_hit": self.cache_hit}


def print_model(console: Console, model_spec: str, die_name: str | None) -> Printed:
    """Fetch the model, fit it to a die, write its metal and build (or reuse) the chip."""
    from .cosim.chip_sim import ChipSim, grid_sources, metal_maps
    from .golden.gguf_model import load_model
    from .rtl import metal as metal_gen
    from .rtl.die import get_die

    model = load_model(console.fetch_model(model_spec))
    die = get_die(die_name) if die_name else metal_gen.smallest_die(model)
    t0 = time.perf_counter()
    with console.status(f"printing {model_spec} onto {die.name}: metal, base grid and Verilator build"):
        image = metal_gen.generate(model, die)
        maps, maps_hit = metal_maps(image)
        sources, grid_hit = grid_sources(die)
        sim = ChipSim(die, maps)
    return Printed(model, die, image, maps, sources, sim, time.perf_counter() - t0,
                   maps_hit and grid_hit and sim.cache_hit)


# --- build -----------------------------------------------------------------------------------------

def add_build(sub, epilog: str, model_arg, json_arg) -> None:
    p = sub.add_parser("build", help="print a model onto a die: base-grid Verilog, metal and the Verilator model",
                       description="Generate the die's base-grid Verilog and the model's metal (via maps), build "
                                   "the chip with Verilator (or reuse the cached build) and write a manifest.",
                       epilog=epilog)
    model_arg(p)
    add_die_arg(p)
    p.add_argument("--out", type=Path, default=Path("build"), help="output directory (default: %(default)s)")
    json_arg(p)
    p.set_defaults(handler=run_build)


def run_build(args, console: Console) -> int:
    printed = print_model(console, args.model, args.die)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise HardwireError(f"--out {out} exists and is not a directory")
    (out / "rtl").mkdir(parents=True, exist_ok=True)
    for name, text in printed.sources.items():
        (out / "rtl" / name).write_text(text)
    metal_dir = out / "metal"
    if metal_dir.exists():
        shutil.rmtree(metal_dir)
    shutil.copytree(printed.maps, metal_dir)
    manifest = printed.manifest()
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    console.result({**manifest, "out": str(out)}, title=f"{args.model} on {printed.die.name}")
    return EXIT_OK


# --- run and demo ----------------------------------------------------------------------------------

def add_run(sub, epilog: str, model_arg, json_arg) -> None:
    p = sub.add_parser("run", help="generate on the simulated chip, every tap checked against the golden reference",
                       description="Generate tokens on the simulated chip from a prompt. Every debug-tap vector of "
                                   "every layer is compared word for word with the golden integer reference.",
                       epilog=epilog)
    model_arg(p)
    add_die_arg(p)
    add_generation_args(p)
    json_arg(p)
    p.set_defaults(handler=run_run)


def add_demo(sub, epilog: str, json_arg) -> None:
    p = sub.add_parser("demo", help="the main job: smollm2-135m generating on the simulated chip, bit-exact",
                       description="Fetch smollm2-135m, build its chip (or reuse the cache) and generate from a "
                                   "prompt on the RTL, every tap checked against the golden reference.",
                       epilog=epilog)
    add_generation_args(p)
    json_arg(p)
    p.set_defaults(handler=run_run, model="smollm2-135m", die=None)


def add_generation_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prompt", default=DEMO_PROMPT, help="the prompt text (default: %(default)r)")
    p.add_argument("--tokens", type=int, default=8, help="tokens to generate (default: %(default)s)")


def run_run(args, console: Console) -> int:
    from .cosim.generation import generate
    from .golden.tokenizer import GGUFTokenizer

    if args.tokens < 1:
        raise HardwireError(f"--tokens must be at least 1, not {args.tokens}")
    printed = print_model(console, args.model, args.die)
    tokenizer = GGUFTokenizer(printed.model.tokenizer_meta)
    prompt = tokenizer.encode(args.prompt)
    if not prompt:
        raise HardwireError("the prompt encodes to no tokens")
    with console.progress("generating on the chip", total=args.tokens) as advance:
        gen = generate(printed.model, printed.sim, prompt, args.tokens,
                       on_token=lambda g: advance(len(g.tokens)))
    report = run_report(printed, gen, tokenizer)
    console.result(report, title=f"{args.model} on {printed.die.name}")
    if gen.mismatch is not None:
        console.error(f"the chip departs from the golden reference at {gen.mismatch}")
        return EXIT_MISMATCH
    if not gen.bit_exact:
        console.error(f"the chip's output is incomplete: taps never seen {gen.missing[:3]}")
        return EXIT_MISMATCH
    return EXIT_OK


def run_report(printed: Printed, gen, tokenizer) -> dict:
    import statistics

    cycles = statistics.median(gen.cycles)
    wall = statistics.median(gen.sim_wall_s)
    clock = printed.die.clock_mhz
    return {
        "text": tokenizer.decode(gen.tokens),
        "tokens": gen.tokens,
        "golden_tokens": gen.golden_tokens,
        "bit_exact": gen.bit_exact,
        "cycles_per_token": int(cycles),
        "sim_wall_s_per_token": round(wall, 4),
        "golden_wall_s_per_token": round(statistics.median(gen.golden_wall_s), 4),
        "clock_mhz": clock,
        "projected_tokens_per_s": round(clock * 1e6 / cycles, 1),
        "prompt_tokens": len(gen.prompt),
        "tap_beats_checked": gen.beats,
        "die": printed.die.name,
        "build_s": round(printed.build_s, 2),
        "cache_hit": printed.cache_hit,
    }
