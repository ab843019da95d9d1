"""The simulation bridge stands in for the tile and head modules: same ports, same widths."""

from __future__ import annotations

import re

import pytest

from hardwire.cosim.chip_sim import grid_sources
from hardwire.cosim.partition import WAKE_EVENTS, bridge_cpp, bridge_verilog, unit_pins
from hardwire.rtl import chip
from hardwire.rtl.die import get_die

PORT = re.compile(r"^(input|output)\s+(?:signed\s+)?(?:\[(\d+):0\]\s+)?(\w+);", re.MULTILINE)


def declared_ports(verilog: str) -> dict[str, tuple[bool, int]]:
    return {name: (direction == "input", int(msb) + 1 if msb else 1)
            for direction, msb, name in PORT.findall(verilog)}


@pytest.mark.parametrize("module, is_head", [(chip.TILE_MODULE, False), (chip.HEAD_MODULE, True)])
def test_bridge_has_the_ports_of_the_converted_module(module, is_head):
    die = get_die("hw-tiny")
    sources, _ = grid_sources(die)
    converted = declared_ports(sources[f"{module}.v"])
    pins = unit_pins(die, is_head)
    assert {p.name: (p.is_input, p.width) for p in pins} == converted
    bridge, cpp = bridge_verilog(module, pins), bridge_cpp(module, pins)
    for p in pins:  # every pin declared with its direction and width, and passed to the part
        width = f"[{p.width - 1}:0] " if p.width > 1 else ""
        assert f"{'input wire' if p.is_input else 'output reg'} {width}{p.name}" in bridge
        assert f"m->{p.name}" in cpp


def test_bridge_wakes_on_the_inputs_a_gated_unit_can_see_change():
    pins = {p.name for p in unit_pins(get_die("hw-tiny"), False)}
    assert set(WAKE_EVENTS) <= pins
    text = bridge_verilog(chip.TILE_MODULE, unit_pins(get_die("hw-tiny"), False))
    assert "always @(posedge clk)" in text and "always @(negedge clk)" in text
    for name in WAKE_EVENTS:
        assert f"posedge {name} or negedge {name}" in text
