"""Mutation score of the chained verification: flip single via bits in the metal, count what it catches.

    python tools/mutation_score.py --die hw-tiny --flips 24 --seed 1 --json

Each flip is one random via bit of one ROM class, in turn: weight codes (with their high-bit
planes), block scales and offsets (d, m/dmin, sub-block scales and mins), norm gains and headers
(consts), microcode, tables (LUTs) and the head's weights. The chip runs the stimulus on the
flipped metal (one Verilator build; only the via maps change) and is caught when the scoreboard
stops it: a mismatch, a tap never seen, a refused token or a hang.

Whether a flip *should* be caught is decided without the chip: the flipped bit is decoded back
into what it encodes (cosim/mutation.py) and, where the golden reference can express it (a weight
code, scale or offset, a norm gain or header field, a table entry), the golden reference of the
mutated metal runs the same stimulus. A flip is
    effective    its golden trace differs somewhere: a correct scoreboard must catch it
    no effect    its golden trace is the same, or the bit encodes nothing the chip reads
    unmodelled   the golden reference cannot express it (microcode, a refused fp16 scale):
                 caught ones certainly changed an output; the others are undetermined
The mutation score is caught / effective. A no-effect flip that the chip still fails on is
listed apart: the chip reads a bit the golden reference says does not matter.

Without --model a synthetic model (3 layers, Q4_0/Q4_1/Q8_0, untied head) is written to a
temporary directory.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from hardwire.cli_common import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, add_die_option, add_json_option, add_model_option
from hardwire.console import Console
from hardwire.cosim import mutation
from hardwire.cosim.chip_sim import ChipSim, metal_maps
from hardwire.cosim.generation import generate
from hardwire.golden.errors import HardwireError
from hardwire.golden.gguf_model import Model, load_model
from hardwire.golden.intref import IntModel
from hardwire.golden.synth import SynthSpec, write_synthetic
from hardwire.rtl import metal
from hardwire.rtl.die import SLOT_BITS, get_die

SLOT_BYTES = SLOT_BITS // 8
CLASSES = ("weights", "scales", "consts", "ucode", "luts", "head")
DEFAULT_SPEC = SynthSpec(layers=3, d_model=256, d_ffn=512, heads=8, kv_heads=2, vocab=517, seed=6,
                         embed_quant="q4_0", attn_quant="q4_0", ffn_quant="q4_1", output_quant="q8_0")
DEFAULT_PROMPT = "3,257,42"
HANG_FACTOR = 4  # a flipped chip that runs this many times the clean run's cycles has hung


@dataclass
class Outcome:
    rom_class: str
    rom: str
    word: int
    bit: int
    field: str
    kind: str  # mutation.MODEL, UNUSED or UNMODELLED
    golden_effect: tuple[int, str, int] | None  # the golden's first changed tap
    caught: bool
    failed_at: str  # where the chip run failed, "" when it passed
    mismatch_at: tuple[int, str, int] | None = None  # the scoreboard's first mismatch, if that is how

    @property
    def same_place(self) -> bool | None:
        """Did the chip fail first where the golden of the mutant first changes?"""
        if self.golden_effect is None or not self.caught:
            return None
        return self.mismatch_at == self.golden_effect

    @property
    def verdict(self) -> str:
        if self.kind == mutation.UNMODELLED:
            return "unmodelled"
        return "effective" if self.golden_effect is not None else "no effect"


# --- sampling --------------------------------------------------------------------------------------

def class_roms(image: metal.Metal, n_layers: int) -> dict[str, list[str]]:
    tiles = [f"tile{i:02d}" for i in range(n_layers)]
    return {
        "weights": [f"{t}_weights" for t in tiles],
        "scales": [f"{t}_weights" for t in tiles] + ["head_weights"],
        "consts": [f"{t}_consts" for t in tiles] + ["head_consts"],
        "ucode": sorted(name for name in image.roms if name.endswith("_ucode")),
        "luts": sorted(name for name in image.roms if name.startswith("lut_")),
        "head": ["head_weights"],
    }


def sample_flip(rng: np.random.Generator, image: metal.Metal, rom_class: str, roms: list[str]) -> mutation.Flip:
    """A bit of a used word of one of the class's ROMs (weighted by used words); weight classes pick
    a lane's slot and, in it, a code byte (weights, head) or a scale/offset byte (scales)."""
    used = np.array([image.roms[r].used for r in roms], float)
    rom = roms[rng.choice(len(roms), p=used / used.sum())]
    image_rom = image.roms[rom]
    word = int(rng.integers(image_rom.used))
    if rom_class in ("weights", "scales", "head"):
        lanes = image_rom.width // SLOT_BITS
        low, high = (32, SLOT_BYTES) if rom_class == "scales" else (0, 32)
        byte = int(rng.integers(lanes)) * SLOT_BYTES + int(rng.integers(low, high))
        return mutation.Flip(rom, word, byte * 8 + int(rng.integers(8)))
    return mutation.Flip(rom, word, int(rng.integers(image_rom.width)))


def sample_flips(rng: np.random.Generator, image: metal.Metal, n_layers: int,
                 count: int) -> list[tuple[str, mutation.Flip]]:
    roms, flips, seen = class_roms(image, n_layers), [], set()
    while len(flips) < count:
        rom_class = CLASSES[len(flips) % len(CLASSES)]
        flip = sample_flip(rng, image, rom_class, roms[rom_class])
        if flip not in seen:
            seen.add(flip)
            flips.append((rom_class, flip))
    return flips


# --- running ---------------------------------------------------------------------------------------

class BoundedChip:
    """The chip as generate() drives it, with a cycle limit per token: a mutant may hang."""

    def __init__(self, sim: ChipSim, max_cycles: int):
        self.sim, self.max_cycles, self.die = sim, max_cycles, sim.die

    def reset(self) -> None:
        self.sim.reset()

    @property
    def position(self) -> int:
        return self.sim.position

    @property
    def adapter(self):
        return self.sim.adapter

    @property
    def adapter_commands(self):
        return self.sim.adapter_commands

    def token(self, token: int):
        return self.sim.token(token, max_cycles=self.max_cycles)


def chip_verdict(model: Model, sim, prompt: list[int], n_new: int) -> tuple[str, tuple[int, str, int] | None]:
    """(where the chained run failed, "" when bit-exact; the first mismatch's (layer, op, position))."""
    try:
        gen = generate(model, sim, prompt, n_new)
    except HardwireError as exc:  # a refused token, a hang, a flood of beats
        return f"error: {exc}", None
    if gen.mismatch is not None:
        m = gen.mismatch
        return f"layer {m.layer} {m.op} position {m.position}", (m.layer, m.op, m.position)
    if gen.missing:
        layer, op, position = gen.missing[0]
        return f"missing layer {layer} {op} position {position}", None
    return ("" if gen.bit_exact else f"tokens {gen.tokens} != golden {gen.golden_tokens}"), None


def run_flips(model: Model, image: metal.Metal, flips, prompt: list[int], n_new: int, work: Path,
              progress) -> list[Outcome]:
    die = image.die
    base, _ = metal_maps(image)
    clean = ChipSim(die, base)
    gen = generate(model, clean, prompt, n_new)
    if not gen.bit_exact:
        raise HardwireError(f"the unmutated chip already fails ({gen.mismatch or gen.missing[:2]}); "
                            "a mutation score needs a passing run")
    max_cycles = HANG_FACTOR * max(gen.cycles)
    stimulus = prompt + gen.golden_tokens[:-1]  # every token the chip is sent
    reference = mutation.golden_trace(IntModel(model, capacity=len(stimulus)), stimulus)
    outcomes = []
    for i, (rom_class, flip) in enumerate(flips):
        decoded = mutation.decode(image, model, flip)
        effect = mutation.golden_effect(decoded, model, stimulus, reference) if decoded.kind == mutation.MODEL \
            else None
        maps = mutation.flipped_maps(base, image, flip, work / f"flip{i:03d}")
        failed_at, mismatch_at = chip_verdict(model, BoundedChip(ChipSim(die, maps), max_cycles), prompt, n_new)
        shutil.rmtree(maps)  # the ROM macros loaded them when the chip started
        outcomes.append(Outcome(rom_class, flip.rom, flip.word, flip.bit, decoded.field, decoded.kind, effect,
                                bool(failed_at), failed_at, mismatch_at))
        progress(i + 1)
    return outcomes


# --- the score -------------------------------------------------------------------------------------

def summarize(outcomes: list[Outcome]) -> dict:
    def counts(items: list[Outcome]) -> dict:
        verdicts = Counter(o.verdict for o in items)
        caught = Counter(o.verdict for o in items if o.caught)
        return {"flips": len(items), "effective": verdicts["effective"], "caught": caught["effective"],
                "no_effect": verdicts["no effect"], "no_effect_caught": caught["no effect"],
                "unmodelled": verdicts["unmodelled"], "unmodelled_caught": caught["unmodelled"]}

    total = counts(outcomes)
    placed = [o.same_place for o in outcomes if o.same_place is not None]
    return {
        "mutation_score": round(total["caught"] / total["effective"], 4) if total["effective"] else None,
        **total,
        "caught_where_golden_changes": sum(placed),  # of the caught effective flips
        "per_rom_class": {c: counts([o for o in outcomes if o.rom_class == c]) for c in CLASSES},
        "per_rom": {r: counts([o for o in outcomes if o.rom == r]) for r in sorted({o.rom for o in outcomes})},
    }


def outcome_json(o: Outcome) -> dict:
    data = asdict(o)
    data["verdict"], data["same_place"] = o.verdict, o.same_place
    for key in ("golden_effect", "mismatch_at"):
        data[key] = None if data[key] is None else dict(zip(("layer", "op", "position"), data[key], strict=True))
    return data


def show_table(console: Console, outcomes: list[Outcome], summary: dict) -> None:
    from rich.table import Table

    table = Table(title="via-bit flips")
    for column in ("#", "class", "flip", "encodes", "verdict", "golden changes first at", "chip failed at"):
        table.add_column(column, overflow="fold")
    for i, o in enumerate(outcomes):
        effect = "" if o.golden_effect is None else "layer {} {} position {}".format(*o.golden_effect)
        style = "red" if o.verdict == "effective" and not o.caught else None
        table.add_row(str(i), o.rom_class, f"{o.rom}[{o.word}] bit {o.bit}", o.field, o.verdict, effect,
                      o.failed_at or "-", style=style)
    console.out.print(table)
    per = Table(title="per ROM class")
    for column in ("class", "flips", "effective", "caught", "no effect", "no effect, caught", "unmodelled",
                   "unmodelled, caught"):
        per.add_column(column)
    for name, c in summary["per_rom_class"].items():
        per.add_row(name, *(str(c[k]) for k in ("flips", "effective", "caught", "no_effect", "no_effect_caught",
                                                "unmodelled", "unmodelled_caught")))
    console.out.print(per)


# --- command line ----------------------------------------------------------------------------------

def parse_args(argv):
    ap = argparse.ArgumentParser(prog="mutation_score", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_option(ap, default=None, help_default="a synthetic model")
    add_die_option(ap, default="hw-tiny")
    ap.add_argument("--flips", type=int, default=24, help="single-bit flips (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the flip sampling (default: %(default)s)")
    ap.add_argument("--prompt-ids", default=DEFAULT_PROMPT, help="the stimulus prompt (default: %(default)s)")
    ap.add_argument("--tokens", type=int, default=2, help="tokens generated per run (default: %(default)s)")
    add_json_option(ap)
    return ap.parse_args(argv)


def score(args, console: Console, work: Path) -> tuple[dict, list[Outcome]]:
    from hardwire.chip_cli import parse_prompt_ids

    if args.flips < 1 or args.tokens < 1:
        raise HardwireError(f"--flips and --tokens must be at least 1 (got {args.flips} and {args.tokens})")
    prompt = parse_prompt_ids(args.prompt_ids)
    model_path = console.fetch_model(args.model) if args.model else write_synthetic(DEFAULT_SPEC, work / "synth.gguf")
    model = load_model(model_path)
    if any(t >= model.config.vocab for t in prompt):
        raise HardwireError(f"--prompt-ids {args.prompt_ids} holds an id past the vocabulary of {model.config.vocab}")
    image = metal.generate(model, get_die(args.die))
    flips = sample_flips(np.random.default_rng(args.seed), image, model.config.n_layers, args.flips)
    t0 = time.perf_counter()
    with console.progress("flipping via bits", total=len(flips)) as advance:
        outcomes = run_flips(model, image, flips, prompt, args.tokens, work, advance)
    return {"model": args.model or f"synthetic {DEFAULT_SPEC}", "die": args.die, "seed": args.seed,
            "prompt_ids": prompt, "tokens": args.tokens, **summarize(outcomes),
            "results": [outcome_json(o) for o in outcomes], "wall_s": round(time.perf_counter() - t0, 1)}, outcomes


def main(argv=None) -> int:
    args = parse_args(argv)
    console = Console(json_mode=args.json)
    try:
        with tempfile.TemporaryDirectory(prefix="hardwire-mutants-") as tmp:
            report, outcomes = score(args, console, Path(tmp))
    except HardwireError as exc:
        console.error(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        console.error("interrupted")
        return EXIT_INTERRUPTED
    if not args.json:
        show_table(console, outcomes, report)
    head = {k: v for k, v in report.items() if k not in ("results", "per_rom", "per_rom_class")}
    console.result(report if args.json else head, title="mutation score")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
