"""The C++ half of the ROM macros' via-map loader, compiled into every Verilator build whose RTL uses it.

A ROM macro (rtl/cells/via_rom.py) calls `hw_via_map_load(path, memory, width, depth)` from its
`initial` block, through the DPI-C package VIA_MAP_PACKAGE. The loader maps the binary via map
(rtl/via_map.py format), checks its header against the macro's width and depth and its size, and
unpacks every word straight into the macro's memory array, which it finds by name in the calling
scope (the memory is `public_flat_rw`; Verilator hands a `context` import the caller's instance
scope). The clocked read stays a plain array read: the loader runs once per macro, never per cycle.

It checks what it needs to fill the memory safely, not the sha256: `hardwire` checks the maps it
is given (cosim/chip_sim.py check_via_maps, the cache's manifests) before a model starts.
"""

from __future__ import annotations

from hardwire.rtl.cells.via_rom import VIA_MAP_PACKAGE, VIA_MAP_PACKAGE_FILE, VIA_MAP_PACKAGE_TEXT

LOADER_CPP = r"""
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "svdpi.h"
#include "verilated.h"
#include "verilated_syms.h"

namespace hw_via_map {

struct Header {
    char magic[8];
    uint32_t version, width, depth, used, kept, reserved;
    uint8_t sha256[32];
};
static_assert(sizeof(Header) == 64, "the via-map header is 64 bytes");

// deposit[m][v]: the low popcount(m) bits of v placed at the set bits of m (LSB first)
struct DepositTable {
    uint8_t at[256][256];
    DepositTable() {
        for (int m = 0; m < 256; ++m)
            for (int v = 0; v < 256; ++v) {
                int out = 0, k = 0;
                for (int b = 0; b < 8; ++b)
                    if (m >> b & 1) out |= (v >> k++ & 1) << b;
                at[m][v] = (uint8_t)out;
            }
    }
};

// One byte of a word: `mask` bits taken from the packed word at bit `from`; or a run of `run` whole
// bytes copied from byte `from / 8`.
struct Step {
    uint32_t to, from, run;
    uint8_t mask, count;
};

std::vector<Step> plan(const uint8_t* mask, uint32_t mask_bytes) {
    std::vector<Step> steps;
    uint32_t from = 0;
    for (uint32_t b = 0; b < mask_bytes; ++b) {
        uint8_t m = mask[b];
        if (!m) continue;
        uint8_t count = (uint8_t)__builtin_popcount(m);
        if (m == 0xFF && from % 8 == 0 && !steps.empty() && steps.back().run &&
            steps.back().to + steps.back().run == b && steps.back().from + 8 * steps.back().run == from)
            ++steps.back().run;
        else
            steps.push_back({b, from, (uint32_t)(m == 0xFF && from % 8 == 0), m, count});
        from += count;
    }
    return steps;
}

const char* fill(const uint8_t* data, size_t size, uint32_t width, uint32_t depth, uint8_t* mem, size_t entry) {
    static const DepositTable deposit;
    if (size < sizeof(Header)) return "shorter than its header";
    Header h;
    std::memcpy(&h, data, sizeof h);
    if (std::memcmp(h.magic, "HWVIAMAP", 8)) return "not a hardwire via map";
    if (h.version != 1) return "a via-map format version this loader does not read";
    if (h.width != width || h.depth != depth) return "its width or depth is not the ROM's";
    if (h.used > depth) return "more words stored than the ROM holds";
    uint32_t mask_bytes = (width + 7) / 8, packed = (h.kept + 7) / 8;
    if (mask_bytes > entry) return "its words are wider than the ROM's memory";
    if (size != sizeof(Header) + mask_bytes + (size_t)h.used * packed) return "its size does not match its header";
    const uint8_t* mask = data + sizeof(Header);
    const uint8_t* payload = mask + mask_bytes;
    uint32_t kept = 0;
    for (uint32_t b = 0; b < mask_bytes; ++b) kept += __builtin_popcount(mask[b]);
    if (kept != h.kept || (width % 8 && mask[mask_bytes - 1] >> (width % 8)))
        return "its mask does not match its header";
    std::vector<Step> steps = plan(mask, mask_bytes);
    std::memset(mem, 0, entry * depth);
    for (uint32_t w = 0; w < h.used; ++w) {
        const uint8_t* src = payload + (size_t)w * packed;
        uint8_t* dst = mem + (size_t)w * entry;
        for (const Step& s : steps) {
            uint32_t at = s.from / 8, shift = s.from % 8;
            if (s.run) { std::memcpy(dst + s.to, src + at, s.run); continue; }
            uint32_t v = src[at];
            if (at + 1 < packed) v |= (uint32_t)src[at + 1] << 8;
            dst[s.to] = deposit.at[s.mask][(v >> shift) & ((1u << s.count) - 1)];
        }
    }
    return nullptr;
}

}  // namespace hw_via_map

// Returns 0 when the memory holds the map, else prints why to stderr and returns 1.
extern "C" int hw_via_map_load(const char* path, const char* memory, int width, int depth) {
    const VerilatedScope* scope = static_cast<const VerilatedScope*>(svGetScope());
    const VerilatedVar* var = scope ? scope->varFind(memory) : nullptr;
    const char* problem = nullptr;
    if (!var || var->udims() != 1 || width < 1 || depth < 1 || var->totalSize() != var->entSize() * (size_t)depth)
        problem = "the ROM's memory is not visible to the loader (a public_flat_rw array of depth words)";
    int fd = problem ? -1 : open(path, O_RDONLY);
    struct stat st;
    if (!problem && (fd < 0 || fstat(fd, &st) != 0)) problem = "cannot be opened";
    void* data = MAP_FAILED;
    if (!problem && st.st_size > 0) {
        data = mmap(nullptr, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (data == MAP_FAILED) problem = "cannot be mapped";
    }
    if (!problem)
        problem = hw_via_map::fill(data == MAP_FAILED ? nullptr : static_cast<const uint8_t*>(data),
                                   data == MAP_FAILED ? 0 : (size_t)st.st_size, (uint32_t)width, (uint32_t)depth,
                                   static_cast<uint8_t*>(var->datap()), var->entSize());
    if (data != MAP_FAILED) munmap(data, (size_t)st.st_size);
    if (fd >= 0) close(fd);
    if (problem) {
        std::fprintf(stderr, "hardwire: error: via map %s for ROM memory %s: %s\n", path, memory, problem);
        return 1;
    }
    return 0;
}
"""


def uses_loader(texts) -> bool:
    """Whether any of these Verilog texts calls the via-map loader."""
    return any(f"{VIA_MAP_PACKAGE}::" in text for text in texts)


def with_package(sources: dict[str, str]) -> dict[str, str]:
    """The sources plus the loader's DPI package, when they use it and lack it."""
    if VIA_MAP_PACKAGE_FILE in sources or not uses_loader(sources.values()):
        return sources
    return {**sources, VIA_MAP_PACKAGE_FILE: VIA_MAP_PACKAGE_TEXT}
