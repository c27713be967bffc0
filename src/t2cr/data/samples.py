"""The one record type every dataset reader produces."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass


@dataclass(frozen=True)
class Sample:
    """One annotated video.

    `frames` locates the frames for the frame source: a folder relative to `data.root` (or the stem
    of a video file); `start_frame` / `end_frame` (inclusive) are frame numbers inside it.
    """

    key: Hashable
    score: float  # the score as the dataset reports it (e.g. MTL-AQA final_score)
    difficulty: float | None
    action_type: str | None
    frames: str
    start_frame: int | None = None  # None: the source's first frame
    end_frame: int | None = None  # inclusive; None: the source's last frame (e.g. a listed folder)
    group: str | None = None  # AQA-7 class / JIGSAWS task where a dataset has several
    # each judge's mark where the annotations list them (MTL-AQA's seven judge_scores, JIGSAWS' six GRS
    # sub-scores): MUSDL's targets
    judge_scores: tuple[float, ...] | None = None

    @property
    def key_str(self) -> str:
        return key_to_str(self.key)


def key_to_str(key: Hashable) -> str:
    """(3, 17) -> '3_17'; strings are kept."""
    if isinstance(key, tuple):
        return "_".join(str(part) for part in key)
    return str(key)
