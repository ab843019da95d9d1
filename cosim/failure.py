"""Failure artifacts: what it takes to debug the first mismatch of a run, written where it happened.

A failure directory holds
    traces.npz    both sides at the failing position: the golden taps, and the chip's beats
                  assembled per (layer, op); keys below
    window.vcd    (chained runs) the chip's top-level signals around the mismatch cycle, from a
                  replay of the same tokens with tracing on for that window only. VCD time 2c+1 is
                  just after the rising edge of cycle c of the failing token (c counts from the
                  cycle that presents it, as Mismatch.cycle does), 2c+2 just after the falling edge.
                  The replay runs in a fresh process: Verilator keeps a deleted model's trace hooks
                  in its context, so tracing in a process that has deleted a chip crashes it.
    failure.json  the mismatch, the waveform window and the reproduce command

traces.npz keys; <l> is the golden trace's layer (-1 the embedding, n_layers the head), <op> the
tap name, <p> the position:
    golden/layer<l>/<op>/pos<p>/mant   the golden vector's words (int64)
    golden/layer<l>/<op>/pos<p>/exp    its block exponents (B16 taps only)
    chip/layer<l>/<op>/pos<p>/mant     the beats' words, each at its block's offset; zero where no
                                       beat came (the vector is padded to whole blocks)
    chip/layer<l>/<op>/pos<p>/exp      each block's exponent
    chip/layer<l>/<op>/pos<p>/cycle    each block's beat cycle, -1 where no beat came
    mismatch                           the first mismatch as a JSON string
"""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from hardwire.golden.errors import HardwireError
from hardwire.golden.intref import Trace
from hardwire.golden.spec import BLOCK
from hardwire.rtl import chip
from hardwire.rtl.adapter_image import AdapterImage
from hardwire.rtl.die import Die, get_die
from hardwire.rtl.isa import TAP_ID, TAP_NAME

from .chip_sim import ChipSim
from .generation import Generation, unit_layer
from .scoreboard import Mismatch

TRACES, WAVEFORM, SUMMARY = "traces.npz", "window.vcd", "failure.json"
ADAPTER_COMMANDS = "adapter_commands.npy"  # the LoRA adapter the failing chip held, as its load commands
WINDOW_BEFORE, WINDOW_AFTER = 400, 100  # cycles of waveform before and after the mismatch cycle


@dataclass(frozen=True)
class TapBeat:
    """One tap beat in the golden trace's terms."""

    layer: int
    op: str
    block: int
    exp: int
    words: np.ndarray
    cycle: int


@dataclass
class FailureArtifacts:
    directory: Path
    mismatch: Mismatch
    traces: Path
    reproduce: str
    waveform: Path | None = None
    window: tuple[int, int] | None = None  # first and last cycle in the waveform
    replay_matches: bool | None = None  # the replay showed the failing beat at the mismatch cycle
    waveform_error: str | None = None  # why there is no waveform

    def summary(self) -> str:
        lines = [f"mismatch: {self.mismatch}", f"traces: {self.traces}"]
        if self.waveform is not None:
            lines.append(f"waveform: {self.waveform} (cycles {self.window[0]}..{self.window[1]} of the failing "
                         f"token; VCD time 2c+1 is just after the rising edge of cycle c)")
        elif self.waveform_error:
            lines.append(f"waveform: none ({self.waveform_error})")
        return "\n".join([*lines, f"reproduce: {self.reproduce}"])


# --- chained runs ----------------------------------------------------------------------------------

def write_chip_failure(directory: Path, die: Die, via_maps: Path, gen: Generation, n_layers: int, reproduce: str,
                       window: tuple[int, int] = (WINDOW_BEFORE, WINDOW_AFTER)) -> FailureArtifacts:
    """Artifacts of a chained run that stopped at a mismatch: traces, the waveform window (a replay
    on the die's chip with these via maps) and the command line."""
    failed, mismatch = gen.failed, gen.mismatch
    if failed is None or mismatch is None:
        raise HardwireError("the run has no mismatch to write artifacts for")
    directory.mkdir(parents=True, exist_ok=True)
    beats = [TapBeat(unit_layer(b.unit, b.op, n_layers), TAP_NAME.get(b.op, f"op#{b.op}"), b.block, b.exp, b.words,
                     b.cycle) for b in failed.run.beats]
    art = FailureArtifacts(directory, mismatch, save_traces(directory / TRACES, failed.trace, beats,
                                                            failed.position, mismatch), reproduce)
    sent = (gen.prompt + gen.tokens)[:failed.position] + [failed.token]
    adapter = None
    if gen.adapter_commands is not None:  # the replay loads the same adapter first
        adapter = directory / ADAPTER_COMMANDS
        np.save(adapter, gen.adapter_commands)
    try:
        art.window, art.replay_matches = replay_window(die, via_maps, sent, mismatch, directory / WAVEFORM, *window,
                                                       adapter_commands=adapter)
        art.waveform = directory / WAVEFORM
    except HardwireError as exc:  # the traces and the command line still help
        art.waveform_error = str(exc)
    _write_summary(art)
    return art


def write_tile_failure(directory: Path, trace: Trace, beats: Iterable[TapBeat], position: int, mismatch: Mismatch,
                       reproduce: str) -> FailureArtifacts:
    """Artifacts of a layer-sharded tile run: the traces and the command line (no waveform)."""
    directory.mkdir(parents=True, exist_ok=True)
    art = FailureArtifacts(directory, mismatch, save_traces(directory / TRACES, trace, list(beats), position,
                                                            mismatch), reproduce)
    _write_summary(art)
    return art


def _write_summary(art: FailureArtifacts) -> None:
    data = {"mismatch": asdict(art.mismatch), "traces": str(art.traces), "reproduce": art.reproduce,
            "waveform": None if art.waveform is None else str(art.waveform), "window": art.window,
            "replay_matches": art.replay_matches, "waveform_error": art.waveform_error}
    (art.directory / SUMMARY).write_text(json.dumps(data, indent=2) + "\n")


# --- traces ----------------------------------------------------------------------------------------

def tap_key(side: str, layer: int, op: str, position: int, field: str) -> str:
    return f"{side}/layer{layer}/{op}/pos{position}/{field}"


def save_traces(path: Path, trace: Trace, beats: list[TapBeat], position: int, mismatch: Mismatch) -> Path:
    """traces.npz: the golden taps of `position` and the chip's beats, assembled per (layer, op)."""
    arrays = {"mismatch": np.array(json.dumps(asdict(mismatch)))}
    for (layer, op, pos), (mant, exps) in trace.taps.items():
        if pos == position:
            arrays[tap_key("golden", layer, op, pos, "mant")] = np.asarray(mant, np.int64)
            if exps is not None:
                arrays[tap_key("golden", layer, op, pos, "exp")] = np.asarray(exps, np.int64)
    for (layer, op), (mant, exps, cycles) in assemble(beats, trace, position).items():
        for field, value in (("mant", mant), ("exp", exps), ("cycle", cycles)):
            arrays[tap_key("chip", layer, op, position, field)] = value
    np.savez_compressed(path, **arrays)
    return path


def assemble(beats: list[TapBeat], trace: Trace, position: int) -> dict:
    """(layer, op) -> (words, exponents, cycles): the beats placed by block index, as long as the
    golden vector (in whole blocks) or the highest block seen, whichever is longer."""
    blocks: dict[tuple[int, str], int] = {}
    for b in beats:
        key = (b.layer, b.op)
        golden = trace.taps.get((b.layer, b.op, position))
        want = -(-len(golden[0]) // BLOCK) if golden is not None else 0
        blocks[key] = max(blocks.get(key, want), want, b.block + 1)
    out = {key: (np.zeros(n * BLOCK, np.int64), np.zeros(n, np.int64), np.full(n, -1, np.int64))
           for key, n in blocks.items()}
    for b in beats:
        mant, exps, cycles = out[(b.layer, b.op)]
        mant[b.block * BLOCK:(b.block + 1) * BLOCK] = b.words
        exps[b.block], cycles[b.block] = b.exp, b.cycle
    return out


# --- the waveform window ---------------------------------------------------------------------------

class _Vcd:
    """pyverilator's own VCD functions in the model's library, with our timestamps."""

    def __init__(self, sim: ChipSim, path: Path):
        lib = sim.sim.model.lib
        lib.start_vcd_trace.argtypes, lib.start_vcd_trace.restype = [ctypes.c_void_p, ctypes.c_char_p], ctypes.c_void_p
        lib.add_to_vcd_trace.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.stop_vcd_trace.argtypes = [ctypes.c_void_p]
        self.lib = lib
        self.handle = lib.start_vcd_trace(sim.sim.model.model, str(path).encode())

    def dump(self, time: int) -> None:
        self.lib.add_to_vcd_trace(self.handle, time)

    def close(self) -> None:
        self.lib.stop_vcd_trace(self.handle)


def replay_window(die: Die, via_maps: Path, tokens: list[int], mismatch: Mismatch, path: Path,
                  before: int = WINDOW_BEFORE, after: int = WINDOW_AFTER,
                  adapter_commands: Path | None = None) -> tuple[tuple[int, int], bool]:
    """record_window on a chip of its own, in a fresh process (see the module notes); with the LoRA
    adapter load commands saved at `adapter_commands` loaded first."""
    request = {"die": die.name, "via_maps": str(Path(via_maps).resolve()), "tokens": tokens,
               "mismatch": asdict(mismatch), "path": str(Path(path).resolve()), "before": before, "after": after,
               "adapter_commands": str(Path(adapter_commands).resolve()) if adapter_commands else None}
    result = subprocess.run([sys.executable, "-m", __name__, json.dumps(request)], capture_output=True, text=True)
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        why = (result.stderr.strip().splitlines() or [f"exit code {result.returncode}"])[-1]
        raise HardwireError(f"the waveform replay failed: {why}")
    answer = json.loads(lines[-1])
    return tuple(answer["window"]), answer["matches"]


def _replay_main(request: dict) -> dict:
    sim = ChipSim(get_die(request["die"]), Path(request["via_maps"]))
    if request.get("adapter_commands"):
        sim.load_adapter(AdapterImage(np.load(request["adapter_commands"]), 0), None)
    window, matches = record_window(sim, request["tokens"], Mismatch(**request["mismatch"]), Path(request["path"]),
                                    request["before"], request["after"])
    return {"window": window, "matches": matches}


def record_window(sim: ChipSim, tokens: list[int], mismatch: Mismatch, path: Path, before: int = WINDOW_BEFORE,
                  after: int = WINDOW_AFTER) -> tuple[tuple[int, int], bool]:
    """Replay `tokens` from reset, the last one with a VCD of cycles [mismatch.cycle - before,
    mismatch.cycle + after] (cut short at the chip's reply). Returns (first, last) cycle dumped and
    whether the tap port showed the failing op at the mismatch cycle again. Only in a process that
    has deleted no chip (replay_window makes one)."""
    sim.reset()
    for token in tokens[:-1]:  # natively, as generate() ran them
        if sim.token(token).status != chip.STATUS_OK:
            raise HardwireError(f"the replay of the failing run was refused token {token}")
    start, stop = max(0, mismatch.cycle - before), mismatch.cycle + after
    model = sim.sim.model
    saved_auto_eval, model.auto_eval = model.auto_eval, False  # evaluate exactly as the native loop does
    vcd = _Vcd(sim, path)
    try:
        sim.host.tok_id, sim.host.tok_valid = tokens[-1], 1
        cycle, matches, replied = 0, False, False
        while cycle <= stop and not replied:
            if 0 < cycle < start:  # up to the window natively: one call, no tracing
                sim.sim.run(start - cycle)
                cycle = start
                continue
            replied, seen = _traced_cycle(model, sim, vcd if cycle >= start else None, cycle)
            if cycle == mismatch.cycle:
                matches = seen == (int(TAP_ID.get(mismatch.op, -1)), True)
            cycle += 1
    finally:
        vcd.close()
        model.auto_eval = saved_auto_eval
        sim.reset()
    return (start, cycle - 1), matches


def _traced_cycle(model, sim: ChipSim, vcd: _Vcd | None, cycle: int) -> tuple[bool, tuple[int, bool]]:
    """One clock cycle as chip_sim's native loop runs it; dumps both edges when tracing.
    Returns (the chip replied, (tap op, tap valid) after the rising edge)."""
    model["clk"] = 1
    model.eval()
    if vcd:
        vcd.dump(2 * cycle + 1)
    sim.host.tok_valid = 0
    seen = (int(sim.tap.op), bool(sim.tap.valid))
    replied = bool(sim.host.reply)
    model["clk"] = 0
    model.eval()
    if vcd:
        vcd.dump(2 * cycle + 2)
    return replied, seen


if __name__ == "__main__":  # the replay process of replay_window
    try:
        print(json.dumps(_replay_main(json.loads(sys.argv[1]))))
    except HardwireError as exc:
        sys.exit(f"hardwire: error: {exc}")
