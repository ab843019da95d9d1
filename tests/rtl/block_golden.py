"""Golden side of the block dot product (docs/numerics.md section 3), for the RTL tests.

`block_terms` is a thin wrapper over golden/spec.py primitives (fp16_parts, sat_shift);
`row_results` is the golden matmul itself (IntTensor.matmul_exact); `format_terms` and
`format_rows` are section 3.1's, golden/kmatmul's, for every format.
"""

from __future__ import annotations

import numpy as np
from gguf import GGML_QUANT_SIZES
from gguf import GGMLQuantizationType as QT

from hardwire.golden import kquants, spec
from hardwire.golden.block_matmul import IntTensor
from hardwire.golden.gguf_model import QuantTensor
from hardwire.golden.kmatmul import FormatMatmul

QTYPES = {"Q8_0": QT.Q8_0, "Q4_0": QT.Q4_0, "Q4_1": QT.Q4_1}


def block_terms(fmt, q, d_bits, m_bits, acts, e_act):
    """T_b for q (rows, nb, 32) golden codes, d_bits/m_bits (rows, nb), acts (nb, 32), e_act (nb,)."""
    q, acts, e_act = (np.asarray(x, np.int64) for x in (q, acts, e_act))
    s = np.einsum("rbj,bj->rb", q, acts)
    md, ed = spec.fp16_parts(d_bits)
    t = spec.sat_shift(md * s, ed + e_act + spec.ACC_FRAC, spec.TERM_BITS)
    if fmt == "Q4_1":
        mm, em = spec.fp16_parts(m_bits)
        t = t + spec.sat_shift(mm * acts.sum(axis=-1), em + e_act + spec.ACC_FRAC, spec.TERM_BITS)
    return t


def row_results(fmt, q, d_bits, m_bits, acts, e_act):
    """y_r = sat(sum_b T_b, 48) by the golden integer reference's own matmul."""
    tensor = QuantTensor(QTYPES[fmt], np.asarray(q, np.int8), np.asarray(d_bits, np.uint16),
                         None if fmt != "Q4_1" else np.asarray(m_bits, np.uint16))
    am = np.asarray(acts, np.int64).reshape(1, -1)
    return IntTensor(tensor).matmul_exact(am, np.asarray(e_act, np.int64).reshape(1, -1))[0]


# --- every format (section 3.1): GGUF bytes -> the loader's fields -> the metal's slot fields ---------------

def k_fields(qtype, raw: np.ndarray, rows: int, cols: int):
    """The golden's fields of raw GGUF bytes (rows, bytes per row)."""
    return kquants.decode(raw, qtype, rows, cols)


def random_raw(rng, qtype, rows: int, cols: int) -> np.ndarray:
    """Random GGUF bytes with every fp16 field finite (an exponent of 31 becomes 15)."""
    block, size = GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, (rows, cols // block, size), dtype=np.uint8)
    for at in FP16_FIELDS[qtype]:
        bits = raw[..., at:at + 2].copy().view("<u2")
        bits[:] = np.where((bits & 0x7C00) == 0x7C00, bits & 0xBFFF, bits)
        raw[..., at:at + 2] = bits.view(np.uint8)
    return raw.reshape(rows, -1)


FP16_FIELDS = {QT.Q5_0: (0,), QT.Q5_1: (0, 2), QT.Q2_K: (80, 82), QT.Q3_K: (108,), QT.Q4_K: (0, 2),
               QT.Q5_K: (0, 2), QT.Q6_K: (208,)}


def format_terms(fields, acts, e_act):
    """T_b (rows, nb) by golden/kmatmul's P_b and O_b, for acts (nb, 32) and e_act (nb,)."""
    fm = FormatMatmul(fields)
    am = np.asarray(acts, np.int64).reshape(1, -1)
    p, o = fm.block_products(am)  # (nb, rows, 1)
    e = np.asarray(e_act, np.int64)[:, None]
    (md, ed), (mo, eo) = ((m.T, x.T) for m, x in (fm.block_scales(), fm.block_scales(offset=True)))
    t = spec.sat_shift(md * p[..., 0], ed + e + spec.ACC_FRAC, spec.TERM_BITS)
    if o is not None:
        t = t + spec.sat_shift(mo * o[..., 0], eo + e + spec.ACC_FRAC, spec.TERM_BITS)
    return t.T


def format_rows(fields, acts, e_act):
    """y_r by golden/kmatmul's matmul."""
    am = np.asarray(acts, np.int64).reshape(1, -1)
    return FormatMatmul(fields).matmul(am, np.asarray(e_act, np.int64).reshape(1, -1))[0]
