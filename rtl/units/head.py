"""The head's units: the embedding lookup and the argmax tracker (docs/numerics.md sections 3.1, 4, 9).

embed_unit: one GGUF block slot of the embedding row in, its 32 ACC words out, two cycles later:
    x_i = sat(floor_shift(M_d * sc_k * q_i, E_d + 24) + floor_shift(M_o * o_k, E_o + 24), 48)
for weight i in sub-block k (section 3.1's last paragraph; sc = 1, o = 1 or 0 for the 32-weight
formats: section 4). It reuses the block-MAC lane's decoders: the format's traits, the
sub-block scales and mins, the code decoder (with the weight's sub-block scale as its
activation, the lane's product is sc_k * q_i) and the fp16 decoder. E + 24 = max(x, 1) - 1 is
never negative, so both floor shifts are exact left shifts.

argmax_tracker: the LM head's output blocks stream past it (32 logits, the block's index);
it keeps the largest logit of rows below `limit` and its row. A tie keeps the lower row,
within a block (the tree prefers its left input) and across blocks (a later block must be
strictly larger).
"""

from __future__ import annotations

from myhdl import ConcatSignal, always, always_comb, always_seq, block, intbv

from hardwire.golden.spec import ACC_BITS, BLOCK

from ..bus import EXP_BITS
from ..cells.block_mac import (
    CODE_BITS,
    FIELD_BITS,
    FP16_BITS,
    HALF,
    MIN_BITS,
    SC_BITS,
    SHIFT_BITS,
    FormatSignals,
    SubScales,
    format_traits,
    fp16_scale,
    lane_product,
    sub_scales,
)
from ..cells.wiring import (
    bit_signal,
    bus_lanes,
    guarded_register,
    sign_extended,
    signed_signal,
    unsigned_signal,
    zero_extended,
)

EMBED_LATENCY = 2
ROW_BITS = 20  # token ids and vocabulary rows
SUM_BITS = ACC_BITS + 6  # M_d * sc * q << 29 (|sc q| <= 2**12) plus M_o * o << 29 stays below 2**53
SLOT_CODE_BITS = BLOCK * CODE_BITS


@block
def embed_unit(clk, rst, enable, fmt, slot, out):
    """`slot`: 32 code bytes, fp16 d, fp16 m/dmin, two scale fields, two min fields (rtl/metal.py
    block_slots); `out_data`: 32 x 48 bits."""
    out_valid, out_data = out.valid, out.data  # an ACC bus: no exponent
    codes = [slot((i + 1) * CODE_BITS, i * CODE_BITS) for i in range(BLOCK)]
    d_bits, m_bits = slot(SLOT_CODE_BITS + FP16_BITS, SLOT_CODE_BITS), slot(SLOT_CODE_BITS + 2 * FP16_BITS,
                                                                          SLOT_CODE_BITS + FP16_BITS)
    fields_at = SLOT_CODE_BITS + 2 * FP16_BITS
    scales = slot(fields_at + 2 * FIELD_BITS, fields_at)
    mins = slot(fields_at + 4 * FIELD_BITS, fields_at + 2 * FIELD_BITS)
    traits, sub = FormatSignals(), SubScales()
    decode = [format_traits(fmt, traits), sub_scales(traits, scales, mins, sub)]
    zero_exp = signed_signal(EXP_BITS)
    stage1 = bit_signal()
    d_mant, m_mant = signed_signal(12), signed_signal(12)
    d_shift, m_shift = signed_signal(SHIFT_BITS), signed_signal(SHIFT_BITS)
    o0, o1 = signed_signal(MIN_BITS), signed_signal(MIN_BITS)
    codes_q = [signed_signal(CODE_BITS + SC_BITS) for _ in range(BLOCK)]  # sc_k * q_i
    decoders = [lane_product(clk, enable, traits.code_keep, traits.code_flip, codes[i],
                             sub.sc0 if i < HALF else sub.sc1, codes_q[i]) for i in range(BLOCK)]
    scales_ = [fp16_scale(clk, enable, d_bits, zero_exp, True, False, d_mant, d_shift),
               fp16_scale(clk, enable, m_bits, zero_exp, traits.offset, traits.negate, m_mant, m_shift),
               guarded_register(clk, enable, sub.o0, o0), guarded_register(clk, enable, sub.o1, o1)]
    words = [signed_signal(ACC_BITS) for _ in range(BLOCK)]
    lanes = [embed_word(clk, stage1, codes_q[i], d_mant, d_shift, m_mant, o0 if i < HALF else o1, m_shift, words[i])
             for i in range(BLOCK)]
    packed = ConcatSignal(*[w(ACC_BITS, 0) for w in reversed(words)])

    @always(clk.posedge)
    def constants():
        zero_exp.next = 0

    @always_seq(clk.posedge, reset=rst)
    def valid_bits():
        stage1.next = enable
        out_valid.next = stage1

    @always_comb
    def output():
        out_data.next = packed

    return decode, decoders, scales_, lanes, constants, valid_bits, output


@block
def embed_word(clk, enable, scq, d_mant, d_shift, m_mant, o, m_shift, word):
    """One element: (M_d * sc * q << s_d) + (M_o * o << s_m), saturated to 48 bits."""
    m_wide = sign_extended(m_mant, SUM_BITS)

    @always(clk.posedge)
    def scale():
        if enable:
            total = intbv(0, min=-(1 << (SUM_BITS - 1)), max=1 << (SUM_BITS - 1))
            limit = intbv(0, min=-(1 << (ACC_BITS - 1)), max=1 << (ACC_BITS - 1))
            total[:] = ((d_mant * scq) << d_shift) + ((m_wide.signed() * o) << m_shift)
            limit[ACC_BITS - 1] = 1
            if total >= 0:
                limit[:] = ~limit
            if total[SUM_BITS:ACC_BITS - 1].signed() == 0 or total[SUM_BITS:ACC_BITS - 1].signed() == -1:
                word.next = total[ACC_BITS:].signed()
            else:
                word.next = limit

    return scale


@block
def argmax_tracker(clk, rst, arm, limit, in_valid, block_index, words, best_row):
    """`arm` (a pulse) forgets the best and takes the row limit; every `in_valid` block is then
    compared. best_row holds the winner's row."""
    leaves = bus_lanes(words, ACC_BITS, BLOCK)
    limit_reg = unsigned_signal(ROW_BITS)
    limit_row = zero_extended(limit, ROW_BITS) if len(limit) < ROW_BITS else limit
    seen = bit_signal()
    best = signed_signal(ACC_BITS)
    row_base = unsigned_signal(ROW_BITS)
    valid = [bit_signal() for _ in range(BLOCK)]
    in_range = [row_in_range(row_base, i, limit_reg, valid[i]) for i in range(BLOCK)]
    found, top, top_lane = bit_signal(), signed_signal(ACC_BITS), unsigned_signal(5)
    tree = max_tree(leaves, valid, list(range(BLOCK)), found, top, top_lane)
    top_row = zero_extended(top_lane, ROW_BITS)

    @always_comb
    def base():
        row_base.next = block_index << 5

    @always_seq(clk.posedge, reset=rst)
    def track():
        if arm:
            limit_reg.next = limit_row
            seen.next = 0
        elif in_valid and found and (not seen or top > best):
            seen.next = 1
            best.next = top
            best_row.next = row_base + top_row

    return in_range, tree, base, track


@block
def row_in_range(row_base, lane: int, limit, valid):
    @always_comb
    def compare():
        valid.next = row_base + lane < limit

    return compare


@block
def max_tree(values, valids, lanes, found, top, top_lane):
    """The largest valid value and its lane; on a tie the lower lane (the left half) wins."""
    if len(values) == 1:
        return leaf(values[0], valids[0], lanes[0], found, top, top_lane)
    half = len(values) // 2
    lf, rf = bit_signal(), bit_signal()
    lt, rt = signed_signal(ACC_BITS), signed_signal(ACC_BITS)
    ll, rl = unsigned_signal(5), unsigned_signal(5)
    return (max_tree(values[:half], valids[:half], lanes[:half], lf, lt, ll),
            max_tree(values[half:], valids[half:], lanes[half:], rf, rt, rl),
            max_node(lf, lt, ll, rf, rt, rl, found, top, top_lane))


@block
def leaf(value, valid, lane: int, found, top, top_lane):
    @always_comb
    def take():
        found.next = valid
        top.next = value.signed()
        top_lane.next = lane

    return take


@block
def max_node(a_found, a, a_lane, b_found, b, b_lane, found, top, top_lane):
    @always_comb
    def pick():
        if a_found and (not b_found or a >= b):
            found.next = 1
            top.next = a
            top_lane.next = a_lane
        else:
            found.next = b_found
            top.next = b
            top_lane.next = b_lane

    return pick
