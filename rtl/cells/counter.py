"""A loop counter: counts clock cycles up to a limit and raises `done` (sequencer building block).

    clk    in
    rst    in   synchronous: count back to 0
    limit  in   the count at which done rises
    count  out  cycles since reset, stops at limit
    done   out  count == limit
"""

from __future__ import annotations

from myhdl import always_comb, always_seq, block


@block
def cycle_counter(clk, rst, limit, count, done):
    @always_seq(clk.posedge, reset=rst)
    def advance():
        if count != limit:
            count.next = count + 1

    @always_comb
    def reached():
        done.next = count == limit

    return advance, reached
