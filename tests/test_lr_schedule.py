"""`optim.lr_schedule`: constant (the paper) or a per-epoch cosine decay of both parameter groups to 0."""

import dataclasses
import math
from types import SimpleNamespace

import pytest
import torch
from helpers import tiny_config

from t2cr.losses import LossConfig
from t2cr.module import OptimConfig, T2CRModule


def _module(**optim) -> T2CRModule:
    module = T2CRModule(dataclasses.asdict(tiny_config()), dataclasses.asdict(LossConfig()),
                        dataclasses.asdict(OptimConfig(**optim)))
    module._trainer = SimpleNamespace(max_epochs=4)  # all configure_optimizers reads of the trainer
    return module


def test_constant_schedule_is_a_bare_adam_at_the_two_rates():
    optimizer = _module(backbone_lr=1e-4, head_lr=1e-3).configure_optimizers()
    assert isinstance(optimizer, torch.optim.Adam)
    assert [group["lr"] for group in optimizer.param_groups] == [1e-4, 1e-3]


def test_cosine_schedule_decays_both_groups_to_zero_by_the_last_epoch():
    config = _module(backbone_lr=1e-3, head_lr=3e-4, lr_schedule="cosine").configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert config["lr_scheduler"]["interval"] == "epoch"
    seen = []
    for _ in range(4):
        seen.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    for epoch, rates in enumerate(seen):
        factor = (1 + math.cos(math.pi * epoch / 4)) / 2
        assert rates == pytest.approx([1e-3 * factor, 3e-4 * factor]), epoch
    assert [group["lr"] for group in optimizer.param_groups] == pytest.approx([0.0, 0.0], abs=1e-12)


def test_an_unknown_schedule_is_refused_naming_the_key():
    with pytest.raises(ValueError, match=r"optim\.lr_schedule is 'step'; expected 'constant' or 'cosine'"):
        OptimConfig(lr_schedule="step")


def test_resuming_a_cosine_schedule_with_other_epochs_is_refused(tmp_path):
    """The restored scheduler keeps the horizon it was built with: a longer run would see its rates rise again."""
    from t2cr.cli.train import refuse_changed_model

    config = _module(lr_schedule="cosine").configure_optimizers()
    model = dataclasses.asdict(tiny_config())
    path = tmp_path / "last.ckpt"
    torch.save({"hyper_parameters": {"model": model},
                "lr_schedulers": [config["lr_scheduler"]["scheduler"].state_dict()]}, path)
    refuse_changed_model(str(path), model, max_epochs=4)  # the planned horizon: fine
    with pytest.raises(ValueError, match=r"over 4 epochs .*resume with trainer.max_epochs=4"):
        refuse_changed_model(str(path), model, max_epochs=6)
    torch.save({"hyper_parameters": {"model": model}}, path)  # constant rates: any number of epochs
    refuse_changed_model(str(path), model, max_epochs=6)
