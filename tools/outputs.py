"""Output paths of the commands: checked before any work starts, and published whole.

`check_output_dir` refuses, with a one-line error, a path that cannot become a directory the command
writes into (under a regular file, on a read-only or virtual file system such as /proc, a file
itself). `staged_dir` builds a directory beside its destination and swaps it in with one atomic
exchange of names (renameat2 RENAME_EXCHANGE), so that a killed command leaves the destination as
it was or complete; leftovers of a killed command are removed by the next one.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hardwire.golden.errors import HardwireError

STAGING_INFIX = ".hw-staging."
RENAME_EXCHANGE = 2
AT_FDCWD = -100


def check_output_dir(path: Path, option: str) -> Path:
    """`path` can be (or already is) a directory this process writes into; returns it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise HardwireError(f"{option} {path} exists and is not a directory")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise HardwireError(f"{option} {path} is under {existing}, which is not a directory")
    try:
        os.rmdir(tempfile.mkdtemp(dir=existing, prefix=".hw-probe."))
    except OSError as exc:
        raise HardwireError(f"{option} {path}: cannot create a directory in {existing} ({exc.strerror})") from None
    return path


def check_output_file(path: Path, option: str) -> Path:
    """`path` can be written as a file (its directory is writable; it is not a directory itself)."""
    path = Path(path)
    if path.is_dir():
        raise HardwireError(f"{option} {path} is a directory")
    existing = path.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise HardwireError(f"{option} {path} is under {existing}, which is not a directory")
    check_output_dir(path.parent, option)
    return path


def check_replaceable(out: Path, option: str, kind_marker: str) -> Path:
    """`out` can be replaced whole: new, empty, or the output of an earlier run (it holds `kind_marker`)."""
    out = check_output_dir(out, option)
    if out.is_dir() and any(out.iterdir()) and not (out / kind_marker).is_file():
        raise HardwireError(f"{option} {out} is a directory of something else (no {kind_marker}); "
                            "name a new or empty directory")
    return out


@contextmanager
def staged_dir(out: Path, option: str, kind_marker: str) -> Iterator[Path]:
    """Yield an empty staging directory beside `out`; when the block ends normally it replaces `out`
    atomically. An existing `out` must be empty or hold `kind_marker` (a file a previous run of the
    same command wrote), so that a directory of other things is never replaced."""
    out = check_replaceable(out, option, kind_marker)
    parent = out.absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    for stale in parent.glob(f".{out.name}{STAGING_INFIX}*"):  # left by a killed run
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(dir=parent, prefix=f".{out.name}{STAGING_INFIX}"))
    try:
        yield staging
        _swap_in(staging, out.absolute())
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _swap_in(staging: Path, out: Path) -> None:
    """After this, `out` holds what staging held and staging holds the old `out` (if any)."""
    os.chmod(staging, 0o777 & ~_umask())  # mkdtemp's 0700 would hide the result from others
    if not out.exists():
        os.rename(staging, out)
        staging.mkdir()  # the caller removes it
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.renameat2(AT_FDCWD, os.fsencode(staging), AT_FDCWD, os.fsencode(out), RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        raise HardwireError(f"cannot replace {out}: {os.strerror(err)}")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
