"""Readers of official annotation formats -> `Sample` records, one function per format.

The reader is chosen by `data.format` (data, not a branch in shared code).
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

from t2cr.data.aqa7 import read_aqa7
from t2cr.data.finediving import read_finediving
from t2cr.data.jigsaws import read_jigsaws
from t2cr.data.samples import Sample

Splits = dict[str, list[Sample]]


def _load_pickle(path: Path, what: str) -> object:
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}; set data.annotations to the folder holding it")
    with path.open("rb") as handle:
        return pickle.load(handle)


def read_mtl_aqa(annotations: Path, split_id: int = 0) -> Splits:
    """MTL-AQA: `final_annotations_dict_with_dive_number.pkl` + `{train,test}_split_{k}.pkl`.

    Frames live in one folder per event (`{event:02d}`); a sample ends at `end_frame`.
    """
    annotations = Path(annotations)
    labels = _load_pickle(annotations / "final_annotations_dict_with_dive_number.pkl", "MTL-AQA annotation file")
    if not isinstance(labels, dict) or not labels:
        raise ValueError(f"{annotations / 'final_annotations_dict_with_dive_number.pkl'} is not an MTL-AQA "
                         "annotation dict keyed by (event, idx)")
    first = next(iter(labels.values()))
    needed = {"final_score", "difficulty", "dive_number", "start_frame", "end_frame"}
    if not isinstance(first, dict) or not needed <= set(first):
        raise ValueError(f"{annotations} does not hold MTL-AQA annotations with dive numbers: entries need "
                         f"the fields {sorted(needed)} (is data.format right for this folder?)")
    splits: Splits = {}
    for split in ("train", "test"):
        path = annotations / f"{split}_split_{split_id}.pkl"
        keys = _load_pickle(path, f"MTL-AQA {split} split")
        missing = [k for k in keys if tuple(k) not in labels]
        if missing:
            raise KeyError(f"{path}: {len(missing)} keys are not in the annotation file, e.g. {missing[:5]}")
        splits[split] = [_mtl_sample(tuple(k), labels[tuple(k)]) for k in keys]
    return splits


def _mtl_sample(key: tuple, entry: dict) -> Sample:
    event = int(key[0])
    return Sample(
        key=(event, int(key[1])), score=float(entry["final_score"]), difficulty=float(entry["difficulty"]),
        action_type=str(entry["dive_number"]), frames=f"{event:02d}",
        start_frame=int(entry["start_frame"]), end_frame=int(entry["end_frame"]),
    )


READERS: dict[str, Callable[..., Splits]] = {
    "mtl_aqa": lambda annotations, config: read_mtl_aqa(annotations, config.split_id),
    "finediving": read_finediving,
    "aqa7": read_aqa7,
    "jigsaws": read_jigsaws,
}


def read_annotations(config) -> Splits:
    """The official train / test splits of `config.format` (a DataConfig) as Sample records."""
    if config.format not in READERS:
        raise ValueError(f"unknown data.format {config.format!r}; known formats: {sorted(READERS)}")
    annotations = Path(config.annotations)
    if not annotations.is_dir():
        raise FileNotFoundError(f"data.annotations={annotations} is not a folder; point it at the folder holding "
                                f"the official {config.format} annotation files")
    return READERS[config.format](annotations, config)
