"""`hardwire via-map dump`: a binary via map (rtl/via_map.py) as `$readmemh` hex text, for people."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hardwire.cli_common import EPILOG, EXIT_OK
from hardwire.console import Console
from hardwire.golden.errors import HardwireError


def add_via_map(sub) -> None:
    p = sub.add_parser("via-map", help="inspect a via map (the binary ROM contents `hardwire build` writes)",
                       description="Inspect a via-map file.", epilog=EPILOG)
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    dump = actions.add_parser("dump", help="print a via map as hex, one word per line ($readmemh text)",
                              description="Print the words of a via map as $readmemh-compatible hex, one word per "
                                          "line (two comment lines and an @address first), so that two maps can be "
                                          "compared with diff.", epilog=EPILOG)
    dump.add_argument("file", type=Path, help="a .vmap file")
    dump.add_argument("--words", type=word_range, default=None, metavar="A:B",
                      help="only words A to B-1 (either end may be left out)")
    dump.set_defaults(handler=run_dump)


def word_range(text: str) -> tuple[int | None, int | None]:
    start, sep, stop = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return (int(start) if start else None), (int(stop) if stop else None)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--words takes A:B (word addresses), not {text!r}") from None


def run_dump(args, console: Console) -> int:
    from hardwire.rtl.via_map import dump_via_map, load_via_map

    start, stop = args.words or (None, None)
    if not args.file.is_file():
        raise HardwireError(f"{args.file}: no such via-map file")
    depth = load_via_map(args.file).depth
    lines = dump_via_map(args.file, 0 if start is None else start, depth if stop is None else stop)
    first = next(lines)  # the checks run before anything is printed
    out = sys.stdout
    out.write(first + "\n")
    for line in lines:
        out.write(line + "\n")
    return EXIT_OK
