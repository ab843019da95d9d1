"""Shared fixtures for the spec-conformance tests of the integer reference.

The hypothesis profile is registered here and applied per test with
``@GOLDEN`` (``settings.get_profile("hardwire-golden")``) rather than loaded
globally, so it does not change other suites' hypothesis settings.
derandomize=True makes every run draw the same examples (a fixed seed); no
example database is written, so runs do not depend on earlier runs.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from hardwire.golden.gguf_model import load_model
from hardwire.golden.intref import IntModel
from hardwire.golden.synth import SynthSpec, write_synthetic

settings.register_profile(
    "hardwire-golden",
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=80,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# One tiny model for the op-level hand checks. rms_eps = 2**-20 is exact in float32, so
# EPS_Q = round(64 * 2**-20 * 2**64) = 2**50 exactly and the RMSNorm vectors can be hand-computed.
TINY = SynthSpec(layers=1, d_model=64, d_ffn=64, heads=2, kv_heads=1, vocab=258, context=64,
                 rope_theta=10000.0, rms_eps=2.0**-20, seed=1)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    path = write_synthetic(TINY, tmp_path_factory.mktemp("golden") / "m.gguf")
    return load_model(path)


@pytest.fixture(scope="session")
def tiny_int(tiny_model):
    return IntModel(tiny_model)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
