"""Benchmark: the on-disk size of a printed model's via maps against the GGUF's weight bytes, and the
seconds to write them and to read them back.

The GGUF's weight bytes are the sum of its tensors' byte sizes (quantized blocks, norms, everything the
file holds but its header and metadata). The baseline, in the same run, is the size the same maps took
as `$readmemh` hex text (one line of ceil(width / 4) digits per word of every ROM, the form the maps had
before the binary format): computed from the die's ROM geometry, not written.

    python tools/bench_via_maps.py --model smollm2-135m --die hw-s135
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from gguf import GGUFReader

from hardwire.cli_common import EXIT_OK, add_die_option, add_model_option
from hardwire.cosim.chip_sim import map_names, write_maps
from hardwire.golden.gguf_model import load_model
from hardwire.golden.models import resolve_model
from hardwire.rtl import metal
from hardwire.rtl.die import get_die
from hardwire.rtl.via_map import load_via_map, via_map_file


def gguf_weight_bytes(path: Path) -> int:
    return sum(int(t.n_bytes) for t in GGUFReader(path).tensors)


def hex_bytes(names: dict[str, tuple[int, int]]) -> int:
    """The size of the maps as hex text: two comment lines, then one line per word of the ROM."""
    return sum(len(f"// hardwire via map\n// width {w} depth {d}\n") + d * (-(-w // 4) + 1)
               for w, d in names.values())


def time_write(image: metal.Metal, directory: Path) -> float:
    """Seconds to write every map of the metal (cosim.chip_sim.write_maps, as the metal cache does)."""
    t0 = time.perf_counter()
    write_maps(image, directory)
    return time.perf_counter() - t0


def read_maps(names: dict, directory: Path) -> float:
    """Every map checked and unpacked in Python (the loader in the simulator does the same in C++)."""
    t0 = time.perf_counter()
    for name in names:
        load_via_map(directory / via_map_file(name)).rows()
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_option(ap)
    add_die_option(ap)
    ap.add_argument("--repeats", type=int, default=3, help="writes and reads of all the maps (medians)")
    args = ap.parse_args(argv)
    path = resolve_model(args.model)
    model = load_model(path)
    die = get_die(args.die) if args.die else metal.smallest_die(model)
    image = metal.generate(model, die)
    names = map_names(die)
    writes, reads = [], []
    with tempfile.TemporaryDirectory(prefix="hardwire-bench-via-maps-") as tmp:
        for _ in range(args.repeats):
            writes.append(time_write(image, Path(tmp)))
            reads.append(read_maps(names, Path(tmp)))
        sizes = {name: (Path(tmp) / via_map_file(name)).stat().st_size for name in names}
    weights = gguf_weight_bytes(path)
    total, as_hex = sum(sizes.values()), hex_bytes(names)
    by_kind = {}
    for name, size in sizes.items():
        kind = name.split("_", 1)[1] if name.startswith(("tile", "head")) else name
        by_kind[kind] = by_kind.get(kind, 0) + size
    json.dump({"model": args.model, "die": die.name, "maps": len(names), "via_map_bytes": total,
               "gguf_weight_bytes": weights, "over_gguf_weights": round(total / weights, 4),
               "hex_baseline_bytes": as_hex, "hex_over_binary": round(as_hex / total, 2),
               "bytes_by_kind": dict(sorted(by_kind.items())),
               "write_s": [round(s, 2) for s in writes], "write_median_s": round(statistics.median(writes), 2),
               "read_s": [round(s, 2) for s in reads], "read_median_s": round(statistics.median(reads), 2),
               "repeats": args.repeats}, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
