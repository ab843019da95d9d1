"""The user cache: content-keyed entries published once, with a manifest that every reader checks.

An entry is a directory root/<key>, filled in a staging directory root/.<key>.building.<random> and
renamed into place under the fcntl lock root/.<key>.lock (one producer per key; readers never see a
half-written entry). At publish it gets MANIFEST: every file's size and sha256. A reader checks the
sizes of all the files and the hashes of those it uses before it trusts the entry; a damaged entry
is moved aside, deleted and built again, with a one-line note on stderr. Hashes are memoised in the
process by (size, mtime, ctime, inode), so one process hashes a file once.

A staging directory whose builder died (killed, crashed) is stale: its key's lock is free. The
next producer of any key in the same root deletes it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from .errors import HardwireError

MANIFEST = ".hw-manifest.json"
MANIFEST_FORMAT = 1
_DIGESTS: dict[tuple, str] = {}


def cache_root() -> Path:
    """User cache for models and builds: $HARDWIRE_CACHE, else $XDG_CACHE_HOME/hardwire."""
    if os.environ.get("HARDWIRE_CACHE"):
        return Path(os.environ["HARDWIRE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hardwire"


def check_cache_root() -> Path:
    """The cache directory, created if need be; a one-line error if it cannot hold entries."""
    root = cache_root()
    where = f"cache directory {root} (HARDWIRE_CACHE)" if os.environ.get("HARDWIRE_CACHE") else \
        f"cache directory {root}"
    if root.exists() and not root.is_dir():
        raise HardwireError(f"{where} is not a directory")
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=root):
            pass
    except OSError as exc:
        raise HardwireError(f"{where} is not writable: {exc.strerror}") from None
    return root


def sha256_of(path: Path) -> str:
    """sha256 of a file, memoised by its (path, size, mtime, ctime, inode): a file changed since is
    hashed again (a write changes ctime, which no user call can set back)."""
    st = os.stat(path)
    stamp = (str(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)
    if stamp not in _DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        _DIGESTS[stamp] = digest.hexdigest()
    return _DIGESTS[stamp]


def write_manifest(directory: Path) -> dict:
    """Record every file under `directory` (its size and sha256) in directory/MANIFEST."""
    files = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST):
        files[path.relative_to(directory).as_posix()] = [path.stat().st_size, sha256_of(path)]
    manifest = {"format": MANIFEST_FORMAT, "files": files}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=0, sort_keys=True))
    return manifest


def entry_problem(directory: Path, hashed: Callable[[str], bool] | None = None) -> str | None:
    """What is wrong with a published entry, or None: every file of its manifest must be there with
    its size, and the files `hashed` selects (by relative path; default: all) with their sha256."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
        files = manifest["files"]
        if manifest.get("format") != MANIFEST_FORMAT or not isinstance(files, dict):
            return "its manifest has an unknown format"
    except FileNotFoundError:
        return "it has no manifest"
    except (OSError, ValueError, KeyError, TypeError):
        return "its manifest is unreadable"
    for name, entry in files.items():
        path = directory / name
        try:
            size, digest = entry
            if path.stat().st_size != size:
                return f"{name} is {path.stat().st_size} bytes, not {size}"
            if (hashed is None or hashed(name)) and sha256_of(path) != digest:
                return f"{name} does not match its sha256"
        except FileNotFoundError:
            return f"{name} is missing"
        except (OSError, ValueError, TypeError):
            return f"{name} is unreadable"
    return None


def publish_once(root: Path, key: str, fill: Callable[[Path], None],
                 hashed: Callable[[str], bool] | None = None) -> tuple[Path, bool]:
    """root/key, filled by `fill(staging)` in a staging directory and renamed into place under an
    fcntl lock, with its manifest. A published entry is checked first (`entry_problem`); a damaged
    one is rebuilt. Returns (the directory, whether a sound entry was already there)."""
    final = root / key
    if final.is_dir():
        problem = entry_problem(final, hashed)
        if problem is None:
            return final, True
        note(f"cache entry {final} is damaged ({problem}); building it again")
    try:
        root.mkdir(parents=True, exist_ok=True)
        lock = open(root / f".{key}.lock", "w")
    except OSError as exc:
        raise HardwireError(f"cannot write the cache directory {root}: {exc.strerror}") from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if final.is_dir():
            if entry_problem(final, hashed) is None:  # another process rebuilt it meanwhile
                return final, True
            discard(final)
        for stale in root.glob(f".{key}.building.*"):  # its builder died: this process holds the lock
            shutil.rmtree(stale, ignore_errors=True)
        remove_stale_staging(root, held=key)
        staging = Path(tempfile.mkdtemp(dir=root, prefix=f".{key}.building."))
        try:
            fill(staging)
            write_manifest(staging)
        except HardwireError:
            raise  # the staging directory stays for inspection; it is stale once the lock is free
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        os.rename(staging, final)  # atomic publish; under the lock `final` cannot exist yet
    return final, False


def discard(entry: Path) -> None:
    """Move a damaged entry aside (one rename, so no reader sees it half deleted), then delete it."""
    aside = Path(tempfile.mkdtemp(dir=entry.parent, prefix=f".{entry.name}.damaged."))
    os.rename(entry, aside / entry.name)
    shutil.rmtree(aside, ignore_errors=True)


def remove_stale_staging(root: Path, held: str | None = None) -> int:
    """Delete the staging and discarded directories in `root` whose producer is gone (their key's
    lock is free); returns how many. `held`: a key whose lock this process holds (skipped)."""
    removed = 0
    for stale in list(root.glob(".*.building.*")) + list(root.glob(".*.damaged.*")):
        key = stale.name.split(".")[1]
        if key == held:
            continue
        try:
            with open(root / f".{key}.lock", "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                shutil.rmtree(stale, ignore_errors=True)
                removed += 1
        except BlockingIOError:
            continue  # a live producer owns it
        except OSError:
            continue
    return removed


def note(message: str) -> None:
    """A one-line note on stderr (stdout belongs to the command's result)."""
    print(f"hardwire: note: {message}", file=sys.stderr, flush=True)


def select(names: Iterable[str]) -> Callable[[str], bool]:
    """A `hashed` selector: the manifest paths listed or under a listed directory (a trailing '/')."""
    names = tuple(names)
    return lambda path: any(path == n or (n.endswith("/") and path.startswith(n)) for n in names)
