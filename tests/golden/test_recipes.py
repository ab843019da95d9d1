"""llama.cpp's per-tensor type rules, against its own choices recorded for SmolLM2-135M."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as QT
from gguf import GGUFReader

from hardwire.golden.errors import HardwireError
from hardwire.golden.recipes import RECIPES, TensorInfo, get_recipe, plan_types, requantize, use_more_bits

RECORDED = json.loads((Path(__file__).parent.parent / "data" / "llama_cpp_recipes.json").read_text("utf-8"))
INPUT = [TensorInfo(name, QT[t["type"]], tuple(t["shape"])) for name, t in RECORDED["input_tensors"].items()]
N_LAYERS = 1 + max(int(t.name.split(".")[1]) for t in INPUT if t.name.startswith("blk."))


def recorded_types(recipe: str) -> dict[str, str]:
    return {name: t[0] for name, t in RECORDED["recipes"][recipe]["tensors"].items()}


def test_every_recipe_is_recorded():
    assert set(RECORDED["recipes"]) == set(RECIPES)
    assert {r: RECORDED["recipes"][r]["ftype"] for r in RECIPES} == {r: RECIPES[r].ftype for r in RECIPES}


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_type_table_equals_llama_cpp(recipe):
    planned = {name: t.name for name, t in plan_types(get_recipe(recipe), INPUT, N_LAYERS).items()}
    assert planned == recorded_types(recipe)


def test_use_more_bits_for_30_layers():
    assert [i for i in range(30) if use_more_bits(i, 30)] == [0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29]


def synthetic_tensors(d_model: int, d_ffn: int, tied: bool) -> list[TensorInfo]:
    tensors = [TensorInfo("token_embd.weight", QT.F32, (d_model, 300))]
    for i in range(2):
        tensors += [TensorInfo(f"blk.{i}.attn_norm.weight", QT.F32, (d_model,))]
        tensors += [TensorInfo(f"blk.{i}.{n}.weight", QT.F32, (d_model, d_model))
                    for n in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up")]
        tensors += [TensorInfo(f"blk.{i}.ffn_down.weight", QT.F32, (d_ffn, d_model))]
    if not tied:
        tensors.append(TensorInfo("output.weight", QT.F32, (d_model, 300)))
    return tensors


def test_head_gets_q6_k_when_its_rows_hold_super_blocks():
    tied = plan_types(get_recipe("q4_0"), synthetic_tensors(256, 512, tied=True), 2)
    assert tied["token_embd.weight"] == QT.Q6_K and tied["blk.0.attn_norm.weight"] == QT.F32
    untied = plan_types(get_recipe("q4_k_m"), synthetic_tensors(256, 512, tied=False), 2)
    assert untied["output.weight"] == QT.Q6_K and untied["token_embd.weight"] == QT.Q4_K
    assert plan_types(get_recipe("q8_0"), synthetic_tensors(256, 512, tied=True), 2)["token_embd.weight"] == QT.Q8_0


def test_fallbacks():
    types = plan_types(get_recipe("q3_k_m"), synthetic_tensors(288, 48, tied=True), 2)
    assert types["blk.0.attn_q.weight"] == QT.Q4_0  # Q3_K -> Q4_0
    assert types["blk.0.attn_v.weight"] == QT.Q5_1  # Q5_K (first two layers) -> Q5_1
    assert types["blk.0.attn_output.weight"] == QT.Q5_0  # Q4_K -> Q5_0
    assert types["blk.0.ffn_down.weight"] == QT.F16  # rows of 48 hold no block of 32
    assert types["token_embd.weight"] == QT.Q8_0


def test_unknown_recipe():
    with pytest.raises(HardwireError, match="unknown recipe 'q4_k_s'"):
        get_recipe("q4_k_s")


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["q4_k_m"] + [pytest.param(r, marks=pytest.mark.nightly)
                                                 for r in ("q3_k_m", "q3_k_s", "q5_k_m", "q6_k", "q5_1")])
def test_requantized_smollm2_equals_llama_cpp(recipe, smollm2_path, tmp_path):
    """Every tensor's type and bytes equal what llama.cpp's llama_model_quantize wrote."""
    types = requantize(smollm2_path, recipe, tmp_path / "out.gguf")
    reader = GGUFReader(tmp_path / "out.gguf")
    want = RECORDED["recipes"][recipe]["tensors"]
    got = {t.name: [t.tensor_type.name, hashlib.sha256(np.ascontiguousarray(t.data).tobytes()).hexdigest()[:16]]
           for t in reader.tensors}
    assert {n: t.name for n, t in types.items()} == {n: t[0] for n, t in want.items()}
    assert got == want
    assert list(got) == list(want)  # written in llama.cpp's order
    assert reader.fields["general.file_type"].contents() == RECIPES[recipe].ftype
