"""Seeded synthetic Llama models written as real GGUF files (gguf.GGUFWriter).

One loader then serves real and synthetic models. Weights are drawn from a
seeded normal distribution scaled by 1/sqrt(fan_in) and quantized with
gguf's own quantizer, or for the K quants (which gguf cannot quantize) with the
port of ggml's (`quantize.py`), so every quant type goes through the real
block layout.
The tokenizer is a byte-level BPE: the 256 byte symbols, then merges of
letter pairs until the vocabulary is full, then two control tokens.
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as QT
from gguf import GGUFWriter, quantize
from tokenizers import pre_tokenizers

from . import quantize as ggml_quantize
from .errors import HardwireError
from .gguf_model import check_metadata, open_reader
from .kquants import FORMATS
from .spec import BLOCK

QUANTS = {"q8_0": QT.Q8_0, "q4_0": QT.Q4_0, "q4_1": QT.Q4_1, "q5_0": QT.Q5_0, "q5_1": QT.Q5_1,
          "q2_k": QT.Q2_K, "q3_k": QT.Q3_K, "q4_k": QT.Q4_K, "q5_k": QT.Q5_K, "q6_k": QT.Q6_K, "f32": QT.F32}
GGUF_QUANTIZES = (QT.Q8_0, QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1)
CONTROL_TOKENS = ("<|im_start|>", "<|im_end|>")
MIN_VOCAB = 256 + len(CONTROL_TOKENS)
MAX_WEIGHT_SCALE = 1e4  # keeps every fp16 block scale finite, whatever the shape and quant type
MAX_GAIN_SCALE = 1e6  # gains stay far inside float32 (they are stored as F32)
# weight_scale * embed_scale of a Q6_K embedding: values up to about 5e7, where its blocks hold 2.6e8 (d * 127 * 32);
# the embedding of any other format stays within weight_scale's bound
MAX_Q6_K_EMBED = 1e7


@dataclass(frozen=True)
class SynthSpec:
    layers: int = 2
    d_model: int = 64
    d_ffn: int = 128
    heads: int = 2
    kv_heads: int = 1
    vocab: int = 300
    context: int = 64
    embed_quant: str = "q8_0"
    attn_quant: str = "q4_1"
    ffn_quant: str = "q4_1"
    output_quant: str | None = None  # None: the LM head is tied to the embedding
    rope_theta: float = 10000.0
    rms_eps: float = 1e-5
    seed: int = 0
    # every weight matrix and the embedding times this: 0 gives all-zero vectors, thousands drive the
    # accumulators, scores and tables into saturation (the corner cases the chip must match exactly)
    weight_scale: float = 1.0
    # every RMSNorm gain times this: with weight_scale, it drives the projections' accumulators into saturation
    gain_scale: float = 1.0
    # the FFN's matrices times this too, at most 1: loud attention saturates the residual, and a quiet FFN adds a
    # little to it (a residual just inside the saturation bound, where the next norm's requantizer clamps)
    ffn_scale: float = 1.0
    # the embedding times this too: a Q6_K embedding (its scales are products of two) then holds values past the
    # 48-bit accumulator, and the embedding unit saturates
    embed_scale: float = 1.0

    def check(self) -> None:
        for name in ("layers", "d_model", "d_ffn", "heads", "kv_heads", "vocab", "context"):
            if getattr(self, name) < 1:
                raise HardwireError(f"--{name.replace('_', '-')} must be at least 1")
        for name in ("d_model", "d_ffn"):
            if getattr(self, name) % BLOCK:
                raise HardwireError(f"--{name.replace('_', '-')}={getattr(self, name)} is not divisible "
                                    f"by the block size {BLOCK}")
        if self.d_model % self.heads or self.heads % self.kv_heads:
            raise HardwireError(f"heads do not divide evenly: d_model={self.d_model}, heads={self.heads}, "
                                f"kv_heads={self.kv_heads}")
        if (self.d_model // self.heads) % BLOCK:
            raise HardwireError(f"head_dim={self.d_model // self.heads} is not a multiple of {BLOCK}")
        if self.vocab < MIN_VOCAB:
            raise HardwireError(f"--vocab={self.vocab} is below {MIN_VOCAB} (256 byte tokens + 2 control)")
        if not 0 <= self.seed < 2**63:
            raise HardwireError(f"--seed {self.seed} must be a non-negative integer below 2**63")
        for name in ("rope_theta", "rms_eps"):  # what the model loader refuses (golden/gguf_model.py)
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise HardwireError(f"--{name.replace('_', '-')} {getattr(self, name)} must be a finite number "
                                    "above 0")
        if not (math.isfinite(self.gain_scale) and 0 <= self.gain_scale <= MAX_GAIN_SCALE):
            raise HardwireError(f"--gain-scale {self.gain_scale} is outside [0, {MAX_GAIN_SCALE:g}]")
        if not 0 <= self.ffn_scale <= 1:
            raise HardwireError(f"--ffn-scale {self.ffn_scale} is outside [0, 1]")
        if not 0 <= self.weight_scale <= MAX_WEIGHT_SCALE:
            raise HardwireError(f"--weight-scale {self.weight_scale} is outside [0, {MAX_WEIGHT_SCALE:g}] "
                                "(larger ones overflow the fp16 block scales)")
        for name in ("embed_quant", "attn_quant", "ffn_quant", "output_quant"):
            value = getattr(self, name)
            if value is not None and value not in QUANTS:
                raise HardwireError(f"--{name.replace('_', '-')} {value} is not one of {', '.join(QUANTS)}")
        self._check_rows()
        if not (math.isfinite(self.embed_scale) and self.embed_scale >= 0):
            raise HardwireError(f"--embed-scale {self.embed_scale} must be a finite number of at least 0")
        embed_bound = MAX_Q6_K_EMBED if self.embed_quant == "q6_k" else MAX_WEIGHT_SCALE
        if self.embed_scale * self.weight_scale > embed_bound:
            raise HardwireError(f"--embed-scale {self.embed_scale:g} times --weight-scale {self.weight_scale:g} is "
                                f"above {embed_bound:g}, past what a {self.embed_quant} embedding block holds"
                                + ("" if self.embed_quant == "q6_k" else " (q6_k holds up to 1e7)"))

    def _check_rows(self) -> None:
        """Each tensor's rows (d_model wide, or d_ffn for ffn_down) must hold whole blocks of its type."""
        uses = [("embed_quant", "d_model"), ("attn_quant", "d_model"), ("ffn_quant", "d_model"),
                ("ffn_quant", "d_ffn"), ("output_quant", "d_model")]
        for quant, dim in uses:
            qtype = QUANTS.get(getattr(self, quant))
            block = FORMATS[qtype].block if qtype in FORMATS else 1
            if getattr(self, dim) % block:
                raise HardwireError(f"--{quant.replace('_', '-')} {getattr(self, quant)} needs "
                                    f"--{dim.replace('_', '-')} to be a multiple of {block}, not {getattr(self, dim)}")


def byte_level_vocab(vocab: int) -> tuple[list[str], list[str]]:
    """(tokens, merges) of a deterministic byte-level BPE with exactly `vocab` tokens."""
    tokens, merges = sorted(pre_tokenizers.ByteLevel.alphabet()), []
    wanted = vocab - len(CONTROL_TOKENS)
    letters = "etaoinshrdlucmfwypvbgkjqxz"
    # tokens of two letters, then three, then four: over 475,000 (the 360M class needs 49,152)
    lefts = itertools.chain(letters, (a + b for a in letters for b in letters),
                            (a + b + c for a in letters for b in letters for c in letters))
    for left, right in itertools.product(lefts, letters):
        if len(tokens) >= wanted:
            break
        merges.append(f"{left} {right}")
        tokens.append(left + right)
    if len(tokens) < wanted:
        raise HardwireError(f"--vocab={vocab} is above the synthetic tokenizer's {len(tokens) + 2}")
    return tokens + list(CONTROL_TOKENS), merges


def write_synthetic(spec: SynthSpec, out: Path) -> Path:
    spec.check()
    out = Path(out)
    if out.is_dir():
        raise HardwireError(f"--out {out} is a directory; name the GGUF file to write")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        _write(spec, tmp)
        check_metadata(open_reader(tmp))  # refuse here what the loader (build, run, verify, eval) would refuse
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _write(spec: SynthSpec, tmp: Path) -> None:
    rng = np.random.default_rng(spec.seed)
    head_dim = spec.d_model // spec.heads
    kv_dim = spec.kv_heads * head_dim
    w = GGUFWriter(str(tmp), "llama")
    w.add_name(f"synthetic-{spec.layers}x{spec.d_model}-seed{spec.seed}")
    w.add_block_count(spec.layers)
    w.add_context_length(spec.context)
    w.add_embedding_length(spec.d_model)
    w.add_feed_forward_length(spec.d_ffn)
    w.add_head_count(spec.heads)
    w.add_head_count_kv(spec.kv_heads)
    w.add_rope_freq_base(spec.rope_theta)
    w.add_rope_dimension_count(head_dim)
    w.add_layer_norm_rms_eps(spec.rms_eps)
    w.add_vocab_size(spec.vocab)
    _add_tokenizer(w, spec.vocab)

    def linear(name: str, rows: int, cols: int, quant: str, scale: float = 1.0) -> None:
        data = (scale * spec.weight_scale * rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)
        _add(w, name, data, QUANTS[quant])

    def gains(name: str, n: int) -> None:
        w.add_tensor(name, (spec.gain_scale * (1.0 + 0.1 * rng.standard_normal(n))).astype(np.float32))

    embed = (spec.embed_scale * 0.5 * spec.weight_scale * rng.standard_normal((spec.vocab, spec.d_model)))
    embed = embed.astype(np.float32)
    _add(w, "token_embd.weight", embed, QUANTS[spec.embed_quant])
    for i in range(spec.layers):
        b = f"blk.{i}."
        gains(b + "attn_norm.weight", spec.d_model)
        linear(b + "attn_q.weight", spec.d_model, spec.d_model, spec.attn_quant)
        linear(b + "attn_k.weight", kv_dim, spec.d_model, spec.attn_quant)
        linear(b + "attn_v.weight", kv_dim, spec.d_model, spec.attn_quant)
        linear(b + "attn_output.weight", spec.d_model, spec.d_model, spec.attn_quant)
        gains(b + "ffn_norm.weight", spec.d_model)
        linear(b + "ffn_gate.weight", spec.d_ffn, spec.d_model, spec.ffn_quant, spec.ffn_scale)
        linear(b + "ffn_up.weight", spec.d_ffn, spec.d_model, spec.ffn_quant, spec.ffn_scale)
        linear(b + "ffn_down.weight", spec.d_model, spec.d_ffn, spec.ffn_quant, spec.ffn_scale)
    gains("output_norm.weight", spec.d_model)
    if spec.output_quant is not None:
        linear("output.weight", spec.vocab, spec.d_model, spec.output_quant)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _add(w: GGUFWriter, name: str, data: np.ndarray, qtype: QT) -> None:
    if qtype == QT.F32:
        w.add_tensor(name, data)
    elif qtype in GGUF_QUANTIZES:
        w.add_tensor(name, quantize(data, qtype), raw_dtype=qtype)
    else:
        w.add_tensor(name, ggml_quantize.quantize(data, qtype), raw_dtype=qtype)


def _add_tokenizer(w: GGUFWriter, vocab: int) -> None:
    tokens, merges = byte_level_vocab(vocab)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([3 if t in CONTROL_TOKENS else 1 for t in tokens])
    w.add_token_merges(merges)
    w.add_bos_token_id(tokens.index(CONTROL_TOKENS[0]))
    w.add_eos_token_id(tokens.index(CONTROL_TOKENS[1]))
    w.add_add_bos_token(False)
