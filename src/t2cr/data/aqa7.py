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
SCORE_RANGES = {  # class -> (lowest, highest) score, for the 0-100 normalisation
    1: (21.6, 102.6),
    2: (12.3, 16.87),
    3: (8.0, 50.0),
    4: (8.0, 50.0),
    5: (46.2, 104.88),
    6: (49.8, 99.36),
}
FIRST_FRAME, LAST_FRAME = 1, 103  # every AQA-7 sample folder holds img_00001.jpg .. img_00103.jpg
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
        raise FileNotFoundError(f"AQA-7 split file not found: {path}; set data.annotations to the AQA-7 folder "
                                "holding Split_4/")
    from scipy.io import loadmat

    try:
        content = loadmat(str(path))
    except Exception as error:  # scipy raises several types for files that are not .mat
        raise ValueError(f"cannot read {path} as a MATLAB file: {error}") from error
    if variable not in content:
        found = sorted(k for k in content if not k.startswith("__"))
        raise ValueError(f"{path} has no MATLAB variable {variable!r} (it holds {found}); is this the official "
                       "AQA-7 Split_4 file?")
    array = np.asarray(content[variable])
    if array.ndim != 2 or array.shape[1] != 3 or array.shape[0] == 0:
        raise ValueError(f"{path}: {variable} has shape {array.shape}; expected N x 3 rows "
                         "[class_index, sample_index, score]")
    if not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"{path}: {variable} is not numeric (dtype {array.dtype})")
    return array.astype(np.float64)


def read_aqa7(annotations: Path, config=None) -> Splits:
    """AQA-7's Split_4 train / test lists as Sample records, trampoline excluded, scores normalised."""
    annotations = Path(annotations)
    classes = selected_classes(config)
    splits: Splits = {}
    for split, (name, variable) in SPLIT_FILES.items():
        path = annotations / name
        rows = _read_list(path, variable)
        samples = []
        for row in rows:
            class_value, index_value, raw = row
            if class_value != round(class_value) or index_value != round(index_value):
                raise ValueError(f"{path}: row {row.tolist()} has a non-integer class or sample index")
            class_index, sample_index = int(class_value), int(index_value)
            if class_index == TRAMPOLINE:
                continue
            if class_index not in CLASS_NAMES:
                raise ValueError(f"{path}: unknown AQA-7 class index {class_index} in row {row.tolist()}; "
                                 "expected 1-7")
            if class_index not in classes:
                continue
            samples.append(_sample(class_index, sample_index, raw))
        keys = [s.key for s in samples]
        if len(set(keys)) != len(keys):
            raise ValueError(f"{path}: {len(keys) - len(set(keys))} (class, sample) rows appear twice")
        if not samples:
            raise ValueError(f"{path} has no samples of data.classes={classes}")
        splits[split] = samples
    overlap = {s.key for s in splits["train"]} & {s.key for s in splits["test"]}
    if overlap:
        raise ValueError(f"{annotations}: {len(overlap)} (class, sample) keys are in both the train and the "
                         f"test list, e.g. {sorted(overlap)[:5]}")
    return splits


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
