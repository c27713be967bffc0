"""Files that are either whole or absent: atomic writes, JSON reading, locks between processes.

Every file the package writes for later use (checkpoints, metrics, the frame cache, the clip-feature
store) goes through `atomic_write`: the content is written to a temporary file beside the target
(`.<name>.tmp-<pid>-<random>`), flushed to disk (fsync) and renamed over the target. A write that fails
or is killed midway leaves the previous file as it was; the temporary file is removed on failure, and
one left by a killed process is found by `remove_temporaries`. `atomic_directory` does the same for a
folder written in one piece.

Locks are `filelock.FileLock`s: an exclusive lock between processes on a lock file that is left in
place (removing it while another process waits would split the waiters over two files).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock

PathLike = str | os.PathLike


def temporary_path(path: PathLike) -> Path:
    """A fresh temporary name beside `path`: `.<name>.tmp-<pid>-<random>` (hidden, unique per writer)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _fsync(path: Path) -> None:
    with open(path, "rb") as written:
        os.fsync(written.fileno())


def atomic_write(path: PathLike, write: Callable[[Path], Any]) -> int:
    """Write `path` through `write(temporary)`, a callable that writes a file at the path it is given
    (e.g. `lambda to: torch.save(obj, to)`); fsync it and rename it over `path`. Returns the size in bytes.

    If `write` (or the fsync, or the rename) raises, the error propagates, `path` keeps its previous
    content (or stays absent) and the temporary file is removed. The parent folder is created if needed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(path)
    try:
        write(temporary)
        _fsync(temporary)
        size = temporary.stat().st_size
        os.replace(temporary, path)
        return size
    finally:
        temporary.unlink(missing_ok=True)


def write_bytes(path: PathLike, data: bytes) -> int:
    """`atomic_write` of `data`; returns the size."""
    return atomic_write(path, lambda to: to.write_bytes(data))


def write_text(path: PathLike, text: str) -> int:
    """`atomic_write` of `text` as UTF-8; returns the size in bytes."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: PathLike, payload: Any, *, indent: int = 2) -> int:
    """`atomic_write` of `payload` as JSON with sorted keys, `indent` spaces and a final newline."""
    return write_text(path, json.dumps(payload, indent=indent, sort_keys=True) + "\n")


def read_json(path: PathLike, default: Any = None) -> Any:
    """The JSON content of `path`, or `default` when the file is missing, unreadable or not JSON."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return default


@contextmanager
def atomic_directory(path: PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside `path`; when the block ends without an error, it replaces
    `path` (a previous folder there is moved aside, then deleted). On an error the temporary folder is
    deleted and `path` is untouched. Files inside need no atomic writes of their own.
    """
    path = Path(path)
    temporary = temporary_path(path)
    temporary.mkdir(parents=True)
    try:
        yield temporary
        if path.exists():
            old = temporary_path(path)  # a temporary name: remove_temporaries finds it after a kill
            os.replace(path, old)
            os.replace(temporary, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(temporary, path)
    finally:
        if temporary.exists():
            shutil.rmtree(temporary, ignore_errors=True)


def remove_temporaries(folder: PathLike, name: str = "*") -> None:
    """Delete what killed writers left in `folder`: the temporary files and folders of `name` (all by
    default). Call it only while holding the lock that serialises the writers of `folder`."""
    for stale in Path(folder).glob(f".{name}.tmp-*"):
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def file_lock(path: PathLike) -> FileLock:
    """An exclusive inter-process lock on the file `path` (created if missing, kept after release);
    use it as a context manager. The parent folder must exist."""
    return FileLock(str(path))


__all__ = [
    "atomic_directory",
    "atomic_write",
    "file_lock",
    "read_json",
    "remove_temporaries",
    "temporary_path",
    "write_bytes",
    "write_json",
    "write_text",
]
