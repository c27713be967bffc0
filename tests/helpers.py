"""Small model configurations shared by the tests (tiny backbone, small frames)."""

from __future__ import annotations

from pathlib import Path

import torch

from t2cr.data.packaged import packaged_root
from t2cr.models.backbones import BackboneConfig
from t2cr.models.t2cr import T2CR, ClipConfig, T2CRConfig

LAYOUTS = {
    # name: (num_frames, M, base_starts or None, overlapping, aux strategy)
    "mtl_aqa": (103, 10, [0, 10, 20, 30, 40, 50, 60, 70, 80, 86], True, "8-clip-avg1"),
    "finediving": (96, 9, None, True, "8-clip-avg1"),
    "jigsaws": (160, 10, None, False, "8-clip-avg1"),
}


def tiny_config(layout: str = "mtl_aqa", num_action_types: int = 5, **overrides) -> T2CRConfig:
    frames, m, starts, overlapping, aux = LAYOUTS[layout]
    config = T2CRConfig(
        backbone=BackboneConfig(name="tiny", feature_dim=128),
        clips=ClipConfig(num_frames=frames, num_base_clips=m, base_starts=starts, overlapping=overlapping,
                         aux_strategy=aux),
        hidden_dim=64, latent_dim=32, regressor_hidden=64, regressor_mid=32,
        num_action_types=num_action_types,
    )
    config.attention.bottleneck = 16
    config.decoder.heads = 4
    for key, value in overrides.items():
        target = config
        *path, last = key.split(".")
        for part in path:
            target = getattr(target, part)
        setattr(target, last, value)
    return config


def tiny_model(layout: str = "mtl_aqa", **overrides) -> T2CR:
    return T2CR(tiny_config(layout, **overrides))


def random_videos(batch: int, frames: int, size: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, 3, frames, size, size)

    def draw() -> torch.Tensor:
        # a per-video colour offset survives global pooling, so videos stay distinguishable
        offsets = torch.randn(batch, 3, 1, 1, 1, generator=generator)
        return torch.randn(shape, generator=generator) * 0.5 + offsets

    return draw(), draw()


def shared_annotations() -> Path:
    """The real annotation files: the official copies shipped with t2cr (one folder per dataset)."""
    return packaged_root()


def real_annotations(dataset: str) -> Path:
    """The real annotation folder of one dataset (e.g. 'MTL-AQA')."""
    return packaged_root() / dataset
