"""Issue 29: a full disk (or another OSError while writing a checkpoint, a cache or a metrics file) ends with
one line naming the file, its folder and the free space there; the previous file stays intact and no
temporary file remains.

The disk is really full where it matters: the temporary file a write goes to is made a link to /dev/full,
whose every write fails with ENOSPC from the kernel, through Python's file objects as through torch's C++
writer (which reports it as a RuntimeError without an errno).
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from framework_helpers import run_cli, tiny_overrides
from pytorch_lightning.callbacks import Callback

import t2cr.io
from t2cr.cli.common import user_error_message
from t2cr.io import WriteFailed, write_json
from t2cr.reliability import AtomicCheckpointIO

FULL = Path("/dev/full")
pytestmark = pytest.mark.skipif(not FULL.exists(), reason="needs /dev/full (Linux) to fill a disk")
FREE = r"\(free: \d+(\.\d)? GiB of \d+(\.\d)? GiB\)"


def fill_the_disk() -> None:
    """From now on, in this process, every temporary file that t2cr.io.atomic_write writes is /dev/full."""
    make_temporary = t2cr.io.temporary_path

    def on_a_full_disk(path: Any) -> Path:
        temporary = make_temporary(path)
        temporary.symlink_to(FULL)
        return temporary

    t2cr.io.temporary_path = on_a_full_disk


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _expected(name: str, folder: Path, reason: str, advice: str, kept: str) -> str:
    return (rf"cannot write {re.escape(name)} in {re.escape(str(folder))}: {re.escape(reason)} {FREE}; "
            rf"free space or {re.escape(advice)}; {re.escape(kept)}")


# ------------------------------------------------------------------------------------------------- units
@pytest.mark.parametrize("elements", [10, 1_000_000])  # torch's writer fails at its end, or in the middle
def test_a_full_disk_during_a_checkpoint_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch, elements):
    path = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1, "weights": torch.arange(5.0)}, path)
    before = _sha(path)
    monkeypatch.setattr(t2cr.io, "temporary_path", t2cr.io.temporary_path)  # undone after the test
    fill_the_disk()

    with pytest.raises(WriteFailed) as failed:
        io.save_checkpoint({"step": 2, "weights": torch.zeros(elements)}, path)

    message = user_error_message(failed.value)  # what t2cr-train prints after "t2cr-train: error: "
    assert re.fullmatch(_expected("last.ckpt", path.parent, "No space left on device", "set hydra.run.dir elsewhere",
                                  "the previous last.ckpt is intact"), message), message
    assert failed.value.errno == errno.ENOSPC
    assert _sha(path) == before and torch.load(path, weights_only=True)["step"] == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # no temporary file left


def test_a_full_disk_during_metrics_json_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    write_json(path, {"test/spearman": 0.5})
    before = path.read_bytes()
    monkeypatch.setattr(t2cr.io, "temporary_path", t2cr.io.temporary_path)
    fill_the_disk()

    with pytest.raises(WriteFailed) as failed:
        write_json(path, {"test/spearman": 0.9}, elsewhere="set hydra.run.dir elsewhere")

    assert re.fullmatch(_expected("metrics.json", tmp_path, "No space left on device", "set hydra.run.dir elsewhere",
                                  "the previous metrics.json is intact"), user_error_message(failed.value))
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


@pytest.mark.parametrize("code", [errno.EDQUOT, errno.EIO, errno.EROFS])
def test_other_errors_while_writing_are_the_same_one_line(tmp_path, code):
    path = tmp_path / "cache" / "samples.npy"

    def fails(to: Path) -> None:
        to.write_bytes(b"half")
        raise OSError(code, os.strerror(code))

    with pytest.raises(WriteFailed) as failed:
        t2cr.io.atomic_write(path, fails)
    assert failed.value.errno == code and isinstance(failed.value, OSError)  # callers catching OSError still do
    assert re.fullmatch(_expected("samples.npy", path.parent, os.strerror(code), "write to another folder",
                                  "no samples.npy was written"), user_error_message(failed.value))
    assert list(path.parent.iterdir()) == []


# -------------------------------------------------------------------------------------- through the CLI
class DiskFullFromEpoch(Callback):
    """In a t2cr-train run (`+callbacks.extra.full._target_=test_disk_full.DiskFullFromEpoch`): when epoch
    `epoch` starts (the previous epoch's checkpoints written), record last.ckpt's digest in `record` and fill
    the disk, so that the epoch's checkpoint save fails."""

    def __init__(self, record: str, epoch: int = 1) -> None:
        self.record, self.epoch = Path(record), epoch

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            self.record.write_text(_sha(Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"))
            fill_the_disk()


@pytest.mark.slow
def test_a_run_that_fills_the_disk_ends_with_one_line_and_keeps_its_last_checkpoint(tiny_synthetic, tmp_path):
    run_dir, record = tmp_path / "run", tmp_path / "last_before.sha256"
    result = run_cli("train", [*tiny_overrides(tiny_synthetic), f"hydra.run.dir={run_dir}",
                               "+callbacks.extra.full._target_=test_disk_full.DiskFullFromEpoch",
                               f"+callbacks.extra.full.record={record}"],
                     cwd=tmp_path, check=False, path=Path(__file__).parent)

    assert result.returncode == 2, result.stderr[-4000:]
    assert "Traceback" not in result.stderr, result.stderr[-4000:]
    last_line = result.stderr.strip().splitlines()[-1]
    name = r"(last\.ckpt|best-epoch\d+\.ckpt)"  # whichever of epoch 1's checkpoints is saved first
    expected = (rf"t2cr-train: error: cannot write {name} in {re.escape(str(run_dir / 'checkpoints'))}: "
                rf"No space left on device {FREE}; free space or set hydra\.run\.dir elsewhere; "
                rf"(the previous {name} is intact|no {name} was written)")
    assert re.fullmatch(expected, last_line), result.stderr[-4000:]
    assert _sha(run_dir / "checkpoints" / "last.ckpt") == record.read_text()  # epoch 0's, whole
    assert not [p for p in run_dir.rglob("*") if ".tmp-" in p.name]  # no temporary file left
    assert not (run_dir / "metrics.json").exists()
