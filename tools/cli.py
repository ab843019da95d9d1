"""The `hardwire` command. Its exit codes are hardwire.cli_common's."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hardwire import chip_cli, dies_cli, quantize_cli, report_cli, verify_cli, via_map_cli
from hardwire.cli_common import (
    EPILOG,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    add_json_option,
    add_lora_options,
    add_model_option,
    load_lora_option,
)
from hardwire.console import Console
from hardwire.golden.errors import HardwireError


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    console = Console(json_mode=getattr(args, "json", False))
    try:
        return args.handler(args, console) or EXIT_OK
    except HardwireError as exc:
        console.error(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        console.error("interrupted")
        return EXIT_INTERRUPTED
    except OSError as exc:  # the file system refused: a path, a permission, a full disk
        where = f" ({exc.filename})" if exc.filename else ""
        console.error(f"{exc.strerror or exc}{where}")
        return EXIT_USAGE
    except MemoryError:
        console.error("out of memory: the request is too large for this machine")
        return EXIT_USAGE


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one `hardwire: error:` line (see --help for the usage)."""

    def error(self, message: str):
        sys.stderr.write(f"hardwire: error: {self.prog}: {message} (see {self.prog} --help)\n")
        sys.exit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    from hardwire import __version__

    parser = OneLineParser(
        prog="hardwire",
        description="Print a quantized Llama-family LLM onto a mask-programmable chip and prove it bit-exact.",
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"hardwire {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_synth(sub)
    _add_synth_lora(sub)
    _add_eval(sub)
    quantize_cli.add_quantize(sub)
    chip_cli.add_build(sub)
    chip_cli.add_run(sub)
    chip_cli.add_demo(sub)
    dies_cli.add_dies(sub)
    verify_cli.add_verify(sub)
    report_cli.add_report(sub)
    via_map_cli.add_via_map(sub)
    return parser


# --- synth -----------------------------------------------------------------------------------------

# the synthetic model's numeric-corner knobs (golden/synth.py SynthSpec), each a --flag
SYNTH_SCALES = {
    "weight_scale": "multiply every weight matrix and the embedding: 0 for all-zero vectors, thousands for "
                    "saturation corners",
    "gain_scale": "multiply every RMSNorm gain: with --weight-scale, saturates the projections",
    "ffn_scale": "multiply the FFN matrices too, at most 1: a quiet FFN under loud attention leaves the residual "
                 "just inside saturation",
    "embed_scale": "multiply the embedding too: a q6_k embedding then saturates the embedding unit",
}


def _add_synth(sub) -> None:
    from hardwire.golden.synth import QUANTS, SynthSpec

    d = SynthSpec()
    p = sub.add_parser("synth", help="write a seeded synthetic Llama model as a GGUF file",
                       description="Write a seeded synthetic Llama model as a real GGUF file.", epilog=EPILOG)
    p.add_argument("--out", required=True, type=Path, help="the GGUF file to write")
    for name, help_text in (("layers", "transformer layers"), ("d_model", "model width (multiple of 32)"),
                            ("d_ffn", "FFN width (multiple of 32)"), ("heads", "query heads"),
                            ("kv_heads", "KV heads (divides heads)"), ("vocab", "vocabulary size (>= 258)"),
                            ("context", "context length"), ("seed", "random seed")):
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=int, default=getattr(d, name),
                       help=f"{help_text} (default: %(default)s)")
    choices = sorted(QUANTS)
    for name in ("embed_quant", "attn_quant", "ffn_quant"):
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, choices=choices, default=getattr(d, name),
                       help="quant type of this tensor class (default: %(default)s)")
    p.add_argument("--output-quant", choices=choices, default=None,
                   help="write an untied LM head of this quant type (default: tied to the embedding)")
    p.add_argument("--rope-theta", type=float, default=d.rope_theta, help="RoPE base (default: %(default)s)")
    for name, help_text in SYNTH_SCALES.items():
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=float, default=getattr(d, name),
                       help=f"{help_text} (default: %(default)s)")
    add_json_option(p)
    p.set_defaults(handler=_run_synth)


def _run_synth(args, console: Console) -> int:
    from hardwire.golden.synth import SynthSpec, write_synthetic
    from hardwire.outputs import check_output_file

    fields = SynthSpec.__dataclass_fields__
    spec = SynthSpec(**{k: v for k, v in vars(args).items() if k in fields})
    spec.check()
    path = write_synthetic(spec, check_output_file(args.out, "--out"))
    console.result({"out": str(path), **{k: getattr(spec, k) for k in fields}},
                   title=f"wrote {path}")
    return EXIT_OK


# --- synth-lora ------------------------------------------------------------------------------------

def _add_synth_lora(sub) -> None:
    from hardwire.golden.lora_synth import DTYPES, SHORT_NAMES, LoraSpec

    d = LoraSpec()
    p = sub.add_parser("synth-lora", help="write a seeded synthetic LoRA adapter for a model (PEFT or GGUF)",
                       description="Write a seeded synthetic LoRA adapter shaped for a model, as a PEFT "
                                   "directory or a llama.cpp GGUF adapter; both formats of one seed hold the "
                                   "same adapter.", epilog=EPILOG)
    add_model_option(p)
    p.add_argument("--out", required=True, type=Path, help="the PEFT directory or GGUF file to write")
    p.add_argument("--format", choices=("peft", "gguf"), default="peft", help="(default: %(default)s)")
    p.add_argument("--rank", type=int, default=d.rank, help="LoRA rank r (default: %(default)s)")
    p.add_argument("--alpha", type=float, default=d.alpha, help="lora_alpha (default: %(default)s)")
    p.add_argument("--targets", default=",".join(d.targets),
                   help=f"comma-separated projections among {','.join(SHORT_NAMES)} (default: all)")
    p.add_argument("--rank-pattern", default="", metavar="NAME=R,...",
                   help="per-projection ranks, as PEFT's rank_pattern, e.g. down=32,q=4")
    p.add_argument("--rslora", action="store_true", help="scale alpha/sqrt(r) (PEFT only)")
    p.add_argument("--b-std", type=float, default=d.b_std,
                   help="standard deviation of B; A's is 1/sqrt(in) (default: %(default)s)")
    p.add_argument("--b-octaves", type=int, default=d.b_octaves,
                   help="B's row i times 2**(i %% N): block exponents over N octaves (default: %(default)s)")
    p.add_argument("--dtype", choices=DTYPES, default=d.dtype, help="PEFT tensor type (default: %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed, help="random seed (default: %(default)s)")
    add_json_option(p)
    p.set_defaults(handler=_run_synth_lora)


def _run_synth_lora(args, console: Console) -> int:
    from hardwire.golden.gguf_model import load_model
    from hardwire.golden.lora_synth import LoraSpec, write_gguf, write_peft

    spec = LoraSpec(rank=args.rank, alpha=args.alpha, targets=tuple(t for t in args.targets.split(",") if t),
                    rank_pattern=_rank_pattern(args.rank_pattern), use_rslora=args.rslora, seed=args.seed,
                    b_std=args.b_std, b_octaves=args.b_octaves, dtype=args.dtype)
    spec.check()
    config = load_model(console.fetch_model(args.model)).config
    path = (write_gguf if args.format == "gguf" else write_peft)(spec, config, args.out)
    console.result({"out": str(path), "format": args.format, "model": args.model, "rank": spec.rank,
                    "alpha": spec.alpha, "targets": list(spec.targets), "rank_pattern": dict(spec.rank_pattern),
                    "rslora": spec.use_rslora, "seed": spec.seed}, title=f"wrote {path}")
    return EXIT_OK


def _rank_pattern(text: str) -> tuple[tuple[str, int], ...]:
    pairs = []
    for item in filter(None, text.split(",")):
        name, _, rank = item.partition("=")
        if not rank.strip().isdigit():
            raise HardwireError(f"--rank-pattern item '{item}' is not NAME=RANK")
        pairs.append((name.strip(), int(rank)))
    return tuple(pairs)


# --- eval ------------------------------------------------------------------------------------------

def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="perplexity and top-1 agreement of the integer spec against float",
                       description="Run the float and the integer reference over a text and compare them.",
                       epilog=EPILOG)
    add_model_option(p)
    p.add_argument("--text", type=Path, default=None,
                   help="an English text file (default: the shipped evaluation text)")
    p.add_argument("--tokens", type=int, default=1024, help="tokens of the text to evaluate (default: %(default)s)")
    add_lora_options(p)
    add_json_option(p)
    p.set_defaults(handler=_run_eval)


def _run_eval(args, console: Console) -> int:
    from hardwire.golden.evaluate import evaluate, tokens_for_eval
    from hardwire.golden.gguf_model import load_model
    from hardwire.golden.kquants import DECODABLE

    text = _read_text(args.text)
    model = load_model(console.fetch_model(args.model), formats=DECODABLE)  # the references read every format
    adapter = load_lora_option(args, model.config)
    ids = tokens_for_eval(model, text, args.tokens)
    with console.progress("evaluating float and integer paths", total=len(ids)) as advance:
        result = evaluate(model, ids, progress=advance, adapter=adapter)
    fields = result.as_dict() | ({"adapter": adapter.describe()} if adapter else {})
    with_lora = f" with LoRA {args.lora}" if adapter else ""
    console.result(fields, title=f"eval of {args.model}{with_lora} over {len(ids)} tokens")
    return EXIT_OK


def _read_text(path: Path | None) -> str:
    if path is None:
        from importlib.resources import files

        return files("hardwire.golden").joinpath("data/eval_en.txt").read_text(encoding="utf-8")
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise HardwireError(f"text file {path} does not exist") from None
    except UnicodeDecodeError:
        raise HardwireError(f"text file {path} is not UTF-8") from None
    except IsADirectoryError:
        raise HardwireError(f"text file {path} is a directory") from None


if __name__ == "__main__":
    sys.exit(main())

