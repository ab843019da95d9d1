"""The integrated clock-gating cell (ICG) of the standard-cell library, as its behavioral model.

A unit gates its datapath clock with it while no block is arriving or in flight: the
datapath, and the combinational cells behind its registers (the requantizers), then neither
toggle in silicon nor cost the simulator anything (Verilator evaluates logic only on the
edges of the clock that drives it). Like the ROM macros, the model is MyHDL user-defined
Verilog: synthesis maps it onto the library's ICG cell.

    clk     in   the free-running clock
    enable  in   sampled while clk is low (a latch), so gated_clk never glitches
    gated_clk out clk while the latched enable is high, else low
"""

from __future__ import annotations

from myhdl import always, block


@block
def clock_gate(clk, enable, gated_clk):
    latched = [False]  # MyHDL's own simulation: the latch

    @always(clk, enable)
    def gate():
        if not clk:
            latched[0] = bool(enable)
        gated_clk.next = bool(clk) and latched[0]

    gated_clk.driven = "wire"
    clk.read = True
    enable.read = True
    return gate


clock_gate.verilog_code = """
// clock-gating cell (ICG): $enable is latched while $clk is low
reg ${gated_clk}_enable;
always_latch begin
    if (!$clk) ${gated_clk}_enable = $enable;
end
assign $gated_clk = $clk & ${gated_clk}_enable;
"""
