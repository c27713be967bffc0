"""DataConfig: the schema of `conf/data/*.yaml`. A dataset is these fields, not a code path."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
from omegaconf import MISSING

from t2cr.data.transforms import TransformConfig


@dataclass
class SyntheticConfig:
    """What the embedded dataset generator (t2cr.data.synthetic) makes; every field except `root` is part of
    the dataset's identity. The schema of `data.synthetic`; it lives here so that reading a data config
    does not import the generator."""

    root: str = "data/synthetic"
    seed: int = 0
    num_train: int = 96
    num_test: int = 48
    num_events: int = 4
    frames_per_dive: int = 103  # MTL-AQA's sample length, so that the paper's clip plan applies
    gap_frames: int = 4
    height: int = 64
    width: int = 64
    num_judges: int = 7
    jpeg_quality: int = 90
    # every final score multiplied by this (the judges' marks stay 0-10, so MUSDL does not apply to scaled
    # data): data on another score range, to show that a method's range follows the data (issue 27)
    score_scale: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.root, (str, os.PathLike)) or not str(self.root):
            raise ValueError(f"synthetic.root must be a non-empty path, got {self.root!r}")
        minimum = {"seed": 0, "num_train": 1, "num_test": 1, "num_events": 1, "frames_per_dive": 16,
                   "gap_frames": 0, "height": 16, "width": 16, "num_judges": 3, "jpeg_quality": 1}
        for name, low in minimum.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"synthetic.{name} must be an integer, got {value!r}")
            if value < low:
                raise ValueError(f"synthetic.{name} must be >= {low}, got {value}")
            setattr(self, name, int(value))
        if self.num_events > 99:
            raise ValueError(f"synthetic.num_events must be <= 99 (two-digit event folders), got {self.num_events}")
        if self.num_events > self.num_samples:
            raise ValueError(f"synthetic.num_events ({self.num_events}) exceeds the number of samples "
                             f"({self.num_samples}); every event needs at least one dive")
        if self.num_judges % 2 == 0:
            raise ValueError(f"synthetic.num_judges must be odd (the middle three are kept), got {self.num_judges}")
        if isinstance(self.score_scale, bool) or not isinstance(self.score_scale, (int, float)) \
                or not self.score_scale > 0:
            raise ValueError(f"synthetic.score_scale must be a number > 0, got {self.score_scale!r}")
        self.score_scale = float(self.score_scale)
        if self.jpeg_quality > 95:
            raise ValueError(f"synthetic.jpeg_quality must be in [1, 95], got {self.jpeg_quality}")

    @property
    def num_samples(self) -> int:
        return self.num_train + self.num_test

    def identity(self) -> dict[str, int]:
        """The fields that define the dataset's content (all but root)."""
        identity = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "root"}
        if identity["score_scale"] == 1.0:  # datasets generated before the option existed keep their identity
            del identity["score_scale"]
        return identity


JUDGE_RULES = ("middle_three", "sum")


@dataclass
class JudgeMarks:
    """How a dataset's per-judge marks make its score, for methods that learn each judge (MUSDL reads these
    through conf/model/musdl.yaml). The schema of `data.judges`; a dataset without judge scores ignores it."""

    count: int = 7  # marks per sample (MTL-AQA: seven judges)
    # middle_three: diving, the middle three marks summed (times DD, so the sum is the score in the space with
    # DD); sum: every mark summed (JIGSAWS: the six GRS sub-scores give the GRS total)
    rule: str = "middle_three"
    low: float = 0.0  # the lowest and highest mark a judge can give
    high: float = 10.0
    num_marks: int = 21  # the distinct marks from low to high (diving: 0, 0.5, ..., 10)

    def __post_init__(self) -> None:
        if self.rule not in JUDGE_RULES:
            raise ValueError(f"data.judges.rule must be one of {list(JUDGE_RULES)}, got {self.rule!r}")
        if self.rule == "middle_three" and (self.count < 3 or self.count % 2 == 0):
            raise ValueError(f"data.judges.count must be odd and >= 3 for rule middle_three, got {self.count}")
        if not self.high > self.low or self.num_marks < 2:
            raise ValueError(f"data.judges needs high > low and num_marks >= 2, got low={self.low}, "
                             f"high={self.high}, num_marks={self.num_marks}")


@dataclass
class VideoConfig:
    """How a sample's video file is found and its frames numbered: the one definition for reading videos
    (`data.source=video`, under data.root) and importing them into the frame cache (`t2cr-prepare
    videos=<folder>`, t2cr.data.video_import). The schema of `data.video`."""

    # the sample's video file under its folder, a str.format pattern with the fields folder (the sample's
    # frame folder: MTL-AQA's event '01', JIGSAWS' '<name>_capture1'), key (its annotation key: a tuple such as
    # (event, idx), so '{key[0]:02d}.mp4' also names MTL-AQA's videos) and group (AQA-7 class, JIGSAWS task)
    pattern: str = "{folder}.mp4"
    # the annotation frame number of a video's first decoded frame: 1 where the reference frames were extracted
    # with ffmpeg's default numbering ('%06d.jpg' counts from 1: MTL-AQA's frame_extractor.sh, AQA-7's
    # img_00001.jpg); a sample read whole (no end frame: JIGSAWS) numbers its frames from 0 whatever this is
    first_frame: int = 1


@dataclass
class DataConfig:
    """The schema of conf/data: every default of a dataset's settings; conf/data/<name>.yaml holds what differs."""

    name: str = "synthetic"
    format: str = "mtl_aqa"  # annotation reader: t2cr.data.annotations.READERS
    # the folder with the official annotation files; packaged: the copy shipped with t2cr (MTL-AQA, FineDiving,
    # JIGSAWS: t2cr.data.packaged); AQA-7's come only inside its archive (packaged is refused for it)
    annotations: str = "packaged"
    # required (???): the frames (source=jpeg) or videos (source=video); conf/data/synthetic.yaml points
    # both paths into the generated dataset
    root: str = MISSING
    # reader options; each reader uses the ones its dataset has
    split_id: int = 0  # MTL-AQA split
    fold: int | None = None  # JIGSAWS: the test fold of the 4-fold cross-validation
    task: str | None = None  # JIGSAWS: Suturing | Needle_Passing | Knot_Tying
    classes: list[int] | None = None  # AQA-7: class indices (1-6); one model per class in the paper
    # frames
    source: str = "jpeg"  # jpeg | video
    # MTL-AQA's (adjust to your extraction's file names); None: list the folder's images in name order
    frame_pattern: str | None = "{folder}/{frame:06d}.jpg"
    video: VideoConfig = field(default_factory=VideoConfig)  # source=video and t2cr-prepare videos=
    cache_dir: str | None = None  # uint8 frame cache: t2cr-prepare data=<name> data.cache_dir=<dir>
    use_cache: str = "auto"  # auto: read the cache when it is complete | never | require
    check: bool = True  # check every sample's frames exist before training
    check_decode: bool = False  # also decode every frame a run can read (slow; finds corrupt JPEGs/videos)
    skip_missing: bool = False  # drop (and log) samples with missing frames instead of refusing to start
    # sample keys to leave out of every split (as logs and check reports write them, MTL-AQA: <event>_<index>),
    # e.g. a test sample whose difficulty no training sample has. Quote them: 'data.exclude=["1_17","2_3"]'
    # (Hydra reads an unquoted 1_17 as the number 117). The run logs them per split; t2cr-tables labels the run.
    exclude: list[str] = field(default_factory=list)
    num_frames: int = 103  # frames per video handed to the model (MTL-AQA's sample; AQA-7 has the same)
    # the base path's clip plan is the dataset's (Sec. 4.3); the model's clips interpolate these
    clip_length: int = 16
    num_clips: int = 10  # M
    # explicit clip starts; None derives them from num_frames. Default: the paper's starts for 103 frames
    # (Table 10; the last clip ends at frame 103)
    base_starts: list[int] | None = field(default_factory=lambda: [0, 10, 20, 30, 40, 50, 60, 70, 80, 86])
    overlapping_clips: bool = True  # False: back-to-back clips (JIGSAWS)
    frame_selection: str = "end_aligned"  # end_aligned (MTL-AQA: frames ending at end_frame) | linspace
    train_shift: int = 0  # end_aligned: end shifted by a random integer in [-shift, shift] in training
    # exemplars and scores
    exemplar_rule: str = "difficulty"  # difficulty | action_type | group | random
    divide_by_difficulty: bool = True  # regress score / difficulty, multiply back (MTL-AQA w/ DD)
    # [low, high] of the target the model regresses (score / DD with divide_by_difficulty, else the score), as
    # the dataset documents it: the baselines' score bins (USDL) and score scale (CoRe) follow it, and a run
    # whose targets leave it is refused before training. Default: diving with DD (3 judges x 10 marks)
    score_range: list[float] = field(default_factory=lambda: [0.0, 30.0])
    # the diving formats (MTL-AQA, FineDiving): a score above this x DD is refused as a broken annotation (three
    # judges' 0-10 marks)
    max_score_per_difficulty: float = 30.0
    voting_exemplars: int = 10  # K
    small_pool_policy: str = "all"  # all | replace, when a pool has fewer than K members
    val_fraction: float = 0.0  # seeded validation split carved from train
    # loading
    batch_size: int = 4  # global, over all processes
    eval_batch_size: int = 2  # global
    # loader processes per training process; auto: trainer.cpus_per_process - 1, resolved for the job's
    # processes by t2cr.run.data_config (OmegaConf has no int | str field, hence Any)
    num_workers: Any = "auto"
    seed: int = 0
    transform: TransformConfig = field(default_factory=TransformConfig)
    synthetic: SyntheticConfig | None = None  # generate the embedded dataset on first use
    judges: JudgeMarks = field(default_factory=JudgeMarks)  # what per-judge marks mean (MUSDL's targets)


def ensure_generated(config: DataConfig) -> None:
    """Generate the data that `config` asks to be generated (data.synthetic: the embedded demo dataset,
    once, under data.synthetic.root); nothing for real data. The generator is imported only here, when a
    config asks for it, so the data path of real datasets never loads it."""
    if config.synthetic is not None:
        from t2cr.data.synthetic import ensure_synthetic_dataset

        ensure_synthetic_dataset(config.synthetic)
