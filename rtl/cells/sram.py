"""A behavioral SRAM macro: one write port and one read port, both synchronous.

This is the model a memory compiler would deliver with the macro (the KV cache and the
attention unit's buffers): behavioral Verilog for simulation and for FPGA/gate-level
inference, as MyHDL user-defined code, so the converter never flattens the array into
registers. Contents are not initialised (an SRAM powers up unknown; Verilator reads 0).

    clk    in   the clock of both ports
    we     in   write enable: wdata is stored at waddr on the rising edge
    waddr  in   write address, ceil(log2(depth)) bits
    wdata  in   write word
    re     in   read enable: rdata takes the word at raddr on the rising edge, else holds
    raddr  in   read address
    rdata  out  read word, registered (READ_LATENCY cycle)

A read of the address written on the same edge returns the old word (read-before-write),
which is what the Verilog's non-blocking assignments give; addresses >= depth are not
allowed (the user's counters never produce them).
"""

from __future__ import annotations

from myhdl import ConcatSignal, always, block

from hardwire.golden.errors import HardwireError

READ_LATENCY = 1


def address_bits(depth: int) -> int:
    return max((depth - 1).bit_length(), 1)


@block
def sram(clk, we, waddr, wdata, re, raddr, rdata, depth: int, label: str):
    """`depth` words of len(wdata) bits; `label` makes the macro's array name unique (the
    converter inlines every instance into one module)."""
    width = len(wdata)
    _check(label, depth, width, len(waddr), len(raddr), len(rdata))
    memory = f"sram_{label}"  # noqa: F841 (read by verilog_code: $memory)
    words = [0] * depth  # MyHDL's own simulator only

    @always(clk.posedge)
    def access():
        if re:
            rdata.next = words[int(raddr)]  # read before the write below: old data
        if we:
            words[int(waddr)] = int(wdata)

    rdata.driven = "reg"
    for port in (clk, we, waddr, wdata, re, raddr):
        port.read = True
    return access


sram.verilog_code = """
// SRAM macro $memory: $depth x $width bits, 1 write + 1 read port, read latency 1
reg [$width-1:0] $memory [0:$depth-1];
always @(posedge $clk) begin
    if ($we) $memory[$waddr] <= $wdata;
    if ($re) $rdata <= $memory[$raddr];
end
"""


def _check(label: str, depth: int, width: int, waddr_bits: int, raddr_bits: int, rdata_bits: int) -> None:
    if not label.isidentifier():
        raise HardwireError(f"SRAM label '{label}' must be an identifier (it names the Verilog array)")
    if depth < 2:
        raise HardwireError(f"an SRAM needs a depth of at least 2, not {depth}")
    bits = address_bits(depth)
    if waddr_bits != bits or raddr_bits != bits:
        raise HardwireError(f"an SRAM of depth {depth} needs {bits}-bit addresses, not {waddr_bits}/{raddr_bits}")
    if rdata_bits != width:
        raise HardwireError(f"SRAM read word is {rdata_bits} bits; the write word is {width}")


@block
def lane_sram(wclk, we, wlane, waddr, wdata, rclk, re, raddr, rdata, depth: int, lanes: int, label: str):
    """`depth` words of `lanes` lanes of len(wdata) bits: a write stores one lane of one word (on
    wclk), a read returns a whole word (on rclk, registered). The LoRA SRAM: the host writes it one
    block at a time through the adapter-load port while the tile idles; the tile reads `lanes`
    blocks a cycle on its own (gated) clock. Lane j of a word is bits [width*(j+1)-1 : width*j]."""
    width = len(wdata)
    _check(label, depth, width * lanes, len(waddr), len(raddr), len(rdata))
    if len(wlane) != address_bits(lanes):
        raise HardwireError(f"an SRAM of {lanes} lanes needs a {address_bits(lanes)}-bit lane select")
    memory = f"sram_{label}"  # noqa: F841 (read by verilog_code: $memory)
    words = [0] * depth  # MyHDL's own simulator only
    lane_mask = (1 << width) - 1

    @always(wclk.posedge)
    def write():
        if we:
            shift = int(wlane) * width
            old = words[int(waddr)] & ~(lane_mask << shift)
            words[int(waddr)] = old | int(wdata) << shift

    @always(rclk.posedge)
    def read():
        if re:
            rdata.next = words[int(raddr)]

    rdata.driven = "reg"
    for port in (wclk, we, wlane, waddr, wdata, rclk, re, raddr):
        port.read = True
    return write, read


lane_sram.verilog_code = """
// SRAM macro $memory: $depth x $lanes lanes of $width bits, lane-wide writes on $wclk, word reads on $rclk
reg [$width*$lanes-1:0] $memory [0:$depth-1];
always @(posedge $wclk) begin
    if ($we) $memory[$waddr][$wlane*$width +: $width] <= $wdata;
end
always @(posedge $rclk) begin
    if ($re) $rdata <= $memory[$raddr];
end
"""


@block
def lane_select_sram(clk, we, wlane, waddr, wdata, re, raddr, rlanes, rdata, depth: int, lanes: int, label: str):
    """`depth` words of `lanes` lanes of W = len(wdata) bits, one write and P = len(rdata) / W read
    ports. A write stores lane `wlane` of word `waddr`; a read returns, on port p, lane
    rlanes[p] of word `raddr` (one row read, a column select per port, registered). The
    attention unit's KV SRAM: a word holds every K (or V) block of one position, and each
    attention engine reads its own KV head's block of it in the same cycle. Lane j of a word is
    bits [W*(j+1)-1 : W*j]; port p of rdata (and of rlanes) likewise."""
    width, lane_bits = len(wdata), address_bits(lanes)
    ports = len(rdata) // width
    _check(label, depth, width * lanes, len(waddr), len(raddr), width * lanes)
    _check_lanes(label, lanes, ports, width, len(wlane), len(rlanes), len(rdata))
    memory = f"sram_{label}"  # noqa: F841 (read by verilog_code: $memory)
    port_index = f"{memory}_port"  # noqa: F841 (the Verilog loop variable, unique per macro)
    words = [0] * depth  # MyHDL's own simulator only
    lane_mask = (1 << width) - 1

    @always(clk.posedge)
    def access():
        if re:
            row, packed = words[int(raddr)], 0
            for p in range(ports):
                lane = int(rlanes[(p + 1) * lane_bits:p * lane_bits])
                packed |= (row >> (lane * width) & lane_mask) << (p * width)
            rdata.next = packed
        if we:
            shift = int(wlane) * width
            words[int(waddr)] = words[int(waddr)] & ~(lane_mask << shift) | int(wdata) << shift

    _mark_ports(rdata, clk, we, wlane, waddr, wdata, re, raddr, rlanes)
    return access


lane_select_sram.verilog_code = """
// SRAM macro $memory: $depth x $lanes lanes of $width bits, lane writes, $ports lane-select read ports
reg [$width*$lanes-1:0] $memory [0:$depth-1];
integer $port_index;
always @(posedge $clk) begin
    if ($we) $memory[$waddr][$wlane*$width +: $width] <= $wdata;
    if ($re) begin
        for ($port_index = 0; $port_index < $ports; $port_index = $port_index + 1) begin
            $rdata[$port_index*$width +: $width] <=
                $memory[$raddr][$rlanes[$port_index*$lane_bits +: $lane_bits]*$width +: $width];
        end
    end
end
"""


@block
def word_write_lane_read_sram(clk, we, waddr, wdata, re, raddr, rlane, rdata, depth: int, lanes: int, label: str):
    """`depth` words of `lanes` lanes of W = len(rdata) bits: a write stores a whole word, a read
    returns lane `rlane` of word `raddr` (registered). The parallel attention unit's output
    buffer: every engine's block lands in one write, and the blocks leave one a cycle."""
    width = len(rdata)
    _check(label, depth, len(wdata), len(waddr), len(raddr), width * lanes)
    _check_lanes(label, lanes, 1, width, address_bits(lanes), len(rlane), width)
    memory = f"sram_{label}"  # noqa: F841 (read by verilog_code: $memory)
    words = [0] * depth  # MyHDL's own simulator only
    lane_mask = (1 << width) - 1

    @always(clk.posedge)
    def access():
        if re:
            rdata.next = words[int(raddr)] >> (int(rlane) * width) & lane_mask
        if we:
            words[int(waddr)] = int(wdata)

    _mark_ports(rdata, clk, we, waddr, wdata, re, raddr, rlane)
    return access


word_write_lane_read_sram.verilog_code = """
// SRAM macro $memory: $depth x $lanes lanes of $width bits, word writes, a lane-select read port
reg [$width*$lanes-1:0] $memory [0:$depth-1];
always @(posedge $clk) begin
    if ($we) $memory[$waddr] <= $wdata;
    if ($re) $rdata <= $memory[$raddr][$rlane*$width +: $width];
end
"""


def _mark_ports(rdata, *inputs) -> None:
    """The converter's view of a user-defined macro: it drives rdata and reads the inputs (a
    concatenation read only here is declared as a wire, else the converter sees no reader)."""
    rdata.driven = "reg"
    for port in inputs:
        port.read = True
        if isinstance(port, ConcatSignal):
            port.driven = "wire"


def _check_lanes(label: str, lanes: int, ports: int, width: int, wlane_bits: int, rlanes_bits: int,
                 rdata_bits: int) -> None:
    bits = address_bits(lanes)
    if ports < 1 or rdata_bits != ports * width:
        raise HardwireError(f"SRAM {label}: a read word of {rdata_bits} bits is not ports of {width} bits")
    if wlane_bits != bits or rlanes_bits != ports * bits:
        raise HardwireError(f"SRAM {label}: {lanes} lanes need {bits}-bit lane selects per port")
