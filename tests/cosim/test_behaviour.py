"""The behaviour fingerprint notices any change in a run: a word, an exponent, a cycle, a token, a beat more."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from hardwire.cosim.behaviour import Fingerprint
from hardwire.cosim.chip_sim import Beat, TokenRun


def run_of(beats: list[Beat], token: int = 7, cycles: int = 100) -> TokenRun:
    return TokenRun(status=0, token=token, cycles=cycles, wall_s=0.0, beats=beats)


def beats() -> list[Beat]:
    return [Beat(unit=u, op=3, block=b, exp=-2, words=np.arange(32, dtype=np.int64) * (b + 1), cycle=10 * b + u)
            for u in range(2) for b in range(3)]


def fingerprint(run: TokenRun) -> Fingerprint:
    fp = Fingerprint("case", "die")
    fp.observe(0, run, None)
    return fp


def test_the_same_run_has_no_differences(tmp_path):
    recorded = fingerprint(run_of(beats()))
    recorded.save(tmp_path / "fp.json")
    assert fingerprint(run_of(beats())).differences(Fingerprint.load(tmp_path / "fp.json")) == []


@pytest.mark.parametrize("change, field", [
    (lambda bs: bs[4].words.__setitem__(31, bs[4].words[31] ^ 1), "beat_sha256"),
    (lambda bs: bs.__setitem__(2, dataclasses.replace(bs[2], exp=-3)), "beat_sha256"),
    (lambda bs: bs.__setitem__(5, dataclasses.replace(bs[5], cycle=bs[5].cycle + 1)), "beat_sha256"),
    (lambda bs: bs.__setitem__(0, dataclasses.replace(bs[0], unit=1)), "beat_sha256"),
    (lambda bs: bs.append(bs[0]), "beats"),
])
def test_a_changed_beat_is_a_difference(change, field):
    changed = beats()
    change(changed)
    diffs = fingerprint(run_of(changed)).differences(fingerprint(run_of(beats())))
    assert any(field in d for d in diffs), diffs


def test_a_changed_token_or_cycle_count_is_a_difference():
    recorded = fingerprint(run_of(beats()))
    assert "token 8" in fingerprint(run_of(beats(), token=8)).differences(recorded)[0]
    assert "cycles 101" in fingerprint(run_of(beats(), cycles=101)).differences(recorded)[0]
    assert fingerprint(run_of(beats())).differences(Fingerprint("case", "die")) != []
