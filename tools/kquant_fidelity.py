"""K-quant fidelity on a real model: SmolLM2-135M requantized with `hardwire quantize` under llama.cpp's recipes.

For each recipe, over the first N tokens of the shipped evaluation text (golden/evaluate.py, as
`hardwire eval --tokens N` computes them):
- ppl_int <= 1.01 x ppl_float and top-1 agreement >= 0.97;
- the float path within 0.5% of llama.cpp's perplexity on the same file dequantized to F32, as
  tools/record_llama_cpp_perplexity.py recorded it in tests/data/llama_cpp_perplexity.json (same
  token ids, same context handling). The requantized file's sha256 must equal the recorded one, so
  both figures are of the same bytes.

    python tools/kquant_fidelity.py --model smollm2-135m --recipes q3_k_m,q4_k_m,q6_k --tokens 1000 --json
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
from hardwire.golden.errors import HardwireError
from hardwire.golden.evaluate import evaluate, ids_digest, tokens_for_eval
from hardwire.golden.gguf_model import load_model
from hardwire.golden.kquants import DECODABLE
from hardwire.golden.models import resolve_model
from hardwire.golden.recipes import requantize

BOUNDS = {"int_over_float": 1.01, "top1": 0.97, "llama_cpp_f32_rel": 0.005}
RECORDED = Path(__file__).resolve().parent.parent / "tests" / "data" / "llama_cpp_perplexity.json"


def measure_recipe(base: Path, recipe: str, text: str, tokens: int, recorded: dict, tmp: Path) -> dict:
    path = tmp / f"{recipe}.gguf"
    t0 = time.time()
    requantize(base, recipe, path)
    model = load_model(path, formats=DECODABLE)
    ids = tokens_for_eval(model, text, tokens)
    result = evaluate(model, ids)
    out = {"recipe": recipe, "tokens": len(ids), "sha256": sha256_of(path), **result.as_dict(),
           "int_over_float": result.ppl_int / result.ppl_float}
    ref = recorded.get("recipes", {}).get(recipe)
    if ref is None or recorded.get("tokens") != len(ids) or recorded.get("ids_sha256") != ids_digest(ids):
        out["llama_cpp"] = None  # no figure of these tokens recorded for this recipe
    elif ref["sha256"] != out["sha256"]:
        raise HardwireError(f"{recipe}: the requantized file differs from the one llama.cpp's figure was "
                            "recorded on (re-run tools/record_llama_cpp_perplexity.py)")
    else:
        out["llama_cpp"] = {"native": ref["native"], "f32": ref["f32"]}
        out["float_vs_llama_cpp_f32_rel"] = abs(result.ppl_float / ref["f32"] - 1.0)
    out["passed"] = bool(out["int_over_float"] <= BOUNDS["int_over_float"] and result.top1_agreement >= BOUNDS["top1"]
                         and out.get("float_vs_llama_cpp_f32_rel", 1.0) <= BOUNDS["llama_cpp_f32_rel"])
    out["wall_s"] = round(time.time() - t0, 1)
    return out



def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--recipes", default="q3_k_m,q4_k_m,q6_k")
    p.add_argument("--tokens", type=int, default=1000)
    p.add_argument("--recorded", type=Path, default=RECORDED, help="llama.cpp's recorded perplexities")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    recorded = json.loads(args.recorded.read_text("utf-8"))
    text = files("hardwire.golden").joinpath("data/eval_en.txt").read_text(encoding="utf-8")
    base = resolve_model(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure_recipe(base, r, text, args.tokens, recorded, Path(tmp)) for r in args.recipes.split(",")]
    out = {"model": args.model, "bounds": BOUNDS, "recipes": rows, "passed": all(r["passed"] for r in rows)}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for r in rows:
            print(" ".join(f"{k}={v}" for k, v in r.items()))
    return 0 if out["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
