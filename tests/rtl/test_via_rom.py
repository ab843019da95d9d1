"""The via ROM macro reads back its via map; the via-map writer and reader round-trip."""

from __future__ import annotations

import pytest
from rom_case import ROM_DEPTH, ROM_WIDTH, rom_words

from hardwire.golden.errors import HardwireError
from hardwire.rtl.via_map import read_via_map, write_via_map


def test_rom_reads_every_word(via_rom):
    want = rom_words()
    got = [via_rom.read(address) for address in range(ROM_DEPTH)]
    mismatches = [a for a in range(ROM_DEPTH) if got[a] != want[a]]
    assert not mismatches, f"address {mismatches[0]}: rom {got[mismatches[0]]:#x} want {want[mismatches[0]]:#x}"


def test_rom_read_is_registered(via_rom):
    want = rom_words()
    via_rom.read(0)
    via_rom.sim.io.addr = 1
    assert via_rom.sim.io.data == want[0], "data changed before the clock edge"
    via_rom.sim.step()
    assert via_rom.sim.io.data == want[1]


def test_via_map_round_trip_and_padding(tmp_path):
    path = write_via_map(tmp_path / "m.hex", [1, 0xABC, 0], width=12, depth=5)
    assert read_via_map(path) == ([1, 0xABC, 0, 0, 0], 12)
    assert path.read_text().splitlines()[2:4] == ["001", "abc"]


@pytest.mark.parametrize("words, width, depth, message", [
    ([16], 4, None, "does not fit"),
    ([-1], 4, None, "does not fit"),
    ([1, 2, 3], 4, 2, "do not fit"),
    ([], 0, 4, "width and depth"),
])
def test_via_map_writer_refuses_bad_input(tmp_path, words, width, depth, message):
    with pytest.raises(HardwireError, match=message):
        write_via_map(tmp_path / "m.hex", words, width, depth)


def test_via_map_reader_refuses_other_files(tmp_path):
    (tmp_path / "x.hex").write_text("00\n01\n")
    with pytest.raises(HardwireError, match="not a hardwire via map"):
        read_via_map(tmp_path / "x.hex")
    (tmp_path / "y.hex").write_text("// hardwire via map\n// width 4 depth 3\n1\n2\n")
    with pytest.raises(HardwireError, match="do not match the header"):
        read_via_map(tmp_path / "y.hex")


def test_rom_width_and_depth_are_what_the_harness_built():
    assert ROM_WIDTH > 64 and ROM_DEPTH & (ROM_DEPTH - 1)  # multi-word port, not a power of two


def test_one_build_loads_any_via_map_at_run_time(tmp_path):
    """Without the build-time define the macro reads <dir>/<name>.hex from +hw_via_maps: two
    models' maps on one build (the base grid does not change with the model)."""
    from hardwire.cosim.cells import via_rom_top
    from hardwire.cosim.verilator_build import build_myhdl, load

    contents = {}
    for model, seed in (("a", 1), ("b", 2)):
        (tmp_path / model).mkdir()
        contents[model] = [(seed * 977 * a) % (1 << 16) for a in range(8)]
        write_via_map(tmp_path / model / "w.hex", contents[model], width=16, depth=8)
    sim = build_myhdl(via_rom_top(16, 8, "w"), "via_rom_runtime", via_maps=tmp_path / "a")
    for model in ("a", "b"):
        rom = load(sim.build_dir, sim.plan.top, tmp_path / model)
        for address in range(8):
            rom["addr"] = address
            rom["clk"], rom["clk"] = 1, 0
            assert rom["data"] == contents[model][address], (model, address)
    with pytest.raises(HardwireError, match="via-map directory not found"):
        load(sim.build_dir, sim.plan.top, tmp_path / "missing")
