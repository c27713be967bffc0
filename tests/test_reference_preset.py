"""`paper_method=t2cr_reference`: T2CR as its official code trains it (issue 27).

* The preset composes with every experiment and switches exactly the keys it names, nothing else.
* The model pieces it switches on, each against a separate computation from the module's weights: the 1x1
  convolution per path and the context-gated attention of the fusion (pair sides and self-difference
  sides), the squeeze-excitation gate of the regressor, the token score head, the decoder without its
  final LayerNorm.
* The loss: with the preset's weights, our total is the official code's loss (tools/helper.py,
  `network_forward_train`, loss1..loss8) written out here term by term from the model's pieces: the sums of
  MSE / BCE means, its SimCLR loss on clip-averaged tokens, Soft-DTW by enumerating alignment paths.
* Every parameter gets a gradient (DDP refuses the others).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from framework_helpers import read_metrics, run_cli, tiny_overrides
from omegaconf import OmegaConf
from test_experiments import PATHS, compose_train
from test_science_losses import brute_soft_dtw

from t2cr.losses import LossConfig, T2CRLoss, bce_on_softmax
from t2cr.models.backbones import BackboneConfig
from t2cr.models.t2cr import T2CR, AttentionConfig, ClipConfig, DecoderConfig, T2CRConfig
from t2cr.resources import CONF_DIR

PRESET = "paper_method=t2cr_reference"
# what the preset sets, and nothing else may change (README, "Where we differ"; conf/paper_method/t2cr_reference.yaml)
SWITCHED = {
    "model.path_fusion": "conv", "model.aux_path_heads": True, "model.token_score_head": True,
    "model.regressor_se": True, "model.decoder.final_norm": False,
    "loss.reg_weight": 2.0, "loss.direct_weight": 2.0, "loss.score_head_weight": 4.0, "loss.cls_weight": 4.0,
    "loss.cls_form": "bce_softmax", "loss.self_weight": 20.0, "loss.aln_weight": 2.0, "loss.gamma": 0.1,
    "loss.path_weight": 2.0, "loss.tau": 0.1, "loss.ntxent_form": "clip_mean_symmetric",
}
EXPERIMENTS = sorted(p.relative_to(CONF_DIR / "experiment").with_suffix("").as_posix()
                     for p in (CONF_DIR / "experiment").rglob("*.yaml")
                     if "paper" not in p.relative_to(CONF_DIR / "experiment").parts[:-1])


def _flat(cfg) -> dict:
    container = OmegaConf.to_container(cfg, resolve=True)
    out = {}

    def walk(prefix: str, node) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else str(key), value)
        else:
            out[prefix] = node

    for section in ("model", "loss", "optim", "data", "trainer"):
        walk(section, container[section])
    return out


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_the_preset_composes_with_every_experiment_and_switches_only_its_keys(experiment):
    plain = _flat(compose_train(f"experiment={experiment}", *PATHS))
    reference = _flat(compose_train(f"experiment={experiment}", PRESET, *PATHS))
    changed = {key: reference.get(key) for key in plain.keys() | reference.keys() if plain.get(key) != reference.get(key)}
    expected = {key: value for key, value in SWITCHED.items() if plain.get(key) != value}
    assert changed == expected
    for key, value in SWITCHED.items():
        assert reference[key] == value, key


# ------------------------------------------------------------------------------------------- the model
NUM_CLASSES, LATENT = 3, 16


def _config(**overrides) -> T2CRConfig:
    config = T2CRConfig(
        backbone=BackboneConfig(name="tiny", checkpoint=None),
        clips=ClipConfig(num_frames=20, clip_length=4, num_base_clips=4, base_starts=None, aux_strategy="2-clip-avg1"),
        attention=AttentionConfig(bottleneck=8), decoder=DecoderConfig(layers=2, heads=2),
        hidden_dim=24, latent_dim=LATENT, regressor_hidden=20, regressor_mid=32, num_action_types=NUM_CLASSES,
        path_fusion="conv", aux_path_heads=True, token_score_head=True, regressor_se=True)
    config.decoder.final_norm = False
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def _model(**overrides) -> T2CR:
    torch.manual_seed(3)
    model = T2CR(_config(**overrides)).double().train()
    with torch.no_grad():  # weights far from their near-zero initialisation, so that every piece matters
        for parameter in model.fusion.attention.parameters():
            parameter.normal_(0.0, 0.3)
    return model


def _features(model: T2CR, videos: int, seed: int = 4):
    g = torch.Generator().manual_seed(seed)
    feature_dim = model.config.backbone.feature_dim
    base = torch.randn(videos, model.base_plan.num_clips, feature_dim, generator=g, dtype=torch.float64)
    aux = torch.randn(videos, model.aux_plan.num_clips, feature_dim, generator=g, dtype=torch.float64) + 0.2
    return base, aux


def _gated_attention_by_hand(attention, tokens: torch.Tensor) -> torch.Tensor:
    """MobileViTv2's separable attention from its weights, one video and one token at a time."""
    weight, bias = attention.to_score_key_value.weight, attention.to_score_key_value.bias
    d = tokens.shape[-1]
    out = torch.empty_like(tokens)
    for v in range(tokens.shape[0]):
        rows = [weight @ t + bias for t in tokens[v]]
        scores = torch.stack([r[0] for r in rows])
        probabilities = torch.exp(scores - scores.max()) / torch.exp(scores - scores.max()).sum()
        context = sum(p * r[1:1 + d] for p, r in zip(probabilities, rows))
        for i, r in enumerate(rows):
            out[v, i] = attention.out.weight @ (r[1 + d:] * context) + attention.out.bias
    return out


def _mix_by_hand(conv, tokens: torch.Tensor) -> torch.Tensor:
    """Conv1d(M, M, 1) over (V, M, d): each output clip a weighted sum of the input clips plus a bias."""
    w, b = conv.weight[:, :, 0], conv.bias
    return torch.stack([torch.stack([sum(w[o, i] * video[i] for i in range(video.shape[0])) + b[o]
                                     for o in range(w.shape[0])]) for video in tokens])


def test_conv_fusion_is_a_1x1_convolution_per_path_then_gated_attention_added_residually():
    model = _model()
    base, aux = _features(model, 2)
    encoding = model.encode(base, aux)
    fusion = model.fusion
    base_mixed = _mix_by_hand(fusion.base_mix, encoding.base_tokens)
    aux_mixed = _mix_by_hand(fusion.aux_mix, encoding.aux_tokens)
    pair_side = torch.cat([base_mixed, aux_mixed], dim=1)
    expected = pair_side + _gated_attention_by_hand(fusion.attention, pair_side)
    torch.testing.assert_close(encoding.tokens, expected, rtol=1e-10, atol=1e-12)
    # the self-difference compares each path mixed and attended on its own (M tokens, not 2M)
    own_base, own_aux = fusion.each_path(encoding.base_tokens, encoding.aux_tokens)
    torch.testing.assert_close(own_base, base_mixed + _gated_attention_by_hand(fusion.attention, base_mixed),
                               rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(own_aux, aux_mixed + _gated_attention_by_hand(fusion.attention, aux_mixed),
                               rtol=1e-10, atol=1e-12)
    output = model.forward_features(base[:1], aux[:1], base[1:], aux[1:])
    torch.testing.assert_close(output.self_delta_query,
                               model.regressor(model.contrast(own_base[:1], own_aux[:1])), rtol=1e-10, atol=1e-12)


def _regressor_by_hand(regressor, tokens: torch.Tensor) -> torch.Tensor:
    first, second, last = regressor.mlp[0], regressor.mlp[2], regressor.mlp[4]
    hidden = torch.relu(torch.relu(tokens @ first.weight.T + first.bias) @ second.weight.T + second.bias)
    squeeze, excite = regressor.gate.gate[0].weight, regressor.gate.gate[2].weight
    gates = torch.sigmoid(torch.relu(hidden.mean(dim=1) @ squeeze.T) @ excite.T)  # (V, mid), one per feature
    return ((hidden * gates[:, None, :]) @ last.weight.T + last.bias).squeeze(-1).mean(dim=1)


def test_regressor_gate_token_score_head_and_decoder_without_final_norm():
    model = _model()
    assert model.regressor.gate.gate[0].weight.shape == (2, 32)  # reduction 16 of the 32 mid features
    tokens = torch.randn(3, 5, LATENT, dtype=torch.float64)
    torch.testing.assert_close(model.regressor(tokens), _regressor_by_hand(model.regressor, tokens))
    head = model.token_score.fc
    torch.testing.assert_close(model.token_score(tokens), (tokens @ head.weight.T + head.bias).squeeze(-1).mean(1))
    memory = torch.randn(3, 4, LATENT, dtype=torch.float64)
    by_blocks = tokens
    for block in model.contrast.blocks:
        by_blocks = block(by_blocks, memory)
    torch.testing.assert_close(model.contrast(tokens, memory), by_blocks)  # no LayerNorm after the last block
    with_norm = _model(decoder=DecoderConfig(layers=2, heads=2))
    assert isinstance(with_norm.contrast.norm, torch.nn.LayerNorm)


def test_auxiliary_path_heads_read_the_auxiliary_tokens_and_the_final_score_reads_the_base_path():
    model = _model()
    base, aux = _features(model, 3)
    encoding = model.encode(base, aux)
    torch.testing.assert_close(encoding.aux_heads.direct, model.regressor(encoding.aux_tokens))
    torch.testing.assert_close(encoding.aux_heads.logits, model.classifier(encoding.aux_tokens))
    torch.testing.assert_close(encoding.aux_heads.token_score, model.token_score(encoding.aux_tokens))
    torch.testing.assert_close(encoding.direct, model.regressor(encoding.base_tokens))
    exemplar_tokens = encoding.tokens[1:].unsqueeze(1)  # each of two queries against one exemplar
    vote = model.vote(encoding.select(slice(0, 2)), exemplar_tokens, torch.tensor([[5.0], [6.0]], dtype=torch.float64))
    expected = (encoding.direct[:2] + model.difference(encoding.tokens[:2], encoding.tokens[1:]) + torch.tensor(
        [5.0, 6.0], dtype=torch.float64)) / 2
    torch.testing.assert_close(vote.score, expected)
    assert model.encode(base, aux).aux_heads is not None
    assert _model(aux_path_heads=False).encode(base, aux).aux_heads is None


# -------------------------------------------------------------------------------------------- the loss
def _mse(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().reshape(-1).tolist(), b.detach().reshape(-1).tolist()
    return sum((x - y) ** 2 for x, y in zip(a, b, strict=True)) / len(a)


def _simclr(fast: torch.Tensor, slow: torch.Tensor, tau: float) -> float:
    """The official code's simclr_loss, as a loop: every row of [fast; slow] an anchor, its partner the positive,
    every other row a negative (the anchor itself excluded), cosine similarity over tau."""
    rows = fast.detach().tolist() + slow.detach().tolist()
    n = len(fast)

    def cos(u, v):
        return sum(a * b for a, b in zip(u, v)) / math.sqrt(sum(a * a for a in u) * sum(b * b for b in v))

    total = 0.0
    for i, anchor in enumerate(rows):
        partner = (i + n) % (2 * n)
        denominator = sum(math.exp(cos(anchor, rows[j]) / tau) for j in range(2 * n) if j != i)
        total += -math.log(math.exp(cos(anchor, rows[partner]) / tau) / denominator)
    return total / (2 * n)


def _bce_of_softmax(logits: torch.Tensor, labels: torch.Tensor) -> float:
    probabilities = torch.softmax(logits.detach(), dim=1)
    return F.binary_cross_entropy(probabilities, F.one_hot(labels, logits.shape[1]).to(probabilities.dtype)).item()


def _soft_dtw_mean(x: torch.Tensor, y: torch.Tensor, gamma: float) -> float:
    return sum(brute_soft_dtw(a, b, gamma)[0] for a, b in zip(x.tolist(), y.tolist())) / len(x)


def official_loss(model: T2CR, query_base, query_aux, exemplar_base, exemplar_aux, label_1, label_2, class_1,
                  class_2, gamma: float, tau: float) -> float:
    """network_forward_train's loss from the model's pieces: logits1..4 are the tokens of (query, exemplar) x
    (base, aux), each head called on them separately."""
    # both videos of the pairs through the attention module at once, as the code's taa(feature_full) does (the
    # clip expansion's BatchNorm sees them together)
    both = model.encode(torch.cat([query_base, exemplar_base]), torch.cat([query_aux, exemplar_aux]))
    b = len(query_base)
    q, e = both.select(slice(0, b)), both.select(slice(b, None))
    logits1, logits2, logits3, logits4 = q.base_tokens, e.base_tokens, q.aux_tokens, e.aux_tokens
    fusion = model.fusion
    pred1 = model.regressor(model.contrast(q.tokens, e.tokens))
    pred2 = model.regressor(model.contrast(e.tokens, q.tokens))
    self1 = model.regressor(model.contrast(*fusion.each_path(logits1, logits3)))
    self2 = model.regressor(model.contrast(*fusion.each_path(logits2, logits4)))
    labels = (label_1, label_2, label_1, label_2)
    classes = (class_1, class_2, class_1, class_2)
    tokens = (logits1, logits2, logits3, logits4)
    loss1 = _mse(logits1, logits3) + _mse(logits2, logits4)
    loss2 = _simclr(logits1.mean(1), logits3.mean(1), tau) + _simclr(logits2.mean(1), logits4.mean(1), tau)
    loss3 = _mse(pred1, label_1 - label_2) + _mse(pred2, label_2 - label_1)
    loss4 = sum(_mse(model.regressor(t), s) for t, s in zip(tokens, labels))
    loss5 = sum(_mse(model.token_score(t), s) for t, s in zip(tokens, labels))
    loss6 = sum(_bce_of_softmax(model.classifier(t), c) for t, c in zip(tokens, classes))
    loss7 = 10.0 * (_mse(self1, torch.zeros_like(self1)) + _mse(self2, torch.zeros_like(self2)))
    loss8 = _soft_dtw_mean(logits1, logits2, gamma) + _soft_dtw_mean(logits3, logits4, gamma)
    return loss1 + loss2 + loss3 + loss4 + loss5 + loss6 + loss7 + loss8


def _preset_loss_config() -> LossConfig:
    loss = {key.split(".", 1)[1]: value for key, value in SWITCHED.items() if key.startswith("loss.")}
    return LossConfig(**loss)


def test_the_preset_total_is_the_official_codes_loss_term_by_term():
    model = _model()
    base, aux = _features(model, 6, seed=7)
    g = torch.Generator().manual_seed(8)
    label_1 = torch.rand(3, generator=g, dtype=torch.float64) * 10
    label_2 = torch.rand(3, generator=g, dtype=torch.float64) * 10
    class_1, class_2 = torch.randint(NUM_CLASSES, (3,), generator=g), torch.randint(NUM_CLASSES, (3,), generator=g)
    config = _preset_loss_config()
    output = model.forward_features(base[:3], aux[:3], base[3:], aux[3:])
    terms = T2CRLoss(config)(output, label_1, label_2, class_1, class_2)
    expected = official_loss(model, base[:3], aux[:3], base[3:], aux[3:], label_1, label_2, class_1, class_2,
                             config.gamma, config.tau)
    assert terms["total"].item() == pytest.approx(expected, rel=1e-9)
    assert set(terms) == {"reg", "score_head", "cls", "aln", "self", "path", "total"}


def test_bce_on_softmax_is_binary_cross_entropy_of_the_probabilities_even_where_they_saturate():
    logits = torch.tensor([[0.3, -1.2, 2.0, 0.1], [120.0, 0.0, -5.0, 1.0], [-0.5, -0.5, -0.5, 300.0]],
                          dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([2, 1, 3])
    # BCELoss clamps each log at -100: -log(p) of the saturated rows is 100 where p rounds to 0
    expected = _bce_of_softmax(logits, labels)
    value = bce_on_softmax(logits, labels)
    assert value.item() == pytest.approx(expected, rel=1e-12)
    value.backward()
    assert torch.isfinite(logits.grad).all()


def test_every_parameter_gets_a_gradient_under_the_preset():
    model = _model()
    g = torch.Generator().manual_seed(9)
    videos = torch.randn(4, 3, 20, 16, 16, generator=g, dtype=torch.float64)
    output = model(videos[:2], videos[2:])
    scores = torch.tensor([3.0, 7.0], dtype=torch.float64)
    terms = T2CRLoss(_preset_loss_config())(output, scores, scores.flip(0), torch.tensor([0, 2]), torch.tensor([1, 2]))
    terms["total"].backward()
    missing = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []


def test_the_preset_trains_and_tests_end_to_end(tmp_path: Path):
    root = tmp_path / "data"
    run = tmp_path / "run"
    run_cli("train", [*tiny_overrides(root), PRESET, "trainer.max_epochs=1", "test_best=false",
                      f"hydra.run.dir={run}"], cwd=tmp_path)
    assert math.isfinite(read_metrics(run)["test/spearman"])
    saved = OmegaConf.load(run / ".hydra" / "config.yaml")
    assert saved.model.path_fusion == "conv" and saved.loss.cls_form == "bce_softmax"
