"""Tests for t2cr.metrics against scipy and hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch

from t2cr.metrics import fisher_z_mean, l2, relative_l2, spearman


@pytest.mark.parametrize("seed", range(5))
def test_spearman_matches_scipy_with_ties(seed):
    rng = np.random.default_rng(seed)
    true = np.round(rng.normal(50, 10, size=40) / 5) * 5  # coarse rounding -> many ties
    pred = np.round(true + rng.normal(0, 8, size=40))  # integer rounding -> some ties
    assert len(np.unique(true)) < len(true)
    expected = scipy.stats.spearmanr(pred, true).statistic
    assert spearman(pred, true) == pytest.approx(expected, abs=1e-12)


def test_spearman_matches_eq20_on_manual_average_ranks():
    pred = [3.0, 1.0, 2.0, 2.0, 5.0]
    true = [1.0, 2.0, 2.0, 2.0, 4.0]
    # Average ranks written out by hand.
    p = np.array([4.0, 1.0, 2.5, 2.5, 5.0])
    q = np.array([1.0, 3.0, 3.0, 3.0, 5.0])
    pc, qc = p - p.mean(), q - q.mean()
    expected = (pc * qc).sum() / math.sqrt((pc**2).sum() * (qc**2).sum())
    assert spearman(pred, true) == pytest.approx(expected, abs=1e-12)


def test_spearman_accepts_lists_numpy_tensors():
    rng = np.random.default_rng(0)
    a = rng.normal(size=20)
    b = a + rng.normal(size=20)
    ref = spearman(a, b)
    assert isinstance(ref, float)
    assert spearman(a.tolist(), b.tolist()) == pytest.approx(ref, abs=1e-12)
    assert spearman(torch.tensor(a), torch.tensor(b)) == pytest.approx(ref, abs=1e-12)
    # float32 tensor with a trailing size-1 axis (model outputs of shape (N, 1)), requiring grad.
    ta = torch.tensor(a, dtype=torch.float32, requires_grad=True).unsqueeze(1)
    assert spearman(ta, b) == pytest.approx(ref, abs=1e-12)


def test_spearman_perfect_and_reversed():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)


def test_spearman_constant_input_is_nan():
    assert math.isnan(spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
    assert math.isnan(spearman([1.0, 2.0, 3.0], [5.0, 5.0, 5.0]))


def test_spearman_errors():
    with pytest.raises(ValueError, match="at least 2"):
        spearman([1.0], [2.0])
    with pytest.raises(ValueError, match="different lengths"):
        spearman([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="1-D"):
        spearman(np.zeros((3, 2)), np.zeros((3, 2)))


def test_relative_l2_default_range_from_true():
    true = [10.0, 20.0, 30.0, 50.0]
    pred = [12.0, 18.0, 35.0, 50.0]
    # range = 50 - 10 = 40; errors 2, 2, 5, 0
    expected = ((2 / 40) ** 2 + (2 / 40) ** 2 + (5 / 40) ** 2 + 0.0) / 4 * 100
    assert relative_l2(pred, true) == pytest.approx(expected, rel=1e-12)
    assert relative_l2(torch.tensor(pred), np.array(true)) == pytest.approx(expected, rel=1e-12)


def test_relative_l2_with_score_range():
    true = [10.0, 20.0, 30.0, 50.0]
    pred = [12.0, 18.0, 35.0, 50.0]
    expected = ((2 / 100) ** 2 + (2 / 100) ** 2 + (5 / 100) ** 2) / 4 * 100
    assert relative_l2(pred, true, score_range=(0.0, 100.0)) == pytest.approx(expected, rel=1e-12)


def test_relative_l2_zero_range_errors():
    with pytest.raises(ValueError, match="positive score range"):
        relative_l2([1.0, 2.0], [3.0, 3.0])
    with pytest.raises(ValueError, match="positive score range"):
        relative_l2([1.0, 2.0], [1.0, 3.0], score_range=(5.0, 5.0))
    with pytest.raises(ValueError, match="different lengths"):
        relative_l2([1.0, 2.0], [1.0, 2.0, 3.0])


def test_l2():
    assert l2([1.0, 2.0, 3.0], [1.0, 4.0, 0.0]) == pytest.approx((0 + 4 + 9) / 3)
    assert isinstance(l2(torch.tensor([1.0]), [2.0]), float)
    with pytest.raises(ValueError):
        l2([], [])


@pytest.mark.parametrize("r", [0.0, 0.3, -0.7, 0.95])
def test_fisher_z_mean_single(r):
    assert fisher_z_mean([r]) == pytest.approx(r, abs=1e-12)


def test_fisher_z_mean_symmetric_pair_is_zero():
    assert fisher_z_mean([0.5, -0.5]) == pytest.approx(0.0, abs=1e-15)


def test_fisher_z_mean_hand_values():
    # atanh(0.9) = ln(19)/2, atanh(0.5) = ln(3)/2, so the mean z is ln(57)/4 and
    # tanh(z) = (e^{2z} - 1) / (e^{2z} + 1) with e^{2z} = sqrt(57).
    s = math.sqrt(57.0)
    assert fisher_z_mean([0.9, 0.5]) == pytest.approx((s - 1) / (s + 1), abs=1e-12)
    assert fisher_z_mean(np.array([0.9, 0.5])) == pytest.approx(0.7660773415974732, abs=1e-12)
    # weights (3, 1): z = (3 ln 19 + ln 3) / 8, e^{2z} = (19^3 * 3)^(1/4) = 20577^(1/4).
    w = 20577.0**0.25
    assert fisher_z_mean([0.9, 0.5], weights=[3, 1]) == pytest.approx((w - 1) / (w + 1), abs=1e-12)
    assert fisher_z_mean(torch.tensor([0.9, 0.5]), weights=torch.tensor([3.0, 1.0])) == pytest.approx(
        (w - 1) / (w + 1), abs=1e-6
    )
    # equal weights == no weights
    assert fisher_z_mean([0.9, 0.5], weights=[2, 2]) == pytest.approx(fisher_z_mean([0.9, 0.5]), abs=1e-15)


def test_fisher_z_mean_clips_perfect_correlations():
    out = fisher_z_mean([1.0, 1.0])
    assert math.isfinite(out)
    assert out == pytest.approx(0.999999, abs=1e-12)
    assert fisher_z_mean([1.0, -1.0]) == pytest.approx(0.0, abs=1e-12)


def test_fisher_z_mean_errors():
    with pytest.raises(ValueError):
        fisher_z_mean([])
    with pytest.raises(ValueError, match="different lengths"):
        fisher_z_mean([0.1, 0.2], weights=[1.0])
    with pytest.raises(ValueError, match="non-negative"):
        fisher_z_mean([0.1, 0.2], weights=[1.0, -1.0])
    with pytest.raises(ValueError, match="positive sum"):
        fisher_z_mean([0.1, 0.2], weights=[0.0, 0.0])
