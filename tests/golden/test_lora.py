"""LoRA adapters: the two file formats, llama.cpp's q/k permutation, the SRAM format and its datapath
(docs/numerics.md section 12), against the float reference and against a scalar transcription."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from hardwire.golden import spec
from hardwire.golden.errors import HardwireError
from hardwire.golden.float_ref import FloatModel
from hardwire.golden.gguf_model import load_model
from hardwire.golden.intref import IntModel, Trace
from hardwire.golden.lora import PEFT_CONFIG, PEFT_WEIGHTS, load_adapter, merged_float_model, permute_for_rope
from hardwire.golden.lora_int import GroupLora, IntLora, padded_rank, quantize, store_pair
from hardwire.golden.lora_synth import LoraSpec, draw, write_gguf, write_peft
from hardwire.golden.synth import SynthSpec, write_synthetic

# heads 4 / kv_heads 2: q and k permute with different head counts
MODEL = SynthSpec(layers=2, d_model=128, d_ffn=96, heads=4, kv_heads=2, vocab=300, context=64, seed=3)
RANKS = LoraSpec(rank=8, alpha=16.0, rank_pattern=(("down", 40), ("k", 1)), b_std=0.05, seed=7)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_model(write_synthetic(MODEL, tmp_path_factory.mktemp("lora") / "m.gguf"))


@pytest.fixture(scope="module")
def peft_dir(model, tmp_path_factory):
    return write_peft(RANKS, model.config, tmp_path_factory.mktemp("lora") / "peft")


@pytest.fixture(scope="module")
def adapter(model, peft_dir):
    return load_adapter(peft_dir, model.config)


# --- the two formats -------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["f32", "f16"])
def test_peft_and_gguf_give_the_same_adapter(model, tmp_path, dtype):
    lspec = LoraSpec(**{**RANKS.__dict__, "dtype": dtype})
    peft = load_adapter(write_peft(lspec, model.config, tmp_path / "p"), model.config)
    gguf = load_adapter(write_gguf(RANKS, model.config, tmp_path / "a.gguf"), model.config)
    assert peft.pairs.keys() == gguf.pairs.keys() and len(peft.pairs) == 2 * 7
    tol = 0 if dtype == "f32" else 2e-3  # the GGUF file is F32, the PEFT one rounded to f16
    for key, p in peft.pairs.items():
        g = gguf.pairs[key]
        assert p.rank == g.rank == {"w_down": 40, "wk": 1}.get(key[1], 8)
        assert p.scale == g.scale == 16.0 / p.rank
        np.testing.assert_allclose(p.a, g.a, rtol=0, atol=tol * np.abs(g.a).max())
        np.testing.assert_allclose(p.b, g.b, rtol=0, atol=tol * np.abs(g.b).max())


def test_bf16_safetensors(model, tmp_path, peft_dir):
    """BF16 weights (numpy has no bfloat16) read as the top halves of float32."""
    ref = load_adapter(peft_dir, model.config)
    out = tmp_path / "bf16"
    out.mkdir()
    (out / PEFT_CONFIG).write_text((peft_dir / PEFT_CONFIG).read_text())
    tensors = {f"base_model.model.model.layers.0.self_attn.v_proj.lora_{h}.weight": m
               for h, m in (("A", ref.pairs[(0, "wv")].a), ("B", ref.pairs[(0, "wv")].b))}
    _write_bf16_safetensors(out / PEFT_WEIGHTS, tensors)
    got = load_adapter(out, model.config).pairs[(0, "wv")]
    truncated = (ref.pairs[(0, "wv")].a.view(np.uint32) & 0xFFFF0000).view(np.float32)
    np.testing.assert_array_equal(got.a, truncated)


def _write_bf16_safetensors(path, tensors: dict) -> None:
    header, blobs, offset = {}, [], 0
    for name, m in tensors.items():
        raw = (np.ascontiguousarray(m, np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()
        header[name] = {"dtype": "BF16", "shape": list(m.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    head = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(head)) + head + b"".join(blobs))


def test_rslora_and_alpha_pattern(model, tmp_path):
    out = write_peft(LoraSpec(rank=16, alpha=8.0, targets=("q", "up"), seed=2), model.config, tmp_path / "p")
    cfg = json.loads((out / PEFT_CONFIG).read_text())
    cfg |= {"use_rslora": True, "alpha_pattern": {"layers.1.mlp.up_proj": 3.0}, "fan_in_fan_out": True}
    (out / PEFT_CONFIG).write_text(json.dumps(cfg))
    a = load_adapter(out, model.config, user_scale=0.5)
    assert a.pairs[(0, "w_up")].scale == 8.0 / 4.0 and a.pairs[(1, "w_up")].scale == 3.0 / 4.0
    assert a.pairs[(1, "wq")].scale == 2.0 and a.scale_of(1, "wq") == 1.0


# --- llama.cpp's permutation -------------------------------------------------------------------------

def test_permutation_is_llama_cpps_row_map(rng):
    """GGUF row h*hd + 2i + t holds Hugging Face row h*hd + t*hd/2 + i (convert_hf_to_gguf's permute)."""
    heads, hd = 3, 8
    b = rng.standard_normal((heads * hd, 5))
    got = permute_for_rope(b, heads)
    for h in range(heads):
        for i in range(hd // 2):
            for t in range(2):
                np.testing.assert_array_equal(got[h * hd + 2 * i + t], b[h * hd + t * hd // 2 + i])


def test_permuted_rows_rotate_like_the_hf_model(model, adapter, rng):
    """HF's rotate-half RoPE on B_hf u equals, row for row, the float reference's adjacent-pair RoPE on the
    adapter's B u: the permutation puts each rotation pair where GGUF's RoPE expects it."""
    cfg = model.config
    fm = FloatModel(model)
    hd, pos = cfg.head_dim, np.arange(5)
    for proj, heads in (("wq", cfg.n_heads), ("wk", cfg.n_kv_heads)):
        b_gguf = adapter.pairs[(0, proj)].b
        b_hf = _unpermute(b_gguf, heads)
        u = rng.standard_normal((len(pos), b_gguf.shape[1])).astype(np.float32)
        ours = fm._rope((u @ b_gguf.T).reshape(len(pos), heads, hd), pos)
        hf = _rope_rotate_half((u @ b_hf.T).reshape(len(pos), heads, hd), pos, fm.inv_freq)
        np.testing.assert_allclose(ours.reshape(len(pos), -1), permute_for_rope(hf.reshape(len(pos), -1).T,
                                                                                heads).T, atol=1e-5)


def _unpermute(rows, heads):
    per = rows.shape[0] // heads // 2
    return rows.reshape(heads, per, 2, -1).swapaxes(1, 2).reshape(rows.shape)


def _rope_rotate_half(x, pos, inv_freq):
    ang = pos[:, None] * inv_freq[None, :]
    c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    half = x.shape[-1] // 2
    a, b = x[..., :half], x[..., half:]
    return np.concatenate([a * c - b * s, a * s + b * c], axis=-1)


# --- float: unmerged against merged ------------------------------------------------------------------

def test_float_adapter_equals_merged_weights(model, adapter):
    ids = np.arange(3, 40)
    fa, fm = FloatModel(model, adapter), merged_float_model(model, adapter)
    base = FloatModel(model)
    la, lm = fa.forward(ids, fa.new_cache(64)), fm.forward(ids, fm.new_cache(64))
    lb = base.forward(ids, base.new_cache(64))
    assert np.abs(la - lb).max() > 0.1 * np.abs(lb).max()  # the adapter matters
    np.testing.assert_allclose(la, lm, rtol=0, atol=1e-4 * np.abs(lm).max())


# --- the SRAM format ---------------------------------------------------------------------------------

def test_quantize_bound_and_minimal_exponent(rng):
    v = rng.standard_normal((6, 64)) * np.exp2(rng.integers(-30, 10, size=(6, 1)))
    v[0, :32] = 0.0
    v[1, 5] = 127.5 * 2.0**-3  # exactly half-way at the boundary: must round under the next exponent
    v[2, :] = 2.0**-30  # below the exponent floor
    st = quantize(v)
    assert st.m.dtype == np.int8 and np.abs(st.m.astype(int)).max() <= spec.LORA_MAX
    peak = np.abs(spec.blocks(v)).max(-1)
    err = np.abs(spec.blocks(v - st.value())).max(-1)
    assert (err <= np.maximum(peak / 127.5, 2.0**-25)).all()
    assert (st.e >= spec.LORA_EXP_MIN).all() and (st.e <= spec.LORA_EXP_MAX).all()
    tighter = np.rint(peak * np.exp2(1 - st.e)) <= spec.LORA_MAX  # would e - 1 still fit?
    assert not (tighter & (st.e > spec.LORA_EXP_MIN)).any()
    assert st.e[0, 0] == spec.LORA_EXP_MIN and not st.m[0, 0].any()


def test_quantize_refuses_huge_values():
    with pytest.raises(HardwireError, match="beyond the LoRA SRAM format"):
        quantize(np.full((1, 32), 2.0**23), "x")


# --- the integer datapath --------------------------------------------------------------------------

def _b16_input(rng, n, t=3):
    m = rng.integers(-32767, 32768, size=(t, n))
    e = rng.integers(-22, -12, size=(t, n // 32))
    return m, e


def test_datapath_matches_scalar_transcription(model, adapter, rng):
    """Section 12.2 in Python integers, one element at a time, against the vectorised group (q|k|v here)."""
    lora = IntLora(adapter, model.config)
    xm, xe = _b16_input(rng, model.config.d_model, t=2)
    acc = rng.integers(-2**40, 2**40, size=(2, lora.groups[(0, "qkv")].b.rows))
    got = lora.apply(0, "qkv", acc, xm, xe)
    want = acc.copy()
    row = 0
    for proj in ("wq", "wk", "wv"):
        a_st, b_st = store_pair(adapter, 0, proj)
        for t in range(2):
            z = _scalar_lora(a_st, b_st, xm[t].tolist(), xe[t].tolist())
            for i, zi in enumerate(z):
                want[t, row + i] = _sat(int(acc[t, row + i]) + zi, 48)
        row += b_st.m.shape[0]
    np.testing.assert_array_equal(got, want)


def _scalar_lora(a_st, b_st, xm, xe):
    u = [_sat(sum(_sat(_fs(sum(int(a_st.m[k, b, j]) * xm[32 * b + j] for j in range(32)),
                           int(a_st.e[k, b]) + xe[b] + 24), 52) for b in range(len(xe))), 48)
         for k in range(a_st.m.shape[0])]
    um, ue = [], []
    for c in range(len(u) // 32):
        blk = u[32 * c:32 * c + 32]
        s = max(max(abs(v) for v in blk).bit_length() - 15, 0)
        h = (1 << s) >> 1
        um += [max(min((v + h) >> s, 32767), -32767) for v in blk]
        ue.append(-24 + s)
    return [_sat(sum(_sat(_fs(sum(int(b_st.m[i, c, j]) * um[32 * c + j] for j in range(32)),
                              int(b_st.e[i, c]) + ue[c] + 24), 52) for c in range(len(ue))), 48)
            for i in range(b_st.m.shape[0])]


def _fs(v, s):
    return v << s if s >= 0 else v >> -s


def _sat(v, bits):
    return max(min(v, (1 << (bits - 1)) - 1), -(1 << (bits - 1)))


@pytest.mark.parametrize("proj", ["wq", "wk", "w_up", "w_down"])
def test_integer_adapter_within_the_stated_bound(model, adapter, rng, proj):
    """Section 12.3: the chip's z against s B (A x) on the same B16 input, element by element."""
    pair = adapter.pairs[(0, proj)]
    a_st, b_st = store_pair(adapter, 0, proj)
    group = GroupLora(*IntLora(_only(adapter, proj), model.config).groups[(0, _group_of(proj))].__dict__.values())
    xm, xe = _b16_input(rng, pair.a.shape[1])
    z = group.add_to(np.zeros((xm.shape[0], group.b.rows), np.int64), xm, xe)
    z = z[:, _rows_of(model, proj)] * 2.0**-24
    x = xm * np.repeat(np.exp2(xe), 32, axis=-1)
    a = np.zeros_like(a_st.value())
    a[:pair.rank] = pair.a
    b_exact = adapter.scale_of(0, proj) * pair.b.astype(np.float64)
    u_star = x @ a.T
    exact = u_star[:, :pair.rank] @ b_exact.T
    b_hat = b_st.value()
    b_pad = np.zeros_like(b_hat)
    b_pad[:, :pair.rank] = b_exact
    ue = spec.rq(spec.blocks(group.a.matmul(xm, xe)), -24, 16)[1]  # the chip's exponents of step 2
    eps_u = (x.shape[1] // 32) * 2.0**-24 + np.repeat(np.exp2(ue), 32, axis=-1)
    bound = (np.abs(x) @ np.abs(a_st.value() - a).T + eps_u) @ np.abs(b_hat).T \
        + np.abs(u_star) @ np.abs(b_hat - b_pad).T + (b_hat.shape[1] // 32) * 2.0**-24
    assert np.abs(exact).max() > 0.01  # a real signal, not zeros
    assert (np.abs(z - exact) <= bound).all(), float((np.abs(z - exact) / bound).max())
    assert np.abs(z - exact).max() < 0.05 * np.abs(exact).max()


def _only(adapter, proj):
    from hardwire.golden.lora import Adapter

    return Adapter(adapter.path, adapter.source, {k: v for k, v in adapter.pairs.items() if k[1] == proj},
                   adapter.user_scale)


def _group_of(proj):
    return {"wq": "qkv", "wk": "qkv", "wv": "qkv", "w_gate": "gate_up", "w_up": "gate_up"}.get(proj, proj)


def _rows_of(model, proj):
    cfg = model.config
    d, kv, f = cfg.d_model, cfg.n_kv_heads * cfg.head_dim, cfg.d_ffn
    return {"wq": slice(0, d), "wk": slice(d, d + kv), "w_up": slice(f, 2 * f), "w_down": slice(0, d)}[proj]


def test_zero_adapter_is_the_base_chip_bit_for_bit(model, adapter):
    """With the user scale 0 every B' is zero: every tap equals the base chip's."""
    ids = np.arange(5, 17)
    base, zero = IntModel(model, 32), IntModel(model, 32, load_adapter(adapter.path, model.config, 0.0))
    tb, tz = Trace(), Trace()
    base.forward(ids, base.new_cache(), tb)
    zero.forward(ids, zero.new_cache(), tz)
    assert tb.taps.keys() == tz.taps.keys()
    for key, (m, e) in tb.taps.items():
        np.testing.assert_array_equal(tz.taps[key][0], m, err_msg=str(key))
        assert (e is None and tz.taps[key][1] is None) or np.array_equal(tz.taps[key][1], e), key


def test_adapter_changes_only_its_targets(model, tmp_path):
    """An adapter on v alone leaves the q and k taps of layer 0 untouched and changes v."""
    only_v = load_adapter(write_peft(LoraSpec(rank=4, targets=("v",), b_std=0.2), model.config, tmp_path / "v"),
                          model.config)
    ids = np.arange(5, 9)
    taps = []
    for a in (None, only_v):
        im, t = IntModel(model, 16, a), Trace()
        im.forward(ids, im.new_cache(), t)
        taps.append(t.taps)
    for op in ("q", "k"):
        np.testing.assert_array_equal(taps[0][(0, op, 2)][0], taps[1][(0, op, 2)][0])
    assert not np.array_equal(taps[0][(0, "v", 2)][0], taps[1][(0, "v", 2)][0])


def test_padded_rank():
    assert [padded_rank(r) for r in (1, 8, 32, 33, 64)] == [32, 32, 32, 64, 64]


# --- bad input: one line naming the file and the problem ---------------------------------------------

def _peft_copy(src, dst):
    dst.mkdir()
    for name in (PEFT_CONFIG, PEFT_WEIGHTS):
        (dst / name).write_bytes((src / name).read_bytes())
    return dst


def _edit_config(folder, **changes):
    cfg = json.loads((folder / PEFT_CONFIG).read_text())
    for k, v in changes.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    (folder / PEFT_CONFIG).write_text(json.dumps(cfg))


def test_refuses_pickle(model, peft_dir, tmp_path):
    d = _peft_copy(peft_dir, tmp_path / "p")
    (d / PEFT_WEIGHTS).rename(d / "adapter_model.bin")
    with pytest.raises(HardwireError, match=r"adapter_model\.bin: a pickle"):
        load_adapter(d, model.config)


def test_refuses_missing_config_and_alpha(model, peft_dir, tmp_path):
    d = _peft_copy(peft_dir, tmp_path / "p")
    _edit_config(d, lora_alpha=None)
    with pytest.raises(HardwireError, match="'lora_alpha' is missing"):
        load_adapter(d, model.config)
    (d / PEFT_CONFIG).unlink()
    with pytest.raises(HardwireError, match="no adapter_config.json"):
        load_adapter(d, model.config)


def test_refuses_unknown_target(model, peft_dir, tmp_path):
    d = _peft_copy(peft_dir, tmp_path / "p")
    _edit_config(d, target_modules=["q_proj", "lm_head"])
    with pytest.raises(HardwireError, match="unknown target module.*lm_head"):
        load_adapter(d, model.config)


def test_refuses_nan_weights_and_other_models(model, tmp_path):
    cfg = model.config
    other = load_model(write_synthetic(SynthSpec(d_model=64, heads=2, kv_heads=1), tmp_path / "o.gguf")).config
    d = write_peft(LoraSpec(rank=4, targets=("o",)), other, tmp_path / "other")
    with pytest.raises(HardwireError, match="another model"):
        load_adapter(d, cfg)
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(d / PEFT_WEIGHTS))
    key = next(k for k in tensors if "lora_B" in k)
    tensors[key][0, 0] = np.nan
    save_file(tensors, str(d / PEFT_WEIGHTS))
    with pytest.raises(HardwireError, match="NaN or inf"):
        load_adapter(d, other)


def test_refuses_gguf_model_and_missing_alpha(model, tmp_path):
    with pytest.raises(HardwireError, match="not a LoRA adapter"):
        load_adapter(model.path, model.config)
    from gguf import GGUFWriter

    path = tmp_path / "noalpha.gguf"
    w = GGUFWriter(str(path), "llama")
    w.add_type("adapter")
    w.add_string("adapter.type", "lora")
    w.add_tensor("blk.0.attn_v.weight.lora_a", np.zeros((4, model.config.d_model), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(HardwireError, match="adapter.lora.alpha is missing"):
        load_adapter(path, model.config)


def test_refuses_rank_that_disagrees_with_config(model, peft_dir, tmp_path):
    d = _peft_copy(peft_dir, tmp_path / "p")
    _edit_config(d, rank_pattern={})
    with pytest.raises(HardwireError, match="has rank 40, but adapter_config.json says 8"):
        load_adapter(d, model.config)


def test_b_octaves_doubles_b_row_by_row_and_a_negative_count_is_refused(model):
    plain, spread = (draw(LoraSpec(rank=4, seed=3, b_octaves=n), model.config) for n in (0, 3))
    a0, b0 = plain[(0, "wq")]
    a1, b1 = spread[(0, "wq")]
    assert np.array_equal(a0, a1)
    assert np.array_equal(b1[:6], b0[:6] * np.float32([1, 2, 4, 1, 2, 4])[:, None])  # powers of two: exact
    with pytest.raises(HardwireError, match="--b-octaves -1 must not be negative"):
        LoraSpec(b_octaves=-1).check()
