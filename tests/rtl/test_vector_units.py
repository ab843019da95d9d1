"""The vector unit (rtl/units/vector.py) against the golden integer reference, word for word.

Each unit is built once per session (the build cache shares it between xdist workers) with its
table ROMs loaded from via maps of golden/spec.py's tables. References: golden IntModel methods
on a small synthetic model (rmsnorm, rope, silu_gate) and golden/spec.py primitives (rq, sat).
Mantissas and exponents are compared as integers.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

from hardwire.cosim import vector_units as harness
from hardwire.cosim.vector_units import AddUnit, GainVector, NormUnit, RopeUnit, RqUnit, SiluUnit
from hardwire.cosim.verilator_build import lint
from hardwire.golden import spec
from hardwire.golden.errors import HardwireError
from hardwire.golden.gguf_model import load_model
from hardwire.golden.intref import IntModel
from hardwire.golden.spec import ACC_BITS, ACC_FRAC, BLOCK
from hardwire.golden.synth import SynthSpec, write_synthetic
from hardwire.rtl.bus import BlockBus, RomPort
from hardwire.rtl.cells.lut_rom import lut_rom
from hardwire.rtl.cells.via_rom import via_map_define
from hardwire.rtl.cells.wiring import bit_signal, unsigned_signal
from hardwire.rtl.units import vector as v
from hardwire.rtl.verilog import to_verilog

ACC_MAX, ACC_MIN = (1 << (ACC_BITS - 1)) - 1, -(1 << (ACC_BITS - 1))
ONE = 1 << ACC_FRAC  # 1.0 in ACC
SEEDS = [101, 102]
HEAD_DIM, POSITIONS = 64, 64  # the synthetic model: 2 blocks per head, a 64-position RoPE table
NORM_MAX_BLOCKS = 19  # SUM over three cycles of v.NORM_SUM_TERMS blocks, the last partly filled


# --- fixtures: the golden model and the units, each built once per session ---------------------

@pytest.fixture(scope="session")
def vector_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("vector-units")


@pytest.fixture(scope="session")
def golden(vector_dir):
    shape = SynthSpec(layers=1, d_model=2 * HEAD_DIM, d_ffn=128, heads=2, kv_heads=1, vocab=258, context=POSITIONS)
    return IntModel(load_model(write_synthetic(shape, vector_dir / "vector.gguf")))


@pytest.fixture(scope="session")
def gain_vectors(golden):
    """The consts ROM of the norm tests: the model's own gains, then shapes the model lacks."""
    rng = np.random.default_rng(7)
    eps = golden.cfg.rms_eps

    def vector(g, eps_value):
        gains, e_g = spec.norm_gains(np.asarray(g))
        return GainVector(gains, e_g, spec.eps_q(len(g), eps_value))

    G, e_g = golden.layers[0].attn_norm
    return {
        "model": GainVector(G, e_g, golden.eps_q),
        "one_block_signed": vector(rng.standard_normal(BLOCK), eps),
        "max_blocks": vector(1.0 + 0.1 * rng.standard_normal(NORM_MAX_BLOCKS * BLOCK), eps),
        "large_eps": vector(1.0 + 0.1 * rng.standard_normal(4 * BLOCK), 1e-3),  # EPS_Q near 2**61
    }


@pytest.fixture(scope="session")
def rq_unit():
    return RqUnit()


@pytest.fixture(scope="session")
def add_unit():
    return AddUnit()


@pytest.fixture(scope="session")
def silu_unit(golden, vector_dir):
    return SiluUnit(golden.sigmoid, vector_dir)


@pytest.fixture(scope="session")
def rope_unit(golden, vector_dir):
    return RopeUnit(golden.rope_cos, golden.rope_sin, vector_dir)


@pytest.fixture(scope="session")
def norm_unit(golden, gain_vectors, vector_dir):
    return NormUnit(list(gain_vectors.values()), golden.rsqrt, vector_dir, NORM_MAX_BLOCKS)


# --- test vectors -----------------------------------------------------------------------------

def acc_random(rng, count, scale_bits=(0, 40)):
    """ACC blocks whose magnitudes spread over 2**scale_bits[0] .. 2**scale_bits[1]."""
    bits = rng.integers(*scale_bits, size=(count, 1))
    return spec.sat((rng.standard_normal((count, BLOCK)) * 2.0**bits).astype(np.int64), ACC_BITS)


def acc_edges():
    """Zero, the ACC extremes (what saturates downstream), all-negative and single-lane blocks."""
    lane = np.arange(BLOCK)
    return np.array([
        np.zeros(BLOCK),
        np.full(BLOCK, ACC_MAX), np.full(BLOCK, ACC_MIN),
        np.where(lane % 2, ACC_MAX, ACC_MIN),
        -(lane + 1) * 12345,  # all negative
        np.full(BLOCK, -1),
        np.eye(BLOCK)[3] * ACC_MIN,
        np.eye(BLOCK)[30] * 3,
        (lane - 16) * ONE,  # small exact values
        np.full(BLOCK, (1 << 15) - 1), np.full(BLOCK, 1 << 15),  # around the first s = 1
    ], dtype=np.int64)


def assert_blocks_equal(got, want, what):
    got_m, got_e = got
    want_m, want_e = want
    assert len(got_m) == len(want_m), f"{what}: {len(got_m)} blocks out, {len(want_m)} expected"
    for b in range(len(want_m)):
        assert np.array_equal(got_m[b], want_m[b]) and got_e[b] == want_e[b], (
            f"{what}, block {b}: rtl e={got_e[b]} m={got_m[b].tolist()} != golden e={want_e[b]} "
            f"m={want_m[b].tolist()}")


# --- Verilog: lint-clean, tables only in the ROM macro ----------------------------------------

def unit_designs():
    rst = harness.sync_reset
    b, u = bit_signal, unsigned_signal
    bus = harness.BUS_BITS
    return {
        "rq_unit": harness.rq_top,
        "add_unit": harness.add_top,
        "silu_unit": lambda: v.silu_unit(b(), rst(), b(), u(bus), u(bus), BlockBus(),
                                         RomPort(BLOCK * v.SIGMOID_ADDR_BITS, BLOCK * v.SIGMOID_WIDTH)),
        "rope_unit": lambda: v.rope_unit(b(), rst(), b(), u(bus), u(6), u(1), BlockBus(), RomPort(7, v.ROPE_WIDTH)),
        "norm_unit": lambda: v.norm_unit(b(), rst(), b(), u(v.norm_count_bits(NORM_MAX_BLOCKS)), u(5), b(), u(bus),
                                         BlockBus(), b(), RomPort(5, v.GAIN_WIDTH),
                                         RomPort(v.RSQRT_ADDR_BITS, v.RSQRT_WIDTH), max_blocks=NORM_MAX_BLOCKS),
    }


@pytest.mark.parametrize("name", sorted(unit_designs()))
def test_units_are_lint_clean_with_no_tables_inside(name):
    verilog = to_verilog(unit_designs()[name], name)
    assert lint({f"{name}.v": verilog}, name) == ""
    assert "initial" not in verilog and "via_map" not in verilog, "tables belong in the ROM macros"


def test_lut_rom_is_lint_clean_and_loads_from_its_define():
    def design():
        return lut_rom(bit_signal(), bit_signal(), unsigned_signal(3 * 11), unsigned_signal(3 * 17), "t", 1536, 3)

    verilog = to_verilog(design, "lut")
    assert lint({"lut.v": verilog}, "lut", defines={via_map_define("t"): '"any.vmap"'}) == ""
    assert lint({"lut.v": verilog}, "lut") == ""  # without the define: the map comes from +hw_via_maps
    # one load per ROM: from the define, or else from the run-time directory
    assert f"hw_via_map_load(`{via_map_define('t')}," in verilog and verilog.count("hw_via_map_load(") == 2
    assert '"/t.vmap"' in verilog


@pytest.mark.parametrize("depth, ports, addr_bits, data_bits, message", [
    (1, 1, 1, 8, "depth >= 2"),
    (16, 2, 5, 16, "needs 8 address bits"),
    (16, 2, 8, 15, "equal ports"),
])
def test_lut_rom_refuses_bad_shapes(depth, ports, addr_bits, data_bits, message):
    with pytest.raises(HardwireError, match=message):
        lut_rom(bit_signal(), bit_signal(), unsigned_signal(addr_bits), unsigned_signal(data_bits), "t", depth, ports)


# --- rq_unit ----------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", SEEDS)
def test_rq_unit_random(rq_unit, seed):
    rng = np.random.default_rng(seed)
    blocks = np.concatenate([acc_random(rng, 60, (0, 47)), acc_edges()])
    s = np.maximum(spec.bitlen(np.abs(blocks).max(axis=-1)) - 15, 0)
    exps = rng.integers(-128, 128 - s)  # e_in + s stays on the 8-bit bus
    assert_blocks_equal(rq_unit(blocks, exps, rng), spec.rq(blocks, exps, 16), f"rq seed {seed}")


def test_rq_unit_edges_at_the_acc_exponent(rq_unit):
    blocks = acc_edges()
    exps = np.full(len(blocks), -ACC_FRAC)
    assert_blocks_equal(rq_unit(blocks, exps), spec.rq(blocks, exps, 16), "rq edges")


# --- add_unit ---------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", SEEDS)
def test_add_unit_random_and_saturating(add_unit, seed):
    rng = np.random.default_rng(seed)
    a = np.concatenate([acc_random(rng, 40, (0, 47)), acc_edges(), acc_edges()])
    b = np.concatenate([acc_random(rng, 40, (0, 47)), acc_edges(), acc_edges()[::-1]])
    got = add_unit(a, b, rng)
    want = spec.sat(a + b, ACC_BITS)
    bad = np.argwhere(got != want)
    assert not bad.size, f"add block {bad[0][0]}: rtl {got[bad[0][0]].tolist()} != golden {want[bad[0][0]].tolist()}"
    assert (want == ACC_MAX).any() and (want == ACC_MIN).any(), "the vectors must saturate both ways"


# --- silu_unit --------------------------------------------------------------------------------

def silu_golden(golden, gate, up):
    m, e = golden.silu_gate(gate.reshape(1, -1), up.reshape(1, -1))
    return m.reshape(-1, BLOCK), e.reshape(-1)


@pytest.mark.parametrize("seed", SEEDS)
def test_silu_unit_random(silu_unit, golden, seed):
    rng = np.random.default_rng(seed)
    gate, up = acc_random(rng, 48, (18, 30)), acc_random(rng, 48, (10, 40))
    assert_blocks_equal(silu_unit(gate, up, rng), silu_golden(golden, gate, up), f"silu seed {seed}")


def test_silu_unit_index_clamps_at_both_ends(silu_unit, golden):
    lane = np.arange(BLOCK)
    gate = np.array([
        (lane - 16) * 2 * ONE,  # -32 .. 30: both clamps and the middle in one block
        np.full(BLOCK, 17 * ONE), np.full(BLOCK, -17 * ONE),  # past either end
        np.full(BLOCK, 16 * ONE - 1), np.full(BLOCK, -16 * ONE),  # the last and first table entries
        (lane - 16) * (ONE >> 8),  # one table step per lane around 0
    ], dtype=np.int64)
    up = np.full_like(gate, 3 * ONE)
    assert_blocks_equal(silu_unit(gate, up), silu_golden(golden, gate, up), "silu clamps")


def test_silu_unit_edges(silu_unit, golden):
    gate, up = acc_edges(), acc_edges()[::-1].copy()
    assert_blocks_equal(silu_unit(gate, up), silu_golden(golden, gate, up), "silu edges")
    assert_blocks_equal(silu_unit(up, gate), silu_golden(golden, up, gate), "silu edges swapped")


# --- rope_unit --------------------------------------------------------------------------------

def rope_case(rope_unit, golden, heads, positions, rng=None):
    """Each head (2 blocks) at its position through the unit and through IntModel.rope."""
    heads = np.asarray(heads, np.int64).reshape(len(positions), HEAD_DIM)
    want_m, want_e = golden.rope(heads, np.asarray(positions), 1)
    blocks = heads.reshape(-1, BLOCK)
    head_blocks = np.tile(np.arange(HEAD_DIM // BLOCK), len(positions))
    got = rope_unit(blocks, np.repeat(positions, HEAD_DIM // BLOCK), head_blocks, rng)
    return got, (want_m.reshape(-1, BLOCK), want_e.reshape(-1))


@pytest.mark.parametrize("seed", SEEDS)
def test_rope_unit_random_positions(rope_unit, golden, seed):
    rng = np.random.default_rng(seed)
    positions = np.concatenate([[0, POSITIONS - 1], rng.integers(0, POSITIONS, 30)])
    heads = acc_random(rng, 2 * len(positions), (0, 40))
    got, want = rope_case(rope_unit, golden, heads, positions, rng)
    assert_blocks_equal(got, want, f"rope seed {seed}")


def test_rope_unit_first_and_last_position_edges(rope_unit, golden):
    heads = np.concatenate([acc_edges(), acc_edges()[::-1]])
    for position in (0, POSITIONS - 1):
        positions = np.full(len(heads) // 2, position)
        got, want = rope_case(rope_unit, golden, heads, positions)
        assert_blocks_equal(got, want, f"rope edges at position {position}")


def test_rope_unit_refuses_positions_past_the_table(rope_unit):
    with pytest.raises(HardwireError, match="positions must be in"):
        rope_unit(np.zeros((1, BLOCK)), [POSITIONS], [0])


# --- norm_unit --------------------------------------------------------------------------------

def norm_golden(golden, vector: GainVector, x):
    reference = copy.copy(golden)
    reference.eps_q = vector.eps_q  # the golden norm takes EPS_Q from its model; these vectors bring their own
    m, e = reference.rmsnorm(np.asarray(x, np.int64).reshape(1, -1), (vector.gains, vector.e_g))
    return m.reshape(-1, BLOCK), e.reshape(-1)


def run_norm(norm_unit, gain_vectors, golden, name, x, rng=None, start_gap=0):
    names = list(gain_vectors)
    m, e, timing = norm_unit(x, names.index(name), rng, start_gap)
    assert_blocks_equal((m, e), norm_golden(golden, gain_vectors[name], x), f"norm {name}")
    n = len(x) // BLOCK
    first = timing["last_in"] + v.norm_sum_cycles(n) + v.NORM_TAIL_LATENCY
    assert timing["out"] == list(range(first, first + n)), f"norm beats at {timing['out']}, expected from {first}"
    assert timing["done"] == [first + n - 1], "done must come with the last block"


def massive(n_blocks, rng, where=37):
    """A residual with one 'massive activation' of 2**14 among values around 1."""
    x = (rng.standard_normal(n_blocks * BLOCK) * ONE).astype(np.int64)
    x[where % len(x)] = (1 << 14) * ONE
    return x


@pytest.mark.parametrize("seed", SEEDS)
def test_norm_unit_random_with_the_model_gains(norm_unit, gain_vectors, golden, seed):
    rng = np.random.default_rng(seed)
    for scale_bits in (24, 30, 20, 4):  # values around 1, 64, 1/16 and a few ACC units
        x = (rng.standard_normal(4 * BLOCK) * 2.0**scale_bits).astype(np.int64)
        run_norm(norm_unit, gain_vectors, golden, "model", x, rng, start_gap=int(rng.integers(0, 3)))


def test_norm_unit_massive_activation(norm_unit, gain_vectors, golden):
    rng = np.random.default_rng(3)
    run_norm(norm_unit, gain_vectors, golden, "model", massive(4, rng))
    run_norm(norm_unit, gain_vectors, golden, "max_blocks", massive(NORM_MAX_BLOCKS, rng, where=200), rng)


def test_norm_unit_zero_vector_and_epsilon(norm_unit, gain_vectors, golden):
    for name in ("model", "large_eps"):
        run_norm(norm_unit, gain_vectors, golden, name, np.zeros(4 * BLOCK, np.int64))
    tiny = np.zeros(4 * BLOCK, np.int64)
    tiny[::7] = 3  # a few ACC units: epsilon dominates
    run_norm(norm_unit, gain_vectors, golden, "large_eps", tiny)


def test_norm_unit_extremes_and_all_negative(norm_unit, gain_vectors, golden):
    edges = acc_edges()[:4].reshape(-1)  # zero, +max, -max and alternating extreme blocks
    run_norm(norm_unit, gain_vectors, golden, "model", edges)
    negative = -np.abs((np.random.default_rng(5).standard_normal(4 * BLOCK) * ONE).astype(np.int64)) - 1
    run_norm(norm_unit, gain_vectors, golden, "large_eps", negative)


def test_norm_unit_one_block_signed_gains(norm_unit, gain_vectors, golden):
    rng = np.random.default_rng(9)
    for x in (massive(1, rng, where=5), acc_random(rng, 1, (0, 47)).reshape(-1), np.full(BLOCK, ACC_MIN)):
        run_norm(norm_unit, gain_vectors, golden, "one_block_signed", x, rng)


def test_norm_unit_back_to_back_and_empty(norm_unit, gain_vectors, golden):
    rng = np.random.default_rng(11)
    for name in ("max_blocks", "one_block_signed", "model"):
        n = len(gain_vectors[name].gains) // BLOCK
        run_norm(norm_unit, gain_vectors, golden, name, acc_random(rng, n, (10, 36)).reshape(-1))
    assert norm_unit.start_empty() == [1], "n_blocks = 0 must give done alone, one edge after start's"


def test_norm_unit_refuses_bad_vectors(norm_unit):
    with pytest.raises(HardwireError, match="normalizes 128 elements"):
        norm_unit(np.zeros(3 * BLOCK), 0)


# --- via-map layouts --------------------------------------------------------------------------

def test_norm_const_words_layout_and_range():
    words = v.norm_const_words(np.array([-1, 5] + [0] * 30), -18, (1 << 62) - 1)
    assert words[0] == ((1 << 62) - 1) | ((-18) & 0xFF) << 64
    assert words[1] & 0xFFFFFF == 0xFFFFFF and (words[1] >> 24) & 0xFFFFFF == 5
    with pytest.raises(HardwireError, match="outside"):
        v.norm_const_words(np.zeros(BLOCK), v.NORM_E_G_MIN - 1, 0)
    with pytest.raises(HardwireError, match="EPS_Q"):
        v.norm_const_words(np.zeros(BLOCK), 0, 1 << 62)


def test_rope_rom_words_layout():
    cos, sin = spec.rope_tables(HEAD_DIM, 1e4, 3)
    words = v.rope_rom_words(cos, sin, block_bits=1)
    assert len(words) == 6
    pair, position, block = 5, 2, 1
    entry = words[(position << 1) | block] >> (32 * pair)
    assert np.int16(entry & 0xFFFF) == cos[position, 16 + pair]
    assert np.int16((entry >> 16) & 0xFFFF) == sin[position, 16 + pair]
    with pytest.raises(HardwireError, match="do not fit"):
        v.rope_rom_words(cos, sin, block_bits=0)
