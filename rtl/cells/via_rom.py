"""The via-programmable ROM macro: its bits are set by the top via mask.

This is the model a memory compiler would deliver with the macro: behavioral Verilog that
loads the contents with $readmemh from the macro's via-map file (rtl/via_map.py format). The
file is not named in the Verilog, so the base-grid Verilog is the same for every model and
only the via maps differ. Contents never appear inline in the RTL. The file is
    <dir>/<name>.hex   with the simulator's plusarg +hw_via_maps=<dir> (at run time: one
                       build of a die serves every model), or
    `HW_VIA_MAP_<name> when that define is given at build time (a cell tested alone).

    clk   in   read clock
    addr  in   word address, ceil(log2(depth)) bits
    data  out  the word at addr, registered (one cycle of read latency)
"""

from __future__ import annotations

from myhdl import always, block

from hardwire.golden.errors import HardwireError

from ..via_map import read_via_map

READ_LATENCY = 1
VIA_MAPS_PLUSARG = "hw_via_maps"

# the load of a macro's via map (a template for MyHDL's user-defined code, as the macros use it)
LOAD_VIA_MAP = f"""
`ifdef $define
initial $$readmemh(`$define, $memory);
`else
string ${{memory}}_dir;
initial begin
    if ($$value$$plusargs("{VIA_MAPS_PLUSARG}=%s", ${{memory}}_dir))
        $$readmemh({{${{memory}}_dir, "/$map_name.hex"}}, $memory);
    else
        $$fatal(1, "no via maps for ROM $map_name: run with +{VIA_MAPS_PLUSARG}=<dir>");
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
// via-programmable ROM, $depth x $width bits; its via map is $map_name.hex
reg [$width-1:0] $memory [0:$depth-1];
""" + LOAD_VIA_MAP + """
always @(posedge $clk) begin
    $data <= $memory[$addr];
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
