"""The block dot-product lane of docs/numerics.md sections 3 and 3.1: one 32-weight block per cycle.

Every weight format of section 2.1 goes through the same lane. For activation block b (its 32
B16 mantissas a_j and exponent e_b) and the matching 32 weights of a row, with sub-blocks k = 0
(weights 0..15) and k = 1 (weights 16..31):
    S_k = sum_{j in k} q_j * a_j       A_k = sum_{j in k} a_j
    P_b = sc_0 * S_0 + sc_1 * S_1      O_b = o_0 * A_0 + o_1 * A_1
    T_b = sat_shift(M_d * P_b, E_d + e_b + 24, TERM_BITS) + sat_shift(M_o * O_b, E_o + e_b + 24, TERM_BITS)
and the row result y = sat(sum_b T_b, ACC_BITS), summed exactly in a 64-bit accumulator.
A format with 32-weight sub-blocks (Q4_K, Q5_K) gives both halves the first scale and min
field; the 32-weight formats have sc = 1; Q4_1/Q5_1 have o = 1 and M_o = M_m; the K quants
with mins have o = mn and M_o = -M_dmin; the others have no offset term.

Ports (sampled on the rising edge of clk):
    rst       in   synchronous reset of the valid bits (data registers are not reset)
    in_valid  in   a block is presented this cycle
    first     in   ... and it is the first block of a row (the accumulator restarts)
    last      in   ... and it is the last block of a row (y is produced)
    fmt       in   FORMAT_BITS: the format code (rtl/isa.py FORMAT_CODE), from the microcode
    codes     in   32 fields of 8 bits: each weight's raw GGUF code bits, unpacked (Q8_0 the int8;
                   Q4_0/Q4_1/Q4_K the nibble; Q5_0/Q5_1/Q5_K the nibble and its high bit 4;
                   Q2_K the 2 bits; Q3_K the 2 bits and the hmask bit 2; Q6_K ql | qh << 4)
    scales    in   2 fields of 8 bits: the raw sub-block scale codes of weights 0..15 and 16..31
                   (Q2_K the low nibble; Q3_K and Q4_K/Q5_K the 6 bits; Q6_K the int8)
    mins      in   2 fields of 8 bits: the raw sub-block min codes (Q2_K 4 bits; Q4_K/Q5_K 6 bits)
    d_bits    in   fp16 bit pattern of the block's (or super-block's) scale d
    m_bits    in   fp16 bit pattern of Q4_1/Q5_1's offset m or the K quants' dmin
    acts      in   32 lanes of activation mantissas, ACT_BITS (B16) or 8 bits each
    e_act     in   signed 8-bit block exponent e_b of the activations
    term      out  T_b, TERM_BITS + 1 bits: each of its two terms saturates on its own (section 3)
    term_valid out  (term and term_valid may be None: then T_b is not brought out)
    y         out  the row result in ACC, ACC_BITS bits (the accumulator is exact for the
                   MAX_BLOCKS_PER_ROW blocks section 3 allows, and wraps beyond)
    y_valid   out  one cycle per row

The lane never re-quantizes: it applies each format's fixed offsets to the raw fields (codes
-8, -16, -4 or -32 and Q3_K's scale -32; Q8_0's and Q6_K's int8 as they are) from a table indexed
by the format code (FORMAT_TRAITS). A field bit the format does not define is never read. A
format code with no format reads every weight as 0. The code offsets leave the multipliers:
each weight is q_j = u_j - offset with the unsigned u_j = (code ^ sign) & mask (code_sign), so
S_k = sum u_j a_j - offset * A_k, the same integer.

Pipeline: one block per cycle, rows back to back. A block presented with in_valid high before
rising edge k has its T_b on `term` (term_valid high) after edge k + LATENCY - 1, and a row's
y leaves with its last block's term (y_valid high). Stages:
    1      decode sub-block scales and mins, fp16 scales; eight 4-weight dot products of u_j a_j
           (and, in activation_sums, 4-activation sums)
    2      each 16-weight half's sum of u_j a_j (and A_k, offset * A_k)
    3      P_b = sc_0 S_0 + sc_1 S_1 and O_b = o_0 A_0 + o_1 A_1
    4      the scale products M_d * P_b and M_o * O_b
    5      the two saturating floor shifts
    6      T_b, the accumulator, the final saturation
Every datapath register loads only under its stage's valid bit, so an idle lane costs the
simulator untaken branches (docs/architecture.md 4b) and toggles nothing in silicon.

Widths (section 3.1's table, for |a_j| <= 2**15 including the never-produced -32768): S_k 28
bits, P_b 34 (Q6_K's 128 * 32 * 2**15 * 32 = 2**32), O_b 27 (63 * 2**15 * 32 < 2**26); the
scale products 12 x 34 and 12 x 27 bits.

fp16 values are decoded exactly (section 2): M = +-(1024 + f), E = x - 25 for normal x in
1..30, M = +-f, E = -24 for subnormals. The bias is folded into the shift: E + e_b + 24 =
max(x, 1) + e_b - 1. x = 31 (inf/NaN) never reaches the chip; the loader refuses it.
"""

from __future__ import annotations

from dataclasses import dataclass

from gguf import GGMLQuantizationType as QT
from myhdl import ConcatSignal, always, always_comb, always_seq, block, concat, intbv

from hardwire.golden import spec
from hardwire.golden.errors import HardwireError
from hardwire.golden.spec import ACC_BITS, BLOCK, TERM_BITS

from ..bus import EXP_BITS
from ..die import LORA_EXP_FIELD
from ..isa import FORMAT_CODE
from .wiring import (
    as_signed,
    bit_signal,
    bus_lanes,
    guarded_add,
    guarded_register,
    or2,
    signed_signal,
    unsigned_signal,
    valid_pipe,
)

FORMAT_BITS = 4
CODE_BITS = 8
FIELD_BITS = 8  # a sub-block scale or min field
ACT_BITS = spec.ACT_BITS  # the activation lanes of the chip (B16); 8-bit lanes are also accepted
FP16_BITS = 16
LATENCY = 6  # edges from a block at the inputs to its T_b (and its row's y) at the outputs
HALF = BLOCK // 2  # weights per 16-weight sub-block
HALF_LEVELS = 4  # log2(HALF): the half sums are this many bits wider than a product
QUAD = 4  # weights per dot-product unit of stage 1
SCALE_PRODUCT_STAGE = 4  # the stage that multiplies by the fp16 scales' mantissas
SC_BITS = 8  # a decoded sub-block scale: Q6_K's int8, Q3_K's -32..31, 0..63, or 1
MIN_BITS = 8  # a decoded sub-block min (0..63) or Q4_1/Q5_1's 1, signed for the multiplier
ACCUMULATOR_BITS = 64  # exact for MAX_BLOCKS_PER_ROW blocks: 2 x 512 x 2**51 = 2**61
FP16_MANT_BITS = 12  # |M| < 2**11
FP16_EXP_BITS = 5
SHIFT_BITS = 10  # max(x, 1) + e_b - 1 for an 8-bit e_b: [-128, 157]
assert SHIFT_BITS == EXP_BITS + 2  # fp16_scale sign-extends e_b by two bits
MAX_SC_Q = 128 * 32  # the largest |sc * q| of any format (Q6_K); Q8_0's is 128
MAX_MIN = 63
WORD_BITS = 64  # the widest intermediate of the saturating shifts
NATIVE_BITS = 32  # a simulator's native integer: intermediates this wide need no sign extension


# fp16 bits of 2**e for each 6-bit two's complement exponent field; 0 outside [LORA_EXP_MIN, LORA_EXP_MAX]
def _fp16_of_exponent(field: int) -> int:
    e = field - (1 << LORA_EXP_FIELD) if field >= 1 << (LORA_EXP_FIELD - 1) else field
    if not spec.LORA_EXP_MIN <= e <= spec.LORA_EXP_MAX:
        return 0
    return (e + 15) << 10 if e >= -14 else 1 << (e + 24)


FP16_OF_EXPONENT = tuple(_fp16_of_exponent(f) for f in range(1 << LORA_EXP_FIELD))


@dataclass(frozen=True)
class Traits:
    """How the lane reads one format's raw fields. A field decodes as `field & keep`, except that
    with a `flip` bit (the top bit of an offset code) clear it decodes as `field | ~keep`: the
    code minus 2**(width-1), sign-extended."""

    code_keep: int
    code_flip: int = 0
    sc_keep: int = 0
    sc_flip: int = 0
    sc_one: bool = True  # the 32-weight formats: sc = 1
    sc_shared: bool = False  # 32-weight sub-blocks: weights 16..31 take the first scale and min
    mn_keep: int = 0
    mn_one: bool = False  # Q4_1/Q5_1: o = 1
    offset: bool = False  # the fp16 m/dmin is read
    negate: bool = False  # M_o = -M_dmin

    def words(self) -> tuple[int, ...]:
        """Packed as TRAIT_FIELDS lists them, one word per group, the first field in the least significant bits."""
        out = []
        for group in TRAIT_FIELDS:
            word, at = 0, 0
            for name, bits in group:
                word |= int(getattr(self, name)) << at
                at += bits
            out.append(word)
        return tuple(out)


# two groups of under 31 bits: MyHDL writes such ROM entries as plain decimals, of no width of their own
TRAIT_FIELDS = ((("code_keep", 8), ("code_flip", 8), ("sc_keep", 8), ("sc_one", 1), ("sc_shared", 1)),
                (("sc_flip", 8), ("mn_keep", 8), ("mn_one", 1), ("offset", 1), ("negate", 1)))
TRAIT_BITS = tuple(sum(bits for _, bits in group) for group in TRAIT_FIELDS)

# format -> traits, by rtl/isa.py's FORMAT_CODE
FORMAT_TRAITS = {
    QT.Q8_0: Traits(0xFF),  # Q8_0: int8
    QT.Q4_0: Traits(0x07, 0x08),  # Q4_0: nibble - 8
    QT.Q4_1: Traits(0x0F, mn_one=True, offset=True),  # Q4_1: nibble, + m
    QT.Q5_0: Traits(0x0F, 0x10),  # Q5_0: 5 bits - 16
    QT.Q5_1: Traits(0x1F, mn_one=True, offset=True),  # Q5_1: 5 bits, + m
    QT.Q2_K: Traits(0x03, sc_keep=0x0F, sc_one=False, mn_keep=0x0F, offset=True, negate=True),  # Q2_K
    QT.Q3_K: Traits(0x03, 0x04, sc_keep=0x1F, sc_flip=0x20, sc_one=False),  # Q3_K: 3 bits - 4, 6-bit scale - 32
    QT.Q4_K: Traits(0x0F, sc_keep=0x3F, sc_one=False, sc_shared=True, mn_keep=0x3F, offset=True, negate=True),  # Q4_K
    QT.Q5_K: Traits(0x1F, sc_keep=0x3F, sc_one=False, sc_shared=True, mn_keep=0x3F, offset=True, negate=True),  # Q5_K
    QT.Q6_K: Traits(0x1F, 0x20, sc_keep=0xFF, sc_one=False),  # Q6_K: 6 bits - 32, int8 scale
}
NO_FORMAT = Traits(0, sc_one=False)  # every other code: all weights read as 0
_BY_CODE = {FORMAT_CODE[qtype]: traits for qtype, traits in FORMAT_TRAITS.items()}
TRAIT_ROMS = tuple(tuple(_BY_CODE.get(code, NO_FORMAT).words()[g] for code in range(1 << FORMAT_BITS))
                   for g in range(len(TRAIT_FIELDS)))


def field_value(field: int, keep: int, flip: int) -> int:
    """The lane's decoding of one raw 8-bit field, as a signed integer (for the metal and tests)."""
    raw = (field | ~keep) & 0xFF if flip and not field & flip else field & keep
    return raw - 256 if raw & 0x80 else raw


@block
def block_mac(clk, rst, in_valid, first, last, fmt, codes, scales, mins, d_bits, m_bits, acts, e_act,
              term, term_valid, y, y_valid, sram=None, act_sums=None, traits=None):
    """`sram` (a bit, or None): while it is high the slot holds a LoRA SRAM block (LORA_BLOCK_BITS)
    and every field above it zero: the Q8_0 slot the block stands for (docs/numerics.md 12.2), its
    codes in the code bits and d the fp16 2**e of its exponent field (FP16_OF_EXPONENT), which sits
    in d_bits' low bits. m, the scales and the mins are 0 as they read. `act_sums`
    (A_0, A_1 of `acts` after stage 2, from activation_sums), or None: the lane computes its own.
    Lanes on the same activations share one activation_sums: in silicon it saves each lane 30
    adders, in simulation a third of the lane's work. `traits` (a FormatSignals, or None): the
    format's decoded traits, from one format_decode shared by every lane on the same format; `fmt`
    is then unused. `acts` may also hold NATIVE_BITS lanes (native_lanes): B16 activations, each
    sign-extended, so that no lane extends them again (with `act_sums` given)."""
    act_bits = _check_ports(fmt, codes, scales, mins, d_bits, m_bits, acts, e_act, term, y)
    lane_bits = len(acts) // BLOCK
    if lane_bits == NATIVE_BITS and act_sums is None:
        raise HardwireError("block_mac's native activation lanes need their shared sums (act_sums)")
    product_bits = CODE_BITS + act_bits
    half_bits = product_bits + HALF_LEVELS
    p_bits = (MAX_SC_Q * BLOCK << (act_bits - 1)).bit_length() + 1
    o_bits = (MAX_MIN * BLOCK << (act_bits - 1)).bit_length() + 1

    # after_stage[k] = (valid, first, last) of stage k's output; stage 0 is the input ports.
    # (Ports stay out of Python lists: MyHDL refuses a top-level port inside a list.)
    marks = [(bit_signal(), bit_signal(), bit_signal()) for _ in range(LATENCY - 1)]
    after_stage = _StageMarks((in_valid, first, last), marks)
    controls = [stage_marks(clk, rst, *after_stage[k], *after_stage[k + 1]) for k in range(LATENCY - 1)]
    valid_in = after_stage.valid

    # the format's traits; the sub-block scales and mins, decoded
    t = traits
    decode = ()
    if t is None:
        t = FormatSignals()
        decode = format_decode(fmt, t)

    # stage 1: four-weight dot products, the scales' mantissas and shifts, the sub-block scales and mins
    quads = [signed_signal(product_bits + 2) for _ in range(BLOCK // QUAD)]
    code_words = bus_lanes(codes, QUAD * CODE_BITS, BLOCK // QUAD)
    act_lanes = bus_lanes(acts, lane_bits, BLOCK)
    lanes = [quad_product(clk, in_valid, t.code_sign4, t.code_mask4, quads[i], act_lanes[QUAD * i:QUAD * (i + 1)],
                          code_words[i])
             for i in range(BLOCK // QUAD)]
    scale_stages = [[signed_signal(FP16_MANT_BITS), signed_signal(SHIFT_BITS),
                     signed_signal(FP16_MANT_BITS), signed_signal(SHIFT_BITS)] for _ in range(SCALE_PRODUCT_STAGE - 1)]
    d_mant1, d_shift1, m_mant1, m_shift1 = scale_stages[0]
    scales_ = [fp16_scale(clk, in_valid, d_bits, e_act, True, False, d_mant1, d_shift1, sram),
               fp16_scale(clk, in_valid, m_bits, e_act, t.offset, t.negate, m_mant1, m_shift1)]
    for k in range(SCALE_PRODUCT_STAGE - 2):  # the scales wait beside the sums and the sub-scale products
        scales_ += [guarded_register(clk, valid_in(k + 1), now, later)
                    for now, later in zip(scale_stages[k], scale_stages[k + 1], strict=True)]
    d_mant, d_shift, m_mant, m_shift = scale_stages[-1]
    sub_stages = [[signed_signal(SC_BITS), signed_signal(SC_BITS), signed_signal(MIN_BITS), signed_signal(MIN_BITS)]
                  for _ in range(2)]
    scales_.append(sub_scale_register(clk, in_valid, t, scales, mins, *sub_stages[0]))
    scales_ += [guarded_register(clk, valid_in(1), now, later) for now, later in zip(*sub_stages, strict=True)]
    sc0, sc1, o0, o1 = sub_stages[-1]

    # stage 2: the half sums S_k (the A_k from the activation sums, shared by every lane on `acts`)
    sums = [signed_signal(half_bits), signed_signal(half_bits)]
    trees = [quad_sum(clk, valid_in(1), *quads[:HALF // QUAD], sums[0]),
             quad_sum(clk, valid_in(1), *quads[HALF // QUAD:], sums[1])]
    if act_sums is None:  # a lane on its own computes them itself
        act_sums = new_act_sums(act_bits)
        trees.append(activation_sums(clk, valid_in(0), valid_in(1), acts, t.code_offset, act_sums))
    a_low, a_high, offset_low, offset_high = act_sums

    # stage 3: the sub-block scales and mins; stage 4: scale products; stage 5: saturating floor shifts
    block_sum, act_sum = signed_signal(p_bits), signed_signal(o_bits)
    d_product, m_product = signed_signal(FP16_MANT_BITS + p_bits), signed_signal(FP16_MANT_BITS + o_bits)
    d_shift4, m_shift4 = signed_signal(SHIFT_BITS), signed_signal(SHIFT_BITS)
    d_term, m_term = signed_signal(TERM_BITS), signed_signal(TERM_BITS)
    scaling = [offset_scaled_pair(clk, valid_in(2), sc0, sums[0], offset_low, sc1, sums[1], offset_high, block_sum),
               scaled_pair(clk, valid_in(2), o0, a_low, o1, a_high, act_sum),
               scale_product(clk, valid_in(3), d_mant, block_sum, d_product),
               scale_product(clk, valid_in(3), m_mant, act_sum, m_product),
               guarded_register(clk, valid_in(3), d_shift, d_shift4),
               guarded_register(clk, valid_in(3), m_shift, m_shift4),
               saturating_floor_shift(clk, valid_in(4), d_product, d_shift4, d_term),
               saturating_floor_shift(clk, valid_in(4), m_product, m_shift4, m_term)]

    # stage 6: the term, the accumulator, the row result
    valid5, first5, last5 = after_stage[LATENCY - 1]
    accumulate = accumulator(clk, valid5, first5, last5, d_term, m_term, y)
    done = row_done(clk, rst, valid5, last5, y_valid)
    if term is not None:  # T_b itself: the cell's tests read it, the matmul engine does not
        done = done, guarded_add(clk, valid5, d_term, m_term, term), valid_pipe(clk, rst, valid5, term_valid)
    return controls, decode, lanes, scales_, trees, scaling, accumulate, done


class _StageMarks:
    """(valid, first, last) after each stage, the input ports as stage 0."""

    def __init__(self, ports, marks):
        self.ports, self.marks = ports, marks

    def __getitem__(self, k):
        return self.ports if k == 0 else self.marks[k - 1]

    def valid(self, k):
        return self[k][0]


class FormatSignals:
    """The traits of the current format as signals (format_traits drives them)."""

    def __init__(self):
        self.code_keep, self.code_flip = unsigned_signal(8), unsigned_signal(8)
        self.code_mask = unsigned_signal(8)  # code_keep | code_flip: the bits a code has
        self.code_sign = unsigned_signal(8)  # Q8_0's sign bit (its keep has bit 7), flipped before the mask
        self.code_offset = unsigned_signal(8)  # what the flipped, masked code exceeds the weight by
        self.code_sign4 = unsigned_signal(QUAD * 8)  # code_sign and code_mask for four codes at once
        self.code_mask4 = unsigned_signal(QUAD * 8)
        self.sc_keep, self.sc_flip = unsigned_signal(8), unsigned_signal(8)
        self.sc_one, self.sc_shared = bit_signal(), bit_signal()
        self.mn_keep = unsigned_signal(8)
        self.mn_one, self.offset, self.negate = bit_signal(), bit_signal(), bit_signal()

    def lane_bus(self):
        """The traits a lane reads (LANE_TRAITS), packed: the first field in the least significant bits."""
        return ConcatSignal(*[getattr(self, name) for name, _ in reversed(LANE_TRAITS)])

    @classmethod
    def from_lane_bus(cls, bus):
        """The traits of a lane_bus: slices of it (the other fields stay unused)."""
        if len(bus) != LANE_TRAIT_BITS:
            raise HardwireError(f"a lane's traits bus is {LANE_TRAIT_BITS} bits, not {len(bus)}")
        t, at = cls(), 0
        for name, bits in LANE_TRAITS:
            setattr(t, name, bus(at + bits, at) if bits > 1 else bus(at))
            at += bits
        return t


# the traits a block-MAC lane reads, in a lane bus (FormatSignals.lane_bus)
LANE_TRAITS = (("code_sign4", QUAD * 8), ("code_mask4", QUAD * 8), ("sc_keep", 8), ("sc_flip", 8), ("mn_keep", 8),
               ("sc_one", 1), ("sc_shared", 1), ("mn_one", 1), ("offset", 1), ("negate", 1))
LANE_TRAIT_BITS = sum(bits for _, bits in LANE_TRAITS)


class SubScales:
    """The decoded sub-block scales and mins of the two 16-weight halves."""

    def __init__(self):
        self.sc0, self.sc1 = signed_signal(SC_BITS), signed_signal(SC_BITS)
        self.o0, self.o1 = signed_signal(MIN_BITS), signed_signal(MIN_BITS)


@block
def format_traits(fmt, t):
    """The format code's traits from TRAIT_ROMS (case statements: a few gates per lane)."""
    words = [unsigned_signal(bits) for bits in TRAIT_BITS]
    slices = {}
    for word, group in zip(words, TRAIT_FIELDS, strict=True):
        at = 0
        for name, bits in group:
            slices[name] = word(at + bits, at) if bits > 1 else word(at)
            at += bits
    outs = [_wire(slices[name], getattr(t, name)) for group in TRAIT_FIELDS for name, _ in group]
    return trait_rom(fmt, words[0], TRAIT_ROMS[0]), trait_rom(fmt, words[1], TRAIT_ROMS[1]), outs


@block
def format_decode(fmt, t):
    """Every trait of format code `fmt` a lane reads, into the FormatSignals `t`: one decode serves
    every lane on the same format."""
    return (format_traits(fmt, t), code_sign(t.code_keep, t.code_sign), or2(t.code_keep, t.code_flip, t.code_mask),
            or2(t.code_flip, t.code_sign, t.code_offset), quadrupled(t.code_sign, t.code_sign4),
            quadrupled(t.code_mask, t.code_mask4))


@block
def quadrupled(field, copies):
    """`copies` holds four copies of `field` side by side."""

    @always_comb
    def replicate():
        copies.next = concat(field, field, field, field)

    return replicate


@block
def code_sign(keep, sign):
    """Every format's weight is ((code ^ sign) & mask) - offset, the unsigned code less an offset:
    an offset code flips nothing and has its top bit as offset; Q8_0's int8 (the one keep with
    bit 7) has its sign bit flipped and 128 as offset (mask = keep | flip, offset = flip | sign)."""

    @always_comb
    def derive():
        sign.next = concat(keep[CODE_BITS - 1], intbv(0)[CODE_BITS - 1:])

    return derive


@block
def trait_rom(fmt, word, rom: tuple):
    @always_comb
    def lookup():
        word.next = rom[fmt]

    return lookup


@block
def _wire(a, b):
    @always_comb
    def connect():
        b.next = a

    return connect


@block
def sub_scales(t, scales, mins, sub):
    """sc_k and o_k of the two halves from the raw fields (combinational: the embedding unit
    uses them in the cycle the slot arrives)."""
    sc_fields = bus_lanes(scales, FIELD_BITS, 2)
    mn_fields = bus_lanes(mins, FIELD_BITS, 2)
    return (scale_field(t, sc_fields[0], sub.sc0), scale_field_shared(t, sc_fields[0], sc_fields[1], sub.sc1),
            min_field(t, mn_fields[0], sub.o0), min_field_shared(t, mn_fields[0], mn_fields[1], sub.o1))


@block
def scale_field(t, field, sc):
    @always_comb
    def decode():
        raw = intbv(0)[FIELD_BITS:]
        if t.sc_flip != 0 and (field & t.sc_flip) == 0:
            raw[:] = field | ~t.sc_keep
        else:
            raw[:] = field & t.sc_keep
        if t.sc_one:
            sc.next = 1
        else:
            sc.next = raw.signed()

    return decode


@block
def scale_field_shared(t, first_field, field, sc):
    """The second half's scale: its own field, or the first one's for 32-weight sub-blocks."""
    @always_comb
    def decode():
        raw = intbv(0)[FIELD_BITS:]
        own = intbv(0)[FIELD_BITS:]
        if t.sc_shared:
            own[:] = first_field
        else:
            own[:] = field
        if t.sc_flip != 0 and (own & t.sc_flip) == 0:
            raw[:] = own | ~t.sc_keep
        else:
            raw[:] = own & t.sc_keep
        if t.sc_one:
            sc.next = 1
        else:
            sc.next = raw.signed()

    return decode


@block
def min_field(t, field, o):
    @always_comb
    def decode():
        raw = intbv(0)[FIELD_BITS:]
        raw[:] = field & t.mn_keep
        if t.mn_one:
            o.next = 1
        else:
            o.next = raw.signed()

    return decode


@block
def min_field_shared(t, first_field, field, o):
    @always_comb
    def decode():
        raw = intbv(0)[FIELD_BITS:]
        if t.sc_shared:
            raw[:] = first_field & t.mn_keep
        else:
            raw[:] = field & t.mn_keep
        if t.mn_one:
            o.next = 1
        else:
            o.next = raw.signed()

    return decode


@block
def sub_scale_register(clk, enable, t, scales, mins, sc0, sc1, o0, o1):
    """Stage 1's sub-block scales and mins: sub_scales' decoding inside the register, so that an
    idle lane evaluates none of it (a simulator evaluates combinational logic on its inputs in
    every evaluation; this runs only on the lane's clock edges). A LoRA block's fields read as 0:
    the slot is zero above the block."""
    sc_a, sc_b = bus_lanes(scales, FIELD_BITS, 2)  # plain names: a list would convert to a memory
    mn_a, mn_b = bus_lanes(mins, FIELD_BITS, 2)

    @always(clk.posedge)
    def decode():
        if enable:
            own = intbv(0)[FIELD_BITS:]
            raw = intbv(0)[FIELD_BITS:]
            if t.sc_flip != 0 and (sc_a & t.sc_flip) == 0:
                raw[:] = sc_a | ~t.sc_keep
            else:
                raw[:] = sc_a & t.sc_keep
            if t.sc_one:
                sc0.next = 1
            else:
                sc0.next = raw.signed()
            if t.sc_shared:
                own[:] = sc_a
            else:
                own[:] = sc_b
            if t.sc_flip != 0 and (own & t.sc_flip) == 0:
                raw[:] = own | ~t.sc_keep
            else:
                raw[:] = own & t.sc_keep
            if t.sc_one:
                sc1.next = 1
            else:
                sc1.next = raw.signed()
            raw[:] = mn_a & t.mn_keep
            if t.mn_one:
                o0.next = 1
            else:
                o0.next = raw.signed()
            if t.sc_shared:
                raw[:] = mn_a & t.mn_keep
            else:
                raw[:] = mn_b & t.mn_keep
            if t.mn_one:
                o1.next = 1
            else:
                o1.next = raw.signed()

    return decode


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
def lane_product(clk, enable, keep, flip, code, act, product):
    """q * a for one weight: q is the code's kept bits, or with the format's flip bit clear the
    code with every bit outside `keep` set (the code minus its offset, sign-extended)."""

    @always(clk.posedge)
    def multiply():
        if enable:
            weight = intbv(0)[CODE_BITS:]
            if flip != 0 and (code & flip) == 0:
                weight[:] = code | ~keep
            else:
                weight[:] = code & keep
            product.next = weight.signed() * act.signed()

    return multiply


@block
def quad_product(clk, enable, sign4, mask4, total, acts, code_word):
    """total = sum of u_j * a_j over four weights, u_j = (code ^ sign) & mask, the weight plus its
    format's offset (unsigned: the offsets leave the lane as offset * A_k, see block_mac). The four
    codes of `code_word` take their sign flip and mask together (`sign4`, `mask4`: four copies).
    The u_j are held in 32-bit signed variables: a simulator then multiplies in its native word with
    no sign extension (none either for NATIVE_BITS activation lanes), and synthesis keeps the 8
    bits that vary."""
    a0, a1, a2, a3 = acts  # plain names: a list would convert to a memory
    word = 1 << (NATIVE_BITS - 1)

    @always(clk.posedge)
    def multiply_add():
        if enable:
            u = intbv(0)[QUAD * CODE_BITS:]
            u0 = intbv(0, min=-word, max=word)
            u1 = intbv(0, min=-word, max=word)
            u2 = intbv(0, min=-word, max=word)
            u3 = intbv(0, min=-word, max=word)
            total_word = intbv(0, min=-word, max=word)
            u[:] = (code_word ^ sign4) & mask4
            u0[:] = concat(intbv(0)[NATIVE_BITS - CODE_BITS:], u[CODE_BITS:])
            u1[:] = concat(intbv(0)[NATIVE_BITS - CODE_BITS:], u[2 * CODE_BITS:CODE_BITS])
            u2[:] = concat(intbv(0)[NATIVE_BITS - CODE_BITS:], u[3 * CODE_BITS:2 * CODE_BITS])
            u3[:] = concat(intbv(0)[NATIVE_BITS - CODE_BITS:], u[4 * CODE_BITS:3 * CODE_BITS])
            total_word[:] = u0 * a0.signed() + u1 * a1.signed() + u2 * a2.signed() + u3 * a3.signed()
            total.next = total_word[len(total):].signed()

    return multiply_add


@block
def quad_sum(clk, enable, q0, q1, q2, q3, total):
    """total = q0 + q1 + q2 + q3, as two levels of adders that each grow a bit."""
    bound = 1 << len(q0)

    @always(clk.posedge)
    def add():
        if enable:
            low = intbv(0, min=-bound, max=bound)
            high = intbv(0, min=-bound, max=bound)
            low[:] = q0 + q1
            high[:] = q2 + q3
            total.next = low + high

    return add


@block
def activation_sums(clk, valid0, valid1, acts, offset, sums):
    """`sums` = (A_0, A_1, offset * A_0, offset * A_1) after stage 2, as block_mac's half sums:
    A_0 and A_1 the sums of activations 0..15 and 16..31, `offset` the format's code offset
    (FormatSignals.code_offset). Four-term sums load at valid0's edge (a block at the inputs), the rest at valid1's."""
    act_bits = len(acts) // BLOCK
    lanes = [signed_signal(act_bits) for _ in range(BLOCK)]
    quads = [signed_signal(act_bits + 2) for _ in range(BLOCK // QUAD)]
    stage1 = ([as_signed(raw, lane) for raw, lane in zip(bus_lanes(acts, act_bits, BLOCK), lanes, strict=True)]
              + [quad_sum(clk, valid0, *lanes[QUAD * i:QUAD * (i + 1)], quads[i]) for i in range(BLOCK // QUAD)])
    half = HALF // QUAD
    a_low, a_high, offset_low, offset_high = sums
    return (stage1, half_act_sum(clk, valid1, *quads[:half], offset, a_low, offset_low),
            half_act_sum(clk, valid1, *quads[half:], offset, a_high, offset_high))


@block
def shared_act_sums(clk, rst, in_valid, offset, acts, sums):
    """activation_sums for every lane on `acts` at once, with its own stage-1 valid bit: `sums`
    as block_mac's `act_sums`, `offset` the format's code offset (FormatSignals.code_offset)."""
    valid1 = bit_signal()
    return valid_pipe(clk, rst, in_valid, valid1), activation_sums(clk, in_valid, valid1, acts, offset, sums)


@block
def engine_lane_inputs(clk, rst, in_valid, fmt, acts, traits, wide, sums):
    """What every lane of a wide engine reads, computed once for all of them: the format's decode
    (`traits`), the activations sign-extended (`wide`, new_native_lanes) and their sums (`sums`)."""
    return (format_decode(fmt, traits), native_lanes(acts, wide),
            shared_act_sums(clk, rst, in_valid, traits.code_offset, acts, sums))


def new_native_lanes() -> tuple:
    """(the lanes, the bus) for native_lanes: BLOCK signed NATIVE_BITS words, side by side in a ConcatSignal."""
    wide = [signed_signal(NATIVE_BITS) for _ in range(BLOCK)]
    return wide, ConcatSignal(*[w(NATIVE_BITS, 0) for w in reversed(wide)])


@block
def native_lanes(acts, wide):
    """`wide`: the B16 lanes of `acts`, each sign-extended to NATIVE_BITS (block_mac's native lanes)."""
    return [widened(lane, w) for lane, w in zip(bus_lanes(acts, ACT_BITS, BLOCK), wide, strict=True)]


@block
def widened(narrow, wide):
    """`wide` = the unsigned lane `narrow` read as two's complement, sign-extended."""
    extra = len(wide) - len(narrow)

    @always_comb
    def extend():  # the sign's copies by hand: Verilog's own extension of an assignment is a lint warning
        if narrow[len(narrow) - 1]:
            wide.next = concat(intbv(-1)[extra:], narrow).signed()
        else:
            wide.next = concat(intbv(0)[extra:], narrow).signed()

    return extend


@block
def half_act_sum(clk, enable, q0, q1, q2, q3, offset, total, offset_total):
    """total = q0 + q1 + q2 + q3 (as quad_sum) and offset_total = offset * total."""
    bound = 1 << len(q0)

    @always(clk.posedge)
    def add():
        if enable:
            low = intbv(0, min=-bound, max=bound)
            high = intbv(0, min=-bound, max=bound)
            signed_offset = intbv(0, min=-(1 << CODE_BITS), max=1 << CODE_BITS)
            low[:] = q0 + q1
            high[:] = q2 + q3
            whole = intbv(0, min=-(bound << 1), max=bound << 1)
            signed_offset[:] = concat(False, offset)
            whole[:] = low + high
            total.next = whole
            offset_total.next = signed_offset * whole

    return add


@block
def fp16_scale(clk, enable, bits, e_act, keep, negate, mant, shift, sram=None):
    """An fp16 value held exactly: mant = M (negated with `negate`, 0 without `keep`), shift = E + e_b + 24 =
    max(x, 1) + e_b - 1. With `sram` high the value is FP16_OF_EXPONENT of the LoRA exponent field
    in the low bits of `bits` (block_mac's LoRA blocks)."""
    lora_exponent = bits(LORA_EXP_FIELD, 0) if sram is not None else None

    @always(clk.posedge)
    def decode():
        if enable:
            magnitude = intbv(0)[FP16_MANT_BITS:]
            biased = intbv(1)[SHIFT_BITS:]  # subnormal: E = -24 = 1 - 25
            act_exp = intbv(0)[SHIFT_BITS:]
            magnitude[10:] = bits[10:]
            if bits[15:10] != 0:
                magnitude[10] = 1  # the hidden one of normal numbers
                biased[FP16_EXP_BITS:] = bits[15:10]
            if not keep:
                mant.next = 0
            elif bits[15] != negate:
                mant.next = -magnitude.signed()
            else:
                mant.next = magnitude.signed()
            act_exp[:] = concat(e_act[EXP_BITS - 1], e_act[EXP_BITS - 1], e_act)  # in here: no wire of its own
            shift.next = biased.signed() + act_exp.signed() - 1

    @always(clk.posedge)
    def decode_either():
        if enable:
            value = intbv(0)[FP16_BITS:]
            magnitude = intbv(0)[FP16_MANT_BITS:]
            biased = intbv(1)[SHIFT_BITS:]  # subnormal: E = -24 = 1 - 25
            act_exp = intbv(0)[SHIFT_BITS:]
            if sram:
                value[:] = FP16_OF_EXPONENT[lora_exponent]
            else:
                value[:] = bits
            magnitude[10:] = value[10:]
            if value[15:10] != 0:
                magnitude[10] = 1  # the hidden one of normal numbers
                biased[FP16_EXP_BITS:] = value[15:10]
            if not keep:
                mant.next = 0
            elif value[15] != negate:
                mant.next = -magnitude.signed()
            else:
                mant.next = magnitude.signed()
            act_exp[:] = concat(e_act[EXP_BITS - 1], e_act[EXP_BITS - 1], e_act)
            shift.next = biased.signed() + act_exp.signed() - 1

    return decode if sram is None else decode_either


@block
def scaled_pair(clk, enable, s0, x0, s1, x1, total):
    """total = s0 * x0 + s1 * x1: the last level of the two half trees, under the sub-block scales."""

    @always(clk.posedge)
    def multiply_add():
        if enable:
            total.next = s0 * x0 + s1 * x1

    return multiply_add


@block
def offset_scaled_pair(clk, enable, s0, x0, y0, s1, x1, y1, total):
    """total = s0 * (x0 - y0) + s1 * (x1 - y1): S_k is the unsigned codes' sum less offset * A_k."""

    bound = 1 << len(x0)

    @always(clk.posedge)
    def multiply_add():
        if enable:
            d0 = intbv(0, min=-bound, max=bound)
            d1 = intbv(0, min=-bound, max=bound)
            d0[:] = x0 - y0
            d1[:] = x1 - y1
            total.next = s0 * d0 + s1 * d1

    return multiply_add


def new_act_sums(act_bits: int) -> tuple:
    """Signals for activation_sums' (A_0, A_1, offset * A_0, offset * A_1)."""
    a_bits = act_bits + HALF_LEVELS
    return (signed_signal(a_bits), signed_signal(a_bits), signed_signal(a_bits + CODE_BITS),
            signed_signal(a_bits + CODE_BITS))


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
    saturates on overflow, or an arithmetic right shift (floor), clamped where all is sign.
    Everything fits 64 bits (a simulator's native word): a left shift by `amount` overflows exactly
    when product >> (rw - 1 - amount) is not all sign, and otherwise its value fits rw bits."""
    pw, rw = len(product), len(result)
    if pw >= WORD_BITS or rw > WORD_BITS:
        raise HardwireError(f"saturating_floor_shift works in {WORD_BITS} bits, not {pw} -> {rw}")

    @always(clk.posedge)
    def shift_and_clamp():
        if enable:
            x = intbv(0, min=-(1 << (WORD_BITS - 1)), max=1 << (WORD_BITS - 1))
            limit = intbv(0, min=-(1 << (rw - 1)), max=1 << (rw - 1))
            amount = intbv(0)[len(shift):]
            x[:] = product  # signed: Verilog sign-extends it in one operation, a replicated sign bit in one per bit
            limit[rw - 1] = 1  # the most negative word; its complement is the largest
            if product >= 0:
                limit[:] = ~limit
            if shift < 0:
                amount[:] = -shift
                if amount > pw - 1:
                    amount[:] = pw - 1  # the product is all sign by then
                x[:] = x >> amount
                result.next = x[rw:].signed()
            elif shift >= rw:
                if product != 0:
                    result.next = limit
                else:
                    result.next = 0
            else:
                amount[:] = rw - 1 - shift  # the bits the product may still occupy above the sign
                if (x >> amount) == 0 or (x >> amount) == -1:
                    amount[:] = shift
                    x[:] = x << amount
                    result.next = x[rw:].signed()
                else:
                    result.next = limit

    return shift_and_clamp


@block
def accumulator(clk, enable, first, last, d_term, m_term, y):
    """The 64-bit row sum of d_term + m_term restarts on `first`; y = sat(sum, 48) on `last`."""
    total = signed_signal(ACCUMULATOR_BITS)
    yw = len(y)

    @always(clk.posedge)
    def accumulate():
        if enable:
            running = intbv(0, min=-(1 << (ACCUMULATOR_BITS - 1)), max=1 << (ACCUMULATOR_BITS - 1))
            limit = intbv(0, min=-(1 << (yw - 1)), max=1 << (yw - 1))
            if first:  # signed terms, sign-extended by the sum's width
                running[:] = d_term + m_term
            else:
                running[:] = total + d_term + m_term
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


def _check_ports(fmt, codes, scales, mins, d_bits, m_bits, acts, e_act, term, y) -> int:
    """Port widths; returns the width of the activations' values (ACT_BITS in native lanes)."""
    act_bits = len(acts) // BLOCK
    expected = {"fmt": (fmt, FORMAT_BITS), "codes": (codes, BLOCK * CODE_BITS), "scales": (scales, 2 * FIELD_BITS),
                "mins": (mins, 2 * FIELD_BITS), "d_bits": (d_bits, FP16_BITS), "m_bits": (m_bits, FP16_BITS),
                "acts": (acts, BLOCK * act_bits), "e_act": (e_act, EXP_BITS), "term": (term, TERM_BITS + 1),
                "y": (y, ACC_BITS)}
    for name, (port, width) in expected.items():
        if port is not None and len(port) != width:
            raise HardwireError(f"block_mac port {name} is {len(port)} bits; it must be {width}")
    if act_bits not in (8, ACT_BITS, NATIVE_BITS):
        raise HardwireError(f"block_mac activation lanes must be 8, {ACT_BITS} or {NATIVE_BITS} bits, not {act_bits}")
    return ACT_BITS if act_bits == NATIVE_BITS else act_bits
