"""`hardwire build`, `run` and `demo`: print a model onto a die and generate on the simulated chip."""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from hardwire.cli_common import EPILOG, EXIT_MISMATCH, EXIT_OK, add_die_option, add_json_option, add_model_option
from hardwire.console import Console
from hardwire.golden.errors import HardwireError

DEMO_PROMPT = "The capital of France is"
FAILURES_DIR = Path("hardwire-failures")


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
        from hardwire.rtl.chip import base_grid_sha256

        return {"die": self.die.name, "base_grid_sha256": base_grid_sha256(self.sources),
                "metal_sha256": self.metal.sha256(), **self.metal.stats(), "build_s": round(self.build_s, 3),
                "cache_hit": self.cache_hit}


def print_model(console: Console, model_spec: str, die_name: str | None, via_maps: Path | None = None) -> Printed:
    """Fetch the model, fit it to a die, write its metal and build (or reuse) the chip.
    via_maps: run the chip on these via maps instead of the model's own metal (a mutated metal)."""
    from hardwire.cosim.chip_sim import ChipSim, grid_sources, metal_maps
    from hardwire.golden.gguf_model import load_model
    from hardwire.rtl import metal as metal_gen
    from hardwire.rtl.die import get_die

    model = load_model(console.fetch_model(model_spec))
    die = get_die(die_name) if die_name else metal_gen.smallest_die(model)
    t0 = time.perf_counter()
    with console.status(f"printing {model_spec} onto {die.name}: metal, base grid and Verilator build"):
        image = metal_gen.generate(model, die)
        maps, maps_hit = metal_maps(image)
        if via_maps is not None:
            maps = check_via_maps(Path(via_maps), die)
        sources, grid_hit = grid_sources(die)
        sim = ChipSim(die, maps)
    return Printed(model, die, image, maps, sources, sim, time.perf_counter() - t0,
                   maps_hit and grid_hit and sim.cache_hit)


# --- build -----------------------------------------------------------------------------------------

def add_build(sub) -> None:
    p = sub.add_parser("build", help="print a model onto a die: base-grid Verilog, metal and the Verilator model",
                       description="Generate the die's base-grid Verilog and the model's metal (via maps), build "
                                   "the chip with Verilator (or reuse the cached build) and write a manifest.",
                       epilog=EPILOG)
    add_model_option(p)
    add_die_option(p)
    p.add_argument("--out", type=Path, default=Path("build"), help="output directory (default: %(default)s)")
    add_json_option(p)
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

def add_run(sub) -> None:
    p = sub.add_parser("run", help="generate on the simulated chip, every tap checked against the golden reference",
                       description="Generate tokens on the simulated chip from a prompt. Every debug-tap vector of "
                                   "every layer is compared word for word with the golden integer reference.",
                       epilog=EPILOG)
    add_model_option(p)
    add_die_option(p)
    add_generation_args(p)
    p.add_argument("--via-maps", type=Path, default=None,
                   help="run the chip on the via maps in this directory instead of the model's own metal")
    add_json_option(p)
    p.set_defaults(handler=run_run)


def add_demo(sub) -> None:
    p = sub.add_parser("demo", help="the main job: smollm2-135m generating on the simulated chip, bit-exact",
                       description="Fetch smollm2-135m, build its chip (or reuse the cache) and generate from a "
                                   "prompt on the RTL, every tap checked against the golden reference.",
                       epilog=EPILOG)
    add_generation_args(p)
    add_json_option(p)
    p.set_defaults(handler=run_run, model="smollm2-135m", die=None)


def add_generation_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prompt", default=DEMO_PROMPT, help="the prompt text (default: %(default)r)")
    p.add_argument("--prompt-ids", default=None, help="the prompt as comma-separated token ids (instead of --prompt)")
    p.add_argument("--tokens", type=int, default=8, help="tokens to generate (default: %(default)s)")
    p.add_argument("--artifacts", type=Path, default=None,
                   help=f"where a mismatch writes its traces, waveform and reproduce command "
                        f"(default: {FAILURES_DIR}/<time>-<hash>)")


def run_run(args, console: Console) -> int:
    from hardwire.cosim.generation import generate
    from hardwire.golden.tokenizer import GGUFTokenizer

    if args.tokens < 1:
        raise HardwireError(f"--tokens must be at least 1, not {args.tokens}")
    ids = parse_prompt_ids(args.prompt_ids) if args.prompt_ids is not None else None
    via_maps = getattr(args, "via_maps", None)
    printed = print_model(console, args.model, args.die, via_maps)
    tokenizer = GGUFTokenizer(printed.model.tokenizer_meta)
    prompt = ids if ids is not None else tokenizer.encode(args.prompt)
    if not prompt:
        raise HardwireError("the prompt encodes to no tokens")
    with console.progress("generating on the chip", total=args.tokens) as advance:
        gen = generate(printed.model, printed.sim, prompt, args.tokens,
                       on_token=lambda g: advance(len(g.tokens)))
    report = run_report(printed, gen, tokenizer)
    artifacts = None
    if gen.mismatch is not None:
        command = reproduce_command(args.model, printed.die.name, args.tokens, prompt=args.prompt,
                                    prompt_ids=ids, via_maps=via_maps)
        artifacts = write_artifacts(args.artifacts, printed, gen, command)
        report["failure"] = {"directory": str(artifacts.directory), "traces": str(artifacts.traces),
                             "waveform": artifacts.waveform and str(artifacts.waveform), "reproduce": command}
    console.result(report, title=f"{args.model} on {printed.die.name}")
    if artifacts is not None:
        console.error(f"the chip departs from the golden reference at {gen.mismatch}")
        console.err.print(artifacts.summary(), markup=False, soft_wrap=True)
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


def parse_prompt_ids(text: str) -> list[int]:
    try:
        ids = [int(part) for part in text.split(",")]
    except ValueError:
        raise HardwireError(f"--prompt-ids must be comma-separated token ids, not {text!r}") from None
    if any(i < 0 for i in ids):
        raise HardwireError(f"--prompt-ids holds a negative token id: {text!r}")
    return ids


def check_via_maps(directory: Path, die) -> Path:
    """A via-map directory that holds every map the die's ROM macros load."""
    from hardwire.cosim.chip_sim import map_names

    if not directory.is_dir():
        raise HardwireError(f"--via-maps {directory} is not a directory")
    missing = [name for name in map_names(die) if not (directory / f"{name}.hex").is_file()]
    if missing:
        raise HardwireError(f"--via-maps {directory} lacks {len(missing)} via maps of die {die.name}, "
                            f"e.g. {missing[0]}.hex")
    return directory.resolve()


def reproduce_command(model: str, die: str, tokens: int, prompt: str | None = None,
                      prompt_ids: list[int] | None = None, via_maps: Path | None = None) -> str:
    """The `hardwire run` command line that runs the same model, die, prompt and metal again."""
    model_path = Path(model)
    argv = ["hardwire", "run", "--model", str(model_path.resolve()) if model_path.exists() else model,
            "--die", die]
    if prompt_ids is not None:
        argv += ["--prompt-ids", ",".join(map(str, prompt_ids))]
    else:
        argv += ["--prompt", prompt if prompt is not None else DEMO_PROMPT]
    argv += ["--tokens", str(tokens)]
    if via_maps is not None:
        argv += ["--via-maps", str(Path(via_maps).resolve())]
    return shlex.join(argv)


def write_artifacts(directory: Path | None, printed: Printed, gen, command: str):
    """Traces, waveform and the reproduce command of a mismatch, in `directory` or a new one."""
    from hardwire.cosim.failure import write_chip_failure

    if directory is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        directory = FAILURES_DIR / f"{stamp}-{hashlib.sha256(command.encode()).hexdigest()[:8]}"
    if directory.exists() and not directory.is_dir():
        raise HardwireError(f"--artifacts {directory} exists and is not a directory")
    return write_chip_failure(directory, printed.die, printed.maps, gen, printed.model.config.n_layers, command)
