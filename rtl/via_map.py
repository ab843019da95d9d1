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


_HEX_VALUE = np.full(256, -1, np.int16)
for _digit, _char in enumerate(b"0123456789abcdef"):
    _HEX_VALUE[_char] = _HEX_VALUE[ord(chr(_char).upper())] = _digit


def check_via_map_file(path: Path, width: int, depth: int) -> None:
    """A via map that a macro of `depth` x `width` bits can load: the header, then exactly `depth`
    lines of ceil(width/4) hex digits, each word below 2**width. Vectorized, fast enough for a die's
    weight maps. A problem raises a HardwireError `<path>:<line>: <what>`."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise HardwireError(f"{path}:1: cannot be read: {exc.strerror}") from None
    head = data.split(b"\n", 2)
    if head[0] != MAGIC.encode():
        raise HardwireError(f"{path}:1: not a hardwire via map (no '{MAGIC}' header)")
    expected = f"// width {width} depth {depth}"
    if len(head) < 2 or head[1] != expected.encode():
        got = head[1][:60].decode(errors="replace") if len(head) > 1 else "nothing"
        raise HardwireError(f"{path}:2: header says {got!r}; the die's ROM needs {expected!r}")
    body = np.frombuffer(head[2] if len(head) > 2 else b"", np.uint8)
    if body.size and body[-1] != 10:
        body = np.append(body, np.uint8(10))  # a last line without its newline
    line, what = _first_bad_line(body, width, depth)
    if line is not None:
        raise HardwireError(f"{path}:{line + 3}: {what}")


def _first_bad_line(body: np.ndarray, width: int, depth: int) -> tuple[int | None, str]:
    """(index of the first bad word line, what is wrong), or (None, "")."""
    digits = (width + 3) // 4
    ends = np.flatnonzero(body == 10)
    starts = np.concatenate([[0], ends[:-1] + 1]).astype(np.int64)
    problems = []
    values = _HEX_VALUE[body]
    bad_chars = np.flatnonzero((values < 0) & (body != 10))
    if bad_chars.size:
        i = int(np.searchsorted(ends, bad_chars[0]))
        text = bytes(body[starts[i]:ends[i]])[:40].decode(errors="replace")
        problems.append((i, f"{text!r} is not a hexadecimal word"))
    bad_lengths = np.flatnonzero(ends - starts != digits)
    if bad_lengths.size:
        i = int(bad_lengths[0])
        problems.append((i, f"a word has {int(ends[i] - starts[i])} hex digits; a {width}-bit ROM word has {digits}"))
    if width % 4 and len(ends):
        top = values[starts[:len(ends)].clip(max=len(body) - 1)]
        too_wide = np.flatnonzero((top >= 1 << (width % 4)) & (ends - starts == digits))
        if too_wide.size:
            i = int(too_wide[0])
            problems.append((i, f"word {bytes(body[starts[i]:ends[i]]).decode()} does not fit {width} bits"))
    if len(ends) < depth:
        problems.append((len(ends), f"the map ends after {len(ends)} words; the ROM holds {depth}"))
    elif len(ends) > depth:
        problems.append((depth, f"more than the ROM's {depth} words"))
    return min(problems) if problems else (None, "")
