"""Partitioned simulation: the chip's units as separate Verilator models, stepped only when clocked.

The chip top (rtl/chip.py) instantiates the tile and head modules behind clock gates. Verilated
flat, every instance gets code of its own (hundreds of MB of C++ for a large die); Verilated
hierarchically, every instance's wrapper is evaluated, and its wide ports converted, at every
evaluation of the top, idle or not. Both are too slow for a whole model.

Here each unit module is Verilated once as a model of its own (a *part*), and the chip is
Verilated with a *bridge* in the unit module's place: a module with the same ports that calls
the part through DPI. The unit's logic is the generated RTL, unchanged; the bridge only decides
when to evaluate it:

    posedge clk        a clock edge, with the inputs as they were before the edge (the chip's
                       registers update with nonblocking assignments after the bridge reads them)
    negedge clk        the inputs as the rising edge left them, settled (ROM data, links)
    start, up_valid,   the only inputs that can change while the unit's clock is gated off; the
    rst edges          unit's clock_on and any other combinational output follow them

A gated-off unit has no clock edges and, between its wake-up events, no changing inputs: the
simulator does not touch it at all. All outputs are updated with nonblocking assignments, as
registers are. Inputs that change with no such event (pos, between the host's reply and the
next start) reach only the ROM macros of the unit's own gated clock before the unit wakes.

Bulk inputs (BULK_PINS: the weight word and the LoRA SRAM word, up to hundreds of kbits) are
not DPI arguments, which the chip's model would copy twice per call. The part reads them from
the bridge's own port (public, found once by name in the bridge's scope) in every evaluation but
the rising edge's: they are the data of read ports on the unit's own clock, so they change only at
its rising edges, and the falling edge that follows every rising edge copies them in. At a rising
edge the part still holds them as they were before it, as the unit's registers need.

The part's top is a wrapper (part_top_verilog) that holds the bulk inputs in registers on an edge of
their own (BULK_EDGE), which the bridge gives only when a word differs from the one held. Verilator
evaluates a model's logic on its top inputs in every evaluation; the lanes' copies of their slots
(rtl/lanes.py) are that logic if they read the inputs themselves. Read from the held registers,
they run only when a new word arrives or a MATMUL's DECODE loads the lanes' LoRA select: an idle
unit copies nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from hardwire.rtl import chip
from hardwire.rtl.bus import member_pin

PART_SUFFIX = "_part"
# the data of the weight ROM's and the LoRA SRAM's read ports, both on the unit's own clock: the
# part reads them from the bridge's ports, not through DPI (see above)
BULK_PINS = (member_pin("w", "data"), member_pin("lora", "data"))
BULK_EDGE = "bulk_edge"  # the part's own input: toggled by the bridge when it copies in a new bulk word
HELD_SUFFIX = "_held"


@dataclass(frozen=True)
class Pin:
    name: str
    width: int
    is_input: bool

    @property
    def bulk(self) -> bool:
        return self.is_input and self.name in BULK_PINS


def unit_pins(die, head: bool) -> list[Pin]:
    """Every port of the tile (or head) module, in the order of its port table (rtl/chip.py UNIT_PORTS)."""
    return [Pin(name, len(sig), is_input) for name, sig, is_input in chip.unit_ports(die, head).pins()]


def part_prefix(module: str) -> str:
    """The C++ class of the module's separately Verilated model."""
    return f"V{part_top(module)}"


def part_top(module: str) -> str:
    """The top module of the part: `module` inside the wrapper that holds its bulk inputs."""
    return f"{module}{PART_SUFFIX}"


def part_top_verilog(module: str, pins: list[Pin]) -> str:
    """The part's top: the unit module with its bulk inputs held in registers that load on either
    edge of BULK_EDGE (simulation scaffolding, outside the coverage counts)."""
    ports = port_list(pins)
    bulk = [p for p in pins if p.bulk]
    held = "".join(f"reg {_range(p)}{p.name}{HELD_SUFFIX};\n" for p in bulk)
    loads = "".join(f"    {p.name}{HELD_SUFFIX} <= {p.name};\n" for p in bulk)
    connections = ",\n".join(f"    .{p.name}({p.name}{HELD_SUFFIX if p.bulk else ''})" for p in pins)
    return f"""\
// Simulation part (hardwire.cosim.partition): `{module}` with its bulk inputs held on an edge of their own.
/* verilator coverage_off */
`timescale 1ns/10ps
module {part_top(module)} (
{ports},
    input wire {BULK_EDGE}
);
{held}always @(posedge {BULK_EDGE} or negedge {BULK_EDGE}) begin
{loads}end
{module} u_unit (
{connections}
);
endmodule
"""


# --- the bridge's Verilog ------------------------------------------------------------------------

WAKE_EVENTS = ("start", member_pin("up", "valid"), "rst")


def bridge_verilog(module: str, pins: list[Pin]) -> str:
    """Module `module` for the chip's Verilation: the same ports, evaluated through DPI."""
    ports = ",\n".join(f"    {'input wire' if p.is_input else 'output reg'} {_range(p)}{p.name}"
                        f"{' /*verilator public_flat_rd*/' if p.bulk else ''}" for p in pins)
    passed = [p for p in pins if not p.bulk]
    args = ", ".join(f"{'input' if p.is_input else 'output'} bit {_range(p)}{p.name}" for p in passed)
    outputs = [p for p in pins if not p.is_input]
    nexts = "".join(f"bit {_range(p)}{p.name}__next;\n" for p in outputs)
    call_args = ", ".join(("clock" if p.name == "clk" else p.name) if p.is_input else f"{p.name}__next"
                          for p in passed)
    commit = "".join(f"    {p.name} <= {p.name}__next;\n" for p in outputs)
    wake = " or ".join(f"{edge} {name}" for name in WAKE_EVENTS for edge in ("posedge", "negedge"))
    return f"""\
// Simulation bridge (hardwire.cosim.partition): `{module}` evaluated as a separately Verilated model.
`timescale 1ns/10ps
/* verilator lint_off UNUSEDSIGNAL */
/* verilator lint_off MULTIDRIVEN */  // the three evaluation triggers share one task
module {module} (
{ports}
);
import "DPI-C" context function chandle hw_part_new_{module}(input string scope);
import "DPI-C" function void hw_part_eval_{module}(input chandle part, input bit rising, {args});
chandle part;
{nexts}initial part = hw_part_new_{module}($sformatf("%m"));

task automatic evaluate(input bit clock, input bit rising);
    hw_part_eval_{module}(part, rising, {call_args});
{commit}endtask

always @(posedge clk) evaluate(1'b1, 1'b1);
always @(negedge clk) evaluate(1'b0, 1'b0);
always @({wake}) evaluate(clk, 1'b0);
endmodule
"""


def port_list(pins: list[Pin]) -> str:
    """The pins as a Verilog port list of wires, one a line."""
    return ",\n".join(f"    {'input wire' if p.is_input else 'output wire'} {_range(p)}{p.name}" for p in pins)


def _range(pin: Pin) -> str:
    return f"[{pin.width - 1}:0] " if pin.width > 1 else ""


# --- the bridge's C++ ----------------------------------------------------------------------------

def bridge_cpp(module: str, pins: list[Pin]) -> str:
    """The DPI functions of the bridge: create the part, copy the pins in, evaluate, copy out."""
    prefix, state = part_prefix(module), f"hw_part_{module}"
    bulk = [p for p in pins if p.bulk]
    params = ", ".join(_c_param(p) for p in pins if not p.bulk)
    copy_in = "".join(f"    {_copy_in(p)}\n" for p in pins if p.is_input and not p.bulk)
    copy_out = "".join(f"    {_copy_out(p)}\n" for p in pins if not p.is_input)
    fields = "".join(f"    const void* {p.name};\n" for p in bulk)
    finds = "".join(f"    s->{p.name} = hw_part_bulk_input(scope, \"{p.name}\", sizeof(s->model->{p.name}));\n"
                    for p in bulk)
    copy_bulk = "".join(f"        if (std::memcmp(&m->{p.name}, s->{p.name}, sizeof(m->{p.name})) != 0) {{\n"
                        f"            std::memcpy(&m->{p.name}, s->{p.name}, sizeof(m->{p.name}));\n"
                        f"            fresh = true;\n"
                        f"        }}\n" for p in bulk)
    return f"""
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include "svdpi.h"
#include "verilated.h"
#include "verilated_syms.h"
#include "{prefix}.h"

#ifndef HW_PART_BULK_INPUT
#define HW_PART_BULK_INPUT
// A bulk input of a bridge: its port, found by name in the bridge's scope (the port is public).
static const void* hw_part_bulk_input(const char* scope, const char* name, size_t bytes) {{
    const VerilatedScope* here = static_cast<const VerilatedScope*>(svGetScope());
    const VerilatedVar* var = here ? here->varFind(name) : nullptr;
    if (!var || var->totalSize() != bytes) {{
        std::fprintf(stderr, "hardwire: error: bridge %s: input %s is not visible to its part\\n", scope, name);
        std::abort();
    }}
    return var->datap();
}}
#endif

struct {state} {{
    {prefix}* model;
    bool loaded;  // the held words have been loaded once (whatever the registers' initial values)
{fields}}};

extern "C" void* hw_part_new_{module}(const char* scope) {{
    {state}* s = new {state}();
    s->model = new {prefix}(Verilated::threadContextp(), scope);
{finds}    s->model->eval();
    return s;
}}

extern "C" void hw_part_eval_{module}(void* handle, svBit rising, {params}) {{
    {state}* s = static_cast<{state}*>(handle);
    {prefix}* m = s->model;
{copy_in}    if (!rising) {{
        bool fresh = !s->loaded;
        s->loaded = true;
{copy_bulk}        if (fresh) m->{BULK_EDGE} = !m->{BULK_EDGE};
    }}
    m->eval();
{copy_out}}}
"""


def _c_param(pin: Pin) -> str:
    if pin.width == 1:
        return f"svBit {pin.name}" if pin.is_input else f"svBit* {pin.name}"
    return f"const svBitVecVal* {pin.name}" if pin.is_input else f"svBitVecVal* {pin.name}"


def _copy_in(pin: Pin) -> str:
    name, w = pin.name, pin.width
    if w == 1:
        return f"m->{name} = {name};"
    if w <= 32:
        return f"m->{name} = {name}[0];"
    if w <= 64:
        return f"m->{name} = (QData){name}[0] | (QData){name}[1] << 32;"
    return f"std::memcpy(m->{name}.data(), {name}, {_words(w)} * 4);"


def _copy_out(pin: Pin) -> str:
    name, w = pin.name, pin.width
    if w == 1:
        return f"*{name} = m->{name};"
    if w <= 32:
        return f"{name}[0] = m->{name};"
    if w <= 64:
        return f"{name}[0] = (uint32_t)m->{name}; {name}[1] = (uint32_t)(m->{name} >> 32);"
    return f"std::memcpy({name}, m->{name}.data(), {_words(w)} * 4);"


def _words(width: int) -> int:
    return -(-width // 32)
