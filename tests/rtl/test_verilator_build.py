"""The Verilator adapter: the build cache, concurrent builds, the native multi-cycle run."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from hardwire.cosim import verilator_build as vb
from hardwire.cosim.cells import build_cycle_counter
from hardwire.golden.errors import HardwireError

PRIVATE_COUNTER_WIDTH = 13  # not a width any other test builds


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HARDWIRE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "builds"


def test_second_build_hits_the_cache(private_cache):
    first = build_cycle_counter(PRIVATE_COUNTER_WIDTH)
    start = time.perf_counter()
    second = build_cycle_counter(PRIVATE_COUNTER_WIDTH)
    assert (first.cache_hit, second.cache_hit) == (False, True)
    assert second.build_dir == first.build_dir == private_cache / first.key
    assert time.perf_counter() - start < 2.0, "a cache hit must not compile"
    assert [p.name for p in private_cache.iterdir() if not p.name.endswith(".lock")] == [first.key]


CONCURRENT_BUILD = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path
    from hardwire.cosim.cells import build_cycle_counter
    go = Path(sys.argv[1])
    (go.parent / f"ready-{os.getpid()}").touch()
    while not go.exists():
        time.sleep(0.01)
    sim = build_cycle_counter(int(sys.argv[2]))
    sim.io.rst = 1; sim.step(); sim.io.rst = 0
    sim.io.limit = 777
    print(json.dumps({"hit": sim.cache_hit, "key": sim.key, "cycles": sim.run(10_000, until_done=True)}))
""")


def test_concurrent_builds_of_one_key_do_not_collide(private_cache, tmp_path):
    """Two processes build the same key at the same moment: one builds, the other waits and
    reuses; both simulate correctly; nothing is left half-built."""
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT_BUILD, str(go), str(PRIVATE_COUNTER_WIDTH)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
             for _ in range(2)]
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("ready-*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()  # both start building together
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert sorted(r["hit"] for r in results) == [False, True]
    assert results[0]["key"] == results[1]["key"]
    assert [r["cycles"] for r in results] == [777, 777]
    entries = sorted(p.name for p in private_cache.iterdir())
    assert entries == sorted([results[0]["key"], f".{results[0]['key']}.lock"]), entries


def test_the_key_follows_every_input(tmp_path):
    (tmp_path / "a.hex").write_text("00\n")
    (tmp_path / "b.hex").write_text("01\n")
    src = {"t.v": "module t(input clk); endmodule\n"}
    base = vb.plan(src, "t", data_files={"MAP": tmp_path / "a.hex"})
    variants = [
        vb.plan(src, "t", data_files={"MAP": tmp_path / "b.hex"}),  # data file content
        vb.plan({"t.v": src["t.v"] + "// x\n"}, "t", data_files={"MAP": tmp_path / "a.hex"}),  # source
        vb.plan(src, "t", data_files={"MAP": tmp_path / "a.hex"}, verilator_args=["-O3"]),  # flags
        vb.plan(src, "t", data_files={"MAP": tmp_path / "a.hex"}, done="clk"),  # the native run
    ]
    assert len({base.key, *(v.key for v in variants)}) == 1 + len(variants)
    assert vb.plan(src, "t", data_files={"MAP": tmp_path / "a.hex"}).key == base.key


def test_native_run_counts_cycles_and_stops_on_done(cycle_counter):
    sim = cycle_counter
    sim.io.rst = 1
    sim.step()
    sim.io.rst = 0
    sim.io.limit = 100_000
    sim.step(3)
    assert sim.io.count == 3
    assert sim.run(1000) == 1000 and sim.io.count == 1003
    assert sim.run(10**9, until_done=True) == 100_000 - 1003
    assert sim.io.count == 100_000 and sim.io.done == 1


def test_native_run_refuses_what_the_build_cannot_do(requant8, cycle_counter):
    with pytest.raises(HardwireError, match="no clock"):
        requant8.sim.run(10)
    with pytest.raises(HardwireError, match="negative"):
        cycle_counter.run(-1)


def test_bad_build_inputs_raise_one_line_errors(tmp_path):
    with pytest.raises(HardwireError, match="no 't.v'"):
        vb.plan({"u.v": ""}, "t")
    with pytest.raises(HardwireError, match="not found"):
        vb.plan({"t.v": ""}, "t", data_files={"MAP": tmp_path / "missing.hex"})
    with pytest.raises(HardwireError, match="plain .v/.sv"):
        vb.plan({"t.v": "", "../x.v": ""}, "t")


def test_a_failed_build_says_where_to_look(private_cache):
    with pytest.raises(HardwireError, match="Verilator rejected 'broken'.*kept in"):
        vb.build({"broken.v": "module broken(input clk); wire x = ; endmodule\n"}, "broken")
    assert not [p for p in private_cache.iterdir() if not p.name.startswith(".")]


def test_stale_staging_is_removed_unless_a_build_holds_its_lock(private_cache):
    private_cache.mkdir(parents=True)
    (private_cache / ".deadbeef.building.x1").mkdir()
    (private_cache / ".cafe.building.x2").mkdir()
    with open(private_cache / ".cafe.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # a live build
        assert vb.remove_stale_staging() == 1
    assert sorted(p.name for p in private_cache.iterdir() if p.is_dir()) == [".cafe.building.x2"]
