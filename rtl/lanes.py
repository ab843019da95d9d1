"""Block-MAC lanes: the slot decoding they share, and the lane group of a wide matmul engine.

A die whose `lanes` is a multiple of 32 computes lanes / 32 output blocks per row group. Each
block comes from a lane group: 32 block-MAC lanes on the broadcast activation block, one row
each. Every lane of the engine shares one format decode, one set of activation sums and the
activations sign-extended once (rtl/tile.py wide_matmul_engine). A lane is converted once as a
Verilog module of its own (MAC_MODULE), instantiated 32 times by the lane group module
(LANE_MODULE), which the tile instantiates `lanes / 32` times: the tile's conversion stays small,
and Verilator compiles one class for every lane of the die (the lane module carries Verilator's
no_inline_module metacomment; the group is inlined into the tile). Both modules are the same for
every wide die.
"""

from __future__ import annotations

import re
from functools import cache

from myhdl import ConcatSignal, ResetSignal, always, always_comb, block

from hardwire.golden.errors import HardwireError
from hardwire.golden.spec import ACC_BITS, BLOCK

from .bus import EXP_BITS, WORD
from .cells.block_mac import (
    ACT_BITS,
    LANE_TRAIT_BITS,
    NATIVE_BITS,
    FormatSignals,
    block_mac,
    format_decode,
    new_act_sums,
    shared_act_sums,
)
from .cells.wiring import bit_signal, signed_signal, unsigned_signal, unused
from .die import LORA_BLOCK_BITS, SLOT_BITS
from .verilog import to_verilog

LANE_MODULE = "hw_lanes"  # the lane group module of a wide die
NO_INLINE = "/*verilator no_inline_module*/"
MAC_MODULE = "hw_lane"  # one block-MAC lane of a lane group
GROUP_SLICED_PINS = {"slots": BLOCK * SLOT_BITS, "lora_blocks": BLOCK * LORA_BLOCK_BITS}  # a group's slice of a word
LANE_SLICED_PINS = {"y": WORD, "y_valid": 1}  # a lane's slices of its group's outputs
# Verilator would read a port straight from the net it is connected to, in code of the instance's own (the
# lane code would no longer be shared); a port it must treat as writable from outside keeps its own copy
OWN_COPY = "/*verilator public_flat_rw*/"
# the lane's slot (a slice of the tile's word): read in place, it would make the lane's code differ from
# lane to lane. The other inputs are the same nets for every lane of the engine: copying them costs more
OWN_COPY_PINS = ("slot",)


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
def mac_lanes(clk, rst, in_valid, first, last, fmt, slots, acts, e_act, ys, y_valids):
    """One block-MAC lane per slot of `slots` (a list of SLOT_BITS buses), each on its own row, and
    the format decode and activation sums they share (the narrow engine's lanes, in the tile itself)."""
    lanes = len(slots)
    codes = [unsigned_signal(BLOCK * 8) for _ in range(lanes)]
    d_bits = [unsigned_signal(16) for _ in range(lanes)]
    m_bits = [unsigned_signal(16) for _ in range(lanes)]
    scales, mins = [unsigned_signal(16) for _ in range(lanes)], [unsigned_signal(16) for _ in range(lanes)]
    splits = [slot_fields(slots[i], codes[i], d_bits[i], m_bits[i], scales[i], mins[i]) for i in range(lanes)]
    t, sums = FormatSignals(), new_act_sums(len(acts) // BLOCK)
    macs = [block_mac(clk, rst, in_valid, first, last, None, codes[i], scales[i], mins[i], d_bits[i], m_bits[i],
                      acts, e_act, None, None, ys[i], y_valids[i], None, sums, t)
            for i in range(lanes)]
    return format_decode(fmt, t), splits, macs, shared_act_sums(clk, rst, in_valid, t.code_offset, acts, sums)


@block
def mac_lane(clk, rst, in_valid, first, last, traits, sram, slot, acts, e_act, a_low, a_high, offset_low, offset_high,
             y, y_valid):
    """One block-MAC lane on `slot`: a slot of the weight word or, with `sram` high, the same row's
    block of the LoRA SRAM word (block_mac's LoRA blocks), with its engine's decoded format
    (`traits`, a FormatSignals.lane_bus), native activation lanes and activation sums (block_mac's
    `traits`, `acts` and `act_sums`): converted once as MAC_MODULE."""
    codes, d_bits, m_bits = unsigned_signal(BLOCK * 8), unsigned_signal(16), unsigned_signal(16)
    scales, mins = unsigned_signal(16), unsigned_signal(16)
    return (slot_fields(slot, codes, d_bits, m_bits, scales, mins),
            block_mac(clk, rst, in_valid, first, last, None, codes, scales, mins, d_bits, m_bits, acts, e_act, None,
                      None, y, y_valid, sram, (a_low, a_high, offset_low, offset_high),
                      FormatSignals.from_lane_bus(traits)))


@block
def lane_group(clk, rst, in_valid, first, last, traits, sram, slots, lora_blocks, acts, e_act, a_low, a_high,
               offset_low, offset_high, y, y_valid):
    """32 block-MAC lanes (MAC_MODULE instances) on their engine's decoded format, native
    activation lanes and activation sums (mac_lane): `slots` is 32 block slots of the weight word,
    `lora_blocks` the same rows' 32 blocks of the LoRA SRAM word, read instead with `sram` high;
    `y` the 32 row results (48 bits each, row 0 in the least significant bits), valid with
    `y_valid` and held until the next row group's. Each lane's slot port is connected to the
    select of the two (SlotSelect): nothing in a lane is combinational on its inputs but wiring,
    and a lane reads only its own copies (OWN_COPY_PINS) and signals the same for every lane, so a
    simulator compiles one copy of the lane for every lane of the die."""
    valids = unsigned_signal(BLOCK)  # each lane's y_valid
    lanes = [socket(MAC_MODULE, f"u_lane{k}", k,
                    dict(clk=clk, rst=rst, in_valid=in_valid, first=first, last=last, traits=traits, sram=sram,
                         slot=SlotSelect(sram, slots, lora_blocks), acts=acts, e_act=e_act, a_low=a_low, a_high=a_high,
                         offset_low=offset_low, offset_high=offset_high, y=y, y_valid=valids),
                    sliced=LANE_SLICED_PINS, outputs=("y", "y_valid"))
             for k in range(BLOCK)]

    @always_comb
    def valid():
        y_valid.next = valids[0]  # every lane ends its row in the same cycle

    others = unused(valids(BLOCK, 1), "lane_valids", "the lanes end their rows together: lane 0's valid stands for all")
    return lanes, valid, others


@cache
def lane_group_verilog() -> str:
    """The lane group module's Verilog, followed by the lane module's; the same for every wide die."""
    a_low, a_high, offset_low, offset_high = new_act_sums(ACT_BITS)
    ports = dict(clk=bit_signal(), rst=ResetSignal(0, active=1, isasync=False), in_valid=bit_signal(),
                 first=bit_signal(), last=bit_signal(), traits=unsigned_signal(LANE_TRAIT_BITS), sram=bit_signal(),
                 slots=unsigned_signal(BLOCK * SLOT_BITS), lora_blocks=unsigned_signal(BLOCK * LORA_BLOCK_BITS),
                 acts=unsigned_signal(BLOCK * NATIVE_BITS), e_act=signed_signal(EXP_BITS), a_low=a_low,
                 a_high=a_high, offset_low=offset_low, offset_high=offset_high, y=unsigned_signal(BLOCK * WORD),
                 y_valid=bit_signal())
    group = to_verilog(lambda: lane_group(**ports), LANE_MODULE)  # inlined: its lanes read the tile's words
    lane_ports = {**ports, "slot": unsigned_signal(SLOT_BITS), "y": signed_signal(ACC_BITS)}
    del lane_ports["slots"], lane_ports["lora_blocks"]
    lane = to_verilog(lambda: mac_lane(**lane_ports), MAC_MODULE)
    return f"{group}\n{_not_inlined(_own_copies(lane, OWN_COPY_PINS))}"


def _own_copies(lane: str, inputs: tuple[str, ...]) -> str:
    """The lane's Verilog with OWN_COPY on each of `inputs`."""
    for name in inputs:
        lane, found = re.subn(rf"^(input (?:signed )?(?:\[\d+:0\] )?{name});$", rf"\1 {OWN_COPY};", lane, flags=re.M)
        if found != 1:
            raise HardwireError(f"the lane's Verilog has no declaration of input '{name}'")
    return lane


def _not_inlined(text: str) -> str:
    head, sep, body = text.partition(");\n")  # the end of the port list
    return f"{head}{sep}{NO_INLINE}\n{body}"


class SlotSelect:
    """A lane's `slot` connection: slot `index` of the weight word, or with `sram` high the same
    row's LoRA SRAM block with zeros above it (block_mac's LoRA blocks). One select per lane, in
    the port connection: the lane's copy of its slot is the only copy either word gets."""

    def __init__(self, sram, slots, lora_blocks):
        self.signals = (sram, slots, lora_blocks)

    def net(self, index: int) -> str:
        sram, slots, lora = (s._name for s in self.signals)
        pad = SLOT_BITS - LORA_BLOCK_BITS
        return (f"{sram} ? {{{pad}'d0, {lora}[{(index + 1) * LORA_BLOCK_BITS - 1}:{index * LORA_BLOCK_BITS}]}} "
                f": {slots}[{(index + 1) * SLOT_BITS - 1}:{index * SLOT_BITS}]")


class _SocketPorts:
    """An instance's port map, rendered when MyHDL writes the enclosing module (its nets have names
    by then); a pin in `sliced` takes slice `index` of that many bits of its net."""

    def __init__(self, pins: dict, index: int, sliced: dict[str, int]):
        self.pins, self.index, self.sliced = pins, index, sliced

    def __str__(self) -> str:
        lines = []
        for name, sig in self.pins.items():
            if isinstance(sig, SlotSelect):
                lines.append(f"    .{name}({sig.net(self.index)})")
                continue
            net = sig._name
            if name in self.sliced:
                width = self.sliced[name]
                net = f"{net}[{(self.index + 1) * width - 1}:{self.index * width}]"
            lines.append(f"    .{name}({net})")
        return ",\n".join(lines)


@block
def socket(module: str, instance: str, index: int, pins: dict, sliced: dict[str, int], outputs: tuple[str, ...]):
    """An instance of `module`, converted on its own, with no Python body (as rtl/chip.py's unit
    sockets): elaborating it once, for its own module, spares MyHDL seconds per instance."""
    for name in outputs:  # the module drives its outputs and reads its inputs: MyHDL cannot see into it
        pins[name].driven = "wire"
    inputs = [pins[name] for name in pins if name not in outputs]
    for sig in [s for pin in inputs for s in (pin.signals if isinstance(pin, SlotSelect) else (pin,))]:
        sig.read = True
        if isinstance(sig, ConcatSignal):  # only sockets read it (the LoRA word): declare and assign it
            sig.driven = "wire"
            sig._markUsed()
    port_map = _SocketPorts(pins, index, sliced)  # noqa: F841 (read by verilog_code: MyHDL fills it from these locals)
    clk = pins["clk"]

    @always(clk.posedge)
    def opaque():
        pass  # simulated by Verilator only

    return opaque


socket.verilog_code = "$module $instance (\n$port_map\n);\n"


@block
def lane_group_socket(clk, rst, in_valid, first, last, traits, sram, w_data, lora_word, index: int, acts, e_act, sums,
                      y, y_valid):
    """Lane group `index` of a wide engine on its 32 slots of the weight word and its 32 blocks of
    the LoRA SRAM word (`lora_word`, read with `sram` high): an instance of LANE_MODULE."""
    a_low, a_high, offset_low, offset_high = sums
    pins = dict(clk=clk, rst=rst, in_valid=in_valid, first=first, last=last, traits=traits, sram=sram, slots=w_data,
                lora_blocks=lora_word, acts=acts, e_act=e_act, a_low=a_low, a_high=a_high, offset_low=offset_low,
                offset_high=offset_high, y=y, y_valid=y_valid)
    return socket(LANE_MODULE, f"u_lanes{index}", index, pins, sliced=GROUP_SLICED_PINS, outputs=("y", "y_valid"))
