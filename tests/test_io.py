"""t2cr.io: a file is either its old or its new content, never a part; locks exclude other processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from filelock import Timeout

from t2cr import io


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ---------------------------------------------------------------------------------------- atomic_write
def test_a_write_that_fails_midway_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")
    seen: list[Path] = []

    def half_then_crash(to: Path) -> None:
        seen.append(to)
        to.write_text("new but only ha")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        io.atomic_write(target, half_then_crash)
    assert target.read_text() == "old"
    assert _names(tmp_path) == ["metrics.json"]  # the half-written temporary is gone
    # written beside the target (same folder, so the rename is atomic), never at the target itself
    assert seen[0].parent == tmp_path and seen[0] != target and seen[0].name.startswith(".metrics.json.tmp-")


def test_a_failed_rename_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "a.bin"
    io.write_bytes(target, b"old")

    def refuse(src, dst):
        raise PermissionError("rename refused")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(PermissionError):
        io.write_bytes(target, b"new")
    monkeypatch.undo()
    assert target.read_bytes() == b"old" and _names(tmp_path) == ["a.bin"]


def test_the_new_content_is_complete_and_synced_before_the_rename(tmp_path, monkeypatch):
    target = tmp_path / "x.bin"
    events: list[tuple] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync",))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", Path(src).read_bytes(), Path(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    assert io.write_bytes(target, b"0123456789") == 10
    monkeypatch.undo()
    assert events == [("fsync",), ("replace", b"0123456789", target)]
    assert target.read_bytes() == b"0123456789"


def test_a_reader_sees_the_old_or_the_new_file_never_a_part(tmp_path, monkeypatch):
    """Fails for a write in place (open the target, write): the reader would catch it empty or half full.

    No race to win: the write pauses halfway through its bytes (the file it writes is open, half of the new
    content flushed), and again before the fsync, before the rename and after it, and the reader reads the
    target at each pause."""
    target = tmp_path / "store.bin"
    versions = [bytes([65 + i]) * 200_000 for i in range(2)]
    io.write_bytes(target, versions[0])
    reads: list[tuple[str, int, bytes]] = []  # (pause, which write, what the reader saw)

    def read(pause: str, write: int) -> None:
        reads.append((pause, write, target.read_bytes()))

    real_fsync, real_replace = os.fsync, os.replace
    write = [0]

    def write_bytes_in_two_halves(path: Path, data: bytes) -> int:
        with open(path, "wb") as out:
            out.write(data[:len(data) // 2])
            out.flush()
            read("halfway", write[0])
            out.write(data[len(data) // 2:])
            out.flush()
            read("written, not closed", write[0])
        return len(data)

    def fsync(fd: int) -> None:
        read("before fsync", write[0])
        real_fsync(fd)

    def replace(src, dst) -> None:
        read("before rename", write[0])
        real_replace(src, dst)
        read("after rename", write[0])

    monkeypatch.setattr(Path, "write_bytes", write_bytes_in_two_halves)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    for i in range(1, 4):
        write[0] = i
        read("before", i)
        io.write_bytes(target, versions[i % 2])
        read("after", i)
    monkeypatch.undo()
    torn = [(pause, i, len(data)) for pause, i, data in reads if data not in versions]
    assert not torn, f"{len(torn)} of {len(reads)} reads saw a partial file (pause, write, size): {torn[:5]}"
    # every pause was reached (the write went through the hooks), and the old content stays until the rename
    expected = ["before", "halfway", "written, not closed", "before fsync", "before rename", "after rename", "after"]
    assert [pause for pause, i, _ in reads if i == 1] == expected
    for pause, i, data in reads:
        new = pause in ("after rename", "after")
        assert data == versions[i % 2 if new else (i - 1) % 2], (pause, i)
    assert _names(tmp_path) == ["store.bin"]


def test_a_callable_writes_at_the_path_it_is_given(tmp_path):
    torch = pytest.importorskip("torch")
    target = tmp_path / "sub" / "last.ckpt"  # the folder is created
    size = io.atomic_write(target, lambda to: torch.save({"step": 3}, to))
    assert size == target.stat().st_size and torch.load(target, weights_only=True) == {"step": 3}


def test_text_and_json_formats_and_reading_back(tmp_path):
    io.write_text(tmp_path / "t.csv", "a,b\n1,é\n")
    assert (tmp_path / "t.csv").read_bytes() == "a,b\n1,é\n".encode()
    io.write_json(tmp_path / "m.json", {"b": 1, "a": [1, 2]})
    assert (tmp_path / "m.json").read_text() == json.dumps({"a": [1, 2], "b": 1}, indent=2) + "\n"
    io.write_json(tmp_path / "c.json", {"b": 1, "a": 2}, indent=1)
    assert (tmp_path / "c.json").read_text() == '{\n "a": 2,\n "b": 1\n}\n'
    assert io.read_json(tmp_path / "m.json") == {"a": [1, 2], "b": 1}
    (tmp_path / "bad.json").write_text('{"a": ')
    assert io.read_json(tmp_path / "bad.json") is None and io.read_json(tmp_path / "none.json", {}) == {}


# ----------------------------------------------------------------------------------- atomic_directory
def test_a_folder_is_replaced_whole_or_not_at_all(tmp_path):
    root = tmp_path / "ds"
    with io.atomic_directory(root) as folder:
        assert not root.exists() and folder.parent == tmp_path
        (folder / "a.txt").write_text("1")
    assert _names(root) == ["a.txt"]

    with pytest.raises(RuntimeError, match="render failed"), io.atomic_directory(root) as folder:
        (folder / "b.txt").write_text("2")
        raise RuntimeError("render failed")
    assert _names(root) == ["a.txt"] and _names(tmp_path) == ["ds"]

    with io.atomic_directory(root) as folder:
        (folder / "c.txt").write_text("3")
    assert _names(root) == ["c.txt"] and _names(tmp_path) == ["ds"]  # the old folder is gone too


def test_remove_temporaries_removes_only_what_killed_writers_left(tmp_path):
    (tmp_path / ".a.npy.tmp-12-abcdef01").write_bytes(b"half")
    (tmp_path / ".ds.tmp-12-abcdef01").mkdir()
    (tmp_path / ".ds.tmp-12-abcdef01" / "x").write_text("x")
    for keep in ("a.npy", ".lock", ".ds.lock", "tmp-1"):
        (tmp_path / keep).write_text("keep")
    io.remove_temporaries(tmp_path, "ds")
    assert ".ds.tmp-12-abcdef01" not in _names(tmp_path) and ".a.npy.tmp-12-abcdef01" in _names(tmp_path)
    io.remove_temporaries(tmp_path)
    assert _names(tmp_path) == [".ds.lock", ".lock", "a.npy", "tmp-1"]


# ------------------------------------------------------------------------------------------- file_lock
HOLD = """
import sys
from t2cr.io import file_lock
with file_lock(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.read()
"""


def test_a_lock_held_by_another_process_excludes_this_one(tmp_path):
    lock_file = tmp_path / ".lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(lock_file)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(Timeout):
            io.file_lock(lock_file).acquire(timeout=0)  # one try: the holder has it, no race
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    with io.file_lock(lock_file):  # free once the holder has gone
        pass
    assert lock_file.exists()  # kept: removing it could split later waiters over two files
