"""The metal generator: one model's via maps, microcode and straps for a die.

Everything model-specific on the chip comes from here, as ROM images that the
base grid's via-programmable macros load. Weights are the GGUF blocks
themselves, never re-quantized: a block slot holds one 32-weight block's GGUF
fields unpacked to fixed positions: 32 eight-bit code fields (each weight's raw
code bits), the fp16 d, the fp16 m or dmin, two sub-block scale fields and two
min fields (raw 4-, 6- or 8-bit codes). A K quant's super-block d and dmin are
printed in each of its eight slots.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
from gguf import GGMLQuantizationType as QT

from hardwire.golden import spec
from hardwire.golden.errors import HardwireError
from hardwire.golden.gguf_model import Model, ModelConfig, QuantTensor, Weight
from hardwire.golden.spec import BLOCK

from .die import DIES, SLOT_BITS, Die
from .isa import (
    ALSO_NORM,
    ALSO_SEND,
    FEED_KV,
    FEED_Q,
    FEEDS_NORM,
    FORMAT_CODE,
    LORA_PROJECTIONS,
    NORM_FED,
    SILU_EPILOGUE,
    STREAM_ONLY,
    TAP_ID,
    Instr,
    Op,
)
from .isa import WORD_BITS as UCODE_BITS
from .units import vector

SLOT_BYTES = SLOT_BITS // 8
# byte positions of a slot's fields (rtl/tile.py slot_fields reads them at these bits)
SLOT_CODES, SLOT_D, SLOT_M = slice(0, BLOCK), slice(BLOCK, BLOCK + 2), slice(BLOCK + 2, BLOCK + 4)
SLOT_SCALES, SLOT_MINS = slice(BLOCK + 4, BLOCK + 6), slice(BLOCK + 6, BLOCK + 8)
GAIN_BITS = spec.NORM_GAIN_BITS
CONST_BITS = BLOCK * GAIN_BITS  # one consts word: 32 gains, or a header
STRAP_BITS = 128
EXP2_WIDTH = 17  # EXP2_LUT entries are at most 2**16
LAYER_TENSORS = ("wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down")
# projections that read one input and write adjacent scratchpad regions: one MATMUL computes each run of
# them that shares a weight format, their rows one after another in the ROM (rtl/metal.py fused_runs)
FUSIBLE = (("wq", "wk", "wv"), ("wo",), ("w_gate", "w_up"), ("w_down",))


@dataclass
class RomImage:
    """The words of one via ROM: little-endian bytes per word, `depth` words in the macro."""

    name: str
    width: int
    depth: int
    words: np.ndarray  # (used words, ceil(width / 8)) uint8, little-endian

    @property
    def used(self) -> int:
        return len(self.words)

    def bits_set(self) -> int:
        return int(np.unpackbits(self.words).sum())

    def digest(self) -> str:
        h = hashlib.sha256(f"{self.name} {self.width} {self.depth}\n".encode())
        h.update(self.words.tobytes())
        return h.hexdigest()


@dataclass
class Metal:
    die: Die
    config: ModelConfig
    roms: dict[str, RomImage] = field(default_factory=dict)
    programs: dict[str, list[Instr]] = field(default_factory=dict)

    def sha256(self) -> str:
        h = hashlib.sha256()
        for name in sorted(self.roms):
            h.update(self.roms[name].digest().encode())
        return h.hexdigest()

    def stats(self) -> dict:
        return {
            "tiles_used": self.config.n_layers,
            "via_bits": sum(r.width * r.depth for r in self.roms.values()),
            "via_bits_set": sum(r.bits_set() for r in self.roms.values()),
            "rom_bits_used": sum(r.width * r.used for r in self.roms.values()),
        }


# --- fitting a model to a die -------------------------------------------------------------------

def matmul_shape(rows: int, lanes: int) -> tuple[int, int]:
    """(row groups, output blocks) of a MATMUL of `rows` output rows on `lanes` lanes: a row group is
    `lanes` rows; the last may be partly filled (its rows beyond `rows` are zero-padded in the ROM),
    and only the output blocks that hold rows are written back."""
    return _ceil(rows, lanes) // lanes, _ceil(rows, BLOCK) // BLOCK


def projection_shape(cfg: ModelConfig, proj: str) -> tuple[int, int]:
    """(output rows, input columns) of a layer projection."""
    kv = cfg.n_kv_heads * cfg.head_dim
    rows = {"wq": cfg.d_model, "wk": kv, "wv": kv, "wo": cfg.d_model, "w_gate": cfg.d_ffn, "w_up": cfg.d_ffn,
            "w_down": cfg.d_model}[proj]
    return rows, cfg.d_ffn if proj == "w_down" else cfg.d_model


def fused_runs(formats: dict[str, object]) -> list[tuple[str, ...]]:
    """LAYER_TENSORS in the runs one MATMUL each computes: neighbours in a FUSIBLE group with one format."""
    runs = []
    for group in FUSIBLE:
        run = [group[0]]
        for proj in group[1:]:
            if formats[proj] == formats[run[-1]]:
                run.append(proj)
            else:
                runs.append(tuple(run))
                run = [proj]
        runs.append(tuple(run))
    return runs


def layer_runs(layer) -> list[tuple[str, ...]]:
    """The fused runs of a model layer, by its tensors' formats."""
    return fused_runs({t: getattr(layer, t).qtype for t in LAYER_TENSORS})


def run_rows(cfg: ModelConfig, run: tuple[str, ...]) -> int:
    return sum(projection_shape(cfg, proj)[0] for proj in run)


def tile_rom_words_needed(cfg: ModelConfig, lanes: int, runs: list[tuple[str, ...]] = FUSIBLE) -> int:
    """Weight ROM words of a layer whose projections fuse into `runs` (by default, all of one format)."""
    return sum(_ceil(run_rows(cfg, run), lanes) // lanes * (projection_shape(cfg, run[0])[1] // BLOCK)
               for run in runs)


def head_rom_words_needed(cfg: ModelConfig, lanes: int, tied: bool) -> int:
    per_table = _ceil(cfg.vocab, lanes) // lanes * (cfg.d_model // BLOCK)
    return per_table if tied else 2 * per_table


def overflows(cfg: ModelConfig, die: Die, tied: bool = True,
              layers_runs: list[list[tuple[str, ...]]] = (FUSIBLE,)) -> list[str]:
    """What of the model does not fit the die, each with how far over it is; `layers_runs` holds the
    fused runs of each layer (a layer of mixed formats needs more ROM words)."""
    kv = cfg.n_kv_heads * cfg.head_dim
    tile_words = max(tile_rom_words_needed(cfg, die.lanes, runs) for runs in layers_runs)
    checks = [
        ("layers", cfg.n_layers, die.tiles, "tiles"),
        ("d_model", cfg.d_model, die.max_d_model, "max_d_model"),
        ("d_ffn", cfg.d_ffn, die.max_d_ffn, "max_d_ffn"),
        ("kv_dim", kv, die.max_kv_dim, "max_kv_dim"),
        ("vocab", cfg.vocab, die.max_vocab, "max_vocab"),
        ("heads", cfg.n_heads, die.max_heads, "max_heads"),
        ("tile ROM words", tile_words, die.tile_rom_words, "tile_rom_words"),
        ("head ROM words", head_rom_words_needed(cfg, die.head_lanes, tied), die.head_rom_words,
         "head_rom_words"),
    ]
    return [f"{what} {need} > {limit_name} {limit} (over by {need - limit})"
            for what, need, limit, limit_name in checks if need > limit]


def model_overflows(model: Model, die: Die) -> list[str]:
    return overflows(model.config, die, model.lm_head is model.embed, [layer_runs(lw) for lw in model.layers])


def check_fits(model: Model, die: Die) -> None:
    problems = model_overflows(model, die)
    if problems:
        raise HardwireError(f"the model does not fit die {die.name}: {'; '.join(problems)}")


def smallest_die(model: Model) -> Die:
    """The die with the fewest weight ROM bits (tiles and head) that fits the model; a tie goes to the
    die listed first in the catalog (rtl/die.py DIES: hw-tiny before hw-tiny-w)."""
    by_size = sorted(DIES.values(), key=lambda d: d.rom_bits)
    for die in by_size:
        if not model_overflows(model, die):
            return die
    largest = by_size[-1]
    raise HardwireError(f"the model fits no die; on the largest, {largest.name}: "
                        f"{'; '.join(model_overflows(model, largest))}")


# --- weights -------------------------------------------------------------------------------------

@dataclass
class SlotFields:
    """A weight tensor as the lanes read it, per 32-weight block: the GGUF fields unpacked, never re-quantized."""

    codes: np.ndarray  # (rows, nb, 32) uint8: each weight's raw code bits
    scales: np.ndarray  # (rows, nb, 2) uint8: the raw sub-block scale codes of weights 0..15 and 16..31
    mins: np.ndarray  # (rows, nb, 2) uint8: the raw sub-block min codes
    d_bits: np.ndarray  # (rows, nb) uint16: the block's (or its super-block's) fp16 d
    m_bits: np.ndarray  # (rows, nb) uint16: fp16 m (Q4_1, Q5_1) or dmin (K quants with mins), else 0


# the offset each format's decoding subtracts from its raw code (and Q3_K from its raw scale)
CODE_OFFSET = {QT.Q4_0: 8, QT.Q5_0: 16, QT.Q3_K: 4, QT.Q6_K: 32}
SCALE_OFFSET = {QT.Q3_K: 32}


def slot_fields(t: Weight) -> SlotFields:
    """The raw fields of `t` in slot order (the inverse of what block_mac's FORMAT_TRAITS decode)."""
    if isinstance(t, QuantTensor):
        rows, nb = t.q.shape[:2]
        codes = (t.q.astype(np.int16) + CODE_OFFSET.get(t.qtype, 0)).astype(np.uint8)
        zeros = np.zeros((rows, nb, 2), np.uint8)
        m = np.zeros((rows, nb), np.uint16) if t.m_bits is None else t.m_bits
        return SlotFields(codes, zeros, zeros.copy(), t.d_bits.astype(np.uint16), m.astype(np.uint16))
    if t.qtype not in FORMAT_CODE:
        raise HardwireError(f"the chip has no lane format for {t.qtype.name}")
    fmt = t.format
    rows, cols = t.shape
    nb = cols // BLOCK
    codes = (t.q.astype(np.int16) + CODE_OFFSET.get(t.qtype, 0)).astype(np.uint8).reshape(rows, nb, BLOCK)
    scales, mins = np.zeros((rows, nb, 2), np.uint8), np.zeros((rows, nb, 2), np.uint8)
    if fmt.sub < fmt.block:  # the K quants: sub-blocks of 16 fill both fields, of 32 the first
        per_block = BLOCK // fmt.sub
        sc = (t.sc.astype(np.int16) + SCALE_OFFSET.get(t.qtype, 0)).astype(np.uint8)
        scales[..., :per_block] = sc.reshape(rows, nb, per_block)
        if t.mn is not None:
            mins[..., :per_block] = t.mn.astype(np.uint8).reshape(rows, nb, per_block)
    repeat = fmt.block // BLOCK
    d = np.repeat(t.d_bits, repeat, axis=1).astype(np.uint16)
    m = np.zeros((rows, nb), np.uint16) if t.dmin_bits is None else np.repeat(t.dmin_bits, repeat, axis=1)
    return SlotFields(codes, scales, mins, d, m.astype(np.uint16))


def block_slots(t: Weight) -> np.ndarray:
    """(rows, nb, SLOT_BYTES) bytes: 32 code fields, d, m/dmin little-endian, two scale fields, two min fields."""
    f = slot_fields(t)
    rows, nb = f.codes.shape[:2]
    slots = np.zeros((rows, nb, SLOT_BYTES), np.uint8)
    slots[..., SLOT_CODES] = f.codes
    slots[..., SLOT_D] = f.d_bits[..., None].view(np.uint8).reshape(rows, nb, 2)
    slots[..., SLOT_M] = f.m_bits[..., None].view(np.uint8).reshape(rows, nb, 2)
    slots[..., SLOT_SCALES] = f.scales
    slots[..., SLOT_MINS] = f.mins
    return slots


def weight_words(t: Weight | list[Weight], lanes: int) -> np.ndarray:
    """ROM words for one tensor, or a run of tensors with their rows one after another: row group g, input
    block b at word g * nb + b, lane l = row g * lanes + l."""
    slots = np.concatenate([block_slots(w) for w in (t if isinstance(t, list) else [t])])
    rows, nb = slots.shape[:2]
    padded = np.zeros((_ceil(rows, lanes), nb, SLOT_BYTES), np.uint8)
    padded[:rows] = slots
    groups = padded.shape[0] // lanes
    return padded.reshape(groups, lanes, nb, SLOT_BYTES).transpose(0, 2, 1, 3).reshape(groups * nb, -1)


# --- constants -----------------------------------------------------------------------------------

def gain_region(g: np.ndarray, n: int, eps: float) -> np.ndarray:
    """A norm's consts region in the norm unit's layout: a header word, then a word of gains per block."""
    G, e_g = spec.norm_gains(g)
    return _int_words(vector.norm_const_words(G, e_g, spec.eps_q(n, eps)), CONST_BITS)


# --- scratchpad layout and programs ------------------------------------------------------------

@dataclass(frozen=True)
class TileLayout:
    """Scratchpad regions of a layer program, in blocks."""

    x: int
    h: int
    qkv: int
    q: int
    k: int
    v: int
    attn: int
    o: int
    gate_up: int
    f: int
    end: int


def tile_layout(cfg: ModelConfig) -> TileLayout:
    return layout_of_blocks(cfg.d_model // BLOCK, cfg.d_ffn // BLOCK, cfg.n_kv_heads * cfg.head_dim // BLOCK)


def layout_of_blocks(nd: int, nf: int, nkv: int) -> TileLayout:
    """The regions for nd residual, nf FFN and nkv KV blocks."""
    sizes = (("x", nd), ("h", nd), ("qkv", nd + 2 * nkv), ("q", nd), ("k", nkv), ("v", nkv), ("attn", nd),
             ("o", nd), ("gate_up", 2 * nf), ("f", nf))
    bases, at = {}, 0
    for name, size in sizes:
        bases[name], at = at, at + size
    return TileLayout(**bases, end=at)


# --- the LoRA SRAM (docs/numerics.md 12) ---------------------------------------------------------

def lora_dims(cfg: ModelConfig, proj: str) -> tuple[int, int]:
    """(output rows, input blocks) of a projection."""
    rows, cols = projection_shape(cfg, proj)
    return rows, cols // BLOCK


@dataclass(frozen=True)
class LoraSlot:
    """Where one projection's adapter lives in the tile's LoRA SRAM, at the die's rank: A (rank rows
    x input blocks, row group g and input block b at word a_base + g * blocks + b) and B' (output
    rows x rank blocks, the same order), `lanes` rows a word; a rank or row count below a multiple
    of `lanes` is padded with zero rows up to one (a die whose lanes exceed its rank reads A in one
    partly filled row group)."""

    a_base: int
    a_words: int
    b_base: int
    b_words: int


def lora_layout(cfg: ModelConfig, die: Die) -> dict[str, LoraSlot]:
    """Every projection's slot, in LORA_PROJECTIONS order, packed from word 0."""
    slots, at, rank = {}, 0, die.lora_rank
    for proj in LORA_PROJECTIONS:
        out, nb = lora_dims(cfg, proj)
        a_words, b_words = die.row_groups(rank) * nb, die.row_groups(out) * (rank // BLOCK)
        slots[proj] = LoraSlot(at, a_words, at + a_words, b_words)
        at += a_words + b_words
    if at > die.lora_sram_words:
        raise HardwireError(f"the LoRA SRAM of die {die.name} holds {die.lora_sram_words} words; the model's "
                            f"slots need {at}")
    return slots


def lora_pass(cfg: ModelConfig, die: Die, proj: str, src: int, out_base: int, u: int, z: int,
              tap_id: int = 0) -> list[Instr]:
    """The adapter pass of one projection: u = A x, rq(u), z = B' u, y = sat(y + z, 48) in place,
    at the die's rank (a smaller rank is padded with zeros, which add exact zeros)."""
    slot, rank = lora_layout(cfg, die)[proj], die.lora_rank
    out, nb = lora_dims(cfg, proj)
    q8 = FORMAT_CODE[QT.Q8_0]
    (a_groups, a_blocks), (b_groups, b_blocks) = matmul_shape(rank, die.lanes), matmul_shape(out, die.lanes)
    lora = 1 + LORA_PROJECTIONS.index(proj)  # the pass head: the tile steps over the pass from it
    return [Instr(Op.MATMUL, src=src, dst=u, n=nb, groups=a_groups, blocks=a_blocks, rom=slot.a_base, fmt=q8, sram=1,
                  lora=lora),
            Instr(Op.RQ, src=u, dst=u, n=rank // BLOCK),
            Instr(Op.MATMUL, src=u, dst=z, n=rank // BLOCK, groups=b_groups, blocks=b_blocks, rom=slot.b_base, fmt=q8,
                  sram=1),
            Instr(Op.ADD, tap=tap_id, src=out_base, src2=z, dst=out_base, n=out // BLOCK)]


def layer_program(cfg: ModelConfig, lanes: int, bases: dict[str, int], consts: dict[str, int],
                  formats: dict[str, int], die: Die | None = None) -> list[Instr]:
    """The layer's program. One MATMUL computes each fused run of projections (`bases` gives a run's ROM
    word at its first projection); with a die that has a LoRA SRAM, each projection's adapter pass follows
    its run's MATMUL (the tile steps over a pass while its projection's adapter flag is clear). The
    residual enters the attention norm as it arrives (RECV with ALSO_NORM) and leaves as the last ADD
    makes it (ALSO_SEND): no pass of its own over the scratchpad at either end. The attention residual's
    ADD feeds the ffn norm likewise (FEEDS_NORM), and the attention unit takes K and V as RoPE and rq make
    them (FEED_KV: the KV write), then Q (FEED_Q: the attention starts), so ATTN only writes its output."""
    L = tile_layout(cfg)
    nd, nf = cfg.d_model // BLOCK, cfg.d_ffn // BLOCK
    nkv = cfg.n_kv_heads * cfg.head_dim // BLOCK
    hb = cfg.head_dim // BLOCK
    geometry = {"groups": cfg.n_heads, "blocks": cfg.n_kv_heads}  # the attention unit's, with aux = hb
    tap = TAP_ID
    runs = fused_runs(formats)
    lora = die is not None and die.lora_rank > 0
    if lora:
        _check_lora_scratch(cfg, die)
    # (input, output base, tap, z) of each projection: its adapter pass's u borrows the q region (free
    # outside RoPE..ATTN), z a region the projection's result is not in
    regions = {"wq": (L.h, L.qkv, 0, L.gate_up), "wk": (L.h, L.qkv + nd, 0, L.gate_up),
               "wv": (L.h, L.qkv + nd + nkv, 0, L.gate_up), "wo": (L.attn, L.o, tap["o"], L.gate_up),
               "w_gate": (L.h, L.gate_up, 0, L.f), "w_up": (L.h, L.gate_up + nf, 0, L.f),
               "w_down": (L.f, L.o, tap["down"], L.gate_up)}

    gate_up_fused = ("w_gate", "w_up") in runs
    silu_names = {"lora": 1 + LORA_PROJECTIONS.index("w_gate"), "span": 1} if lora else {}

    def projections(group: tuple[str, ...]) -> list[Instr]:
        """The MATMULs of a FUSIBLE group's runs, each followed by its projections' adapter passes."""
        out = []
        for run in (r for r in runs if r[0] in group):
            src, dst, tap_id, _ = regions[run[0]]
            groups, blocks = matmul_shape(run_rows(cfg, run), lanes)
            matmul = Instr(Op.MATMUL, tap=tap_id, src=src, dst=dst, n=projection_shape(cfg, run[0])[1] // BLOCK,
                           groups=groups, blocks=blocks, rom=bases[run[0]], fmt=formats[run[0]],
                           lora=1 + LORA_PROJECTIONS.index(run[0]) if lora else 0)
            if run == ("w_gate", "w_up"):  # the SiLU gate as its epilogue (rtl/isa.py SILU_EPILOGUE)
                matmul = replace(matmul, tap=tap["ffn_act"], src2=L.f, aux=SILU_EPILOGUE, **silu_names)
            out.append(matmul)
            for proj in run if lora else ():
                src, dst, tap_id, z = regions[proj]
                out += lora_pass(cfg, die, proj, src, dst, L.q, z, tap_id)
        return out

    # the SILU instruction: always for separate gate and up runs; after a fused run's adapter passes, run
    # only while one of its adapters is loaded (the epilogue computes f otherwise); none without adapters
    silu = [Instr(Op.SILU, tap=tap["ffn_act"], src=L.gate_up, src2=L.gate_up + nf, dst=L.f, n=nf,
                  **(silu_names if gate_up_fused else {}))]
    if gate_up_fused and not lora:
        silu = []

    return [
        Instr(Op.RECV, dst=L.x, n=nd, rom=consts["attn_norm"], aux=ALSO_NORM),
        Instr(Op.NORM, tap=tap["attn_norm"], src=L.x, dst=L.h, n=nd, rom=consts["attn_norm"], aux=NORM_FED),
        *projections(FUSIBLE[0]),
        Instr(Op.ROPE, tap=tap["k"], src=L.qkv + nd, dst=L.k, n=nkv, aux=hb, **geometry, feed=FEED_KV),
        Instr(Op.RQ, tap=tap["v"], src=L.qkv + nd + nkv, dst=L.v, n=nkv, feed=FEED_KV),
        Instr(Op.ROPE, tap=tap["q"], src=L.qkv, dst=L.q, n=nd, aux=hb, **geometry, rom=spec.attn_scale(cfg.head_dim),
              feed=FEED_Q),
        Instr(Op.ATTN, tap=tap["attn"], dst=L.attn, n=hb, groups=cfg.n_heads),
        *projections(FUSIBLE[1]),
        Instr(Op.ADD, tap=tap["resid_attn"], src=L.x, src2=L.o, dst=L.x, n=nd, rom=consts["ffn_norm"],
              aux=FEEDS_NORM),
        Instr(Op.NORM, tap=tap["ffn_norm"], src=L.x, dst=L.h, n=nd, rom=consts["ffn_norm"], aux=NORM_FED),
        *projections(FUSIBLE[2]),
        *silu,
        *projections(FUSIBLE[3]),
        Instr(Op.ADD, tap=tap["resid_ffn"], src=L.x, src2=L.o, dst=L.x, n=nd, aux=ALSO_SEND),
        Instr(Op.END),
    ]


def _check_lora_scratch(cfg: ModelConfig, die: Die) -> None:
    """The adapter pass borrows scratchpad regions: u (rank blocks) the q region, z the gate|up region."""
    nd, nf = cfg.d_model // BLOCK, cfg.d_ffn // BLOCK
    nkv = cfg.n_kv_heads * cfg.head_dim // BLOCK
    if die.lora_rank // BLOCK > nd or max(nd, nkv) > 2 * nf:
        raise HardwireError(f"the adapter pass of die {die.name} (rank {die.lora_rank}) does not fit the "
                            f"scratchpad regions of d_model {cfg.d_model}, d_ffn {cfg.d_ffn}")


def passthrough_program(cfg: ModelConfig) -> list[Instr]:
    """A tile the model does not use hands the residual stream on unchanged."""
    nd = cfg.d_model // BLOCK
    return [Instr(Op.RECV, dst=0, n=nd), Instr(Op.SEND, src=0, n=nd), Instr(Op.END)]


def head_program(cfg: ModelConfig, head_lanes: int, embed_base: int, embed_fmt: int, lm_base: int, lm_fmt: int,
                 final_norm: int) -> list[Instr]:
    """Embed the token and send it round the tiles as it is made, then the final norm (fed by the RECV
    as the residual returns), LM head and argmax.

    ARGMAX arms the tracker with the vocabulary size before the LM head streams its
    rows past it (padded rows beyond the vocabulary never win); END hands out the
    token and taps it, after the logits, as the golden trace orders them."""
    nd = cfg.d_model // BLOCK
    x, h = 0, nd
    groups, blocks = matmul_shape(cfg.vocab, head_lanes)
    return [
        Instr(Op.EMBED, tap=TAP_ID["embed"], dst=x, n=nd, rom=embed_base, fmt=embed_fmt, aux=ALSO_SEND),
        Instr(Op.RECV, dst=x, n=nd, rom=final_norm, aux=ALSO_NORM),
        Instr(Op.NORM, tap=TAP_ID["final_norm"], src=x, dst=h, n=nd, rom=final_norm, aux=NORM_FED),
        Instr(Op.ARGMAX, groups=cfg.vocab),
        Instr(Op.MATMUL, tap=TAP_ID["logits"], src=h, n=nd, groups=groups, blocks=blocks, rom=lm_base, fmt=lm_fmt,
              aux=STREAM_ONLY),
        Instr(Op.END, tap=TAP_ID["argmax"]),
    ]


# --- the whole metal ---------------------------------------------------------------------------

MaskEdit = Callable[[Metal, Model], Metal]
_mask_edits: list[MaskEdit] = []


def add_mask_edit(edit: MaskEdit) -> Callable[[], None]:
    """Apply `edit` to every metal `generate` returns from now on, as a change order edits the masks
    after tape-out (fault injection: pytest --hw-flip). Returns the call that withdraws it."""
    _mask_edits.append(edit)
    return lambda: _mask_edits.remove(edit)


def generate(model: Model, die: Die) -> Metal:
    """The model's metal for the die, with every registered mask edit applied in order."""
    metal = _generate_clean(model, die)
    for edit in list(_mask_edits):
        metal = edit(metal, model)
    return metal


def _generate_clean(model: Model, die: Die) -> Metal:
    check_fits(model, die)
    cfg = model.config
    if cfg.head_dim % BLOCK:
        raise HardwireError(f"head_dim={cfg.head_dim} is not a multiple of {BLOCK}; the chip keeps heads in "
                            "whole blocks")
    metal = Metal(die, cfg)
    for tile in range(die.tiles):
        if tile < cfg.n_layers:
            _add_layer_tile(metal, model, tile)
        else:
            metal.programs[f"tile{tile:02d}"] = passthrough_program(cfg)
            metal.roms[f"tile{tile:02d}_ucode"] = _ucode_image(f"tile{tile:02d}_ucode",
                                                                metal.programs[f"tile{tile:02d}"], die)
    _add_head(metal, model)
    _add_luts(metal, cfg)
    metal.roms["straps"] = RomImage("straps", STRAP_BITS, 1, _straps(model)[None])
    return metal


def _add_layer_tile(metal: Metal, model: Model, tile: int) -> None:
    die, cfg, lw = metal.die, model.config, model.layers[tile]
    name = f"tile{tile:02d}"
    formats = {t: FORMAT_CODE[getattr(lw, t).qtype] for t in LAYER_TENSORS}
    words, bases, at = [], {}, 0
    for run in fused_runs(formats):
        bases[run[0]] = at
        words.append(weight_words([getattr(lw, t) for t in run], die.lanes))
        at += len(words[-1])
    metal.roms[f"{name}_weights"] = RomImage(f"{name}_weights", die.tile_rom_width, die.tile_rom_words,
                                             np.concatenate(words))
    attn_norm = gain_region(lw.attn_norm, cfg.d_model, cfg.rms_eps)
    ffn_norm = gain_region(lw.ffn_norm, cfg.d_model, cfg.rms_eps)
    consts = {"attn_norm": 0, "ffn_norm": len(attn_norm)}
    const_words = np.concatenate([attn_norm, ffn_norm])
    metal.roms[f"{name}_consts"] = RomImage(f"{name}_consts", CONST_BITS, const_depth(die), const_words)
    metal.programs[name] = layer_program(cfg, die.lanes, bases, consts, formats, die)
    metal.roms[f"{name}_ucode"] = _ucode_image(f"{name}_ucode", metal.programs[name], die)


def _add_head(metal: Metal, model: Model) -> None:
    die, cfg = metal.die, model.config
    lm = weight_words(model.lm_head, die.head_lanes)
    tied = model.lm_head is model.embed
    words = lm if tied else np.concatenate([lm, weight_words(model.embed, die.head_lanes)])
    embed_base = 0 if tied else len(lm)
    metal.roms["head_weights"] = RomImage("head_weights", die.head_rom_width, die.head_rom_words, words)
    metal.roms["head_consts"] = RomImage("head_consts", CONST_BITS, const_depth(die),
                                         gain_region(model.out_norm, cfg.d_model, cfg.rms_eps))
    if model.embed.qtype != model.lm_head.qtype and tied:
        raise HardwireError("a tied head must share the embedding's format")
    metal.programs["head"] = head_program(cfg, die.head_lanes, embed_base, FORMAT_CODE[model.embed.qtype], 0,
                                          FORMAT_CODE[model.lm_head.qtype], final_norm=0)
    metal.roms["head_ucode"] = _ucode_image("head_ucode", metal.programs["head"], die)


def _add_luts(metal: Metal, cfg: ModelConfig) -> None:
    """One ROM per table, in the layouts of the units that read them."""
    die = metal.die
    tables = {"lut_rsqrt": (vector.rsqrt_rom_words(spec.rsqrt_lut()), vector.RSQRT_WIDTH),
              "lut_sigmoid": (vector.sigmoid_rom_words(spec.sigmoid_lut()), vector.SIGMOID_WIDTH),
              "lut_exp2": (spec.exp2_lut().tolist(), EXP2_WIDTH)}
    for name, (words, width) in tables.items():
        metal.roms[name] = RomImage(name, width, len(words), _int_words(words, width))
    cos, sin = spec.rope_tables(cfg.head_dim, cfg.rope_theta, die.kv_tokens)
    rope = vector.rope_rom_words(cos, sin, die.head_block_bits)
    metal.roms["lut_rope"] = RomImage("lut_rope", vector.ROPE_WIDTH, len(rope), _int_words(rope, vector.ROPE_WIDTH))


def _straps(model: Model) -> np.ndarray:
    cfg = model.config
    fields = [cfg.n_layers, cfg.d_model, cfg.d_ffn, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.vocab,
              int(model.lm_head is model.embed)]
    return _pack(fields, [8, 16, 16, 8, 8, 8, 20, 1], STRAP_BITS)


def const_depth(die: Die) -> int:
    return 2 * (1 + die.max_d_model // BLOCK) + 1


def ucode_depth(die: Die) -> int:
    return 64


def _ucode_image(name: str, program: list[Instr], die: Die) -> RomImage:
    words = np.stack([_int_bytes(ins.encode(), UCODE_BITS) for ins in program])
    return RomImage(name, UCODE_BITS, ucode_depth(die), words)


# --- bit packing ---------------------------------------------------------------------------------

def _pack(values: list[int], widths: list[int], total_bits: int) -> np.ndarray:
    word, shift = 0, 0
    for value, width in zip(values, widths, strict=True):
        word |= (int(value) & ((1 << width) - 1)) << shift
        shift += width
    return _int_bytes(word, total_bits)


def _int_bytes(word: int, bits: int) -> np.ndarray:
    return np.frombuffer(word.to_bytes(-(-bits // 8), "little"), np.uint8).copy()


def _int_words(words: list[int], width: int) -> np.ndarray:
    """(len(words), ceil(width / 8)) little-endian bytes of non-negative words."""
    return np.stack([_int_bytes(w, width) for w in words])


def _ceil(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple
