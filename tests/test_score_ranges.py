"""Each baseline's score range follows the data (issue 27): USDL's bins and CoRe's score scale come from
data.score_range, which every dataset states; the real annotation files' targets all lie inside it, and a
target outside it (or a CoRe group that would end before it starts) is refused before training."""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf
from test_experiments import compose_train

from t2cr.data.annotations import read_annotations
from t2cr.data.config import DataConfig
from t2cr.data.datamodule import ScoreSpace, refuse_targets_outside
from t2cr.models.core import group_edges

# experiment -> the range its data states (packaged annotation files: MTL-AQA, FineDiving, JIGSAWS)
REAL = {"mtl_aqa_dd": (0.0, 30.0), "mtl_aqa_wo_dd": (0.0, 104.5), "finediving_dn": (0.0, 115.0),
        "finediving_wo_dn": (0.0, 115.0), "jigsaws": (6.0, 30.0)}


def _targets(data: DataConfig) -> dict[str, np.ndarray]:
    space = ScoreSpace(data.divide_by_difficulty)
    return {split: np.array([space.target(s) for s in samples]) for split, samples in read_annotations(data).items()}


@pytest.mark.parametrize("experiment", sorted(REAL))
@pytest.mark.parametrize("method", ["usdl", "core"])
def test_each_baseline_takes_the_datasets_range_and_the_real_targets_fit_it(experiment, method):
    cfg = compose_train(f"experiment={experiment}", f"model={method}", "data.root=/nonexistent")
    OmegaConf.resolve(cfg)
    data = OmegaConf.to_object(cfg.data)
    low, high = REAL[experiment]
    assert tuple(data.score_range) == (low, high)
    if method == "usdl":
        assert (cfg.model.score_min, cfg.model.score_max) == (low, high)
    else:
        assert cfg.model.score_range == high
    targets = _targets(data)
    everything = np.concatenate(list(targets.values()))
    assert low <= everything.min() and everything.max() <= high
    # and the range is not loose: the data reach at least 70 % of it (a 0..30 range for 0..104 scores would not
    # pass the line above; a 0..1000 range for them would saturate nothing but waste USDL's bins)
    assert everything.max() - everything.min() >= 0.7 * (high - low)
    refuse_targets_outside(read_annotations(data), ScoreSpace(data.divide_by_difficulty), data)  # no refusal


def test_aqa7_states_the_normalised_range():
    cfg = compose_train("experiment=aqa7", "model=usdl", "data.root=/nonexistent", "data.annotations=/nonexistent")
    assert list(cfg.data.score_range) == [0.0, 100.0]
    assert (cfg.model.score_min, cfg.model.score_max) == (0.0, 100.0)


def test_core_groups_on_the_real_mtl_aqa_without_dd_are_ordered():
    """Before the range followed the data: score_range 30 against differences up to 104.5 gave a last group
    (36.3, 30.0). Now every group's left edge is below its right one, by hand over the edges."""
    cfg = compose_train("experiment=mtl_aqa_wo_dd", "model=core", "data.root=/nonexistent")
    data = OmegaConf.to_object(cfg.data)
    train = _targets(data)["train"]
    differences = [abs(a - b) for i, a in enumerate(train[:200]) for b in train[i + 1:200]]
    edges = group_edges(differences, 5, cfg.model.score_range).numpy()
    assert all(left <= right for left, right in edges), edges
    with pytest.raises(ValueError, match=r"model.score_range=30 is below the largest training score difference"):
        group_edges(differences, 5, 30.0)


def test_a_target_outside_the_range_is_refused_in_one_line_before_training():
    cfg = compose_train("experiment=mtl_aqa_wo_dd", "data.root=/nonexistent", "data.score_range=[0,30]")
    data = OmegaConf.to_object(cfg.data)
    with pytest.raises(ValueError) as refused:
        refuse_targets_outside(read_annotations(data), ScoreSpace(False), data)
    message = str(refused.value)
    assert "\n" not in message and message.startswith("data.score_range=[0, 30] does not hold")
    assert "set data.score_range" in message


@pytest.mark.parametrize("bad", ["[30,0]", "[5]", "[0,0]"])
def test_a_malformed_range_is_refused(bad):
    from t2cr.config_checks import check_data_config

    cfg = compose_train("data.root=/nonexistent", f"data.score_range={bad}")
    with pytest.raises(ValueError, match=r"data.score_range=.* must be \[low, high\] with high > low"):
        check_data_config(OmegaConf.to_object(cfg.data))


def test_t2cr_train_refuses_a_run_whose_targets_leave_the_range(tiny_synthetic, tmp_path):
    """Through the command: exit 2, one line naming data.score_range, before any step (no checkpoint)."""
    from framework_helpers import run_cli, tiny_overrides

    done = run_cli("train", [*tiny_overrides(tiny_synthetic), "model=usdl", "data.score_range=[0,5]",
                             f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, check=False)
    assert done.returncode == 2, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("t2cr-train: error: data.score_range=[0, 5] does not hold train sample"), last
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("experiment", ["mtl_aqa_dd", "finediving_dn"])
def test_both_diving_readers_refuse_a_score_above_the_configured_marks_times_dd(experiment):
    """data.max_score_per_difficulty bounds score / DD in both diving formats: at the real files' own largest
    ratio (computed here from the samples) everything reads; just below it the sample with that ratio is refused."""
    cfg = compose_train(f"experiment={experiment}", "data.root=x", "model.backbone.checkpoint=c")
    OmegaConf.resolve(cfg)
    data = DataConfig(**OmegaConf.to_container(cfg.data))
    samples = [s for split in read_annotations(data).values() for s in split]
    largest = max(s.score / s.difficulty for s in samples)
    assert 20.0 < largest <= 30.0 + 0.005
    data.max_score_per_difficulty = largest
    read_annotations(data)
    data.max_score_per_difficulty = largest - 0.05
    with pytest.raises(ValueError, match="is above"):
        read_annotations(data)
