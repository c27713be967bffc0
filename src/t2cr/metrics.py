"""Evaluation metrics for action quality assessment (Sec. 4.2 of the T2CR paper).

* :func:`spearman` -- Spearman's rank correlation (Eq. 20 applied to average ranks).
* :func:`relative_l2` -- relative l2 distance R-l2 (Eq. 21), multiplied by 100 as papers print it.
* :func:`l2` -- mean squared error.
* :func:`fisher_z_mean` -- average of correlations across action classes via Fisher's z.

All functions accept Python sequences, numpy arrays or torch tensors (any device / dtype, detached
internally), compute in float64 and return Python floats.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["fisher_z_mean", "l2", "relative_l2", "spearman"]

#: Correlations are clipped to [-FISHER_CLIP, FISHER_CLIP] before arctanh in :func:`fisher_z_mean`.
FISHER_CLIP = 0.999999


def _as_1d(values: Any, name: str) -> np.ndarray:
    """Convert a sequence / array / tensor to a 1-D float64 numpy array (size-1 axes are squeezed)."""
    try:
        import torch

        if isinstance(values, torch.Tensor):
            values = values.detach().to(device="cpu", dtype=torch.float64).numpy()
    except ImportError:  # pragma: no cover - torch is a dependency, but metrics do not need it
        pass
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim > 1:
        arr = arr.squeeze()
        if arr.ndim == 0:
            arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (or have only size-1 extra axes), got shape {arr.shape}")
    return arr


def _pair(pred: Any, true: Any, min_len: int) -> tuple[np.ndarray, np.ndarray]:
    p = _as_1d(pred, "pred")
    t = _as_1d(true, "true")
    if p.shape[0] != t.shape[0]:
        raise ValueError(f"pred and true have different lengths ({p.shape[0]} vs {t.shape[0]})")
    if p.shape[0] < min_len:
        raise ValueError(f"need at least {min_len} value(s), got {p.shape[0]}")
    return p, t


def _average_ranks(a: np.ndarray) -> np.ndarray:
    """1-based ranks, ties get the average of the ranks they span (like scipy.stats.rankdata)."""
    order = np.argsort(a, kind="mergesort")
    sorted_a = a[order]
    # Start index of every run of equal values in the sorted array.
    new_run = np.empty(a.shape[0], dtype=bool)
    new_run[0] = True
    new_run[1:] = sorted_a[1:] != sorted_a[:-1]
    run_id = np.cumsum(new_run) - 1
    starts = np.flatnonzero(new_run)
    ends = np.append(starts[1:], a.shape[0])  # exclusive
    run_rank = (starts + ends + 1) / 2.0  # mean of the 1-based ranks starts+1 .. ends
    ranks = np.empty(a.shape[0], dtype=np.float64)
    ranks[order] = run_rank[run_id]
    return ranks


def _pearson(p: np.ndarray, q: np.ndarray) -> float:
    """Eq. (20); NaN when one side has zero variance."""
    pc = p - p.mean()
    qc = q - q.mean()
    denom = math.sqrt(float(np.dot(pc, pc)) * float(np.dot(qc, qc)))
    if denom == 0.0:
        return float("nan")
    r = float(np.dot(pc, qc)) / denom
    return max(-1.0, min(1.0, r))


def spearman(pred: Any, true: Any) -> float:
    """Spearman's rank correlation between ``pred`` and ``true`` (Eq. 20 on average ranks).

    Equal to ``scipy.stats.spearmanr(pred, true).statistic``. Ties get average ranks.

    Raises:
        ValueError: lengths differ or fewer than 2 values.

    Returns:
        The correlation in [-1, 1]; ``nan`` (as scipy) when one side is constant -- the correlation
        is undefined there -- or when an input contains NaN/inf.
    """
    p, t = _pair(pred, true, min_len=2)
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(t))):
        return float("nan")
    return _pearson(_average_ranks(p), _average_ranks(t))


def relative_l2(pred: Any, true: Any, score_range: tuple[float, float] | None = None) -> float:
    """Relative l2 distance of Eq. (21), times 100: ``100 * mean((|s - s_hat| / (s_max - s_min))^2)``.

    Args:
        pred: predicted scores ``s_hat``.
        true: ground-truth scores ``s``.
        score_range: ``(s_min, s_max)``. When None, ``max(true) - min(true)`` is used (what the
            reference implementations of CoRe / TSA / T2CR do, per evaluated set or action class).

    Raises:
        ValueError: lengths differ, empty input, or the range ``s_max - s_min`` is not > 0.
    """
    p, t = _pair(pred, true, min_len=1)
    if score_range is None:
        s_min, s_max = float(t.min()), float(t.max())
    else:
        if len(score_range) != 2:
            raise ValueError(f"score_range must be (s_min, s_max), got {score_range!r}")
        s_min, s_max = float(score_range[0]), float(score_range[1])
    span = s_max - s_min
    if not span > 0.0:
        raise ValueError(
            f"relative_l2 needs a positive score range, got s_max - s_min = {span} "
            f"(s_min={s_min}, s_max={s_max})"
        )
    return float(np.mean((np.abs(t - p) / span) ** 2) * 100.0)


def l2(pred: Any, true: Any) -> float:
    """Mean squared error ``mean((pred - true)^2)``."""
    p, t = _pair(pred, true, min_len=1)
    return float(np.mean((p - t) ** 2))


def fisher_z_mean(correlations: Any, weights: Sequence[float] | Any | None = None) -> float:
    """Average of correlations through Fisher's z: ``tanh(sum_k w_k arctanh(r_k) / sum_k w_k)``.

    Used for the average Spearman correlation across action classes (AQA-7). The correlations are
    clipped to ``[-0.999999, 0.999999]`` first so that a perfect correlation of +-1 (arctanh = +-inf)
    still gives a finite, meaningful average instead of +-1 or NaN.

    Args:
        correlations: correlations r_k in [-1, 1].
        weights: optional non-negative weights (e.g. per-class sample counts) with a positive sum;
            equal weights by default.

    Returns:
        The averaged correlation; NaN if a correlation is NaN.
    """
    r = _as_1d(correlations, "correlations")
    if r.shape[0] == 0:
        raise ValueError("fisher_z_mean needs at least one correlation")
    z = np.arctanh(np.clip(r, -FISHER_CLIP, FISHER_CLIP))
    if weights is None:
        return float(np.tanh(np.mean(z)))
    w = _as_1d(weights, "weights")
    if w.shape[0] != r.shape[0]:
        raise ValueError(f"weights and correlations have different lengths ({w.shape[0]} vs {r.shape[0]})")
    if np.any(w < 0) or not np.all(np.isfinite(w)):
        raise ValueError("weights must be finite and non-negative")
    total = float(w.sum())
    if not total > 0.0:
        raise ValueError("weights must have a positive sum")
    return float(np.tanh(np.dot(w, z) / total))
