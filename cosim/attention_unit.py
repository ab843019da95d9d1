"""Harness for the attention unit: the unit plus an EXP2_LUT via ROM as one Verilator top,
driven with golden-shaped B16 blocks (numpy in, numpy out).

A build is one die (`AttentionLimits`); the model's shape (`AttentionGeometry`) is given
per command and driven on the unit's geometry ports with each start, so one build runs any
shape the die holds and may switch between them from one command to the next.

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
from hardwire.rtl.bus import DATA_BITS, EXP_BITS, WORD, BlockBus, RomPort
from hardwire.rtl.cells.via_rom import multi_port_via_rom, via_map_define, via_rom
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
def attention_harness(clk, rst, start_kv, start_attn, pos, heads, kv_heads, head_blocks, attn_scale,
                      in_valid, in_data, in_exp, out, done, busy, refused, limits: unit.AttentionLimits):
    """The unit with its EXP2_LUT read ports (one per engine) on a via ROM (READ_LATENCY 1)."""
    engines = limits.engines
    lut = RomPort(engines * unit.LUT_ADDR_BITS, engines * unit.LUT_DATA_BITS, enable=False)
    attention = unit.attention_unit(clk, rst, start_kv, start_attn, pos, heads, kv_heads, head_blocks, attn_scale,
                                    in_valid, in_data, in_exp, out, done, busy, refused, lut, limits)
    if engines == 1:
        table = via_rom(clk, lut.addr, lut.data, map_name=EXP2_MAP, depth=EXP2_DEPTH)
    else:
        table = multi_port_via_rom(clk, lut.addr, lut.data, map_name=EXP2_MAP, depth=EXP2_DEPTH, ports=engines)
    return attention, table


def write_exp2_map(directory: Path) -> Path:
    return write_via_map(Path(directory) / "exp2_lut.vmap", spec.exp2_lut(), unit.LUT_DATA_BITS, EXP2_DEPTH)


@dataclass
class AttendResult:
    mantissas: np.ndarray  # (heads * head_dim,)
    exponents: np.ndarray  # (heads * head_dim / 32,)
    cycles: int  # from the start_attn cycle to the done cycle, inclusive


def harness_elaborator(limits: unit.AttentionLimits):
    """A callable that elaborates the harness of one die (for to_verilog and the build)."""

    def elaborate():
        return attention_harness(bit_signal(), sync_reset(), bit_signal(), bit_signal(),
                                 unsigned_signal(limits.position_bits), unsigned_signal(limits.heads_bits),
                                 unsigned_signal(limits.heads_bits), unsigned_signal(limits.head_blocks_bits),
                                 unsigned_signal(unit.ATTN_SCALE_BITS), bit_signal(), unsigned_signal(DATA_BITS),
                                 signed_signal(EXP_BITS), BlockBus(), bit_signal(), bit_signal(), bit_signal(),
                                 limits=limits)

    return elaborate


def harness_top(limits: unit.AttentionLimits) -> str:
    return f"attention_{limits.tag()}"


class AttentionUnitSim:
    """One built unit of a die; its KV SRAM persists across calls (like the chip's). Every
    command takes the model geometry it runs with."""

    def __init__(self, limits: unit.AttentionLimits, work_dir: Path):
        self.limits = limits
        self.top = harness_top(limits)
        self.sim = build_myhdl(harness_elaborator(limits), self.top, done="out_valid",
                               data_files={via_map_define(EXP2_MAP): write_exp2_map(work_dir)})
        self.io = self.sim.io
        self.reset()

    def reset(self) -> None:
        io = self.io
        io.start_kv = io.start_attn = io.in_valid = 0
        io.rst = 1
        self.sim.step(2)
        io.rst = 0

    # --- commands -------------------------------------------------------------------------------

    def write_kv(self, geo: unit.AttentionGeometry, position: int, k: np.ndarray, ke: np.ndarray,
                 v: np.ndarray, ve: np.ndarray, gap: int = 0) -> int:
        """K (kv_heads*head_dim,) with exponents ke (kv_blocks,), likewise V, at `position`;
        `gap` idle cycles between beats (the sequencer may pace them). Returns the cycles
        from start_kv to done, inclusive (done is checked in the cycle after the last beat)."""
        geo.check_fits(self.limits)
        ve = np.asarray(ve, np.int64)
        if ve.min(initial=0) < unit.VALUE_EXP_MIN or ve.max(initial=0) > unit.VALUE_EXP_MAX:
            raise HardwireError(f"V exponents must lie in [{unit.VALUE_EXP_MIN}, {unit.VALUE_EXP_MAX}] "
                                f"(values come from rq(acc, -24, 16)); got {ve.min()}..{ve.max()}")
        blocks = self._blocks(k, ke, geo.kv_blocks, "K") + self._blocks(v, ve, geo.kv_blocks, "V")
        self._start("start_kv", position, geo)
        cycles = 1 + self._beats(blocks, gap, done_after=True)
        if not self.io.done:
            raise HardwireError(f"attention unit: no done after the KV write of position {position}")
        return cycles

    def attend(self, geo: unit.AttentionGeometry, position: int, q: np.ndarray, qe: np.ndarray,
               gap: int = 0) -> AttendResult:
        """Q (heads*head_dim,) B16 after RoPE against keys 0..position, `gap` idle cycles
        between Q beats; returns the unit's output blocks and the cycles it took."""
        cycles = self.send_query(geo, position, q, qe, gap)
        budget = cycles + 2 * geo.attend_cycles(position + 1, self.limits.engines)
        mantissas, exponents = [], []
        for _ in range(geo.q_blocks):
            ran = self.sim.run(budget - cycles, until_done=True)
            cycles += ran
            if not self.io.out_valid:
                raise HardwireError(f"attention unit: {len(exponents)} output blocks in {cycles} cycles, "
                                    f"expected {geo.q_blocks}")
            mantissas.append(unpack_lanes(self.io.out_data, WORD, BLOCK))
            exponents.append(to_signed(self.io.out_exp, EXP_BITS))
        self.sim.step()
        cycles += 1
        if not self.io.done:
            raise HardwireError("attention unit: done did not follow the last output block")
        return AttendResult(np.concatenate(mantissas), np.array(exponents, np.int64), cycles)

    def send_query(self, geo: unit.AttentionGeometry, position: int, q: np.ndarray, qe: np.ndarray,
                   gap: int = 0) -> int:
        """start_attn and the Q beats only (the unit then runs by itself); returns the cycles."""
        geo.check_fits(self.limits)
        blocks = self._blocks(q, qe, geo.q_blocks, "Q")
        self._start("start_attn", position, geo)
        return 1 + self._beats(blocks, gap)

    def start_refused(self, command: str, position: int, geo: unit.AttentionGeometry, **raw) -> bool:
        """Pulse a start ("start_kv" or "start_attn") with `geo` on the geometry ports, or
        with the raw port values given (heads=, kv_heads=, head_blocks=: shapes no
        AttentionGeometry allows); True if the unit refused it."""
        self._start(command, position, geo, **raw)
        return bool(self.io.refused)

    def both_starts_refused(self, position: int, geo: unit.AttentionGeometry) -> bool:
        io = self.io
        self._drive_geometry(geo)
        io.pos = position
        io.start_kv = io.start_attn = 1
        self.sim.step()
        io.start_kv = io.start_attn = 0
        return bool(io.refused) and not io.busy

    # --- beats ----------------------------------------------------------------------------------

    def _drive_geometry(self, geo: unit.AttentionGeometry, **raw) -> None:
        """The geometry ports: the unit samples them with a start."""
        values = {"heads": geo.heads, "kv_heads": geo.kv_heads, "head_blocks": geo.head_blocks,
                  "attn_scale": geo.attn_scale, **raw}
        widths = {"heads": self.limits.heads_bits, "kv_heads": self.limits.heads_bits,
                  "head_blocks": self.limits.head_blocks_bits, "attn_scale": unit.ATTN_SCALE_BITS}
        for name, value in values.items():
            if name not in widths or not 0 <= value < 1 << widths[name]:
                raise HardwireError(f"geometry port {name}={value} is not a port or does not fit it")
            setattr(self.io, name, value)

    def _start(self, command: str, position: int, geo: unit.AttentionGeometry, **raw) -> None:
        bits = self.limits.position_bits
        if not 0 <= position < 1 << bits:
            raise HardwireError(f"position {position} does not fit the {bits}-bit port")
        io = self.io
        self._drive_geometry(geo, **raw)
        io.pos = position
        setattr(io, command, 1)
        self.sim.step()
        setattr(io, command, 0)  # busy or refused is visible now; beats may follow at once

    def _beats(self, blocks, gap: int, done_after: bool = False) -> int:
        """One beat per cycle, `gap` idle cycles after each but the last; with done_after the
        unit's done is visible once they return."""
        io = self.io
        for i, (mantissas, exponent) in enumerate(blocks):
            io.in_data = pack_lanes(mantissas, WORD)
            io.in_exp = to_unsigned(exponent, EXP_BITS)
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
        half = 1 << (EXP_BITS - 1)
        if exponents.min(initial=0) < -half or exponents.max(initial=0) >= half:
            raise HardwireError(f"{what} exponents must fit the {EXP_BITS}-bit exponent port")
        return list(zip(mantissas.reshape(count, BLOCK), exponents, strict=True))
