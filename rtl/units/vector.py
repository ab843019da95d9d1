"""The tile's vector unit: requantizer, residual add, SiLU gate, RoPE and RMSNorm on block buses.

Every unit follows the block-bus contract of docs/architecture.md 4a: `valid`, `data` (32 lanes
of 48-bit two's complement, lane j at bits 48j+47..48j; B16 mantissas sign-extended) and
`exp` (8-bit two's complement, B16 only: ACC buses have no exp port, the contract says ACC
ignores it). No back-pressure: a unit takes a beat in every cycle its input valid is high.
Reset (`rst`) is synchronous and active high; it clears the valid bits and the control state,
not the data registers.

Latency convention (as block_mac): a beat presented with valid high before rising edge k
leaves on the output bus after edge k + LATENCY - 1, so out_valid is high from then on for
one cycle. Beats may follow each other in every cycle.

Tables and norm gains are not inside the units. Each unit has read ports for via-programmable
ROM macros (rtl/cells/lut_rom.py): an enable and address out, data in, one cycle of read
latency. The word layouts are fixed here, next to the units that read them (`*_rom_words`),
for the metal generator to write the via maps with.

Idle cost. Valid bits and control run on `clk`; every datapath register runs on the unit's
gated clock (an ICG cell, rtl/cells/clock_gate.py), enabled only while a block is arriving or
in flight, and is written only when its own stage is valid. An idle unit therefore does not
toggle, and Verilator, which evaluates logic only on the edges of the clock that drives it,
skips its datapath, including the combinational requantizer cells behind its registers.
"""

from __future__ import annotations

import numpy as np
from myhdl import ConcatSignal, Signal, always, always_comb, always_seq, block, concat, enum, intbv

from hardwire.golden import spec
from hardwire.golden.errors import HardwireError
from hardwire.golden.spec import ACC_BITS, ACC_FRAC, ACT_BITS, BLOCK

from ..bus import EXP_BITS
from ..cells.clock_gate import clock_gate
from ..cells.lut_rom import lut_address_bits
from ..cells.requant import max_shift, requant
from ..cells.wiring import (
    bit_signal,
    bus_lanes,
    guarded_add,
    guarded_register,
    packed,
    sign_extended,
    signed_signal,
    unsigned_signal,
    valid_pipe,
    zero_extended,
)

SHIFT_BITS = 6  # the rq shift s of a 48-bit word: 0..33
PAIRS = BLOCK // 2  # RoPE pairs per block

RQ_LATENCY = 2
ADD_LATENCY = 2
SILU_LATENCY = 5
ROPE_LATENCY = 4
NORM_TAIL_LATENCY = 14  # norm_unit: from its last input block to its first output block, plus SUM's cycles
NORM_SUM_TERMS = 8  # norm_unit's SUM adds this many blocks' aligned powers a cycle (an exact integer sum)


def norm_sum_index_bits(index_bits: int) -> int:
    """Width of SUM's block index: a block's index, plus room to step past the last by NORM_SUM_TERMS."""
    return index_bits + NORM_SUM_TERMS.bit_length()


def norm_sum_cycles(n_blocks: int) -> int:
    """The cycles of norm_unit's SUM phase."""
    return -(-n_blocks // NORM_SUM_TERMS)

# --- table ROM layouts (numerics 5, 6, 8) -----------------------------------------------------

SIGMOID_DEPTH = spec.SIGMOID_ENTRIES  # 8192 entries of 16 bits in [0, 2**15]
SIGMOID_WIDTH = 16
SIGMOID_ADDR_BITS = lut_address_bits(SIGMOID_DEPTH)
RSQRT_DEPTH = 1536  # numerics 5: RSQRT_LUT[k], k = (t >> 21) - 512
RSQRT_WIDTH = 17
RSQRT_ADDR_BITS = lut_address_bits(RSQRT_DEPTH)
ROPE_ENTRY_BITS = 16  # int16 cos and sin (ROPE_FRAC = 14)
ROPE_WIDTH = PAIRS * 2 * ROPE_ENTRY_BITS  # one word: the cos/sin of the 16 pairs of a block
GAIN_BITS = spec.NORM_GAIN_BITS
GAIN_WIDTH = BLOCK * GAIN_BITS  # one consts-ROM word: the 24-bit gains of a block
EPS_Q_BITS = 64


def sigmoid_rom_words(table: np.ndarray) -> list[int]:
    """SIGMOID_LUT as via-map words, address = table index."""
    return _unsigned_words(table, SIGMOID_WIDTH, "SIGMOID_LUT", SIGMOID_DEPTH)


def rsqrt_rom_words(table: np.ndarray) -> list[int]:
    """RSQRT_LUT as via-map words, address = k."""
    return _unsigned_words(table, RSQRT_WIDTH, "RSQRT_LUT", RSQRT_DEPTH)


def rope_rom_words(cos: np.ndarray, sin: np.ndarray, block_bits: int) -> list[int]:
    """ROPE_COS/ROPE_SIN (positions, head_dim/2) as words of 16 pairs: the word at address
    {position, b} (b: `block_bits` bits, the block's index inside its head) holds pair 16b + k at
    bits 32k+15..32k (cos) and 32k+31..32k+16 (sin). Rows pad to 2**block_bits blocks."""
    cos, sin = np.asarray(cos, np.int64), np.asarray(sin, np.int64)
    positions, pairs = cos.shape
    if sin.shape != cos.shape or pairs % PAIRS or pairs // PAIRS > 1 << block_bits:
        raise HardwireError(f"RoPE tables of shape {cos.shape}/{sin.shape} do not fit rows of "
                            f"{1 << block_bits} blocks of {PAIRS} pairs")
    limit = 1 << (ROPE_ENTRY_BITS - 1)
    if min(cos.min(), sin.min()) < -limit or max(cos.max(), sin.max()) >= limit:
        raise HardwireError("a RoPE table entry does not fit int16")
    mask = (1 << ROPE_ENTRY_BITS) - 1
    words = []
    for p in range(positions):
        for b in range(1 << block_bits):
            word = 0
            for k in range(PAIRS if (b + 1) * PAIRS <= pairs else 0):
                i = b * PAIRS + k
                word |= ((int(cos[p, i]) & mask) | (int(sin[p, i]) & mask) << ROPE_ENTRY_BITS) << (32 * k)
            words.append(word)
    return words


def norm_const_words(gains: np.ndarray, e_g: int, eps_q: int) -> list[int]:
    """One gain vector for the consts ROM: a header word (EPS_Q in bits 63..0, e_G as 8-bit two's
    complement in bits 71..64), then one word per block of 32 signed 24-bit gains (lane j at bits
    24j+23..24j). The norm unit reads the header at its gain base and block b at base + 1 + b."""
    gains = np.asarray(gains, np.int64)
    if gains.size % BLOCK:
        raise HardwireError(f"a gain vector of {gains.size} elements is not a whole number of blocks")
    if not NORM_E_G_MIN <= e_g <= NORM_E_G_MAX:
        raise HardwireError(f"gain exponent e_G={e_g} is outside [{NORM_E_G_MIN}, {NORM_E_G_MAX}], where every "
                            f"norm output exponent fits the {EXP_BITS}-bit bus")
    if not 0 <= eps_q < 1 << 62:  # golden IntModel refuses >= 2**62 as well
        raise HardwireError(f"EPS_Q={eps_q} is out of the norm unit's range [0, 2**62)")
    limit = 1 << (GAIN_BITS - 1)
    if gains.size and (gains.min() < -limit or gains.max() >= limit):
        raise HardwireError(f"a norm gain does not fit {GAIN_BITS} signed bits")
    mask = (1 << GAIN_BITS) - 1
    words = [int(eps_q) | (e_g & 0xFF) << EPS_Q_BITS]
    for row in gains.reshape(-1, BLOCK):
        words.append(sum((int(g) & mask) << (GAIN_BITS * j) for j, g in enumerate(row)))
    return words


def _unsigned_words(table, width: int, name: str, depth: int) -> list[int]:
    table = np.asarray(table, np.int64)
    if table.shape != (depth,) or table.min() < 0 or table.max() >= 1 << width:
        raise HardwireError(f"{name} must be {depth} unsigned entries of {width} bits")
    return [int(v) for v in table]


# --- shared stages ----------------------------------------------------------------------------

@block
def datapath_clock(clk, busy, dclk):
    """The unit's gated datapath clock: running while any of the `busy` bits (the input valid and
    the stage valids: a block is arriving or in flight) is high."""
    flags = ConcatSignal(*busy) if len(busy) > 1 else busy[0]
    enable = bit_signal()

    @always_comb
    def any_busy():
        enable.next = flags != 0

    return any_busy, clock_gate(clk, enable, dclk)


@block
def operand_register(dclk, load, data, exp_in, operand, operand_exp):
    """A requantizer's operand: `data` and `exp_in` (a signal or a constant), taken when `load`."""

    @always(dclk.posedge)
    def capture():
        if load:
            operand.next = data
            operand_exp.next = exp_in

    return capture


@block
def acc_requantizer(dclk, load, data, m_bus, shift):
    """rq(acc, 0, 16) behind its operand register: with e_in = 0, e_out is the shift s (e = s - 24)."""
    operand, operand_exp = unsigned_signal(BLOCK * ACC_BITS), signed_signal(EXP_BITS)
    return [operand_register(dclk, load, data, 0, operand, operand_exp),
            requant(operand, operand_exp, m_bus, shift, bits=ACT_BITS, in_width=ACC_BITS)]


@block
def b16_output(clk, dclk, rst, valid, m_bus, e_out, out_valid, out_data, out_exp):
    """The B16 output register: mantissas sign-extended to 48-bit lanes, written when a block arrives."""
    extended = sign_extended_lanes(m_bus, ACT_BITS, ACC_BITS)

    @always(dclk.posedge)
    def emit():
        if valid:
            out_data.next = extended
            out_exp.next = e_out

    return emit, valid_pipe(clk, rst, valid, out_valid)


@block
def acc_output(clk, dclk, rst, valid, lanes, out_valid, out_data):
    """The ACC output register, written when a block arrives."""
    bus = packed(lanes)

    @always(dclk.posedge)
    def emit():
        if valid:
            out_data.next = bus

    return emit, valid_pipe(clk, rst, valid, out_valid)


@block
def drive_packed(lanes, bus):
    """`bus` carries the lanes packed (lane 0 in the LSBs): wiring only. A plain signal, because
    MyHDL cannot slice a concatenation (the requantizer slices its input)."""
    lanes_bus = packed(lanes)

    @always_comb
    def wire():
        bus.next = lanes_bus

    return wire


@block
def pipelined_sum(clk, dclk, rst, in_valid, leaves, total, out_valid):
    """total = the sum of a power-of-two number of unsigned leaves: one register level per halving,
    each written only when its inputs are valid. Latency log2(len(leaves)); total must be
    log2(len(leaves)) bits wider than a leaf."""
    depth = len(leaves).bit_length() - 1
    if len(leaves) != 1 << depth or depth < 1 or len(total) != len(leaves[0]) + depth:
        raise HardwireError(f"pipelined_sum: {len(leaves)} leaves of {len(leaves[0])} bits cannot give "
                            f"a {len(total)}-bit total")
    stages, level, valid = [], leaves, in_valid
    for step in range(depth):
        last = step == depth - 1
        sums = [total] if last else [unsigned_signal(len(level[0]) + 1) for _ in range(len(level) // 2)]
        level_valid = out_valid if last else bit_signal()
        stages += [guarded_add(dclk, valid, a, b, s) for a, b, s in zip(level[0::2], level[1::2], sums, strict=True)]
        stages.append(valid_pipe(clk, rst, valid, level_valid))
        level, valid = sums, level_valid
    return stages


def sign_extended_lanes(bus, lane_bits: int, width: int) -> ConcatSignal:
    """Every lane of `bus` sign-extended to `width` bits, as one flat concatenation of slices of
    `bus` (MyHDL names only concatenations that a block holds, so they are never nested)."""
    parts = []
    for j in reversed(range(len(bus) // lane_bits)):
        parts += [bus((j + 1) * lane_bits - 1)] * (width - lane_bits) + [bus((j + 1) * lane_bits, j * lane_bits)]
    return ConcatSignal(*parts)


def lane_sign_extended(bus, lane_bits: int, j: int, width: int) -> ConcatSignal:
    """Lane j of `bus` sign-extended to `width` bits (slices of `bus` itself, never of a slice)."""
    sign = bus((j + 1) * lane_bits - 1)
    return ConcatSignal(*([sign] * (width - lane_bits)), bus((j + 1) * lane_bits, j * lane_bits))


def _check_widths(unit: str, **ports) -> None:
    for name, (port, width) in ports.items():
        if len(port) != width:
            raise HardwireError(f"{unit} port {name} is {len(port)} bits; it must be {width}")


# --- rq_unit ----------------------------------------------------------------------------------

@block
def rq_unit(clk, rst, in_valid, in_data, in_exp, out):
    """numerics 1.1: an ACC-width block with its exponent -> rq(v, e_in, 16), a B16 block.
    Stateless; RQ_LATENCY = 2 (the operand register, then the output register behind the
    combinational requantizer). e_in + s must fit the 8-bit bus exponent (ACC has e_in = -24)."""
    out_valid, out_data, out_exp = out.valid, out.data, out.exp  # a BlockBus
    _check_widths("rq_unit", in_data=(in_data, BLOCK * ACC_BITS), in_exp=(in_exp, EXP_BITS),
                  out_data=(out_data, BLOCK * ACC_BITS), out_exp=(out_exp, EXP_BITS))
    dclk, s1 = bit_signal(), bit_signal()
    operand, operand_exp = unsigned_signal(BLOCK * ACC_BITS), signed_signal(EXP_BITS)
    m_bus, e_out = unsigned_signal(BLOCK * ACT_BITS), signed_signal(EXP_BITS)
    return (datapath_clock(clk, [in_valid, s1], dclk), valid_pipe(clk, rst, in_valid, s1),
            operand_register(dclk, in_valid, in_data, in_exp, operand, operand_exp),
            requant(operand, operand_exp, m_bus, e_out, bits=ACT_BITS, in_width=ACC_BITS),
            b16_output(clk, dclk, rst, s1, m_bus, e_out, out_valid, out_data, out_exp))


# --- add_unit ---------------------------------------------------------------------------------

@block
def add_unit(clk, rst, in_valid, a_data, b_data, out):
    """numerics 4 (residual add): two ACC blocks -> sat(a + b, 48), lane by lane. Stateless;
    ADD_LATENCY = 2 (the lane sums, then the output register)."""
    out_valid, out_data = out.valid, out.data  # an ACC bus: no exponent
    _check_widths("add_unit", a_data=(a_data, BLOCK * ACC_BITS), b_data=(b_data, BLOCK * ACC_BITS),
                  out_data=(out_data, BLOCK * ACC_BITS))
    dclk, s1 = bit_signal(), bit_signal()
    sums = [signed_signal(ACC_BITS) for _ in range(BLOCK)]
    a_lanes, b_lanes = bus_lanes(a_data, ACC_BITS, BLOCK), bus_lanes(b_data, ACC_BITS, BLOCK)
    lanes = [saturating_add_lane(dclk, in_valid, a, b, s) for a, b, s in zip(a_lanes, b_lanes, sums, strict=True)]
    return (datapath_clock(clk, [in_valid, s1], dclk), valid_pipe(clk, rst, in_valid, s1), lanes,
            acc_output(clk, dclk, rst, s1, sums, out_valid, out_data))


@block
def saturating_add_lane(dclk, enable, a, b, total):
    """total = sat(a + b, 48): the 49-bit sum overflowed when its top two bits differ."""
    width = len(total)

    @always(dclk.posedge)
    def add():
        if enable:
            s = intbv(0, min=-(1 << width), max=1 << width)
            limit = intbv(0, min=-(1 << (width - 1)), max=1 << (width - 1))
            s[:] = a.signed() + b.signed()
            if s[width] == s[width - 1]:
                total.next = s[width:].signed()
            else:
                limit[width - 1] = 1  # the most negative word; its complement is the largest
                if not s[width]:
                    limit[:] = ~limit
                total.next = limit

    return add


# --- silu_unit --------------------------------------------------------------------------------

SIGMOID_CENTER = spec.SIGMOID_ENTRIES // 2
SIGMOID_LAST = spec.SIGMOID_ENTRIES - 1
GATE_SHIFT_WIDTH = ACT_BITS + max_shift(ACT_BITS, ACC_BITS)  # g16 << s for s <= 33: 49 bits
SILU_PRODUCT_BITS = 2 * ACT_BITS  # g16 * u16
SILU_Y_BITS = SILU_PRODUCT_BITS + SIGMOID_WIDTH + 1  # g16 * u16 * SIG, SIG unsigned (|y| < 2**46 fits)


@block
def silu_unit(clk, rst, in_valid, gate_data, up_data, out, sig):
    """numerics 8: gate and up ACC blocks (the same 32 rows) -> silu(gate) * up as a B16 block.

    Sigmoid table: a 32-port LUT ROM (SIGMOID_LUT, 8192 x 16): sig_en, sig_addr (32 x 13 bits,
    lane j at bits 13j+12..13j), sig_data (32 x 16 bits), one cycle of read latency.

    Stateless; SILU_LATENCY = 5:
        1  both ACC blocks into the requantizers' operand registers
        2  g16 * u16 per lane; the sigmoid index k per lane -> sig_addr
        3  the ROM reads; the products wait beside it
        4  y = g16 * u16 * SIG (|y| < 2**46) into the last requantizer's operand register
        5  rq(y, eg + eu - 15, 16) on the bus
    The first requantizers take e_in = 0, so their e_out is the shift s and eg = s_g - 24;
    then the index shift eg + 8 = s_g - 16 and the product exponent is s_g + s_u - 63.
    """
    out_valid, out_data, out_exp = out.valid, out.data, out.exp  # a BlockBus
    sig_en, sig_addr, sig_data = sig.en, sig.addr, sig.data  # a RomPort
    _check_widths("silu_unit", gate_data=(gate_data, BLOCK * ACC_BITS), up_data=(up_data, BLOCK * ACC_BITS),
                  out_data=(out_data, BLOCK * ACC_BITS), out_exp=(out_exp, EXP_BITS),
                  sig_addr=(sig_addr, BLOCK * SIGMOID_ADDR_BITS), sig_data=(sig_data, BLOCK * SIGMOID_WIDTH))
    dclk, s1, s3, s4 = bit_signal(), bit_signal(), bit_signal(), bit_signal()
    s2 = sig_en  # the ROM reads in the cycle after stage 2
    parts = [datapath_clock(clk, [in_valid, s1, s2, s3, s4], dclk),
             valid_pipe(clk, rst, in_valid, s1), valid_pipe(clk, rst, s1, s2), valid_pipe(clk, rst, s2, s3),
             valid_pipe(clk, rst, s3, s4)]

    # stage 1: requantize gate and up
    gate_m, up_m = unsigned_signal(BLOCK * ACT_BITS), unsigned_signal(BLOCK * ACT_BITS)
    gate_s, up_s = signed_signal(EXP_BITS), signed_signal(EXP_BITS)
    parts += [acc_requantizer(dclk, in_valid, gate_data, gate_m, gate_s),
              acc_requantizer(dclk, in_valid, up_data, up_m, up_s)]

    # stage 2: products and sigmoid indices
    gate_shift = gate_s(SHIFT_BITS, 0)  # s_g in 0..33
    indices = [unsigned_signal(SIGMOID_ADDR_BITS) for _ in range(BLOCK)]
    products = [signed_signal(SILU_PRODUCT_BITS) for _ in range(BLOCK)]
    parts += [silu_front_lane(dclk, s1, gate_m, j, u, gate_shift, k, gu)
              for j, (u, k, gu) in enumerate(zip(bus_lanes(up_m, ACT_BITS, BLOCK), indices, products, strict=True))]
    parts.append(drive_packed(indices, sig_addr))
    e2, e3, y_exp = signed_signal(EXP_BITS), signed_signal(EXP_BITS), signed_signal(EXP_BITS)

    @always(dclk.posedge)
    def product_exponent():
        if s1:
            e2.next = gate_s + up_s - (2 * ACC_FRAC + spec.SIGMOID_FRAC)
        if s2:
            e3.next = e2
        if s3:
            y_exp.next = e3

    # stages 3-4: wait for the table, scale by it
    ys = [signed_signal(SILU_Y_BITS) for _ in range(BLOCK)]
    parts += [silu_back_lane(dclk, s2, gu, s3, sig, y)
              for gu, sig, y in zip(products, bus_lanes(sig_data, SIGMOID_WIDTH, BLOCK), ys, strict=True)]
    y_bus = unsigned_signal(BLOCK * SILU_Y_BITS)
    parts.append(drive_packed(ys, y_bus))

    # stage 5: rq(y) on the bus
    m_bus, e_out = unsigned_signal(BLOCK * ACT_BITS), signed_signal(EXP_BITS)
    parts += [requant(y_bus, y_exp, m_bus, e_out, bits=ACT_BITS, in_width=SILU_Y_BITS),
              b16_output(clk, dclk, rst, s4, m_bus, e_out, out_valid, out_data, out_exp)]
    return parts, product_exponent


@block
def silu_front_lane(dclk, enable, gate_m, j, u, gate_shift, index, product):
    """Lane j: k = clamp(floor_shift(g16, s_g - 16) + 4096, 0, 8191) and g16 * u16."""
    g = gate_m((j + 1) * ACT_BITS, j * ACT_BITS)
    g_wide = lane_sign_extended(gate_m, ACT_BITS, j, GATE_SHIFT_WIDTH)
    wide_bits = GATE_SHIFT_WIDTH

    @always(dclk.posedge)
    def front():
        if enable:
            product.next = g.signed() * u.signed()
            shifted = intbv(0, min=-(1 << (wide_bits - 1)), max=1 << (wide_bits - 1))
            shifted[:] = g_wide.signed() << gate_shift
            shifted[:] = (shifted >> (ACC_FRAC - spec.SIGMOID_GRID_FRAC)) + SIGMOID_CENTER
            if shifted < 0:
                index.next = 0
            elif shifted > SIGMOID_LAST:
                index.next = SIGMOID_LAST
            else:
                index.next = shifted[SIGMOID_ADDR_BITS:]

    return front


@block
def silu_back_lane(dclk, delay_enable, product, scale_enable, sig, y):
    """Stage 3 holds g16 * u16 beside the ROM read; stage 4 scales it by SIG (unsigned)."""
    waiting = signed_signal(len(product))
    sig_wide = zero_extended(sig, SIGMOID_WIDTH + 1)

    @always(dclk.posedge)
    def hold_product():
        if delay_enable:
            waiting.next = product

    @always(dclk.posedge)
    def scale():
        if scale_enable:
            y.next = waiting * sig_wide.signed()

    return hold_product, scale


# --- rope_unit --------------------------------------------------------------------------------

ROPE_PRODUCT_BITS = ACT_BITS + ROPE_ENTRY_BITS  # u * cos
ROPE_OUT_BITS = ROPE_PRODUCT_BITS  # |u'| < 2**31 (numerics 6): 32-bit words into the requantizer


def rope_rom_depth(positions: int, block_bits: int) -> int:
    return positions << block_bits


@block
def rope_unit(clk, rst, in_valid, in_data, token_position, pair_block, out, rope):
    """numerics 6: an ACC block of one head (Q or K projection) -> the rotated B16 block.

    token_position: the table row; pair_block: the block's index inside its head, i.e. its
    first pair index ("pair base") divided by 16: head_dim is a multiple of 32, so a block
    always starts at a multiple of 16 pairs. Table: a 1-port LUT ROM of ROPE_WIDTH-bit words
    (rope_rom_words): rope_addr = {token_position, pair_block}, rope_data, one cycle of read
    latency.

    Stateless; ROPE_LATENCY = 4:
        1  the ACC block into the requantizer's operand register; the table address
        2  u = rq(acc, -24, 16) held per pair; the ROM reads cos/sin
        3  u'_2i = u_2i C - u_2i+1 S, u'_2i+1 = u_2i S + u_2i+1 C (exact, 32 bits)
        4  rq(u', e - 14, 16) on the bus
    """
    out_valid, out_data, out_exp = out.valid, out.data, out.exp  # a BlockBus
    rope_en, rope_addr, rope_data = rope.en, rope.addr, rope.data  # a RomPort
    addr_bits = len(token_position) + len(pair_block)
    _check_widths("rope_unit", in_data=(in_data, BLOCK * ACC_BITS), out_data=(out_data, BLOCK * ACC_BITS),
                  out_exp=(out_exp, EXP_BITS), rope_addr=(rope_addr, addr_bits), rope_data=(rope_data, ROPE_WIDTH))
    dclk, s2, s3 = bit_signal(), bit_signal(), bit_signal()
    s1 = rope_en  # the ROM reads in the cycle after stage 1
    parts = [datapath_clock(clk, [in_valid, s1, s2, s3], dclk),
             valid_pipe(clk, rst, in_valid, s1), valid_pipe(clk, rst, s1, s2), valid_pipe(clk, rst, s2, s3)]

    @always(clk.posedge)
    def table_address():  # on clk, as the ROM that reads it
        if in_valid:
            rope_addr.next = concat(token_position, pair_block)

    # stage 1: requantize (e_in = 0: e_out is the shift s, e = s - 24)
    u_bus, u_shift = unsigned_signal(BLOCK * ACT_BITS), signed_signal(EXP_BITS)
    parts.append(acc_requantizer(dclk, in_valid, in_data, u_bus, u_shift))

    # stages 2-3: hold u per pair, rotate
    rotated = [signed_signal(ROPE_OUT_BITS) for _ in range(BLOCK)]
    u_lanes = bus_lanes(u_bus, ACT_BITS, BLOCK)
    entries = bus_lanes(rope_data, ROPE_ENTRY_BITS, BLOCK)  # cos, sin of pair 0, then pair 1, ...
    parts += [rope_pair(dclk, s1, u_lanes[2 * k], u_lanes[2 * k + 1], s2, entries[2 * k], entries[2 * k + 1],
                        rotated[2 * k], rotated[2 * k + 1]) for k in range(PAIRS)]
    shift2, rotated_exp = signed_signal(EXP_BITS), signed_signal(EXP_BITS)
    rotated_bus = unsigned_signal(BLOCK * ROPE_OUT_BITS)
    parts.append(drive_packed(rotated, rotated_bus))

    @always(dclk.posedge)
    def rotated_exponent():
        if s1:
            shift2.next = u_shift
        if s2:
            rotated_exp.next = shift2 - (ACC_FRAC + spec.ROPE_FRAC)  # e - 14 with e = s - 24

    # stage 4: rq(u') on the bus
    m_bus, e_out = unsigned_signal(BLOCK * ACT_BITS), signed_signal(EXP_BITS)
    parts += [requant(rotated_bus, rotated_exp, m_bus, e_out, bits=ACT_BITS, in_width=ROPE_OUT_BITS),
              b16_output(clk, dclk, rst, s3, m_bus, e_out, out_valid, out_data, out_exp)]
    return parts, table_address, rotated_exponent


@block
def rope_pair(dclk, load, a_in, b_in, rotate, cos, sin, a_out, b_out):
    """One pair (2i, 2i+1): hold u, then rotate by the table's cos/sin (int16, 2**-14)."""
    a, b = signed_signal(ACT_BITS), signed_signal(ACT_BITS)
    product_bits = ROPE_PRODUCT_BITS

    @always(dclk.posedge)
    def hold():
        if load:
            a.next = a_in.signed()
            b.next = b_in.signed()

    @always(dclk.posedge)
    def rotate_pair():
        if rotate:
            ac = intbv(0, min=-(1 << (product_bits - 1)), max=1 << (product_bits - 1))
            bs = intbv(0, min=-(1 << (product_bits - 1)), max=1 << (product_bits - 1))
            a_sin = intbv(0, min=-(1 << (product_bits - 1)), max=1 << (product_bits - 1))
            bc = intbv(0, min=-(1 << (product_bits - 1)), max=1 << (product_bits - 1))
            total = intbv(0, min=-(1 << (product_bits - 1)), max=1 << (product_bits - 1))  # |u'| < 2**31
            ac[:] = a * cos.signed()
            bs[:] = b * sin.signed()
            a_sin[:] = a * sin.signed()
            bc[:] = b * cos.signed()
            total[:] = ac - bs
            a_out.next = total
            total[:] = a_sin + bc
            b_out.next = total

    return hold, rotate_pair


# --- norm_unit --------------------------------------------------------------------------------

NORM_SQUARE_BITS = 2 * ACT_BITS  # x16**2, as the unsigned 32-bit product
NORM_POWER_BITS = NORM_SQUARE_BITS + 5  # P_b: 32 squares
NORM_SS_BITS = 47  # SS before eps: up to MAX_NORM_BLOCKS powers P_b < 2**35 (eps makes it 48 bits)
NORM_EPS_BITS = 46  # floor(EPS_Q / 2**16): the eps shift 64 + 2X is at least 16 (X >= -24)
NORM_EPS_DROP = 16
MAX_NORM_BLOCKS = 1 << (NORM_SS_BITS - 35)
NORM_LENGTH_BITS = 7  # bitlen(SS) and j as signed words
NORM_GAIN_PRODUCT_BITS = ACT_BITS + GAIN_BITS  # x16 * G
NORM_Y_BITS = NORM_GAIN_PRODUCT_BITS + RSQRT_WIDTH + 1  # x16 * G * R with R unsigned (|y| < 2**55 fits)
RSQRT_WINDOW_BASE = 21  # RSQRT_LUT index = (t >> 21) - 512
RSQRT_INDEX_OFFSET = 512
NORM_HEADER_EXP_LSB = EPS_Q_BITS  # e_G sits above EPS_Q in the header word
# Every exponent of the norm fits 8 bits when e_G does this range: with s_b - S in [-33, 0],
# j in [-15, 8] and the final shift in [0, 39], the output exponent is in [e_G - 72, e_G + 23].
NORM_E_G_MIN, NORM_E_G_MAX = -56, 100

NormPhase = enum("IDLE", "LOAD", "SUM", "ROOT", "EMIT")


def norm_count_bits(max_blocks: int) -> int:
    """Width of n_blocks and of the block counters: they hold max_blocks itself."""
    return max_blocks.bit_length()


class NormSteps:
    """What the norm's control tells its datapath: one-cycle strobes, each starting one step of a
    phase, and the block pointers of the lane and block memories (they wrap after the last block,
    harmlessly). All are registers of the control process (reset), but for `accept` (wiring) and
    `power_valid` (the LOAD datapath's answer: P_b is ready)."""

    def __init__(self, index_bits: int, count_bits: int):
        self.accept = bit_signal()  # LOAD: a block is taken into the requantizer's operand
        self.load_held = bit_signal()  # LOAD: its rq'd mantissas and shift are ready to store
        self.clear_max = bit_signal()  # LOAD: a new vector, S restarts at 0
        self.power_valid = bit_signal()  # LOAD: P_b leaves the adder tree
        self.sum_issue = bit_signal()  # SUM: add the aligned powers of blocks sum_idx.. (NORM_SUM_TERMS)
        self.header_latch = bit_signal()  # ROOT: the header word (EPS_Q, e_G) is on gain_data
        self.root_a, self.root_b = bit_signal(), bit_signal()  # ROOT: t and j, then the table index
        self.r_latch = bit_signal()  # ROOT: R is on rsqrt_data
        self.emit_rd, self.emit_last = bit_signal(), bit_signal()  # EMIT: read block rd_ptr (the last one)
        self.empty_done = bit_signal()  # n_blocks was 0: done without a phase
        self.wr_ptr, self.power_ptr, self.rd_ptr = (unsigned_signal(index_bits) for _ in range(3))
        self.sum_idx = unsigned_signal(norm_sum_index_bits(index_bits))  # steps by NORM_SUM_TERMS
        self.count = unsigned_signal(count_bits)  # the vector's blocks (SUM adds no power past them)


class NormEmitValids:
    """The EMIT pipeline's valid bits: x16 fetched, x16 * G, then y = x16 * G * R (into the final
    requantizer)."""

    def __init__(self):
        self.x, self.xg, self.y = bit_signal(), bit_signal(), bit_signal()


@block
def norm_unit(clk, rst, start, n_blocks, gain_base, in_valid, in_data, out, done, gain, rsqrt, max_blocks=64):
    """numerics 5: RMSNorm of a vector of n_blocks ACC blocks -> n_blocks B16 blocks.

    Handshake: `start` (taken only while idle) with n_blocks (1..max_blocks; 0 only raises
    `done`, after the edge that follows start's) and gain_base (the consts-ROM address of the gain
    vector's header word, norm_const_words). The input blocks follow on the in_ bus, from the
    cycle after start on, at any pace; beats beyond n_blocks, or while not loading, are
    ignored. The unit then emits the n_blocks B16 blocks one per cycle, in input order, and
    raises `done` with the last.

    Consts ROM port (gain_en, gain_addr, gain_data = 32 x 24-bit gains or the header word),
    RSQRT ROM port (rsqrt_en, rsqrt_addr, rsqrt_data = RSQRT_LUT[k], 17 bits); both one cycle of
    read latency.

    Phases (timings in cycles, n = n_blocks):
        LOAD  each block: rq(x, -24, 16) into 32 lane memories (the unit keeps the rq'd
              input), the block shift s_b, and P_b = sum x16**2 through a 5-level adder tree
        SUM   ceil(n / NORM_SUM_TERMS) cycles: SS = sum_b floor_shift(P_b, 2(s_b - S)),
              S = max s_b (X = S - 24), NORM_SUM_TERMS blocks' terms a cycle (the sum of
              integers is exact, so its grouping does not matter)
        ROOT  SS += floor(EPS_Q / 2**(16 + 2S)); SS = max(SS, 1); j, t and the table index;
              the ROM read; R
        EMIT  one block per cycle: y = x16 * G * R, rq(y, s_b + e_G - 31 - j - S, 16)
    Latency: with the last input block presented before rising edge k, output block b leaves
    after edge k + norm_sum_cycles(n) + NORM_TAIL_LATENCY + b, and done is high with the last one.
    The edges from k on: 8 to drain LOAD (operand, squares, 5 tree levels, P_b write), those of SUM,
    2 of ROOT, 5 of EMIT (read, x16 * G, * R, rq and the output register). ROOT's last steps (the
    table index, the ROM read, R) overlap EMIT's first two: R is registered at the edge before the
    first * R.

    Exponents are 8-bit words throughout: they cannot leave [-128, 127] for e_G in
    [NORM_E_G_MIN, NORM_E_G_MAX], the range norm_const_words accepts (real gains give e_G
    near -18).
    """
    out_valid, out_data, out_exp = out.valid, out.data, out.exp  # a BlockBus
    gain_en, gain_addr, gain_data = gain.en, gain.addr, gain.data  # RomPorts
    rsqrt_en, rsqrt_addr, rsqrt_data = rsqrt.en, rsqrt.addr, rsqrt.data
    count_bits, index_bits = norm_count_bits(max_blocks), (max_blocks - 1).bit_length()
    if not 2 <= max_blocks <= MAX_NORM_BLOCKS:
        raise HardwireError(f"norm_unit holds 2..{MAX_NORM_BLOCKS} blocks, not {max_blocks}")
    _check_widths("norm_unit", n_blocks=(n_blocks, count_bits), in_data=(in_data, BLOCK * ACC_BITS),
                  out_data=(out_data, BLOCK * ACC_BITS), out_exp=(out_exp, EXP_BITS),
                  gain_addr=(gain_addr, len(gain_base)), gain_data=(gain_data, GAIN_WIDTH),
                  rsqrt_addr=(rsqrt_addr, RSQRT_ADDR_BITS), rsqrt_data=(rsqrt_data, RSQRT_WIDTH))

    steps, emitting = NormSteps(index_bits, count_bits), NormEmitValids()
    dclk, busy = bit_signal(), bit_signal()
    # what the phases hand on: the rq'd block (to the lanes), s_b and P_b per block, S, SS, R and
    # the exponent base e_G - 31 - j - S
    load_m = unsigned_signal(BLOCK * ACT_BITS)
    squares = [unsigned_signal(NORM_SQUARE_BITS) for _ in range(BLOCK)]
    shifts = [Signal(intbv(0)[EXP_BITS:]) for _ in range(max_blocks)]  # s_b per block (<= 33)
    powers = [Signal(intbv(0)[NORM_POWER_BITS:]) for _ in range(max_blocks)]  # P_b per block
    s_max, ss = unsigned_signal(EXP_BITS), unsigned_signal(NORM_SS_BITS)
    r_value, e_base = unsigned_signal(RSQRT_WIDTH), signed_signal(EXP_BITS)
    ys = [signed_signal(NORM_Y_BITS) for _ in range(BLOCK)]
    r_wide = zero_extended(r_value, RSQRT_WIDTH + 1)
    lanes = [norm_lane(dclk, steps, emitting, load_m, j, squares[j], gain_data, r_wide, ys[j], max_blocks)
             for j in range(BLOCK)]
    return (norm_control(clk, rst, start, n_blocks, gain_base, in_valid, steps, emitting, gain_en, gain_addr,
                         rsqrt_en, busy, count_bits),
            datapath_clock(clk, [busy], dclk),
            norm_load(clk, dclk, rst, in_data, steps, load_m, squares, shifts, powers, s_max),
            norm_sum(dclk, steps, shifts, powers, s_max, ss),
            norm_root(dclk, steps, gain_data, s_max, ss, rsqrt_addr, rsqrt_data, r_value, e_base),
            lanes,
            norm_emit(clk, dclk, rst, steps, emitting, shifts, e_base, ys, out_valid, out_data, out_exp, done))


@block
def norm_control(clk, rst, start, n_blocks, gain_base, in_valid, steps, emitting, gain_en, gain_addr, rsqrt_en,
                 busy, count_bits):
    """The phase FSM: counts the blocks of each phase and sends the datapath its strobes; reads the
    gains' ROM words (the header at start, a block per EMIT cycle) and starts the RSQRT read."""
    phase = Signal(NormPhase.IDLE)
    count, load_left, power_left, sum_left, emit_left = (unsigned_signal(count_bits) for _ in range(5))
    sum_ptr, emit_ptr = unsigned_signal(len(steps.sum_idx)), unsigned_signal(len(steps.wr_ptr))
    gain_ptr = unsigned_signal(len(gain_base))
    loading, header_rd = bit_signal(), bit_signal()

    @always_comb
    def activity():  # the datapath clock runs from start until the last block has left
        busy.next = start or phase != NormPhase.IDLE or steps.emit_rd or emitting.x or emitting.xg or emitting.y

    @always_comb
    def acceptance():
        steps.accept.next = in_valid and loading

    @always_seq(clk.posedge, reset=rst)
    def control():
        steps.clear_max.next = 0
        steps.empty_done.next = 0
        header_rd.next = 0
        gain_en.next = 0
        steps.sum_issue.next = 0
        steps.root_a.next = 0
        steps.emit_rd.next = 0
        steps.emit_last.next = 0
        steps.load_held.next = steps.accept
        steps.header_latch.next = header_rd
        steps.root_b.next = steps.root_a
        rsqrt_en.next = steps.root_b
        steps.r_latch.next = rsqrt_en
        if steps.load_held:
            steps.wr_ptr.next = steps.wr_ptr + 1
        if phase == NormPhase.IDLE:
            if start and n_blocks == 0:
                steps.empty_done.next = 1
            elif start:
                phase.next = NormPhase.LOAD
                count.next = n_blocks
                steps.count.next = n_blocks
                load_left.next = n_blocks
                power_left.next = n_blocks
                loading.next = 1
                steps.clear_max.next = 1
                steps.wr_ptr.next = 0
                steps.power_ptr.next = 0
                gain_addr.next = gain_base  # the header word: EPS_Q and e_G
                gain_en.next = 1
                header_rd.next = 1
                gain_ptr.next = gain_base + 1
        elif phase == NormPhase.LOAD:
            if steps.accept:
                load_left.next = load_left - 1
                if load_left == 1:
                    loading.next = 0
            if steps.power_valid:
                steps.power_ptr.next = steps.power_ptr + 1
                power_left.next = power_left - 1
                if power_left == 1:
                    phase.next = NormPhase.SUM
                    sum_ptr.next = 0
                    sum_left.next = (count + NORM_SUM_TERMS - 1) // NORM_SUM_TERMS
        elif phase == NormPhase.SUM:
            steps.sum_issue.next = 1
            steps.sum_idx.next = sum_ptr
            sum_ptr.next = sum_ptr + NORM_SUM_TERMS
            sum_left.next = sum_left - 1
            if sum_left == 1:
                phase.next = NormPhase.ROOT
        elif phase == NormPhase.ROOT:
            if steps.sum_issue:  # the last power is summed at this edge
                steps.root_a.next = 1
            if steps.root_a:  # EMIT's reads and x16 * G need no R: its * R comes after R's edge
                phase.next = NormPhase.EMIT
                emit_ptr.next = 0
                emit_left.next = count
        else:  # EMIT: read block emit_ptr's gains and mantissas
            gain_addr.next = gain_ptr
            gain_ptr.next = gain_ptr + 1
            gain_en.next = 1
            steps.emit_rd.next = 1
            steps.rd_ptr.next = emit_ptr
            emit_ptr.next = emit_ptr + 1
            emit_left.next = emit_left - 1
            if emit_left == 1:
                steps.emit_last.next = 1
                phase.next = NormPhase.IDLE

    return activity, acceptance, control


@block
def norm_load(clk, dclk, rst, in_data, steps, load_m, squares, shifts, powers, s_max):
    """LOAD: rq(x, -24, 16) (e_in = 0: e_out is s_b) into `load_m` for the lanes, which square it
    into `squares`; s_b per block and their maximum S; P_b per block through the adder tree."""
    load_shift = signed_signal(EXP_BITS)
    block_shift = load_shift(EXP_BITS, 0)
    squares_valid, power = bit_signal(), unsigned_signal(NORM_POWER_BITS)

    @always(dclk.posedge)
    def block_shifts():
        if steps.clear_max:
            s_max.next = 0
        elif steps.load_held:
            shifts[steps.wr_ptr].next = block_shift
            if block_shift > s_max:
                s_max.next = block_shift

    @always(dclk.posedge)
    def block_powers():
        if steps.power_valid:
            powers[steps.power_ptr].next = power

    return (acc_requantizer(dclk, steps.accept, in_data, load_m, load_shift),
            valid_pipe(clk, rst, steps.load_held, squares_valid),
            pipelined_sum(clk, dclk, rst, squares_valid, squares, power, steps.power_valid),
            block_shifts, block_powers)


@block
def norm_sum(dclk, steps, shifts, powers, s_max, ss):
    """SUM: the powers aligned to the largest block exponent, each floored (numerics 5 step 2)."""
    index_bits = len(steps.sum_idx)  # sum_idx + a term: never wraps
    block_bits = len(steps.wr_ptr)  # a block's index in the unit's memories
    pad = NORM_SS_BITS - NORM_POWER_BITS

    @always(dclk.posedge)
    def sum_of_squares():
        if steps.sum_issue:
            gap = intbv(0)[EXP_BITS:]
            term = intbv(0)[NORM_POWER_BITS:]
            index = intbv(0)[index_bits:]  # sum_idx + the term
            limit = intbv(0)[index_bits:]
            total = intbv(0)[NORM_SS_BITS:]
            index[:] = steps.sum_idx
            limit[:] = concat(intbv(0)[index_bits - len(steps.count):], steps.count)
            for _ in range(NORM_SUM_TERMS):
                if index < limit:
                    gap[:] = s_max - shifts[index[block_bits:]]  # below count: a block's own index
                    term[:] = powers[index[block_bits:]] >> concat(gap, bool(0))
                    total[:] = total + concat(intbv(0)[pad:], term)
                index[:] = index + 1
            if steps.sum_idx == 0:
                ss.next = total
            else:
                ss.next = ss + total

    return sum_of_squares


@block
def norm_root(dclk, steps, gain_data, s_max, ss, rsqrt_addr, rsqrt_data, r_value, e_base):
    """ROOT: from S and SS to R = RSQRT_LUT[k] and the exponent base e_G - 31 - j - S, in three
    enabled steps (a: t and j; b: the table index; the ROM read; R)."""
    # the header word of the gain vector: EPS_Q >> 16 (bits 61..16) and e_G
    eps_high, e_g = unsigned_signal(NORM_EPS_BITS), signed_signal(EXP_BITS)

    @always(dclk.posedge)
    def header():
        if steps.header_latch:
            eps_high.next = gain_data[NORM_EPS_DROP + NORM_EPS_BITS:NORM_EPS_DROP]
            e_g.next = gain_data[NORM_HEADER_EXP_LSB + EXP_BITS:NORM_HEADER_EXP_LSB].signed()

    # ROOT a: eps, max(SS, 1), j = ceil((bitlen(SS) - 32) / 2)
    total = unsigned_signal(NORM_SS_BITS + 1)
    j_value = signed_signal(NORM_LENGTH_BITS)
    eps_wide = zero_extended(eps_high, NORM_SS_BITS)
    total_bits = NORM_SS_BITS + 1

    @always(dclk.posedge)
    def root_total():
        if steps.root_a:
            term = intbv(0)[NORM_SS_BITS:]
            t = intbv(0)[NORM_SS_BITS + 1:]
            length = intbv(0, min=-(1 << (NORM_LENGTH_BITS - 1)), max=1 << (NORM_LENGTH_BITS - 1))
            position = intbv(0, min=-(1 << (NORM_LENGTH_BITS - 1)), max=1 << (NORM_LENGTH_BITS - 1))
            term[:] = eps_wide >> concat(s_max, bool(0))  # EPS_Q >> (16 + 2S)
            t[:] = ss + term
            if t == 0:
                t[:] = 1
            total.next = t
            for i in range(total_bits):
                position[:] = position + 1
                if t[i]:
                    length[:] = position
            length[:] = length - 31
            j_value.next = length >> 1  # ceil((bitlen - 32) / 2) = floor((bitlen - 31) / 2)

    # ROOT b: the table index (t >> 21) - 512 with t = floor_shift(SS, -2j), read as the 11-bit
    # window of SS at bit 21 + 2j; SS comes with 22 zero bits below so the window never starts
    # below bit 0. Also the exponent base e_G - 31 - j - S.
    below = RSQRT_WINDOW_BASE + 1
    total_low = ConcatSignal(total, intbv(0)[below:])
    j_wide = sign_extended(j_value, EXP_BITS)
    window_bits = RSQRT_ADDR_BITS

    @always(dclk.posedge)
    def root_index():
        if steps.root_b:
            start_bit = intbv(0, min=-(1 << (NORM_LENGTH_BITS - 1)), max=1 << (NORM_LENGTH_BITS - 1))
            position = intbv(0)[NORM_LENGTH_BITS:]
            window = intbv(0)[window_bits:]
            start_bit[:] = j_value + j_value + (RSQRT_WINDOW_BASE + below)
            position[:] = start_bit[NORM_LENGTH_BITS:]
            for k in range(window_bits):
                window[k] = total_low[position]
                position[:] = position + 1
            rsqrt_addr.next = window - RSQRT_INDEX_OFFSET
            e_base.next = e_g - j_wide.signed() - s_max.signed() - 31  # s_max <= 33: positive as signed

    @always(dclk.posedge)
    def rsqrt_register():
        if steps.r_latch:
            r_value.next = rsqrt_data

    return header, root_total, root_index, rsqrt_register


@block
def norm_emit(clk, dclk, rst, steps, emitting, shifts, e_base, ys, out_valid, out_data, out_exp, done):
    """EMIT: the lanes' x16 * G * R (`ys`) into the final requantizer, exponent s_b + e_base; done
    with the last block (or straight after an empty start)."""
    last1, last2, last3 = bit_signal(), bit_signal(), bit_signal()
    s_emit, e_block = unsigned_signal(EXP_BITS), signed_signal(EXP_BITS)

    @always(dclk.posedge)
    def emit_exponent():
        if steps.emit_rd:
            s_emit.next = shifts[steps.rd_ptr]
        if emitting.x:
            e_block.next = s_emit.signed() + e_base

    y_bus, y_exp = unsigned_signal(BLOCK * NORM_Y_BITS), signed_signal(EXP_BITS)
    m_bus, e_out = unsigned_signal(BLOCK * ACT_BITS), signed_signal(EXP_BITS)

    @always_seq(clk.posedge, reset=rst)
    def finish():
        done.next = (emitting.y and last3) or steps.empty_done

    return (valid_pipe(clk, rst, steps.emit_rd, emitting.x), valid_pipe(clk, rst, emitting.x, emitting.xg),
            valid_pipe(clk, rst, emitting.xg, emitting.y),
            valid_pipe(clk, rst, steps.emit_last, last1), valid_pipe(clk, rst, last1, last2),
            valid_pipe(clk, rst, last2, last3),
            emit_exponent, drive_packed(ys, y_bus), guarded_register(dclk, emitting.xg, e_block, y_exp),
            requant(y_bus, y_exp, m_bus, e_out, bits=ACT_BITS, in_width=NORM_Y_BITS),
            b16_output(clk, dclk, rst, emitting.y, m_bus, e_out, out_valid, out_data, out_exp),
            finish)


@block
def norm_lane(dclk, steps, emitting, load_m, j, square, gain_data, r_wide, y, max_blocks):
    """Lane j of the norm: keeps x16 per block, squares it on the way in, and on the way out
    computes x16 * G (40 bits), then * R into the final requantizer's operand."""
    m = load_m((j + 1) * ACT_BITS, j * ACT_BITS)
    gain = gain_data((j + 1) * GAIN_BITS, j * GAIN_BITS)
    memory = [signed_signal(ACT_BITS) for _ in range(max_blocks)]
    x, xg = signed_signal(ACT_BITS), signed_signal(NORM_GAIN_PRODUCT_BITS)

    @always(dclk.posedge)
    def store():
        if steps.load_held:
            memory[steps.wr_ptr].next = m.signed()
            square.next = m.signed() * m.signed()

    @always(dclk.posedge)
    def fetch():
        if steps.emit_rd:
            x.next = memory[steps.rd_ptr]

    @always(dclk.posedge)
    def gain_product():
        if emitting.x:
            xg.next = x * gain.signed()

    @always(dclk.posedge)
    def rescale():
        if emitting.xg:
            y.next = xg * r_wide.signed()

    return store, fetch, gain_product, rescale
