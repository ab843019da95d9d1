"""A coverage run frees the models of its coverage builds as it goes: their counts written, their database emptied."""

from __future__ import annotations

from hardwire.code_coverage import read_points
from hardwire.cosim import verilator_build
from hardwire.cosim.verilator_build import RELEASE_AFTER, build, release_coverage_models, write_coverage_files

COUNTER = """\
module cov_counter(input clk, input rst, output reg [3:0] count);
always @(posedge clk) begin
    if (rst) count <= 0;
    else if (count != 4'd15) count <= count + 1;
end
endmodule
"""


def counters(n: int) -> list:
    sims = [build({"cov_counter.v": COUNTER}, "cov_counter", coverage=True) for _ in range(n)]
    for sim in sims:
        sim.run(3)
    return sims


def line_hits(path) -> int:
    return sum(count for key, count in read_points(path).items() if b"v_line" in key)


def test_models_are_written_and_freed_once_nothing_holds_them(tmp_path, monkeypatch):
    monkeypatch.setattr(verilator_build, "_COVERAGE_MODELS", {})  # this test's models alone
    sims = counters(RELEASE_AFTER)
    assert release_coverage_models(tmp_path / "held") == []  # this test still holds them
    one = line_hits(write_coverage_files(tmp_path / "one")[0]) // RELEASE_AFTER  # the write zeroes the counts
    for sim in sims:
        sim.run(3)
    del sims, sim
    [released] = release_coverage_models(tmp_path / "released")
    assert one > 0 and line_hits(released) == one * RELEASE_AFTER
    assert verilator_build._COVERAGE_MODELS == {}
    fresh = counters(1)  # the emptied database takes a new model's points, and only those
    assert line_hits(write_coverage_files(tmp_path / "fresh")[0]) == one
    del fresh
    assert release_coverage_models(tmp_path / "too-few") == []  # unheld, but fewer than RELEASE_AFTER models
