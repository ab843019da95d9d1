"""Functional coverage of chained runs: which situations the verified chip has been through.

The data model is small on purpose: a bin is a name and a hit count, and a list of bins is
declared unreachable, each with the reason the spec rules it out. A bin's name is
"<group>/<what>" ("op_layer/L1/q", "lut_sigmoid/gate[-4,0)"); the group is the block the
dashboard reports it under. Bins are declared before a run starts, with 0 hits, so that a
hole shows; a hit on an unreachable bin is a finding, not a number to add up.

Everything is derived from what a chained run already has (cosim/generation.py): the chip's
TokenRun and the golden Trace of each verified position. The table inputs are not tapped,
so they are recomputed from the taps that feed them, with the formulas of docs/numerics.md:
    rsqrt    from the norm's input residual (section 5)
    exp2     from the q tap and the k taps of every earlier position (section 7)
    sigmoid  from the ffn_norm tap through the layer's gate weights (section 8)
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as QT

from hardwire.golden import spec
from hardwire.golden.errors import HardwireError
from hardwire.golden.gguf_model import Model
from hardwire.golden.intref import Trace, linear
from hardwire.golden.kquants import DECODABLE, BlockFields
from hardwire.golden.spec import ACC_BITS, ACC_FRAC, ACT_MAX, BLOCK, blocks, floor_shift, rq, sat
from hardwire.rtl import chip
from hardwire.rtl.die import Die
from hardwire.rtl.isa import TAP_NAME

FORMAT = 1
STATUS_NAMES = {chip.STATUS_OK: "OK", chip.STATUS_BAD_TOKEN: "BAD_TOKEN", chip.STATUS_KV_OVERFLOW: "KV_OVERFLOW"}
FILL_BUCKETS = ("0", "(0,25%]", "(25%,50%]", "(50%,75%]", "(75%,100%)", "100%")
PAST_FULL = ">100%"  # the chip must refuse first: declared unreachable, so a hit is a finding
HEAD_OPS = ("final_norm", "logits", "argmax")
LAYER_OPS = tuple(op for op in TAP_NAME.values() if op not in HEAD_OPS and op != "embed")
ACC_OPS = frozenset({"embed", "o", "resid_attn", "down", "resid_ffn", "logits"})
B16_OPS = frozenset({"attn_norm", "q", "k", "v", "attn", "ffn_norm", "ffn_act", "final_norm"})
QUANT_NAMES = {qtype: qtype.name.lower() for qtype in DECODABLE}
# the raw fields of the formats with sub-block scales or a fifth code bit, as the lanes read them
# (numerics 2.1): each scale and min at the end of its range that ggml's quantizers give the largest
# sub-block, 0 where the quantizer writes it (an all-zero block), both signs of the signed scales, and
# the Q5 high-bit plane set and clear; bin -> the fields of a BlockFields tensor that hit it
FIELD_BINS = {
    QT.Q5_0: {"high bit set": lambda f: f.q >= 0, "high bit clear": lambda f: f.q < 0},
    QT.Q5_1: {"high bit set": lambda f: f.q >= 16, "high bit clear": lambda f: f.q < 16},
    QT.Q2_K: {"scale 15 (top)": lambda f: f.sc == 15, "scale 0": lambda f: f.sc == 0,
              "min 15 (top)": lambda f: f.mn == 15, "min 0": lambda f: f.mn == 0},
    QT.Q3_K: {"scale -32 (bottom)": lambda f: f.sc == -32, "scale negative": lambda f: f.sc < 0,
              "scale positive": lambda f: f.sc > 0},
    QT.Q4_K: {"scale 63 (top)": lambda f: f.sc == 63, "scale 0": lambda f: f.sc == 0,
              "min 63 (top)": lambda f: f.mn == 63, "min 0": lambda f: f.mn == 0},
    QT.Q5_K: {"scale 63 (top)": lambda f: f.sc == 63, "min 63 (top)": lambda f: f.mn == 63,
              "high bit set": lambda f: f.q >= 16, "high bit clear": lambda f: f.q < 16},
    QT.Q6_K: {"scale -128 (bottom)": lambda f: f.sc == -128, "scale negative": lambda f: f.sc < 0,
              "scale positive": lambda f: f.sc > 0, "scale 0": lambda f: f.sc == 0},
}
TENSOR_CLASSES = ("embed", "attn", "ffn", "lm_head")
ACC_LIMITS = (-(1 << (ACC_BITS - 1)), (1 << (ACC_BITS - 1)) - 1)
SCORE_LIMITS = (-(1 << (spec.SCORE_BITS - 1)), (1 << (spec.SCORE_BITS - 1)) - 1)
# scaled scores (LSB 2**-16) by magnitude: (label, bit length of |s| up to which it applies)
SCORE_BUCKETS = (("0", 0), ("(0,2^-8)", 8), ("[2^-8,2^-4)", 12), ("[2^-4,1)", 16), ("[1,2^4)", 20),
                 ("[2^4,2^8)", 24), ("[2^8,2^12)", 28), (">=2^12", 64))
EXP2_SHIFT_BUCKETS = (("0", 0), ("1", 1), ("2-3", 3), ("4-7", 7), ("8-16", 16), (">=17 (weight 0)", 1 << 62))
RSQRT_SLICE, EXP2_SLICE, SIGMOID_SLICE = 256, 128, 1024  # table entries per bin
RSQRT_ENTRIES = 1536


@dataclass
class Coverage:
    """bin name -> hits, plus the bins declared unreachable (name -> reason)."""

    bins: dict[str, int] = field(default_factory=dict)
    unreachable: dict[str, str] = field(default_factory=dict)

    def declare(self, names: Iterable[str]) -> None:
        for name in names:
            self.bins.setdefault(name, 0)

    def hit(self, name: str, count: int = 1) -> None:
        self.bins[name] = self.bins.get(name, 0) + int(count)

    def declare_unreachable(self, name: str, reason: str) -> None:
        self.unreachable.setdefault(name, reason)

    def merge(self, other: Coverage) -> None:
        for name, count in other.bins.items():
            self.hit(name, count)
        for name, reason in other.unreachable.items():
            self.declare_unreachable(name, reason)

    def to_json(self) -> dict:
        return {"format": FORMAT, "bins": dict(self.bins),
                "unreachable": [{"bin": name, "reason": why} for name, why in self.unreachable.items()]}

    @classmethod
    def from_json(cls, data, source: str = "coverage") -> Coverage:
        try:
            bins = {str(k): int(v) for k, v in data["bins"].items()}
            unreachable = {str(u["bin"]): str(u["reason"]) for u in data.get("unreachable", [])}
        except (KeyError, TypeError, ValueError, AttributeError):
            raise HardwireError(f"{source} is not a functional-coverage file (bins and unreachable)") from None
        return cls(bins, unreachable)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> Coverage:
        try:
            return cls.from_json(json.loads(Path(path).read_text()), str(path))
        except json.JSONDecodeError as exc:
            raise HardwireError(f"{path} is not valid JSON ({exc.msg}, line {exc.lineno})") from None


def merge_files(paths: Iterable[Path]) -> Coverage:
    merged = Coverage()
    for path in paths:
        merged.merge(Coverage.load(path))
    return merged


def group_of(name: str) -> str:
    return name.split("/", 1)[0]


def fill_bucket(count: int, capacity: int) -> str:
    """One of FILL_BUCKETS for `count` of `capacity`: exactly empty and exactly full are bins of their own."""
    if count <= 0:
        return FILL_BUCKETS[0]
    if count > capacity:
        return PAST_FULL
    if count == capacity:
        return FILL_BUCKETS[-1]
    quarter = min(-(-4 * count // capacity), 4)  # ceil(4 * count / capacity), 1..4
    return FILL_BUCKETS[quarter]


def _bucket(value: int, buckets) -> str:
    return next(label for label, upper in buckets if value <= upper)


def _slices(group: str, entries: int, per_bin: int) -> list[str]:
    return [f"{group}/[{lo},{lo + per_bin})" for lo in range(0, entries, per_bin)]


def _sigmoid_bins() -> list[str]:
    units = SIGMOID_SLICE >> spec.SIGMOID_GRID_FRAC  # gate units per bin
    lowest = -(spec.SIGMOID_ENTRIES // 2 >> spec.SIGMOID_GRID_FRAC)
    inner = [f"lut_sigmoid/gate[{g},{g + units})" for g in range(lowest, -lowest, units)]
    return [f"lut_sigmoid/gate<{lowest} (clamped)", *inner, f"lut_sigmoid/gate>={-lowest} (clamped)"]


SIGMOID_BINS = _sigmoid_bins()


class ChainedRunCoverage:
    """Collects bins from one model's chained run on one die; call it as generate()'s observer.

    `observe(position, run, trace)`: `run` is the chip's TokenRun, `trace` the golden trace of
    that position once verified, or None when the chip refused the token (its status says why).
    """

    def __init__(self, coverage: Coverage, model: Model, die: Die):
        self.coverage, self.model, self.die = coverage, model, die
        self.cfg = model.config
        self.keys: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}  # layer -> k taps by position
        self.gates: dict = {}  # layer -> gate weights, built on first use
        self.eps_q = spec.eps_q(self.cfg.d_model, self.cfg.rms_eps)
        self.formats_seen = False
        self._declare()

    def __call__(self, position: int, run, trace: Trace | None) -> None:
        cov = self.coverage
        cov.hit(f"status/{STATUS_NAMES.get(run.status, run.status)}")
        cov.hit(f"position/{fill_bucket(position, self.die.kv_tokens)}")
        if trace is None:  # refused: nothing ran and the KV cache was not written
            cov.hit(f"kv_fill/{fill_bucket(position, self.die.kv_tokens)}")
            return
        cov.hit(f"kv_fill/{fill_bucket(position + 1, self.die.kv_tokens)}")
        if not self.formats_seen:
            self._hit_formats()
        self._hit_taps(trace, position)
        self._hit_rsqrt(trace, position)
        self._hit_softmax(trace, position)
        self._hit_sigmoid(trace, position)

    # --- declarations ---------------------------------------------------------------------------

    def _declare(self) -> None:
        cov, n = self.coverage, self.cfg.n_layers
        cov.declare(["op_layer/L-1/embed"] + [f"op_layer/L{layer}/{op}" for layer in range(n) for op in LAYER_OPS]
                    + [f"op_layer/L{n}/{op}" for op in HEAD_OPS])
        cov.declare(f"weight_format/{cls}/{fmt}" for cls in TENSOR_CLASSES for fmt in QUANT_NAMES.values())
        cov.declare(f"format_fields/{QUANT_NAMES[qtype]}/{name}" for qtype, bins in FIELD_BINS.items() for name in bins)
        cov.declare(("lm_head/tied", "lm_head/untied"))
        cov.declare(f"position/{b}" for b in FILL_BUCKETS)
        cov.declare(f"kv_fill/{b}" for b in FILL_BUCKETS)
        cov.declare(f"score/{label}" for label, _ in SCORE_BUCKETS)
        cov.declare(f"exp2_shift/{label}" for label, _ in EXP2_SHIFT_BUCKETS)
        cov.declare(_slices("lut_exp2", 1 << spec.EXP2_LUT_BITS, EXP2_SLICE))
        cov.declare(_slices("lut_rsqrt", RSQRT_ENTRIES, RSQRT_SLICE))
        cov.declare(SIGMOID_BINS)
        cov.declare(f"saturation/{kind}_{end}" for kind in ("acc", "b16", "score") for end in ("min", "max"))
        cov.declare(("argmax/unique_max", "argmax/tie"))
        cov.declare(f"status/{name}" for name in STATUS_NAMES.values())
        cov.declare_unreachable("saturation/b16_-32768",
                                "rq clamps mantissas to +-32767, so B16 is symmetric (docs/numerics.md 1.1)")
        for group in ("position", "kv_fill"):
            cov.declare_unreachable(f"{group}/{PAST_FULL}",
                                    "a position past the KV SRAM is refused with KV_OVERFLOW (docs/numerics.md 11)")
        cov.declare_unreachable(f"status/{(1 << chip.STATUS_BITS) - 1}",
                                "the 2-bit status code 3 is not defined (docs/numerics.md 11)")

    # --- what the model brings -----------------------------------------------------------------

    def _hit_formats(self) -> None:
        m = self.model
        classes = {"embed": [m.embed], "lm_head": [m.lm_head],
                   "attn": [t for lw in m.layers for t in (lw.wq, lw.wk, lw.wv, lw.wo)],
                   "ffn": [t for lw in m.layers for t in (lw.w_gate, lw.w_up, lw.w_down)]}
        for cls, tensors in classes.items():
            for fmt in sorted({QUANT_NAMES[t.qtype] for t in tensors}):
                self.coverage.hit(f"weight_format/{cls}/{fmt}")
        self.coverage.hit("lm_head/tied" if m.lm_head is m.embed else "lm_head/untied")
        # every row of these is read for every token (the embedding's only for the tokens looked up)
        for t in classes["attn"] + classes["ffn"] + classes["lm_head"]:
            if isinstance(t, BlockFields):
                for name, test in FIELD_BINS.get(t.qtype, {}).items():
                    self._hit_if(f"format_fields/{QUANT_NAMES[t.qtype]}/{name}", np.count_nonzero(test(t)))
        self.formats_seen = True

    # --- what the taps show --------------------------------------------------------------------

    def _hit_taps(self, trace: Trace, position: int) -> None:
        cov = self.coverage
        for (layer, op, pos), (mant, _) in trace.taps.items():
            if pos != position:
                continue
            cov.hit(f"op_layer/L{layer}/{op}")
            self._hit_saturation(op, mant)
        logits = trace.taps[(self.cfg.n_layers, "logits", position)][0]
        cov.hit("argmax/tie" if np.count_nonzero(logits == logits.max()) > 1 else "argmax/unique_max")

    def _hit_saturation(self, op: str, words: np.ndarray) -> None:
        if op in ACC_OPS:
            lo, hi, kind = *ACC_LIMITS, "acc"
        elif op in B16_OPS:
            lo, hi, kind = -ACT_MAX, ACT_MAX, "b16"
            self._hit_if("saturation/b16_-32768", np.count_nonzero(words == -ACT_MAX - 1))
        else:
            return
        self._hit_if(f"saturation/{kind}_min", np.count_nonzero(words == lo))
        self._hit_if(f"saturation/{kind}_max", np.count_nonzero(words == hi))

    def _hit_if(self, name: str, count: int) -> None:
        if count:
            self.coverage.hit(name, count)

    # --- table inputs, recomputed from the taps that feed them ----------------------------------

    def _hit_rsqrt(self, trace: Trace, position: int) -> None:
        """Section 5 step 4's table index, for each norm of this position."""
        n = self.cfg.n_layers
        inputs = [(-1, "embed") if layer == 0 else (layer - 1, "resid_ffn") for layer in range(n)]
        inputs += [(layer, "resid_attn") for layer in range(n)] + [(n - 1, "resid_ffn")]
        indices = [self.rsqrt_index(trace.taps[(layer, op, position)][0]) for layer, op in inputs]
        self._hit_slices("lut_rsqrt", np.array(indices), RSQRT_SLICE)

    def rsqrt_index(self, x: np.ndarray) -> int:
        x16, ex = rq(blocks(x), -ACC_FRAC, 16)
        top = int(ex.max())
        ss = int(floor_shift((x16 * x16).sum(axis=-1), 2 * (ex - top)).sum())
        ss = max(ss + int(floor_shift(self.eps_q, -(spec.RMS_EPS_FRAC + 2 * top))), 1)
        j = -((32 - ss.bit_length()) // 2)
        t = int(floor_shift(ss, -2 * j))
        return (t >> 21) - 512

    def _hit_softmax(self, trace: Trace, position: int) -> None:
        """Section 7 steps 1-2 for every head of every layer: the score and the exp2 table input."""
        for layer in range(self.cfg.n_layers):
            # a new sequence starts again at position 0: keep only the keys of this one
            keys = self.keys[layer] = self.keys.get(layer, [])[:position] + [trace.taps[(layer, "k", position)]]
            scores, raw = self.scores(trace.taps[(layer, "q", position)], keys)
            self._hit_scores(scores, raw)
            u = -floor_shift((scores - scores.max(axis=-1, keepdims=True)) * spec.LOG2E_Q, -15)
            self._hit_histogram("exp2_shift", u >> 16, EXP2_SHIFT_BUCKETS)
            self._hit_slices("lut_exp2", (u & 0xFFFF) >> 6, EXP2_SLICE)

    def scores(self, q_tap, k_taps) -> tuple[np.ndarray, np.ndarray]:
        """(scaled scores, saturated raw scores), each (heads, positions), of one query position."""
        cfg = self.cfg
        nbh = cfg.head_dim // BLOCK
        qm, qe = q_tap[0].reshape(cfg.n_heads, nbh, BLOCK), q_tap[1].reshape(cfg.n_heads, nbh)
        kv_of_head = np.arange(cfg.n_heads) // cfg.group
        km = np.stack([k[0] for k in k_taps]).reshape(len(k_taps), cfg.n_kv_heads, nbh, BLOCK)[:, kv_of_head]
        ke = np.stack([k[1] for k in k_taps]).reshape(len(k_taps), cfg.n_kv_heads, nbh)[:, kv_of_head]
        dots = np.einsum("hbj,shbj->hsb", qm, km)  # < 2**35: exact in int64
        shift = qe[:, None, :] + ke.transpose(1, 0, 2) + spec.SCORE_FRAC
        raw = sat(spec.sat_shift(dots, shift, spec.SCORE_BITS).sum(axis=-1), spec.SCORE_BITS)
        return floor_shift(raw * spec.attn_scale(cfg.head_dim), -15), raw

    def _hit_scores(self, scores: np.ndarray, raw: np.ndarray) -> None:
        self._hit_histogram("score", spec.bitlen(np.abs(scores)), SCORE_BUCKETS)
        self._hit_if("saturation/score_min", np.count_nonzero(raw == SCORE_LIMITS[0]))
        self._hit_if("saturation/score_max", np.count_nonzero(raw == SCORE_LIMITS[1]))

    def _hit_histogram(self, group: str, values: np.ndarray, buckets) -> None:
        for value, count in zip(*np.unique(values, return_counts=True), strict=True):
            self.coverage.hit(f"{group}/{_bucket(int(value), buckets)}", int(count))

    def _hit_slices(self, group: str, index: np.ndarray, per_bin: int) -> None:
        for lo, count in zip(*np.unique(index // per_bin * per_bin, return_counts=True), strict=True):
            self.coverage.hit(f"{group}/[{lo},{lo + per_bin})", int(count))

    def _hit_sigmoid(self, trace: Trace, position: int) -> None:
        """Section 8 step 2's table index, before its clamp, for every gate element."""
        for layer in range(self.cfg.n_layers):
            index = self.sigmoid_index(layer, trace.taps[(layer, "ffn_norm", position)])
            # below the table everything lands in bin 0, beyond it in the last: the clamped ones
            slot = np.clip(index // SIGMOID_SLICE + 1, 0, len(SIGMOID_BINS) - 1)
            for s, count in zip(*np.unique(slot, return_counts=True), strict=True):
                self.coverage.hit(SIGMOID_BINS[s], int(count))

    def sigmoid_index(self, layer: int, ffn_norm_tap) -> np.ndarray:
        if layer not in self.gates:
            self.gates[layer] = linear(self.model.layers[layer].w_gate)
        h, he = ffn_norm_tap
        gate = self.gates[layer].matmul(h[None], he[None])[0]
        g16, eg = rq(blocks(gate), -ACC_FRAC, 16)
        return (floor_shift(g16, eg[:, None] + spec.SIGMOID_GRID_FRAC) + spec.SIGMOID_ENTRIES // 2).reshape(-1)
