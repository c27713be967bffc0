"""The composite objective (Eq. 19): switches, weights, gradient flow and a tiny overfit."""


import pytest
import torch
from helpers import random_videos, tiny_config, tiny_model

from t2cr.losses import LossConfig, T2CRLoss, nt_xent_star, path_mse, soft_dtw
from t2cr.models.backbones import BackboneConfig
from t2cr.models.t2cr import T2CR

TERMS = ("reg", "cls", "aln", "self", "path")
SWITCH_OF = {"cls": "use_cls", "aln": "use_aln", "self": "use_self_reg"}
WEIGHT_OF = {"reg": "reg_weight", "cls": "cls_weight", "aln": "aln_weight", "self": "self_weight",
             "path": "path_weight"}


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(1)
    model = tiny_model().eval()  # eval: deterministic batch norm, so every loss sees the same output
    query, exemplar = random_videos(3, 103)
    with torch.no_grad():
        out = model(query, exemplar)
    targets = {"query_score": torch.tensor([8.0, 6.5, 7.2]), "exemplar_score": torch.tensor([7.5, 6.0, 9.1]),
               "query_label": torch.tensor([0, 1, 2]), "exemplar_label": torch.tensor([0, 4, 2])}
    return out, targets


def test_default_weights_are_the_papers():
    c = LossConfig()
    assert (c.reg_weight, c.cls_weight, c.aln_weight, c.self_weight, c.path_weight) == (1, 1, 0.1, 10, 1)
    assert c.tau == 0.1 and c.gamma == 0.1


def test_terms_match_their_definitions(pair):
    out, t = pair
    terms = T2CRLoss()(out, **t)
    q, e = out.query, out.exemplar
    qs, es = t["query_score"], t["exemplar_score"]
    reg = (((out.delta - (qs - es)) ** 2).mean() + ((out.delta_reverse - (es - qs)) ** 2).mean()) / 2 \
        + (((q.direct - qs) ** 2).mean() + ((e.direct - es) ** 2).mean()) / 2
    torch.testing.assert_close(terms["reg"], reg)
    cls = torch.nn.functional.cross_entropy(torch.cat([q.logits, e.logits]),
                                            torch.cat([t["query_label"], t["exemplar_label"]]))
    torch.testing.assert_close(terms["cls"], cls)
    aln = (soft_dtw(q.base_tokens, e.base_tokens, 0.1).mean() + soft_dtw(q.aux_tokens, e.aux_tokens, 0.1).mean()) / 2
    torch.testing.assert_close(terms["aln"], aln)
    torch.testing.assert_close(terms["self"], torch.cat([out.self_delta_query, out.self_delta_exemplar]).pow(2).mean())
    path = sum((path_mse(v.base_tokens, v.aux_tokens) + nt_xent_star(v.base_tokens, v.aux_tokens, 0.1)) / 2
               for v in (q, e))
    torch.testing.assert_close(terms["path"], path)
    weights = LossConfig()
    total = sum(getattr(weights, WEIGHT_OF[n]) * terms[n] for n in TERMS)
    torch.testing.assert_close(terms["total"], total)


@pytest.mark.parametrize("term", sorted(SWITCH_OF))
def test_each_switch_removes_exactly_its_term(pair, term):
    out, t = pair
    full = T2CRLoss()(out, **t)
    cut = T2CRLoss(LossConfig(**{SWITCH_OF[term]: False}))(out, **t)
    assert term not in cut and set(full) - set(cut) == {term}
    for name in cut:
        if name != "total":
            torch.testing.assert_close(cut[name], full[name])
    weight = getattr(LossConfig(), WEIGHT_OF[term])
    torch.testing.assert_close(full["total"] - cut["total"], weight * full[term])


def test_table6_path_switches(pair):
    out, t = pair
    q, e = out.query, out.exemplar
    mse = sum(path_mse(v.base_tokens, v.aux_tokens) / 2 for v in (q, e))
    ntx = sum(nt_xent_star(v.base_tokens, v.aux_tokens, 0.1) / 2 for v in (q, e))
    only_mse = T2CRLoss(LossConfig(use_path_ntxent=False))(out, **t)
    only_ntx = T2CRLoss(LossConfig(use_path_mse=False))(out, **t)
    neither = T2CRLoss(LossConfig(use_path_mse=False, use_path_ntxent=False))(out, **t)
    torch.testing.assert_close(only_mse["path"], mse)
    torch.testing.assert_close(only_ntx["path"], ntx)
    assert "path" not in neither


def test_weights_scale_their_term_only(pair):
    out, t = pair
    base = T2CRLoss()(out, **t)
    heavier = T2CRLoss(LossConfig(aln_weight=0.5))(out, **t)
    torch.testing.assert_close(heavier["total"] - base["total"], 0.4 * base["aln"])


def test_negative_weight_is_refused():
    with pytest.raises(ValueError, match="loss.self_weight must be >= 0"):
        LossConfig(self_weight=-1)


def test_one_path_model_has_no_path_terms():
    model = tiny_model(two_path=False)
    out = model(*random_videos(2, 103))
    terms = T2CRLoss()(out, torch.ones(2), torch.zeros(2), torch.tensor([0, 1]), torch.tensor([1, 0]))
    assert set(terms) == {"reg", "cls", "aln", "total"}


def test_missing_labels_named_in_error(pair):
    out, t = pair
    with pytest.raises(ValueError, match="use_cls=false"):
        T2CRLoss()(out, t["query_score"], t["exemplar_score"])


def test_gradients_reach_every_trainable_parameter_of_the_full_model():
    """Real I3D (random weights, small frames) + every head and every loss term."""
    config = tiny_config()
    config.backbone = BackboneConfig(name="i3d", random_init=True)
    model = T2CR(config).train()
    query, exemplar = random_videos(2, 103, size=32)
    out = model(query, exemplar)
    terms = T2CRLoss()(out, torch.tensor([3.0, 5.0]), torch.tensor([4.0, 2.0]), torch.tensor([0, 1]),
                       torch.tensor([2, 1]))
    assert set(terms) == set(TERMS) | {"total"}
    terms["total"].backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert not missing, missing
    assert all(not p.requires_grad for p in model.backbone.conv3d_0c_1x1.parameters())


def test_backbone_batch_norm_stays_frozen_in_train_mode():
    config = tiny_config()
    config.backbone = BackboneConfig(name="i3d", random_init=True, freeze_bn=True)
    model = T2CR(config).train()
    bn = model.backbone.conv3d_1a_7x7.batch3d
    before = bn.running_mean.clone()
    with torch.no_grad():
        model(*random_videos(1, 103, size=32))
    assert not bn.training and torch.equal(bn.running_mean, before)
    assert model.expansion.layers[1].training  # the model's own batch norm still trains


@pytest.mark.slow
@pytest.mark.extended
def test_tiny_batch_is_overfit():
    torch.manual_seed(0)
    model = tiny_model(**{"decoder.layers": 1})
    criterion = T2CRLoss()
    query, exemplar = random_videos(4, 103, seed=3)
    qs, es = torch.tensor([80.0, 60.0, 70.0, 90.0]) / 10, torch.tensor([65.0, 85.0, 75.0, 55.0]) / 10
    ql, el = torch.tensor([0, 1, 2, 3]), torch.tensor([1, 2, 3, 4])
    optimizer = torch.optim.Adam(model.parameter_groups(1e-3, 3e-3))
    first = last = None
    for step in range(150):
        terms = criterion(model(query, exemplar), qs, es, ql, el)
        optimizer.zero_grad()
        terms["total"].backward()
        optimizer.step()
        first = terms if first is None else first
        last = terms
    # Soft-DTW is bounded below by -gamma * log(#alignments), not by 0; measure the fall of the
    # non-negative terms and of the total above that bound.
    assert last["reg"] < 0.1 * first["reg"]
    # the classifier competes with Soft-DTW, which pulls query and exemplar tokens together
    assert last["cls"] < 0.5 * first["cls"]
    floor = -LossConfig().aln_weight * 0.1 * torch.log(torch.tensor(1462563.0))  # Delannoy D(9, 9)
    assert last["total"] - floor < 0.1 * (first["total"] - floor), (first["total"], last["total"])
