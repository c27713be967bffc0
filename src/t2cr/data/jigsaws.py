"""JIGSAWS (Gao et al. 2014) as the MUSDL reference code distributes it.

- `label.pkl`: `'Suturing_B001' -> [6 GRS sub-scores, 1-5 each]`; the target is their sum (6-30).
- `splits.pkl`: `task -> 4 folds` (lists of names). Four-fold cross-validation per task: the test set
  is fold `data.fold`, the training set the other three folds of the same task `data.task`.

Frames: `{root}/{name}_capture1/` (left camera), every image of the folder listed in name order
(`frame_pattern: null`); a sample is `num_frames` frames spread by linspace over the folder.
"""

from __future__ import annotations

import operator
import pickle
from pathlib import Path

from t2cr.data.samples import Sample

Splits = dict[str, list[Sample]]

TASKS = ("Suturing", "Needle_Passing", "Knot_Tying")
NUM_GRS_ITEMS = 6
LABEL_FILE = "label.pkl"
SPLITS_FILE = "splits.pkl"


def _load_pickle(path: Path, what: str) -> object:
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}; set data.annotations to the folder holding it")
    with path.open("rb") as handle:
        return pickle.load(handle)


def _task_and_fold(config, folds_by_task: dict, path: Path) -> tuple[str, int]:
    task = getattr(config, "task", None)
    known = [t for t in TASKS if t in folds_by_task] + sorted(t for t in folds_by_task if t not in TASKS)
    if task is None:
        raise ValueError(f"data.task is required for JIGSAWS; one of {known}")
    if task not in folds_by_task:
        raise ValueError(f"unknown JIGSAWS data.task {task!r}; {path} has the tasks {known}")
    fold = getattr(config, "fold", None)
    num_folds = len(folds_by_task[task])
    if fold is None:
        raise ValueError(f"data.fold is required for JIGSAWS: the test fold, 0-{num_folds - 1}")
    try:
        fold = operator.index(fold)
    except TypeError:
        raise ValueError(f"data.fold={fold!r} is not an integer fold index (0-{num_folds - 1})") from None
    if not 0 <= fold < num_folds:
        raise ValueError(f"data.fold={fold!r} is out of range: {task} has {num_folds} folds (0-{num_folds - 1})")
    return task, fold


def read_jigsaws(annotations: Path, config=None) -> Splits:
    """One fold of JIGSAWS's four-fold cross-validation for one task, as Sample records keyed by name."""
    annotations = Path(annotations)
    label_path, splits_path = annotations / LABEL_FILE, annotations / SPLITS_FILE
    labels = _load_pickle(label_path, "JIGSAWS label file")
    if not isinstance(labels, dict) or not labels:
        raise ValueError(f"{label_path} is not a JIGSAWS label dict (name -> 6 GRS sub-scores)")
    folds_by_task = _load_pickle(splits_path, "JIGSAWS splits file")
    if not isinstance(folds_by_task, dict) or not folds_by_task:
        raise ValueError(f"{splits_path} is not a JIGSAWS splits dict (task -> folds of names)")
    task, fold = _task_and_fold(config, folds_by_task, splits_path)
    folds = [[str(name) for name in names] for names in folds_by_task[task]]

    seen: dict[str, int] = {}
    for index, names in enumerate(folds):
        for name in names:
            if name in seen:
                raise ValueError(f"{splits_path}: {name} is in fold {seen[name]} and fold {index} of {task}")
            seen[name] = index
    missing = [name for name in seen if name not in labels]
    if missing:
        raise KeyError(f"{splits_path}: {len(missing)} {task} videos have no scores in {label_path}, "
                       f"e.g. {missing[:5]}")
    wrong_task = [name for name in seen if not name.startswith(task + "_")]
    if wrong_task:
        raise ValueError(f"{splits_path}: the {task} folds list videos of another task, e.g. {wrong_task[:5]}")

    test = [_sample(name, labels[name], task, label_path) for name in folds[fold]]
    train = [_sample(name, labels[name], task, label_path)
             for index, names in enumerate(folds) if index != fold for name in names]
    return {"train": train, "test": test}


def _sample(name: str, items, task: str, path: Path) -> Sample:
    try:
        values = [float(v) for v in items]
    except (TypeError, ValueError):
        raise ValueError(f"{path}: {name} -> {items!r} is not a list of {NUM_GRS_ITEMS} GRS sub-scores") from None
    if len(values) != NUM_GRS_ITEMS:
        raise ValueError(f"{path}: {name} has {len(values)} GRS sub-scores; expected {NUM_GRS_ITEMS}")
    return Sample(
        key=name,
        score=sum(values),  # the GRS total (6-30), the sum of the six sub-scores
        difficulty=None,
        action_type=task,
        frames=f"{name}_capture1",  # left camera: {Task}_{Subject}{trial:03d}_capture1
        start_frame=None,  # the whole folder, listed
        end_frame=None,
        group=task,
    )
