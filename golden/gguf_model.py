"""GGUF loading with the `gguf` package, keeping weights in their quantized block form.

A linear weight is held as GGUF blocks of 32: integer codes `q`, the fp16
scale `d` and (Q4_1 only) the fp16 offset `m`, so that
    w = fp16(d) * q + fp16(m)
with q signed (Q4_0's offset of 8 is folded in). Nothing is converted to float
here; the float reference dequantizes on its own.

The loader reads every format of llama.cpp's standard recipes that the chip
prints (`SUPPORTED_QUANTS`, the default): Q8_0, Q4_0 and Q4_1 as `QuantTensor`,
the others (Q5_0, Q5_1, Q2_K..Q6_K) as `kquants.BlockFields`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as QT
from gguf import GGUFReader

from .errors import HardwireError
from .kquants import DECODABLE, BlockFields, format_names
from .kquants import decode as decode_fields
from .spec import BLOCK

BLOCK32_QUANTS = (QT.Q8_0, QT.Q4_0, QT.Q4_1)  # held as QuantTensor
SUPPORTED_QUANTS = DECODABLE
FLOAT_TYPES = (QT.F32, QT.F16)
FP16_EXPONENT = np.uint16(0x7C00)  # all ones: an infinite or NaN fp16
TOKENIZER_ARRAYS = ("tokens", "merges")  # what the byte-level BPE tokenizer cannot do without


@dataclass(frozen=True)
class ModelConfig:
    n_layers: int
    d_model: int
    d_ffn: int
    n_heads: int
    n_kv_heads: int
    vocab: int
    context: int
    rope_theta: float
    rms_eps: float
    name: str = "model"

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def group(self) -> int:
        """Query heads per KV head (GQA)."""
        return self.n_heads // self.n_kv_heads


@dataclass
class QuantTensor:
    """A (rows, cols) linear weight as GGUF blocks along cols. rows = output features."""

    qtype: QT
    q: np.ndarray  # (rows, nb, 32) int8 signed codes
    d_bits: np.ndarray  # (rows, nb) uint16 fp16 bit patterns
    m_bits: np.ndarray | None  # (rows, nb) uint16, Q4_1 only

    @property
    def shape(self) -> tuple[int, int]:
        return self.q.shape[0], self.q.shape[1] * BLOCK

    def dequantize(self) -> np.ndarray:
        d = self.d_bits.view(np.float16).astype(np.float32)[..., None]
        w = d * self.q.astype(np.float32)
        if self.m_bits is not None:
            w = w + self.m_bits.view(np.float16).astype(np.float32)[..., None]
        return w.reshape(self.shape)


Weight = QuantTensor | BlockFields  # BlockFields only when loaded with formats beyond the chip's


@dataclass
class LayerWeights:
    attn_norm: np.ndarray  # float32 gains
    wq: Weight
    wk: Weight
    wv: Weight
    wo: Weight
    ffn_norm: np.ndarray
    w_gate: Weight
    w_up: Weight
    w_down: Weight


@dataclass
class Model:
    config: ModelConfig
    embed: Weight  # (vocab, d_model); also the LM head when output.weight is absent
    layers: list[LayerWeights]
    out_norm: np.ndarray
    lm_head: Weight
    tokenizer_meta: dict = field(default_factory=dict)
    path: Path | None = None


# --- block decoding ---------------------------------------------------------------------------

def decode_blocks(raw: np.ndarray, qtype: QT, rows: int, cols: int) -> QuantTensor:
    """Split a GGUF byte tensor (rows, bytes_per_row) into codes and fp16 scale bit patterns."""
    nb = cols // BLOCK
    raw = np.ascontiguousarray(raw, dtype=np.uint8).reshape(rows, nb, -1)
    d_bits = raw[..., 0:2].copy().view(np.uint16)[..., 0]
    if qtype == QT.Q8_0:
        return QuantTensor(qtype, raw[..., 2:34].view(np.int8).copy(), d_bits, None)
    if qtype == QT.Q4_0:
        return QuantTensor(qtype, _unpack_nibbles(raw[..., 2:18]) - 8, d_bits, None)
    if qtype == QT.Q4_1:
        m_bits = raw[..., 2:4].copy().view(np.uint16)[..., 0]
        return QuantTensor(qtype, _unpack_nibbles(raw[..., 4:20]), d_bits, m_bits)
    raise HardwireError(f"unsupported quant type {qtype.name} (supported: Q8_0, Q4_0, Q4_1)")


def _unpack_nibbles(packed: np.ndarray) -> np.ndarray:
    # ggml packs element j in the low nibble of byte j and element j+16 in its high nibble
    lo = (packed & 0x0F).astype(np.int8)
    hi = (packed >> 4).astype(np.int8)
    return np.concatenate([lo, hi], axis=-1)


# --- reading a file ---------------------------------------------------------------------------

def _field(reader: GGUFReader, key: str, default=None):
    f = reader.fields.get(key)
    if f is None:
        if default is None:
            raise HardwireError(f"GGUF metadata is missing '{key}'")
        return default
    return f.contents()


class _PlainArrayReader(GGUFReader):
    """GGUFReader over a plain ndarray view of its memmap: gguf slices the file once per array
    element, and numpy.memmap's per-slice bookkeeping triples the time of a 49k-token vocabulary."""

    @property
    def data(self) -> np.ndarray:
        return self._data

    @data.setter
    def data(self, mapped: np.ndarray) -> None:
        self._data = np.asarray(mapped)  # the same pages, no copy


def open_reader(path: Path) -> GGUFReader:
    path = Path(path)
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise HardwireError(f"{path}: cannot be read ({exc.strerror})") from None
    if magic != b"GGUF":
        raise HardwireError(f"{path}: not a GGUF file (bad magic {magic!r})")
    try:
        return _PlainArrayReader(path)
    except HardwireError:
        raise
    except ValueError as exc:
        if "is not a multiple of" in str(exc):  # a quantized tensor's rows do not fill whole blocks
            raise HardwireError(f"{path}: {exc}") from None
        raise HardwireError(f"{path}: truncated or corrupt GGUF (ValueError: {exc})") from None
    except Exception as exc:  # gguf raises assorted errors on truncated files
        raise HardwireError(f"{path}: truncated or corrupt GGUF ({type(exc).__name__}: {exc})") from None


def read_config(reader: GGUFReader) -> ModelConfig:
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise HardwireError(f"architecture '{arch}' is not supported (only 'llama')")
    try:
        cfg = _config(reader)
    except (TypeError, ValueError, OverflowError) as exc:
        raise HardwireError(f"GGUF metadata holds a value of the wrong kind ({exc})") from None
    _check_dims(cfg)
    return cfg


def _config(reader: GGUFReader) -> ModelConfig:
    p = "llama."
    n_heads = int(_field(reader, p + "attention.head_count"))
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    vocab = int(_field(reader, p + "vocab_size", len(tokens.data) if tokens else None))
    return ModelConfig(
        n_layers=int(_field(reader, p + "block_count")),
        d_model=int(_field(reader, p + "embedding_length")),
        d_ffn=int(_field(reader, p + "feed_forward_length")),
        n_heads=n_heads,
        n_kv_heads=int(_field(reader, p + "attention.head_count_kv", n_heads)),
        vocab=vocab,
        context=int(_field(reader, p + "context_length")),
        rope_theta=float(_field(reader, p + "rope.freq_base", 10000.0)),
        rms_eps=float(_field(reader, p + "attention.layer_norm_rms_epsilon")),
        name=str(_field(reader, "general.name", "model")),
    )


def _check_dims(cfg: ModelConfig) -> None:
    for name in ("n_layers", "d_model", "d_ffn", "n_heads", "n_kv_heads", "vocab", "context"):
        if getattr(cfg, name) < 1:
            raise HardwireError(f"GGUF metadata gives {name}={getattr(cfg, name)}; it must be at least 1")
    for name in ("rope_theta", "rms_eps"):
        value = getattr(cfg, name)
        if not (math.isfinite(value) and value > 0):
            raise HardwireError(f"GGUF metadata gives {name}={value}; it must be a finite number above 0")
    for name in ("d_model", "d_ffn"):
        value = getattr(cfg, name)
        if value % BLOCK:
            raise HardwireError(f"{name}={value} is not divisible by the block size {BLOCK}")
    if cfg.d_model % cfg.n_heads or cfg.n_heads % cfg.n_kv_heads:
        raise HardwireError(
            f"heads do not divide evenly: d_model={cfg.d_model}, heads={cfg.n_heads}, kv_heads={cfg.n_kv_heads}"
        )
    if cfg.head_dim % 2:
        raise HardwireError(f"head_dim={cfg.head_dim} must be even for RoPE pairs")


def _tensor_map(reader: GGUFReader) -> dict:
    return {t.name: t for t in reader.tensors}


def _quant(tensors: dict, name: str, rows: int, cols: int, formats=SUPPORTED_QUANTS) -> Weight:
    t = _get(tensors, name)
    if t.tensor_type not in formats:
        raise HardwireError(f"tensor '{name}' has unsupported quant type {t.tensor_type.name} "
                            f"(supported: {format_names(formats)})")
    got = tuple(int(x) for x in t.shape)  # GGUF lists (cols, rows)
    if got != (cols, rows):
        raise HardwireError(f"tensor '{name}' has shape {got[::-1]}, expected {(rows, cols)}")
    if t.tensor_type not in BLOCK32_QUANTS:
        tensor = decode_fields(t.data, t.tensor_type, rows, cols, name=f"tensor '{name}'")
        scales = (("scale", tensor.d_bits), ("offset", tensor.dmin_bits))
    else:
        tensor = decode_blocks(t.data, t.tensor_type, rows, cols)
        scales = (("scale", tensor.d_bits), ("offset", tensor.m_bits))
    for label, bits in scales:
        if bits is not None and np.any(bits & FP16_EXPONENT == FP16_EXPONENT):
            row = int(np.argwhere(bits & FP16_EXPONENT == FP16_EXPONENT)[0][0])
            raise HardwireError(f"tensor '{name}' has a NaN or infinite block {label} (row {row})")
    return tensor


def _vector(tensors: dict, name: str, n: int) -> np.ndarray:
    t = _get(tensors, name)
    if t.tensor_type not in FLOAT_TYPES:
        raise HardwireError(f"norm tensor '{name}' must be F32 or F16, not {t.tensor_type.name}")
    v = np.asarray(t.data).astype(np.float32).reshape(-1)
    if v.size != n:
        raise HardwireError(f"tensor '{name}' has {v.size} elements, expected {n}")
    if not np.all(np.isfinite(v)):
        raise HardwireError(f"tensor '{name}' holds NaN or infinite values")
    return v


def _get(tensors: dict, name: str):
    if name not in tensors:
        raise HardwireError(f"GGUF is missing tensor '{name}'")
    return tensors[name]


def load_model(path: Path, formats=SUPPORTED_QUANTS) -> Model:
    """The model; `formats` are the weight types accepted (default: the ones the chip prints)."""
    reader = open_reader(path)
    cfg = read_config(reader)
    t = _tensor_map(reader)
    d, f, kv = cfg.d_model, cfg.d_ffn, cfg.n_kv_heads * cfg.head_dim

    def quant(name: str, rows: int, cols: int) -> Weight:
        return _quant(t, name, rows, cols, formats)

    layers = []
    for i in range(cfg.n_layers):
        b = f"blk.{i}."
        layers.append(LayerWeights(
            attn_norm=_vector(t, b + "attn_norm.weight", d),
            wq=quant(b + "attn_q.weight", d, d),
            wk=quant(b + "attn_k.weight", kv, d),
            wv=quant(b + "attn_v.weight", kv, d),
            wo=quant(b + "attn_output.weight", d, d),
            ffn_norm=_vector(t, b + "ffn_norm.weight", d),
            w_gate=quant(b + "ffn_gate.weight", f, d),
            w_up=quant(b + "ffn_up.weight", f, d),
            w_down=quant(b + "ffn_down.weight", d, f),
        ))
    embed = quant("token_embd.weight", cfg.vocab, d)
    lm_head = quant("output.weight", cfg.vocab, d) if "output.weight" in t else embed
    return Model(cfg, embed, layers, _vector(t, "output_norm.weight", d), lm_head,
                 tokenizer_meta=_tokenizer_meta(reader, cfg.vocab), path=Path(path))


def check_metadata(reader: GGUFReader) -> ModelConfig:
    """The model's configuration and tokenizer metadata, checked as load_model checks them."""
    cfg = read_config(reader)
    _tokenizer_meta(reader, cfg.vocab)
    return cfg


def _tokenizer_meta(reader: GGUFReader, vocab: int) -> dict:
    meta = {}
    for key in ("tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens",
                "tokenizer.ggml.merges", "tokenizer.ggml.token_type", "tokenizer.ggml.bos_token_id",
                "tokenizer.ggml.eos_token_id", "tokenizer.ggml.add_bos_token"):
        if key in reader.fields:
            meta[key.removeprefix("tokenizer.ggml.")] = reader.fields[key].contents()
    for name in TOKENIZER_ARRAYS:
        if name == "merges" and "tokenizer.ggml.merges" not in reader.fields:
            meta[name] = []  # GGUFWriter leaves an empty array out: a vocabulary of the bytes alone has no merges
        if not isinstance(meta.get(name), list) or not all(isinstance(x, str) for x in meta[name]):
            raise HardwireError(f"GGUF metadata lacks the tokenizer array 'tokenizer.ggml.{name}'")
    if len(meta["tokens"]) < vocab:
        raise HardwireError(f"GGUF tokenizer has {len(meta['tokens'])} tokens, fewer than the vocabulary's {vocab}")
    return meta
