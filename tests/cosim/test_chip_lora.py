"""LoRA adapters on the chip: loaded through the adapter-load port into the tiles' LoRA SRAM, and every tap
of a generation bit-exact against the golden integer reference with the same adapter (docs/numerics.md 12).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from chip_models import EVERY_EXPONENT_ADAPTER, LORA_MODEL

from hardwire.cosim.chip_sim import ChipSim, metal_maps
from hardwire.cosim.generation import generate
from hardwire.golden.errors import HardwireError
from hardwire.golden.gguf_model import load_model
from hardwire.golden.lora import load_adapter
from hardwire.golden.lora_int import padded_rank, store_pair
from hardwire.golden.lora_synth import LoraSpec, write_gguf, write_peft
from hardwire.golden.spec import LORA_EXP_MAX, LORA_EXP_MIN
from hardwire.golden.synth import write_synthetic
from hardwire.rtl import chip, metal
from hardwire.rtl.adapter_image import COMMAND_WORDS, adapter_image, check_adapter_fits
from hardwire.rtl.die import get_die

DIE = get_die("hw-tiny")
MODEL = LORA_MODEL
PROMPT, N_NEW = [3, 257, 42], 3

# (id, adapter spec, format): ranks below, at and padded to the die's 32; every projection alone or in groups;
# per-projection ranks; rsLoRA; a GGUF adapter; every exponent field in every lane
ADAPTERS = {
    "r8-every-exponent": (EVERY_EXPONENT_ADAPTER, "peft"),
    "r8-all": (LoraSpec(rank=8, alpha=16.0, seed=1, b_std=0.2), "peft"),
    "r32-all-rslora": (LoraSpec(rank=32, alpha=8.0, seed=2, b_std=0.2, use_rslora=True), "peft"),
    "r5-q-o-down": (LoraSpec(rank=5, alpha=10.0, targets=("q", "o", "down"), seed=3, b_std=0.5), "peft"),
    "mixed-k-v-gate-up": (LoraSpec(rank=16, alpha=16.0, targets=("k", "v", "gate", "up"),
                                   rank_pattern=(("v", 3), ("up", 30)), seed=4, b_std=0.3), "gguf"),
}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_model(write_synthetic(MODEL, tmp_path_factory.mktemp("lora_model") / "m.gguf"))


@pytest.fixture(scope="module")
def adapters(model, tmp_path_factory):
    root = tmp_path_factory.mktemp("lora_adapters")
    out = {}
    for name, (spec, fmt) in ADAPTERS.items():
        path = write_peft(spec, model.config, root / name) if fmt == "peft" else \
            write_gguf(spec, model.config, root / f"{name}.gguf")
        out[name] = load_adapter(path, model.config)
    return out


@pytest.fixture(scope="module")
def maps(model):
    return metal_maps(metal.generate(model, DIE))[0]


def _load(sim: ChipSim, adapter, model) -> int:
    image = adapter_image(adapter, model.config, DIE)
    cycles = sim.load_adapter(image, adapter)
    assert cycles == len(image.commands)  # one command a cycle: the chip is ready between tokens
    return cycles


def _beats(sim, model, prompt, n_new):
    runs = []
    gen = generate(model, sim, prompt, n_new, observe=lambda position, run, trace: runs.append(run))
    taps = [(b.unit, b.op, b.block, b.exp, b.words.tobytes()) for run in runs for b in run.beats]
    return gen, taps, [run.cycles for run in runs]


def test_one_adapter_puts_every_exponent_in_every_lane(model, adapters):
    """Every exponent in [LORA_EXP_MIN, LORA_EXP_MAX] reaches each of the die's lanes (row r is read by lane
    r % lanes): 39 octaves, odd, so rows of each octave fall on every lane; the padding holds the floor."""
    seen = [set() for _ in range(DIE.lanes)]
    for layer in range(model.config.n_layers):
        for proj in metal.LORA_PROJECTIONS:
            for stored in store_pair(adapters["r8-every-exponent"], layer, proj):
                padded = np.full((padded_rank(len(stored.e)), stored.e.shape[1]), LORA_EXP_MIN)
                padded[:len(stored.e)] = stored.e
                for row, exponents in enumerate(padded):
                    seen[row % DIE.lanes] |= set(exponents.tolist())
    assert all(lane == set(range(LORA_EXP_MIN, LORA_EXP_MAX + 1)) for lane in seen), seen


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_generation_with_an_adapter_is_bit_exact(model, adapters, maps, name, explain_failure, hw_coverage):
    """Every tap of every layer equals the golden integer reference run with the same adapter (a coverage
    build in the nightly: the LoRA passes' lines of hw_tile come from these runs)."""
    sim = ChipSim(DIE, maps, coverage=hw_coverage)
    _load(sim, adapters[name], model)
    gen = generate(model, sim, PROMPT, N_NEW)
    assert gen.mismatch is None and not gen.missing, explain_failure(sim, gen, model, PROMPT, N_NEW)
    assert len(gen.tokens) == N_NEW and gen.tokens == gen.golden_tokens


def test_an_adapter_changes_the_chip_and_clearing_restores_the_base_chip(model, adapters, maps):
    """The adapter is in use (taps differ from the base chip's), and after LORA_CLEAR the chip gives the base
    chip's taps and cycle counts exactly: the skipped adapter passes cost no cycle."""
    base = ChipSim(DIE, maps)
    _, base_taps, base_cycles = _beats(base, model, PROMPT, N_NEW)
    sim = ChipSim(DIE, maps)
    _load(sim, adapters["r8-all"], model)
    gen, lora_taps, lora_cycles = _beats(sim, model, PROMPT, N_NEW)
    assert gen.bit_exact and lora_taps != base_taps
    assert all(a > b for a, b in zip(lora_cycles, base_cycles, strict=True))
    assert sim.clear_adapter() == 1
    gen, taps, cycles = _beats(sim, model, PROMPT, N_NEW)
    assert gen.bit_exact and taps == base_taps and cycles == base_cycles


def test_swapping_adapters_in_one_session_equals_a_fresh_chip(model, adapters, maps):
    """Adapter A, then B in the same chip session: tokens and taps equal a fresh chip loaded with B; the via
    maps are untouched."""
    before = _digest(maps)
    sim = ChipSim(DIE, maps)
    _load(sim, adapters["r32-all-rslora"], model)
    first, _, _ = _beats(sim, model, PROMPT, N_NEW)
    _load(sim, adapters["r5-q-o-down"], model)
    second, taps, cycles = _beats(sim, model, PROMPT, N_NEW)
    fresh = ChipSim(DIE, maps)
    _load(fresh, adapters["r5-q-o-down"], model)
    reference, fresh_taps, fresh_cycles = _beats(fresh, model, PROMPT, N_NEW)
    assert first.bit_exact and second.bit_exact and reference.bit_exact
    assert second.tokens == reference.tokens and taps == fresh_taps and cycles == fresh_cycles
    assert _digest(maps) == before


@pytest.mark.parametrize("proj, block, layer, op", [
    ("wo", "a", 1, "o"),  # layer 1's o projection: its A
    ("w_down", "b", 0, "down"),  # layer 0's down projection: its B'
    ("wq", "a", 0, "q"),
])
def test_a_flipped_adapter_sram_bit_fails_at_its_layer_and_op(model, adapters, maps, proj, block, layer, op,
                                                              tmp_path):
    """One bit of one stored mantissa flipped on its way into the SRAM: the first mismatch is the projection's,
    and the failure's waveform replay (which loads the same adapter first) sees it again."""
    adapter = adapters["r8-all"]
    image = adapter_image(adapter, model.config, DIE)
    slot = metal.lora_layout(model.config, DIE)[proj]
    word = slot.a_base if block == "a" else slot.b_base
    address = chip.lora_address(DIE, layer, word, 0)
    row = np.flatnonzero((image.commands[:, 0] == chip.LORA_WRITE) & (image.commands[:, 1] == address))[0]
    image.commands[row, 2] ^= 1 << 6  # a bit of mantissa 0
    sim = ChipSim(DIE, maps)
    sim.load_adapter(image, adapter)
    gen = generate(model, sim, PROMPT, 1)
    assert gen.mismatch is not None, f"a flipped bit of layer {layer} {proj} went unnoticed"
    assert (gen.mismatch.layer, gen.mismatch.op) == (layer, op)
    if proj == "wo":
        from hardwire.cosim.failure import write_chip_failure

        art = write_chip_failure(tmp_path / "failure", DIE, maps, gen, model.config.n_layers, "hardwire run ...")
        assert art.waveform is not None and art.replay_matches, art.waveform_error


def test_the_load_port_refuses_nothing_between_tokens_and_counts_cycles(model, adapters):
    """The image is one CLEAR, a write per stored block, then FLAGS per tile with an adapter."""
    image = adapter_image(adapters["r5-q-o-down"], model.config, DIE)
    cmds = image.commands
    assert cmds.shape[1] == COMMAND_WORDS and cmds[0, 0] == chip.LORA_CLEAR
    assert (cmds[1:-model.config.n_layers, 0] == chip.LORA_WRITE).all()
    assert (cmds[-model.config.n_layers:, 0] == chip.LORA_FLAGS).all()
    flags = cmds[-model.config.n_layers:, 2]
    assert list(flags) == [0b1001001] * model.config.n_layers  # q, o and down
    assert image.blocks_written == len(cmds) - 1 - model.config.n_layers


def test_a_rank_beyond_the_die_is_refused_naming_both(model, tmp_path):
    adapter = load_adapter(write_peft(LoraSpec(rank=40, targets=("v",)), model.config, tmp_path / "r40"),
                           model.config)
    with pytest.raises(HardwireError, match="rank 40; the LoRA SRAM of die hw-tiny holds rank 32"):
        check_adapter_fits(adapter, model.config, DIE)


def _digest(directory) -> str:
    h = hashlib.sha256()
    for path in sorted(directory.glob("*.vmap")):
        h.update(path.read_bytes())
    return h.hexdigest()


def test_layer_sharded_verification_with_an_adapter(model, adapters, tmp_path):
    """`hardwire verify --lora`: each layer on the tile harness, its LoRA SRAM loaded through the harness's
    adapter-load port, every tap bit-exact against the golden trace with the adapter (and not the base one)."""
    from hardwire.cosim.layer_check import check_layer, golden_trace

    image = metal.generate(model, DIE)
    adapter = adapters["mixed-k-v-gate-up"]
    commands = adapter_image(adapter, model.config, DIE).commands
    trace = golden_trace(model, PROMPT, adapter)
    for layer in range(model.config.n_layers):
        result = check_layer(model, image, trace, layer, len(PROMPT), tmp_path / f"layer{layer}", commands)
        assert result.bit_exact, str(result.mismatch)
    base = check_layer(model, image, golden_trace(model, PROMPT), 0, 1, tmp_path / "base", commands)
    assert base.mismatch is not None and base.mismatch.op == "k"  # the first adapted projection's tap


def test_run_with_lora_reports_the_adapter_and_its_load(model, tmp_path):
    """`hardwire run --lora --lora-scale --json`: bit-exact, with adapter, adapter_load_cycles and
    lora_sram_bits_used in the report."""
    import json
    import subprocess
    import sys

    gguf = write_synthetic(MODEL, tmp_path / "m.gguf")
    adapter_dir = write_peft(LoraSpec(rank=4, targets=("v", "up"), seed=9, b_std=0.3), model.config, tmp_path / "a")
    result = subprocess.run([sys.executable, "-m", "hardwire.cli", "run", "--model", str(gguf), "--die", DIE.name,
                             "--prompt-ids", "3,257", "--tokens", "2", "--lora", str(adapter_dir), "--lora-scale",
                             "0.5", "--json"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    image = adapter_image(load_adapter(adapter_dir, model.config, 0.5), model.config, DIE)
    assert report["bit_exact"] and report["adapter"]["user_scale"] == 0.5 and report["adapter"]["targets"] == 4
    assert report["adapter_load_cycles"] == len(image.commands)
    assert report["lora_sram_bits_used"] == image.sram_bits_used > 0
    for by_op in report["cycles_by_op_per_token"]:  # the adapter passes of v and up run, counted as lora
        assert by_op["lora"] > 0 and by_op["qkv"] > 0 and by_op["gate_up"] > 0
