"""`hardwire dies`: the die catalog, one row per die of rtl/die.py."""

from __future__ import annotations

from hardwire.cli_common import EPILOG, EXIT_OK, add_json_option
from hardwire.console import Console


def add_dies(sub) -> None:
    p = sub.add_parser("dies", help="list the dies: MACs per cycle, ROM and SRAM bits, clock",
                       description="The die catalog: per die its tiles, MACs per cycle (tile and head), attention "
                                   "engines, weight ROM bits, SRAM bits (KV cache, attention buffers, LoRA adapters, "
                                   "scratchpads) and stated clock. "
                                   "`hardwire demo --json --die NAME` measures a die's cycles and tokens/s.",
                       epilog=EPILOG)
    add_json_option(p)
    p.set_defaults(handler=_run_dies)


def _run_dies(args, console: Console) -> int:
    from hardwire.rtl.chip import die_catalog

    rows = die_catalog()
    if console.json_mode:
        console.result({"dies": rows}, title="dies")
        return EXIT_OK
    for row in rows:
        console.result(row, title=row["die"])
    return EXIT_OK
