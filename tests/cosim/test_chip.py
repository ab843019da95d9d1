"""The whole chip, chained: token in, token out, every tap of every layer checked word for word.

One Verilator build of the hw-tiny base grid serves every model here; each model only
brings its via maps (loaded when its instance starts).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from chip_models import ALL_MODELS, CHIP_TILES, CORNER_MODELS, CORNER_NEW, CORNER_PROMPT, K_MODELS, MODELS
from gguf import GGMLQuantizationType as QT

from hardwire.cosim.behaviour import observers
from hardwire.cosim.chip_sim import ChipSim, grid_sources, metal_maps
from hardwire.cosim.generation import ChipStatusError, generate
from hardwire.cosim.via_map_loader import with_package
from hardwire.golden.gguf_model import load_model
from hardwire.golden.synth import write_synthetic
from hardwire.rtl import chip, metal
from hardwire.rtl.die import get_die
from hardwire.rtl.isa import FORMAT_CODE, Op

DIE = get_die("hw-tiny")

@pytest.fixture(scope="module")
def models(tmp_path_factory):
    assert DIE.tiles == CHIP_TILES
    root = tmp_path_factory.mktemp("chip_models")
    return {name: load_model(write_synthetic(spec, root / f"{name}.gguf"))
            for name, spec in ALL_MODELS.items()}


@pytest.fixture(scope="module")
def chip_for(hw_coverage):
    """chip_for(model, image=None): the model's chip (or a given metal image's); built for code coverage when
    the run measures it."""

    def make(model, image=None) -> ChipSim:
        maps, _ = metal_maps(image or metal.generate(model, DIE))
        return ChipSim(DIE, maps, coverage=hw_coverage)

    return make


@pytest.mark.parametrize("name", sorted(MODELS))
def test_generation_is_bit_exact(models, name, run_record, record_property, explain_failure, chip_for, behaviour):
    """Bit-exact against the golden reference, and the same run, beat for beat and cycle for cycle, as the
    recorded fingerprint (tests/data/behaviour)."""
    record_property("seed", MODELS[name].seed)
    model, prompt = models[name], [3, 257, 42, 11]
    sim = chip_for(model)
    fingerprint = behaviour.start(DIE.name, name)
    gen = generate(model, sim, prompt, n_new=6, observe=observers(run_record.observer(model, sim),
                                                                  fingerprint.observe))
    assert gen.mismatch is None and not gen.missing, explain_failure(sim, gen, model, prompt, 6)
    assert len(gen.tokens) == 6 and gen.tokens == gen.golden_tokens
    assert gen.beats > 0 and all(c > 0 for c in gen.cycles)
    behaviour.check(fingerprint)


@pytest.mark.parametrize("name", sorted(K_MODELS))
def test_every_format_generates_bit_exact(models, name, run_record, record_property, explain_failure, chip_for):
    """The formats beyond Q8_0/Q4_0/Q4_1 on the same base grid, chained, every tap word for word."""
    record_property("seed", K_MODELS[name].seed)
    model, prompt = models[name], [3, 257, 42]
    sim = chip_for(model)
    gen = generate(model, sim, prompt, n_new=3, observe=run_record.observer(model, sim))
    assert gen.mismatch is None and not gen.missing, explain_failure(sim, gen, model, prompt, 3)
    assert len(gen.tokens) == 3 and gen.tokens == gen.golden_tokens


@pytest.mark.nightly
@pytest.mark.parametrize("name", sorted(CORNER_MODELS))
def test_saturation_corners_are_bit_exact(name, tmp_path, explain_failure, chip_for, run_record):
    """Accumulators, residuals and the weighted sum of V saturated, so the requantizers after them clamp in
    every lane (tests/cosim/test_requant_corners.py): the RTL's clamp branches against the golden ones."""
    model = load_model(write_synthetic(CORNER_MODELS[name], tmp_path / f"{name}.gguf"))
    sim = chip_for(model)
    gen = generate(model, sim, CORNER_PROMPT, n_new=CORNER_NEW, observe=run_record.observer(model, sim))
    assert gen.mismatch is None and not gen.missing, explain_failure(sim, gen, model, CORNER_PROMPT, CORNER_NEW)
    assert gen.tokens == gen.golden_tokens


def test_base_grid_is_the_same_for_two_models(models, chip_for):
    """The chip's Verilog (what `hardwire build` reports as base_grid_sha256) depends on the die alone,
    whatever the formats (Q4_1 and Q8_0; Q3_K and Q6_K): only the metal differs."""
    names = ("q4_1-gqa2-v301", "q8_0-mha-v259", "q3_k-ffn-q6_k-attn-head-tied")
    images = [metal.generate(models[n], DIE) for n in names]
    assert len({image.sha256() for image in images}) == 3
    fmts = [{i.fmt for program in image.programs.values() for i in program if i.op == Op.MATMUL and not i.sram}
            for image in images]  # the ROM's formats: adapter passes read Q8_0 blocks from the LoRA SRAM
    assert fmts[0] == {FORMAT_CODE[QT.Q4_1], FORMAT_CODE[QT.Q8_0]}
    assert fmts[2] == {FORMAT_CODE[QT.Q3_K], FORMAT_CODE[QT.Q6_K]}
    sources, _ = grid_sources(DIE)
    assert sources == with_package(chip.base_grid(DIE))  # what the RTL converts to, with the ROMs' loader package
    sims = [chip_for(models[n], image) for n, image in zip(names, images, strict=True)]
    assert len({sim.sim.key for sim in sims}) == 1 and all(sim.cache_hit for sim in sims[1:])  # one build


def test_context_fills_to_the_kv_limit_then_overflows(models, run_record, chip_for):
    """kv_tokens positions run bit-exact; the next token is refused with KV_OVERFLOW, not wrapped."""
    model = models["q4_1-gqa2-v301"]
    sim = chip_for(model)
    observe = run_record.observer(model, sim)
    gen = generate(model, sim, [5], n_new=DIE.kv_tokens, observe=observe)
    assert gen.bit_exact and sim.position == DIE.kv_tokens
    run = sim.token(gen.tokens[-1])
    observe(DIE.kv_tokens, run, None)
    assert run.status == chip.STATUS_KV_OVERFLOW and run.beats == [] and sim.position == DIE.kv_tokens
    with pytest.raises(ChipStatusError, match="KV_OVERFLOW: the KV cache holds 128 positions"):
        generate(model, sim, [5], n_new=DIE.kv_tokens + 1, observe=observe)


def test_bad_token_is_refused_and_nothing_runs(models, run_record, chip_for):
    model = models["q4_1-gqa2-v301"]
    sim = chip_for(model)
    sim.reset()
    run = sim.token(model.config.vocab)
    run_record.observer(model, sim)(0, run, None)
    assert run.status == chip.STATUS_BAD_TOKEN and run.beats == [] and sim.position == 0
    ok = sim.token(model.config.vocab - 1)
    assert ok.status == chip.STATUS_OK and sim.position == 1


@pytest.mark.parametrize("rom, word, byte, mask, layer, op", [
    ("tile01_weights", 0, 0, 0x01, 1, "q"),  # the first word of layer 1's W_q: lane 0's first code
    ("tile00_consts", 1, 2, 0x40, 0, "attn_norm"),  # bit 22 of gain 0 of layer 0's attention norm
    ("head_weights", 0, 0, 0x01, 3, "logits"),  # the LM head, after the 3 layers (untied head)
    ("tile02_ucode", 2, 1, 0x02, 2, "k"),  # microcode: layer 2's q|k|v MATMUL reads its input one block off;
    #                                        k, tapped before q, fails first
])
def test_a_flipped_via_bit_fails_at_its_layer_and_op(models, rom, word, byte, mask, layer, op, explain_failure):
    model, prompt = models["q4_0-gqa4-untied-v517"], [3, 257, 42]
    image = metal.generate(model, DIE)
    flipped = image.roms[rom].words.copy()
    flipped[word, byte] ^= mask
    image.roms[rom] = dataclasses.replace(image.roms[rom], words=flipped)
    maps, _ = metal_maps(image)
    sim = ChipSim(DIE, maps)
    gen = generate(model, sim, prompt, n_new=2)
    assert gen.mismatch is not None, f"a flipped bit in {rom} went unnoticed"
    assert (gen.mismatch.layer, gen.mismatch.op) == (layer, op), explain_failure(sim, gen, model, prompt, 2, maps)
    assert np.int64(gen.mismatch.expected) != np.int64(gen.mismatch.actual)
