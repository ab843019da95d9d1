"""The sequencer's instruction set: fixed by the base grid, programmed by the metal.

A program is a list of 128-bit microcode words in a via ROM. Each instruction
streams blocks between the tile scratchpad (block-addressed: one entry holds
32 words of 48 bits and an exponent) and one unit; a non-zero `tap` offers
every block the instruction writes to the debug tap port under that op id.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import IntEnum

from gguf import GGMLQuantizationType as QT

from hardwire.golden.errors import HardwireError

WORD_BITS = 128


class Op(IntEnum):
    END = 0  # stop; the head also hands out the argmax token here (and taps it)
    RECV = 1  # dst <- n residual blocks from the upstream neighbour
    SEND = 2  # n residual blocks from src -> the downstream neighbour
    NORM = 3  # dst <- RMSNorm(src), gains at consts[rom]
    MATMUL = 4  # dst <- W[rom] @ src: n input blocks, `groups` row groups of `lanes` rows, format `fmt`;
    #            `blocks` output blocks (the last row group may fill fewer than lanes / 32); with
    #            SILU_EPILOGUE, the second half's blocks go through the SiLU gate to src2 instead
    ROPE = 5  # dst <- RoPE(src) over n blocks, `aux` blocks per head; with `feed`, also into the attention unit
    RQ = 6  # dst <- rq(src, -24, 16) over n blocks; with `feed`, also into the attention unit
    # 7 is free: the KV write is no instruction of its own (FEED_KV)
    ATTN = 8  # dst <- the attention unit's output, `groups` heads of n blocks: the unit was fed its K, V and Q
    #          blocks by the ROPE and RQ before it (FEED_KV, FEED_Q); ATTN reads nothing
    ADD = 9  # dst <- sat(src + src2, 48) over n blocks
    SILU = 10  # dst <- silu(gate at src) * up at src2 over n blocks; with `lora`, only while an adapter of
    #          its projections is loaded (the gate|up MATMUL's epilogue computes it otherwise)
    EMBED = 11  # dst <- embedding row of the input token: n blocks from ROM region `rom`
    ARGMAX = 12  # arm the argmax tracker for `groups` vocabulary rows; the next streaming MATMUL feeds it


# aux flags (bit 0 of `aux`, and bit 1 for FEEDS_NORM), by opcode
STREAM_ONLY = 1  # MATMUL: results go to the tap port and the argmax tracker only, not the scratchpad
ALSO_SEND = 1  # ADD, EMBED: every block written also leaves downstream, as SEND would hand it on
ALSO_NORM = 1  # RECV: every block received also enters the norm unit, started with `n` and the gains at `rom`
#               as RUN begins (no block comes in RUN's first cycle: every unit starts together, and a
#               tile's upstream sends only after its own program has begun)
FEEDS_NORM = 2  # ADD (aux bit 1): every block it makes also enters the norm unit, started as ALSO_NORM starts it
NORM_FED = 1  # NORM: its input entered the norm unit during the RECV or ADD before it; it only writes the result
# aux flags (bit 1 of `aux`)
SILU_EPILOGUE = 2  # MATMUL: a fused gate|up run whose SiLU gate is its epilogue. Its `blocks` output blocks
#                    split in two halves of the same rows (gate and up both have d_ffn rows): the first
#                    half, gate, is written to dst as usual; each later block up_j leaves the engine into a
#                    holding register while the scratchpad's read port b (free during a MATMUL) reads
#                    gate_j at dst + j, and the SiLU unit turns the pair into f_j = silu(gate_j) * up_j,
#                    written to src2 + j (the f region) and tapped under `tap` (ffn_act: gate is not
#                    tapped). The up half is never written. Adapters join a projection's result before
#                    the SiLU (docs/numerics.md 12), so the epilogue runs only while no adapter of the
#                    MATMUL's projections (`lora`, `span`) is loaded; otherwise the MATMUL writes gate
#                    and up without a tap, and a SILU naming the same projections, after their adapter
#                    passes, computes f.

# `feed` values: a ROPE or RQ whose blocks also enter the attention unit as it writes them to the scratchpad.
# A feeding ROPE names the attention geometry: `groups` query heads, `blocks` KV heads, `aux` blocks a head
# (its own blocks per head), and with FEED_Q ATTN_SCALE in `rom`.
FEED_KV = 1  # ROPE: starts the unit's KV write at the position (the K blocks, KV head-major); RQ: its blocks
#             follow as the V blocks of that write
FEED_Q = 2  # ROPE: starts the unit's attention at the position; its blocks are the Q blocks (head-major).
#            The KV write is done by then: the ROPE is decoded in the cycle that writes the last V block at the
#            earliest, the unit takes that block (and goes idle) at its end, and the start comes a cycle later

# tap op ids; the names are the golden trace's op names (docs/numerics.md section 10)
TAP_OPS = ("embed", "attn_norm", "q", "k", "v", "attn", "o", "resid_attn", "ffn_norm", "ffn_act",
           "down", "resid_ffn", "final_norm", "logits", "argmax")
TAP_ID = {name: i + 1 for i, name in enumerate(TAP_OPS)}
TAP_NAME = {i + 1: name for i, name in enumerate(TAP_OPS)}

# the weight format of a MATMUL or EMBED: the block-MAC lanes read a slot's raw fields by it
FORMAT_CODE = {QT.Q8_0: 0, QT.Q4_0: 1, QT.Q4_1: 2, QT.Q5_0: 3, QT.Q5_1: 4, QT.Q2_K: 5, QT.Q3_K: 6, QT.Q4_K: 7,
               QT.Q5_K: 8, QT.Q6_K: 9}

# LoRA (docs/numerics.md 12.2): each projection's adapter pass, LORA_PASS_LEN instructions, follows the
# MATMUL that computes the projection (one MATMUL may compute a run of projections, each pass follows in
# turn). Both name the projection in `lora` (1 + its index in LORA_PROJECTIONS). The pass's first
# instruction (a MATMUL with `sram`) is stepped over with the whole pass, in DECODE, while the tile's
# adapter flag for its projection is clear; while it is set, the projection's MATMUL leaves its tap to the
# pass's ADD. `sram` makes a MATMUL read its weight blocks from the tile's LoRA SRAM instead of the weight ROM.
# `span` widens `lora` to the projections lora .. lora + span (a fused run's): an instruction depends on
# the adapters of all of them ("loaded": any of their flags is set). A projection MATMUL with a loaded
# adapter runs without its tap (and without SILU_EPILOGUE); any other instruction that names projections
# (an adapter pass head, or a conditional SILU) runs only while one of them is loaded: the sequencer steps
# over it in DECODE otherwise (a pass head with its whole pass, LORA_PASS_LEN instructions; any other one
# alone).
LORA_PROJECTIONS = ("wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down")
LORA_PASS_LEN = 4  # MATMUL A (sram), RQ, MATMUL B' (sram), ADD

# (field, bits) from the least significant end of the word
LAYOUT = (("op", 4), ("tap", 5), ("src", 12), ("src2", 12), ("dst", 12), ("n", 12),
          ("groups", 16), ("rom", 20), ("fmt", 4), ("aux", 8), ("lora", 3), ("sram", 1), ("blocks", 12),
          ("span", 2), ("feed", 2))


@dataclass(frozen=True)
class Instr:
    op: Op
    tap: int = 0
    src: int = 0
    src2: int = 0
    dst: int = 0
    n: int = 0
    groups: int = 0
    rom: int = 0
    fmt: int = 0
    aux: int = 0
    lora: int = 0
    sram: int = 0
    blocks: int = 0
    span: int = 0
    feed: int = 0

    def encode(self) -> int:
        word, shift = 0, 0
        for name, bits in LAYOUT:
            value = int(getattr(self, name))
            if not 0 <= value < 1 << bits:
                raise HardwireError(f"microcode field {name}={value} does not fit {bits} bits ({self.op.name})")
            word |= value << shift
            shift += bits
        return word

    @classmethod
    def decode(cls, word: int) -> Instr:
        values, shift = {}, 0
        for name, bits in LAYOUT:
            values[name] = (word >> shift) & ((1 << bits) - 1)
            shift += bits
        values["op"] = Op(values["op"])
        return cls(**values)


def field_offsets() -> dict[str, tuple[int, int]]:
    """(lsb, bits) of each field: the decoder in the sequencer slices the word with these."""
    out, shift = {}, 0
    for name, bits in LAYOUT:
        out[name] = (shift, bits)
        shift += bits
    return out


def is_pass_head(ins: Instr) -> bool:
    """The first instruction of an adapter pass: the sequencer steps over the pass from it."""
    return ins.op == Op.MATMUL and bool(ins.sram) and ins.lora != 0


def is_conditional(ins: Instr) -> bool:
    """An instruction that runs only while an adapter of its projections is loaded (a pass head, whose
    whole pass is stepped over otherwise, or a SILU after the gate|up passes)."""
    return ins.lora != 0 and (is_pass_head(ins) or ins.op != Op.MATMUL)


def projections_of(ins: Instr) -> tuple[str, ...]:
    """The projections an instruction names: lora .. lora + span (none without `lora`)."""
    return LORA_PROJECTIONS[ins.lora - 1:ins.lora + ins.span] if ins.lora else ()


def executed(program: list[Instr], loaded: set[str]) -> list[Instr]:
    """The instructions a tile runs with the adapter flags of `loaded` set (rtl/tile.py sequencer and decoder),
    as they take effect: a conditional instruction none of whose projections is loaded is stepped over (a
    pass head with its pass); while one of a projection MATMUL's projections is loaded, it runs without its
    tap and without SILU_EPILOGUE."""
    out, pc = [], 0
    while pc < len(program):
        ins = program[pc]
        on = any(proj in loaded for proj in projections_of(ins))
        if is_conditional(ins) and not on:
            pc += LORA_PASS_LEN if is_pass_head(ins) else 1
            continue
        if on and ins.op == Op.MATMUL:
            ins = replace(ins, tap=0, aux=ins.aux & ~SILU_EPILOGUE)
        out.append(ins)
        pc += 1
    return out
