"""llama.cpp's quantization recipes (`src/llama-quant.cpp`) for Llama models, and a requantizer.

A recipe names a default type; llama.cpp then gives some tensors more bits
and sends rows that its type cannot hold to a 32-weight fallback. For the
recipes here and a dense Llama model (not Falcon, no experts, not the 70B):

- the output head, or the token embedding when the head is tied to it: Q8_0
  if its rows are not a multiple of the default type's block, else Q6_K
  (a q8_0 recipe keeps Q8_0);
- attn_v: q3_k_m gives Q5_K to the first two layers, then Q4_K; q4_k_m and
  q5_k_m give Q6_K where `use_more_bits`;
- ffn_down: q3_k_m gives Q5_K below n/16, then Q4_K; q4_k_m and q5_k_m give
  Q6_K where `use_more_bits`;
- attn_output: q3_k_m gives Q4_K;
- then rows that are not a multiple of the chosen type's block fall back:
  Q2_K/Q3_K -> Q4_0, Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, and to F16
  if even those do not fit;
- 1-D tensors, norms and tensors whose names do not end in `weight` keep
  their type.

A tensor whose chosen type is its current type is copied byte for byte; any
other is dequantized to float32 (gguf) and quantized with ggml's reference
quantizers (`quantize.py`), as `llama-quantize --allow-requantize` does.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGUFReader, GGUFValueType, GGUFWriter
from gguf import GGMLQuantizationType as QT
from gguf import dequantize as gguf_dequantize

from .errors import HardwireError
from .quantize import quantize


@dataclass(frozen=True)
class Recipe:
    name: str
    ftype: int  # llama_ftype, written as general.file_type
    default: QT


RECIPES = {r.name: r for r in (
    Recipe("q4_0", 2, QT.Q4_0), Recipe("q4_1", 3, QT.Q4_1), Recipe("q8_0", 7, QT.Q8_0),
    Recipe("q5_0", 8, QT.Q5_0), Recipe("q5_1", 9, QT.Q5_1), Recipe("q3_k_s", 11, QT.Q3_K),
    Recipe("q3_k_m", 12, QT.Q3_K), Recipe("q4_k_m", 15, QT.Q4_K), Recipe("q5_k_m", 17, QT.Q5_K),
    Recipe("q6_k", 18, QT.Q6_K),
)}
FALLBACK = {QT.Q2_K: QT.Q4_0, QT.Q3_K: QT.Q4_0, QT.Q4_K: QT.Q5_0, QT.Q5_K: QT.Q5_1, QT.Q6_K: QT.Q8_0}
QUANTIZATION_VERSION = 2  # GGML_QNT_VERSION


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise HardwireError(f"unknown recipe '{name}' (known: {', '.join(RECIPES)})")
    return RECIPES[name]


def use_more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def block_size(qtype: QT) -> int:
    return GGML_QUANT_SIZES[qtype][0]


@dataclass(frozen=True)
class TensorInfo:
    name: str
    qtype: QT
    shape: tuple[int, ...]  # ggml order: ne[0] (the row length) first


class TypePlanner:
    """llama_tensor_get_type for one model, fed its tensors in llama.cpp's order (the layer counters follow it)."""

    def __init__(self, recipe: Recipe, tensors: list[TensorInfo], n_layers: int):
        self.recipe, self.n_layers = recipe, n_layers
        self.tied = not any(t.name == "output.weight" for t in tensors)
        self.n_attn_v = sum("attn_v.weight" in t.name for t in tensors)
        self.i_attn_v = self.i_ffn_down = 0

    def plan(self, t: TensorInfo) -> QT:
        if not _allows_quantization(t):
            return t.qtype
        new = self._recipe_type(t, self.recipe.default)
        return _fallback(new, t.shape[0])

    def _recipe_type(self, t: TensorInfo, new: QT) -> QT:
        r = self.recipe.name
        if t.name == "output.weight" or (self.tied and t.name == "token_embd.weight"):
            if t.shape[0] % block_size(new):
                return QT.Q8_0
            return new if new == QT.Q8_0 else QT.Q6_K
        if "attn_v.weight" in t.name:
            i, self.i_attn_v = self.i_attn_v, self.i_attn_v + 1
            if r == "q3_k_m":
                return QT.Q5_K if i < 2 else QT.Q4_K
            if r in ("q4_k_m", "q5_k_m") and use_more_bits(i, self.n_attn_v):
                return QT.Q6_K
            return new
        if "ffn_down" in t.name:
            i, self.i_ffn_down = self.i_ffn_down, self.i_ffn_down + 1
            if r == "q3_k_m":
                return QT.Q5_K if i < self.n_layers // 16 else QT.Q4_K
            if r in ("q4_k_m", "q5_k_m") and use_more_bits(i, self.n_layers):
                return QT.Q6_K
            return new
        if "attn_output.weight" in t.name and r == "q3_k_m":
            return QT.Q4_K
        return new


def _allows_quantization(t: TensorInfo) -> bool:
    return _n_dims(t.shape) >= 2 and t.name.endswith("weight") and "_norm.weight" not in t.name


def _n_dims(shape: tuple[int, ...]) -> int:
    """ggml_n_dims: trailing dimensions of 1 do not count."""
    return max((i + 1 for i, n in enumerate(shape) if n > 1), default=1)


def _fallback(qtype: QT, row: int) -> QT:
    if row % block_size(qtype) == 0:
        return qtype
    new = FALLBACK.get(qtype, qtype)
    return new if row % block_size(new) == 0 else QT.F16


def llama_order(names: list[str]) -> list[str]:
    """llama.cpp's tensor order (its loader's weight_name_comparer): by layer number, the others first, then name."""
    def key(name: str) -> tuple[int, str]:
        m = re.match(r"blk\.(\d+)\.", name)
        return (int(m.group(1)) if m else -1, name)
    return sorted(names, key=key)


def plan_types(recipe: Recipe, tensors: list[TensorInfo], n_layers: int) -> dict[str, QT]:
    """Each tensor's type, in llama.cpp's order (its layer counters follow that order)."""
    by_name = {t.name: t for t in tensors}
    planner = TypePlanner(recipe, tensors, n_layers)
    return {name: planner.plan(by_name[name]) for name in llama_order(list(by_name))}


# --- requantizing a GGUF file -----------------------------------------------------------------------

def reader_tensors(reader: GGUFReader) -> list[TensorInfo]:
    return [TensorInfo(t.name, t.tensor_type, tuple(int(n) for n in t.shape)) for t in reader.tensors]


def requantize(src: Path, recipe_name: str, out: Path, progress=None) -> dict[str, QT]:
    """Write `src` quantized under a recipe to `out`; returns the type of every tensor."""
    from .gguf_model import open_reader

    recipe = get_recipe(recipe_name)
    reader = open_reader(src)
    arch = _string_field(reader, "general.architecture")
    if arch != "llama":
        raise HardwireError(f"architecture '{arch}' is not supported (only 'llama')")
    n_layers = int(reader.fields["llama.block_count"].contents()) if "llama.block_count" in reader.fields else 0
    tensors = reader_tensors(reader)
    types = plan_types(recipe, tensors, n_layers)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    writer = GGUFWriter(str(tmp), arch)
    try:
        _copy_metadata(reader, writer, recipe)
        by_name = {t.name: t for t in reader.tensors}
        for n, name in enumerate(types):  # written in llama.cpp's order, as llama-quantize does
            if progress:
                progress(n, len(types), name)
            t = by_name[name]
            data, raw = _converted(t, types[name])
            writer.add_tensor(t.name, data, raw_dtype=raw)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    os.replace(tmp, out)
    return types


def _string_field(reader: GGUFReader, key: str) -> str:
    if key not in reader.fields:
        raise HardwireError(f"GGUF metadata is missing '{key}'")
    return str(reader.fields[key].contents())


def _copy_metadata(reader: GGUFReader, writer: GGUFWriter, recipe: Recipe) -> None:
    skip = {"general.architecture", "general.file_type", "general.quantization_version", "general.alignment"}
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key in skip:
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == GGUFValueType.ARRAY else None
        writer.add_key_value(key, field.contents(), kind, sub_type=sub)
    writer.add_quantization_version(QUANTIZATION_VERSION)
    writer.add_file_type(recipe.ftype)


def _converted(t, new: QT) -> tuple[np.ndarray, QT | None]:
    """The tensor's data for the writer: its own bytes when the type stays, else requantized."""
    rows_shape = tuple(int(n) for n in reversed(t.shape))  # numpy order
    if t.tensor_type == new:
        data = np.asarray(t.data)
        return data, (new if new not in (QT.F32, QT.F16) else None)
    x = _as_float(t).reshape(rows_shape)
    if new == QT.F32:
        return x, None
    if new == QT.F16:
        return x.astype(np.float16), None
    rows = x.reshape(-1, x.shape[-1])
    return quantize(rows, new).reshape(rows_shape[:-1] + (-1,)), new


def _as_float(t) -> np.ndarray:
    if t.tensor_type in (QT.F32, QT.F16):
        return np.asarray(t.data).astype(np.float32)
    try:
        return gguf_dequantize(np.asarray(t.data), t.tensor_type).astype(np.float32, copy=False)
    except NotImplementedError:
        raise HardwireError(f"tensor '{t.name}' has type {t.tensor_type.name}, which cannot be dequantized") from None
