"""Running the `hardwire` command as a user does, and the shape of its bad-input answer."""

from __future__ import annotations

import subprocess
import sys


def hardwire(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hardwire.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def assert_one_line_error(result: subprocess.CompletedProcess, pattern: str) -> None:
    """Exit 2, one `hardwire: error:` line naming `pattern`, no traceback."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hardwire: error: "), result.stderr
    assert pattern in lines[0], lines[0]
    assert "Traceback" not in result.stderr
