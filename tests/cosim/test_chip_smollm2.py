"""SmolLM2-135M on the whole hw-s135 chip, chained: token in, token out, every tap of every layer exact."""

from __future__ import annotations

import pytest

from hardwire.cosim.chip_sim import ChipSim, metal_maps
from hardwire.cosim.generation import generate
from hardwire.golden.tokenizer import GGUFTokenizer
from hardwire.rtl import metal
from hardwire.rtl.die import get_die

DIE = get_die("hw-s135")
PROMPTS = ["The capital of France is", "def fibonacci(n):"]


@pytest.mark.nightly
@pytest.mark.parametrize("prompt", PROMPTS)
def test_sixteen_tokens_bit_exact_on_the_chip(smollm2, prompt, run_record, hw_coverage):
    maps, _ = metal_maps(metal.generate(smollm2, DIE))
    ids = GGUFTokenizer(smollm2.tokenizer_meta).encode(prompt)
    sim = ChipSim(DIE, maps, coverage=hw_coverage)
    gen = generate(smollm2, sim, ids, n_new=16, observe=run_record.observer(smollm2, sim))
    assert gen.mismatch is None, str(gen.mismatch)
    assert not gen.missing, f"taps never seen: {gen.missing[:4]}"
    assert len(gen.tokens) == 16 and gen.tokens == gen.golden_tokens
