"""Loss functions of T2CR.

* :func:`soft_dtw` -- Soft-DTW alignment loss ``J_aln`` of Eq. (10) (Cuturi & Blondel, 2017).
* :func:`nt_xent_star` -- the modified NT-Xent contrastive loss ``L_cl`` of Eq. (16)-(17).
* :func:`path_mse` -- plain MSE between the two pathways' representations.

All functions are device-agnostic (plain torch ops) and safe to call under autocast: they compute in
float32 (or float64 when given float64) and return float32/float64 tensors.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

__all__ = ["LossConfig", "T2CRLoss", "nt_xent_star", "path_mse", "soft_dtw"]


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
# Layout: R, D and E are stored padded as (B, n + 2, m + 2) tensors and viewed flat as
# (B, (n + 2) * (m + 2)). Cell (i, j) (1-based, 1 <= i <= n, 1 <= j <= m) sits at flat index
# i * (m + 2) + j = i * (m + 1) + d with d = i + j, so one anti-diagonal is a plain strided slice
# (step m + 1) of the flat view, and its neighbours are the same slice shifted by a constant:
#   (i-1, j-1): -(m + 3)   (i-1, j): -(m + 2)   (i, j-1): -1
#   (i+1, j+1): +(m + 3)   (i+1, j): +(m + 2)   (i, j+1): +1
# Every cell of one anti-diagonal only depends on the previous (forward) or next (backward) ones,
# so the Python loop runs n + m - 1 times, each step vectorised over batch and diagonal.


def _diagonal_slice(d: int, n: int, m: int) -> slice:
    """Flat slice of the padded (n + 2) x (m + 2) grid covering the cells with i + j == d."""
    i_lo = max(1, d - m)
    i_hi = min(n, d - 1)
    step = m + 1
    return slice(i_lo * step + d, i_hi * step + d + 1, step)


def _pairwise_sq_dists(x: Tensor, y: Tensor) -> Tensor:
    """D[b, i, j] = ||x[b, i] - y[b, j]||^2, via the expansion ||x||^2 + ||y||^2 - 2 x.y (clamped >= 0)."""
    x_sq = x.pow(2).sum(-1)
    y_sq = y.pow(2).sum(-1)
    d = x_sq.unsqueeze(2) + y_sq.unsqueeze(1) - 2.0 * torch.bmm(x, y.transpose(1, 2))
    return d.clamp_min_(0.0)


def _soft_dtw_forward(dist: Tensor, gamma: float) -> Tensor:
    """Padded accumulated-cost matrix R (B, n + 2, m + 2) of the Soft-DTW recursion.

    R[0, 0] = 0, R[0, j] = R[i, 0] = +inf, R[i, j] = D[i, j] + softmin_gamma(R[i-1, j-1], R[i-1, j],
    R[i, j-1]); the last row/column (index n + 1 / m + 1) stay +inf and are only used by the backward.
    """
    b, n, m = dist.shape
    r = torch.full((b, n + 2, m + 2), float("inf"), dtype=dist.dtype, device=dist.device)
    r[:, 0, 0] = 0.0
    d_pad = dist.new_zeros((b, n + 2, m + 2))
    d_pad[:, 1 : n + 1, 1 : m + 1] = dist
    r_flat = r.view(b, -1)
    d_flat = d_pad.view(b, -1)
    inv_gamma = 1.0 / gamma
    for d in range(2, n + m + 1):
        s = _diagonal_slice(d, n, m)
        diag = r_flat[:, s.start - (m + 3) : s.stop - (m + 3) : s.step]
        up = r_flat[:, s.start - (m + 2) : s.stop - (m + 2) : s.step]
        left = r_flat[:, s.start - 1 : s.stop - 1 : s.step]
        # softmin_gamma(a, b, c) = -gamma * log(sum exp(-v / gamma)), stabilised by the minimum. Every
        # interior cell has at least one finite predecessor, so rmin is finite and the +inf borders
        # contribute exp(-inf) = 0 (no inf - inf, no NaN).
        rmin = torch.minimum(torch.minimum(diag, up), left)
        total = (
            torch.exp((rmin - diag) * inv_gamma)
            + torch.exp((rmin - up) * inv_gamma)
            + torch.exp((rmin - left) * inv_gamma)
        )
        r_flat[:, s] = d_flat[:, s] + rmin - gamma * torch.log(total)
    return r


def _soft_dtw_backward(dist: Tensor, r: Tensor, gamma: float) -> Tensor:
    """E = dR[n, m] / dD (B, n, m) by Cuturi & Blondel's backward recursion (their Algorithm 2).

    E[i, j] = E[i+1, j] a + E[i, j+1] b + E[i+1, j+1] c with e.g.
    a = exp((R[i+1, j] - R[i, j] - D[i+1, j]) / gamma). The exponents are <= 0 because
    R[i', j'] - D[i', j'] = softmin(...) <= R[i, j] for every predecessor (i, j) of (i', j').
    Border cells hold R = -inf (so their weight is exp(-inf) = 0) except R[n+1, m+1] = R[n, m] with
    E[n+1, m+1] = 1 and D[n+1, m+1] = 0, which seeds E[n, m] = 1.
    """
    b, n, m = dist.shape
    r = r.clone()
    r[:, n + 1, :] = float("-inf")
    r[:, :, m + 1] = float("-inf")
    r[:, n + 1, m + 1] = r[:, n, m]
    d_pad = dist.new_zeros((b, n + 2, m + 2))
    d_pad[:, 1 : n + 1, 1 : m + 1] = dist
    e = dist.new_zeros((b, n + 2, m + 2))
    e[:, n + 1, m + 1] = 1.0
    r_flat = r.view(b, -1)
    d_flat = d_pad.view(b, -1)
    e_flat = e.view(b, -1)
    inv_gamma = 1.0 / gamma
    for d in range(n + m, 1, -1):
        s = _diagonal_slice(d, n, m)
        r_ij = r_flat[:, s]
        total = r_ij.new_zeros(r_ij.shape)
        for off in (m + 2, 1, m + 3):  # (i+1, j), (i, j+1), (i+1, j+1)
            t = slice(s.start + off, s.stop + off, s.step)
            weight = torch.exp((r_flat[:, t] - r_ij - d_flat[:, t]) * inv_gamma)
            total = total + e_flat[:, t] * weight
        e_flat[:, s] = total
    return e[:, 1 : n + 1, 1 : m + 1]


class _SoftDTWFunction(torch.autograd.Function):
    """Soft-DTW with squared Euclidean cost; explicit (once-differentiable) backward."""

    @staticmethod
    def forward(ctx, x: Tensor, y: Tensor, gamma: float) -> Tensor:  # type: ignore[override]
        dtype = _compute_dtype(x, y)
        with _no_autocast(x.device):
            xc = x.detach().to(dtype)
            yc = y.detach().to(dtype)
            dist = _pairwise_sq_dists(xc, yc)
            r = _soft_dtw_forward(dist, gamma)
        n, m = dist.shape[1], dist.shape[2]
        ctx.save_for_backward(xc, yc, dist, r)
        ctx.gamma = gamma
        ctx.in_dtypes = (x.dtype, y.dtype)
        return r[:, n, m].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        xc, yc, dist, r = ctx.saved_tensors
        with _no_autocast(xc.device):
            e = _soft_dtw_backward(dist, r, ctx.gamma)
            e = e * grad_out.to(e.dtype).view(-1, 1, 1)
            grad_x = grad_y = None
            # D_ij = ||x_i - y_j||^2  =>  dD_ij/dx_i = 2 (x_i - y_j), dD_ij/dy_j = 2 (y_j - x_i).
            if ctx.needs_input_grad[0]:
                grad_x = 2.0 * (e.sum(2, keepdim=True) * xc - torch.bmm(e, yc))
                grad_x = grad_x.to(ctx.in_dtypes[0])
            if ctx.needs_input_grad[1]:
                grad_y = 2.0 * (e.sum(1).unsqueeze(2) * yc - torch.bmm(e.transpose(1, 2), xc))
                grad_y = grad_y.to(ctx.in_dtypes[1])
        return grad_x, grad_y, None


def soft_dtw(x: Tensor, y: Tensor, gamma: float = 0.1) -> Tensor:
    """Soft-DTW discrepancy ``dtw_gamma(x, y)`` of Eq. (10), per batch element.

    ``dtw_gamma(x, y) = -gamma * log sum_{A} exp(-<A, D> / gamma)`` over all monotone alignment paths A
    (steps (1, 0), (0, 1), (1, 1) from (1, 1) to (n, m)), with the squared Euclidean cost
    ``D_ij = ||x_i - y_j||^2``. As ``gamma -> 0`` it tends to the hard DTW cost from below:
    ``DTW - gamma * log|A| <= dtw_gamma <= DTW``. Note that it is not zero for ``x == y`` and can be
    negative.

    Computed by the recursion ``R[i, j] = D[i, j] + softmin_gamma(R[i-1, j-1], R[i-1, j], R[i, j-1])``,
    vectorised over the batch and the anti-diagonals; the gradient uses Cuturi & Blondel's backward
    recursion (not autograd through the loop), so memory is O(B n m) and independent of ``d``.
    The pairwise costs use the expansion ``||x||^2 + ||y||^2 - 2 x.y`` (clamped at 0).

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
    return _SoftDTWFunction.apply(x, y, gamma)


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


def path_mse(base: Tensor, aux: Tensor) -> Tensor:
    """Mean squared error between the two pathways' tokens (the MSE consistency term of Table 6)."""
    if base.shape != aux.shape:
        raise ValueError(f"path_mse: base and aux shapes differ ({tuple(base.shape)} vs {tuple(aux.shape)})")
    return F.mse_loss(base, aux)


# ------------------------------------------------------------------------------ composite (Eq. 19)
@dataclass
class LossConfig:
    """Weights lambda1..lambda5 and the switches of Tables 6 and 7 (defaults: Sec. 4.3)."""

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

    def __post_init__(self) -> None:
        for name in ("reg_weight", "cls_weight", "aln_weight", "self_weight", "path_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"loss.{name} must be >= 0, got {getattr(self, name)}; "
                                 "turn a term off with its use_* switch")
        if self.tau <= 0 or self.gamma <= 0:
            raise ValueError(f"loss.tau and loss.gamma must be > 0, got {self.tau}, {self.gamma}")


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
                query_label: Tensor | None = None, exemplar_label: Tensor | None = None) -> dict[str, Tensor]:
        cfg = self.config
        q, e = output.query, output.exemplar
        terms: dict[str, Tensor] = {}

        deltas = torch.cat([output.delta, output.delta_reverse])
        target_deltas = torch.cat([query_score - exemplar_score, exemplar_score - query_score])
        up = _upcast  # heads may run in bf16 under autocast; the loss is computed in fp32 (fp64 stays fp64)
        reg = F.mse_loss(up(deltas), up(target_deltas))
        if q.direct is not None:
            direct = up(torch.cat([q.direct, e.direct]))
            reg = reg + F.mse_loss(direct, up(torch.cat([query_score, exemplar_score])))
        terms["reg"] = reg

        if cfg.use_cls and q.logits is not None:
            if query_label is None or exemplar_label is None:
                raise ValueError("the action-type loss needs query and exemplar labels; "
                                 "set loss.use_cls=false for data without action types")
            terms["cls"] = F.cross_entropy(up(torch.cat([q.logits, e.logits])),
                                           torch.cat([query_label, exemplar_label]))

        if cfg.use_aln:
            aln = soft_dtw(q.base_tokens, e.base_tokens, cfg.gamma).mean()
            if q.aux_tokens is not None:
                aln = (aln + soft_dtw(q.aux_tokens, e.aux_tokens, cfg.gamma).mean()) / 2
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
                    path = path + nt_xent_star(video.base_tokens, video.aux_tokens, cfg.tau, self.gather) / 2
            terms["path"] = path

        weights = {"reg": cfg.reg_weight, "cls": cfg.cls_weight, "aln": cfg.aln_weight,
                   "self": cfg.self_weight, "path": cfg.path_weight}
        terms["total"] = sum(weights[name] * value for name, value in terms.items())
        return terms
