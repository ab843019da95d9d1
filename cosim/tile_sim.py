"""One layer tile on Verilator, fed golden blocks: the layer-sharded way to verify the chip.

The harness wraps rtl/tile.py with its microcode and weight ROMs (loaded from the
metal's via maps), drives the upstream bus with blocks, and collects every tap
beat and every downstream block as integers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from myhdl import ResetSignal, block

from hardwire.golden.spec import BLOCK
from hardwire.rtl import tile as T
from hardwire.rtl.cells.via_rom import via_map_define, via_rom
from hardwire.rtl.cells.wiring import bit_signal, unsigned_signal
from hardwire.rtl.isa import WORD_BITS as UCODE_BITS
from hardwire.rtl.metal import RomImage
from hardwire.rtl.via_map import write_via_map

from .lanes import pack_lanes, to_signed, to_unsigned, unpack_lanes
from .verilator_build import Simulator, build_myhdl

UCODE_DEPTH = 32


@block
def tile_top(clk, rst, start, busy, up, down, tap, lanes: int, weight_depth: int, scratch_depth: int):
    ucode_addr, ucode_data = unsigned_signal((UCODE_DEPTH - 1).bit_length()), unsigned_signal(UCODE_BITS)
    w_addr, w_data = unsigned_signal((weight_depth - 1).bit_length()), unsigned_signal(lanes * 288)
    ucode = via_rom(clk, ucode_addr, ucode_data, map_name="ucode", depth=UCODE_DEPTH)
    weights = via_rom(clk, w_addr, w_data, map_name="weights", depth=weight_depth)
    core = T.tile(clk, rst, start, busy, up, down, ucode_addr, ucode_data, w_addr, w_data, tap, lanes=lanes,
                  scratch_depth=scratch_depth)
    return ucode, weights, core


@dataclass
class Beat:
    op: int
    block: int
    exp: int
    words: np.ndarray


@dataclass
class TileRun:
    taps: list[Beat] = field(default_factory=list)
    down: list[tuple[np.ndarray, int]] = field(default_factory=list)
    cycles: int = 0


class TileSim:
    def __init__(self, ucode: RomImage, weights: RomImage, lanes: int, scratch_depth: int, work: Path):
        work.mkdir(parents=True, exist_ok=True)
        maps = {via_map_define("ucode"): _write(ucode, work / "ucode.hex", UCODE_DEPTH),
                via_map_define("weights"): _write(weights, work / "weights.hex", weights.depth)}

        def elaborate():
            return tile_top(bit_signal(), ResetSignal(0, active=1, isasync=False), bit_signal(), bit_signal(),
                            T.BlockBus(), T.BlockBus(), T.TapPort(), lanes=lanes, weight_depth=weights.depth,
                            scratch_depth=scratch_depth)

        self.sim: Simulator = build_myhdl(elaborate, f"tile_l{lanes}_s{scratch_depth}_w{weights.depth}",
                                          data_files=maps)
        io = self.sim.io
        io.rst = 1
        self.sim.step(2)
        io.rst = 0

    def run(self, upstream: list[tuple[np.ndarray, int]], max_cycles: int = 100_000) -> TileRun:
        """Start the program, feed `upstream` blocks (ACC words or B16 mantissas, exponent) one per
        cycle once the tile waits in RECV, and clock until the program ends."""
        io, result = self.sim.io, TileRun()
        io.start = 1
        self.sim.step()
        io.start = 0
        pending = list(upstream)
        for cycle in range(max_cycles):
            if pending and cycle >= 4:  # FETCH and DECODE of the RECV are done by then
                words, exp = pending.pop(0)
                io.up_valid, io.up_data, io.up_exp = 1, pack_lanes(words, T.WORD), to_unsigned(exp, T.EXP_BITS)
            else:
                io.up_valid = 0
            self.sim.step()
            self._collect(result)
            if not io.busy and not pending and cycle > 4:
                result.cycles = cycle + 1
                return result
        raise TimeoutError(f"the tile did not finish in {max_cycles} cycles")

    def _collect(self, result: TileRun) -> None:
        io = self.sim.io
        if io.tap_valid:
            result.taps.append(Beat(int(io.tap_op), int(io.tap_block), to_signed(io.tap_exp, T.EXP_BITS),
                                    unpack_lanes(io.tap_data, T.WORD, BLOCK)))
        if io.down_valid:
            result.down.append((unpack_lanes(io.down_data, T.WORD, BLOCK), to_signed(io.down_exp, T.EXP_BITS)))


def _write(image: RomImage, path: Path, depth: int) -> Path:
    words = [int.from_bytes(w.tobytes(), "little") for w in image.words]
    return write_via_map(path, words, image.width, depth)
