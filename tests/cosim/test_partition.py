"""The simulation bridge stands in for the tile and head modules: same ports, same widths, same beats."""

from __future__ import annotations

import inspect
import re

import numpy as np
import pytest

from hardwire.cosim.chip_sim import ChipSim, grid_sources, metal_maps
from hardwire.cosim.partition import (
    BULK_EDGE,
    HELD_SUFFIX,
    WAKE_EVENTS,
    bridge_cpp,
    bridge_verilog,
    part_top,
    part_top_verilog,
    unit_pins,
)
from hardwire.golden.gguf_model import load_model
from hardwire.golden.synth import SynthSpec, write_synthetic
from hardwire.rtl import chip, metal, tile
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


@pytest.mark.nightly
def test_the_partitioned_chip_matches_the_flat_one_beat_for_beat(tmp_path):
    """The bridges evaluate a gated unit only on its wake-up events; the flat Verilator build of the same
    base grid has no such shortcut. Every tap beat (unit, op, block, exponent, words, cycle), every
    token, status and cycle count must be the same, with the corner models of the chip suite too."""
    die = get_die("hw-tiny")
    for spec in (SynthSpec(layers=2, d_model=128, d_ffn=256, heads=2, kv_heads=1, vocab=301, seed=4),
                 SynthSpec(layers=2, d_model=128, d_ffn=256, heads=2, kv_heads=1, vocab=300, seed=11,
                           ffn_quant="q4_0", weight_scale=3000.0)):
        model = load_model(write_synthetic(spec, tmp_path / f"m{spec.seed}.gguf"))
        maps, _ = metal_maps(metal.generate(model, die))
        runs = []
        for partitioned in (True, False):
            sim = ChipSim(die, maps, partitioned=partitioned)
            runs.append([sim.token(t) for t in (3, 257, 42, 11, 7, 7, 100)])
        for part, flat in zip(*runs, strict=True):
            assert (part.status, part.token, part.cycles) == (flat.status, flat.token, flat.cycles)
            assert part.cycle_counts == flat.cycle_counts and part.cycle_counts.total == part.cycles
            assert len(part.beats) == len(flat.beats) > 0
            for a, b in zip(part.beats, flat.beats, strict=True):
                assert (a.unit, a.op, a.block, a.exp, a.cycle) == (b.unit, b.op, b.block, b.exp, b.cycle)
                assert np.array_equal(a.words, b.words)


def test_one_port_table_gives_the_tile_signature_and_the_bridge_pins():
    """rtl/chip.py UNIT_PORTS is the tile's argument list, in order, and the bridge's pins are its ports
    as MyHDL names them (an interface argument `up` -> up_valid, up_data, up_exp)."""
    params = list(inspect.signature(tile.tile.func).parameters)
    assert params[:len(chip.UNIT_PORTS)] == [port.name for port in chip.UNIT_PORTS]
    pins = [p.name for p in unit_pins(get_die("hw-tiny"), False)]
    assert pins[:3] == ["clk", "rst", "start"] and "up_valid" in pins and "ucode_data" in pins
    assert pins.index("up_exp") < pins.index("down_valid") < pins.index("tap_data") == len(pins) - 1


@pytest.mark.parametrize("is_head", [False, True])
def test_the_part_holds_its_bulk_inputs_on_an_edge_the_bridge_gives_only_for_a_new_word(is_head):
    """The unit reads its bulk inputs from the wrapper's registers (so its lanes' copies of them are not logic
    on the part's inputs, which Verilator would run in every evaluation); the bridge copies a word in, and
    toggles the registers' edge, only when it differs from the one held (and once at the start, whatever the
    registers' initial values)."""
    module = chip.HEAD_MODULE if is_head else chip.TILE_MODULE
    pins = unit_pins(get_die("hw-tiny"), is_head)
    bulk = [p.name for p in pins if p.bulk]
    assert sorted(bulk) == ["lora_data", "w_data"]
    top, cpp = part_top_verilog(module, pins), bridge_cpp(module, pins)
    assert f"module {part_top(module)} (" in top and f"input wire {BULK_EDGE}" in top
    assert f"always @(posedge {BULK_EDGE} or negedge {BULK_EDGE}) begin" in top
    for p in pins:
        held = f"{p.name}{HELD_SUFFIX}" if p.bulk else p.name
        assert f"    .{p.name}({held})" in top
    for name in bulk:
        assert f"    {name}{HELD_SUFFIX} <= {name};" in top
        assert f"if (std::memcmp(&m->{name}, s->{name}, sizeof(m->{name})) != 0) {{" in cpp
    assert f"if (fresh) m->{BULK_EDGE} = !m->{BULK_EDGE};" in cpp
    assert cpp.index("if (!rising) {") < cpp.index("bool fresh = !s->loaded;") < cpp.index("m->eval();")
