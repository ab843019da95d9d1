"""The GGUF loader: every supported quant type in block form, and every kind of bad file refused."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as QT
from gguf import GGUFWriter

from hardwire.golden import synth
from hardwire.golden.errors import HardwireError
from hardwire.golden.gguf_model import load_model
from hardwire.golden.synth import SynthSpec, write_synthetic

LINEARS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


@pytest.mark.parametrize("quant", ["q8_0", "q4_0", "q4_1"])
def test_block_decoding_equals_gguf_dequantize(tmp_path, quant):
    path = write_synthetic(SynthSpec(embed_quant=quant, attn_quant=quant, ffn_quant=quant, output_quant=quant,
                                     seed=3), tmp_path / f"{quant}.gguf")
    model = load_model(path)
    tensors = {t.name: t for t in gguf.GGUFReader(path).tensors}
    for i, layer in enumerate(model.layers):
        for gguf_name, ours in zip(LINEARS, (layer.wq, layer.wk, layer.wv, layer.wo,
                                             layer.w_gate, layer.w_up, layer.w_down), strict=True):
            t = tensors[f"blk.{i}.{gguf_name}.weight"]
            assert t.tensor_type == synth.QUANTS[quant]
            np.testing.assert_array_equal(ours.dequantize(), gguf.dequantize(t.data, t.tensor_type))
    for name, ours in (("token_embd.weight", model.embed), ("output.weight", model.lm_head)):
        t = tensors[name]
        np.testing.assert_array_equal(ours.dequantize(), gguf.dequantize(t.data, t.tensor_type))


def test_config_from_metadata(tmp_path):
    spec = SynthSpec(layers=3, d_model=96, d_ffn=160, heads=3, kv_heads=1, vocab=333, context=48, seed=1)
    cfg = load_model(write_synthetic(spec, tmp_path / "m.gguf")).config
    assert (cfg.n_layers, cfg.d_model, cfg.d_ffn, cfg.n_heads, cfg.n_kv_heads, cfg.vocab, cfg.context) == \
        (3, 96, 160, 3, 1, 333, 48)
    assert cfg.head_dim == 32 and cfg.group == 3


def test_tied_head_is_the_embedding(synth_model):
    assert synth_model.lm_head is synth_model.embed


def test_codes_stay_quantized(synth_model):
    wq = synth_model.layers[0].wq
    assert wq.q.dtype == np.int8 and wq.d_bits.dtype == np.uint16
    assert wq.q.min() >= 0 and wq.q.max() <= 15  # Q4_1 nibbles


def test_real_model_shape(smollm2):
    cfg = smollm2.config
    assert (cfg.n_layers, cfg.d_model, cfg.d_ffn, cfg.n_heads, cfg.n_kv_heads, cfg.vocab) == \
        (30, 576, 1536, 9, 3, 49152)
    assert smollm2.embed.qtype == QT.Q8_0 and smollm2.layers[0].wq.qtype == QT.Q4_1


# --- bad input -------------------------------------------------------------------------------------

def test_not_gguf(tmp_path):
    p = tmp_path / "x.gguf"
    p.write_bytes(b"this is text, not a model")
    with pytest.raises(HardwireError, match="not a GGUF file"):
        load_model(p)


@pytest.mark.parametrize("fraction", [0.05, 0.5, 0.99])
def test_truncated(tmp_path, synth_model_path, fraction):
    data = synth_model_path.read_bytes()
    p = tmp_path / "cut.gguf"
    p.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(HardwireError, match="truncated or corrupt"):
        load_model(p)


def _metadata_only(path, arch="llama", d_model=64):
    w = GGUFWriter(str(path), arch)
    w.add_block_count(1)
    w.add_context_length(16)
    w.add_embedding_length(d_model)
    w.add_feed_forward_length(128)
    w.add_head_count(2)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(300)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_other_architecture(tmp_path):
    with pytest.raises(HardwireError, match="architecture 'gpt2' is not supported"):
        load_model(_metadata_only(tmp_path / "g.gguf", arch="gpt2"))


def test_dims_not_divisible_by_block(tmp_path):
    with pytest.raises(HardwireError, match="d_model=48 is not divisible by the block size 32"):
        load_model(_metadata_only(tmp_path / "d.gguf", d_model=48))


def test_unsupported_quant_is_named(tmp_path):
    path = write_synthetic(SynthSpec(ffn_quant="f32"), tmp_path / "f32.gguf")
    supported = r"\(supported: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K\)"
    with pytest.raises(HardwireError, match="'blk.0.ffn_gate.weight' has unsupported quant type F32 " + supported):
        load_model(path)


def test_a_k_quant_nan_super_block_scale_is_refused(tmp_path):
    spec = SynthSpec(d_model=256, d_ffn=512, heads=4, kv_heads=2, ffn_quant="q6_k")
    path = write_synthetic(spec, tmp_path / "k.gguf")
    reader = gguf.GGUFReader(path, "r+")
    t = next(t for t in reader.tensors if t.name == "blk.0.ffn_up.weight")
    t.data.reshape(-1)[208:210] = np.array([0x7E00], np.uint16).view(np.uint8)  # the first super-block's d
    with pytest.raises(HardwireError, match="'blk.0.ffn_up.weight' has a NaN or infinite block scale"):
        load_model(path)


@pytest.mark.parametrize("scale", [-1.0, 2e4, float("nan")])
def test_a_weight_scale_that_would_overflow_fp16_is_refused(tmp_path, scale):
    with pytest.raises(HardwireError, match="--weight-scale .* is outside \\[0, 10000\\]"):
        write_synthetic(SynthSpec(weight_scale=scale), tmp_path / "w.gguf")
    assert not list(tmp_path.iterdir())  # nothing written


def test_weight_scale_scales_every_matrix(tmp_path):
    quiet, loud = (load_model(write_synthetic(SynthSpec(attn_quant="q8_0", weight_scale=s), tmp_path / f"{s}.gguf"))
                   for s in (1.0, 100.0))
    q, l_ = (m.layers[0].wq.dequantize() for m in (quiet, loud))
    assert 90 < abs(l_).max() / abs(q).max() < 110


@pytest.mark.parametrize("scale", [-1.0, 2e6, float("nan"), float("inf")])
def test_a_gain_scale_outside_its_range_is_refused(tmp_path, scale):
    with pytest.raises(HardwireError, match="--gain-scale .* is outside \\[0, 1e\\+06\\]"):
        write_synthetic(SynthSpec(gain_scale=scale), tmp_path / "g.gguf")
    assert not list(tmp_path.iterdir())


def test_gain_scale_scales_the_norm_gains_and_nothing_else(tmp_path):
    plain, loud = (load_model(write_synthetic(SynthSpec(attn_quant="q8_0", gain_scale=s), tmp_path / f"{s}.gguf"))
                   for s in (1.0, 1e4))
    for a, b in ((loud.layers[0].attn_norm, plain.layers[0].attn_norm), (loud.out_norm, plain.out_norm)):
        assert np.allclose(a, 1e4 * b.astype(np.float64), rtol=2**-22, atol=0)  # each rounded to float32 once
    assert np.array_equal(loud.layers[0].wq.dequantize(), plain.layers[0].wq.dequantize())


@pytest.mark.parametrize("scale", [-0.5, 1.5, float("nan")])
def test_an_ffn_scale_outside_zero_to_one_is_refused(tmp_path, scale):
    with pytest.raises(HardwireError, match="--ffn-scale .* is outside \\[0, 1\\]"):
        write_synthetic(SynthSpec(ffn_scale=scale), tmp_path / "f.gguf")
    assert not list(tmp_path.iterdir())


def test_ffn_scale_quiets_the_ffn_alone(tmp_path):
    plain, quiet = (load_model(write_synthetic(SynthSpec(ffn_quant="q8_0", attn_quant="q8_0", ffn_scale=s),
                                               tmp_path / f"{s}.gguf")) for s in (1.0, 1e-3))
    ratio = abs(quiet.layers[0].w_down.dequantize()).max() / abs(plain.layers[0].w_down.dequantize()).max()
    assert 0.9e-3 < ratio < 1.1e-3
    assert np.array_equal(quiet.layers[0].wq.dequantize(), plain.layers[0].wq.dequantize())


@pytest.mark.parametrize("quant, scale", [("q8_0", 2.0), ("q4_k", 2.0), ("q6_k", 1001.0)])
def test_an_embedding_louder_than_its_format_holds_is_refused_before_anything_is_written(tmp_path, quant, scale):
    with pytest.raises(HardwireError, match=f"--embed-scale {scale:g} times --weight-scale 10000 is above .* {quant} "):
        write_synthetic(SynthSpec(d_model=256, embed_quant=quant, weight_scale=1e4, embed_scale=scale),
                        tmp_path / "e.gguf")
    assert not list(tmp_path.iterdir())


def test_embed_scale_scales_the_embedding_alone(tmp_path):
    plain, loud = (load_model(write_synthetic(SynthSpec(d_model=256, embed_quant="q6_k", output_quant="q8_0",
                                                        embed_scale=s),
                                              tmp_path / f"{s}.gguf")) for s in (1.0, 1e3))
    ratio = abs(loud.embed.dequantize()).max() / abs(plain.embed.dequantize()).max()
    assert 0.99e3 < ratio < 1.01e3
    assert np.array_equal(loud.lm_head.dequantize(), plain.lm_head.dequantize())
