"""Keeping long runs safe: atomic checkpoint files, a clean stop on SIGTERM / SIGINT, exact resumes, non-finite
loss guard."""

from __future__ import annotations

import hashlib
import logging
import math
import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.plugins.io import TorchCheckpointIO
from pytorch_lightning.utilities.exceptions import SIGTERMException

from t2cr.io import WriteFailed, atomic_write

log = logging.getLogger(__name__)

RUN_DIR_ELSEWHERE = "set hydra.run.dir elsewhere"  # the advice of a failed write in a run folder


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or infinite; raised before the optimizer step that would spread it."""


def check_finite(terms: dict[str, torch.Tensor], step: int) -> None:
    """Raise NonFiniteLossError if a term is NaN or infinite: one host synchronisation for all terms."""
    values = torch.stack([value.detach().float().reshape(()) for value in terms.values()])
    if bool(torch.isfinite(values).all()):
        return
    bad = {name: float(value) for name, value in terms.items() if not torch.isfinite(value).all()}
    if bad:
        values = ", ".join(f"{name}={float(value):.6g}" for name, value in terms.items())
        raise NonFiniteLossError(
            f"non-finite loss at global step {step}: {sorted(bad)} ({values}). Training stopped before the "
            "optimizer step; checkpoints/last.ckpt still holds the last good state. Lower optim.*_lr, "
            "check the data, or set trainer.gradient_clip_val")


class StepStatus:
    """What a training step tells the host, read in one synchronisation: whether every loss term of the global
    batch is finite, the stop signal the processes agreed on (0: none; SIGTERM wins over SIGINT), and the global
    total loss.

    The device packs the three into one float: NaN for a non-finite term, -inf for SIGTERM, +inf for SIGINT,
    else the total loss (finite by then)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, finite: bool, stop: int, loss: float | None) -> None:
        self.finite, self.stop, self.loss = finite, stop, loss

    @classmethod
    def read(cls, total: torch.Tensor, values: torch.Tensor, signals: torch.Tensor) -> StepStatus:
        """`values`: the step's global loss terms; `signals`: per SIGNALS, how many processes received it."""
        packed = torch.where(torch.isfinite(values).all(), total.double(), torch.nan)
        packed = torch.where(signals[1] > 0, torch.inf, packed)
        packed = torch.where(signals[0] > 0, -torch.inf, packed)
        value = packed.item()  # the step's one host synchronisation
        if value == -math.inf:
            return cls(bool(torch.isfinite(values).all()), int(signal.SIGTERM), None)
        if value == math.inf:
            return cls(bool(torch.isfinite(values).all()), int(signal.SIGINT), None)
        if math.isnan(value):
            return cls(False, 0, None)
        return cls(True, 0, value)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint to a temporary file beside it and renames it into place.

    A failure while writing (disk full, a kill) leaves the previous checkpoint whole and readable; a full disk
    ends the run with one line naming the file, the folder and its free space (t2cr.io.WriteFailed).
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        try:
            atomic_write(path, lambda temporary: torch.save(checkpoint, temporary))
        except WriteFailed as failed:  # a full disk: one line that names the run folder's setting (exit 2)
            raise failed.advising(RUN_DIR_ELSEWHERE) from failed.__cause__


class StopRequested(SIGTERMException):
    """Raised on every process before the same training batch once any process received SIGTERM or SIGINT.

    A SIGTERMException, so Lightning hands it to the callbacks' `on_exception` (where `last.ckpt` is saved)
    and t2cr-train ends cleanly; `signum` says which signal it was (SIGTERM wins when both came)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


class SaveOnSigterm(Callback):
    """On SIGTERM or SIGINT, every process stops before the same training batch, `last.ckpt` is saved there,
    the run exits.

    The checkpoint holds the position inside the epoch; resuming skips the batches already done (the
    training sampler is a pure function of seed and epoch), so the resumed run takes exactly the steps
    the uninterrupted one would.

    Lightning's own SIGTERM handling is replaced for the fit: it decides per process (and broadcasts from
    inside the signal handler), so under DDP one rank could stop a step before another and their
    collectives would pair up wrongly. Here the handler only records the signal. On one process the run stops
    before the next training batch; under DDP the signal travels in the next step's one collective
    (`T2CRModule.training_step`, `StepStatus`: a signal to any rank stops all), and every process raises
    `StopRequested` before the batch after it, the same batch on all of them, and they save collectively. A signal sent to the whole process group
    (SLURM, `timeout`, `kill -- -PGID`, Ctrl-C) reaches the loader workers too: they leave it to this
    process (t2cr.data.loading). A signal during a validation takes effect at the next training batch, after
    that epoch's checkpoints. A second Ctrl-C stops at once and saves nothing.
    """

    SIGNALS = StepStatus.SIGNALS

    def __init__(self, last_path: Path) -> None:
        self.last_path = Path(last_path)
        self.received = 0  # the first stopping signal received, 0 for none
        self._announce = self._forwarded = False

    def _request(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and self.received == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, saving nothing
        self.received = self.received or signum
        if signum == signal.SIGINT and self._announce:
            os.write(2, b"\nCtrl-C: stopping before the next training batch and saving checkpoints/last.ckpt; "
                        b"press Ctrl-C again to stop at once without saving\n")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.received = 0
        self._forwarded = False
        self._announce = trainer.is_global_zero
        # Lightning registers its handlers after on_fit_start and before on_train_start, and restores the
        # original ones at teardown
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                signal.signal(signum, self._request)
        # recent Lightning also broadcasts its own SIGTERM flag from rank 0 before every batch (a collective and a
        # host read per step); with its handler replaced here the flag never rises, so the broadcast is dropped
        epoch_loop = trainer.fit_loop.epoch_loop
        if hasattr(epoch_loop, "_broadcast_sigterm_tensor"):
            epoch_loop._broadcast_sigterm_tensor = _nothing

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        received = self.received
        if trainer.world_size > 1:
            # every process learns of a signal from the next step's one collective (T2CRModule.training_step)
            # and stops before the batch after it, all at the same batch
            if received and not self._forwarded:
                pl_module.ask_to_stop(received)
                self._forwarded = True
            received = pl_module.agreed_stop
        if received:
            # before the batch: it is neither trained nor counted as done, so a resume starts with it
            raise StopRequested(received)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):
            trainer.save_checkpoint(str(self.last_path))  # every rank calls it; rank 0 writes
            if trainer.is_global_zero:
                name = signal.Signals(getattr(exception, "signum", signal.SIGTERM)).name
                log.warning("%s: saved %s at global step %d; continue with resume=true", name, self.last_path,
                            trainer.global_step)
        elif isinstance(exception, KeyboardInterrupt) and trainer.is_global_zero:
            kept = (f"{self.last_path} holds the last finished epoch: continue from it with resume=true"
                    if self.last_path.is_file() else "no checkpoint was written yet")
            log.warning("stopped at once by a second Ctrl-C: nothing saved; %s", kept)


def _nothing() -> None:
    return None


class SeedEachStep(Callback):
    """Seeds torch's global generators from (seed, global step, rank) before every training step.

    What draws from them during a step (dropout, `model.decoder.dropout`) is then a pure function of the step,
    as the data's draws are of (seed, epoch, index): a resumed run draws what the uninterrupted one drew,
    although its processes made their loaders (which draw worker seeds) and restored a checkpoint at other
    points of the stream.
    """

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        torch.manual_seed(step_seed(self.seed, trainer.global_step, trainer.global_rank))


def step_seed(seed: int, step: int, rank: int) -> int:
    """A 63-bit seed for one training step of one process, a pure function of its arguments."""
    digest = hashlib.sha256(f"t2cr-step:{seed}:{step}:{rank}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class ResumePosition(Callback):
    """Where the training epoch stands, kept in every checkpoint (Lightning saves a callback's state_dict):
    after a mid-epoch resume (a SIGTERM checkpoint) the sampler skips the batches the epoch already took.

    The training sampler is a pure function of (seed, epoch), so skipping them resumes exactly where the
    interrupted run stopped; an epoch-end checkpoint names a finished epoch and nothing is skipped.
    """

    def __init__(self) -> None:
        self.epoch, self.done = -1, 0  # the epoch of the last trained batch, and its batches trained

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.epoch, self.done = trainer.current_epoch, batch_idx + 1

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # once per fit, after the loaders exist and before the resumed epoch iterates
        sampler = getattr(trainer.train_dataloader, "sampler", None)
        if (self.epoch == trainer.current_epoch and 0 < self.done < trainer.num_training_batches
                and hasattr(sampler, "skip_batches")):
            sampler.skip_batches(self.done)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "done": self.done}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.epoch, self.done = int(state_dict["epoch"]), int(state_dict["done"])


class LastEveryEpoch(ModelCheckpoint):
    """`last.ckpt` at the end of every training epoch, whether or not the epoch validated.

    Lightning's own `save_last` only follows a top-k save, which a monitored metric skips on epochs
    without validation. A ModelCheckpoint subclass, so that Lightning runs it after the best-epoch
    checkpoint and the saved state includes that epoch's best.
    """

    def __init__(self, dirpath: str | Path) -> None:
        # no version counter: after a resume from a checkpoint saved inside the first epoch (by SIGTERM, before
        # this callback had written anything) Lightning took the existing last.ckpt for another run's and wrote
        # last-v1.ckpt beside it, leaving the stale last.ckpt for the next resume=true
        super().__init__(dirpath=str(dirpath), save_top_k=0, save_last=True, save_on_train_epoch_end=True,
                         enable_version_counter=False)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Never at validation end: that checkpoint would record an unfinished epoch."""
