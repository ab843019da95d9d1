"""Harnesses for the datapath cells: build each cell as a Verilator top and drive it with
golden-shaped integers (numpy arrays in, numpy arrays out)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from myhdl import ResetSignal, Signal, block

from hardwire.golden.errors import HardwireError
from hardwire.golden.spec import ACC_BITS, BLOCK, TERM_BITS
from hardwire.rtl.bus import EXP_BITS
from hardwire.rtl.cells import block_mac as mac
from hardwire.rtl.cells.counter import cycle_counter
from hardwire.rtl.cells.requant import DEFAULT_IN_WIDTH, check_requant_params, requant
from hardwire.rtl.cells.via_rom import via_map_define, via_rom
from hardwire.rtl.cells.wiring import bit_signal, copy, signed_signal, unsigned_signal
from hardwire.rtl.isa import FORMAT_CODE

from .lanes import pack_lanes, to_signed, to_unsigned, unpack_lanes
from .verilator_build import Simulator, build_myhdl


def sync_reset() -> ResetSignal:
    return ResetSignal(0, active=1, isasync=False)


def requant_top(bits: int = 8, in_width: int = DEFAULT_IN_WIDTH):
    """The requantizer alone as a top: a callable that elaborates it."""
    check_requant_params(bits, in_width)
    return lambda: requant(unsigned_signal(BLOCK * in_width), signed_signal(EXP_BITS),
                           unsigned_signal(BLOCK * bits), signed_signal(EXP_BITS), bits=bits, in_width=in_width)


def block_mac_top(act_bits: int = mac.ACT_BITS, engine_wired: bool = False):
    """The block dot-product lane alone as a top (or, `engine_wired`, as engine_wired_lane): a
    callable that elaborates it."""
    cell = engine_wired_lane if engine_wired else mac.block_mac
    return lambda: cell(
        bit_signal(), sync_reset(), bit_signal(), bit_signal(), bit_signal(),
        unsigned_signal(mac.FORMAT_BITS), unsigned_signal(BLOCK * mac.CODE_BITS),
        unsigned_signal(2 * mac.FIELD_BITS), unsigned_signal(2 * mac.FIELD_BITS), unsigned_signal(mac.FP16_BITS),
        unsigned_signal(mac.FP16_BITS), unsigned_signal(BLOCK * act_bits),
        signed_signal(EXP_BITS), signed_signal(TERM_BITS + 1), bit_signal(), signed_signal(ACC_BITS), bit_signal())


@block
def engine_wired_lane(clk, rst, in_valid, first, last, fmt, codes, scales, mins, d_bits, m_bits, acts, e_act, term,
                      term_valid, y, y_valid):
    """block_mac's ports on a lane wired as rtl/tile.py wide_matmul_engine wires every lane: its
    format decoded, its activations sign-extended and summed outside it, by the engine's own
    engine_lane_inputs (the traits through a lane bus)."""
    traits, sums = mac.FormatSignals(), mac.new_act_sums(mac.ACT_BITS)
    wide, native = mac.new_native_lanes()
    # the lane's ports: plain signals, as the lane module's are (MyHDL slices no concatenation)
    bus, lane_acts = unsigned_signal(mac.LANE_TRAIT_BITS), unsigned_signal(BLOCK * mac.NATIVE_BITS)
    return (mac.engine_lane_inputs(clk, rst, in_valid, fmt, acts, traits, wide, sums), copy(traits.lane_bus(), bus),
            copy(native, lane_acts),
            mac.block_mac(clk, rst, in_valid, first, last, None, codes, scales, mins, d_bits, m_bits, lane_acts, e_act,
                          term, term_valid, y, y_valid, None, sums, mac.FormatSignals.from_lane_bus(bus)))


def via_rom_top(width: int, depth: int, map_name: str, model_file: Path | None = None):
    """A via ROM macro alone as a top: a callable that elaborates it."""
    return lambda: via_rom(bit_signal(), unsigned_signal((depth - 1).bit_length()), unsigned_signal(width),
                           map_name=map_name, depth=depth, model_file=model_file)


class RequantCell:
    """rq(v, e_in, bits) on one 32-lane block per call (the cell is combinational)."""

    def __init__(self, bits: int = 8, in_width: int = DEFAULT_IN_WIDTH):
        self.bits, self.in_width = bits, in_width
        self.top = f"requant_b{bits}_w{in_width}"
        self.sim = build_myhdl(requant_top(bits, in_width), self.top, clock=None)

    def __call__(self, v: np.ndarray, e_in: int) -> tuple[np.ndarray, int]:
        if len(v) != BLOCK:
            raise HardwireError(f"the requantizer takes blocks of {BLOCK}, not {len(v)}")
        io = self.sim.io
        io.v_bus = pack_lanes(v, self.in_width)
        io.e_in = to_unsigned(e_in, EXP_BITS)
        return unpack_lanes(io.m_bus, self.bits, BLOCK), to_signed(io.e_out, EXP_BITS)


class BlockMacCell:
    """The block dot-product lane, fed one block per cycle, rows back to back."""

    FORMATS = {qtype.name: code for qtype, code in FORMAT_CODE.items()}

    def __init__(self, act_bits: int = mac.ACT_BITS, engine_wired: bool = False):
        self.act_bits = act_bits
        self.top = f"block_mac_a{act_bits}{'_engine' if engine_wired else ''}"
        self.sim = build_myhdl(block_mac_top(act_bits, engine_wired), self.top)
        self.sim.io.rst = 1
        self.sim.step(2)
        self.sim.io.rst = 0

    @staticmethod
    def code_bytes(fmt: str, q: np.ndarray, high_nibbles: np.ndarray | None = None) -> np.ndarray:
        """Q8_0/Q4_0/Q4_1 codes as the golden holds them (signed, Q4_0's 8 folded in) -> the cell's code bytes."""
        q = np.asarray(q, dtype=np.int64)
        if fmt == "Q8_0":
            return q & 0xFF
        nibbles = q + 8 if fmt == "Q4_0" else q
        if nibbles.min(initial=0) < 0 or nibbles.max(initial=0) > 15:
            raise HardwireError(f"{fmt} codes out of the nibble range")
        return nibbles | ((high_nibbles & 0xF) << 4 if high_nibbles is not None else 0)

    def run_rows(self, fmt: str, codes: np.ndarray, d_bits: np.ndarray, m_bits: np.ndarray | None,
                 acts: np.ndarray, e_act: np.ndarray, scales: np.ndarray | None = None,
                 mins: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """codes (rows, nb, 32) cell code bytes; d_bits/m_bits (rows, nb); acts (nb, 32) mantissas;
        e_act (nb,); scales/mins (rows, nb, 2) raw fields (zero if None). Returns the block terms
        (rows, nb) and the row results (rows,)."""
        rows, nb = codes.shape[:2]
        m_bits = np.zeros((rows, nb), np.int64) if m_bits is None else m_bits
        scales = np.zeros((rows, nb, 2), np.int64) if scales is None else scales
        mins = np.zeros((rows, nb, 2), np.int64) if mins is None else mins
        stream = [(r, b) for r in range(rows) for b in range(nb)]
        terms, ys, io = [], [], self.sim.io
        io.fmt = self.FORMATS[fmt]
        for cycle in range(len(stream) + mac.LATENCY):
            if cycle < len(stream):
                r, b = stream[cycle]
                io.codes = pack_lanes(codes[r, b], mac.CODE_BITS)
                io.scales = pack_lanes(scales[r, b], mac.FIELD_BITS)
                io.mins = pack_lanes(mins[r, b], mac.FIELD_BITS)
                io.acts = pack_lanes(acts[b], self.act_bits)
                io.d_bits, io.m_bits = int(d_bits[r, b]), int(m_bits[r, b])
                io.e_act = to_unsigned(e_act[b], EXP_BITS)
                io.first, io.last, io.in_valid = int(b == 0), int(b == nb - 1), 1
            else:
                io.in_valid = 0
            self.sim.step()
            if io.term_valid:
                terms.append((cycle, to_signed(io.term, TERM_BITS + 1)))
            if io.y_valid:
                ys.append((cycle, to_signed(io.y, ACC_BITS)))
        self._check_latency(terms, ys, len(stream), nb)
        return np.array([t for _, t in terms]).reshape(rows, nb), np.array([y for _, y in ys])

    @staticmethod
    def _check_latency(terms, ys, blocks, nb):
        want_terms = [k + mac.LATENCY - 1 for k in range(blocks)]
        want_ys = [k + mac.LATENCY - 1 for k in range(nb - 1, blocks, nb)]
        if [c for c, _ in terms] != want_terms or [c for c, _ in ys] != want_ys:
            raise HardwireError("block_mac outputs did not arrive at the documented latency")


class ViaRomCell:
    """A via ROM macro alone as a top, its contents from a via-map file."""

    def __init__(self, via_map: Path, width: int, depth: int, map_name: str = "cell"):
        self.width, self.depth = width, depth
        self.top = f"via_rom_{width}x{depth}"
        self.sim = build_myhdl(via_rom_top(width, depth, map_name), self.top,
                               data_files={via_map_define(map_name): via_map})

    def read(self, address: int) -> int:
        self.sim.io.addr = address
        self.sim.step()
        return int(self.sim.io.data)


def build_cycle_counter(width: int = 32) -> Simulator:
    """The loop counter with `done`: the small design of the native-run checks and benchmark."""
    def elaborate():
        return cycle_counter(Signal(bool(0)), sync_reset(), unsigned_signal(width), unsigned_signal(width),
                             Signal(bool(0)))
    return build_myhdl(elaborate, f"cycle_counter_w{width}", done="done")
