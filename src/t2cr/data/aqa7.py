"""AQA-7 (Parmar & Morris 2019): `Split_4/split_4_{train,test}_list.mat` from the dataset archive.

Each file holds one MATLAB variable (`consolidated_train_list` / `consolidated_test_list`), an N x 3
array of rows `[class_index (1-7), sample_index, score]`. Trampoline (class 7) is always left out, as
in the paper; `data.classes` picks among the other six (one model per class in the paper).

Scores are normalised per class to 0-100 with the class score ranges (what the paper reports).
Frames: `{root}/{class}-out/{sample_index:03d}/img_{n:05d}.jpg`, frames 1-103.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from t2cr.data.annotation_checks import (
    AnnotationError,
    Bounds,
    SampleRules,
    Where,
    check_splits,
    integer,
    number,
)
from t2cr.data.samples import Sample

Splits = dict[str, list[Sample]]

CLASS_NAMES = {
    1: "diving",
    2: "gym_vault",
    3: "ski_big_air",
    4: "snowboard_big_air",
    5: "sync_diving_3m",
    6: "sync_diving_10m",
}
TRAMPOLINE = 7
# class -> (lowest, highest) score, for the 0-100 normalisation; a raw score outside is refused
SCORE_RANGES = {
    1: (21.6, 102.6),
    2: (12.3, 16.87),
    3: (8.0, 50.0),
    4: (8.0, 50.0),
    5: (46.2, 104.88),
    6: (49.8, 99.36),
}
FIRST_FRAME, LAST_FRAME = 1, 103  # every AQA-7 sample folder holds img_00001.jpg .. img_00103.jpg
FIRST_SAMPLE_INDEX = 1  # sample folders are numbered from 001
RULES = SampleRules(score=Bounds(0.0, 100.0), first_frame=FIRST_FRAME)  # scores normalised per class
SPLIT_FILES = {
    "train": ("Split_4/split_4_train_list.mat", "consolidated_train_list"),
    "test": ("Split_4/split_4_test_list.mat", "consolidated_test_list"),
}


def normalise_score(class_index: int, raw: float) -> float:
    lo, hi = SCORE_RANGES[class_index]
    return (float(raw) - lo) / (hi - lo) * 100.0


def selected_classes(config) -> list[int]:
    classes = getattr(config, "classes", None)
    if classes is None:
        return sorted(CLASS_NAMES)
    classes = [int(c) for c in classes]
    if not classes:
        raise ValueError("data.classes is empty; give AQA-7 class indices (1-6) or null for all six")
    unknown = [c for c in classes if c not in CLASS_NAMES]
    if unknown:
        extra = " (trampoline, 7, is excluded as in the paper)" if TRAMPOLINE in unknown else ""
        raise ValueError(f"data.classes has unknown AQA-7 class indices {unknown}{extra}; known: "
                         + ", ".join(f"{i} {n}" for i, n in CLASS_NAMES.items()))
    return sorted(set(classes))


def _read_list(path: Path, variable: str) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"AQA-7 split file not found: {path}; set data.annotations to the AQA-7 "
                                "folder holding Split_4/")
    from scipy.io import loadmat

    try:
        content = loadmat(str(path))
    except Exception as error:  # scipy raises several types for files that are not .mat
        raise AnnotationError(f"cannot read {path} as a MATLAB file: {error}") from error
    if variable not in content:
        found = sorted(k for k in content if not k.startswith("__"))
        raise Where(path).error(f"has no MATLAB variable {variable!r} (it holds {found}); is this the "
                                "official AQA-7 Split_4 file?")
    array = np.asarray(content[variable])
    if array.ndim != 2 or array.shape[1] != 3 or array.shape[0] == 0:
        raise Where(path).error(f"{variable} has shape {array.shape}; expected N x 3 rows "
                                "[class_index, sample_index, score]")
    # integers or floats only: a complex table would lose its imaginary parts silently in the float cast
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise Where(path).error(f"{variable} is not a table of real numbers (dtype {array.dtype})")
    return array.astype(np.float64)


def read_aqa7(annotations: Path, config=None) -> Splits:
    """AQA-7's Split_4 train / test lists as Sample records, trampoline excluded, scores normalised."""
    annotations = Path(annotations)
    classes = selected_classes(config)
    splits: Splits = {}
    sources: dict[str, str] = {}
    for split, (name, variable) in SPLIT_FILES.items():
        path = annotations / name
        rows = _read_list(path, variable)
        samples = [_row_sample(row, Where(path, f"row {number_} {row.tolist()}"), classes)
                   for number_, row in enumerate(rows, start=1)]
        splits[split] = [sample for sample in samples if sample is not None]
        sources[split] = f"{path} (data.classes={classes})"
    return check_splits(splits, sources, RULES)


def _row_sample(row: np.ndarray, where: Where, classes: list[int]) -> Sample | None:
    """The sample of one row [class_index, sample_index, score]; None for a class the run leaves out."""
    class_index = integer(row[0], where, "class index")
    if class_index == TRAMPOLINE:
        return None
    if class_index not in CLASS_NAMES:
        raise where.error(f"unknown AQA-7 class index {class_index}; expected 1-7")
    if class_index not in classes:
        return None
    sample_index = integer(row[1], where, "sample index", minimum=FIRST_SAMPLE_INDEX)
    raw = number(row[2], where, f"{CLASS_NAMES[class_index]} score", Bounds(*SCORE_RANGES[class_index]))
    return _sample(class_index, sample_index, raw)


def _sample(class_index: int, sample_index: int, raw: float) -> Sample:
    name = CLASS_NAMES[class_index]
    return Sample(
        key=(class_index, sample_index),
        score=normalise_score(class_index, raw),  # 0-100 per class, as the paper trains and reports AQA-7
        difficulty=None,
        action_type=name,
        frames=f"{name}-out/{sample_index:03d}",
        start_frame=FIRST_FRAME,
        end_frame=LAST_FRAME,
        group=name,
    )
