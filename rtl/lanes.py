"""Block-MAC lanes: the slot decoding they share, and the lane group of a wide matmul engine.

A die whose `lanes` is a multiple of 32 computes lanes / 32 output blocks per row group. Each
block comes from a lane group: 32 block-MAC lanes on the broadcast activation block, one row
each. The lane group is converted once as a Verilog module of its own (LANE_MODULE) and
instantiated `lanes / 32` times in the tile, so the tile's conversion stays small and Verilator
compiles one class for every lane group of the die (it is not inlined: the module carries
Verilator's no_inline_module metacomment). The module is the same for every wide die.
"""

from __future__ import annotations

from functools import cache

from myhdl import ConcatSignal, ResetSignal, always, always_comb, block

from hardwire.golden.errors import HardwireError
from hardwire.golden.spec import ACC_BITS, BLOCK

from .bus import EXP_BITS, WORD
from .cells.block_mac import ACT_BITS, LoraSource, block_mac
from .cells.wiring import bit_signal, bus_lanes, signed_signal, unsigned_signal, unused
from .die import LORA_BLOCK_BITS, SLOT_BITS
from .isa import LAYOUT
from .verilog import to_verilog

LANE_MODULE = "hw_lanes"  # the lane group module of a wide die
FMT_BITS = dict(LAYOUT)["fmt"]
NO_INLINE = "/*verilator no_inline_module*/"
SLICED_PINS = {"slots": SLOT_BITS, "lora_blocks": LORA_BLOCK_BITS}  # a group's slice of a word: bits per row
# Verilator would read a sliced port straight from the tile's word, in code of each instance's own (the
# lane code would no longer be shared); a port it must treat as writable from outside keeps its own copy
OWN_COPY = "/*verilator public_flat_rw*/"


@block
def slot_fields(slot, codes, d_bits, m_bits, scales, mins):
    """A block slot: 32 code bytes, d, m/dmin, two scale fields, two min fields (rtl/metal.py packs it)."""

    @always_comb
    def split():
        codes.next = slot[BLOCK * 8:]
        d_bits.next = slot[BLOCK * 8 + 16:BLOCK * 8]
        m_bits.next = slot[BLOCK * 8 + 32:BLOCK * 8 + 16]
        scales.next = slot[BLOCK * 8 + 48:BLOCK * 8 + 32]
        mins.next = slot[SLOT_BITS:BLOCK * 8 + 48]

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
def mac_lanes(clk, rst, in_valid, first, last, fmt, slots, acts, e_act, ys, y_valids, lora=None):
    """One block-MAC lane per slot of `slots` (a list of SLOT_BITS buses), each on its own row;
    `lora` (a LoraSource per lane, or None) the LoRA SRAM blocks they read instead with `sram` high."""
    lanes = len(slots)
    codes = [unsigned_signal(BLOCK * 8) for _ in range(lanes)]
    d_bits = [unsigned_signal(16) for _ in range(lanes)]
    m_bits = [unsigned_signal(16) for _ in range(lanes)]
    scales, mins = [unsigned_signal(16) for _ in range(lanes)], [unsigned_signal(16) for _ in range(lanes)]
    splits = [slot_fields(slots[i], codes[i], d_bits[i], m_bits[i], scales[i], mins[i]) for i in range(lanes)]
    macs = [block_mac(clk, rst, in_valid, first, last, fmt, codes[i], scales[i], mins[i], d_bits[i], m_bits[i],
                      acts, e_act, None, None, ys[i], y_valids[i], lora[i] if lora else None) for i in range(lanes)]
    return splits, macs


@block
def lane_group(clk, rst, in_valid, first, last, fmt, sram, slots, lora_blocks, acts, e_act, y, y_valid):
    """32 block-MAC lanes: `slots` is 32 block slots of the weight word, `lora_blocks` the same
    rows' 32 blocks of the LoRA SRAM word, read instead with `sram` high; `y` the 32 row results
    (48 bits each, row 0 in the least significant bits), valid with `y_valid` and held until the
    next row group's. The lanes select between the two inside their stage-1 registers (block_mac's
    LoRA source): nothing in the group is combinational on its inputs but wiring, and no lane reads
    a signal outside its group, so a simulator compiles one copy of the lanes for every group."""
    ys = [signed_signal(ACC_BITS) for _ in range(BLOCK)]
    y_valids = [bit_signal() for _ in range(BLOCK)]
    blocks = bus_lanes(lora_blocks, LORA_BLOCK_BITS, BLOCK)
    lora = [LoraSource(sram, b(BLOCK * 8, 0), b(LORA_BLOCK_BITS, BLOCK * 8)) for b in blocks]
    lanes = mac_lanes(clk, rst, in_valid, first, last, fmt, bus_lanes(slots, SLOT_BITS, BLOCK), acts, e_act, ys,
                      y_valids, lora)
    others = ConcatSignal(*y_valids[1:])

    @always_comb
    def valid():
        y_valid.next = y_valids[0]  # every lane ends its row in the same cycle

    return lanes, packed_words(ys, y), valid, unused(others, "lane_valids", "the lanes end their rows together: "
                                                      "lane 0's valid stands for all")


@cache
def lane_group_verilog() -> str:
    """The lane group module's Verilog; it is the same for every wide die."""
    ports = dict(clk=bit_signal(), rst=ResetSignal(0, active=1, isasync=False), in_valid=bit_signal(),
                 first=bit_signal(), last=bit_signal(), fmt=unsigned_signal(FMT_BITS), sram=bit_signal(),
                 slots=unsigned_signal(BLOCK * SLOT_BITS), lora_blocks=unsigned_signal(BLOCK * LORA_BLOCK_BITS),
                 acts=unsigned_signal(BLOCK * ACT_BITS),
                 e_act=signed_signal(EXP_BITS), y=unsigned_signal(BLOCK * WORD), y_valid=bit_signal())
    text = to_verilog(lambda: lane_group(**ports), LANE_MODULE)
    for name in SLICED_PINS:  # written as the port can be, so that Verilator keeps a copy of the group's own
        declaration = f"input [{len(ports[name]) - 1}:0] {name};"
        if declaration not in text:
            raise HardwireError(f"the lane group's Verilog has no '{declaration}'")
        text = text.replace(declaration, f"{declaration[:-1]} {OWN_COPY};")
    head, sep, body = text.partition(");\n")  # the end of the port list
    return f"{head}{sep}{NO_INLINE}\n{body}"


class _LaneGroupPorts:
    """A lane group instance's port map, rendered when MyHDL writes the tile (its nets have names by then)."""

    def __init__(self, pins: dict, index: int):
        self.pins, self.index = pins, index

    def __str__(self) -> str:
        lines = []
        for name, sig in self.pins.items():
            net = sig._name
            if name in SLICED_PINS:
                width = BLOCK * SLICED_PINS[name]
                net = f"{net}[{(self.index + 1) * width - 1}:{self.index * width}]"
            lines.append(f"    .{name}({net})")
        return ",\n".join(lines)


@block
def lane_group_socket(clk, rst, in_valid, first, last, fmt, sram, w_data, lora_word, index: int, acts, e_act, y,
                      y_valid):
    """Lane group `index` of a wide engine on its 32 slots of the weight word and its 32 blocks of
    the LoRA SRAM word (`lora_word`, read with `sram` high): an instance of
    LANE_MODULE in the converted tile. Like rtl/chip.py's unit sockets it has no Python body: the
    lane group is elaborated once, for its own module (elaborating 32 block-MAC lanes takes MyHDL
    seconds, and a wide die has dozens of lane groups)."""
    pins = dict(clk=clk, rst=rst, in_valid=in_valid, first=first, last=last, fmt=fmt, sram=sram, slots=w_data,
                lora_blocks=lora_word, acts=acts, e_act=e_act, y=y, y_valid=y_valid)
    for name, sig in pins.items():  # the module reads its inputs and drives its outputs: MyHDL cannot see into it
        if name in ("y", "y_valid"):
            sig.driven = "wire"
        else:
            sig.read = True
            if isinstance(sig, ConcatSignal):  # only sockets read it (the LoRA word): declare and assign it
                sig.driven = "wire"
                sig._markUsed()
    port_map = _LaneGroupPorts(pins, index)  # noqa: F841 (read by verilog_code: MyHDL fills it from these locals)
    instance = f"u_lanes{index}"  # noqa: F841 (read by verilog_code)
    module = LANE_MODULE  # noqa: F841 (read by verilog_code)

    @always(clk.posedge)
    def opaque():
        pass  # simulated by Verilator only, as rtl/chip.py's unit sockets

    return opaque


lane_group_socket.verilog_code = "$module $instance (\n$port_map\n);\n"
