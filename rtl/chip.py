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
Debug tap: tap_valid, tap_unit, tap_op, tap_block, tap_exp, tap_data (rtl/bus.py TapPort).
"""

from __future__ import annotations

import hashlib

from myhdl import ConcatSignal, ResetSignal, always, always_comb, always_seq, block

from hardwire.golden.spec import BLOCK

from . import tile as T
from .bus import ADDR_BITS, DATA_BITS, EXP_BITS, TAP_OP_BITS, BlockBus, RomPort, TapPort
from .cells.clock_gate import clock_gate
from .cells.lut_rom import lut_address_bits, lut_rom
from .cells.via_rom import via_rom
from .cells.wiring import bit_signal, or_reduce, unsigned_signal, unused
from .die import Die
from .isa import WORD_BITS as UCODE_BITS
from .metal import const_depth, layout_of_blocks, ucode_depth
from .units import attention, vector
from .units.head import ROW_BITS
from .verilog import to_verilog

STATUS_OK, STATUS_BAD_TOKEN, STATUS_KV_OVERFLOW = 0, 1, 2
STATUS_BITS = 2
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


# --- one unit: its ports and its ROM macros --------------------------------------------------------

class UnitPorts:
    """Every port of a tile (or the head) as chip-level signals."""

    def __init__(self, die: Die, head: bool, pos_bits: int):
        d, w = rom_depths(die, head), rom_widths(die, head)
        self.gclk, self.start, self.busy, self.clock_on = (bit_signal() for _ in range(4))  # busy: the tile's own
        self.entry = unsigned_signal(lut_address_bits(ucode_depth(die)))
        self.pos, self.token, self.token_out = unsigned_signal(pos_bits), unsigned_signal(ROW_BITS), \
            unsigned_signal(ROW_BITS)
        self.token_valid = bit_signal()
        self.up, self.down, self.tap = BlockBus(), BlockBus(), TapPort()
        self.ucode_addr, self.ucode_data = unsigned_signal(lut_address_bits(d["ucode"])), unsigned_signal(w["ucode"])
        self.w_addr, self.w_data = unsigned_signal(lut_address_bits(d["weights"])), unsigned_signal(w["weights"])
        self.consts = RomPort(lut_address_bits(d["consts"]), w["consts"])
        self.rsqrt = RomPort(vector.RSQRT_ADDR_BITS, w["lut_rsqrt"])
        self.sigmoid = RomPort(BLOCK * vector.SIGMOID_ADDR_BITS, BLOCK * w["lut_sigmoid"])
        self.rope = RomPort(lut_address_bits(d["lut_rope"]), w["lut_rope"])
        self.exp2 = RomPort(attention.LUT_ADDR_BITS, w["lut_exp2"], enable=False)

    def pins(self) -> dict:
        """Port name -> the chip-level signal on that pin, for every port but clk and rst."""
        return {"start": self.start, "entry": self.entry, "busy": self.busy,
                "clock_on": self.clock_on, "pos": self.pos, "token": self.token, "token_out": self.token_out,
                "token_valid": self.token_valid, **_bus_pins("up", self.up), **_bus_pins("down", self.down),
                "ucode_addr": self.ucode_addr, "ucode_data": self.ucode_data, "w_addr": self.w_addr,
                "w_data": self.w_data, **_rom_pins("consts", self.consts), **_rom_pins("rsqrt", self.rsqrt),
                **_rom_pins("sigmoid", self.sigmoid), **_rom_pins("rope", self.rope), **_rom_pins("exp2", self.exp2),
                "tap_valid": self.tap.valid, "tap_op": self.tap.op, "tap_block": self.tap.block,
                "tap_exp": self.tap.exp, "tap_data": self.tap.data}

    def tile_args(self, clk, rst):
        """The arguments of rtl/tile.py tile(), in its order."""
        return (clk, rst, self.start, self.entry, self.busy, self.clock_on, self.pos, self.token, self.token_out,
                self.token_valid, self.up, self.down, self.ucode_addr, self.ucode_data, self.w_addr, self.w_data,
                self.consts, self.rsqrt, self.sigmoid, self.rope, self.exp2, self.tap)


def _bus_pins(prefix: str, bus: BlockBus) -> dict:
    return {f"{prefix}_valid": bus.valid, f"{prefix}_data": bus.data, f"{prefix}_exp": bus.exp}


def _rom_pins(prefix: str, port: RomPort) -> dict:
    pins = {f"{prefix}_addr": port.addr, f"{prefix}_data": port.data}
    return {f"{prefix}_en": port.en, **pins} if hasattr(port, "en") else pins


def unit_design(die: Die, head: bool):
    """The tile (or head) module alone: a callable that elaborates it for conversion."""
    pos_bits = attention.AttentionLimits.from_die(die).position_bits
    lanes = die.head_lanes if head else die.lanes

    def elaborate():
        p = UnitPorts(die, head, pos_bits)
        return T.tile(*p.tile_args(bit_signal(), ResetSignal(0, active=1, isasync=False)), lanes=lanes,
                      scratch_depth=scratch_depth(die), max_blocks=max_blocks(die),
                      attn_limits=attention.AttentionLimits.from_die(die))

    return elaborate


@block
def unit_roms(p: UnitPorts, prefix: str, depths: dict):
    """The unit's via ROM macros on its gated clock: its own microcode, weights and consts,
    and its copies of the shared tables."""
    clk = p.gclk
    return (
        via_rom(clk, p.ucode_addr, p.ucode_data, map_name=f"{prefix}_ucode", depth=depths["ucode"]),
        via_rom(clk, p.w_addr, p.w_data, map_name=f"{prefix}_weights", depth=depths["weights"]),
        lut_rom(clk, p.consts.en, p.consts.addr, p.consts.data, f"{prefix}_consts", depths["consts"]),
        lut_rom(clk, p.rsqrt.en, p.rsqrt.addr, p.rsqrt.data, "lut_rsqrt", depths["lut_rsqrt"],
                label=f"{prefix}_rsqrt"),
        lut_rom(clk, p.sigmoid.en, p.sigmoid.addr, p.sigmoid.data, "lut_sigmoid", depths["lut_sigmoid"], ports=BLOCK,
                label=f"{prefix}_sigmoid"),
        lut_rom(clk, p.rope.en, p.rope.addr, p.rope.data, "lut_rope", depths["lut_rope"], label=f"{prefix}_rope"),
        via_rom(clk, p.exp2.addr, p.exp2.data, map_name="lut_exp2", depth=depths["lut_exp2"], label=f"{prefix}_exp2"),
    )


def _socket(open_ports: tuple[str, ...]):
    """A block that instantiates the converted tile (or head) module; MyHDL fills its port map
    (verilog_code) from the locals below. `open_ports` are left unconnected."""

    @block
    def socket(clk, rst, p: UnitPorts, module: str, instance: str):
        gclk, start, entry, clock_on, pos, token = p.gclk, p.start, p.entry, p.clock_on, p.pos, p.token
        token_out, token_valid = p.token_out, p.token_valid
        up_valid, up_data, up_exp = p.up.valid, p.up.data, p.up.exp
        down_valid, down_data, down_exp = p.down.valid, p.down.data, p.down.exp
        ucode_addr, ucode_data, w_addr, w_data = p.ucode_addr, p.ucode_data, p.w_addr, p.w_data
        consts_en, consts_addr, consts_data = p.consts.en, p.consts.addr, p.consts.data
        rsqrt_en, rsqrt_addr, rsqrt_data = p.rsqrt.en, p.rsqrt.addr, p.rsqrt.data
        sigmoid_en, sigmoid_addr, sigmoid_data = p.sigmoid.en, p.sigmoid.addr, p.sigmoid.data
        rope_en, rope_addr, rope_data = p.rope.en, p.rope.addr, p.rope.data
        exp2_addr, exp2_data = p.exp2.addr, p.exp2.data
        tap_valid, tap_op, tap_block, tap_exp, tap_data = p.tap.valid, p.tap.op, p.tap.block, p.tap.exp, p.tap.data
        for name in SOCKET_INPUTS:
            locals()[name].read = True
        for name in SOCKET_OUTPUTS:
            if name not in open_ports:
                locals()[name].driven = "wire"

        @always(gclk.posedge)
        def opaque():
            pass  # simulated by Verilator only

        return opaque

    pins = [f"    .{port}()" if port in open_ports else f"    .{port}(${'gclk' if port == 'clk' else port})"
            for port in SOCKET_PORTS]
    waiver = ("// verilator lint_off PINCONNECTEMPTY\n// (a layer tile hands out no token and the chip reads no "
              "unit's busy: those pins stay open)\n")
    socket.verilog_code = waiver + "$module $instance (\n" + ",\n".join(pins) + "\n);\n" + \
        "// verilator lint_on PINCONNECTEMPTY\n"
    return socket


SOCKET_INPUTS = ("clk", "rst", "start", "entry", "pos", "token", "up_valid", "up_data", "up_exp", "ucode_data",
                 "w_data", "consts_data", "rsqrt_data", "sigmoid_data", "rope_data", "exp2_data")
SOCKET_OUTPUTS = ("busy", "clock_on", "token_out", "token_valid", "down_valid", "down_data", "down_exp",
                  "ucode_addr", "w_addr", "consts_en", "consts_addr", "rsqrt_en", "rsqrt_addr", "sigmoid_en",
                  "sigmoid_addr", "rope_en", "rope_addr", "exp2_addr", "tap_valid", "tap_op", "tap_block", "tap_exp",
                  "tap_data")
SOCKET_PORTS = ("clk", "rst", "start", "entry", "busy", "clock_on", "pos", "token", "token_out", "token_valid",
                "up_valid", "up_data", "up_exp", "down_valid", "down_data", "down_exp", "ucode_addr", "ucode_data",
                "w_addr", "w_data", "consts_en", "consts_addr", "consts_data", "rsqrt_en", "rsqrt_addr", "rsqrt_data",
                "sigmoid_en", "sigmoid_addr", "sigmoid_data", "rope_en", "rope_addr", "rope_data", "exp2_addr",
                "exp2_data", "tap_valid", "tap_op", "tap_block", "tap_exp", "tap_data")
tile_socket = _socket(("busy", "token_out", "token_valid"))
head_socket = _socket(("busy",))


# --- the chip ----------------------------------------------------------------------------------

class HostPort:
    def __init__(self, pos_bits: int):
        self.tok_valid, self.seq_reset, self.busy, self.reply = (bit_signal() for _ in range(4))
        self.tok_id, self.out_token = unsigned_signal(ROW_BITS), unsigned_signal(ROW_BITS)
        self.status = unsigned_signal(STATUS_BITS)
        self.position = unsigned_signal(pos_bits + 1)  # one more bit: a full cache is a position too


class ChipTap(TapPort):
    def __init__(self):
        super().__init__()
        self.unit = unsigned_signal(UNIT_BITS)


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
def chip(clk, rst, host: HostPort, tap: ChipTap, die: Die):
    pos_bits = attention.AttentionLimits.from_die(die).position_bits
    tiles = [UnitPorts(die, False, pos_bits) for _ in range(die.tiles)]
    head = UnitPorts(die, True, pos_bits)
    start, token, pos = bit_signal(), unsigned_signal(ROW_BITS), unsigned_signal(pos_bits)
    straps_addr, straps = unsigned_signal(1), unsigned_signal(128)
    vocab = unsigned_signal(ROW_BITS)
    units = [*tiles, head]
    parts = [host_interface(clk, rst, host, vocab, die.kv_tokens, head.token_valid, head.token_out, start, token,
                            pos),
             via_rom(clk, straps_addr, straps, map_name="straps", depth=2)]
    for i, p in enumerate(units):
        is_head = p is head
        prefix = "head" if is_head else unit_name(i)
        parts += [clock_gate(clk, p.clock_on, p.gclk), unit_roms(p, prefix, rom_depths(die, is_head)),
                  (head_socket if is_head else tile_socket)(clk, rst, p, HEAD_MODULE if is_head else TILE_MODULE,
                                                            f"u_{prefix}"),
                  unit_inputs(start, token, pos, p)]
    chain = [head, *tiles, head]
    parts += [link(clk, rst, a.down, b.up) for a, b in zip(chain, chain[1:], strict=False)]
    tags = [unsigned_signal(UNIT_BITS) for _ in units]
    parts += [unit_tag(p.tap.valid, HEAD_TAG if p is head else i, tags[i]) for i, p in enumerate(units)]
    buses = [ConcatSignal(p.tap.valid, tags[i], p.tap.op, p.tap.block, p.tap.exp, p.tap.data)
             for i, p in enumerate(units)]
    merged = unsigned_signal(TAP_BUS_BITS)
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
def unit_inputs(start, token, pos, p: UnitPorts):
    @always_comb
    def drive():
        p.start.next = start
        p.token.next = token
        p.pos.next = pos
        p.entry.next = 0

    return drive


# --- the base grid's Verilog ------------------------------------------------------------------

def chip_design(die: Die):
    pos_bits = attention.AttentionLimits.from_die(die).position_bits

    def elaborate():
        return chip(bit_signal(), ResetSignal(0, active=1, isasync=False), HostPort(pos_bits), ChipTap(), die)

    return elaborate


def base_grid(die: Die) -> dict[str, str]:
    """File name -> Verilog text of the die's base grid: the same for every model."""
    return {f"{TILE_MODULE}.v": to_verilog(unit_design(die, head=False), TILE_MODULE),
            f"{HEAD_MODULE}.v": to_verilog(unit_design(die, head=True), HEAD_MODULE),
            f"{CHIP_MODULE}.v": to_verilog(chip_design(die), CHIP_MODULE)}


def base_grid_sha256(sources: dict[str, str]) -> str:
    h = hashlib.sha256()
    for name in sorted(sources):
        h.update(name.encode() + b"\0" + sources[name].encode() + b"\0")
    return h.hexdigest()

