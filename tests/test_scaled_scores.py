"""A method whose score range follows the data learns the same on data whose scores are scaled (issue 27):
the synthetic dives with every final score x 10/3 (model space 0-100, AQA-7's range) against the same dives
on 0-30. `data.synthetic.score_scale` alone changes: data.score_range follows it, and USDL's bins and CoRe's
score scale follow data.score_range, so the scaled run's predictions are the plain run's times the scale (up
to the final scores' 2-decimal rounding). MUSDL does not apply: the judges' marks stay 0-10."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from framework_helpers import read_metrics, run_cli, tiny_overrides

from t2cr.data.config import SyntheticConfig
from t2cr.data.synthetic import ensure_synthetic_dataset

SCALE = 10 / 3


def _predictions(run_dir: Path) -> list[tuple[float, float]]:
    with (run_dir / "predictions_test.csv").open() as handle:
        return [(float(row["true"]), float(row["pred"])) for row in csv.DictReader(handle)]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["usdl", "core"])
def test_a_baseline_learns_the_same_on_scaled_scores(method, tmp_path):
    runs = {}
    for name, scale in (("plain", 1.0), ("scaled", SCALE)):
        root = tmp_path / f"data_{name}"
        ensure_synthetic_dataset(SyntheticConfig(root=str(root), num_train=12, num_test=7, num_events=2, height=32,
                                                 width=32, frames_per_dive=16, score_scale=scale))
        runs[name] = tmp_path / name
        run_cli("train", [*tiny_overrides(root), f"model={method}", f"data.synthetic.score_scale={scale!r}",
                          "test_best=false", f"hydra.run.dir={runs[name]}"], cwd=tmp_path)
    plain, scaled = _predictions(runs["plain"]), _predictions(runs["scaled"])
    assert len(plain) == len(scaled) == 7
    for (true_p, pred_p), (true_s, pred_s) in zip(plain, scaled):
        assert true_s == pytest.approx(true_p * SCALE, abs=0.01)  # the data: only the scale differs
        # the model: the same prediction on the scaled axis (USDL: the same bin; CoRe: float rounding)
        assert pred_s == pytest.approx(pred_p * SCALE, rel=1e-3, abs=0.05), (plain, scaled)
    assert max(p for _, p in scaled) > 30  # beyond the old fixed 0-30 range: not saturated
    a, b = read_metrics(runs["plain"]), read_metrics(runs["scaled"])
    # the same ranking (NaN for both where 2 tiny epochs leave every prediction in one bin)
    assert b["test/spearman_model_space"] == pytest.approx(a["test/spearman_model_space"], abs=1e-6, nan_ok=True)
