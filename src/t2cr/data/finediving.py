"""FineDiving (Xu et al. 2022): the official pickles as the T2CR / FineDiving reference code reads them.

- `train_split.pkl`, `test_split.pkl`: lists of `(event: str, idx: int)` (2251 / 749).
- `fine-grained_annotation_aqa.pkl`: `(event, idx) -> [action_type, dive_score, difficulty,
  steps_transit_frames, frames_labels]` (what the reference loader reads; 52 action types).
- `FineDiving_coarse_annotation.pkl`: `(event, idx) -> {action_type, start_frame, end_frame, dive_score,
  difficulty, judge_scores}`; gives the absolute frame numbers of the sample's first and last frame.

Frames: `{root}/{event}/{idx}/{frame:05d}.jpg` with absolute frame numbers (`frame_pattern:
"{folder}/{frame:05d}.jpg"`); a sample is `num_frames` frames spread by linspace over start..end.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Hashable
from pathlib import Path

from t2cr.data.samples import Sample

log = logging.getLogger(__name__)

Splits = dict[str, list[Sample]]

AQA_FILE = "fine-grained_annotation_aqa.pkl"
COARSE_FILE = "FineDiving_coarse_annotation.pkl"
SPLIT_FILES = {"train": "train_split.pkl", "test": "test_split.pkl"}


def _load_pickle(path: Path, what: str) -> object:
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}; set data.annotations to the folder holding it")
    with path.open("rb") as handle:
        return pickle.load(handle)


def _key(raw: object, path: Path) -> tuple[str, int]:
    try:
        event, idx = raw  # type: ignore[misc]
        return str(event), int(idx)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: {raw!r} is not a FineDiving key (event, idx)") from None


def read_finediving(annotations: Path, config=None) -> Splits:
    """FineDiving's official train / test split as Sample records (raw dive scores, key (event, idx))."""
    annotations = Path(annotations)
    aqa_path = annotations / AQA_FILE
    labels = _load_pickle(aqa_path, "FineDiving annotation file")
    if not isinstance(labels, dict) or not labels:
        raise ValueError(f"{aqa_path} is not a FineDiving annotation dict keyed by (event, idx) "
                         "(is data.format right for this folder?)")
    labels = {_key(k, aqa_path): v for k, v in labels.items()}
    for key, entry in labels.items():
        if not isinstance(entry, (list, tuple)) or len(entry) != 5:
            raise ValueError(f"{aqa_path}: entry {key} is not [action_type, dive_score, difficulty, "
                             f"steps_transit_frames, frames_labels] (is data.format right for this folder?)")
    coarse = _read_coarse(annotations / COARSE_FILE, config)

    splits: Splits = {}
    for split, name in SPLIT_FILES.items():
        path = annotations / name
        raw = _load_pickle(path, f"FineDiving {split} split")
        if not isinstance(raw, (list, tuple)):
            raise TypeError(f"{path} is not a list of (event, idx) keys")
        keys = [_key(k, path) for k in raw]
        if len(set(keys)) != len(keys):
            raise ValueError(f"{path} lists {len(keys) - len(set(keys))} keys twice")
        missing = [k for k in keys if k not in labels]
        if missing:
            raise KeyError(f"{path}: {len(missing)} keys are not in {aqa_path.name}, e.g. {missing[:5]}")
        if coarse is not None:
            missing = [k for k in keys if k not in coarse]
            if missing:
                raise KeyError(f"{path}: {len(missing)} keys are not in {COARSE_FILE}, e.g. {missing[:5]}")
        splits[split] = [_sample(k, labels[k], None if coarse is None else coarse[k], annotations) for k in keys]
    overlap = {s.key for s in splits["train"]} & {s.key for s in splits["test"]}
    if overlap:
        raise ValueError(f"{annotations}: {len(overlap)} keys are in both the train and the test split, "
                         f"e.g. {sorted(overlap)[:5]}")
    return splits


def _read_coarse(path: Path, config) -> dict[Hashable, dict] | None:
    if not path.is_file():
        pattern = getattr(config, "frame_pattern", None)
        log.warning("%s is missing: FineDiving samples have no frame range, so every image of the sample's "
                    "folder is listed (this needs data.frame_pattern=null%s)", path,
                    "" if pattern is None else f"; it is {pattern!r}")
        return None
    coarse = _load_pickle(path, "FineDiving coarse annotation file")
    if not isinstance(coarse, dict):
        raise TypeError(f"{path} is not a FineDiving coarse annotation dict keyed by (event, idx)")
    out = {}
    for key, entry in coarse.items():
        if not isinstance(entry, dict) or not {"start_frame", "end_frame"} <= set(entry):
            raise ValueError(f"{path}: entry {key} has no start_frame / end_frame")
        out[_key(key, path)] = entry
    return out


def _sample(key: tuple[str, int], entry, coarse: dict | None, annotations: Path) -> Sample:
    action_type, dive_score, difficulty, _steps, frames_labels = entry
    start = end = None
    if coarse is not None:
        start, end = int(coarse["start_frame"]), int(coarse["end_frame"])
        if end - start + 1 != len(frames_labels):
            raise ValueError(f"{annotations / COARSE_FILE}: sample {key} spans frames {start}..{end} "
                             f"({end - start + 1} frames) but {AQA_FILE} labels {len(frames_labels)} frames")
    event, idx = key
    return Sample(
        key=key,
        score=float(dive_score),  # raw dive score: the paper trains and reports FineDiving on raw scores
        # The difficulty is the aqa file's, as the reference loader reads it. The two files disagree on one
        # sample, ('17', 164): DD 2.0 in the aqa file, 3.4 in the coarse file (the aqa one is kept).
        difficulty=float(difficulty),
        action_type=str(action_type),
        frames=f"{event}/{idx}",
        start_frame=start,
        end_frame=end,
    )
