"""Die parameters: what the base grid is, before any model is chosen.

A die fixes the tile count, the MAC lanes, every ROM and SRAM size and the
widest model its buffers hold. The base-grid Verilog depends on these numbers
only; a model changes nothing here, only the metal.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from hardwire.golden.errors import HardwireError
from hardwire.golden.spec import BLOCK, LORA_BITS

SLOT_BITS = BLOCK * 8 + 16 + 16 + 2 * 8 + 2 * 8  # 32 code fields of 8 bits, fp16 d, fp16 m/dmin, 2 scales, 2 mins
LORA_EXP_FIELD = 6  # the signed exponent of a LoRA SRAM block (docs/numerics.md 12.1)
LORA_BLOCK_BITS = BLOCK * LORA_BITS + LORA_EXP_FIELD  # one LoRA SRAM block: 32 int8 mantissas, one exponent


@dataclass(frozen=True)
class Die:
    name: str
    tiles: int  # one transformer layer per tile
    lanes: int  # block-MAC lanes per tile: output rows computed in parallel
    head_lanes: int  # lanes of the head unit (LM head rows in parallel)
    tile_rom_words: int  # weight ROM depth per tile, words of `lanes` block slots
    head_rom_words: int  # head ROM depth, words of `head_lanes` block slots
    kv_tokens: int  # KV SRAM positions per tile: the context limit
    max_d_model: int
    max_d_ffn: int
    max_kv_dim: int
    max_vocab: int
    max_heads: int
    max_head_dim: int  # RoPE table rows hold max_head_dim / 32 blocks
    clock_mhz: float
    lora_rank: int  # the largest LoRA rank per projection the adapter SRAM holds (a multiple of 32)
    attn_heads: int = 1  # query heads the attention unit computes at once (its engines, in lockstep)

    @property
    def head_block_bits(self) -> int:
        """Address bits of a block inside a head (the RoPE table's low address bits)."""
        return max(1, (self.max_head_dim // 32 - 1).bit_length())

    @property
    def tile_rom_width(self) -> int:
        return self.lanes * SLOT_BITS

    @property
    def head_rom_width(self) -> int:
        return self.head_lanes * SLOT_BITS

    @property
    def lora_sram_words(self) -> int:
        """Depth of a tile's LoRA SRAM: rank lora_rank on all seven projections at the widest dims,
        A in words of `lanes` rank rows per input block, B' in words of `lanes` output rows per
        rank block (rtl/metal.py lora_layout)."""
        nd, nf, nkv = self.max_d_model // BLOCK, self.max_d_ffn // BLOCK, self.max_kv_dim // BLOCK
        a_words = self.row_groups(self.lora_rank) * (6 * nd + nf)
        b_rows = (BLOCK * n for n in (nd, nkv, nkv, nd, nf, nf, nd))  # q, k, v, o, gate, up, down
        b_words = sum(self.row_groups(rows) for rows in b_rows) * (self.lora_rank // BLOCK)
        return a_words + b_words

    def row_groups(self, rows: int) -> int:
        """Row groups of `lanes` rows that hold `rows` rows (the last one may be partly filled)."""
        return -(-rows // self.lanes)

    @property
    def blocks_per_group(self) -> int:
        """Output blocks of a tile's row group: 1 up to 32 lanes, lanes / 32 beyond."""
        return max(1, self.lanes // BLOCK)

    @property
    def lora_sram_width(self) -> int:
        return self.lanes * LORA_BLOCK_BITS

    @property
    def lora_sram_bits(self) -> int:
        """LoRA SRAM bits of the whole die."""
        return self.tiles * self.lora_sram_words * self.lora_sram_width

    def __post_init__(self):
        for what, lanes in (("lanes", self.lanes), ("head_lanes", self.head_lanes)):
            if BLOCK % lanes and lanes % BLOCK:
                raise HardwireError(f"die {self.name}: {what}={lanes} must divide {BLOCK} or be a multiple of it")
        if not 1 <= self.attn_heads <= self.max_heads:
            raise HardwireError(f"die {self.name}: attn_heads={self.attn_heads} must lie in 1..max_heads "
                                f"({self.max_heads})")
        if self.head_lanes & (self.head_lanes - 1):
            raise HardwireError(f"die {self.name}: head_lanes={self.head_lanes} must be a power of two (EMBED "
                                "selects the token's lane by its low bits)")

    @property
    def wide(self) -> bool:
        """The tiles or the head have more than 32 lanes: lane groups of 32 (rtl/lanes.py)."""
        return max(self.lanes, self.head_lanes) > BLOCK

    @property
    def rom_bits(self) -> int:
        """Weight ROM bits of the whole die: every tile's and the head's."""
        return self.tiles * self.tile_rom_words * self.tile_rom_width + self.head_rom_words * self.head_rom_width

    @property
    def macs_per_cycle(self) -> int:
        """Weights a tile multiplies per cycle: a 32-weight block per lane."""
        return self.lanes * BLOCK

    @property
    def head_macs_per_cycle(self) -> int:
        return self.head_lanes * BLOCK

    def as_dict(self) -> dict:
        return asdict(self)


DIES = {
    # for tests: a handful of tiny layers
    "hw-tiny": Die("hw-tiny", tiles=4, lanes=4, head_lanes=8, tile_rom_words=8192, head_rom_words=4096,
                   kv_tokens=128, max_d_model=256, max_d_ffn=512, max_kv_dim=256, max_vocab=4096,
                   max_heads=8, max_head_dim=128, clock_mhz=500.0, lora_rank=32),
    # sized for SmolLM2-135M: 30 layers of d_model 576, FFN 1536, vocab 49,152
    "hw-s135": Die("hw-s135", tiles=32, lanes=8, head_lanes=32, tile_rom_words=16384, head_rom_words=32768,
                   kv_tokens=2048, max_d_model=640, max_d_ffn=1536, max_kv_dim=256, max_vocab=49152,
                   max_heads=16, max_head_dim=128, clock_mhz=1000.0, lora_rank=64),
    # hw-tiny's buffers on wide lanes: two output blocks per row group (pad beats, partial groups);
    # three attention engines: the fast suite's 8-head model runs rounds of 3, 3 and 2 heads
    "hw-tiny-w": Die("hw-tiny-w", tiles=4, lanes=64, head_lanes=64, tile_rom_words=512, head_rom_words=512,
                     kv_tokens=128, max_d_model=256, max_d_ffn=512, max_kv_dim=256, max_vocab=4096,
                     max_heads=8, max_head_dim=128, clock_mhz=500.0, lora_rank=32, attn_heads=3),
    # SmolLM2-135M at speed: 18 output blocks per row group, a 576-row group per input block, its
    # 9 query heads in one attention round
    "hw-s135w": Die("hw-s135w", tiles=30, lanes=576, head_lanes=1024, tile_rom_words=232, head_rom_words=896,
                    kv_tokens=2048, max_d_model=576, max_d_ffn=1536, max_kv_dim=256, max_vocab=49152,
                    max_heads=16, max_head_dim=128, clock_mhz=1000.0, lora_rank=64, attn_heads=9),
    # the SmolLM2-360M class: llama models up to d_model 1024, FFN 2816, 32 layers, 16 heads, vocab 49,152
    "hw-m360": Die("hw-m360", tiles=32, lanes=512, head_lanes=1024, tile_rom_words=832, head_rom_words=1536,
                   kv_tokens=2048, max_d_model=1024, max_d_ffn=2816, max_kv_dim=1024, max_vocab=49152,
                   max_heads=16, max_head_dim=128, clock_mhz=1000.0, lora_rank=64, attn_heads=16),
}


def get_die(name: str) -> Die:
    if name not in DIES:
        raise HardwireError(f"die '{name}' is not one of {', '.join(DIES)}")
    return DIES[name]
