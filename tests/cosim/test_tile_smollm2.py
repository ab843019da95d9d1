"""A slice of the real model, layer-sharded: SmolLM2-135M layers on the hw-s135 tile, fed golden inputs."""

from __future__ import annotations

import numpy as np
import pytest

from hardwire.cosim.scoreboard import Scoreboard
from hardwire.cosim.tile_sim import UCODE_DEPTH, TileSim
from hardwire.golden.intref import IntModel, Trace
from hardwire.golden.tokenizer import GGUFTokenizer
from hardwire.rtl import metal
from hardwire.rtl.die import get_die
from hardwire.rtl.metal import UCODE_BITS, RomImage, _int_bytes

DIE = get_die("hw-s135")
CI_LAYERS = (0, 29)  # the first layer and the last in the fast suite; every layer in the nightly run
LAYERS = [layer if layer in CI_LAYERS else pytest.param(layer, marks=pytest.mark.nightly) for layer in range(30)]
PROMPT = "The bridge over the river was built"  # 7 positions: attention over a real context
OPS = ["attn_norm", "q", "k", "v", "attn", "o", "resid_attn", "ffn_norm", "ffn_act", "down", "resid_ffn"]


@pytest.fixture(scope="module")
def golden(smollm2):
    ids = GGUFTokenizer(smollm2.tokenizer_meta).encode(PROMPT)
    trace = Trace()
    im = IntModel(smollm2, capacity=len(ids))
    im.forward(np.array(ids), im.new_cache(), trace)
    return trace, len(ids)


@pytest.fixture(scope="module")
def image(smollm2):
    return metal.generate(smollm2, DIE)


def tile_images(image, layer: int) -> dict[str, RomImage]:
    name = f"tile{layer:02d}"
    program = np.stack([_int_bytes(i.encode(), UCODE_BITS) for i in image.programs[name]])
    return {"ucode": RomImage("ucode", UCODE_BITS, UCODE_DEPTH, program),
            "weights": image.roms[f"{name}_weights"], "consts": image.roms[f"{name}_consts"],
            **{t: image.roms[t] for t in ("lut_rsqrt", "lut_sigmoid", "lut_rope", "lut_exp2")}}


@pytest.mark.parametrize("layer", LAYERS)
def test_layer_on_the_tile(smollm2, golden, image, layer, tmp_path, explain_tile_failure):
    trace, positions = golden
    layout = metal.tile_layout(smollm2.config)
    sim = TileSim(tile_images(image, layer), DIE, layout.end, tmp_path, max_blocks=smollm2.config.d_model // 32)
    source = (-1, "embed") if layer == 0 else (layer - 1, "resid_ffn")
    for position in range(positions):
        x = trace.taps[(*source, position)][0]
        run = sim.run([(x[b * 32:(b + 1) * 32], 0) for b in range(len(x) // 32)], position)
        board = Scoreboard(trace)
        for beat in run.taps:
            mismatch = board.check(layer, position, beat.op, beat.block, beat.exp, beat.words, beat.cycle)
            assert mismatch is None, explain_tile_failure(trace, run, layer, position, mismatch)
        assert {op for (_, op, _) in board.checked} == set(OPS)
        assert not board.missing([layer], [position])
