"""Clip features computed once per video instead of once per use.

Two users:
- evaluation (exact): the backbone is deterministic in evaluation (eval mode, frozen batch norm, centre
  crop), so the clip features of every query and every voting exemplar an evaluation reads are computed
  once at its start, each process taking a disjoint share, then gathered; the K pairs of a query run only
  the light heads. The official code runs I3D 2 x K times per test video instead.
- the fast ablation mode (a deviation from the paper, which fine-tunes I3D): with the backbone frozen,
  every video's features are computed once, without training augmentation, and kept on disk under a
  digest of the backbone weights and the data settings, so a whole ablation sweep trains only the heads.
  One job computes a store while holding `<store>.lock`; the other jobs of a sweep that want it wait for
  that job, then read its file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from filelock import Timeout
from pytorch_lightning.callbacks import Callback
from torch import nn

from t2cr.io import atomic_write, file_lock

log = logging.getLogger(__name__)

FEATURE_CACHE_VERSION = 1
STORE_ELSEWHERE = "set runtime.feature_cache_dir elsewhere"  # the advice of a store that could not be written


class MissingFeaturesError(KeyError):
    """A batch asked for a video whose clip features were not computed."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class FeatureTable:
    """Clip features (V, M + N, F) of a run's videos, indexed by video id; `present` marks computed rows."""

    def __init__(self, num_videos: int, num_clips: int, dim: int, device: torch.device | str = "cpu") -> None:
        self.features = torch.zeros(num_videos, num_clips, dim, device=device)
        self.present = torch.zeros(num_videos, dtype=torch.bool, device=device)

    def put(self, ids: torch.Tensor, features: torch.Tensor) -> None:
        ids = ids.to(self.features.device, torch.long)
        self.features[ids] = features.to(self.features.device, self.features.dtype)
        self.present[ids] = True

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """Features of the ids, any shape of ids -> ids.shape + (M + N, F)."""
        flat = ids.reshape(-1).to(self.features.device, torch.long)
        missing = flat[~self.present[flat]]
        if missing.numel():
            raise MissingFeaturesError(
                f"no clip features for video ids {sorted(set(missing.tolist()))[:10]}: they were not among the "
                "videos computed at the start of this loop (a bug: the data module's evaluation_videos must "
                "list every video its loaders hand out)")
        return self.features[flat].reshape(*ids.shape, *self.features.shape[1:])

    def missing(self, ids: Iterable[int]) -> list[int]:
        present = self.present.cpu()
        return [i for i in ids if not bool(present[i])]


# ------------------------------------------------------------------------------------------ computing
def share(ids: Sequence[int], rank: int, world_size: int) -> list[int]:
    """The disjoint part of `ids` process `rank` computes (every id exactly once over all processes)."""
    return list(ids[rank::world_size])


def _distributed() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@torch.no_grad()
def compute_features(model: nn.Module, loader: Iterable[dict], prepare: Callable[[dict], dict],
                     device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, features) of every video of a VideoDataset loader; `model` is a T2CR in eval mode."""
    ids, rows = [], []
    for batch in loader:
        batch = {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        batch = prepare(batch)  # uint8 frames -> normalised crops, on the device
        rows.append(model.video_clip_features(batch["video"]).float())
        ids.append(batch["video_id"].to(device))
    if not rows:
        dim = getattr(model.config.backbone, "feature_dim", 0)
        return (torch.zeros(0, dtype=torch.long, device=device),
                torch.zeros(0, model.num_clips, dim, device=device))
    return torch.cat(ids), torch.cat(rows)


def gather_rows(ids: torch.Tensor, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every process's (ids, features) on every process; shares may differ in length."""
    _, world = _distributed()
    if world == 1:
        return ids, features
    count = torch.tensor([ids.shape[0]], device=ids.device)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    longest = int(max(c.item() for c in counts))
    padded_ids = torch.zeros(longest, dtype=ids.dtype, device=ids.device)
    padded_ids[: ids.shape[0]] = ids
    padded = torch.zeros(longest, *features.shape[1:], dtype=features.dtype, device=features.device)
    padded[: features.shape[0]] = features
    all_ids = [torch.zeros_like(padded_ids) for _ in range(world)]
    all_features = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(all_ids, padded_ids)
    dist.all_gather(all_features, padded)
    sizes = [int(c.item()) for c in counts]
    return (torch.cat([part[:n] for part, n in zip(all_ids, sizes)]),
            torch.cat([part[:n] for part, n in zip(all_features, sizes)]))


def fill_table(table: FeatureTable, ids: Sequence[int], model: nn.Module,
               make_loader: Callable[[list[int]], Iterable[dict]], prepare: Callable[[dict], dict],
               device: torch.device | str) -> int:
    """Compute the features of `ids` (the same list on every process), each process a disjoint share.

    Returns the number of videos this process ran through the backbone.
    """
    rank, world = _distributed()
    mine = share(list(ids), rank, world)
    got_ids, got = compute_features(model, make_loader(mine), prepare, device)
    all_ids, all_features = gather_rows(got_ids, got)
    table.put(all_ids, all_features)
    return len(mine)


# ------------------------------------------------------------------------------------ stored on disk
def backbone_digest(backbone: nn.Module) -> str:
    """sha256 of the backbone's weights and buffers: stored features are valid for these weights only."""
    digest = hashlib.sha256()
    for name, tensor in sorted(backbone.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def feature_store_settings(backbone: nn.Module, clip_frame_indices: torch.Tensor, data_identity: dict[str, Any],
                           resize: Sequence[int], crop: Sequence[int],
                           interpolation: str = "bilinear") -> dict[str, Any]:
    """Everything stored features depend on; its digest names the store file."""
    settings = {
        "version": FEATURE_CACHE_VERSION,
        "backbone": backbone_digest(backbone),
        "clip_frame_indices": clip_frame_indices.tolist(),
        "data": data_identity,
        "resize": [int(v) for v in resize],
        "crop": [int(v) for v in crop],
        "read": "evaluation (centre crop, no temporal jitter, no flip)",
    }
    if interpolation != "bilinear":  # named only when not the default: stores made before it keep their names
        settings["interpolation"] = interpolation
    return settings


def store_path(cache_dir: str | os.PathLike, settings: dict[str, Any]) -> Path:
    text = json.dumps(settings, sort_keys=True, default=str)
    return Path(cache_dir).expanduser() / f"clip_features-{hashlib.sha256(text.encode()).hexdigest()[:20]}.pt"


def load_store(path: Path, settings: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Key -> features (M + N, F) from a store file; empty when there is none. A file made for other
    settings (a digest collision, a hand-copied file) is refused rather than read."""
    if not path.is_file():
        return {}
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("settings") != json.loads(json.dumps(settings, default=str)):
        raise ValueError(f"{path} holds clip features made for other settings; delete it or point "
                         "runtime.feature_cache_dir elsewhere")
    return dict(zip(payload["keys"], payload["features"].unbind(0)))


def save_store(path: Path, settings: dict[str, Any], rows: dict[str, torch.Tensor]) -> None:
    """Write atomically (temporary file, then rename): a crash never leaves a truncated store."""
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = sorted(rows)
    payload = {"settings": json.loads(json.dumps(settings, default=str)), "keys": keys,
               "features": torch.stack([rows[k].float().cpu() for k in keys])}
    atomic_write(path, lambda temporary: torch.save(payload, temporary), elsewhere=STORE_ELSEWHERE)


@contextmanager
def computing_store(path: Path) -> Iterator[None]:
    """Hold `<store>.lock` (the store's file name + `.lock`) while reading, computing and writing the store at
    `path`: the jobs of a sweep that want the same store compute it once; the others wait here, then read it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = file_lock(path.with_name(path.name + ".lock"))
    try:
        lock.acquire(blocking=False)
    except Timeout:
        log.info("another job is computing the clip features in %s: waiting for it, then reading them", path)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def broadcast_rows(ids: torch.Tensor, features: torch.Tensor, shape_tail: Sequence[int],
                   device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank 0's (ids, features) on every process (what rank 0 read from the store file)."""
    rank, world = _distributed()
    if world == 1:
        return ids, features
    count = torch.tensor([ids.shape[0] if rank == 0 else 0], device=device)
    dist.broadcast(count, 0)
    n = int(count.item())
    if rank != 0:
        ids = torch.zeros(n, dtype=torch.long, device=device)
        features = torch.zeros(n, *shape_tail, device=device)
    ids, features = ids.to(device), features.to(device)
    dist.broadcast(ids, 0)
    dist.broadcast(features, 0)
    return ids, features


# ------------------------------------------------------------------------------------ the Lightning side
class ClipFeatures(Callback):
    """Fills `pl_module.features` (a FeatureTable the module looks clip features up in by video id).

    - At the start of every evaluation loop (`runtime.eval_features_once`): the features of every video the
      loop reads, once, each process a disjoint share; dropped at its end (the backbone trains on).
    - Once per run in the fast ablation mode (`runtime.stored_features`): every video's, read from the store
      file or computed and stored.

    It talks to the data module (`use_stored_features`, `evaluation_videos`, `video_loader`, `crop_flip_normalise`,
    `videos`, `data_identity`) so that the LightningModule only sees tensors. How many batches a loop reads
    comes from Lightning (`num_val_batches`, after limit_val_batches and friends), gathered over processes.
    """

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "use_stored_features"):
            return  # plain loaders: frames in every batch, the backbone runs per batch
        runtime = pl_module.runtime
        datamodule.use_stored_features(train=runtime.stored_features,
                                       evaluation=runtime.eval_features_once or runtime.stored_features)
        if runtime.stored_features and pl_module.features is None:
            pl_module.features = self._stored(trainer, pl_module, datamodule)

    # ------------------------------------------------------------------------------ evaluation loops
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        counts = trainer.num_sanity_val_batches if trainer.sanity_checking else trainer.num_val_batches
        self._for_evaluation(trainer, pl_module, "val", counts)

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._for_evaluation(trainer, pl_module, "test", trainer.num_test_batches)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._drop(pl_module)

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._drop(pl_module)

    @staticmethod
    def _drop(pl_module: pl.LightningModule) -> None:
        if not pl_module.runtime.stored_features:  # stale once the backbone trains on; stored ones stay
            pl_module.features = None

    def _for_evaluation(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str,
                        counts: Sequence[int | float]) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        if pl_module.runtime.stored_features or datamodule is None or datamodule.frames_in["eval"]:
            return
        mine = int(counts[0]) if counts else 0
        # every process's batch count (they differ when the split does not divide evenly): the same list of
        # videos on every process
        everyone = trainer.strategy.all_gather(torch.tensor(mine, device=pl_module.device))
        per_rank = [int(c) for c in everyone.reshape(-1).tolist()]
        ids = datamodule.evaluation_videos(stage, per_rank, with_exemplars=pl_module.model.votes_with_exemplars)
        table = self._new_table(pl_module, datamodule, pl_module.device)
        with trainer.precision_plugin.forward_context():
            self._fill(pl_module, datamodule, table, ids, pl_module.device)
        pl_module.features = table

    # ------------------------------------------------------------------------------ fast ablation mode
    def _stored(self, trainer: pl.Trainer, pl_module: pl.LightningModule, datamodule) -> FeatureTable:
        """Every video's features, from the store file or computed once and stored.

        Between jobs, rank 0 holds the store's lock from reading it to writing it (`computing_store`): a job
        that finds it held waits, then reads what the other job wrote. Its own ranks wait for it in the
        broadcast of what it read, as they wait for any read of the store."""
        settings = self.store_settings(pl_module.model, datamodule)
        path = store_path(pl_module.runtime.feature_cache_dir, settings)
        between_jobs = computing_store(path) if trainer.global_rank == 0 else contextlib.nullcontext()
        with between_jobs:
            return self._read_or_compute(trainer, pl_module, datamodule, settings, path)

    def _read_or_compute(self, trainer: pl.Trainer, pl_module: pl.LightningModule, datamodule,
                         settings: dict[str, Any], path: Path) -> FeatureTable:
        device = trainer.strategy.root_device
        model = pl_module.model
        model.backbone.to(device)
        keys = [s.key_str for s in datamodule.videos]
        rank = trainer.global_rank
        table = self._new_table(pl_module, datamodule, device)
        stored = load_store(path, settings) if rank == 0 else {}
        known = [i for i, key in enumerate(keys) if key in stored]
        rows = (torch.stack([stored[keys[i]] for i in known]) if known
                else torch.zeros(0, model.num_clips, model.config.backbone.feature_dim))
        ids, rows = broadcast_rows(torch.tensor(known, dtype=torch.long), rows, rows.shape[1:], device)
        table.put(ids, rows)
        missing = table.missing(range(len(keys)))
        if missing:
            log.info("computing the frozen backbone's clip features of %d videos (fast ablation mode) into %s",
                     len(missing), path)
            with torch.no_grad():
                self._fill(pl_module, datamodule, table, missing, device)
            if rank == 0:
                features = table.features.cpu()
                save_store(path, settings, {**stored, **{keys[i]: features[i] for i in missing}})
        else:
            log.info("clip features of all %d videos read from %s (fast ablation mode)", len(keys), path)
        return table

    # ------------------------------------------------------------------------------ shared
    @staticmethod
    def store_settings(model: nn.Module, datamodule) -> dict[str, Any]:
        """What stored clip features depend on: this backbone's weights, the clip plan, the data's reads."""
        transform = datamodule.reader.transform
        return feature_store_settings(model.backbone, model.clip_frame_indices, datamodule.data_identity(),
                                      transform.resize, transform.crop, transform.interpolation)

    @staticmethod
    def _new_table(pl_module: pl.LightningModule, datamodule, device: torch.device) -> FeatureTable:
        return FeatureTable(len(datamodule.videos), pl_module.model.num_clips,
                            pl_module.model.config.backbone.feature_dim, device)

    @staticmethod
    def _fill(pl_module: pl.LightningModule, datamodule, table: FeatureTable, ids: list[int],
              device: torch.device) -> None:
        model = pl_module.model
        was_training = model.training
        model.eval()
        try:
            batch_size = pl_module.runtime.feature_batch_size
            pl_module.feature_passes += fill_table(
                table, ids, model, lambda mine: datamodule.video_loader(mine, batch_size), datamodule.crop_flip_normalise,
                device)
        finally:
            model.train(was_training)
