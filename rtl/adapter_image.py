"""A LoRA adapter as the commands of the chip's adapter-load port: the SRAM image, word by word.

The host computes nothing of the model: golden/lora_int.py stores each projection's A and B' (the
scale folded into B) as int8 mantissas with one exponent per block of 32 (docs/numerics.md 12.1),
and this module only places those blocks at their SRAM addresses (rtl/metal.py lora_layout) and
frames them as commands: LORA_CLEAR, one LORA_WRITE per block of every slot the adapter uses (its
rank padded with zero blocks to the die's), then LORA_FLAGS for every tile with an adapter.

A command is COMMAND_WORDS uint32: cmd, addr, then the block's LORA_BLOCK_BITS little-endian
(32 mantissa bytes, then the exponent's six bits, two's complement).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hardwire.golden.errors import HardwireError
from hardwire.golden.gguf_model import ModelConfig
from hardwire.golden.lora import Adapter
from hardwire.golden.lora_int import StoredMatrix, padded_rank, store_pair
from hardwire.golden.spec import BLOCK, LORA_EXP_MIN

from .chip import LORA_CLEAR, LORA_FLAGS, LORA_WRITE, lora_address
from .die import LORA_BLOCK_BITS, LORA_EXP_FIELD, Die
from .isa import LORA_PROJECTIONS
from .metal import lora_dims, lora_layout

DATA_WORDS = -(-LORA_BLOCK_BITS // 32)
COMMAND_WORDS = 2 + DATA_WORDS


@dataclass
class AdapterImage:
    commands: np.ndarray  # (n, COMMAND_WORDS) uint32
    blocks_written: int

    @property
    def sram_bits_used(self) -> int:
        return self.blocks_written * LORA_BLOCK_BITS


def check_adapter_fits(adapter: Adapter, cfg: ModelConfig, die: Die) -> None:
    """Refuse an adapter the die cannot hold, before anything reaches the chip."""
    if die.lora_rank == 0:
        raise HardwireError(f"die {die.name} has no LoRA SRAM")
    for (layer, proj), pair in sorted(adapter.pairs.items()):
        if padded_rank(pair.rank) > die.lora_rank:
            raise HardwireError(f"{adapter.path}: layer {layer} {proj} has rank {pair.rank}; the LoRA SRAM of die "
                                f"{die.name} holds rank {die.lora_rank} per projection")
        if layer >= die.tiles:
            raise HardwireError(f"{adapter.path}: layer {layer} is beyond die {die.name}'s {die.tiles} tiles")


def adapter_image(adapter: Adapter, cfg: ModelConfig, die: Die) -> AdapterImage:
    check_adapter_fits(adapter, cfg, die)
    slots = lora_layout(cfg, die)
    commands = [_command(LORA_CLEAR, 0, np.zeros(DATA_WORDS, np.uint32))]
    flags: dict[int, int] = {}
    blocks = 0
    for (layer, proj) in sorted(adapter.pairs, key=lambda k: (k[0], LORA_PROJECTIONS.index(k[1]))):
        a, b = store_pair(adapter, layer, proj)
        out, nb = lora_dims(cfg, proj)
        slot = slots[proj]
        a_words = _slot_words(_pad(a, _ceil(die.lora_rank, die.lanes), nb), die.lanes)
        b_words = _slot_words(_pad(b, _ceil(out, die.lanes), die.lora_rank // BLOCK), die.lanes)
        for base, words in ((slot.a_base, a_words), (slot.b_base, b_words)):
            commands.append(_writes(die, layer, base, words))
            blocks += words.shape[0] * words.shape[1]
        flags[layer] = flags.get(layer, 0) | 1 << LORA_PROJECTIONS.index(proj)
    for layer, bits in sorted(flags.items()):
        data = np.zeros(DATA_WORDS, np.uint32)
        data[0] = bits
        commands.append(_command(LORA_FLAGS, lora_address(die, layer, 0, 0), data))
    return AdapterImage(np.concatenate([c.reshape(-1, COMMAND_WORDS) for c in commands]), blocks)


def clear_command() -> np.ndarray:
    return _command(LORA_CLEAR, 0, np.zeros(DATA_WORDS, np.uint32))[None]


def _pad(stored: StoredMatrix, rows: int, nb: int) -> StoredMatrix:
    """Zero rows and zero blocks up to the slot's size (a zero block keeps the exponent floor)."""
    m = np.zeros((rows, nb, BLOCK), np.int8)
    e = np.full((rows, nb), LORA_EXP_MIN, np.int64)
    r, c = stored.e.shape
    m[:r, :c], e[:r, :c] = stored.m, stored.e
    return StoredMatrix(m, e)


def _slot_words(stored: StoredMatrix, lanes: int) -> np.ndarray:
    """(words, lanes, DATA_WORDS) uint32: row group g, block b at word g * nb + b, lane l = row g * lanes + l."""
    rows, nb = stored.e.shape
    raw = np.zeros((rows, nb, DATA_WORDS * 4), np.uint8)
    raw[..., :BLOCK] = stored.m.view(np.uint8)
    raw[..., BLOCK] = (stored.e & ((1 << LORA_EXP_FIELD) - 1)).astype(np.uint8)
    words = raw.view(np.uint32)  # little-endian hosts, as the via maps assume
    return words.reshape(rows // lanes, lanes, nb, DATA_WORDS).transpose(0, 2, 1, 3).reshape(-1, lanes, DATA_WORDS)


def _writes(die: Die, layer: int, base: int, words: np.ndarray) -> np.ndarray:
    n_words, lanes = words.shape[:2]
    word_index = np.repeat(np.arange(n_words), lanes)
    lane_index = np.tile(np.arange(lanes), n_words)
    out = np.zeros((n_words * lanes, COMMAND_WORDS), np.uint32)
    out[:, 0] = LORA_WRITE
    out[:, 1] = lora_address(die, layer, base + word_index, lane_index)
    out[:, 2:] = words.reshape(-1, DATA_WORDS)
    return out


def _ceil(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _command(cmd: int, addr: int, data: np.ndarray) -> np.ndarray:
    return np.concatenate([np.array([cmd, addr], np.uint32), data.astype(np.uint32)])
