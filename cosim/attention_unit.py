"""Harness for the attention unit: the unit plus an EXP2_LUT via ROM as one Verilator top,
driven with golden-shaped B16 blocks (numpy in, numpy out).

The table is never inlined: it is written as a via map from spec.exp2_lut() and loaded by
the ROM macro, exactly as the tile connects it. Output blocks are collected with the native
multi-cycle run, stopping on every out_valid (the build's `done` port is out_valid).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from myhdl import block

from hardwire.golden import spec
from hardwire.golden.errors import HardwireError
from hardwire.golden.spec import BLOCK
from hardwire.rtl.cells.via_rom import via_map_define, via_rom
from hardwire.rtl.cells.wiring import bit_signal, signed_signal, unsigned_signal
from hardwire.rtl.units import attention as unit
from hardwire.rtl.via_map import write_via_map

from .cells import sync_reset
from .lanes import pack_lanes, to_signed, to_unsigned, unpack_lanes
from .verilator_build import build_myhdl

EXP2_MAP = "exp2_lut"
EXP2_DEPTH = 1 << unit.LUT_ADDR_BITS
MANTISSA_LIMIT = spec.ACT_MAX  # B16 mantissas lie in [-32767, 32767]


@block
def attention_harness(clk, rst, start_kv, start_attn, pos, in_valid, in_data, in_exp,
                      out_valid, out_data, out_exp, done, busy, refused, geometry: unit.AttentionGeometry):
    """The unit with its EXP2_LUT read port on a via ROM (READ_LATENCY 1)."""
    lut_addr, lut_data = unsigned_signal(unit.LUT_ADDR_BITS), unsigned_signal(unit.LUT_DATA_BITS)
    attention = unit.attention_unit(clk, rst, start_kv, start_attn, pos, in_valid, in_data, in_exp,
                                    out_valid, out_data, out_exp, done, busy, refused, lut_addr, lut_data,
                                    geometry.kv_tokens, geometry.kv_heads, geometry.head_dim, geometry.heads)
    table = via_rom(clk, lut_addr, lut_data, map_name=EXP2_MAP, depth=EXP2_DEPTH)
    return attention, table


def write_exp2_map(directory: Path) -> Path:
    return write_via_map(Path(directory) / "exp2_lut.hex", spec.exp2_lut(), unit.LUT_DATA_BITS, EXP2_DEPTH)


@dataclass
class AttendResult:
    mantissas: np.ndarray  # (heads * head_dim,)
    exponents: np.ndarray  # (heads * head_dim / 32,)
    cycles: int  # from the start_attn cycle to the done cycle, inclusive


class AttentionUnitSim:
    """One built unit of a geometry; its KV SRAM persists across calls (like the chip's)."""

    def __init__(self, geometry: unit.AttentionGeometry, work_dir: Path):
        self.geo = geometry
        g = geometry
        self.top = f"attention_t{g.kv_tokens}_kv{g.kv_heads}_d{g.head_dim}_h{g.heads}"
        self.sim = build_myhdl(self.elaborate, self.top, done="out_valid",
                               data_files={via_map_define(EXP2_MAP): write_exp2_map(work_dir)})
        self.io = self.sim.io
        self.reset()

    def elaborate(self):
        return attention_harness(bit_signal(), sync_reset(), bit_signal(), bit_signal(),
                                 unsigned_signal(self.geo.position_bits), bit_signal(),
                                 unsigned_signal(BLOCK * unit.LANE_BITS), signed_signal(unit.EXP_BITS),
                                 bit_signal(), unsigned_signal(BLOCK * unit.LANE_BITS), signed_signal(unit.EXP_BITS),
                                 bit_signal(), bit_signal(), bit_signal(), geometry=self.geo)

    def reset(self) -> None:
        io = self.io
        io.start_kv = io.start_attn = io.in_valid = 0
        io.rst = 1
        self.sim.step(2)
        io.rst = 0

    # --- commands -------------------------------------------------------------------------------

    def write_kv(self, position: int, k: np.ndarray, ke: np.ndarray, v: np.ndarray, ve: np.ndarray,
                 gap: int = 0) -> None:
        """K (kv_heads*head_dim,) with exponents ke (kv_blocks,), likewise V, at `position`;
        `gap` idle cycles between beats (the sequencer may pace them)."""
        g = self.geo
        ve = np.asarray(ve, np.int64)
        if ve.min(initial=0) < unit.VALUE_EXP_MIN or ve.max(initial=0) > unit.VALUE_EXP_MAX:
            raise HardwireError(f"V exponents must lie in [{unit.VALUE_EXP_MIN}, {unit.VALUE_EXP_MAX}] "
                                f"(values come from rq(acc, -24, 16)); got {ve.min()}..{ve.max()}")
        blocks = self._blocks(k, ke, g.kv_blocks, "K") + self._blocks(v, ve, g.kv_blocks, "V")
        self._start("start_kv", position)
        self._beats(blocks, gap, done_after=True)
        if not self.io.done:
            raise HardwireError(f"attention unit: no done after the KV write of position {position}")

    def attend(self, position: int, q: np.ndarray, qe: np.ndarray, gap: int = 0) -> AttendResult:
        """Q (heads*head_dim,) B16 after RoPE against keys 0..position, `gap` idle cycles
        between Q beats; returns the unit's output blocks and the cycles it took."""
        g = self.geo
        cycles = self.send_query(position, q, qe, gap)
        budget = cycles + 2 * g.attend_cycles(position + 1)
        mantissas, exponents = [], []
        for _ in range(g.heads * g.head_blocks):
            ran = self.sim.run(budget - cycles, until_done=True)
            cycles += ran
            if not self.io.out_valid:
                raise HardwireError(f"attention unit: {len(exponents)} output blocks in {cycles} cycles, "
                                    f"expected {g.heads * g.head_blocks}")
            mantissas.append(unpack_lanes(self.io.out_data, unit.LANE_BITS, BLOCK))
            exponents.append(to_signed(self.io.out_exp, unit.EXP_BITS))
        self.sim.step()
        cycles += 1
        if not self.io.done:
            raise HardwireError("attention unit: done did not follow the last output block")
        return AttendResult(np.concatenate(mantissas), np.array(exponents, np.int64), cycles)

    def send_query(self, position: int, q: np.ndarray, qe: np.ndarray, gap: int = 0) -> int:
        """start_attn and the Q beats only (the unit then runs by itself); returns the cycles."""
        blocks = self._blocks(q, qe, self.geo.heads * self.geo.head_blocks, "Q")
        self._start("start_attn", position)
        return 1 + self._beats(blocks, gap)

    def start_refused(self, command: str, position: int) -> bool:
        """Pulse a start ("start_kv" or "start_attn"); True if the unit refused it."""
        self._start(command, position)
        return bool(self.io.refused)

    def both_starts_refused(self, position: int) -> bool:
        io = self.io
        io.pos = position
        io.start_kv = io.start_attn = 1
        self.sim.step()
        io.start_kv = io.start_attn = 0
        return bool(io.refused) and not io.busy

    # --- beats ----------------------------------------------------------------------------------

    def _start(self, command: str, position: int) -> None:
        if not 0 <= position < 1 << self.geo.position_bits:
            raise HardwireError(f"position {position} does not fit the {self.geo.position_bits}-bit port")
        io = self.io
        io.pos = position
        setattr(io, command, 1)
        self.sim.step()
        setattr(io, command, 0)  # busy or refused is visible now; beats may follow at once

    def _beats(self, blocks, gap: int, done_after: bool = False) -> int:
        """One beat per cycle, `gap` idle cycles after each but the last; with done_after the
        unit's done is visible once they return."""
        io = self.io
        for i, (mantissas, exponent) in enumerate(blocks):
            io.in_data = pack_lanes(mantissas, unit.LANE_BITS)
            io.in_exp = to_unsigned(exponent, unit.EXP_BITS)
            io.in_valid = 1
            self.sim.step()
            io.in_valid = 0
            if gap and i < len(blocks) - 1:
                self.sim.step(gap)
        return len(blocks) + gap * (len(blocks) - 1)

    @staticmethod
    def _blocks(mantissas: np.ndarray, exponents: np.ndarray, count: int, what: str) -> list:
        mantissas = np.asarray(mantissas, np.int64).reshape(-1)
        exponents = np.asarray(exponents, np.int64).reshape(-1)
        if mantissas.size != count * BLOCK or exponents.size != count:
            raise HardwireError(f"{what} must be {count} blocks of {BLOCK} with one exponent each, "
                                f"not {mantissas.size} values and {exponents.size} exponents")
        if np.abs(mantissas).max(initial=0) > MANTISSA_LIMIT:
            raise HardwireError(f"{what} mantissas must lie in [-{MANTISSA_LIMIT}, {MANTISSA_LIMIT}] (B16)")
        half = 1 << (unit.EXP_BITS - 1)
        if exponents.min(initial=0) < -half or exponents.max(initial=0) >= half:
            raise HardwireError(f"{what} exponents must fit the {unit.EXP_BITS}-bit exponent port")
        return list(zip(mantissas.reshape(count, BLOCK), exponents, strict=True))
