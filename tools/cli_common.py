"""What every `hardwire` subcommand and tool shares: the exit codes and the common options.

Exit codes: 0 success; 1 a check failed (a verification mismatch: the chip and the golden
reference disagree; a failed test for `report --check`, an RTL lint warning for lint_rtl);
2 bad input or an unsatisfiable request, with a one-line error on stderr; 130 interrupted.
"""

from __future__ import annotations

import argparse
from pathlib import Path

EXIT_OK = 0
EXIT_MISMATCH = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EPILOG = "exit codes: 0 ok, 1 verification mismatch, 2 bad input (one-line error), 130 interrupted"
DEFAULT_MODEL = "smollm2-135m"


def add_model_option(p: argparse.ArgumentParser, default: str | None = DEFAULT_MODEL,
                     help_default: str = "%(default)s") -> None:
    p.add_argument("--model", default=default,
                   help=f"a shipped model name (smollm2-135m) or a path to a llama GGUF file (default: {help_default})")


def add_die_option(p: argparse.ArgumentParser, default: str | None = None) -> None:
    fallback = "%(default)s" if default else "the smallest that fits"
    p.add_argument("--die", default=default, help=f"die name (hw-tiny, hw-s135; default: {fallback})")


def add_json_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print machine-readable JSON only")


def add_lora_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lora", type=Path, default=None, metavar="PATH",
                   help="a LoRA adapter: a PEFT directory (adapter_config.json + adapter_model.safetensors) "
                        "or a llama.cpp GGUF adapter")
    p.add_argument("--lora-scale", type=float, default=1.0, metavar="S",
                   help="multiply the adapter's alpha/r scale by S (default: %(default)s)")


def load_lora_option(args, config):
    """The adapter of --lora (checked against the model's shapes), or None; --lora-scale alone is refused."""
    from hardwire.golden.errors import HardwireError

    if args.lora is None:
        if args.lora_scale != 1.0:
            raise HardwireError("--lora-scale needs --lora")
        return None
    from hardwire.golden.lora import load_adapter

    return load_adapter(args.lora, config, args.lora_scale)
