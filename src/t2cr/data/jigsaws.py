"""JIGSAWS (Gao et al. 2014) as the MUSDL reference code distributes it.

- `label.pkl`: `'Suturing_B001' -> [6 GRS sub-scores, 1-5 each]`; the target is their sum (6-30).
- `splits.pkl`: `task -> 4 folds` (lists of names). Four-fold cross-validation per task: the test set
  is fold `data.fold`, the training set the other three folds of the same task `data.task`.

Frames: `{root}/{name}_capture1/` (left camera), every image of the folder listed in name order
(`frame_pattern: null`); a sample is `num_frames` frames spread by linspace over the folder.
"""

from __future__ import annotations

import operator
from pathlib import Path

from t2cr.data.annotation_checks import (
    AnnotationError,
    Bounds,
    MissingAnnotationKeyError,
    SampleRules,
    Where,
    check_splits,
    items,
    number,
    path_part,
)
from t2cr.data.packaged import load_pickle
from t2cr.data.samples import Sample

Splits = dict[str, list[Sample]]

TASKS = ("Suturing", "Needle_Passing", "Knot_Tying")
NUM_GRS_ITEMS = 6
GRS_ITEM = Bounds(1.0, 5.0)  # every GRS item is marked 1-5
RULES = SampleRules(score=Bounds(NUM_GRS_ITEMS * GRS_ITEM.low, NUM_GRS_ITEMS * GRS_ITEM.high))
LABEL_FILE = "label.pkl"
SPLITS_FILE = "splits.pkl"


def _task_and_fold(config, folds_by_task: dict, path: Path) -> tuple[str, int]:
    task = getattr(config, "task", None)
    # str keys: a damaged file may hold keys of other types, which do not sort with the task names
    known = [t for t in TASKS if t in folds_by_task] + sorted(str(t) for t in folds_by_task if t not in TASKS)
    if task is None:
        raise ValueError(f"data.task is required for JIGSAWS; one of {known}")
    if task not in folds_by_task:
        raise AnnotationError(f"unknown JIGSAWS data.task {task!r}; {path} has the tasks {known}")
    folds = items(folds_by_task[task], Where.at(path, task), "a list of folds (lists of video names)")
    if len(folds) < 2:  # one fold is tested, the others train
        raise Where.at(path, task).error(f"has {len(folds)} folds; cross-validation needs at least 2")
    fold = getattr(config, "fold", None)
    num_folds = len(folds)
    if fold is None:
        raise ValueError(f"data.fold is required for JIGSAWS: the test fold, 0-{num_folds - 1}")
    try:
        fold = operator.index(fold)
    except TypeError:
        raise ValueError(f"data.fold={fold!r} is not an integer fold index (0-{num_folds - 1})") from None
    if not 0 <= fold < num_folds:
        raise AnnotationError(f"data.fold={fold!r} is out of range: {task} has {num_folds} folds "
                              f"(0-{num_folds - 1}) in {path}")
    return task, fold


def _folds(folds_by_task: dict, task: str, path: Path) -> list[list[str]]:
    """The task's folds as lists of video names, each name in one fold only."""
    where = Where.at(path, task)
    folds = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(folds_by_task[task]):
        # a name becomes the frame folder {name}_capture1 and the video's file name: one name, not a path
        names = [path_part(name, Where.at(path, name), f"a video name of {task} fold {index}")
                 for name in items(raw, where, f"fold {index}: a list of video names")]
        for name in names:
            if name in seen:
                raise Where.at(path, name).error(f"is in fold {seen[name]} and fold {index} of {task}")
            if not name.startswith(task + "_"):
                raise Where.at(path, name).error(f"is listed in a {task} fold but is a video of another task")
            seen[name] = index
        folds.append(names)
    return folds


def read_jigsaws(annotations: Path, config=None) -> Splits:
    """One fold of JIGSAWS's four-fold cross-validation for one task, as Sample records keyed by name."""
    annotations = Path(annotations)
    label_path, splits_path = annotations / LABEL_FILE, annotations / SPLITS_FILE
    labels = load_pickle(label_path, "JIGSAWS label file")
    if not isinstance(labels, dict) or not labels:
        raise Where(label_path).error("is not a JIGSAWS label dict (name -> 6 GRS sub-scores)")
    folds_by_task = load_pickle(splits_path, "JIGSAWS splits file")
    if not isinstance(folds_by_task, dict) or not folds_by_task:
        raise Where(splits_path).error("is not a JIGSAWS splits dict (task -> folds of names)")
    task, fold = _task_and_fold(config, folds_by_task, splits_path)
    folds = _folds(folds_by_task, task, splits_path)
    missing = [name for names in folds for name in names if name not in labels]
    if missing:
        raise MissingAnnotationKeyError(f"{splits_path}: {len(missing)} {task} videos have no scores in "
                                        f"{label_path}, e.g. {missing[:5]}")

    test = [_sample(name, labels[name], task, label_path) for name in folds[fold]]
    train = [_sample(name, labels[name], task, label_path)
             for index, names in enumerate(folds) if index != fold for name in names]
    sources = {"train": f"{splits_path} ({task} folds other than {fold})",
               "test": f"{splits_path} ({task} fold {fold})"}
    return check_splits({"train": train, "test": test}, sources, RULES)


def _sample(name: str, raw_items: object, task: str, path: Path) -> Sample:
    where = Where.at(path, name)
    values = items(raw_items, where, f"a list of {NUM_GRS_ITEMS} GRS sub-scores", length=NUM_GRS_ITEMS)
    scores = [number(value, where, f"GRS item {position + 1}", GRS_ITEM)
              for position, value in enumerate(values)]
    return Sample(
        key=name,
        score=sum(scores),  # the GRS total (6-30), the sum of the six sub-scores
        difficulty=None,
        action_type=task,
        frames=f"{name}_capture1",  # left camera: {Task}_{Subject}{trial:03d}_capture1
        start_frame=None,  # the whole folder, listed
        end_frame=None,
        group=task,
        judge_scores=tuple(scores),  # the sub-scores as MUSDL's six judges (data.judges: rule sum)
    )
