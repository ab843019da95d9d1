"""The model's byte-level BPE tokenizer, built from GGUF metadata with the `tokenizers` library.

The pre-tokenizer follows llama.cpp's gpt2-family pre-types: split every digit
on its own (the 'smollm'/'starcoder' pre-type, like HF's Digits), then the
GPT-2 regex with byte-level mapping.
"""

from __future__ import annotations

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

from .errors import HardwireError

_CONTROL = 3  # llama.cpp token_type for control tokens such as <|im_start|>
_SPLIT_DIGITS = {"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva"}


class GGUFTokenizer:
    def __init__(self, meta: dict):
        if meta.get("model") != "gpt2":
            raise HardwireError(f"tokenizer model '{meta.get('model')}' is not supported (only gpt2 BPE)")
        tokens = list(meta["tokens"])
        vocab = {tok: i for i, tok in enumerate(tokens)}
        merges = [tuple(m.split(" ", 1)) for m in meta["merges"]]
        bpe = models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False)
        tok = Tokenizer(bpe)
        byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        if meta.get("pre", "default") in _SPLIT_DIGITS:
            tok.pre_tokenizer = pre_tokenizers.Sequence(
                [pre_tokenizers.Digits(individual_digits=True), byte_level])
        else:
            tok.pre_tokenizer = byte_level
        tok.decoder = decoders.ByteLevel()
        types = list(meta.get("token_type", []))
        specials = [AddedToken(t, special=True, normalized=False)
                    for t, ty in zip(tokens, types, strict=False) if ty == _CONTROL]
        tok.add_special_tokens(specials)
        self._tok = tok
        self.vocab_size = len(tokens)
        self.eos_id = int(meta.get("eos_token_id", -1))

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        for i in ids:
            if not 0 <= int(i) < self.vocab_size:
                raise HardwireError(f"token id {i} is out of range for vocab size {self.vocab_size}")
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)
