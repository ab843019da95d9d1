"""The base grid under Verilator -Wall: the tile, the head and the chip top warn about nothing
(a waiver in the RTL carries its reason beside it)."""

from __future__ import annotations

import re

import pytest

from hardwire.cosim.chip_sim import grid_sources
from hardwire.lint_rtl import MODULES, lint_module
from hardwire.rtl.chip import LANE_MODULE
from hardwire.rtl.die import get_die


@pytest.mark.parametrize("die, module", [*(("hw-tiny", m) for m in MODULES),
                                         *(("hw-tiny-w", m) for m in (*MODULES, LANE_MODULE))])
def test_base_grid_module_is_lint_clean(die, module):
    """The narrow test die, and the wide one, whose units instantiate the lane group module."""
    sources, _ = grid_sources(get_die(die))
    report = lint_module(sources, module, get_die(die))
    assert report == "", f"verilator -Wall on {module} ({die}):\n{report}"


def test_every_waiver_gives_its_reason():
    sources, _ = grid_sources(get_die("hw-tiny"))
    for name, text in sources.items():
        for match in re.finditer(r"// verilator lint_off (\w+)\n(.*)\n", text):
            reason = match.group(2)
            assert reason.startswith("//") and len(reason.strip("/ ")) > 10, \
                f"{name}: lint_off {match.group(1)} without a reason: {reason!r}"
