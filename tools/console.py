"""Terminal output: rich tables and progress bars for people, bare JSON for machines.

With --json only the JSON document goes to stdout. Without a TTY no progress
is drawn, so logs stay clean.
"""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager

from rich.console import Console as RichConsole
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table


class Console:
    def __init__(self, json_mode: bool = False):
        self.json_mode = json_mode
        self.out = RichConsole(highlight=False)
        self.err = RichConsole(stderr=True, highlight=False)
        self.live = not json_mode and self.err.is_terminal

    def error(self, message: str) -> None:
        self.err.print(f"hardwire: error: {message}", markup=False, soft_wrap=True)

    def note(self, message: str) -> None:
        if not self.json_mode:
            self.err.print(message, markup=False, soft_wrap=True)

    def result(self, data: dict, title: str = "", hide: tuple[str, ...] = ()) -> None:
        """The whole document as JSON; for people, a key/value table without the keys in `hide`."""
        if self.json_mode:
            sys.stdout.write(json.dumps(data, indent=2) + "\n")
            return
        table = Table(title=title or None, show_header=False)
        table.add_column("key", style="bold")
        table.add_column("value")
        for key, value in data.items():
            if key not in hide:
                table.add_row(key, _fmt(value))
        self.out.print(table)

    def shares(self, amounts: dict | None, title: str) -> None:
        """For people: a small table of the non-zero amounts and their shares of the total."""
        total = sum((amounts or {}).values())
        if self.json_mode or not total:
            return
        table = Table(title=title)
        table.add_column("op", style="bold")
        table.add_column("cycles", justify="right")
        table.add_column("share", justify="right")
        for key, value in amounts.items():
            if value:
                table.add_row(key, f"{value:,.1f}", f"{100 * value / total:.1f}%")
        self.out.print(table)

    @contextmanager
    def progress(self, description: str, total: int):
        """Yield advance(done): a progress bar on a TTY, a no-op otherwise."""
        if not self.live:
            yield lambda done: None
            return
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=self.err, transient=True) as bar:
            task = bar.add_task(description, total=total)
            yield lambda done: bar.update(task, completed=done)

    @contextmanager
    def status(self, message: str):
        """A spinner with a message on a TTY; nothing otherwise."""
        if not self.live:
            yield
            return
        with self.err.status(message):
            yield

    def fetch_model(self, spec: str):
        from hardwire.golden.models import is_cached, resolve_model

        if is_cached(spec) or not self.live:
            return resolve_model(spec)
        with self.err.status(f"fetching {spec}"):
            return resolve_model(spec)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)
