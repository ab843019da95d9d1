"""One layer tile on Verilator, fed golden blocks: the layer-sharded way to verify the chip.

The harness wraps rtl/tile.py with its ROM macros (microcode, weights, consts and the
tables), loaded from the metal's via maps, drives the upstream bus with blocks, and
collects every tap beat and every downstream block as integers.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from myhdl import always_comb, block

from hardwire.golden.models import cache_root
from hardwire.golden.spec import BLOCK
from hardwire.rtl import tile as T
from hardwire.rtl.bus import EXP_BITS, WORD
from hardwire.rtl.chip import (
    UNIT_PORTS,
    AdapterAddress,
    LoraPort,
    adapter_address,
    lora_address_bits,
    rom_depths,
    rom_map_names,
    tile_adapter,
    unit_ports,
    unit_roms,
)
from hardwire.rtl.die import Die
from hardwire.rtl.lanes import LANE_MODULE, lane_group_verilog
from hardwire.rtl.metal import RomImage
from hardwire.rtl.units import attention
from hardwire.rtl.verilog import to_verilog
from hardwire.rtl.via_map import via_map_file, write_via_map_rows

from .chip_sim import InterfacePins, rtl_digest
from .lanes import pack_lanes, to_signed, to_unsigned, unpack_lanes
from .verilator_build import Simulator, build, publish_once

UCODE_DEPTH = 64
ROMS = tuple(port.rom for port in UNIT_PORTS if port.rom)
# tile_top's ports: the ROMs are inside, and so are the LoRA SRAM and the adapter flags, written through
# the harness's `load` port as the chip's adapter-load port writes them (its tile field is ignored)
HARNESS_PORTS = tuple(port.name for port in UNIT_PORTS if not port.rom and not port.adapter)
MAP_PREFIX = "tile"  # the tile's own ROMs load tile_ucode.vmap, ...; the tables keep their names
HARNESS_FORMAT = "3"  # bump when what a cached harness directory holds changes (2: a manifest)


@block
def tile_top(clk, rst, start, entry, busy, clock_on, pos, token, token_out, token_valid, up, down, perf, tap, load,
             die: Die, depths: dict, scratch_depth: int, max_blocks: int):
    """The tile with its ROM macros, its LoRA SRAM and adapter flags: the tile's ports (rtl/chip.py
    UNIT_PORTS) but its ROM and LoRA ports, and `load`, the chip's adapter-load port (LoraPort)."""
    own = dict(locals())
    p = unit_ports(die, head=False)
    for name in HARNESS_PORTS:
        setattr(p, name, own[name])
    core = T.tile(**p.args(), lanes=die.lanes, scratch_depth=scratch_depth, max_blocks=max_blocks,
                  attn_limits=attention.AttentionLimits.from_die(die))
    split = AdapterAddress(die)
    return (unit_roms(p, MAP_PREFIX, depths), core, harness_ready(busy, load), adapter_address(load, split),
            tile_adapter(clk, load, split, HARNESS_TILE, p, die))


HARNESS_TILE = 0  # the tile field of the harness's adapter-load addresses


@block
def harness_ready(busy, load):
    @always_comb
    def ready():
        load.ready.next = not busy

    return ready


@dataclass
class Beat:
    op: int
    block: int
    exp: int
    words: np.ndarray
    cycle: int = 0


@dataclass
class TileRun:
    taps: list[Beat] = field(default_factory=list)
    down: list[tuple[np.ndarray, int]] = field(default_factory=list)
    cycles: int = 0


class TileSim:
    """images: RomImage per name in ROMS (the metal's tile ROMs and tables, plus a microcode)."""

    def __init__(self, images: dict[str, RomImage], die: Die, scratch_depth: int, work: Path, max_blocks: int = 16):
        work.mkdir(parents=True, exist_ok=True)
        depths = rom_depths(die, head=False)  # the die's macros: one build serves every layer and model
        maps = rom_map_names(MAP_PREFIX)
        for name in ROMS:
            _write(images[name], work / via_map_file(maps[name]), depths[name])
        top, verilog = harness_verilog(die, scratch_depth, max_blocks)
        self.sim: Simulator = build({f"{top}.v": verilog, **lane_sources(die, scratch_depth, max_blocks)}, top,
                                    via_maps=work)
        ports = unit_ports(die, head=False)
        self.up, self.down, self.tap = (InterfacePins(self.sim.io, ports, name) for name in ("up", "down", "tap"))
        io = self.sim.io
        io.rst = 1
        self.sim.step(2)
        io.rst = 0
        self.die = die

    def load_adapter(self, commands: np.ndarray) -> int:
        """Stream adapter-load commands (rtl/adapter_image.py) for this tile's layer: the tile field of
        each address is replaced by the harness's own. Returns the cycles."""
        io = self.sim.io
        _, word_bits, lane_bits = lora_address_bits(self.die)
        low = (1 << (word_bits + lane_bits)) - 1
        for row in np.asarray(commands, np.uint32):
            io.load_cmd, io.load_addr = int(row[0]), int(row[1]) & low
            io.load_data = int.from_bytes(row[2:].tobytes(), "little")
            io.load_valid = 1
            self.sim.step()
        io.load_valid = 0
        return len(commands)

    def run(self, upstream: list[tuple[np.ndarray, int]], position: int = 0, entry: int = 0,
            max_cycles: int = 200_000) -> TileRun:
        """Run the program from microcode address `entry` for token `position`, feed `upstream`
        blocks (words, exponent) one per cycle once the tile waits in its first RECV, and clock
        until the program ends."""
        io, result = self.sim.io, TileRun()
        io.pos, io.entry = position, entry
        io.start = 1
        self.sim.step()
        io.start = 0
        pending = list(upstream)
        for cycle in range(max_cycles):
            if pending and cycle >= 4:  # FETCH and DECODE of the first RECV are done by then
                words, exp = pending.pop(0)
                self.up.valid, self.up.data, self.up.exp = 1, pack_lanes(words, WORD), to_unsigned(exp, EXP_BITS)
            else:
                self.up.valid = 0
            self.sim.step()
            self._collect(result, cycle)
            if not io.busy and not pending and cycle > 4:
                result.cycles = cycle + 1
                return result
        raise TimeoutError(f"the tile did not finish in {max_cycles} cycles")

    def _collect(self, result: TileRun, cycle: int) -> None:
        tap, down = self.tap, self.down
        if tap.valid:
            result.taps.append(Beat(int(tap.op), int(tap.block), to_signed(tap.exp, EXP_BITS),
                                    unpack_lanes(tap.data, WORD, BLOCK), cycle))
        if down.valid:
            result.down.append((unpack_lanes(down.data, WORD, BLOCK), to_signed(down.exp, EXP_BITS)))


def harness_verilog(die: Die, scratch_depth: int, max_blocks: int) -> tuple[str, str]:
    """(module name, Verilog) of the tile harness, converted once per die, sizes and RTL and then
    read from cache_root()/tiles: a MyHDL conversion of a large tile takes tens of seconds, and
    two to three times that inside a pytest(-xdist) process, paid by every layer-sharded test."""
    top, _ = harness_key(die, scratch_depth, max_blocks)
    directory = _harness_directory(die, scratch_depth, max_blocks)
    return top, (directory / f"{top}.v").read_text()


def lane_sources(die: Die, scratch_depth: int, max_blocks: int) -> dict[str, str]:
    """The lane group module a wide die's tile instantiates (cached with the harness); none on a narrow die."""
    if not die.wide:
        return {}
    name = f"{LANE_MODULE}.v"
    return {name: (_harness_directory(die, scratch_depth, max_blocks) / name).read_text()}


def _harness_directory(die: Die, scratch_depth: int, max_blocks: int) -> Path:
    top, key = harness_key(die, scratch_depth, max_blocks)

    def convert(staging: Path) -> None:
        (staging / f"{top}.v").write_text(to_verilog(_elaborator(die, scratch_depth, max_blocks), top))
        if die.wide:
            (staging / f"{LANE_MODULE}.v").write_text(lane_group_verilog())

    directory, _ = publish_once(cache_root() / "tiles", key, convert)
    return directory


def harness_key(die: Die, scratch_depth: int, max_blocks: int) -> tuple[str, str]:
    """(module name, name of its entry in cache_root()/tiles) of the tile harness."""
    top = f"tile_{die.name.replace('-', '_')}_s{scratch_depth}"
    identity = {"format": HARNESS_FORMAT, "top": top, "die": die.as_dict(), "scratch_depth": scratch_depth,
                "max_blocks": max_blocks, "rtl": rtl_digest(),
                "harness": hashlib.sha256(Path(__file__).read_bytes()).hexdigest()}
    return top, hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]


def _elaborator(die: Die, scratch_depth: int, max_blocks: int):
    depths = rom_depths(die, head=False)

    def elaborate():
        ports = unit_ports(die, head=False)
        return tile_top(**{name: getattr(ports, name) for name in HARNESS_PORTS}, load=LoraPort(die), die=die,
                        depths=depths, scratch_depth=scratch_depth, max_blocks=max_blocks)
    return elaborate


def _write(image: RomImage, path: Path, depth: int) -> Path:
    return write_via_map_rows(path, image.words, image.width, depth)
