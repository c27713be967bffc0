"""Builders shared by the entry points: data module, logger, callbacks, trainer, output files."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from filelock import FileLock, Timeout
from hydra.experimental.callback import Callback as HydraCallback
from omegaconf import DictConfig, OmegaConf, read_write
from pytorch_lightning.callbacks import Callback, ModelCheckpoint, RichProgressBar, TQDMProgressBar
from pytorch_lightning.strategies import DDPStrategy

import t2cr.sweeps  # noqa: F401  (registers the t2cr_dirname resolver that names sweep jobs)
from t2cr.cli.common import UserError, exit_with_error
from t2cr.config import to_dataclass
from t2cr.data.config import DataConfig
from t2cr.data.datamodule import PairDataModule
from t2cr.devices import cpus_per_process, processes_per_node
from t2cr.distributed import GlobalBatchNorm
from t2cr.features import ClipFeatures
from t2cr.io import file_lock, write_text
from t2cr.launch import exit_with_parent, launch_local_ranks
from t2cr.optional import require
from t2cr.quiet import quiet_third_party
from t2cr.reliability import (
    RUN_DIR_ELSEWHERE,
    AtomicCheckpointIO,
    LastEveryEpoch,
    ResumePosition,
    SaveOnSigterm,
    SeedEachStep,
)
from t2cr.schemas import register as register_schemas

log = logging.getLogger(__name__)

register_schemas()  # conf/<group>/*.yaml extend the dataclass schemas: t2cr.schemas
WANDB_ID_FILE = "wandb_run_id.txt"
RUN_LOCK_FILE = ".t2cr-run.lock"  # held by the run using the folder (RunFolderLock)


def aqa7_classes_name(classes: Any) -> str:
    """`data.classes` of AQA-7 as a run name reads it: [1] -> diving, [2, 5] -> gym_vault+sync_diving_3m, null -> all."""
    from t2cr.data.aqa7 import CLASS_NAMES

    if classes is None:
        return "all"
    return "+".join(CLASS_NAMES.get(int(c), str(c)) for c in classes)


if not OmegaConf.has_resolver("t2cr_aqa7_classes"):
    OmegaConf.register_new_resolver("t2cr_aqa7_classes", aqa7_classes_name)


def times(a: float, b: float) -> float:
    """${t2cr_times:a,b}: a value that follows another one's scale (the synthetic data's score range)."""
    return float(a) * float(b)


if not OmegaConf.has_resolver("t2cr_times"):
    OmegaConf.register_new_resolver("t2cr_times", times)


def is_rank_zero() -> bool:
    """Rank 0 of the job, also before the Trainer exists (children carry a non-zero rank variable)."""
    return all(os.environ.get(v, "0") == "0" for v in ("LOCAL_RANK", "NODE_RANK", "SLURM_PROCID", "RANK"))


def lock_run_folder(run_dir: Path) -> FileLock:
    """The run folder's lock, taken without waiting; a `UserError` when another run holds it (two runs in one
    folder would interleave their last.ckpt, metrics and logs). The caller releases it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = file_lock(run_dir / RUN_LOCK_FILE)
    try:
        lock.acquire(blocking=False)
    except Timeout:
        raise UserError(f"{run_dir} is in use by another t2cr-train run (it holds {RUN_LOCK_FILE} there): wait for "
                        "that run to end, or choose another hydra.run.dir") from None
    return lock


def pin_run_dir(config: DictConfig) -> Path:
    """hydra.run.dir resolved once and written back, so that Hydra's job runs in the folder resolved here (a
    ${now:} stamp resolved again a second later would name another); absolute."""
    from hydra.core.hydra_config import HydraConfig

    HydraConfig.instance().set_config(config)  # as Hydra's run_job does first: ${hydra:...} in the name resolves
    run_dir = str(OmegaConf.select(config, "hydra.run.dir"))
    with read_write(config.hydra.run):
        config.hydra.run.dir = run_dir
    return Path(run_dir).absolute()


class RunFolderLock(HydraCallback):
    """Holds the run folder's lock (`.t2cr-run.lock`) for the whole of a single run, from before Hydra writes
    `.hydra/` and the log there: a second run into the folder is refused in one line (exit 2) and changes nothing.

    Only the job's first process takes it: the DDP ranks it starts (t2cr.launch), and the other ranks of a
    torchrun or SLURM job, share the folder. Multirun jobs each have their own folder and take none. The lock
    goes with the process (also on a kill); a resumed run takes it once the first has ended.
    """

    def __init__(self) -> None:
        self.lock: FileLock | None = None

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not is_rank_zero():
            return
        try:
            self.lock = lock_run_folder(pin_run_dir(config))
        except UserError as refused:
            exit_with_error(config.hydra.job.name, str(refused))  # Hydra would turn an exception into a warning

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None


def build_datamodule(cfg: DictConfig) -> PairDataModule:
    trainer = cfg.get("trainer")  # t2cr-prepare and t2cr-explain have none: one process
    cpus = cpus_per_process(trainer.cpus_per_process, processes_per_node(trainer)) if trainer else None
    datamodule = PairDataModule(to_dataclass(DataConfig, cfg.data), cpus_per_process=cpus)
    datamodule.setup()
    return datamodule


def build_logger(cfg: DictConfig, run_dir: Path, name: str, group: str | None = None, tags: Sequence[str] = (),
                 job_type: str = "train") -> Any:
    """The run's logger; W&B runs get `name`, the sweep's `group`, `job_type` and `tags` (t2cr.sweeps)."""
    kind = cfg.logger.kind
    if kind == "none":
        return False
    if kind == "csv":
        from pytorch_lightning.loggers import CSVLogger

        return CSVLogger(save_dir=str(run_dir), name="csv", version="")
    if kind == "wandb":
        from pytorch_lightning.loggers import WandbLogger

        require("wandb", "logger=wandb (use logger=csv or logger=none to run without it)")

        id_file = run_dir / WANDB_ID_FILE
        if id_file.is_file():
            run_id = id_file.read_text().strip()  # a resumed run continues the same W&B run
        else:
            run_id = uuid.uuid4().hex[:8]
            if is_rank_zero():
                run_dir.mkdir(parents=True, exist_ok=True)
                id_file.write_text(run_id + "\n")
        logger = WandbLogger(
            name=name, project=cfg.logger.project, entity=cfg.logger.entity, save_dir=str(run_dir),
            offline=cfg.logger.mode == "offline", id=run_id, resume="allow",
            tags=[*cfg.logger.tags, *(t for t in tags if t not in cfg.logger.tags)], group=group, job_type=job_type,
            config=OmegaConf.to_container(cfg, resolve=True),
        )
        # Lightning 2.6 always passes anonymous=None to wandb.init, which wandb >= 0.19 answers with a
        # deprecation warning at every run start; leaving the key out is wandb's default
        logger._wandb_init.pop("anonymous", None)
        return logger
    raise ValueError(f"unknown logger.kind {kind!r}; expected wandb, csv or none")


class BestOfValidatedEpochs(ModelCheckpoint):
    """The best epoch by the monitored metric, compared only on epochs that validate.

    Lightning's ModelCheckpoint looks for the metric after every training epoch and warns that it is
    missing on the epochs `trainer.check_val_every_n_epoch` skips, a warning nobody can act on; an epoch
    that is scheduled to validate still gets Lightning's own check (a misspelt monitor is reported)."""

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        every = trainer.check_val_every_n_epoch
        if every is not None and (trainer.current_epoch + 1) % every != 0:
            return
        super().on_train_epoch_end(trainer, pl_module)


class ValidationCurve(Callback):
    """The learning curve: every validated epoch's ranking metrics, in order, kept across a resume.

    The best epoch alone does not say whether a model learns; metrics.json and the run summary show the
    whole curve. Its state travels in the checkpoints, so a resumed run reports the epochs before the stop.
    """

    KEYS = ("val/spearman", "val/spearman_model_space", "val/rl2")

    def __init__(self) -> None:
        self.points: list[dict[str, float]] = []

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        point = {"epoch": trainer.current_epoch}
        point.update({k: float(trainer.callback_metrics[k]) for k in self.KEYS if k in trainer.callback_metrics})
        # a resumed run validates its first epoch again only if that epoch had not finished
        self.points = [p for p in self.points if p["epoch"] != point["epoch"]] + [point]

    def state_dict(self) -> dict[str, Any]:
        return {"points": [dict(p) for p in self.points]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.points = [dict(p) for p in state_dict.get("points", [])]


class _ShowsStepLoss:
    """The bar shows the step's global total loss that the module already read in its one host read per step
    (`T2CRModule.last_loss`), instead of a logged device value it would read again."""

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)  # type: ignore[misc]
        loss = getattr(pl_module, "last_loss", None)
        if loss is not None:
            items["loss"] = f"{loss:.4g}"
        return items


class StepLossRichBar(_ShowsStepLoss, RichProgressBar):
    pass


class StepLossTQDMBar(_ShowsStepLoss, TQDMProgressBar):
    pass


def build_callbacks(cfg: DictConfig, run_dir: Path) -> tuple[list[Callback], ModelCheckpoint, ModelCheckpoint]:
    """`last.ckpt` after every epoch, the best epoch by `callbacks.monitor`, SIGTERM / SIGINT save, the
    resume position, per-step seeds, the learning curve, progress bar, the user's `callbacks.extra`.

    Both checkpoints are written at the end of the training epoch (after its validation): one saved at
    validation end records an unfinished epoch, which a resume would train again.
    """
    directory = str(run_dir / "checkpoints")
    best = BestOfValidatedEpochs(
        dirpath=directory, filename="best-epoch{epoch:03d}", auto_insert_metric_name=False,
        monitor=cfg.callbacks.monitor, mode="max", save_top_k=1, save_last=False, every_n_epochs=1,
        save_on_train_epoch_end=True,
        enable_version_counter=False,  # a resumed run writes its best epoch's file again, never best-...-v1.ckpt
    )
    last = LastEveryEpoch(directory)
    callbacks: list[Callback] = [best, last, SaveOnSigterm(run_dir / "checkpoints" / "last.ckpt"), ResumePosition(),
                                  SeedEachStep(cfg.seed), ValidationCurve()]
    progress = cfg.callbacks.progress
    if progress == "rich":
        callbacks.append(StepLossRichBar())
    elif progress == "tqdm":
        callbacks.append(StepLossTQDMBar())
    callbacks.extend(extra_callbacks(cfg.callbacks.get("extra") or {}))
    return callbacks, last, best


def extra_callbacks(specs: Any) -> list[Callback]:
    """The user's own callbacks: `callbacks.extra.<name>` holds a Hydra `_target_` spec (null leaves it out)."""
    from hydra.utils import instantiate

    made = []
    for name, spec in specs.items():
        if spec is None:
            continue
        if "_target_" not in spec:
            raise ValueError(f"callbacks.extra.{name} has no _target_: give the callback's class, e.g. "
                             f"+callbacks.extra.{name}._target_=pytorch_lightning.callbacks.LearningRateMonitor")
        callback = instantiate(spec)
        if not isinstance(callback, Callback):
            raise TypeError(f"callbacks.extra.{name}: {spec['_target_']} is not a Lightning Callback")
        made.append(callback)
    return made


def build_trainer(cfg: DictConfig, logger: Any, callbacks: list[Callback], run_dir: Path) -> pl.Trainer:
    quiet_third_party()
    t = cfg.trainer
    strategy: Any = t.strategy
    if strategy == "ddp":
        strategy = DDPStrategy(process_group_backend=t.process_group_backend,
                               timeout=timedelta(seconds=t.ddp_timeout_s))
    return pl.Trainer(
        accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes, strategy=strategy,
        precision=t.precision, max_epochs=t.max_epochs, log_every_n_steps=t.log_every_n_steps,
        deterministic=t.deterministic, gradient_clip_val=t.gradient_clip_val,
        benchmark=not t.deterministic,  # cuDNN picks the fastest convolution per shape, unless reproducing
        limit_train_batches=t.limit_train_batches, limit_val_batches=t.limit_val_batches,
        limit_test_batches=t.limit_test_batches, check_val_every_n_epoch=t.check_val_every_n_epoch,
        num_sanity_val_steps=t.num_sanity_val_steps, logger=logger,
        callbacks=[*callbacks, ClipFeatures()],  # clip features once per evaluation / fast ablation store
        enable_progress_bar=cfg.get("callbacks", {}).get("progress", "rich") != "none",
        default_root_dir=str(run_dir), use_distributed_sampler=False,  # our samplers shard themselves
        plugins=[AtomicCheckpointIO(), *([GlobalBatchNorm()] if t.sync_batchnorm else [])],
    )


def write_predictions_csv(path: Path, rows: list[dict[str, float]], keys: list[str]) -> None:
    """One row per query: true and predicted score, the prediction's direct and contrastive parts, and the
    score's scale (DD where the model predicts score / DD, else 1): dividing by it gives the model's own space."""
    lines = ["key,index,true,pred,direct,contrastive,scale"]
    for row in rows:
        lines.append(f"{keys[row['index']]},{row['index']},{row['true']:.6f},{row['pred']:.6f},"
                     f"{row['direct']:.6f},{row['contrastive']:.6f},{row['scale']:g}")
    write_text(path, "\n".join(lines) + "\n", elsewhere=RUN_DIR_ELSEWHERE)


def start_other_ranks(cfg: DictConfig, resolved: dict[str, Any], run_dir: Path, entry_module: str):
    """Under single-node DDP, rank 0 writes the job's resolved config and starts the other ranks on it.

    Every process keeps to its share of the cores (`trainer.cpus_per_process`) in its intra-op threads,
    unless OMP_NUM_THREADS says otherwise. Returns the handle whose `finish()` ends the job's DDP state
    (None when nothing was started).
    """
    trainer = cfg.trainer
    devices = processes_per_node(trainer)
    threads = cpus_per_process(trainer.cpus_per_process, devices)
    if "OMP_NUM_THREADS" not in os.environ:
        import torch

        # only ever fewer: torch's default may already be below the share (physical cores)
        torch.set_num_threads(min(threads, torch.get_num_threads()))
    if trainer.strategy != "ddp" or devices <= 1:
        return None
    if not is_rank_zero():
        exit_with_parent()
        return None
    write_text(run_dir / "config.yaml", OmegaConf.to_yaml(resolved), elsewhere=RUN_DIR_ELSEWHERE)
    return launch_local_ranks(entry_module, run_dir, "config", run_dir, devices, int(trainer.num_nodes),
                              threads=threads)
