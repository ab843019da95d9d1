"""Tokenizer ids against ids recorded from llama.cpp (llama-cpp-python 0.3.36, see the fixture's source)."""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

import pytest

from hardwire.golden.tokenizer import GGUFTokenizer

REFERENCE = json.loads((Path(__file__).parent.parent / "data" / "llama_cpp_reference.json").read_text("utf-8"))


@pytest.fixture(scope="module")
def tokenizer(smollm2):
    return GGUFTokenizer(smollm2.tokenizer_meta)


@pytest.mark.parametrize("case", REFERENCE["strings"], ids=lambda c: repr(c["text"])[:40])
def test_ids_match_llama_cpp(tokenizer, case):
    assert tokenizer.encode(case["text"]) == case["ids"]


def test_eval_text_ids_match_llama_cpp(tokenizer):
    text = files("hardwire.golden").joinpath("data/eval_en.txt").read_text(encoding="utf-8")
    ids = tokenizer.encode(text)
    assert len(ids) >= 1000
    assert ids == REFERENCE["eval_text_ids"]


def test_reference_covers_the_required_kinds():
    texts = [c["text"] for c in REFERENCE["strings"]]
    assert "" in texts  # the empty string
    assert any("  " in t for t in texts)  # runs of whitespace
    assert any(any(ord(ch) > 127 for ch in t) for t in texts)  # unicode
    assert any("def " in t or "for (" in t for t in texts)  # code


def test_decode_round_trips(tokenizer):
    text = "Bridges, bread and 3 towns: caf\u00e9 \u65e5\u672c\n\n  end"
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_decode_refuses_out_of_range_id(tokenizer):
    from hardwire.golden.errors import HardwireError

    with pytest.raises(HardwireError, match="out of range"):
        tokenizer.decode([tokenizer.vocab_size])
