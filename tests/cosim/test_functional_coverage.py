"""Functional coverage: the data model, the buckets, and table inputs that agree with the golden's own lookups."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from hardwire.cosim.functional_coverage import (
    FILL_BUCKETS,
    PAST_FULL,
    SIGMOID_BINS,
    ChainedRunCoverage,
    Coverage,
    fill_bucket,
    merge_files,
)
from hardwire.golden import spec
from hardwire.golden.errors import HardwireError
from hardwire.golden.intref import IntModel, Trace
from hardwire.rtl import chip
from hardwire.rtl.die import get_die

DIE = get_die("hw-tiny")
PROMPT = [3, 257, 42, 11, 7, 7]


class RecordingTable(np.ndarray):
    """A lookup table that remembers every index array the golden reference reads it with."""

    def __getitem__(self, index):
        self.reads.append(np.atleast_1d(np.array(index, copy=True)))  # a scalar lookup reads as one index
        return np.asarray(self)[index]


def recording(table: np.ndarray) -> RecordingTable:
    rec = np.asarray(table).view(RecordingTable)
    rec.reads = []
    return rec


@pytest.fixture(scope="module")
def golden_run(synth_model):
    """The golden run of PROMPT one position at a time (as the chip runs it), its table reads recorded."""
    im = IntModel(synth_model, capacity=len(PROMPT))
    im.rsqrt, im.exp2, im.sigmoid = recording(im.rsqrt), recording(im.exp2), recording(im.sigmoid)
    cache, traces, reads = im.new_cache(), [], []
    for token in PROMPT:
        for table in (im.rsqrt, im.exp2, im.sigmoid):
            table.reads.clear()
        trace = Trace()
        im.forward(np.array([token]), cache, trace)
        traces.append(trace)
        reads.append({name: list(t.reads) for name, t in (("rsqrt", im.rsqrt), ("exp2", im.exp2),
                                                           ("sigmoid", im.sigmoid))})
    return traces, reads


def ok_run():
    return SimpleNamespace(status=chip.STATUS_OK)


def observed(synth_model, traces) -> tuple[Coverage, ChainedRunCoverage]:
    cov = Coverage()
    observer = ChainedRunCoverage(cov, synth_model, DIE)
    for position, trace in enumerate(traces):
        observer(position, ok_run(), trace)
    return cov, observer


def test_rsqrt_index_is_the_one_the_golden_reads(synth_model, golden_run):
    traces, reads = golden_run
    _, observer = observed(synth_model, [])
    n = synth_model.config.n_layers
    for position, (trace, read) in enumerate(zip(traces, reads, strict=True)):
        # the norms run in this order: attn_norm and ffn_norm of each layer, then the final norm
        inputs = [(-1, "embed")] + [(li, op) for li in range(n) for op in ("resid_attn", "resid_ffn")]
        derived = [observer.rsqrt_index(trace.taps[(layer, op, position)][0]) for layer, op in inputs]
        assert derived == [int(r[0]) for r in read["rsqrt"]]


def test_exp2_and_sigmoid_inputs_are_the_ones_the_golden_reads(synth_model, golden_run):
    traces, reads = golden_run
    cfg = synth_model.config
    _, observer = observed(synth_model, [])
    keys = {layer: [] for layer in range(cfg.n_layers)}
    for position, (trace, read) in enumerate(zip(traces, reads, strict=True)):
        for layer in range(cfg.n_layers):
            keys[layer].append(trace.taps[(layer, "k", position)])
            scores, _ = observer.scores(trace.taps[(layer, "q", position)], keys[layer])
            u = -spec.floor_shift((scores - scores.max(axis=-1, keepdims=True)) * spec.LOG2E_Q, -15)
            assert np.array_equal(((u & 0xFFFF) >> 6).reshape(-1), read["exp2"][layer].reshape(-1))
            index = observer.sigmoid_index(layer, trace.taps[(layer, "ffn_norm", position)])
            assert np.array_equal(np.clip(index, 0, spec.SIGMOID_ENTRIES - 1), read["sigmoid"][layer].reshape(-1))


def test_a_verified_run_fills_the_bins_it_should(synth_model, golden_run):
    traces, _ = golden_run
    cfg = synth_model.config
    cov, _ = observed(synth_model, traces)
    positions = len(traces)
    layer_ops = [k for k in cov.bins if k.startswith("op_layer/")]
    assert len(layer_ops) == 1 + 11 * cfg.n_layers + 3 and all(cov.bins[k] == positions for k in layer_ops)
    assert sum(v for k, v in cov.bins.items() if k.startswith("lut_rsqrt/")) == positions * (2 * cfg.n_layers + 1)
    assert sum(v for k, v in cov.bins.items() if k in SIGMOID_BINS) == positions * cfg.n_layers * cfg.d_ffn
    keys_seen = cfg.n_heads * cfg.n_layers * positions * (positions + 1) // 2
    assert sum(v for k, v in cov.bins.items() if k.startswith("lut_exp2/")) == keys_seen
    assert sum(v for k, v in cov.bins.items() if k.startswith("score/")) == keys_seen
    assert cov.bins["exp2_shift/0"] >= cfg.n_heads * cfg.n_layers * positions  # the maximum of each softmax
    assert cov.bins["weight_format/embed/q8_0"] == 1 and cov.bins["weight_format/attn/q4_1"] == 1
    assert cov.bins["lm_head/tied"] == 1 and cov.bins["lm_head/untied"] == 0
    assert cov.bins["status/OK"] == positions and cov.bins["status/KV_OVERFLOW"] == 0
    assert cov.bins["argmax/unique_max"] + cov.bins["argmax/tie"] == positions
    assert cov.bins["position/0"] == 1 and cov.bins["position/(0,25%]"] == positions - 1
    assert "saturation/b16_-32768" in cov.unreachable and "saturation/b16_-32768" not in cov.bins


def test_refused_tokens_count_their_status_and_leave_the_fill(synth_model):
    cov = Coverage()
    observer = ChainedRunCoverage(cov, synth_model, DIE)
    observer(0, SimpleNamespace(status=chip.STATUS_BAD_TOKEN), None)
    observer(DIE.kv_tokens, SimpleNamespace(status=chip.STATUS_KV_OVERFLOW), None)
    assert cov.bins["status/BAD_TOKEN"] == 1 and cov.bins["status/KV_OVERFLOW"] == 1
    assert cov.bins["kv_fill/0"] == 1 and cov.bins["kv_fill/100%"] == 1
    assert cov.bins["position/0"] == 1 and cov.bins["position/100%"] == 1
    assert sum(v for k, v in cov.bins.items() if k.startswith("op_layer/")) == 0


def test_an_argmax_tie_is_seen(synth_model, golden_run):
    traces, _ = golden_run
    n = synth_model.config.n_layers
    trace = Trace(dict(traces[0].taps))
    logits = trace.taps[(n, "logits", 0)][0].copy()
    logits[-1] = logits.max()  # a second maximum
    trace.taps[(n, "logits", 0)] = (logits, None)
    cov = Coverage()
    ChainedRunCoverage(cov, synth_model, DIE)(0, ok_run(), trace)
    assert cov.bins["argmax/tie"] == 1 and cov.bins["argmax/unique_max"] == 0


@pytest.mark.parametrize("count, bucket", [(0, "0"), (1, "(0,25%]"), (32, "(0,25%]"), (33, "(25%,50%]"),
                                           (96, "(50%,75%]"), (97, "(75%,100%)"), (127, "(75%,100%)"),
                                           (128, "100%"), (129, PAST_FULL)])
def test_fill_buckets(count, bucket):
    assert fill_bucket(count, 128) == bucket
    assert bucket in FILL_BUCKETS or bucket == PAST_FULL


def test_merge_adds_hits_and_keeps_every_bin(tmp_path):
    a, b = Coverage({"x/1": 2, "x/2": 0}), Coverage({"x/2": 3, "y/1": 0}, {"z/1": "cannot"})
    a.save(tmp_path / "a.json")
    b.save(tmp_path / "b.json")
    merged = merge_files([tmp_path / "a.json", tmp_path / "b.json"])
    assert merged.bins == {"x/1": 2, "x/2": 3, "y/1": 0} and merged.unreachable == {"z/1": "cannot"}


def test_a_file_that_is_not_coverage_is_refused(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"bins": [1, 2]}')
    with pytest.raises(HardwireError, match="not a functional-coverage file"):
        Coverage.load(bad)
    bad.write_text("{")
    with pytest.raises(HardwireError, match="not valid JSON"):
        Coverage.load(bad)
