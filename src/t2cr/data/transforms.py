"""Video transforms with explicit height and width: resize, crop, flip, ImageNet normalisation.

One crop and one flip per video (every frame alike). Randomness comes from a numpy Generator the
caller seeds, so a training sample is a pure function of (seed, epoch, index).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class TransformConfig:
    resize: list[int] = field(default_factory=lambda: [128, 128])  # [height, width] before the crop
    crop: list[int] = field(default_factory=lambda: [112, 112])  # [height, width]
    flip: bool = True  # random horizontal flip in training


def resize_video(video: torch.Tensor, size_hw: tuple[int, int]) -> torch.Tensor:
    """(T, 3, H, W) in [0, 1] -> (T, 3, h, w), bilinear with antialiasing, rounded to uint8 steps.

    The rounding makes a frame resized here identical to one resized by the frame cache and stored
    as uint8, so training reads the same tensors from JPEG folders and from their cache.
    """
    video = F.interpolate(video, size=size_hw, mode="bilinear", align_corners=False, antialias=True)
    return video.mul_(255).round_().clamp_(0, 255).div_(255)


class VideoTransform:
    def __init__(self, config: TransformConfig) -> None:
        self.resize = tuple(int(v) for v in config.resize)
        self.crop = tuple(int(v) for v in config.crop)
        self.flip = config.flip
        if self.crop[0] > self.resize[0] or self.crop[1] > self.resize[1]:
            raise ValueError(f"data.transform.crop {list(self.crop)} is larger than data.transform.resize "
                             f"{list(self.resize)} (both [height, width])")
        self.mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(3, 1, 1, 1)

    def __call__(self, frames: np.ndarray, rng: np.random.Generator | None = None) -> torch.Tensor:
        """uint8 (T, H, W, 3) -> float (3, T, crop_h, crop_w); rng None means evaluation (centre crop)."""
        video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div_(255)
        if tuple(video.shape[-2:]) != self.resize:
            video = resize_video(video, self.resize)
        (h, w), (ch, cw) = self.resize, self.crop
        if rng is None:
            top, left = (h - ch) // 2, (w - cw) // 2
        else:
            top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        video = video[:, :, top:top + ch, left:left + cw]
        if rng is not None and self.flip and rng.random() < 0.5:
            video = video.flip(-1)
        video = video.permute(1, 0, 2, 3)  # (3, T, H, W)
        return (video - self.mean) / self.std
