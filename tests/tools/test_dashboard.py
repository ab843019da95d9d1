"""The regression dashboard: failure signatures and groups, escaping, history, coverage merge, the command."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import synthetic_run as synth

from hardwire.cosim.functional_coverage import Coverage
from hardwire.dashboard import render, trend_svg
from hardwire.regression_plugin import merge_run_dir
from hardwire.run_results import (
    HISTORY_FILE,
    CaseResult,
    append_history,
    coverage_groups,
    failure_signature,
    group_failures,
    load_run,
    read_history,
)


@pytest.fixture
def run_dir(tmp_path):
    return synth.make_run_dir(tmp_path / "run")


def hardwire(*args):
    return subprocess.run([sys.executable, "-m", "hardwire.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def one_line_error(result, pattern: str) -> bool:
    lines = result.stderr.strip().splitlines()
    return (result.returncode == 2 and len(lines) == 1 and lines[0].startswith("hardwire: error: ")
            and pattern in lines[0] and "Traceback" not in result.stderr)


# --- signatures and groups -------------------------------------------------------------------------

def test_mismatches_that_differ_only_in_numbers_share_a_signature():
    a, b = failure_signature(synth.MISMATCH_A), failure_signature(synth.MISMATCH_B)
    assert a == b == "AssertionError: (layer N, op q, position N): element N expected N, got N at cycle N"
    assert failure_signature(synth.MISMATCH_A.replace("op q", "op k")) != a  # another op is another cause


def test_paths_and_addresses_leave_the_signature():
    sig = failure_signature("OSError: cannot open /home/u/.cache/hardwire/builds/ab12/lib.so at 0x7f3a9c\nmore")
    assert sig == "OSError: cannot open <path> at <addr>"
    assert failure_signature("\n\n  \n") == "(no message)"


def test_failures_group_by_signature_with_their_seeds_and_reproductions(run_dir):
    groups = group_failures(load_run(run_dir).tests)
    assert [len(g.tests) for g in groups] == [2, 1]
    mismatch, other = groups
    assert mismatch.seeds == ["4", "5"] and mismatch.reproductions == [synth.REPRODUCE_A]
    assert other.seeds == ["77"] and other.reproductions == [synth.REPRODUCE_OTHER]  # from the failure text
    assert all(t.status == "error" for t in other.tests)


def test_every_reproduce_line_of_a_failure_counts_even_behind_pytests_prefix():
    text = ("E   AssertionError: (layer 1, op q, position 0): element 5 expected 12, got 13 at cycle 123\n"
            "E     reproduce: hardwire run --model m.gguf --die hw-tiny --prompt-ids 3,257 --tokens 6\n"
            "E     reproduce: python -m pytest 'tests/a.py::test_b[x]' -n 0\n")
    test = CaseResult("tests.a", "test_b[x]", "failed", message=synth.MISMATCH_A, text=text,
                      properties=[("reproduce", "python -m pytest 'tests/a.py::test_b[x]' -n 0")])
    assert test.reproductions == ["python -m pytest 'tests/a.py::test_b[x]' -n 0",
                                  "hardwire run --model m.gguf --die hw-tiny --prompt-ids 3,257 --tokens 6"]
    assert CaseResult("t", "n", "failed", text="no such line here; reproduce: not at a line start").reproductions == []


# --- the page --------------------------------------------------------------------------------------

def test_the_page_escapes_names_and_messages(run_dir):
    cases = [*synth.CASES, ("tests.x", "test_y", "failure", 'ValueError: <img src=x onerror="alert(1)">', "", [])]
    synth.write_junit(run_dir / "junit.xml", cases)
    page = render(load_run(run_dir))
    assert "<script" not in page and "<img" not in page  # the page carries no script and no markup from logs
    assert "test_names[&lt;script&gt;document.body.setAttribute(&#x27;data-pwned&#x27;,&#x27;1&#x27;)" in page
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in page


def test_the_page_shows_groups_coverage_and_figures(run_dir):
    page = render(load_run(run_dir))
    assert re.findall(r'class="failure-group" data-count="(\d+)"', page) == ["2", "1"]
    assert page.count('class="test"') == len(synth.CASES)
    assert 'data-group="op_layer"' in page and "<code>status/KV_OVERFLOW</code>" in page  # a hole, listed
    assert "rq clamps mantissas to +-32767" in page  # the unreachable bin's reason
    assert "tile.v:120 &lt;kv_wrap&gt;" in page and "<td>115</td>" in page  # code coverage; cycles per token
    assert "<code>rope_unit0</code>, 7 lines: no ROPE in hw_head&#x27;s microcode" in page  # a waiver, with its reason
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in page


def test_missing_code_coverage_and_perf_say_not_collected(tmp_path):
    run = synth.make_run_dir(tmp_path / "run", code_coverage=False)
    (run / "perf.json").unlink()
    page = render(load_run(run))
    for section in ("code-coverage", "performance"):
        body = page.split(f'id="{section}"', 1)[1].split("</section>", 1)[0]
        assert "not collected" in body


def test_a_hit_on_an_unreachable_bin_is_a_finding():
    cov = Coverage({"saturation/b16_max": 2, "saturation/b16_-32768": 1}, {"saturation/b16_-32768": "symmetric"})
    (group,) = coverage_groups(cov)
    assert group.bins == {"saturation/b16_max": 2} and group.unexpected == {"saturation/b16_-32768": 1}


def test_the_trend_has_a_line_per_series_with_two_runs_or_more():
    svg = trend_svg(synth.HISTORY)
    assert svg.count("<polyline") == 2  # pass rate and functional coverage; code coverage has one point
    assert svg.count("<circle") == 2 + 2 + 1
    assert 'data-series="pass rate"' in svg and "points=" in svg
    assert "<polyline" not in trend_svg(synth.HISTORY[:1])


# --- history and the merge -------------------------------------------------------------------------

def test_history_gets_one_record_per_run(run_dir):
    assert append_history(load_run(run_dir)) is True
    assert append_history(load_run(run_dir)) is False  # the same run reported twice
    synth.write_junit(run_dir / "junit.xml", synth.CASES[:4], timestamp="2026-11-04T02:00:00")
    assert append_history(load_run(run_dir)) is True
    records = read_history(run_dir / HISTORY_FILE)
    assert [r["run"] for r in records[:2]] == ["r1", "r2"] and len(records) == 4
    assert records[2]["failed"] == 2 and records[2]["error"] == 1 and records[2]["failure_groups"] == 2
    assert records[3]["tests"] == 4 and records[3]["timestamp"] == "2026-11-04T02:00:00"


def test_two_worker_files_merge(tmp_path):
    run = tmp_path / "run"
    synth.write_worker_files(run)
    merge_run_dir(run)
    merged = json.loads((run / "functional_coverage.json").read_text())
    assert merged["bins"] == {"op_layer/L0/q": 5, "op_layer/L1/q": 1, "status/OK": 10, "status/KV_OVERFLOW": 0,
                              "lut_sigmoid/gate<-16 (clamped)": 0}
    assert merged["unreachable"] == [{"bin": "saturation/b16_-32768", "reason": synth.UNREACHABLE[
        "saturation/b16_-32768"]}]
    perf = json.loads((run / "perf.json").read_text())["figures"]["hw-tiny"]
    assert perf == {"tokens": 4, "cycles_per_token": 115, "sim_s_per_token": 0.65, "build_s": 45.0}


# --- the command -----------------------------------------------------------------------------------

def test_report_writes_the_page_and_appends_history(run_dir):
    result = hardwire("report", "--run-dir", run_dir, "--append-history", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["failure_groups"] == 2 and data["history_appended"] is True and data["history_runs"] == 3
    assert (run_dir / "dashboard" / "index.html").read_text().startswith("<!DOCTYPE html>")
    out = run_dir / "elsewhere" / "report.html"
    checked = hardwire("report", "--run-dir", run_dir, "--out", out, "--check", "--append-history")
    assert checked.returncode == 1 and out.is_file()  # failing tests fail the check, after the page is written
    assert len(read_history(run_dir / HISTORY_FILE)) == 3


@pytest.mark.parametrize("break_it, message", [
    (lambda d: (d / "junit.xml").unlink(), "junit.xml is missing"),
    (lambda d: (d / "junit.xml").write_text("<testsuites><testcase"), "is not valid JUnit XML"),
    (lambda d: (d / "junit.xml").write_text("<html/>"), "is not JUnit XML"),
    (lambda d: (d / "functional_coverage.json").write_text("{"), "is not valid JSON"),
    (lambda d: (d / "code_coverage.json").write_text('{"blocks": {"hw_tile": {"lines_hit": "x"}}}'),
     "is not a code-coverage file"),
    (lambda d: (d / "perf.json").write_text("[]"), "is not a performance file"),
    (lambda d: (d / "history.jsonl").write_text('{"run": 1}\nnot json\n'), "line 2 is not a JSON record"),
])
def test_bad_run_directories_get_one_line_errors(run_dir, break_it, message):
    break_it(run_dir)
    result = hardwire("report", "--run-dir", run_dir)
    assert one_line_error(result, message), result.stderr


def test_a_missing_run_directory_is_one_line(tmp_path):
    assert one_line_error(hardwire("report", "--run-dir", tmp_path / "nope"), "does not exist")
