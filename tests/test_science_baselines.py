"""The baselines' inputs and losses: USDL / MUSDL soft labels and KL (Tang et al., CVPR 2020), CoRe's groups,
targets and tree inputs (Yu et al., ICCV 2021), at non-default settings.

References: scipy.stats.norm.pdf for the Gaussian soft labels, KL(target || prediction) summed by hand with
0 log 0 = 0, CoRe's group bounds and in-group positions worked out by hand from a known list of score
differences (Group_helper's quantile rule), and the tree's input read with a forward hook.
"""

from __future__ import annotations

import dataclasses
import math
from itertools import combinations
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy import stats

from t2cr.baseline_losses import CoReLoss, MUSDLLoss, USDLLoss, gaussian_soft_label, kl_to_soft_label
from t2cr.data.config import DataConfig
from t2cr.data.datamodule import PairDataModule
from t2cr.data.transforms import TransformConfig
from t2cr.losses import LossConfig
from t2cr.models.backbones import BackboneConfig
from t2cr.models.core import CoRe, CoReConfig, assign_groups, group_edges
from t2cr.models.t2cr import ClipConfig
from t2cr.models.usdl import MUSDL, USDL, MUSDLConfig, USDLConfig
from t2cr.module import OptimConfig, T2CRModule

FRAMES = 20
FEATURES = 24


def _clips() -> ClipConfig:
    return ClipConfig(num_frames=FRAMES, clip_length=8, num_base_clips=3, base_starts=[0, 6, 12])


def _tiny(config_type: type, **fields):
    return config_type(backbone=BackboneConfig(name="tiny", feature_dim=FEATURES), clips=_clips(), **fields)


def _videos(batch: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, FRAMES, 16, 16, generator=generator)


def _soft_label_by_scipy(centre: float, num_bins: int, sigma: float) -> np.ndarray:
    """MUSDL's dataset.py: norm.pdf over the bin positions, divided by its sum."""
    pdf = stats.norm.pdf(np.arange(num_bins), loc=centre, scale=sigma)
    return pdf / pdf.sum()


def _kl_by_hand(target: np.ndarray, log_probs: np.ndarray) -> float:
    """sum t (log t - log p) over every axis but the first (0 log 0 = 0), averaged over the first."""
    terms = np.where(target > 0, target * (np.log(np.where(target > 0, target, 1.0)) - log_probs), 0.0)
    return float(terms.reshape(target.shape[0], -1).sum(axis=1).mean())


def _random_log_probs(generator: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.log_softmax(torch.randn(*shape, generator=generator, dtype=torch.float64) * 1.5, dim=-1)


def _distribution_output(query_log_probs: torch.Tensor, exemplar_log_probs: torch.Tensor):
    return SimpleNamespace(query=SimpleNamespace(log_probs=query_log_probs),
                           exemplar=SimpleNamespace(log_probs=exemplar_log_probs))


# ------------------------------------------------------------------------------- USDL / MUSDL
def test_gaussian_soft_label_is_the_normalised_normal_pdf_at_a_non_default_sigma_and_bin_count():
    """Reference: scipy.stats.norm.pdf(bins, centre, sigma) / sum, for 17 bins and sigma 2.3 (defaults 101 / 5),
    centres between bins and on the edges, in a (2, 3) batch."""
    centres = torch.tensor([[0.0, 3.4, 7.75], [16.0, 11.2, 9.5]], dtype=torch.float64)
    labels = gaussian_soft_label(centres, num_bins=17, sigma=2.3)
    assert labels.shape == (2, 3, 17)
    for index in np.ndindex(2, 3):
        expected = _soft_label_by_scipy(float(centres[index]), 17, 2.3)
        np.testing.assert_allclose(labels[index].numpy(), expected, rtol=1e-10, atol=1e-14)
    # a narrower Gaussian puts more mass on the nearest bin (sigma is used, not a constant)
    narrow = gaussian_soft_label(torch.tensor([8.0], dtype=torch.float64), num_bins=17, sigma=0.7)
    np.testing.assert_allclose(narrow[0].numpy(), _soft_label_by_scipy(8.0, 17, 0.7), rtol=1e-10, atol=1e-14)


def test_kl_to_soft_label_is_kl_of_the_target_to_the_prediction():
    """Reference: KL(target || prediction) = sum t log(t / p), with 0 log 0 = 0, summed over judges and bins,
    averaged over the videos. The reverse direction KL(p || t) is a different (here infinite) number."""
    generator = torch.Generator().manual_seed(3)
    log_probs = _random_log_probs(generator, 4, 3, 6)
    target = torch.softmax(torch.randn(4, 3, 6, generator=generator, dtype=torch.float64), dim=-1)
    target[0, 1] = torch.tensor([0.0, 0.5, 0.5, 0.0, 0.0, 0.0], dtype=torch.float64)  # zeros in the target
    expected = _kl_by_hand(target.numpy(), log_probs.numpy())
    assert kl_to_soft_label(log_probs, target).item() == pytest.approx(expected, rel=1e-12)
    # (V, bins): one distribution per video
    expected_2d = _kl_by_hand(target[:, 2].numpy(), log_probs[:, 2].numpy())
    assert kl_to_soft_label(log_probs[:, 2], target[:, 2]).item() == pytest.approx(expected_2d, rel=1e-12)
    # strictly positive targets: the two directions differ, and ours is KL(target || prediction)
    positive = target[1:, 0]
    reverse = float((log_probs[1:, 0].exp() * (log_probs[1:, 0] - positive.log())).sum(dim=-1).mean())
    forward = _kl_by_hand(positive.numpy(), log_probs[1:, 0].numpy())
    assert abs(forward - reverse) > 1e-2
    assert kl_to_soft_label(log_probs[1:, 0], positive).item() == pytest.approx(forward, rel=1e-12)


def test_usdl_loss_is_the_kl_to_gaussians_around_both_scores_in_a_shifted_score_range():
    """USDL with scores 10..40 over 13 bins (2.5 per bin) and sigma 1.7 in bins: the centre of a score s is
    (s - 10) / 2.5; the loss averages KL(N(centre) || prediction) over the 2B videos of the B pairs."""
    model = USDL(_tiny(USDLConfig, num_bins=13, score_min=10.0, score_max=40.0, sigma=1.7, hidden=[8]))
    generator = torch.Generator().manual_seed(5)
    query_lp, exemplar_lp = _random_log_probs(generator, 3, 13), _random_log_probs(generator, 3, 13)
    query_score = torch.tensor([17.5, 31.2, 10.0])
    exemplar_score = torch.tensor([12.0, 39.0, 26.3])
    terms = USDLLoss(model)(_distribution_output(query_lp, exemplar_lp), query_score, exemplar_score)
    scores = torch.cat([query_score, exemplar_score]).double().numpy()
    target = np.stack([_soft_label_by_scipy((s - 10.0) / 2.5, 13, 1.7) for s in scores])
    expected = _kl_by_hand(target, torch.cat([query_lp, exemplar_lp]).numpy())
    assert terms["kl"].item() == pytest.approx(expected, rel=1e-5)
    assert terms["total"].item() == pytest.approx(expected, rel=1e-5)


def test_usdl_reads_the_peak_bin_back_into_the_shifted_score_range():
    """The prediction is the peak bin b mapped to 10 + 2.5 b."""
    model = USDL(_tiny(USDLConfig, num_bins=13, score_min=10.0, score_max=40.0, sigma=1.7, hidden=[8]))
    log_probs = torch.full((3, 13), -8.0)
    for row, peak in enumerate((0, 5, 12)):
        log_probs[row, peak] = 0.0
    assert model.read_score(log_probs).tolist() == pytest.approx([10.0, 22.5, 40.0])


MUSDL_SETTINGS = {
    # diving: five judges 0..10 in half points (21 bins), sigma 1.3
    "diving-5-judges": {"num_judges": 5, "num_bins": 21, "judge_min": 0.0, "judge_max": 10.0, "sigma": 1.3,
                        "judge_rule": "middle_three"},
    # JIGSAWS-like: four sub-scores 1..5 in half points (9 bins), sigma 0.8
    "subscores-1-to-5": {"num_judges": 4, "num_bins": 9, "judge_min": 1.0, "judge_max": 5.0, "sigma": 0.8,
                         "judge_rule": "sum"},
}
MUSDL_MARKS = {
    "diving-5-judges": ([[7.5, 3.0, 9.5, 6.0, 8.0], [2.0, 10.0, 0.0, 4.5, 5.5]],
                        [[6.5, 8.5, 7.0, 9.0, 1.5], [5.0, 5.0, 4.0, 3.5, 9.5]]),
    "subscores-1-to-5": ([[4.5, 1.0, 3.0, 2.5], [5.0, 2.0, 3.5, 1.5]], [[1.5, 4.0, 2.0, 5.0], [3.0, 3.0, 4.5, 1.0]]),
}


@pytest.mark.parametrize("name", sorted(MUSDL_SETTINGS))
def test_musdl_loss_sums_each_judges_kl_against_that_judges_own_distribution(name):
    """Reference: per video, sum over judges j of KL(N((mark_j - min) / width, sigma) || head_j), averaged over
    the 2B videos; the marks are unsorted and each head predicts differently, so pairing a mark with another
    judge's head (or sorting the marks) gives another number."""
    settings = MUSDL_SETTINGS[name]
    model = MUSDL(_tiny(MUSDLConfig, hidden=[8], **settings))
    bins, judges = settings["num_bins"], settings["num_judges"]
    width = (settings["judge_max"] - settings["judge_min"]) / (bins - 1)
    generator = torch.Generator().manual_seed(11)
    query_lp, exemplar_lp = _random_log_probs(generator, 2, judges, bins), _random_log_probs(generator, 2, judges, bins)
    query_marks, exemplar_marks = (torch.tensor(m) for m in MUSDL_MARKS[name])
    terms = MUSDLLoss(model)(_distribution_output(query_lp, exemplar_lp), torch.zeros(2), torch.zeros(2), None, None,
                             query_marks, exemplar_marks)
    marks = torch.cat([query_marks, exemplar_marks]).double().numpy()
    target = np.stack([[_soft_label_by_scipy((mark - settings["judge_min"]) / width, bins, settings["sigma"])
                        for mark in video] for video in marks])
    expected = _kl_by_hand(target, torch.cat([query_lp, exemplar_lp]).numpy())
    assert terms["total"].item() == pytest.approx(expected, rel=1e-5)


def test_musdl_prediction_keeps_the_middle_three_of_five_judges():
    """Diving's rule with five judges: drop the highest and the lowest peak mark, sum the other three
    (the reference's sorted [2:5] is the seven-judge case)."""
    model = MUSDL(_tiny(MUSDLConfig, hidden=[8], **MUSDL_SETTINGS["diving-5-judges"]))
    peaks = [[15, 6, 19, 12, 16], [4, 20, 0, 9, 11]]  # marks 7.5 3 9.5 6 8 | 2 10 0 4.5 5.5
    log_probs = torch.full((2, 5, 21), -9.0)
    for video, row in enumerate(peaks):
        for judge, peak in enumerate(row):
            log_probs[video, judge, peak] = 0.0
    # sorted 3 6 7.5 8 9.5 -> 6 + 7.5 + 8; sorted 0 2 4.5 5.5 10 -> 2 + 4.5 + 5.5
    assert model.read_score(log_probs).tolist() == pytest.approx([21.5, 12.0])
    seven = MUSDL(_tiny(MUSDLConfig, hidden=[8], num_judges=7))
    log_probs = torch.full((1, 7, 21), -9.0)
    for judge, peak in enumerate((17, 12, 19, 14, 20, 15, 13)):  # 8.5 6 9.5 7 10 7.5 6.5
        log_probs[0, judge, peak] = 0.0
    assert seven.read_score(log_probs).item() == pytest.approx(7.0 + 7.5 + 8.5)  # sorted [2:5]


def test_subscore_rule_sums_every_judge_in_its_range():
    """The sum rule: every peak mark, each judge_min + peak x width, summed."""
    model = MUSDL(_tiny(MUSDLConfig, hidden=[8], **MUSDL_SETTINGS["subscores-1-to-5"]))
    log_probs = torch.full((1, 4, 9), -9.0)
    for judge, peak in enumerate((7, 0, 4, 3)):  # 4.5, 1, 3, 2.5
        log_probs[0, judge, peak] = 0.0
    assert model.read_score(log_probs).item() == pytest.approx(11.0)


# ----------------------------------------------------------------------------------------- CoRe
DEPTH = 4  # 8 leaves, 4 per side
SCORE_RANGE = 12.5
#: training differences (signs and order must not matter): sorted |d| = 0.5 1 2 3 5 8 11, last index 6;
#: the positive half splits at the sorted values int(i / 4 * 6) = 1, 3, 4 (i = 1, 2, 3): 1.0, 3.0, 5.0
DIFFERENCES = [-3.0, 8.0, 0.5, -11.0, 2.0, 5.0, -1.0]
HAND_EDGES = [[-12.5, -5.0], [-5.0, -3.0], [-3.0, -1.0], [-1.0, 0.0],
              [0.0, 1.0], [1.0, 3.0], [3.0, 5.0], [5.0, 12.5]]


def _hand_group(delta: float) -> tuple[int, float]:
    """Group_helper.produce_label by hand: d >= 0 in [left, right), d < 0 in (left, right]; position in 0..1."""
    for index, (left, right) in enumerate(HAND_EDGES):
        if (delta >= 0 and left <= delta < right) or (delta < 0 and left < delta <= right):
            return index, (delta - left) / (right - left)
    raise AssertionError(f"{delta} lies outside every group")


def test_core_group_bounds_are_quantiles_of_the_absolute_training_differences():
    """Reference: the bounds worked out by hand above (first group from 0, last to score_range, mirrored)."""
    edges = group_edges(DIFFERENCES, depth=DEPTH, score_range=SCORE_RANGE)
    assert edges.tolist() == HAND_EDGES
    assert group_edges(list(reversed([abs(d) for d in DIFFERENCES])), DEPTH, SCORE_RANGE).tolist() == HAND_EDGES


def test_core_groups_and_positions_on_and_between_the_bounds():
    """A non-negative difference on a bound belongs to the group it starts, a negative one to the group it
    ends (Group_helper's [left, right) / (left, right]); positions by hand."""
    edges = torch.tensor(HAND_EDGES, dtype=torch.float64)
    deltas = [0.0, 1.0, 3.0, 4.2, -1.0, -3.0, -0.25, 12.0, -7.5, 2.5]
    group, position = assign_groups(torch.tensor(deltas, dtype=torch.float64), edges)
    expected = [_hand_group(d) for d in deltas]
    assert group.tolist() == [g for g, _ in expected]
    assert position.tolist() == pytest.approx([p for _, p in expected], abs=1e-12)
    # spelled out for the bounds: 0 starts [0, 1), 1 starts [1, 3), 3 starts [3, 5); -1 ends (-3, -1], -3 ends (-5, -3]
    assert group.tolist()[:6] == [4, 5, 6, 6, 2, 1]
    assert position.tolist()[:6] == pytest.approx([0.0, 0.0, 0.0, 0.6, 1.0, 1.0])


def _core(**overrides) -> CoRe:
    model = CoRe(_tiny(CoReConfig, depth=DEPTH, hidden=16, score_range=SCORE_RANGE, **overrides))
    model.set_groups(DIFFERENCES)
    return model


def test_core_loss_targets_the_query_minus_exemplar_difference_in_both_orders():
    """Reference: for each pair, the hand group and position of q - e (first order) and e - q (second); the
    loss is NLL of the true leaf plus the squared error of that leaf's position, each order averaged over
    its pairs, the two orders added."""
    model = _core()
    query_score = torch.tensor([14.0, 9.5, 20.0])
    exemplar_score = torch.tensor([11.0, 13.7, 19.25])
    generator = torch.Generator().manual_seed(2)
    leaf_log_probs = torch.log_softmax(torch.randn(6, 8, generator=generator, dtype=torch.float64), dim=1)
    positions = torch.rand(6, 8, generator=generator, dtype=torch.float64)
    output = SimpleNamespace(leaf_log_probs=leaf_log_probs, positions=positions)
    terms = CoReLoss(model)(output, query_score, exemplar_score)

    deltas = [q - e for q, e in zip(query_score.tolist(), exemplar_score.tolist())]
    cls = reg = 0.0
    for half, signed in ((0, deltas), (3, [-d for d in deltas])):
        nll, err = [], []
        for i, d in enumerate(signed):
            g, p = _hand_group(d)
            nll.append(-float(leaf_log_probs[half + i, g]))
            err.append((float(positions[half + i, g]) - p) ** 2)
        cls += np.mean(nll)
        reg += np.mean(err)
    assert terms["cls"].item() == pytest.approx(cls, rel=1e-9)
    assert terms["reg"].item() == pytest.approx(reg, rel=1e-9)
    assert terms["total"].item() == pytest.approx(cls + reg, rel=1e-9)


class _Recorder:
    """Forward pre-hook keeping the tree's input (B, 2F + 1): [exemplar feature, query feature, score / range]."""

    def __init__(self, tree: torch.nn.Module) -> None:
        self.inputs: list[torch.Tensor] = []
        tree.register_forward_pre_hook(lambda module, args: self.inputs.append(args[0].detach().clone()))


def test_core_tree_reads_the_exemplars_score_never_the_querys():
    """Pair order 1 (query vs exemplar) gives the tree the exemplar's score / score_range, order 2 (exemplar vs
    query) the query's, in the second role; the features are [exemplar, query], each the clip mean of its own
    video (computed separately here)."""
    model = _core().eval()
    recorder = _Recorder(model.tree)
    query, exemplar = _videos(2, 1), _videos(2, 2)
    query_score, exemplar_score = torch.tensor([21.0, 8.0]), torch.tensor([15.5, 27.0])
    with torch.no_grad():
        model(query, exemplar, query_score=query_score, exemplar_score=exemplar_score)
        query_token = model.extract_clip_features(query)[0].mean(dim=1)
        exemplar_token = model.extract_clip_features(exemplar)[0].mean(dim=1)
    (pair,) = recorder.inputs
    assert pair.shape == (4, 2 * FEATURES + 1)
    expected_scores = [15.5 / SCORE_RANGE, 27.0 / SCORE_RANGE, 21.0 / SCORE_RANGE, 8.0 / SCORE_RANGE]
    assert pair[:, -1].tolist() == pytest.approx(expected_scores, rel=1e-6)
    torch.testing.assert_close(pair[:2, :FEATURES], exemplar_token, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(pair[:2, FEATURES:-1], query_token, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(pair[2:, :FEATURES], query_token, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(pair[2:, FEATURES:-1], exemplar_token, rtol=1e-5, atol=1e-6)


def test_core_training_step_passes_the_batchs_exemplar_scores_to_the_tree():
    """Through the LightningModule's loss: the tree's score input is the batch's exemplar_score (model space)
    for the first order and its query_score for the reversed one."""
    config = _tiny(CoReConfig, depth=DEPTH, hidden=16, score_range=SCORE_RANGE)
    module = T2CRModule(dataclasses.asdict(config), dataclasses.asdict(LossConfig()), dataclasses.asdict(OptimConfig()))
    module.model.set_groups(DIFFERENCES)
    recorder = _Recorder(module.model.tree)
    batch = {"query": _videos(2, 3), "exemplar": _videos(2, 4), "query_score": torch.tensor([18.0, 6.5]),
             "exemplar_score": torch.tensor([24.5, 11.0]), "query_label": torch.tensor([-1, -1]),
             "exemplar_label": torch.tensor([-1, -1])}
    terms = module.loss_terms(batch)
    assert torch.isfinite(terms["total"])
    (pair,) = recorder.inputs
    assert pair[:, -1].tolist() == pytest.approx([24.5 / SCORE_RANGE, 11.0 / SCORE_RANGE,
                                                  18.0 / SCORE_RANGE, 6.5 / SCORE_RANGE], rel=1e-6)


class _FixedTree(torch.nn.Module):
    """A stand-in for the regression tree: fixed leaf log-probabilities and positions, its input recorded."""

    def __init__(self, leaf_log_probs: torch.Tensor, positions: torch.Tensor) -> None:
        super().__init__()
        self.leaf_log_probs, self.positions, self.inputs = leaf_log_probs, positions, []

    def forward(self, pair: torch.Tensor):
        self.inputs.append(pair.detach().clone())
        return self.leaf_log_probs, self.positions


def test_core_vote_is_the_mean_of_exemplar_score_plus_the_difference_read_from_the_best_leaf():
    """Reference by hand: per pair, the most probable leaf g and its position p give the difference
    left_g + p (right_g - left_g) (HAND_EDGES); the vote is the mean over the unmasked exemplars of exemplar
    score + difference. The tree's score input is each exemplar's own score / score_range."""
    model = _core().eval()
    b, k = 2, 3
    best = [[6, 1, 4], [7, 3, 5]]
    position = [[0.5, 0.25, 0.8], [0.1, 0.6, 0.5]]
    leaf_log_probs = torch.full((b * k, 8), math.log(0.02))
    positions = torch.full((b * k, 8), 0.9)
    for i in range(b):
        for j in range(k):
            leaf_log_probs[i * k + j, best[i][j]] = math.log(0.86)
            positions[i * k + j, best[i][j]] = position[i][j]
    model.tree = _FixedTree(leaf_log_probs, positions)
    exemplar_scores = torch.tensor([[20.0, 12.5, 17.0], [9.0, 22.0, 15.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    query = model.encode(torch.randn(b, 3, FEATURES))
    vote = model.vote(query, torch.randn(b, k, 1, FEATURES), exemplar_scores, mask)
    expected = []
    for i in range(b):
        votes = []
        for j in range(k):
            left, right = HAND_EDGES[best[i][j]]
            difference = left + position[i][j] * (right - left)
            assert vote.deltas[i, j].item() == pytest.approx(difference, rel=1e-6)
            if mask[i, j]:
                votes.append(float(exemplar_scores[i, j]) + difference)
        expected.append(sum(votes) / len(votes))
    assert vote.score.tolist() == pytest.approx(expected, rel=1e-6)
    (pair,) = model.tree.inputs
    assert pair[:, -1].tolist() == pytest.approx((exemplar_scores.reshape(-1) / SCORE_RANGE).tolist(), rel=1e-6)


def test_core_groups_come_from_pairs_within_an_exemplar_pool_in_model_space(tiny_synthetic):
    """CoRe's differences (datasets/MTLPair.py delta): |score / DD - score' / DD'| of every two training samples
    of one difficulty pool. Reference: those pairs enumerated here from the training samples themselves."""
    data = PairDataModule(DataConfig(
        annotations=str(tiny_synthetic / "annotations"), root=str(tiny_synthetic / "frames"), num_frames=16,
        voting_exemplars=3, num_workers=0, transform=TransformConfig(resize=[24, 24], crop=[20, 20]),
        synthetic=None, exemplar_rule="difficulty", divide_by_difficulty=True))
    got = sorted(data.training_score_differences())
    train = data.samples("train")
    expected = sorted(abs(a.score / a.difficulty - b.score / b.difficulty) for a, b in combinations(train, 2)
                      if a.difficulty == b.difficulty)
    assert len({s.difficulty for s in train}) > 1 and expected  # several pools, pairs inside them
    assert got == pytest.approx(expected, abs=1e-9)
