"""The `hardwire` command: bad input gets one line on stderr, exit code 2, no traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from hardwire.golden.errors import HardwireError
from hardwire.golden.intref import IntModel
from hardwire.golden.synth import SynthSpec, write_synthetic


def hardwire(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "hardwire.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=300)


def assert_one_line_error(result, pattern: str):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hardwire: error: "), result.stderr
    assert pattern in lines[0]
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("text") / "t.txt"
    p.write_text("the cat sat on the mat and the dog ate the hat " * 4)
    return p


def test_synth_then_eval_json(tmp_path, text_file):
    model = tmp_path / "m.gguf"
    assert hardwire("synth", "--out", model, "--vocab", 307, "--json").returncode == 0
    result = hardwire("eval", "--model", model, "--text", text_file, "--tokens", 20, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data) == {"ppl_float", "ppl_int", "top1_agreement", "tokens"}
    assert data["tokens"] == 20 and 0.0 <= data["top1_agreement"] <= 1.0
    assert data["ppl_int"] > 1.0 and data["ppl_float"] > 1.0


def test_not_a_gguf(text_file):
    assert_one_line_error(hardwire("eval", "--model", text_file), "not a GGUF file")


def test_missing_model():
    assert_one_line_error(hardwire("eval", "--model", "no-such-model"), "neither a known model")


def test_truncated(tmp_path, synth_model_path, text_file):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(synth_model_path.read_bytes()[:5000])
    assert_one_line_error(hardwire("eval", "--model", cut, "--text", text_file), "truncated or corrupt")


def test_unsupported_quant_named(tmp_path, text_file):
    """eval and the chip read every format of llama.cpp's recipes, not float linear weights."""
    path = write_synthetic(SynthSpec(attn_quant="f32"), tmp_path / "f32.gguf")
    assert_one_line_error(hardwire("eval", "--model", path, "--text", text_file),
                          "unsupported quant type F32 (supported: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K")
    path = write_synthetic(SynthSpec(attn_quant="q5_1"), tmp_path / "q5.gguf")
    assert hardwire("eval", "--model", path, "--text", text_file, "--tokens", 8).returncode == 0
    path = write_synthetic(SynthSpec(ffn_quant="f32"), tmp_path / "f32-ffn.gguf")
    assert_one_line_error(hardwire("run", "--model", path, "--die", "hw-tiny", "--prompt-ids", "3"),
                          "unsupported quant type F32 (supported: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, "
                          "Q5_K, Q6_K)")


def test_dims_not_divisible():
    assert_one_line_error(hardwire("synth", "--out", "x.gguf", "--d-model", 40), "not divisible by the block size")


def test_empty_text(tmp_path, synth_model_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    assert_one_line_error(hardwire("eval", "--model", synth_model_path, "--text", empty), "text is empty")


def test_tokens_beyond_text(synth_model_path, text_file):
    result = hardwire("eval", "--model", synth_model_path, "--text", text_file, "--tokens", 5000)
    assert_one_line_error(result, "larger than the text provides")


def test_missing_text_file(synth_model_path, tmp_path):
    assert_one_line_error(hardwire("eval", "--model", synth_model_path, "--text", tmp_path / "nope.txt"),
                          "does not exist")


def test_token_id_beyond_vocab(synth_model):
    im = IntModel(synth_model, capacity=8)
    cache = im.new_cache()
    with pytest.raises(HardwireError, match="token id 301 is out of range for vocab size 301"):
        im.forward(np.array([5, 301]), cache)
    assert cache.length == 0  # nothing was computed or written


def test_help_lists_commands():
    out = hardwire("--help").stdout
    assert "synth" in out and "eval" in out and "exit codes" in out


def test_dies_lists_the_catalog():
    """`hardwire dies --json`: every die with its MACs per cycle, ROM and SRAM bits and clock."""
    from hardwire.rtl.die import DIES

    result = hardwire("dies", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["die"]: row for row in json.loads(result.stdout)["dies"]}
    assert list(rows) == list(DIES)
    wide = rows["hw-s135w"]
    assert wide["tile_macs_per_cycle"] == 576 * 32 and wide["head_macs_per_cycle"] == 1024 * 32
    assert wide["rom_bits"] < rows["hw-s135"]["rom_bits"]  # what makes `hardwire demo` pick it
    assert wide["sram_bits"] == (wide["sram_kv_bits"] + wide["sram_attn_buffers_bits"] + wide["sram_lora_bits"]
                                 + wide["sram_scratchpad_bits"])
    assert wide["attn_heads"] == 9 and rows["hw-tiny"]["attn_heads"] == rows["hw-s135"]["attn_heads"] == 1
    assert wide["sram_lora_bits"] == DIES["hw-s135w"].lora_sram_bits and wide["clock_mhz"] == 1000.0


def test_run_bad_prompt_ids(synth_model_path):
    assert_one_line_error(hardwire("run", "--model", synth_model_path, "--prompt-ids", "3,x"),
                          "--prompt-ids must be comma-separated token ids")


def test_run_via_maps_not_a_directory(synth_model_path, tmp_path):
    assert_one_line_error(hardwire("run", "--model", synth_model_path, "--die", "hw-tiny", "--via-maps",
                                   tmp_path / "none"), "is not a directory")


def test_run_via_maps_incomplete(synth_model_path, tmp_path):
    (tmp_path / "straps.vmap").write_text("")
    assert_one_line_error(hardwire("run", "--model", synth_model_path, "--die", "hw-tiny", "--via-maps", tmp_path),
                          "via maps of die hw-tiny, e.g. tile00_ucode.vmap")
