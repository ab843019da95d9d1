"""`hardwire report`: the regression dashboard of a run directory (tools/dashboard.py draws it)."""

from __future__ import annotations

import argparse
from pathlib import Path

from hardwire.cli_common import EPILOG, EXIT_MISMATCH, EXIT_OK, add_json_option
from hardwire.console import Console
from hardwire.golden.errors import HardwireError

DEFAULT_OUT = Path("dashboard") / "index.html"


def add_report(sub) -> None:
    p = sub.add_parser("report", help="the regression dashboard of a run directory (one static HTML page)",
                       description="Read a regression run directory (JUnit XML, functional and code coverage, "
                                   "performance, history) and write one static HTML dashboard.",
                       epilog=EPILOG)
    p.add_argument("--run-dir", required=True, type=Path, help="the run directory (pytest --hw-run-dir)")
    p.add_argument("--out", type=Path, default=None,
                   help=f"the HTML file to write (default: RUN_DIR/{DEFAULT_OUT.as_posix()})")
    p.add_argument("--append-history", action="store_true",
                   help="append this run to RUN_DIR/history.jsonl (once per run)")
    p.add_argument("--check", action="store_true", help="exit 1 when a test failed or errored")
    add_json_option(p)
    p.set_defaults(handler=run_report)


def run_report(args: argparse.Namespace, console: Console) -> int:
    # the renderer pulls in numpy and the RTL's constants: only when a report is asked for
    from hardwire.dashboard import render
    from hardwire.run_results import (
        STATUSES,
        append_history,
        code_percent,
        functional_percent,
        group_failures,
        load_run,
    )

    run = load_run(args.run_dir)
    out = Path(args.out) if args.out else Path(args.run_dir) / DEFAULT_OUT
    write_page(out, render(run))
    appended = append_history(run) if args.append_history else False
    console.result({"out": str(out), "tests": len(run.tests), **{s: run.count(s) for s in STATUSES},
                    "failure_groups": len(group_failures(run.tests)),
                    "functional_coverage": functional_percent(run.coverage),
                    "code_coverage": code_percent(run.code_coverage), "history_appended": appended,
                    "history_runs": len(run.history)}, title=f"regression report of {args.run_dir}")
    failing = run.count("failed") + run.count("error")
    return EXIT_MISMATCH if args.check and failing else EXIT_OK


def write_page(out: Path, html: str) -> None:
    if out.is_dir():
        raise HardwireError(f"--out {out} is a directory")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(html, encoding="utf-8")
    except OSError as exc:
        raise HardwireError(f"cannot write {out}: {exc.strerror}") from None
