"""A layer tile on Verilator, fed golden blocks (layer-sharded): every tapped block is checked word for word.

One build serves every test: its microcode ROM holds several program segments, each
ending in END, and a test starts the tile at a segment's address.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from hardwire.cosim.scoreboard import Scoreboard
from hardwire.cosim.tile_sim import UCODE_DEPTH, TileSim, _elaborator, harness_verilog
from hardwire.golden import spec
from hardwire.golden.intref import IntModel, Trace
from hardwire.rtl import metal
from hardwire.rtl.die import get_die
from hardwire.rtl.isa import ALSO_NORM, TAP_ID, Instr, Op, executed
from hardwire.rtl.metal import UCODE_BITS, RomImage, _int_bytes
from hardwire.rtl.verilog import to_verilog

DIE = get_die("hw-tiny")
TABLES = ("lut_rsqrt", "lut_sigmoid", "lut_rope", "lut_exp2")
POSITIONS = 3


def without_adapter_passes(program: list[Instr]) -> list[Instr]:
    """The layer program as a tile with no adapter runs it: every adapter pass dropped (the segments below
    must fit one microcode ROM together)."""
    return [dataclasses.replace(ins, lora=0) for ins in executed(program, set())]


def segments(program: list[Instr], cfg) -> dict[str, list[Instr]]:
    """Pieces of the layer program that need no attention unit, each fed from RECV."""
    program = without_adapter_passes(program)
    L = metal.tile_layout(cfg)
    nd = cfg.d_model // 32
    norm_ffn = next(i for i, ins in enumerate(program) if ins.tap == TAP_ID["ffn_norm"])
    attn = next(i for i, ins in enumerate(program) if ins.op == Op.ATTN)
    wo = next(ins for ins in program if ins.tap == TAP_ID["o"])
    return {
        "layer": program,  # the whole layer, attention included
        # RECV feeding the norm, projections, RoPE, v; the attention they start runs to its end untapped, so
        # the unit is idle for the next segment
        "qkv": [*program[:attn], dataclasses.replace(program[attn], tap=0), Instr(Op.END)],
        "o": [Instr(Op.RECV, dst=L.x, n=2 * nd),  # the residual, then the attention output right above it
              Instr(Op.MATMUL, tap=wo.tap, src=L.x + nd, dst=L.o, n=nd, groups=wo.groups, blocks=wo.blocks, rom=wo.rom,
                    fmt=wo.fmt),
              Instr(Op.ADD, tap=TAP_ID["resid_attn"], src=L.x, src2=L.o, dst=L.x, n=nd), Instr(Op.END)],
        # the residual fed into the norm as it comes (as the attention's ADD feeds it), gate|up, SiLU, down, the
        # residual sent on as it is made
        "ffn": [Instr(Op.RECV, dst=L.x, n=nd, rom=program[norm_ffn].rom, aux=ALSO_NORM), *program[norm_ffn:]],
        "vector": [Instr(Op.RECV, dst=0, n=2), Instr(Op.RQ, tap=TAP_ID["v"], src=0, dst=4, n=2),
                   Instr(Op.ADD, tap=TAP_ID["resid_attn"], src=0, src2=0, dst=8, n=2), Instr(Op.SEND, src=8, n=2),
                   Instr(Op.END)],
    }


@pytest.fixture(scope="module")
def synth_model(tmp_path_factory):
    """head_dim 64 (two blocks a head, so RoPE walks its table rows) and two query heads per KV head."""
    from hardwire.golden.gguf_model import load_model
    from hardwire.golden.synth import SynthSpec, write_synthetic

    spec_ = SynthSpec(layers=2, d_model=128, d_ffn=256, heads=2, kv_heads=1, vocab=301, seed=4)
    return load_model(write_synthetic(spec_, tmp_path_factory.mktemp("tile_model") / "m.gguf"))


@pytest.fixture(scope="module")
def golden(synth_model):
    trace = Trace()
    im = IntModel(synth_model, capacity=POSITIONS)
    im.forward(np.array([7, 250, 19]), im.new_cache(), trace)
    return trace


@pytest.fixture(scope="module")
def bench(synth_model, tmp_path_factory):
    """(tile simulator, entry address per segment) for layer 0 of the synthetic model."""
    image = metal.generate(synth_model, DIE)
    parts = segments(image.programs["tile00"], synth_model.config)
    entries, words = {}, []
    for name, seg in parts.items():
        entries[name] = len(words)
        words += [_int_bytes(ins.encode(), UCODE_BITS) for ins in seg]
    assert len(words) <= UCODE_DEPTH
    images = {"ucode": RomImage("ucode", UCODE_BITS, UCODE_DEPTH, np.stack(words)),
              "weights": image.roms["tile00_weights"], "consts": image.roms["tile00_consts"],
              **{name: image.roms[name] for name in TABLES}}
    return TileSim(images, DIE, metal.tile_layout(synth_model.config).end, tmp_path_factory.mktemp("tile")), entries


def blocks_of(tap, exps=True):
    mant, exp = tap
    return [(mant[b * 32:(b + 1) * 32], int(exp[b]) if exps and exp is not None else 0)
            for b in range(len(mant) // 32)]


def check(trace, run, layer, position, want_ops, explain):
    board = Scoreboard(trace)
    for beat in run.taps:
        mismatch = board.check(layer, position, beat.op, beat.block, beat.exp, beat.words, beat.cycle)
        assert mismatch is None, explain(trace, run, layer, position, mismatch)
    assert {op for (_, op, _) in board.checked} == set(want_ops)
    for op in want_ops:  # every block of every checked op arrived
        assert board.checked[(layer, op, position)] == -(-len(trace.taps[(layer, op, position)][0]) // 32)
    return board


@pytest.mark.parametrize("position", range(POSITIONS))
def test_norm_projections_and_rope(bench, golden, position, explain_tile_failure):
    sim, entries = bench
    run = sim.run(blocks_of(golden.taps[(-1, "embed", position)]), position, entries["qkv"])
    board = check(golden, run, 0, position, ["attn_norm", "q", "k", "v"], explain_tile_failure)
    for op in ("attn_norm", "q", "k", "v"):
        assert board.checked[(0, op, position)] == len(golden.taps[(0, op, position)][0]) // 32


def test_output_projection_and_residual(bench, golden, synth_model, explain_tile_failure):
    sim, entries = bench
    upstream = blocks_of(golden.taps[(-1, "embed", 1)]) + blocks_of(golden.taps[(0, "attn", 1)])
    run = sim.run(upstream, 1, entries["o"])
    check(golden, run, 0, 1, ["o", "resid_attn"], explain_tile_failure)


def test_ffn_half_and_send(bench, golden, explain_tile_failure):
    sim, entries = bench
    run = sim.run(blocks_of(golden.taps[(0, "resid_attn", 2)]), 2, entries["ffn"])
    check(golden, run, 0, 2, ["ffn_norm", "ffn_act", "down", "resid_ffn"], explain_tile_failure)
    assert np.concatenate([d[0] for d in run.down]).tolist() == golden.taps[(0, "resid_ffn", 2)][0].tolist()


def test_whole_layer_over_positions(bench, golden, explain_tile_failure):
    """The layer program as the chip runs it, token after token: the KV SRAM fills as it goes."""
    sim, entries = bench
    ops = ["attn_norm", "q", "k", "v", "attn", "o", "resid_attn", "ffn_norm", "ffn_act", "down", "resid_ffn"]
    for position in range(POSITIONS):
        run = sim.run(blocks_of(golden.taps[(-1, "embed", position)]), position, entries["layer"])
        board = check(golden, run, 0, position, ops, explain_tile_failure)
        assert not board.missing([0], [position])
        resid = golden.taps[(0, "resid_ffn", position)][0]
        assert np.concatenate([d[0] for d in run.down]).tolist() == resid.tolist()


def test_recv_rq_add_send(bench):
    sim, entries = bench
    rng = np.random.default_rng(1)
    x = rng.integers(-(2**40), 2**40, (2, 32))
    x[1, :4] = [2**47 - 1, -(2**47), 0, 1]  # saturating doubles and exact small words
    run = sim.run([(x[0], 0), (x[1], 0)], 0, entries["vector"])
    want_m, want_e = spec.rq(x, -24, 16)
    rq_beats = [b for b in run.taps if b.op == TAP_ID["v"]]
    add_beats = [b for b in run.taps if b.op == TAP_ID["resid_attn"]]
    assert [b.block for b in rq_beats] == [0, 1] and [b.block for b in add_beats] == [0, 1]
    for b in range(2):
        np.testing.assert_array_equal(rq_beats[b].words, want_m[b])
        assert rq_beats[b].exp == want_e[b]
        np.testing.assert_array_equal(add_beats[b].words, spec.sat(2 * x, 48)[b])
    assert [d[0].tolist() for d in run.down] == spec.sat(2 * x, 48).tolist()


def test_a_flipped_via_bit_fails_at_the_output_projection(synth_model, golden, tmp_path, explain_tile_failure):
    """One via bit of the O weights flipped in the metal: the scoreboard must stop at (0, o), and the
    failure's traces hold both sides."""
    image = metal.generate(synth_model, DIE)
    parts = segments(image.programs["tile00"], synth_model.config)
    wo = next(i for i in image.programs["tile00"] if i.tap == TAP_ID["o"])
    good = image.roms["tile00_weights"]
    words = good.words.copy()
    words[wo.rom, 0] ^= 0x04  # lane 0, code 0, bit 2 of the first O-projection word
    images = {"ucode": RomImage("ucode", UCODE_BITS, UCODE_DEPTH,
                                np.stack([_int_bytes(i.encode(), UCODE_BITS) for i in parts["o"]])),
              "weights": RomImage(good.name, good.width, good.depth, words), "consts": image.roms["tile00_consts"],
              **{name: image.roms[name] for name in TABLES}}
    sim = TileSim(images, DIE, metal.tile_layout(synth_model.config).end, tmp_path)
    run = sim.run(blocks_of(golden.taps[(-1, "embed", 1)]) + blocks_of(golden.taps[(0, "attn", 1)]), 1)
    board = Scoreboard(golden)
    for beat in run.taps:
        board.check(0, 1, beat.op, beat.block, beat.exp, beat.words, beat.cycle)
    first = board.first_mismatch
    assert first is not None and (first.layer, first.op, first.position) == (0, "o", 1)
    assert first.index == 0  # row 0 reads lane 0's slot
    text = explain_tile_failure(golden, run, 0, 1, first)
    assert text.splitlines()[-1].startswith("reproduce: python -m pytest ")
    data = np.load(tmp_path / "failure" / "traces.npz")
    chip, want = data["chip/layer0/o/pos1/mant"], data["golden/layer0/o/pos1/mant"]
    assert chip[0] == first.actual and want[0] == first.expected and chip[0] != want[0]
    assert data["chip/layer0/o/pos1/cycle"][0] == first.cycle


def test_the_harness_cache_holds_what_the_rtl_converts_to(synth_model):
    depth = metal.tile_layout(synth_model.config).end
    top, cached = harness_verilog(DIE, depth, 16)
    assert top == f"tile_hw_tiny_s{depth}" and cached == to_verilog(_elaborator(DIE, depth, 16), top)
