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
        a_words = self.lora_rank // self.lanes * (6 * nd + nf)
        b_words = BLOCK * (3 * nd + 2 * nkv + 2 * nf) // self.lanes * (self.lora_rank // BLOCK)
        return a_words + b_words

    @property
    def lora_sram_width(self) -> int:
        return self.lanes * LORA_BLOCK_BITS

    @property
    def lora_sram_bits(self) -> int:
        """LoRA SRAM bits of the whole die."""
        return self.tiles * self.lora_sram_words * self.lora_sram_width

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
}


def get_die(name: str) -> Die:
    if name not in DIES:
        raise HardwireError(f"die '{name}' is not one of {', '.join(DIES)}")
    return DIES[name]
