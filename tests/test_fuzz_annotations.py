"""Fuzzed annotations and configurations (issue 18): bad input is refused as a user error, never a crash
and never a silently wrong sample.

Annotations: the real records of each dataset (MTL-AQA, FineDiving, JIGSAWS from the packaged files, a
small sample of them per example; AQA-7 from .mat files written in the official structure) get one
mutation each: records or fields removed, wrong types, NaN / inf / negative scores and difficulties,
frame ranges reversed or outside the video, empty splits, duplicate or unknown keys, splits that are not
lists, entries that are not dicts / lists. The mutated copies are written to a temporary folder (the
packaged files are never touched). Every reader must either return valid samples, equal to what the
mutated files hold, or raise an `AnnotationError` from a `raise` line of t2cr (a user error for the CLI)
whose message names the changed file and the key. A mutation that can never give a valid sample must be
refused.

Configurations: random values for the numeric fields of the loss, model and data configs either build
or are refused as a user error (`user_error_message`) that names the key.

Derandomised (the same examples on every run, nothing written to the repository). The number of examples
each reader (and config) ran, refused and read is printed after the module; `--hypothesis-show-statistics`
gives hypothesis' own counts.
"""

from __future__ import annotations

import copy
import math
import pickle
import random
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers import real_annotations, tiny_config
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from omegaconf.errors import OmegaConfBaseException
from scipy.io import savemat

from t2cr.cli.common import UserError, user_error_message
from t2cr.config import to_dataclass
from t2cr.data.annotation_checks import AnnotationError
from t2cr.data.annotations import MTL_AQA_FILE, read_mtl_aqa
from t2cr.data.aqa7 import CLASS_NAMES, SCORE_RANGES, SPLIT_FILES, TRAMPOLINE, normalise_score, read_aqa7
from t2cr.data.config import DataConfig
from t2cr.data.datamodule import DataCheckError, PairDataModule
from t2cr.data.finediving import AQA_FILE, COARSE_FILE, read_finediving
from t2cr.data.jigsaws import LABEL_FILE, SPLITS_FILE, TASKS, read_jigsaws
from t2cr.data.samples import Sample
from t2cr.losses import LossConfig
from t2cr.models.t2cr import T2CR, ClipConfig, build_clip_plans

EXAMPLES_PER_READER = 600
# derandomised, no example database and no explain phase: nothing is written to the repository
PHASES = (Phase.explicit, Phase.generate, Phase.shrink)
FUZZ = settings(max_examples=EXAMPLES_PER_READER, deadline=None, derandomize=True, database=None,
                phases=PHASES, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
TRAIN_RECORDS, TEST_RECORDS = 20, 10  # records sampled per example (MTL-AQA, FineDiving)
MAX_SCORE_PER_DIFFICULTY, SCORE_ROUNDING = 30.0, 0.005

OUTCOMES: dict[str, Counter] = {}  # reader -> Counter(refused=..., read=...)


@pytest.fixture(scope="module", autouse=True)
def _report_examples(request):
    """After the module: how many examples each reader (and config) ran, shown even with output captured."""
    yield
    lines = [f"fuzz examples per reader: {name}: {sum(counts.values())} ({counts['refused']} refused, "
             f"{counts['read']} read)" for name, counts in sorted(OUTCOMES.items())]
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if reporter is None or capture is None:
        print("\n".join(lines))
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        for line in lines:
            reporter.write_line(line)


# ------------------------------------------------------------------------------------------- mutations
@dataclass
class Mutation:
    what: str  # for failure messages
    file: str  # the file it changed (a name relative to the annotation folder)
    mentions: tuple[str, ...] = ()  # a refusal must contain one of these (the key it concerns)
    must_refuse: bool = False  # no reader may accept the result


Docs = dict[str, Any]  # file name -> content
MutationFn = Callable[[Docs, st.DataObject, DataConfig], "Mutation | None"]  # None: not applicable here
KeysOf = Callable[[Docs, DataConfig], list]  # the keys of the records a run uses

NOT_NUMBERS = [None, "abc", "12.5", True, np.bool_(False), [1.0], {"value": 1.0}, complex(1, 1), b"7"]
NON_FINITE = [math.nan, math.inf, -math.inf, np.float64("nan"), np.float32("inf"), 10**400]
BAD_VALUES = {
    "score": NOT_NUMBERS + NON_FINITE + [-1.0, -0.01, -100, np.float32(-3.5)],
    "difficulty": NOT_NUMBERS + NON_FINITE + [0, 0.0, -0.0, -1.5],
    "start": NOT_NUMBERS + NON_FINITE + [-1, -50, 3.5, np.float64(7.25)],
    "end": NOT_NUMBERS + NON_FINITE + [-1, 2.5],  # every start is >= 0, so a negative end is reversed
    "label": [None, 3.2, 407, "", "   ", b"407C", ["407C"]],
    "grs": NOT_NUMBERS + NON_FINITE + [0, 0.5, 5.5, 6, -1],
    "frames_labels": [None, 5, np.int64(85), np.zeros(()), np.zeros((2, 2))],
}
ANY_NUMBER = st.one_of(st.floats(), st.integers(-1000, 20000), st.sampled_from(NOT_NUMBERS + NON_FINITE))
ANY_VALUES = {
    "score": ANY_NUMBER, "difficulty": ANY_NUMBER, "start": ANY_NUMBER, "end": ANY_NUMBER, "grs": ANY_NUMBER,
    "label": st.one_of(st.text(max_size=4), st.integers(), st.none()),
    "frames_labels": st.one_of(st.lists(st.integers(0, 3), max_size=3), st.none()),
    "unused": st.one_of(st.none(), st.integers(), st.text(max_size=4), st.floats()),
}


def pick(data: st.DataObject, options: list, label: str) -> Any:
    return data.draw(st.sampled_from(options), label=label)


@dataclass(frozen=True)
class Keyed:
    """A dataset whose annotation file is a dict of records and whose splits are lists of its keys."""

    splits: tuple[str, str]  # train, test
    unknown_key: tuple
    bad_keys: Callable[[tuple], list]  # wrong spellings of a key (refused)
    same_keys: Callable[[tuple], list]  # other spellings of the same key (accepted)
    overlap_refused: bool
    fields: dict[Any, str]  # field (or list index) of a labels record -> kind of value


def split_keys_of(layout: Keyed) -> KeysOf:
    return lambda docs, config: [key for name in layout.splits for key in docs[name]]


def split_mutations(layout: Keyed) -> list[MutationFn]:
    def empty(docs, data, config):
        name = pick(data, list(layout.splits), "split")
        docs[name] = []
        return Mutation(f"{name} emptied", name, (), True)

    def not_a_list(docs, data, config):
        name = pick(data, list(layout.splits), "split")
        docs[name] = pick(data, [None, 7, "keys", {k: 1 for k in docs[name]}, set(docs[name])], "value")
        return Mutation(f"{name} replaced by {type(docs[name]).__name__}", name, (), True)

    def duplicate(docs, data, config):
        name = pick(data, list(layout.splits), "split")
        key = pick(data, docs[name], "key")
        docs[name].insert(data.draw(st.integers(0, len(docs[name])), label="position"), key)
        return Mutation(f"{key!r} listed twice in {name}", name, (repr(key),), True)

    def unknown(docs, data, config):
        name = pick(data, list(layout.splits), "split")
        docs[name].append(layout.unknown_key)
        return Mutation(f"{layout.unknown_key!r} added to {name}", name, (repr(layout.unknown_key),), True)

    def bad_key(docs, data, config):
        name = pick(data, list(layout.splits), "split")
        position = data.draw(st.integers(0, len(docs[name]) - 1), label="position")
        bad = pick(data, layout.bad_keys(docs[name][position]), "bad key")
        docs[name][position] = bad
        return Mutation(f"key {position} of {name} -> {bad!r}", name, (repr(bad),), True)

    def same_key(docs, data, config):
        name = pick(data, list(layout.splits), "split")
        position = data.draw(st.integers(0, len(docs[name]) - 1), label="position")
        docs[name][position] = pick(data, layout.same_keys(docs[name][position]), "spelling")
        return Mutation(f"key {position} of {name} spelt {docs[name][position]!r}", name)

    def overlap(docs, data, config):
        train, test = layout.splits
        key = pick(data, docs[train], "key")
        docs[test].append(key)
        return Mutation(f"{key!r} added to {test} too", test, (repr(key),), layout.overlap_refused)

    def drop(docs, data, config):
        name = pick(data, list(layout.splits), "split")
        docs[name].pop(data.draw(st.integers(0, len(docs[name]) - 1), label="position"))
        return Mutation(f"a key removed from {name}", name)

    return [empty, not_a_list, duplicate, unknown, bad_key, same_key, overlap, drop]


def record_mutations(file: str, fields: dict[Any, str], keys_of: KeysOf) -> list[MutationFn]:
    """Mutations of the records of one file (a dict of dicts, or of lists when `fields` are indices)."""
    indexed = all(isinstance(f, int) for f in fields)

    def target(docs: Docs, data: st.DataObject, config: DataConfig) -> tuple[Any, Any]:
        key = pick(data, keys_of(docs, config), "record")
        return key, docs[file][key]

    def remove(docs, data, config):
        key, _ = target(docs, data, config)
        del docs[file][key]
        return Mutation(f"record {key!r} removed", file, (repr(key),), True)

    def not_a_record(docs, data, config):
        key, _ = target(docs, data, config)
        options = [None, 3.5, "record"] + ([{"a": 1}, np.zeros((2, 3))] if indexed else [[1, 2]])
        docs[file][key] = pick(data, options, "value")
        return Mutation(f"record {key!r} -> {type(docs[file][key]).__name__}", file, (repr(key),), True)

    def remove_field(docs, data, config):
        key, entry = target(docs, data, config)
        if indexed:
            entry = list(entry)
            entry.pop(data.draw(st.integers(0, len(entry) - 1), label="item"))
            docs[file][key] = entry
            return Mutation(f"an item of {key!r} removed", file, (repr(key),), True)
        name = pick(data, sorted(entry, key=str), "field")
        del entry[name]
        used = fields.get(name, "unused") != "unused"
        return Mutation(f"{name} of {key!r} removed", file, (repr(key),), used)

    def extra_item(docs, data, config):
        if not indexed:
            return None
        key, entry = target(docs, data, config)
        docs[file][key] = [*entry, 1.0]
        return Mutation(f"an item added to {key!r}", file, (repr(key),), True)

    def bad_field(docs, data, config):
        key, _ = target(docs, data, config)
        name = pick(data, sorted((f for f, kind in fields.items() if kind in BAD_VALUES), key=str), "field")
        value = pick(data, BAD_VALUES[fields[name]], "value")
        _set(docs, file, key, name, value)
        return Mutation(f"{name} of {key!r} -> {value!r}", file, (repr(key),), True)

    def any_field(docs, data, config):
        key, entry = target(docs, data, config)
        choices = sorted(fields, key=str) if indexed else sorted(entry, key=str)
        name = pick(data, choices, "field")
        value = data.draw(ANY_VALUES[fields.get(name, "unused")], label="value")
        _set(docs, file, key, name, value)
        return Mutation(f"{name} of {key!r} -> {value!r}", file, (repr(key),))

    return [remove, not_a_record, remove_field, extra_item, bad_field, any_field]


def _set(docs: Docs, file: str, key: Any, name: Any, value: Any) -> None:
    entry = docs[file][key]
    if isinstance(entry, dict):
        entry[name] = value
    else:
        entry = list(entry)
        entry[name] = value
        docs[file][key] = entry


def frame_range_mutations(file: str, keys_of: KeysOf) -> list[MutationFn]:
    def reverse(docs, data, config):
        key = pick(data, keys_of(docs, config), "record")
        entry = docs[file][key]
        if entry["start_frame"] == entry["end_frame"]:
            return None
        entry["start_frame"], entry["end_frame"] = entry["end_frame"], entry["start_frame"]
        return Mutation(f"frame range of {key!r} reversed", file, (repr(key),), True)

    def before_the_video(docs, data, config):
        key = pick(data, keys_of(docs, config), "record")
        entry = docs[file][key]
        shift = entry["start_frame"] + data.draw(st.integers(1, 100), label="frames before 0")
        entry["start_frame"] -= shift
        entry["end_frame"] -= shift
        return Mutation(f"frame range of {key!r} moved before frame 0", file, (repr(key),), True)

    return [reverse, before_the_video]


# --------------------------------------------------------------------------------------------- datasets
@dataclass(frozen=True)
class Case:
    name: str
    base: Callable[[random.Random], Docs]
    config: Callable[[st.DataObject], DataConfig]
    read: Callable[[Path, DataConfig], dict[str, list[Sample]]]
    mutations: list[MutationFn]
    expected: Callable[[Docs, DataConfig], dict[str, list[tuple]]]  # per split: (key, score) of each sample
    key_ok: Callable[[Any], bool]
    score_range: tuple[float, float]
    difficulty: bool
    first_frame: int = 0
    overlap_allowed: bool = False


@cache
def real_pickle(dataset: str, name: str) -> Any:
    return pickle.loads((real_annotations(dataset) / name).read_bytes())


def _is_int(value: Any) -> bool:
    return type(value) is int


# MTL-AQA ------------------------------------------------------------------------------------------------
MTL_SPLITS = ("train_split_0.pkl", "test_split_0.pkl")
MTL = Keyed(
    splits=MTL_SPLITS, unknown_key=(99, 99), overlap_refused=False,
    bad_keys=lambda k: [(str(k[0]), k[1]), (k[0], str(k[1])), (k[0] + 0.5, k[1]), (*k, 0), k[:1], None,
                        f"{k[0]}_{k[1]}", (-1, k[1]), (k[0], -k[1] - 1), (k[0], None), k[0], (True, k[1])],
    same_keys=lambda k: [list(k), (np.int64(k[0]), k[1]), (float(k[0]), k[1])],
    fields={"final_score": "score", "difficulty": "difficulty", "start_frame": "start", "end_frame": "end",
            "dive_number": "label"},
)


def mtl_base(rnd: random.Random) -> Docs:
    labels = real_pickle("MTL-AQA", MTL_AQA_FILE)
    train = rnd.sample(real_pickle("MTL-AQA", MTL_SPLITS[0]), TRAIN_RECORDS)
    test = rnd.sample(real_pickle("MTL-AQA", MTL_SPLITS[1]), TEST_RECORDS)
    return {MTL_AQA_FILE: {k: copy.deepcopy(labels[k]) for k in train + test},
            MTL_SPLITS[0]: list(train), MTL_SPLITS[1]: list(test)}


def mtl_expected(docs: Docs, config: DataConfig) -> dict[str, list[tuple]]:
    labels = docs[MTL_AQA_FILE]
    return {split: [((int(k[0]), int(k[1])), float(labels[tuple(k)]["final_score"])) for k in docs[name]]
            for split, name in zip(("train", "test"), MTL_SPLITS)}


MTL_CASE = Case(
    name="mtl_aqa", base=mtl_base, config=lambda data: DataConfig(format="mtl_aqa"),
    read=lambda folder, config: read_mtl_aqa(folder, 0),
    mutations=split_mutations(MTL) + record_mutations(MTL_AQA_FILE, MTL.fields, split_keys_of(MTL))
    + frame_range_mutations(MTL_AQA_FILE, split_keys_of(MTL)),
    expected=mtl_expected, key_ok=lambda k: isinstance(k, tuple) and len(k) == 2 and all(map(_is_int, k)),
    score_range=(0.0, math.inf), difficulty=True, overlap_allowed=True,
)

# FineDiving ---------------------------------------------------------------------------------------------
FD_SPLITS = ("train_split.pkl", "test_split.pkl")
FD = Keyed(
    splits=FD_SPLITS, unknown_key=("no_such_event", 1), overlap_refused=True,
    bad_keys=lambda k: [(k[1], k[0]), (k[0], str(k[1])), (k[0], k[1] + 0.5), (None, k[1]), ("", k[1]), k[:1],
                        k[0], (*k, 0), (k[0], -1), (k[0], True), (k[0], None)],
    same_keys=lambda k: [list(k), (np.str_(k[0]), np.int64(k[1])), (k[0], float(k[1]))],
    fields={0: "label", 1: "score", 2: "difficulty", 3: "unused", 4: "frames_labels"},
)
FD_COARSE_FIELDS = {"start_frame": "start", "end_frame": "end"}


def fd_base(rnd: random.Random) -> Docs:
    aqa, coarse = real_pickle("FineDiving", AQA_FILE), real_pickle("FineDiving", COARSE_FILE)
    train = rnd.sample(real_pickle("FineDiving", FD_SPLITS[0]), TRAIN_RECORDS)
    test = rnd.sample(real_pickle("FineDiving", FD_SPLITS[1]), TEST_RECORDS)
    return {AQA_FILE: {k: copy.deepcopy(aqa[k]) for k in train + test},
            COARSE_FILE: {k: copy.deepcopy(coarse[k]) for k in train + test},
            FD_SPLITS[0]: list(train), FD_SPLITS[1]: list(test)}


def fd_expected(docs: Docs, config: DataConfig) -> dict[str, list[tuple]]:
    aqa = docs[AQA_FILE]
    return {split: [((str(k[0]), int(k[1])), float(aqa[tuple(k)][1])) for k in docs[name]]
            for split, name in zip(("train", "test"), FD_SPLITS)}


def fd_frames_labels_mismatch(docs, data, config):
    key = pick(data, split_keys_of(FD)(docs, config), "record")
    entry = list(docs[AQA_FILE][key])
    entry[4] = list(entry[4])[:-1] if data.draw(st.booleans(), label="shorter") else [*entry[4], 0]
    docs[AQA_FILE][key] = entry
    return Mutation(f"frames_labels of {key!r} resized", AQA_FILE, (repr(key),), True)


def fd_no_coarse(docs, data, config):
    del docs[COARSE_FILE]
    return Mutation("coarse file removed (frame ranges unknown: folders are listed)", COARSE_FILE)


FD_CASE = Case(
    name="finediving", base=fd_base,
    config=lambda data: DataConfig(format="finediving", frame_pattern="{folder}/{frame:05d}.jpg"),
    read=read_finediving,
    mutations=split_mutations(FD) + record_mutations(AQA_FILE, FD.fields, split_keys_of(FD))
    + record_mutations(COARSE_FILE, FD_COARSE_FIELDS, split_keys_of(FD))
    + frame_range_mutations(COARSE_FILE, split_keys_of(FD))
    + [fd_frames_labels_mismatch, fd_no_coarse],
    expected=fd_expected,
    key_ok=lambda k: isinstance(k, tuple) and len(k) == 2 and type(k[0]) is str and _is_int(k[1]),
    score_range=(0.0, math.inf), difficulty=True,
)


# JIGSAWS ------------------------------------------------------------------------------------------------
def jigsaws_base(rnd: random.Random) -> Docs:
    return {LABEL_FILE: copy.deepcopy(real_pickle("JIGSAWS", LABEL_FILE)),
            SPLITS_FILE: copy.deepcopy(real_pickle("JIGSAWS", SPLITS_FILE))}


def jigsaws_config(data: st.DataObject) -> DataConfig:
    return DataConfig(format="jigsaws", task=pick(data, list(TASKS), "task"),
                      fold=data.draw(st.integers(0, 3), label="fold"), frame_pattern=None)


def jigsaws_names(docs: Docs, config: DataConfig) -> list[str]:
    return [name for fold in docs[SPLITS_FILE][config.task] for name in fold]


def jigsaws_expected(docs: Docs, config: DataConfig) -> dict[str, list[tuple]]:
    labels, folds = docs[LABEL_FILE], docs[SPLITS_FILE][config.task]

    def scored(names: list[str]) -> list[tuple]:
        return [(name, sum(float(v) for v in labels[name])) for name in names]

    return {"train": scored([n for i, fold in enumerate(folds) if i != config.fold for n in fold]),
            "test": scored(list(folds[config.fold]))}


def jigsaws_split_mutations() -> list[MutationFn]:
    def task_not_folds(docs, data, config):
        docs[SPLITS_FILE][config.task] = pick(data, [None, 5, "folds", {0: []}], "value")
        return Mutation(f"{config.task} -> not a list of folds", SPLITS_FILE, (repr(config.task),), True)

    def fold_not_a_list(docs, data, config):
        index = data.draw(st.integers(0, 3), label="fold")
        docs[SPLITS_FILE][config.task][index] = pick(data, [None, 3, "Suturing_B001", {"a": 1}], "value")
        return Mutation(f"fold {index} -> not a list", SPLITS_FILE, (repr(config.task),), True)

    def empty_fold(docs, data, config):
        index = data.draw(st.integers(0, 3), label="fold")
        docs[SPLITS_FILE][config.task][index] = []
        return Mutation(f"fold {index} emptied", SPLITS_FILE, (), index == config.fold)

    def duplicate(docs, data, config):
        name = pick(data, jigsaws_names(docs, config), "name")
        docs[SPLITS_FILE][config.task][data.draw(st.integers(0, 3), label="fold")].append(name)
        return Mutation(f"{name!r} listed twice", SPLITS_FILE, (repr(name),), True)

    def other_task(docs, data, config):
        other = pick(data, [t for t in TASKS if t != config.task], "other task")
        name = pick(data, [n for fold in docs[SPLITS_FILE][other] for n in fold], "name")
        docs[SPLITS_FILE][config.task][data.draw(st.integers(0, 3), label="fold")].append(name)
        return Mutation(f"{name!r} of {other} in a {config.task} fold", SPLITS_FILE, (repr(name),), True)

    def unknown(docs, data, config):
        name = f"{config.task}_Z999"
        docs[SPLITS_FILE][config.task][data.draw(st.integers(0, 3), label="fold")].append(name)
        return Mutation(f"{name!r} added", SPLITS_FILE, (repr(name),), True)

    def bad_name(docs, data, config):
        fold = docs[SPLITS_FILE][config.task][data.draw(st.integers(0, 3), label="fold")]
        position = data.draw(st.integers(0, len(fold) - 1), label="position")
        fold[position] = pick(data, [None, 5, (fold[position],), fold[position].encode(), ""], "bad name")
        return Mutation(f"a name -> {fold[position]!r}", SPLITS_FILE, (repr(fold[position]),), True)

    def no_task(docs, data, config):
        del docs[SPLITS_FILE][config.task]
        return Mutation(f"{config.task} removed", SPLITS_FILE, (repr(config.task),), True)

    def fewer_folds(docs, data, config):
        count = data.draw(st.integers(0, config.fold), label="folds kept")
        docs[SPLITS_FILE][config.task] = docs[SPLITS_FILE][config.task][:count]
        return Mutation(f"{config.task} cut to {count} folds", SPLITS_FILE, (), True)

    def foreign_task_key(docs, data, config):
        docs[SPLITS_FILE][pick(data, [7, None, ("a", "b")], "task key")] = [["x"]]
        return Mutation("a task key of another type added", SPLITS_FILE)

    def drop_name(docs, data, config):
        fold = docs[SPLITS_FILE][config.task][data.draw(st.integers(0, 3), label="fold")]
        fold.pop(data.draw(st.integers(0, len(fold) - 1), label="position"))
        return Mutation("a name removed from a fold", SPLITS_FILE)

    return [task_not_folds, fold_not_a_list, empty_fold, duplicate, other_task, unknown, bad_name, no_task,
            fewer_folds, foreign_task_key, drop_name]


JIGSAWS_CASE = Case(
    name="jigsaws", base=jigsaws_base, config=jigsaws_config, read=read_jigsaws,
    mutations=jigsaws_split_mutations() + record_mutations(LABEL_FILE, dict.fromkeys(range(6), "grs"),
                                                           jigsaws_names),
    expected=jigsaws_expected, key_ok=lambda k: type(k) is str,
    score_range=(6.0, 30.0), difficulty=False,
)


# AQA-7 --------------------------------------------------------------------------------------------------
AQA7_FILES = {split: name for split, (name, _) in SPLIT_FILES.items()}
AQA7_VARIABLES = {name: variable for name, variable in SPLIT_FILES.values()}
AQA7_RANGES = {**SCORE_RANGES, TRAMPOLINE: (0.0, 10.0)}


def aqa7_base(rnd: random.Random) -> Docs:
    docs = {}
    for split, (count, first) in {"train": (3, 1), "test": (2, 101)}.items():
        rows = [[c, first + i, rnd.uniform(*AQA7_RANGES[c])] for c in range(1, 8) for i in range(count)]
        rnd.shuffle(rows)
        docs[AQA7_FILES[split]] = np.array(rows, dtype=np.float64)
    return docs


def aqa7_config(data: st.DataObject) -> DataConfig:
    classes = data.draw(st.one_of(st.none(), st.lists(st.sampled_from(sorted(CLASS_NAMES)), min_size=1,
                                                      max_size=3, unique=True)), label="classes")
    return DataConfig(format="aqa7", classes=classes, frame_pattern="{folder}/img_{frame:05d}.jpg")


def _used(config: DataConfig, class_value: float) -> bool:
    classes = sorted(CLASS_NAMES) if config.classes is None else config.classes
    return class_value in classes


def aqa7_expected(docs: Docs, config: DataConfig) -> dict[str, list[tuple]]:
    return {split: [((int(c), int(i)), normalise_score(int(c), s)) for c, i, s in docs[name]
                    if _used(config, c)] for split, name in AQA7_FILES.items()}


def aqa7_mutations() -> list[MutationFn]:
    def cell(docs, data, config, bad: bool):
        name = pick(data, list(AQA7_FILES.values()), "file")
        rows = docs[name]
        row = data.draw(st.integers(0, len(rows) - 1), label="row")
        column = data.draw(st.integers(0, 2), label="column")
        class_value = rows[row, 0]
        if bad:
            lo, hi = AQA7_RANGES[int(class_value)]
            options = {0: [math.nan, math.inf, 0, 8, -1, 2.5], 1: [math.nan, math.inf, 0, -3, 2.5],
                       2: [math.nan, math.inf, -math.inf, lo - 1, hi + 1]}[column]
            value = pick(data, options, "value")
            must = column == 0 or _used(config, class_value)
        else:
            value = data.draw(st.floats(-200, 200), label="value")
            must = False
        rows[row, column] = value
        return Mutation(f"row {row + 1} column {column} -> {value!r}", name, (f"row {row + 1} [",), must)

    def bad_cell(docs, data, config):
        return cell(docs, data, config, bad=True)

    def any_cell(docs, data, config):
        return cell(docs, data, config, bad=False)

    def duplicate(docs, data, config):
        name = pick(data, list(AQA7_FILES.values()), "file")
        row = docs[name][data.draw(st.integers(0, len(docs[name]) - 1), label="row")]
        docs[name] = np.vstack([docs[name], row])
        key = (int(row[0]), int(row[1]))
        return Mutation(f"row {row.tolist()} twice", name, (repr(key),), _used(config, row[0]))

    def overlap(docs, data, config):
        train, test = AQA7_FILES["train"], AQA7_FILES["test"]
        row = docs[train][data.draw(st.integers(0, len(docs[train]) - 1), label="row")]
        docs[test] = np.vstack([docs[test], row])
        key = (int(row[0]), int(row[1]))
        return Mutation(f"train row {row.tolist()} in test", test, (repr(key),), _used(config, row[0]))

    def not_a_table(docs, data, config):
        name = pick(data, list(AQA7_FILES.values()), "file")
        tables = [np.zeros((0, 3)), docs[name][:, :2], docs[name].ravel(), np.array([["a", "b", "c"]]),
                  np.array([[1, "x", 2.0]], dtype=object), docs[name] + 1j]
        docs[name] = pick(data, tables, "table")
        return Mutation("table replaced", name, (), True)

    def no_selected_class(docs, data, config):
        name = pick(data, list(AQA7_FILES.values()), "file")
        docs[name] = np.array([row for row in docs[name] if not _used(config, row[0])])
        return Mutation("rows of the selected classes removed", name, (), True)

    def other_variable(docs, data, config):
        name = pick(data, list(AQA7_FILES.values()), "file")
        docs[name] = ("train_list", docs[name])
        return Mutation("variable renamed", name, (AQA7_VARIABLES[name],), True)

    return [bad_cell, any_cell, duplicate, overlap, not_a_table, no_selected_class, other_variable]


AQA7_CASE = Case(
    name="aqa7", base=aqa7_base, config=aqa7_config, read=read_aqa7, mutations=aqa7_mutations(),
    expected=aqa7_expected, key_ok=lambda k: isinstance(k, tuple) and len(k) == 2 and all(map(_is_int, k)),
    score_range=(0.0, 100.0), difficulty=False, first_frame=1,
)


# ------------------------------------------------------------------------------------------------ oracle
def write(folder: Path, docs: Docs, case: Case) -> None:
    for name, content in docs.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith(".mat"):
            variable, table = content if isinstance(content, tuple) else (AQA7_VARIABLES[name], content)
            savemat(path, {variable: table})
        else:
            path.write_bytes(pickle.dumps(content))


def check_refusal(error: AnnotationError, mutation: Mutation) -> None:
    message = user_error_message(error)
    assert message is not None, f"{type(error).__name__} was not raised by a raise line of t2cr: {error}"
    assert Path(mutation.file).name in message, f"the refusal does not name {mutation.file}: {message}"
    if mutation.mentions:
        assert any(text in message for text in mutation.mentions), \
            f"the refusal does not name the key ({' or '.join(mutation.mentions)}): {message}"


def check_samples(splits: dict[str, list[Sample]], case: Case, docs: Docs, config: DataConfig) -> None:
    assert set(splits) == {"train", "test"}
    for split, samples in splits.items():
        assert samples, f"the {split} split is empty"
        keys = [s.key for s in samples]
        assert len(set(keys)) == len(keys), f"the {split} split names a key twice"
        for s in samples:
            assert case.key_ok(s.key), s
            assert type(s.score) is float and math.isfinite(s.score), s
            assert case.score_range[0] <= s.score <= case.score_range[1], s
            if case.difficulty:
                assert type(s.difficulty) is float and math.isfinite(s.difficulty) and s.difficulty > 0, s
                assert s.score <= MAX_SCORE_PER_DIFFICULTY * s.difficulty + SCORE_ROUNDING, s
            else:
                assert s.difficulty is None, s
            assert (s.start_frame is None) == (s.end_frame is None), s
            if s.start_frame is not None:
                assert _is_int(s.start_frame) and _is_int(s.end_frame), s
                assert case.first_frame <= s.start_frame <= s.end_frame, s
            assert isinstance(s.action_type, str) and s.action_type.strip(), s
            assert isinstance(s.frames, str) and s.frames, s
    if not case.overlap_allowed:
        assert not {s.key for s in splits["train"]} & {s.key for s in splits["test"]}
    # nothing dropped, nothing altered: the samples are exactly what the mutated files hold
    expected = case.expected(docs, config)
    for split in ("train", "test"):
        assert [(s.key, s.score) for s in splits[split]] == expected[split]


def run_case(case: Case, data: st.DataObject) -> None:
    docs = case.base(data.draw(st.randoms(use_true_random=False), label="records"))
    config = case.config(data)
    mutation = None
    while mutation is None:
        mutation = pick(data, case.mutations, "mutation")(docs, data, config)
    with tempfile.TemporaryDirectory() as folder:
        write(Path(folder), docs, case)
        try:
            splits = case.read(Path(folder), config)
        except AnnotationError as error:
            check_refusal(error, mutation)
            OUTCOMES.setdefault(case.name, Counter())["refused"] += 1
            return
    assert not mutation.must_refuse, f"{mutation.what}: read without a refusal"
    check_samples(splits, case, docs, config)
    OUTCOMES.setdefault(case.name, Counter())["read"] += 1


@FUZZ
@given(data=st.data())
def test_mtl_aqa_reader_refuses_or_reads_fuzzed_annotations(data):
    run_case(MTL_CASE, data)


@FUZZ
@given(data=st.data())
def test_finediving_reader_refuses_or_reads_fuzzed_annotations(data):
    run_case(FD_CASE, data)


@FUZZ
@given(data=st.data())
def test_jigsaws_reader_refuses_or_reads_fuzzed_annotations(data):
    run_case(JIGSAWS_CASE, data)


@FUZZ
@given(data=st.data())
def test_aqa7_reader_refuses_or_reads_fuzzed_tables(data):
    run_case(AQA7_CASE, data)


# ------------------------------------------------------------------------------------------ configurations
CONFIG_EXAMPLES = 200
CONFIG_FUZZ = settings(FUZZ, max_examples=CONFIG_EXAMPLES)
# ints stay within what fits in memory and time (a 10**6-frame window is a resource limit, not a bad value)
SMALL_INT = st.one_of(st.integers(-3, 40), st.sampled_from([0, 1, -1]))
WRONG_TYPES = st.sampled_from([None, "abc", True, [1], "auto"])
ANY_SETTING = st.one_of(SMALL_INT, st.floats(), WRONG_TYPES)
# widths stay small too: a valid but huge mlp_ratio would allocate gigabytes
NON_FINITE_FLOATS = st.sampled_from([math.nan, math.inf, -math.inf])
CONFIG_ERRORS = (ValueError, TypeError, KeyError, OmegaConfBaseException)


def check_config_refusal(error: Exception, keys: list[str]) -> None:
    """A user error (one line, no traceback) that names one of `keys` (dotted keys; OmegaConf's own type
    errors name the key relative to the section, so its last part is accepted there)."""
    message = user_error_message(error)
    assert message is not None, f"{type(error).__name__} is not reported as a user error: {error}"
    names = list(keys)
    if isinstance(error, OmegaConfBaseException):
        names += [key.rsplit(".", 1)[-1] for key in keys]
    assert any(name in message for name in names), f"the refusal names none of {keys}: {message}"


def record_config(name: str, outcome: str) -> None:
    OUTCOMES.setdefault(name, Counter())[outcome] += 1


LOSS_FIELDS = ("reg_weight", "cls_weight", "aln_weight", "self_weight", "path_weight", "tau", "gamma")


@CONFIG_FUZZ
@given(field=st.sampled_from(LOSS_FIELDS),
       value=st.one_of(st.floats(), st.integers(-10**6, 10**6), WRONG_TYPES))
def test_loss_config_values_build_or_are_refused_naming_the_key(field, value):
    try:
        config = to_dataclass(LossConfig, {field: value})
    except CONFIG_ERRORS as error:
        check_config_refusal(error, [f"loss.{field}"])
        record_config("config: loss", "refused")
        return
    for name in LOSS_FIELDS:
        number = getattr(config, name)
        positive = number > 0 if name in ("tau", "gamma") else number >= 0
        assert math.isfinite(number) and positive, (name, number)
    record_config("config: loss", "read")


CLIP_FIELDS = {
    "num_frames": SMALL_INT | st.integers(90, 200), "clip_length": SMALL_INT, "num_base_clips": SMALL_INT,
    "base_starts": st.none() | st.lists(st.integers(-2, 120), max_size=12),
    "aux_strategy": st.builds("{}-clip-{}".format, st.integers(-1, 12),
                              st.sampled_from(["same", "avg1", "avg2", "2x", "3x"])),
    "overlapping": st.booleans(),
}


@CONFIG_FUZZ
@given(section=st.fixed_dictionaries({}, optional=CLIP_FIELDS), two_path=st.booleans(),
       wrong=st.none() | st.tuples(st.sampled_from(sorted(CLIP_FIELDS)), WRONG_TYPES | st.floats()))
def test_clip_config_values_build_or_are_refused_naming_the_key(section, two_path, wrong):
    if wrong is not None:  # one field of a wrong type or a non-integer number
        section = {**section, wrong[0]: wrong[1]}
    try:
        config = to_dataclass(ClipConfig, section)
        base, aux = build_clip_plans(config, two_path)
    except CONFIG_ERRORS as error:
        check_config_refusal(error, [f"model.clips.{name}" for name in section] + ["model.clips"])
        record_config("config: model.clips", "refused")
        return
    assert base.num_clips == config.num_base_clips and min(base.starts) >= 0
    assert base.frames_needed <= config.num_frames
    if two_path:
        num_aux, kind = config.aux_strategy.split("-clip-")
        assert aux is not None and aux.num_clips == int(num_aux) >= 1 and min(aux.starts) >= 0
        assert aux.frames_needed <= config.num_frames and aux.stride == (2 if kind == "2x" else 1)
    record_config("config: model.clips", "read")


MODEL_FIELDS = {
    "hidden_dim": SMALL_INT, "latent_dim": SMALL_INT, "regressor_hidden": SMALL_INT,
    "regressor_mid": SMALL_INT,
    "attention.bottleneck": SMALL_INT, "expansion_kernel": SMALL_INT, "decoder.layers": st.integers(-1, 4),
    "decoder.heads": SMALL_INT, "decoder.mlp_ratio": st.floats(-1.0, 8.0) | NON_FINITE_FLOATS,
    "decoder.dropout": st.floats(-0.5, 1.5) | st.floats(), "num_action_types": SMALL_INT,
}


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny forwards: thread barriers would cost more than the work (and stall on a loaded 2-core runner)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@CONFIG_FUZZ
@given(field=st.sampled_from(sorted(MODEL_FIELDS)), data=st.data())
def test_model_config_values_build_or_are_refused_naming_the_key(one_torch_thread, field, data):
    value = data.draw(MODEL_FIELDS[field] | WRONG_TYPES, label="value")
    config = tiny_config(**{field: value})
    try:
        model = T2CR(config)
    except CONFIG_ERRORS as error:
        check_config_refusal(error, [f"model.{field}"])
        record_config("config: model", "refused")
        return
    # the layers the widths built must also run: a pair of clip-feature batches through the whole model
    feature_dim = config.backbone.feature_dim
    base = torch.randn(2, model.base_plan.num_clips, feature_dim)
    aux = None if model.aux_plan is None else torch.randn(2, model.aux_plan.num_clips, feature_dim)
    model.eval()
    with torch.no_grad():
        output = model.forward_features(base[:1], None if aux is None else aux[:1], base[1:],
                                        None if aux is None else aux[1:])
    assert output.delta.shape == (1,)
    record_config("config: model", "read")


DATA_FIELDS = {
    "split_id": SMALL_INT, "num_frames": SMALL_INT, "train_shift": SMALL_INT, "voting_exemplars": SMALL_INT,
    "val_fraction": st.floats() | st.floats(-0.5, 1.5), "batch_size": SMALL_INT, "eval_batch_size": SMALL_INT,
    "num_workers": st.integers(-2, 2) | st.sampled_from(["auto", "1", "x"]), "seed": SMALL_INT,
    "transform.resize": st.lists(SMALL_INT, max_size=3), "transform.crop": st.lists(SMALL_INT, max_size=3),
}
# too many frames for the synthetic dives is a data refusal (the frame check names the samples), not a
# config one
FRAME_COUNT_FIELDS = ("num_frames", "train_shift")


@pytest.fixture(scope="module")
def synthetic_section(tiny_synthetic) -> dict:
    return {"annotations": str(tiny_synthetic / "annotations"), "root": str(tiny_synthetic / "frames"),
            "num_frames": 16, "voting_exemplars": 2, "num_workers": 0, "synthetic": None,
            "transform": {"resize": [24, 24], "crop": [20, 20]}}


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
@CONFIG_FUZZ
@given(field=st.sampled_from(sorted(DATA_FIELDS)), data=st.data())
def test_data_config_values_build_or_are_refused_naming_the_key(synthetic_section, field, data):
    value = data.draw(DATA_FIELDS[field] | ANY_SETTING, label="value")
    section = copy.deepcopy(synthetic_section)
    *parents, last = field.split(".")
    target = section
    for part in parents:
        target = target[part]
    target[last] = value
    try:
        config = to_dataclass(DataConfig, section)
        datamodule = PairDataModule(config)
        datamodule.setup()
        loaders = [datamodule.train_dataloader(), datamodule.test_dataloader()]
    except DataCheckError as error:
        assert field in FRAME_COUNT_FIELDS, f"data.{field}={value!r}: {error}"
        assert user_error_message(error) is not None
        record_config("config: data", "refused")
        return
    except (*CONFIG_ERRORS, UserError, FileNotFoundError) as error:  # e.g. the split file of data.split_id
        check_config_refusal(error, [f"data.{field}"])
        record_config("config: data", "refused")
        return
    assert all(loader.batch_size >= 1 for loader in loaders)
    assert datamodule.samples("train") and datamodule.samples("test")
    record_config("config: data", "read")
