"""A layer tile: its scratchpad, the microcode sequencer and the matmul engine.

The sequencer runs the tile's program from its microcode ROM (rtl/isa.py). Each
instruction streams blocks out of the scratchpad into one unit and writes the
unit's output blocks back, offering every written block to the debug tap port.
Reads take one cycle (scratchpad and ROMs alike), so a beat issued in cycle t
is at the units in cycle t + 2.

Ports:
    clk, rst         clock; synchronous active-high reset
    start            pulse: run the program from microcode address `entry` (one token)
    entry            where the program starts: 0 on the chip; a test may run one segment
    busy             high from start until END
    clock_on         the enable of the tile's clock gate: low while the tile idles or waits in
                     RECV for its upstream neighbour (an idle tile neither toggles nor costs
                     the simulator anything)
    token            the input token (the head's EMBED reads its row)
    token_out/valid  the head's argmax, handed out at END (a one-cycle pulse)
    up_*             the residual stream from upstream (RECV)
    down_*           the residual stream downstream (SEND)
    ucode_addr/data  microcode ROM
    w_addr/w_data    weight ROM: a word of `lanes` block slots
    tap_*            the written block, its op id and block index
"""

from __future__ import annotations

from myhdl import ConcatSignal, Signal, always, always_comb, always_seq, block, enum, intbv

from hardwire.golden.errors import HardwireError
from hardwire.golden.spec import ACC_BITS, ACC_FRAC, BLOCK

from .bus import ADDR_BITS, DATA_BITS, ENTRY_BITS, EXP_BITS, TAP_OP_BITS, WORD, BlockBus
from .cells.block_mac import ACT_BITS, block_mac
from .cells.sram import address_bits
from .cells.wiring import bit_signal, bus_lanes, mux_tree, signed_signal, unsigned_signal, unused, zero_extended
from .die import SLOT_BITS
from .isa import Op, field_offsets
from .units import attention, head, vector

BLOCK_SHIFT = 5  # log2(BLOCK)
COUNT_BITS = 28  # beats of one instruction: groups (16 bits) x blocks (12 bits)


@block
def scratchpad(clk, we, waddr, wdata, re, raddr_a, raddr_b, rdata_a, rexp_a, rdata_b, depth: int):
    """Two read ports and one write port; reads only when `re`, so an idle tile costs nothing.
    The exponents have their own array: only port a reads them."""
    words = [Signal(intbv(0)[DATA_BITS:]) for _ in range(depth)]
    exps = [Signal(intbv(0)[EXP_BITS:]) for _ in range(depth)]

    @always(clk.posedge)
    def access():
        if we:
            words[waddr].next = wdata[DATA_BITS:]
            exps[waddr].next = wdata[ENTRY_BITS:DATA_BITS]
        if re:
            rdata_a.next = words[raddr_a]
            rexp_a.next = exps[raddr_a]
            rdata_b.next = words[raddr_b]

    return access


@block
def matmul_engine(clk, rst, clear, groups, in_valid, first, last, fmt, w_data, acts, e_act, out_valid, out_data,
                  lanes: int):
    """`lanes` block-MAC lanes on one broadcast activation block. Their row results gather into
    32-row output blocks; the last of `groups` row groups closes a partly filled block.
    `clear` (a pulse before the first beat) restarts the gathering."""
    if BLOCK % lanes:
        raise HardwireError(f"lanes={lanes} must divide the block size {BLOCK}")
    parts_per_block = BLOCK // lanes
    slots = bus_lanes(w_data, SLOT_BITS, lanes)
    codes = [unsigned_signal(BLOCK * 8) for _ in range(lanes)]
    d_bits = [unsigned_signal(16) for _ in range(lanes)]
    m_bits = [unsigned_signal(16) for _ in range(lanes)]
    ys = [signed_signal(ACC_BITS) for _ in range(lanes)]
    y_valids = [bit_signal() for _ in range(lanes)]
    splits = [slot_fields(slots[i], codes[i], d_bits[i], m_bits[i]) for i in range(lanes)]
    macs = [block_mac(clk, rst, in_valid, first, last, fmt, codes[i], d_bits[i], m_bits[i], acts, e_act,
                      None, None, ys[i], y_valids[i]) for i in range(lanes)]

    y_bus = unsigned_signal(lanes * WORD)  # the lanes' row results side by side
    pack = packed_words(ys, y_bus)
    part = unsigned_signal(max(1, (parts_per_block - 1).bit_length()))  # where the next rows go
    rows_done = unsigned_signal(16)  # row groups gathered so far
    closing = bit_signal()
    parts = [unsigned_signal(lanes * WORD) for _ in range(parts_per_block)]
    holders = [part_register(clk, y_valids[0], part, p, closing, y_bus, parts[p]) for p in range(parts_per_block)]
    whole = ConcatSignal(*reversed(parts)) if parts_per_block > 1 else parts[0]

    @always_seq(clk.posedge, reset=rst)
    def gather():
        closing.next = 0
        if clear:
            part.next = 0
            rows_done.next = 0
        elif y_valids[0]:
            rows_done.next = rows_done + 1
            if part == parts_per_block - 1 or rows_done + 1 == groups:
                closing.next = 1
                part.next = 0
            else:
                part.next = part + 1

    @always_comb
    def emit():
        out_valid.next = closing
        out_data.next = whole

    return splits, macs, pack, holders, gather, emit


@block
def slot_fields(slot, codes, d_bits, m_bits):
    """A block slot: 32 code bytes, then d, then m (rtl/metal.py packs it)."""

    @always_comb
    def split():
        codes.next = slot[BLOCK * 8:]
        d_bits.next = slot[BLOCK * 8 + 16:BLOCK * 8]
        m_bits.next = slot[SLOT_BITS:BLOCK * 8 + 16]

    return split


@block
def packed_words(words, bus):
    """Signed words side by side, word 0 in the least significant bits."""
    width = len(words[0])
    lanes = ConcatSignal(*[w(width, 0) for w in reversed(words)]) if len(words) > 1 else words[0]

    @always_comb
    def join():
        bus.next = lanes

    return join


@block
def part_register(clk, write, part, index: int, closing, value, held):
    """One `lanes`-row slice of the output block being gathered; cleared once the block leaves."""

    @always(clk.posedge)
    def hold():
        if write and part == index:
            held.next = value
        elif closing:
            held.next = 0

    return hold


SeqState = enum("IDLE", "FETCH", "DECODE", "RUN", "FINISH")

# opcodes and microcode field positions as plain ints: the converter inlines them
(OP_END, OP_RECV, OP_SEND, OP_NORM, OP_MATMUL, OP_ROPE, OP_RQ, OP_KVW, OP_ATTN, OP_ADD, OP_SILU, OP_EMBED,
 OP_ARGMAX) = (int(o) for o in Op)
STREAM_ONLY = 1  # MATMUL aux bit: results go to the tap port and the argmax tracker only
_F = field_offsets()
OP_LO, OP_HI = _F["op"][0], _F["op"][0] + _F["op"][1]
TAP_LO, TAP_HI = _F["tap"][0], _F["tap"][0] + _F["tap"][1]
SRC_LO, SRC_HI = _F["src"][0], _F["src"][0] + _F["src"][1]
SRC2_LO, SRC2_HI = _F["src2"][0], _F["src2"][0] + _F["src2"][1]
DST_LO, DST_HI = _F["dst"][0], _F["dst"][0] + _F["dst"][1]
N_LO, N_HI = _F["n"][0], _F["n"][0] + _F["n"][1]
GROUPS_LO, GROUPS_HI = _F["groups"][0], _F["groups"][0] + _F["groups"][1]
ROM_LO, ROM_HI = _F["rom"][0], _F["rom"][0] + _F["rom"][1]
FMT_LO, FMT_HI = _F["fmt"][0], _F["fmt"][0] + _F["fmt"][1]
AUX_LO, AUX_HI = _F["aux"][0], _F["aux"][0] + _F["aux"][1]


@block
def activation_lanes(data, acts):
    """The B16 mantissas of a scratchpad block, narrowed to the lanes' activation width."""
    words = bus_lanes(data, WORD, BLOCK)
    narrow = ConcatSignal(*[w(ACT_BITS, 0) for w in reversed(words)])

    @always_comb
    def narrow_lanes():
        acts.next = narrow

    return narrow_lanes


@block
def tile(clk, rst, start, entry, busy, clock_on, pos, token, token_out, token_valid, up, down, ucode, w, consts, rsqrt,
         sigmoid, rope, exp2, tap, lanes: int, scratch_depth: int, max_blocks: int, attn_limits):
    """One layer tile; see the module docstring. `up`, `down` are BlockBus, `tap` a TapPort, and
    ucode, w, consts, rsqrt, sigmoid, rope, exp2 are RomPort of the microcode, weight, consts and
    table ROMs (rtl/chip.py UNIT_PORTS). `attn_limits` (AttentionLimits of the die) sizes the
    attention unit and its KV SRAM."""
    ucode_addr, ucode_data, w_addr, w_data = ucode.addr, ucode.data, w.addr, w.data
    state = Signal(SeqState.IDLE)
    pc = unsigned_signal(len(ucode_addr))
    head_block_bits = len(rope.addr) - (attn_limits.kv_tokens - 1).bit_length()
    # scratchpad and ROM addresses keep only the microcode bits this die's depths need
    w_bits, s_bits = len(w_addr), address_bits(scratch_depth)
    rom_bits = max(w_bits, len(consts.addr), attention.ATTN_SCALE_BITS)
    src_top, src2_top, dst_top, rom_top = SRC_LO + s_bits, SRC2_LO + s_bits, DST_LO + s_bits, ROM_LO + rom_bits
    op, tap_id, fmt = unsigned_signal(OP_HI - OP_LO), unsigned_signal(TAP_OP_BITS), unsigned_signal(FMT_HI - FMT_LO)
    src, src2, dst, n = unsigned_signal(s_bits), unsigned_signal(s_bits), unsigned_signal(s_bits), \
        unsigned_signal(ADDR_BITS)
    groups, rom, aux = unsigned_signal(16), unsigned_signal(rom_bits), unsigned_signal(8)
    issued, in_total, written, out_total = (unsigned_signal(COUNT_BITS) for _ in range(4))
    block_in_group = unsigned_signal(ADDR_BITS)
    # RoPE's block index inside its head, carried with the read like first/last
    block_in_head = unsigned_signal(8)
    issue_block_in_head, beat_block_in_head = unsigned_signal(head_block_bits), unsigned_signal(head_block_bits)

    # the read pipeline: addresses registered with `issue`, data at the units with `beat`
    issue, beat, first, last, beat_first, beat_last = (bit_signal() for _ in range(6))
    raddr_a, raddr_b = unsigned_signal(s_bits), unsigned_signal(s_bits)
    a_data, b_data, a_exp_bits = unsigned_signal(DATA_BITS), unsigned_signal(DATA_BITS), unsigned_signal(EXP_BITS)
    w_address = unsigned_signal(w_bits)
    # produce: a unit hands out a block this cycle; we: ... and it is kept (not a streamed logit block)
    produce, we, wdata, waddr = bit_signal(), bit_signal(), unsigned_signal(ENTRY_BITS), unsigned_signal(s_bits)
    stream = bit_signal()
    row_base = unsigned_signal(w_bits)  # EMBED: the first ROM word of the token's row group
    lane_shift = (lanes - 1).bit_length()
    token_top = w_bits + lane_shift
    part_round, part_shift = BLOCK // lanes - 1, BLOCK_SHIFT - lane_shift  # rows -> output blocks, rounded up
    end_tap, waiting = bit_signal(), bit_signal()
    memory = scratchpad(clk, we, waddr, wdata, issue, raddr_a, raddr_b, a_data, a_exp_bits, b_data, scratch_depth)

    # units, all fed from the two read ports
    a_exp = signed_signal(EXP_BITS)
    acts = unsigned_signal(BLOCK * ACT_BITS)
    mm_clear, mm_valid, mm_out_valid = bit_signal(), bit_signal(), bit_signal()
    mm_out = unsigned_signal(DATA_BITS)
    engine = matmul_engine(clk, rst, mm_clear, groups, mm_valid, beat_first, beat_last, fmt, w_data, acts, a_exp,
                           mm_out_valid, mm_out, lanes)
    act_lanes = activation_lanes(a_data, acts)
    enables = {name: bit_signal() for name in ("add", "rq", "silu", "rope", "norm", "attn", "embed")}
    outs = {name: BlockBus() for name in enables}
    # ROM data read inside the units only through slices: copied here so that a standalone
    # conversion of the tile still declares them as input ports
    sig_words, rope_word = unsigned_signal(len(sigmoid.data)), unsigned_signal(len(rope.data))
    consts_word, rsqrt_word = unsigned_signal(len(consts.data)), unsigned_signal(len(rsqrt.data))
    exp2_word = unsigned_signal(len(exp2.data))
    add_on, rq_on, silu_on, rope_on, norm_on, attn_on, embed_on = (enables[k] for k in enables)
    add_valid, rq_valid, silu_valid, rope_valid, norm_valid, attn_valid, embed_valid = (outs[k].valid for k in enables)
    embed_slot = unsigned_signal(SLOT_BITS)  # the token's lane of the weight word
    embed_lane = mux_tree(token, bus_lanes(w_data, SLOT_BITS, lanes), embed_slot)
    arm, best_row = bit_signal(), unsigned_signal(head.ROW_BITS)
    logits_valid = bit_signal()
    kv_start, attn_start, attn_done, attn_busy, attn_refused = (bit_signal() for _ in range(5))
    kv_half = unsigned_signal(COUNT_BITS)  # KVW: K blocks, then as many V blocks
    acc_exp = signed_signal(EXP_BITS)
    norm_start, norm_done = bit_signal(), bit_signal()
    units = [
        vector.add_unit(clk, rst, enables["add"], a_data, b_data, outs["add"].valid, outs["add"].data),
        vector.rq_unit(clk, rst, enables["rq"], a_data, acc_exp, outs["rq"].valid, outs["rq"].data, outs["rq"].exp),
        vector.silu_unit(clk, rst, enables["silu"], a_data, b_data, outs["silu"].valid, outs["silu"].data,
                         outs["silu"].exp, sigmoid.en, sigmoid.addr, sig_words),
        vector.rope_unit(clk, rst, enables["rope"], a_data, pos(len(rope.addr) - head_block_bits, 0),
                         beat_block_in_head,
                         outs["rope"].valid, outs["rope"].data, outs["rope"].exp, rope.en, rope.addr, rope_word),
        vector.norm_unit(clk, rst, norm_start, n(vector.norm_count_bits(max_blocks), 0), rom(len(consts.addr), 0),
                         enables["norm"], a_data,
                         outs["norm"].valid, outs["norm"].data, outs["norm"].exp, norm_done,
                         consts.en, consts.addr, consts_word, rsqrt.en, rsqrt.addr, rsqrt_word,
                         max_blocks=max_blocks),
        attention.attention_unit(clk, rst, kv_start, attn_start, pos, groups(attn_limits.heads_bits, 0),
                                 aux(attn_limits.heads_bits, 0), n(attn_limits.head_blocks_bits, 0),
                                 rom(attention.ATTN_SCALE_BITS, 0), attn_on, a_data, a_exp, attn_valid,
                                 outs["attn"].data, outs["attn"].exp, attn_done, attn_busy, attn_refused,
                                 exp2.addr, exp2_word, attn_limits),
        head.embed_unit(clk, rst, embed_on, fmt, embed_slot, embed_valid, outs["embed"].data),
        head.argmax_tracker(clk, rst, arm, groups, logits_valid, written(head.ROW_BITS, 0), mm_out, best_row),
    ]
    up_entry = ConcatSignal(up.exp, up.data)
    mm_entry = ConcatSignal(intbv(0)[EXP_BITS:], mm_out)
    add_entry = ConcatSignal(intbv(0)[EXP_BITS:], outs["add"].data)
    embed_entry = ConcatSignal(intbv(0)[EXP_BITS:], outs["embed"].data)
    token_word = zero_extended(best_row, DATA_BITS)  # the argmax tap: the token in word 0
    waivers = [ignored_inputs(ucode_data, token, s_bits, rom_bits, token_top),
               unused(ConcatSignal(norm_done, attn_done, attn_busy, attn_refused), "handshakes",
                      "unit handshakes: the sequencer paces each unit by its own beat and block counts")]
    rq_entry, silu_entry = outs["rq"].entry(), outs["silu"].entry()
    rope_entry, norm_entry, attn_entry = outs["rope"].entry(), outs["norm"].entry(), outs["attn"].entry()

    @always(clk.posedge)
    def constants():
        acc_exp.next = -ACC_FRAC  # a constant register: the converter cannot write negative literals

    @always_comb
    def rom_data():
        sig_words.next = sigmoid.data
        rope_word.next = rope.data
        consts_word.next = consts.data
        rsqrt_word.next = rsqrt.data
        exp2_word.next = exp2.data

    @always_comb
    def operands():
        a_exp.next = a_exp_bits.signed()
        ucode_addr.next = pc
        w_addr.next = w_address
        mm_valid.next = beat and op == OP_MATMUL
        add_on.next = beat and op == OP_ADD
        rq_on.next = beat and op == OP_RQ
        silu_on.next = beat and op == OP_SILU
        rope_on.next = beat and op == OP_ROPE
        norm_on.next = beat and op == OP_NORM
        attn_on.next = beat and (op == OP_ATTN or op == OP_KVW)
        embed_on.next = beat and op == OP_EMBED
        stream.next = op == OP_MATMUL and aux[0] == STREAM_ONLY
        logits_valid.next = op == OP_MATMUL and aux[0] == STREAM_ONLY and mm_out_valid
        waiting.next = state == SeqState.RUN and op == OP_RECV and written != out_total

    @always_comb
    def clock_enable():
        """Run while busy and not waiting, and for the edge that takes an upstream block or
        clears a tap beat."""
        clock_on.next = rst or start or (busy and not waiting) or up.valid or tap.valid or token_valid
    @always_comb
    def write_port():
        """The one block produced this cycle, from whichever source the instruction uses; it is
        written to the scratchpad unless it is a streamed logit block."""
        produce.next = 0
        wdata.next = 0
        if op == OP_RECV and up.valid:
            produce.next = 1
            wdata.next = up_entry
        elif op == OP_MATMUL and mm_out_valid:
            produce.next = 1
            wdata.next = mm_entry
        elif op == OP_ADD and add_valid:
            produce.next = 1
            wdata.next = add_entry
        elif op == OP_RQ and rq_valid:
            produce.next = 1
            wdata.next = rq_entry
        elif op == OP_SILU and silu_valid:
            produce.next = 1
            wdata.next = silu_entry
        elif op == OP_ROPE and rope_valid:
            produce.next = 1
            wdata.next = rope_entry
        elif op == OP_NORM and norm_valid:
            produce.next = 1
            wdata.next = norm_entry
        elif op == OP_ATTN and attn_valid:
            produce.next = 1
            wdata.next = attn_entry
        elif op == OP_EMBED and embed_valid:
            produce.next = 1
            wdata.next = embed_entry
        waddr.next = dst + written[s_bits:]  # scratchpad addresses wrap: the metal keeps them in range
    @always_comb
    def keep():
        we.next = produce and not stream

    @always_seq(clk.posedge, reset=rst)
    def sequencer():
        read_a = intbv(0)[s_bits:]
        read_b = intbv(0)[s_bits:]
        code = intbv(0)[OP_HI - OP_LO:]
        count = intbv(0)[COUNT_BITS:]  # the n and groups fields, widened to beat counts
        rows = intbv(0)[COUNT_BITS:]
        beats = intbv(0)[COUNT_BITS:]
        kv_blocks = intbv(0)[COUNT_BITS:]
        issue.next = 0
        mm_clear.next = 0
        norm_start.next = 0
        kv_start.next = 0
        attn_start.next = 0
        arm.next = 0
        end_tap.next = 0
        beat.next = issue
        beat_first.next = first
        beat_last.next = last
        beat_block_in_head.next = issue_block_in_head
        if produce:
            written.next = written + 1
        if state == SeqState.IDLE:
            busy.next = 0
            if start:
                pc.next = entry
                busy.next = 1
                state.next = SeqState.FETCH
        elif state == SeqState.FETCH:
            state.next = SeqState.DECODE  # the ROM answers for pc in the next cycle
        elif state == SeqState.DECODE:
            code[:] = ucode_data[OP_HI:OP_LO]
            count[N_HI - N_LO:] = ucode_data[N_HI:N_LO]
            rows[GROUPS_HI - GROUPS_LO:] = ucode_data[GROUPS_HI:GROUPS_LO]
            op.next = code
            tap_id.next = ucode_data[TAP_HI:TAP_LO]
            src.next = ucode_data[src_top:SRC_LO]
            src2.next = ucode_data[src2_top:SRC2_LO]
            dst.next = ucode_data[dst_top:DST_LO]
            n.next = count[N_HI - N_LO:]
            groups.next = rows[GROUPS_HI - GROUPS_LO:]
            rom.next = ucode_data[rom_top:ROM_LO]
            fmt.next = ucode_data[FMT_HI:FMT_LO]
            aux.next = ucode_data[AUX_HI:AUX_LO]
            block_in_head.next = 0
            norm_start.next = code == OP_NORM
            kv_start.next = code == OP_KVW
            attn_start.next = code == OP_ATTN
            kv_blocks[:] = count * ucode_data[AUX_HI:AUX_LO]
            kv_half.next = kv_blocks
            arm.next = code == OP_ARGMAX
            if code == OP_EMBED:
                row_base.next = token[token_top:lane_shift] * count[w_bits:]  # modulo the ROM
            else:
                row_base.next = 0
            issued.next = 0
            written.next = 0
            block_in_group.next = 0
            mm_clear.next = 1
            if code == OP_RECV:
                in_total.next = 0
            elif code == OP_MATMUL or code == OP_ATTN:
                beats[:] = count * rows
                in_total.next = beats
            elif code == OP_KVW:
                in_total.next = kv_blocks << 1
            else:
                in_total.next = count
            if code == OP_SEND or code == OP_KVW:
                out_total.next = 0
            elif code == OP_ATTN:
                beats[:] = count * rows
                out_total.next = beats
            elif code == OP_MATMUL:
                out_total.next = (rows + part_round) >> part_shift
            else:
                out_total.next = count
            if code == OP_END and ucode_data[TAP_HI:TAP_LO] != 0:
                end_tap.next = 1  # the head hands out its token, tapped, in FINISH
                state.next = SeqState.FINISH
            elif code == OP_END:
                state.next = SeqState.IDLE
                busy.next = 0
            else:
                state.next = SeqState.RUN
        elif state == SeqState.RUN:
            if issued < in_total:
                issue.next = 1
                issued.next = issued + 1
                if op == OP_KVW and issued >= kv_half:  # the V blocks follow the K blocks
                    read_a[:] = src2 + issued[s_bits:] - kv_half[s_bits:]
                else:
                    read_a[:] = src + block_in_group[s_bits:]
                read_b[:] = src2 + block_in_group[s_bits:]
                raddr_a.next = read_a
                raddr_b.next = read_b
                w_address.next = rom[w_bits:] + row_base + issued[w_bits:]
                first.next = block_in_group == 0
                issue_block_in_head.next = block_in_head[head_block_bits:]
                last.next = block_in_group + 1 == n
                if block_in_group + 1 == n and op == OP_MATMUL:
                    block_in_group.next = 0
                else:
                    block_in_group.next = block_in_group + 1
                if block_in_head + 1 == aux:  # RoPE: the block's index inside its head
                    block_in_head.next = 0
                else:
                    block_in_head.next = block_in_head + 1
            elif written == out_total and not issue and not beat and not mm_out_valid:
                pc.next = pc + 1
                state.next = SeqState.FETCH
        else:  # FINISH
            state.next = SeqState.IDLE
            busy.next = 0

    @always_seq(clk.posedge, reset=rst)
    def taps():
        tap.valid.next = (produce or end_tap) and tap_id != 0
        token_valid.next = end_tap
        tap.op.next = tap_id
        if end_tap:  # the argmax tap: the token in word 0
            tap.block.next = 0
            tap.exp.next = 0
            tap.data.next = token_word
            token_out.next = best_row
        elif produce and tap_id != 0:
            tap.block.next = written[ADDR_BITS:]
            tap.exp.next = wdata[ENTRY_BITS:DATA_BITS].signed()
            tap.data.next = wdata[DATA_BITS:]
        else:  # all zero between beats: the chip ORs the units' tap ports
            tap.op.next = 0
            tap.block.next = 0
            tap.exp.next = 0
            tap.data.next = 0

    @always_comb
    def downstream():
        down.valid.next = beat and op == OP_SEND
        down.data.next = a_data
        down.exp.next = a_exp

    return (memory, engine, embed_lane, act_lanes, units, waivers, constants, rom_data, operands, clock_enable,
            write_port, keep, sequencer, taps, downstream)


@block
def ignored_inputs(ucode_data, token, s_bits: int, rom_bits: int, token_bits: int):
    """Waivers for input bits this die never needs: microcode bits beyond its depths, and
    token bits beyond its weight ROM."""
    fields = [(SRC_LO + s_bits, SRC_HI), (SRC2_LO + s_bits, SRC2_HI), (DST_LO + s_bits, DST_HI),
              (ROM_LO + rom_bits, ROM_HI), (AUX_HI, len(ucode_data))]
    spare = [ucode_data(hi, lo) for lo, hi in fields if hi > lo]
    waivers = [unused(ConcatSignal(*spare) if len(spare) > 1 else spare[0], "ucode_bits",
                      "microcode bits this die ignores: reserved, or above its scratchpad and ROM depths")]
    if token_bits < len(token):
        waivers.append(unused(token(len(token), token_bits), "token_bits",
                              "token bits above the weight ROM: the host interface refuses a token >= vocab"))
    return waivers
