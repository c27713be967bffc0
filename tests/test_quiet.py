"""A first run prints no warning a user cannot act on: each third-party message is handled at its source,
and every other warning still shows."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from pytorch_lightning.demos.boring_classes import BoringModel

from t2cr.quiet import LIGHTNING_LOGGERS, quiet_third_party
from t2cr.run import BestOfValidatedEpochs, build_logger


def test_lightning_tips_are_dropped_and_other_messages_kept(caplog):
    quiet_third_party()
    logger = logging.getLogger(LIGHTNING_LOGGERS[0])
    with caplog.at_level(logging.INFO, logger=LIGHTNING_LOGGERS[0]):
        logger.info("💡 Tip: For seamless cloud logging, try installing litlogger")
        logger.info("GPU available: False, used: False")
    assert [r.getMessage() for r in caplog.records] == ["GPU available: False, used: False"]


def test_the_pytree_deprecation_of_lightning_is_filtered_and_others_are_not():
    quiet_third_party()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        quiet_third_party()  # the filter goes first, as in a run
        message = "`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec)` instead."
        warnings.warn_explicit(message, FutureWarning, "_pytree.py", 21, module="pytorch_lightning.utilities._pytree")
        warnings.warn_explicit(message, FutureWarning, "mine.py", 1, module="t2cr.something")  # not Lightning's
        warnings.warn_explicit("another deprecation", FutureWarning, "_pytree.py", 22,
                               module="pytorch_lightning.utilities._pytree")
    assert [(str(w.message)[:20], w.filename) for w in caught] == [(message[:20], "mine.py"),
                                                                   ("another deprecation", "_pytree.py")]


class _ValidatedEverySecondEpoch(BoringModel):
    def validation_step(self, batch, batch_idx):
        loss = super().validation_step(batch, batch_idx)["x"]
        self.log("val/score", -loss)


def test_best_checkpoint_is_compared_only_on_validated_epochs(tmp_path):
    best = BestOfValidatedEpochs(dirpath=tmp_path, filename="best-{epoch}", monitor="val/score", mode="max",
                                 save_top_k=1, save_on_train_epoch_end=True)
    trainer = pl.Trainer(max_epochs=4, check_val_every_n_epoch=2, callbacks=[best], logger=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_train_batches=2,
                         limit_val_batches=2, num_sanity_val_steps=0, accelerator="cpu")
    torch.manual_seed(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(_ValidatedEverySecondEpoch())
    assert not [w for w in caught if "could not find the monitored key" in str(w.message)]
    assert Path(best.best_model_path).name in {"best-epoch=1.ckpt", "best-epoch=3.ckpt"}


def test_the_wandb_logger_does_not_pass_the_deprecated_anonymous_setting(tmp_path):
    cfg = OmegaConf.create({"logger": {"kind": "wandb", "project": "t2cr", "entity": None, "mode": "offline",
                                       "tags": []}})
    logger = build_logger(cfg, tmp_path, "run", group="sweep/stamp", tags=["table8"])
    assert "anonymous" not in logger._wandb_init
    assert logger._wandb_init["group"] == "sweep/stamp" and logger._wandb_init["tags"] == ["table8"]
