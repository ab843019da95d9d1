"""The SmolLM2-360M class die (hw-m360), chained: synthetic models of the class generate bit-exact.

The die holds every llama model up to d_model 1024, FFN 2816, 32 layers, 16 heads, head_dim 64 to 128 and a
vocabulary of 49,152; the models here take its widest dims at both head widths (nightly: a cold hw-m360 build
takes many minutes).
"""

from __future__ import annotations

import pytest

from hardwire.cosim.chip_sim import ChipSim, metal_maps
from hardwire.cosim.generation import generate
from hardwire.golden.gguf_model import load_model
from hardwire.golden.synth import SynthSpec, write_synthetic
from hardwire.rtl import metal
from hardwire.rtl.die import get_die

pytestmark = pytest.mark.nightly

DIE = get_die("hw-m360")
MODELS = {
    # SmolLM2-360M's dims (head_dim 64, GQA 3) on four layers
    "smollm2-360m-dims": SynthSpec(layers=4, d_model=960, d_ffn=2560, heads=15, kv_heads=5, vocab=49152, seed=61),
    # the class's widest layer at head_dim 128, an untied head
    "d1024-f2816-hd128": SynthSpec(layers=2, d_model=1024, d_ffn=2816, heads=8, kv_heads=2, vocab=4099, seed=62,
                                   attn_quant="q8_0", ffn_quant="q4_0", output_quant="q4_1"),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_360m_class_generates_bit_exact(name, tmp_path, explain_failure):
    model = load_model(write_synthetic(MODELS[name], tmp_path / f"{name}.gguf"))
    prompt = [3, 257, 42]
    sim = ChipSim(DIE, metal_maps(metal.generate(model, DIE))[0])
    gen = generate(model, sim, prompt, n_new=3)
    assert gen.mismatch is None and not gen.missing, explain_failure(sim, gen, model, prompt, 3)
    assert len(gen.tokens) == 3 and gen.tokens == gen.golden_tokens
