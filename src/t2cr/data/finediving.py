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

import dataclasses
import logging
from pathlib import Path

from t2cr.data.annotation_checks import (
    DIVING_RULES,
    SampleRules,
    Where,
    check_splits,
    frame_range,
    integer,
    items,
    pair,
    path_part,
    record,
    require_keys,
    score_and_difficulty,
    split_keys,
    text,
)
from t2cr.data.packaged import load_pickle
from t2cr.data.samples import Sample

log = logging.getLogger(__name__)

Splits = dict[str, list[Sample]]

AQA_FILE = "fine-grained_annotation_aqa.pkl"
COARSE_FILE = "FineDiving_coarse_annotation.pkl"
SPLIT_FILES = {"train": "train_split.pkl", "test": "test_split.pkl"}
AQA_ENTRY = "[action_type, dive_score, difficulty, steps_transit_frames, frames_labels]"
COARSE_FIELDS = ("start_frame", "end_frame")
RULES = DIVING_RULES


def _key(raw: object, where: Where) -> tuple[str, int]:
    event, idx = pair(raw, where, "(event, idx) of FineDiving")
    # both parts name the frame folder {event}/{idx}: the event must be one folder name, not a path
    return path_part(event, where, "event"), integer(idx, where, "idx", minimum=0)


def read_finediving(annotations: Path, config=None) -> Splits:
    """FineDiving's official train / test split as Sample records (raw dive scores, key (event, idx)).

    A dive score above `config.max_score_per_difficulty` (30: three judges' 0-10 marks) x DD is refused."""
    rules = RULES if config is None else dataclasses.replace(
        RULES, max_score_per_difficulty=float(config.max_score_per_difficulty))
    annotations = Path(annotations)
    aqa_path = annotations / AQA_FILE
    labels = load_pickle(aqa_path, "FineDiving annotation file")
    if not isinstance(labels, dict) or not labels:
        raise Where(aqa_path).error("is not a FineDiving annotation dict keyed by (event, idx) "
                                    "(is data.format right for this folder?)")
    coarse_path = annotations / COARSE_FILE
    coarse = _read_coarse(coarse_path, config)

    splits: Splits = {}
    sources: dict[str, str] = {}
    for split, name in SPLIT_FILES.items():
        path = annotations / name
        keys = split_keys(load_pickle(path, f"FineDiving {split} split"), path, _key)
        require_keys(keys, labels, path, aqa_path)
        if coarse is not None:
            require_keys(keys, coarse, path, coarse_path)
        splits[split] = [_sample(key, labels[key], aqa_path, coarse, coarse_path, rules) for key in keys]
        sources[split] = str(path)
    return check_splits(splits, sources, rules)


def _read_coarse(path: Path, config) -> dict | None:
    if not path.is_file():
        pattern = getattr(config, "frame_pattern", None)
        log.warning("%s is missing: FineDiving samples have no frame range, so every image of the sample's "
                    "folder is listed (this needs data.frame_pattern=null%s)", path,
                    "" if pattern is None else f"; it is {pattern!r}")
        return None
    coarse = load_pickle(path, "FineDiving coarse annotation file")
    if not isinstance(coarse, dict):
        raise Where(path).error("is not a FineDiving coarse annotation dict keyed by (event, idx)")
    return coarse


def _sample(key: tuple[str, int], entry: object, aqa_path: Path, coarse: dict | None,
            coarse_path: Path, rules: SampleRules = RULES) -> Sample:
    """The sample of `key`; `coarse` None: there is no coarse file (the sample's folder is listed)."""
    where = Where.at(aqa_path, key)
    action_type, dive_score, difficulty, _steps, frames_labels = items(
        entry, where, f"a FineDiving entry {AQA_ENTRY} (is data.format right for this folder?)", length=5)
    start = end = None
    if coarse is not None:
        coarse_where = Where.at(coarse_path, key)
        fields = record(coarse[key], coarse_where, COARSE_FIELDS, "a FineDiving frame range")
        start, end = frame_range(fields["start_frame"], fields["end_frame"], coarse_where, rules)
        labelled = len(items(frames_labels, where, "frames_labels, one label per frame"))
        if end - start + 1 != labelled:
            raise coarse_where.error(f"spans frames {start}..{end} ({end - start + 1} frames) but {AQA_FILE} "
                                     f"labels {labelled} frames")
    # The difficulty is the aqa file's, as the reference loader reads it. The two files disagree on one
    # sample, ('17', 164): DD 2.0 in the aqa file, 3.4 in the coarse file (the aqa one is kept).
    score, factor = score_and_difficulty(dive_score, difficulty, where, rules, ("dive_score", "difficulty"))
    event, idx = key
    return Sample(
        key=key,
        score=score,  # raw dive score: the paper trains and reports FineDiving on raw scores
        difficulty=factor,
        action_type=text(action_type, where, "action_type"),
        frames=f"{event}/{idx}",
        start_frame=start,
        end_frame=end,
    )
