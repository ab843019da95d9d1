"""Verilator -Wall lint of the base grid: `python -m hardwire.lint_rtl [DIE ...]` (default: every die).

hw_tile and hw_head are linted alone (with the lane modules of a wide die), hw_chip with its units
as port-only stubs: each unit is linted on its own, and the whole chip of a wide die elaborated at
once needs more memory than a 24 GB machine has (Verilator was killed at 22.5 GB on hw-s135w). The
stubs have the units' own port tables, so every connection is still checked. Prints each
module's warnings and exits 1 if any module warns, 2 on an unknown die.
"""

from __future__ import annotations

import sys

from hardwire.cli_common import EXIT_MISMATCH, EXIT_OK, EXIT_USAGE
from hardwire.cosim.chip_sim import grid_sources
from hardwire.cosim.partition import port_list, unit_pins
from hardwire.cosim.verilator_build import lint
from hardwire.golden.errors import HardwireError
from hardwire.rtl.chip import CHIP_MODULE, HEAD_MODULE, LANE_MODULE, TILE_MODULE
from hardwire.rtl.die import DIES, get_die

MODULES = (TILE_MODULE, HEAD_MODULE, CHIP_MODULE)


def lint_module(sources: dict[str, str], module: str, die) -> str:
    """The warnings of one base-grid module of `die`, "" when clean."""
    if module == CHIP_MODULE:
        units = {f"{name}.v" for name in (TILE_MODULE, HEAD_MODULE, LANE_MODULE)}
        files = {name: text for name, text in sources.items() if name not in units}
        files.update({f"{TILE_MODULE}.v": unit_stub(die, head=False), f"{HEAD_MODULE}.v": unit_stub(die, head=True)})
        return lint(files, module)
    own = (f"{module}.v", f"{LANE_MODULE}.v")  # a unit of a wide die instantiates the lane group module
    return lint({name: text for name, text in sources.items() if name in own}, module)


def unit_stub(die, head: bool) -> str:
    """The tile (or head) module with its ports alone: every output tied to zero, no input read."""
    pins = unit_pins(die, head)
    ties = "".join(f"assign {p.name} = {p.width}'d0;\n" for p in pins if not p.is_input)
    return (f"// A port-only stub: the unit is linted on its own\n/* verilator lint_off UNUSEDSIGNAL */\n"
            f"module {HEAD_MODULE if head else TILE_MODULE} (\n{port_list(pins)}\n);\n{ties}endmodule\n")


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
            report = lint_module(sources, module, die)
            print(f"{die.name} {module}: {'clean' if not report else 'warnings'}")
            if report:
                print(report)
                failed = True
    return EXIT_MISMATCH if failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
