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
    ucode            microcode ROM (a RomPort, as every ROM port here)
    w                weight ROM: a word of `lanes` block slots
    consts, rsqrt, sigmoid, rope, exp2
                     the consts ROM and the table ROMs of the units
    lora             the read port of the tile's LoRA SRAM: a word of `lanes` adapter blocks
                     (docs/numerics.md 12.1), read like a weight word by a MATMUL with `sram` set
    lora_on          the adapter flag of each projection (rtl/isa.py LORA_PROJECTIONS): a set flag
                     runs the projection's adapter pass (and a SILU after gate|up's passes instead
                     of the MATMUL's SiLU epilogue); a clear one steps over it
    perf_*           the performance probe: working (busy, not waiting in RECV), in RUN, and the
                     microcode address of the instruction
    tap_*            the written block, its op id and block index

The tile reads top-down: `tile` wires the units to the scratchpad's read ports; `sequencer`
(the FSM), `decoder` (DECODE latches the fields) and `issuer` (RUN issues the reads) run the
program; `matmul_side` and `unit_enables` feed the units; `silu_epilogue` runs the SiLU gate on a
gate|up MATMUL's results (rtl/isa.py SILU_EPILOGUE); `write_back` keeps the block a unit hands out;
`tap_out` and `outward` drive the tap port, SEND and the clock enable.
"""

from __future__ import annotations

from myhdl import ConcatSignal, Signal, always, always_comb, always_seq, block, enum, intbv

from hardwire.golden.errors import HardwireError
from hardwire.golden.spec import ACC_BITS, ACC_FRAC, BLOCK

from .bus import ADDR_BITS, DATA_BITS, ENTRY_BITS, EXP_BITS, TAP_OP_BITS, WORD, BlockBus, RomPort
from .cells.block_mac import (
    ACT_BITS,
    FP16_OF_EXPONENT,
    LATENCY,
    FormatSignals,
    engine_lane_inputs,
    new_act_sums,
    new_native_lanes,
)
from .cells.clock_gate import clock_gate
from .cells.sram import address_bits
from .cells.wiring import bit_signal, bus_lanes, mux_tree, signed_signal, unsigned_signal, unused, zero_extended
from .die import LORA_BLOCK_BITS, SLOT_BITS
from .isa import (
    ALSO_NORM,
    ALSO_SEND,
    FEED_KV,
    FEED_Q,
    FEEDS_NORM,
    LORA_PASS_LEN,
    NORM_FED,
    SILU_EPILOGUE,
    STREAM_ONLY,
    Op,
    field_offsets,
)
from .lanes import lane_group_socket, mac_lanes, packed_words
from .units import attention, head, vector

COUNT_BITS = 28  # beats of one instruction: groups (16 bits) x blocks (12 bits)


@block
def scratchpad(clk, we, waddr, wdata, re, re_b, raddr_a, raddr_b, rdata_a, rexp_a, rdata_b, depth: int):
    """Two read ports and one write port; port a reads only when `re`, port b when `re_b`, so an
    idle tile costs nothing. The exponents have their own array: only port a reads them."""
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
        if re_b:
            rdata_b.next = words[raddr_b]

    return access


@block
def matmul_engine(clk, rst, clear, groups, blocks, in_valid, first, last, fmt, sram, w_data, lora_word, acts, e_act,
                  out_valid, out_data, lanes: int):
    """`lanes` block-MAC lanes on one broadcast activation block: up to 32 lanes gather their rows
    into 32-row output blocks (narrow_matmul_engine); a multiple of 32 computes lanes / 32 output
    blocks per row group (wide_matmul_engine). The lanes read the weight word `w_data`, or with
    `sram` high `lora_word`: the LoRA SRAM word in slot form (lora_slots) for the narrow engine,
    the SRAM word itself for the wide one (or None: no LoRA SRAM). `clear` (a pulse before the
    first beat) restarts."""
    if is_wide(lanes):
        return wide_matmul_engine(clk, rst, clear, blocks, in_valid, first, last, fmt, sram, w_data, lora_word, acts,
                                  e_act, out_valid, out_data, lanes)
    if BLOCK % lanes:
        raise HardwireError(f"lanes={lanes} must divide the block size {BLOCK} or be a multiple of it")
    if lora_word is None:
        return narrow_matmul_engine(clk, rst, clear, groups, blocks, in_valid, first, last, fmt, w_data, acts, e_act,
                                    out_valid, out_data, lanes)
    weights = unsigned_signal(len(w_data))
    return (weight_select(sram, w_data, lora_word, weights),
            narrow_matmul_engine(clk, rst, clear, groups, blocks, in_valid, first, last, fmt, weights, acts, e_act,
                                 out_valid, out_data, lanes))


def is_wide(lanes: int) -> bool:
    """A wide engine: lanes / 32 lane groups (a multiple of 32 lanes)."""
    return lanes > BLOCK and lanes % BLOCK == 0


@block
def weight_select(sram, w_data, lora_word, weights):
    """The narrow engine's weight word: the ROM's, or the LoRA SRAM's with `sram` high (a wide
    engine's lane groups select their own slots: rtl/lanes.py lane_group)."""

    @always_comb
    def select():
        if sram:
            weights.next = lora_word
        else:
            weights.next = w_data

    return select


@block
def narrow_matmul_engine(clk, rst, clear, groups, blocks, in_valid, first, last, fmt, w_data, acts, e_act, out_valid,
                         out_data, lanes: int):
    """Lanes that divide 32: their row results gather into 32-row output blocks; the last of
    `groups` row groups closes a partly filled block (so `blocks` follows from `groups` here)."""
    parts_per_block = BLOCK // lanes
    ys = [signed_signal(ACC_BITS) for _ in range(lanes)]
    y_valids = [bit_signal() for _ in range(lanes)]
    macs = mac_lanes(clk, rst, in_valid, first, last, fmt, bus_lanes(w_data, SLOT_BITS, lanes), acts, e_act, ys,
                     y_valids)

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

    return macs, pack, holders, gather, emit, unused(blocks, "mm_blocks", "narrow lanes close their last block "
                                                                        "by the row group count")


@block
def wide_matmul_engine(clk, rst, clear, blocks, in_valid, first, last, fmt, sram, w_data, lora_word, acts, e_act,
                       out_valid, out_data, lanes: int):
    """lanes / 32 lane groups (rtl/lanes.py) on one broadcast activation block. A row group's
    lanes / 32 output blocks enter the output buffer together and leave it one a cycle, until
    `blocks` have left (the last row group may hold fewer). The issuer spaces row groups at least
    lanes / 32 beats apart, so the buffer is empty when the next group's results arrive. The lane
    groups run on a gated clock (lane_clock), off while no block is arriving or in flight. Every
    lane reads the one decode of the format, the one set of activation sums and the activations
    sign-extended once: the same nets for every lane."""
    count = lanes // BLOCK
    if lora_word is None:  # no LoRA SRAM (the head): its programs never set `sram`; the word reads as zero
        lora_word = ConcatSignal(intbv(0)[1:], intbv(0)[lanes * LORA_BLOCK_BITS - 1:])  # constant: two parts
    ys = [unsigned_signal(BLOCK * WORD) for _ in range(count)]
    y_valids = [bit_signal() for _ in range(count)]
    lanes_clk, lanes_fmt, lanes_sram = bit_signal(), unsigned_signal(len(fmt)), bit_signal()
    gate = lane_clock(clk, rst, clear, in_valid, fmt, sram, lanes_clk, lanes_fmt, lanes_sram)
    traits, sums = FormatSignals(), new_act_sums(ACT_BITS)
    wide, native = new_native_lanes()
    shared = engine_lane_inputs(lanes_clk, rst, in_valid, lanes_fmt, acts, traits, wide, sums)
    traits_bus = traits.lane_bus()  # one net for every lane group
    groups = [lane_group_socket(lanes_clk, rst, in_valid, first, last, traits_bus, lanes_sram, w_data, lora_word, k,
                                native, e_act, sums, ys[k], y_valids[k])
              for k in range(count)]
    results = ConcatSignal(*reversed(ys))
    held = unsigned_signal(lanes * WORD)  # the output buffer: its lowest block leaves next
    left = unsigned_signal(len(blocks))  # blocks of the instruction still to leave
    pending = unsigned_signal(count.bit_length())  # blocks in the buffer, the leaving one included
    others = ConcatSignal(*y_valids[1:]) if count > 2 else y_valids[1]

    @always_seq(clk.posedge, reset=rst)
    def hand_out():
        out_valid.next = 0
        if clear:
            left.next = blocks
            pending.next = 0
        elif y_valids[0] or pending > 1:
            if y_valids[0]:
                pending.next = count
            else:
                pending.next = pending - 1
            if left != 0:
                out_valid.next = 1
                left.next = left - 1
        elif pending != 0:
            pending.next = 0

    @always(clk.posedge)
    def buffer():
        if y_valids[0]:
            held.next = results
        elif pending > 1:
            held.next = held >> (BLOCK * WORD)

    @always_comb
    def emit():
        out_data.next = held[BLOCK * WORD:]

    others = unused(others, "group_valids", "the lane groups end their rows together: group 0's valid stands for all")
    return gate, shared, groups, hand_out, buffer, emit, others


@block
def lane_clock(clk, rst, clear, in_valid, fmt, sram, lanes_clk, lanes_fmt, lanes_sram):
    """The lane groups' clock: on for a block's edge and the LATENCY edges that carry it out of the
    lanes (the last clears their row-done bit), for reset, and for `clear` (a MATMUL's DECODE
    strobe). Every other edge would leave every lane register as it is, so gating them changes no
    result; in silicon the lanes do not toggle, and Verilator evaluates none of their logic (all of
    it runs on their clock). The instruction's format and LoRA select, which change only with a
    DECODE, load into `lanes_fmt` and `lanes_sram` on a clock of their own, on for reset and
    `clear` alone: what the lanes decode from them (their format, the select of their slots' word)
    is then evaluated once per instruction, not at every edge of the lanes' clock."""
    ticks = unsigned_signal(LATENCY.bit_length())  # edges the lanes still need after the last block
    lanes_on, select_on, select_clk = bit_signal(), bit_signal(), bit_signal()

    @always_seq(clk.posedge, reset=rst)
    def count_down():
        if in_valid:
            ticks.next = LATENCY
        elif ticks != 0:
            ticks.next = ticks - 1

    @always_comb
    def enable():
        lanes_on.next = rst or clear or in_valid or ticks != 0
        select_on.next = rst or clear

    @always(select_clk.posedge)
    def format_register():
        lanes_fmt.next = fmt
        lanes_sram.next = sram

    return count_down, enable, clock_gate(clk, lanes_on, lanes_clk), clock_gate(clk, select_on, select_clk), \
        format_register


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
(OP_END, OP_RECV, OP_SEND, OP_NORM, OP_MATMUL, OP_ROPE, OP_RQ, OP_ATTN, OP_ADD, OP_SILU, OP_EMBED,
 OP_ARGMAX) = (int(o) for o in Op)
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
LORA_LO, LORA_HI = _F["lora"][0], _F["lora"][0] + _F["lora"][1]
SRAM_LO, SRAM_HI = _F["sram"][0], _F["sram"][0] + _F["sram"][1]
BLOCKS_LO, BLOCKS_HI = _F["blocks"][0], _F["blocks"][0] + _F["blocks"][1]
FEEDS_NORM_BIT = FEEDS_NORM.bit_length() - 1  # the aux bit of an ADD's FEEDS_NORM flag
SPAN_LO, SPAN_HI = _F["span"][0], _F["span"][0] + _F["span"][1]
EPILOGUE_BIT = AUX_LO + SILU_EPILOGUE.bit_length() - 1  # the word bit of a MATMUL's SILU_EPILOGUE flag
FEED_LO, FEED_HI = _F["feed"][0], _F["feed"][0] + _F["feed"][1]


@block
def activation_lanes(data, acts):
    """The B16 mantissas of a scratchpad block, narrowed to the lanes' activation width."""
    words = bus_lanes(data, WORD, BLOCK)
    narrow = ConcatSignal(*[w(ACT_BITS, 0) for w in reversed(words)])

    @always_comb
    def narrow_lanes():
        acts.next = narrow

    return narrow_lanes


class Instruction:
    """The fields of the instruction being run, latched at DECODE; scratchpad and ROM addresses keep
    only the microcode bits this die's depths need."""

    def __init__(self, s_bits: int, rom_bits: int):
        self.op, self.tap = unsigned_signal(OP_HI - OP_LO), unsigned_signal(TAP_OP_BITS)
        self.src, self.src2, self.dst = (unsigned_signal(s_bits) for _ in range(3))
        self.n, self.groups = unsigned_signal(N_HI - N_LO), unsigned_signal(GROUPS_HI - GROUPS_LO)
        self.rom, self.fmt, self.aux = unsigned_signal(rom_bits), unsigned_signal(FMT_HI - FMT_LO), \
            unsigned_signal(AUX_HI - AUX_LO)
        self.sram = bit_signal()  # a MATMUL on the LoRA SRAM
        self.blocks = unsigned_signal(BLOCKS_HI - BLOCKS_LO)  # a MATMUL's output blocks; a feeding ROPE's KV heads
        self.epilogue = bit_signal()  # a MATMUL with SILU_EPILOGUE whose projections have no adapter loaded
        self.feed = unsigned_signal(FEED_HI - FEED_LO)  # a ROPE or RQ whose blocks also enter the attention unit


class Counts:
    """Beats of the instruction: issued of in_total beats, written of out_total results; a MATMUL's
    row group takes group_beats beats (its n reads, then pad beats up to lanes / 32 on a wide die);
    fetched counts the reads."""

    def __init__(self):
        self.issued, self.in_total, self.written, self.out_total, self.fetched = \
            (unsigned_signal(COUNT_BITS) for _ in range(5))
        self.group_beats = unsigned_signal(N_HI - N_LO)


class ReadPipe:
    """The read pipeline: addresses registered with `issue`, data at the units with `beat` (two
    cycles later), first/last of a row group and RoPE's block index inside its head alongside."""

    def __init__(self, s_bits: int, w_bits: int, head_block_bits: int):
        self.issue, self.beat, self.first, self.last, self.beat_first, self.beat_last = (bit_signal() for _ in range(6))
        self.raddr_a, self.raddr_b, self.w_addr = unsigned_signal(s_bits), unsigned_signal(s_bits), \
            unsigned_signal(w_bits)
        self.block_in_head, self.beat_block_in_head = unsigned_signal(head_block_bits), \
            unsigned_signal(head_block_bits)
        self.logits = bit_signal()  # a streamed MATMUL's output block: the argmax tracker takes it


class Enables:
    """Each unit's beats: high while the read port carries a block of the unit's op."""

    def __init__(self):
        self.add, self.rq, self.silu, self.rope, self.norm, self.embed = (bit_signal() for _ in range(6))


class Strobes:
    """One-cycle pulses of DECODE: clear the matmul gathering, start a unit (the attention unit's KV
    write or attention: a ROPE with FEED_KV or FEED_Q), arm the argmax tracker."""

    def __init__(self):
        self.mm_clear, self.norm, self.kv, self.attn, self.arm = (bit_signal() for _ in range(5))


@block
def tile(clk, rst, start, entry, busy, clock_on, pos, token, token_out, token_valid, up, down, ucode, w, consts, rsqrt,
         sigmoid, rope, exp2, lora, lora_on, perf, tap, lanes: int, scratch_depth: int, max_blocks: int, attn_limits,
         lora_sram: bool = True):
    """One layer tile; see the module docstring. `up`, `down` are BlockBus, `tap` a TapPort, and
    ucode, w, consts, rsqrt, sigmoid, rope, exp2, lora are RomPort of the microcode, weight, consts
    and table ROMs and the LoRA SRAM (rtl/chip.py UNIT_PORTS). `attn_limits` (AttentionLimits of
    the die) sizes the attention unit and its KV SRAM. lora_sram=False (the head): no LoRA SRAM."""
    w_bits, s_bits = len(w.addr), address_bits(scratch_depth)
    rom_bits = max(w_bits, len(consts.addr), attention.ATTN_SCALE_BITS)
    head_block_bits = len(rope.addr) - (attn_limits.kv_tokens - 1).bit_length()
    state, ins, counts, strobes = Signal(SeqState.IDLE), Instruction(s_bits, rom_bits), Counts(), Strobes()
    reads = ReadPipe(s_bits, w_bits, head_block_bits)
    # ROM words that sub-blocks slice: locals here, so that MyHDL names them, and their slices, as
    # the tile's ports before a sub-block names them otherwise
    ucode_data, w_data, lora_data = ucode.data, w.data, lora.data
    row_base = unsigned_signal(w_bits)  # EMBED: the first ROM word of the token's row group
    # produce: a unit hands out a block this cycle; end_tap: the head taps its token
    # pass_off: the word in DECODE heads an adapter pass whose projection's flag is clear
    produce, end_tap, mm_out_valid, pass_off = bit_signal(), bit_signal(), bit_signal(), bit_signal()
    # loaded: an adapter of the word's projections is loaded; skip_one: pass_off steps over one instruction
    loaded, skip_one = bit_signal(), bit_signal()
    pc = unsigned_signal(len(ucode.addr))  # the address of the instruction in DECODE or RUN
    decoding = bit_signal()  # this cycle decodes the ROM's word (DECODE, or the last cycle of a RUN)
    control = [sequencer(clk, rst, start, entry, busy, ucode, pc, state, counts, reads, end_tap, produce,
                         mm_out_valid, pass_off, skip_one, decoding),
               adapter_switch(ucode_data, lora_on, loaded, pass_off, skip_one),
               decoder(clk, rst, decoding, ucode_data, token, loaded, ins, counts, strobes, row_base, lanes,
                       w_bits, s_bits),
               issuer(clk, rst, state, decoding, ins, counts, reads, row_base, w, s_bits, head_block_bits,
                      lanes > BLOCK),
               lora_reads(clk, ins, reads, lora, lora_sram)]

    # the scratchpad's two read ports feed every unit; each unit takes the beats of its op
    a_data, b_data, a_exp_bits = unsigned_signal(DATA_BITS), unsigned_signal(DATA_BITS), unsigned_signal(EXP_BITS)
    we, wdata, waddr = bit_signal(), unsigned_signal(ENTRY_BITS), unsigned_signal(s_bits)
    epi = Epilogue(s_bits)
    memory = scratchpad(clk, we, waddr, wdata, reads.issue, epi.read_b, reads.raddr_a, epi.addr_b, a_data, a_exp_bits,
                        b_data, scratch_depth)
    a_exp, acc_exp, stream = signed_signal(EXP_BITS), signed_signal(EXP_BITS), bit_signal()
    enables, outs = Enables(), {name: BlockBus(exp=name not in ACC_UNITS) for name in UNIT_OPS}
    mm_out, best_row = unsigned_signal(DATA_BITS), unsigned_signal(head.ROW_BITS)
    embed_slot = unsigned_signal(SLOT_BITS)  # the token's lane of the weight word
    words = RomWords(sigmoid, rope, consts, rsqrt, exp2)
    norm_done, attn_done, attn_busy, attn_refused, waiting = (bit_signal() for _ in range(5))
    norm_in = unsigned_signal(DATA_BITS)  # the scratchpad's read port, the upstream block of a RECV, or the ADD's
    attn_in, attn_data, attn_exp = bit_signal(), unsigned_signal(DATA_BITS), signed_signal(EXP_BITS)  # fed blocks
    units = [
        vector.add_unit(clk, rst, enables.add, a_data, b_data, outs["add"]),
        vector.rq_unit(clk, rst, enables.rq, a_data, acc_exp, outs["rq"]),
        vector.silu_unit(clk, rst, epi.silu_in, epi.gate, epi.up, outs["silu"],
                         RomPort.of(en=sigmoid.en, addr=sigmoid.addr, data=words.sigmoid)),
        vector.rope_unit(clk, rst, enables.rope, a_data, pos(len(rope.addr) - head_block_bits, 0),
                         reads.beat_block_in_head, outs["rope"],
                         RomPort.of(en=rope.en, addr=rope.addr, data=words.rope)),
        vector.norm_unit(clk, rst, strobes.norm, ins.n(vector.norm_count_bits(max_blocks), 0),
                         ins.rom(len(consts.addr), 0), enables.norm, norm_in, outs["norm"], norm_done,
                         RomPort.of(en=consts.en, addr=consts.addr, data=words.consts),
                         RomPort.of(en=rsqrt.en, addr=rsqrt.addr, data=words.rsqrt), max_blocks=max_blocks),
        attention.attention_unit(clk, rst, strobes.kv, strobes.attn, pos, ins.groups(attn_limits.heads_bits, 0),
                                 ins.blocks(attn_limits.heads_bits, 0), ins.aux(attn_limits.head_blocks_bits, 0),
                                 ins.rom(attention.ATTN_SCALE_BITS, 0), attn_in, attn_data, attn_exp, outs["attn"],
                                 attn_done, attn_busy, attn_refused, RomPort.of(addr=exp2.addr, data=words.exp2),
                                 attn_limits),
        head.embed_unit(clk, rst, enables.embed, ins.fmt, embed_slot, outs["embed"]),
        head.argmax_tracker(clk, rst, strobes.arm, ins.groups, reads.logits, counts.written(head.ROW_BITS, 0), mm_out,
                            best_row),
    ]
    waivers = [ignored_inputs(ucode_data, token, s_bits, rom_bits, w_bits + (lanes - 1).bit_length()),
               unused(ConcatSignal(norm_done, attn_done, attn_busy, attn_refused), "handshakes",
                      "unit handshakes: the sequencer paces each unit by its own beat and block counts")]
    if not lora_sram:
        waivers += [unused(lora_data, "lora_data", "the head has no LoRA SRAM"),
                    unused(ins.sram, "ins_sram", "the head has no LoRA SRAM: its programs never set the sram bit")]
    return (control, memory, units, waivers, rom_words(sigmoid, rope, consts, rsqrt, exp2, words),
            matmul_side(clk, rst, token, w_data, lora_data if lora_sram else None, ins, strobes, reads, stream, a_data,
                        a_exp, mm_out_valid, mm_out, embed_slot, lanes),
            unit_enables(clk, reads.beat, ins, up, outs["add"], enables, stream, a_data, norm_in, a_exp_bits, a_exp,
                         acc_exp),
            silu_epilogue(clk, rst, ins, strobes, counts.written, reads, mm_out_valid, mm_out, enables.silu, a_data,
                          b_data, outs["silu"].valid, epi),
            write_back(ins, epi.index, up, epi.mm_keep, mm_out, outs, stream, produce, we, wdata, waddr, epi.base,
                       epi.f_write),
            attention_feed(ins, produce, wdata, attn_in, attn_data, attn_exp),
            tap_out(clk, rst, produce, end_tap, epi.tap, epi.index, wdata, zero_extended(best_row, DATA_BITS),
                    best_row, tap, token_out, token_valid),
            outward(rst, start, busy, state, ins, counts, reads.beat, a_data, a_exp, produce, wdata, up, tap,
                    token_valid, strobes.norm, down, clock_on, waiting),
            perf_probe(busy, state, waiting, pc, perf))


UNIT_OPS = ("add", "rq", "silu", "rope", "norm", "attn", "embed")  # the units behind the read ports, but the matmul
ACC_UNITS = ("add", "embed")  # their output is an ACC bus: no exponent


class RomWords:
    """The data words of the table and consts ROMs, as the units read them: units read them only
    through slices, so the tile copies them (rom_words) and a standalone conversion of the tile
    still declares the ROM data as input ports."""

    def __init__(self, sigmoid, rope, consts, rsqrt, exp2):
        self.sigmoid, self.rope, self.consts = (unsigned_signal(len(p.data)) for p in (sigmoid, rope, consts))
        self.rsqrt, self.exp2 = unsigned_signal(len(rsqrt.data)), unsigned_signal(len(exp2.data))


@block
def rom_words(sigmoid, rope, consts, rsqrt, exp2, words):
    @always_comb
    def copy():
        words.sigmoid.next = sigmoid.data
        words.rope.next = rope.data
        words.consts.next = consts.data
        words.rsqrt.next = rsqrt.data
        words.exp2.next = exp2.data

    return copy


@block
def matmul_side(clk, rst, token, w_data, sram_data, ins, strobes, reads, stream, a_data, a_exp, mm_out_valid, mm_out,
                embed_slot, lanes: int):
    """The matmul engine on the activation read port and the weight ROM, or the LoRA SRAM for a
    MATMUL with `sram` set (sram_data None: none); EMBED's lane of the weight word; a streamed
    MATMUL's blocks (the LM head's logits) go to the argmax tracker."""
    acts = unsigned_signal(BLOCK * ACT_BITS)
    mm_valid = bit_signal()
    lora_word, sources = None, []
    if sram_data is not None and is_wide(lanes):
        lora_word = sram_data  # each lane's slot port selects its block (rtl/lanes.py SlotSelect)
    elif sram_data is not None:
        lora_word, scales = lora_slots(sram_data, lanes)
        sources = lora_scales(sram_data, scales, lanes)

    @always_comb
    def matmul_beats():
        mm_valid.next = reads.beat and ins.op == OP_MATMUL
        reads.logits.next = stream and mm_out_valid

    return (matmul_engine(clk, rst, strobes.mm_clear, ins.groups, ins.blocks, mm_valid, reads.beat_first,
                          reads.beat_last, ins.fmt, ins.sram, w_data, lora_word, acts, a_exp, mm_out_valid, mm_out,
                          lanes),
            activation_lanes(a_data, acts), embed_lane(clk, token, w_data, embed_slot, lanes), matmul_beats, sources)


@block
def embed_lane(clk, token, w_data, embed_slot, lanes: int):
    """EMBED's slot: the token's lane of the weight word (its low bits). A lane count that is not a
    power of two has no such lane select: that unit never embeds (the die puts a power of two of
    lanes in the head, rtl/die.py)."""
    if lanes & (lanes - 1) == 0:
        return mux_tree(token, bus_lanes(w_data, SLOT_BITS, lanes), embed_slot)

    @always(clk.posedge)
    def no_lane():  # a constant register: the converter needs a process with a trigger
        embed_slot.next = 0

    return no_lane, unused(token((lanes - 1).bit_length(), 0), "token_lane", "a unit whose lanes are not a power "
                           "of two never embeds: no lane select")


def lora_slots(sram_data, lanes: int):
    """A LoRA SRAM word as a weight word: each block is a Q8_0 slot whose scale is the exact fp16
    2**e (docs/numerics.md 12.2), so the block-MAC lanes compute A x and B' u unchanged. Returns
    the word (a concatenation) and its slots' scales, which lora_scales drives."""
    blocks = bus_lanes(sram_data, LORA_BLOCK_BITS, lanes)
    scales = [unsigned_signal(16) for _ in range(lanes)]
    spare = SLOT_BITS - BLOCK * 8 - 16
    # one flat concatenation (the converter does not nest them): per lane, from the top, spare bits, d, codes
    word = ConcatSignal(*[part for i in reversed(range(lanes))
                          for part in (intbv(0)[spare:], scales[i], blocks[i](BLOCK * 8, 0))])
    return word, scales


@block
def lora_scales(sram_data, scales, lanes: int):
    blocks = bus_lanes(sram_data, LORA_BLOCK_BITS, lanes)
    return [exponent_scale(blocks[i](LORA_BLOCK_BITS, BLOCK * 8), scales[i]) for i in range(lanes)]


@block
def exponent_scale(field, scale):
    """fp16 bits of 2**e, e the signed exponent field (a table: a case statement)."""

    @always_comb
    def lookup():
        scale.next = FP16_OF_EXPONENT[int(field)]

    return lookup


@block
def lora_reads(clk, ins, reads, lora, lora_sram: bool):
    """The LoRA SRAM's read port: the weight address, read only by a MATMUL with `sram` set."""
    sram_bits = len(lora.addr)

    @always_comb
    def port():
        lora.en.next = reads.issue and ins.sram
        lora.addr.next = reads.w_addr[sram_bits:]

    @always(clk.posedge)
    def no_port():  # constant registers: the converter needs a process with a trigger
        lora.en.next = 0
        lora.addr.next = 0

    return port if lora_sram else no_port


@block
def sequencer(clk, rst, start, entry, busy, ucode, pc, state, counts, reads, end_tap, produce, mm_out_valid,
              pass_off, skip_one, decoding):
    """The FSM: fetch and decode an instruction, run it until every read is issued and every result
    written, then decode the next. During RUN the microcode ROM reads the next instruction, so from
    RUN's second cycle on its word is at hand: RUN's last cycle (the one that writes the last result)
    then also decodes it (`decoding`), and the next RUN follows at once; a RUN done in its first
    cycle is followed by a DECODE cycle. An adapter pass that is off is stepped over where its head
    is decoded, while the ROM reads the instruction after the pass, which the next cycle decodes (a
    conditional instruction that is off likewise, alone: `skip_one`); only the jump to the entry
    fetches first. END stops (the head first taps its token, in FINISH)."""
    word_ahead = bit_signal()  # RUN's ROM word is the next instruction's (not RUN's first cycle)
    finishing = bit_signal()  # RUN: every read is issued and the last result is written in this cycle
    decoded_pc = unsigned_signal(len(pc))  # the address of the word being decoded

    @always_comb
    def run_end():
        finishing.next = state == SeqState.RUN and counts.issued >= counts.in_total and not reads.issue and \
            not reads.beat and ((counts.written == counts.out_total and not mm_out_valid) or
                                (produce and counts.written + 1 == counts.out_total))

    @always_comb
    def decode_here():
        decoding.next = state == SeqState.DECODE or (finishing and word_ahead)
        if state == SeqState.DECODE:
            decoded_pc.next = pc
        else:
            decoded_pc.next = pc + 1

    @always_comb
    def fetch_address():
        if decoding and pass_off and skip_one:
            ucode.addr.next = decoded_pc + 1  # a conditional instruction is followed by at least END
        elif decoding and pass_off:
            ucode.addr.next = decoded_pc + LORA_PASS_LEN  # a pass is followed by at least END: in the ROM
        elif state == SeqState.RUN:
            ucode.addr.next = pc + 1  # never past the ROM: the last instruction is END, which does not run
        else:
            ucode.addr.next = pc

    @always_seq(clk.posedge, reset=rst)
    def fsm():
        end_tap.next = 0
        word_ahead.next = state == SeqState.RUN and not decoding
        if produce:
            counts.written.next = counts.written + 1
        if state == SeqState.IDLE:
            busy.next = 0
            if start:
                pc.next = entry
                busy.next = 1
                state.next = SeqState.FETCH
        elif state == SeqState.FETCH:
            state.next = SeqState.DECODE  # the ROM answers for pc in the next cycle
        elif decoding:
            counts.written.next = 0
            pc.next = decoded_pc
            if ucode.data[OP_HI:OP_LO] == OP_END and ucode.data[TAP_HI:TAP_LO] != 0:
                end_tap.next = 1  # the head hands out its token, tapped, in FINISH
                state.next = SeqState.FINISH
            elif ucode.data[OP_HI:OP_LO] == OP_END:
                state.next = SeqState.IDLE
                busy.next = 0
            elif pass_off and skip_one:
                pc.next = decoded_pc + 1
                state.next = SeqState.DECODE
            elif pass_off:
                pc.next = decoded_pc + LORA_PASS_LEN
                state.next = SeqState.DECODE
            else:
                state.next = SeqState.RUN
        elif state == SeqState.RUN:
            if finishing:  # in RUN's first cycle: the ROM answers for pc + 1 in the next
                pc.next = pc + 1
                state.next = SeqState.DECODE
        else:  # FINISH
            state.next = SeqState.IDLE
            busy.next = 0

    return run_end, decode_here, fetch_address, fsm


@block
def adapter_switch(ucode_data, lora_on, loaded, pass_off, skip_one):
    """`loaded`: an adapter flag of the word's projections (lora .. lora + span) is set. A conditional
    instruction without one is off (rtl/isa.py is_conditional): the sequencer steps over it, an
    adapter pass's head (a MATMUL on the LoRA SRAM) with its pass, any other one (`skip_one`) alone."""
    count = len(lora_on)
    # after<k>, bit l: the flag of projection l - 1 + k (l = lora is 1 + its index), zero past the last
    after0, after1, after2, after3 = [ConcatSignal(lora_on, intbv(0)[1:])] + \
        [ConcatSignal(intbv(0)[k:], lora_on(count, k - 1)) for k in range(1, 4)]

    @always_comb
    def flags():
        loaded.next = ucode_data[LORA_HI:LORA_LO] != 0 and \
            (after0[ucode_data[LORA_HI:LORA_LO]] or
             (ucode_data[SPAN_HI:SPAN_LO] >= 1 and after1[ucode_data[LORA_HI:LORA_LO]]) or
             (ucode_data[SPAN_HI:SPAN_LO] >= 2 and after2[ucode_data[LORA_HI:LORA_LO]]) or
             (ucode_data[SPAN_HI:SPAN_LO] == 3 and after3[ucode_data[LORA_HI:LORA_LO]]))

    @always_comb
    def switch():
        skip_one.next = ucode_data[OP_HI:OP_LO] != OP_MATMUL
        pass_off.next = ucode_data[LORA_HI:LORA_LO] != 0 and not loaded and \
            (ucode_data[OP_HI:OP_LO] != OP_MATMUL or ucode_data[SRAM_LO])

    return flags, switch


@block
def decoder(clk, rst, decoding, ucode_data, token, loaded, ins, counts, strobes, row_base, lanes: int, w_bits: int,
            s_bits: int):
    """DECODE (`decoding`: a DECODE cycle or RUN's last): latch the instruction's fields, size its
    reads and results, and pulse the strobes. A projection MATMUL whose adapter pass runs (`loaded`)
    leaves its tap to the pass (its ADD taps the joined result) and runs without its SiLU epilogue
    (the SILU after the passes does it).
    A MATMUL's row group takes max(n, lanes / 32) beats (group_length), its output blocks are its
    `blocks` field."""
    src_top, src2_top, dst_top = SRC_LO + s_bits, SRC2_LO + s_bits, DST_LO + s_bits
    rom_top = ROM_LO + len(ins.rom)
    lane_shift = (lanes - 1).bit_length()
    token_top = min(w_bits + lane_shift, len(token))  # a token's row group, modulo the ROM, within its bits
    group_len = unsigned_signal(N_HI - N_LO)
    length = group_length(ucode_data(N_HI, N_LO), group_len, max(1, lanes // BLOCK))

    @always_seq(clk.posedge, reset=rst)
    def decode():
        code = intbv(0)[OP_HI - OP_LO:]
        count = intbv(0)[COUNT_BITS:]  # the n and groups fields, widened to beat counts
        rows = intbv(0)[COUNT_BITS:]
        beats = intbv(0)[COUNT_BITS:]
        out_blocks = intbv(0)[COUNT_BITS:]
        strobes.mm_clear.next = 0
        strobes.norm.next = 0
        strobes.kv.next = 0
        strobes.attn.next = 0
        strobes.arm.next = 0
        if decoding:
            code[:] = ucode_data[OP_HI:OP_LO]
            count[N_HI - N_LO:] = ucode_data[N_HI:N_LO]
            rows[GROUPS_HI - GROUPS_LO:] = ucode_data[GROUPS_HI:GROUPS_LO]
            ins.op.next = code
            if loaded and code == OP_MATMUL:
                ins.tap.next = 0
            else:
                ins.tap.next = ucode_data[TAP_HI:TAP_LO]
            ins.epilogue.next = code == OP_MATMUL and ucode_data[EPILOGUE_BIT] and not loaded
            ins.sram.next = ucode_data[SRAM_LO]
            ins.src.next = ucode_data[src_top:SRC_LO]
            ins.src2.next = ucode_data[src2_top:SRC2_LO]
            ins.dst.next = ucode_data[dst_top:DST_LO]
            ins.n.next = count[N_HI - N_LO:]
            ins.groups.next = rows[GROUPS_HI - GROUPS_LO:]
            ins.rom.next = ucode_data[rom_top:ROM_LO]
            ins.fmt.next = ucode_data[FMT_HI:FMT_LO]
            ins.aux.next = ucode_data[AUX_HI:AUX_LO]
            ins.blocks.next = ucode_data[BLOCKS_HI:BLOCKS_LO]
            ins.feed.next = ucode_data[FEED_HI:FEED_LO]
            counts.group_beats.next = group_len
            strobes.norm.next = (code == OP_NORM and ucode_data[AUX_LO] != NORM_FED) or \
                (code == OP_RECV and ucode_data[AUX_LO] == ALSO_NORM) or \
                (code == OP_ADD and ucode_data[AUX_LO + FEEDS_NORM_BIT] == 1)
            strobes.kv.next = code == OP_ROPE and ucode_data[FEED_HI:FEED_LO] == FEED_KV
            strobes.attn.next = code == OP_ROPE and ucode_data[FEED_HI:FEED_LO] == FEED_Q
            strobes.arm.next = code == OP_ARGMAX
            strobes.mm_clear.next = 1
            if code == OP_EMBED:
                row_base.next = token[token_top:lane_shift] * count[w_bits:]  # modulo the ROM
            else:
                row_base.next = 0
            if code == OP_RECV or code == OP_ATTN or (code == OP_NORM and ucode_data[AUX_LO] == NORM_FED):
                counts.in_total.next = 0
            elif code == OP_MATMUL:
                beats[:] = group_len * rows
                counts.in_total.next = beats
            else:
                counts.in_total.next = count
            if code == OP_SEND:
                counts.out_total.next = 0
            elif code == OP_ATTN:
                beats[:] = count * rows
                counts.out_total.next = beats
            elif code == OP_MATMUL:
                out_blocks[BLOCKS_HI - BLOCKS_LO:] = ucode_data[BLOCKS_HI:BLOCKS_LO]
                counts.out_total.next = out_blocks
            else:
                counts.out_total.next = count

    return length, decode


@block
def group_length(n, group_len, blocks_per_group: int):
    """Beats of a MATMUL row group: its n input blocks, at least blocks_per_group (the output
    buffer of a wide engine hands out one block a beat)."""

    @always_comb
    def narrow():
        group_len.next = n

    @always_comb
    def wide():
        if n < blocks_per_group:
            group_len.next = blocks_per_group
        else:
            group_len.next = n

    return wide if blocks_per_group > 1 else narrow


@block
def issuer(clk, rst, state, decoding, ins, counts, reads, row_base, w, s_bits: int, head_block_bits: int, padded: bool):
    """RUN: one read per cycle until in_total are issued, walking the row groups (first, last) and
    RoPE's blocks inside a head; the beat registers carry each read to the units. A MATMUL's row
    group ends with pad beats (no read) on a wide die (group_length)."""
    w_bits = len(w.addr)
    block_in_group = unsigned_signal(ADDR_BITS)
    block_in_head = unsigned_signal(8)
    read = bit_signal()  # this beat reads (it is not a pad beat)
    beats = read_beats(clk, ins, block_in_group, read, padded)

    @always_comb
    def weight_address():
        w.addr.next = reads.w_addr

    @always_seq(clk.posedge, reset=rst)
    def issue_reads():
        read_a = intbv(0)[s_bits:]
        read_b = intbv(0)[s_bits:]
        reads.issue.next = 0
        reads.beat.next = reads.issue
        reads.beat_first.next = reads.first
        reads.beat_last.next = reads.last
        reads.beat_block_in_head.next = reads.block_in_head
        if decoding:
            counts.issued.next = 0
            counts.fetched.next = 0
            block_in_group.next = 0
            block_in_head.next = 0
        elif state == SeqState.RUN and counts.issued < counts.in_total:
            reads.issue.next = read
            counts.issued.next = counts.issued + 1
            if read:
                counts.fetched.next = counts.fetched + 1
            read_a[:] = ins.src + block_in_group[s_bits:]
            read_b[:] = ins.src2 + block_in_group[s_bits:]
            reads.raddr_a.next = read_a
            reads.raddr_b.next = read_b
            reads.w_addr.next = ins.rom[w_bits:] + row_base + counts.fetched[w_bits:]
            reads.first.next = block_in_group == 0
            reads.block_in_head.next = block_in_head[head_block_bits:]
            reads.last.next = block_in_group + 1 == ins.n
            if block_in_group + 1 == counts.group_beats and ins.op == OP_MATMUL:
                block_in_group.next = 0
            else:
                block_in_group.next = block_in_group + 1
            if block_in_head + 1 == ins.aux:  # RoPE: the block's index inside its head
                block_in_head.next = 0
            else:
                block_in_head.next = block_in_head + 1

    return weight_address, issue_reads, beats


@block
def read_beats(clk, ins, block_in_group, read, padded: bool):
    """`read`: the beat reads. A MATMUL's beats past its n input blocks are pad beats (only on a
    wide die: elsewhere a row group is exactly its n reads)."""

    @always_comb
    def pad():
        read.next = not (ins.op == OP_MATMUL and block_in_group >= ins.n)

    @always(clk.posedge)
    def every_beat():  # a constant register: the converter needs a process with a trigger
        read.next = 1

    return pad if padded else every_beat


@block
def unit_enables(clk, beat, ins, up, add_out, enables, stream, a_data, norm_in, a_exp_bits, a_exp, acc_exp):
    """Each unit takes the beats of its own op; a streamed MATMUL (the LM head) keeps no results. The
    norm unit also takes the blocks a RECV with ALSO_NORM receives, straight from upstream, and those
    an ADD with FEEDS_NORM makes."""

    @always(clk.posedge)
    def constants():
        acc_exp.next = -ACC_FRAC  # a constant register: the converter cannot write negative literals

    @always_comb
    def operands():
        a_exp.next = a_exp_bits.signed()
        enables.add.next = beat and ins.op == OP_ADD
        enables.rq.next = beat and ins.op == OP_RQ
        enables.silu.next = beat and ins.op == OP_SILU
        enables.rope.next = beat and ins.op == OP_ROPE
        enables.norm.next = (beat and ins.op == OP_NORM) or \
            (up.valid and ins.op == OP_RECV and ins.aux[0] == ALSO_NORM) or \
            (add_out.valid and ins.op == OP_ADD and ins.aux[FEEDS_NORM_BIT])
        if ins.op == OP_RECV:
            norm_in.next = up.data
        elif ins.op == OP_ADD:
            norm_in.next = add_out.data
        else:
            norm_in.next = a_data
        enables.embed.next = beat and ins.op == OP_EMBED
        stream.next = ins.op == OP_MATMUL and ins.aux[0] == STREAM_ONLY

    return constants, operands


class Epilogue:
    """A MATMUL's SiLU epilogue (rtl/isa.py SILU_EPILOGUE) beside the tile: the scratchpad's port b
    (read_b, addr_b), the SiLU unit's inputs (silu_in, gate, up), the matmul results it keeps from
    the write port (mm_keep: the others are up blocks), and where each written block goes and how
    it is tapped (f_write: an f block; base + index; tap)."""

    def __init__(self, s_bits: int):
        self.read_b, self.silu_in, self.mm_keep, self.f_write = (bit_signal() for _ in range(4))
        self.addr_b, self.base = unsigned_signal(s_bits), unsigned_signal(s_bits)
        self.gate, self.up = unsigned_signal(DATA_BITS), unsigned_signal(DATA_BITS)
        self.index, self.tap = unsigned_signal(COUNT_BITS), unsigned_signal(TAP_OP_BITS)


@block
def silu_epilogue(clk, rst, ins, strobes, written, reads, mm_out_valid, mm_out, silu_beat, a_data, b_data, silu_valid,
                  epi):
    """The SiLU gate as a MATMUL's epilogue: the first half of its output blocks (gate) is written
    as usual; each later one (up_j) waits a cycle in `up_held` while port b reads gate_j (dst + j),
    then both enter the SiLU unit, whose block f_j is written to src2 + j and tapped (gate is not).
    Writes never collide: every gate block has left the engine before the first up block, and up
    blocks are not written. The sequencer's RUN ends once `blocks` blocks are written (the gate
    half and every f block), so it waits for the SiLU pipeline. Otherwise the SILU instruction
    feeds the unit from ports a (gate) and b (up)."""
    half_bits = BLOCKS_HI - BLOCKS_LO - 1
    gates_left = unsigned_signal(half_bits)  # gate blocks still to leave the engine
    up_index, f_index = unsigned_signal(len(epi.addr_b)), unsigned_signal(COUNT_BITS)
    up_held, held = unsigned_signal(DATA_BITS), bit_signal()
    up_block = bit_signal()

    @always_comb
    def route():
        up_block.next = ins.epilogue and mm_out_valid and gates_left == 0
        epi.f_write.next = ins.epilogue and silu_valid
        epi.silu_in.next = silu_beat or held

    @always_comb
    def ports():
        epi.mm_keep.next = mm_out_valid and not up_block
        epi.read_b.next = reads.issue or up_block
        if up_block:
            epi.addr_b.next = ins.dst + up_index
        else:
            epi.addr_b.next = reads.raddr_b
        if ins.epilogue:
            epi.gate.next = b_data
            epi.up.next = up_held
        else:
            epi.gate.next = a_data
            epi.up.next = b_data

    @always_comb
    def placement():
        if epi.f_write:
            epi.base.next = ins.src2
            epi.index.next = f_index
            epi.tap.next = ins.tap
        else:
            epi.base.next = ins.dst
            epi.index.next = written
            if ins.epilogue:
                epi.tap.next = 0
            else:
                epi.tap.next = ins.tap

    @always_seq(clk.posedge, reset=rst)
    def track():
        held.next = up_block
        if strobes.mm_clear:
            gates_left.next = ins.blocks[BLOCKS_HI - BLOCKS_LO:1]
            up_index.next = 0
            f_index.next = 0
        else:
            if up_block:
                up_index.next = up_index + 1
            elif ins.epilogue and mm_out_valid:
                gates_left.next = gates_left - 1
            if epi.f_write:
                f_index.next = f_index + 1

    @always(clk.posedge)
    def hold():
        if up_block:
            up_held.next = mm_out

    return route, ports, placement, track, hold


@block
def write_back(ins, written, up, mm_out_valid, mm_out, outs, stream, produce, we, wdata, waddr, base, f_write):
    """The one block produced this cycle, from whichever source the instruction uses; it is
    written to the scratchpad at base + written unless it is a streamed logit block (`f_write`: a
    MATMUL's SiLU epilogue hands out a block, silu_epilogue)."""
    s_bits = len(waddr)
    add_valid, rq_valid, silu_valid, rope_valid, norm_valid, attn_valid, embed_valid = \
        (outs[name].valid for name in UNIT_OPS)
    up_entry = ConcatSignal(up.exp, up.data)
    mm_entry = ConcatSignal(intbv(0)[EXP_BITS:], mm_out)
    add_entry = ConcatSignal(intbv(0)[EXP_BITS:], outs["add"].data)
    embed_entry = ConcatSignal(intbv(0)[EXP_BITS:], outs["embed"].data)
    rq_entry, silu_entry = outs["rq"].entry(), outs["silu"].entry()
    rope_entry, norm_entry, attn_entry = outs["rope"].entry(), outs["norm"].entry(), outs["attn"].entry()

    @always_comb
    def write_port():
        produce.next = 0
        wdata.next = 0
        if ins.op == OP_RECV and up.valid:
            produce.next = 1
            wdata.next = up_entry
        elif ins.op == OP_MATMUL and mm_out_valid:
            produce.next = 1
            wdata.next = mm_entry
        elif ins.op == OP_ADD and add_valid:
            produce.next = 1
            wdata.next = add_entry
        elif ins.op == OP_RQ and rq_valid:
            produce.next = 1
            wdata.next = rq_entry
        elif (ins.op == OP_SILU or f_write) and silu_valid:
            produce.next = 1
            wdata.next = silu_entry
        elif ins.op == OP_ROPE and rope_valid:
            produce.next = 1
            wdata.next = rope_entry
        elif ins.op == OP_NORM and norm_valid:
            produce.next = 1
            wdata.next = norm_entry
        elif ins.op == OP_ATTN and attn_valid:
            produce.next = 1
            wdata.next = attn_entry
        elif ins.op == OP_EMBED and embed_valid:
            produce.next = 1
            wdata.next = embed_entry
        waddr.next = base + written[s_bits:]  # scratchpad addresses wrap: the metal keeps them in range

    @always_comb
    def keep():
        we.next = produce and not stream

    return write_port, keep


@block
def attention_feed(ins, produce, wdata, attn_in, attn_data, attn_exp):
    """The attention unit's input: every block a ROPE or RQ with `feed` writes also enters the unit,
    as it reaches the scratchpad (K then V of the KV write, or the Q blocks of the attention), so no
    instruction reads them back for it. The unit takes beats at any pace."""

    @always_comb
    def feed():
        attn_in.next = produce and ins.feed != 0 and (ins.op == OP_ROPE or ins.op == OP_RQ)
        attn_data.next = wdata[DATA_BITS:]
        attn_exp.next = wdata[ENTRY_BITS:DATA_BITS].signed()

    return feed


@block
def tap_out(clk, rst, produce, end_tap, tap_id, written, wdata, token_word, best_row, tap, token_out,
            token_valid):
    """Every written block of a tapped op leaves on the tap port, a cycle later; END's tap is the token."""

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

    return taps


@block
def outward(rst, start, busy, state, ins, counts, beat, a_data, a_exp, produce, wdata, up, tap, token_valid,
            norm_start, down, clock_on, waiting):
    """The residual downstream: SEND's reads, or each block an ADD or EMBED with ALSO_SEND writes
    (ACC blocks: exponent 0); and the tile's clock enable (`waiting`: in RECV, a block short)."""

    @always_comb
    def recv_wait():
        waiting.next = state == SeqState.RUN and ins.op == OP_RECV and counts.written != counts.out_total

    @always_comb
    def clock_enable():
        """Run while busy and not waiting, and for the edge that takes an upstream block, clears a
        tap beat or starts the norm unit (a RECV with ALSO_NORM starts it as it begins to wait)."""
        clock_on.next = rst or start or (busy and not waiting) or up.valid or tap.valid or token_valid or norm_start

    @always_comb
    def downstream():
        down.valid.next = (beat and ins.op == OP_SEND) or \
            (produce and (ins.op == OP_ADD or ins.op == OP_EMBED) and ins.aux[0] == ALSO_SEND)
        if ins.op == OP_SEND:
            down.data.next = a_data
            down.exp.next = a_exp
        else:
            down.data.next = wdata[DATA_BITS:]
            down.exp.next = 0

    return recv_wait, clock_enable, downstream


@block
def perf_probe(busy, state, waiting, pc, perf):
    """The performance probe: a unit waiting in RECV is not working (its upstream neighbour is, or
    the link between them), so the chip can charge each cycle to one unit's instruction."""

    @always_comb
    def probe():
        perf.valid.next = busy and not waiting
        perf.run.next = state == SeqState.RUN
        perf.pc.next = pc

    return probe


@block
def ignored_inputs(ucode_data, token, s_bits: int, rom_bits: int, token_bits: int):
    """Waivers for input bits this die never needs: microcode bits beyond its depths, and
    token bits beyond its weight ROM."""
    fields = [(SRC_LO + s_bits, SRC_HI), (SRC2_LO + s_bits, SRC2_HI), (DST_LO + s_bits, DST_HI),
              (ROM_LO + rom_bits, ROM_HI), (FEED_HI, len(ucode_data))]
    spare = [ucode_data(lo) if hi == lo + 1 else ucode_data(hi, lo) for lo, hi in fields if hi > lo]  # a bit: no range
    waivers = [unused(ConcatSignal(*spare) if len(spare) > 1 else spare[0], "ucode_bits",
                      "microcode bits this die ignores: reserved, or above its scratchpad and ROM depths")]
    if token_bits < len(token):
        waivers.append(unused(token(len(token), token_bits), "token_bits",
                              "token bits above the weight ROM: the host interface refuses a token >= vocab"))
    return waivers
