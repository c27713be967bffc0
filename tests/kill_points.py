"""A run that signals itself at an exact point of its own progress (the resume tests' kill points).

Added to a t2cr-train run as `+callbacks.extra.kill._target_=kill_points.KillAt` (tests/ on PYTHONPATH), so a
kill lands where the test says, never where a timer happens to be:

- `at=train_batch`: after the optimizer step of batch `batch` of epoch `epoch`;
- `at=epoch_start`: when epoch `epoch` starts, i.e. right after epoch `epoch - 1`'s checkpoints were written
  (`last.ckpt`, and `best-*.ckpt` when that epoch validated and was the best);
- `at=validation_batch`: after batch `batch` of the validation that follows epoch `epoch`.

`target`: `self` signals this process (rank `rank` of a DDP job), `group` its whole process group (every
rank and loader worker, as SLURM, `timeout` or `kill -- -PGID` do). The run must lead its own group
(`start_new_session=True`), or the test runner would be signalled too.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

KILL_POINTS = ("train_batch", "epoch_start", "validation_batch")


class KillAt(Callback):
    def __init__(self, at: str, epoch: int, batch: int = 0, signal_name: str = "SIGKILL", target: str = "self",
                 rank: int = 0) -> None:
        if at not in KILL_POINTS:
            raise ValueError(f"at={at!r}; expected one of {KILL_POINTS}")
        if target not in ("self", "group"):
            raise ValueError(f"target={target!r}; expected self or group")
        self.at, self.epoch, self.batch = at, epoch, batch
        self.signal = signal.Signals[signal_name]
        self.target, self.rank = target, rank
        self.sent = False

    def _fire(self, trainer: pl.Trainer) -> None:
        if self.sent or trainer.global_rank != self.rank:
            return
        self.sent = True
        if self.target == "group":
            os.killpg(os.getpgid(0), self.signal)
        else:
            os.kill(os.getpid(), self.signal)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.at == "train_batch" and (trainer.current_epoch, batch_idx) == (self.epoch, self.batch):
            self._fire(trainer)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.at == "epoch_start" and trainer.current_epoch == self.epoch:
            self._fire(trainer)

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                                batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if (self.at == "validation_batch" and not trainer.sanity_checking
                and (trainer.current_epoch, batch_idx) == (self.epoch, self.batch)):
            self._fire(trainer)
