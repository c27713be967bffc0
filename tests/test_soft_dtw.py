"""Tests for the Soft-DTW loss (Eq. 10) against an explicit enumeration of all alignment paths."""

from __future__ import annotations

import functools
import math
from types import SimpleNamespace

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from t2cr import losses
from t2cr.losses import LossConfig, T2CRLoss, soft_dtw, soft_dtw_cuda_selfcheck

SHAPES = [(1, 1), (2, 3), (3, 3), (4, 2), (3, 5)]
GAMMAS = [0.01, 0.1, 1.0, 3.0]


@functools.cache
def _all_paths(n: int, m: int) -> tuple[tuple[tuple[int, int], ...], ...]:
    """Every monotone alignment path from (0, 0) to (n-1, m-1) with steps (1,0), (0,1), (1,1)."""
    paths = []

    def walk(i, j, acc):
        acc = acc + ((i, j),)
        if (i, j) == (n - 1, m - 1):
            paths.append(acc)
            return
        if i + 1 < n:
            walk(i + 1, j, acc)
        if j + 1 < m:
            walk(i, j + 1, acc)
        if i + 1 < n and j + 1 < m:
            walk(i + 1, j + 1, acc)

    walk(0, 0, ())
    return tuple(paths)


def _delannoy(n: int, m: int) -> int:
    """Number of monotone alignment paths of an n x m grid (central Delannoy-type count)."""
    a, b = n - 1, m - 1
    return sum(math.comb(a, k) * math.comb(b, k) * 2**k for k in range(min(a, b) + 1))


def _path_costs(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B, |A|) costs <A, D> of all paths, built with differentiable torch ops (no recursion)."""
    n, m = x.shape[1], y.shape[1]
    dist = ((x[:, :, None, :] - y[:, None, :, :]) ** 2).sum(-1)  # (B, n, m)
    costs = []
    for path in _all_paths(n, m):
        ii = torch.tensor([p[0] for p in path])
        jj = torch.tensor([p[1] for p in path])
        costs.append(dist[:, ii, jj].sum(1))
    return torch.stack(costs, dim=1)


def brute_soft_dtw(x, y, gamma):
    return -gamma * torch.logsumexp(-_path_costs(x, y) / gamma, dim=1)


def brute_hard_dtw(x, y):
    return _path_costs(x, y).min(dim=1).values


def _rand(b, n, m, d=3, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n, d, generator=g, dtype=dtype)
    y = torch.randn(b, m, d, generator=g, dtype=dtype)
    return x, y


def test_path_enumeration_counts():
    for n, m in SHAPES + [(4, 4)]:
        assert len(_all_paths(n, m)) == _delannoy(n, m)
    assert len(_all_paths(3, 3)) == 13


@pytest.mark.parametrize("n,m", SHAPES)
@pytest.mark.parametrize("gamma", GAMMAS)
def test_value_matches_brute_force(n, m, gamma):
    x, y = _rand(3, n, m, seed=n * 10 + m)
    out = soft_dtw(x, y, gamma=gamma)
    assert out.shape == (3,) and out.dtype == torch.float64
    torch.testing.assert_close(out, brute_soft_dtw(x, y, gamma), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n,m", SHAPES)
@pytest.mark.parametrize("gamma", [0.1, 1.0])
def test_gradient_matches_autograd_through_brute_force(n, m, gamma):
    x, y = _rand(2, n, m, d=4, seed=100 + n * 10 + m)
    w = torch.tensor([0.7, -1.3], dtype=torch.float64)  # non-uniform upstream gradient
    xa, ya = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
    (soft_dtw(xa, ya, gamma) * w).sum().backward()
    xb, yb = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
    (brute_soft_dtw(xb, yb, gamma) * w).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ya.grad, yb.grad, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("gamma", [0.1, 1.0])
def test_gradcheck(gamma):
    x, y = _rand(2, 3, 4, d=2, seed=7)
    x.requires_grad_(True)
    y.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: soft_dtw(a, b, gamma), (x, y))


@pytest.mark.parametrize("n,m", [(3, 3), (4, 2), (4, 4)])
def test_hard_dtw_limit(n, m):
    # For any gamma: min_A <A,D> - gamma * log|A| <= dtw_gamma <= min_A <A,D>, since the log-sum-exp
    # of |A| terms lies between the max term and the max term plus log|A|. So at gamma = 1e-3 the gap
    # to hard DTW is in [0, 1e-3 * log|A|] (about 4e-3 for 4 x 4) -- the tolerance used here, plus 1e-9
    # for float64 rounding.
    gamma = 1e-3
    x, y = _rand(4, n, m, seed=3)
    hard = brute_hard_dtw(x, y)
    soft = soft_dtw(x, y, gamma)
    gap = hard - soft
    assert torch.all(gap >= -1e-9)
    assert torch.all(gap <= gamma * math.log(_delannoy(n, m)) + 1e-9)


def test_hard_dtw_limit_against_dp():
    # A separate hard-DTW dynamic program on a longer, unequal pair (too many paths to enumerate).
    x, y = _rand(2, 9, 6, seed=11)
    gamma = 1e-3
    dist = ((x[:, :, None, :] - y[:, None, :, :]) ** 2).sum(-1)
    for b in range(2):
        r = [[math.inf] * 7 for _ in range(10)]
        r[0][0] = 0.0
        for i in range(1, 10):
            for j in range(1, 7):
                r[i][j] = dist[b, i - 1, j - 1].item() + min(r[i - 1][j - 1], r[i - 1][j], r[i][j - 1])
        soft = soft_dtw(x[b : b + 1], y[b : b + 1], gamma).item()
        assert -1e-9 <= r[9][6] - soft <= gamma * math.log(_delannoy(9, 6)) + 1e-9


def test_batch_independence_and_unequal_lengths():
    x, y = _rand(5, 7, 4, d=6, seed=5)
    x.requires_grad_(True)
    y.requires_grad_(True)
    out = soft_dtw(x, y, 0.5)
    out.sum().backward()
    for b in range(5):
        xb = x[b : b + 1].detach().clone().requires_grad_(True)
        yb = y[b : b + 1].detach().clone().requires_grad_(True)
        single = soft_dtw(xb, yb, 0.5)
        single.sum().backward()
        torch.testing.assert_close(out[b : b + 1], single, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(x.grad[b : b + 1], xb.grad, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(y.grad[b : b + 1], yb.grad, rtol=1e-12, atol=1e-12)
    # n != m in both orders is consistent with swapping the arguments (D transposes, paths mirror).
    torch.testing.assert_close(soft_dtw(y, x, 0.5), out, rtol=1e-12, atol=1e-12)


def test_large_costs_small_gamma_are_stable():
    # Costs ~1e4 with gamma = 1e-3: exp(-cost / gamma) underflows without the min trick.
    x, y = _rand(2, 5, 6, seed=9)
    x = (x * 50).requires_grad_(True)
    y = (y * 50).detach().requires_grad_(True)
    out = soft_dtw(x, y, 1e-3)
    out.sum().backward()
    assert torch.all(torch.isfinite(out))
    assert torch.all(torch.isfinite(x.grad)) and torch.all(torch.isfinite(y.grad))
    x32, y32 = x.detach().float().requires_grad_(True), y.detach().float().requires_grad_(True)
    out32 = soft_dtw(x32, y32, 1e-3)
    assert out32.dtype == torch.float32 and torch.all(torch.isfinite(out32))
    torch.testing.assert_close(out32.double(), out.detach(), rtol=1e-4, atol=1e-2)
    # cost / gamma ~ 1e7 exceeds fp32's exact range: the gradient is rough there, but never inf or NaN
    out32.sum().backward()
    assert torch.all(torch.isfinite(x32.grad)) and torch.all(torch.isfinite(y32.grad))


def test_float32_matches_float64():
    x, y = _rand(3, 6, 5, d=8, seed=12)
    torch.testing.assert_close(
        soft_dtw(x.float(), y.float(), 0.1).double(), soft_dtw(x, y, 0.1), rtol=1e-5, atol=1e-4
    )


def test_bfloat16_input_gives_finite_float32():
    x, y = _rand(2, 4, 5, d=8, seed=13, dtype=torch.float32)
    xb = x.bfloat16().requires_grad_(True)
    yb = y.bfloat16().requires_grad_(True)
    out = soft_dtw(xb, yb, 0.1)
    assert out.dtype == torch.float32 and torch.all(torch.isfinite(out))
    torch.testing.assert_close(out, soft_dtw(xb.detach().float(), yb.detach().float(), 0.1))
    out.sum().backward()
    assert xb.grad.dtype == torch.bfloat16 and torch.all(torch.isfinite(xb.grad.float()))
    assert yb.grad.dtype == torch.bfloat16 and torch.all(torch.isfinite(yb.grad.float()))


def test_under_autocast_stays_float32():
    x, y = _rand(2, 4, 5, d=8, seed=14, dtype=torch.float32)
    ref = soft_dtw(x, y, 0.1)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = soft_dtw(x, y, 0.1)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref)


@pytest.mark.parametrize("autocast", [False, True])
def test_large_common_offset_keeps_the_distances_in_float32(autocast):
    # Features sharing a large common part (|x| ~ 1e3 per coordinate, differences ~ 1e-2): the expansion
    # ||x||^2 + ||y||^2 - 2 x.y cancels ~6e7 down to ~1e-2 and keeps no correct digit in fp32 (its values
    # are off by up to 0.75 of about -1.2 here, its gradient by 100 %). Summed from the differences, fp32
    # matches a float64 run on the same fp32 numbers, values and gradients, also under CPU bf16 autocast.
    g = torch.Generator().manual_seed(21)
    x = (1e3 + 1e-2 * torch.randn(3, 10, 64, generator=g)).float()
    y = (1e3 + 1e-2 * torch.randn(3, 10, 64, generator=g)).float()
    x32, y32 = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
    x64, y64 = x.double().requires_grad_(True), y.double().requires_grad_(True)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=autocast):
        out32 = soft_dtw(x32, y32, 0.1)
    out64 = soft_dtw(x64, y64, 0.1)
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32.double(), out64.detach(), rtol=1e-5, atol=1e-6)
    out32.sum().backward()
    out64.sum().backward()
    torch.testing.assert_close(x32.grad.double(), x64.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(y32.grad.double(), y64.grad, rtol=1e-4, atol=1e-6)


class _CountOps(TorchDispatchMode):
    """Counts dispatched operations that are not views (a view is metadata only; the rest are kernels)."""

    def __init__(self) -> None:
        super().__init__()
        self.kernels = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.kernels += not func.is_view
        return func(*args, **(kwargs or {}))


def test_few_operations_per_anti_diagonal():
    # Each recursion runs three operations per anti-diagonal (n + m - 1 of them); the rest is a fixed
    # number around it. The linear-domain loop this replaced dispatched about 750 for 10 x 10.
    n = m = 10
    x = torch.randn(4, n, 64, requires_grad=True)
    y = torch.randn(4, m, 64, requires_grad=True)
    with _CountOps() as train:
        soft_dtw(x, y, 0.1).sum().backward()
    assert train.kernels <= 2 * 3 * (n + m - 1) + 30, train.kernels
    with torch.no_grad(), _CountOps() as evaluation:  # no gradient wanted: only the forward recursion
        soft_dtw(x, y, 0.1)
    assert evaluation.kernels <= 3 * (n + m - 1) + 15, evaluation.kernels


def test_static_call_returns_fresh_outputs():
    # The protocol of the CUDA graph path, run eagerly: static buffers in, clones out, so a second call of
    # the same shape (e.g. another loss before this backward) leaves the first call's results untouched.
    c1 = torch.nn.functional.pad(-torch.rand(2, 4, 3, dtype=torch.float64) * 10, (1, 1, 1, 1))
    c2 = torch.nn.functional.pad(-torch.rand(2, 4, 3, dtype=torch.float64) * 10, (1, 1, 1, 1))
    runner = losses._StaticCall(lambda c: losses._soft_dtw_recursions(c, True), (c1,), capture=False)
    first = runner(c1)
    second = runner(c2)
    for got, want in zip(first, losses._soft_dtw_recursions(c1, True)):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    for got, want in zip(second, losses._soft_dtw_recursions(c2, True)):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert not torch.equal(first[0], second[0])


def test_both_paths_in_one_call_give_the_mean_of_the_two_means(monkeypatch):
    # T2CRLoss's alignment term: one soft_dtw call on the batch-concatenated base and auxiliary tokens,
    # bit-for-bit the mean of the two per-path means (value and gradients).
    g = torch.Generator().manual_seed(22)
    tokens = {k: torch.randn(3, 10, 64, generator=g, requires_grad=True) for k in ("qb", "qa", "eb", "ea")}

    def video(base: torch.Tensor, aux: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(base_tokens=base, aux_tokens=aux, direct=None, logits=None, token_score=None,
                               aux_heads=None)

    output = SimpleNamespace(query=video(tokens["qb"], tokens["qa"]), exemplar=video(tokens["eb"], tokens["ea"]),
                             delta=torch.zeros(3), delta_reverse=torch.zeros(3),
                             self_delta_query=None, self_delta_exemplar=None)
    config = LossConfig(use_cls=False, use_self_reg=False, use_path_mse=False, use_path_ntxent=False)
    calls = []

    def counted(*args, **kwargs):
        calls.append(args[0].shape)
        return soft_dtw(*args, **kwargs)

    monkeypatch.setattr(losses, "soft_dtw", counted)
    aln = T2CRLoss(config)(output, torch.zeros(3), torch.zeros(3))["aln"]
    assert calls == [(6, 10, 64)]
    grads = torch.autograd.grad(aln, list(tokens.values()))
    two_calls = (soft_dtw(tokens["qb"], tokens["eb"]).mean() + soft_dtw(tokens["qa"], tokens["ea"]).mean()) / 2
    assert torch.equal(aln, two_calls)
    for got, want in zip(grads, torch.autograd.grad(two_calls, list(tokens.values()))):
        assert torch.equal(got, want)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
def test_cuda_graph_path_matches_cpu():
    assert soft_dtw_cuda_selfcheck() < 1e-10


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
def test_cuda_matches_cpu():
    x, y = _rand(4, 8, 6, d=16, seed=15)
    xc, yc = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
    xg, yg = x.cuda().requires_grad_(True), y.cuda().requires_grad_(True)
    out_c = soft_dtw(xc, yc, 0.1)
    out_g = soft_dtw(xg, yg, 0.1)
    out_c.sum().backward()
    out_g.sum().backward()
    assert out_g.device.type == "cuda"
    torch.testing.assert_close(out_g.cpu(), out_c, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(xg.grad.cpu(), xc.grad, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(yg.grad.cpu(), yc.grad, rtol=1e-10, atol=1e-10)


def test_validation_errors():
    x = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match="3-D"):
        soft_dtw(x[0], x[0])
    with pytest.raises(ValueError, match="batch sizes differ"):
        soft_dtw(x, torch.randn(3, 3, 4))
    with pytest.raises(ValueError, match="feature sizes differ"):
        soft_dtw(x, torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match="gamma must be > 0"):
        soft_dtw(x, x, gamma=0.0)
    with pytest.raises(ValueError, match="gamma must be > 0"):
        soft_dtw(x, x, gamma=-1.0)
    with pytest.raises(ValueError, match="non-empty"):
        soft_dtw(x, torch.randn(2, 0, 4))
    with pytest.raises(TypeError, match="floating-point"):
        soft_dtw(x.long(), x.long())
