"""T2CRModule: the LightningModule that orchestrates training and K-exemplar evaluation.

The nn.Modules compute (t2cr.models, t2cr.losses); this class wires them to batches, the optimiser
and the logs. Epoch metrics are computed once per epoch over the whole split: every process keeps
(index, prediction, truth) triples, they are gathered, duplicates dropped, and the metrics
computed from the complete list, so DDP gives exactly the single-process numbers.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist

from t2cr import metrics
from t2cr.config import to_dataclass
from t2cr.losses import LossConfig, T2CRLoss
from t2cr.models.t2cr import T2CR, T2CRConfig
from t2cr.reliability import check_finite


@dataclass
class OptimConfig:
    backbone_lr: float = 1e-4  # Sec. 4.3
    head_lr: float = 1e-3
    weight_decay: float = 0.0


class T2CRModule(pl.LightningModule):
    def __init__(self, model: dict[str, Any], loss: dict[str, Any], optim: dict[str, Any]) -> None:
        super().__init__()
        # plain containers only: DictConfig or dataclasses in hparams break `fit(ckpt_path=...)` under
        # torch >= 2.6 (weights_only unpickling)
        self.save_hyperparameters({"model": dict(model), "loss": dict(loss), "optim": dict(optim)})
        self.model_config = to_dataclass(T2CRConfig, model)
        self.loss_config = to_dataclass(LossConfig, loss)
        self.optim_config = to_dataclass(OptimConfig, optim)
        self.model = T2CR(self.model_config)
        self.criterion = T2CRLoss(self.loss_config)
        self._outputs: dict[str, list[dict[str, float]]] = {"val": [], "test": []}
        self.predictions: dict[str, list[dict[str, float]]] = {}  # last epoch's rows per split
        self.metrics: dict[str, dict[str, float]] = {}  # last epoch's metrics per split
        self.best: dict[str, float] = {}
        self.group_names: list[str] = []  # AQA-7 classes / JIGSAWS tasks, set from the data module
        self._resumed_batches = 0  # batches of the current epoch done before a mid-epoch resume

    @classmethod
    def from_checkpoint(cls, path: str, map_location: str | torch.device = "cpu") -> T2CRModule:
        """Rebuild from one of our checkpoints; the I3D weights come from it, not from Kinetics."""
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
        hparams = checkpoint["hyper_parameters"]
        model = dict(hparams["model"])
        model["backbone"] = {**model["backbone"], "checkpoint": None, "random_init": True}
        module = cls(model, hparams["loss"], hparams["optim"])
        module.load_state_dict(checkpoint["state_dict"])
        module.best = dict(checkpoint.get("t2cr_best", {}))
        module.exemplar_bank = checkpoint.get("t2cr_exemplar_bank")
        return module

    def setup(self, stage: str) -> None:
        """Refuse to run when the processes of a DDP job hold different configurations."""
        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return
        digest = hashlib.sha256(json.dumps(self.hparams_initial, sort_keys=True, default=str).encode()).hexdigest()
        everyone: list[str] = [None] * dist.get_world_size()  # type: ignore[list-item]
        dist.all_gather_object(everyone, digest)
        if len(set(everyone)) != 1:
            raise RuntimeError(f"the DDP processes hold different model/loss/optim configurations "
                               f"(hashes {everyone}); start every rank from the same resolved config")

    # --------------------------------------------------------------------------------- training
    def training_step(self, batch: dict[str, torch.Tensor], batch_index: int) -> torch.Tensor:
        output = self.model(batch["query"], batch["exemplar"])
        terms = self.criterion(output, batch["query_score"], batch["exemplar_score"],
                               batch["query_label"], batch["exemplar_label"])
        check_finite(terms, self.global_step)
        size = batch["query"].shape[0]
        for name, value in terms.items():
            self.log(f"train/loss_{name}", value.detach(), on_step=True, on_epoch=True, batch_size=size,
                     prog_bar=name == "total")
        return terms["total"]

    def on_train_start(self) -> None:
        """After a mid-epoch resume (SIGTERM checkpoint), skip the batches the epoch already took.

        Called once per fit, after the loaders exist and before the resumed epoch iterates (Lightning
        does not call on_train_epoch_start for an epoch it resumes in the middle).
        """
        done, self._resumed_batches = self._resumed_batches, 0
        sampler = getattr(self.trainer.train_dataloader, "sampler", None)
        if done and done < self.trainer.num_training_batches and hasattr(sampler, "skip_batches"):
            sampler.skip_batches(done)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        groups = self.model.parameter_groups(self.optim_config.backbone_lr, self.optim_config.head_lr)
        return torch.optim.Adam(groups, weight_decay=self.optim_config.weight_decay)

    # ------------------------------------------------------------------------------- evaluation
    def predict_votes(self, batch: dict[str, torch.Tensor]):
        """One backbone pass per video: the B queries and their B x K exemplars in one call."""
        queries, exemplars = batch["query"], batch["exemplars"]
        b, k = exemplars.shape[:2]
        videos = torch.cat([queries, exemplars.flatten(0, 1)])
        encoding = self.model.encode(*self.model.extract_clip_features(videos))
        query = encoding.select(slice(0, b))
        exemplar_tokens = encoding.tokens[b:].reshape(b, k, *encoding.tokens.shape[1:])
        return self.model.vote(query, exemplar_tokens, batch["exemplar_scores"], batch["exemplar_mask"])

    def _evaluation_step(self, batch: dict[str, torch.Tensor], split: str) -> None:
        vote = self.predict_votes(batch)
        scale = batch["scale"].to(vote.score.dtype)
        for i in range(vote.score.shape[0]):
            self._outputs[split].append({
                "index": int(batch["index"][i]),
                "true": float(batch["true_score"][i]),
                "pred": float(vote.score[i] * scale[i]),
                "direct": float(vote.direct[i] * scale[i]) if vote.direct is not None else float("nan"),
                "contrastive": float(vote.contrastive[i] * scale[i]),
                "scale": float(scale[i]),
                "group": int(batch["group"][i]) if "group" in batch else -1,
            })

    def validation_step(self, batch: dict[str, torch.Tensor], batch_index: int) -> None:
        self._evaluation_step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_index: int) -> None:
        self._evaluation_step(batch, "test")

    def _gather(self, split: str) -> list[dict[str, float]]:
        rows = self._outputs[split]
        self._outputs[split] = []
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            everyone: list[list[dict[str, float]]] = [None] * dist.get_world_size()  # type: ignore[list-item]
            dist.all_gather_object(everyone, rows)
            rows = [row for part in everyone for row in part]
        unique = {row["index"]: row for row in rows}  # drop any sampler padding
        return [unique[i] for i in sorted(unique)]

    def _epoch_metrics(self, split: str) -> dict[str, float]:
        rows = self._gather(split)
        self.predictions[split] = rows
        if len(rows) < 2:
            return {}
        values = {**self._split_metrics(rows, split), f"{split}/num_samples": float(len(rows))}
        groups = sorted({r["group"] for r in rows if r["group"] >= 0})
        if len(groups) > 1:
            # several AQA-7 classes / JIGSAWS tasks: per group, then averaged as the papers do
            # (correlations through Fisher's z, R-l2 plainly)
            per_group = {}
            for g in groups:
                name = self.group_names[g] if g < len(self.group_names) else str(g)
                per_group[name] = self._split_metrics([r for r in rows if r["group"] == g], f"{split}/{name}")
                values.update(per_group[name])
            values[f"{split}/spearman_fisher_z"] = metrics.fisher_z_mean(
                [m[f"{split}/{n}/spearman"] for n, m in per_group.items()])
            values[f"{split}/rl2_mean"] = sum(m[f"{split}/{n}/rl2"] for n, m in per_group.items()) / len(per_group)
        if any(r["scale"] != 1.0 for r in rows):
            # ranking in the model's own score space (score / DD): what the model learnt beyond the
            # difficulty, which alone already ranks final scores well
            values[f"{split}/spearman_model_space"] = metrics.spearman(
                [r["pred"] / r["scale"] for r in rows], [r["true"] / r["scale"] for r in rows])
        self.metrics[split] = values
        # identical on every process (computed from the gathered list): no sync needed
        for name, value in values.items():
            self.log(name, value, sync_dist=False, rank_zero_only=False)
        return values

    @staticmethod
    def _split_metrics(rows: list[dict[str, float]], prefix: str) -> dict[str, float]:
        pred = [r["pred"] for r in rows]
        true = [r["true"] for r in rows]
        if len(rows) < 2:
            return {f"{prefix}/spearman": float("nan"), f"{prefix}/rl2": float("nan"),
                    f"{prefix}/l2": metrics.l2(pred, true)}
        values = {
            f"{prefix}/spearman": metrics.spearman(pred, true),
            f"{prefix}/rl2": metrics.relative_l2(pred, true) if max(true) > min(true) else float("nan"),
            f"{prefix}/l2": metrics.l2(pred, true),
        }
        return values

    def on_validation_epoch_end(self) -> None:
        values = self._epoch_metrics("val")
        if self.trainer.sanity_checking or not values:
            return
        if values["val/spearman"] >= self.best.get("val/spearman", float("-inf")):
            self.best = {**values, "epoch": float(self.current_epoch)}
        for name, value in self.best.items():
            self.log(f"best/{name}", value, sync_dist=False, rank_zero_only=False)

    def on_test_epoch_end(self) -> None:
        self._epoch_metrics("test")

    # ----------------------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["t2cr_best"] = dict(self.best)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.best = dict(checkpoint.get("t2cr_best", {}))
        progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_loop.batch_progress", {})
        self._resumed_batches = int(progress.get("current", {}).get("completed", 0))


def module_from_config(model: T2CRConfig | dict, loss: LossConfig | dict, optim: OptimConfig | dict) -> T2CRModule:
    as_dict = (lambda c: asdict(c) if not isinstance(c, dict) else c)
    return T2CRModule(as_dict(model), as_dict(loss), as_dict(optim))
