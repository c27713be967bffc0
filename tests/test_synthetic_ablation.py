"""experiments/synthetic_ablation.py: the rankings of a prediction's parts and the table it prints."""

import importlib.util
import math
from pathlib import Path

import pytest
from scipy import stats

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "synthetic_ablation.py"


@pytest.fixture(scope="module")
def ablation():
    spec = importlib.util.spec_from_file_location("synthetic_ablation", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_parts_are_ranked_in_the_models_own_space(ablation, tmp_path):
    # scale 1 and 3 alternate: the plain scores rank by scale, score / scale ranks otherwise
    true = [3.0, 12.0, 5.0, 6.0, 4.0]
    scale = [1, 3, 1, 3, 1]
    direct = [2.9, 9.3, 5.2, 6.3, 3.6]
    lines = ["key,index,true,pred,direct,contrastive,scale"]
    lines += [f"k{i},{i},{t},{d},{d},nan,{s}" for i, (t, d, s) in enumerate(zip(true, direct, scale))]
    path = tmp_path / "predictions_test.csv"
    path.write_text("\n".join(lines) + "\n")
    parts = ablation.part_rankings(path)
    expected = stats.spearmanr([d / s for d, s in zip(direct, scale)], [t / s for t, s in zip(true, scale)])[0]
    assert parts["part/direct"] == pytest.approx(expected)
    assert parts["part/direct"] != pytest.approx(stats.spearmanr(direct, true)[0])
    assert math.isnan(parts["part/contrastive"])  # a part the model lacks


def test_table_gives_mean_and_sample_std_and_a_dash_for_a_missing_part(ablation):
    def run(space, direct):
        return {"test/spearman_model_space": space, "best/test/spearman_model_space": space + 0.01,
                "part/direct": direct, "part/contrastive": space, "test/spearman": 0.9, "best_epoch": 11}

    results = {"T2CR": {0: run(0.8, 0.7), 1: run(0.9, 0.8)},
               "baseline": {0: run(0.6, float("nan")), 1: run(0.7, float("nan"))}}
    text = ablation.table(results, [0, 1])
    t2cr_row = next(line for line in text.splitlines() if line.startswith("| T2CR |"))
    baseline_row = next(line for line in text.splitlines() if line.startswith("| baseline |"))
    assert "0.850 ± 0.071" in t2cr_row and "0.750 ± 0.071" in t2cr_row
    assert "| - |" in baseline_row and "0.650 ± 0.071" in baseline_row
