"""`hardwire verify`: every layer of a model verified on the die's tile, sharded over worker processes.

Each layer is a shard: the tile runs the layer's program with the layer's via maps, fed the golden
residual stream of the prompt's positions, and every tap beat is scored word for word
(cosim/layer_check.py). Shards run in `--jobs` processes, each in a work directory of its own; one
Verilator build of the die's tile serves them all. The results go to a run directory as JUnit XML
(with a reproduce command per failing layer), which `hardwire report` turns into the dashboard.
"""

from __future__ import annotations

import multiprocessing
import os
import shlex
import signal
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from hardwire.chip_cli import check_prompt_text, check_sequence
from hardwire.cli_common import (
    EPILOG,
    EXIT_MISMATCH,
    EXIT_OK,
    add_die_option,
    add_json_option,
    add_lora_options,
    add_model_option,
    load_lora_option,
)
from hardwire.console import Console
from hardwire.golden.cache import check_cache_root
from hardwire.golden.errors import HardwireError
from hardwire.outputs import check_output_dir

DEFAULT_PROMPT = "The bridge"
_JOB: dict = {}  # what every shard reads: set before the workers fork


def add_verify(sub) -> None:
    p = sub.add_parser("verify", help="verify every layer on the die's tile, sharded over worker processes",
                       description="Run each layer of the model on the die's tile, fed the golden inputs of the "
                                   "prompt's positions, and compare every tap with the golden reference. Layers "
                                   "are sharded over --jobs processes; results go to RUN_DIR/junit.xml for "
                                   "`hardwire report`.",
                       epilog=EPILOG)
    add_model_option(p)
    add_die_option(p)
    p.add_argument("--prompt", default=DEFAULT_PROMPT, help="the prompt text (default: %(default)r)")
    p.add_argument("--layers", default="all", help="layers to verify: all, or a list such as 0,3,10-12")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes (default: the cores)")
    p.add_argument("--run-dir", type=Path, default=Path("hardwire-verify"),
                   help="where junit.xml and the shards' work directories go (default: %(default)s)")
    add_lora_options(p)
    add_json_option(p)
    p.set_defaults(handler=run_verify)


def parse_layers(text: str, n_layers: int) -> list[int]:
    """'all' or comma-separated layers and ranges (a-b, inclusive), each below n_layers."""
    if text == "all":
        return list(range(n_layers))
    layers = set()
    for part in text.split(","):
        low, _, high = part.strip().partition("-")
        try:
            span = range(int(low), int(high or low) + 1)
        except ValueError:
            raise HardwireError(f"--layers must be 'all' or a list such as 0,3,10-12, not {text!r}") from None
        if not span or span.start < 0 or span.stop > n_layers:
            raise HardwireError(f"--layers {part.strip()!r} is outside the model's layers 0-{n_layers - 1}")
        layers.update(span)
    return sorted(layers)


def run_verify(args, console: Console) -> int:
    from hardwire.cosim.layer_check import golden_trace
    from hardwire.golden.gguf_model import load_model
    from hardwire.golden.tokenizer import GGUFTokenizer
    from hardwire.rtl import metal
    from hardwire.rtl.adapter_image import adapter_image
    from hardwire.rtl.die import get_die

    if args.jobs < 1:
        raise HardwireError(f"--jobs must be at least 1, not {args.jobs}")
    check_prompt_text(args.prompt, "--prompt")
    check_output_dir(args.run_dir, "--run-dir")
    check_cache_root()
    model = load_model(console.fetch_model(args.model))
    layers = parse_layers(args.layers, model.config.n_layers)
    prompt = GGUFTokenizer(model.tokenizer_meta).encode(args.prompt)
    die = get_die(args.die) if args.die else metal.smallest_die(model)
    metal.check_fits(model, die)
    check_sequence(len(prompt), 0, model, die)
    adapter = load_lora_option(args, model.config)
    commands = adapter_image(adapter, model.config, die).commands if adapter is not None else None
    _JOB.update(model=model, image=metal.generate(model, die), trace=golden_trace(model, prompt, adapter),
                positions=len(prompt), work=args.run_dir.resolve() / "workers", adapter_commands=commands)
    t0 = time.perf_counter()
    with console.progress(f"verifying {len(layers)} layers on {die.name}", total=len(layers)) as advance:
        results = _run_shards(layers, args.jobs, advance)
    wall = time.perf_counter() - t0
    write_junit(args.run_dir / "junit.xml", results, wall, lambda r: _reproduce(args, die.name, r.layer))
    failed = [r for r in results if not r.bit_exact]
    console.result(_summary(args, die.name, results, wall), title=f"{args.model} on {die.name}, layer-sharded")
    for r in failed:
        console.error(f"layer {r.layer}: {r.mismatch or f'taps never seen {r.missing[:3]}'}; reproduce: "
                      f"{_reproduce(args, die.name, r.layer)}")
    return EXIT_MISMATCH if failed else EXIT_OK


def _run_shards(layers: list[int], jobs: int, advance) -> list:
    if jobs == 1:
        results = []
        for layer in layers:
            results.append(_shard(layer))
            advance(len(results))
        return results
    # fork: the workers share the parent's model, metal and golden trace without pickling them
    fork = multiprocessing.get_context("fork")
    pool = ProcessPoolExecutor(max_workers=min(jobs, len(layers)), mp_context=fork, initializer=_ignore_interrupts)
    try:
        futures = [pool.submit(_shard, layer) for layer in layers]
        results = []
        for future in futures:
            results.append(future.result())
            advance(len(results))
    except BaseException:  # Ctrl-C or a failed shard: stop every worker now, not after its layer
        _kill_workers(pool)
        raise
    pool.shutdown()
    return results


def _ignore_interrupts() -> None:
    """Workers leave Ctrl-C to the parent, which kills them (and their build tools' process groups)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _kill_workers(pool: ProcessPoolExecutor) -> None:
    processes = list((pool._processes or {}).values())  # the executor has no public way to kill
    for process in processes:
        process.kill()
    for process in processes:
        process.join(timeout=1)
    # wait: the executor's manager thread ends now, not in an exit handler that writes to its closed pipe
    pool.shutdown(wait=True, cancel_futures=True)


def _shard(layer: int):
    from hardwire.cosim.layer_check import check_layer

    work = _JOB["work"] / f"pid{os.getpid()}" / f"layer{layer:02d}"
    result = check_layer(_JOB["model"], _JOB["image"], _JOB["trace"], layer, _JOB["positions"], work,
                         _JOB["adapter_commands"])
    result.run = None  # the raw beats stay in the worker
    return result


def _reproduce(args, die: str, layer: int) -> str:
    model_path = Path(args.model)
    model = str(model_path.resolve()) if model_path.exists() else args.model
    lora = ["--lora", str(Path(args.lora).resolve()), "--lora-scale", repr(args.lora_scale)] if args.lora else []
    return shlex.join(["hardwire", "verify", "--model", model, "--die", die, "--prompt", args.prompt,
                       "--layers", str(layer), "--jobs", "1", *lora])


def write_junit(path: Path, results: list, wall_s: float, reproduce) -> None:
    """One test case per layer shard; a failing one carries its mismatch and reproduce command."""
    path.parent.mkdir(parents=True, exist_ok=True)
    failures = sum(not r.bit_exact for r in results)
    suite = ET.Element("testsuite", name="hardwire.verify", tests=str(len(results)), failures=str(failures),
                       errors="0", skipped="0", time=f"{wall_s:.3f}")
    for r in results:
        case = ET.SubElement(suite, "testcase", classname="hardwire.verify", name=f"layer[{r.layer:02d}]",
                             time=f"{r.wall_s:.3f}")
        if not r.bit_exact:
            message = str(r.mismatch) if r.mismatch else f"taps never seen: {r.missing[:3]}"
            props = ET.SubElement(case, "properties")
            ET.SubElement(props, "property", name="reproduce", value=reproduce(r))
            failure = ET.SubElement(case, "failure", message=message)
            failure.text = f"{message}\nreproduce: {reproduce(r)}"
    ET.ElementTree(suite).write(path, encoding="unicode")


def _summary(args, die: str, results: list, wall_s: float) -> dict:
    cycles = [c for r in results for c in r.cycles]
    return {
        "bit_exact": all(r.bit_exact for r in results),
        "layers": len(results),
        "layers_failed": [r.layer for r in results if not r.bit_exact],
        "positions": len(results[0].cycles) if results else 0,
        "tap_beats_checked": sum(r.beats for r in results),
        "tile_cycles_per_layer_position": int(sum(cycles) / len(cycles)) if cycles else 0,
        "jobs": args.jobs,
        "wall_s": round(wall_s, 2),
        "die": die,
        "adapter": str(args.lora) if args.lora else None,
        "junit": str(args.run_dir / "junit.xml"),
    }
