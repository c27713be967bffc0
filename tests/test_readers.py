"""Readers of FineDiving, AQA-7 and JIGSAWS: the real annotation files where present, AQA-7 from .mat
files written here in the official structure (its split files are not public)."""

from __future__ import annotations

import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from helpers import real_annotations
from hydra import compose, initialize_config_dir
from PIL import Image
from scipy.io import savemat

from t2cr.config import to_dataclass
from t2cr.data.annotations import READERS, read_annotations
from t2cr.data.aqa7 import CLASS_NAMES, SCORE_RANGES, read_aqa7
from t2cr.data.config import DataConfig
from t2cr.data.exemplars import ExemplarPools
from t2cr.data.finediving import read_finediving
from t2cr.data.frames import JpegFolderSource
from t2cr.data.jigsaws import read_jigsaws
from t2cr.data.reading import SampleReader
from t2cr.data.transforms import TransformConfig, VideoTransform
from t2cr.resources import CONF_DIR


def _load(path: Path):
    with path.open("rb") as handle:
        return pickle.load(handle)


def test_readers_are_registered():
    assert {"finediving", "aqa7", "jigsaws"} <= set(READERS)
    assert READERS["finediving"] is read_finediving
    assert READERS["aqa7"] is read_aqa7
    assert READERS["jigsaws"] is read_jigsaws


# ------------------------------------------------------------------------------------------ FineDiving
@pytest.fixture(scope="module")
def finediving():
    folder = real_annotations("FineDiving")
    return folder, read_finediving(folder, DataConfig(format="finediving", frame_pattern="{folder}/{frame:05d}.jpg"))


def test_finediving_counts_and_action_types(finediving):
    _, splits = finediving
    train, test = splits["train"], splits["test"]
    assert (len(train), len(test)) == (2251, 749)
    assert not {s.key for s in train} & {s.key for s in test}
    assert len({s.key for s in train}) == 2251 and len({s.key for s in test}) == 749
    assert len({s.action_type for s in train + test}) == 52
    assert all(s.group is None and isinstance(s.key[0], str) and isinstance(s.key[1], int) for s in train + test)
    assert 0.0 <= min(s.score for s in train + test) and max(s.score for s in train + test) <= 114.8


def test_finediving_samples_match_the_annotation_files(finediving):
    folder, splits = finediving
    aqa = _load(folder / "fine-grained_annotation_aqa.pkl")
    coarse = _load(folder / "FineDiving_coarse_annotation.pkl")
    for sample in splits["train"] + splits["test"]:
        event, idx = sample.key
        action_type, dive_score, difficulty, _, frames_labels = aqa[sample.key]
        assert sample.frames == f"{event}/{idx}"
        assert sample.start_frame == coarse[sample.key]["start_frame"]
        assert sample.end_frame == coarse[sample.key]["end_frame"]
        assert sample.end_frame - sample.start_frame + 1 == len(frames_labels)
        assert (sample.score, sample.difficulty, sample.action_type) == (dive_score, difficulty, action_type)


def test_finediving_quirk_uses_the_aqa_file_difficulty(finediving):
    folder, splits = finediving
    by_key = {s.key: s for s in splits["train"] + splits["test"]}
    assert _load(folder / "FineDiving_coarse_annotation.pkl")[("17", 164)]["difficulty"] == 3.4
    assert by_key[("17", 164)].difficulty == 2.0


def test_finediving_frames_are_read_by_absolute_number(finediving):
    _, splits = finediving
    sample = splits["test"][0]
    source = JpegFolderSource("/frames", "{folder}/{frame:05d}.jpg")
    reader = SampleReader(source, VideoTransform(TransformConfig()), 96, "linspace")
    numbers = reader.frame_numbers(sample, None)
    assert len(numbers) == 96 and numbers[0] == sample.start_frame and numbers[-1] == sample.end_frame
    event, idx = sample.key
    assert source.path(sample, numbers[0]) == Path(f"/frames/{event}/{idx}/{sample.start_frame:05d}.jpg")


def test_finediving_exemplar_pools_hold_one_action_type(finediving):
    _, splits = finediving
    pools = ExemplarPools(splits["train"], "action_type")
    assert len(pools.pools) == 52
    for key, members in pools.pools.items():
        assert {pools.train[i].action_type for i in members} == {key}
    for sample in splits["test"]:  # every test action type has training exemplars
        assert pools.pool(sample)


def test_finediving_without_coarse_file_lists_the_folders(tmp_path):
    folder = real_annotations("FineDiving")
    for name in ("train_split.pkl", "test_split.pkl", "fine-grained_annotation_aqa.pkl"):
        (tmp_path / name).symlink_to(folder / name)
    splits = read_finediving(tmp_path, DataConfig(format="finediving", frame_pattern=None))
    assert (len(splits["train"]), len(splits["test"])) == (2251, 749)
    assert all(s.start_frame is None and s.end_frame is None for s in splits["train"] + splits["test"])


def test_finediving_inconsistent_frame_range_is_refused(tmp_path):
    folder = real_annotations("FineDiving")
    for name in ("train_split.pkl", "test_split.pkl", "fine-grained_annotation_aqa.pkl"):
        (tmp_path / name).symlink_to(folder / name)
    coarse = _load(folder / "FineDiving_coarse_annotation.pkl")
    key = _load(folder / "train_split.pkl")[0]
    coarse[key] = dict(coarse[key], end_frame=coarse[key]["end_frame"] + 1)
    with (tmp_path / "FineDiving_coarse_annotation.pkl").open("wb") as handle:
        pickle.dump(coarse, handle)
    with pytest.raises(ValueError, match="FineDiving_coarse_annotation.pkl"):
        read_finediving(tmp_path, DataConfig(format="finediving"))


def test_finediving_missing_split_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="fine-grained_annotation_aqa.pkl"):
        read_finediving(tmp_path, DataConfig(format="finediving"))


# ------------------------------------------------------------------------------------------- JIGSAWS
VIDEOS_PER_TASK = {"Suturing": 39, "Needle_Passing": 28, "Knot_Tying": 36}


def _jigsaws_config(task, fold, annotations="x") -> DataConfig:
    return DataConfig(format="jigsaws", annotations=str(annotations), task=task, fold=fold, frame_pattern=None)


@pytest.mark.parametrize("task", sorted(VIDEOS_PER_TASK))
def test_jigsaws_folds(task):
    folder = real_annotations("JIGSAWS")
    labels = _load(folder / "label.pkl")
    tests = []
    for fold in range(4):
        splits = read_annotations(_jigsaws_config(task, fold, folder))
        train, test = splits["train"], splits["test"]
        train_keys, test_keys = {s.key for s in train}, {s.key for s in test}
        assert not train_keys & test_keys
        assert len(train_keys | test_keys) == len(train) + len(test) == VIDEOS_PER_TASK[task]
        assert all(k.startswith(task + "_") for k in train_keys | test_keys)
        for sample in train + test:
            assert sample.score == sum(labels[sample.key]) and 6 <= sample.score <= 30
            assert sample.group == sample.action_type == task and sample.difficulty is None
            assert sample.frames == f"{sample.key}_capture1"
            assert sample.start_frame is None and sample.end_frame is None
        pools = ExemplarPools(train, "group")
        assert list(pools.pools) == [task] and len(pools.pools[task]) == len(train)
        assert all(pools.pool(s) for s in test)
        tests.append(test_keys)
    assert len(set().union(*tests)) == VIDEOS_PER_TASK[task]  # every video is tested exactly once


def test_jigsaws_fold_sizes():
    folder = real_annotations("JIGSAWS")
    sizes = {task: [len(read_jigsaws(folder, _jigsaws_config(task, f))["test"]) for f in range(4)]
             for task in VIDEOS_PER_TASK}
    assert sizes == {"Suturing": [9, 10, 10, 10], "Needle_Passing": [7] * 4, "Knot_Tying": [9] * 4}


@pytest.mark.parametrize("task,fold,key", [
    (None, 0, "data.task"), ("Juggling", 0, "data.task"), ("Suturing", None, "data.fold"),
    ("Suturing", 4, "data.fold"), ("Suturing", -1, "data.fold"),
])
def test_jigsaws_bad_task_or_fold_is_refused(task, fold, key):
    folder = real_annotations("JIGSAWS")
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        read_jigsaws(folder, _jigsaws_config(task, fold))


def test_jigsaws_name_without_label_is_refused(tmp_path):
    folder = real_annotations("JIGSAWS")
    labels = _load(folder / "label.pkl")
    del labels["Suturing_B001"]
    with (tmp_path / "label.pkl").open("wb") as handle:
        pickle.dump(labels, handle)
    (tmp_path / "splits.pkl").symlink_to(folder / "splits.pkl")
    with pytest.raises(KeyError, match="Suturing_B001"):
        read_jigsaws(tmp_path, _jigsaws_config("Suturing", 0))
    read_jigsaws(tmp_path, _jigsaws_config("Knot_Tying", 0))  # other tasks are unaffected


def test_jigsaws_missing_files_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="label.pkl"):
        read_jigsaws(tmp_path, _jigsaws_config("Suturing", 0))


def test_jigsaws_listed_folder_gives_160_frames(tmp_path):
    folder = real_annotations("JIGSAWS")
    sample = read_jigsaws(folder, _jigsaws_config("Suturing", 0))["test"][0]
    frames = tmp_path / sample.frames
    frames.mkdir()
    for n in range(20):
        Image.fromarray(np.full((8, 10, 3), n, np.uint8)).save(frames / f"{n:05d}.jpg")
    reader = SampleReader(JpegFolderSource(tmp_path, None), VideoTransform(TransformConfig([8, 10], [8, 8])),
                          160, "linspace")
    numbers = reader.frame_numbers(sample, None)
    assert len(numbers) == 160 and numbers[0] == 0 and numbers[-1] == 19
    assert reader.read_frames(sample, None).shape == (160, 8, 10, 3)


# -------------------------------------------------------------------------------------------- AQA-7
def _aqa7_rows(split: str) -> np.ndarray:
    rows = []
    for cls in range(1, 8):  # every class, trampoline (7) included
        count = 4 if split == "train" else 2
        offset = 0 if split == "train" else 100
        lo, hi = SCORE_RANGES.get(cls, (0.0, 10.0))
        scores = [lo, hi, (lo + hi) / 2, lo + 0.25 * (hi - lo)][:count]
        rows += [[cls, offset + i + 1, s] for i, s in enumerate(scores)]
    return np.array(rows, dtype=np.float64)


def _write_aqa7(root: Path, train: np.ndarray | None = None, test: np.ndarray | None = None,
                train_variable: str = "consolidated_train_list") -> Path:
    (root / "Split_4").mkdir(parents=True, exist_ok=True)
    savemat(root / "Split_4" / "split_4_train_list.mat",
            {train_variable: _aqa7_rows("train") if train is None else train})
    savemat(root / "Split_4" / "split_4_test_list.mat",
            {"consolidated_test_list": _aqa7_rows("test") if test is None else test})
    return root


def _aqa7_config(classes) -> DataConfig:
    return DataConfig(format="aqa7", classes=classes, frame_pattern="{folder}/img_{frame:05d}.jpg")


def test_aqa7_one_class(tmp_path):
    splits = read_aqa7(_write_aqa7(tmp_path), _aqa7_config([1]))
    train, test = splits["train"], splits["test"]
    assert (len(train), len(test)) == (4, 2)
    assert {s.group for s in train + test} == {s.action_type for s in train + test} == {"diving"}
    assert [s.key for s in train] == [(1, 1), (1, 2), (1, 3), (1, 4)]
    assert [s.score for s in train] == pytest.approx([0.0, 100.0, 50.0, 25.0])
    assert train[0].frames == "diving-out/001" and test[0].frames == "diving-out/101"
    assert all(s.difficulty is None and (s.start_frame, s.end_frame) == (1, 103) for s in train + test)


def test_aqa7_all_classes_excludes_trampoline(tmp_path):
    splits = read_aqa7(_write_aqa7(tmp_path), _aqa7_config(None))
    train, test = splits["train"], splits["test"]
    assert (len(train), len(test)) == (24, 12)
    assert all(s.key[0] != 7 for s in train + test)
    assert Counter(s.group for s in train) == {name: 4 for name in CLASS_NAMES.values()}
    for cls, name in CLASS_NAMES.items():
        scores = [s.score for s in train if s.key[0] == cls]
        assert scores[:2] == pytest.approx([0.0, 100.0]), name  # lo -> 0, hi -> 100
    sample = next(s for s in train if s.key == (5, 2))
    assert sample.frames == "sync_diving_3m-out/002"
    pools = ExemplarPools(train, "group")
    assert sorted(pools.pools) == sorted(CLASS_NAMES.values())
    for group, members in pools.pools.items():
        assert {pools.train[i].group for i in members} == {group}


def test_aqa7_several_classes_and_registry(tmp_path):
    config = _aqa7_config([2, 6])
    config.annotations = str(_write_aqa7(tmp_path))
    splits = read_annotations(config)
    assert {s.group for s in splits["train"]} == {"gym_vault", "sync_diving_10m"}
    assert (len(splits["train"]), len(splits["test"])) == (8, 4)


def test_aqa7_reads_frames_1_to_103(tmp_path):
    sample = read_aqa7(_write_aqa7(tmp_path), _aqa7_config([1]))["test"][0]
    source = JpegFolderSource("/frames", "{folder}/img_{frame:05d}.jpg")
    reader = SampleReader(source, VideoTransform(TransformConfig()), 103, "end_aligned", 0)
    assert reader.frame_numbers(sample, None).tolist() == list(range(1, 104))
    assert reader.candidate_frames(sample).tolist() == list(range(1, 104))
    assert source.path(sample, 1) == Path("/frames/diving-out/101/img_00001.jpg")


def test_aqa7_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="split_4_train_list.mat"):
        read_aqa7(tmp_path, _aqa7_config([1]))


def test_aqa7_wrong_variable_is_refused(tmp_path):
    _write_aqa7(tmp_path, train_variable="train_list")
    with pytest.raises(ValueError, match="consolidated_train_list"):
        read_aqa7(tmp_path, _aqa7_config([1]))


def test_aqa7_wrong_shape_is_refused(tmp_path):
    _write_aqa7(tmp_path, train=_aqa7_rows("train")[:, :2])
    with pytest.raises(ValueError, match="N x 3"):
        read_aqa7(tmp_path, _aqa7_config([1]))


def test_aqa7_unknown_class_index_names_the_file(tmp_path):
    rows = np.vstack([_aqa7_rows("test"), [[9, 1, 50.0]]])
    _write_aqa7(tmp_path, test=rows)
    with pytest.raises(ValueError, match=r"split_4_test_list\.mat.*class index 9"):
        read_aqa7(tmp_path, _aqa7_config(None))


@pytest.mark.parametrize("classes", [[7], [0], []])
def test_aqa7_bad_classes_are_refused(tmp_path, classes):
    _write_aqa7(tmp_path)
    with pytest.raises(ValueError, match=r"data\.classes"):
        read_aqa7(tmp_path, _aqa7_config(classes))


def test_aqa7_duplicate_or_shared_keys_are_refused(tmp_path):
    _write_aqa7(tmp_path, test=_aqa7_rows("train"))
    with pytest.raises(ValueError, match="both the train and the test"):
        read_aqa7(tmp_path, _aqa7_config([1]))


# ------------------------------------------------------------------------------------------- configs
def _compose_data(name: str, *overrides: str) -> DataConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"data={name}", "data.annotations=x", "data.root=y",
                                                      *overrides])
    return to_dataclass(DataConfig, cfg.data)


def test_finediving_config_composes():
    data = _compose_data("finediving")
    assert (data.name, data.format, data.annotations, data.root) == ("finediving", "finediving", "x", "y")
    assert data.frame_pattern == "{folder}/{frame:05d}.jpg"
    assert (data.num_frames, data.frame_selection, data.num_clips, data.base_starts) == (96, "linspace", 9, None)
    assert (data.exemplar_rule, data.divide_by_difficulty) == ("action_type", False)
    assert (data.transform.resize, data.transform.crop) == ([128, 228], [112, 112])
    assert (data.voting_exemplars, data.batch_size, data.eval_batch_size, data.num_workers) == (10, 4, 2, "auto")
    assert data.synthetic is None


def test_aqa7_config_composes():
    data = _compose_data("aqa7")
    assert (data.name, data.format, data.classes) == ("aqa7", "aqa7", [1])
    assert data.frame_pattern == "{folder}/img_{frame:05d}.jpg"
    assert (data.num_frames, data.frame_selection, data.train_shift) == (103, "end_aligned", 0)
    assert (data.exemplar_rule, data.divide_by_difficulty) == ("group", False)
    assert (data.transform.resize, data.transform.crop) == ([128, 228], [112, 112])
    assert _compose_data("aqa7", "data.classes=null").classes is None
    assert _compose_data("aqa7", "data.classes=[2,3]").classes == [2, 3]


def test_jigsaws_config_composes():
    data = _compose_data("jigsaws")
    assert (data.name, data.format, data.task, data.fold) == ("jigsaws", "jigsaws", "Suturing", 0)
    assert data.frame_pattern is None
    assert (data.num_frames, data.frame_selection, data.num_clips, data.overlapping_clips) == (160, "linspace",
                                                                                              10, False)
    assert (data.exemplar_rule, data.divide_by_difficulty) == ("group", False)
    assert (data.transform.resize, data.transform.crop) == ([128, 170], [112, 112])
    assert _compose_data("jigsaws", "data.task=Knot_Tying", "data.fold=3").fold == 3
