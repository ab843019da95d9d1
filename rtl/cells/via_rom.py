"""The via-programmable ROM macro: its bits are set by the top via mask.

This is the model a memory compiler would deliver with the macro: behavioral Verilog whose
memory is filled at simulation start from the macro's binary via-map file (rtl/via_map.py format)
by the loader `hw_via_map_load`, a DPI-C function of the package VIA_MAP_PACKAGE (one package for
every macro: MyHDL flattens many macros into one module, and an import may not repeat). The
simulator supplies the loader (cosim/via_map_loader.py); the clocked read is a plain array read.
The file is not named in the Verilog, so the base-grid Verilog is the same for every model and
only the via maps differ. Contents never appear inline in the RTL. The file is
    <dir>/<name>.vmap  with the simulator's plusarg +hw_via_maps=<dir> (at run time: one
                       build of a die serves every model), or
    `HW_VIA_MAP_<name> when that define is given at build time (a cell tested alone).

    clk   in   read clock
    addr  in   word address, ceil(log2(depth)) bits
    data  out  the word at addr, registered (one cycle of read latency)
"""

from __future__ import annotations

from myhdl import always, block

from hardwire.golden.errors import HardwireError

from ..via_map import SUFFIX, read_via_map

READ_LATENCY = 1
VIA_MAPS_PLUSARG = "hw_via_maps"

VIA_MAP_PACKAGE = "hw_via_map_pkg"
VIA_MAP_PACKAGE_FILE = f"{VIA_MAP_PACKAGE}.sv"
# the loader's declaration, once for every macro; `context`: the loader finds the calling macro's memory
VIA_MAP_PACKAGE_TEXT = f"""\
// The via-map loader of the ROM macros: fills a macro's memory from its binary via map at
// simulation start; returns 0 when loaded. The simulator supplies it in C++.
`timescale 1ns/10ps
package {VIA_MAP_PACKAGE};
    import "DPI-C" context function int hw_via_map_load(input string path, input string memory,
                                                        input int width, input int depth);
endpackage
"""

# a macro's memory: public, so that the loader can fill it by name (a template, as LOAD_VIA_MAP)
ROM_MEMORY = "reg [$width-1:0] $memory [0:$depth-1] /*verilator public_flat_rw*/;"

# the load of a macro's via map (a template for MyHDL's user-defined code, as the macros use it)
LOAD_VIA_MAP = f"""
`ifdef $define
initial if ({VIA_MAP_PACKAGE}::hw_via_map_load(`$define, "$memory", $width, $depth) != 0)
    $$fatal(1, "ROM $map_name: its via map did not load");
`else
string ${{memory}}_dir;
initial begin
    if (!$$value$$plusargs("{VIA_MAPS_PLUSARG}=%s", ${{memory}}_dir))
        $$fatal(1, "no via maps for ROM $map_name: run with +{VIA_MAPS_PLUSARG}=<dir>");
    else if ({VIA_MAP_PACKAGE}::hw_via_map_load({{${{memory}}_dir, "/$map_name{SUFFIX}"}}, "$memory", $width,
                                                 $depth) != 0)
        $$fatal(1, "ROM $map_name: its via map did not load");
end
`endif
"""


def via_map_define(name: str) -> str:
    """The Verilog define that carries the path of via map `name` at build time."""
    return f"HW_VIA_MAP_{name}"


@block
def via_rom(clk, addr, data, map_name: str, depth: int, model_file=None, label: str | None = None):
    """ROM of `depth` words of len(data) bits; `model_file` feeds only MyHDL's own simulator;
    `label` names the macro's memory when several macros load one map (default: the map name)."""
    width = len(data)
    _check(map_name, depth, len(addr))
    # read by verilog_code below (MyHDL fills the template from this function's locals)
    define = via_map_define(map_name)  # noqa: F841
    memory = f"via_rom_{label or map_name}"  # noqa: F841
    words = model_words(model_file, width, depth)

    @always(clk.posedge)
    def read():
        data.next = words[int(addr)]

    data.driven = "reg"
    addr.read = True
    clk.read = True
    return read


via_rom.verilog_code = """
// via-programmable ROM, $depth x $width bits; its via map is $map_name""" + SUFFIX + """
""" + ROM_MEMORY + LOAD_VIA_MAP + """
always @(posedge $clk) begin
    $data <= $memory[$addr];
end
"""


@block
def multi_port_via_rom(clk, addrs, datas, map_name: str, depth: int, ports: int, model_file=None,
                       label: str | None = None):
    """`ports` read ports on one via ROM of `depth` words, reading every cycle like via_rom: port
    p's address is bits [A*(p+1)-1 : A*p] of `addrs`, its word bits [W*(p+1)-1 : W*p] of `datas`
    (the parallel attention unit: one EXP2_LUT read per engine and cycle)."""
    width, addr_bits = len(datas) // ports, len(addrs) // ports
    if ports < 2 or width * ports != len(datas) or addr_bits * ports != len(addrs):
        raise HardwireError(f"a {ports}-port via ROM needs {ports} equal address and data fields")
    _check(map_name, depth, addr_bits)
    # read by verilog_code below (MyHDL fills the template from this function's locals)
    define = via_map_define(map_name)  # noqa: F841
    memory = f"via_rom_{label or map_name}"
    port_index = f"{memory}_port"  # noqa: F841 (the Verilog loop variable, unique per macro)
    words = model_words(model_file, width, depth)

    @always(clk.posedge)
    def read():
        packed = 0
        for p in range(ports):
            packed |= words[int(addrs[(p + 1) * addr_bits:p * addr_bits])] << (p * width)
        datas.next = packed

    datas.driven = "reg"
    addrs.read = True
    clk.read = True
    return read


multi_port_via_rom.verilog_code = """
// via-programmable ROM, $depth x $width bits, $ports read ports; its via map is $map_name""" + SUFFIX + """
""" + ROM_MEMORY + LOAD_VIA_MAP + """
integer $port_index;
always @(posedge $clk) begin
    for ($port_index = 0; $port_index < $ports; $port_index = $port_index + 1) begin
        $datas[$port_index*$width +: $width] <= $memory[$addrs[$port_index*$addr_bits +: $addr_bits]];
    end
end
"""


def _check(name: str, depth: int, addr_bits: int) -> None:
    if not name.isidentifier():
        raise HardwireError(f"via map name '{name}' must be an identifier (it names a Verilog define)")
    if depth < 2 or addr_bits != (depth - 1).bit_length():
        raise HardwireError(f"a via ROM of depth {depth} needs a {(depth - 1).bit_length()}-bit address, "
                            f"not {addr_bits} bits (depth >= 2)")


def model_words(model_file, width: int, depth: int) -> list[int]:
    """A macro's contents for MyHDL's own simulator: the via map's words, or all zero without one."""
    if model_file is None:
        return [0] * depth
    words, file_width = read_via_map(model_file)
    if file_width != width or len(words) != depth:
        raise HardwireError(f"{model_file} is {len(words)} x {file_width} bits; the ROM is {depth} x {width}")
    return words
