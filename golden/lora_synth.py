"""Seeded synthetic LoRA adapters for a model's shapes, as a PEFT directory or a llama.cpp GGUF adapter.

Both writers draw the same A and B (in Hugging Face's row order) from the seed, so a PEFT
directory and a GGUF adapter written with the same spec hold the same adapter; the GGUF writer
permutes the q and k rows of B as llama.cpp's converter does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGUFWriter
from safetensors.numpy import save_file

from .errors import HardwireError
from .gguf_model import ModelConfig
from .lora import PEFT_CONFIG, PEFT_WEIGHTS, PROJECTIONS, permute_for_rope, projection_shape

SHORT_NAMES = {"q": "wq", "k": "wk", "v": "wv", "o": "wo", "gate": "w_gate", "up": "w_up", "down": "w_down"}
DTYPES = ("f32", "f16")  # safetensors.numpy writes no bf16


@dataclass(frozen=True)
class LoraSpec:
    rank: int = 8
    alpha: float = 16.0
    targets: tuple[str, ...] = tuple(SHORT_NAMES)  # short names: q k v o gate up down
    rank_pattern: tuple[tuple[str, int], ...] = ()  # (short name, rank) overrides, as PEFT's rank_pattern
    use_rslora: bool = False
    seed: int = 0
    b_std: float = 0.02  # B's standard deviation; A's is 1/sqrt(in), as PEFT's initialisation scale
    dtype: str = "f32"  # of the safetensors file
    # > 0: B's row i times 2**(i % b_octaves), so its blocks' exponents run over that many octaves (every
    # entry of the chip's LoRA exponent table, with a b_std small enough)
    b_octaves: int = 0

    def check(self) -> None:
        unknown = sorted(set(self.targets) - set(SHORT_NAMES)) + sorted(
            {n for n, _ in self.rank_pattern} - set(self.targets))
        if unknown:
            raise HardwireError(f"unknown or untargeted module(s) {', '.join(unknown)} "
                                f"(targets are {', '.join(SHORT_NAMES)})")
        if not self.targets:
            raise HardwireError("--targets must name at least one projection")
        if min([self.rank, *(r for _, r in self.rank_pattern)]) < 1:
            raise HardwireError("LoRA ranks must be at least 1")
        if self.b_octaves < 0:
            raise HardwireError(f"--b-octaves {self.b_octaves} must not be negative")
        if self.dtype not in DTYPES:
            raise HardwireError(f"--dtype {self.dtype} is not one of {', '.join(DTYPES)}")

    def rank_of(self, short: str) -> int:
        return dict(self.rank_pattern).get(short, self.rank)


def draw(spec: LoraSpec, config: ModelConfig) -> dict:
    """(layer, projection) -> (A (r, in), B (out, r)) float32, B in Hugging Face's row order."""
    spec.check()
    rng = np.random.default_rng(spec.seed)
    pairs = {}
    for layer in range(config.n_layers):
        for short in spec.targets:
            proj = SHORT_NAMES[short]
            out, inp = projection_shape(config, proj)
            r = spec.rank_of(short)
            a = (rng.standard_normal((r, inp)) / np.sqrt(inp)).astype(np.float32)
            b = spec.b_std * rng.standard_normal((out, r))
            if spec.b_octaves:
                b *= np.exp2(np.arange(out) % spec.b_octaves)[:, None]
            b = b.astype(np.float32)
            pairs[(layer, proj)] = (a, b)
    return pairs


def _hf_module(layer: int, proj: str) -> str:
    return f"model.layers.{layer}.{PROJECTIONS[proj][0]}"


def write_peft(spec: LoraSpec, config: ModelConfig, out: Path) -> Path:
    pairs = draw(spec, config)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for (layer, proj), (a, b) in pairs.items():
        key = f"base_model.model.{_hf_module(layer, proj)}"
        tensors[f"{key}.lora_A.weight"] = _encode(a, spec.dtype)
        tensors[f"{key}.lora_B.weight"] = _encode(b, spec.dtype)
    save_file(tensors, str(out / PEFT_WEIGHTS))
    names = {short: PROJECTIONS[SHORT_NAMES[short]][0].split(".")[-1] for short in SHORT_NAMES}
    config_json = {
        "peft_type": "LORA", "r": spec.rank, "lora_alpha": spec.alpha, "use_rslora": spec.use_rslora,
        "target_modules": [names[s] for s in spec.targets], "fan_in_fan_out": False, "bias": "none",
        "rank_pattern": {names[s]: r for s, r in spec.rank_pattern}, "alpha_pattern": {},
        "base_model_name_or_path": config.name, "task_type": "CAUSAL_LM",
    }
    (out / PEFT_CONFIG).write_text(json.dumps(config_json, indent=2) + "\n", encoding="utf-8")
    return out


def _encode(x: np.ndarray, dtype: str) -> np.ndarray:
    return x.astype(np.float16) if dtype == "f16" else x


def write_gguf(spec: LoraSpec, config: ModelConfig, out: Path) -> Path:
    """The same adapter as write_peft, as llama.cpp's convert_lora_to_gguf.py would write it (F32)."""
    if spec.use_rslora:
        raise HardwireError("a GGUF adapter cannot record rsLoRA (llama.cpp's converter ignores use_rslora)")
    pairs = draw(spec, config)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    w = GGUFWriter(str(tmp), "llama")
    w.add_type("adapter")
    w.add_string("adapter.type", "lora")
    w.add_float32("adapter.lora.alpha", float(spec.alpha))
    w.add_name(f"synthetic-lora-r{spec.rank}-seed{spec.seed}")
    for (layer, proj), (a, b) in pairs.items():
        if proj in ("wq", "wk"):
            b = permute_for_rope(b, config.n_heads if proj == "wq" else config.n_kv_heads)
        name = f"blk.{layer}.{PROJECTIONS[proj][1]}.weight"
        w.add_tensor(f"{name}.lora_a", np.ascontiguousarray(a))
        w.add_tensor(f"{name}.lora_b", np.ascontiguousarray(b))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    tmp.replace(out)
    return out
