"""A benchmark callback for `t2cr-train` (`+callbacks.extra.step_times._target_=step_times.StepTimes`): each
training step's wall time and the run's peak memory, written as JSON when the fit ends.

The step's time runs from the start of one training batch to the start of the next (so it includes the
optimizer step and the loader's wait), with the device synchronised at both ends; the synchronisation is
the benchmark's own cost and is why this callback is not part of a normal run. Peak memory: CUDA's
max_memory_allocated since the fit started, or on the CPU the process's maximum resident set.
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import pytorch_lightning as pl
import torch


class StepTimes(pl.Callback):
    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.starts: list[float] = []

    def _now(self, module: pl.LightningModule) -> float:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)
        return time.perf_counter()

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        self.starts.append(self._now(pl_module))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.starts.append(self._now(pl_module))  # the end of the epoch's last step

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_rank != 0:
            return
        if pl_module.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(pl_module.device)
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
        steps = [b - a for a, b in zip(self.starts, self.starts[1:])]
        self.path.write_text(json.dumps({"step_s": steps, "peak_bytes": peak, "device": str(pl_module.device)}))
