"""Loss functions of T2CR.

* :func:`soft_dtw` -- Soft-DTW alignment loss ``J_aln`` of Eq. (10) (Cuturi & Blondel, 2017).
* :func:`nt_xent_star` -- the modified NT-Xent contrastive loss ``L_cl`` of Eq. (16)-(17).
* :func:`path_mse` -- plain MSE between the two pathways' representations.

All functions are device-agnostic (plain torch ops) and safe to call under autocast: they compute in
float32 (or float64 when given float64) and return float32/float64 tensors.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from t2cr.config_checks import require_number

__all__ = ["LossConfig", "T2CRLoss", "bce_on_softmax", "nt_xent_star", "path_mse", "soft_dtw",
           "soft_dtw_cuda_selfcheck"]


def _compute_dtype(*tensors: Tensor) -> torch.dtype:
    """float64 if any input is float64, else float32 (half/bfloat16 are upcast)."""
    if any(t.dtype == torch.float64 for t in tensors):
        return torch.float64
    return torch.float32


def _upcast(tensor: Tensor) -> Tensor:
    """float32 for half, bfloat16 and float32; float64 stays float64."""
    return tensor.to(_compute_dtype(tensor))


def _no_autocast(device: torch.device):
    """Context manager that disables autocast on ``device`` (a no-op where autocast is unsupported)."""
    try:
        return torch.autocast(device_type=device.type, enabled=False)
    except RuntimeError:  # pragma: no cover - device types without autocast support
        return contextlib.nullcontext()


# --------------------------------------------------------------------------------------------------
# Soft-DTW
# --------------------------------------------------------------------------------------------------
#
# Log domain: with c = -D / gamma, alpha[i, j] = c[i, j] + logaddexp(alpha[i-1, j-1], alpha[i-1, j],
# alpha[i, j-1]) is log sum over the paths from (1, 1) to (i, j) of exp(-cost / gamma), so
# R[n, m] = -gamma * alpha[n, m]. The mirrored recursion beta (paths from (i, j) to (n, m)) gives the
# gradient dR[n, m] / dD[i, j] = exp(alpha + beta - c - alpha[n, m]) [i, j], the probability that a path
# passes through (i, j) (forward-backward; equal to Cuturi & Blondel's E matrix). Each recursion costs
# three elementwise operations per anti-diagonal (two binary logaddexp, one add written in place), so one
# call dispatches about 6 (n + m) small kernels instead of about 40 (n + m) for the linear-domain form.
#
# Layout: alpha, beta and c are stored padded as (B, n + 2, m + 2) tensors and viewed flat as
# (B, (n + 2) * (m + 2)). Cell (i, j) (1-based, 1 <= i <= n, 1 <= j <= m) sits at flat index
# i * (m + 2) + j = i * (m + 1) + d with d = i + j, so one anti-diagonal is a plain strided slice
# (step m + 1) of the flat view, and its neighbours are the same slice shifted by a constant:
#   (i-1, j-1): -(m + 3)   (i-1, j): -(m + 2)   (i, j-1): -1
#   (i+1, j+1): +(m + 3)   (i+1, j): +(m + 2)   (i, j+1): +1
# The padding holds -inf in alpha / beta (no path through it) except the seeds alpha[0, 0] = 0 and
# beta[n + 1, m + 1] = 0, and 0 in c.
#
# On CUDA the recursions of one (B, n, m, dtype, device) shape are captured once as a CUDA graph and
# replayed (`_StaticCall`), so a call launches about a dozen kernels; the eager loop stays the reference
# (CPU, and CUDA with CUDA_GRAPHS = False), and `soft_dtw_cuda_selfcheck` compares the two on a GPU.

CUDA_GRAPHS = True  # set False to run the eager loop on CUDA as well
_MAX_GRAPHS = 32  # shapes beyond this many (per process) run eagerly instead of capturing more graphs


def _diagonal_slice(d: int, n: int, m: int) -> slice:
    """Flat slice of the padded (n + 2) x (m + 2) grid covering the cells with i + j == d."""
    i_lo = max(1, d - m)
    i_hi = min(n, d - 1)
    step = m + 1
    return slice(i_lo * step + d, i_hi * step + d + 1, step)


def _pairwise_sq_dists(x: Tensor, y: Tensor) -> Tensor:
    """D[b, i, j] = ||x[b, i] - y[b, j]||^2, summed from the differences.

    Not by the expansion ||x||^2 + ||y||^2 - 2 x.y: it cancels catastrophically when the features share a
    large common part (|x| ~ 1e3 with |x - y| ~ 1e-2 leaves no correct digit in fp32), and its bmm runs in
    TF32 on CUDA. The (B, n, m, d) difference tensor is small at T2CR's n, m ~ 10.
    """
    return (x.unsqueeze(2) - y.unsqueeze(1)).pow(2).sum(-1)


def _sweep(grid: Tensor, neg_cost: Tensor, forward: bool) -> None:
    """Fill the interior of ``grid`` in place: cell = neg_cost[cell] + logaddexp of its three neighbours.

    The neighbours are the predecessors (forward, anti-diagonals in increasing order) or the successors
    (backward, decreasing order); both grids are padded (B, n + 2, m + 2) as described above.
    """
    b, n, m = grid.shape[0], grid.shape[1] - 2, grid.shape[2] - 2
    g = grid.view(b, -1)
    c = neg_cost.view(b, -1)
    sign = -1 if forward else 1
    offsets = (sign * (m + 3), sign * (m + 2), sign)
    for d in range(2, n + m + 1) if forward else range(n + m, 1, -1):
        s = _diagonal_slice(d, n, m)
        first, second, third = (g[:, s.start + o : s.stop + o : s.step] for o in offsets)
        # logaddexp(-inf, -inf) = -inf (no NaN); every interior cell has a finite neighbour
        acc = torch.logaddexp(first, second)
        torch.logaddexp(acc, third, out=acc)
        torch.add(c[:, s], acc, out=g[:, s])


def _soft_dtw_recursions(neg_cost: Tensor, with_grad: bool) -> tuple[Tensor, ...]:
    """(alpha[n, m] (B,),) or (alpha[n, m], dR[n, m]/dD (B, n, m)) from the padded c = -D / gamma."""
    n, m = neg_cost.shape[1] - 2, neg_cost.shape[2] - 2
    alpha = torch.full_like(neg_cost, float("-inf"))
    alpha[:, 0, 0] = 0.0
    _sweep(alpha, neg_cost, forward=True)
    log_z = alpha[:, n, m]
    if not with_grad:
        return (log_z.clone(),)  # a clone, so that the result does not keep the whole grid alive
    beta = torch.full_like(neg_cost, float("-inf"))
    beta[:, n + 1, m + 1] = 0.0
    _sweep(beta, neg_cost, forward=False)
    inner = (slice(None), slice(1, n + 1), slice(1, m + 1))
    # alpha and beta both include c[i, j]: subtract it once. The result is a probability: clamping the log at
    # 0 keeps rounding (|alpha| ~ cost / gamma, beyond 1e8 in fp32 at extreme costs) from overflowing exp
    log_p = alpha[inner] + beta[inner] - neg_cost[inner] - log_z[:, None, None]
    grad = log_p.clamp_max_(0.0).exp_()
    return log_z.clone(), grad


class _StaticCall:
    """``fn`` on static input buffers; with ``capture`` the call is one replay of a captured CUDA graph.

    A call copies its inputs into the buffers and returns clones of the outputs, because the next call of
    the same shape (another loss before this backward) overwrites the static outputs. Without ``capture``
    the same protocol runs ``fn`` eagerly, which is how CPU tests check it.
    """

    def __init__(self, fn: Callable[..., tuple[Tensor, ...]], examples: tuple[Tensor, ...],
                 capture: bool) -> None:
        self.fn = fn
        self.inputs = tuple(t.clone() for t in examples)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.outputs: tuple[Tensor, ...] = ()
        if capture:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            graph = torch.cuda.CUDAGraph()
            # the outer stream context restores the caller's stream even when the capture fails (the graph
            # context skips its own restore when capture_end raises)
            with torch.cuda.stream(side):
                fn(*self.inputs)  # warm-up outside the capture, as torch.cuda.graphs documents (lazy inits)
                # thread_local: CUDA calls of other threads (loader pinning, NCCL watchdog) cannot abort it
                with torch.cuda.graph(graph, stream=side, capture_error_mode="thread_local"):
                    self.outputs = fn(*self.inputs)
            torch.cuda.current_stream().wait_stream(side)
            self.graph = graph

    def __call__(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        for buffer, value in zip(self.inputs, inputs, strict=True):
            buffer.copy_(value)
        if self.graph is None:
            return tuple(t.clone() for t in self.fn(*self.inputs))
        self.graph.replay()
        return tuple(t.clone() for t in self.outputs)


_GRAPHS: dict[tuple, _StaticCall | None] = {}  # None: capture failed for that key, run eagerly


def _graphed_recursions(neg_cost: Tensor, with_grad: bool) -> _StaticCall | None:
    """The captured recursions for this shape (captured on first use), or None to run eagerly."""
    key = (tuple(neg_cost.shape), neg_cost.dtype, neg_cost.device, with_grad)
    if key not in _GRAPHS:
        if len(_GRAPHS) >= _MAX_GRAPHS:
            return None
        try:
            with torch.cuda.device(neg_cost.device):
                _GRAPHS[key] = _StaticCall(lambda c: _soft_dtw_recursions(c, with_grad), (neg_cost,),
                                           capture=True)
        except RuntimeError as exc:  # the eager loop gives the same values; say why it is used
            warnings.warn(f"soft_dtw: CUDA graph capture failed for shape {tuple(neg_cost.shape)}, using the "
                          f"eager loop: {exc}", RuntimeWarning, stacklevel=2)
            _GRAPHS[key] = None
    return _GRAPHS[key]


def _recursions(neg_cost: Tensor, with_grad: bool) -> tuple[Tensor, ...]:
    if neg_cost.is_cuda and CUDA_GRAPHS and not torch.cuda.is_current_stream_capturing():
        runner = _graphed_recursions(neg_cost, with_grad)
        if runner is not None:
            return runner(neg_cost)
    return _soft_dtw_recursions(neg_cost, with_grad)


class _SoftDTWFunction(torch.autograd.Function):
    """Soft-DTW with squared Euclidean cost; dR/dD comes from the forward pass (once-differentiable)."""

    @staticmethod
    def forward(ctx, x: Tensor, y: Tensor, gamma: float, with_grad: bool) -> Tensor:  # type: ignore[override]
        dtype = _compute_dtype(x, y)
        with _no_autocast(x.device):
            xc = x.detach().to(dtype)
            yc = y.detach().to(dtype)
            neg_cost = F.pad(_pairwise_sq_dists(xc, yc).div_(-gamma), (1, 1, 1, 1))
            log_z, *grad = _recursions(neg_cost, with_grad)
            value = log_z * -gamma
        if with_grad:
            ctx.save_for_backward(xc, yc, grad[0])
        ctx.in_dtypes = (x.dtype, y.dtype)
        return value

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        xc, yc, grad_d = ctx.saved_tensors
        with _no_autocast(xc.device):
            # D_ij = ||x_i - y_j||^2  =>  dD_ij/dx_i = 2 (x_i - y_j) = -dD_ij/dy_j, from the differences as
            # in the forward (no cancellation of a common offset, no TF32 bmm)
            weight = grad_d * (2.0 * grad_out.to(grad_d.dtype)).view(-1, 1, 1)
            per_pair = weight.unsqueeze(-1) * (xc.unsqueeze(2) - yc.unsqueeze(1))  # (B, n, m, d)
            grad_x = per_pair.sum(2).to(ctx.in_dtypes[0]) if ctx.needs_input_grad[0] else None
            grad_y = per_pair.sum(1).neg_().to(ctx.in_dtypes[1]) if ctx.needs_input_grad[1] else None
        return grad_x, grad_y, None, None


def soft_dtw(x: Tensor, y: Tensor, gamma: float = 0.1) -> Tensor:
    """Soft-DTW discrepancy ``dtw_gamma(x, y)`` of Eq. (10), per batch element.

    ``dtw_gamma(x, y) = -gamma * log sum_{A} exp(-<A, D> / gamma)`` over all monotone alignment paths A
    (steps (1, 0), (0, 1), (1, 1) from (1, 1) to (n, m)), with the squared Euclidean cost
    ``D_ij = ||x_i - y_j||^2``. As ``gamma -> 0`` it tends to the hard DTW cost from below:
    ``DTW - gamma * log|A| <= dtw_gamma <= DTW``. Note that it is not zero for ``x == y`` and can be
    negative.

    Computed by the recursion ``R[i, j] = D[i, j] + softmin_gamma(R[i-1, j-1], R[i-1, j], R[i, j-1])`` in
    the log domain, vectorised over the batch and the anti-diagonals; the gradient is the forward-backward
    path-occupancy matrix (equal to Cuturi & Blondel's backward recursion), computed in the forward when an
    input requires grad, not autograd through the loop, so the saved state is O(B n m). The costs are
    summed from the differences ``x_i - y_j`` in fp32 (fp64 for fp64 inputs), never through a matmul.
    On CUDA the recursion of each shape runs as a captured CUDA graph (see ``CUDA_GRAPHS``).

    Args:
        x: (B, n, d) sequence.
        y: (B, m, d) sequence, same B, d (n and m may differ), same device.
        gamma: smoothing parameter, > 0.

    Returns:
        (B,) tensor, float64 if an input is float64 else float32 (half/bfloat16 are upcast, also under
        autocast). Gradients flow to ``x`` and ``y`` in their own dtypes (first order only).
    """
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise TypeError("soft_dtw expects torch tensors x and y")
    if x.dim() != 3 or y.dim() != 3:
        raise ValueError(
            f"soft_dtw expects 3-D inputs (B, n, d) and (B, m, d), got shapes {tuple(x.shape)} and "
            f"{tuple(y.shape)}"
        )
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"soft_dtw: batch sizes differ ({x.shape[0]} vs {y.shape[0]})")
    if x.shape[2] != y.shape[2]:
        raise ValueError(f"soft_dtw: feature sizes differ ({x.shape[2]} vs {y.shape[2]})")
    if x.shape[1] == 0 or y.shape[1] == 0:
        raise ValueError(f"soft_dtw: sequences must be non-empty, got lengths {x.shape[1]} and {y.shape[1]}")
    if x.device != y.device:
        raise ValueError(f"soft_dtw: inputs are on different devices ({x.device} vs {y.device})")
    if not (x.is_floating_point() and y.is_floating_point()):
        raise TypeError(f"soft_dtw expects floating-point inputs, got {x.dtype} and {y.dtype}")
    gamma = float(gamma)
    if not gamma > 0.0:  # also rejects NaN
        raise ValueError(f"soft_dtw: gamma must be > 0, got {gamma}")
    # known here, not inside forward (which always runs without grad): skip the gradient work in evaluation
    with_grad = torch.is_grad_enabled() and (x.requires_grad or y.requires_grad)
    return _SoftDTWFunction.apply(x, y, gamma, with_grad)


def soft_dtw_cuda_selfcheck(dtype: torch.dtype = torch.float64) -> float:
    """Largest |difference| between soft_dtw on CUDA with `dtype` inputs and the CPU in float64 on the same
    (rounded) inputs, values and gradients, each relative to the largest magnitude of its reference.

    For the prepared GPU check: every shape is called three times (the first call captures the CUDA graph,
    the next ones replay it with new inputs), once with two calls of the same shape before one backward
    (the static outputs must not leak between calls), and once more through the eager CUDA loop. Expect
    about 1e-15 in float64, 1e-6 in float32 and bfloat16 (upcast to float32 inside; the gradients return in
    bfloat16, about 4e-3). Raises RuntimeError without CUDA or when no graph was captured.
    """
    global CUDA_GRAPHS
    if not torch.cuda.is_available():
        raise RuntimeError("soft_dtw_cuda_selfcheck needs a CUDA device")
    generator = torch.Generator().manual_seed(0)
    worst = 0.0

    def compare(b: int, n: int, m: int, calls: int) -> None:
        nonlocal worst
        xs = [torch.randn(b, n, 64, generator=generator).to(dtype) for _ in range(calls)]
        ys = [torch.randn(b, m, 64, generator=generator).to(dtype) for _ in range(calls)]
        weights = torch.randn(calls, b, generator=generator, dtype=torch.float64)
        results = []
        for device, inputs_dtype in (("cpu", torch.float64), ("cuda", dtype)):
            xg = [x.to(device, inputs_dtype).requires_grad_(True) for x in xs]
            yg = [y.to(device, inputs_dtype).requires_grad_(True) for y in ys]
            values = [soft_dtw(x, y, 0.1) for x, y in zip(xg, yg)]  # all forwards before the backward
            sum((v * w.to(device, v.dtype)).sum() for v, w in zip(values, weights)).backward()
            results.append([t.detach().cpu().double()
                            for t in (*values, *(t.grad for t in xg), *(t.grad for t in yg))])
        for ref, got in zip(*results):
            worst = max(worst, ((ref - got).abs().max() / ref.abs().max().clamp_min(1e-30)).item())

    previous = CUDA_GRAPHS
    try:
        CUDA_GRAPHS = True
        for b, n, m in ((4, 10, 10), (3, 7, 5)):
            for _ in range(3):
                compare(b, n, m, calls=1)
            compare(b, n, m, calls=2)
        if not any(key[2].type == "cuda" and runner is not None for key, runner in _GRAPHS.items()):
            raise RuntimeError("soft_dtw_cuda_selfcheck: no CUDA graph was captured (see the warnings)")
        CUDA_GRAPHS = False
        compare(4, 10, 10, calls=2)
    finally:
        CUDA_GRAPHS = previous
    return worst


# --------------------------------------------------------------------------------------------------
# Two-pathway consistency losses
# --------------------------------------------------------------------------------------------------


def nt_xent_star(base: Tensor, aux: Tensor, tau: float = 0.1,
                 gather: Callable[[Tensor], tuple[Tensor, int]] | None = None) -> Tensor:
    """Modified NT-Xent contrastive loss ``L_cl`` (NT-Xent*) of Eq. (16)-(17), averaged over the batch.

    ``base`` and ``aux`` are (B, ...) representations of the base and auxiliary pathways of the same B
    videos; everything after the batch dimension is flattened into one vector per video. With
    ``h(u, v) = exp(cos(u, v) / tau)``, for each j the anchor is ``base_j``, the single positive is
    ``aux_j`` and the negatives are ``base_k`` and ``aux_k`` for all ``k != j``::

        loss_j = -log h(base_j, aux_j) / (h(base_j, aux_j) + sum_{k != j} [h(base_j, base_k) + h(base_j, aux_k)])

    Computed as ``logsumexp(logits_j) - cos(base_j, aux_j) / tau`` in float32 (float64 for float64
    inputs), with autocast disabled.

    Under DDP the batch of Eq. 17 is the global one: ``gather`` (e.g. :func:`t2cr.distributed.gather_batch`)
    returns the representations of every process with gradients and where this process's rows start; the
    local rows are the anchors, every gathered row a candidate. The mean over the local anchors, averaged
    over the processes by DDP, is then the single-process loss of the global batch, gradients included.

    For ``B == 1`` there are no negatives and the formula gives exactly ``-log 1 = 0``: the loss is
    then a zero tensor that is still connected to the graph (zero gradients), so a last, single-sample
    batch (``drop_last=False``) does not break training.

    Args:
        base: (B, ...) base-pathway representations, B >= 1.
        aux: auxiliary-pathway representations, same shape as ``base``.
        tau: temperature, > 0.
        gather: None (the batch is all there is), or a function (local rows) -> (rows of every process,
            index of the first local row).

    Returns:
        Scalar tensor.
    """
    if base.shape != aux.shape:
        raise ValueError(
            f"nt_xent_star: base and aux shapes differ ({tuple(base.shape)} vs {tuple(aux.shape)})"
        )
    if base.dim() < 2:
        raise ValueError(
            f"nt_xent_star expects (B, ...) inputs with at least 2 dims, got {tuple(base.shape)}"
        )
    if base.shape[0] < 1:
        raise ValueError("nt_xent_star: empty batch")
    tau = float(tau)
    if not tau > 0.0:
        raise ValueError(f"nt_xent_star: tau must be > 0, got {tau}")
    bsz = base.shape[0]
    dtype = _compute_dtype(base, aux)
    with _no_autocast(base.device):
        zb = F.normalize(base.reshape(bsz, -1).to(dtype), dim=1, eps=1e-8)
        za = F.normalize(aux.reshape(bsz, -1).to(dtype), dim=1, eps=1e-8)
        # base and aux gathered together: one collective per call
        everyone, first = (torch.cat([zb, za], dim=1), 0) if gather is None else gather(torch.cat([zb, za], dim=1))
        zb_all, za_all = everyone.split(zb.shape[1], dim=1)
        own = torch.arange(bsz, device=base.device) + first  # each anchor's own column
        sim_ba = zb @ za_all.t() / tau  # (b, B): positives at the own column, base_j vs aux_k elsewhere
        sim_bb = zb @ zb_all.t() / tau  # (b, B): base_j vs base_k, the own column (self) is excluded
        self_mask = torch.zeros_like(sim_bb, dtype=torch.bool)
        self_mask[torch.arange(bsz, device=base.device), own] = True
        sim_bb = sim_bb.masked_fill(self_mask, float("-inf"))
        logits = torch.cat([sim_ba, sim_bb], dim=1)  # (b, 2B)
        positive = sim_ba.gather(1, own.unsqueeze(1)).squeeze(1)
        loss = torch.logsumexp(logits, dim=1) - positive
    return loss.mean()


def bce_on_softmax(logits: Tensor, labels: Tensor) -> Tensor:
    """Binary cross-entropy of the softmax probabilities against one-hot labels, averaged over every (video,
    class) entry: the official T2CR code's action-type loss (BCELoss on softmax outputs).

    Computed from the logits in float32 with log p and log(1 - p) as differences of logsumexps (no
    log(0) where a probability rounds to 0 or 1), each clamped at -100 as BCELoss clamps its logs."""
    z = _upcast(logits)
    num_classes = z.shape[1]
    log_total = torch.logsumexp(z, dim=1, keepdim=True)
    log_p = z - log_total
    others = z.unsqueeze(1).expand(-1, num_classes, -1)  # (V, C, C): row c holds every logit but z_c
    eye = torch.eye(num_classes, dtype=torch.bool, device=z.device)
    log_not_p = torch.logsumexp(others.masked_fill(eye, float("-inf")), dim=2) - log_total
    one_hot = F.one_hot(labels, num_classes).to(z.dtype)
    return -(one_hot * log_p.clamp_min(-100.0) + (1 - one_hot) * log_not_p.clamp_min(-100.0)).mean()


def path_mse(base: Tensor, aux: Tensor) -> Tensor:
    """Mean squared error between the two pathways' tokens (the MSE consistency term of Table 6)."""
    if base.shape != aux.shape:
        raise ValueError(f"path_mse: base and aux shapes differ ({tuple(base.shape)} vs {tuple(aux.shape)})")
    return F.mse_loss(base, aux)


# ------------------------------------------------------------------------------ composite (Eq. 19)
CLS_FORMS = ("cross_entropy", "bce_softmax")
NTXENT_FORMS = ("tokens", "clip_mean_symmetric")


@dataclass
class LossConfig:
    """Eq. 19 weights lambda1..lambda5 and the switches of Tables 6 and 7 (defaults: Sec. 4.3). The schema of
    conf/loss."""

    reg_weight: float = 1.0  # lambda1, J_reg (Eq. 8)
    cls_weight: float = 1.0  # lambda2, J_cls (Eq. 9)
    aln_weight: float = 0.1  # lambda3, J_aln (Eq. 10)
    self_weight: float = 10.0  # lambda4, J_reg^self (Eq. 18)
    path_weight: float = 1.0  # lambda5, L_cl (Eq. 16-17)
    use_cls: bool = True  # Table 7 "Cross-Entropy"
    use_aln: bool = True  # Table 7 "Soft-DTW"
    use_self_reg: bool = True  # Table 6 "Self-Reg"
    use_path_mse: bool = True  # Table 6 "MSE"
    use_path_ntxent: bool = True  # Table 6 "NT-Xent*"
    tau: float = 0.1
    gamma: float = 0.1
    # The official code's way where it differs from the paper's text (paper_method=t2cr_reference):
    direct_weight: float = 1.0  # the direct-score MSE inside J_reg, relative to the difference-score MSE
    score_head_weight: float = 1.0  # MSE of the token score head (model.token_score_head) to the score
    cls_form: str = "cross_entropy"  # J_cls: "cross_entropy" (Eq. 9) | "bce_softmax" (the official code)
    # L_cl on "tokens": the flattened tokens, the base path the anchor (Eq. 16-17), or "clip_mean_symmetric":
    # the clip-averaged tokens with each path the anchor in turn (the official code's SimCLR loss)
    ntxent_form: str = "tokens"

    def __post_init__(self) -> None:
        for name, allowed in (("cls_form", CLS_FORMS), ("ntxent_form", NTXENT_FORMS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"loss.{name} is {getattr(self, name)!r}; expected one of {list(allowed)}")
        # finite numbers only: NaN passes every comparison, and an infinite weight or temperature makes the
        # total loss inf or NaN
        for name in ("reg_weight", "cls_weight", "aln_weight", "self_weight", "path_weight", "direct_weight",
                     "score_head_weight"):
            value = require_number(getattr(self, name), f"loss.{name}")
            if value < 0:
                raise ValueError(f"loss.{name} must be >= 0, got {value}; turn a term off with its use_* "
                                 "switch")
        for name in ("tau", "gamma"):
            require_number(getattr(self, name), f"loss.{name}", low=0.0, low_open=True)


class T2CRLoss(nn.Module):
    """The five terms of Eq. 19 from a `PairOutput`, each returned separately and weighted.

    As in the reference code every term covers both videos of a pair (and both paths where the
    paper defines it for one): "f_QM also guides f_EM". Terms that are switched off, or that the
    model has no head for, are absent from the result, so the total is exactly the weighted sum
    of the terms present.
    """

    def __init__(self, config: LossConfig | None = None,
                 gather: Callable[[Tensor], tuple[Tensor, int]] | None = None) -> None:
        super().__init__()
        self.config = config or LossConfig()
        self.gather = gather  # batch-coupled terms (NT-Xent*) see the global batch through it under DDP

    def forward(self, output, query_score: Tensor, exemplar_score: Tensor,
                query_label: Tensor | None = None, exemplar_label: Tensor | None = None,
                query_judges: Tensor | None = None, exemplar_judges: Tensor | None = None) -> dict[str, Tensor]:
        """The weighted terms and their "total". Per-judge scores (`*_judges`, for MUSDL's loss, which shares
        this signature) are not used by T2CR."""
        cfg = self.config
        q, e = output.query, output.exemplar
        terms: dict[str, Tensor] = {}

        deltas = torch.cat([output.delta, output.delta_reverse])
        target_deltas = torch.cat([query_score - exemplar_score, exemplar_score - query_score])
        up = _upcast  # heads may run in bf16 under autocast; the loss is computed in fp32 (fp64 stays fp64)
        reg = F.mse_loss(up(deltas), up(target_deltas))
        scores = torch.cat([query_score, exemplar_score])
        # the heads' outputs over the pair's videos: base path, then the auxiliary one where the model supervises it
        paths = [(q, e)] + ([(q.aux_heads, e.aux_heads)] if q.aux_heads is not None else [])
        if q.direct is not None:
            direct = up(torch.cat([torch.cat([a.direct, b.direct]) for a, b in paths]))
            reg = reg + cfg.direct_weight * F.mse_loss(direct, up(scores.repeat(len(paths))))
        terms["reg"] = reg

        if q.token_score is not None:
            token_scores = up(torch.cat([torch.cat([a.token_score, b.token_score]) for a, b in paths]))
            terms["score_head"] = F.mse_loss(token_scores, up(scores.repeat(len(paths))))

        if cfg.use_cls and q.logits is not None:
            if query_label is None or exemplar_label is None:
                raise ValueError("the action-type loss needs query and exemplar labels; "
                                 "set loss.use_cls=false for data without action types")
            logits = up(torch.cat([torch.cat([a.logits, b.logits]) for a, b in paths]))
            labels = torch.cat([query_label, exemplar_label]).repeat(len(paths))
            terms["cls"] = (F.cross_entropy(logits, labels) if cfg.cls_form == "cross_entropy"
                            else bce_on_softmax(logits, labels))

        if cfg.use_aln:
            if q.aux_tokens is None:
                aln = soft_dtw(q.base_tokens, e.base_tokens, cfg.gamma).mean()
            else:
                # both paths in one call (one recursion, half the kernel launches); the aux tokens are
                # expanded to (B, M, d) like the base ones. Same value as the mean of the two means.
                b = q.base_tokens.shape[0]
                per_pair = soft_dtw(torch.cat([q.base_tokens, q.aux_tokens]),
                                    torch.cat([e.base_tokens, e.aux_tokens]), cfg.gamma)
                aln = (per_pair[:b].mean() + per_pair[b:].mean()) / 2
            terms["aln"] = aln

        if cfg.use_self_reg and output.self_delta_query is not None:
            self_delta = up(torch.cat([output.self_delta_query, output.self_delta_exemplar]))
            terms["self"] = self_delta.pow(2).mean()

        if q.aux_tokens is not None and (cfg.use_path_mse or cfg.use_path_ntxent):
            path = query_score.new_zeros((), dtype=_compute_dtype(q.base_tokens))
            for video in (q, e):
                if cfg.use_path_mse:
                    path = path + path_mse(video.base_tokens, video.aux_tokens) / 2
                if cfg.use_path_ntxent:
                    path = path + self._contrast_paths(video.base_tokens, video.aux_tokens) / 2
            terms["path"] = path

        weights = {"reg": cfg.reg_weight, "cls": cfg.cls_weight, "aln": cfg.aln_weight,
                   "self": cfg.self_weight, "path": cfg.path_weight, "score_head": cfg.score_head_weight}
        terms["total"] = sum(weights[name] * value for name, value in terms.items())
        return terms

    def _contrast_paths(self, base: Tensor, aux: Tensor) -> Tensor:
        """L_cl of one video set's two paths (V, M, d), in the form `loss.ntxent_form` names."""
        tau = self.config.tau
        if self.config.ntxent_form == "tokens":
            return nt_xent_star(base, aux, tau, self.gather)
        base, aux = base.mean(dim=1), aux.mean(dim=1)
        # every video of both paths an anchor once: the mean over 2B anchors is the mean of the two directions
        return (nt_xent_star(base, aux, tau, self.gather) + nt_xent_star(aux, base, tau, self.gather)) / 2
