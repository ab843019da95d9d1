"""LoRA fidelity on a real model: a seeded synthetic adapter on all seven projections of every layer.

Measures, over the first N tokens of the shipped evaluation text:
- the float reference with the adapter unmerged (y = W x + s B (A x)) against the float model with the
  adapter merged into its weights (W + s B A): perplexity within 0.5%;
- the integer reference (the chip's spec, adapter in its SRAM format) against that float path:
  ppl_int <= 1.01 x ppl_float and top-1 agreement >= 0.97;
- how much the adapter changes the model: the base float perplexity and its top-1 agreement with the
  adapted float path;
- against llama.cpp, when tests/data/llama_cpp_perplexity.json holds its figures for the same adapter
  (written as a GGUF adapter by `hardwire synth-lora --format gguf`, applied through llama-cpp-python's
  `lora_path`; tools/record_llama_cpp_perplexity.py) over the same tokens: the float path with the
  adapter is within the margin the base model has against llama.cpp. The margin is the base float
  path's relative distance to llama.cpp's perplexity of the file as llama.cpp runs it (8-bit
  activations: the brief's bar, "as faithful as llama.cpp"); the adapter's distance is measured on the
  same weights dequantized to F32 with the adapter, which leaves llama.cpp's 8-bit activations out and
  so compares the adapter's arithmetic alone. All four distances are reported.

    python tools/lora_fidelity.py --model smollm2-135m --tokens 1000 --rank 16 --json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from importlib.resources import files
from pathlib import Path

from hardwire.golden.cache import sha256_of
from hardwire.golden.evaluate import evaluate, float_perplexity, ids_digest, tokens_for_eval
from hardwire.golden.float_ref import FloatModel
from hardwire.golden.gguf_model import load_model
from hardwire.golden.lora import load_adapter, merged_float_model
from hardwire.golden.lora_synth import LoraSpec, write_gguf, write_peft
from hardwire.golden.models import resolve_model

BOUNDS = {"merged_rel": 0.005, "int_over_float": 1.01, "top1": 0.97}
RECORDED = Path(__file__).resolve().parent.parent / "tests" / "data" / "llama_cpp_perplexity.json"


def measure(model_name: str, tokens: int, spec: LoraSpec, user_scale: float, recorded: dict) -> dict:
    model = load_model(resolve_model(model_name))
    text = files("hardwire.golden").joinpath("data/eval_en.txt").read_text(encoding="utf-8")
    ids = tokens_for_eval(model, text, tokens)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        adapter = load_adapter(write_peft(spec, model.config, Path(tmp) / "adapter"), model.config, user_scale)
        gguf_adapter = write_gguf(spec, model.config, Path(tmp) / "adapter.gguf")
        digests = {"adapter": sha256_of(gguf_adapter), "model": sha256_of(resolve_model(model_name))}
    result = evaluate(model, ids, adapter=adapter)
    ppl_merged, _ = float_perplexity(merged_float_model(model, adapter), ids)
    ppl_base, top_base = float_perplexity(FloatModel(model), ids)
    _, top_adapted = float_perplexity(FloatModel(model, adapter), ids)
    merged_rel = abs(result.ppl_float / ppl_merged - 1.0)
    out = {
        "model": model_name, "tokens": len(ids), "rank": spec.rank, "alpha": spec.alpha, "b_std": spec.b_std,
        "seed": spec.seed, "lora_scale": user_scale, "targets": list(spec.targets),
        "ppl_base_float": ppl_base, "top1_base_vs_adapted_float": float((top_base == top_adapted).mean()),
        "ppl_float": result.ppl_float, "ppl_float_merged": ppl_merged, "float_vs_merged_rel": merged_rel,
        "ppl_int": result.ppl_int, "int_over_float": result.ppl_int / result.ppl_float,
        "top1_agreement": result.top1_agreement, "wall_s": round(time.time() - t0, 1),
    }
    out["passed"] = bool(merged_rel <= BOUNDS["merged_rel"] and out["int_over_float"] <= BOUNDS["int_over_float"]
                         and result.top1_agreement >= BOUNDS["top1"])
    llama = against_llama_cpp(recorded, ids, digests, user_scale, ppl_base, result.ppl_float)
    if llama is not None:
        out["llama_cpp"] = llama
        out["passed"] = out["passed"] and llama["within_base_margin"]
    return out


def against_llama_cpp(recorded: dict, ids, digests: dict, user_scale: float, ppl_base: float,
                      ppl_adapted: float) -> dict | None:
    """The float path's distance to llama.cpp with and without the adapter; None if not recorded for these
    tokens, this model file and this adapter."""
    lora = recorded.get("lora")
    ids_sha256 = ids_digest(ids)
    if (lora is None or user_scale != 1.0 or recorded["ids_sha256"] != ids_sha256
            or lora["adapter_sha256"] != digests["adapter"] or lora["sha256"] != digests["model"]
            or recorded["base"]["sha256"] != digests["model"]):
        return None
    kinds = ("native", "f32")
    out = {"base": {k: recorded["base"][k] for k in kinds}, "adapted": {k: lora[k] for k in kinds}}
    for kind in kinds:
        out[f"base_margin_{kind}"] = abs(ppl_base / recorded["base"][kind] - 1.0)
        out[f"adapted_margin_{kind}"] = abs(ppl_adapted / lora[kind] - 1.0)
    out["within_base_margin"] = bool(out["adapted_margin_f32"] <= out["base_margin_native"])
    return out



def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--tokens", type=int, default=1000)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--alpha", type=float, default=32.0)
    p.add_argument("--b-std", type=float, default=0.02)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lora-scale", type=float, default=1.0)
    p.add_argument("--recorded", type=Path, default=RECORDED, help="llama.cpp's recorded perplexities")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    spec = LoraSpec(rank=args.rank, alpha=args.alpha, b_std=args.b_std, seed=args.seed)
    recorded = json.loads(args.recorded.read_text("utf-8")) if args.recorded.exists() else {}
    out = measure(args.model, args.tokens, spec, args.lora_scale, recorded)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for key, value in out.items():
            print(f"{key:30s} {value}")
    return 0 if out["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
