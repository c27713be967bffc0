"""Clip plans: which frames of a video form each 16-frame clip of the base and auxiliary paths.

The base path follows the paper (Sec. 4.3): M overlapping clips for 103 / 96 frames, M
non-overlapping clips for JIGSAWS' 160 frames. The auxiliary path uses one of the sparse
sampling strategies of Table 10, derived from the base starts and the frame count rather than
hard-coded (the reference code's fixed starts run past FineDiving's 96 frames).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch

AUX_STRATEGIES = ("same", "avg1", "avg2", "2x")


@dataclass(frozen=True)
class ClipPlan:
    """Start frames of the clips of one path, each `length` frames taken every `stride` frames."""

    starts: tuple[int, ...]
    length: int = 16
    stride: int = 1

    def __post_init__(self) -> None:
        if not self.starts:
            raise ValueError("a clip plan needs at least one clip start")
        if any(s < 0 for s in self.starts):
            raise ValueError(f"clip starts must be >= 0, got {list(self.starts)}")
        if self.length < 1 or self.stride < 1:
            raise ValueError(f"clip length and stride must be >= 1, got {self.length}, {self.stride}")

    @property
    def num_clips(self) -> int:
        return len(self.starts)

    @property
    def frames_needed(self) -> int:
        """Smallest number of frames a video must have for this plan."""
        return max(self.starts) + (self.length - 1) * self.stride + 1

    def frame_indices(self) -> torch.Tensor:
        """(num_clips, length) tensor of frame indices."""
        offsets = torch.arange(self.length) * self.stride
        return torch.tensor(self.starts).unsqueeze(1) + offsets.unsqueeze(0)

    def check_fits(self, num_frames: int, what: str = "clip plan") -> None:
        if self.frames_needed > num_frames:
            raise ValueError(
                f"{what} with starts {list(self.starts)} (length {self.length}, stride {self.stride}) "
                f"needs {self.frames_needed} frames but the video has {num_frames}; "
                "use fewer clips, other starts, or more frames per video"
            )


def base_clip_starts(
    num_frames: int, num_clips: int, clip_length: int = 16, overlapping: bool = True
) -> list[int]:
    """Base-path starts derived from the frame count.

    Overlapping clips are spread evenly from frame 0 to the last full clip (96 frames, 9 clips ->
    0, 10, ..., 80 as in FineDiving's reference); non-overlapping clips are back to back from frame
    0 (160 frames, 10 clips -> 0, 16, ..., 144 as in JIGSAWS). The paper's MTL-AQA / AQA-7 starts
    for 103 frames ([0, 10, ..., 80, 86]) are not of this form and are given in the data config.
    """
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    if not overlapping:
        starts = [i * clip_length for i in range(num_clips)]
    else:
        last = num_frames - clip_length
        if num_clips == 1:
            starts = [0]
        else:
            starts = [round(i * last / (num_clips - 1)) for i in range(num_clips)]
    ClipPlan(tuple(starts), clip_length).check_fits(
        num_frames, "base path (model.clips.num_base_clips, model.clips.clip_length)")
    return starts


def parse_aux_strategy(name: str) -> tuple[int, str]:
    """'8-clip-avg1' -> (8, 'avg1'); the names of Table 10."""
    match = re.fullmatch(r"(\d+)-clip-(\w+)", name)
    if match is None or match.group(2) not in AUX_STRATEGIES:
        raise ValueError(
            f"unknown auxiliary sampling strategy model.clips.aux_strategy={name!r}; expected "
            f"'<N>-clip-<kind>' with kind in {AUX_STRATEGIES}, e.g. '8-clip-avg1'"
        )
    return int(match.group(1)), match.group(2)


def aux_clip_plan(
    strategy: str, num_clips: int, base_starts: Sequence[int], num_frames: int, clip_length: int = 16
) -> ClipPlan:
    """Auxiliary-path clips by a Table 10 strategy.

    same: N of the base starts, centred (103 frames, N = 8 -> 10, 20, ..., 80);
    avg1: N starts from the first to the last base start, integer interval rounded
          (0, 12, ..., 84), shrunk if rounding would run past the last base start;
    avg2: the exact interval, floored per start (0, 12, 24, 36, 49, 61, 73, 86);
    2x:   N clips at twice the frame stride, spread evenly over the video.
    """
    if strategy not in AUX_STRATEGIES:
        raise ValueError(f"unknown auxiliary strategy {strategy!r}; expected one of {AUX_STRATEGIES}")
    if num_clips < 1:
        raise ValueError(f"auxiliary num_clips must be >= 1, got {num_clips}")
    base = list(base_starts)
    first, last = base[0], base[-1]
    stride = 2 if strategy == "2x" else 1  # also for a single clip: '2x' is the frame stride
    if strategy == "same":
        if num_clips > len(base):
            raise ValueError(f"'same' needs N <= M base clips, got N={num_clips}, M={len(base)}")
        offset = (len(base) - num_clips) // 2
        starts = base[offset : offset + num_clips]
    elif num_clips == 1:
        starts = [first]
    elif strategy == "avg1":
        interval = round((last - first) / (num_clips - 1))
        if first + (num_clips - 1) * interval > last:
            interval = (last - first) // (num_clips - 1)
        starts = [first + i * interval for i in range(num_clips)]
    elif strategy == "avg2":
        # integer arithmetic so that the last start is exactly `last` (no 85.999 -> 85)
        starts = [first + (i * (last - first)) // (num_clips - 1) for i in range(num_clips)]
    else:  # 2x
        span = (clip_length - 1) * stride + 1
        final = num_frames - span
        if final < 0:
            raise ValueError(f"'2x' clips need {span} frames, the video has {num_frames} "
                             "(model.clips.aux_strategy, model.clips.num_frames)")
        starts = [round(i * final / (num_clips - 1)) for i in range(num_clips)]
    plan = ClipPlan(tuple(starts), clip_length, stride)
    plan.check_fits(num_frames, f"auxiliary path model.clips.aux_strategy='{num_clips}-clip-{strategy}'")
    return plan
