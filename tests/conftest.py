"""Shared fixtures: synthetic GGUF models (fast) and the real default model (fetched once)."""

from __future__ import annotations

import pytest

from hardwire.golden.gguf_model import load_model
from hardwire.golden.models import DEFAULT_MODEL, resolve_model
from hardwire.golden.synth import SynthSpec, write_synthetic


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
