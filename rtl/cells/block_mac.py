"""The block dot-product lane of docs/numerics.md section 3: one GGUF block per cycle.

For block b of a weight row and the matching B16 activation block:
    S   = sum_j q_j * a_j                      (|S| < 2**27)
    A   = sum_j a_j                            (Q4_1 only)
    T_b = sat_shift(M_d * S, E_d + e_b + 24, TERM_BITS) + sat_shift(M_m * A, E_m + e_b + 24, TERM_BITS)
and the row result y = sat(sum_b T_b, ACC_BITS), summed exactly in a 64-bit accumulator.

Ports (sampled on the rising edge of clk):
    rst       in   synchronous reset of the valid bits (data registers are not reset)
    in_valid  in   a block is presented this cycle
    first     in   ... and it is the first block of a row (the accumulator restarts)
    last      in   ... and it is the last block of a row (y is produced)
    fmt       in   2-bit strap: FORMAT_Q8_0, FORMAT_Q4_0 or FORMAT_Q4_1
    codes     in   32 lanes of 8 bits: Q8_0 int8 codes; Q4_0/Q4_1 nibbles in the low 4 bits
    d_bits    in   fp16 bit pattern of the block scale d
    m_bits    in   fp16 bit pattern of the Q4_1 offset m (ignored for other formats)
    acts      in   32 lanes of activation mantissas, ACT_BITS (B16) or 8 bits each
    e_act     in   signed 8-bit block exponent e_b of the activations
    term      out  T_b, TERM_BITS + 1 bits: each of its two terms saturates on its own (section 3)
    term_valid out  (term and term_valid may be None: then T_b is not brought out)
    y         out  the row result in ACC, ACC_BITS bits (the accumulator is exact for the
                   MAX_BLOCKS_PER_ROW blocks section 3 allows, and wraps beyond)
    y_valid   out  one cycle per row

Pipeline: one block per cycle, rows back to back. A block presented with in_valid high before
rising edge k has its T_b on `term` (term_valid high) after edge k + LATENCY - 1, and a row's
y leaves with its last block's term (y_valid high). Stages:
    1      decode codes and fp16 scales; 32 multipliers
    2..6   the S and A adder trees, one register per level
    7      the scale products M_d * S and M_m * A
    8      the two saturating floor shifts
    9      T_b, the accumulator, the final saturation
Every datapath register loads only under its stage's valid bit, so an idle lane costs the
simulator untaken branches (docs/architecture.md 4b) and toggles nothing in silicon.

fp16 values are decoded exactly (section 2): M = +-(1024 + f), E = x - 25 for normal x in
1..30, M = +-f, E = -24 for subnormals. The bias is folded into the shift: E + e_b + 24 =
max(x, 1) + e_b - 1. x = 31 (inf/NaN) never reaches the chip; the loader refuses it.
Q4_0's nibble - 8 is the nibble with its top bit flipped, read as a 4-bit signed number.
"""

from __future__ import annotations

from myhdl import always, always_seq, block, intbv

from hardwire.golden import spec
from hardwire.golden.errors import HardwireError
from hardwire.golden.spec import ACC_BITS, BLOCK, TERM_BITS

from ..bus import EXP_BITS
from .wiring import (
    bit_signal,
    bus_lanes,
    guarded_add,
    guarded_register,
    pipelined_adder_tree,
    sign_extended,
    signed_signal,
    valid_pipe,
)

FORMAT_Q8_0, FORMAT_Q4_0, FORMAT_Q4_1 = 0, 1, 2
FORMAT_BITS = 2
CODE_BITS = 8
ACT_BITS = spec.ACT_BITS  # the activation lanes of the chip (B16); 8-bit lanes are also accepted
FP16_BITS = 16
LATENCY = 9  # edges from a block at the inputs to its T_b (and its row's y) at the outputs
TREE_LEVELS = 5  # log2(BLOCK)
ACCUMULATOR_BITS = 64  # exact for MAX_BLOCKS_PER_ROW blocks: 2 x 512 x 2**51 = 2**61
FP16_MANT_BITS = 12  # |M| < 2**11
FP16_EXP_BITS = 5
SHIFT_BITS = 10  # max(x, 1) + e_b - 1 for an 8-bit e_b: [-128, 157]


@block
def block_mac(clk, rst, in_valid, first, last, fmt, codes, d_bits, m_bits, acts, e_act,
              term, term_valid, y, y_valid):
    act_bits = _check_ports(fmt, codes, d_bits, m_bits, acts, e_act, term, y)
    product_bits, sum_bits, act_sum_bits = CODE_BITS + act_bits, CODE_BITS + act_bits + TREE_LEVELS, \
        act_bits + TREE_LEVELS

    # after_stage[k] = (valid, first, last) of stage k's output; stage 0 is the input ports.
    # (Ports stay out of Python lists: MyHDL refuses a top-level port inside a list.)
    marks = [(bit_signal(), bit_signal(), bit_signal()) for _ in range(LATENCY - 1)]
    after_stage = _StageMarks((in_valid, first, last), marks)
    controls = [stage_marks(clk, rst, *after_stage[k], *after_stage[k + 1]) for k in range(LATENCY - 1)]
    valid_in = after_stage.valid

    # stage 1: products and activations per lane, the scales' mantissas and shifts
    products = [signed_signal(product_bits) for _ in range(BLOCK)]
    act_regs = [signed_signal(act_bits) for _ in range(BLOCK)]
    act_lanes = bus_lanes(acts, act_bits, BLOCK)
    lanes = [lane_product(clk, in_valid, fmt, code, act, p)
             for code, act, p in zip(bus_lanes(codes, CODE_BITS, BLOCK), act_lanes, products, strict=True)]
    lanes += [act_register(clk, in_valid, act, a) for act, a in zip(act_lanes, act_regs, strict=True)]
    scale_stages = [[signed_signal(FP16_MANT_BITS), signed_signal(SHIFT_BITS),
                     signed_signal(FP16_MANT_BITS), signed_signal(SHIFT_BITS)] for _ in range(1 + TREE_LEVELS)]
    d_mant1, d_shift1, m_mant1, m_shift1 = scale_stages[0]
    scales = [fp16_scale(clk, in_valid, fmt, d_bits, e_act, d_mant1, d_shift1, is_offset=False),
              fp16_scale(clk, in_valid, fmt, m_bits, e_act, m_mant1, m_shift1, is_offset=True)]
    for k in range(TREE_LEVELS):  # the scales wait beside the trees
        scales += [guarded_register(clk, valid_in(k + 1), now, later)
                   for now, later in zip(scale_stages[k], scale_stages[k + 1], strict=True)]
    d_mant, d_shift, m_mant, m_shift = scale_stages[-1]

    # stages 2..6: the block sums
    block_sum, act_sum = signed_signal(sum_bits), signed_signal(act_sum_bits)
    tree_enables = [valid_in(k) for k in range(1, 1 + TREE_LEVELS)]
    trees = [pipelined_adder_tree(clk, tree_enables, products, block_sum),
             pipelined_adder_tree(clk, tree_enables, act_regs, act_sum)]

    # stage 7: scale products; stage 8: saturating floor shifts
    d_product, m_product = signed_signal(FP16_MANT_BITS + sum_bits), signed_signal(FP16_MANT_BITS + act_sum_bits)
    d_shift7, m_shift7 = signed_signal(SHIFT_BITS), signed_signal(SHIFT_BITS)
    d_term, m_term = signed_signal(TERM_BITS), signed_signal(TERM_BITS)
    scaling = [scale_product(clk, valid_in(6), d_mant, block_sum, d_product),
               scale_product(clk, valid_in(6), m_mant, act_sum, m_product),
               guarded_register(clk, valid_in(6), d_shift, d_shift7),
               guarded_register(clk, valid_in(6), m_shift, m_shift7),
               saturating_floor_shift(clk, valid_in(7), d_product, d_shift7, d_term),
               saturating_floor_shift(clk, valid_in(7), m_product, m_shift7, m_term)]

    # stage 9: the term, the accumulator, the row result
    valid8, first8, last8 = after_stage[8]
    accumulate = accumulator(clk, valid8, first8, last8, d_term, m_term, y)
    done = row_done(clk, rst, valid8, last8, y_valid)
    if term is not None:  # T_b itself: the cell's tests read it, the matmul engine does not
        done = done, guarded_add(clk, valid8, d_term, m_term, term), valid_pipe(clk, rst, valid8, term_valid)
    return controls, lanes, scales, trees, scaling, accumulate, done


class _StageMarks:
    """(valid, first, last) after each stage, the input ports as stage 0."""

    def __init__(self, ports, marks):
        self.ports, self.marks = ports, marks

    def __getitem__(self, k):
        return self.ports if k == 0 else self.marks[k - 1]

    def valid(self, k):
        return self[k][0]


@block
def stage_marks(clk, rst, valid, first, last, valid_out, first_out, last_out):
    """The valid bit (the only register the reset clears) and the row marks of one stage."""

    @always_seq(clk.posedge, reset=rst)
    def valid_bit():
        valid_out.next = valid

    @always(clk.posedge)
    def row_marks():
        if valid:
            first_out.next = first
            last_out.next = last

    return valid_bit, row_marks


@block
def row_done(clk, rst, valid, last, y_valid):
    @always_seq(clk.posedge, reset=rst)
    def flag():
        y_valid.next = valid and last

    return flag


@block
def lane_product(clk, enable, fmt, code, act, product):
    """q * a for one lane. q: Q8_0 the byte as int8; Q4_0 the nibble
    with its top bit flipped, as int4; Q4_1 the nibble, unsigned."""

    @always(clk.posedge)
    def multiply():
        if enable:
            weight = intbv(0)[CODE_BITS:]
            fill = False
            if fmt == FORMAT_Q8_0:
                weight[:] = code
            else:
                weight[3:] = code[3:]
                if fmt == FORMAT_Q4_1:
                    weight[3] = code[3]
                else:
                    weight[3] = not code[3]
                    fill = not code[3]
                for i in range(4, CODE_BITS):
                    weight[i] = fill
            product.next = weight.signed() * act.signed()

    return multiply


@block
def act_register(clk, enable, act, act_reg):
    """a kept beside its product, for the A sum."""

    @always(clk.posedge)
    def keep():
        if enable:
            act_reg.next = act.signed()

    return keep


@block
def fp16_scale(clk, enable, fmt, bits, e_act, mant, shift, is_offset):
    """An fp16 value held exactly: mant = M, shift = E + e_b + 24 = max(x, 1) + e_b - 1.
    The Q4_1 offset (is_offset) is zero for the other formats."""
    act_exp = sign_extended(e_act, SHIFT_BITS)

    @always(clk.posedge)
    def decode():
        if enable:
            magnitude = intbv(0)[FP16_MANT_BITS:]
            biased = intbv(1)[SHIFT_BITS:]  # subnormal: E = -24 = 1 - 25
            magnitude[10:] = bits[10:]
            if bits[15:10] != 0:
                magnitude[10] = 1  # the hidden one of normal numbers
                biased[FP16_EXP_BITS:] = bits[15:10]
            if is_offset and fmt != FORMAT_Q4_1:
                mant.next = 0
            elif bits[15]:
                mant.next = -magnitude.signed()
            else:
                mant.next = magnitude.signed()
            shift.next = biased.signed() + act_exp.signed() - 1

    return decode


@block
def scale_product(clk, enable, mant, block_sum, product):
    @always(clk.posedge)
    def multiply():
        if enable:
            product.next = mant * block_sum

    return multiply


@block
def saturating_floor_shift(clk, enable, product, shift, result):
    """result = sat(floor_shift(product, shift), len(result)) = spec.sat_shift: a left shift that
    saturates on overflow, or an arithmetic right shift (floor), clamped where all is sign."""
    pw, rw = len(product), len(result)
    wide_bits = pw + rw - 1  # holds product << (rw - 1), the largest shift that can still fit
    wide_in = sign_extended(product, wide_bits)

    @always(clk.posedge)
    def shift_and_clamp():
        if enable:
            wide = intbv(0, min=-(1 << (wide_bits - 1)), max=1 << (wide_bits - 1))
            limit = intbv(0, min=-(1 << (rw - 1)), max=1 << (rw - 1))
            amount = intbv(0)[len(shift):]
            limit[rw - 1] = 1  # the most negative word; its complement is the largest
            if product >= 0:
                limit[:] = ~limit
            if shift < 0:
                amount[:] = -shift
                if amount > pw - 1:
                    amount[:] = pw - 1  # the product is all sign by then
                wide[:] = wide_in.signed() >> amount
                result.next = wide[rw:].signed()
            elif shift >= rw and product != 0:
                result.next = limit
            else:
                amount[:] = shift
                wide[:] = wide_in.signed() << amount
                if wide[wide_bits:rw - 1].signed() == 0 or wide[wide_bits:rw - 1].signed() == -1:
                    result.next = wide[rw:].signed()
                else:
                    result.next = limit

    return shift_and_clamp


@block
def accumulator(clk, enable, first, last, d_term, m_term, y):
    """The 64-bit row sum of d_term + m_term restarts on `first`; y = sat(sum, 48) on `last`."""
    d_wide, m_wide = sign_extended(d_term, ACCUMULATOR_BITS), sign_extended(m_term, ACCUMULATOR_BITS)
    total = signed_signal(ACCUMULATOR_BITS)
    yw = len(y)

    @always(clk.posedge)
    def accumulate():
        if enable:
            running = intbv(0, min=-(1 << (ACCUMULATOR_BITS - 1)), max=1 << (ACCUMULATOR_BITS - 1))
            limit = intbv(0, min=-(1 << (yw - 1)), max=1 << (yw - 1))
            if first:
                running[:] = d_wide.signed() + m_wide.signed()
            else:
                running[:] = total + d_wide.signed() + m_wide.signed()
            total.next = running
            if last:
                limit[yw - 1] = 1
                if running >= 0:
                    limit[:] = ~limit
                if running[ACCUMULATOR_BITS:yw - 1].signed() == 0 or running[ACCUMULATOR_BITS:yw - 1].signed() == -1:
                    y.next = running[yw:].signed()
                else:
                    y.next = limit

    return accumulate


def _check_ports(fmt, codes, d_bits, m_bits, acts, e_act, term, y) -> int:
    """Port widths; returns the activation lane width."""
    act_bits = len(acts) // BLOCK
    expected = {"fmt": (fmt, FORMAT_BITS), "codes": (codes, BLOCK * CODE_BITS), "d_bits": (d_bits, FP16_BITS),
                "m_bits": (m_bits, FP16_BITS), "acts": (acts, BLOCK * act_bits), "e_act": (e_act, EXP_BITS),
                "term": (term, TERM_BITS + 1), "y": (y, ACC_BITS)}
    for name, (port, width) in expected.items():
        if port is not None and len(port) != width:
            raise HardwireError(f"block_mac port {name} is {len(port)} bits; it must be {width}")
    if act_bits not in (8, ACT_BITS):
        raise HardwireError(f"block_mac activation lanes must be 8 or {ACT_BITS} bits, not {act_bits}")
    return act_bits
