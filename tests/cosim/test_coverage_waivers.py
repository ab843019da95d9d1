"""Coverage waivers: a waived unit is one no generated program can start, a waived case arm one no via map can
select, and both name real lines."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from hardwire.code_coverage import Block, add_lines, process_names
from hardwire.cosim.chip_sim import grid_sources
from hardwire.cosim.coverage_waivers import UNIT_OPS, program_ops, waived_arms, waived_units
from hardwire.golden.errors import HardwireError
from hardwire.rtl import metal
from hardwire.rtl.die import get_die
from hardwire.rtl.isa import FORMAT_CODE, Op


def test_the_head_waives_the_layer_units_and_the_tile_the_head_units():
    assert set(waived_units("hw_head")) == {"add_unit0", "rq_unit0", "silu_unit0", "silu_epilogue0", "rope_unit0",
                                            "attention_unit0"}
    assert set(waived_units("hw_tile")) == {"embed_unit0", "argmax_tracker0"}
    assert waived_units("hw_chip") == {}
    assert "no ROPE in hw_head's microcode" in waived_units("hw_head")["attention_unit0"]


@pytest.mark.parametrize("die", ["hw-tiny", "hw-s135"])
def test_no_generated_program_starts_a_waived_unit(synth_model, die):
    image = metal.generate(synth_model, get_die(die))
    for name, program in image.programs.items():
        module = "hw_head" if name == "head" else "hw_tile"
        ops = {instr.op for instr in program}
        assert ops <= program_ops(module), name
        assert not ops & set().union(*(UNIT_OPS[unit] for unit in waived_units(module))), name


@pytest.mark.parametrize("module", ["hw_tile", "hw_head"])
def test_every_waived_unit_names_processes_of_the_base_grid(module, tmp_path):
    source = tmp_path / f"{module}.v"
    source.write_text(grid_sources(get_die("hw-tiny"))[0][f"{module}.v"])
    names = set(process_names(source))
    for unit in waived_units(module):
        assert any(name.startswith(unit + "_") for name in names), unit


def unit_source(path, units):
    text = "module hw_head (\n    clk\n);\n"  # lines 1-3; each unit then takes three lines
    for unit in units:
        text += f"always @(posedge clk) begin: {unit}_work\n    r <= 1;\nend\n"
    path.write_text(text + "endmodule\n")
    return path


def test_waived_lines_leave_the_counts_and_are_listed_with_their_reason(tmp_path):
    units = ["norm_unit0", *waived_units("hw_head")]
    source = unit_source(tmp_path / "hw_head.v", units)
    lines = {n: 0 for n in range(1, 4 + 3 * len(units) + 1)}  # no line hit
    lines[4] = lines[5] = 1  # the norm unit's
    blocks: dict[str, Block] = {}
    add_lines(blocks, {str(source): lines}, {})
    summary = blocks["hw_head"].as_dict()
    assert summary["lines_hit"] == 2 and summary["lines_total"] == len(lines) - 3 * (len(units) - 1)
    assert summary["lines_waived"] == 3 * (len(units) - 1)
    assert {w["unit"]: w["lines"] for w in summary["waived"]} == dict.fromkeys(waived_units("hw_head"), 3)
    assert all(w["reason"] == waived_units("hw_head")[w["unit"]] for w in summary["waived"])
    assert not any("rope_unit0" in u for u in summary["uncovered"])


def test_a_waiver_that_names_no_line_stops_the_merge(tmp_path):
    source = unit_source(tmp_path / "hw_head.v", ["norm_unit0", "rope_unit0"])
    with pytest.raises(HardwireError, match="coverage waiver 'add_unit0' names no line of hw_head.v"):
        add_lines({}, {str(source): dict.fromkeys(range(1, 11), 0)}, {})


def test_the_programs_use_what_the_units_serve():
    assert Op.EMBED in program_ops("hw_head") and Op.ATTN in program_ops("hw_tile")


TABLE = """always @(fmt) begin: lanes0_format_traits0_trait_rom0_lookup
    case (fmt)
{arms}        default: word = 0;
    endcase
end
"""


def _arms(labels) -> str:
    return "".join(f"        {label}: word = {label};\n" for label in labels)


def test_the_format_arms_no_format_code_selects_are_waived_with_the_default():
    lines = TABLE.format(arms=_arms(range(16 - 1))).splitlines()
    waived = waived_arms(lines, [""] + ["lanes0_format_traits0_trait_rom0_lookup"] * (len(lines) - 1), "hw_tile")
    assert [lines[n - 1].split(":")[0].strip() for n in waived["format-code arms"][0]] == \
        [str(c) for c in range(max(FORMAT_CODE.values()) + 1, 15)] + ["default"]


def test_a_default_that_a_format_code_reaches_is_kept():
    lines = TABLE.format(arms=_arms(range(4))).splitlines()  # codes 4.. reach the default
    waived = waived_arms(lines, ["lanes0_format_traits0_trait_rom0_lookup"] * len(lines), "hw_tile")
    assert waived == {}


def test_a_table_in_another_process_is_not_waived():
    lines = TABLE.format(arms=_arms(range(15))).splitlines()
    assert waived_arms(lines, ["lanes0_decoder0_decode"] * len(lines), "hw_tile") == {}


@pytest.mark.parametrize("module", ["hw_tile", "hw_head"])
def test_the_arm_waivers_name_the_base_grids_tables(module):
    """On hw-tiny: its lanes' format-trait ROMs in both modules; its tile's LoRA exponent tables, 24 fields
    each (the 64 of a 6-bit field less the 40 exponents in [-24, 15])."""
    text = grid_sources(get_die("hw-tiny"))[0][f"{module}.v"]
    path = Path(tempfile.mkdtemp()) / f"{module}.v"
    path.write_text(text)
    waived = waived_arms(text.splitlines(), process_names(path), module)
    assert waived["format-code arms"][0] and len(waived["format-code arms"][0]) % 6 == 0  # codes 10-14, default
    if module == "hw_tile":
        assert len(waived["LoRA exponent arms"][0]) == 4 * 24
    else:
        assert "LoRA exponent arms" not in waived  # hw-tiny's head has no exponent table


def test_the_heads_lanes_waive_every_lora_exponent_arm_and_the_tiles_only_the_out_of_range_ones():
    lines = ["case (d_bits[6-1:0])", *(f"    {f}: value = {f};" for f in range(63)), "    default: value = 0;",
             "endcase"]
    names = ["lanes0_fp16_scale0_decode_either"] * len(lines)
    tile, tile_why = waived_arms(lines, names, "hw_tile")["LoRA exponent arms"]
    head, head_why = waived_arms(lines, names, "hw_head")["LoRA exponent arms"]
    assert [lines[n - 1].split(":")[0].strip() for n in tile] == [str(f) for f in range(16, 40)]  # e 16..31, -32..-25
    assert len(head) == 64 and "hw_head's microcode reads no LoRA SRAM" in head_why
    assert "outside [-24, 15]" in tile_why


def test_a_waived_arm_that_ran_stops_the_merge(tmp_path):
    source = tmp_path / "parts" / "Vhw_tile_part" / "src" / "hw_lanes.v"  # a tile's lanes: no unit waivers
    source.parent.mkdir(parents=True)
    source.write_text(TABLE.format(arms=_arms(range(15))))
    lines = {n: 0 for n in range(1, 20)} | {14: 1}  # label 11's arm (line 3 + 11) ran
    with pytest.raises(HardwireError, match=r"line 14 is a case arm waived as unreachable \(format-code arms\)"):
        add_lines({}, {str(source): lines}, {})
