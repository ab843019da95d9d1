"""The corner models still reach the requantizers' clamps they were chosen for (tools/requant_corners.py), on the
golden reference: the nightly runs them on the chips, where those clamps are the RTL's saturation branches."""

from __future__ import annotations

import numpy as np
from chip_models import CORNER_MODELS, CORNER_NEW, CORNER_PROMPT, MODELS

from hardwire.golden.generate import greedy
from hardwire.golden.gguf_model import load_model
from hardwire.golden.intref import IntModel
from hardwire.golden.spec import ACC_BITS, BLOCK
from hardwire.golden.synth import write_synthetic
from hardwire.requant_corners import clamped_lanes, summary, union

# site -> lanes (of 32) clamping up, down. Down at the accumulator sites needs an ACC just above -2**47, which
# saturating at -2**47 does not give; the products after the norm, RoPE and the SiLU gate need exact values.
REACHED = {"_layer/u": (31, 0), "_silu_stacked/m16": (32, 0), "attention/m": (31, 0),
           "rmsnorm/x16 (layers)": (32, 32), "rmsnorm/x16 (final)": (32, 32)}


def test_the_corner_models_clamp_every_lane_of_the_saturating_requantizers(tmp_path):
    reached = summary(union([clamped_lanes(spec, CORNER_PROMPT, CORNER_NEW, tmp_path)
                             for spec in CORNER_MODELS.values()]))
    assert {site: reached.get(site) for site in REACHED} == REACHED, reached


def test_an_ordinary_model_clamps_nothing(tmp_path):
    """The recorder tells a clamp from none: a model of ordinary scale never rounds past 2**15 - 1."""
    reached = summary(clamped_lanes(MODELS["q4_1-gqa2-v301"], CORNER_PROMPT, CORNER_NEW, tmp_path))
    assert set(reached) >= {"_layer/u", "rmsnorm/x16 (layers)", "rmsnorm/x16 (final)", "attention/m"}
    assert all(lanes == (0, 0) for lanes in reached.values()), reached


def test_the_embedding_corner_saturates_every_lane_of_the_embedding(tmp_path):
    model = load_model(write_synthetic(CORNER_MODELS["sat-embed-q6_k"], tmp_path / "e.gguf"))
    golden = IntModel(model, capacity=len(CORNER_PROMPT) + CORNER_NEW)
    tokens = CORNER_PROMPT + greedy(golden, golden.new_cache(), CORNER_PROMPT, CORNER_NEW)
    saturated = np.abs(golden.embed_rows(np.array(tokens))) >= (1 << (ACC_BITS - 1)) - 1
    assert set(np.nonzero(saturated)[1] % BLOCK) == set(range(BLOCK))
