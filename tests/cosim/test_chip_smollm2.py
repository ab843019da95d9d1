"""Whole chips of the default die (hw-s135w), chained: SmolLM2-135M, requantized under llama.cpp's
recipes, and synthetic models in the weight formats it lacks.

Token in, token out, every tap of every layer exact. SmolLM2-135M is Q4_1 in its layers and a tied
Q8_0 embedding; requantized with `hardwire quantize` under q3_k_m, q4_k_m and q6_k it mixes the K quants
(ffn_down, attn_v, the tied Q6_K embedding) with the fallbacks of its 576-wide rows (Q4_0, Q5_0, Q5_1,
Q8_0); the synthetic models bring Q4_0 and Q8_0 layers, Q4_0 and Q4_1 heads and the saturation corners
(weights 3000x), so that the big die's matmul lanes run every format.
"""

from __future__ import annotations

import pytest

from hardwire.cosim.behaviour import observers
from hardwire.cosim.chip_sim import ChipSim, metal_maps
from hardwire.cosim.generation import generate
from hardwire.golden.gguf_model import load_model
from hardwire.golden.recipes import requantize
from hardwire.golden.synth import SynthSpec, write_synthetic
from hardwire.golden.tokenizer import GGUFTokenizer
from hardwire.rtl import metal
from hardwire.rtl.die import get_die

DIE = get_die("hw-s135w")  # the default die: metal.smallest_die(SmolLM2-135M)
# These chips are never coverage builds: with toggle coverage a hw-s135w chip takes more than 20 GB
# (30 tiles of 576 lanes); the nightly's coverage comes from the chips of the small dies.
PROMPTS = ["The capital of France is", "def fibonacci(n):"]
FORMAT_MODELS = {
    "q4_0-attn-q8_0-ffn-q4_1-head": SynthSpec(layers=2, d_model=128, d_ffn=256, heads=2, kv_heads=1, vocab=517,
                                              seed=21, embed_quant="q4_1", attn_quant="q4_0", ffn_quant="q8_0",
                                              output_quant="q4_1"),
    "loud-q4_0-tied": SynthSpec(layers=3, d_model=192, d_ffn=384, heads=3, kv_heads=1, vocab=401, seed=22,
                                embed_quant="q4_0", attn_quant="q8_0", ffn_quant="q4_0", weight_scale=3000.0),
}


@pytest.fixture(scope="module")
def smollm2_chip(smollm2):
    """One chip for both prompts."""
    maps, _ = metal_maps(metal.generate(smollm2, DIE))
    return ChipSim(DIE, maps)


@pytest.mark.nightly
@pytest.mark.parametrize("prompt", PROMPTS)
def test_sixteen_tokens_bit_exact_on_the_chip(smollm2, smollm2_chip, prompt, run_record, behaviour):
    ids = GGUFTokenizer(smollm2.tokenizer_meta).encode(prompt)
    sim = smollm2_chip
    fingerprint = behaviour.start(DIE.name, f"smollm2-135m-prompt{PROMPTS.index(prompt)}")
    gen = generate(smollm2, sim, ids, n_new=16, observe=observers(run_record.observer(smollm2, sim),
                                                                 fingerprint.observe))
    assert gen.mismatch is None, str(gen.mismatch)
    assert not gen.missing, f"taps never seen: {gen.missing[:4]}"
    assert len(gen.tokens) == 16 and gen.tokens == gen.golden_tokens
    behaviour.check(fingerprint)


@pytest.mark.nightly
@pytest.mark.parametrize("name", sorted(FORMAT_MODELS))
def test_every_weight_format_on_the_big_chip(name, tmp_path, run_record, explain_failure, behaviour):
    model, prompt = load_model(write_synthetic(FORMAT_MODELS[name], tmp_path / f"{name}.gguf")), [3, 257, 42, 11]
    sim = ChipSim(DIE, metal_maps(metal.generate(model, DIE))[0])
    fingerprint = behaviour.start(DIE.name, name)
    gen = generate(model, sim, prompt, n_new=6, observe=observers(run_record.observer(model, sim),
                                                                  fingerprint.observe))
    assert gen.mismatch is None and not gen.missing, explain_failure(sim, gen, model, prompt, 6)
    assert gen.tokens == gen.golden_tokens
    behaviour.check(fingerprint)


@pytest.mark.nightly
@pytest.mark.parametrize("recipe", ["q3_k_m", "q4_k_m", "q6_k"])
def test_requantized_smollm2_sixteen_tokens_bit_exact(recipe, smollm2_path, tmp_path, run_record, explain_failure):
    """SmolLM2-135M under a llama.cpp recipe (the bytes llama-quantize writes, tests/golden/test_recipes.py),
    printed on the default die and chained for 16 tokens."""
    types = requantize(smollm2_path, recipe, tmp_path / f"{recipe}.gguf")
    assert len({t for name, t in types.items() if name.endswith(".weight") and "norm" not in name}) >= 2
    model = load_model(tmp_path / f"{recipe}.gguf")
    ids = GGUFTokenizer(model.tokenizer_meta).encode(PROMPTS[0])
    sim = ChipSim(DIE, metal_maps(metal.generate(model, DIE))[0])
    gen = generate(model, sim, ids, n_new=16, observe=run_record.observer(model, sim))
    assert gen.mismatch is None and not gen.missing, explain_failure(sim, gen, model, ids, 16)
    assert len(gen.tokens) == 16 and gen.tokens == gen.golden_tokens


@pytest.mark.nightly
def test_sixteen_tokens_with_a_peft_adapter_on_all_seven_targets(smollm2, tmp_path, explain_failure):
    """SmolLM2-135M with a seeded rank-64 PEFT adapter on q, k, v, o, gate, up and down of every layer, loaded
    through the adapter-load port: 16 generated tokens, every tap bit-exact against the integer reference with
    the adapter. A chip of its own: the adapter stays loaded in the chip it was loaded into."""
    from hardwire.golden.lora import load_adapter
    from hardwire.golden.lora_synth import LoraSpec, write_peft
    from hardwire.rtl.adapter_image import adapter_image

    adapter = load_adapter(write_peft(LoraSpec(rank=DIE.lora_rank, alpha=32.0, seed=15), smollm2.config,
                                      tmp_path / "adapter"), smollm2.config)
    sim = ChipSim(DIE, metal_maps(metal.generate(smollm2, DIE))[0])
    image = adapter_image(adapter, smollm2.config, DIE)
    assert sim.load_adapter(image, adapter) == len(image.commands)
    # rank 64 on all seven projections of 30 layers: 159,966,720 bits of numerics 12.1, in 576-lane words
    # of which an A slot fills 64 rows (README, the die catalog)
    assert image.sram_bits_used == 805_870_080
    ids = GGUFTokenizer(smollm2.tokenizer_meta).encode(PROMPTS[0])
    gen = generate(smollm2, sim, ids, n_new=16)
    assert gen.mismatch is None and not gen.missing, explain_failure(sim, gen, smollm2, ids, 16)
    assert len(gen.tokens) == 16 and gen.tokens == gen.golden_tokens
