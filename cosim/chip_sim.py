"""The whole chip on Verilator: token in, token out, every debug-tap beat collected natively.

Three caches, each keyed by a content hash and published atomically under a lock
(golden/cache.py publish_once), each with a manifest of its files' hashes that is checked before
the entry is used (a damaged entry is built again):
    grids/<key>   the die's base-grid Verilog (rtl/chip.py), keyed by the die and the RTL
                  sources: converting a die takes tens of seconds
    metal/<key>   a model's via maps, keyed by metal_sha256
    builds/<key>  the Verilator library of a base grid (verilator_build), the same for every
                  model on the die: the via maps are loaded when a model instance starts

The tile and the head are Verilated as parts of their own and stepped through a bridge
(cosim/partition.py), so an idle unit costs nothing.

`ChipSim(..., coverage=True)` uses the die's coverage build: line and toggle coverage of the base
grid (the bridges excluded), written by `write_coverage`.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import myhdl
import numpy as np

from hardwire.golden.cache import entry_problem, sha256_of
from hardwire.golden.errors import HardwireError
from hardwire.golden.models import cache_root
from hardwire.golden.spec import ACC_BITS, BLOCK
from hardwire.rtl import chip
from hardwire.rtl.adapter_image import COMMAND_WORDS, DATA_WORDS, AdapterImage, clear_command
from hardwire.rtl.bus import DATA_BITS
from hardwire.rtl.die import Die
from hardwire.rtl.metal import Metal
from hardwire.rtl.via_map import check_via_map_file, via_map_file, write_via_map_rows

from .partition import bridge_cpp, bridge_verilog, part_prefix, part_top, part_top_verilog, unit_pins
from .verilator_build import Part, Simulator, build, publish_once
from .via_map_loader import with_package

RTL_ROOT = Path(chip.__file__).parent
GRID_FORMAT = "2"  # bump when what a grid directory holds changes (2: a manifest)
METAL_FORMAT = "3"  # the same for a metal directory (3: binary via maps)
BEAT_WORDS = 4 + DATA_BITS // 32  # cycle (2 words), unit|op, block|exp, then the data words
RUN_SYMBOL = "hw_run_token"
LOAD_SYMBOL = "hw_load_adapter"

# One token on the chip without returning to Python: present it, clock until `reply`, copy every
# tap beat (sampled after each rising edge, as the registered port shows it) into `beats`, and count
# every cycle in `cycles_at` by what the perf port shows: slot 0 while no unit works, else
# 1 + (unit << pc bits | pc) * 2 + run.
CAPTURE_CPP = """
#include <cstdint>
#include "V{top}.h"

extern double main_time;

extern "C" uint64_t {symbol}(V{top}* top, uint32_t token, uint64_t max_cycles, uint32_t* beats,
                             uint64_t capacity, uint64_t* n_beats, uint64_t* cycles_at) {{
    uint64_t n = 0;
    top->{host_tok_id} = token;
    top->{host_tok_valid} = 1;
    for (uint64_t c = 0; c < max_cycles; ++c) {{
        top->{clk} = 1; top->eval(); main_time++;
        top->{host_tok_valid} = 0;
        if (top->{perf_valid}) {{
            ++cycles_at[1 + ((((uint64_t)top->{perf_unit} << {pc_bits}) | top->{perf_pc}) << 1 | top->{perf_run})];
        }} else {{
            ++cycles_at[0];
        }}
        if (top->{tap_valid}) {{
            if (n < capacity) {{
                uint32_t* b = beats + n * {beat_words};
                b[0] = (uint32_t)c; b[1] = (uint32_t)(c >> 32);
                b[2] = (uint32_t)top->{tap_unit} << 8 | top->{tap_op};
                b[3] = (uint32_t)top->{tap_block} << 8 | (uint8_t)top->{tap_exp};
                for (int w = 0; w < {data_words}; ++w) b[4 + w] = top->{tap_data}[w];
            }}
            ++n;
        }}
        bool reply = top->{host_reply};
        top->{clk} = 0; top->eval(); main_time++;
        if (reply) {{ *n_beats = n; return c + 1; }}
    }}
    *n_beats = n;
    return max_cycles;
}}

// Stream adapter-load commands (rtl/adapter_image.py: cmd, addr, data words) through the lora port,
// one per cycle while `ready`; returns the cycles spent, *taken the commands the chip took.
extern "C" uint64_t {load_symbol}(V{top}* top, const uint32_t* commands, uint64_t n, uint64_t max_cycles,
                                  uint64_t* taken) {{
    uint64_t i = 0, c = 0;
    for (; c < max_cycles && i < n; ++c) {{
        const uint32_t* cmd = commands + i * {command_words};
        top->{lora_cmd} = cmd[0];
        top->{lora_addr} = cmd[1];
        for (int w = 0; w < {lora_data_words}; ++w) top->{lora_data}[w] = cmd[2 + w];
        top->{lora_valid} = 1;
        top->eval();
        bool taken_now = top->{lora_ready};
        top->{clk} = 1; top->eval(); main_time++;
        top->{clk} = 0; top->eval(); main_time++;
        if (taken_now) ++i;
    }}
    top->{lora_valid} = 0;
    top->eval();
    *taken = i;
    return c;
}}
"""


@dataclass
class Beat:
    unit: int
    op: int
    block: int
    exp: int
    words: np.ndarray  # 32 signed words
    cycle: int


@dataclass(frozen=True)
class CycleCounts:
    """A token's cycles as the perf port counted them: `idle` while no unit worked, and per
    (unit, microcode address, in RUN) while one did (rtl/chip.py, the performance probe)."""

    idle: int
    at: dict[tuple[int, int, bool], int]

    @property
    def total(self) -> int:
        return self.idle + sum(self.at.values())

    @classmethod
    def of(cls, slots: np.ndarray, pc_bits: int) -> CycleCounts:
        """From the capture loop's slots (CAPTURE_CPP)."""
        at = {}
        for slot in np.flatnonzero(slots[1:]):
            address, run = divmod(int(slot), 2)
            unit, pc = divmod(address, 1 << pc_bits)
            at[(unit, pc, bool(run))] = int(slots[1 + slot])
        return cls(int(slots[0]), at)


@dataclass
class TokenRun:
    status: int
    token: int
    cycles: int
    wall_s: float
    beats: list[Beat] = field(default_factory=list)
    cycle_counts: CycleCounts | None = None


def rtl_digest() -> str:
    """sha256 over the RTL's Python sources and the MyHDL version: what a grid is made of."""
    h = hashlib.sha256(myhdl.__version__.encode())
    for path in sorted(RTL_ROOT.rglob("*.py")):
        h.update(str(path.relative_to(RTL_ROOT)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def grid_key(die: Die) -> str:
    """The name of the die's base-grid entry in cache_root()/grids."""
    key_text = json.dumps({"format": GRID_FORMAT, "die": die.as_dict(), "rtl": rtl_digest()}, sort_keys=True)
    return hashlib.sha256(key_text.encode()).hexdigest()[:32]


def grid_sources(die: Die) -> tuple[dict[str, str], bool]:
    """(file name -> Verilog, cache hit) of the die's base grid, with the via-map loader's package."""
    key = grid_key(die)

    def convert(staging: Path) -> None:
        for name, text in chip.base_grid(die).items():
            (staging / name).write_text(text)

    directory, hit = publish_once(cache_root() / "grids", key, convert)
    # with the ROM macros' loader package: what another simulator needs beside the grid's modules
    return with_package({p.name: p.read_text() for p in sorted(directory.glob("*.v"))}), hit


def map_names(die: Die) -> dict[str, tuple[int, int]]:
    """Every via map the die's ROM macros load: name -> (width, depth)."""
    names = {}
    for i in range(die.tiles + 1):
        is_head = i == die.tiles
        prefix = "head" if is_head else chip.unit_name(i)
        widths, depths = chip.rom_widths(die, is_head), chip.rom_depths(die, is_head)
        for rom in ("ucode", "weights", "consts"):
            names[f"{prefix}_{rom}"] = (widths[rom], depths[rom])
        for table in ("lut_rsqrt", "lut_sigmoid", "lut_rope", "lut_exp2"):
            names[table] = (widths[table], depths[table])
    names["straps"] = (128, 2)
    return names


def metal_maps(metal: Metal) -> tuple[Path, bool]:
    """The metal's via maps as files for the chip's ROM macros: (directory, cache hit).
    A ROM the model leaves empty (an unused tile's weights) gets an all-zero map."""
    return publish_once(cache_root() / "metal", metal_key(metal.sha256()), lambda staging: write_maps(metal, staging))


def write_maps(metal: Metal, directory: Path) -> None:
    """Every via map of the metal's die into `directory`, an all-zero one for a ROM the model leaves empty."""
    for name, (width, depth) in map_names(metal.die).items():
        image = metal.roms.get(name)
        if image is not None and (image.width != width or image.used > depth):
            raise HardwireError(f"via map {name} is {image.used} x {image.width} bits; the die's macro holds "
                                f"{depth} x {width}")
        rows = image.words if image is not None else np.zeros((0, -(-width // 8)), np.uint8)
        write_via_map_rows(directory / via_map_file(name), rows, width, depth)


def metal_key(metal_sha256: str) -> str:
    """The name of a metal's entry in cache_root()/metal."""
    return hashlib.sha256(f"{METAL_FORMAT}:{metal_sha256}".encode()).hexdigest()[:32]


# --- the record of a print: a warm `hardwire build` neither loads the model nor generates its metal ---

PRINT_FORMAT = "1"
PRINT_RECORD = "print.json"


@dataclass(frozen=True)
class RecordedMetal:
    """What a print recorded of its metal: enough for a build's manifest (Metal.sha256, Metal.stats)."""

    metal_sha256: str
    metal_stats: dict

    def sha256(self) -> str:
        return self.metal_sha256

    def stats(self) -> dict:
        return dict(self.metal_stats)


def print_key(model_sha256: str, die_name: str | None) -> str:
    """The record's key: the model file's bytes, the die asked for (None: the smallest that fits) and
    the RTL, metal generator included, that printed it."""
    text = json.dumps({"format": PRINT_FORMAT, "metal_format": METAL_FORMAT, "model": model_sha256, "die": die_name,
                       "rtl": rtl_digest()}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def record_print(model_sha256: str, die_name: str | None, die: Die, metal: Metal) -> None:
    """Remember which die and metal this model printed to (cache_root()/prints/<print_key>)."""
    def write(staging: Path) -> None:
        record = {"die": die.name, "metal_sha256": metal.sha256(), "stats": metal.stats()}
        (staging / PRINT_RECORD).write_text(json.dumps(record, indent=2) + "\n")

    publish_once(cache_root() / "prints", print_key(model_sha256, die_name), write)


def recorded_print(model_sha256: str, die_name: str | None) -> tuple[str, RecordedMetal, Path] | None:
    """(die name, the recorded metal, its via-map directory) of an earlier print, when both the record
    and the metal's entry are sound (each checked against its manifest); else None."""
    entry = cache_root() / "prints" / print_key(model_sha256, die_name)
    if not entry.is_dir() or entry_problem(entry) is not None:
        return None
    try:
        record = json.loads((entry / PRINT_RECORD).read_text())
        die, metal = str(record["die"]), RecordedMetal(str(record["metal_sha256"]), dict(record["stats"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    maps = cache_root() / "metal" / metal_key(metal.sha256())
    if not maps.is_dir() or entry_problem(maps) is not None:
        return None
    return die, metal, maps


VIA_MAPS_MANIFEST = "via-maps.json"  # written by `hardwire build` beside the maps it copies


def write_via_maps_manifest(directory: Path, die: Die, metal_sha256: str) -> dict:
    """Record the die, the metal and every map's sha256 in directory/VIA_MAPS_MANIFEST."""
    maps = {via_map_file(name): sha256_of(directory / via_map_file(name)) for name in map_names(die)}
    manifest = {"die": die.name, "metal_sha256": metal_sha256, "maps": maps}
    (directory / VIA_MAPS_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def check_via_maps(directory: Path, die: Die) -> Path:
    """A via-map directory from the user that the die's ROM macros can load: every map present, whole
    (its header, size and the sha256 in its header: rtl/via_map.py load_via_map), in the die's geometry,
    and, when the directory holds the manifest `hardwire build` writes, every map with the sha256
    recorded there. A problem raises a HardwireError `<file>: <what>`, before any simulator reads a map."""
    directory = Path(directory)
    if not directory.is_dir():
        raise HardwireError(f"--via-maps {directory} is not a directory")
    names = map_names(die)
    missing = [name for name in names if not (directory / via_map_file(name)).is_file()]
    if missing:
        raise HardwireError(f"--via-maps {directory} lacks {len(missing)} via maps of die {die.name}, "
                            f"e.g. {via_map_file(missing[0])}")
    for name, (width, depth) in names.items():
        check_via_map_file(directory / via_map_file(name), width, depth)
    manifest_path = directory / VIA_MAPS_MANIFEST
    if manifest_path.exists():
        _check_against_manifest(directory, manifest_path, die)
    return directory.resolve()


def _check_against_manifest(directory: Path, manifest_path: Path, die: Die) -> None:
    try:
        manifest = json.loads(manifest_path.read_text())
        recorded, manifest_die = dict(manifest["maps"]), manifest["die"]
    except (OSError, ValueError, KeyError, TypeError):
        raise HardwireError(f"{manifest_path}:1: not a via-map manifest of `hardwire build`") from None
    if manifest_die != die.name:
        raise HardwireError(f"{manifest_path}:1: the maps were built for die {manifest_die}, not {die.name}")
    for file, digest in recorded.items():
        path = directory / str(file)
        if not path.is_file() or sha256_of(path) != digest:
            raise HardwireError(f"{path}: differs from the sha256 `hardwire build` recorded in {manifest_path}")


class ChipSim:
    """The die's chip, built once per base grid; `reset` starts a model from its via maps."""

    def __init__(self, die: Die, via_maps: Path, coverage: bool = False, partitioned: bool = True):
        """partitioned=False Verilates the whole chip as one model: slower, and the reference that the
        partitioned simulation is checked against (tests/cosim/test_partition.py)."""
        t0 = time.perf_counter()
        sources, self.grid_hit = grid_sources(die)
        # the tile and the head are Verilated once each, as parts the chip steps only while
        # their clocks run (cosim/partition.py)
        bridges, parts, cpp = {}, [], [capture_cpp(die)]
        for module, is_head in ((chip.TILE_MODULE, False), (chip.HEAD_MODULE, True)) if partitioned else ():
            pins = unit_pins(die, is_head)
            bridges[f"{module}.v"] = _bridge_verilog(module, pins, coverage)
            part_sources = {f"{part_top(module)}.v": part_top_verilog(module, pins),
                            **chip.unit_sources(die, module, sources)}
            parts.append(Part(part_top(module), part_prefix(module), tuple(part_sources.items())))
            cpp.append(bridge_cpp(module, pins))
        if partitioned:  # the parts hold the lane group module; the chip's own build needs none
            sources = {name: text for name, text in sources.items() if name != f"{chip.LANE_MODULE}.v"}
        self.sim: Simulator = build({**sources, **bridges}, chip.CHIP_MODULE, extra_cpp="".join(cpp),
                                    via_maps=via_maps, parts=parts, coverage=coverage)
        self.sim.coverage_label = die.name
        self.build_s = time.perf_counter() - t0
        self.die = die
        self.io = self.sim.io
        ports = chip.chip_ports(die)
        self.host, self.tap = InterfacePins(self.io, ports, "host"), InterfacePins(self.io, ports, "tap")
        self.rst = ports.pin("rst")
        fn = getattr(self.sim.model.lib, RUN_SYMBOL)
        fn.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint64, ctypes.c_void_p, ctypes.c_uint64,
                       ctypes.POINTER(ctypes.c_uint64), ctypes.c_void_p]
        fn.restype = ctypes.c_uint64
        self._run = fn
        load = getattr(self.sim.model.lib, LOAD_SYMBOL)
        load.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint64,
                         ctypes.POINTER(ctypes.c_uint64)]
        load.restype = ctypes.c_uint64
        self._load = load
        self._beats = np.zeros((1 << 16, BEAT_WORDS), np.uint32)
        self._cycles_at = np.zeros(1 + (2 << (chip.UNIT_BITS + chip.pc_bits(die))), np.uint64)
        self.adapter = None  # the adapter the chip holds (the golden reference runs with it); None: the base model
        self.adapter_commands = None  # the load commands that put it there (a failure's replay loads them again)
        self.reset()

    def write_coverage(self, path: Path) -> Path:
        """The coverage counted since the last write by every chip of this build in this process (one
        database per library; verilator_build.Simulator.write_coverage), as a Verilator .dat file."""
        return self.sim.write_coverage(path)

    @property
    def cache_hit(self) -> bool:
        return self.sim.cache_hit

    def reset(self) -> None:
        """Reset the chip and start a new sequence (position 0)."""
        host = self.host
        self.io[self.rst], host.tok_valid, host.seq_reset = 1, 0, 0
        self.sim.step(2)
        self.io[self.rst] = 0
        host.seq_reset = 1
        self.sim.step()
        host.seq_reset = 0

    def load_adapter(self, image: AdapterImage, adapter) -> int:
        """Stream an adapter's SRAM image through the adapter-load port (rtl/adapter_image.py); the
        chip uses it from the next token until another is loaded or it is cleared. Returns the cycles."""
        cycles = self._stream(image.commands)
        self.adapter, self.adapter_commands = adapter, image.commands
        return cycles

    def clear_adapter(self) -> int:
        """The LORA_CLEAR command: the chip runs the base model again."""
        cycles = self._stream(clear_command())
        self.adapter, self.adapter_commands = None, None
        return cycles

    def _stream(self, commands: np.ndarray) -> int:
        if self.host.busy:
            raise HardwireError("the chip takes an adapter only between tokens")
        commands = np.ascontiguousarray(commands, np.uint32)
        taken = ctypes.c_uint64(0)
        limit = 2 * len(commands) + 16
        cycles = int(self._load(self.sim.model.model, commands.ctypes.data, len(commands), limit, ctypes.byref(taken)))
        if taken.value != len(commands):
            raise HardwireError(f"the chip took {taken.value} of {len(commands)} adapter-load commands")
        return cycles

    @property
    def position(self) -> int:
        return int(self.host.position)

    def token(self, token: int, max_cycles: int = 50_000_000) -> TokenRun:
        """Send one token and clock until the chip replies."""
        if not 0 <= token < 1 << chip.ROW_BITS:
            raise HardwireError(f"token id {token} does not fit the host interface's {chip.ROW_BITS} bits")
        count = ctypes.c_uint64(0)
        self._cycles_at.fill(0)
        t0 = time.perf_counter()
        cycles = int(self._run(self.sim.model.model, token, max_cycles, self._beats.ctypes.data, len(self._beats),
                               ctypes.byref(count), self._cycles_at.ctypes.data))
        wall = time.perf_counter() - t0
        if count.value > len(self._beats):
            raise HardwireError(f"{count.value} tap beats overflow the capture buffer of {len(self._beats)}")
        if cycles >= max_cycles and not self.host.reply:
            raise HardwireError(f"the chip did not answer token {token} within {max_cycles} cycles")
        counted = CycleCounts.of(self._cycles_at, chip.pc_bits(self.die))
        return TokenRun(int(self.host.status), int(self.host.out_token), cycles, wall,
                        decode_beats(self._beats[:count.value]), counted)


def capture_cpp(die: Die) -> str:
    """CAPTURE_CPP for the chip top, its pin names taken from the port table (rtl/chip.py CHIP_PORTS)."""
    ports = chip.chip_ports(die)
    pins = {f"{name}_{attr}": ports.pin(name, attr) for name in ("host", "tap", "lora", "perf")
            for attr in getattr(ports, name).signals()}
    return CAPTURE_CPP.format(top=chip.CHIP_MODULE, symbol=RUN_SYMBOL, beat_words=BEAT_WORDS,
                              pc_bits=chip.pc_bits(die),
                              data_words=DATA_BITS // 32, clk=ports.pin("clk"), load_symbol=LOAD_SYMBOL,
                              command_words=COMMAND_WORDS, lora_data_words=DATA_WORDS, **pins)


class InterfacePins:
    """The pins of one interface argument of a Verilated top, read and written by the interface's
    attribute names (`host.tok_valid = 1`); the pin names come from the module's port table."""

    def __init__(self, io, ports: chip.Ports, name: str):
        names = {attr: ports.pin(name, attr) for attr in getattr(ports, name).signals()}
        object.__setattr__(self, "_io", io)
        object.__setattr__(self, "_names", names)

    def __getattr__(self, attr: str):
        return self._io[self._names[attr]]

    def __setattr__(self, attr: str, value) -> None:
        self._io[self._names[attr]] = value


def _bridge_verilog(module: str, pins, coverage: bool) -> str:
    """The bridge is simulation scaffolding, not base grid: a coverage build leaves it out of the counts
    (the unit's own RTL is counted in its part). Unchanged without coverage, so that build keeps its key."""
    text = bridge_verilog(module, pins)
    return f"/* verilator coverage_off */\n{text}" if coverage else text


def decode_beats(raw: np.ndarray) -> list[Beat]:
    """Beats of the capture buffer, the 48-bit data words sign-extended."""
    if not len(raw):
        return []
    data = raw[:, 4:].copy().view(np.uint8).reshape(len(raw), BLOCK, ACC_BITS // 8)
    wide = np.zeros((len(raw), BLOCK, 8), np.uint8)
    wide[..., :6] = data
    words = wide.view(np.int64).reshape(len(raw), BLOCK)
    words = np.where(words >= 1 << (ACC_BITS - 1), words - (1 << ACC_BITS), words)
    cycles = raw[:, 0].astype(np.int64) | raw[:, 1].astype(np.int64) << 32
    exps = (raw[:, 3] & 0xFF).astype(np.uint8).view(np.int8)
    return [Beat(int(raw[i, 2] >> 8), int(raw[i, 2] & 0xFF), int(raw[i, 3] >> 8), int(exps[i]), words[i],
                 int(cycles[i])) for i in range(len(raw))]

