"""Section 3.1 of docs/numerics.md: the block dot product of every format, against a scalar transcription."""

from __future__ import annotations

import re

import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES
from gguf import GGMLQuantizationType as QT
from kquant_blocks import FP16_FIELDS, random_blocks

from hardwire.golden import kquants
from hardwire.golden.block_matmul import IntTensor
from hardwire.golden.gguf_model import QuantTensor
from hardwire.golden.kmatmul import FormatMatmul
from hardwire.golden.spec import ACC_BITS, TERM_BITS

TYPES = list(kquants.DECODABLE)


def floor_shift(v: int, s: int) -> int:
    return v << s if s >= 0 else v >> -s


def sat(v: int, bits: int) -> int:
    return max(-(1 << (bits - 1)), min((1 << (bits - 1)) - 1, v))


def scalar_row(f: kquants.BlockFields, r: int, a: np.ndarray, e: np.ndarray) -> int:
    """y_r of section 3.1, one Python integer at a time, straight from the decoded fields."""
    fmt = f.format
    md, ed = (x[r] for x in f.d_parts())
    mo = eo = None
    if fmt.has_min:
        m, eo = (x[r] for x in f.dmin_parts())
        mo = -m
    elif fmt.has_offset:
        mo, eo = (x[r] for x in f.dmin_parts())
    acc = 0
    for b in range(len(a) // 32):
        sb = b * 32 // fmt.block  # the d-block (32-block or super-block) of activation block b
        p_b = o_b = 0
        for j in range(b * 32, b * 32 + 32):
            k = j // fmt.sub
            p_b += int(f.sc[r, k]) * int(f.q[r, j]) * int(a[j])
            if fmt.has_min:
                o_b += int(f.mn[r, k]) * int(a[j])
            elif fmt.has_offset:
                o_b += int(a[j])
        term = sat(floor_shift(int(md[sb]) * p_b, int(ed[sb]) + int(e[b]) + 24), TERM_BITS)
        if mo is not None:
            term += sat(floor_shift(int(mo[sb]) * o_b, int(eo[sb]) + int(e[b]) + 24), TERM_BITS)
        acc += term
    return sat(acc, ACC_BITS)


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("e_range", [(-30, -10), (-10, 12)], ids=["ordinary", "saturating"])
def test_matmul_equals_scalar_transcription(qtype, e_range):
    rng = np.random.default_rng([int(qtype), e_range[0] + 64])
    rows, cols, T = 5, 512, 3
    fields = kquants.decode(random_blocks(rng, qtype, rows, cols), qtype, rows, cols)
    am = rng.integers(-32767, 32768, (T, cols))
    am[0, :32] = 32767  # full-scale blocks
    ae = rng.integers(*e_range, (T, cols // 32))
    got = FormatMatmul(fields).matmul(am, ae)
    want = [[scalar_row(fields, r, am[t], ae[t]) for r in range(rows)] for t in range(T)]
    assert got.tolist() == want


def test_stacked_formats_equal_each_alone():
    """Q|K|V of different formats (one with mins, one without, one 32-block) in one pass."""
    rng = np.random.default_rng(5)
    parts = [kquants.decode(random_blocks(rng, t, 4, 256), t, 4, 256) for t in (QT.Q4_K, QT.Q6_K, QT.Q8_0)]
    am, ae = rng.integers(-32767, 32768, (2, 256)), rng.integers(-28, -12, (2, 8))
    stacked = FormatMatmul(*parts)
    ys = stacked.split(stacked.matmul(am, ae))
    for part, y in zip(parts, ys, strict=True):
        assert np.array_equal(y, FormatMatmul(part).matmul(am, ae))


def ordinary_fields(rng, qtype, rows, cols) -> kquants.BlockFields:
    """Random blocks whose fp16 fields are of weight-like size (|d| in 2**-14..2**-4), so the float path serves."""
    raw = random_blocks(rng, qtype, rows, cols).reshape(rows, cols // GGML_QUANT_SIZES[qtype][0], -1)
    for at in FP16_FIELDS[qtype]:
        bits = rng.integers(0x0400, 0x2C00, raw.shape[:2]).astype("<u2") | (rng.integers(0, 2, raw.shape[:2]) << 15)
        raw[..., at:at + 2] = bits.astype("<u2")[..., None].view(np.uint8)
    return kquants.decode(raw.reshape(rows, -1), qtype, rows, cols)


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("T", [1, 16])
def test_fast_path_equals_int64_path(qtype, T):
    """The float32 BLAS path gives the int64 transcription's words, full-scale activations included."""
    rng = np.random.default_rng([int(qtype), T])
    rows, cols = 7, 768
    fm = FormatMatmul(ordinary_fields(rng, qtype, rows, cols))
    am = rng.integers(-32767, 32768, (T, cols))
    am[0, :32], am[-1, 32:64] = 32767, -32767
    ae = rng.integers(-28, -8, (T, cols // 32))
    assert int(ae.max()) <= fm.e_fast  # the fast path serves this call
    assert np.array_equal(fm.matmul(am, ae), fm.matmul_exact(am, ae))


def test_fast_path_splits_activations_by_code_size():
    """One float32 pass while sums fit 2**24 (Q5_0: |q| <= 16), two for |sc q| < 2056 (Q8_0, the K types with
    6-bit scales), three for Q6_K's int8 scales (|sc q| up to 4096)."""
    rng = np.random.default_rng(9)
    types = (QT.Q5_0, QT.Q8_0, QT.Q5_K, QT.Q6_K)
    shifts = {t: FormatMatmul(ordinary_fields(rng, t, 16, 256)).act_shifts for t in types}
    assert shifts == {QT.Q5_0: (0,), QT.Q8_0: (8, 0), QT.Q5_K: (8, 0), QT.Q6_K: (10, 5, 0)}


def test_stacked_fast_path_equals_int64_path():
    """Formats with and without offsets and of every code size stacked in one pass."""
    rng = np.random.default_rng(21)
    parts = [ordinary_fields(rng, t, 5, 512) for t in (QT.Q4_K, QT.Q6_K, QT.Q5_0, QT.Q5_1, QT.Q2_K)]
    stacked = FormatMatmul(*parts)
    am, ae = rng.integers(-32767, 32768, (3, 512)), rng.integers(-26, -10, (3, 16))
    assert int(ae.max()) <= stacked.e_fast
    got = stacked.matmul(am, ae)
    assert np.array_equal(got, stacked.matmul_exact(am, ae))
    for part, y in zip(parts, stacked.split(got), strict=True):
        assert np.array_equal(y, FormatMatmul(part).matmul_exact(am, ae))


@pytest.mark.parametrize("qtype", [QT.Q8_0, QT.Q4_0, QT.Q4_1], ids=lambda t: t.name)
def test_chip_formats_give_section_3_words(qtype):
    """For the formats the chip prints, the general form is the existing IntTensor word for word."""
    rng = np.random.default_rng(int(qtype))
    fields = kquants.decode(random_blocks(rng, qtype, 6, 192), qtype, 6, 192)
    legacy = QuantTensor(qtype, fields.q.reshape(6, 6, 32), fields.d_bits,
                         fields.dmin_bits if qtype == QT.Q4_1 else None)
    am, ae = rng.integers(-32767, 32768, (4, 192)), rng.integers(-30, 8, (4, 6))
    want = IntTensor(legacy).matmul_exact(am, ae)
    assert np.array_equal(FormatMatmul(fields).matmul(am, ae), want)
    assert np.array_equal(FormatMatmul(legacy).matmul(am, ae), want)
    tokens = np.array([0, 5, 3])
    assert np.array_equal(FormatMatmul(fields).embed_rows(tokens), FormatMatmul(legacy).embed_rows(tokens))


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
def test_close_to_the_float_dot_product(qtype):
    """Without saturation the result is the exact dot product, floored at 2**-24 once or twice per block."""
    rng = np.random.default_rng(11 + int(qtype))
    rows, cols = 4, 256
    raw = np.asarray(random_blocks(rng, qtype, rows, cols, fp16=0x1C00))  # d = dmin = m = 2**-8
    fields = kquants.decode(raw, qtype, rows, cols)
    am, ae = rng.integers(-32767, 32768, (1, cols)), rng.integers(-20, -14, (1, cols // 32))
    y = FormatMatmul(fields).matmul(am, ae)[0].astype(np.float64) * 2.0**-24
    a = am[0] * np.exp2(np.repeat(ae[0], 32))
    exact = fields.dequantize().astype(np.float64) @ a  # every weight is exact in float32 here
    assert np.all(np.abs(y - exact) <= 2 * (cols // 32) * 2.0**-24)
    assert GGML_QUANT_SIZES[qtype][0] in (32, 256)


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
def test_embedding_rows(qtype):
    """Section 4 generalized: each element is d sc q (+ offset) floored at 2**-24."""
    rng = np.random.default_rng(3 + int(qtype))
    fields = kquants.decode(random_blocks(rng, qtype, 6, 256, fp16=0x2400), qtype, 6, 256)  # 2**-6
    x = FormatMatmul(fields).embed_rows(np.array([4, 1]))
    assert np.array_equal(x * 2.0**-24, fields.dequantize()[[4, 1]].astype(np.float64))


# --- models in every format: the loader, the integer reference and the float reference ----------------

def k_model(tmp_path, **quants):
    from hardwire.golden.synth import SynthSpec, write_synthetic

    spec = SynthSpec(layers=2, d_model=256, d_ffn=512, heads=4, kv_heads=2, vocab=300, context=32, **quants)
    return write_synthetic(spec, tmp_path / "k.gguf")


def test_the_loader_reads_every_format_by_default(tmp_path):
    """The chip prints every decodable format: the default loader reads them into their fields."""
    from hardwire.golden.errors import HardwireError
    from hardwire.golden.gguf_model import load_model

    path = k_model(tmp_path, attn_quant="q5_0")
    model = load_model(path)
    assert isinstance(model.layers[0].wq, kquants.BlockFields) and model.layers[0].wq.qtype == QT.Q5_0
    with pytest.raises(HardwireError, match=r"unsupported quant type Q5_0 \(supported: Q8_0, Q4_0, Q4_1\)"):
        load_model(path, formats=(QT.Q8_0, QT.Q4_0, QT.Q4_1))


@pytest.mark.parametrize("quants", [
    dict(attn_quant="q6_k", ffn_quant="q3_k", embed_quant="q6_k"),  # a 3/6-bit mix, tied head
    dict(attn_quant="q4_k", ffn_quant="q5_k", embed_quant="q2_k", output_quant="q5_1"),
    dict(attn_quant="q5_0", ffn_quant="q4_1", embed_quant="q8_0", output_quant="q6_k"),
], ids=["q3k_q6k_tied", "q4k_q5k_q2k_untied", "q5_0_mixed"])
def test_integer_reference_follows_float_on_every_format(tmp_path, quants):
    from hardwire.golden.float_ref import FloatModel
    from hardwire.golden.gguf_model import load_model
    from hardwire.golden.intref import IntModel, acc_to_float

    model = load_model(k_model(tmp_path, **quants), formats=kquants.DECODABLE)
    tokens = np.random.default_rng(1).integers(0, 300, 12)
    im, fm = IntModel(model, capacity=16), FloatModel(model)
    li = acc_to_float(im.forward(tokens, im.new_cache()))
    lf = fm.forward(tokens, fm.new_cache(16)).astype(np.float64)
    rel = np.linalg.norm(li - lf, axis=1) / np.linalg.norm(lf, axis=1)
    assert rel.max() < 1e-3
    assert np.mean(li.argmax(axis=1) == lf.argmax(axis=1)) >= 11 / 12


def test_references_refuse_unsupported_types_naming_the_supported(tmp_path, monkeypatch):
    from hardwire.golden import synth
    from hardwire.golden.errors import HardwireError
    from hardwire.golden.gguf_model import load_model

    supported = "(supported: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K)"
    path = k_model(tmp_path, attn_quant="f32")
    with pytest.raises(HardwireError, match=r"'blk.0.attn_q.weight' has unsupported quant type F32 " +
                       re.escape(supported)):
        load_model(path, formats=kquants.DECODABLE)

    def add_iq4_nl(w, name, data, qtype):  # gguf cannot quantize IQ4_NL: random blocks of its size (18 bytes)
        if qtype != QT.IQ4_NL:
            return original(w, name, data, qtype)
        raw = np.random.default_rng(0).integers(0, 256, (data.shape[0], data.shape[1] // 32 * 18), dtype=np.uint8)
        w.add_tensor(name, raw, raw_dtype=QT.IQ4_NL)

    original = synth._add
    monkeypatch.setattr(synth, "_add", add_iq4_nl)
    monkeypatch.setitem(synth.QUANTS, "iq4_nl", QT.IQ4_NL)
    path = k_model(tmp_path, ffn_quant="iq4_nl")
    with pytest.raises(HardwireError, match=r"'blk.0.ffn_gate.weight' has unsupported quant type IQ4_NL " +
                       re.escape(supported)):
        load_model(path, formats=kquants.DECODABLE)
