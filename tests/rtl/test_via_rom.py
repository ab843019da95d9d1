"""The via ROM macro reads back its via map; the via-map writer and reader round-trip."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from rom_case import ROM_DEPTH, ROM_WIDTH, rom_words

from hardwire.golden.errors import HardwireError
from hardwire.rtl.via_map import HEADER, dump_via_map, load_via_map, read_via_map, write_via_map, write_via_map_rows


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
    path = write_via_map(tmp_path / "m.vmap", [1, 0xABC, 0], width=12, depth=5)
    assert read_via_map(path) == ([1, 0xABC, 0, 0, 0], 12)
    assert list(dump_via_map(path))[3:5] == ["001", "abc"]


def test_via_map_keeps_only_the_bits_some_word_sets(tmp_path):
    """The mask is the OR of all words; each stored word keeps only the masked bits, packed."""
    words = [0x0F0F_0000_0F0F, 0x0301_0000_0A05, 0]
    path = write_via_map(tmp_path / "m.vmap", words, width=48, depth=8)
    vmap = load_via_map(path)
    assert vmap.kept == 16 and vmap.used == 3 and vmap.payload.shape == (3, 2)
    assert path.stat().st_size == HEADER.size + 6 + 3 * 2
    assert vmap.words() == words + [0] * 5


@pytest.mark.parametrize("seed", range(4))
def test_via_map_rows_round_trip(tmp_path, seed):
    rng = np.random.default_rng(seed)
    width = int(rng.integers(1, 200))
    rows = rng.integers(0, 256, (int(rng.integers(0, 50)), -(-width // 8)), dtype=np.uint8)
    rows &= rng.integers(0, 256, rows.shape[1], dtype=np.uint8)  # a sparse mask
    if width % 8:
        rows[:, -1] &= (1 << width % 8) - 1
    path = write_via_map_rows(tmp_path / "r.vmap", rows, width, 64)
    assert np.array_equal(load_via_map(path).rows(), np.concatenate([rows, np.zeros((64 - len(rows), rows.shape[1]),
                                                                                   np.uint8)]))


@pytest.mark.parametrize("words, width, depth, message", [
    ([16], 4, None, "does not fit"),
    ([-1], 4, None, "does not fit"),
    ([1, 2, 3], 4, 2, "do not fit"),
    ([], 0, 4, "width and depth"),
])
def test_via_map_writer_refuses_bad_input(tmp_path, words, width, depth, message):
    with pytest.raises(HardwireError, match=message):
        write_via_map(tmp_path / "m.vmap", words, width, depth)


def test_via_map_reader_refuses_other_files(tmp_path):
    (tmp_path / "x.vmap").write_text("// hardwire via map\n00\n01\n")  # the old hex form
    with pytest.raises(HardwireError, match="not a hardwire via map"):
        read_via_map(tmp_path / "x.vmap")
    good = write_via_map(tmp_path / "y.vmap", [1, 2, 3], 4, 3).read_bytes()
    (tmp_path / "y.vmap").write_bytes(good[:-1])
    with pytest.raises(HardwireError, match="bytes; a map of 3 stored words"):
        read_via_map(tmp_path / "y.vmap")


def test_rom_width_and_depth_are_what_the_harness_built():
    assert ROM_WIDTH > 64 and ROM_DEPTH & (ROM_DEPTH - 1)  # multi-word port, not a power of two


def test_one_build_loads_any_via_map_at_run_time(tmp_path):
    """Without the build-time define the macro reads <dir>/<name>.vmap from +hw_via_maps: two
    models' maps on one build (the base grid does not change with the model)."""
    from hardwire.cosim.cells import via_rom_top
    from hardwire.cosim.verilator_build import build_myhdl, load

    contents = {}
    for model, seed in (("a", 1), ("b", 2)):
        (tmp_path / model).mkdir()
        contents[model] = [(seed * 977 * a) % (1 << 16) for a in range(8)]
        write_via_map(tmp_path / model / "w.vmap", contents[model], width=16, depth=8)
    sim = build_myhdl(via_rom_top(16, 8, "w"), "via_rom_runtime", via_maps=tmp_path / "a")
    for model in ("a", "b"):
        rom = load(sim.build_dir, sim.plan.top, tmp_path / model)
        for address in range(8):
            rom["addr"] = address
            rom["clk"], rom["clk"] = 1, 0
            assert rom["data"] == contents[model][address], (model, address)
    with pytest.raises(HardwireError, match="via-map directory not found"):
        load(sim.build_dir, sim.plan.top, tmp_path / "missing")


@pytest.mark.parametrize("fault, message", [
    ("other_geometry", "its width or depth is not the ROM's"),
    ("truncated", "its size does not match its header"),
    ("hex_text", "not a hardwire via map"),
    ("missing", "cannot be opened"),
])
def test_the_loader_refuses_a_map_the_rom_cannot_hold(tmp_path, fault, message):
    """The simulator's own loader checks what it needs to fill the memory safely, and stops the model
    (a $fatal) naming the file and the problem. In a child process: $fatal ends the process."""
    from hardwire.cosim.cells import via_rom_top
    from hardwire.cosim.verilator_build import build_myhdl

    good, bad = tmp_path / "good", tmp_path / "bad"
    good.mkdir(), bad.mkdir()
    write_via_map(good / "w.vmap", range(8), width=16, depth=8)
    sim = build_myhdl(via_rom_top(16, 8, "w"), "via_rom_runtime", via_maps=good)
    if fault == "other_geometry":
        write_via_map(bad / "w.vmap", range(16), width=16, depth=16)
    elif fault == "truncated":
        (bad / "w.vmap").write_bytes((good / "w.vmap").read_bytes()[:-1])
    elif fault == "hex_text":
        (bad / "w.vmap").write_text("// hardwire via map\n// width 16 depth 8\n" + "0000\n" * 8)
    code = ("import sys; from pathlib import Path; from hardwire.cosim.verilator_build import load; "
            "load(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])); print('loaded')")
    result = subprocess.run([sys.executable, "-c", code, str(sim.build_dir), sim.plan.top, str(bad)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "loaded" not in result.stdout, result.stdout + result.stderr
    assert f"via map {bad / 'w.vmap'} for ROM memory via_rom_w: {message}" in result.stderr, result.stderr
