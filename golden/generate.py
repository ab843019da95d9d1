"""Greedy decoding with a KV cache, for either reference (anything with `forward(tokens, cache)`)."""

from __future__ import annotations

import numpy as np

from .errors import HardwireError


def greedy(model, cache, prompt: list[int], n_new: int) -> list[int]:
    """Feed the prompt, then `n_new` times take the argmax (lowest id on ties) and feed it back."""
    if not prompt:
        raise HardwireError("the prompt is empty")
    if n_new < 0:
        raise HardwireError(f"cannot generate {n_new} tokens")
    logits = model.forward(np.asarray(prompt), cache)
    out = []
    for _ in range(n_new):
        token = int(np.argmax(logits[-1]))
        out.append(token)
        if len(out) < n_new:
            logits = model.forward(np.asarray([token]), cache)
    return out
