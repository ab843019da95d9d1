"""Golden side of the block dot product (docs/numerics.md section 3), for the RTL tests.

`block_terms` is a thin wrapper over golden/spec.py primitives (fp16_parts, sat_shift);
`row_results` is the golden matmul itself (IntTensor.matmul_exact).
"""

from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType as QT

from hardwire.golden import spec
from hardwire.golden.block_matmul import IntTensor
from hardwire.golden.gguf_model import QuantTensor

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
