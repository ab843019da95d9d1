"""Coverage waivers: a waived unit is one no generated program can start, and it names real lines."""

from __future__ import annotations

import pytest

from hardwire.code_coverage import Block, add_lines, process_names
from hardwire.cosim.chip_sim import grid_sources
from hardwire.cosim.coverage_waivers import UNIT_OPS, program_ops, waived_units
from hardwire.golden.errors import HardwireError
from hardwire.rtl import metal
from hardwire.rtl.die import get_die
from hardwire.rtl.isa import Op


def test_the_head_waives_the_layer_units_and_the_tile_the_head_units():
    assert set(waived_units("hw_head")) == {"add_unit0", "rq_unit0", "silu_unit0", "rope_unit0", "attention_unit0"}
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
