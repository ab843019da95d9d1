"""Greedy decoding through the KV cache equals one teacher-forced pass over the same tokens."""

from __future__ import annotations

import numpy as np
import pytest

from hardwire.golden.errors import HardwireError
from hardwire.golden.float_ref import FloatModel
from hardwire.golden.generate import greedy
from hardwire.golden.intref import IntModel


@pytest.mark.parametrize("kind", ["int", "float"])
def test_cached_decoding_matches_one_pass(synth_model, kind):
    prompt, n_new = [5, 17, 3, 99], 6
    model = IntModel(synth_model, capacity=16) if kind == "int" else FloatModel(synth_model)
    fresh = (lambda: model.new_cache()) if kind == "int" else (lambda: model.new_cache(16))
    tokens = greedy(model, fresh(), prompt, n_new)
    assert len(tokens) == n_new
    logits = model.forward(np.asarray(prompt + tokens), fresh())
    assert np.argmax(logits[len(prompt) - 1:-1], axis=-1).tolist() == tokens


def test_empty_prompt_is_refused(synth_model):
    with pytest.raises(HardwireError, match="prompt is empty"):
        model = IntModel(synth_model, capacity=4)
        greedy(model, model.new_cache(), [], 2)
