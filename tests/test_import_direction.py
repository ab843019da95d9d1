"""Imports run one way: golden <- rtl <- cosim <- tools.

golden imports nothing of the project's other packages; rtl may import golden; cosim rtl and
golden; tools (the top `hardwire` package) anything. Every import statement of the four source
directories is parsed (ast), relative ones resolved against the module's package, including the
ones inside functions, which the lazy imports of the command line use.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# directory -> (installed package, rank): a module may import packages of its rank or below
PACKAGES = {"golden": ("hardwire.golden", 0), "rtl": ("hardwire.rtl", 1), "cosim": ("hardwire.cosim", 2),
            "tools": ("hardwire", 3)}
BARE_NAMES = set(PACKAGES)  # `import rtl` runs from a checkout only, never from the installed package


def module_of(directory: str, path: Path) -> tuple[str, bool]:
    """The dotted name of a source file under `directory`, and whether it is a package's __init__."""
    parts = list(path.relative_to(ROOT / directory).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts.pop()
    return ".".join([PACKAGES[directory][0], *parts]), is_package


def rank_of(name: str) -> int | None:
    """The rank of the project package a dotted name lies in; None outside the project."""
    if name != "hardwire" and not name.startswith("hardwire."):
        return None
    for package, rank in sorted(PACKAGES.values(), key=lambda p: -len(p[0])):
        if name == package or name.startswith(package + "."):
            return rank
    raise AssertionError(name)


def imported_names(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, dotted name) of everything a module imports: `from a.b import c` names a.b.c, since
    c may be a module of its own (`from hardwire import rtl`)."""
    package = module if is_package else module.rpartition(".")[0]
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                if node.level - 1 >= len(anchor):
                    raise ValueError(f"{module}:{node.lineno}: a relative import past the top package")
                base = ".".join(anchor[:len(anchor) - (node.level - 1)] + ([node.module] if node.module else []))
            names += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return names


def wrong_way(directory: str, path: Path, source: str) -> list[str]:
    """The imports of one module that run against golden <- rtl <- cosim <- tools."""
    module, is_package = module_of(directory, path)
    rank = PACKAGES[directory][1]
    found = []
    for line, name in imported_names(source, module, is_package):
        target = rank_of(name)
        where = f"{path.relative_to(ROOT)}:{line}"
        if name.split(".")[0] in BARE_NAMES:
            found.append(f"{where} imports {name}: not through the installed hardwire.* package")
        elif target is not None and target > rank:
            found.append(f"{where} ({module}) imports {name}, a layer above it")
    return found


def source_files(directory: str) -> list[Path]:
    return sorted((ROOT / directory).rglob("*.py"))


def test_every_import_of_the_tree_runs_golden_rtl_cosim_tools():
    found, project_imports = [], 0
    for directory in PACKAGES:
        for path in source_files(directory):
            source = path.read_text(encoding="utf-8")
            found += wrong_way(directory, path, source)
            module, is_package = module_of(directory, path)
            project_imports += sum(rank_of(name) is not None for _, name in imported_names(source, module, is_package))
    assert project_imports > 200  # the four trees and their imports were found, not an empty glob
    assert found == []


def test_tools_imports_the_project_by_absolute_names():
    relative = [f"{p.relative_to(ROOT)}:{node.lineno}" for p in source_files("tools")
                for node in ast.walk(ast.parse(p.read_text(encoding="utf-8")))
                if isinstance(node, ast.ImportFrom) and node.level]
    assert relative == []


# --- the check catches what it is there for --------------------------------------------------------

@pytest.mark.parametrize("directory, file, source", [
    ("golden", "spec.py", "from ..rtl import metal"),  # relative, one level up
    ("golden", "spec.py", "import hardwire.cosim.chip_sim"),
    ("golden", "spec.py", "from hardwire import chip_cli"),  # tools is the top package itself
    ("golden", "spec.py", "def f():\n    from hardwire.rtl.die import get_die\n"),  # a lazy import
    ("rtl", "cells/via_rom.py", "from ...cosim.chip_sim import ChipSim"),  # relative, two levels up
    ("rtl", "metal.py", "from .. import regression_plugin"),
    ("rtl", "metal.py", "from hardwire import cosim"),
    ("cosim", "chip_sim.py", "from hardwire.console import Console"),
    ("cosim", "chip_sim.py", "from golden.spec import BLOCK"),  # a checkout-only name
])
def test_a_wrong_way_import_is_caught(directory, file, source):
    found = wrong_way(directory, ROOT / directory / file, textwrap.dedent(source))
    assert len(found) == 1, found


@pytest.mark.parametrize("directory, file, source", [
    ("golden", "intref.py", "from . import spec\nfrom .block_matmul import IntTensor\nimport numpy as np"),
    ("rtl", "cells/via_rom.py", "from ..via_map import read_via_map\nfrom hardwire.golden.spec import BLOCK"),
    ("cosim", "mutation.py", "from .chip_sim import map_names\nfrom hardwire.rtl import metal as M"),
    ("tools", "cli.py", "from hardwire import chip_cli\nfrom hardwire.cosim.chip_sim import ChipSim"),
    ("tools", "__init__.py", "from .golden import spec"),  # relative from the top package: hardwire.golden
])
def test_a_right_way_import_passes(directory, file, source):
    assert wrong_way(directory, ROOT / directory / file, source) == []


def test_relative_imports_resolve_against_the_package():
    assert imported_names("from ..cells import sram", "hardwire.rtl.units.attention", False) == \
        [(1, "hardwire.rtl.cells.sram")]
    assert imported_names("from . import metal", "hardwire.rtl", True) == [(1, "hardwire.rtl.metal")]
    with pytest.raises(ValueError, match="past the top package"):
        imported_names("from ... import x", "hardwire.golden.spec", False)
