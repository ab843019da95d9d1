"""`hardwire quantize` and the new `hardwire synth` types."""

from __future__ import annotations

import json

import pytest
from cli_run import assert_one_line_error, hardwire
from gguf import GGMLQuantizationType as QT
from gguf import GGUFReader

from hardwire.golden.synth import SynthSpec, write_synthetic

SUPER = dict(layers=2, d_model=256, d_ffn=512, heads=4, kv_heads=2, vocab=300)


def tensor_types(path) -> dict[str, QT]:
    return {t.name: t.tensor_type for t in GGUFReader(path).tensors}


@pytest.fixture(scope="module")
def f32_model(tmp_path_factory):
    """A float model whose rows hold whole super-blocks, untied head."""
    spec = SynthSpec(**SUPER, embed_quant="f32", attn_quant="f32", ffn_quant="f32", output_quant="f32")
    return write_synthetic(spec, tmp_path_factory.mktemp("f32") / "f32.gguf")


def test_quantize_q4_k_m(f32_model, tmp_path):
    out = tmp_path / "q4km.gguf"
    result = hardwire("quantize", "--model", f32_model, "--recipe", "q4_k_m", "--out", out, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["recipe"] == "q4_k_m" and data["tensors"] == len(tensor_types(f32_model))
    types = tensor_types(out)
    assert types["output.weight"] == QT.Q6_K and types["token_embd.weight"] == QT.Q4_K
    # use_more_bits(i, 2) holds for the last layer only
    assert types["blk.0.attn_v.weight"] == QT.Q4_K and types["blk.1.attn_v.weight"] == QT.Q6_K
    assert types["blk.0.ffn_down.weight"] == QT.Q4_K and types["blk.1.ffn_down.weight"] == QT.Q6_K
    assert types["blk.0.attn_q.weight"] == QT.Q4_K and types["blk.0.attn_norm.weight"] == QT.F32
    assert GGUFReader(out).fields["general.file_type"].contents() == 15


def test_requantizing_keeps_unchanged_tensors_byte_for_byte(f32_model, tmp_path):
    first, second = tmp_path / "a.gguf", tmp_path / "b.gguf"
    assert hardwire("quantize", "--model", f32_model, "--recipe", "q6_k", "--out", first).returncode == 0
    assert hardwire("quantize", "--model", first, "--recipe", "q6_k", "--out", second).returncode == 0
    a, b = GGUFReader(first), GGUFReader(second)
    for ta, tb in zip(a.tensors, b.tensors, strict=True):
        assert ta.tensor_type == tb.tensor_type and ta.data.tobytes() == tb.data.tobytes(), ta.name


@pytest.mark.parametrize("args, pattern", [
    (("--recipe", "q4_k_s"), "unknown recipe 'q4_k_s'"),
    (("--recipe", "q4_k_m", "--model", "no-such-model"), "neither a known model"),
])
def test_quantize_bad_input(args, pattern, tmp_path):
    assert_one_line_error(hardwire("quantize", "--out", tmp_path / "o.gguf", *args), pattern)


def test_quantize_refuses_to_overwrite_its_input(f32_model):
    assert_one_line_error(hardwire("quantize", "--model", f32_model, "--recipe", "q8_0", "--out", f32_model),
                          "is the input model")


def test_synth_k_types(tmp_path):
    out = tmp_path / "k.gguf"
    result = hardwire("synth", "--out", out, "--layers", 2, "--d-model", 256, "--d-ffn", 512, "--heads", 4,
                      "--kv-heads", 2, "--attn-quant", "q6_k", "--ffn-quant", "q3_k", "--embed-quant", "q5_k",
                      "--output-quant", "q4_k")
    assert result.returncode == 0, result.stderr
    types = tensor_types(out)
    assert types["blk.0.attn_q.weight"] == QT.Q6_K and types["blk.1.ffn_down.weight"] == QT.Q3_K
    assert types["token_embd.weight"] == QT.Q5_K and types["output.weight"] == QT.Q4_K


def test_synth_k_type_needs_super_block_rows(tmp_path):
    assert_one_line_error(hardwire("synth", "--out", tmp_path / "k.gguf", "--ffn-quant", "q3_k"),
                          "--ffn-quant q3_k needs --d-model to be a multiple of 256, not 64")
