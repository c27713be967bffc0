"""The exemplar bank a checkpoint carries, so that a new video is scored without the training data.

For every exemplar pool a seeded set of K training exemplars: their keys, their scores in the
model's score space and their backbone clip features (computed with the checkpoint's own weights).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from t2cr.data.datamodule import PairDataModule
from t2cr.data.exemplars import stable_rng
from t2cr.data.frames import linspace_indices
from t2cr.data.transforms import TransformConfig, VideoTransform
from t2cr.models.t2cr import T2CR
from t2cr.module import EXEMPLAR_BANK_KEY

BANK_KEY = EXEMPLAR_BANK_KEY


@torch.no_grad()
def build_exemplar_bank(model: T2CR, datamodule: PairDataModule, k: int, seed: int,
                        device: torch.device | str = "cpu") -> dict[str, Any]:
    datamodule.setup()
    config = datamodule.config
    was_training = model.training
    model.eval().to(device)
    pools: dict[str, Any] = {}
    for pool_key, members in datamodule.pools.pools.items():
        picked = stable_rng(seed, "bank", pool_key).choice(len(members), size=min(k, len(members)), replace=False)
        samples = [datamodule.pools.train[members[i]] for i in sorted(picked)]
        videos = torch.stack([datamodule.reader(s, None) for s in samples]).to(device)
        base, aux = model.extract_clip_features(videos)
        pools[str(pool_key)] = {
            "keys": [s.key_str for s in samples],
            "scores": torch.tensor([datamodule.scores.target(s) for s in samples], dtype=torch.float32),
            "base": base.float().cpu(),
            "aux": None if aux is None else aux.float().cpu(),
        }
    model.train(was_training)
    return {
        "rule": datamodule.pools.rule,
        "divide_by_difficulty": config.divide_by_difficulty,
        "num_frames": config.num_frames,
        "transform": asdict(config.transform),
        "pools": pools,
    }


class ExemplarBank(Callback):
    """The checkpoints a run is scored with carry the exemplar bank of their own weights: the final epoch's
    (`last.ckpt`) and each new best epoch's (`best-*.ckpt`).

    Built in `on_save_checkpoint` under the run's precision (its features are then those the in-training
    evaluation computed), once per global step, so `last.ckpt` and `best-*.ckpt` of one epoch share it. The
    epochs between and a SIGTERM save in the middle of an epoch carry none: the bank costs a backbone pass
    over K exemplars per pool. Only rank 0 writes checkpoints, so only rank 0 builds it.
    """

    def __init__(self, k: int, seed: int) -> None:
        self.k, self.seed = k, seed
        self._built: tuple[int, dict[str, Any]] | None = None  # (global step, bank)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        if not trainer.is_global_zero or trainer.interrupted or trainer.datamodule is None:
            return
        if not (self._final(trainer) or self._new_best(trainer)):
            return
        if self._built is None or self._built[0] != trainer.global_step:
            with trainer.precision_plugin.forward_context():
                bank = build_exemplar_bank(pl_module.model, trainer.datamodule, self.k, self.seed, pl_module.device)
            self._built = (trainer.global_step, bank)
        checkpoint[BANK_KEY] = self._built[1]

    @staticmethod
    def _final(trainer: pl.Trainer) -> bool:
        last_epoch = trainer.max_epochs is not None and trainer.current_epoch + 1 >= trainer.max_epochs > 0
        last_step = trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps
        return last_epoch or last_step or trainer.should_stop

    @staticmethod
    def _new_best(trainer: pl.Trainer) -> bool:
        # a monitored ModelCheckpoint names its new best file before writing it: this save is that file
        return any(cb.monitor and cb.best_model_path and not Path(cb.best_model_path).exists()
                   for cb in trainer.checkpoint_callbacks)


def resolve_pool(bank: dict[str, Any], pool: object) -> str:
    names = list(bank["pools"])
    if pool is None:
        if len(names) == 1:
            return names[0]
        raise ValueError(f"this model compares against exemplars of the same {bank['rule']}: name the pool "
                         f"with pool=<value>; available: {', '.join(sorted(names))}")
    for candidate in (str(pool), str(float(pool)) if _is_number(pool) else None):
        if candidate in bank["pools"]:
            return candidate
    raise ValueError(f"pool {pool!r} is not in the checkpoint's exemplar bank ({bank['rule']}); "
                     f"available: {', '.join(sorted(names))}")


def _is_number(value: object) -> bool:
    try:
        float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True


@torch.no_grad()
def score_frames(model: T2CR, bank: dict[str, Any], frames: np.ndarray, pool: object = None,
                 difficulty: float | None = None, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Score one video (uint8 frames (T, H, W, 3), the whole clip of one action) against the bank."""
    pool_name = resolve_pool(bank, pool)
    entry = bank["pools"][pool_name]
    transform = VideoTransform(TransformConfig(**bank["transform"]))
    video = transform(frames[linspace_indices(len(frames), bank["num_frames"])], None).unsqueeze(0)
    model.eval().to(device)
    query = model.encode(*model.extract_clip_features(video.to(device)))
    exemplar_aux = None if entry["aux"] is None else entry["aux"].to(device)
    exemplars = model.encode(entry["base"].to(device), exemplar_aux)
    scores = entry["scores"].to(device).unsqueeze(0)
    vote = model.vote(query, exemplars.tokens.unsqueeze(0), scores)
    scale = 1.0
    if bank["divide_by_difficulty"]:
        if difficulty is None:
            if bank["rule"] != "difficulty":
                raise ValueError("this model predicts score / difficulty: give the dive's difficulty=<DD>")
            difficulty = float(pool_name)
        scale = float(difficulty)
    as_float = (lambda t: None if t is None else float(t[0]) * scale)
    return {
        "score": as_float(vote.score),
        "direct": as_float(vote.direct),
        "contrastive": as_float(vote.contrastive),
        "pool": pool_name,
        "difficulty": difficulty,
        "exemplars": [
            {"key": key, "score": float(s) * scale, "delta": float(d) * scale}
            for key, s, d in zip(entry["keys"], entry["scores"].tolist(), vote.deltas[0].tolist())
        ],
    }
