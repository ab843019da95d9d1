"""Chained verification: token generation on the whole simulated chip, every tap checked live.

The host only sends and receives tokens. For each token the golden integer reference runs
the same position and its trace is the scoreboard's expectation: every beat of every unit
(embed, each layer's ops, final norm, logits, argmax) must match word for word, and every
golden tap must be covered.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from hardwire.golden.errors import HardwireError
from hardwire.golden.gguf_model import Model
from hardwire.golden.intref import IntModel, Trace
from hardwire.rtl import chip
from hardwire.rtl.isa import TAP_ID

from .chip_sim import ChipSim, CycleCounts, TokenRun
from .scoreboard import Mismatch, Scoreboard

STATUS_NAMES = {chip.STATUS_OK: "OK", chip.STATUS_BAD_TOKEN: "BAD_TOKEN", chip.STATUS_KV_OVERFLOW: "KV_OVERFLOW"}


class ChipStatusError(HardwireError):
    """The chip answered a token with an error status."""

    def __init__(self, status: int, position: int, token: int, kv_tokens: int):
        self.status = status
        name = STATUS_NAMES.get(status, f"status {status}")
        if status == chip.STATUS_KV_OVERFLOW:
            why = f"the KV cache holds {kv_tokens} positions and position {position} would overflow it"
        elif status == chip.STATUS_BAD_TOKEN:
            why = f"token id {token} is not below the model's vocabulary"
        else:
            why = "unexpected status"
        super().__init__(f"the chip refused token {token} at position {position} with {name}: {why}")


@dataclass
class FailedToken:
    """The token whose check failed: its position, the chip's run and the golden trace."""

    position: int
    token: int
    run: TokenRun
    trace: Trace


@dataclass
class Generation:
    prompt: list[int]
    tokens: list[int] = field(default_factory=list)  # generated on the chip
    golden_tokens: list[int] = field(default_factory=list)
    cycles: list[int] = field(default_factory=list)  # per token sent (prompt and generated)
    cycle_counts: list[CycleCounts] = field(default_factory=list)  # the perf port's counts, per token sent
    sim_wall_s: list[float] = field(default_factory=list)
    golden_wall_s: list[float] = field(default_factory=list)
    beats: int = 0
    mismatch: Mismatch | None = None
    missing: list[tuple[int, str, int]] = field(default_factory=list)
    failed: FailedToken | None = None  # the token that failed, kept for failure artifacts
    adapter_commands: np.ndarray | None = None  # the LoRA adapter's load commands, if the chip held one

    @property
    def bit_exact(self) -> bool:
        return self.mismatch is None and not self.missing and self.tokens == self.golden_tokens


def unit_layer(unit: int, op: int, n_layers: int) -> int:
    """The golden trace's layer of a tap beat: tiles are layers; the head's embed is layer -1,
    its final norm, logits and argmax are layer n_layers."""
    if unit != chip.HEAD_TAG:
        return unit
    return -1 if op == TAP_ID["embed"] else n_layers


def generate(model: Model, sim: ChipSim, prompt: list[int], n_new: int,
             on_token: Callable[[Generation], None] | None = None,
             observe: Callable[[int, TokenRun, Trace | None], None] | None = None) -> Generation:
    """Feed the prompt, then generate `n_new` tokens, each checked against the golden reference.
    Stops at the first mismatch (gen.mismatch); a refused token raises ChipStatusError.
    `observe(position, run, trace)` sees each verified token with its golden trace, and a refused
    one with None (functional coverage listens here)."""
    if not prompt:
        raise HardwireError("the prompt is empty")
    if n_new < 1:
        raise HardwireError(f"the number of tokens to generate must be at least 1, not {n_new}")
    golden = IntModel(model, capacity=len(prompt) + n_new, adapter=sim.adapter)  # the adapter the chip holds
    cache = golden.new_cache()
    sim.reset()
    gen = Generation(list(prompt), adapter_commands=sim.adapter_commands)
    pending = list(prompt)
    while pending:
        token = pending.pop(0)
        position = sim.position
        run = sim.token(token)
        if run.status != chip.STATUS_OK:
            if observe:
                observe(position, run, None)
            raise ChipStatusError(run.status, position, token, sim.die.kv_tokens)
        expected = _golden_step(golden, cache, token, gen)
        _record(gen, run)
        if not _check(gen, model, run, expected, position):
            gen.failed = FailedToken(position, token, run, expected)
            break
        if observe:
            observe(position, run, expected)
        if not pending and len(gen.tokens) < n_new:  # the prompt is in: every answer is a new token
            pending.append(run.token)
        if on_token:
            on_token(gen)
    return gen


def _golden_step(golden: IntModel, cache, token: int, gen: Generation) -> Trace:
    trace = Trace()
    t0 = time.perf_counter()
    golden.forward(np.array([token]), cache, trace)
    gen.golden_wall_s.append(time.perf_counter() - t0)
    return trace


def _record(gen: Generation, run: TokenRun) -> None:
    gen.cycles.append(run.cycles)
    gen.cycle_counts.append(run.cycle_counts)
    gen.sim_wall_s.append(run.wall_s)
    gen.beats += len(run.beats)


def _check(gen: Generation, model: Model, run: TokenRun, trace: Trace, position: int) -> bool:
    """Score one token's beats; after the prompt, also compare the answered token."""
    n_layers = model.config.n_layers
    board = Scoreboard(trace)
    for beat in run.beats:
        mismatch = board.check(unit_layer(beat.unit, beat.op, n_layers), position, beat.op, beat.block, beat.exp,
                               beat.words, beat.cycle)
        if mismatch:
            gen.mismatch = mismatch
            return False
    gen.missing = board.missing(range(-1, n_layers + 1), [position])
    if gen.missing:
        return False
    if position >= len(gen.prompt) - 1:
        golden_argmax, _ = trace.taps[(n_layers, "argmax", position)]
        gen.golden_tokens.append(int(golden_argmax[0]))
        gen.tokens.append(run.token)
    return gen.tokens == gen.golden_tokens
