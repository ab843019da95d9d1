"""The synthetic models of the chained chip tests: every weight format and the numeric corners, run on
hw-tiny (test_chip.py) and, in the nightly, on the wide hw-tiny-w (test_chip_wide.py)."""

from __future__ import annotations

from hardwire.golden.lora_synth import LoraSpec
from hardwire.golden.synth import SynthSpec
from hardwire.requant_corners import CORNER_NEW, CORNER_PROMPT, CORNER_SHAPE  # noqa: F401 (the corner tests' run)

CHIP_TILES = 4  # hw-tiny's and hw-tiny-w's: one model fills every tile

# (id, spec): every weight format, in the layers and in the LM head; tied and untied heads, GQA ratios 1, 2 and 4,
# odd vocabularies; a model on every tile of the die
MODELS = {
    "q4_1-gqa2-v301": SynthSpec(layers=2, d_model=128, d_ffn=256, heads=2, kv_heads=1, vocab=301, seed=4),
    "q8_0-mha-v259": SynthSpec(layers=2, d_model=128, d_ffn=192, heads=4, kv_heads=4, vocab=259, seed=5,
                               embed_quant="q8_0", attn_quant="q8_0", ffn_quant="q8_0"),
    "q4_0-gqa4-untied-v517": SynthSpec(layers=3, d_model=256, d_ffn=512, heads=8, kv_heads=2, vocab=517, seed=6,
                                       embed_quant="q4_0", attn_quant="q4_0", ffn_quant="q4_1",
                                       output_quant="q8_0"),
    "q4_1-tied-v263": SynthSpec(layers=1, d_model=64, d_ffn=128, heads=2, kv_heads=1, vocab=263, seed=7,
                                embed_quant="q4_1"),
    "q4_0-tied-mqa-v290": SynthSpec(layers=CHIP_TILES, d_model=64, d_ffn=96, heads=1, kv_heads=1, vocab=290, seed=8,
                                    embed_quant="q4_0", attn_quant="q4_0", ffn_quant="q8_0"),
    # corners: weights 300x drive the accumulators and the sigmoid table into saturation, scores past 2^8 and
    # tie the saturated logits (3000x on hw-s135 saturates the scores: test_chip_smollm2.py); all-zero weights
    # give zero vectors everywhere, zero scores and an all-tied argmax
    "loud-ffn_q4_0-v300": SynthSpec(layers=2, d_model=128, d_ffn=256, heads=2, kv_heads=1, vocab=300, seed=11,
                                    ffn_quant="q4_0", weight_scale=300.0),
    "zero-v270": SynthSpec(layers=1, d_model=64, d_ffn=128, heads=2, kv_heads=1, vocab=270, seed=12, weight_scale=0.0),
}


# the other formats of llama.cpp's recipes (numerics 2.1), each as the embedding, in attention, in the FFN and as
# an untied LM head (a Latin square of one-layer models); a 3/6-bit model in the spirit of HC1 (Q3_K FFN, Q6_K
# attention and tied head); all-zero K weights (scales and mins of 0, d = 0)
NEW_FORMATS = ("q5_0", "q5_1", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k")
K_MODELS = {
    **{f"{NEW_FORMATS[i]}-embed-untied": SynthSpec(
        layers=1, d_model=256, d_ffn=512, heads=4, kv_heads=1 + i % 2, vocab=260 + i, seed=30 + i,
        embed_quant=NEW_FORMATS[i], attn_quant=NEW_FORMATS[(i + 1) % 7], ffn_quant=NEW_FORMATS[(i + 2) % 7],
        output_quant=NEW_FORMATS[(i + 3) % 7]) for i in range(7)},
    "q3_k-ffn-q6_k-attn-head-tied": SynthSpec(layers=2, d_model=256, d_ffn=512, heads=4, kv_heads=2, vocab=300,
                                              seed=21, embed_quant="q6_k", attn_quant="q6_k", ffn_quant="q3_k"),
    "zero-k-untied": SynthSpec(layers=1, d_model=256, d_ffn=512, heads=4, kv_heads=2, vocab=270, seed=22,
                               embed_quant="q5_k", attn_quant="q2_k", ffn_quant="q4_k", output_quant="q6_k",
                               weight_scale=0.0),
}
ALL_MODELS = {**MODELS, **K_MODELS}


# saturation corners (nightly): norm gains up to 1e4 times larger (gain_scale) saturate the projections' accumulators,
# so every lane of the requantizers after them rounds up past 2**15 - 1 and clamps; loud attention saturates the
# residual and a quiet FFN (ffn_scale) adds a little to it, so the next norm's requantizer clamps both ways; huge
# weights with plain gains saturate the weighted sum of V. tools/requant_corners.py chose them (its first ten picks,
# `python tools/requant_corners.py --seeds 4`); tests/cosim/test_requant_corners.py checks the lanes they reach.
CORNER_MODELS = {
    f"sat-l{layers}-s{seed}-w{ws:g}-g{gs:g}-f{fs:g}": SynthSpec(
        **{**CORNER_SHAPE, "layers": layers}, seed=seed, weight_scale=ws, gain_scale=gs, ffn_scale=fs)
    for layers, seed, ws, gs, fs in [(3, 2, 300.0, 1e3, 1e-4), (3, 2, 300.0, 1e4, 1.0), (3, 4, 1e4, 1.0, 1e-4),
                                     (1, 3, 300.0, 1e3, 1e-4), (3, 1, 3000.0, 1e3, 1.0), (3, 1, 1e4, 1.0, 1.0),
                                     (3, 4, 1.0, 1e4, 1.0), (3, 4, 300.0, 1e4, 1.0), (1, 1, 300.0, 1e4, 1e-4),
                                     (3, 4, 300.0, 1e4, 1e-3)]
}
# formats with mins (Q4_1, Q5_1) saturate the block MACs' min terms too, in the layers and in the LM head: their
# saturating shifts, and a min term shifted left by 52 or more
CORNER_MODELS |= {
    f"sat-mins-w{ws:g}-g{gs:g}": SynthSpec(**{**CORNER_SHAPE, "embed_quant": "q4_1", "attn_quant": "q5_1",
                                             "ffn_quant": "q4_1"}, seed=2, weight_scale=ws, gain_scale=gs)
    for ws, gs in [(300.0, 1e4), (3000.0, 1e3)]
}
# a Q6_K embedding 1e3 times louder (embed_scale) holds values past the 48-bit accumulator: the embedding unit
# saturates in every lane
CORNER_MODELS["sat-embed-q6_k"] = SynthSpec(**{**CORNER_SHAPE, "layers": 1}, seed=1, embed_quant="q6_k",
                                            output_quant="q8_0", weight_scale=1e4, embed_scale=1e3)


# the LoRA tests' base model, and an adapter whose B rows span 39 octaves (odd, so each octave's rows fall on every
# lane): every exponent field an adapter image can hold reaches every lane (test_chip_lora.py checks), so every
# reachable arm of the chips' LoRA exponent tables runs
LORA_MODEL = SynthSpec(layers=2, d_model=128, d_ffn=256, heads=2, kv_heads=1, vocab=301, seed=4)
EVERY_EXPONENT_ADAPTER = LoraSpec(rank=8, alpha=16.0, seed=6, b_std=2.0**-19, b_octaves=39)
