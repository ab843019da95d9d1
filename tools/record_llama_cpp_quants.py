"""Record llama.cpp's quantizer output once, for the tests (which never need llama.cpp).

It writes two files into tests/data:

- `llama_cpp_quant_rows.npz`: seeded float rows (with edge blocks: all zero,
  constant, one outlier, tiny and huge magnitudes, one sign) and, for each type
  Q2_K..Q6_K, Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0, the bytes that ggml's public
  `ggml_quantize_chunk` (no importance matrix) makes of them;
- `llama_cpp_recipes.json`: for each recipe, the type and a digest of the bytes
  that `llama_model_quantize` gives every tensor of SmolLM2-135M (requantized
  from the shipped Q4_1 file, as `llama-quantize --allow-requantize` does).
  With `--perplexity` it adds, for q3_k_m, q4_k_m and q6_k, llama.cpp's
  perplexity over the first 1024 tokens of the shipped evaluation text (its
  token ids as recorded in `llama_cpp_reference.json`), on the requantized
  file as it is and on the same file dequantized to F32 (which leaves
  llama.cpp's 8-bit activations out). It reproduces the recorded 18.752 of the
  Q4_1 file itself.

Run it from the repository root, with llama.cpp's Python bindings in a
virtual environment of their own outside the repository (they build llama.cpp
from source, about ten minutes on two cores; nothing of this project is
installed there):

    python3 -m venv ../llamavenv
    ../llamavenv/bin/pip install llama-cpp-python==0.3.36 gguf==0.19.0 numpy
    MODEL=$(.venv/bin/python -c 'import hardwire.golden.models as m; print(m.resolve_model("smollm2-135m"))')
    ../llamavenv/bin/python tools/record_llama_cpp_quants.py --model "$MODEL"
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import re
import tempfile
from pathlib import Path

import numpy as np

from hardwire.golden.cache import sha256_of

ROW_TYPES = ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0")
# recipe -> llama_ftype (llama.h)
RECIPES = {"q4_0": 2, "q4_1": 3, "q8_0": 7, "q5_0": 8, "q5_1": 9, "q6_k": 18,
           "q3_k_s": 11, "q3_k_m": 12, "q4_k_m": 15, "q5_k_m": 17}
COLS = 512  # two super-blocks of 256, sixteen blocks of 32
SEED = 20261205
DIGEST_CHARS = 16
PPL_RECIPES = ("q3_k_m", "q4_k_m", "q6_k")
PPL_TOKENS = 1024


def seeded_rows() -> np.ndarray:
    """Float rows of COLS: ordinary weights, then edge cases placed on block and super-block boundaries."""
    rng = np.random.default_rng(SEED)
    normal = rng.standard_normal((8, COLS)).astype(np.float32) * np.float32(0.04)
    rows = [normal[i] for i in range(8)]
    rows.append(rng.laplace(0.0, 0.02, COLS).astype(np.float32))  # heavy tails
    rows.append(np.abs(normal[0]))  # one sign: the mins of the affine types are 0
    rows.append(-np.abs(normal[1]))
    edge = normal[2].copy()
    edge[:256] = 0.0  # an all-zero super-block
    edge[256:288] = np.float32(0.0123)  # a constant block
    edge[300] = np.float32(3.5)  # one outlier dominating its block and sub-block
    rows.append(edge)
    rows.append(normal[3] * np.float32(1e-6))  # scales in fp16's subnormal range
    rows.append(normal[4] * np.float32(1e3))  # large scales
    mixed = normal[5].copy()
    mixed[::16] *= np.float32(50.0)  # one large weight per sub-block of 16
    rows.append(mixed)
    rows.append(np.round(normal[6] * np.float32(100.0)) / np.float32(100.0))  # many exact ties
    return np.stack(rows).astype(np.float32)


def _ggml_base(llama_cpp) -> ctypes.CDLL:
    lib_dir = Path(llama_cpp.__file__).parent / "lib"
    candidates = sorted(lib_dir.glob("libggml-base.*")) or sorted(lib_dir.glob("libggml.*"))
    if not candidates:
        raise SystemExit(f"no ggml library in {lib_dir}")
    lib = ctypes.CDLL(str(candidates[0]))
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    lib.ggml_row_size.restype = ctypes.c_size_t
    lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
    return lib


def record_rows(llama_cpp, out: Path) -> None:
    from gguf import GGMLQuantizationType as QT

    lib = _ggml_base(llama_cpp)
    x = seeded_rows()
    arrays = {"rows": x}
    for name in ROW_TYPES:
        qtype = int(QT[name])
        row_size = lib.ggml_row_size(qtype, COLS)
        dst = np.zeros((len(x), row_size), np.uint8)
        written = lib.ggml_quantize_chunk(qtype, x.ctypes.data, dst.ctypes.data, 0, len(x), COLS, None)
        assert written == dst.size, (name, written, dst.size)
        arrays[name] = dst
    np.savez_compressed(out, **arrays)


def record_recipes(llama_cpp, model: Path, out: Path, perplexity: bool = False) -> None:
    from gguf import GGUFReader

    ids = json.loads((out.parent / "llama_cpp_reference.json").read_text("utf-8"))["eval_text_ids"][:PPL_TOKENS]

    result = {"source": f"llama-cpp-python {llama_cpp.__version__} (llama.cpp) llama_model_quantize, "
                        "allow_requantize, no importance matrix",
              "model": model.name, "model_sha256": sha256_of(model), "digest": f"sha256 of the tensor bytes, "
              f"first {DIGEST_CHARS} hex digits", "input_tensors": _tensor_table(GGUFReader(model)), "recipes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for recipe, ftype in RECIPES.items():
            target = Path(tmp) / f"{recipe}.gguf"
            params = llama_cpp.llama_model_quantize_default_params()
            params.ftype = ftype
            params.allow_requantize = True
            params.nthread = 2
            rc = llama_cpp.llama_model_quantize(str(model).encode(), str(target).encode(), ctypes.byref(params))
            if rc != 0:
                raise SystemExit(f"llama_model_quantize failed for {recipe} ({rc})")
            reader = GGUFReader(target)
            result["recipes"][recipe] = {
                "ftype": ftype,
                "tensors": {t.name: [t.tensor_type.name, _digest(t.data)] for t in reader.tensors},
            }
            del reader
            if perplexity and recipe in PPL_RECIPES:
                result["recipes"][recipe]["perplexity"] = _perplexities(llama_cpp, target, Path(tmp) / "f32.gguf", ids)
            target.unlink()
    out.write_text(compact_json(result), encoding="utf-8")


def compact_json(data) -> str:
    """Indented JSON with every innermost list on one line."""
    return re.sub(r"\[\s+([^\[\]{}]*?)\s+\]", lambda m: "[" + re.sub(r",\s+", ", ", m.group(1)) + "]",
                  json.dumps(data, indent=1)) + "\n"


def _perplexities(llama_cpp, model: Path, f32: Path, ids: list[int]) -> dict:
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = 0  # LLAMA_FTYPE_ALL_F32
    params.allow_requantize = True
    params.nthread = 2
    if llama_cpp.llama_model_quantize(str(model).encode(), str(f32).encode(), ctypes.byref(params)) != 0:
        raise SystemExit(f"dequantizing {model.name} to F32 failed")
    figures = {"tokens": len(ids), "native": _perplexity(llama_cpp, model, ids)}
    figures["f32"] = _perplexity(llama_cpp, f32, ids)
    f32.unlink()
    return figures


def _perplexity(llama_cpp, model: Path, ids: list[int]) -> float:
    """exp of the mean negative log-likelihood of ids[1:] given the ids before (one pass, logits of every position)."""
    from llama_cpp import llama_cpp as low_level

    default_params = low_level.llama_model_default_params

    def plain_buffers():  # no weight repacking (AMX tiles fault where the kernel does not grant them)
        params = default_params()
        params.use_extra_bufts = False
        return params

    low_level.llama_model_default_params = plain_buffers
    try:
        llm = llama_cpp.Llama(model_path=str(model), n_ctx=len(ids), n_batch=len(ids), logits_all=True,
                              verbose=False, n_threads=2)
    finally:
        low_level.llama_model_default_params = default_params
    llm.eval(ids)
    logits = np.asarray(llm.scores[:len(ids) - 1], dtype=np.float64)
    top = logits.max(axis=1, keepdims=True)
    logp = logits - top - np.log(np.exp(logits - top).sum(axis=1, keepdims=True))
    nll = -logp[np.arange(len(ids) - 1), ids[1:]]
    llm.close()
    return float(np.exp(nll.mean()))


def _tensor_table(reader) -> dict:
    """Name -> type and ggml shape (ne[0], the row length, first), in file order."""
    return {t.name: {"type": t.tensor_type.name, "shape": [int(n) for n in t.shape]} for t in reader.tensors}


def _digest(data: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(data).tobytes()).hexdigest()[:DIGEST_CHARS]



def main() -> None:
    import llama_cpp

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="SmolLM2-135M-Instruct.Q4_1.gguf")
    parser.add_argument("--out-dir", type=Path, default=Path("tests/data"))
    parser.add_argument("--perplexity", action="store_true", help="also record llama.cpp's perplexities (slow)")
    args = parser.parse_args()
    record_rows(llama_cpp, args.out_dir / "llama_cpp_quant_rows.npz")
    record_recipes(llama_cpp, args.model, args.out_dir / "llama_cpp_recipes.json", args.perplexity)


if __name__ == "__main__":
    main()
