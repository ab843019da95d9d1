"""The base grid's interfaces and shared widths, declared once.

A block bus carries one block per beat: `valid`, `data` (32 words of WORD bits, word j in bits
WORD*j + WORD-1 .. WORD*j, two's complement) and `exp` (the signed B16 block exponent; ACC blocks
leave it 0). A ROM read port is the client's `en` and `addr` and the ROM's `data` one cycle later.
The tap port is the block a tile writes, with its op id and block index (rtl/tile.py); the perf
port is what the unit's sequencer is doing this cycle (a hardware performance probe).

MyHDL gives each signal of an interface argument of a converted module a port of its own, named
`<argument>_<attribute>` (`up.valid` -> `up_valid`, nested objects joined the same way);
`port_names` spells the names the same way, so a harness or a socket never types them.

Directions: an interface's signals flow from the side that declares it as an output (the unit
that drives a block bus, the client of a ROM port) to the other side, except the members in
`REVERSE` (a ROM port's `data`), which flow back.
"""

from __future__ import annotations

from myhdl import ConcatSignal, SignalType

from hardwire.golden.spec import ACC_BITS, BLOCK

from .cells.wiring import bit_signal, signed_signal, unsigned_signal
from .isa import LAYOUT

WORD = ACC_BITS  # one element of a block on every bus
DATA_BITS = BLOCK * WORD
EXP_BITS = 8  # the signed B16 block exponent on every bus and port
ENTRY_BITS = DATA_BITS + EXP_BITS  # a scratchpad entry: data, then the exponent in the top bits
ADDR_BITS = 12  # a block's index within an op's output (the tap port's `block`)
TAP_OP_BITS = dict(LAYOUT)["tap"]  # the microcode's tap op id

IN, OUT = "in", "out"


class Interface:
    """Signals as attributes, in declaration order; REVERSE names those that flow back."""

    REVERSE: frozenset[str] = frozenset()

    def signals(self) -> dict:
        return {name: sig for name, sig in vars(self).items() if isinstance(sig, SignalType)}

    @classmethod
    def of(cls, **signals):
        """A view of existing signals as this interface: wiring, no new signals."""
        view = cls.__new__(cls)
        vars(view).update(signals)
        return view


class BlockBus(Interface):
    """valid, data (32 x 48 bits), exp (8 bits): the bus between sequencer, units and neighbours.
    exp=False: an ACC bus with no exponent (the add unit's output, a standalone harness's port)."""

    def __init__(self, exp: bool = True):
        self.valid = bit_signal()
        self.data = unsigned_signal(DATA_BITS)
        if exp:
            self.exp = signed_signal(EXP_BITS)

    def entry(self):
        """The scratchpad entry: the exponent above the words."""
        return ConcatSignal(self.exp, self.data)


class RomPort(Interface):
    """A ROM read port as its client drives it: enable and address out, data in (one cycle later)."""

    REVERSE = frozenset({"data"})

    def __init__(self, addr_bits: int, width: int, enable: bool = True):
        if enable:  # a ROM without a chip enable reads every cycle
            self.en = bit_signal()
        self.addr = unsigned_signal(addr_bits)
        self.data = unsigned_signal(width)


class TapPort(Interface):
    """The debug tap of one unit: a written block, its op id and its block index; all zero between beats."""

    def __init__(self):
        self.valid = bit_signal()
        self.op = unsigned_signal(TAP_OP_BITS)
        self.block = unsigned_signal(ADDR_BITS)
        self.exp = signed_signal(EXP_BITS)
        self.data = unsigned_signal(DATA_BITS)


class PerfPort(Interface):
    """The debug performance port of one unit: `valid` while the unit works (busy and not waiting in
    RECV for its upstream neighbour), `run` while its instruction is in RUN (else it fetches, decodes
    or finishes), `pc` the microcode address of that instruction."""

    def __init__(self, pc_bits: int):
        self.valid, self.run = bit_signal(), bit_signal()
        self.pc = unsigned_signal(pc_bits)


def port_names(name: str, obj) -> dict:
    """Port name -> signal of an argument `name` of a converted module, as MyHDL names them
    (myhdl.conversion._analyze.expandinterface): a signal keeps its name, an interface's
    signals become `<name>_<attribute>`, recursively."""
    if isinstance(obj, SignalType):
        return {name: obj}
    ports = {}
    for attr, value in vars(obj).items():
        if isinstance(value, SignalType):
            ports[member_pin(name, attr)] = value
        elif hasattr(value, "__dict__"):
            ports.update(port_names(member_pin(name, attr), value))
    return ports


def member_pin(name: str, attr: str) -> str:
    """The port of signal `attr` of interface argument `name` in converted Verilog."""
    return f"{name}_{attr}"


def port_directions(name: str, obj, direction: str) -> dict[str, str]:
    """Port name -> IN or OUT for argument `name` of a module that takes it as `direction`."""
    if isinstance(obj, SignalType):
        return {name: direction}
    flipped = OUT if direction == IN else IN
    return {member_pin(name, attr): flipped if attr in obj.REVERSE else direction for attr in obj.signals()}
