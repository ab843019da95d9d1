"""Fixtures of the RTL suite: each cell is built once per session through the build cache
(parallel xdist workers share one build per key), and every worker works in its own directory."""

from __future__ import annotations

import pytest
from rom_case import ROM_DEPTH, ROM_WIDTH, rom_words

from hardwire.cosim.cells import BlockMacCell, RequantCell, ViaRomCell, build_cycle_counter
from hardwire.rtl.via_map import write_via_map


@pytest.fixture(scope="session")
def worker_dir(tmp_path_factory, worker_id):
    return tmp_path_factory.mktemp(f"work-{worker_id}")


@pytest.fixture(autouse=True)
def in_worker_dir(worker_dir, monkeypatch):
    """pyverilator writes files (waveforms) into the working directory."""
    monkeypatch.chdir(worker_dir)


@pytest.fixture(scope="session")
def requant8():
    return RequantCell(bits=8)


@pytest.fixture(scope="session")
def requant16():
    return RequantCell(bits=16)


@pytest.fixture(scope="session")
def requant8_w64():
    """The attention output's requantizer: 64-bit words in."""
    return RequantCell(bits=8, in_width=64)


@pytest.fixture(scope="session", params=[False, True], ids=["own-decode", "engine-wired"])
def block_mac(request):
    """The lane with its own format decode and activation sums, and as a wide engine wires it."""
    return BlockMacCell(engine_wired=request.param)


@pytest.fixture(scope="session")
def block_mac8():
    return BlockMacCell(act_bits=8)


@pytest.fixture(scope="session")
def via_rom(worker_dir):
    via_map = write_via_map(worker_dir / "rom.vmap", rom_words(), ROM_WIDTH, ROM_DEPTH)
    return ViaRomCell(via_map, ROM_WIDTH, ROM_DEPTH)


@pytest.fixture(scope="session")
def cycle_counter():
    return build_cycle_counter()
