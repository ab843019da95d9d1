"""Shared fixtures: synthetic GGUF models (fast) and the real default model (fetched once)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hardwire.cosim.behaviour import Fingerprint
from hardwire.golden.gguf_model import load_model
from hardwire.golden.models import DEFAULT_MODEL, resolve_model
from hardwire.golden.synth import SynthSpec, write_synthetic

BEHAVIOUR_DIR = Path(__file__).parent / "data" / "behaviour"


def pytest_addoption(parser) -> None:
    parser.addoption("--hw-record-behaviour", action="store_true",
                     help="write the chip runs' fingerprints (tests/data/behaviour) instead of comparing with them")


class BehaviourCheck:
    """start(die, case) -> a Fingerprint to observe a run with; check(fp) asserts that the run is the recorded
    one (tokens, cycles, every tap beat), or records it under --hw-record-behaviour."""

    def __init__(self, record: bool):
        self.record = record

    def start(self, die: str, case: str) -> Fingerprint:
        return Fingerprint(case, die)

    def check(self, fp: Fingerprint) -> None:
        path = BEHAVIOUR_DIR / fp.die / f"{fp.case}.json"
        if self.record:
            fp.save(path)
            return
        assert path.is_file(), f"no recorded fingerprint {path.name}: record it with --hw-record-behaviour"
        diffs = fp.differences(Fingerprint.load(path))
        assert not diffs, f"the chip's behaviour changed from {path.name}: " + "; ".join(diffs[:4])


@pytest.fixture(scope="session")
def synth_model_path(tmp_path_factory):
    """A small synthetic model; per xdist worker, in that worker's own temp directory."""
    return write_synthetic(SynthSpec(layers=2, d_model=64, d_ffn=128, heads=2, kv_heads=1, vocab=301),
                           tmp_path_factory.mktemp("synth") / "tiny.gguf")


@pytest.fixture(scope="session")
def synth_model(synth_model_path):
    return load_model(synth_model_path)


@pytest.fixture(scope="session")
def smollm2_path():
    """The real default model; fetched into the user cache on first use (under a lock)."""
    return resolve_model(DEFAULT_MODEL)


@pytest.fixture(scope="session")
def smollm2(smollm2_path):
    return load_model(smollm2_path)


@pytest.fixture
def behaviour(request) -> BehaviourCheck:
    return BehaviourCheck(request.config.getoption("hw_record_behaviour"))
