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

from hardwire.cli_common import (
    EPILOG,
    EXIT_MISMATCH,
    EXIT_OK,
    add_die_option,
    add_json_option,
    add_lora_options,
    add_model_option,
    load_lora_option,
)
from hardwire.console import Console
from hardwire.golden.errors import HardwireError
from hardwire.outputs import check_output_dir

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


def print_model(console: Console, model_spec: str, die_name: str | None, via_maps: Path | None = None,
                check=None, reuse: bool = False) -> Printed:
    """Fetch the model, fit it to a die, write its metal and build (or reuse) the chip.
    via_maps: run the chip on these via maps instead of the model's own metal (a mutated metal).
    check(model, die): more up-front checks, run before the metal is written and the chip loads.
    reuse: when this model file was printed onto this die by this RTL before and the cache still holds
    its metal, take that metal as it is: the model is not loaded (Printed.model is None) and the metal
    not generated (Printed.metal records only its sha256 and stats). For `build`."""
    from hardwire.cosim.chip_sim import ChipSim, grid_sources, metal_maps, record_print, recorded_print
    from hardwire.golden.cache import check_cache_root, sha256_of
    from hardwire.golden.gguf_model import load_model
    from hardwire.rtl import metal as metal_gen
    from hardwire.rtl.die import get_die

    check_cache_root()
    model_path = console.fetch_model(model_spec)
    model_sha256 = sha256_of(model_path) if reuse else None
    recorded = recorded_print(model_sha256, die_name) if reuse else None
    if recorded is not None:
        return _reprint(console, model_spec, *recorded)
    model = load_model(model_path)
    die = get_die(die_name) if die_name else metal_gen.smallest_die(model)
    metal_gen.check_fits(model, die)
    if check is not None:
        check(model, die)
    t0 = time.perf_counter()
    user_maps = check_via_maps(Path(via_maps), die) if via_maps is not None else None
    with console.status(f"printing {model_spec} onto {die.name}: metal, base grid and Verilator build"):
        image = metal_gen.generate(model, die)
        maps, maps_hit = metal_maps(image)
        maps = user_maps or maps
        sources, grid_hit = grid_sources(die)
        sim = ChipSim(die, maps)
    if reuse:
        record_print(model_sha256, die_name, die, image)
    return Printed(model, die, image, maps, sources, sim, time.perf_counter() - t0,
                   maps_hit and grid_hit and sim.cache_hit)


def _reprint(console: Console, model_spec: str, die_name: str, metal, maps: Path) -> Printed:
    """A print from its record (print_model's `reuse`): the cached metal, grid and Verilator build."""
    from hardwire.cosim.chip_sim import ChipSim, grid_sources
    from hardwire.rtl.die import get_die

    t0 = time.perf_counter()
    die = get_die(die_name)
    with console.status(f"printing {model_spec} onto {die.name}: the cached metal, base grid and Verilator build"):
        sources, grid_hit = grid_sources(die)
        sim = ChipSim(die, maps)
    return Printed(None, die, metal, maps, sources, sim, time.perf_counter() - t0, grid_hit and sim.cache_hit)


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
    from hardwire.outputs import check_replaceable, staged_dir

    out = check_replaceable(Path(args.out), "--out", "manifest.json")
    printed = print_model(console, args.model, args.die, reuse=True)
    manifest = printed.manifest()
    with staged_dir(out, "--out", "manifest.json") as staging:  # `out` is replaced whole, or not at all
        (staging / "rtl").mkdir()
        for name, text in printed.sources.items():
            (staging / "rtl" / name).write_text(text)
        copy_metal(printed, staging / "metal")
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    console.result({**manifest, "out": str(out)}, title=f"{args.model} on {printed.die.name}")
    return EXIT_OK


def copy_metal(printed: Printed, metal_dir: Path) -> None:
    """The via maps of the cache entry, copied and checked against the entry's manifest (so that the
    build's metal_sha256 describes the files it wrote), with the manifest `run --via-maps` checks."""
    from hardwire.cosim.chip_sim import write_via_maps_manifest
    from hardwire.golden.cache import MANIFEST, entry_problem

    shutil.copytree(printed.maps, metal_dir, ignore=shutil.ignore_patterns(MANIFEST))
    shutil.copy2(printed.maps / MANIFEST, metal_dir / MANIFEST)
    problem = entry_problem(metal_dir)
    (metal_dir / MANIFEST).unlink()
    if problem is not None:
        raise HardwireError(f"the via maps copied from {printed.maps} changed on the way: {problem}")
    write_via_maps_manifest(metal_dir, printed.die, printed.metal.sha256())


# --- run and demo ----------------------------------------------------------------------------------

CYCLES_BY_OP_HELP = ("The report's cycles_by_op is where a generated token's cycles go, measured on the chip's "
                     "performance probe: each op's cycles, the mean over the generated tokens; "
                     "cycles_by_op_per_token lists each generated token's own split, which adds up to its cycles.")


def add_run(sub) -> None:
    p = sub.add_parser("run", help="generate on the simulated chip, every tap checked against the golden reference",
                       description="Generate tokens on the simulated chip from a prompt. Every debug-tap vector of "
                                   "every layer is compared word for word with the golden integer reference. "
                                   + CYCLES_BY_OP_HELP,
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
                                   "prompt on the RTL, every tap checked against the golden reference. "
                                   + CYCLES_BY_OP_HELP,
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
    add_lora_options(p)


def run_run(args, console: Console) -> int:
    from hardwire.cosim.generation import generate
    from hardwire.golden.tokenizer import GGUFTokenizer

    if args.tokens < 1:
        raise HardwireError(f"--tokens must be at least 1, not {args.tokens}")
    ids = parse_prompt_ids(args.prompt_ids) if args.prompt_ids is not None else None
    if ids is None:
        check_prompt_text(args.prompt, "--prompt")
    if args.artifacts is not None:
        check_output_dir(args.artifacts, "--artifacts")
    via_maps = getattr(args, "via_maps", None)
    encoded, lora = [], {}

    def check_positions(model, die) -> None:
        check_adapter(args, model, die, lora)
        encoded.append(ids if ids is not None else GGUFTokenizer(model.tokenizer_meta).encode(args.prompt))
        beyond = [i for i in encoded[0] if i >= model.config.vocab]
        if beyond:
            raise HardwireError(f"--prompt-ids holds token id {beyond[0]}, not below the model's vocabulary of "
                                f"{model.config.vocab}")
        check_sequence(len(encoded[0]), args.tokens, model, die)

    printed = print_model(console, args.model, args.die, via_maps, check=check_positions)
    tokenizer = GGUFTokenizer(printed.model.tokenizer_meta)
    prompt = encoded[0]
    load_cycles = printed.sim.load_adapter(lora["image"], lora["adapter"]) if lora else 0
    with console.progress("generating on the chip", total=args.tokens) as advance:
        gen = generate(printed.model, printed.sim, prompt, args.tokens,
                       on_token=lambda g: advance(len(g.tokens)))
    report = run_report(printed, gen, tokenizer, own_metal=via_maps is None)
    report |= {"adapter": lora["adapter"].describe() if lora else None, "adapter_load_cycles": load_cycles,
               "lora_sram_bits_used": lora["image"].sram_bits_used if lora else 0}
    artifacts = None
    if gen.mismatch is not None:
        command = reproduce_command(args.model, printed.die.name, args.tokens, prompt=args.prompt,
                                    prompt_ids=ids, via_maps=via_maps, lora=args.lora, lora_scale=args.lora_scale)
        artifacts = write_artifacts(args.artifacts, printed, gen, command)
        report["failure"] = {"directory": str(artifacts.directory), "traces": str(artifacts.traces),
                             "waveform": artifacts.waveform and str(artifacts.waveform), "reproduce": command}
    console.result(report, title=f"{args.model} on {printed.die.name}", hide=("cycles_by_op", "cycles_by_op_per_token"))
    console.shares(report["cycles_by_op"], "cycles by op, mean per generated token (measured on the chip)")
    if artifacts is not None:
        console.error(f"the chip departs from the golden reference at {gen.mismatch}")
        console.err.print(artifacts.summary(), markup=False, soft_wrap=True)
        return EXIT_MISMATCH
    if not gen.bit_exact:
        console.error(f"the chip's output is incomplete: taps never seen {gen.missing[:3]}")
        return EXIT_MISMATCH
    return EXIT_OK


def check_adapter(args, model, die, lora: dict) -> None:
    """--lora: read the adapter and frame its SRAM image before the chip loads; a bad adapter is refused
    before anything reaches the chip. Fills lora["adapter"] and lora["image"]."""
    from hardwire.rtl.adapter_image import adapter_image

    adapter = load_lora_option(args, model.config)
    if adapter is not None:
        lora.update(adapter=adapter, image=adapter_image(adapter, model.config, die))


def run_report(printed: Printed, gen, tokenizer, own_metal: bool = True) -> dict:
    import statistics

    from hardwire.cosim.cycles_by_op import mean_split

    cycles = statistics.median(gen.cycles)
    per_token = op_splits(printed, gen, own_metal)
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
        "cycles_by_op": mean_split(per_token) if per_token is not None else None,
        "cycles_by_op_per_token": per_token,
        "prompt_tokens": len(gen.prompt),
        "tap_beats_checked": gen.beats,
        "die": printed.die.name,
        "build_s": round(printed.build_s, 2),
        "cache_hit": printed.cache_hit,
    }


def op_splits(printed: Printed, gen, own_metal: bool) -> list[dict[str, int]] | None:
    """Each generated token's cycles by op, as the chip's perf port counted them, labelled from the
    metal's programs. None when the chip ran other via maps (--via-maps), whose microcode the
    labels may not describe."""
    from hardwire.cosim.cycles_by_op import address_labels, split

    if not own_metal:
        return None
    labels = address_labels(printed.metal)
    first = len(gen.prompt) - 1  # the run of the prompt's last token answers the first generated token
    runs = list(zip(gen.cycle_counts, gen.cycles, strict=True))[first:first + len(gen.tokens)]
    return [split(counts, labels, cycles) for counts, cycles in runs]


def check_prompt_text(text: str, option: str) -> None:
    """Prompt text from the command line must be valid UTF-8 (argv holds undecodable bytes as surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise HardwireError(f"{option} is not valid UTF-8 (byte {exc.start} of the text)") from None


def check_sequence(prompt_tokens: int, generated: int, model, die) -> None:
    """The positions a run feeds the chip (the prompt, then every generated token but the last) must fit
    the die's KV SRAM and the model's context, checked before the chip loads."""
    if prompt_tokens < 1:
        raise HardwireError("the prompt encodes to no tokens")
    positions = prompt_tokens + max(generated - 1, 0)
    need = f"the prompt's {prompt_tokens} tokens" + (f" and {generated} generated" if generated else "")
    for limit, what in ((die.kv_tokens, f"die {die.name}'s KV SRAM"), (model.config.context, "the model's context")):
        if positions > limit:
            raise HardwireError(f"{need} need {positions} positions; {what} holds {limit}")


def parse_prompt_ids(text: str) -> list[int]:
    try:
        ids = [int(part) for part in text.split(",")]
    except ValueError:
        raise HardwireError(f"--prompt-ids must be comma-separated token ids, not {text!r}") from None
    if any(i < 0 for i in ids):
        raise HardwireError(f"--prompt-ids holds a negative token id: {text!r}")
    return ids


def check_via_maps(directory: Path, die) -> Path:
    """A via-map directory the die's ROM macros can load (cosim/chip_sim.py check_via_maps)."""
    from hardwire.cosim.chip_sim import check_via_maps as check

    return check(directory, die)


def reproduce_command(model: str, die: str, tokens: int, prompt: str | None = None,
                      prompt_ids: list[int] | None = None, via_maps: Path | None = None, lora: Path | None = None,
                      lora_scale: float = 1.0) -> str:
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
    if lora is not None:
        argv += ["--lora", str(Path(lora).resolve()), "--lora-scale", repr(lora_scale)]
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
