"""Layer-sharded verification: one layer of a model on the die's tile, fed the golden inputs.

Any layer can be verified on its own: the tile runs the layer's microcode with the layer's via
maps, takes the golden residual stream of the layer before it (the embedding for layer 0) as
its upstream blocks, and every tap beat is scored against the golden trace.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hardwire.golden.gguf_model import Model
from hardwire.golden.intref import IntModel, Trace
from hardwire.golden.spec import BLOCK
from hardwire.rtl.chip import LORA_CLEAR, lora_address_bits, max_blocks, unit_name
from hardwire.rtl.metal import Metal, RomImage, tile_layout

from .scoreboard import Mismatch, Scoreboard
from .tile_sim import TileRun, TileSim

UNIT_ROMS = ("ucode", "weights", "consts")
TABLES = ("lut_rsqrt", "lut_sigmoid", "lut_rope", "lut_exp2")


@dataclass
class LayerResult:
    layer: int
    positions: int
    beats: int = 0
    cycles: list[int] = field(default_factory=list)  # per position
    wall_s: float = 0.0
    mismatch: Mismatch | None = None
    missing: list[tuple[int, str, int]] = field(default_factory=list)
    run: TileRun | None = None  # the failing position's run, for its artifacts

    @property
    def bit_exact(self) -> bool:
        return self.mismatch is None and not self.missing


def golden_trace(model: Model, prompt: list[int], adapter=None) -> Trace:
    """The integer reference's taps of every layer at every prompt position (with a LoRA adapter, if given)."""
    trace = Trace()
    reference = IntModel(model, capacity=len(prompt), adapter=adapter)
    reference.forward(np.array(prompt), reference.new_cache(), trace)
    return trace


def tile_images(image: Metal, layer: int) -> dict[str, RomImage]:
    """The via maps a tile loads for `layer`: its own ROMs and the shared tables."""
    name = unit_name(layer)
    return {**{rom: image.roms[f"{name}_{rom}"] for rom in UNIT_ROMS}, **{t: image.roms[t] for t in TABLES}}


def layer_input(trace: Trace, layer: int, position: int) -> list[tuple[np.ndarray, int]]:
    """The golden upstream blocks of `layer` at `position`: (32 words, exponent 0) each."""
    source = (-1, "embed") if layer == 0 else (layer - 1, "resid_ffn")
    x = trace.taps[(*source, position)][0]
    return [(x[b * BLOCK:(b + 1) * BLOCK], 0) for b in range(len(x) // BLOCK)]


def check_layer(model: Model, image: Metal, trace: Trace, layer: int, positions: int, work: Path,
                adapter_commands: np.ndarray | None = None) -> LayerResult:
    """Run `layer` on the tile for positions 0..positions-1; stops at the first mismatch. With a LoRA
    adapter's load commands (rtl/adapter_image.py; the trace made with the adapter), the tile's LoRA
    SRAM and flags are loaded with this layer's first, through the harness's adapter-load port."""
    t0 = time.perf_counter()
    die = image.die  # the tile as the chip instantiates it: the die's largest norm
    sim = TileSim(tile_images(image, layer), die, tile_layout(model.config).end, work, max_blocks=max_blocks(die))
    if adapter_commands is not None:
        sim.load_adapter(layer_commands(adapter_commands, die, layer))
    result = LayerResult(layer, positions)
    for position in range(positions):
        run = sim.run(layer_input(trace, layer, position), position)
        result.cycles.append(run.cycles)
        result.beats += len(run.taps)
        if not _score(result, trace, run, layer, position):
            result.run = run
            break
    result.wall_s = time.perf_counter() - t0
    return result


def layer_commands(commands: np.ndarray, die, layer: int) -> np.ndarray:
    """The commands of one tile: LORA_CLEAR and those addressed to the layer's tile."""
    _, word_bits, lane_bits = lora_address_bits(die)
    mine = (commands[:, 0] == LORA_CLEAR) | ((commands[:, 1] >> (word_bits + lane_bits)) == layer)
    return commands[mine]


def _score(result: LayerResult, trace: Trace, run: TileRun, layer: int, position: int) -> bool:
    board = Scoreboard(trace)
    for beat in run.taps:
        mismatch = board.check(layer, position, beat.op, beat.block, beat.exp, beat.words, beat.cycle)
        if mismatch:
            result.mismatch = mismatch
            return False
    result.missing = board.missing([layer], [position])
    return not result.missing
