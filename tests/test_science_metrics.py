"""The evaluation numbers, the splits they are computed on, and the key of the clip-feature store.

Every expected value comes from an independent computation: scipy.stats.spearmanr for rank correlations,
numpy's arctanh / tanh for the Fisher-z average, the R-l2 formula of Eq. (21) written out, the split files
read with plain `pickle`, and clip starts copied from the paper's text (Sec. 4.5, Table 10).
"""

from __future__ import annotations

import copy
import dataclasses
import pickle
import warnings
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import tiny_config
from scipy import stats

from t2cr import metrics
from t2cr.data.annotations import read_annotations
from t2cr.data.cache import cache_identity
from t2cr.data.config import DataConfig
from t2cr.data.packaged import packaged_root
from t2cr.data.splits import run_samples
from t2cr.features import ClipFeatures, store_path
from t2cr.losses import LossConfig
from t2cr.models.backbones import BackboneConfig, build_backbone
from t2cr.models.t2cr import T2CR
from t2cr.module import OptimConfig, T2CRModule


# ------------------------------------------------------------------------------------------ spearman
def _judged_scores(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Diving-like scores on a half-point grid (many exact ties on both sides)."""
    true = np.round(rng.uniform(30.0, 60.0, n) * 2) / 2
    pred = np.round((true + rng.normal(0.0, 6.0, n)) * 2) / 2
    return pred, true


@pytest.mark.parametrize("seed", [3, 11, 29])
def test_spearman_equals_scipy_spearmanr_on_heavily_tied_scores(seed):
    """Reference: scipy.stats.spearmanr (average ranks for ties)."""
    pred, true = _judged_scores(np.random.default_rng(seed), 60)
    assert len(np.unique(true)) < 50 and len(np.unique(pred)) < 50  # ties on both sides
    assert metrics.spearman(pred, true) == pytest.approx(stats.spearmanr(pred, true).statistic, abs=1e-12)
    # a torch column vector (what the model outputs) gives the same number
    column = torch.tensor(pred, dtype=torch.float32).unsqueeze(1)
    assert metrics.spearman(column, true) == pytest.approx(
        stats.spearmanr(column.double().numpy().ravel(), true).statistic, abs=1e-12)


def test_spearman_of_a_hand_ranked_tied_example():
    """Reference: the average ranks written out by hand, then Pearson's r of Eq. (20) on them."""
    pred = [7.0, 3.0, 3.0, 9.0, 3.0, 1.0]
    true = [2.0, 2.0, 5.0, 8.0, 5.0, 0.0]
    p = np.array([5.0, 3.0, 3.0, 6.0, 3.0, 1.0])  # the three 3.0s share ranks 2, 3, 4
    q = np.array([2.5, 2.5, 4.5, 6.0, 4.5, 1.0])
    pc, qc = p - p.mean(), q - q.mean()
    expected = float(pc @ qc / np.sqrt((pc @ pc) * (qc @ qc)))
    assert metrics.spearman(pred, true) == pytest.approx(expected, abs=1e-12)


# ---------------------------------------------------------------------------------------- R-l2, l2
def test_relative_l2_divides_by_the_given_score_range():
    """Reference: Eq. (21) written out, 100 * mean((|s - s_hat| / (s_max - s_min))^2), for a score range
    (MTL-AQA's 0..104.5) much wider than the span of the evaluated true scores."""
    true = np.array([41.0, 55.5, 63.0, 78.25, 49.0])
    pred = np.array([44.0, 50.5, 70.0, 75.25, 49.5])
    expected = 100 * np.mean(((true - pred) / 104.5) ** 2)
    assert metrics.relative_l2(pred, true, score_range=(0.0, 104.5)) == pytest.approx(expected, rel=1e-12)
    # an offset range: only its width counts
    expected_offset = 100 * np.mean(((true - pred) / 40.0) ** 2)
    assert metrics.relative_l2(pred, true, score_range=(40.0, 80.0)) == pytest.approx(expected_offset, rel=1e-12)
    # no range given: the true scores' own span (78.25 - 41), never the predictions'
    expected_own = 100 * np.mean(((true - pred) / (78.25 - 41.0)) ** 2)
    assert metrics.relative_l2(pred, true) == pytest.approx(expected_own, rel=1e-12)


def test_l2_is_the_mean_squared_error():
    """Reference: the squared errors summed by hand."""
    assert metrics.l2([1.0, 4.0, 10.0], [2.0, 2.0, 7.0]) == pytest.approx((1 + 4 + 9) / 3)


# ------------------------------------------------------------------------------------------ Fisher z
def test_fisher_z_mean_is_tanh_of_the_mean_arctanh():
    """Reference: np.tanh(np.mean(np.arctanh(r))), far from the plain mean for spread correlations."""
    r = np.array([0.95, 0.42, -0.1, 0.78])
    expected = float(np.tanh(np.mean(np.arctanh(r))))
    assert abs(expected - r.mean()) > 0.05  # the test can tell Fisher's z from a plain mean
    assert metrics.fisher_z_mean(r) == pytest.approx(expected, abs=1e-12)
    assert metrics.fisher_z_mean(torch.tensor(r)) == pytest.approx(expected, abs=1e-12)


def test_fisher_z_mean_with_unequal_weights():
    """Reference: np.tanh of the weighted average (np.average) of np.arctanh(r)."""
    r = np.array([0.91, 0.35, 0.67])
    w = np.array([3.0, 1.0, 0.5])
    expected = float(np.tanh(np.average(np.arctanh(r), weights=w)))
    assert abs(expected - np.tanh(np.mean(np.arctanh(r)))) > 0.02  # the weights matter here
    assert metrics.fisher_z_mean(r, weights=w) == pytest.approx(expected, abs=1e-12)
    # scaling every weight changes nothing; a zero weight leaves its correlation out
    assert metrics.fisher_z_mean(r, weights=10 * w) == pytest.approx(expected, abs=1e-12)
    assert metrics.fisher_z_mean(r, weights=[1.0, 0.0, 1.0]) == pytest.approx(
        float(np.tanh((np.arctanh(0.91) + np.arctanh(0.67)) / 2)), abs=1e-12)


# ---------------------------------------------------------------------- per-class epoch metrics (module)
CLASSES = ("diving", "gym_vault", "skiing")
CLASS_SIZES = (5, 8, 13)


@pytest.fixture
def module():
    return T2CRModule(dataclasses.asdict(tiny_config()), dataclasses.asdict(LossConfig()),
                      dataclasses.asdict(OptimConfig()))


#: DD values that are binary fractions: score = target x DD and score / DD are exact, so the ties of the
#: targets survive the round trip (see test_model_space_spearman_keeps_ties_of_score_over_dd for others)
EXACT_DD = (2.5, 3.0, 3.5)


def _class_data(seed: int = 5, difficulties=EXACT_DD):
    """Per sample: class, model-space target and prediction (score / DD), DD; targets tied on a half-point grid."""
    rng = np.random.default_rng(seed)
    group = np.repeat(np.arange(len(CLASS_SIZES)), CLASS_SIZES)
    n = group.shape[0]
    target = np.round(rng.uniform(10.0, 28.0, n) * 2) / 2
    predicted = target + rng.normal(0.0, 3.0, n) * (1 + 2 * group)  # a worse model on the later classes
    difficulty = rng.choice(difficulties, n)
    return group, target, predicted, difficulty


def _epoch_values(module, rows, split="test"):
    module._outputs[split] = rows
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return module._epoch_metrics(split)


def test_per_class_metrics_in_score_space_averaged_through_fisher_z(module):
    """Three classes of different sizes, DD != 1: per class scipy.stats.spearmanr and Eq. (21) on the final
    scores (model output x DD), the classes averaged as arctanh -> mean -> tanh (equal class weights), R-l2
    plainly; the whole split and the model space (score / DD) by scipy too."""
    group, target, predicted, difficulty = _class_data()
    pred, true = predicted * difficulty, target * difficulty
    rows = [{"index": i, "true": float(true[i]), "pred": float(pred[i]), "direct": 0.0, "contrastive": 0.0,
             "scale": float(difficulty[i]), "group": int(group[i])} for i in range(len(group))]
    module.group_names = list(CLASSES)
    values = _epoch_values(module, rows[::-1] + rows[:4])  # order and sampler duplicates must not matter

    rhos = []
    for g, name in enumerate(CLASSES):
        mine = group == g
        rho = stats.spearmanr(pred[mine], true[mine]).statistic
        rhos.append(rho)
        assert values[f"test/{name}/spearman"] == pytest.approx(rho, abs=1e-12)
        span = true[mine].max() - true[mine].min()
        assert values[f"test/{name}/rl2"] == pytest.approx(100 * np.mean(((pred[mine] - true[mine]) / span) ** 2))
        assert values[f"test/{name}/l2"] == pytest.approx(np.mean((pred[mine] - true[mine]) ** 2))
    fisher = float(np.tanh(np.mean(np.arctanh(rhos))))
    sized = float(np.tanh(np.average(np.arctanh(rhos), weights=CLASS_SIZES)))
    assert abs(fisher - sized) > 1e-3 and abs(fisher - np.mean(rhos)) > 1e-4  # each alternative is visible
    assert values["test/spearman_fisher_z"] == pytest.approx(fisher, abs=1e-12)
    assert values["test/rl2_mean"] == pytest.approx(np.mean([values[f"test/{c}/rl2"] for c in CLASSES]))
    assert values["test/spearman"] == pytest.approx(stats.spearmanr(pred, true).statistic, abs=1e-12)
    assert values["test/num_samples"] == len(group)
    model_space = stats.spearmanr(predicted, target).statistic
    assert abs(model_space - values["test/spearman"]) > 1e-3
    assert values["test/spearman_model_space"] == pytest.approx(model_space, abs=1e-12)


def test_evaluation_step_multiplies_the_model_output_back_by_dd(module):
    """The model votes in its own space (score / DD); the rows hold final scores. Reference: scipy on the
    vote times DD against the true final scores, and on the vote itself against score / DD."""
    group, target, predicted, difficulty = _class_data(seed=8)
    module.group_names = list(CLASSES)
    order = np.random.default_rng(1).permutation(len(group))
    for batch_indices in np.array_split(order, 4):
        index = torch.as_tensor(batch_indices)
        batch = {"index": index, "true_score": torch.as_tensor(target[batch_indices] * difficulty[batch_indices]),
                 "scale": torch.as_tensor(difficulty[batch_indices]), "group": torch.as_tensor(group[batch_indices])}
        vote = SimpleNamespace(score=torch.as_tensor(predicted[batch_indices], dtype=torch.float32), direct=None,
                               contrastive=torch.as_tensor(predicted[batch_indices], dtype=torch.float32))
        module.predict_votes = lambda _batch, vote=vote: vote
        module._evaluation_step(batch, "val")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        values = module._epoch_metrics("val")
    pred = predicted.astype(np.float32).astype(np.float64) * difficulty
    true = target * difficulty
    assert values["val/spearman"] == pytest.approx(stats.spearmanr(pred, true).statistic, abs=1e-12)
    assert values["val/l2"] == pytest.approx(np.mean((pred - true) ** 2), rel=1e-9)
    assert values["val/spearman_model_space"] == pytest.approx(stats.spearmanr(predicted, target).statistic,
                                                              abs=1e-12)
    rows = module.predictions["val"]
    assert [r["index"] for r in rows] == list(range(len(group)))
    assert [r["pred"] for r in rows] == pytest.approx(pred.tolist(), rel=1e-12)


def test_model_space_spearman_keeps_ties_of_score_over_dd(module):
    """MTL-AQA's DDs (2.7, 3.3, ...) are not binary fractions: score / DD of two dives with the same judges' sum
    can differ in the last bit. Reference: scipy on the model-space targets themselves (ties kept)."""
    group, target, predicted, difficulty = _class_data(seed=8, difficulties=(1.6, 2.0, 2.7, 3.3, 3.6))
    assert np.any(target * difficulty / difficulty != target)  # the round trip is inexact here
    rows = [{"index": i, "true": float(target[i] * difficulty[i]), "pred": float(predicted[i] * difficulty[i]),
             "direct": 0.0, "contrastive": 0.0, "scale": float(difficulty[i]), "group": -1} for i in range(len(group))]
    values = _epoch_values(module, rows)
    assert values["test/spearman_model_space"] == pytest.approx(stats.spearmanr(predicted, target).statistic,
                                                               abs=1e-9)


# -------------------------------------------------------------------------------------------- splits
def _mtl_config(**overrides) -> DataConfig:
    return DataConfig(**{"name": "mtl_aqa", "format": "mtl_aqa", "root": "unused", "exemplar_rule": "difficulty",
                         "val_fraction": 0.2, "voting_exemplars": 10, **overrides})


@pytest.fixture(scope="module")
def mtl_official():
    return read_annotations(_mtl_config())


def test_split_files_read_give_the_documented_counts_and_keys(mtl_official):
    """Reference: the split files loaded with plain pickle, and the counts the annotation README documents
    (MTL-AQA split 0: 1059 train / 353 test; FineDiving: 2251 / 749)."""
    root = packaged_root()
    for split, count in (("train", 1059), ("test", 353)):
        with open(root / "MTL-AQA" / f"{split}_split_0.pkl", "rb") as handle:
            keys = [tuple(k) for k in pickle.load(handle)]
        assert len(keys) == count
        assert [s.key for s in mtl_official[split]] == keys
    assert not {s.key for s in mtl_official["train"]} & {s.key for s in mtl_official["test"]}
    fine = read_annotations(DataConfig(name="finediving", format="finediving", root="unused"))
    assert (len(fine["train"]), len(fine["test"])) == (2251, 749)


def test_validation_carve_leaves_test_untouched_and_takes_a_stratified_share_of_train(mtl_official):
    """The carve takes from train only: the test split is byte-identical (pickled) to the official one and
    disjoint from the validation split; train + val is the official train. Reference for the share: per
    difficulty pool of n training samples, round(0.2 n) held out, never the pool's last member."""
    official = copy.deepcopy(mtl_official)
    test_bytes = pickle.dumps(official["test"])
    samples = run_samples(_mtl_config(seed=4), official)
    assert pickle.dumps(samples.splits["test"]) == test_bytes
    assert pickle.dumps(official["test"]) == test_bytes  # the input lists are not edited either
    train, val = samples.splits["train"], samples.splits["val"]
    keys = {name: [s.key for s in samples.splits[name]] for name in ("train", "val", "test")}
    assert not set(keys["val"]) & set(keys["test"])
    assert not set(keys["val"]) & set(keys["train"])
    assert sorted(keys["train"] + keys["val"]) == sorted(s.key for s in official["train"])
    # the training order is the official one, minus the held-out samples
    held = set(keys["val"])
    assert keys["train"] == [s.key for s in official["train"] if s.key not in held]
    pools = Counter(s.difficulty for s in official["train"])
    taken = Counter(s.difficulty for s in val)
    left = Counter(s.difficulty for s in train)
    for difficulty, n in pools.items():
        assert taken[difficulty] == min(round(0.2 * n), n - 1), difficulty
        assert left[difficulty] >= 1
    assert len(val) == 211  # the sum of the per-pool shares on MTL-AQA split 0 at 0.2


def test_validation_carve_is_a_function_of_the_seed(mtl_official):
    """Documented as seeded: the same seed carves the same samples, another seed other ones."""
    def carved(seed: int) -> list:
        return [s.key for s in run_samples(_mtl_config(seed=seed), copy.deepcopy(mtl_official)).splits["val"]]

    first = carved(1)
    assert carved(1) == first
    second = carved(2)
    assert len(second) == len(first) and set(second) != set(first)


# ------------------------------------------------------------------------------- feature store key
def _paper_rows(starts, length=16, stride=1):
    return [[s + i * stride for i in range(length)] for s in starts]


def _store_datamodule(identity: dict, resize=(120, 160), crop=(112, 112)):
    """The three things ClipFeatures.store_settings reads from a data module."""
    transform = SimpleNamespace(resize=list(resize), crop=list(crop), interpolation="bilinear")
    return SimpleNamespace(reader=SimpleNamespace(transform=transform), data_identity=lambda: dict(identity))


@pytest.fixture(scope="module")
def shared_backbone():
    torch.manual_seed(7)
    return build_backbone(BackboneConfig(name="tiny", feature_dim=128))


def _key(tmp_path, backbone, identity=None, datamodule=None, **model_overrides):
    model = T2CR(tiny_config(**model_overrides), backbone=backbone)
    datamodule = datamodule or _store_datamodule(identity or cache_identity(_mtl_config()))
    settings = ClipFeatures.store_settings(model, datamodule)
    return store_path(tmp_path, settings), settings


def test_feature_store_records_the_papers_clip_plan(tmp_path, shared_backbone):
    """Reference: the paper's starts for 103 frames (base [0, 10, ..., 80, 86]; 8-clip-avg1 [0, 12, ..., 84];
    8-clip-avg2 [0, 12, 24, 36, 49, 61, 73, 86]), 16 consecutive frames each, base path first."""
    base = [0, 10, 20, 30, 40, 50, 60, 70, 80, 86]
    _, avg1 = _key(tmp_path, shared_backbone, **{"clips.aux_strategy": "8-clip-avg1"})
    assert avg1["clip_frame_indices"] == _paper_rows(base) + _paper_rows(range(0, 85, 12))
    _, avg2 = _key(tmp_path, shared_backbone, **{"clips.aux_strategy": "8-clip-avg2"})
    assert avg2["clip_frame_indices"] == _paper_rows(base) + _paper_rows([0, 12, 24, 36, 49, 61, 73, 86])


@pytest.mark.parametrize("change", [
    {"clips.aux_strategy": "8-clip-avg2"},  # same number of clips, other aux starts
    {"clips.aux_strategy": "8-clip-same"},
    {"clips.aux_strategy": "6-clip-avg1"},  # number of aux clips
    {"clips.aux_strategy": "8-clip-2x"},  # frame stride
    {"clips.base_starts": [0, 9, 18, 27, 36, 45, 54, 63, 72, 87]},  # same count, other base starts
    {"clips.base_starts": None, "clips.num_base_clips": 9},  # number of base clips
    {"clips.clip_length": 12},
], ids=["aux-avg2", "aux-same", "aux-count", "aux-2x", "base-starts", "base-count", "clip-length"])
def test_feature_store_key_changes_with_the_clip_plan(tmp_path, shared_backbone, change):
    reference, _ = _key(tmp_path, shared_backbone)
    changed, _ = _key(tmp_path, shared_backbone, **change)
    assert changed != reference


def test_feature_store_key_ignores_the_heads_and_the_run_settings(tmp_path, shared_backbone):
    """Stored features are the frozen backbone's per-clip outputs: head sizes, seeds, batch sizes, K and the
    validation share do not change them, so they must not change the key (a sweep over them reuses the file)."""
    reference, _ = _key(tmp_path, shared_backbone)
    assert _key(tmp_path, shared_backbone, hidden_dim=32, **{"decoder.layers": 1, "decoder.heads": 2})[0] == reference
    other_run = cache_identity(_mtl_config(seed=9, batch_size=16, voting_exemplars=5, val_fraction=0.0))
    assert _key(tmp_path, shared_backbone, identity=other_run)[0] == reference
    # what the frames are does count
    assert _key(tmp_path, shared_backbone, identity=cache_identity(_mtl_config(num_frames=96)))[0] != reference
    assert _key(tmp_path, shared_backbone,
                datamodule=_store_datamodule(cache_identity(_mtl_config()), crop=(96, 96)))[0] != reference


def test_feature_store_key_follows_the_backbone_weights_and_buffers(tmp_path, shared_backbone):
    """The same weights in another module give the same key; a changed weight or a changed batch-norm
    running statistic (a buffer, not a parameter) gives another."""
    reference, _ = _key(tmp_path, shared_backbone)
    twin = copy.deepcopy(shared_backbone)
    assert _key(tmp_path, twin)[0] == reference
    with torch.no_grad():
        twin.project[0].weight[0, 0] += 1e-3
    assert _key(tmp_path, twin)[0] != reference
    other = copy.deepcopy(shared_backbone)
    norms = [m for m in other.modules() if isinstance(m, torch.nn.BatchNorm3d)]
    norms[0].running_mean[0] += 0.5
    assert _key(tmp_path, other)[0] != reference
