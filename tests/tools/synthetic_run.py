"""A small regression run directory made up for the dashboard's tests: what pytest and the plugin would write."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from hardwire.cosim.functional_coverage import Coverage
from hardwire.regression_plugin import WORKERS_DIR, RunRecord, merge_run_dir

SCRIPT_NAME = "test_names[<script>document.body.setAttribute('data-pwned','1')</script>]"
MISMATCH_A = "AssertionError: (layer 1, op q, position 0): element 5 expected 12, got 13 at cycle 123"
MISMATCH_B = "AssertionError: (layer 1, op q, position 3): element 17 expected -4, got 9 at cycle 98765"
OTHER = "HardwireError: via map /tmp/pytest-of-ci/pytest-7/m0/tile01_weights.vmap is 12 x 0x40 bits"
REPRODUCE_A = "pytest 'tests/cosim/test_chip.py::test_generation_is_bit_exact[q4_1-gqa2-v301]'"
REPRODUCE_OTHER = "pytest 'tests/cosim/test_chip.py::test_a_flipped_via_bit_fails_at_its_layer_and_op[x]'"
# (classname, name, status, message, text, properties)
CASES = [
    ("tests.cosim.test_chip", "test_generation_is_bit_exact[q4_1-gqa2-v301]", "failure", MISMATCH_A,
     "model = ...\n>   assert gen.mismatch is None", [("seed", "4"), ("reproduce", REPRODUCE_A)]),
    ("tests.cosim.test_chip", "test_generation_is_bit_exact[q8_0-mha-v259]", "failure", MISMATCH_B,
     "assert gen.mismatch is None", [("seed", "5")]),
    ("tests.cosim.test_chip", "test_a_flipped_via_bit_fails_at_its_layer_and_op[x]", "error", OTHER,
     f"setup failed\nseed: 77\nreproduce: {REPRODUCE_OTHER}\n", []),
    ("tests.golden.test_spec_ops", "test_rq_rounds_half_up", "passed", "", "", []),
    ("tests.golden.test_spec_ops", "test_sat_clamps", "passed", "", "", []),
    ("tests.tools.test_dashboard", SCRIPT_NAME, "passed", "", "", []),
    ("tests.cosim.test_tile_smollm2", "test_layer_on_the_tile[3]", "skipped", "nightly only", "", []),
]
WORKER_BINS = {
    "gw0": {"op_layer/L0/q": 3, "op_layer/L1/q": 0, "status/OK": 4, "status/KV_OVERFLOW": 0},
    "gw1": {"op_layer/L0/q": 2, "op_layer/L1/q": 1, "status/OK": 6, "lut_sigmoid/gate<-16 (clamped)": 0},
}
UNREACHABLE = {"saturation/b16_-32768": "rq clamps mantissas to +-32767"}
HISTORY = [
    {"run": "r1", "timestamp": "2026-11-01T02:00:00", "tests": 7, "passed": 7, "failed": 0, "error": 0,
     "skipped": 0, "functional_coverage": 40.0, "code_coverage": None},
    {"run": "r2", "timestamp": "2026-11-02T02:00:00", "tests": 7, "passed": 5, "failed": 2, "error": 0,
     "skipped": 0, "functional_coverage": 55.0, "code_coverage": 61.5},
]
CODE_COVERAGE = {"format": 1, "blocks": {
    "hw_tile": {"lines_hit": 90, "lines_total": 100, "toggles_hit": 700, "toggles_total": 1000,
                "uncovered": ["tile.v:120 <kv_wrap>", "tile.v:233"]},
    "hw_head": {"lines_hit": 50, "lines_total": 50, "uncovered": [], "lines_waived": 7,
                "waived": [{"unit": "rope_unit0", "lines": 7, "reason": "no ROPE in hw_head's microcode"}]}}}


def write_junit(path: Path, cases=CASES, timestamp: str = "2026-11-03T02:00:00") -> None:
    failures = sum(c[2] == "failure" for c in cases)
    errors = sum(c[2] == "error" for c in cases)
    skipped = sum(c[2] == "skipped" for c in cases)
    root = ET.Element("testsuites")
    suite = ET.SubElement(root, "testsuite", name="pytest", errors=str(errors), failures=str(failures),
                          skipped=str(skipped), tests=str(len(cases)), time="12.5", timestamp=timestamp,
                          hostname="ci-host")
    for classname, name, status, message, text, props in cases:
        case = ET.SubElement(suite, "testcase", classname=classname, name=name, time="0.25")
        if props:
            properties = ET.SubElement(case, "properties")
            for key, value in props:
                ET.SubElement(properties, "property", name=key, value=value)
        if status != "passed":
            ET.SubElement(case, status, message=message).text = text
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def write_worker_files(run_dir: Path) -> None:
    for worker, bins in WORKER_BINS.items():
        record = RunRecord(Coverage(dict(bins), dict(UNREACHABLE)),
                           {"hw-tiny": {"cycles": [100, 120, 110] if worker == "gw0" else [130],
                                        "sim_s": [0.5, 0.7, 0.6] if worker == "gw0" else [0.9],
                                        "build_s": [3.0] if worker == "gw0" else [45.0]}})
        record.write(run_dir / WORKERS_DIR / worker)


def make_run_dir(run_dir: Path, code_coverage: bool = True) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    write_junit(run_dir / "junit.xml")
    write_worker_files(run_dir)
    merge_run_dir(run_dir)
    (run_dir / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in HISTORY))
    if code_coverage:
        (run_dir / "code_coverage.json").write_text(json.dumps(CODE_COVERAGE))
    return run_dir
