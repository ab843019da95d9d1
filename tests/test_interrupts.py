"""Killed and interrupted commands: a cold build killed with SIGKILL leaves no build process running and,
after a rerun, no staging directory; Ctrl-C stops `verify` and its workers within 2 s with exit 130."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hardwire.golden.synth import SynthSpec, write_synthetic

COLD_COUNTER_BUILD = """
import sys
from hardwire.cosim.cells import build_cycle_counter
build_cycle_counter(int(sys.argv[1]))
"""


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line holds `text` (a private cache path only a build uses)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                if text.encode() in (proc / "cmdline").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


def wait_for(predicate, timeout: float, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return None


def kill_cold_build_and_rerun(argv: list[str], cache: Path, tmp_path: Path) -> None:
    env = {**os.environ, "HARDWIRE_CACHE": str(cache)}
    builder = subprocess.Popen(argv, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Verilator or make runs once a tool's command line names the staging directory in the private cache
    assert wait_for(lambda: builder.poll() is None and processes_mentioning(f"{cache}/builds/."), 1800, 0.2), \
        "the build never started a tool"
    time.sleep(1.0)
    builder.kill()
    builder.wait()
    left = wait_for(lambda: not processes_mentioning(str(cache)), 10) is not None
    assert left, f"build processes outlived the killed build: {processes_mentioning(str(cache))}"
    assert list((cache / "builds").glob(".*.building.*")), "the kill came too late to leave a staging directory"
    rerun = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=3600)
    assert rerun.returncode == 0, rerun.stderr
    assert not [p for p in cache.rglob(".*.building.*")], "a staging directory outlived the rerun"


def test_a_killed_cold_build_leaves_no_process_and_no_staging(tmp_path):
    kill_cold_build_and_rerun([sys.executable, "-c", COLD_COUNTER_BUILD, "9"], tmp_path / "cache", tmp_path)


@pytest.mark.nightly
def test_a_killed_cold_chip_build_leaves_no_process_and_no_staging(tmp_path, synth_model_path):
    argv = [sys.executable, "-m", "hardwire.cli", "build", "--model", str(synth_model_path), "--die", "hw-tiny",
            "--out", str(tmp_path / "out")]
    kill_cold_build_and_rerun(argv, tmp_path / "cache", tmp_path)
    assert (tmp_path / "out" / "manifest.json").is_file()


def children_of(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids += [int(k) for k in (task / "children").read_text().split()]
    return kids


def test_ctrl_c_stops_verify_and_its_workers(tmp_path):
    model = write_synthetic(SynthSpec(layers=4, vocab=300), tmp_path / "m.gguf")
    run_dir = tmp_path / "run"
    verify = subprocess.Popen([sys.executable, "-m", "hardwire.cli", "verify", "--model", str(model), "--die",
                               "hw-tiny", "--jobs", "2", "--run-dir", str(run_dir), "--prompt", "the cat sat " * 4],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: verify.poll() is not None or list(run_dir.glob("workers/pid*")), 600)
    assert verify.poll() is None, verify.communicate()[1]
    workers = children_of(verify.pid)
    assert workers
    t0 = time.monotonic()
    verify.send_signal(signal.SIGINT)
    try:
        _, stderr = verify.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        verify.kill()
        pytest.fail("verify did not stop within 10 s of Ctrl-C")
    stopped_s = time.monotonic() - t0
    assert verify.returncode == 130, stderr
    assert stopped_s < 2.0, f"verify took {stopped_s:.1f} s to stop"
    assert stderr.strip().splitlines() == ["hardwire: error: interrupted"], stderr
    assert wait_for(lambda: not [w for w in workers if alive(w)], 2.0) is not None, "a worker outlived verify"


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
