"""From a Sample to a model-ready video: frame selection, the frame source, the transform.

`frame_numbers` is what one training or evaluation read takes; `candidate_frames` is every frame
any read of the sample can take (the frame cache stores exactly these, the data check verifies them).
"""

from __future__ import annotations

import numpy as np
import torch

from t2cr.data.frames import FrameSource
from t2cr.data.samples import Sample
from t2cr.data.transforms import VideoTransform

FRAME_SELECTIONS = ("end_aligned", "linspace")


class SampleReader:
    def __init__(self, source: FrameSource, transform: VideoTransform, num_frames: int,
                 selection: str = "end_aligned", train_shift: int = 0) -> None:
        if selection not in FRAME_SELECTIONS:
            raise ValueError(f"unknown data.frame_selection {selection!r}; expected one of {FRAME_SELECTIONS}")
        if num_frames < 1:
            raise ValueError(f"data.num_frames must be >= 1, got {num_frames}")
        self.source, self.transform = source, transform
        self.num_frames, self.selection, self.train_shift = num_frames, selection, train_shift

    def frame_range(self, sample: Sample) -> tuple[int, int]:
        """First and last frame number (inclusive) of the sample."""
        start = sample.start_frame
        end = sample.end_frame
        if end is None:
            end = self.source.frame_count(sample) - 1
            start = 0 if start is None else start
        return (0 if start is None else start), end

    def frame_numbers(self, sample: Sample, rng: np.random.Generator | None) -> np.ndarray:
        """The frames one read takes; `rng` None means evaluation (no temporal jitter)."""
        start, end = self.frame_range(sample)
        if self.selection == "linspace":
            return np.linspace(start, end, self.num_frames).round().astype(int)
        shift = 0
        if rng is not None and self.train_shift:
            shift = int(rng.integers(-self.train_shift, self.train_shift + 1))
        last = end + shift
        if sample.end_frame is None:
            last = min(last, end)  # a listed folder has nothing after its last frame
        # no clamping at frame 0: a window that starts before the video is a data error the check reports
        return np.arange(last - self.num_frames + 1, last + 1)

    def candidate_frames(self, sample: Sample) -> np.ndarray:
        """Every frame number that some read of this sample can take, sorted and unique."""
        if self.selection == "linspace":
            return np.unique(self.frame_numbers(sample, None))
        _, end = self.frame_range(sample)
        low = end - self.num_frames + 1 - self.train_shift
        high = end if sample.end_frame is None else end + self.train_shift
        return np.arange(low, high + 1)

    def read_frames(self, sample: Sample, rng: np.random.Generator | None) -> np.ndarray:
        return self.source.read(sample, self.frame_numbers(sample, rng))

    def read_raw(self, sample: Sample, rng: np.random.Generator | None) -> dict[str, torch.Tensor]:
        """uint8 frames at the resize size with the video's crop offsets and flip (see VideoTransform.crop_flip_normalise)."""
        frames = self.transform.prepare(self.read_frames(sample, rng))  # the temporal shift draws first
        offsets, flip = self.transform.draw(rng)
        return {"frames": frames, "offsets": offsets, "flip": flip}

    def __call__(self, sample: Sample, rng: np.random.Generator | None) -> torch.Tensor:
        """The model-ready video (3, T, crop_h, crop_w), transformed on the CPU."""
        raw = self.read_raw(sample, rng)
        return self.transform.crop_flip_normalise(raw["frames"], raw["offsets"], raw["flip"])
