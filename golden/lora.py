"""LoRA adapters: PEFT directories and llama.cpp GGUF adapters read into one typed record.

An adapter adds `scale * B @ A` to a projection's weight, `y = W x + scale * B (A x)`,
on any of the seven projections of any layer, each with its own rank. The record
holds float32 A (rank, in) and B (out, rank) with B's rows in the GGUF layout:
q and k rows are permuted for RoPE on adjacent pairs, as llama.cpp's converter
(convert_lora_to_gguf.py, through convert_hf_to_gguf.py's LlamaModel.permute)
permutes them, so an adapter applies to the model's GGUF weights as they are.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import safetensors
from gguf import GGMLQuantizationType as QT
from gguf import dequantize

from .errors import HardwireError
from .float_ref import FloatModel
from .gguf_model import ModelConfig, open_reader

# LayerWeights field -> (PEFT module path inside a layer, GGUF tensor name)
PROJECTIONS = {
    "wq": ("self_attn.q_proj", "attn_q"),
    "wk": ("self_attn.k_proj", "attn_k"),
    "wv": ("self_attn.v_proj", "attn_v"),
    "wo": ("self_attn.o_proj", "attn_output"),
    "w_gate": ("mlp.gate_proj", "ffn_gate"),
    "w_up": ("mlp.up_proj", "ffn_up"),
    "w_down": ("mlp.down_proj", "ffn_down"),
}
PEFT_CONFIG, PEFT_WEIGHTS, PEFT_PICKLE = "adapter_config.json", "adapter_model.safetensors", "adapter_model.bin"
_PEFT_KEY = re.compile(r"^base_model\.model\.model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.lora_([AB])\.weight$")
_GGUF_KEY = re.compile(r"^blk\.(\d+)\.(\w+)\.weight\.lora_([ab])$")
_SAFETENSORS_FLOATS = {"F32": np.float32, "F16": np.float16, "F64": np.float64}
_BY_PEFT_NAME = {peft: proj for proj, (peft, _) in PROJECTIONS.items()}


@dataclass(frozen=True)
class LoraPair:
    """One projection's adapter: delta W = scale * b @ a."""

    a: np.ndarray  # (rank, in) float32
    b: np.ndarray  # (out, rank) float32, rows in the GGUF layout
    scale: float  # alpha / rank, or alpha / sqrt(rank) with rsLoRA; the user scale is applied on top

    @property
    def rank(self) -> int:
        return self.a.shape[0]


@dataclass(frozen=True)
class Adapter:
    path: Path
    source: str  # "peft" or "gguf"
    pairs: dict = field(default_factory=dict)  # (layer, projection) -> LoraPair
    user_scale: float = 1.0

    def scale_of(self, layer: int, proj: str) -> float:
        """The factor on B @ A: the adapter's own scale times the user scale."""
        return self.pairs[(layer, proj)].scale * self.user_scale

    def delta(self, layer: int, proj: str) -> np.ndarray | None:
        """The merged weight change scale * B @ A (out, in), float64; None where the adapter is absent."""
        pair = self.pairs.get((layer, proj))
        if pair is None:
            return None
        return self.scale_of(layer, proj) * (pair.b.astype(np.float64) @ pair.a.astype(np.float64))

    @property
    def max_rank(self) -> int:
        return max((p.rank for p in self.pairs.values()), default=0)

    def describe(self) -> dict:
        ranks = sorted({p.rank for p in self.pairs.values()})
        return {"path": str(self.path), "format": self.source, "targets": len(self.pairs),
                "ranks": ranks, "user_scale": self.user_scale}


def merged_float_model(model, adapter: Adapter):
    """The float reference of the model with the adapter merged into its weights, W + s B A."""
    fm = FloatModel(model)
    for (layer, proj) in adapter.pairs:
        merged = getattr(fm.layers[layer], proj) + adapter.delta(layer, proj)
        setattr(fm.layers[layer], proj, merged.astype(np.float32))
    return fm


def permute_for_rope(rows: np.ndarray, n_head: int) -> np.ndarray:
    """HF's rotate-half row order -> GGUF's adjacent-pair order, per head (LlamaModel.permute)."""
    per = rows.shape[0] // n_head // 2
    return rows.reshape(n_head, 2, per, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)


def load_adapter(path: Path, config: ModelConfig, user_scale: float = 1.0) -> Adapter:
    """Read a PEFT directory or a GGUF adapter file and check it against the model's shapes."""
    path = Path(path)
    if not math.isfinite(user_scale):
        raise HardwireError(f"--lora-scale {user_scale} is not a finite number")
    if path.is_dir():
        adapter = _read_peft(path, config)
    elif path.is_file():
        adapter = _read_gguf(path, config)
    else:
        raise HardwireError(f"LoRA adapter {path} does not exist (expected a PEFT directory or a GGUF file)")
    adapter = Adapter(adapter.path, adapter.source, adapter.pairs, float(user_scale))
    _check(adapter)
    return adapter


# --- PEFT ----------------------------------------------------------------------------------------

def _read_peft(folder: Path, config: ModelConfig) -> Adapter:
    cfg_path, weights = folder / PEFT_CONFIG, folder / PEFT_WEIGHTS
    if not cfg_path.is_file():
        raise HardwireError(f"{folder}: no {PEFT_CONFIG} (a PEFT adapter directory needs it)")
    if not weights.is_file():
        if (folder / PEFT_PICKLE).is_file():
            raise HardwireError(f"{folder / PEFT_PICKLE}: a pickle, which hardwire does not load; "
                                f"save the adapter as {PEFT_WEIGHTS}")
        raise HardwireError(f"{folder}: no {PEFT_WEIGHTS}")
    lcfg = _read_json(cfg_path)
    _check_peft_config(cfg_path, lcfg)
    tensors = _read_safetensors(weights)
    halves: dict = {}
    for key, value in tensors.items():
        m = _PEFT_KEY.match(key)
        if m is None:
            raise HardwireError(f"{weights}: tensor '{key}' is not a LoRA A/B weight of a Llama projection")
        layer, block, module, half = int(m[1]), m[2], m[3], m[4]
        proj = _BY_PEFT_NAME.get(f"{block}.{module}")
        if proj is None:
            raise HardwireError(f"{weights}: unknown target module '{block}.{module}' "
                                f"(supported: {', '.join(p for p, _ in PROJECTIONS.values())})")
        halves.setdefault((layer, proj), {})[half] = value
    pairs = {}
    for (layer, proj), ab in sorted(halves.items()):
        module_key = f"model.layers.{layer}.{PROJECTIONS[proj][0]}"
        if set(ab) != {"A", "B"}:
            raise HardwireError(f"{weights}: {module_key} has lora_{''.join(ab)} without its partner")
        a, b = ab["A"], ab["B"]
        _check_pair(weights, module_key, a, b, config, layer, proj)
        rank = a.shape[0]
        want = int(_pattern_value(lcfg.get("rank_pattern") or {}, module_key, lcfg["r"]))
        if rank != want:
            raise HardwireError(f"{weights}: {module_key} has rank {rank}, but {PEFT_CONFIG} says {want}")
        alpha = float(_pattern_value(lcfg.get("alpha_pattern") or {}, module_key, lcfg["lora_alpha"]))
        scale = alpha / math.sqrt(rank) if lcfg.get("use_rslora") else alpha / rank
        if proj in ("wq", "wk"):
            b = permute_for_rope(b, config.n_heads if proj == "wq" else config.n_kv_heads)
        pairs[(layer, proj)] = LoraPair(a, np.ascontiguousarray(b), scale)
    if not pairs:
        raise HardwireError(f"{weights}: holds no LoRA weights")
    return Adapter(folder, "peft", pairs)


def _check_peft_config(path: Path, lcfg: dict) -> None:
    for key in ("r", "lora_alpha"):
        if not isinstance(lcfg.get(key), int | float) or isinstance(lcfg.get(key), bool):
            raise HardwireError(f"{path}: '{key}' is missing or not a number")
    if lcfg["r"] < 1:
        raise HardwireError(f"{path}: rank r={lcfg['r']} must be at least 1")
    peft_type = lcfg.get("peft_type", "LORA")
    if peft_type != "LORA":
        raise HardwireError(f"{path}: peft_type {peft_type} is not LORA")
    if lcfg.get("use_dora"):
        raise HardwireError(f"{path}: DoRA adapters (use_dora) are not supported, only plain LoRA")
    if lcfg.get("modules_to_save"):
        raise HardwireError(f"{path}: modules_to_save {lcfg['modules_to_save']} replaces whole modules, "
                            "which a printed chip cannot do")
    if lcfg.get("bias", "none") != "none" or lcfg.get("lora_bias"):
        raise HardwireError(f"{path}: adapters with bias terms are not supported (bias='none' only)")
    targets = lcfg.get("target_modules")
    names = {p.split(".")[-1] for p, _ in PROJECTIONS.values()}
    if isinstance(targets, list):
        unknown = sorted(set(targets) - names)
        if unknown:
            raise HardwireError(f"{path}: unknown target module(s) {', '.join(unknown)} "
                                f"(supported: {', '.join(sorted(names))})")
    # fan_in_fan_out concerns base weights stored (in, out) (GPT-2's Conv1D). Llama's projections are
    # nn.Linear, for which PEFT itself resets it to False: A and B keep their shapes, checked below.


def _pattern_value(patterns: dict, module_key: str, default):
    """PEFT's rank_pattern/alpha_pattern lookup: the first key matching the module name as a suffix."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?{key}$", module_key):
            return value
    return default


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HardwireError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise HardwireError(f"{path}: not a JSON object")
    return data


def _read_safetensors(path: Path) -> dict:
    try:
        entries = safetensors.deserialize(path.read_bytes())
    except Exception as exc:  # the library raises SafetensorError and assorted others on bad files
        raise HardwireError(f"{path}: not a valid safetensors file ({exc})") from None
    out = {}
    for name, entry in entries:
        out[name] = _safetensors_array(path, name, entry)
    return out


def _safetensors_array(path: Path, name: str, entry: dict) -> np.ndarray:
    dtype, shape, raw = entry["dtype"], tuple(entry["shape"]), bytes(entry["data"])
    if dtype == "BF16":  # numpy has no bfloat16: its bits are the top half of a float32
        values = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
    elif dtype in _SAFETENSORS_FLOATS:
        values = np.frombuffer(raw, np.dtype(_SAFETENSORS_FLOATS[dtype]).newbyteorder("<"))
    else:
        raise HardwireError(f"{path}: tensor '{name}' has dtype {dtype}; LoRA weights must be F32, F16 or BF16")
    return values.astype(np.float32).reshape(shape)


# --- GGUF ----------------------------------------------------------------------------------------

def _read_gguf(path: Path, config: ModelConfig) -> Adapter:
    reader = open_reader(path)
    kind = _gguf_string(reader, "general.type")
    if kind != "adapter":
        raise HardwireError(f"{path}: a GGUF {kind or 'model'}, not a LoRA adapter (general.type = adapter)")
    if _gguf_string(reader, "adapter.type") != "lora":
        raise HardwireError(f"{path}: adapter.type is {_gguf_string(reader, 'adapter.type')!r}, not 'lora'")
    arch = _gguf_string(reader, "general.architecture")
    if arch != "llama":
        raise HardwireError(f"{path}: an adapter for architecture '{arch}', not 'llama'")
    alpha_field = reader.fields.get("adapter.lora.alpha")
    if alpha_field is None:
        raise HardwireError(f"{path}: adapter.lora.alpha is missing")
    alpha = float(alpha_field.contents())
    gguf_names = {g: p for p, (_, g) in PROJECTIONS.items()}
    halves: dict = {}
    for t in reader.tensors:
        m = _GGUF_KEY.match(t.name)
        if m is None:
            raise HardwireError(f"{path}: tensor '{t.name}' is not a LoRA tensor of a layer projection "
                                "(blk.N.<name>.weight.lora_a/lora_b)")
        proj = gguf_names.get(m[2])
        if proj is None:
            raise HardwireError(f"{path}: unknown target module '{m[2]}' "
                                f"(supported: {', '.join(gguf_names)})")
        halves.setdefault((int(m[1]), proj), {})[m[3]] = _gguf_array(path, t)
    pairs = {}
    for (layer, proj), ab in sorted(halves.items()):
        name = f"blk.{layer}.{PROJECTIONS[proj][1]}.weight"
        if set(ab) != {"a", "b"}:
            raise HardwireError(f"{path}: {name} has lora_{''.join(ab)} without its partner")
        _check_pair(path, name, ab["a"], ab["b"], config, layer, proj)
        rank = ab["b"].shape[1]  # llama.cpp: lora_b's ne[0]
        # llama-adapter.cpp: scale = alpha / rank, or 1 when alpha is 0; rsLoRA is not recorded in GGUF
        pairs[(layer, proj)] = LoraPair(ab["a"], ab["b"], alpha / rank if alpha else 1.0)
    if not pairs:
        raise HardwireError(f"{path}: holds no LoRA tensors")
    return Adapter(path, "gguf", pairs)


def _gguf_string(reader, key: str) -> str | None:
    f = reader.fields.get(key)
    return None if f is None else str(f.contents())


def _gguf_array(path: Path, t) -> np.ndarray:
    if t.tensor_type not in (QT.F32, QT.F16, QT.BF16, QT.Q8_0):
        raise HardwireError(f"{path}: tensor '{t.name}' is {t.tensor_type.name}; "
                            "LoRA tensors must be F32, F16, BF16 or Q8_0")
    shape = tuple(int(x) for x in reversed(t.shape))  # GGUF lists ne (in, r); numpy is (r, in)
    return np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(shape)


# --- checks --------------------------------------------------------------------------------------

def _check_pair(path: Path, name: str, a: np.ndarray, b: np.ndarray, config: ModelConfig, layer: int,
                proj: str) -> None:
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1] or a.shape[0] < 1:
        raise HardwireError(f"{path}: {name} has A {a.shape} and B {b.shape}, not (r, in) and (out, r)")
    if layer >= config.n_layers:
        raise HardwireError(f"{path}: {name}: the model has only {config.n_layers} layers "
                            "(an adapter for another model?)")
    out, inp = projection_shape(config, proj)
    if (b.shape[0], a.shape[1]) != (out, inp):
        raise HardwireError(f"{path}: {name} is {b.shape[0]}x{a.shape[1]}, the model's projection is "
                            f"{out}x{inp} (an adapter for another model?)")
    for half, m in (("A", a), ("B", b)):
        if not np.isfinite(m).all():
            raise HardwireError(f"{path}: {name} lora_{half} holds NaN or inf")


def projection_shape(config: ModelConfig, proj: str) -> tuple[int, int]:
    """(out, in) of a projection."""
    d, f, kv = config.d_model, config.d_ffn, config.n_kv_heads * config.head_dim
    return {"wq": (d, d), "wk": (kv, d), "wv": (kv, d), "wo": (d, d),
            "w_gate": (f, d), "w_up": (f, d), "w_down": (d, f)}[proj]


def _check(adapter: Adapter) -> None:
    for (layer, proj), pair in adapter.pairs.items():
        if not math.isfinite(pair.scale * adapter.user_scale):
            raise HardwireError(f"{adapter.path}: layer {layer} {PROJECTIONS[proj][0]}: the scale "
                                f"{pair.scale} x {adapter.user_scale} is not finite")
