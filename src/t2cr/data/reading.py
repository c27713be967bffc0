"""From a Sample to a model-ready video: frame selection, the frame source, the transform.

`frame_numbers` is what one training or evaluation read takes; `candidate_frames` is every frame
any read of the sample can take (the frame cache stores exactly these, the data check verifies them).

The frame window of an `end_aligned` sample (MTL-AQA: N = data.num_frames = 103, S = data.train_shift = 3):

    train (queries and exemplars)   end_frame-(N-1)-S .. end_frame+S    MTL-AQA: end_frame-105 .. end_frame+3
    val / test (never shifted)      end_frame-(N-1)   .. end_frame      MTL-AQA: end_frame-102 .. end_frame

The data configs' headers and the README state the same windows (tests/test_partial_data.py holds them to it).
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import torch

from t2cr.data.frames import FrameSource
from t2cr.data.samples import Sample
from t2cr.data.transforms import VideoTransform

FRAME_SELECTIONS = ("end_aligned", "linspace")


class SampleReader:
    def __init__(self, source: FrameSource, transform: VideoTransform, num_frames: int,
                 selection: str = "end_aligned", train_shift: int = 0,
                 shifted_keys: Collection[str] | None = None) -> None:
        if selection not in FRAME_SELECTIONS:
            raise ValueError(f"unknown data.frame_selection {selection!r}; expected one of {FRAME_SELECTIONS}")
        if num_frames < 1:
            raise ValueError(f"data.num_frames must be >= 1, got {num_frames}")
        self.source, self.transform = source, transform
        self.num_frames, self.selection, self.train_shift = num_frames, selection, train_shift
        # keys (Sample.key_str) of the samples a training read may shift: the train split, whose samples are
        # queries and exemplars. Val / test samples are only read unshifted, so they need no margin frames.
        # None: any sample may be shifted (a reader that does not know the splits asks for the widest window).
        self.shifted_keys = None if shifted_keys is None else frozenset(shifted_keys)

    def shift_of(self, sample: Sample) -> int:
        """The largest temporal shift a read of `sample` can take: data.train_shift for a training sample, 0 for
        a sample that is only evaluated (and for linspace, which never shifts)."""
        if self.selection != "end_aligned":
            return 0
        if self.shifted_keys is not None and sample.key_str not in self.shifted_keys:
            return 0
        return self.train_shift

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
        largest = self.shift_of(sample)
        if rng is not None and largest:
            shift = int(rng.integers(-largest, largest + 1))
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
        shift = self.shift_of(sample)
        low = end - self.num_frames + 1 - shift
        high = end if sample.end_frame is None else end + shift
        return np.arange(low, high + 1)

    def why_needed(self, sample: Sample, numbers: Collection[int]) -> str:
        """Which settings make these frame numbers part of the sample's reads (for the data check's messages)."""
        start, end = self.frame_range(sample)
        if self.selection == "linspace":
            return f"read by data.num_frames={self.num_frames} spread over frames {start}..{end} (linspace)"
        first = end - self.num_frames + 1
        ending = "its end_frame" if sample.end_frame is not None else "its last frame"
        in_window = [n for n in numbers if first <= n <= end]
        margin = [n for n in numbers if n < first or n > end]
        parts = []
        if in_window:
            parts.append(f"{len(in_window)} in the window {first}..{end} (data.num_frames={self.num_frames} "
                         f"ending at {ending})")
        if margin:
            parts.append(f"{len(margin)} needed by data.train_shift={self.train_shift} only (a training read "
                         f"shifts the window by up to {self.train_shift} frames; val/test samples need none)")
        return "; ".join(parts)

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
