"""Single via-bit flips in a model's metal, and what each one means to the golden reference.

A flip names a ROM, a word and a bit (LSB 0). `flipped_maps` writes a via-map directory that
differs from the metal's own maps in that bit alone, so one chip build serves every mutant.

`decode` maps the flipped bit back to what it encodes, in the metal generator's layouts
(rtl/metal.py, rtl/units/vector.py, rtl/isa.py), and says how the golden reference can model it:
    model        a model field or a golden table entry changes; `patch` builds the golden of the
                 mutated metal, and comparing its trace with the original's decides whether the
                 flip changes any golden-visible output on a stimulus (`golden_effect`)
    unused       the bit encodes nothing the chip may read: a code's bits above its format's width,
                 the offset or sub-block scale of a format without one, a scale or min bit above
                 its width, a padded row or lane, microcode bits past the fields,
                 a table word's padding, a consts header's spare bits
    unmodelled   the change is real but outside the golden reference's terms (microcode, straps,
                 a scale the loader would refuse as inf/NaN): only the chip can tell
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as QT

from hardwire.golden import spec
from hardwire.golden.gguf_model import Model, QuantTensor, Weight
from hardwire.golden.intref import IntModel, Trace
from hardwire.golden.kquants import BlockFields
from hardwire.golden.spec import BLOCK
from hardwire.rtl import metal as M
from hardwire.rtl.cells.block_mac import FORMAT_TRAITS, field_value
from hardwire.rtl.die import SLOT_BITS
from hardwire.rtl.isa import LAYOUT, Instr, field_offsets
from hardwire.rtl.units import vector
from hardwire.rtl.via_map import via_map_file, write_via_map_rows

from .chip_sim import map_names

SLOT_BYTES = SLOT_BITS // 8
MODEL, UNUSED, UNMODELLED = "model", "unused", "unmodelled"


@dataclass(frozen=True)
class Flip:
    rom: str
    word: int
    bit: int  # within the word, least significant first

    def __str__(self) -> str:
        return f"{self.rom}[{self.word}] bit {self.bit}"

    @property
    def spec(self) -> str:
        """The ROM:WORD:BIT form `parse` reads (pytest --hw-flip)."""
        return f"{self.rom}:{self.word}:{self.bit}"

    @classmethod
    def parse(cls, text: str) -> Flip:
        """ROM:WORD:BIT, e.g. tile01_weights:0:0; ValueError names what is wrong."""
        rom, _, rest = text.partition(":")
        word, _, bit = rest.partition(":")
        if not rom or not word.isdigit() or not bit.isdigit():
            raise ValueError(f"{text!r} is not ROM:WORD:BIT (a ROM name, then two non-negative integers)")
        return cls(rom, int(word), int(bit))


def flipped_words(image: M.Metal, flip: Flip) -> np.ndarray:
    """The ROM's words with the bit flipped (a word past the used ones is zero before the flip)."""
    rom = image.roms[flip.rom]
    if not 0 <= flip.bit < rom.width or not 0 <= flip.word < rom.depth:
        raise ValueError(f"{flip} is outside {flip.rom} ({rom.depth} words of {rom.width} bits)")
    words = np.zeros((max(rom.used, flip.word + 1), rom.words.shape[1]), np.uint8)
    words[:rom.used] = rom.words
    words[flip.word, flip.bit // 8] ^= 1 << (flip.bit % 8)
    return words


def apply_flip(image: M.Metal, flip: Flip) -> M.Metal:
    """A copy of the metal with one via bit flipped."""
    rom = image.roms[flip.rom]
    roms = {**image.roms, flip.rom: dataclasses.replace(rom, words=flipped_words(image, flip))}
    return dataclasses.replace(image, roms=roms)


def flipped_maps(base: Path, image: M.Metal, flip: Flip, out: Path) -> Path:
    """A via-map directory equal to `base` (the metal's own maps) but for one bit. The other maps
    are hard links to base's files where the file system allows (never written through)."""
    names = map_names(image.die)
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        if name != flip.rom:
            _link_or_copy(base / via_map_file(name), out / via_map_file(name))
    width, depth = names[flip.rom]
    write_via_map_rows(out / via_map_file(flip.rom), flipped_words(image, flip), width, depth)  # replaces, atomically
    return out


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.unlink(missing_ok=True)  # a link to the cache must be replaced, not written into
    try:
        os.link(src, dst)
    except OSError:
        dst.write_bytes(src.read_bytes())


# --- what a flipped bit encodes --------------------------------------------------------------------

Patch = Callable[[Model], IntModel]


@dataclass
class Decoded:
    kind: str  # MODEL, UNUSED or UNMODELLED
    field: str  # what the bit encodes, for people
    patch: Patch | None = None  # MODEL: the golden reference of the mutated metal
    mutant: Callable[[Model], Model] | None = None  # a weight flip: the model whose metal it is


def decode(image: M.Metal, model: Model, flip: Flip) -> Decoded:
    rom = image.roms[flip.rom]
    if flip.word >= rom.used:
        return Decoded(UNUSED, f"word {flip.word} past the {rom.used} words the model uses")
    kind = _rom_kind(flip.rom)
    return _DECODERS[kind](image, model, flip)


def _rom_kind(name: str) -> str:
    if name.startswith("lut_"):
        return name
    return name.rsplit("_", 1)[-1]  # tileNN_weights, head_consts, ... -> weights, consts, ucode; straps


def _old_new(image: M.Metal, flip: Flip, lsb: int, bits: int) -> tuple[int, int]:
    """The field at [lsb, lsb + bits) of the flipped word, before and after the flip."""
    old = int.from_bytes(image.roms[flip.rom].words[flip.word].tobytes(), "little")
    new = old ^ (1 << flip.bit)
    mask = (1 << bits) - 1
    return (old >> lsb) & mask, (new >> lsb) & mask


def _signed(value: int, bits: int) -> int:
    return value - (1 << bits) if value >> (bits - 1) else value


# weights: the block slots of the tile and head ROMs

def _runs(image: M.Metal, model: Model, rom: str) -> list[tuple[list[tuple[str, Weight]], int, int]]:
    """(tensors, first word, lanes) of every run of a weight ROM, in ROM order: a run's tensors have
    their rows one after another (rtl/metal.py fused_runs; the head's tensors each run alone)."""
    die = image.die
    if rom == "head_weights":
        tied = model.lm_head is model.embed
        runs = [[("lm_head", model.lm_head)]] + ([] if tied else [[("embed", model.embed)]])
        lanes = die.head_lanes
    else:
        layer = model.layers[int(rom[4:6])]
        runs = [[(t, getattr(layer, t)) for t in run] for run in M.layer_runs(layer)]
        lanes = die.lanes
    out, at = [], 0
    for run in runs:
        out.append((run, at, lanes))
        rows, cols = sum(t.shape[0] for _, t in run), run[0][1].shape[1]
        at += M._ceil(rows, lanes) // lanes * (cols // BLOCK)
    return out


def _row_of_run(run: list[tuple[str, Weight]], row: int) -> tuple[str, Weight, int] | None:
    """The tensor of a run that holds the run's row `row`, and the row within it; None past the run."""
    for name, t in run:
        if row < t.shape[0]:
            return name, t, row
        row -= t.shape[0]
    return None


def _decode_weights(image: M.Metal, model: Model, flip: Flip) -> Decoded:
    run, base, lanes = [r for r in _runs(image, model, flip.rom) if r[1] <= flip.word][-1]
    nb = run[0][1].shape[1] // BLOCK
    group, block = divmod(flip.word - base, nb)
    lane, byte = divmod(flip.bit // 8, SLOT_BYTES)
    run_row, bit = group * lanes + lane, flip.bit % 8
    found = _row_of_run(run, run_row)
    if found is None:
        names = "|".join(name for name, _ in run)
        return Decoded(UNUSED, f"{flip.rom.split('_')[0]} {names} row {run_row} block {block}: a padded row past "
                               f"the run's {sum(t.shape[0] for _, t in run)}")
    name, t, row = found
    where = f"{flip.rom.split('_')[0]} {name} row {row} block {block}"
    at = _Where((None if flip.rom == "head_weights" else int(flip.rom[4:6]), name), where, row, block)
    if isinstance(t, BlockFields):
        return _decode_field(t, at, byte, bit)
    if byte < BLOCK:
        return _decode_code(t, (at.layer, name), where, row, block, byte, bit)
    if byte < BLOCK + 2:
        return _decode_scale(t, (at.layer, name), where, row, block, "d_bits", (byte - BLOCK) * 8 + bit)
    if byte >= BLOCK + 4:
        return Decoded(UNUSED, f"{where}: sub-block {_FIELD_NAMES[byte]} field of a {t.qtype.name} block (none)")
    if t.m_bits is None:
        return Decoded(UNUSED, f"{where}: offset field of a {t.qtype.name} block (no offset)")
    return _decode_scale(t, (at.layer, name), where, row, block, "m_bits", (byte - BLOCK - 2) * 8 + bit)


_FIELD_NAMES = {BLOCK + 4: "scale", BLOCK + 5: "scale", BLOCK + 6: "min", BLOCK + 7: "min"}


@dataclass(frozen=True)
class _Where:
    where: tuple[int | None, str]  # (layer or None for the head, tensor name)
    label: str
    row: int
    block: int

    @property
    def layer(self) -> int | None:
        return self.where[0]


def _decode_field(t: BlockFields, at: _Where, byte: int, bit: int) -> Decoded:
    """A slot field of the formats held as golden/kquants fields (Q5_0, Q5_1, Q2_K..Q6_K), as block_mac reads it:
    a code's, scale's or min's bits beyond the format's width are never read."""
    traits, fmt, name = FORMAT_TRAITS[t.qtype], t.format, t.qtype.name
    if byte < BLOCK:
        width = (traits.code_keep | traits.code_flip).bit_length()
        if bit >= width:
            return Decoded(UNUSED, f"{at.label} code {byte}: bit {bit} above a {width}-bit {name} code")
        i = at.block * BLOCK + byte
        old = int(t.q[at.row, i])
        raw = (old + M.CODE_OFFSET.get(t.qtype, 0)) & 0xFF
        new = field_value(raw ^ 1 << bit, traits.code_keep, traits.code_flip)
        q = t.q.copy()
        q[at.row, i] = new
        plane = _HIGH_PLANES.get((t.qtype, bit), "")
        return _tensor_flip(f"{at.label} code {byte}{plane}: {old} -> {new}", at.where, dataclasses.replace(t, q=q))
    if byte < BLOCK + 4:
        which = "d_bits" if byte < BLOCK + 2 else "dmin_bits"
        if getattr(t, which) is None:
            return Decoded(UNUSED, f"{at.label}: offset field of a {name} block (no offset)")
        return _decode_fp16(t, at, which, (byte - BLOCK) % 2 * 8 + bit)
    k = (byte - BLOCK - 4) % 2  # the field's half of the slot
    is_min = byte >= BLOCK + 6
    keep, flip = (traits.mn_keep, 0) if is_min else (traits.sc_keep, traits.sc_flip)
    what = "min" if is_min else "scale"
    if fmt.sub == fmt.block or (fmt.sub == BLOCK and k == 1) or not keep:
        return Decoded(UNUSED, f"{at.label}: sub-block {what} field {k}, which a {name} block does not read")
    if bit >= (keep | flip).bit_length():
        return Decoded(UNUSED, f"{at.label}: {what} field {k} bit {bit} above a {name} {what}")
    sub = at.block * (BLOCK // fmt.sub) + k
    values = (t.mn if is_min else t.sc).copy()
    old = int(values[at.row, sub])
    raw = (old + (0 if is_min else M.SCALE_OFFSET.get(t.qtype, 0))) & 0xFF
    values[at.row, sub] = new = field_value(raw ^ 1 << bit, keep, flip)
    label = f"{at.label} sub-block {sub} {what}: {old} -> {new}"
    return _tensor_flip(label, at.where, dataclasses.replace(t, **{"mn" if is_min else "sc": values}))


_HIGH_PLANES = {(QT.Q5_0, 4): " (high-bit plane)", (QT.Q5_1, 4): " (high-bit plane)", (QT.Q5_K, 4): " (high-bit plane)",
                (QT.Q3_K, 2): " (hmask plane)", (QT.Q6_K, 4): " (qh plane)", (QT.Q6_K, 5): " (qh plane)"}


def _decode_fp16(t: BlockFields, at: _Where, which: str, bit: int) -> Decoded:
    """d, or m/dmin. A 32-weight format's is the block's own; a K quant's super-block d is printed in each of
    its eight slots, so a flip changes it for one activation block only: the golden's matmul is patched there."""
    per_slot = t.format.block // BLOCK
    old = int(getattr(t, which)[at.row, at.block // per_slot])
    new = old ^ 1 << bit
    what = "scale d" if which == "d_bits" else ("offset m" if t.format.has_offset else "dmin")
    label = f"{at.label} {what} bit {bit}: {old:#06x} -> {new:#06x}"
    if (new >> 10) & 0x1F == 0x1F:
        return Decoded(UNMODELLED, f"{label} (inf/NaN: the loader refuses it)")
    if per_slot == 1:
        bits = getattr(t, which).copy()
        bits[at.row, at.block] = new
        return _tensor_flip(label, at.where, dataclasses.replace(t, **{which: bits}))
    mant, exp = (int(x[0]) for x in spec.fp16_parts(np.array([new], np.uint16)))
    if which == "dmin_bits":
        mant = -mant  # the offset term's mantissa is -M_dmin (numerics 2.1)

    def patch(model: Model) -> IntModel:
        golden = IntModel(model)
        for matmul, first_row in _golden_matmuls(golden, model, at.where):
            matmul.set_block_scale(first_row + at.row, at.block, which != "d_bits", mant, exp)
        return golden
    return Decoded(MODEL, f"{label} (this slot's copy)", patch)


_STACKS = {"wq": ("qkv", ()), "wk": ("qkv", ("wq",)), "wv": ("qkv", ("wq", "wk")), "wo": ("wo", ()),
           "w_gate": ("gate_up", ()), "w_up": ("gate_up", ("w_gate",)), "w_down": ("w_down", ())}


def _golden_matmuls(golden: IntModel, model: Model, where: tuple[int | None, str]):
    """(FormatMatmul, first row) of every golden matmul that reads the tensor's rows."""
    layer, name = where
    if layer is None:
        tied = model.lm_head is model.embed
        out = [(golden.lm_head, 0)] if name == "lm_head" else []
        if name == "embed" or tied:
            out.append((golden.embed_general, 0))
        return out
    stack, before = _STACKS[name]
    lw = model.layers[layer]
    return [(getattr(golden.layers[layer], stack), sum(getattr(lw, b).shape[0] for b in before))]


def _decode_code(t: QuantTensor, name: tuple, where: str, row: int, block: int, k: int, bit: int) -> Decoded:
    """A code field: Q8_0 the byte as int8; Q4_0/Q4_1 only the low nibble is read (block_mac)."""
    old = int(t.q[row, block, k])
    if t.qtype.name == "Q8_0":
        new = _signed((old & 0xFF) ^ (1 << bit), 8)
    elif bit >= 4:
        return Decoded(UNUSED, f"{where} code {k}: bit {bit} above a {t.qtype.name} nibble")
    else:
        new = old ^ (1 << bit)  # Q4_0's stored nibble is q + 8: flipping bit i of it flips bit i of q + 8
        if t.qtype.name == "Q4_0":
            new = ((old + 8) ^ (1 << bit)) - 8
    q = t.q.copy()
    q[row, block, k] = new
    return _tensor_flip(f"{where} code {k}: {old} -> {new}", name, dataclasses.replace(t, q=q))


def _decode_scale(t: QuantTensor, name: tuple, where: str, row: int, block: int, field: str, bit: int) -> Decoded:
    bits = getattr(t, field).copy()
    old = int(bits[row, block])
    bits[row, block] = old ^ (1 << bit)
    what = "scale d" if field == "d_bits" else "offset m"
    label = f"{where} {what} bit {bit}: {old:#06x} -> {int(bits[row, block]):#06x}"
    if (int(bits[row, block]) >> 10) & 0x1F == 0x1F:
        return Decoded(UNMODELLED, f"{label} (inf/NaN: the loader refuses it)")
    return _tensor_flip(label, name, dataclasses.replace(t, **{field: bits}))


def _tensor_flip(label: str, where: tuple[int | None, str], new: Weight) -> Decoded:
    """The model with one tensor, (layer or None for the head, name), replaced; a tied head
    changes with its embedding: they are one tensor in one ROM."""
    layer, name = where

    def mutant(model: Model) -> Model:
        if layer is None:
            tied = model.lm_head is model.embed
            return dataclasses.replace(model, **({"embed": new, "lm_head": new} if tied else {name: new}))
        layers = list(model.layers)
        layers[layer] = dataclasses.replace(layers[layer], **{name: new})
        return dataclasses.replace(model, layers=layers)
    return Decoded(MODEL, label, lambda model: IntModel(mutant(model)), mutant)


# consts: norm gains and their headers

def _decode_consts(image: M.Metal, model: Model, flip: Flip) -> Decoded:
    head = flip.rom == "head_consts"
    layer = None if head else int(flip.rom[4:6])
    region = M.gain_region(model.out_norm if head else model.layers[layer].attn_norm, model.config.d_model,
                           model.config.rms_eps)
    norm, offset = ("out_norm", flip.word) if head else (
        ("attn_norm", flip.word) if flip.word < len(region) else ("ffn_norm", flip.word - len(region)))
    where = f"{'head' if head else f'layer {layer}'} {norm}"
    if offset == 0:
        return _decode_norm_header(image, flip, layer, norm, where)
    lane = flip.bit // vector.GAIN_BITS
    index = (offset - 1) * BLOCK + lane
    old, new = (_signed(v, vector.GAIN_BITS) for v in _old_new(image, flip, lane * vector.GAIN_BITS, vector.GAIN_BITS))

    def patch(model: Model) -> IntModel:
        golden = IntModel(model)
        G, e_g = _norm_of(golden, layer, norm)
        G = G.copy()
        G[index] = new
        _set_norm(golden, layer, norm, (G, e_g))
        return golden
    return Decoded(MODEL, f"{where} gain {index}: {old} -> {new}", patch)


def _decode_norm_header(image: M.Metal, flip: Flip, layer: int | None, norm: str, where: str) -> Decoded:
    """Header: EPS_Q in bits 63..0, e_G (8-bit two's complement) in 71..64, nothing above."""
    eps_bits = vector.EPS_Q_BITS
    if flip.bit >= eps_bits + 8:
        return Decoded(UNUSED, f"{where} header bit {flip.bit}: spare")
    if flip.bit >= eps_bits:
        old, new = (_signed(v, 8) for v in _old_new(image, flip, eps_bits, 8))
        if not vector.NORM_E_G_MIN <= new <= vector.NORM_E_G_MAX:
            return Decoded(UNMODELLED, f"{where} gain exponent e_G: {old} -> {new}, outside the range where the "
                                       "norm unit's output exponents fit the bus")

        def patch(model: Model) -> IntModel:
            golden = IntModel(model)
            _set_norm(golden, layer, norm, (_norm_of(golden, layer, norm)[0], new))
            return golden
        return Decoded(MODEL, f"{where} gain exponent e_G: {old} -> {new}", patch)
    old, new = _old_new(image, flip, 0, eps_bits)
    if new >= 1 << 62:
        return Decoded(UNMODELLED, f"{where} EPS_Q {old} -> {new}: past the norm unit's range")

    def patch(model: Model) -> IntModel:
        golden = _PerNormEps(model)
        golden.eps_by_norm[id(_norm_of(golden, layer, norm))] = new
        return golden
    return Decoded(MODEL, f"{where} EPS_Q: {old} -> {new}", patch)


def _norm_of(golden: IntModel, layer: int | None, norm: str):
    return golden.out_norm if layer is None else getattr(golden.layers[layer], norm)


def _set_norm(golden: IntModel, layer: int | None, norm: str, gains) -> None:
    if layer is None:
        golden.out_norm = gains
    else:
        setattr(golden.layers[layer], norm, gains)


class _PerNormEps(IntModel):
    """The chip holds EPS_Q in each norm's header; the golden one per model. This golden takes
    an EPS_Q per norm, keyed by the identity of the norm's (gains, e_G)."""

    def __init__(self, model: Model):
        super().__init__(model)
        self.eps_by_norm: dict[int, int] = {}

    def rmsnorm(self, x, gains):
        shared = self.eps_q
        self.eps_q = self.eps_by_norm.get(id(gains), shared)
        try:
            return super().rmsnorm(x, gains)
        finally:
            self.eps_q = shared


# tables

def _table_patch(attr: str, index, value: int) -> Patch:
    def patch(model: Model) -> IntModel:
        golden = IntModel(model)
        table = getattr(golden, attr).copy()
        table[index] = value
        setattr(golden, attr, table)
        return golden
    return patch


def _decode_flat_table(attr: str, width: int) -> Callable[[M.Metal, Model, Flip], Decoded]:
    """A table of one entry per word, address = index (rsqrt, sigmoid, exp2)."""
    def decode_table(image: M.Metal, model: Model, flip: Flip) -> Decoded:
        old, new = _old_new(image, flip, 0, width)
        return Decoded(MODEL, f"{flip.rom} entry {flip.word}: {old} -> {new}", _table_patch(attr, flip.word, new))
    return decode_table


def _decode_rope(image: M.Metal, model: Model, flip: Flip) -> Decoded:
    """Word {position, b}: pairs 16b + k, cos at bits 32k+15..32k, sin at 32k+31..32k+16."""
    block_bits = image.die.head_block_bits
    position, b = flip.word >> block_bits, flip.word & ((1 << block_bits) - 1)
    k, half = divmod(flip.bit, 2 * vector.ROPE_ENTRY_BITS)
    pair = b * vector.PAIRS + k
    if pair >= model.config.head_dim // 2:
        return Decoded(UNUSED, f"lut_rope position {position} block {b}: padding past head_dim")
    attr = "rope_cos" if half < vector.ROPE_ENTRY_BITS else "rope_sin"
    lsb = 2 * vector.ROPE_ENTRY_BITS * k + (0 if attr == "rope_cos" else vector.ROPE_ENTRY_BITS)
    old, new = (_signed(v, vector.ROPE_ENTRY_BITS) for v in _old_new(image, flip, lsb, vector.ROPE_ENTRY_BITS))

    def patch(model: Model) -> IntModel:
        golden = IntModel(model)
        if position < golden.rope_cos.shape[0]:  # rows past the golden's capacity no stimulus reaches
            table = getattr(golden, attr).copy()
            table[position, pair] = new
            setattr(golden, attr, table)
        return golden
    return Decoded(MODEL, f"lut_rope position {position} pair {pair} {attr[5:]}: {old} -> {new}", patch)


# microcode and straps: the golden reference has no program and no straps

def _decode_ucode(image: M.Metal, model: Model, flip: Flip) -> Decoded:
    used_bits = sum(bits for _, bits in LAYOUT)
    unit = flip.rom.rsplit("_", 1)[0]
    if flip.bit >= used_bits:
        return Decoded(UNUSED, f"{unit} instruction {flip.word}: bit {flip.bit} past the {used_bits} field bits")
    old = Instr.decode(int.from_bytes(image.roms[flip.rom].words[flip.word].tobytes(), "little"))
    name, (lsb, bits) = next((n, f) for n, f in field_offsets().items() if f[0] <= flip.bit < f[0] + f[1])
    before, after = _old_new(image, flip, lsb, bits)
    return Decoded(UNMODELLED, f"{unit} instruction {flip.word} ({old.op.name}): {name} {before} -> {after}")


def _decode_straps(image: M.Metal, model: Model, flip: Flip) -> Decoded:
    return Decoded(UNMODELLED, f"straps bit {flip.bit}")


_DECODERS = {
    "weights": _decode_weights,
    "consts": _decode_consts,
    "ucode": _decode_ucode,
    "straps": _decode_straps,
    "lut_rsqrt": _decode_flat_table("rsqrt", vector.RSQRT_WIDTH),
    "lut_sigmoid": _decode_flat_table("sigmoid", vector.SIGMOID_WIDTH),
    "lut_exp2": _decode_flat_table("exp2", M.EXP2_WIDTH),
    "lut_rope": _decode_rope,
}


# --- golden effect ---------------------------------------------------------------------------------

def golden_trace(golden: IntModel, tokens: list[int]) -> Trace:
    """The golden trace of one stimulus, all positions at once (the integers do not depend on the
    batching)."""
    trace = Trace()
    golden.forward(np.array(tokens), golden.new_cache(), trace)
    return trace


def first_difference(a: Trace, b: Trace) -> tuple[int, str, int] | None:
    """The first (layer, op, position) where the traces differ, or None: position by position, and
    within one in the forward pass's order, as the chip's beats come."""
    order = sorted(enumerate(a.taps), key=lambda item: (item[1][2], item[0]))
    for _, key in order:
        mant, exps = a.taps[key]
        other = b.taps.get(key)
        if other is None or not np.array_equal(mant, other[0]) or (exps is None) != (other[1] is None) or (
                exps is not None and not np.array_equal(exps, other[1])):
            return key
    return None


def golden_effect(decoded: Decoded, model: Model, tokens: list[int], reference: Trace) -> tuple[int, str, int] | None:
    """Where the golden of the mutated metal first departs from `reference` on `tokens` (None: nowhere)."""
    if decoded.kind != MODEL:
        raise ValueError(f"a {decoded.kind} flip has no golden of its own")
    golden = decoded.patch(model)
    golden.capacity = len(tokens)
    return first_difference(reference, golden_trace(golden, tokens))
