"""A wide die (hw-tiny-w: 64 lanes, two output blocks per row group): the synthetic models generate bit-exact,
with pad beats (n < lanes / 32), partly filled last row groups, and LoRA adapters whose rank is below the lanes."""

from __future__ import annotations

import pytest
from chip_models import ALL_MODELS as NARROW_MODELS
from chip_models import CHIP_TILES, CORNER_MODELS, CORNER_NEW, CORNER_PROMPT, EVERY_EXPONENT_ADAPTER, LORA_MODEL

from hardwire.cosim.chip_sim import ChipSim, metal_maps
from hardwire.cosim.generation import generate
from hardwire.golden.gguf_model import load_model
from hardwire.golden.lora import load_adapter
from hardwire.golden.lora_synth import LoraSpec, write_peft
from hardwire.golden.synth import SynthSpec, write_synthetic
from hardwire.rtl import metal
from hardwire.rtl.adapter_image import adapter_image
from hardwire.rtl.die import get_die
from hardwire.rtl.isa import Op

DIE = get_die("hw-tiny-w")
BLOCKS_PER_GROUP = DIE.lanes // 32

# (id, spec): d_model 32 reads one input block per row group (a pad beat each); d_model 96 and d_ffn 160, vocab
# 301 end in partly filled row groups; a model on every tile, K quants, an untied head
MODELS = {
    "d32-pad-v301": SynthSpec(layers=2, d_model=32, d_ffn=96, heads=1, kv_heads=1, vocab=301, seed=41),
    "d96-partial-gqa3-v290": SynthSpec(layers=DIE.tiles, d_model=96, d_ffn=160, heads=3, kv_heads=1, vocab=290,
                                       seed=42, embed_quant="q4_0", attn_quant="q8_0", ffn_quant="q4_1"),
    "d256-k-untied-v517": SynthSpec(layers=2, d_model=256, d_ffn=512, heads=8, kv_heads=2, vocab=517, seed=43,
                                    embed_quant="q6_k", attn_quant="q4_k", ffn_quant="q3_k", output_quant="q5_k"),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    assert DIE.tiles == CHIP_TILES
    root = tmp_path_factory.mktemp("wide_models")
    return {name: load_model(write_synthetic(spec, root / f"{name}.gguf")) for name, spec in MODELS.items()}


def test_the_programs_pad_and_close_partial_groups(models):
    """The cases the wide engine must get right are really in these programs: a row group of fewer
    input blocks than output blocks (pad beats) and a last row group that fills fewer blocks."""
    matmuls = [i for name in MODELS for program in metal.generate(models[name], DIE).programs.values()
               for i in program if i.op == Op.MATMUL]
    assert any(i.n < BLOCKS_PER_GROUP for i in matmuls)
    assert any(i.blocks < i.groups * BLOCKS_PER_GROUP for i in matmuls)
    assert all((i.groups - 1) * BLOCKS_PER_GROUP < i.blocks <= i.groups * BLOCKS_PER_GROUP for i in matmuls)


@pytest.fixture(scope="module")
def chip_for(hw_coverage):
    """chip_for(model): the model's chip, built for code coverage when the run measures it (the nightly's
    coverage of the lane module and of the attention engines in lockstep comes from these chips)."""

    def make(model) -> ChipSim:
        return ChipSim(DIE, metal_maps(metal.generate(model, DIE))[0], coverage=hw_coverage)

    return make


@pytest.mark.parametrize("name", sorted(MODELS))
def test_generation_on_the_wide_die_is_bit_exact(models, name, explain_failure, chip_for):
    model, prompt = models[name], [3, 257, 42]
    sim = chip_for(model)
    gen = generate(model, sim, prompt, n_new=3)
    assert gen.mismatch is None and not gen.missing, explain_failure(sim, gen, model, prompt, 3)
    assert len(gen.tokens) == 3 and gen.tokens == gen.golden_tokens


def test_lora_with_lanes_above_the_rank_is_bit_exact(models, tmp_path, explain_failure, chip_for):
    """Rank 32 on 64 lanes: the A pass is one partly filled row group, the SRAM slots are padded to whole
    row groups, and the adapter-load addresses cover them."""
    model = models["d96-partial-gqa3-v290"]
    assert DIE.lora_rank < DIE.lanes
    slots = metal.lora_layout(model.config, DIE)
    for proj, slot in slots.items():  # A: one row group, a word per input block; B': whole row groups
        out, nb = metal.lora_dims(model.config, proj)
        assert slot.a_words == nb and slot.b_words == -(-out // DIE.lanes) * (DIE.lora_rank // 32)
    assert max(s.b_base + s.b_words for s in slots.values()) <= DIE.lora_sram_words
    _generate_with_adapter(model, LoraSpec(rank=20, alpha=16.0, seed=5, b_std=0.3), tmp_path, chip_for,
                           explain_failure)


def _generate_with_adapter(model, spec: LoraSpec, tmp_path, chip_for, explain_failure) -> None:
    """Load the adapter through the chip's adapter-load port, then generate bit-exact."""
    adapter = load_adapter(write_peft(spec, model.config, tmp_path / "adapter"), model.config)
    image = adapter_image(adapter, model.config, DIE)
    sim = chip_for(model)
    assert sim.load_adapter(image, adapter) == len(image.commands)
    prompt = [3, 257, 42]
    gen = generate(model, sim, prompt, n_new=3)
    assert gen.mismatch is None and not gen.missing, explain_failure(sim, gen, model, prompt, 3)
    assert gen.tokens == gen.golden_tokens


@pytest.mark.nightly
@pytest.mark.parametrize("name", sorted(NARROW_MODELS))
def test_the_narrow_dies_models_on_the_wide_die_are_bit_exact(name, tmp_path, explain_failure, chip_for):
    """test_chip.py's models (every weight format, saturation, all-zero weights) on the wide lanes: with
    --hw-coverage, the nightly's line and toggle coverage of the lane module comes from these runs."""
    model, prompt = load_model(write_synthetic(NARROW_MODELS[name], tmp_path / f"{name}.gguf")), [3, 257, 42]
    sim = chip_for(model)
    gen = generate(model, sim, prompt, n_new=3)
    assert gen.mismatch is None and not gen.missing, explain_failure(sim, gen, model, prompt, 3)
    assert gen.tokens == gen.golden_tokens


@pytest.mark.nightly
@pytest.mark.parametrize("name", sorted(CORNER_MODELS))
def test_saturation_corners_on_the_wide_die_are_bit_exact(name, tmp_path, explain_failure, chip_for, run_record):
    """test_chip.py's saturation corners on the wide die: its requantizers' and lanes' clamp branches."""
    model = load_model(write_synthetic(CORNER_MODELS[name], tmp_path / f"{name}.gguf"))
    sim = chip_for(model)
    gen = generate(model, sim, CORNER_PROMPT, n_new=CORNER_NEW, observe=run_record.observer(model, sim))
    assert gen.mismatch is None and not gen.missing, explain_failure(sim, gen, model, CORNER_PROMPT, CORNER_NEW)
    assert gen.tokens == gen.golden_tokens


@pytest.mark.nightly
def test_every_lora_exponent_on_the_wide_die_is_bit_exact(tmp_path, explain_failure, chip_for):
    """The adapter that puts every exponent field in every lane (test_chip_lora.py), on the lane module."""
    model = load_model(write_synthetic(LORA_MODEL, tmp_path / "m.gguf"))
    _generate_with_adapter(model, EVERY_EXPONENT_ADAPTER, tmp_path, chip_for, explain_failure)
