"""The T2CR losses (src/t2cr/losses.py) against independent computations in plain Python (float64 `math`).

* Soft-DTW (Eq. 10): an explicit enumeration of every monotone alignment path; the gradient is the expected
  path occupancy (d dtw / d D_ij = P(path passes through (i, j))) times dD_ij / dx.
* NT-Xent* (Eq. 16-17): a loop over anchors base_j with the positive aux_j and the negatives base_k, aux_k
  (k != j), averaged over j; its gradient by central finite differences of that loop.
* path MSE: a hand-worked example.
* T2CRLoss (Eq. 19): every term recomputed from the tensors of a fake model output with the loops above, at
  non-default weights, temperature and gamma; which tensors each term reads; the use_* switches.

Nothing here calls the code under test to build an expected value.
"""

from __future__ import annotations

import copy
import itertools
import math
from types import SimpleNamespace

import pytest
import torch

from t2cr.losses import LossConfig, T2CRLoss, nt_xent_star, path_mse, soft_dtw

# non-default settings: every weight differs from the others, from 1 and from its default
TAU, GAMMA = 0.37, 0.7
CONFIG = {"reg_weight": 0.7, "cls_weight": 1.3, "aln_weight": 0.23, "self_weight": 4.1, "path_weight": 2.9,
          "tau": TAU, "gamma": GAMMA}
WEIGHT_OF = {"reg": "reg_weight", "cls": "cls_weight", "aln": "aln_weight", "self": "self_weight",
             "path": "path_weight"}


# ------------------------------------------------------------------------------ brute-force references
def alignment_paths(n: int, m: int) -> list[tuple[tuple[int, int], ...]]:
    """Every monotone path from (0, 0) to (n - 1, m - 1) with steps (1, 0), (0, 1), (1, 1)."""
    if (n, m) == (1, 1):
        return [((0, 0),)]
    found = []
    for di, dj in ((1, 0), (0, 1), (1, 1)):
        if n - di >= 1 and m - dj >= 1:
            found += [path + ((n - 1, m - 1),) for path in alignment_paths(n - di, m - dj)]
    return found


def _sq_dist(u: list[float], v: list[float]) -> float:
    return sum((a - b) ** 2 for a, b in zip(u, v, strict=True))


def brute_soft_dtw(x: list[list[float]], y: list[list[float]], gamma: float):
    """(value, occupancy) of -gamma log sum_A exp(-<A, D> / gamma); occupancy[i][j] = P((i, j) in A)."""
    n, m = len(x), len(y)
    cost = [[_sq_dist(x[i], y[j]) for j in range(m)] for i in range(n)]
    paths = alignment_paths(n, m)
    totals = [sum(cost[i][j] for i, j in path) for path in paths]
    lowest = min(totals)
    weights = [math.exp(-(t - lowest) / gamma) for t in totals]
    z = sum(weights)
    occupancy = [[0.0] * m for _ in range(n)]
    for path, w in zip(paths, weights, strict=True):
        for i, j in path:
            occupancy[i][j] += w / z
    return lowest - gamma * math.log(z), occupancy


def brute_soft_dtw_grad(x, y, occupancy):
    """d dtw / dx_i = sum_j P_ij 2 (x_i - y_j),  d dtw / dy_j = -sum_i P_ij 2 (x_i - y_j)."""
    gx = [[sum(occupancy[i][j] * 2 * (x[i][k] - y[j][k]) for j in range(len(y))) for k in range(len(x[i]))]
          for i in range(len(x))]
    gy = [[-sum(occupancy[i][j] * 2 * (x[i][k] - y[j][k]) for i in range(len(x))) for k in range(len(y[j]))]
          for j in range(len(y))]
    return gx, gy


def _cos(u: list[float], v: list[float]) -> float:
    return sum(a * b for a, b in zip(u, v, strict=True)) / math.sqrt(sum(a * a for a in u) * sum(b * b for b in v))


def brute_nt_xent(base: list[list[float]], aux: list[list[float]], tau: float) -> float:
    """Eq. 17 averaged over the anchors j: positive h(b_j, a_j), negatives h(b_j, b_k), h(b_j, a_k), k != j."""
    def h(u, v):
        return math.exp(_cos(u, v) / tau)

    losses = []
    for j in range(len(base)):
        positive = h(base[j], aux[j])
        negatives = sum(h(base[j], base[k]) + h(base[j], aux[k]) for k in range(len(base)) if k != j)
        losses.append(-math.log(positive / (positive + negatives)))
    return sum(losses) / len(losses)


def flat_rows(t: torch.Tensor) -> list[list[float]]:
    return t.detach().reshape(t.shape[0], -1).double().tolist()


def brute_nt_xent_grad(base: torch.Tensor, aux: torch.Tensor, tau: float, step: float = 1e-6):
    """Central finite differences of brute_nt_xent, shaped like base and aux."""
    grads = []
    for which in (0, 1):
        rows = [flat_rows(base), flat_rows(aux)]
        grad = [[0.0] * len(rows[which][0]) for _ in rows[which]]
        for r, c in itertools.product(range(len(grad)), range(len(grad[0]))):
            original = rows[which][r][c]
            rows[which][r][c] = original + step
            up = brute_nt_xent(*rows, tau)
            rows[which][r][c] = original - step
            down = brute_nt_xent(*rows, tau)
            rows[which][r][c] = original
            grad[r][c] = (up - down) / (2 * step)
        grads.append(torch.tensor(grad, dtype=torch.float64).reshape(base.shape))
    return grads


def _mean_sq(a: list[float], b: list[float]) -> float:
    return sum((u - v) ** 2 for u, v in zip(a, b, strict=True)) / len(a)


def _flat(t: torch.Tensor) -> list[float]:
    return t.detach().reshape(-1).double().tolist()


def reference_terms(out, scores: dict[str, torch.Tensor], config: dict) -> dict[str, float]:
    """Every term of T2CRLoss recomputed in plain Python from the fake output (both videos of a pair, both
    paths where there are two, as losses.py documents), and the Eq. 19 total with the config's weights."""
    q, e = out.query, out.exemplar
    qs, es = _flat(scores["query_score"]), _flat(scores["exemplar_score"])
    cfg = {**dataclass_defaults(), **config}
    terms = {}
    # J_reg (Eq. 8): Delta against s_Q - s_E (and its reverse against s_E - s_Q), direct against s_Q, s_E
    reg = _mean_sq(_flat(out.delta) + _flat(out.delta_reverse),
                   [a - b for a, b in zip(qs, es)] + [b - a for a, b in zip(qs, es)])
    if q.direct is not None:
        reg += _mean_sq(_flat(q.direct) + _flat(e.direct), qs + es)
    terms["reg"] = reg
    # J_cls (Eq. 9): cross-entropy of every video's action type
    if cfg["use_cls"] and q.logits is not None:
        rows = q.logits.tolist() + e.logits.tolist()
        labels = scores["query_label"].tolist() + scores["exemplar_label"].tolist()
        terms["cls"] = sum(math.log(sum(math.exp(v) for v in row)) - row[label]
                           for row, label in zip(rows, labels)) / len(rows)
    # J_aln (Eq. 10): Soft-DTW of query vs exemplar tokens, per path, mean over pairs, mean over paths
    if cfg["use_aln"]:
        paths = [("base_tokens", "base_tokens")] + ([("aux_tokens", "aux_tokens")] if q.aux_tokens is not None
                                                      else [])
        per_path = []
        for q_name, e_name in paths:
            qt, et = getattr(q, q_name).tolist(), getattr(e, e_name).tolist()
            per_path.append(sum(brute_soft_dtw(a, b, cfg["gamma"])[0] for a, b in zip(qt, et)) / len(qt))
        terms["aln"] = sum(per_path) / len(per_path)
    # J_reg^self (Eq. 18): MSE of the self-differences against 0
    if cfg["use_self_reg"] and out.self_delta_query is not None:
        terms["self"] = _mean_sq(_flat(out.self_delta_query) + _flat(out.self_delta_exemplar),
                                 [0.0] * (2 * len(qs)))
    # L_cl (Eq. 16-17) + the path MSE, per video, averaged over query and exemplar
    if q.aux_tokens is not None and (cfg["use_path_mse"] or cfg["use_path_ntxent"]):
        path = 0.0
        for video in (q, e):
            if cfg["use_path_mse"]:
                path += _mean_sq(_flat(video.base_tokens), _flat(video.aux_tokens)) / 2
            if cfg["use_path_ntxent"]:
                path += brute_nt_xent(flat_rows(video.base_tokens), flat_rows(video.aux_tokens), cfg["tau"]) / 2
        terms["path"] = path
    terms["total"] = sum(cfg[WEIGHT_OF[name]] * value for name, value in terms.items())
    return terms


def dataclass_defaults() -> dict:
    """LossConfig's field defaults as written in the paper (Sec. 4.3) and the Table 6-7 switches all on."""
    return {"reg_weight": 1.0, "cls_weight": 1.0, "aln_weight": 0.1, "self_weight": 10.0, "path_weight": 1.0,
            "use_cls": True, "use_aln": True, "use_self_reg": True, "use_path_mse": True, "use_path_ntxent": True,
            "tau": 0.1, "gamma": 0.1}


# ------------------------------------------------------------------------------ fake model output
B, M, D, CLASSES = 3, 3, 2, 4


def fake_output(seed: int = 5, batch: int = B):
    """What T2CRLoss reads of a PairOutput, as independent random float64 tensors; the fused `tokens` are NaN
    (no term may read them)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=1.0, shift=0.0):
        return torch.randn(*shape, generator=g, dtype=torch.float64) * scale + shift

    def video():
        return SimpleNamespace(base_tokens=r(batch, M, D), aux_tokens=r(batch, M, D, scale=1.5, shift=0.3),
                               tokens=torch.full((batch, 2 * M, D), float("nan"), dtype=torch.float64),
                               direct=r(batch, scale=2.0, shift=7.0), logits=r(batch, CLASSES, scale=1.5),
                               token_score=None, aux_heads=None)  # the official code's heads: off

    out = SimpleNamespace(query=video(), exemplar=video(), delta=r(batch), delta_reverse=r(batch, shift=-0.4),
                          self_delta_query=r(batch, scale=0.6), self_delta_exemplar=r(batch, scale=0.9, shift=0.2))
    scores = {"query_score": r(batch, scale=1.5, shift=7.5), "exemplar_score": r(batch, scale=1.5, shift=6.5),
              "query_label": torch.randint(CLASSES, (batch,), generator=g),
              "exemplar_label": torch.randint(CLASSES, (batch,), generator=g)}
    return out, scores


def _as_floats(terms: dict[str, torch.Tensor]) -> dict[str, float]:
    return {name: value.item() for name, value in terms.items()}


# ------------------------------------------------------------------------------ Soft-DTW
@pytest.mark.parametrize("n,m", [(3, 4), (4, 3), (2, 2)])
def test_soft_dtw_at_gamma_0_7_equals_the_enumeration_of_all_alignment_paths_value_and_gradient(n, m):
    """Reference: brute_soft_dtw (all Delannoy paths, plain Python) and its expected-occupancy gradient."""
    g = torch.Generator().manual_seed(11 + n * m)
    x = torch.randn(2, n, 3, generator=g, dtype=torch.float64).requires_grad_()
    y = (torch.randn(2, m, 3, generator=g, dtype=torch.float64) * 0.8 + 0.2).requires_grad_()
    batch_weights = [0.6, -1.7]
    value = soft_dtw(x, y, gamma=GAMMA)
    (value * torch.tensor(batch_weights, dtype=torch.float64)).sum().backward()
    for b in range(2):
        xb, yb = x[b].tolist(), y[b].tolist()
        expected, occupancy = brute_soft_dtw(xb, yb, GAMMA)
        assert value[b].item() == pytest.approx(expected, rel=1e-12, abs=1e-12)
        gx, gy = brute_soft_dtw_grad(xb, yb, occupancy)
        torch.testing.assert_close(x.grad[b], batch_weights[b] * torch.tensor(gx, dtype=torch.float64),
                                   rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(y.grad[b], batch_weights[b] * torch.tensor(gy, dtype=torch.float64),
                                   rtol=1e-10, atol=1e-12)


def test_path_enumeration_and_hand_worked_soft_dtw_of_two_by_two():
    """2x2 by hand: the paths are (0,0)->(1,1), via (0,1), via (1,0), so with x = (0, 1), y = (0, 2) (1-D):
    D = [[0, 4], [1, 1]], path costs 1, 5, 2 and dtw = -g log(e^{-1/g} + e^{-5/g} + e^{-2/g})."""
    assert len(alignment_paths(3, 4)) == 25 and len(alignment_paths(3, 3)) == 13  # Delannoy numbers
    x = torch.tensor([[[0.0], [1.0]]], dtype=torch.float64)
    y = torch.tensor([[[0.0], [2.0]]], dtype=torch.float64)
    g = GAMMA
    expected = -g * math.log(math.exp(-1 / g) + math.exp(-5 / g) + math.exp(-2 / g))
    assert soft_dtw(x, y, gamma=g).item() == pytest.approx(expected, rel=1e-13)


# ------------------------------------------------------------------------------ NT-Xent*
def _ntxent_inputs(batch: int = 4, seed: int = 3):
    """(B, 2, 3) tokens; aux rows of very different norms (cosine is scale-free); aux_0 close to base_0."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(batch, 2, 3, generator=g, dtype=torch.float64)
    aux = torch.randn(batch, 2, 3, generator=g, dtype=torch.float64) * torch.tensor([0.5, 3.0, 1.0, 7.0][:batch]
                                                                                    ).view(-1, 1, 1)
    aux[0] = base[0] * 2 + 0.1 * aux[0]
    return base, aux


def test_nt_xent_star_at_tau_0_37_equals_a_loop_over_anchors_positives_and_negatives():
    """Reference: brute_nt_xent (Eq. 17 as a Python loop, flattened tokens, mean over anchors)."""
    base, aux = _ntxent_inputs()
    got = nt_xent_star(base, aux, tau=TAU)
    assert got.item() == pytest.approx(brute_nt_xent(flat_rows(base), flat_rows(aux), TAU), rel=1e-12)
    # the roles are not symmetric: swapping base and aux changes the anchors and the negatives
    swapped = brute_nt_xent(flat_rows(aux), flat_rows(base), TAU)
    assert nt_xent_star(aux, base, tau=TAU).item() == pytest.approx(swapped, rel=1e-12)


def test_nt_xent_star_gradient_equals_finite_differences_of_the_loop():
    base, aux = (t.requires_grad_() for t in _ntxent_inputs())
    nt_xent_star(base, aux, tau=TAU).backward()
    grad_base, grad_aux = brute_nt_xent_grad(base, aux, TAU)
    torch.testing.assert_close(base.grad, grad_base, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(aux.grad, grad_aux, rtol=1e-6, atol=1e-8)


def test_nt_xent_star_hand_worked_two_videos():
    """base = (e1, e2), aux = (e1 + e2, -e1): cos(b0, a0) = 1/sqrt2, cos(b0, b1) = 0, cos(b0, a1) = -1,
    cos(b1, a1) = 0, cos(b1, b0) = 0, cos(b1, a0) = 1/sqrt2."""
    base = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    aux = torch.tensor([[1.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)
    s = 1 / math.sqrt(2)
    loss0 = -(s / TAU) + math.log(math.exp(s / TAU) + math.exp(0.0) + math.exp(-1 / TAU))
    loss1 = -(0.0 / TAU) + math.log(math.exp(0.0) + math.exp(0.0) + math.exp(s / TAU))
    assert nt_xent_star(base, aux, tau=TAU).item() == pytest.approx((loss0 + loss1) / 2, rel=1e-13)


# ------------------------------------------------------------------------------ path MSE
def test_path_mse_hand_worked_mean_over_every_element():
    """Differences [[0.5, -1], [2, 0]], [[-3, 1], [0.25, 1.5]]: squares sum to 17.5625 over 8 elements."""
    aux = torch.tensor([[[1.0, 2.0], [0.0, -1.0]], [[3.0, 0.5], [2.0, 2.0]]], dtype=torch.float64)
    diff = torch.tensor([[[0.5, -1.0], [2.0, 0.0]], [[-3.0, 1.0], [0.25, 1.5]]], dtype=torch.float64)
    assert path_mse(aux + diff, aux).item() == pytest.approx(17.5625 / 8, rel=1e-15)


# ------------------------------------------------------------------------------ T2CRLoss (Eq. 19)
def test_every_term_and_the_total_at_non_default_weights_equal_the_independent_computation():
    out, scores = fake_output()
    got = _as_floats(T2CRLoss(LossConfig(**CONFIG))(out, **scores))
    expected = reference_terms(out, scores, CONFIG)
    assert set(got) == {"reg", "cls", "aln", "self", "path", "total"}
    for name in expected:
        assert got[name] == pytest.approx(expected[name], rel=1e-10), name


@pytest.mark.parametrize("switches", [{"use_cls": False}, {"use_aln": False}, {"use_self_reg": False},
                                      {"use_path_mse": False}, {"use_path_ntxent": False},
                                      {"use_path_mse": False, "use_path_ntxent": False}],
                         ids=["cls", "aln", "self", "path-mse", "path-ntxent", "path-both"])
def test_a_switched_off_term_contributes_nothing(switches):
    """Reference: reference_terms with the same switches (the term or sub-term simply left out)."""
    config = {**CONFIG, **switches}
    out, scores = fake_output(seed=8)
    got = _as_floats(T2CRLoss(LossConfig(**config))(out, **scores))
    expected = reference_terms(out, scores, config)
    assert set(got) == set(expected)
    for name in expected:
        assert got[name] == pytest.approx(expected[name], rel=1e-10), name


READS = {
    "query.base_tokens": {"aln", "path"}, "query.aux_tokens": {"aln", "path"},
    "exemplar.base_tokens": {"aln", "path"}, "exemplar.aux_tokens": {"aln", "path"},
    "query.direct": {"reg"}, "exemplar.direct": {"reg"}, "delta": {"reg"}, "delta_reverse": {"reg"},
    "query.logits": {"cls"}, "exemplar.logits": {"cls"},
    "self_delta_query": {"self"}, "self_delta_exemplar": {"self"},
}


@pytest.mark.parametrize("field", sorted(READS))
def test_each_term_reads_exactly_its_own_tensors(field):
    """Changing one tensor of the output changes exactly the terms that the paper builds from it."""
    out, scores = fake_output(seed=9)
    loss = T2CRLoss(LossConfig(**CONFIG))
    before = loss(out, **scores)
    changed = copy.deepcopy(out)
    owner, name = (changed, field) if "." not in field else (getattr(changed, field.split(".")[0]),
                                                             field.split(".")[1])
    value = getattr(owner, name)
    setattr(owner, name, value + torch.linspace(0.3, 0.9, value.numel(), dtype=value.dtype).view(value.shape))
    after = loss(changed, **scores)
    moved = {term for term in before if term != "total" and not torch.equal(before[term], after[term])}
    assert moved == READS[field]
    assert not torch.equal(before["total"], after["total"])


def test_one_path_output_aligns_the_base_tokens_and_has_no_path_or_self_terms():
    """A one-path model (aux_tokens None, no self-difference): J_aln is Soft-DTW of the base tokens alone."""
    out, scores = fake_output(seed=4)
    for video in (out.query, out.exemplar):
        video.aux_tokens = None
    out.self_delta_query = out.self_delta_exemplar = None
    got = _as_floats(T2CRLoss(LossConfig(**CONFIG))(out, **scores))
    expected = reference_terms(out, scores, CONFIG)
    assert set(got) == set(expected) == {"reg", "cls", "aln", "total"}
    for name in expected:
        assert got[name] == pytest.approx(expected[name], rel=1e-10), name


def test_without_direct_score_or_logits_the_regression_is_the_difference_term_only():
    """No direct-score head and no classifier: J_reg is the Delta MSE alone and there is no J_cls."""
    out, scores = fake_output(seed=6)
    for video in (out.query, out.exemplar):
        video.direct = None
        video.logits = None
    got = _as_floats(T2CRLoss(LossConfig(**CONFIG))(out, **scores))
    expected = reference_terms(out, scores, CONFIG)
    assert set(got) == set(expected) == {"reg", "aln", "self", "path", "total"}
    for name in expected:
        assert got[name] == pytest.approx(expected[name], rel=1e-10), name
