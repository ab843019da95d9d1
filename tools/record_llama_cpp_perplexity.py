"""Record llama.cpp's perplexity on hardwire's own files once, for the fidelity checks (the tests never need llama.cpp).

It writes `tests/data/llama_cpp_perplexity.json` with llama.cpp's perplexity over the first
`--tokens` ids of the shipped evaluation text (as recorded in `llama_cpp_reference.json`), in
one causal pass of that many positions, each predicting the next id: the context handling of
`hardwire eval` (golden/evaluate.py). For each file it records two figures:

- `native`: the file as it is (llama.cpp rounds activations to 8 bits for quantized weights);
- `f32`: the same weights dequantized to F32 with gguf's `dequantize` and written with gguf's
  `GGUFWriter` (the metadata copied, `general.file_type` set to F32), which leaves llama.cpp's
  8-bit activations out and is the function that hardwire's float reference computes.

Files: the base model (`--model`), each requantized file (`--quantized RECIPE=PATH`, written by
`hardwire quantize`), and the base model with a LoRA adapter in GGUF (`--lora PATH`, written by
`hardwire synth-lora --format gguf`), applied through llama-cpp-python's `lora_path`.

Run it from the repository root with a virtual environment outside the repository that holds
llama-cpp-python (see tools/record_llama_cpp_quants.py; nothing of this project is installed there):

    MODEL=$(.venv/bin/python -c 'import hardwire.golden.models as m; print(m.resolve_model("smollm2-135m"))')
    mkdir -p ../q
    for r in q3_k_m q4_k_m q6_k; do
        .venv/bin/hardwire quantize --model "$MODEL" --recipe $r --out ../q/smollm2-$r.gguf
    done
    .venv/bin/hardwire synth-lora --model "$MODEL" --format gguf --rank 16 --alpha 32 --b-std 0.02 --seed 0 \\
        --out ../q/lora-r16.gguf
    ../llamavenv/bin/python tools/record_llama_cpp_perplexity.py --model "$MODEL" \\
        --quantized q3_k_m=../q/smollm2-q3_k_m.gguf --quantized q4_k_m=../q/smollm2-q4_k_m.gguf \\
        --quantized q6_k=../q/smollm2-q6_k.gguf --lora ../q/lora-r16.gguf \\
        --lora-spec "rank 16, alpha 32, b_std 0.02, seed 0, all seven projections (tools/lora_fidelity.py's adapter)"

The recorded sha256 of each file lets tools/kquant_fidelity.py and tools/lora_fidelity.py check
that they measure the same bytes.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from hardwire.golden.cache import sha256_of
from hardwire.golden.evaluate import ids_digest

TOKENS = 1000
SKIPPED_KEYS = ("GGUF.", "general.architecture", "general.file_type")


def dequantized_copy(src: Path, dst: Path) -> None:
    """`src` with every tensor dequantized to F32, the metadata kept (gguf's reader and writer)."""
    from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter
    from gguf.quants import dequantize

    reader = GGUFReader(src)
    arch = reader.fields["general.architecture"].contents()
    writer = GGUFWriter(str(dst), arch)
    for key, field in reader.fields.items():
        if key.startswith(SKIPPED_KEYS):
            continue
        vtype = field.types[0]
        sub_type = field.types[-1] if vtype == GGUFValueType.ARRAY else None
        writer.add_key_value(key, field.contents(), vtype, sub_type=sub_type)
    writer.add_file_type(0)  # LLAMA_FTYPE_ALL_F32
    for t in reader.tensors:
        rows = dequantize(t.data, t.tensor_type) if t.tensor_type != GGMLQuantizationType.F32 else t.data
        shape = [int(n) for n in reversed(t.shape)]  # numpy order: the row length last
        writer.add_tensor(t.name, np.ascontiguousarray(rows, dtype=np.float32).reshape(shape))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def perplexity(llama_cpp, model: Path, ids: list[int], lora: Path | None = None) -> float:
    """exp of the mean negative log-likelihood of ids[1:], each given all the ids before it (one causal pass)."""
    from llama_cpp import llama_cpp as low_level

    default_params = low_level.llama_model_default_params

    def plain_buffers():  # no weight repacking (AMX tiles fault where the kernel does not grant them)
        params = default_params()
        params.use_extra_bufts = False
        return params

    low_level.llama_model_default_params = plain_buffers
    try:
        llm = llama_cpp.Llama(model_path=str(model), n_ctx=len(ids), n_batch=len(ids), logits_all=True,
                              verbose=False, n_threads=2, lora_path=None if lora is None else str(lora))
    finally:
        low_level.llama_model_default_params = default_params
    llm.eval(ids)
    logits = np.asarray(llm.scores[:len(ids) - 1], dtype=np.float64)
    llm.close()
    top = logits.max(axis=1, keepdims=True)
    logp = logits - top - np.log(np.exp(logits - top).sum(axis=1, keepdims=True))
    return float(np.exp(-logp[np.arange(len(ids) - 1), ids[1:]].mean()))


def both_figures(llama_cpp, path: Path, ids: list[int], tmp: Path, lora: Path | None = None) -> dict:
    f32 = tmp / "f32.gguf"
    dequantized_copy(path, f32)
    figures = {"file": path.name, "sha256": sha256_of(path), "native": perplexity(llama_cpp, path, ids, lora),
               "f32": perplexity(llama_cpp, f32, ids, lora)}
    f32.unlink()
    return figures



def main() -> None:
    import llama_cpp

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="SmolLM2-135M-Instruct.Q4_1.gguf")
    parser.add_argument("--quantized", action="append", default=[], metavar="RECIPE=PATH",
                        help="a file written by hardwire quantize (repeatable)")
    parser.add_argument("--lora", type=Path, help="a GGUF adapter written by hardwire synth-lora --format gguf")
    parser.add_argument("--lora-spec", default="", help="how the adapter was made, recorded as given")
    parser.add_argument("--tokens", type=int, default=TOKENS)
    parser.add_argument("--out", type=Path, default=Path("tests/data/llama_cpp_perplexity.json"))
    args = parser.parse_args()
    reference = json.loads((args.out.parent / "llama_cpp_reference.json").read_text("utf-8"))
    ids = reference["eval_text_ids"][:args.tokens]
    result = {"source": f"llama-cpp-python {llama_cpp.__version__} (llama.cpp), one causal pass of n_ctx = tokens, "
                        "default context parameters (F16 KV cache), 2 threads",
              "tokens": len(ids), "ids_sha256": ids_digest(ids),
              "base": {}, "recipes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        result["base"] = both_figures(llama_cpp, args.model, ids, Path(tmp))
        for item in args.quantized:
            recipe, _, path = item.partition("=")
            result["recipes"][recipe] = both_figures(llama_cpp, Path(path), ids, Path(tmp))
        if args.lora:
            result["lora"] = {"adapter": args.lora.name, "adapter_sha256": sha256_of(args.lora), "spec": args.lora_spec,
                              **both_figures(llama_cpp, args.model, ids, Path(tmp), args.lora)}
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
