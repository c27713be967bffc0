"""Tests for the modified NT-Xent loss (Eq. 16-17) and the path MSE."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from t2cr.losses import nt_xent_star, path_mse

SQ = 1.0 / math.sqrt(2.0)


def _hand_b2(tau: float) -> float:
    """Hand computation for base = [e1, e2], aux = [(1, 1), (1, 0)] written out term by term.

    Cosines: cos(b0, a0) = 1/sqrt2, cos(b0, b1) = 0, cos(b0, a1) = 1,
             cos(b1, a1) = 0,       cos(b1, b0) = 0, cos(b1, a0) = 1/sqrt2.
    """
    pos0 = math.exp(SQ / tau)
    loss0 = -math.log(pos0 / (pos0 + math.exp(0.0 / tau) + math.exp(1.0 / tau)))
    pos1 = math.exp(0.0 / tau)
    loss1 = -math.log(pos1 / (pos1 + math.exp(0.0 / tau) + math.exp(SQ / tau)))
    return (loss0 + loss1) / 2.0


BASE = [[1.0, 0.0], [0.0, 1.0]]
AUX = [[1.0, 1.0], [1.0, 0.0]]


@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0])
def test_hand_computation_b2(tau):
    base = torch.tensor(BASE, dtype=torch.float64)
    aux = torch.tensor(AUX, dtype=torch.float64)
    out = nt_xent_star(base, aux, tau=tau)
    assert out.shape == ()
    assert out.item() == pytest.approx(_hand_b2(tau), rel=1e-12)
    # float32 path
    out32 = nt_xent_star(base.float(), aux.float(), tau=tau)
    assert out32.dtype == torch.float32
    assert out32.item() == pytest.approx(_hand_b2(tau), rel=1e-5)


def test_hand_computation_3d_inputs_are_flattened():
    tau = 0.5
    base = torch.tensor(BASE, dtype=torch.float64)
    aux = torch.tensor(AUX, dtype=torch.float64)
    expected = _hand_b2(tau)
    for shape in [(2, 1, 2), (2, 2, 1)]:
        assert nt_xent_star(base.reshape(shape), aux.reshape(shape), tau=tau).item() == pytest.approx(
            expected, rel=1e-12
        )
    # (B, M, C) tokens: zero-padding the flattened vectors does not change any cosine.
    base3 = torch.zeros(2, 3, 2, dtype=torch.float64)
    aux3 = torch.zeros(2, 3, 2, dtype=torch.float64)
    base3[:, 1, :] = base
    aux3[:, 1, :] = aux
    assert nt_xent_star(base3, aux3, tau=tau).item() == pytest.approx(expected, rel=1e-12)


def test_invariance_to_positive_scaling():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(6, 4, 8, generator=g, dtype=torch.float64)
    aux = torch.randn(6, 4, 8, generator=g, dtype=torch.float64)
    ref = nt_xent_star(base, aux, tau=0.2)
    scales = torch.rand(6, 1, 1, generator=g, dtype=torch.float64) * 10 + 0.1
    assert nt_xent_star(base * 7.0, aux * 0.01, tau=0.2).item() == pytest.approx(ref.item(), rel=1e-10)
    assert nt_xent_star(base * scales, aux, tau=0.2).item() == pytest.approx(ref.item(), rel=1e-10)


def test_loss_decreases_when_aux_moves_towards_base():
    g = torch.Generator().manual_seed(1)
    bsz, dim = 4, 16
    base = torch.eye(bsz, dim, dtype=torch.float64)  # orthogonal anchors
    aux = torch.randn(bsz, dim, generator=g, dtype=torch.float64)
    losses = [
        nt_xent_star(base, (1 - t) * aux + t * base, tau=0.1).item() for t in (0.0, 0.25, 0.5, 0.75, 1.0)
    ]
    assert all(a > b for a, b in itertools.pairwise(losses)), losses
    # fully aligned: positives have cos 1, all negatives cos 0 -> loss = log(1 + (2B - 2) e^{-1/tau})
    assert losses[-1] == pytest.approx(math.log(1 + (2 * bsz - 2) * math.exp(-10.0)), rel=1e-10)
    # and the gradient w.r.t. aux points towards base: a small step along -grad lowers the loss
    aux_p = aux.clone().requires_grad_(True)
    loss = nt_xent_star(base, aux_p, tau=0.1)
    loss.backward()
    stepped = nt_xent_star(base, aux - 1e-2 * aux_p.grad, tau=0.1)
    assert stepped.item() < loss.item()


def test_batch_of_one_is_zero_with_graph():
    base = torch.randn(1, 3, 5, requires_grad=True)
    aux = torch.randn(1, 3, 5, requires_grad=True)
    out = nt_xent_star(base, aux)
    assert out.item() == 0.0
    assert out.requires_grad
    out.backward()
    assert torch.all(base.grad == 0) and torch.all(aux.grad == 0)


def test_gradcheck_and_finite_in_low_precision():
    g = torch.Generator().manual_seed(2)
    base = torch.randn(3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    aux = torch.randn(3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: nt_xent_star(a, b, tau=0.3), (base, aux))
    out = nt_xent_star(base.detach().bfloat16(), aux.detach().bfloat16(), tau=0.05)
    assert out.dtype == torch.float32 and torch.isfinite(out)


def test_validation_errors():
    with pytest.raises(ValueError, match="shapes differ"):
        nt_xent_star(torch.randn(2, 3), torch.randn(2, 4))
    with pytest.raises(ValueError, match="at least 2 dims"):
        nt_xent_star(torch.randn(3), torch.randn(3))
    with pytest.raises(ValueError, match="tau"):
        nt_xent_star(torch.randn(2, 3), torch.randn(2, 3), tau=0.0)


def test_path_mse():
    a = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    b = torch.tensor([[1.0, 0.0], [0.0, 4.0]])
    assert path_mse(a, b).item() == pytest.approx((0 + 4 + 9 + 0) / 4)
    with pytest.raises(ValueError, match="shapes differ"):
        path_mse(a, b[:1])
