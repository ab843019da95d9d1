"""The requantizer rq(v, e_in, bits) of docs/numerics.md section 1.1, one 32-lane block.

Combinational; a pipeline stage around it belongs to the unit that uses it.

    v_bus   in   32 lanes of `in_width`-bit two's complement, lane j at bits [w*(j+1)-1 : w*j]
    e_in    in   signed block exponent, any width > bitlen(in_width)
    m_bus   out  32 lanes of `bits`-bit mantissas in [-(2**(bits-1) - 1), 2**(bits-1) - 1]
    e_out   out  e_in + s, as wide as e_in; it wraps if e_in + s leaves that range (the unit
                 using the cell sizes its exponents so that it cannot)

Hardware, per block: |v_j| per lane, one OR tree (bitlen of the OR of the magnitudes equals
bitlen of the largest, with no comparators), a leading-one counter, one subtract for s.
Per lane: a (bits+1)-bit window of v at offset s-1 (an arithmetic right shift keeping only
the bits that can be non-sign), a (bits+2)-bit add and shift for the round-half-up, a clamp.
Shifting first keeps the rounding adder narrow:
floor((v + 2**(s-1)) / 2**s) == floor((floor(v / 2**(s-1)) + 1) / 2).
"""

from __future__ import annotations

from myhdl import always_comb, block, intbv

from hardwire.golden.errors import HardwireError
from hardwire.golden.spec import BLOCK

from .wiring import as_signed, bus_lanes, or_tree, packed, sign_extended, signed_signal, unsigned_signal, zero_extended

OUTPUT_BITS = (8, 16)
DEFAULT_IN_WIDTH = 48  # ACC words


def check_requant_params(bits: int, in_width: int) -> None:
    if bits not in OUTPUT_BITS:
        raise HardwireError(f"requantizer output must be {OUTPUT_BITS[0]} or {OUTPUT_BITS[1]} bits, not {bits}")
    if not bits < in_width <= 64:
        raise HardwireError(f"requantizer input width {in_width} must be in ({bits}, 64]")


def max_shift(bits: int, in_width: int) -> int:
    """The largest s: bitlen(2**(in_width-1)) - (bits - 1)."""
    return in_width - bits + 1


@block
def requant(v_bus, e_in, m_bus, e_out, bits=8, in_width=DEFAULT_IN_WIDTH):
    check_requant_params(bits, in_width)
    if len(m_bus) != BLOCK * bits or len(e_out) != len(e_in):
        raise HardwireError("requantizer ports: m_bus must be 32*bits wide and e_out as wide as e_in")
    count_bits = in_width.bit_length()  # the small counts index the in_width+1 bits of an extended lane
    if len(e_in) <= count_bits:
        raise HardwireError(f"a {len(e_in)}-bit exponent cannot take shifts of up to {max_shift(bits, in_width)}")
    values = [signed_signal(in_width) for _ in range(BLOCK)]
    magnitudes = [unsigned_signal(in_width) for _ in range(BLOCK)]
    mantissas = [signed_signal(bits) for _ in range(BLOCK)]
    peak_bits = unsigned_signal(count_bits)  # bitlen of the peak, 0..in_width
    shift = unsigned_signal(count_bits)
    prescale = unsigned_signal(count_bits)  # shift - 1, when shift > 0
    headroom = bits - 1  # a constant, so the converter keeps the compare unsigned

    lanes = [as_signed(raw, v) for raw, v in zip(bus_lanes(v_bus, in_width, BLOCK), values, strict=True)]
    lanes += [magnitude(v, mag) for v, mag in zip(values, magnitudes, strict=True)]
    peak = unsigned_signal(in_width)  # the OR of all magnitudes
    tree = or_tree(magnitudes, peak)
    lanes += [round_lane(v, shift, prescale, m, bits) for v, m in zip(values, mantissas, strict=True)]
    out_bus = packed(mantissas)
    shift_as_exponent = zero_extended(shift, len(e_in))

    @always_comb
    def leading_one():
        length = intbv(0, min=0, max=in_width + 1)
        position = intbv(0, min=0, max=in_width + 1)
        for i in range(in_width):
            position[:] = position + 1
            if peak[i]:
                length[:] = position
        peak_bits.next = length

    @always_comb
    def block_shift():
        if peak_bits > headroom:
            shift.next = peak_bits - headroom
            prescale.next = peak_bits - bits
        else:
            shift.next = 0
            prescale.next = 0

    @always_comb
    def outputs():
        e_out.next = e_in + shift_as_exponent.signed()
        m_bus.next = out_bus

    return lanes, tree, leading_one, block_shift, outputs


@block
def magnitude(v, mag):
    """|v| as an unsigned word of the same width (|-2**(w-1)| = 2**(w-1) still fits)."""

    @always_comb
    def absolute():
        if v < 0:
            mag.next = -v
        else:
            mag.next = v

    return absolute


@block
def round_lane(v, shift, prescale, m, bits):
    """m = clamp((v + 2**(shift-1)) >> shift), round half up; m = v when shift is 0.

    The arithmetic shift by prescale = shift - 1 keeps only the bits+1 bits that can be
    non-sign (|v| < 2**(shift + bits - 1)); a bit-select window on v extended by one sign
    bit, so even v = -2**(w-1) (shift at its maximum) stays inside the word.
    """
    width = len(v)
    limit = (1 << (bits - 1)) - 1
    extended = sign_extended(v, width + 1)

    @always_comb
    def round_half_up():
        kept = intbv(0, min=-(1 << bits), max=1 << bits)
        position = intbv(0)[len(prescale):]
        rounded = intbv(0, min=-(1 << (bits + 1)), max=1 << (bits + 1))  # kept + 1 may carry out
        if shift == 0:
            m.next = v[bits:].signed()
        else:
            position[:] = prescale
            for k in range(bits + 1):
                kept[k] = extended[position]
                position[:] = position + 1
            rounded[:] = kept + 1
            rounded[:] = rounded >> 1
            if rounded > limit:
                m.next = limit
            elif rounded < -limit:
                m.next = -limit
            else:
                m.next = rounded[bits:].signed()

    return round_half_up
