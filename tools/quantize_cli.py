"""`hardwire quantize`: requantize a Llama GGUF under one of llama.cpp's recipes."""

from __future__ import annotations

import collections
import time
from pathlib import Path

from hardwire.cli_common import EPILOG, EXIT_OK, add_json_option, add_model_option
from hardwire.console import Console
from hardwire.golden.errors import HardwireError


def add_quantize(sub) -> None:
    from hardwire.golden.recipes import RECIPES

    p = sub.add_parser(
        "quantize", help="requantize a model under a llama.cpp recipe (q4_k_m, q6_k, ...)",
        description="Requantize a Llama GGUF with llama.cpp's per-tensor type rules and ggml's reference "
                    "quantizers (no importance matrix); the bytes equal llama-quantize's.",
        epilog=EPILOG)
    add_model_option(p)
    p.add_argument("--recipe", required=True, help=f"one of {', '.join(RECIPES)}")
    p.add_argument("--out", required=True, type=Path, help="the GGUF file to write")
    add_json_option(p)
    p.set_defaults(handler=run_quantize)


def run_quantize(args, console: Console) -> int:
    from hardwire.golden.recipes import get_recipe, requantize

    get_recipe(args.recipe)  # an unknown recipe fails before any model is fetched
    src = console.fetch_model(args.model)
    out = Path(args.out)
    if out.is_dir():
        raise HardwireError(f"--out {out} is a directory")
    if out.exists() and out.resolve() == Path(src).resolve():
        raise HardwireError(f"--out {out} is the input model; write to another file")
    t0 = time.perf_counter()
    with console.status(f"quantizing {args.model} under {args.recipe}"):
        types = requantize(src, args.recipe, out)
    counts = collections.Counter(t.name for t in types.values())
    console.result({"out": str(out), "recipe": args.recipe, "tensors": len(types),
                    "types": dict(sorted(counts.items())), "seconds": round(time.perf_counter() - t0, 1)},
                   title=f"wrote {out}")
    return EXIT_OK
