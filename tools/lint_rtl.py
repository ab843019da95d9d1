"""Verilator -Wall lint of the base grid: `python -m hardwire.lint_rtl [DIE ...]` (default: every die).

hw_tile and hw_head are linted alone, hw_chip with both. Prints each module's warnings and
exits 1 if any module warns, 2 on an unknown die.
"""

from __future__ import annotations

import sys

from hardwire.cli_common import EXIT_MISMATCH, EXIT_OK, EXIT_USAGE
from hardwire.cosim.chip_sim import grid_sources
from hardwire.cosim.verilator_build import lint
from hardwire.golden.errors import HardwireError
from hardwire.rtl.chip import CHIP_MODULE, HEAD_MODULE, LANE_MODULE, TILE_MODULE
from hardwire.rtl.die import DIES, get_die

MODULES = (TILE_MODULE, HEAD_MODULE, CHIP_MODULE)


def lint_module(sources: dict[str, str], module: str) -> str:
    """The warnings of one base-grid module, "" when clean."""
    own = (f"{module}.v", f"{LANE_MODULE}.v")  # a unit of a wide die instantiates the lane group module
    files = sources if module == CHIP_MODULE else {name: text for name, text in sources.items() if name in own}
    return lint(files, module)


def main(argv: list[str] | None = None) -> int:
    names = argv or list(DIES)
    try:
        dies = [get_die(name) for name in names]
    except HardwireError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    failed = False
    for die in dies:
        sources, _ = grid_sources(die)
        for module in (*MODULES, LANE_MODULE) if die.wide else MODULES:
            report = lint_module(sources, module)
            print(f"{die.name} {module}: {'clean' if not report else 'warnings'}")
            if report:
                print(report)
                failed = True
    return EXIT_MISMATCH if failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
