"""The base grid: the whole chip of a die, as three Verilog modules.

    hw_tile   one layer tile (rtl/tile.py): the die has `tiles` identical instances
    hw_head   the same design with the head's lanes: embedding, final norm, LM head, argmax
    hw_chip   the top: the host interface, the tile chain, every via ROM macro, the clock
              gates and the debug tap port

Every ROM macro loads its via map by name (`tile00_weights`, `head_ucode`, ...; rtl/metal.py
writes them), so this Verilog depends on the die alone: two models on one die give the same
bytes. The tiles are instantiated, not flattened, so Verilator compiles the tile once.

The path of a token: the host presents `tok_id` with `tok_valid`; the chip refuses an id
>= vocab (status BAD_TOKEN) and a position beyond the KV SRAM (KV_OVERFLOW), else starts
the head and every tile. The head embeds the token and sends it to tile 0; each tile runs
its layer and sends the residual on, through a pipeline register; the last sends it back to
the head, which runs the final norm, streams the LM head past the argmax tracker and hands
out the token (`reply`, `out_token`). Every op's result leaves on the debug tap port, tagged
with the unit (tile index, or HEAD_TAG) and the op.

Host ports:
    tok_valid, tok_id   a token in (ignored while busy)
    seq_reset           a new sequence: the position returns to 0
    busy                a token is in flight
    reply               one-cycle pulse: out_token and status are valid
    out_token, status   the argmax token; STATUS_OK, STATUS_BAD_TOKEN, STATUS_KV_OVERFLOW
    position            tokens of this sequence so far (the next token's position)
Adapter-load port (`lora_*`, a write channel; docs/numerics.md section 11):
    valid, cmd, addr, data  a command, taken on a rising edge with `ready` high: LORA_WRITE stores
                            `data` (one adapter block) in a tile's LoRA SRAM at `addr` (tile, word,
                            lane); LORA_FLAGS sets a tile's adapter flags (data bits 0..6, one per
                            projection); LORA_CLEAR clears every tile's flags (the chip runs the base
                            model). Flags and SRAM survive `rst`: an adapter stays until replaced.
    ready                   high while no token is in flight
Debug tap: tap_valid, tap_unit, tap_op, tap_block, tap_exp, tap_data (rtl/bus.py TapPort).
Performance probe: perf_valid, perf_unit, perf_run, perf_pc: in every cycle, the working unit (the
    lowest-numbered working tile, else the head; perf_valid low when none works: the host interface
    or a link register holds the token) and its sequencer's phase and microcode address. A host
    counts cycles per (unit, address, phase) on it: a performance counter that costs no logic in the
    units' datapaths.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from myhdl import ConcatSignal, ResetSignal, SignalType, always, always_comb, always_seq, block, intbv

from hardwire.golden.errors import HardwireError
from hardwire.golden.spec import BLOCK

from . import tile as T
from .bus import (
    ADDR_BITS,
    DATA_BITS,
    EXP_BITS,
    IN,
    OUT,
    TAP_OP_BITS,
    BlockBus,
    Interface,
    PerfPort,
    RomPort,
    TapPort,
    member_pin,
    port_directions,
    port_names,
)
from .cells.clock_gate import clock_gate
from .cells.lut_rom import lut_address_bits, lut_rom
from .cells.sram import address_bits, lane_sram
from .cells.via_rom import multi_port_via_rom, via_rom
from .cells.wiring import bit_signal, copy, mux2, or_reduce, unsigned_signal, unused
from .die import DIES, LORA_BLOCK_BITS, Die
from .isa import LORA_PROJECTIONS
from .isa import WORD_BITS as UCODE_BITS
from .lanes import LANE_MODULE, lane_group_verilog
from .metal import const_depth, layout_of_blocks, ucode_depth
from .units import attention, vector
from .units.head import ROW_BITS
from .verilog import to_verilog

STATUS_OK, STATUS_BAD_TOKEN, STATUS_KV_OVERFLOW = 0, 1, 2
STATUS_BITS = 2
LORA_WRITE, LORA_FLAGS, LORA_CLEAR = 0, 1, 2  # adapter-load commands
LORA_CMD_BITS = 2
HEAD_TAG = 63  # tap_unit of the head's taps; tiles tag with their index
UNIT_BITS = 6
VOCAB_LO, VOCAB_HI = 64, 84  # bits of the vocabulary size in the straps word (rtl/metal.py _straps)
TILE_MODULE, HEAD_MODULE, CHIP_MODULE = "hw_tile", "hw_head", "hw_chip"


def unit_name(index: int) -> str:
    return f"tile{index:02d}"


# --- ROM geometry of a die ----------------------------------------------------------------------

def rom_depths(die: Die, head: bool) -> dict[str, int]:
    return {"ucode": ucode_depth(die), "weights": die.head_rom_words if head else die.tile_rom_words,
            "consts": const_depth(die), "lut_rsqrt": vector.RSQRT_DEPTH, "lut_sigmoid": vector.SIGMOID_DEPTH,
            "lut_rope": die.kv_tokens << die.head_block_bits, "lut_exp2": 1 << attention.LUT_ADDR_BITS}


def rom_widths(die: Die, head: bool) -> dict[str, int]:
    return {"ucode": UCODE_BITS, "weights": die.head_rom_width if head else die.tile_rom_width,
            "consts": vector.GAIN_WIDTH, "lut_rsqrt": vector.RSQRT_WIDTH, "lut_sigmoid": vector.SIGMOID_WIDTH,
            "lut_rope": vector.ROPE_WIDTH, "lut_exp2": attention.LUT_DATA_BITS}


def scratch_depth(die: Die) -> int:
    """Every region of a layer program at the die's largest dims, rounded up to a power of two."""
    used = layout_of_blocks(die.max_d_model // BLOCK, die.max_d_ffn // BLOCK, die.max_kv_dim // BLOCK).end
    return 1 << (used - 1).bit_length()


def max_blocks(die: Die) -> int:
    return die.max_d_model // BLOCK


def sram_bits(die: Die) -> dict[str, int]:
    """SRAM bits of the die: every unit's KV SRAM and attention buffers (query, scores, and with
    several engines the output buffer; the head's too: it is the same design), the tiles' LoRA
    SRAMs, and every unit's scratchpad (entries of 32 words and an exponent)."""
    units = die.tiles + 1
    attn = attention.AttentionLimits.from_die(die).sram_bits()
    return {"kv": units * attn["kv"], "attn_buffers": units * attn["attn_buffers"], "lora": die.lora_sram_bits,
            "scratchpad": units * scratch_depth(die) * (DATA_BITS + EXP_BITS)}


def die_catalog() -> list[dict]:
    """One row per die of the catalog (rtl/die.py DIES): what `hardwire dies` lists."""
    rows = []
    for die in DIES.values():
        sram = sram_bits(die)
        rows.append({"die": die.name, "tiles": die.tiles, "lanes": die.lanes, "head_lanes": die.head_lanes,
                     "tile_macs_per_cycle": die.macs_per_cycle, "head_macs_per_cycle": die.head_macs_per_cycle,
                     "attn_heads": die.attn_heads,
                     "rom_bits": die.rom_bits, "sram_bits": sum(sram.values()),
                     **{f"sram_{name}_bits": bits for name, bits in sram.items()}, "clock_mhz": die.clock_mhz})
    return rows


# --- the port tables ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Shape:
    """What sizes a module's ports: the die, and for a unit whether it is the head."""

    die: Die
    head: bool = False

    @property
    def pos_bits(self) -> int:
        return attention.AttentionLimits.from_die(self.die).position_bits


@dataclass(frozen=True)
class Port:
    """One argument of a module, in the module's order: the direction the module takes it in (an
    interface's REVERSE signals flow the other way), how to make it for a shape, and for a ROM port
    the ROM it reads (rom_depths) and its read ports per word."""

    name: str
    direction: str
    make: Callable[[Shape], object]
    rom: str | None = None
    rom_ports: int | Callable[[Die], int] = 1  # read ports per word, or the die's count
    adapter: bool = False  # the LoRA SRAM's read port and the adapter flags (not a via ROM)


def _bit(_: Shape):
    return bit_signal()


def _reset(_: Shape):
    return ResetSignal(0, active=1, isasync=False)


def _row(_: Shape):
    return unsigned_signal(ROW_BITS)


def _rom_port(rom: str, enable: bool = True, ports=1) -> Callable[[Shape], RomPort]:
    def make(shape: Shape) -> RomPort:
        depth, width = rom_depths(shape.die, shape.head)[rom], rom_widths(shape.die, shape.head)[rom]
        count = read_ports(ports, shape.die)
        return RomPort(count * lut_address_bits(depth), count * width, enable)
    return make


def read_ports(ports, die: Die) -> int:
    """A ROM port's read ports: a number, or the die's (rom_ports may be a function of the die)."""
    return ports(die) if callable(ports) else ports


def _rom(name: str, rom: str, enable: bool = True, ports=1) -> Port:
    return Port(name, OUT, _rom_port(rom, enable, ports), rom, ports)


# hw_tile and hw_head: the arguments of rtl/tile.py tile(), in its order (the ROM ports as the unit drives them)
UNIT_PORTS = (
    Port("clk", IN, _bit), Port("rst", IN, _reset), Port("start", IN, _bit),
    Port("entry", IN, lambda s: unsigned_signal(lut_address_bits(ucode_depth(s.die)))),
    Port("busy", OUT, _bit), Port("clock_on", OUT, _bit), Port("pos", IN, lambda s: unsigned_signal(s.pos_bits)),
    Port("token", IN, _row), Port("token_out", OUT, _row), Port("token_valid", OUT, _bit),
    Port("up", IN, lambda _: BlockBus()), Port("down", OUT, lambda _: BlockBus()),
    _rom("ucode", "ucode", enable=False), _rom("w", "weights", enable=False), _rom("consts", "consts"),
    _rom("rsqrt", "lut_rsqrt"), _rom("sigmoid", "lut_sigmoid", ports=BLOCK), _rom("rope", "lut_rope"),
    _rom("exp2", "lut_exp2", enable=False, ports=lambda die: die.attn_heads),  # one per attention engine
    Port("lora", OUT, lambda s: _lora_read_port(s), adapter=True),
    Port("lora_on", IN, lambda _: unsigned_signal(len(LORA_PROJECTIONS)), adapter=True),
    Port("perf", OUT, lambda s: PerfPort(pc_bits(s.die))), Port("tap", OUT, lambda _: TapPort()),
)


def pc_bits(die: Die) -> int:
    """Bits of a microcode address."""
    return lut_address_bits(ucode_depth(die))


def _lora_read_port(shape: Shape) -> RomPort:
    """A tile reads a word of `lanes` adapter blocks; the head has no LoRA SRAM (one-bit stubs)."""
    if shape.head:
        return RomPort(1, 1)
    return RomPort(address_bits(shape.die.lora_sram_words), shape.die.lora_sram_width)


class LoraPort(Interface):
    """The adapter-load write channel: the host drives a command; the chip answers `ready`.
    addr = tile << (word bits + lane bits) | word << lane bits | lane (lora_address)."""

    REVERSE = frozenset({"ready"})

    def __init__(self, die: Die):
        self.valid, self.ready = bit_signal(), bit_signal()
        self.cmd = unsigned_signal(LORA_CMD_BITS)
        self.addr = unsigned_signal(sum(lora_address_bits(die)))
        self.data = unsigned_signal(LORA_BLOCK_BITS)


def lora_address_bits(die: Die) -> tuple[int, int, int]:
    """(tile, word, lane) bits of an adapter-load address."""
    return address_bits(die.tiles), address_bits(die.lora_sram_words), address_bits(die.lanes)


def lora_address(die: Die, tile: int, word: int, lane: int) -> int:
    _, word_bits, lane_bits = lora_address_bits(die)
    return tile << (word_bits + lane_bits) | word << lane_bits | lane


class HostPort(Interface):
    """The host's side: it drives a token in; the chip answers on the REVERSE signals."""

    REVERSE = frozenset({"busy", "reply", "out_token", "status", "position"})

    def __init__(self, pos_bits: int):
        self.tok_valid, self.seq_reset, self.busy, self.reply = (bit_signal() for _ in range(4))
        self.tok_id, self.out_token = unsigned_signal(ROW_BITS), unsigned_signal(ROW_BITS)
        self.status = unsigned_signal(STATUS_BITS)
        self.position = unsigned_signal(pos_bits + 1)  # one more bit: a full cache is a position too


class ChipTap(TapPort):
    def __init__(self):
        super().__init__()
        self.unit = unsigned_signal(UNIT_BITS)


class ChipPerf(PerfPort):
    """The working unit's perf port, tagged as the tap port is (tile index, or HEAD_TAG)."""

    def __init__(self, pc_bits: int):
        super().__init__(pc_bits)
        self.unit = unsigned_signal(UNIT_BITS)


# hw_chip: the arguments of chip(), in its order
CHIP_PORTS = (Port("clk", IN, _bit), Port("rst", IN, _reset), Port("host", IN, lambda s: HostPort(s.pos_bits)),
              Port("lora", IN, lambda s: LoraPort(s.die)), Port("tap", OUT, lambda _: ChipTap()),
              Port("perf", OUT, lambda s: ChipPerf(pc_bits(s.die))))


class Ports:
    """A module's ports made from its table: `ports.<name>` is the signal or interface."""

    def __init__(self, table: tuple[Port, ...], shape: Shape):
        self.table, self.shape = table, shape
        for port in table:
            setattr(self, port.name, port.make(shape))

    def args(self) -> dict:
        """Argument name -> signal or interface, in the table's order."""
        return {port.name: getattr(self, port.name) for port in self.table}

    def pins(self) -> list[tuple[str, object, bool]]:
        """(pin name, signal, is input) of every port of the converted module, in the table's order."""
        pins = []
        for port in self.table:
            value = getattr(self, port.name)
            directions = port_directions(port.name, value, port.direction)
            pins += [(name, sig, directions[name] == IN) for name, sig in port_names(port.name, value).items()]
        return pins

    def pin(self, name: str, attr: str | None = None) -> str:
        """The pin of argument `name` (of its signal `attr` for an interface), checked against the table."""
        value = getattr(self, name)
        if attr is None and isinstance(value, SignalType):
            return name
        if not isinstance(value, Interface) or attr not in value.signals():
            raise HardwireError(f"{name} has no signal {attr}")
        return member_pin(name, attr)


def unit_ports(die: Die, head: bool) -> Ports:
    """Every port of a tile (or the head); in the chip `clk` is the unit's gated clock."""
    return Ports(UNIT_PORTS, Shape(die, head))


def chip_ports(die: Die) -> Ports:
    """The ports of the chip top."""
    return Ports(CHIP_PORTS, Shape(die))


def rom_map_names(prefix: str) -> dict[str, str]:
    """ROM -> the via map its macro loads: the unit's own ROMs carry its prefix, the tables are shared."""
    return {port.rom: f"{prefix}_{port.rom}" if not port.rom.startswith("lut_") else port.rom
            for port in UNIT_PORTS if port.rom}


# --- one unit: its module and its ROM macros ------------------------------------------------------

def unit_design(die: Die, head: bool):
    """The tile (or head) module alone: a callable that elaborates it for conversion."""
    lanes = die.head_lanes if head else die.lanes

    def elaborate():
        return T.tile(**unit_ports(die, head).args(), lanes=lanes, scratch_depth=scratch_depth(die),
                      max_blocks=max_blocks(die), attn_limits=attention.AttentionLimits.from_die(die),
                      lora_sram=not head)

    return elaborate


@block
def unit_roms(p: Ports, prefix: str, depths: dict):
    """The unit's ROM macros on its (gated) clock: its own microcode, weights and consts, and its
    copies of the shared tables; a port without a chip enable is a via ROM that reads every cycle."""
    maps, macros = rom_map_names(prefix), []
    for port in UNIT_PORTS:
        if port.rom:
            rom, label = getattr(p, port.name), f"{prefix}_{port.rom.removeprefix('lut_')}"
            ports = read_ports(port.rom_ports, p.shape.die)
            if hasattr(rom, "en"):
                macros.append(lut_rom(p.clk, rom.en, rom.addr, rom.data, maps[port.rom], depths[port.rom],
                                      ports=ports, label=label))
            elif ports > 1:
                macros.append(multi_port_via_rom(p.clk, rom.addr, rom.data, map_name=maps[port.rom],
                                                 depth=depths[port.rom], ports=ports, label=label))
            else:
                macros.append(via_rom(p.clk, rom.addr, rom.data, map_name=maps[port.rom], depth=depths[port.rom],
                                      label=label))
    return macros


class _PortMap:
    """A socket's port map, rendered when MyHDL writes the chip (its nets have names by then)."""

    def __init__(self, pins, open_pins: tuple[str, ...]):
        self.pins, self.open_pins = pins, open_pins

    def __str__(self) -> str:
        lines = []
        for name, sig, _ in self.pins:
            net = getattr(sig, "_name", None)
            if name not in self.open_pins and net is None:
                raise HardwireError(f"socket pin {name} is connected to a signal that is not in the chip")
            lines.append(f"    .{name}()" if name in self.open_pins else f"    .{name}({net})")
        return ",\n".join(lines)


def _socket(open_pins: tuple[str, ...]):
    """A block that instantiates the converted tile (or head) module with every pin of UNIT_PORTS;
    `open_pins` are left unconnected."""

    @block
    def socket(p: Ports, module: str, instance: str):
        pins = p.pins()
        _mark_pins(pins, open_pins)
        port_map = _PortMap(pins, open_pins)  # noqa: F841 (read by verilog_code: MyHDL fills it from these locals)

        @always(p.clk.posedge)
        def opaque():
            pass  # simulated by Verilator only

        return opaque

    waiver = ("// verilator lint_off PINCONNECTEMPTY\n// (a layer tile hands out no token, the chip reads no "
              "unit's busy and the head has no LoRA SRAM: those pins stay open)\n")
    socket.verilog_code = waiver + "$module $instance (\n$port_map\n);\n// verilator lint_on PINCONNECTEMPTY\n"
    socket.open_pins = open_pins
    return socket


def _mark_pins(pins, open_pins: tuple[str, ...]) -> None:
    """The module reads its inputs and drives its connected outputs (MyHDL cannot see into it)."""
    for name, sig, is_input in pins:
        if is_input:
            sig.read = True
        elif name not in open_pins:
            sig.driven = "wire"


def _with_pin_nets(instance, p: Ports, open_pins: tuple[str, ...]):
    """MyHDL names a net after the first block whose namespace holds it; the socket's pins are not its
    locals (its port map comes from the table), so they join its namespace here: each net is named and
    declared in the chip even where only a concatenation reads it (the tap fields)."""
    instance.sigdict.update({name: sig for name, sig, _ in p.pins() if name not in open_pins})
    return instance


tile_socket = _socket(("busy", "token_out", "token_valid"))
head_socket = _socket(("busy", "lora_en", "lora_addr"))


# --- the chip ----------------------------------------------------------------------------------

@block
def link(clk, rst, down, up):
    """The pipeline register between neighbours: loads only when a block passes."""

    @always_seq(clk.posedge, reset=rst)
    def valid_bit():
        up.valid.next = down.valid

    @always(clk.posedge)
    def block_data():
        if down.valid:
            up.data.next = down.data
            up.exp.next = down.exp

    return valid_bit, block_data


@block
def unit_tag(valid, unit: int, tag):
    """The unit's index while it taps, else 0: a unit's tap fields are all zero while it taps
    nothing (rtl/tile.py), so the chip ORs the units' beats into the one tap port."""

    @always_comb
    def pack():
        if valid:
            tag.next = unit
        else:
            tag.next = 0

    return pack


TAP_BUS_BITS = 1 + UNIT_BITS + TAP_OP_BITS + ADDR_BITS + EXP_BITS + DATA_BITS


@block
def tap_port(bus, tap: ChipTap):
    @always_comb
    def split():
        tap.data.next = bus[DATA_BITS:]
        tap.exp.next = bus[DATA_BITS + EXP_BITS:DATA_BITS].signed()
        tap.block.next = bus[DATA_BITS + EXP_BITS + ADDR_BITS:DATA_BITS + EXP_BITS]
        tap.op.next = bus[TAP_BUS_BITS - 1 - UNIT_BITS:TAP_BUS_BITS - 1 - UNIT_BITS - TAP_OP_BITS]
        tap.unit.next = bus[TAP_BUS_BITS - 1:TAP_BUS_BITS - 1 - UNIT_BITS]
        tap.valid.next = bus[TAP_BUS_BITS - 1]

    return split


@block
def first_working(leaves, out):
    """The first leaf whose top bit (a perf port's `valid`) is set, else the last leaf: a balanced tree
    in which the left half wins."""
    if len(leaves) == 1:
        return copy(leaves[0], out)
    half = len(leaves) // 2
    low, high = unsigned_signal(len(out)), unsigned_signal(len(out))
    pick_low = mux2(low, len(out) - 1, high, low, out)  # low's valid bit picks low
    return first_working(leaves[:half], low), first_working(leaves[half:], high), pick_low


@block
def perf_port(bus, perf: ChipPerf):
    """The chosen unit's fields, all zero while no unit works."""
    n_pc = len(perf.pc)

    @always_comb
    def split():
        if bus[n_pc + 1 + UNIT_BITS]:
            perf.valid.next = 1
            perf.unit.next = bus[n_pc + 1 + UNIT_BITS:n_pc + 1]
            perf.run.next = bus[n_pc]
            perf.pc.next = bus[n_pc:]
        else:
            perf.valid.next = 0
            perf.unit.next = 0
            perf.run.next = 0
            perf.pc.next = 0

    return split


@block
def host_interface(clk, rst, host: HostPort, vocab, kv_tokens: int, head_done, head_token, start, token, pos):
    """Accepts a token, checks it, starts the units, and answers with the head's token."""
    pos_bits = len(pos)

    @always_seq(clk.posedge, reset=rst)
    def control():
        start.next = 0
        host.reply.next = 0
        if host.seq_reset and not host.busy:
            host.position.next = 0
        elif head_done:
            host.busy.next = 0
            host.reply.next = 1
            host.out_token.next = head_token
            host.position.next = host.position + 1
        elif host.tok_valid and not host.busy:
            if host.tok_id >= vocab:
                host.status.next = STATUS_BAD_TOKEN
                host.reply.next = 1
            elif host.position >= kv_tokens:
                host.status.next = STATUS_KV_OVERFLOW
                host.reply.next = 1
            else:
                host.status.next = STATUS_OK
                host.busy.next = 1
                start.next = 1
                token.next = host.tok_id

    @always_comb
    def position():
        pos.next = host.position[pos_bits:]

    return control, position


@block
def adapter_ready(host: HostPort, lora: LoraPort):
    """The chip takes adapter commands only between tokens."""

    @always_comb
    def ready():
        lora.ready.next = not host.busy

    return ready


class AdapterAddress:
    """The adapter-load address split into its fields (lora_address)."""

    def __init__(self, die: Die):
        tile_bits, word_bits, lane_bits = lora_address_bits(die)
        self.tile, self.word, self.lane = (unsigned_signal(b) for b in (tile_bits, word_bits, lane_bits))


@block
def adapter_address(lora: LoraPort, split: AdapterAddress):
    word_bits, lane_bits = len(split.word), len(split.lane)
    top = len(lora.addr)

    @always_comb
    def fields():
        split.tile.next = lora.addr[top:word_bits + lane_bits]
        split.word.next = lora.addr[word_bits + lane_bits:lane_bits]
        split.lane.next = lora.addr[lane_bits:]

    return fields


@block
def tile_adapter(clk, lora: LoraPort, split: AdapterAddress, index: int, p: Ports, die: Die):
    """A tile's LoRA SRAM and adapter flags, written through the adapter-load port on the chip's
    clock; the tile reads the SRAM on its own gated clock, as it reads its ROMs."""
    we, flags = bit_signal(), p.lora_on
    n_flags = len(flags)

    @always_comb
    def select():
        we.next = lora.valid and lora.ready and lora.cmd == LORA_WRITE and split.tile == index

    @always(clk.posedge)
    def hold():  # no reset: a loaded adapter survives a chip reset until the host replaces or clears it
        if lora.valid and lora.ready:
            if lora.cmd == LORA_CLEAR:
                flags.next = 0
            elif lora.cmd == LORA_FLAGS and split.tile == index:
                flags.next = lora.data[n_flags:]

    memory = lane_sram(clk, we, split.lane, split.word, lora.data, p.clk, p.lora.en, p.lora.addr, p.lora.data,
                       depth=die.lora_sram_words, lanes=die.lanes, label=f"{unit_name(index)}_lora")
    return select, hold, memory


@block
def head_adapter_stubs(clk, p: Ports):
    """The head has no LoRA SRAM and no adapter (constant registers: a process needs a trigger)."""

    @always(clk.posedge)
    def tie():
        p.lora.data.next = 0
        p.lora_on.next = 0

    return tie


@block
def chip(clk, rst, host: HostPort, lora: LoraPort, tap: ChipTap, perf: ChipPerf, die: Die):
    pos_bits = Shape(die).pos_bits
    tiles = [unit_ports(die, False) for _ in range(die.tiles)]
    head = unit_ports(die, True)
    start, token, pos = bit_signal(), unsigned_signal(ROW_BITS), unsigned_signal(pos_bits)
    split = AdapterAddress(die)
    straps_addr, straps = unsigned_signal(1), unsigned_signal(128)
    vocab = unsigned_signal(ROW_BITS)
    units = [*tiles, head]
    for p in units:
        p.rst = rst  # every unit resets with the chip
    parts = [host_interface(clk, rst, host, vocab, die.kv_tokens, head.token_valid, head.token_out, start, token,
                            pos),
             via_rom(clk, straps_addr, straps, map_name="straps", depth=2), adapter_ready(host, lora),
             adapter_address(lora, split)]
    for i, p in enumerate(units):
        is_head = p is head
        prefix = "head" if is_head else unit_name(i)
        socket = head_socket if is_head else tile_socket
        parts += [clock_gate(clk, p.clock_on, p.clk), unit_roms(p, prefix, rom_depths(die, is_head)),
                  _with_pin_nets(socket(p, HEAD_MODULE if is_head else TILE_MODULE, f"u_{prefix}"), p,
                                 socket.open_pins),
                  unit_inputs(start, token, pos, p),
                  head_adapter_stubs(clk, p) if is_head else tile_adapter(clk, lora, split, i, p, die)]
    chain = [head, *tiles, head]
    parts += [link(clk, rst, a.down, b.up) for a, b in zip(chain, chain[1:], strict=False)]
    tags = [unsigned_signal(UNIT_BITS) for _ in units]
    parts += [unit_tag(p.tap.valid, HEAD_TAG if p is head else i, tags[i]) for i, p in enumerate(units)]
    buses = [ConcatSignal(p.tap.valid, tags[i], p.tap.op, p.tap.block, p.tap.exp, p.tap.data)
             for i, p in enumerate(units)]
    merged = unsigned_signal(TAP_BUS_BITS)
    # the perf ports in priority order (tiles by index, then the head), each tagged with its unit
    probes = [ConcatSignal(p.perf.valid, intbv(HEAD_TAG if p is head else i)[UNIT_BITS:], p.perf.run, p.perf.pc)
              for i, p in enumerate(units)]
    working = unsigned_signal(1 + UNIT_BITS + 1 + pc_bits(die))
    parts += [first_working(probes, working), perf_port(working, perf)]
    spare = ConcatSignal(straps(128, VOCAB_HI), straps(VOCAB_LO, 0))
    parts += [or_reduce(buses, merged), tap_port(merged, tap),
              unused(spare, "straps_fields", "straps fields no logic reads: the metal is built for the model; "
                     "only the vocabulary bounds a token")]

    @always_comb
    def straps_fields():
        vocab.next = straps[VOCAB_HI:VOCAB_LO]

    @always(clk.posedge)
    def constants():
        straps_addr.next = 0

    return parts, straps_fields, constants


@block
def unit_inputs(start, token, pos, p: Ports):
    @always_comb
    def drive():
        p.start.next = start
        p.token.next = token
        p.pos.next = pos
        p.entry.next = 0

    return drive


# --- the base grid's Verilog ------------------------------------------------------------------

def chip_design(die: Die):
    def elaborate():
        return chip(**chip_ports(die).args(), die=die)

    return elaborate


def base_grid(die: Die) -> dict[str, str]:
    """File name -> Verilog text of the die's base grid: the same for every model."""
    sources = {f"{TILE_MODULE}.v": to_verilog(unit_design(die, head=False), TILE_MODULE),
               f"{HEAD_MODULE}.v": to_verilog(unit_design(die, head=True), HEAD_MODULE),
               f"{CHIP_MODULE}.v": to_verilog(chip_design(die), CHIP_MODULE)}
    if die.wide:
        sources[f"{LANE_MODULE}.v"] = lane_group_verilog()
    return sources


def unit_sources(die: Die, module: str, sources: dict[str, str]) -> dict[str, str]:
    """The files a unit module (or the chip) needs: its own, and the lane group module of a wide die."""
    files = {f"{module}.v": sources[f"{module}.v"]}
    if die.wide:
        files[f"{LANE_MODULE}.v"] = sources[f"{LANE_MODULE}.v"]
    return files


def base_grid_sha256(sources: dict[str, str]) -> str:
    h = hashlib.sha256()
    for name in sorted(sources):
        h.update(name.encode() + b"\0" + sources[name].encode() + b"\0")
    return h.hexdigest()

