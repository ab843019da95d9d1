"""The attention unit (rtl/units/attention.py) against golden IntModel.attention, word for word.

The unit's Verilog depends on the die only, so ONE build per die serves every test: the unit
of hw-tiny (one engine, rtl/die.py) and of hw-tiny-w (three engines in lockstep), each built
once per session (the adapter caches builds, so xdist workers share them). Three model shapes
run on each, given at run time on its geometry ports:
    gqa3: heads 3, kv_heads 1, head_dim 64 (two blocks per head; one full round of three engines)
    gqa1: heads 2, kv_heads 2, head_dim 32 (one block per head; a partly filled round)
    gqa4: heads 8, kv_heads 2, head_dim 32 (rounds of 3, 3 and 2 heads; KV heads change mid-round)
All have a 64-wide K/V row, so one KV write can be read by any shape
(test_one_unit_switches_geometry). The unit's KV SRAM persists across calls, like the
chip's: every case writes the positions it reads. Every command also checks the documented
cycle count. The other dies are elaborated and linted, not built.
"""

from __future__ import annotations

import dataclasses
import inspect
import re

import numpy as np
import pytest
from myhdl import StopSimulation, block, delay, instance

from hardwire.cosim.attention_unit import EXP2_MAP, AttentionUnitSim, harness_elaborator, harness_top
from hardwire.cosim.verilator_build import lint
from hardwire.golden import spec
from hardwire.golden.errors import HardwireError
from hardwire.golden.gguf_model import load_model
from hardwire.golden.intref import IntModel, Trace
from hardwire.golden.synth import SynthSpec, write_synthetic
from hardwire.rtl.cells.sram import sram
from hardwire.rtl.cells.via_rom import via_map_define
from hardwire.rtl.cells.wiring import bit_signal, unsigned_signal
from hardwire.rtl.die import DIES, get_die
from hardwire.rtl.units.attention import WORD_BITS, AttentionGeometry, AttentionLimits, attention_unit
from hardwire.rtl.verilog import to_verilog

DIE = "hw-tiny"
LIMITS = AttentionLimits.from_die(get_die(DIE))
BUILT_DIES = ("hw-tiny", "hw-tiny-w")  # one engine; three (the limits are otherwise hw-tiny's)
GEOMETRIES = {
    "gqa3": AttentionGeometry(heads=3, kv_heads=1, head_dim=64),
    "gqa1": AttentionGeometry(heads=2, kv_heads=2, head_dim=32),
    "gqa4": AttentionGeometry(heads=8, kv_heads=2, head_dim=32),
}
DECODE_POSITIONS = 24  # the synthetic decode runs this many tokens (the other tests fill the context)
B16_MAX = spec.ACT_MAX
# MyHDL warns about the two deliberate idioms of the unit: the undriven constant-0 exponent
# of the requantizer and the never-read `lane_tops_unused` (see rtl/units/attention.py)
pytestmark = pytest.mark.filterwarnings("ignore::myhdl.ToVerilogWarning")


class Case:
    """One model shape on the shared unit: a golden IntModel of the same shape (from a
    synthetic GGUF model), with a KV cache for layer 0 that the tests fill by hand."""

    def __init__(self, geo: AttentionGeometry, unit: AttentionUnitSim, work_dir):
        self.geo = geo
        self.kv_tokens = unit.limits.kv_tokens
        synth = SynthSpec(layers=2, d_model=geo.heads * geo.head_dim, d_ffn=64, heads=geo.heads,
                          kv_heads=geo.kv_heads, vocab=300, context=self.kv_tokens, seed=5)
        self.model = IntModel(load_model(write_synthetic(synth, work_dir / "model.gguf")), capacity=self.kv_tokens)
        self.unit = unit
        self.cache = self.model.new_cache()

    @property
    def kv_dim(self) -> int:
        return self.geo.kv_heads * self.geo.head_dim

    @property
    def q_dim(self) -> int:
        return self.geo.heads * self.geo.head_dim

    def remember(self, position, k, ke, v, ve):
        """K/V of `position` into the golden cache (layer 0) only."""
        c = self.cache
        c.k[0, position], c.ke[0, position], c.v[0, position], c.ve[0, position] = k, ke, v, ve

    def write(self, position, k, ke, v, ve, gap=0):
        """The same K/V into the golden cache and the unit's SRAM, written with this shape."""
        self.remember(position, k, ke, v, ve)
        cycles = self.unit.write_kv(self.geo, position, k, ke, v, ve, gap)
        if gap == 0:
            assert cycles == self.geo.kv_write_cycles

    def check(self, position, q, qe, gap=0):
        """Attend from `position` with this shape; the unit's blocks must equal IntModel.attention's."""
        want_m, want_e = self.model.attention(q[None], qe[None], self.cache, 0, np.array([position]))
        got = self.unit.attend(self.geo, position, q, qe, gap)
        bad = np.flatnonzero(got.mantissas != want_m[0])
        assert not bad.size, (f"position {position}: mantissa {bad[0]} rtl {got.mantissas[bad[0]]} golden "
                              f"{want_m[0][bad[0]]} ({bad.size} differ)")
        assert np.array_equal(got.exponents, want_e[0]), f"exponents rtl {got.exponents} golden {want_e[0]}"
        if gap == 0:
            assert got.cycles == self.geo.attend_cycles(position + 1, self.unit.limits.engines)
        return got


@pytest.fixture(scope="module", params=BUILT_DIES)
def unit(request, tmp_path_factory):
    limits = AttentionLimits.from_die(get_die(request.param))
    assert limits.engines == 1 or (limits.kv_tokens, limits.max_heads, limits.max_kv_dim,
                                   limits.max_q_dim) == (LIMITS.kv_tokens, 8, 256, 256)
    return AttentionUnitSim(limits, tmp_path_factory.mktemp("attention-unit"))


@pytest.fixture(scope="module")
def cases(unit, tmp_path_factory):
    return {name: Case(geo, unit, tmp_path_factory.mktemp(f"attention-{name}")) for name, geo in GEOMETRIES.items()}


@pytest.fixture(params=sorted(GEOMETRIES))
def case(request, cases):
    return cases[request.param]


def random_b16(rng, n_blocks, exp_range=(-30, -10), peak_bits=None):
    """B16 blocks with per-block peak magnitudes of 1..15 bits (the whole mantissa range)."""
    bits = rng.integers(1, 16, n_blocks) if peak_bits is None else np.full(n_blocks, peak_bits)
    limit = np.minimum((1 << bits) - 1, B16_MAX)[:, None]
    m = rng.integers(-limit, limit + 1, (n_blocks, spec.BLOCK))
    return m.reshape(-1), rng.integers(exp_range[0], exp_range[1] + 1, n_blocks)


def fill(case, rng, positions, k_exp=(-30, -10), v_exp=(-24, -8)):
    nb = case.kv_dim // spec.BLOCK
    for p in positions:
        case.write(p, *random_b16(rng, nb, k_exp), *random_b16(rng, nb, v_exp))


def random_query(case, rng, exp_range=(-30, -10)):
    return random_b16(rng, case.q_dim // spec.BLOCK, exp_range)


# --- softmax over one position and over the whole context ----------------------------------------

def test_one_position(case):
    """w = 2**24 exactly: the output is the value vector requantized."""
    rng = np.random.default_rng(1)
    fill(case, rng, [0])
    for _ in range(3):
        case.check(0, *random_query(case, rng))


def test_full_context(case):
    rng = np.random.default_rng(2)
    last = case.kv_tokens - 1
    fill(case, rng, range(last + 1))
    for position in (last, last // 2, 1):
        case.check(position, *random_query(case, rng))


def test_wide_exponents(case):
    """Q and K exponents over the whole 8-bit port (floor shifts of up to 240 bits right and
    saturating left shifts); V exponents over the contract [-24, 0]."""
    rng = np.random.default_rng(3)
    positions = range(case.kv_tokens)
    fill(case, rng, positions, k_exp=(-128, 127), v_exp=(-24, 0))
    for _ in range(3):
        case.check(len(positions) - 1, *random_query(case, rng, (-128, 127)))


# --- the cycle model ------------------------------------------------------------------------------

@pytest.mark.parametrize("position", [0, 9, 60])
def test_cycles_follow_the_model(case, position):
    """The measured cycles of an attention are attend_cycles(P, engines): one engine (hw-tiny, a
    head at a time), or three in lockstep (hw-tiny-w): gqa3 one full round (heads == engines),
    gqa1 one partly filled round, gqa4 rounds of 3, 3 and 2 heads."""
    rng = np.random.default_rng(20 + position)
    fill(case, rng, range(position + 1))
    engines = case.unit.limits.engines
    got = case.check(position, *random_query(case, rng))
    assert got.cycles == case.geo.attend_cycles(position + 1, engines)
    rounds = {"gqa3": [3], "gqa1": [2], "gqa4": [3, 3, 2]}[next(n for n, g in GEOMETRIES.items() if g == case.geo)]
    assert case.geo.round_heads(engines) == (rounds if engines == 3 else [1] * case.geo.heads)


def test_cycle_model_of_smollm2():
    """The model's figures for SmolLM2-135M's attention (9 heads over 3 KV heads, head_dim 64):
    a head at a time, and all nine heads in one round (hw-s135w)."""
    smollm2 = AttentionGeometry(heads=9, kv_heads=3, head_dim=64)
    assert smollm2.head_cycles(1024) == 5179 and smollm2.attend_cycles(1024) == 1 + 18 + 9 * 5179
    assert smollm2.attend_cycles(1024, 9) == 1 + 18 + 5 * 1024 + 37 + 18 == 5194
    assert [smollm2.attend_cycles(p, 9) for p in (5, 15, 25)] == [99, 149, 199]
    assert smollm2.round_heads(9) == [9] and smollm2.round_heads(4) == [4, 4, 1]
    assert smollm2.attend_cycles(15, 4) == 1 + 18 + 3 * (5 * 15 + 37) + (4 + 4 + 1) * 2


# --- ties, saturation, zeros -----------------------------------------------------------------------

def test_equal_scores(case):
    """The same key at every position: all scores tie, every p_t = 2**16, RCP = floor(2**32 / P)."""
    rng = np.random.default_rng(4)
    nb = case.kv_dim // spec.BLOCK
    k, ke = random_b16(rng, nb)
    for p in range(case.kv_tokens):
        case.write(p, k, ke, *random_b16(rng, nb, (-24, -8)))
    for position in (case.kv_tokens - 1, 2):
        case.check(position, *random_query(case, rng))


def test_tied_maximum(case):
    """Two positions share the maximum score, the others are lower."""
    rng = np.random.default_rng(5)
    nb = case.kv_dim // spec.BLOCK
    top_k, top_e = random_b16(rng, nb, peak_bits=15)
    for p in range(6):
        k, ke = (top_k, top_e) if p in (1, 4) else (top_k // 3, top_e)
        case.write(p, k, ke, *random_b16(rng, nb, (-24, -8)))
    q = np.tile(top_k[: case.geo.head_dim], case.geo.heads)  # every head aligned with top_k's first head
    case.check(5, q, np.full(case.q_dim // spec.BLOCK, -20))


def test_saturating_scores(case):
    """Block terms and sums hit +-2**39 (SCORE_BITS) in both directions; positions far below
    the maximum get p = 0 (more than 17 octaves)."""
    rng = np.random.default_rng(6)
    nb, blocks_per_head = case.kv_dim // spec.BLOCK, case.geo.head_blocks
    big = np.full(case.kv_dim, B16_MAX)
    # (mantissas, exponent): 10 saturates every block term, -20 and -30 stay below 2**39
    keys = [(big, 10), (-big, 10), (big, -30), (big // 2, -20), (-big, -30), (big, 10)]
    for p, (k, e) in enumerate(keys):
        case.write(p, k, np.full(nb, e), *random_b16(rng, nb, (-24, -8)))
    q = np.full(case.q_dim, B16_MAX)
    q[::7] = -B16_MAX  # not all positive: D_b stays large but not extreme
    qe = np.full(case.q_dim // spec.BLOCK, 6)
    # the case does what it says (head 0 against KV head 0): saturated terms at exponent 10 only
    dots = np.array([[int(q[b * 32:(b + 1) * 32] @ k[b * 32:(b + 1) * 32]) for b in range(blocks_per_head)]
                     for k, _ in keys])
    shifts = np.array([[6 + e + spec.SCORE_FRAC] * blocks_per_head for _, e in keys])
    terms = spec.sat_shift(dots, shifts, spec.SCORE_BITS)
    top = (1 << (spec.SCORE_BITS - 1)) - 1
    assert (np.abs(terms[[0, 1, 5]]) >= top).all() and (np.abs(terms[[2, 3, 4]]) < top).all()
    case.check(len(keys) - 1, q, qe)
    case.check(len(keys) - 1, -q, qe)  # the mirror: negative saturation is now the top


def test_zero_vectors(case):
    """Zero query (all scores 0: uniform weights), zero keys, zero values (a zero block keeps
    the input exponent: rq gives -48)."""
    rng = np.random.default_rng(7)
    nb = case.kv_dim // spec.BLOCK
    zeros, zero_q = np.zeros(case.kv_dim, np.int64), np.zeros(case.q_dim, np.int64)
    for p in range(4):
        case.write(p, zeros, np.full(nb, -20), *random_b16(rng, nb, (-24, -8)))
    case.check(3, *random_query(case, rng))
    fill(case, rng, range(4))
    case.check(3, zero_q, np.full(case.q_dim // spec.BLOCK, -20))
    for p in range(4):
        case.write(p, *random_b16(rng, nb), zeros, np.full(nb, -24))
    got = case.check(3, *random_query(case, rng))
    assert not got.mantissas.any() and (got.exponents == -spec.ATTN_OUT_FRAC).all()


# --- the real flow: a synthetic model's decode, tap for tap ----------------------------------------

def test_synthetic_model_decode(case):
    """Token by token, as the tile runs: write K/V of position p, attend from p; the output
    must be the golden trace's `attn` tap of that layer and position."""
    geo, model = case.geo, case.model
    cache, trace = model.new_cache(), Trace()
    tokens = (np.arange(DECODE_POSITIONS) * 37 + 11) % model.cfg.vocab
    model.forward(tokens, cache, trace)
    for layer in range(model.cfg.n_layers):
        for p in range(DECODE_POSITIONS):
            case.unit.write_kv(geo, p, cache.k[layer, p], cache.ke[layer, p], cache.v[layer, p], cache.ve[layer, p])
            q, qe = trace.taps[(layer, "q", p)]
            want_m, want_e = trace.taps[(layer, "attn", p)]
            got = case.unit.attend(geo, p, q, qe)
            assert np.array_equal(got.mantissas, want_m) and np.array_equal(got.exponents, want_e), (
                f"layer {layer} position {p}: rtl differs from the golden attn tap")


# --- one die, any shape: the base-grid rule ----------------------------------------------------------

def test_one_unit_switches_geometry(cases):
    """ONE built unit runs two shapes, switching at every command: the K/V rows written with
    one shape are read by both (gqa3 sees one KV head of 64, gqa1 two KV heads of 32), and
    each attend equals its own model's golden attention."""
    a, b = cases["gqa3"], cases["gqa1"]
    assert a.unit is b.unit and a.kv_dim == b.kv_dim
    rng = np.random.default_rng(14)
    nb = a.kv_dim // spec.BLOCK
    for p in range(12):
        writer, reader = (a, b) if p % 2 else (b, a)  # the write's shape alternates too
        kv = (*random_b16(rng, nb), *random_b16(rng, nb, (-24, -8)))
        writer.write(p, *kv)
        reader.remember(p, *kv)
    for position in (11, 0, 5):
        for case in (a, b, b, a):
            case.check(position, *random_query(case, rng))


def die_verilog(die_name: str, model: AttentionGeometry) -> str:
    """The unit's Verilog as the chip elaborates it for `model` printed on `die_name`: the
    model is checked against the die, and then plays no part (it is never elaborated)."""
    limits = AttentionLimits.from_die(get_die(die_name))
    model.check_fits(limits)
    return to_verilog(harness_elaborator(limits), harness_top(limits))


UNIT_PORTS = ("clk", "rst", "start_kv", "start_attn", "pos", "heads", "kv_heads", "head_blocks", "attn_scale",
              "in_valid", "in_data", "in_exp", "out", "done", "busy", "refused", "lut")  # out: BlockBus, lut: RomPort


@pytest.mark.parametrize("die_name", sorted(DIES))
def test_verilog_depends_only_on_the_die(die_name):
    """Two models on the same die (gqa3 with head_dim 64, gqa1 with head_dim 32) give
    byte-identical Verilog: the unit's only elaboration parameter is the die's
    AttentionLimits, and the shape arrives on input ports. The die does shape it (SRAM
    depths, port widths), and every die's Verilog is lint clean."""
    gqa3, gqa1 = (die_verilog(die_name, model) for model in (GEOMETRIES["gqa3"], GEOMETRIES["gqa1"]))
    assert gqa3 == gqa1
    limits = AttentionLimits.from_die(get_die(die_name))
    for port, bits in (("heads", limits.heads_bits), ("kv_heads", limits.heads_bits),
                       ("head_blocks", limits.head_blocks_bits), ("attn_scale", 16)):
        assert re.search(rf"^input \[{bits - 1}:0\] {port};$", gqa3, re.MULTILINE), port
    assert f"SRAM macro sram_kv: {limits.kv_depth} x {limits.kv_lanes} lanes of {WORD_BITS} bits" in gqa3
    # the unit's parameters: its ports, then the die's limits; no model number can reach it
    assert list(inspect.signature(attention_unit.func).parameters) == [*UNIT_PORTS, "limits"]
    top = harness_top(limits)
    assert lint({f"{top}.v": gqa3}, top, defines={via_map_define(EXP2_MAP): '"exp2.vmap"'}) == ""


# --- output saturation at ATTN_OUT_BITS ------------------------------------------------------------

def attention_by_definition(geo, q, qe, k, ke, v, ve):
    """Numerics section 7 in Python integers, one query against keys 0..P-1 (P = len(k)).
    Returns (mantissas, exponents, how many output words saturated at 63 bits)."""
    nbh, blk = geo.head_blocks, spec.BLOCK
    lut = [int(x) for x in spec.exp2_lut()]

    def floor_shift(x, s):
        return x << s if s >= 0 else x >> -s

    def sat(x, bits):
        return max(-(1 << (bits - 1)), min((1 << (bits - 1)) - 1, x))

    mantissas, exponents, saturated = [], [], 0
    for h in range(geo.heads):
        g = h // geo.group
        qh = [[int(x) for x in q[(h * nbh + b) * blk:(h * nbh + b + 1) * blk]] for b in range(nbh)]
        scores = []
        for t in range(len(k)):
            total = 0
            for b in range(nbh):
                kb = k[t][(g * nbh + b) * blk:(g * nbh + b + 1) * blk]
                dot = sum(a * int(c) for a, c in zip(qh[b], kb, strict=True))
                total += sat(floor_shift(dot, int(qe[h * nbh + b]) + int(ke[t][g * nbh + b]) + 16), 40)
            scores.append(sat(total, 40) * geo.attn_scale >> 15)
        top = max(scores)
        p = []
        for s in scores:
            u = -((s - top) * spec.LOG2E_Q >> 15)
            p.append(lut[(u & 0xFFFF) >> 6] >> (u >> 16) if u >> 16 < 17 else 0)
        rcp = (1 << 48) // sum(p)
        w = [x * rcp >> 24 for x in p]
        for b in range(nbh):
            o = [sat(sum(w[t] * int(v[t][(g * nbh + b) * blk + j]) << (int(ve[t][g * nbh + b]) + 24)
                         for t in range(len(k))), spec.ATTN_OUT_BITS) for j in range(blk)]
            s = max(max(abs(x) for x in o).bit_length() - 15, 0)
            half = (1 << s) >> 1
            mantissas += [max(-B16_MAX, min(B16_MAX, (x + half) >> s)) for x in o]
            exponents.append(-spec.ATTN_OUT_FRAC + s)
            saturated += sum(abs(x) >= (1 << 62) - 1 for x in o)
    return np.array(mantissas), np.array(exponents), saturated


def saturating_values(case):
    """Large values at exponent 9 (the contract's top): sum_t w_t v_t 2**33 passes 2**62."""
    rng = np.random.default_rng(8)
    nb = case.kv_dim // spec.BLOCK
    keys, values = [], []
    for p in range(3):
        k, ke = random_b16(rng, nb)
        v = np.where(rng.random(case.kv_dim) < 0.5, B16_MAX, -B16_MAX)
        v[::5] = 5  # some lanes stay in range
        ve = np.full(nb, spec.ACC_BITS - spec.ACC_FRAC - (spec.ACT_BITS - 1))  # 48-bit words: e <= 9
        case.write(p, k, ke, v, ve)
        keys.append((k, ke))
        values.append((v, ve))
    q, qe = random_query(case, rng)
    return q, qe, keys, values


def test_output_saturation_by_definition(case):
    q, qe, keys, values = saturating_values(case)
    want_m, want_e, saturated = attention_by_definition(case.geo, q, qe, [k for k, _ in keys], [e for _, e in keys],
                                                        [v for v, _ in values], [e for _, e in values])
    got = case.unit.attend(case.geo, len(keys) - 1, q, qe)
    assert saturated, "the case must saturate"
    assert np.array_equal(got.mantissas, want_m) and np.array_equal(got.exponents, want_e)


def test_output_saturation_against_golden(case):
    q, qe, keys, _ = saturating_values(case)
    case.check(len(keys) - 1, q, qe)


def test_by_definition_reference_matches_golden(case):
    """The Python-integer reference above agrees with the golden where the golden is exact."""
    rng = np.random.default_rng(9)
    fill(case, rng, range(5), k_exp=(-60, 20), v_exp=(-24, 0))
    q, qe = random_query(case, rng, (-60, 20))
    c = case.cache
    want = case.model.attention(q[None], qe[None], c, 0, np.array([4]))
    mine = attention_by_definition(case.geo, q, qe, c.k[0, :5], c.ke[0, :5], c.v[0, :5], c.ve[0, :5])
    assert np.array_equal(mine[0], want[0][0]) and np.array_equal(mine[1], want[1][0]) and not mine[2]


# --- protocol: pacing, refusals, reset --------------------------------------------------------------

def test_paced_beats(case):
    """The sequencer may leave idle cycles between beats (no back-pressure, any pace)."""
    rng = np.random.default_rng(10)
    nb = case.kv_dim // spec.BLOCK
    for p in range(3):
        case.write(p, *random_b16(rng, nb), *random_b16(rng, nb, (-24, -8)), gap=p + 1)
    got = case.check(2, *random_query(case, rng), gap=3)
    beats = case.geo.heads * case.geo.head_blocks
    assert got.cycles == case.geo.attend_cycles(3, case.unit.limits.engines) + 3 * (beats - 1)


def test_refusals(case):
    """A start while busy, both starts at once, a position past the SRAM: refused, nothing done."""
    rng = np.random.default_rng(11)
    geo, unit = case.geo, case.unit
    fill(case, rng, range(2))
    q, qe = random_query(case, rng)
    assert unit.both_starts_refused(0, geo)
    assert unit.start_refused("start_kv", case.kv_tokens, geo) and not unit.io.busy
    assert unit.start_refused("start_attn", case.kv_tokens, geo) and not unit.io.busy
    assert not unit.start_refused("start_attn", 1, geo) and unit.io.busy
    assert unit.start_refused("start_kv", 0, geo) and unit.io.busy  # the attention still waits for its Q
    unit.reset()
    assert not unit.io.busy
    case.check(1, q, qe)  # the refused commands changed nothing


# shapes outside the die (hw-tiny: 8 heads, 8 K/V blocks, 8 Q blocks), as raw port values
BAD_SHAPES = {
    "zero head_blocks": ({"head_blocks": 0}, True),
    "zero kv_heads": ({"kv_heads": 0}, True),
    "K/V row too wide": ({"heads": 2, "kv_heads": 2, "head_blocks": 5}, True),  # 10 K blocks
    "too many heads": ({"heads": 9, "kv_heads": 1, "head_blocks": 1}, False),
    "Q too wide": ({"heads": 5, "kv_heads": 1, "head_blocks": 2}, False),  # 10 Q blocks
    "kv_heads above heads": ({"heads": 1, "kv_heads": 2, "head_blocks": 1}, False),
}


@pytest.mark.parametrize("name", sorted(BAD_SHAPES))
def test_shapes_outside_the_die_are_refused(cases, name):
    """The geometry ports are checked in the start cycle: a shape the die does not hold is
    refused (start_attn), and so is a K/V row it cannot store (start_kv too)."""
    case = cases["gqa3"]
    raw, kv_refused_too = BAD_SHAPES[name]
    rng = np.random.default_rng(13)
    fill(case, rng, range(2))
    assert case.unit.start_refused("start_attn", 1, case.geo, **raw) and not case.unit.io.busy
    assert case.unit.start_refused("start_kv", 1, case.geo, **raw) == kv_refused_too
    case.unit.reset()
    case.check(1, *random_query(case, rng))  # nothing was written or computed


def test_reset_mid_attention(case):
    """A synchronous reset abandons a running attention; the next one is unaffected."""
    rng = np.random.default_rng(12)
    fill(case, rng, range(4))
    q, qe = random_query(case, rng)
    unit = case.unit
    unit.send_query(case.geo, 3, q, qe)
    unit.sim.step(case.geo.head_cycles(4) // 2)  # in the middle of head 0
    assert unit.io.busy
    unit.reset()
    assert not unit.io.busy and not unit.io.out_valid
    case.check(3, q, qe)


# --- bad input, the RTL itself -----------------------------------------------------------------------

def q_zero(blocks):
    return np.zeros(blocks * spec.BLOCK, np.int64)


@pytest.mark.parametrize("kw, words", [
    (dict(kv_heads=1, head_dim=48, heads=3), "multiple of 32"),
    (dict(kv_heads=2, head_dim=64, heads=3), "multiple of kv_heads"),
])
def test_bad_geometry(kw, words):
    with pytest.raises(HardwireError, match=words):
        AttentionGeometry(**kw)


@pytest.mark.parametrize("kw, words", [
    (dict(kv_tokens=1, max_heads=1, max_kv_dim=64, max_q_dim=64), "at least 2"),
    (dict(kv_tokens=8, max_heads=0, max_kv_dim=64, max_q_dim=64), "max_heads"),
    (dict(kv_tokens=8, max_heads=1, max_kv_dim=48, max_q_dim=64), "max_kv_dim 48"),
    (dict(kv_tokens=8, max_heads=2, max_kv_dim=64, max_q_dim=64, engines=3), "engines must lie in 1..max_heads"),
    (dict(kv_tokens=8, max_heads=2, max_kv_dim=64, max_q_dim=64, engines=0), "engines must lie in 1..max_heads"),
])
def test_bad_limits(kw, words):
    with pytest.raises(HardwireError, match=words):
        AttentionLimits(**kw)


def test_die_attn_heads_within_its_heads():
    with pytest.raises(HardwireError, match="attn_heads=9 must lie in 1..max_heads"):
        dataclasses.replace(get_die("hw-tiny"), attn_heads=9)


@pytest.mark.parametrize("geo, words", [
    (AttentionGeometry(heads=4, kv_heads=4, head_dim=96), "max_kv_dim"),
    (AttentionGeometry(heads=9, kv_heads=1, head_dim=32), "max_heads"),
    (AttentionGeometry(heads=6, kv_heads=1, head_dim=64), "max_d_model"),
])
def test_shapes_the_die_does_not_hold(geo, words):
    with pytest.raises(HardwireError, match=words):
        geo.check_fits(LIMITS)


def test_bad_blocks_are_refused_by_the_harness(case):
    nb = case.kv_dim // spec.BLOCK
    k, ke = np.zeros(case.kv_dim, np.int64), np.zeros(nb, np.int64)
    with pytest.raises(HardwireError, match="V exponents"):
        case.unit.write_kv(case.geo, 0, k, ke, k, np.full(nb, 10))
    with pytest.raises(HardwireError, match="B16"):
        case.unit.write_kv(case.geo, 0, k - 32768, ke, k, ke - 24)
    with pytest.raises(HardwireError, match="blocks of 32"):
        case.unit.attend(case.geo, 0, np.zeros(5, np.int64), np.zeros(1, np.int64))
    with pytest.raises(HardwireError, match="max_heads"):
        case.unit.attend(AttentionGeometry(heads=9, kv_heads=1, head_dim=32), 0, q_zero(9), np.zeros(9, np.int64))


def test_sram_checks_its_shape():
    with pytest.raises(HardwireError, match="4-bit addresses"):
        sram(bit_signal(), bit_signal(), unsigned_signal(3), unsigned_signal(8), bit_signal(), unsigned_signal(3),
             unsigned_signal(8), depth=12, label="s")


def test_lint_clean(unit):
    """verilator --lint-only -Wall, no waivers, on the very Verilog the simulator was built from
    (the unit and its EXP2_LUT via ROM); the only initial blocks are the ROM's two loads (the
    build-time define, or else the run-time via-map directory)."""
    plan = unit.sim.plan
    assert lint(plan.sources, plan.top, defines={via_map_define(EXP2_MAP): '"exp2.vmap"'}) == ""
    verilog = plan.sources[f"{plan.top}.v"]
    assert len(re.findall(r"\binitial\b", verilog)) == 2 and verilog.count("hw_via_map_load(") == 2


def test_sram_model_reads_before_write():
    """The macro's MyHDL model (for MyHDL simulation) matches its Verilog: a read of the address
    written on the same edge returns the old word; rdata holds while re is low."""
    clk, we, re_ = bit_signal(), bit_signal(), bit_signal()
    waddr, raddr = unsigned_signal(2), unsigned_signal(2)
    wdata, rdata = unsigned_signal(8), unsigned_signal(8)
    seen = []

    @block
    def bench():
        memory = sram(clk, we, waddr, wdata, re_, raddr, rdata, depth=4, label="t")

        @instance
        def drive():
            for w, a, d, r, ra in [(1, 2, 7, 0, 0), (1, 2, 9, 1, 2), (0, 0, 0, 1, 2), (0, 0, 0, 0, 1)]:
                we.next, waddr.next, wdata.next, re_.next, raddr.next = w, a, d, r, ra
                yield delay(1)
                clk.next = 1
                yield delay(1)
                clk.next = 0
                seen.append(int(rdata))
            raise StopSimulation()

        return memory, drive

    bench().run_sim(quiet=True)
    assert seen == [0, 7, 9, 9]
