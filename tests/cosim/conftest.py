"""Chained-run failures explain themselves: artifacts in the test's tmp_path and reproduce lines."""

from __future__ import annotations

import shlex

import pytest

from hardwire.chip_cli import reproduce_command
from hardwire.cosim.chip_sim import metal_maps
from hardwire.cosim.failure import TapBeat, write_chip_failure, write_tile_failure
from hardwire.rtl import metal
from hardwire.rtl.isa import TAP_NAME


def rerun_line(request) -> str:
    flip = request.config.getoption("hw_flip")  # a deliberately broken run: the rerun breaks the same way
    return f"python -m pytest {shlex.quote(request.node.nodeid)} -p no:randomly -n 0" + \
        (f" --hw-flip {shlex.quote(flip)}" if flip else "")


@pytest.fixture
def explain_failure(request, tmp_path):
    """explain(sim, gen, model, prompt, n_new, via_maps=None) -> the failure text of a chained run:
    the mismatch, where its traces and waveform are, and two reproduce lines: `hardwire run` with the
    same model, die, prompt and metal, then the pytest command that reruns the test alone. Writes the
    artifacts into tmp_path/failure."""

    def explain(sim, gen, model, prompt, n_new, via_maps=None) -> str:
        rerun = f"reproduce: {rerun_line(request)}"
        if gen.mismatch is None:
            return f"no mismatch; taps never seen: {gen.missing[:4]}; tokens {gen.tokens}, golden " \
                   f"{gen.golden_tokens}\n{rerun}"
        maps = via_maps or metal_maps(metal.generate(model, sim.die))[0]  # the model's own metal, or a --hw-flip one
        flipped = via_maps or (maps if request.config.getoption("hw_flip") else None)
        command = reproduce_command(str(model.path), sim.die.name, n_new, prompt_ids=prompt, via_maps=flipped)
        artifacts = write_chip_failure(tmp_path / "failure", sim.die, maps, gen, model.config.n_layers, command)
        return f"{artifacts.summary()}\n{rerun}"

    return explain


@pytest.fixture
def explain_tile_failure(request, tmp_path):
    """explain(trace, run, layer, position, mismatch) -> the failure text of a layer-sharded tile run:
    the mismatch, its traces (written into tmp_path/failure) and the pytest line that reruns it."""

    def explain(trace, run, layer, position, mismatch) -> str:
        beats = [TapBeat(layer, TAP_NAME.get(b.op, f"op#{b.op}"), b.block, b.exp, b.words, b.cycle) for b in run.taps]
        return write_tile_failure(tmp_path / "failure", trace, beats, position, mismatch, rerun_line(request)).summary()

    return explain
