"""Clip backbones: (N, 3, L, H, W) clips -> (N, feature_dim) features.

`i3d` is the paper's Kinetics-pretrained I3D. `tiny` is a small 3D CNN with the same interface,
for unit tests and quick CPU checks of everything downstream of the backbone; it is never a
substitute for I3D in a reported result.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from t2cr.models.i3d import I3D


@dataclass
class BackboneConfig:
    name: str = "i3d"  # i3d | tiny
    # Kinetics-400 RGB I3D weights (`model_rgb.pth` or `rgb_imagenet.pt`, t2cr.models.i3d_checkpoints).
    # Required for i3d unless random_init is set:
    # training I3D from scratch is never silent.
    checkpoint: str | None = None  # Kinetics-400 RGB I3D file: model_rgb.pth or rgb_imagenet.pt
    random_init: bool = False  # true trains I3D from scratch, on purpose only
    freeze_bn: bool = True
    feature_dim: int = 1024
    # false freezes every backbone weight (the fast ablation mode; the paper fine-tunes I3D, Sec. 4.3)
    trainable: bool = True


class TinyVideoBackbone(nn.Module):
    """Two 3D conv stages, global average pooling and a projection to feature_dim."""

    def __init__(self, feature_dim: int = 1024, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv3d(3, width, kernel_size=3, stride=(1, 2, 2), padding=1), nn.BatchNorm3d(width),
            nn.ReLU(inplace=True),
            nn.Conv3d(width, 2 * width, kernel_size=3, stride=2, padding=1), nn.BatchNorm3d(2 * width),
            nn.ReLU(inplace=True),
        )
        # ReLU keeps the features non-negative like I3D's pooled activations
        self.project = nn.Sequential(nn.Linear(2 * width, feature_dim), nn.ReLU(inplace=True))

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        # global average pooling as a plain mean: no pooling op whose CUDA backward deterministic mode refuses
        return self.project(self.features(clips).mean(dim=(2, 3, 4)))


def build_backbone(config: BackboneConfig) -> nn.Module:
    """The configured backbone, with its pretrained weights loaded where it has them."""
    if config.name == "tiny":
        return TinyVideoBackbone(config.feature_dim)
    if config.name != "i3d":
        raise ValueError(f"unknown model.backbone.name {config.name!r}; expected 'i3d' or 'tiny'")
    if config.feature_dim != 1024:
        raise ValueError(f"I3D gives 1024-d features; model.backbone.feature_dim is {config.feature_dim}")
    backbone = I3D(freeze_bn=config.freeze_bn)
    # the Kinetics logits layer exists only so that the checkpoints load strictly; features skip it
    backbone.conv3d_0c_1x1.requires_grad_(False)
    if config.checkpoint:
        backbone.load_kinetics_checkpoint(Path(config.checkpoint).expanduser())
    elif not config.random_init:
        raise FileNotFoundError(
            "model.backbone.checkpoint is not set: T2CR fine-tunes the Kinetics-400 I3D. Set "
            "model.backbone.checkpoint=/path/to/model_rgb.pth (or rgb_imagenet.pt), or "
            "model.backbone.random_init=true "
            "to train I3D from scratch on purpose."
        )
    return backbone
