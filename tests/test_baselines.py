"""The baseline methods USDL, MUSDL (Tang et al., CVPR 2020) and CoRe (Yu et al., ICCV 2021): their losses
against hand-computed cases, shapes, gradients, voting, the method registry and the judge scores of the data."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from t2cr.baseline_losses import (
    CoReLoss,
    MUSDLLoss,
    USDLLoss,
    gaussian_soft_label,
    kl_to_soft_label,
    tree_loss,
)
from t2cr.config import to_dataclass
from t2cr.methods import METHODS, method_of
from t2cr.models.backbones import BackboneConfig
from t2cr.models.core import CoRe, CoReConfig, RegressionTree, assign_groups, group_edges, recover_difference
from t2cr.models.t2cr import ClipConfig, PairOutput, VideoEncoding
from t2cr.models.usdl import MUSDL, USDL, DistributionEncoding, MUSDLConfig, USDLConfig, middle_judges_sum
from t2cr.module import T2CRModule
from t2cr.resources import CONF_DIR

FRAMES = 24


def _clips() -> ClipConfig:
    return ClipConfig(num_frames=FRAMES, clip_length=8, num_base_clips=3, base_starts=[0, 8, 16])


def _tiny(config_type: type, **fields):
    return config_type(backbone=BackboneConfig(name="tiny", feature_dim=32), clips=_clips(), **fields)


def _videos(batch: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, FRAMES, 16, 16, generator=generator)


# ------------------------------------------------------------------------------- USDL / MUSDL losses
def test_soft_label_is_the_normalised_discretised_gaussian():
    label = gaussian_soft_label(torch.tensor([1.0]), num_bins=3, sigma=1.0)
    side = math.exp(-0.5)
    expected = torch.tensor([[side, 1.0, side]]) / (1 + 2 * side)
    assert torch.allclose(label, expected, atol=1e-7)
    # a centre between bins, sigma 2: pdf at 0, 1, 2, 3 around 0.5
    label = gaussian_soft_label(torch.tensor([0.5]), num_bins=4, sigma=2.0)
    pdf = torch.tensor([math.exp(-0.5 * ((i - 0.5) / 2) ** 2) for i in range(4)])
    assert torch.allclose(label[0], pdf / pdf.sum(), atol=1e-7)


def test_kl_to_soft_label_by_hand():
    log_probs = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.25, 0.5, 0.25]]))
    target = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]])
    # row 0: -log 0.5; row 1: 0.5 log(0.5/0.5) + 0.5 log(0.5/0.25) = 0.5 log 2; mean over the rows
    assert kl_to_soft_label(log_probs, target).item() == pytest.approx((math.log(2) + 0.5 * math.log(2)) / 2)


def _distribution_output(query_log_probs: torch.Tensor, exemplar_log_probs: torch.Tensor) -> PairOutput:
    def encoding(log_probs):
        tokens = torch.zeros(log_probs.shape[0], 1, 4)
        return DistributionEncoding(tokens, None, tokens, None, None, log_probs)

    return PairOutput(encoding(query_log_probs), encoding(exemplar_log_probs), torch.zeros(1), torch.zeros(1),
                      None, None)


def test_usdl_loss_is_kl_to_the_gaussian_around_the_score():
    model = USDL(_tiny(USDLConfig, num_bins=3, score_min=0.0, score_max=2.0, sigma=1.0))
    uniform = torch.full((1, 3), math.log(1 / 3))
    terms = USDLLoss(model)(_distribution_output(uniform, uniform), torch.tensor([1.0]), torch.tensor([2.0]))
    side = math.exp(-0.5)
    # query at bin 1: [s, 1, s] / (1 + 2s); exemplar at bin 2: [e^-2, s, 1] / (...); KL to uniform = sum t log t + log 3
    targets = [[side, 1.0, side], [math.exp(-2), side, 1.0]]
    expected = 0.0
    for t in targets:
        t = [v / sum(t) for v in t]
        expected += sum(v * math.log(v) for v in t) + math.log(3)
    assert terms["total"].item() == pytest.approx(expected / 2, rel=1e-5)
    assert set(terms) == {"kl", "total"}


def test_usdl_reads_the_peak():
    model = USDL(_tiny(USDLConfig, num_bins=101, score_min=0.0, score_max=100.0))
    log_probs = torch.full((2, 101), -10.0)
    log_probs[0, 37], log_probs[1, 100] = 0.0, 0.0
    assert model.read_score(log_probs).tolist() == pytest.approx([37.0, 100.0])


def test_musdl_middle_three_and_peaks():
    assert middle_judges_sum(torch.tensor([[9.5, 9.0, 9.5, 9.0, 8.5, 9.5, 8.5]])).item() == pytest.approx(27.5)
    assert middle_judges_sum(torch.tensor([[1.0, 7.0, 3.0]])).item() == pytest.approx(11.0)
    model = MUSDL(_tiny(MUSDLConfig, num_judges=3))
    log_probs = torch.full((1, 3, 21), -10.0)
    for judge, bin_index in enumerate((12, 20, 0)):  # marks 6, 10, 0
        log_probs[0, judge, bin_index] = 0.0
    assert model.read_score(log_probs).item() == pytest.approx(16.0)


def test_musdl_loss_sums_the_judges_and_refuses_data_without_judges():
    model = MUSDL(_tiny(MUSDLConfig, num_judges=3, num_bins=3, judge_min=0.0, judge_max=10.0, sigma=1.0))
    uniform = torch.full((1, 3, 3), math.log(1 / 3))
    loss = MUSDLLoss(model)
    # every judge at mark 5 (bin 1): three times the KL of [s, 1, s] to uniform, for each of the two videos
    judges = torch.full((1, 3), 5.0)
    side = math.exp(-0.5)
    t = [side / (1 + 2 * side), 1 / (1 + 2 * side), side / (1 + 2 * side)]
    per_judge = sum(v * math.log(v) for v in t) + math.log(3)
    terms = loss(_distribution_output(uniform, uniform), torch.ones(1), torch.ones(1), None, None, judges, judges)
    assert terms["total"].item() == pytest.approx(3 * per_judge, rel=1e-5)
    with pytest.raises(ValueError, match="model=musdl needs per-judge scores"):
        loss(_distribution_output(uniform, uniform), torch.ones(1), torch.ones(1))
    with pytest.raises(ValueError, match="model.num_judges=3"):
        loss(_distribution_output(uniform, uniform), torch.ones(1), torch.ones(1), None, None,
             torch.ones(1, 7), torch.ones(1, 7))


def test_musdl_on_jigsaws_sums_six_sub_scores():
    """JIGSAWS (nzl-thu/MUSDL JIGSAWS/main.py): six 1-5 sub-scores as judges, 5 bins each, every peak summed."""
    model = MUSDL(_tiny(MUSDLConfig, num_judges=6, num_bins=5, judge_min=1.0, judge_max=5.0, judge_rule="sum"))
    log_probs = torch.full((1, 6, 5), -10.0)
    for judge, bin_index in enumerate((0, 4, 2, 3, 1, 4)):  # marks 1, 5, 3, 4, 2, 5
        log_probs[0, judge, bin_index] = 0.0
    assert model.read_score(log_probs).item() == pytest.approx(20.0)
    assert torch.allclose(model.score_to_bin(torch.tensor([1.0, 3.0, 5.0])), torch.tensor([0.0, 2.0, 4.0]))
    with pytest.raises(ValueError, match="model.judge_rule must be middle_three or sum"):
        _tiny(MUSDLConfig, judge_rule="mean")
    _tiny(MUSDLConfig, num_judges=6, judge_rule="sum")  # an even count is fine when every mark counts
    with pytest.raises(ValueError, match="model.num_judges must be odd"):
        _tiny(MUSDLConfig, num_judges=6)


def test_jigsaws_setting_gives_musdl_its_six_judges():
    from helpers import real_annotations

    from t2cr.data.jigsaws import read_jigsaws

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["data=jigsaws", "paper_method=musdl_jigsaws", "data.root=/r"])
    model = OmegaConf.to_container(cfg.model, resolve=True)
    assert (model["num_judges"], model["judge_rule"], model["judge_min"], model["judge_max"], model["num_bins"],
            model["sigma"]) == (6, "sum", 1.0, 5.0, 5, 1.0)
    assert cfg.optim.weight_decay == 0.0 and cfg.optim.backbone_lr == cfg.optim.head_lr == 1e-4
    config = to_dataclass(MUSDLConfig, model)
    splits = read_jigsaws(real_annotations("JIGSAWS"), cfg.data)
    for sample in splits["train"] + splits["test"]:
        assert len(sample.judge_scores) == 6 and sum(sample.judge_scores) == pytest.approx(sample.score)
    # the score space of the sum rule is the score itself: with DD on, the data is refused before training
    data = type("Data", (), {"has_judge_scores": True, "num_judges": 6,
                             "config": type("C", (), {"divide_by_difficulty": True, "name": "jigsaws"})()})()
    with pytest.raises(ValueError, match="set data.divide_by_difficulty=false"):
        MUSDL(dataclasses.replace(config, backbone=BackboneConfig(name="tiny", feature_dim=32))).prepare(data)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        usdl = compose(config_name="train", overrides=["data=jigsaws", "paper_method=usdl_jigsaws", "data.root=/r"])
    assert (usdl.model.num_bins, usdl.model.score_min, usdl.model.score_max, usdl.model.sigma) == (25, 6.0, 30.0, 1.0)


# ------------------------------------------------------------------------------------ CoRe groups
def test_group_edges_by_hand():
    edges = group_edges([5, 1, 4, 2, 3], depth=3, score_range=10.0)
    # 4 leaves, 2 per side: the positive half splits at the sample int(0.5 * 4) = 2 of the sorted |d| (3)
    assert edges.tolist() == [[-10.0, -3.0], [-3.0, 0.0], [0.0, 3.0], [3.0, 10.0]]
    assert group_edges([-2, 2], depth=5, score_range=30.0).shape == (16, 2)


def test_group_assignment_and_target_by_hand():
    edges = torch.tensor([[-10.0, -3.0], [-3.0, 0.0], [0.0, 3.0], [3.0, 10.0]], dtype=torch.float64)
    delta = torch.tensor([0.0, 1.5, 3.0, -3.0, -1.0, 12.0, -12.0], dtype=torch.float64)
    group, position = assign_groups(delta, edges)
    # >= 0: [left, right); < 0: (left, right]; beyond the range: the outermost group
    assert group.tolist() == [2, 2, 3, 0, 1, 3, 0]
    assert position.tolist() == pytest.approx([0.0, 0.5, 0.0, 1.0, 2 / 3, 9 / 7, -2 / 7])
    assert recover_difference(group, position, edges).tolist() == pytest.approx(delta.tolist())
    # a group of width 0 keeps the offset from its bound
    flat = torch.tensor([[-1.0, -1.0], [-1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    g, p = assign_groups(torch.tensor([0.5], dtype=torch.float64), flat)
    assert g.tolist() == [2] and p.tolist() == [0.5]


def test_tree_loss_by_hand():
    log_p = torch.log(torch.tensor([[0.5, 0.5], [0.8, 0.2], [0.1, 0.9]]))
    positions = torch.tensor([[0.2, 9.0], [0.6, 9.0], [9.0, 0.3]])
    group = torch.tensor([0, 0, 1])
    target = torch.tensor([0.0, 0.5, 0.5])
    nll, reg = tree_loss(log_p, positions, group, target)
    assert nll.item() == pytest.approx(-(math.log(0.5) + math.log(0.8) + math.log(0.9)) / 3)
    # the true leaf's error per pair: 0.2, 0.1, 0.2 (the other leaves' outputs unused), squared and averaged
    assert reg.item() == pytest.approx((0.04 + 0.01 + 0.04) / 3)
    # one pair: the reference's per-leaf mean summed over leaves is this same number
    _, single = tree_loss(log_p[:1], positions[:1], group[:1], target[:1])
    assert single.item() == pytest.approx(0.04)


def test_regression_tree_leaves_are_a_distribution():
    tree = RegressionTree(9, 8, depth=5)
    log_p, positions = tree(torch.randn(4, 9))
    assert log_p.shape == (4, 16) and positions.shape == (4, 16)
    assert torch.allclose(log_p.logsumexp(dim=1), torch.zeros(4), atol=1e-6)


def test_core_loss_targets_follow_the_groups():
    model = CoRe(_tiny(CoReConfig, depth=3, score_range=10.0))
    model.set_groups([1, 2, 3, 4, 5])
    q, e = torch.tensor([4.0]), torch.tensor([2.5])  # delta +1.5: group 2 at 0.5; -1.5: group 1 at 0.5
    log_p = torch.log(torch.tensor([[0.1, 0.1, 0.7, 0.1], [0.1, 0.6, 0.2, 0.1]]))
    positions = torch.tensor([[0.0, 0.0, 0.25, 0.0], [0.0, 0.9, 0.0, 0.0]])
    output = type("Out", (), {"leaf_log_probs": log_p, "positions": positions})()
    terms = CoReLoss(model)(output, q, e)
    assert terms["cls"].item() == pytest.approx(-math.log(0.7) - math.log(0.6), rel=1e-5)
    assert terms["reg"].item() == pytest.approx(0.25 ** 2 + 0.4 ** 2, rel=1e-5)
    assert terms["total"].item() == pytest.approx(terms["cls"].item() + terms["reg"].item())


def test_core_refuses_without_groups():
    model = CoRe(_tiny(CoReConfig))
    with pytest.raises(RuntimeError, match="group bounds are not set"):
        model.read_difference(torch.zeros(1, 16), torch.zeros(1, 16))


# ------------------------------------------------------------------------- shapes, gradients, voting
def _model_and_loss(name: str):
    method = METHODS[name]
    config = _tiny(method.config) if name != "musdl" else _tiny(MUSDLConfig, num_judges=3)
    model = method.model(config)
    if name == "core":
        model.set_groups([0.5, 1.0, 2.0, 3.0, 4.0])
    return model, method.loss(None, model, None)


@pytest.mark.parametrize("name", ["usdl", "musdl", "core"])
def test_every_parameter_gets_a_gradient(name):
    model, loss = _model_and_loss(name)
    model.train()
    q_score, e_score = torch.tensor([6.0, 9.0, 12.0]), torch.tensor([7.0, 8.0, 12.5])
    extra = {"query_score": q_score, "exemplar_score": e_score} if model.pair_reads_scores else {}
    output = model(_videos(3, 1), _videos(3, 2), self_difference=True, **extra)
    judges = torch.tensor([[2.0, 2.5, 3.0]] * 3)
    terms = loss(output, q_score, e_score, None, None, judges, judges + 1)
    assert torch.isfinite(terms["total"])
    terms["total"].backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing
    assert output.delta.shape == (3,) and output.delta_reverse.shape == (3,)


@pytest.mark.parametrize("name", ["usdl", "musdl", "core"])
def test_vote_shapes_and_exemplar_use(name):
    model, _ = _model_and_loss(name)
    model.eval()
    b, k = 2, 3
    with torch.no_grad():
        encoding = model.encode(*model.extract_clip_features(torch.cat([_videos(b, 3), _videos(b * k, 4)])))
        query = encoding.select(slice(0, b))
        tokens = encoding.tokens[b:].reshape(b, k, *encoding.tokens.shape[1:])
        scores = torch.tensor([[5.0, 6.0, 7.0], [8.0, 9.0, 10.0]])
        vote = model.vote(query, tokens, scores, torch.ones(b, k, dtype=torch.bool))
        shifted = model.vote(query, tokens, scores + 1.0, torch.ones(b, k, dtype=torch.bool))
    assert vote.score.shape == (b,) and vote.deltas.shape == (b, k)
    if name == "core":  # pairwise: the votes move with the exemplars' scores
        assert vote.direct is None and not torch.equal(vote.score, shifted.score)
        masked = model.vote(query, tokens, scores, torch.tensor([[True, False, False]] * b))
        assert torch.allclose(masked.score, scores[:, 0] + masked.deltas[:, 0])
    else:  # the direct prediction; the exemplars are ignored
        assert torch.equal(vote.score, query.direct) and torch.equal(vote.score, shifted.score)
        assert torch.isnan(vote.contrastive).all()


def test_shared_base_class_protocol():
    for name in ("usdl", "musdl", "core"):
        model, _ = _model_and_loss(name)
        assert model.num_clips == 3 and model.aux_plan is None
        base, aux = model.extract_clip_features(_videos(2))
        assert base.shape == (2, 3, 32) and aux is None
        groups = model.parameter_groups(1e-4, 1e-3)
        assert [g["name"] for g in groups] == ["backbone", "heads"]
        assert len(groups[0]["params"]) + len(groups[1]["params"]) == len(list(model.parameters()))
        assert isinstance(model.encode(base), VideoEncoding)


# ------------------------------------------------------------------------------ registry, configs
def test_method_registry_refuses_an_unknown_method():
    assert method_of({}).model.__name__ == "T2CR"
    with pytest.raises(ValueError, match="unknown model.method 'nope'"):
        method_of({"method": "nope"})


@pytest.mark.parametrize("name", ["usdl", "musdl", "core"])
def test_model_option_composes_and_builds_through_the_module(name):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"model={name}", "experiment=smoke",
                                                      "model.backbone.name=tiny", "model.backbone.feature_dim=32"])
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["model"]["method"] == name and resolved["model"]["action_classifier"] is False
    module = T2CRModule(resolved["model"], resolved["loss"], resolved["optim"], {"channels_last": False})
    assert type(module.model) is METHODS[name].model
    assert module.model.base_plan.starts == (0, 8, 16, 24)  # the smoke data's clip plan
    if name == "musdl":
        assert module.model.config.num_judges == cfg.data.synthetic.num_judges
    config = to_dataclass(METHODS[name].config, resolved["model"])
    assert config.method == name


def test_musdl_judges_default_to_mtl_aqa_without_synthetic_data():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["model=musdl", "data=mtl_aqa", "data.annotations=/a",
                                                      "data.root=/r"])
    assert cfg.model.num_judges == 7


# -------------------------------------------------------------------------------------- data path
def test_mtl_aqa_reader_keeps_judge_scores():
    from helpers import real_annotations

    from t2cr.data.annotations import read_mtl_aqa

    splits = read_mtl_aqa(real_annotations("MTL-AQA"))
    sample = splits["train"][0]
    assert sample.judge_scores is not None and len(sample.judge_scores) == 7
    assert all(0.0 <= mark <= 10.0 for mark in sample.judge_scores)


def test_batches_carry_judges_only_where_the_data_has_them(tiny_synthetic):
    from t2cr.data.config import DataConfig
    from t2cr.data.datamodule import PairDataModule
    from t2cr.data.transforms import TransformConfig

    config = DataConfig(annotations=str(tiny_synthetic / "annotations"), root=str(tiny_synthetic / "frames"),
                        num_frames=16, voting_exemplars=3, num_workers=0, batch_size=4, eval_batch_size=2,
                        transform=TransformConfig(resize=[24, 24], crop=[20, 20]), synthetic=None)
    dm = PairDataModule(config)
    assert dm.has_judge_scores and dm.num_judges == 7
    batch = next(iter(dm.train_dataloader()))
    assert batch["query_judges"].shape == (4, 7) and batch["exemplar_judges"].dtype == torch.float32
    # the judges give the score: DD x the middle three (synthetic data, as diving)
    assert torch.allclose(middle_judges_sum(batch["query_judges"]), batch["query_score"], atol=1e-4)
    differences = dm.training_score_differences()
    assert differences and min(differences) >= 0
    # without judge scores: no judge keys, and MUSDL refuses the data before training
    for sample in dm.pools.train:
        object.__setattr__(sample, "judge_scores", None)
    assert not dm.has_judge_scores and "query_judges" not in next(iter(dm.train_dataloader()))
    with pytest.raises(ValueError, match="model=musdl needs per-judge scores"):
        MUSDL(_tiny(MUSDLConfig)).prepare(dm)


# ------------------------------------------------------------------------------- the real CLI, slow
@pytest.mark.slow
@pytest.mark.parametrize("name", ["usdl", "musdl", "core"])
def test_short_synthetic_run_per_method(name, tiny_synthetic, tmp_path):
    from framework_helpers import REPO, read_metrics, run_cli, tiny_overrides

    run_dir = tmp_path / "run"
    overrides = [*tiny_overrides(tiny_synthetic), f"model={name}", f"hydra.run.dir={run_dir}"]
    run_cli("train", overrides, cwd=REPO)
    metrics = read_metrics(run_dir)
    assert "test/spearman" in metrics and math.isfinite(metrics["test/l2"])


@pytest.mark.slow
def test_musdl_refuses_data_without_dd_in_one_line(tiny_synthetic, tmp_path):
    from framework_helpers import REPO, run_cli, tiny_overrides

    overrides = [*tiny_overrides(tiny_synthetic), "model=musdl", "data.divide_by_difficulty=false",
                 "data.score_range=[0,200]",  # the final scores: the range check passes, MUSDL refuses
                 f"hydra.run.dir={tmp_path / 'run'}"]
    result = run_cli("train", overrides, cwd=REPO, check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("t2cr-train: error:")]
    assert len(lines) == 1 and "data.divide_by_difficulty=true" in lines[0], result.stderr[-2000:]


@pytest.mark.slow
def test_musdl_trains_on_jigsaws_published_layout(tmp_path):
    """MUSDL on JIGSAWS end to end: the real annotations, frames in the published layout (3 training and 2
    test videos of Suturing fold 0), six sub-scores as judges, summed; no DD."""
    from framework_helpers import REPO, read_metrics, run_cli
    from test_layouts import COMMON, jigsaws_layout

    layout = jigsaws_layout(tmp_path / "frames")
    run_dir = tmp_path / "run"
    overrides = ["data=jigsaws", f"data.annotations={layout.annotations}", f"data.root={layout.root}", *COMMON,
                 *layout.overrides, "model=musdl", "model.backbone.name=tiny", "model.backbone.random_init=true",
                 "trainer.max_epochs=1", "trainer.accelerator=cpu", "logger=csv", "callbacks.progress=none",
                 f"hydra.run.dir={run_dir}"]
    run_cli("train", overrides, cwd=REPO)
    metrics = read_metrics(run_dir)
    assert metrics["test/num_samples"] == 2 and math.isfinite(metrics["test/l2"])
    config = OmegaConf.load(run_dir / "config.yaml")
    assert (config.model.num_judges, config.model.judge_rule, config.model.num_bins) == (6, "sum", 5)
    predictions = (run_dir / "predictions_test.csv").read_text().splitlines()
    header = predictions[0].split(",")
    for line in predictions[1:]:
        row = dict(zip(header, line.split(",")))
        # six marks in 1..5, summed: a GRS total in 6..30 (an integer: the marks are whole)
        assert 6.0 <= float(row["pred"]) <= 30.0 and float(row["pred"]) == int(float(row["pred"]))


@pytest.mark.parametrize("name", ["usdl", "core"])
def test_scoring_a_video_reports_the_parts_a_method_has_as_strict_json(name):
    """t2cr-score's result: USDL scores the video alone (no exemplars listed, no contrastive part), CoRe votes
    with the pool (no direct part); a missing part is null, never NaN, so the output is strict JSON."""
    import json

    from test_explain import NUM_FRAMES, make_bank, random_frames

    from t2cr.bank import score_frames

    clips = ClipConfig(num_frames=NUM_FRAMES, clip_length=8, num_base_clips=5, base_starts=[0, 6, 12, 18, 24])
    method = METHODS[name]
    model = method.model(method.config(backbone=BackboneConfig(name="tiny", feature_dim=32), clips=clips))
    if name == "core":
        model.set_groups([0.5, 1.0, 2.0, 3.0, 4.0])
    result = score_frames(model, make_bank(model), random_frames(), pool="2.0")
    json.dumps(result, allow_nan=False)
    if name == "usdl":
        assert result["exemplars"] == [] and result["contrastive"] is None and result["direct"] == result["score"]
    else:
        assert result["direct"] is None and len(result["exemplars"]) == 3
        mean_vote = sum(e["score"] + e["delta"] for e in result["exemplars"]) / 3
        assert result["score"] == pytest.approx(mean_vote, rel=1e-5) == result["contrastive"]
