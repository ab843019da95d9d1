"""The integer spec is as faithful to SmolLM2-135M as the acceptance bar asks, on the shipped text."""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

import pytest

from hardwire.golden.evaluate import evaluate, tokens_for_eval

LLAMA_CPP = json.loads((Path(__file__).parent.parent / "data" / "llama_cpp_reference.json").read_text("utf-8"))


@pytest.fixture(scope="module")
def result(smollm2):
    text = files("hardwire.golden").joinpath("data/eval_en.txt").read_text(encoding="utf-8")
    return evaluate(smollm2, tokens_for_eval(smollm2, text, 1024))


def test_integer_perplexity_within_two_percent_of_float(result):
    assert result.tokens == 1024
    assert result.ppl_int <= 1.02 * result.ppl_float


def test_top1_agreement(result):
    assert result.top1_agreement >= 0.95


def test_float_reference_is_as_good_as_llama_cpp(result):
    """Same text, same 1,024 tokens: llama.cpp's perplexity is the yardstick for the float path."""
    assert LLAMA_CPP["n_ppl_tokens"] == 1024
    assert abs(result.ppl_float / LLAMA_CPP["ppl_first_1024"] - 1.0) < 0.01
