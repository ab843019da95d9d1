"""The wheel builds without a setuptools warning and carries the package data the CLI reads.

A build backend's warnings are deprecations with a date on them (the license as a TOML table),
or data that only installs by accident (a data directory missing from `packages`): they are
failures here, not noise. The build runs on a copy of the sources, so the tree stays untouched.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("golden", "rtl", "cosim", "tools")
WARNING = re.compile(r"warning|deprecat", re.IGNORECASE)


def test_the_wheel_builds_without_warnings_and_carries_its_data(tmp_path):
    tree = tmp_path / "src"
    tree.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, tree / name)
    for name in SOURCES:
        shutil.copytree(ROOT / name, tree / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path / "dist"),
                             str(tree)], capture_output=True, text=True, env=env, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert [line for line in output.splitlines() if WARNING.search(line)] == [], output
    (wheel,) = (tmp_path / "dist").glob("hardwire-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "hardwire/golden/data/eval_en.txt" in names  # `hardwire eval`'s default text
    missing = [path for path in installed_sources() if path not in names]
    assert missing == []  # a subpackage left out of `packages` installs nothing, editable installs hide it


def installed_sources() -> list[str]:
    """Where every Python source of the four trees lands in the wheel (tools/ is `hardwire` itself)."""
    paths = []
    for name in SOURCES:
        package = "hardwire" if name == "tools" else f"hardwire/{name}"
        paths += [f"{package}/{p.relative_to(ROOT / name).as_posix()}" for p in sorted((ROOT / name).rglob("*.py"))]
    assert len(paths) > 40
    return paths
