"""Via-bit flips: decoding a flipped bit back into what it encodes, and the mutation score tool."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hardwire.cosim import mutation
from hardwire.cosim.chip_sim import ChipSim, metal_maps
from hardwire.cosim.generation import generate
from hardwire.cosim.mutation import MODEL, UNMODELLED, UNUSED, Flip
from hardwire.golden import spec
from hardwire.golden.gguf_model import load_model
from hardwire.golden.intref import IntModel
from hardwire.golden.synth import SynthSpec, write_synthetic
from hardwire.rtl import metal
from hardwire.rtl.die import get_die
from hardwire.rtl.isa import LAYOUT
from hardwire.rtl.units import vector

DIE = get_die("hw-tiny")
MODELS = {  # a tied Q4_1/Q8_0 head and an untied one over Q4_0, Q4_1 and Q8_0; K quants with an untied head
    "tied": SynthSpec(layers=2, d_model=128, d_ffn=256, heads=2, kv_heads=1, vocab=301, seed=4),
    "untied": SynthSpec(layers=3, d_model=256, d_ffn=512, heads=8, kv_heads=2, vocab=517, seed=6,
                        embed_quant="q4_0", attn_quant="q4_0", ffn_quant="q4_1", output_quant="q8_0"),
    "k": SynthSpec(layers=1, d_model=256, d_ffn=512, heads=4, kv_heads=2, vocab=300, seed=9,
                   embed_quant="q6_k", attn_quant="q5_k", ffn_quant="q3_k", output_quant="q2_k"),
}
SLOT = metal.SLOT_BYTES * 8  # bits per lane's slot: codes at byte 0, d 32, m/dmin 34, scales 36, mins 38
PROMPT, N_NEW = [3, 257, 42], 2


@pytest.fixture(scope="module")
def printed(tmp_path_factory):
    """name -> (model, metal) of each model on hw-tiny."""
    root = tmp_path_factory.mktemp("mutants")
    out = {}
    for name, spec_ in MODELS.items():
        model = load_model(write_synthetic(spec_, root / f"{name}.gguf"))
        out[name] = model, metal.generate(model, DIE)
    return out


def as_ints(words) -> list[int]:
    return [int.from_bytes(np.asarray(w, np.uint8).tobytes(), "little") for w in words]


def reencoded(image, model, flip: Flip, decoded) -> list[int] | None:
    """The flipped ROM written again from what the decoder says changed (None: not re-encodable here)."""
    kind = mutation._rom_kind(flip.rom)
    if decoded.mutant is not None:  # a weight: the metal generator on the mutated model
        return as_ints(metal.generate(decoded.mutant(model), DIE).roms[flip.rom].words)
    if kind == "weights":  # one slot's copy of a super-block's d or dmin: no model prints it (see test below)
        return None
    golden = decoded.patch(model)
    if kind == "consts":
        norms = [golden.out_norm] if flip.rom == "head_consts" else [
            getattr(golden.layers[int(flip.rom[4:6])], n) for n in ("attn_norm", "ffn_norm")]
        eps = getattr(golden, "eps_by_norm", {})
        return [w for g in norms for w in vector.norm_const_words(*g, eps.get(id(g), golden.eps_q))]
    if kind == "lut_rope":
        cos, sin = spec.rope_tables(model.config.head_dim, model.config.rope_theta, DIE.kv_tokens)
        n = len(golden.rope_cos)
        if flip.word >> DIE.head_block_bits >= n:  # a row the golden does not hold
            return None
        cos[:n], sin[:n] = golden.rope_cos[:DIE.kv_tokens], golden.rope_sin[:DIE.kv_tokens]
        return vector.rope_rom_words(cos, sin, DIE.head_block_bits)
    tables = {"lut_rsqrt": vector.rsqrt_rom_words, "lut_sigmoid": vector.sigmoid_rom_words,
              "lut_exp2": lambda t: [int(x) for x in t]}
    return tables[kind](getattr(golden, kind[4:]))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_decoded_flips_reencode_to_the_flipped_rom(printed, name):
    """Every model-kind decode, written back through the metal's own encoders, gives the flipped
    ROM bit for bit: the decoder names the field the bit really holds."""
    model, image = printed[name]
    rng = np.random.default_rng(7)
    kinds = set()
    for rom_name, rom in image.roms.items():
        for _ in range(12):
            flip = Flip(rom_name, int(rng.integers(rom.used)), int(rng.integers(rom.width)))
            decoded = mutation.decode(image, model, flip)
            kinds.add((mutation._rom_kind(rom_name), decoded.kind))
            if decoded.kind != MODEL:
                continue
            words = reencoded(image, model, flip, decoded)
            if words is not None:
                assert words == as_ints(mutation.flipped_words(image, flip)), (str(flip), decoded.field)
    assert {("weights", MODEL), ("weights", UNUSED), ("consts", MODEL), ("ucode", UNMODELLED),
            ("lut_sigmoid", MODEL), ("lut_rope", UNUSED), ("straps", UNMODELLED)} <= kinds


@pytest.mark.parametrize("flip, kind, field", [
    (Flip("tile00_weights", 0, 4), UNUSED, "bit 4 above a Q4_0 nibble"),
    (Flip("tile00_weights", 0, SLOT + 2), MODEL, "wq row 1 block 0 code 0: "),
    (Flip("tile02_weights", 0, 32 * 8 + 14), MODEL, "wq row 0 block 0 scale d bit 14"),
    (Flip("tile02_weights", 0, 34 * 8), UNUSED, "offset field of a Q4_0 block"),
    (Flip("head_weights", 64 * 8, 5 * SLOT), UNUSED, "lm_head row 517 block 0: a padded row"),
    (Flip("tile00_weights", 0, 36 * 8), UNUSED, "sub-block scale field of a Q4_0 block (none)"),
    (Flip("tile01_consts", 0, 64), MODEL, "layer 1 attn_norm gain exponent e_G"),
    (Flip("tile01_consts", 0, 100), UNUSED, "header bit 100: spare"),
    (Flip("tile01_ucode", 0, 127), UNUSED, f"past the {sum(bits for _, bits in LAYOUT)} field bits"),
    (Flip("tile01_ucode", 1, 5), UNMODELLED, "(NORM): tap"),
])
def test_decode_names_the_field(printed, flip, kind, field):
    model, image = printed["untied"]
    decoded = mutation.decode(image, model, flip)
    assert decoded.kind == kind and field in decoded.field, decoded.field


def test_the_chip_fails_where_the_golden_of_the_mutant_first_changes(printed, tmp_path):
    """Effective flips fail the chained run at the golden's first changed tap; unused bits leave
    it bit-exact."""
    model, image = printed["untied"]
    base, _ = metal_maps(image)
    stimulus = PROMPT + generate(model, ChipSim(DIE, base), PROMPT, N_NEW).golden_tokens[:-1]
    reference = mutation.golden_trace(IntModel(model, capacity=len(stimulus)), stimulus)
    flips = [Flip("tile00_weights", 0, 4), Flip("head_weights", 64 * 8, 5 * SLOT),  # unused
             Flip("tile01_weights", 0, 0), Flip("tile02_consts", 3, 30), Flip("lut_rsqrt", 1000, 9)]
    for i, flip in enumerate(flips):
        decoded = mutation.decode(image, model, flip)
        effect = mutation.golden_effect(decoded, model, stimulus, reference) if decoded.kind == MODEL else None
        maps = mutation.flipped_maps(base, image, flip, tmp_path / f"f{i}")
        gen = generate(model, ChipSim(DIE, maps), PROMPT, N_NEW)
        where = None if gen.mismatch is None else (gen.mismatch.layer, gen.mismatch.op, gen.mismatch.position)
        assert where == effect, (str(flip), decoded.field, gen.mismatch)
        if decoded.kind == UNUSED:
            assert gen.bit_exact, str(flip)


GATE = 512 + 256 + 256 + 512  # the K model's first w_gate word: after wq, wk, wv and wo (hw-tiny: 4 lanes)
K_FLIPS = [  # (flip, kind, what the decoder names)
    (Flip("tile00_weights", 0, 3 * 8 + 1), MODEL, "wq row 0 block 0 code 3: "),
    (Flip("tile00_weights", 0, 3 * 8 + 4), MODEL, "code 3 (high-bit plane)"),  # Q5_K's fifth bit
    (Flip("tile00_weights", 0, 3 * 8 + 6), UNUSED, "bit 6 above a 5-bit Q5_K code"),
    (Flip("tile00_weights", 0, 36 * 8 + 5), MODEL, "sub-block 0 scale: "),
    (Flip("tile00_weights", 0, 37 * 8), UNUSED, "scale field 1, which a Q5_K block does not read"),
    (Flip("tile00_weights", 0, 38 * 8 + 1), MODEL, "sub-block 0 min: "),
    (Flip("tile00_weights", 0, 32 * 8 + 11), MODEL, "scale d bit 11"),
    (Flip("tile00_weights", 0, 34 * 8 + 3), MODEL, "dmin bit 3"),
    (Flip("tile00_weights", GATE, SLOT + 5 * 8 + 2), MODEL, "w_gate row 1 block 0 code 5 (hmask plane)"),
    (Flip("tile00_weights", GATE, SLOT + 37 * 8 + 5), MODEL, "w_gate row 1 block 0 sub-block 1 scale: "),
    (Flip("tile00_weights", GATE, 38 * 8), UNUSED, "min field 0, which a Q3_K block does not read"),
    (Flip("head_weights", 0, 38 * 8 + 3), MODEL, "lm_head row 0 block 0 sub-block 0 min"),  # Q2_K
    (Flip("head_weights", 0, 36 * 8 + 4), UNUSED, "scale field 0 bit 4 above a Q2_K scale"),
    (Flip("head_weights", 304, 3 * SLOT + 7 * 8 + 5), MODEL, "embed row 3 block 0 code 7 (qh plane)"),  # Q6_K
    (Flip("head_weights", 304, 3 * SLOT + 36 * 8 + 7), MODEL, "embed row 3 block 0 sub-block 0 scale"),
]


@pytest.mark.parametrize("flip, kind, field", K_FLIPS, ids=[f[2] for f in K_FLIPS])
def test_k_quant_flips_are_named(printed, flip, kind, field):
    model, image = printed["k"]
    decoded = mutation.decode(image, model, flip)
    assert decoded.kind == kind and field in decoded.field, decoded.field


def test_k_quant_flips_fail_where_the_golden_of_the_mutant_first_changes(printed, tmp_path):
    """On a model of Q5_K, Q3_K, Q2_K and Q6_K: flips in codes, their high-bit planes, sub-block scales
    and mins, and one slot's copy of d and dmin are caught at the golden's first changed tap; the bits a
    format does not define leave the run bit-exact."""
    model, image = printed["k"]
    base, _ = metal_maps(image)
    stimulus = PROMPT + generate(model, ChipSim(DIE, base), PROMPT, N_NEW).golden_tokens[:-1]
    reference = mutation.golden_trace(IntModel(model, capacity=len(stimulus)), stimulus)
    effective = 0
    for i, (flip, _, _) in enumerate(K_FLIPS):
        decoded = mutation.decode(image, model, flip)
        effect = mutation.golden_effect(decoded, model, stimulus, reference) if decoded.kind == MODEL else None
        effective += effect is not None
        gen = generate(model, ChipSim(DIE, mutation.flipped_maps(base, image, flip, tmp_path / f"f{i}")), PROMPT,
                       N_NEW)
        where = None if gen.mismatch is None else (gen.mismatch.layer, gen.mismatch.op, gen.mismatch.position)
        assert where == effect, (str(flip), decoded.field, gen.mismatch)
    assert effective >= 8


def test_a_slot_copy_of_a_super_block_scale_changes_one_activation_block(printed):
    """The K quants' d and dmin are printed in each of a super-block's eight slots; the decoder's golden
    changes the flipped slot's copy alone."""
    model, image = printed["k"]
    decoded = mutation.decode(image, model, Flip("tile00_weights", 2 * 8 + 3, SLOT + 32 * 8 + 11))
    golden, clean = decoded.patch(model), IntModel(model)
    changed = np.argwhere(golden.layers[0].qkv.block_scales()[0] != clean.layers[0].qkv.block_scales()[0])
    assert changed.tolist() == [[1 + 4 * 2, 3]]  # row 9 (group 2, lane 1) of W_q, block 3
    assert decoded.mutant is None


def test_flipped_maps_never_write_into_the_base(printed, tmp_path):
    model, image = printed["tied"]
    base, _ = metal_maps(image)
    before = (base / "tile00_weights.vmap").read_bytes()
    out = tmp_path / "m"
    for bit in (0, 1):  # twice into the same directory: the second write must replace the link, not follow it
        mutation.flipped_maps(base, image, Flip("tile00_weights", 0, bit), out)
    mutation.flipped_maps(base, image, Flip("lut_exp2", 0, 0), out)
    assert (base / "tile00_weights.vmap").read_bytes() == before
    assert (out / "tile00_weights.vmap").read_bytes() == before


def test_mutation_score_json(capsys):
    from hardwire import mutation_score

    assert mutation_score.main(["--flips", "12", "--seed", "3", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["flips"] == 12 and report["seed"] == 3 and len(report["results"]) == 12
    assert {r["rom_class"] for r in report["results"]} == set(mutation_score.CLASSES)
    assert report["effective"] + report["no_effect"] + report["unmodelled"] == 12
    assert sum(c["flips"] for c in report["per_rom_class"].values()) == 12
    # the chained check catches every flip the golden reference sees, where it sees it, and nothing it does not
    assert report["caught"] == report["effective"] > 0 and report["mutation_score"] == 1.0
    assert report["caught_where_golden_changes"] == report["caught"]
    assert report["no_effect_caught"] == 0


def test_mutation_score_bad_input(capsys):
    from hardwire import mutation_score

    assert mutation_score.main(["--flips", "0", "--json"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--flips and --tokens must be at least 1" in err[0]
