"""The via-map file: the bits of one via-programmable ROM, as the metal generator writes them.

Format (text, readable by Verilog's $readmemh):
    // hardwire via map
    // width <bits per word> depth <words>
    <word 0 in hex, ceil(width/4) digits>
    <word 1>
    ...
Exactly `depth` words in address order; the via-map writer pads a short table with zero
words (a via left out reads as 0).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from hardwire.golden.errors import HardwireError

MAGIC = "// hardwire via map"


def write_via_map(path: Path, words: Iterable[int], width: int, depth: int | None = None) -> Path:
    """Write unsigned words (Python or numpy ints, each < 2**width) as a via map, atomically."""
    words = [int(w) for w in words]
    depth = len(words) if depth is None else depth
    _check_shape(width, depth)
    if len(words) > depth:
        raise HardwireError(f"{len(words)} words do not fit a via ROM of depth {depth}")
    bad = next((w for w in words if not 0 <= w < 1 << width), None)
    if bad is not None:
        raise HardwireError(f"via-map word {bad:#x} does not fit {width} unsigned bits")
    digits = (width + 3) // 4
    lines = [MAGIC, f"// width {width} depth {depth}"]
    lines += [f"{w:0{digits}x}" for w in words] + ["0" * digits] * (depth - len(words))
    return _publish(Path(path), "\n".join(lines) + "\n")


def _publish(path: Path, text: str) -> Path:
    """Write atomically: a reader sees the old file or the whole new one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


def write_via_map_rows(path: Path, rows, width: int, depth: int) -> Path:
    """The same file from little-endian byte rows ((words, ceil(width / 8)) uint8), fast enough
    for a die's weight ROMs: hex per row from the bytes, no Python integers."""
    rows = np.asarray(rows, np.uint8)
    _check_shape(width, depth)
    if rows.ndim != 2 or rows.shape[1] != -(-width // 8):
        raise HardwireError(f"via-map rows must be (words, {-(-width // 8)}) bytes, not {rows.shape}")
    if len(rows) > depth:
        raise HardwireError(f"{len(rows)} words do not fit a via ROM of depth {depth}")
    spare = rows.shape[1] * 8 - width
    if spare and np.any(rows[:, -1] >> (8 - spare)):
        raise HardwireError(f"a via-map word does not fit {width} unsigned bits")
    digits = (width + 3) // 4
    text = rows[:, ::-1].tobytes().hex()
    step = 2 * rows.shape[1]
    lines = [MAGIC, f"// width {width} depth {depth}"]
    lines += [text[i + step - digits:i + step] for i in range(0, len(text), step)]
    lines += ["0" * digits] * (depth - len(rows))
    return _publish(Path(path), "\n".join(lines) + "\n")


def read_via_map(path: Path) -> tuple[list[int], int]:
    """(words, width) of a via-map file, checked against its header."""
    lines = Path(path).read_text().splitlines()
    if len(lines) < 2 or lines[0] != MAGIC:
        raise HardwireError(f"{path} is not a hardwire via map (no '{MAGIC}' header)")
    try:
        _, _, width, _, depth = lines[1].split()
        width, depth = int(width), int(depth)
        words = [int(line, 16) for line in lines[2:]]
    except ValueError:
        raise HardwireError(f"{path}: malformed via map") from None
    if len(words) != depth or any(w >> width for w in words):
        raise HardwireError(f"{path}: words do not match the header (width {width}, depth {depth})")
    return words, width


def _check_shape(width: int, depth: int) -> None:
    if width < 1 or depth < 1:
        raise HardwireError(f"a via ROM needs width and depth >= 1 (got width {width}, depth {depth})")
