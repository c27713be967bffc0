"""T2CRModule: the LightningModule that orchestrates training and K-exemplar evaluation.

The nn.Modules compute (t2cr.models, t2cr.losses); this class wires them to batches, the optimiser
and the logs. Epoch metrics are computed once per epoch over the whole split: every process keeps
(index, prediction, truth) triples, they are gathered, duplicates dropped, and the metrics
computed from the complete list, so DDP gives exactly the single-process numbers.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytorch_lightning as pl
import torch
from torchmetrics.utilities.distributed import gather_all_tensors

from t2cr import metrics
from t2cr.config import to_dataclass
from t2cr.distributed import gather_batch
from t2cr.losses import LossConfig
from t2cr.methods import method_of
from t2cr.reliability import StepStatus, check_finite

if TYPE_CHECKING:
    from t2cr.features import FeatureTable

log = logging.getLogger(__name__)

EXEMPLAR_BANK_KEY = "t2cr_exemplar_bank"  # the checkpoint entry t2cr.bank.ExemplarBank writes

# one evaluated query: what the metrics and predictions_*.csv are computed from
ROW_FIELDS = ("index", "true", "pred", "direct", "contrastive", "scale", "group")


@dataclass
class OptimConfig:
    """Adam, I3D at 1e-4 and the rest at 1e-3, no weight decay (Sec. 4.3). The schema of conf/optim."""

    backbone_lr: float = 1e-4  # Sec. 4.3
    head_lr: float = 1e-3
    weight_decay: float = 0.0
    # "constant" (the paper) or "cosine": both rates decay to 0 over trainer.max_epochs, stepped once per epoch
    # (ours, for short runs from scratch whose last epoch should be their best, not a swing of a high rate)
    lr_schedule: str = "constant"

    def __post_init__(self) -> None:
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"optim.lr_schedule is {self.lr_schedule!r}; expected 'constant' or 'cosine'")


@dataclass
class RuntimeConfig:
    """How the work is done. Only `stored_features` changes the experiment (and is labelled a deviation).

    The schema of conf/runtime: speed options only, the numbers stay the paper's."""

    # evaluation runs the backbone once per video (queries and voting exemplars), then the heads per
    # pair; false runs it on the query and all K exemplars of every batch (the naive path; same numbers)
    eval_features_once: bool = True
    # fast ablation mode, a DEVIATION from the paper (which fine-tunes I3D): needs
    # model.backbone.trainable=false; every video's clip features are computed once, from its evaluation
    # read (no temporal jitter, crop or flip augmentation), kept in feature_cache_dir, and training runs
    # only the heads
    stored_features: bool = False  # true only through runtime=fast_ablation
    feature_cache_dir: str = "data/feature_cache"
    feature_batch_size: int = 4  # videos per backbone call while computing clip features
    channels_last: bool = True  # backbone in channels-last 3D layout (measured 1.3-1.5x faster on CPU: README, Performance)
    compile: bool = False  # torch.compile the backbone


class T2CRModule(pl.LightningModule):
    def __init__(self, model: dict[str, Any], loss: dict[str, Any], optim: dict[str, Any],
                 runtime: dict[str, Any] | None = None, run: dict[str, Any] | None = None,
                 weights_from_checkpoint: bool = False) -> None:
        """`run`: the settings that give the scores their meaning ({"data": resolved data config, "seed",
        "matmul_precision", "precision"}), kept in the checkpoint so that evaluation uses them (see
        `run_settings`). `weights_from_checkpoint`: every weight comes from one of our checkpoints (evaluation,
        scoring), so no Kinetics I3D file is read (`from_checkpoint`)."""
        super().__init__()
        runtime = dict(runtime or {})
        # plain containers only: DictConfig or dataclasses in hparams break `fit(ckpt_path=...)` under
        # torch >= 2.6 (weights_only unpickling)
        self.save_hyperparameters({"model": dict(model), "loss": dict(loss), "optim": dict(optim),
                                   "runtime": runtime, "run": None if run is None else dict(run)})
        if weights_from_checkpoint:
            model = {**model, "backbone": {**model["backbone"], "checkpoint": None, "random_init": True}}
        # the method (model.method: t2cr | usdl | musdl | core) gives the schema, the nn.Module and the loss
        method = method_of(model)
        self.model_config = to_dataclass(method.config, model)
        self.loss_config = to_dataclass(LossConfig, loss)
        # a module exists only when a loss or the score uses it: DDP refuses parameters without a
        # gradient, and a classifier nothing trains is no part of the experiment (Table 7 "Cross-Entropy")
        self.model_config.action_classifier = self.model_config.action_classifier and self.loss_config.use_cls
        self.optim_config = to_dataclass(OptimConfig, optim)
        self.runtime = to_dataclass(RuntimeConfig, runtime)
        if self.runtime.stored_features and self.model_config.backbone.trainable:
            raise ValueError("runtime.stored_features=true needs a frozen backbone: set model.backbone.trainable=false "
                             "(runtime=fast_ablation sets both)")
        self.model = method.model(self.model_config)
        if self.runtime.channels_last:
            self.model.use_channels_last()
        if self.runtime.compile:
            self.model.backbone.compile()
        # clip features looked up by video id, filled by the t2cr.features.ClipFeatures callback (evaluation
        # loops, fast ablation mode); None: the batches carry frames
        self.features: FeatureTable | None = None
        self.feature_passes = 0  # videos this process ran through the backbone to fill `features`
        self.criterion = method.loss(self.loss_config, self.model, gather_batch)
        self._outputs: dict[str, list[dict[str, float]]] = {"val": [], "test": []}
        self.predictions: dict[str, list[dict[str, float]]] = {}  # last epoch's rows per split
        self.metrics: dict[str, dict[str, float]] = {}  # last epoch's metrics per split
        self.best: dict[str, float] = {}
        self.group_names: list[str] = []  # AQA-7 classes / JIGSAWS tasks, set from the data module
        self.exemplar_bank: dict[str, Any] | None = None  # from a checkpoint: what t2cr-score votes with
        # the stop signals this process received (StepStatus.SIGNALS order; summed over processes each step), the
        # one the processes agreed on in the last step, and that step's global total loss (host values)
        self.stop_signals = torch.zeros(len(StepStatus.SIGNALS))
        self.agreed_stop, self.last_loss = 0, None

    @classmethod
    def from_checkpoint(cls, path: str, map_location: str | torch.device = "cpu",
                        runtime: dict[str, Any] | None = None) -> T2CRModule:
        """Rebuild from one of our checkpoints (Lightning's `load_from_checkpoint`); the I3D weights come from
        it, not from Kinetics. `runtime` replaces the run's own runtime options (how evaluation computes, not
        what)."""
        overrides: dict[str, Any] = {"weights_from_checkpoint": True}
        if runtime is not None:
            overrides["runtime"] = runtime
        return cls.load_from_checkpoint(path, map_location=map_location, weights_only=True, **overrides)

    @property
    def run_settings(self) -> dict[str, Any] | None:
        """The run's data settings, seed and matmul precision; None for checkpoints written before they were kept."""
        return self.hparams.get("run")

    def setup(self, stage: str) -> None:
        self._check_same_config()
        if stage == "fit" and self._trainer is not None and self.trainer.datamodule is not None:
            # statistics of the training data a method needs before its first step (CoRe's groups), or its
            # refusal of data it cannot use (MUSDL without judge scores); nothing for T2CR
            self.model.prepare(self.trainer.datamodule)

    def _check_same_config(self) -> None:
        """Refuse to run when the processes of a DDP job hold different configurations (every process sees
        every digest, so all of them refuse together instead of some waiting in a collective)."""
        if self._trainer is None or self.trainer.world_size == 1:
            return
        digest = hashlib.sha256(json.dumps(self.hparams_initial, sort_keys=True, default=str).encode()).digest()
        mine = torch.tensor(list(digest), dtype=torch.int64, device=self.device)
        everyone = self.trainer.strategy.all_gather(mine)  # (processes, 32)
        if not bool((everyone == mine).all()):
            raise RuntimeError("the DDP processes hold different model/loss/optim configurations; start every "
                               "rank from the same resolved config")

    # --------------------------------------------------------------------------------- inputs
    def _videos(self, batch: dict[str, torch.Tensor], name: str) -> torch.Tensor:
        """The batch's videos under `name`, or their clip features looked up by video id."""
        if name in batch:
            return batch[name]
        if self.features is None:
            raise RuntimeError(f"the batch carries no {name!r} frames and no clip features were computed")
        return self.features.lookup(batch[f"{name}_video" if name != "exemplars" else "exemplar_videos"])

    # --------------------------------------------------------------------------------- training
    def loss_terms(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The weighted loss terms of one training batch (this process's share of the global batch)."""
        scores = ({"query_score": batch["query_score"], "exemplar_score": batch["exemplar_score"]}
                  if self.model.pair_reads_scores else {})
        output = self.model(self._videos(batch, "query"), self._videos(batch, "exemplar"),
                            self_difference=self.loss_config.use_self_reg, **scores)
        # per-judge scores travel only where the data has them (MUSDL reads them)
        judges = {key: batch[key] for key in ("query_judges", "exemplar_judges") if key in batch}
        return self.criterion(output, batch["query_score"], batch["exemplar_score"],
                              batch["query_label"], batch["exemplar_label"], **judges)

    def training_step(self, batch: dict[str, torch.Tensor], batch_index: int) -> torch.Tensor:
        terms = self.loss_terms(batch)
        # one collective and one host read per step: the global batch's loss terms (the mean over processes:
        # logged, and checked, so that a non-finite term on any process stops every process at this step) and
        # the stop signals any process received (acted on before the next batch: t2cr.reliability.SaveOnSigterm)
        names = list(terms)
        world = self.trainer.world_size
        if self.stop_signals.device != self.device:  # once: a plain attribute (DDP would overwrite a buffer)
            self.stop_signals = self.stop_signals.to(self.device)
        local = torch.cat([torch.stack([terms[name].detach().float() for name in names]), self.stop_signals])
        summed = self.trainer.strategy.reduce(local, reduce_op="sum") if world > 1 else local
        values = summed[:len(names)] / world
        status = StepStatus.read(values[names.index("total")], values, summed[len(names):])
        if not status.finite:
            check_finite(dict(zip(names, values)), self.global_step)  # names the terms (reads them again)
        self.agreed_stop, self.last_loss = status.stop, status.loss
        size = batch["query_score"].shape[0] * world
        for name, value in zip(names, values):
            # the progress bar shows last_loss (already on the host) instead of reading a logged value again
            self.log(f"train/loss_{name}", value, on_step=True, on_epoch=True, batch_size=size)
        return terms["total"]

    def ask_to_stop(self, signum: int) -> None:
        """This process received a stop signal: the next step's collective tells every process."""
        self.stop_signals[StepStatus.SIGNALS.index(signum)] = 1.0

    def configure_optimizers(self) -> Any:
        groups = self.model.parameter_groups(self.optim_config.backbone_lr, self.optim_config.head_lr)
        optimizer = torch.optim.Adam(groups, weight_decay=self.optim_config.weight_decay)
        if self.optim_config.lr_schedule == "constant":
            return optimizer
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, self.trainer.max_epochs))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": cosine, "interval": "epoch"}}

    # ------------------------------------------------------------------------------- evaluation
    def predict_votes(self, batch: dict[str, torch.Tensor]):
        """Scores of B queries against their K exemplars each.

        From frames: one backbone call on the B queries and their B x K exemplars. From clip features
        computed at the start of the loop: the heads only. A method that votes without exemplars
        (`votes_with_exemplars` False: USDL, MUSDL) encodes the B queries alone.
        """
        queries = self._videos(batch, "query")
        if not self.model.votes_with_exemplars:
            query = self.model.encode(*self.model.clip_features(queries))
            return self.model.vote(query, None, batch["exemplar_scores"], batch["exemplar_mask"])
        exemplars = self._videos(batch, "exemplars")
        b, k = batch["exemplar_scores"].shape
        inputs = torch.cat([queries, exemplars.flatten(0, 1)])
        encoding = self.model.encode(*self.model.clip_features(inputs))
        query = encoding.select(slice(0, b))
        exemplar_tokens = encoding.tokens[b:].reshape(b, k, *encoding.tokens.shape[1:])
        return self.model.vote(query, exemplar_tokens, batch["exemplar_scores"], batch["exemplar_mask"])

    def _evaluation_step(self, batch: dict[str, torch.Tensor], split: str) -> None:
        vote = self.predict_votes(batch)
        direct = vote.direct if vote.direct is not None else torch.full_like(vote.score, float("nan"))
        # one transfer to the host per batch (the metadata never left it: PairDataModule.HOST_KEYS)
        outputs = torch.stack([vote.score, direct, vote.contrastive]).detach().to("cpu", torch.float64)
        scale = batch["scale"].to("cpu", torch.float64)
        score, direct, contrastive = (outputs * scale).tolist()
        groups = batch["group"].tolist() if "group" in batch else [-1] * len(score)
        for i, (index, true) in enumerate(zip(batch["index"].tolist(), batch["true_score"].tolist())):
            self._outputs[split].append({"index": int(index), "true": float(true), "pred": score[i],
                                         "direct": direct[i], "contrastive": contrastive[i],
                                         "scale": float(scale[i]), "group": int(groups[i])})

    def validation_step(self, batch: dict[str, torch.Tensor], batch_index: int) -> None:
        self._evaluation_step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_index: int) -> None:
        self._evaluation_step(batch, "test")

    def _gather(self, split: str) -> list[dict[str, float]]:
        """Every process's rows, sampler padding dropped: the whole split once, in index order."""
        rows = self._outputs[split]
        self._outputs[split] = []
        if self._trainer is not None and self.trainer.world_size > 1:
            # shares differ in length; torchmetrics' gather pads and trims them
            mine = torch.tensor([[row[c] for c in ROW_FIELDS] for row in rows], dtype=torch.float64,
                                device=self.device).reshape(-1, len(ROW_FIELDS))
            table = torch.cat(gather_all_tensors(mine)).cpu().tolist()
            rows = [dict(zip(ROW_FIELDS, values)) for values in table]
            for row in rows:
                row["index"], row["group"] = int(row["index"]), int(row["group"])
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
            # difficulty, which alone already ranks final scores well. Rounded: 84.15 / 3.3 is 25.500000000000004
            # in floating point, and equal targets must tie (MTL-AQA's test split: 47 distinct, 76 unrounded)
            values[f"{split}/spearman_model_space"] = metrics.spearman(
                [round(r["pred"] / r["scale"], 9) for r in rows], [round(r["true"] / r["scale"], 9) for r in rows])
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
        self.exemplar_bank = checkpoint.get(EXEMPLAR_BANK_KEY)
