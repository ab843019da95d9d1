"""`hardwire synth-lora` and `hardwire eval --lora`: adapters end to end, and bad adapters in one line."""

from __future__ import annotations

import json

import pytest
from cli_run import assert_one_line_error, hardwire

from hardwire.golden.synth import SynthSpec, write_synthetic


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("lora_cli")
    model = write_synthetic(SynthSpec(seed=4), d / "m.gguf")
    text = d / "t.txt"
    text.write_text("the cat sat on the mat and the dog ate the hat " * 4)
    return d, model, text


def _eval(model, text, *extra):
    r = hardwire("eval", "--model", model, "--text", text, "--tokens", 24, "--json", *extra)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_synth_lora_both_formats_then_eval(files):
    d, model, text = files
    for fmt, out in (("peft", d / "peft"), ("gguf", d / "a.gguf")):
        r = hardwire("synth-lora", "--model", model, "--out", out, "--format", fmt, "--rank", 4,
                     "--b-std", 0.3, "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["out"] == str(out)
    base = _eval(model, text)
    peft, gguf = _eval(model, text, "--lora", d / "peft"), _eval(model, text, "--lora", d / "a.gguf")
    assert "adapter" not in base and peft["adapter"]["format"] == "peft" and peft["adapter"]["ranks"] == [4]
    assert peft["ppl_float"] != base["ppl_float"]  # the adapter is applied
    assert peft["ppl_float"] == pytest.approx(gguf["ppl_float"], rel=1e-5)  # the same adapter either way
    assert peft["ppl_int"] == gguf["ppl_int"]  # the same SRAM contents: the same integers
    zero = _eval(model, text, "--lora", d / "peft", "--lora-scale", 0)
    assert zero["ppl_int"] == base["ppl_int"]


@pytest.mark.parametrize(("args", "message"), [
    (("--lora-scale", "2"), "--lora-scale needs --lora"),
    (("--lora", "MISSING"), "does not exist"),
    (("--lora", "MODEL"), "not a LoRA adapter"),
])
def test_eval_bad_lora_is_one_line(files, args, message):
    d, model, text = files
    args = [str(model) if a == "MODEL" else str(d / "missing") if a == "MISSING" else a for a in args]
    assert_one_line_error(hardwire("eval", "--model", model, "--text", text, "--tokens", 8, *args), message)


def test_eval_refuses_pickle_adapter(files):
    d, model, text = files
    folder = d / "pickled"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"r": 4, "lora_alpha": 8}))
    (folder / "adapter_model.bin").write_bytes(b"\x80\x04not really")
    assert_one_line_error(hardwire("eval", "--model", model, "--text", text, "--lora", folder), "a pickle")


def test_synth_lora_bad_targets(files):
    d, model, _ = files
    assert_one_line_error(hardwire("synth-lora", "--model", model, "--out", d / "x", "--targets", "q,lm_head"),
                          "unknown or untargeted module(s) lm_head")
    assert_one_line_error(hardwire("synth-lora", "--model", model, "--out", d / "x.gguf", "--format", "gguf",
                                   "--rslora"), "cannot record rsLoRA")
