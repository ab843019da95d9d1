"""Hostile input, one row per class: exit code 2, one `hardwire: error:` line, no traceback, nothing left
behind (the working directory and the named outputs are as they were). Every row is refused before a
chip loads, so the table is fast."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES, GGUFReader
from gguf import GGMLQuantizationType as QT

from hardwire.cosim.chip_sim import metal_maps, write_via_maps_manifest
from hardwire.golden import synth
from hardwire.golden.gguf_model import load_model
from hardwire.golden.synth import SynthSpec
from hardwire.rtl import metal
from hardwire.rtl.die import get_die
from hardwire.rtl.via_map import HEADER, load_via_map

TINY = "hw-tiny"
SUPPORTED = "Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K"


def hardwire(args, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "hardwire.cli", *(a if isinstance(a, bytes) else str(a) for a in args)]
    return subprocess.run(argv, capture_output=True, cwd=cwd, timeout=300, env={**os.environ, **(env or {})})


def snapshot(*roots: Path) -> dict:
    """Every path under the roots with its size: what a refused command must leave as it was."""
    seen = {}
    for root in roots:
        if root.is_dir():
            for p in root.rglob("*"):
                seen[str(p)] = p.stat().st_size if p.is_file() else -1
    return seen


# --- models with one bad piece of metadata, written past synth's own checks -------------------------

def _raw_model(path: Path) -> Path:
    synth._write(SynthSpec(layers=1, vocab=300), path)
    return path


def _set_field(path: Path, key: str, value) -> None:
    reader = GGUFReader(path, "r+")
    field = reader.fields[key]
    field.parts[field.data[0]][0] = value


def _set_scale(path: Path, tensor: str, bits: int) -> None:
    reader = GGUFReader(path, "r+")
    t = next(t for t in reader.tensors if t.name == tensor)
    t.data.reshape(-1)[:2] = np.array([bits], np.uint16).view(np.uint8)  # the first block's fp16 scale


def _set_gain(path: Path, tensor: str, value: float) -> None:
    reader = GGUFReader(path, "r+")
    next(t for t in reader.tensors if t.name == tensor).data.reshape(-1)[0] = value


def model_with(kind: str, path: Path) -> Path:
    _raw_model(path)
    edits = {
        "zero_heads": lambda: _set_field(path, "llama.attention.head_count", 0),
        "zero_kv_heads": lambda: _set_field(path, "llama.attention.head_count_kv", 0),
        "zero_eps": lambda: _set_field(path, "llama.attention.layer_norm_rms_epsilon", 0.0),
        "negative_eps": lambda: _set_field(path, "llama.attention.layer_norm_rms_epsilon", -1e-5),
        "zero_theta": lambda: _set_field(path, "llama.rope.freq_base", 0.0),
        "nan_theta": lambda: _set_field(path, "llama.rope.freq_base", float("nan")),
        "nan_scale": lambda: _set_scale(path, "blk.0.attn_q.weight", 0x7E00),
        "inf_scale": lambda: _set_scale(path, "blk.0.ffn_down.weight", 0x7C00),
        "nan_gain": lambda: _set_gain(path, "blk.0.attn_norm.weight", float("nan")),
    }
    edits[kind]()
    return path


def model_of_type(qtype: QT, path: Path) -> Path:
    """A model whose blk.0.attn_q.weight is of a type the chip does not print (GGUF blocks of zeros)."""
    size = 256 if GGML_QUANT_SIZES[qtype][0] == 256 else 64
    original = synth._add

    def add(w, name, data, quant):
        if name != "blk.0.attn_q.weight":
            return original(w, name, data, quant)
        if qtype == QT.F16:
            return w.add_tensor(name, data.astype(np.float16))
        block, nbytes = GGML_QUANT_SIZES[qtype]
        return w.add_tensor(name, np.zeros((data.shape[0], data.shape[1] // block * nbytes), np.uint8),
                            raw_dtype=qtype)

    synth._add = add
    try:
        synth._write(SynthSpec(layers=1, vocab=300, d_model=size, d_ffn=2 * size, heads=2, kv_heads=1), path)
    finally:
        synth._add = original
    return path


def k_rows_of_128(path: Path) -> Path:
    """A Q3_K ffn_down whose header says rows of 128 weights (half a super-block), as no writer would."""
    synth._write(SynthSpec(layers=1, vocab=300, d_model=256, d_ffn=512, heads=2, kv_heads=1, ffn_quant="q3_k"),
                 path)
    reader = GGUFReader(path, "r+")
    t = next(t for t in reader.tensors if t.name == "blk.0.ffn_down.weight")
    dims = t.field.parts[3]  # ne: (512, 256) -> (128, 1024), the same bytes
    dims[0], dims[1] = 128, 1024
    return path


@pytest.fixture(scope="module")
def no_tokenizer(tmp_path_factory):
    path = tmp_path_factory.mktemp("notok") / "m.gguf"
    saved = synth._add_tokenizer
    synth._add_tokenizer = lambda w, vocab: None
    try:
        synth._write(SynthSpec(layers=1, vocab=300), path)
    finally:
        synth._add_tokenizer = saved
    return path


@pytest.fixture(scope="module")
def good_maps(tmp_path_factory, synth_model_path):
    """The synthetic model's via maps for hw-tiny with the manifest `hardwire build` writes."""
    die = get_die(TINY)
    image = metal.generate(load_model(synth_model_path), die)
    out = tmp_path_factory.mktemp("maps") / "metal"
    shutil.copytree(metal_maps(image)[0], out, ignore=shutil.ignore_patterns(".*"))
    write_via_maps_manifest(out, die, image.sha256())
    return out


def damaged_maps(good: Path, kind: str, where: Path) -> Path:
    maps = where / "maps"
    shutil.copytree(good, maps)
    target = maps / "tile00_weights.vmap"
    data = bytearray(target.read_bytes())
    body = HEADER.size + -(-load_via_map(target).width // 8)  # the first payload byte, after the mask
    if kind == "flipped_bit":  # the map's own sha256 catches it
        data[body] ^= 1
    elif kind == "resealed_flip":  # a flip with the header's sha256 made to match: the manifest catches it
        data[body] ^= 1
        data = resealed(data)
    elif kind == "not_a_map":
        data = bytearray(b"// hardwire via map\n// width 1280 depth 8192\n0\n")  # the old hex form
    elif kind == "truncated":
        data = data[:-3]
    elif kind == "wrong_geometry":  # a whole, valid map of another ROM
        data = bytearray((maps / "tile00_consts.vmap").read_bytes())
    elif kind == "bits_past_a_word":  # a packed word with a bit beyond the kept bits, resealed
        (maps / "via-maps.json").unlink()
        target = maps / "lut_exp2.vmap"  # 17 bits kept: spare bits at the top of each packed word
        data = bytearray(target.read_bytes())
        data[-1] |= 0x80
        data = resealed(data)
    target.write_bytes(bytes(data))
    return maps


def resealed(data: bytearray) -> bytearray:
    """The map with its header's sha256 recomputed over the (changed) mask and payload."""
    data[HEADER.size - 32:HEADER.size] = hashlib.sha256(data[HEADER.size:]).digest()
    return data


# --- LoRA adapters with one bad piece ---------------------------------------------------------------

def bad_adapter(kind: str, model: Path, where: Path) -> Path:
    """A PEFT adapter for `model` (or, "other_model", for another shape) with one fault."""
    import json

    from safetensors.numpy import load_file, save_file

    from hardwire.golden.lora_synth import LoraSpec, write_peft

    config = load_model(model).config
    if kind == "other_model":
        config = load_model(synth.write_synthetic(SynthSpec(layers=2, d_model=96, d_ffn=128, heads=3, kv_heads=1,
                                                            vocab=301), where / "other.gguf")).config
    out = write_peft(LoraSpec(rank=40 if kind == "rank_beyond_die" else 4, targets=("q", "v", "down")), config,
                     where / "adapter")
    cfg_path, weights = out / "adapter_config.json", out / "adapter_model.safetensors"
    lcfg = json.loads(cfg_path.read_text())
    if kind == "unknown_target":
        lcfg["target_modules"].append("lm_head")
    elif kind == "missing_alpha":
        del lcfg["lora_alpha"]
    elif kind == "missing_config":
        cfg_path.unlink()
    elif kind == "pickle":
        weights.rename(out / "adapter_model.bin")
    elif kind in ("nan_weights", "inf_weights"):
        tensors = load_file(str(weights))
        first = sorted(tensors)[0]
        tensors[first][0, 0] = np.nan if kind == "nan_weights" else np.inf
        save_file(tensors, str(weights))
    if cfg_path.exists():
        cfg_path.write_text(json.dumps(lcfg))
    return out


LORA = {"other_model": "the model's projection is", "rank_beyond_die": "holds rank 32 per projection",
        "unknown_target": "unknown target module(s) lm_head", "missing_alpha": "'lora_alpha' is missing",
        "missing_config": "no adapter_config.json", "pickle": "a pickle, which hardwire does not load",
        "nan_weights": "holds NaN or inf", "inf_weights": "holds NaN or inf"}


# --- the table ----------------------------------------------------------------------------------------

METADATA = ["zero_heads", "zero_kv_heads", "zero_eps", "negative_eps", "zero_theta", "nan_theta", "nan_scale",
            "inf_scale", "nan_gain"]
VIA_MAPS = {"flipped_bit": "tile00_weights.vmap: the mask or payload differs from the sha256 in the map's header",
            "resealed_flip": "tile00_weights.vmap: differs from the sha256 `hardwire build` recorded",
            "not_a_map": "tile00_weights.vmap: not a hardwire via map",
            "truncated": "bytes; a map of",
            "wrong_geometry": "tile00_weights.vmap: the map is 19 x 768 bits; the die's ROM is ",
            "bits_past_a_word": "lut_exp2.vmap: word 1023 has bits beyond the map's 17 kept bits"}


def rows():
    """(id, args(ctx) -> argv, env(ctx) -> dict, expected part of the message)."""
    run = ["run", "--die", TINY]
    yield "tokens_past_kv_sram", lambda c: [*run, "--model", c.model, "--tokens", 999_999_999], None, \
        "positions; die hw-tiny's KV SRAM holds 128"
    yield "verify_prompt_past_kv_sram", lambda c: ["verify", "--model", c.model, "--die", TINY, "--prompt",
                                                   "a b " * 200, "--run-dir", c.out / "v"], None, \
        "positions; die hw-tiny's KV SRAM holds 128"
    yield "prompt_id_beyond_vocab", lambda c: [*run, "--model", c.model, "--prompt-ids", "5,99999"], None, \
        "token id 99999, not below the model's vocabulary of 301"
    yield "prompt_not_utf8", lambda c: [*run, "--model", c.model, "--prompt", b"caf\xe9 \xff"], None, \
        "--prompt is not valid UTF-8"
    yield "verify_prompt_not_utf8", lambda c: ["verify", "--model", c.model, "--prompt", b"\xff\xfe",
                                               "--run-dir", c.out / "v"], None, "--prompt is not valid UTF-8"
    for kind in METADATA:
        yield f"gguf_{kind}", lambda c, k=kind: [*run, "--model", model_with(k, c.tmp / "bad.gguf")], None, \
            "GGUF" if "scale" not in kind and "gain" not in kind else "NaN or infinite"
    for qtype in (QT.IQ4_NL, QT.TQ2_0, QT.MXFP4, QT.F16, QT.BF16):
        yield f"gguf_linear_{qtype.name}", lambda c, q=qtype: [*run, "--model", model_of_type(q, c.tmp / "t.gguf")], \
            None, f"'blk.0.attn_q.weight' has unsupported quant type {qtype.name} (supported: {SUPPORTED})"
    yield "gguf_k_rows_not_whole_super_blocks", lambda c: ["build", "--model", k_rows_of_128(c.tmp / "k.gguf"),
                                                           "--die", TINY, "--out", c.out / "b"], None, \
        "row size (128) is not a multiple of Q3_K block size (256)"
    yield "gguf_without_tokenizer", lambda c: [*run, "--model", c.no_tokenizer], None, "lacks the tokenizer array"
    for kind, message in VIA_MAPS.items():
        yield f"via_maps_{kind}", lambda c, k=kind: [*run, "--model", c.model, "--via-maps",
                                                     damaged_maps(c.good_maps, k, c.tmp)], None, message
    for kind, message in LORA.items():  # refused before the chip loads: its state is never touched
        yield f"lora_{kind}", lambda c, k=kind: [*run, "--model", c.model, "--lora",
                                                 bad_adapter(k, c.model, c.tmp)], None, message
    yield "lora_scale_without_lora", lambda c: [*run, "--model", c.model, "--lora-scale", 2], None, \
        "--lora-scale needs --lora"
    yield "build_out_under_proc", lambda c: ["build", "--model", c.model, "--die", TINY, "--out", "/proc/hw-out"], \
        None, "--out /proc/hw-out"
    yield "build_out_under_a_file", lambda c: ["build", "--model", c.model, "--die", TINY, "--out",
                                               c.model / "out"], None, "which is not a directory"
    yield "build_out_read_only", lambda c: ["build", "--model", c.model, "--die", TINY, "--out", "/sys/hw-out"], \
        None, "cannot create a directory in /sys"
    yield "build_out_of_something_else", lambda c: ["build", "--model", c.model, "--die", TINY, "--out", c.tmp], \
        None, "is a directory of something else"
    yield "verify_run_dir_under_a_file", lambda c: ["verify", "--model", c.model, "--run-dir", c.model / "r"], \
        None, "which is not a directory"
    yield "run_artifacts_under_proc", lambda c: [*run, "--model", c.model, "--artifacts", "/proc/hw-a"], None, \
        "--artifacts /proc/hw-a"
    yield "cache_not_a_directory", lambda c: [*run, "--model", c.model], lambda c: {"HARDWIRE_CACHE": str(c.model)}, \
        "is not a directory"
    yield "cache_read_only", lambda c: [*run, "--model", c.model], lambda c: {"HARDWIRE_CACHE": "/proc/hw-cache"}, \
        "is not writable"
    yield "synth_out_is_a_directory", lambda c: ["synth", "--out", c.out], None, "is a directory"
    yield "synth_out_under_a_file", lambda c: ["synth", "--out", c.model / "x.gguf"], None, "not a directory"
    yield "synth_negative_seed", lambda c: ["synth", "--out", c.out / "m.gguf", "--seed", -1], None, "--seed -1"
    yield "synth_zero_rope_theta", lambda c: ["synth", "--out", c.out / "m.gguf", "--rope-theta", 0], None, \
        "--rope-theta 0.0 must be"
    yield "synth_nan_rope_theta", lambda c: ["synth", "--out", c.out / "m.gguf", "--rope-theta", "nan"], None, \
        "--rope-theta nan must be"
    yield "not_an_integer", lambda c: [*run, "--model", c.model, "--tokens", "many"], None, "invalid int value"


ROWS = list(rows())


class Context:
    def __init__(self, tmp: Path, model: Path, no_tokenizer: Path, good_maps: Path):
        self.tmp, self.model, self.no_tokenizer, self.good_maps = tmp, model, no_tokenizer, good_maps
        self.out = tmp / "out"
        self.out.mkdir()
        self.work = tmp / "work"
        self.work.mkdir()


@pytest.mark.parametrize("make_args,make_env,message", [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_hostile_input_is_one_error_line(make_args, make_env, message, tmp_path, synth_model_path, no_tokenizer,
                                         good_maps):
    model = tmp_path / "model.gguf"
    shutil.copy(synth_model_path, model)
    c = Context(tmp_path, model, no_tokenizer, good_maps)
    args = make_args(c)
    before = snapshot(tmp_path, good_maps.parent)
    result = hardwire(args, cwd=c.work, env=make_env(c) if make_env else None)
    stderr = result.stderr.decode(errors="replace")
    assert result.returncode == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hardwire: error: "), stderr
    assert message in lines[0], stderr
    assert "Traceback" not in stderr
    assert snapshot(tmp_path, good_maps.parent) == before  # nothing written, nothing left behind
