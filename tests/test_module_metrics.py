"""Epoch metrics of the LightningModule: whole-split, per group (AQA-7 / JIGSAWS), Fisher-z average."""

import dataclasses
import math
import warnings

import numpy as np
import pytest
from helpers import tiny_config
from scipy import stats

from t2cr.losses import LossConfig
from t2cr.module import OptimConfig, T2CRModule


@pytest.fixture
def module():
    return T2CRModule(dataclasses.asdict(tiny_config()), dataclasses.asdict(LossConfig()),
                      dataclasses.asdict(OptimConfig()))


def _rows(rng, group, n, offset):
    true = rng.uniform(0, 100, n)
    pred = true + rng.normal(0, 15, n)
    return [{"index": offset + i, "true": float(t), "pred": float(p), "direct": 0.0, "contrastive": 0.0,
             "scale": 1.0, "group": group} for i, (t, p) in enumerate(zip(true, pred))]


def test_per_group_metrics_and_fisher_z(module):
    rng = np.random.default_rng(0)
    rows = _rows(rng, 0, 9, 0) + _rows(rng, 1, 7, 100)
    module.group_names = ["diving", "gym_vault"]
    module._outputs["test"] = list(reversed(rows)) + rows[:3]  # order and duplicates must not matter
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        values = module._epoch_metrics("test")
    assert values["test/num_samples"] == 16
    rhos = []
    for g, name in enumerate(module.group_names):
        part = [r for r in rows if r["group"] == g]
        true, pred = np.array([r["true"] for r in part]), np.array([r["pred"] for r in part])
        rho = stats.spearmanr(pred, true).statistic
        rhos.append(rho)
        assert values[f"test/{name}/spearman"] == pytest.approx(rho)
        rl2 = np.mean(((pred - true) / (true.max() - true.min())) ** 2) * 100
        assert values[f"test/{name}/rl2"] == pytest.approx(rl2)
    z = np.mean(np.arctanh(rhos))
    assert values["test/spearman_fisher_z"] == pytest.approx(math.tanh(z))
    assert values["test/rl2_mean"] == pytest.approx((values["test/diving/rl2"] + values["test/gym_vault/rl2"]) / 2)
    everything = stats.spearmanr([r["pred"] for r in rows], [r["true"] for r in rows]).statistic
    assert values["test/spearman"] == pytest.approx(everything)


def test_single_group_has_no_group_keys(module):
    rng = np.random.default_rng(1)
    module._outputs["val"] = _rows(rng, -1, 8, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        values = module._epoch_metrics("val")
    assert set(values) == {"val/spearman", "val/rl2", "val/l2", "val/num_samples"}
