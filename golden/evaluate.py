"""Accuracy of the integer reference against the float reference on a text.

Perplexity is computed over the next-token predictions at positions
0..N-2 of the first N tokens; top-1 agreement is the fraction of those
positions whose greedy next token is the same on both paths.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .errors import HardwireError
from .float_ref import FloatModel
from .gguf_model import Model
from .intref import IntModel, acc_to_float
from .tokenizer import GGUFTokenizer

CHUNK = 16  # positions per forward call; bounds the int path's (blocks, rows, T) temporaries


@dataclass
class EvalResult:
    ppl_float: float
    ppl_int: float
    top1_agreement: float
    tokens: int

    def as_dict(self) -> dict:
        return {"ppl_float": self.ppl_float, "ppl_int": self.ppl_int,
                "top1_agreement": self.top1_agreement, "tokens": self.tokens}


def ids_digest(ids) -> str:
    """sha256 of token ids as int64: how the recorded llama.cpp perplexities name their token sequence."""
    return hashlib.sha256(np.asarray(ids, np.int64).tobytes()).hexdigest()


def tokens_for_eval(model: Model, text: str, n_tokens: int) -> np.ndarray:
    if not text.strip():
        raise HardwireError("the evaluation text is empty")
    if n_tokens < 2:
        raise HardwireError(f"--tokens must be at least 2, got {n_tokens}")
    ids = GGUFTokenizer(model.tokenizer_meta).encode(text)
    if n_tokens > len(ids):
        raise HardwireError(f"--tokens {n_tokens} is larger than the text provides ({len(ids)} tokens)")
    if n_tokens > model.config.context:
        raise HardwireError(f"--tokens {n_tokens} exceeds the model's context of {model.config.context}")
    return np.asarray(ids[:n_tokens], dtype=np.int64)


def evaluate(model: Model, ids: np.ndarray, progress: Callable[[int], None] | None = None,
             adapter=None) -> EvalResult:
    """Run both references over `ids` in chunks; `progress` gets the positions done so far.

    With a LoRA adapter (golden.lora.Adapter) both paths apply it: float unmerged, integer as section 12.
    """
    n = len(ids)
    fm, im = FloatModel(model, adapter), IntModel(model, capacity=n, adapter=adapter)
    fcache, icache = fm.new_cache(n), im.new_cache()
    nll_f, nll_i, agree = [], [], []
    for start in range(0, n, CHUNK):
        chunk = ids[start:start + CHUNK]
        lf = fm.forward(chunk, fcache).astype(np.float64)
        li = acc_to_float(im.forward(chunk, icache))
        targets = ids[start + 1:start + 1 + len(chunk)]
        k = len(targets)  # the last position has no target
        nll_f.append(_nll(lf[:k], targets))
        nll_i.append(_nll(li[:k], targets))
        agree.append(lf[:k].argmax(-1) == li[:k].argmax(-1))
        if progress:
            progress(start + len(chunk))
    nf, ni, ag = (np.concatenate(x) for x in (nll_f, nll_i, agree))
    return EvalResult(float(np.exp(nf.mean())), float(np.exp(ni.mean())), float(ag.mean()), n)


def float_perplexity(fm: FloatModel, ids: np.ndarray) -> tuple[float, np.ndarray]:
    """(perplexity, greedy next tokens) of one float model over `ids`, in the same chunks as evaluate."""
    cache = fm.new_cache(len(ids))
    nll, top = [], []
    for start in range(0, len(ids), CHUNK):
        logits = fm.forward(ids[start:start + CHUNK], cache).astype(np.float64)
        targets = ids[start + 1:start + 1 + len(logits)]
        nll.append(_nll(logits[:len(targets)], targets))
        top.append(logits[:len(targets)].argmax(-1))
    return float(np.exp(np.concatenate(nll).mean())), np.concatenate(top)


def _nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    top = logits.max(axis=-1, keepdims=True)
    lse = np.log(np.exp(logits - top).sum(axis=-1)) + top[:, 0]
    return lse - logits[np.arange(len(targets)), targets]
