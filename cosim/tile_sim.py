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
from myhdl import ResetSignal, block

from hardwire.golden.models import cache_root
from hardwire.golden.spec import BLOCK
from hardwire.rtl import tile as T
from hardwire.rtl.bus import EXP_BITS, WORD, BlockBus, RomPort, TapPort
from hardwire.rtl.cells.lut_rom import lut_address_bits, lut_rom
from hardwire.rtl.cells.via_rom import via_rom
from hardwire.rtl.cells.wiring import bit_signal, unsigned_signal
from hardwire.rtl.chip import rom_depths
from hardwire.rtl.die import Die
from hardwire.rtl.isa import WORD_BITS as UCODE_BITS
from hardwire.rtl.metal import RomImage
from hardwire.rtl.units import attention, head, vector
from hardwire.rtl.verilog import to_verilog
from hardwire.rtl.via_map import write_via_map_rows

from .chip_sim import rtl_digest
from .lanes import pack_lanes, to_signed, to_unsigned, unpack_lanes
from .verilator_build import Simulator, build, publish_once

UCODE_DEPTH = 64
ROMS = ("ucode", "weights", "consts", "lut_rsqrt", "lut_sigmoid", "lut_rope", "lut_exp2")
HARNESS_FORMAT = "1"  # bump when what a cached harness directory holds changes


@block
def tile_top(clk, rst, start, entry, busy, clock_on, pos, token, token_out, token_valid, up, down, tap, die: Die,
             depths: dict, scratch_depth: int, max_blocks: int):
    ucode_addr, ucode_data = unsigned_signal(lut_address_bits(depths["ucode"])), unsigned_signal(UCODE_BITS)
    w_addr, w_data = unsigned_signal(lut_address_bits(depths["weights"])), unsigned_signal(die.tile_rom_width)
    consts = RomPort(lut_address_bits(depths["consts"]), vector.GAIN_WIDTH)
    rsqrt = RomPort(vector.RSQRT_ADDR_BITS, vector.RSQRT_WIDTH)
    sigmoid = RomPort(BLOCK * vector.SIGMOID_ADDR_BITS, BLOCK * vector.SIGMOID_WIDTH)
    rope = RomPort(lut_address_bits(die.kv_tokens) + die.head_block_bits, vector.ROPE_WIDTH)
    exp2 = RomPort(attention.LUT_ADDR_BITS, attention.LUT_DATA_BITS, enable=False)
    roms = [
        via_rom(clk, ucode_addr, ucode_data, map_name="ucode", depth=depths["ucode"]),
        via_rom(clk, w_addr, w_data, map_name="weights", depth=depths["weights"]),
        lut_rom(clk, consts.en, consts.addr, consts.data, "consts", depths["consts"]),
        lut_rom(clk, rsqrt.en, rsqrt.addr, rsqrt.data, "lut_rsqrt", depths["lut_rsqrt"]),
        lut_rom(clk, sigmoid.en, sigmoid.addr, sigmoid.data, "lut_sigmoid", depths["lut_sigmoid"], ports=BLOCK),
        lut_rom(clk, rope.en, rope.addr, rope.data, "lut_rope", depths["lut_rope"]),
        via_rom(clk, exp2.addr, exp2.data, map_name="lut_exp2", depth=depths["lut_exp2"]),
    ]
    core = T.tile(clk, rst, start, entry, busy, clock_on, pos, token, token_out, token_valid, up, down, ucode_addr,
                  ucode_data, w_addr, w_data, consts, rsqrt,
                  sigmoid, rope, exp2, tap, lanes=die.lanes, scratch_depth=scratch_depth, max_blocks=max_blocks,
                  attn_limits=attention.AttentionLimits.from_die(die))
    return roms, core


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
        for name in ROMS:
            _write(images[name], work / f"{name}.hex", depths[name])
        top, verilog = harness_verilog(die, scratch_depth, max_blocks)
        self.sim: Simulator = build({f"{top}.v": verilog}, top, via_maps=work)
        io = self.sim.io
        io.rst = 1
        self.sim.step(2)
        io.rst = 0

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
                io.up_valid, io.up_data, io.up_exp = 1, pack_lanes(words, WORD), to_unsigned(exp, EXP_BITS)
            else:
                io.up_valid = 0
            self.sim.step()
            self._collect(result, cycle)
            if not io.busy and not pending and cycle > 4:
                result.cycles = cycle + 1
                return result
        raise TimeoutError(f"the tile did not finish in {max_cycles} cycles")

    def _collect(self, result: TileRun, cycle: int) -> None:
        io = self.sim.io
        if io.tap_valid:
            result.taps.append(Beat(int(io.tap_op), int(io.tap_block), to_signed(io.tap_exp, EXP_BITS),
                                    unpack_lanes(io.tap_data, WORD, BLOCK), cycle))
        if io.down_valid:
            result.down.append((unpack_lanes(io.down_data, WORD, BLOCK), to_signed(io.down_exp, EXP_BITS)))


def harness_verilog(die: Die, scratch_depth: int, max_blocks: int) -> tuple[str, str]:
    """(module name, Verilog) of the tile harness, converted once per die, sizes and RTL and then
    read from cache_root()/tiles: a MyHDL conversion of a large tile takes tens of seconds, and
    two to three times that inside a pytest(-xdist) process, paid by every layer-sharded test."""
    top = f"tile_{die.name.replace('-', '_')}_s{scratch_depth}"
    identity = {"format": HARNESS_FORMAT, "top": top, "die": die.as_dict(), "scratch_depth": scratch_depth,
                "max_blocks": max_blocks, "rtl": rtl_digest(),
                "harness": hashlib.sha256(Path(__file__).read_bytes()).hexdigest()}
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]

    def convert(staging: Path) -> None:
        (staging / f"{top}.v").write_text(to_verilog(_elaborator(die, scratch_depth, max_blocks), top))

    directory, _ = publish_once(cache_root() / "tiles", key, convert)
    return top, (directory / f"{top}.v").read_text()


def _elaborator(die: Die, scratch_depth: int, max_blocks: int):
    depths = rom_depths(die, head=False)
    pos_bits = attention.AttentionLimits.from_die(die).position_bits

    def elaborate():
        return tile_top(bit_signal(), ResetSignal(0, active=1, isasync=False), bit_signal(),
                        unsigned_signal(lut_address_bits(UCODE_DEPTH)), bit_signal(), bit_signal(),
                        unsigned_signal(pos_bits), unsigned_signal(head.ROW_BITS), unsigned_signal(head.ROW_BITS),
                        bit_signal(), BlockBus(), BlockBus(), TapPort(), die=die,
                        depths=depths, scratch_depth=scratch_depth, max_blocks=max_blocks)
    return elaborate


def _write(image: RomImage, path: Path, depth: int) -> Path:
    return write_via_map_rows(path, image.words, image.width, depth)
