"""Wiring helpers shared by the cells: buses of lanes, exact sign extension, balanced trees,
guarded stage registers.

Every width is explicit so the converted Verilog has no implicit extension or truncation
(Verilator -Wall stays quiet, and a reader never has to work out what Verilog did).
"""

from __future__ import annotations

from myhdl import ConcatSignal, Signal, always, always_comb, always_seq, block, intbv

from hardwire.golden.errors import HardwireError


def signed_signal(bits: int) -> Signal:
    return Signal(intbv(0, min=-(1 << (bits - 1)), max=1 << (bits - 1)))


def unsigned_signal(bits: int) -> Signal:
    return Signal(intbv(0)[bits:])


def bit_signal() -> Signal:
    return Signal(bool(0))


def bus_lanes(bus: Signal, width: int, count: int) -> list:
    """Lane j of a flat bus is bits [width*(j+1)-1 : width*j] (lane 0 in the LSBs), unsigned."""
    if len(bus) != width * count:
        raise HardwireError(f"bus of {len(bus)} bits cannot hold {count} lanes of {width} bits")
    return [bus((j + 1) * width, j * width) for j in range(count)]


def packed(lanes: list) -> ConcatSignal:
    """The inverse of bus_lanes: lane 0 in the LSBs."""
    return ConcatSignal(*reversed(lanes))


def sign_extended(sig: Signal, width: int) -> ConcatSignal:
    """`sig` (signed) replicated into `width` bits; read it back with .signed()."""
    extra = width - len(sig)
    if extra <= 0:
        raise HardwireError(f"cannot sign-extend {len(sig)} bits to {width}")
    return ConcatSignal(*([sig(len(sig) - 1)] * extra), sig)


def zero_extended(sig: Signal, width: int) -> ConcatSignal:
    """`sig` (unsigned) with zeros above it, `width` bits."""
    extra = width - len(sig)
    if extra <= 0:
        raise HardwireError(f"cannot zero-extend {len(sig)} bits to {width}")
    return ConcatSignal(intbv(0)[extra:], sig)


@block
def as_signed(raw, value):
    """Reinterpret an unsigned lane as two's complement of the same width."""

    @always_comb
    def reinterpret():
        value.next = raw.signed()

    return reinterpret


@block
def or2(a, b, either):
    @always_comb
    def bitwise_or():
        either.next = a | b

    return bitwise_or


@block
def or_tree(leaves, either):
    """Balanced OR tree over a power-of-two number of equal-width unsigned leaves."""
    half = _halves(leaves)
    if half == 1:
        return or2(leaves[0], leaves[1], either)
    low, high = unsigned_signal(len(either)), unsigned_signal(len(either))
    return or_tree(leaves[:half], low), or_tree(leaves[half:], high), or2(low, high, either)


@block
def or_reduce(leaves, either):
    """OR over any number (>= 1) of equal-width unsigned leaves, as a balanced tree."""
    if len(leaves) == 1:
        return copy(leaves[0], either)
    if len(leaves) == 2:
        return or2(leaves[0], leaves[1], either)
    half = len(leaves) // 2
    low, high = unsigned_signal(len(either)), unsigned_signal(len(either))
    return or_reduce(leaves[:half], low), or_reduce(leaves[half:], high), or2(low, high, either)


@block
def copy(a, b):
    @always_comb
    def wire():
        b.next = a

    return wire


def _halves(leaves) -> int:
    if len(leaves) < 2 or len(leaves) & (len(leaves) - 1):
        raise HardwireError(f"a balanced tree needs a power-of-two number (>= 2) of leaves, not {len(leaves)}")
    return len(leaves) // 2


@block
def guarded_register(clk, enable, d, q):
    """q takes d on the clock edges where `enable` is high (a stage register of a datapath)."""

    @always(clk.posedge)
    def load():
        if enable:
            q.next = d

    return load


@block
def guarded_add(clk, enable, a, b, total):
    @always(clk.posedge)
    def add():
        if enable:
            total.next = a + b

    return add


@block
def valid_pipe(clk, rst, d, q):
    """One stage of a valid bit (the only bits the reset clears)."""

    @always_seq(clk.posedge, reset=rst)
    def delay():
        q.next = d

    return delay


@block
def mux2(select, bit: int, low, high, out):
    @always_comb
    def pick():
        if select[bit]:
            out.next = high
        else:
            out.next = low

    return pick


@block
def mux_tree(select, leaves, out):
    """leaves[select] over a power-of-two number of equal-width unsigned leaves, as a tree of
    2-way muxes on select's low log2(len(leaves)) bits."""
    if len(leaves) == 1:
        return copy(leaves[0], out)
    half = _halves(leaves)
    low, high = unsigned_signal(len(out)), unsigned_signal(len(out))
    return (mux_tree(select, leaves[:half], low), mux_tree(select, leaves[half:], high),
            mux2(select, half.bit_length() - 1, low, high, out))


@block
def unused(bits, label: str, reason: str):
    """Bits nothing reads, on purpose: the Verilog reads them into wire unused_`label` inside a
    lint waiver that carries `reason` (one line), so Verilator -Wall stays quiet about them."""
    bits.read = True
    if isinstance(bits, ConcatSignal):
        bits.driven = "wire"  # the converter sees no reader of its own here

    @always(bits)
    def opaque():
        pass  # no behaviour

    return opaque


unused.verilog_code = """// verilator lint_off UNUSEDSIGNAL
// $reason
wire unused_$label = |{1'b0, $bits};
// verilator lint_on UNUSEDSIGNAL
"""
