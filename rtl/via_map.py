"""The via-map file: the bits of one via-programmable ROM, as the metal generator writes them.

A binary file (suffix `.vmap`) that the ROM macro's simulation model loads directly, with no text
parsing. All integers little-endian:

    offset  bytes  field
    0       8      magic b"HWVIAMAP"
    8       4      format version (1)
    12      4      width: bits per ROM word
    16      4      depth: words in the ROM
    20      4      used: words stored; the words from `used` to `depth - 1` are zero
    24      4      kept: bits kept per word, the number of set bits in the mask
    28      4      reserved, zero
    32      32     sha256 of everything after the header (the mask and the payload)
    64      M      mask, M = ceil(width / 8) bytes: the union (OR) of all words' set bits
    64 + M  used * ceil(kept / 8)   the payload: word after word, each word's bits under the mask,
                   LSB first, packed into ceil(kept / 8) bytes whose spare top bits are zero

Dropping the bits that no word sets is exact and independent of what the ROM holds. A weight slot
of a Q4_1 block uses 128 of its 256 code bits plus the fp16 d and m, so a weight map is as large as
the GGUF's own blocks. `dump_via_map` prints a map as `$readmemh` hex, for people.
"""

from __future__ import annotations

import hashlib
import os
import struct
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hardwire.golden.errors import HardwireError

SUFFIX = ".vmap"
MAGIC = b"HWVIAMAP"
VERSION = 1
HEADER = struct.Struct("<8sIIIIII32s")  # magic, version, width, depth, used, kept, reserved, sha256
CHUNK_WORDS = 4096  # words packed or unpacked at a time: bounds the bit arrays' memory


def via_map_file(name: str) -> str:
    """The file name of via map `name` in a via-map directory."""
    return f"{name}{SUFFIX}"


@dataclass(frozen=True)
class ViaMap:
    """A via map as stored: geometry, mask and packed payload (see the module docstring)."""

    width: int
    depth: int
    used: int
    mask: np.ndarray  # (ceil(width / 8),) uint8
    payload: np.ndarray  # (used, ceil(kept / 8)) uint8

    @property
    def kept(self) -> int:
        return int(np.unpackbits(self.mask).sum())

    def rows(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Words start..stop-1 as little-endian byte rows ((n, ceil(width / 8)) uint8)."""
        stop = self.depth if stop is None else stop
        out = np.zeros((stop - start, _row_bytes(self.width)), np.uint8)
        stored = min(stop, self.used)
        if stored > start:
            out[:stored - start] = _unpack(self.payload[start:stored], self.mask)
        return out

    def words(self) -> list[int]:
        return [int.from_bytes(row.tobytes(), "little") for row in self.rows()]


def write_via_map(path: Path, words: Iterable[int], width: int, depth: int | None = None) -> Path:
    """Write unsigned words (Python or numpy ints, each < 2**width) as a via map, atomically."""
    words = [int(w) for w in words]
    depth = len(words) if depth is None else depth
    _check_shape(width, depth)
    bad = next((w for w in words if not 0 <= w < 1 << width), None)
    if bad is not None:
        raise HardwireError(f"via-map word {bad:#x} does not fit {width} unsigned bits")
    size = _row_bytes(width)
    rows = np.frombuffer(b"".join(w.to_bytes(size, "little") for w in words), np.uint8).reshape(len(words), size)
    return write_via_map_rows(path, rows, width, depth)


def write_via_map_rows(path: Path, rows, width: int, depth: int) -> Path:
    """The same file from little-endian byte rows ((words, ceil(width / 8)) uint8), vectorized: fast
    enough for a die's weight ROMs."""
    rows = np.asarray(rows, np.uint8)
    _check_shape(width, depth)
    if rows.ndim != 2 or rows.shape[1] != _row_bytes(width):
        raise HardwireError(f"via-map rows must be (words, {_row_bytes(width)}) bytes, not {rows.shape}")
    if len(rows) > depth:
        raise HardwireError(f"{len(rows)} words do not fit a via ROM of depth {depth}")
    mask = np.bitwise_or.reduce(rows, axis=0) if len(rows) else np.zeros(rows.shape[1], np.uint8)
    if width % 8 and mask[-1] >> (width % 8):
        raise HardwireError(f"a via-map word does not fit {width} unsigned bits")
    payload = np.concatenate([_pack(rows[i:i + CHUNK_WORDS], mask) for i in range(0, len(rows), CHUNK_WORDS)]
                             or [np.zeros((0, _packed_bytes(mask)), np.uint8)])
    body = mask.tobytes() + payload.tobytes()
    kept = int(np.unpackbits(mask).sum())
    header = HEADER.pack(MAGIC, VERSION, width, depth, len(rows), kept, 0, hashlib.sha256(body).digest())
    return _publish(Path(path), header + body)


def _publish(path: Path, blob: bytes) -> Path:
    """Write atomically: a reader sees the old file or the whole new one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(blob)
    os.replace(tmp, path)
    return path


def read_via_map(path: Path) -> tuple[list[int], int]:
    """(words, width) of a via-map file: all `depth` words, checked as `load_via_map` does."""
    vmap = load_via_map(path)
    return vmap.words(), vmap.width


def load_via_map(path: Path) -> ViaMap:
    """A via-map file, every field checked: the header, the file's size, the sha256 of mask and
    payload, and no bit outside the word's width or a packed word's kept bits. A problem raises a
    HardwireError `<path>: <what>`."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise HardwireError(f"{path}: cannot be read: {exc.strerror}") from None
    return _parse(path, data)


def check_via_map_file(path: Path, width: int, depth: int) -> None:
    """A via map that a macro of `depth` x `width` bits can load (load_via_map's checks, and the
    geometry). A problem raises a HardwireError `<path>: <what>`."""
    vmap = load_via_map(path)
    if (vmap.width, vmap.depth) != (width, depth):
        raise HardwireError(f"{path}: the map is {vmap.depth} x {vmap.width} bits; the die's ROM is "
                            f"{depth} x {width}")


def _parse(path: Path, data: bytes) -> ViaMap:
    if len(data) < HEADER.size or data[:len(MAGIC)] != MAGIC:
        raise HardwireError(f"{path}: not a hardwire via map (no {MAGIC.decode()} header)")
    _, version, width, depth, used, kept, reserved, digest = HEADER.unpack_from(data)
    if version != VERSION:
        raise HardwireError(f"{path}: via-map format version {version}; this hardwire reads version {VERSION}")
    if width < 1 or depth < 1 or used > depth or reserved:
        raise HardwireError(f"{path}: a malformed header (width {width}, depth {depth}, {used} words stored)")
    mask_end = HEADER.size + _row_bytes(width)
    expected = mask_end + used * -(-kept // 8)
    if len(data) != expected:
        raise HardwireError(f"{path}: {len(data)} bytes; a map of {used} stored words of {kept} bits "
                            f"has {expected}")
    if hashlib.sha256(memoryview(data)[HEADER.size:]).digest() != digest:
        raise HardwireError(f"{path}: the mask or payload differs from the sha256 in the map's header")
    mask = np.frombuffer(data, np.uint8, mask_end - HEADER.size, HEADER.size)
    if int(np.unpackbits(mask).sum()) != kept or (width % 8 and mask[-1] >> (width % 8)):
        raise HardwireError(f"{path}: the mask does not match the header (width {width}, {kept} bits kept)")
    payload = np.frombuffer(data, np.uint8, expected - mask_end, mask_end).reshape(used, -(-kept // 8))
    if kept % 8 and used and np.any(payload[:, -1] >> (kept % 8)):
        word = int(np.flatnonzero(payload[:, -1] >> (kept % 8))[0])
        raise HardwireError(f"{path}: word {word} has bits beyond the map's {kept} kept bits")
    return ViaMap(width, depth, used, mask, payload)


def _check_shape(width: int, depth: int) -> None:
    if width < 1 or depth < 1:
        raise HardwireError(f"a via ROM needs width and depth >= 1 (got width {width}, depth {depth})")
    if width >= 1 << 32 or depth >= 1 << 32:
        raise HardwireError(f"a via ROM of width {width} and depth {depth} does not fit the via-map header")


def _row_bytes(width: int) -> int:
    return -(-width // 8)


def _packed_bytes(mask: np.ndarray) -> int:
    return -(-int(np.unpackbits(mask).sum()) // 8)


def _kept_bits(mask: np.ndarray) -> np.ndarray:
    return np.flatnonzero(np.unpackbits(mask, bitorder="little"))


def _pack(rows: np.ndarray, mask: np.ndarray) -> np.ndarray:
    bits = np.unpackbits(rows, axis=1, bitorder="little")[:, _kept_bits(mask)]
    return np.packbits(bits, axis=1, bitorder="little").reshape(len(rows), _packed_bytes(mask))


def _unpack(payload: np.ndarray, mask: np.ndarray) -> np.ndarray:
    kept = _kept_bits(mask)
    out = np.zeros((len(payload), mask.size), np.uint8)
    for i in range(0, len(payload), CHUNK_WORDS):
        chunk = payload[i:i + CHUNK_WORDS]
        bits = np.zeros((len(chunk), mask.size * 8), np.uint8)
        bits[:, kept] = np.unpackbits(chunk, axis=1, bitorder="little")[:, :kept.size]
        out[i:i + len(chunk)] = np.packbits(bits, axis=1, bitorder="little")
    return out


def dump_via_map(path: Path, start: int = 0, stop: int | None = None) -> Iterator[str]:
    """The map's words start..stop-1 as `$readmemh` text: two comment lines, an `@address` line,
    then one word per line in ceil(width / 4) hex digits."""
    vmap = load_via_map(path)
    stop = vmap.depth if stop is None else stop
    if not 0 <= start <= stop <= vmap.depth:
        raise HardwireError(f"{path}: words {start}:{stop} are outside the map's {vmap.depth} words")
    digits = -(-vmap.width // 4)
    yield f"// hardwire via map {Path(path).name}: width {vmap.width} depth {vmap.depth}"
    yield f"// words {start}:{stop}"
    yield f"@{start:x}"
    for i in range(start, stop, CHUNK_WORDS):
        rows = vmap.rows(i, min(i + CHUNK_WORDS, stop))
        text = rows[:, ::-1].tobytes().hex()
        step = 2 * rows.shape[1]
        yield from (text[j + step - digits:j + step] for j in range(0, len(text), step))
