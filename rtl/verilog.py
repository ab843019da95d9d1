"""MyHDL -> Verilog text, deterministic: the same design always gives the same bytes.

Determinism matters twice: the build cache is keyed by the Verilog's hash, and two
models on the same die must give byte-identical base-grid Verilog.
"""

from __future__ import annotations

import inspect
import re
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import myhdl
from myhdl import ToVerilogWarning
from myhdl import _block as myhdl_block
from myhdl import _instance as myhdl_instance

from hardwire.golden.errors import HardwireError


def to_verilog(elaborate: Callable[[], object], name: str) -> str:
    """Elaborate a MyHDL design (a callable returning a block instance) into module `name`."""
    if not name.isidentifier():
        raise HardwireError(f"Verilog module name '{name}' is not an identifier")
    _fresh_instance_names()
    with _quick_call_info(), tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        design = elaborate()
        # MyHDL's unread/undriven notes repeat what Verilator's lint reports with context
        warnings.simplefilter("ignore", ToVerilogWarning)
        # every option is passed each time: MyHDL keeps them in one global converter object
        design.convert(hdl="Verilog", path=tmp, name=name, testbench=False, trace=False,
                       timescale="1ns/10ps", no_myhdl_header=True, header="", initial_values=False)
        return _canonical((Path(tmp) / f"{name}.v").read_text())


class _InspectWithQuickStack:
    """The `inspect` module as MyHDL's call-info lookups see it during elaboration: stack() without
    the source lines. MyHDL reads only each record's frame and function name, and inspect.stack()
    reads every frame's source file, once per block and twice per process: most of a wide die's
    conversion time."""

    def __getattr__(self, name: str):
        return getattr(inspect, name)

    @staticmethod
    def stack(context: int = 1) -> list[inspect.FrameInfo]:
        records, frame = [], sys._getframe(1)
        while frame is not None:
            code = frame.f_code
            records.append(inspect.FrameInfo(frame, code.co_filename, frame.f_lineno, code.co_name, None, None))
            frame = frame.f_back
        return records


@contextmanager
def _quick_call_info() -> Iterator[None]:
    """MyHDL's block and process constructors see the quick stack while a design elaborates and converts."""
    modules = (myhdl_block, myhdl_instance)
    for module in modules:
        module.inspect = _InspectWithQuickStack()
    try:
        yield
    finally:
        for module in modules:
            module.inspect = inspect


def _fresh_instance_names() -> None:
    """Restart MyHDL's process-wide instance counters.

    MyHDL names instances (and so the Verilog nets) from counters that grow with every
    elaboration in the process; without this the second conversion of the same design
    would differ from the first.
    """
    myhdl_block._name_set.clear()
    myhdl_block._inst_name_set.clear()
    for registered in myhdl._simulator._blocks:
        if hasattr(registered, "calls"):
            registered.calls = 0


# MyHDL writes two lists in set order, which changes from process to process (hash
# randomization): the signals of a combinational `always @(a, b, ...)` and the assignments of
# a synchronous reset branch. Neither order means anything in Verilog, so both are sorted.
_SENSITIVITY = re.compile(r"^(always @\()([^)]*)(\))", re.MULTILINE)
# a variable declared inside a process: MyHDL's local, assigned before it is read in every evaluation
_PROCESS_VARIABLE = re.compile(r"^( +)reg ", re.MULTILINE)
_RESET_BRANCH = re.compile(r"(^\s*if \(\w+ == [01]\) begin\n)((?:\s*[\w\[\]]+ <= [^;\n]+;\n)+)", re.MULTILINE)


def _canonical(verilog: str) -> str:
    """Sorted as above, and every process variable `automatic`: a MyHDL local lives for one evaluation
    of its process, so it needs no storage between them (Verilator keeps it in a C++ local)."""
    sorted_text = _RESET_BRANCH.sub(_sorted_reset_branch, _SENSITIVITY.sub(_sorted_sensitivity, verilog))
    return _PROCESS_VARIABLE.sub(r"\1automatic reg ", sorted_text)


def _sorted_sensitivity(match: re.Match) -> str:
    names = match.group(2).split(", ")
    if any(" " in n for n in names):  # edge lists ("posedge clk") come in a fixed order
        return match.group(0)
    return match.group(1) + ", ".join(sorted(names)) + match.group(3)


def _sorted_reset_branch(match: re.Match) -> str:
    lines = match.group(2).splitlines(keepends=True)
    return match.group(1) + "".join(sorted(lines))
