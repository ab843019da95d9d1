"""The converted Verilog: lint-clean under Verilator -Wall, synthesizable style, deterministic."""

from __future__ import annotations

import hashlib
import inspect
import os
import re
import subprocess
import sys

import pytest

from hardwire.cosim.cells import block_mac_top, requant_top, via_rom_top
from hardwire.cosim.verilator_build import lint
from hardwire.rtl.cells.via_rom import via_map_define
from hardwire.rtl.verilog import _InspectWithQuickStack, to_verilog
from hardwire.rtl.via_map import write_via_map

DESIGNS = {
    "requant_b8_w48": requant_top(8, 48),
    "requant_b16_w48": requant_top(16, 48),
    "requant_b8_w64": requant_top(8, 64),
    "requant_b16_w31": requant_top(16, 31),
    "block_mac_a16": block_mac_top(16),
    "block_mac_a8": block_mac_top(8),
}


@pytest.mark.parametrize("name", sorted(DESIGNS))
def test_cells_are_lint_clean_and_have_no_initial_blocks(name):
    verilog = to_verilog(DESIGNS[name], name)
    assert lint({f"{name}.v": verilog}, name) == ""
    assert not re.search(r"\binitial\b", verilog), "only memory macros may hold initial blocks"


@pytest.mark.parametrize("width, depth", [(72, 300), (16, 1024)])
def test_via_rom_is_lint_clean_and_loads_from_its_define(width, depth):
    verilog = to_verilog(via_rom_top(width, depth, "lint"), "rom")
    assert lint({"rom.v": verilog}, "rom", defines={via_map_define("lint"): '"any.vmap"'}) == ""
    assert lint({"rom.v": verilog}, "rom") == ""  # the run-time branch: +hw_via_maps=<dir>
    assert len(re.findall(r"\binitial\b", verilog)) == 2  # one per branch of the `ifdef: one load
    assert f"hw_via_map_load(`{via_map_define('lint')}," in verilog and '"/lint.vmap"' in verilog
    assert "$readmem" not in verilog, "the macro loads its binary via map, not hex text"


def test_via_rom_verilog_does_not_depend_on_the_contents(tmp_path):
    """Base grid versus metal: the contents live in the via map, never in the Verilog."""
    a = write_via_map(tmp_path / "a.vmap", range(64), 16)
    b = write_via_map(tmp_path / "b.vmap", reversed(range(64)), 16)
    assert to_verilog(via_rom_top(16, 64, "m", a), "rom") == to_verilog(via_rom_top(16, 64, "m", b), "rom")


HASH_OF_BLOCK_MAC = (
    "import hashlib; from hardwire.cosim.cells import block_mac_top; from hardwire.rtl.verilog import to_verilog; "
    "print(hashlib.sha256(to_verilog(block_mac_top(), 'block_mac').encode()).hexdigest())"
)


def test_conversion_is_byte_identical_across_processes_and_repeats():
    """MyHDL orders some lists by hash; the build cache and the base-grid rule need fixed bytes."""
    here = hashlib.sha256(to_verilog(block_mac_top(), "block_mac").encode()).hexdigest()
    again = hashlib.sha256(to_verilog(block_mac_top(), "block_mac").encode()).hexdigest()
    others = {subprocess.run([sys.executable, "-c", HASH_OF_BLOCK_MAC], capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONHASHSEED": seed}).stdout.strip() for seed in ("1", "2")}
    assert {here, again} | others == {here}


def test_the_quick_stack_gives_myhdl_the_frames_and_names_inspect_does():
    """MyHDL reads each stack record's frame and function name: the quick stack must give both, in
    inspect.stack()'s order, from the caller's frame outwards."""
    def caller():
        return inspect.stack(), _InspectWithQuickStack.stack()

    full, quick = caller()
    assert [(r.frame, r.function) for r in quick] == [(r.frame, r.function) for r in full]
    assert quick[0].function == "caller" and _InspectWithQuickStack().getsourcefile is inspect.getsourcefile


def test_process_variables_are_automatic_and_module_registers_are_not():
    text = to_verilog(block_mac_top(), "block_mac")
    assert re.search(r"^    automatic reg \[32-1:0\] u;$", text, re.MULTILINE)
    assert not re.search(r"^ +reg ", text, re.MULTILINE)  # every process variable
    assert re.search(r"^reg signed \[25:0\] quad_product0_total;$", text, re.MULTILINE)  # a register stays static
