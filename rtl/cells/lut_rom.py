"""The via-programmable lookup-table ROM macro: P read ports on one table, set by the top via mask.

Like the weight ROM (via_rom.py), this is the model a memory compiler would deliver with
the macro: behavioral Verilog whose table the via-map loader fills from the via-map file
found as via_rom.py describes, so the Verilog is the same for every
model and the table never appears inline in the RTL. A vector unit needs several entries
of one table in the same beat (32 sigmoid entries for a SiLU block), hence P ports.

    clk    in   read clock
    en     in   chip enable: with en low the outputs hold, as a compiler ROM's CE pin (the
                macro then neither toggles nor costs the simulator anything)
    addrs  in   P word addresses of ceil(log2(depth)) bits, port p at bits [A*(p+1)-1 : A*p]
    datas  out  P words of `width` bits, port p at bits [W*(p+1)-1 : W*p], registered
                (one cycle of read latency)
"""

from __future__ import annotations

from myhdl import always, block

from hardwire.golden.errors import HardwireError

from ..via_map import SUFFIX
from .via_rom import LOAD_VIA_MAP, ROM_MEMORY, model_words, via_map_define

READ_LATENCY = 1


def lut_address_bits(depth: int) -> int:
    return (depth - 1).bit_length()


@block
def lut_rom(clk, en, addrs, datas, map_name: str, depth: int, ports: int = 1, model_file=None,
            label: str | None = None):
    """`ports` read ports on a ROM of `depth` words; `model_file` feeds only MyHDL's simulator;
    `label` names the memory when several macros load one map (default: the map name)."""
    width, addr_bits = _check(map_name, depth, ports, len(addrs), len(datas))
    # read by verilog_code below (MyHDL fills the template from this function's locals)
    define = via_map_define(map_name)  # noqa: F841
    memory = f"lut_rom_{label or map_name}"
    port_index = f"{memory}_port"  # noqa: F841 (the Verilog loop variable, unique per macro)
    port_count = ports  # noqa: F841
    words = model_words(model_file, width, depth)

    @always(clk.posedge)
    def read():
        if en:
            packed = 0
            for p in range(ports):
                address = int(addrs[(p + 1) * addr_bits:p * addr_bits])
                packed |= words[address] << (p * width)
            datas.next = packed

    datas.driven = "reg"
    addrs.read = True
    en.read = True
    clk.read = True
    return read


lut_rom.verilog_code = """
// via-programmable lookup-table ROM, $depth x $width bits, $port_count read ports; its via map is $map_name""" + \
    SUFFIX + """
""" + ROM_MEMORY + """
integer $port_index;
""" + LOAD_VIA_MAP + """
always @(posedge $clk) begin
    if ($en) begin
        for ($port_index = 0; $port_index < $port_count; $port_index = $port_index + 1) begin
            $datas[$port_index*$width +: $width] <= $memory[$addrs[$port_index*$addr_bits +: $addr_bits]];
        end
    end
end
"""


def _check(name: str, depth: int, ports: int, addrs_bits: int, datas_bits: int) -> tuple[int, int]:
    if not name.isidentifier():
        raise HardwireError(f"via map name '{name}' must be an identifier (it names a Verilog define)")
    if depth < 2 or ports < 1:
        raise HardwireError(f"a LUT ROM needs depth >= 2 and ports >= 1 (got depth {depth}, ports {ports})")
    addr_bits = lut_address_bits(depth)
    if addrs_bits != ports * addr_bits:
        raise HardwireError(f"a {ports}-port LUT ROM of depth {depth} needs {ports * addr_bits} address bits, "
                            f"not {addrs_bits}")
    if datas_bits % ports:
        raise HardwireError(f"{datas_bits} data bits do not split into {ports} equal ports")
    return datas_bits // ports, addr_bits

