"""Video transforms with explicit height and width: resize, crop, flip, ImageNet normalisation.

One crop and one flip per video (every frame alike); the resize happens on the CPU (or in the frame
cache), crop, flip and normalisation on the accelerator after the transfer. Randomness comes from a
numpy Generator the caller seeds, so a training sample is a pure function of (seed, epoch, index).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CHUNK_FRAMES = 16  # frames decoded and resized at a time (bounds the float memory of full-size frames)
# bilinear: torch's, antialiased (our choice); nearest: the reference code's (torch_videovision's Resize on PIL
# frames: PIL's NEAREST)
INTERPOLATIONS = ("bilinear", "nearest")


def check_interpolation(interpolation: str) -> str:
    """`interpolation` when it is one of INTERPOLATIONS, else a ValueError naming the setting."""
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"data.transform.interpolation must be one of {list(INTERPOLATIONS)}, got {interpolation!r}")
    return interpolation


@dataclass
class TransformConfig:
    # [height, width] before the crop; the paper's 128 high x 228 wide keeps the broadcast video's aspect
    resize: list[int] = field(default_factory=lambda: [128, 228])
    crop: list[int] = field(default_factory=lambda: [112, 112])  # [height, width]
    flip: bool = True  # random horizontal flip in training
    # how frames are brought to `resize` (one of INTERPOLATIONS): "bilinear" is torch's bilinear with
    # antialiasing; "nearest" is what the reference code's torch_videovision Resize does by default to its PIL
    # frames (PIL's NEAREST: source pixel floor((i + 0.5) * in / out) up to exact ties, no antialiasing)
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        check_interpolation(self.interpolation)


@functools.lru_cache(maxsize=64)
def nearest_indices(size_in: int, size_out: int) -> torch.Tensor:
    """The source index of each of `size_out` pixels along one axis of `size_in`, as PIL's NEAREST picks it.

    Taken from PIL itself (a resized row of indices): that is floor((i + 0.5) * in / out) except at exact
    ties (an integer), which PIL's fixed-point arithmetic sends one way or the other and no float formula
    reproduces. PIL's NEAREST resize is separable: rows and columns are picked independently. The result is
    cached: do not modify it.
    """
    row = Image.fromarray(np.arange(size_in, dtype=np.int32)[None, :])  # mode "I"
    picked = row.resize((size_out, 1), Image.Resampling.NEAREST)
    return torch.from_numpy(np.asarray(picked)[0].astype(np.int64))


def resize_video(video: torch.Tensor, size_hw: tuple[int, int], interpolation: str = "bilinear") -> torch.Tensor:
    """(T, 3, H, W) in [0, 1] -> (T, 3, h, w) with `interpolation` (see TransformConfig), on uint8 steps.

    The rounding makes a frame resized here identical to one resized by the frame cache and stored
    as uint8, so training reads the same tensors from JPEG folders and from their cache.
    """
    if check_interpolation(interpolation) == "nearest":
        rows = nearest_indices(video.shape[-2], int(size_hw[0])).to(video.device)
        cols = nearest_indices(video.shape[-1], int(size_hw[1])).to(video.device)
        return video.index_select(-2, rows).index_select(-1, cols)  # picked pixels: already on uint8 steps
    video = F.interpolate(video, size=size_hw, mode="bilinear", align_corners=False, antialias=True)
    return video.mul_(255).round_().clamp_(0, 255).div_(255)


def resize_frames(frames: np.ndarray, size_hw: Sequence[int], interpolation: str = "bilinear") -> np.ndarray:
    """uint8 (T, H, W, 3) -> uint8 (T, h, w, 3) with VideoTransform's resize, rounded to uint8.

    Frames that already have the size are returned unchanged (`VideoTransform.prepare` uses this).
    """
    check_interpolation(interpolation)
    size = (int(size_hw[0]), int(size_hw[1]))
    frames = np.ascontiguousarray(frames, dtype=np.uint8)
    if tuple(frames.shape[1:3]) == size:
        return frames
    out = np.empty((len(frames), *size, 3), dtype=np.uint8)
    for first in range(0, len(frames), CHUNK_FRAMES):
        chunk = torch.from_numpy(frames[first:first + CHUNK_FRAMES]).permute(0, 3, 1, 2).float().div_(255)
        chunk = resize_video(chunk, size, interpolation)
        out[first:first + CHUNK_FRAMES] = chunk.mul_(255).round_().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return out


class VideoTransform:
    """Resize on the CPU (skipped for cached frames, already at size); crop, flip and normalise in `crop_flip_normalise`.

    `prepare` + `crop_flip_normalise` is the data path of training and evaluation: the loader hands uint8 frames at the
    resize size with each video's crop offsets and flip, and `crop_flip_normalise` runs after the transfer to the
    accelerator, batched. `__call__` chains the two on the CPU for one video (scoring, explanations).
    """

    def __init__(self, config: TransformConfig) -> None:
        self.resize = tuple(int(v) for v in config.resize)
        self.crop = tuple(int(v) for v in config.crop)
        self.flip = config.flip
        self.interpolation = check_interpolation(config.interpolation)
        if self.crop[0] > self.resize[0] or self.crop[1] > self.resize[1]:
            raise ValueError(f"data.transform.crop {list(self.crop)} is larger than data.transform.resize "
                             f"{list(self.resize)} (both [height, width])")
        self.mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1)  # per channel of a (3, T, H, W) video
        self.std = torch.tensor(IMAGENET_STD).view(3, 1, 1, 1)
        self._scale = (1.0 / (255.0 * self.std)).reshape(3).tolist()
        self._minus_shift: dict[torch.device, tuple[torch.Tensor, ...]] = {}  # per device: no copy per batch

    def prepare(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 (T, H, W, 3) -> uint8 (T, resize_h, resize_w, 3); no copy when already at size."""
        return torch.from_numpy(resize_frames(frames, self.resize, self.interpolation))

    def draw(self, rng: np.random.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Crop offsets (top, left) and flip of one video; rng None means evaluation (centre, no flip)."""
        (h, w), (ch, cw) = self.resize, self.crop
        if rng is None:
            return torch.tensor([(h - ch) // 2, (w - cw) // 2]), torch.tensor(False)
        top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        flip = self.flip and bool(rng.random() < 0.5)
        return torch.tensor([top, left]), torch.tensor(flip)

    def crop_flip_normalise(self, frames: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor,
               out: torch.Tensor | None = None) -> torch.Tensor:
        """uint8 (..., T, H, W, 3) with offsets (..., 2) and flips (...) -> float (..., 3, T, crop_h, crop_w).

        Runs wherever `frames` lives. Each channel of each video is cropped, flipped, converted and
        normalised in one pass ((x / 255 - mean) / std as x * scale - shift) into `out` (allocated when None).
        """
        lead = frames.shape[:-4]
        frames = frames.reshape(-1, *frames.shape[-4:])
        # host tensors (PairDataModule.transfer_batch_to_device keeps them there): no wait for the device
        offsets, flips = offsets.reshape(-1, 2).tolist(), flips.reshape(-1).tolist()
        (ch, cw), (v, t) = self.crop, frames.shape[:2]
        if out is None:
            out = torch.empty(*lead, 3, t, ch, cw, device=frames.device)
        video = out.view(v, 3, t, ch, cw)
        if frames.device not in self._minus_shift:
            self._minus_shift[frames.device] = (-(self.mean / self.std)).reshape(3).to(frames.device).unbind(0)
        minus_shift = self._minus_shift[frames.device]
        for i, ((top, left), flip) in enumerate(zip(offsets, flips)):
            crop = frames[i, :, top:top + ch, left:left + cw]
            crop = crop.flip(-2) if flip else crop
            for c in range(3):
                torch.add(minus_shift[c], crop[..., c], alpha=self._scale[c], out=video[i, c])
        return out

    def __call__(self, frames: np.ndarray, rng: np.random.Generator | None = None) -> torch.Tensor:
        """uint8 (T, H, W, 3) -> float (3, T, crop_h, crop_w); rng None means evaluation (centre crop)."""
        offsets, flip = self.draw(rng)
        return self.crop_flip_normalise(self.prepare(frames), offsets, flip)
