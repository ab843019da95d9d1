"""Harnesses for the vector unit (rtl/units/vector.py): each unit built once as a Verilator top,
with its table ROMs as via-ROM macro models loaded from via maps, and driven with golden-shaped
integers (numpy arrays in, numpy arrays out).

Every harness streams its blocks through the unit with seeded idle cycles between some beats
(the units must take a beat exactly when valid is high), and checks that each result leaves
at the documented latency before handing the words back for comparison.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from myhdl import block

from hardwire.golden.errors import HardwireError
from hardwire.golden.spec import ACC_BITS, BLOCK
from hardwire.rtl.bus import EXP_BITS, BlockBus, RomPort
from hardwire.rtl.cells.lut_rom import lut_address_bits, lut_rom
from hardwire.rtl.cells.via_rom import via_map_define
from hardwire.rtl.cells.wiring import bit_signal, signed_signal, unsigned_signal
from hardwire.rtl.units import vector as v
from hardwire.rtl.via_map import write_via_map

from .cells import sync_reset
from .lanes import pack_lanes, to_signed, to_unsigned, unpack_lanes
from .verilator_build import Simulator, build_myhdl

BUS_BITS = BLOCK * ACC_BITS
B16_LIMIT = (1 << 15) - 1


# --- tops: a unit and its ROMs ----------------------------------------------------------------

def rq_top():
    return v.rq_unit(bit_signal(), sync_reset(), bit_signal(), unsigned_signal(BUS_BITS), signed_signal(EXP_BITS),
                     BlockBus())


def add_top():
    return v.add_unit(bit_signal(), sync_reset(), bit_signal(), unsigned_signal(BUS_BITS), unsigned_signal(BUS_BITS),
                      BlockBus(exp=False))


@block
def silu_with_table(clk, rst, in_valid, gate_data, up_data, out):
    sig = RomPort(BLOCK * v.SIGMOID_ADDR_BITS, BLOCK * v.SIGMOID_WIDTH)
    return (v.silu_unit(clk, rst, in_valid, gate_data, up_data, out, sig),
            lut_rom(clk, sig.en, sig.addr, sig.data, "sigmoid", v.SIGMOID_DEPTH, ports=BLOCK))


def silu_top():
    return silu_with_table(bit_signal(), sync_reset(), bit_signal(), unsigned_signal(BUS_BITS),
                           unsigned_signal(BUS_BITS), BlockBus())


@block
def rope_with_table(clk, rst, in_valid, in_data, token_position, pair_block, out, depth):
    rope = RomPort(lut_address_bits(depth), v.ROPE_WIDTH)
    return (v.rope_unit(clk, rst, in_valid, in_data, token_position, pair_block, out, rope),
            lut_rom(clk, rope.en, rope.addr, rope.data, "rope", depth))


def rope_top(positions: int, block_bits: int):
    return lambda: rope_with_table(bit_signal(), sync_reset(), bit_signal(), unsigned_signal(BUS_BITS),
                                   unsigned_signal(max(1, (positions - 1).bit_length())),
                                   unsigned_signal(block_bits), BlockBus(), v.rope_rom_depth(positions, block_bits))


@block
def norm_with_tables(clk, rst, start, n_blocks, gain_base, in_valid, in_data, out, done, consts_depth, max_blocks):
    gain, rsqrt = RomPort(len(gain_base), v.GAIN_WIDTH), RomPort(v.RSQRT_ADDR_BITS, v.RSQRT_WIDTH)
    return (v.norm_unit(clk, rst, start, n_blocks, gain_base, in_valid, in_data, out, done, gain, rsqrt,
                        max_blocks=max_blocks),
            lut_rom(clk, gain.en, gain.addr, gain.data, "norm_consts", consts_depth),
            lut_rom(clk, rsqrt.en, rsqrt.addr, rsqrt.data, "rsqrt", v.RSQRT_DEPTH))


def norm_top(consts_depth: int, max_blocks: int):
    count_bits, addr_bits = v.norm_count_bits(max_blocks), lut_address_bits(consts_depth)
    return lambda: norm_with_tables(bit_signal(), sync_reset(), bit_signal(), unsigned_signal(count_bits),
                                    unsigned_signal(addr_bits), bit_signal(), unsigned_signal(BUS_BITS), BlockBus(),
                                    bit_signal(), consts_depth, max_blocks)


# --- driving ----------------------------------------------------------------------------------

def with_gaps(beats: list, rng: np.random.Generator | None, gap_rate: float = 0.3) -> list:
    """The beats with seeded idle cycles (None) between some of them."""
    if rng is None:
        return list(beats)
    paced = []
    for beat in beats:
        paced += [None] * int(rng.random() < gap_rate) * int(rng.integers(1, 3))
        paced.append(beat)
    return paced


class StreamingUnit:
    """A built unit with one input valid: present beats (dicts of port values) cycle by cycle."""

    def __init__(self, sim: Simulator, in_valid: str, latency: int):
        self.sim, self.io, self.in_valid, self.latency = sim, sim.io, in_valid, latency
        self.reset()

    def reset(self) -> None:
        self.io.rst = 1
        self.sim.step(2)
        self.io.rst = 0

    def stream(self, beats: list, outputs: tuple[str, ...]) -> list[dict]:
        """Present each beat (None: an idle cycle), run until the last result leaves, and check
        that result k leaves exactly `latency` - 1 cycles after the cycle of input beat k."""
        sent, got = [], []
        for cycle in range(len(beats) + self.latency + 1):
            beat = beats[cycle] if cycle < len(beats) else None
            if beat is not None:
                for port, value in beat.items():
                    setattr(self.io, port, value)
                sent.append(cycle)
            setattr(self.io, self.in_valid, int(beat is not None))
            self.sim.step()
            if self.io.out_valid:
                got.append((cycle, {name: int(getattr(self.io, name)) for name in outputs}))
        want = [c + self.latency - 1 for c in sent]
        if [c for c, _ in got] != want:
            raise HardwireError(f"results left in cycles {[c for c, _ in got]}, the documented latency "
                                f"{self.latency} gives {want}")
        return [words for _, words in got]


def acc_word(block: np.ndarray) -> int:
    block = np.asarray(block, np.int64)
    if block.shape != (BLOCK,):
        raise HardwireError(f"a block bus carries {BLOCK} lanes, not shape {block.shape}")
    return pack_lanes(block, ACC_BITS)


def b16_block(words: dict) -> tuple[np.ndarray, int]:
    """A B16 bus beat: sign-extended mantissas and the 8-bit exponent."""
    m = unpack_lanes(words["out_data"], ACC_BITS, BLOCK)
    if np.abs(m).max() > B16_LIMIT:
        raise HardwireError(f"a B16 lane left the unit outside +-{B16_LIMIT}: {m.tolist()}")
    return m, to_signed(words["out_exp"], EXP_BITS)


def stacked(results: list[tuple[np.ndarray, int]]) -> tuple[np.ndarray, np.ndarray]:
    if not results:
        return np.zeros((0, BLOCK), np.int64), np.zeros(0, np.int64)
    return np.array([m for m, _ in results]), np.array([e for _, e in results])


def as_blocks(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.int64)
    if a.ndim != 2 or a.shape[1] != BLOCK:
        raise HardwireError(f"expected blocks of shape (n, {BLOCK}), got {a.shape}")
    return a


# --- the units --------------------------------------------------------------------------------

class RqUnit:
    """rq_unit: ACC blocks with per-block input exponents -> B16 blocks."""

    def __init__(self):
        self.unit = StreamingUnit(build_myhdl(rq_top, "rq_unit"), "in_valid", v.RQ_LATENCY)

    def __call__(self, blocks, exps, rng=None) -> tuple[np.ndarray, np.ndarray]:
        blocks, exps = as_blocks(blocks), np.asarray(exps, np.int64)
        beats = [{"in_data": acc_word(b), "in_exp": to_unsigned(e, EXP_BITS)}
                 for b, e in zip(blocks, exps, strict=True)]
        return stacked([b16_block(w) for w in self.unit.stream(with_gaps(beats, rng), ("out_data", "out_exp"))])


class AddUnit:
    """add_unit: pairs of ACC blocks -> sat(a + b, 48)."""

    def __init__(self):
        self.unit = StreamingUnit(build_myhdl(add_top, "add_unit"), "in_valid", v.ADD_LATENCY)

    def __call__(self, a, b, rng=None) -> np.ndarray:
        a, b = as_blocks(a), as_blocks(b)
        beats = [{"a_data": acc_word(x), "b_data": acc_word(y)} for x, y in zip(a, b, strict=True)]
        words = self.unit.stream(with_gaps(beats, rng), ("out_data",))
        return np.array([unpack_lanes(w["out_data"], ACC_BITS, BLOCK) for w in words]).reshape(-1, BLOCK)


class SiluUnit:
    """silu_unit with its 32-port sigmoid table: gate and up ACC blocks -> B16 blocks."""

    def __init__(self, sigmoid_table: np.ndarray, work_dir: Path):
        via_map = write_via_map(Path(work_dir) / "sigmoid.vmap", v.sigmoid_rom_words(sigmoid_table),
                                v.SIGMOID_WIDTH, v.SIGMOID_DEPTH)
        sim = build_myhdl(silu_top, "silu_unit_top", data_files={via_map_define("sigmoid"): via_map})
        self.unit = StreamingUnit(sim, "in_valid", v.SILU_LATENCY)

    def __call__(self, gate, up, rng=None) -> tuple[np.ndarray, np.ndarray]:
        gate, up = as_blocks(gate), as_blocks(up)
        beats = [{"gate_data": acc_word(g), "up_data": acc_word(u)} for g, u in zip(gate, up, strict=True)]
        return stacked([b16_block(w) for w in self.unit.stream(with_gaps(beats, rng), ("out_data", "out_exp"))])


class RopeUnit:
    """rope_unit with its cos/sin table: ACC blocks at (position, block of the head) -> B16 blocks."""

    def __init__(self, cos: np.ndarray, sin: np.ndarray, work_dir: Path):
        self.positions, pairs = np.shape(cos)
        self.head_blocks = pairs // v.PAIRS
        self.block_bits = max(1, (self.head_blocks - 1).bit_length())
        words = v.rope_rom_words(cos, sin, self.block_bits)
        depth = v.rope_rom_depth(self.positions, self.block_bits)
        via_map = write_via_map(Path(work_dir) / "rope.vmap", words, v.ROPE_WIDTH, depth)
        sim = build_myhdl(rope_top(self.positions, self.block_bits), "rope_unit_top",
                          data_files={via_map_define("rope"): via_map})
        self.unit = StreamingUnit(sim, "in_valid", v.ROPE_LATENCY)

    def __call__(self, blocks, positions, head_blocks, rng=None) -> tuple[np.ndarray, np.ndarray]:
        blocks = as_blocks(blocks)
        positions, head_blocks = np.asarray(positions, np.int64), np.asarray(head_blocks, np.int64)
        if positions.min(initial=0) < 0 or positions.max(initial=0) >= self.positions:
            raise HardwireError(f"RoPE positions must be in [0, {self.positions})")
        if head_blocks.min(initial=0) < 0 or head_blocks.max(initial=0) >= self.head_blocks:
            raise HardwireError(f"a head has {self.head_blocks} blocks; block index out of range")
        beats = [{"in_data": acc_word(b), "token_position": int(p), "pair_block": int(h)}
                 for b, p, h in zip(blocks, positions, head_blocks, strict=True)]
        return stacked([b16_block(w) for w in self.unit.stream(with_gaps(beats, rng), ("out_data", "out_exp"))])


@dataclass(frozen=True)
class GainVector:
    """A norm gain vector as the metal holds it: G (24-bit), e_G and EPS_Q for its length."""

    gains: np.ndarray
    e_g: int
    eps_q: int


class NormUnit:
    """norm_unit with its consts ROM (the gain vectors, one after the other) and RSQRT table."""

    def __init__(self, vectors: list[GainVector], rsqrt_table: np.ndarray, work_dir: Path, max_blocks: int):
        self.vectors, self.max_blocks, self.bases, words = vectors, max_blocks, [], []
        for vec in vectors:
            self.bases.append(len(words))
            words += v.norm_const_words(vec.gains, vec.e_g, vec.eps_q)
        depth = max(len(words), 2)
        consts = write_via_map(Path(work_dir) / "norm_consts.vmap", words, v.GAIN_WIDTH, depth)
        rsqrt = write_via_map(Path(work_dir) / "rsqrt.vmap", v.rsqrt_rom_words(rsqrt_table), v.RSQRT_WIDTH,
                              v.RSQRT_DEPTH)
        sim = build_myhdl(norm_top(depth, max_blocks), "norm_unit_top",
                          data_files={via_map_define("norm_consts"): consts, via_map_define("rsqrt"): rsqrt})
        self.sim, self.io = sim, sim.io
        self.io.rst = 1
        sim.step(2)
        self.io.rst = 0

    def __call__(self, x: np.ndarray, vector: int, rng=None, start_gap: int = 0) -> tuple[np.ndarray, np.ndarray, dict]:
        """Normalize ACC vector x with gain vector `vector`; returns (mantissas (n, 32), exponents (n,),
        timing) where timing holds the cycles of the last input, the output beats and done."""
        x = np.asarray(x, np.int64)
        n = len(self.vectors[vector].gains) // BLOCK
        if x.shape != (n * BLOCK,):
            raise HardwireError(f"gain vector {vector} normalizes {n * BLOCK} elements, not shape {x.shape}")
        if not 1 <= n <= self.max_blocks:
            raise HardwireError(f"the norm unit holds 1..{self.max_blocks} blocks, not {n}")
        io = self.io
        io.n_blocks, io.gain_base, io.start = n, self.bases[vector], 1
        self.sim.step()
        io.start = 0
        self.sim.step(start_gap)
        beats = with_gaps([acc_word(b) for b in x.reshape(n, BLOCK)], rng)
        out, out_cycles, done_cycles, last_in = [], [], [], None
        for cycle in range(len(beats) + 4 * n + 64):
            beat = beats[cycle] if cycle < len(beats) else None
            if beat is not None:
                io.in_data, last_in = beat, cycle
            io.in_valid = int(beat is not None)
            self.sim.step()
            if io.out_valid:
                out.append(b16_block({"out_data": int(io.out_data), "out_exp": int(io.out_exp)}))
                out_cycles.append(cycle)
            if io.done:
                done_cycles.append(cycle)
                break
        if not done_cycles:
            raise HardwireError(f"the norm unit never raised done ({len(out)} of {n} blocks came out)")
        m, e = stacked(out)
        return m, e, {"last_in": last_in, "out": out_cycles, "done": done_cycles}

    def start_empty(self) -> list[int]:
        """start with n_blocks = 0: the cycles (after start) in which done is high."""
        io = self.io
        io.n_blocks, io.gain_base, io.start = 0, 0, 1
        self.sim.step()
        io.start = 0
        seen = []
        for cycle in range(4):
            if io.done:
                seen.append(cycle)
            self.sim.step()
        return seen
