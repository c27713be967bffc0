"""Files that are either whole or absent: atomic writes, JSON reading, locks between processes.

Every file the package writes for later use (checkpoints, metrics, the frame cache, the clip-feature
store) goes through `atomic_write`: the content is written to a temporary file beside the target
(`.<name>.tmp-<pid>-<random>`), flushed to disk (fsync) and renamed over the target. A write that fails
or is killed midway leaves the previous file as it was; the temporary file is removed on failure, and
one left by a killed process is found by `remove_temporaries`. `atomic_directory` does the same for a
folder written in one piece. A write that fails for want of space (disk full, quota, an I/O error) raises
`WriteFailed`: one line naming the file, its folder and the free space there (the commands print it and exit 2).

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


# OSErrors that name their file already and are reported as they are (t2cr.cli.common reports them); every
# other one (ENOSPC, EDQUOT, EIO, EROFS, EFBIG, ...) becomes a WriteFailed
NAMED_FILE_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)
ELSEWHERE = "write to another folder"  # the advice when the caller names no setting that moves the file


class WriteFailed(OSError):
    """A file could not be written (disk full, quota, I/O error): one line naming the file, its folder, the
    reason and the free space there, and saying that the previous file is intact. Still an OSError with the
    original errno, so code that catches OSError is unchanged."""

    target: Path
    reason: str
    existed: bool

    def __str__(self) -> str:
        return str(self.strerror)

    def advising(self, elsewhere: str) -> WriteFailed:
        """The same failure, its advice naming the setting that moves the file (a caller that knows it)."""
        return write_failed(self.target, self.reason, self.errno, self.existed, elsewhere)


def gib(size: float) -> str:
    """Bytes in GiB as the messages write them: one decimal below 10 GiB, none above."""
    value = size / 2**30
    return f"{value:.1f}" if value < 10 else f"{value:.0f}"


def free_space(folder: PathLike) -> str:
    """`free: X GiB of Y GiB` of the file system holding `folder` (or its nearest existing parent)."""
    here = Path(folder).absolute()
    while not here.exists() and here != here.parent:
        here = here.parent
    try:
        usage = shutil.disk_usage(here)
    except OSError as error:  # the message still names the file and the reason
        return f"free space unknown: {error.strerror or error}"
    return f"free: {gib(usage.free)} GiB of {gib(usage.total)} GiB"


def write_failed(path: Path, reason: str, errno: int | None, existed: bool,
                 elsewhere: str = ELSEWHERE) -> WriteFailed:
    """The WriteFailed for `path`, whose write failed for `reason` (atomic_write: the target is untouched)."""
    kept = f"the previous {path.name} is intact" if existed else f"no {path.name} was written"
    failed = WriteFailed(errno, f"cannot write {path.name} in {path.parent}: {reason} "
                                f"({free_space(path.parent)}); free space or {elsewhere}; {kept}")
    failed.target, failed.reason, failed.existed = path, reason, existed
    return failed


def _torch_writer_failed(error: BaseException) -> bool:
    """torch.save to a path writes in C++ and reports a failed write (a full disk) as a RuntimeError without
    an errno, whose text varies ("file write failed", "iostream error", "unexpected pos"): one raised where
    torch.serialization calls its writer."""
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    raised_in = tb.tb_frame.f_globals.get("__name__") if tb is not None else None
    return isinstance(error, RuntimeError) and raised_in == "torch.serialization"


def _write_probe(folder: Path) -> OSError | None:
    """The OSError that writing and syncing one byte in `folder` meets now (ENOSPC on a full disk), or None."""
    probe = temporary_path(folder / "write-probe")
    try:
        with open(probe, "wb") as out:
            out.write(b"\0")
            out.flush()
            os.fsync(out.fileno())
    except OSError as error:
        return error
    finally:
        probe.unlink(missing_ok=True)
    return None


def atomic_write(path: PathLike, write: Callable[[Path], Any], *, elsewhere: str = ELSEWHERE) -> int:
    """Write `path` through `write(temporary)`, a callable that writes a file at the path it is given
    (e.g. `lambda to: torch.save(obj, to)`); fsync it and rename it over `path`. Returns the size in bytes.

    If `write` (or the fsync, or the rename) raises, `path` keeps its previous content (or stays absent) and
    the temporary file is removed. A missing folder or a refused permission propagates as it is; any other
    OSError (disk full, quota, I/O error), and torch's failed zip write, becomes `WriteFailed`, whose one line
    ends with `free space or <elsewhere>`. The parent folder is created if needed.
    """
    path = Path(path)
    existed = path.exists()
    try:
        return _write_then_rename(path, write)
    except (WriteFailed, *NAMED_FILE_ERRORS):
        raise
    except OSError as error:
        raise write_failed(path, error.strerror or str(error), error.errno, existed, elsewhere) from error
    except RuntimeError as error:
        if not _torch_writer_failed(error):
            raise
        found = _write_probe(path.parent)  # torch's message has no errno: does a one-byte write meet one now?
        if found is not None:
            raise write_failed(path, found.strerror or str(found), found.errno, existed, elsewhere) from error
        reason = f"torch's writer failed ({(str(error).strip().splitlines() or ['no message'])[0][:200]})"
        raise write_failed(path, reason, None, existed, elsewhere) from error


def _write_then_rename(path: Path, write: Callable[[Path], Any]) -> int:
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


def write_bytes(path: PathLike, data: bytes, *, elsewhere: str = ELSEWHERE) -> int:
    """`atomic_write` of `data`; returns the size."""
    return atomic_write(path, lambda to: to.write_bytes(data), elsewhere=elsewhere)


def write_text(path: PathLike, text: str, *, elsewhere: str = ELSEWHERE) -> int:
    """`atomic_write` of `text` as UTF-8; returns the size in bytes."""
    return write_bytes(path, text.encode("utf-8"), elsewhere=elsewhere)


def write_json(path: PathLike, payload: Any, *, indent: int = 2, elsewhere: str = ELSEWHERE) -> int:
    """`atomic_write` of `payload` as JSON with sorted keys, `indent` spaces and a final newline."""
    return write_text(path, json.dumps(payload, indent=indent, sort_keys=True) + "\n", elsewhere=elsewhere)


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
    "WriteFailed",
    "atomic_directory",
    "atomic_write",
    "file_lock",
    "free_space",
    "read_json",
    "remove_temporaries",
    "temporary_path",
    "write_bytes",
    "write_failed",
    "write_json",
    "write_text",
]
