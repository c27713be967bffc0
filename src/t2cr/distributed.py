"""What makes a step on P processes the step on one process with the same global batch.

Two things couple the samples of a batch in T2CR: NT-Xent* (its negatives are the other videos of the
batch) and the BatchNorm layers that train. Both see the global batch here:

* :func:`gather_batch` concatenates a tensor over the processes with gradients, so a loss computed on
  the local rows against the gathered ones back-propagates into every process's own inputs.
* :class:`GlobalBatchNorm` is a Lightning ``LayerSync`` plugin that makes every BatchNorm layer normalise
  with the statistics of the global batch while training under DDP. Torch's ``SyncBatchNorm`` refuses
  CPU tensors, so gloo runs (tests, debugging) could not be the experiment they stand for; this one works
  on every device and keeps each layer's class (``isinstance(m, nn.BatchNorm3d)`` still holds, which
  I3D's ``freeze_bn`` relies on) and its state-dict keys.

Everything else of the loss is a mean over the local batch: DDP's gradient average makes it the mean
over the global batch, as long as every process holds as many samples (the training sampler pads).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
from pytorch_lightning.plugins import LayerSync
from torch import Tensor, nn

__all__ = ["GlobalBatchNorm", "gather_batch", "world_size"]


def world_size() -> int:
    """Processes of the default group; 1 outside a distributed run."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def gather_batch(local: Tensor) -> tuple[Tensor, int]:
    """`local` (b, ...) of every process concatenated in rank order (P * b, ...), with gradients, and the
    row where this process's own rows start. Outside DDP: (local, 0)."""
    if world_size() == 1:
        return local, 0
    newer = _torch_all_gather_autograd()
    if newer is not None:  # torch's own (the backward sums every process's gradient of this process's rows)
        everyone = newer(local.contiguous(), 0, dist.group.WORLD)
    else:
        everyone = _AllGatherRows.apply(local)
    return everyone, dist.get_rank() * local.shape[0]


def _torch_all_gather_autograd() -> Callable | None:
    """torch's differentiable all-gather where this torch has it (a private function of recent releases)."""
    try:
        from torch.distributed._functional_collectives import all_gather_single_autograd
    except ImportError:
        return None
    return all_gather_single_autograd


class _AllGatherRows(torch.autograd.Function):
    """Every process's rows in rank order, differentiable, from public collectives of every backend: the
    backward sums the gradient every process computed for the whole gathered tensor, and keeps this process's
    rows. Used where torch lacks `all_gather_single_autograd` (older releases)."""

    @staticmethod
    def forward(ctx, local: Tensor) -> Tensor:
        local = local.contiguous()
        parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, local)
        ctx.start, ctx.rows = dist.get_rank() * local.shape[0], local.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.start:ctx.start + ctx.rows]


class _GlobalNormalisation(torch.autograd.Function):
    """Batch normalisation over every process's rows with one all-reduce forward and one backward.

    Forward: each process's per-channel [sum, sum of squares] about a shift all processes hold, accumulated in
    float64, and its count, summed in one all-reduce. Backward: the closed-form BatchNorm gradient, whose two
    per-channel sums (of dy and of dy * x_hat) are summed in one all-reduce. Composing the forward from
    autograd ops instead loses float32 accuracy where the loss's gradient is nearly one that the
    normalisation projects out (9e-4 relative gradient error in tests/test_ddp_equivalence.py)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor | None, bias: Tensor | None, shift: Tensor,
                eps: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        dims, shape = _reduced_dims(x)
        deviation = x - shift.view(shape)
        local = torch.cat([deviation.sum(dims, dtype=torch.float64), deviation.square().sum(dims, dtype=torch.float64),
                           x.new_full((1,), float(x.numel() // x.shape[1]), dtype=torch.float64)])
        dist.all_reduce(local)
        channels = x.shape[1]
        count = local[-1]
        mean_deviation = local[:channels] / count
        var = (local[channels:2 * channels] / count - mean_deviation.square()).clamp_min(0)
        mean = (shift.double() + mean_deviation).to(x.dtype)
        invstd = torch.rsqrt(var + eps).to(x.dtype)
        x_hat = (x - mean.view(shape)) * invstd.view(shape)
        out = x_hat if weight is None else x_hat * weight.view(shape) + bias.view(shape)
        ctx.save_for_backward(x, mean, invstd, weight)
        ctx.count = count
        ctx.mark_non_differentiable(mean, var, count)
        return out, mean, var.to(x.dtype), count

    @staticmethod
    def backward(ctx, grad_out: Tensor, *_: Tensor) -> tuple[Tensor | None, ...]:
        x, mean, invstd, weight = ctx.saved_tensors
        dims, shape = _reduced_dims(x)
        x_hat = (x - mean.view(shape)) * invstd.view(shape)
        local_dy, local_dy_x_hat = grad_out.sum(dims), (grad_out * x_hat).sum(dims)
        sums = torch.cat([local_dy, local_dy_x_hat])
        dist.all_reduce(sums)
        channels = x.shape[1]
        count = ctx.count.to(x.dtype)
        scale = invstd if weight is None else invstd * weight
        grad_x = (grad_out - (sums[:channels] / count).view(shape)
                  - x_hat * (sums[channels:] / count).view(shape)) * scale.view(shape)
        # this process's share of the affine gradients: DDP averages them as it does every parameter's
        grad_weight = None if weight is None else local_dy_x_hat
        grad_bias = None if weight is None else local_dy
        return grad_x, grad_weight, grad_bias, None, None


def _reduced_dims(x: Tensor) -> tuple[list[int], list[int]]:
    """The dimensions a BatchNorm reduces over (all but the channels) and the shape that broadcasts a
    per-channel value against `x`."""
    return [0, *range(2, x.dim())], [1, -1] + [1] * (x.dim() - 2)


class _GlobalStatistics:
    """Mixed into a BatchNorm class: batch statistics over all processes while training under DDP."""

    def forward(self, input: Tensor) -> Tensor:
        if not (self.training and world_size() > 1):
            return super().forward(input)  # type: ignore[misc]
        self._check_input_dim(input)  # type: ignore[attr-defined]
        x = input if input.dtype == torch.float64 else input.float()  # statistics in fp32 at least
        weight = None if self.weight is None else self.weight.to(x.dtype)  # type: ignore[attr-defined]
        bias = None if self.bias is None else self.bias.to(x.dtype)  # type: ignore[attr-defined]
        out, mean, var, count = _GlobalNormalisation.apply(x, weight, bias, self._common_shift(x),
                                                           self.eps)  # type: ignore[attr-defined]
        if self.track_running_stats:  # type: ignore[attr-defined]
            self._update_running_stats(mean, var, count)
        return out.to(input.dtype)

    def _common_shift(self, x: Tensor) -> Tensor:
        """A per-channel value every process holds without communicating, near the batch mean so that the
        one-pass variance does not cancel: the running mean where the layer tracks one (DDP starts every
        process with the same buffers, and the global statistics keep them equal), else zero."""
        if self.track_running_stats and self.running_mean is not None:  # type: ignore[attr-defined]
            return self.running_mean.detach().to(x.dtype)  # type: ignore[attr-defined]
        return x.new_zeros(x.shape[1])

    @torch.no_grad()
    def _update_running_stats(self, mean: Tensor, var: Tensor, count: Tensor) -> None:
        self.num_batches_tracked.add_(1)  # type: ignore[attr-defined]
        momentum = self.momentum  # type: ignore[attr-defined]
        factor = 1.0 / float(self.num_batches_tracked) if momentum is None else momentum  # type: ignore[attr-defined]
        unbiased = var * (count / (count - 1).clamp_min(1)).to(var.dtype)
        self.running_mean.mul_(1 - factor).add_(mean.to(self.running_mean.dtype), alpha=factor)  # type: ignore[attr-defined]
        self.running_var.mul_(1 - factor).add_(unbiased.to(self.running_var.dtype), alpha=factor)  # type: ignore[attr-defined]


class GlobalBatchNorm1d(_GlobalStatistics, nn.BatchNorm1d):
    pass


class GlobalBatchNorm2d(_GlobalStatistics, nn.BatchNorm2d):
    pass


class GlobalBatchNorm3d(_GlobalStatistics, nn.BatchNorm3d):
    pass


_GLOBAL = {nn.BatchNorm1d: GlobalBatchNorm1d, nn.BatchNorm2d: GlobalBatchNorm2d, nn.BatchNorm3d: GlobalBatchNorm3d}
_LOCAL = {v: k for k, v in _GLOBAL.items()}


class GlobalBatchNorm(LayerSync):
    """Lightning plugin: BatchNorm layers normalise over the global batch under DDP (any device).

    The layers change class in place (a subclass of their own), so parameters, buffers, state-dict keys and
    `isinstance` checks stay as they were. Single-process runs are unaffected."""

    def apply(self, model: nn.Module) -> nn.Module:
        for module in model.modules():
            if type(module) in _GLOBAL:
                module.__class__ = _GLOBAL[type(module)]
        return model

    def revert(self, model: nn.Module) -> nn.Module:
        for module in model.modules():
            if type(module) in _LOCAL:
                module.__class__ = _LOCAL[type(module)]
        return model
