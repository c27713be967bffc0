"""Counts the host reads of a run's training steps (added as `+callbacks.extra.count._target_=host_reads.CountHostReads`).

A host read is an operator that hands a tensor's value to Python (`aten._local_scalar_dense`: `.item()`,
`bool()`, `float()`, `int()` of a tensor); on an accelerator each one makes the host wait for the device. The
count runs from the end of one training batch to the end of the next, so each window holds one whole step
(the forward, the loss, the backward, the optimizer, every callback and the progress bar).

Not counted: reads of Adam's per-parameter step counters, which torch keeps on the host on every device (unless
capturable or fused), so reading them makes nobody wait.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch.utils._python_dispatch import TorchDispatchMode

HOST_READS = {torch.ops.aten._local_scalar_dense.default}


class _Counter(TorchDispatchMode):
    def __init__(self, host_counters: set[int]) -> None:
        super().__init__()
        self.count, self.host_counters = 0, host_counters

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in HOST_READS and id(args[0]) not in self.host_counters:
            self.count += 1
        return func(*args, **(kwargs or {}))


class CountHostReads(Callback):
    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.windows: list[dict[str, int]] = []
        self._counter: _Counter | None = None
        self._since: tuple[int, int] | None = None

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._counter is not None:
            self._counter.__exit__(None, None, None)
            self.windows.append({"epoch": self._since[0], "from_batch": self._since[1], "to_batch": batch_idx,
                                 "to_epoch": trainer.current_epoch, "host_reads": self._counter.count})
        self._since = (trainer.current_epoch, batch_idx)
        steps = {id(state["step"]) for optimizer in trainer.optimizers for state in optimizer.state.values()
                 if isinstance(state.get("step"), torch.Tensor) and state["step"].device.type == "cpu"}
        self._counter = _Counter(steps)
        self._counter.__enter__()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._counter is not None:  # validation and checkpoints are no training step
            self._counter.__exit__(None, None, None)
            self._counter = None

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.path.with_name(f"{self.path.stem}_rank{trainer.global_rank}.json").write_text(json.dumps(self.windows))
