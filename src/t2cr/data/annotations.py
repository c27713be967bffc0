"""Readers of official annotation formats -> `Sample` records, one function per format.

The reader is chosen by `data.format` (data, not a branch in shared code). Every reader validates what it
reads with `t2cr.data.annotation_checks` and refuses a bad file with an `AnnotationError` naming the file
and the key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from t2cr.data.annotation_checks import (
    DIVING_RULES,
    SampleRules,
    Where,
    check_splits,
    frame_range,
    integer,
    judge_marks,
    pair,
    record,
    require_keys,
    score_and_difficulty,
    split_keys,
    text,
)
from t2cr.data.aqa7 import read_aqa7
from t2cr.data.finediving import read_finediving
from t2cr.data.jigsaws import read_jigsaws
from t2cr.data.packaged import annotation_folder, load_pickle
from t2cr.data.samples import Sample

Splits = dict[str, list[Sample]]

MTL_AQA_FILE = "final_annotations_dict_with_dive_number.pkl"
MTL_AQA_FIELDS = ("final_score", "difficulty", "dive_number", "start_frame", "end_frame")
# A user's own split may list a training video for testing (a fitting check); it is logged, not refused.
MTL_AQA_RULES = dataclasses.replace(DIVING_RULES, disjoint_splits=False)


def read_mtl_aqa(annotations: Path, split_id: int = 0, max_score_per_difficulty: float = 30.0) -> Splits:
    """MTL-AQA: `final_annotations_dict_with_dive_number.pkl` + `{train,test}_split_{k}.pkl`.

    Frames live in one folder per event (`{event:02d}`); a sample ends at `end_frame`. A final score above
    `max_score_per_difficulty` x DD is refused (diving: three judges' marks of 0-10).
    """
    rules = dataclasses.replace(MTL_AQA_RULES, max_score_per_difficulty=float(max_score_per_difficulty))
    annotations = Path(annotations)
    labels_path = annotations / MTL_AQA_FILE
    labels = load_pickle(labels_path, "MTL-AQA annotation file")
    if not isinstance(labels, dict) or not labels:
        raise Where(labels_path).error("is not an MTL-AQA annotation dict keyed by (event, idx)")
    # the first entry tells a file of another format apart before any split key is looked up
    first_key = next(iter(labels))
    record(labels[first_key], Where.at(labels_path, first_key), MTL_AQA_FIELDS,
           "MTL-AQA annotations with dive numbers")
    splits: Splits = {}
    sources: dict[str, str] = {}
    for split in ("train", "test"):
        path = annotations / f"{split}_split_{split_id}.pkl"
        if not path.is_file():
            raise FileNotFoundError(f"MTL-AQA {split} split not found: {path} (data.split_id={split_id}); "
                                    "set data.split_id to a split the folder holds, or data.annotations to "
                                    "the folder holding it")
        keys = split_keys(load_pickle(path, f"MTL-AQA {split} split"), path, _mtl_key)
        require_keys(keys, labels, path, labels_path)
        splits[split] = [_mtl_sample(key, labels[key], Where.at(labels_path, key), rules) for key in keys]
        sources[split] = str(path)
    return check_splits(splits, sources, rules)


def _mtl_key(raw: object, where: Where) -> tuple[int, int]:
    event, idx = pair(raw, where, "(event, idx)")
    # the event names the frame folder ({event:02d}): a negative one would name no folder of the dataset
    return integer(event, where, "event", minimum=0), integer(idx, where, "idx", minimum=0)


def _mtl_sample(key: tuple[int, int], entry: object, where: Where, rules: SampleRules) -> Sample:
    fields = record(entry, where, MTL_AQA_FIELDS, "MTL-AQA annotations with dive numbers")
    start, end = frame_range(fields["start_frame"], fields["end_frame"], where, rules)
    event = key[0]
    score, difficulty = score_and_difficulty(fields["final_score"], fields["difficulty"], where,
                                             rules, ("final_score", "difficulty"))
    # optional: the judges' marks (MUSDL's targets); annotation files without them still read
    judges = judge_marks(fields["judge_scores"], where) if fields.get("judge_scores") is not None else None
    return Sample(
        key=key, score=score, difficulty=difficulty,
        action_type=text(fields["dive_number"], where, "dive_number"), frames=f"{event:02d}",
        start_frame=start, end_frame=end, judge_scores=judges,
    )


READERS: dict[str, Callable[..., Splits]] = {
    "mtl_aqa": lambda folder, config: read_mtl_aqa(folder, config.split_id, config.max_score_per_difficulty),
    "finediving": read_finediving,
    "aqa7": read_aqa7,
    "jigsaws": read_jigsaws,
}


def read_annotations(config) -> Splits:
    """The official train / test splits of `config.format` (a DataConfig) as Sample records."""
    if config.format not in READERS:
        raise ValueError(f"unknown data.format {config.format!r}; known formats: {sorted(READERS)}")
    annotations = annotation_folder(config.annotations, config.format)
    if not annotations.is_dir():
        raise FileNotFoundError(f"data.annotations={annotations} is not a folder; point it at the folder "
                                f"holding the official {config.format} annotation files")
    return READERS[config.format](annotations, config)

