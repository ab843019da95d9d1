"""llama.cpp's recorded perplexities (tests/data/llama_cpp_perplexity.json) and the fidelity checks made with them."""

from __future__ import annotations

import hashlib
import json
import math
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).resolve().parent.parent / "data"
RECORDED = json.loads((DATA / "llama_cpp_perplexity.json").read_text("utf-8"))
REFERENCE = json.loads((DATA / "llama_cpp_reference.json").read_text("utf-8"))
SHIPPED_SHA256 = json.loads((DATA / "llama_cpp_recipes.json").read_text("utf-8"))["model_sha256"]
FIDELITY_RECIPES = ("q3_k_m", "q4_k_m", "q6_k")


def is_perplexity(x) -> bool:
    return isinstance(x, float) and math.isfinite(x) and 1.0 < x < 100.0


def is_sha256(x) -> bool:
    return isinstance(x, str) and len(x) == 64 and all(c in "0123456789abcdef" for c in x)


def test_recorded_tokens_are_the_first_of_the_evaluation_text():
    ids = REFERENCE["eval_text_ids"][:RECORDED["tokens"]]
    assert RECORDED["tokens"] == 1000 == len(ids)
    assert RECORDED["ids_sha256"] == hashlib.sha256(np.asarray(ids, np.int64).tobytes()).hexdigest()


def test_every_figure_is_a_perplexity_of_a_named_file():
    entries = [RECORDED["base"], RECORDED["lora"], *RECORDED["recipes"].values()]
    assert set(RECORDED["recipes"]) == set(FIDELITY_RECIPES)
    for entry in entries:
        assert is_perplexity(entry["native"]) and is_perplexity(entry["f32"]), entry
        assert is_sha256(entry["sha256"]), entry
    assert RECORDED["base"]["sha256"] == RECORDED["lora"]["sha256"] == SHIPPED_SHA256
    assert len({e["sha256"] for e in RECORDED["recipes"].values()} | {SHIPPED_SHA256}) == 4
    assert is_sha256(RECORDED["lora"]["adapter_sha256"])


def test_recorded_base_figure_agrees_with_the_reference_recording():
    """The same file over 1,000 of the reference's 1,024 tokens: close to its recorded 18.752."""
    assert abs(RECORDED["base"]["native"] / REFERENCE["ppl_first_1024"] - 1.0) < 0.01


def test_recorded_adapter_is_lora_fidelitys_adapter(tmp_path):
    """The GGUF adapter llama.cpp ran is the one tools/lora_fidelity.py draws (rank 16, alpha 32, b_std 0.02,
    seed 0, all seven projections), written by the GGUF writer: byte for byte."""
    from hardwire.golden.gguf_model import ModelConfig
    from hardwire.golden.lora_synth import LoraSpec, write_gguf

    smollm2 = ModelConfig(n_layers=30, d_model=576, d_ffn=1536, n_heads=9, n_kv_heads=3, vocab=49152,
                          context=8192, rope_theta=100000.0, rms_eps=1e-5)
    path = write_gguf(LoraSpec(rank=16, alpha=32.0, b_std=0.02, seed=0), smollm2, tmp_path / "a.gguf")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == RECORDED["lora"]["adapter_sha256"]


@pytest.mark.slow
@pytest.mark.nightly
@pytest.mark.parametrize("recipe", FIDELITY_RECIPES)
def test_requantized_smollm2_fidelity(recipe, smollm2_path, tmp_path):
    """Issue 13's three inequalities, recomputed over 1,000 tokens (the float and integer references)."""
    from hardwire.kquant_fidelity import BOUNDS, measure_recipe

    text = files("hardwire.golden").joinpath("data/eval_en.txt").read_text(encoding="utf-8")
    row = measure_recipe(smollm2_path, recipe, text, RECORDED["tokens"], RECORDED, tmp_path)
    assert row["sha256"] == RECORDED["recipes"][recipe]["sha256"]
    assert row["ppl_int"] <= BOUNDS["int_over_float"] * row["ppl_float"]
    assert row["top1_agreement"] >= BOUNDS["top1"]
    assert row["float_vs_llama_cpp_f32_rel"] <= BOUNDS["llama_cpp_f32_rel"]
    assert row["passed"]


def test_lora_comparison_uses_the_recorded_figures_of_the_same_bytes():
    """lora_fidelity's llama.cpp check: the adapter's F32 distance against the base model's native margin,
    and no comparison at all when the tokens, the model file, the adapter or the user scale differ."""
    from hardwire.lora_fidelity import against_llama_cpp

    ids = REFERENCE["eval_text_ids"][:RECORDED["tokens"]]
    digests = {"adapter": RECORDED["lora"]["adapter_sha256"], "model": RECORDED["base"]["sha256"]}
    base, lora = RECORDED["base"], RECORDED["lora"]
    near = against_llama_cpp(RECORDED, ids, digests, 1.0, base["native"] * 1.001, lora["f32"] * 1.0005)
    assert near["within_base_margin"] and near["base_margin_native"] == pytest.approx(0.001)
    assert near["adapted_margin_f32"] == pytest.approx(0.0005)
    far = against_llama_cpp(RECORDED, ids, digests, 1.0, base["native"] * 1.001, lora["f32"] * 0.998)
    assert not far["within_base_margin"]
    assert against_llama_cpp(RECORDED, ids[:-1], digests, 1.0, 1.0, 1.0) is None
    assert against_llama_cpp(RECORDED, ids, {**digests, "adapter": "0" * 64}, 1.0, 1.0, 1.0) is None
    assert against_llama_cpp(RECORDED, ids, {**digests, "model": "0" * 64}, 1.0, 1.0, 1.0) is None
    assert against_llama_cpp(RECORDED, ids, digests, 0.5, 1.0, 1.0) is None
