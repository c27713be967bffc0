from pathlib import Path

import pytest
import torch
from helpers import LAYOUTS, random_videos, tiny_config, tiny_model
from omegaconf import OmegaConf

from t2cr.config import to_dataclass
from t2cr.models.decoder import DifferenceTransformer, FeatureSubtraction
from t2cr.models.t2cr import T2CR, T2CRConfig

VARIANT_DIR = Path(__file__).parents[1] / "conf" / "variant"


@pytest.mark.parametrize("layout,m", [("mtl_aqa", 10), ("finediving", 9), ("jigsaws", 10)])
def test_pair_forward_shapes(layout, m):
    frames = LAYOUTS[layout][0]
    model = tiny_model(layout)
    assert model.base_plan.num_clips == m and model.aux_plan.num_clips == 8
    query, exemplar = random_videos(2, frames)
    out = model(query, exemplar)
    d = model.config.latent_dim
    assert out.query.base_tokens.shape == (2, m, d)
    assert out.query.aux_tokens.shape == (2, m, d)  # N = 8 expanded to M
    assert out.query.tokens.shape == (2, 2 * m, d)  # fused paths
    assert out.query.direct.shape == (2,) and out.query.logits.shape == (2, 5)
    for t in (out.delta, out.delta_reverse, out.self_delta_query, out.self_delta_exemplar):
        assert t.shape == (2,) and torch.isfinite(t).all()


def test_clip_extraction_takes_the_planned_frames():
    """Each clip handed to the backbone holds exactly the frames of its plan, in order."""
    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, clips):
            seen.append(clips.clone())
            return clips.new_zeros(clips.shape[0], 128)

    model = T2CR(tiny_config("mtl_aqa"), backbone=Recorder())
    frames = torch.arange(103, dtype=torch.float32).view(1, 1, 103, 1, 1).expand(2, 3, 103, 2, 2).clone()
    frames[1] += 1000  # second video distinguishable
    base, aux = model.extract_clip_features(frames)
    clips = seen[0]  # (2 * 18, 3, 16, 2, 2)
    assert clips.shape == (36, 3, 16, 2, 2) and base.shape == (2, 10, 128) and aux.shape == (2, 8, 128)
    starts = list(model.base_plan.starts) + list(model.aux_plan.starts)
    for video in range(2):
        for i, start in enumerate(starts):
            expected = torch.arange(start, start + 16, dtype=torch.float32) + 1000 * video
            assert torch.equal(clips[video * 18 + i, 0, :, 0, 0], expected)


def test_too_few_frames_is_refused():
    model = tiny_model("mtl_aqa")
    query, exemplar = random_videos(1, 96)
    with pytest.raises(ValueError, match="needs 102 frames per video, the batch has 96"):
        model(query, exemplar)


def test_n_must_be_smaller_than_m():
    with pytest.raises(ValueError, match="N=10 must be < M=10"):
        tiny_model("mtl_aqa", **{"clips.aux_strategy": "10-clip-avg1"})
    tiny_model("mtl_aqa", **{"clips.aux_strategy": "10-clip-2x"})  # Table 10's 2x rate is allowed


def test_classifier_needs_classes():
    with pytest.raises(ValueError, match="num_action_types"):
        tiny_model(num_action_types=0)


def test_vote_follows_eq_3_and_11():
    model = tiny_model().eval()
    query, _ = random_videos(3, 103)
    with torch.no_grad():
        q = model.encode(*model.extract_clip_features(query))
        k = 4
        exemplars = torch.randn(3 * k, 3, 103, 16, 16)
        e = model.encode(*model.extract_clip_features(exemplars))
        e_tokens = e.tokens.reshape(3, k, *e.tokens.shape[1:])
        scores = torch.rand(3, k) * 10
        vote = model.vote(q, e_tokens, scores)
        # by hand: each exemplar separately
        manual = torch.stack([
            torch.stack([model.difference(q.tokens[b:b + 1], e_tokens[b, j:j + 1])[0] for j in range(k)])
            for b in range(3)
        ])
    torch.testing.assert_close(vote.deltas, manual, rtol=1e-5, atol=1e-5)
    contrastive = (manual + scores).mean(dim=1)
    torch.testing.assert_close(vote.contrastive, contrastive)
    torch.testing.assert_close(vote.score, (q.direct + contrastive) / 2)


def test_vote_with_one_exemplar_equals_the_pair_forward():
    model = tiny_model().eval()
    query, exemplar = random_videos(2, 103)
    with torch.no_grad():
        out = model(query, exemplar)
        q = model.encode(*model.extract_clip_features(query))
        e = model.encode(*model.extract_clip_features(exemplar))
        vote = model.vote(q, e.tokens.unsqueeze(1), torch.zeros(2, 1))
    torch.testing.assert_close(vote.deltas[:, 0], out.delta, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(vote.direct, out.query.direct, rtol=1e-5, atol=1e-5)


def _variant(name: str):
    raw = OmegaConf.load(VARIANT_DIR / f"{name}.yaml")
    base = OmegaConf.structured(tiny_config())
    return to_dataclass(T2CRConfig, OmegaConf.merge(base, raw.model)), raw.loss


@pytest.mark.parametrize("name", ["table5_baseline", "table5_dr", "table5_target_aware",
                                  "table5_action_type", "table5_t2cr"])
def test_table5_variants_forward_and_backward(name):
    config, _ = _variant(name)
    model = T2CR(config)
    query, exemplar = random_videos(2, 103)
    out = model(query, exemplar)
    loss = (out.delta ** 2).mean()
    if out.query.direct is not None:
        loss = loss + out.query.direct.pow(2).mean()
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    is_baseline = name in ("table5_baseline", "table5_dr")
    assert isinstance(model.contrast, FeatureSubtraction if is_baseline else DifferenceTransformer)
    assert (model.attention.clip is None) == is_baseline
    assert (out.query.direct is None) == (name == "table5_baseline")
    assert (out.query.logits is not None) == (name in ("table5_action_type", "table5_t2cr"))
    assert (out.self_delta_query is not None) == (name == "table5_t2cr")
    if name == "table5_baseline":
        with torch.no_grad():
            q = model.encode(*model.extract_clip_features(query))
            vote = model.vote(q, q.tokens.unsqueeze(1), torch.full((2, 1), 7.0))
        torch.testing.assert_close(vote.score, vote.contrastive)  # no direct score to average in


@pytest.mark.parametrize("levels", [(False, False, False), (True, False, False), (True, True, False),
                                    (True, True, True)])
def test_table11_attention_levels(levels):
    first, clip, second = levels
    model = tiny_model(**{"attention.feature_first": first, "attention.clip": clip,
                          "attention.feature_second": second})
    present = [model.attention.feature_first is not None, model.attention.clip is not None,
               model.attention.feature_second is not None]
    assert present == list(levels)
    out = model(*random_videos(2, 103))
    (out.delta.sum() + out.query.direct.sum()).backward()
    assert model.attention.mlp[0].weight.grad.abs().sum() > 0


def test_attention_levels_start_near_identity_scale():
    """Rescaled softmax weights average to exactly 1, so switching a level keeps the feature scale."""
    model = tiny_model()
    features = torch.rand(2, 10, 128)
    _, weights_t = model.attention.feature_first(features)
    _, weights_c = model.attention.clip(features)
    torch.testing.assert_close(weights_t.mean(dim=-1), torch.ones(2, 10))
    torch.testing.assert_close(weights_c.mean(dim=-1), torch.ones(2))


@pytest.mark.parametrize("layers,heads", [(1, 4), (5, 8), (10, 16), (3, 32)])
def test_decoder_layers_and_heads(layers, heads):
    model = tiny_model(**{"decoder.layers": layers, "decoder.heads": heads})
    assert len(model.contrast.blocks) == layers
    assert model.contrast.blocks[0].attention.num_heads == heads
    out = model(*random_videos(1, 103))
    assert out.delta.shape == (1,)


def test_parameter_groups_cover_every_parameter_once():
    model = tiny_model()
    groups = model.parameter_groups(1e-4, 1e-3)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == sum(1 for p in model.parameters() if p.requires_grad)
    assert groups[0]["lr"] == 1e-4 and len(groups[0]["params"]) == len(list(model.backbone.parameters()))


def test_i3d_without_checkpoint_is_refused():
    config = T2CRConfig(num_action_types=5)
    with pytest.raises(FileNotFoundError, match="model.backbone.checkpoint"):
        T2CR(config)


@pytest.mark.slow
def test_paper_size_pair_with_real_i3d():
    """16x112x112 clips, M = 10 / N = 8 on 103 frames, through the real I3D (random weights)."""
    from t2cr.models.backbones import BackboneConfig

    config = T2CRConfig(backbone=BackboneConfig(name="i3d", random_init=True), num_action_types=58)
    model = T2CR(config).eval()
    query, exemplar = random_videos(1, 103, size=112)
    with torch.no_grad():
        base, aux = model.extract_clip_features(query)
        out = model(query, exemplar)
    assert base.shape == (1, 10, 1024) and aux.shape == (1, 8, 1024)
    assert out.query.tokens.shape == (1, 20, 64) and out.query.logits.shape == (1, 58)
    assert torch.isfinite(out.delta).all()


def test_vote_mask_ignores_padding():
    model = tiny_model().eval()
    with torch.no_grad():
        q = model.encode(*model.extract_clip_features(random_videos(1, 103)[0]))
        e = model.encode(*model.extract_clip_features(torch.randn(3, 3, 103, 16, 16)))
        tokens = e.tokens.unsqueeze(0)
        scores = torch.tensor([[1.0, 2.0, 50.0]])
        masked = model.vote(q, tokens, scores, torch.tensor([[True, True, False]]))
        first_two = model.vote(q, tokens[:, :2], scores[:, :2])
    torch.testing.assert_close(masked.contrastive, first_two.contrastive)


def test_one_regressor_gives_the_direct_and_the_difference_score():
    """Eq. 1-2: R(.|W) is shared; `shared_regressor=false` gives the direct score its own head."""
    from helpers import tiny_model

    shared = tiny_model()
    assert shared.direct_regressor is None
    tokens = torch.randn(2, 10, shared.config.latent_dim)
    torch.testing.assert_close(shared.direct_score(tokens), shared.regressor(tokens))
    shared.direct_score(tokens).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in shared.regressor.parameters())

    separate = tiny_model(shared_regressor=False)
    assert separate.direct_regressor is not None
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert count(separate) - count(shared) == count(separate.direct_regressor)
    torch.testing.assert_close(separate.direct_score(tokens), separate.direct_regressor(tokens))


def test_heads_and_scores_stay_fp32_under_bf16_autocast():
    """bf16-mixed runs only the backbone in bf16: a bf16 regressor output would round 25.3 to 25.25."""
    from helpers import tiny_model

    model = tiny_model().eval()
    features = torch.randn(3, model.num_clips, model.config.backbone.feature_dim) * 5
    scores = torch.tensor([[25.3, 30.1], [41.7, 12.2], [7.9, 66.6]])
    with torch.no_grad():
        plain = model.encode(*model.clip_features(features))
        plain_vote = model.vote(plain, plain.tokens[[1, 2, 0, 2, 0, 1]].reshape(3, 2, *plain.tokens.shape[1:]), scores)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model.encode(*model.clip_features(features))
            mixed_vote = model.vote(mixed, mixed.tokens[[1, 2, 0, 2, 0, 1]].reshape(3, 2, *mixed.tokens.shape[1:]),
                                    scores)
            pair = model(torch.randn(2, 3, 103, 16, 16), torch.randn(2, 3, 103, 16, 16))
    for name in ("tokens", "direct", "logits"):
        assert getattr(mixed, name).dtype == torch.float32, name
        assert torch.equal(getattr(mixed, name), getattr(plain, name)), name
    assert mixed_vote.score.dtype == torch.float32 and torch.equal(mixed_vote.score, plain_vote.score)
    assert pair.delta.dtype == pair.query.direct.dtype == torch.float32
