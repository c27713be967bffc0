"""A dataset as a researcher has it (issue 21): a few MTL-AQA samples' frames under the real, packaged annotation
files. The data path says before the first step what it keeps of each split, refuses a run that would end
without test metrics, reads only the frames each split uses, and the documents state those frames."""

from __future__ import annotations

import csv
import io
import logging
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from helpers import real_annotations
from hydra import compose, initialize_config_dir
from PIL import Image

from t2cr.cli.common import user_error_message
from t2cr.cli.prepare import check
from t2cr.config import to_dataclass
from t2cr.data.annotations import read_mtl_aqa
from t2cr.data.check import REPORT_COLUMNS
from t2cr.data.config import DataConfig
from t2cr.data.datamodule import DataCheckError, PairDataModule
from t2cr.data.exemplars import EmptyPoolError
from t2cr.data.samples import Sample
from t2cr.resources import CONF_DIR

REPO = Path(__file__).resolve().parents[1]
TRAIN_FOUND, TEST_FOUND = 1059, 353  # MTL-AQA split 0, as the packaged files list it
# the MTL-AQA frame window (conf/data/mtl_aqa.yaml: num_frames 103, train_shift 3) as the documents state it
WINDOW_LINE = re.compile(r"frame window: train end_frame([+-]\d+) \.\. end_frame([+-]\d+); "
                         r"val/test end_frame([+-]\d+) \.\. end_frame(?![-+\d])")


def _tiny_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), 128, dtype=np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


@dataclass
class Partial:
    """The frames of a few samples of MTL-AQA split 0, laid out as conf/data/mtl_aqa.yaml says."""

    root: Path
    train: list[Sample]  # complete: end_frame-105 .. end_frame+3
    test: list[Sample]  # complete for evaluation only: end_frame-102 .. end_frame
    short: Sample  # a training sample without the frames end_frame+1 .. +3 (only data.train_shift needs them)


def write_frames(root: Path, sample: Sample, first: int, last: int, jpeg: bytes) -> None:
    folder = root / sample.frames
    folder.mkdir(parents=True, exist_ok=True)
    for number in range(first, last + 1):
        (folder / f"{number:06d}.jpg").write_bytes(jpeg)


def lay_out(root: Path, with_test: bool = True) -> Partial:
    """4 test samples and, for each one's difficulty, 2 training samples of it (their exemplar pools)."""
    splits = read_mtl_aqa(real_annotations("MTL-AQA"))
    test = splits["test"][:4]
    train: list[Sample] = []
    for sample in test:
        train += [s for s in splits["train"] if s.difficulty == sample.difficulty and s not in train][:2]
    used = {s.frames for s in train + test}
    short = next(s for s in splits["train"] if s not in train and s.frames not in used)
    jpeg = _tiny_jpeg()
    for sample in train:
        write_frames(root, sample, sample.end_frame - 105, sample.end_frame + 3, jpeg)
    if with_test:
        for sample in test:
            write_frames(root, sample, sample.end_frame - 102, sample.end_frame, jpeg)
    write_frames(root, short, short.end_frame - 105, short.end_frame, jpeg)
    return Partial(root, train, test, short)


@pytest.fixture(scope="module")
def partial(tmp_path_factory) -> Partial:
    return lay_out(tmp_path_factory.mktemp("partial_mtl_aqa") / "frames")


def compose_config(name: str, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=name, overrides=["data=mtl_aqa", "data.num_workers=0", *overrides])


def data_config(root: Path, *overrides: str) -> DataConfig:
    """conf/data/mtl_aqa.yaml with the packaged annotations (its default) and these frames."""
    return to_dataclass(DataConfig, compose_config("train", f"data.root={root}", *overrides).data)


def keys(samples: list[Sample]) -> list[str]:
    return [s.key_str for s in samples]


# ------------------------------------------------------------------------------------------ the run


def test_skip_missing_keeps_the_partial_dataset_and_logs_each_split(partial, caplog):
    """Points 1, 2, 5, 9: per split found / dropped (why) / kept, the dropped and kept keys named per split;
    the test samples are kept with only end_frame-102 .. end_frame on disk (never shifted, no margin)."""
    with caplog.at_level(logging.INFO, logger="t2cr.data.datamodule"):
        datamodule = PairDataModule(data_config(partial.root, "data.skip_missing=true"))
        datamodule.setup()
    assert sorted(keys(datamodule.samples("train"))) == sorted(keys(partial.train))
    assert keys(datamodule.samples("test")) == keys(partial.test)
    lines = [r.getMessage() for r in caplog.records]
    train_dropped = TRAIN_FOUND - len(partial.train)
    # why: the event folders of the kept samples hold other samples' frames ('missing frames'), the other
    # events have none ('missing folder'), the short sample lacks its margin ('too few frames')
    assert any(re.fullmatch(rf"data train: {TRAIN_FOUND} found, {train_dropped} dropped \(data\.skip_missing=true: "
                            rf"\d+ missing folder, \d+ missing frames, 1 too few frames\), {len(partial.train)} kept",
                            ln) for ln in lines), lines
    assert any(re.fullmatch(rf"data test: {TEST_FOUND} found, {TEST_FOUND - 4} dropped \(data\.skip_missing=true: "
                            r"\d+ missing folder, \d+ missing frames\), 4 kept", ln) for ln in lines), lines
    assert f"data test: kept {', '.join(keys(partial.test))}" in lines
    dropped_test = next(ln for ln in lines if ln.startswith("data test: dropped "))
    assert dropped_test.endswith(f"... and {TEST_FOUND - 4 - 20} more")
    assert datamodule.split_counts() == {  # what train.py writes to metrics.json (samples_per_split)
        "train": {"found": TRAIN_FOUND, "dropped": train_dropped, "kept": len(partial.train)},
        "test": {"found": TEST_FOUND, "dropped": TEST_FOUND - 4, "kept": 4}}
    assert not [ln for ln in lines if "action types" in ln]  # data.exemplar_rule=difficulty: no action-type talk


def test_the_reader_asks_val_test_samples_only_for_the_frames_they_use(partial):
    """Point 2: candidate_frames (what the check and the cache ask for) of a test sample is its read's window."""
    datamodule = PairDataModule(data_config(partial.root, "data.skip_missing=true"))
    datamodule.setup()
    reader = datamodule.reader
    test, train = partial.test[0], partial.train[0]
    assert reader.candidate_frames(test).tolist() == list(range(test.end_frame - 102, test.end_frame + 1))
    assert reader.frame_numbers(test, None).tolist() == reader.candidate_frames(test).tolist()
    assert reader.candidate_frames(train).tolist() == list(range(train.end_frame - 105, train.end_frame + 4))
    shifted = {int(n) for seed in range(50)
               for n in reader.frame_numbers(train, np.random.default_rng(seed))}
    assert shifted <= set(reader.candidate_frames(train).tolist())


def test_the_check_says_which_setting_needs_a_frame(partial):
    """Point 2: a training sample lacking only the margin frames is told that data.train_shift needs them."""
    with pytest.raises(DataCheckError) as error:
        PairDataModule(data_config(partial.root)).setup()
    message = str(error.value)
    short = partial.short
    detail = next(ln for ln in message.splitlines() if ln.startswith(f"  {short.key_str}:"))
    assert "too few frames" in detail and "3 needed by data.train_shift=3 only" in detail
    assert f"{short.end_frame + 1}, {short.end_frame + 2}, {short.end_frame + 3}" in detail
    # point 6: no word of training in what t2cr-prepare also prints; one line in the CLI's format
    assert "nothing was trained" not in message and message.startswith("the data check found 1400 of 1412 samples")
    one_line = user_error_message(error.value)
    assert "\n" not in one_line and "data.skip_missing=true" in one_line
    # point 3: the samples that are partly there come first (the short one), those with nothing there after
    listed = [ln for ln in message.splitlines() if re.match(r"  \d+_\d+: ", ln)]
    assert listed[0].startswith(f"  {short.key_str}: too few frames")  # the one sample partly there
    absent = [": missing folder:" in ln or "none of its" in ln for ln in listed]
    assert absent == sorted(absent) and absent[-1]  # partly there, then nothing there


def test_a_run_whose_test_split_would_be_empty_refuses(tmp_path):
    """Point 1: skip_missing dropping every test sample stops the run before anything is trained."""
    layout = lay_out(tmp_path / "frames", with_test=False)
    with pytest.raises(ValueError, match=rf"the test split would be empty: all {TEST_FOUND} of its samples were "
                                         r"dropped \(data\.skip_missing=true: [^)]*\); a run would train and then "
                                         r"end without test metrics") as error:
        PairDataModule(data_config(layout.root, "data.skip_missing=true")).setup()
    assert "check_report=" in str(error.value)


@pytest.mark.slow
def test_train_refuses_before_the_first_step_in_one_line(tmp_path):
    """Point 1 end to end: t2cr-train exits 2 with one line, leaving no checkpoint and no metrics.json."""
    layout = lay_out(tmp_path / "frames", with_test=False)
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(
        [sys.executable, "-m", "t2cr.cli.train", "data=mtl_aqa", f"data.root={layout.root}", "data.skip_missing=true",
         "model.backbone.random_init=true", "logger=none", "trainer.accelerator=cpu", f"hydra.run.dir={run_dir}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 2, done.stderr[-3000:]
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith("t2cr-train: error:")]
    assert len(errors) == 1 and errors[0].startswith("t2cr-train: error: the test split would be empty")
    assert "Traceback" not in done.stderr
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "checkpoints").exists()


def test_all_training_samples_dropped_says_so(tmp_path):
    """Point 4: not 'the exemplar pools need at least one training sample' but what emptied the split."""
    splits = read_mtl_aqa(real_annotations("MTL-AQA"))
    jpeg = _tiny_jpeg()
    for sample in splits["test"][:2]:
        write_frames(tmp_path / "frames", sample, sample.end_frame - 102, sample.end_frame, jpeg)
    with pytest.raises(ValueError, match=rf"the train split would be empty: all {TRAIN_FOUND} of its samples were "
                                         r"dropped \(data\.skip_missing=true: [^)]*\); training and the exemplar "
                                         r"pools need at least one training sample"):
        PairDataModule(data_config(tmp_path / "frames", "data.skip_missing=true")).setup()


def test_an_empty_pool_names_skip_missing_and_data_exclude_drops_the_sample(partial, tmp_path, caplog):
    """Points 4 and 5: a test sample whose difficulty's training samples were all dropped; data.exclude leaves
    it out, and the log says so."""
    splits = read_mtl_aqa(real_annotations("MTL-AQA"))
    covered = {s.difficulty for s in partial.train}
    orphan = next(s for s in splits["test"] if s.difficulty not in covered)
    write_frames(partial.root, orphan, orphan.end_frame - 102, orphan.end_frame, _tiny_jpeg())
    try:
        with pytest.raises(EmptyPoolError) as error:
            PairDataModule(data_config(partial.root, "data.skip_missing=true")).setup()
        message = str(error.value)
        assert f"{orphan.key_str} has difficulty {orphan.difficulty}, which no training sample has" in message
        assert "data.skip_missing=true dropped the training samples of each of these difficulty values" in message
        assert f"""'data.exclude=["{orphan.key_str}"]'""" in message
        assert "\n" not in user_error_message(error.value)
        with caplog.at_level(logging.INFO, logger="t2cr.data.datamodule"):
            kept = PairDataModule(data_config(partial.root, "data.skip_missing=true",
                                              f'data.exclude=["{orphan.key_str}"]'))
            kept.setup()
        assert keys(kept.samples("test")) == keys(partial.test)
        assert any(re.fullmatch(r"data test: 353 found, 349 dropped \(data\.skip_missing=true: [^;]*; "
                                r"data\.exclude: 1\), 4 kept", r.getMessage()) for r in caplog.records)
    finally:  # the module's layout stays as the other tests expect it
        for number in range(orphan.end_frame - 102, orphan.end_frame + 1):
            (partial.root / orphan.frames / f"{number:06d}.jpg").unlink()


def test_action_types_are_spoken_of_only_under_the_action_type_rule(partial):
    """Point 5: under data.exemplar_rule=action_type a test dive number that no kept training sample has is a
    refusal naming each sample; under difficulty (above) nothing is said of action types."""
    with pytest.raises(EmptyPoolError) as error:
        PairDataModule(data_config(partial.root, "data.skip_missing=true", "data.exemplar_rule=action_type")).setup()
    message = str(error.value)
    assert message.startswith("the exemplar pools (data.exemplar_rule=action_type) of ")
    assert f"{partial.test[0].key_str} has action_type '{partial.test[0].action_type}'" in message
    assert "data.skip_missing=true dropped the training samples of" in message and "'data.exclude=[" in message


def test_a_validation_split_left_empty_by_skip_missing_says_so(partial):
    """Point 1 for val: 8 kept training samples in pools of 2 leave no validation sample at 10 %."""
    with pytest.raises(ValueError, match=r"data.val_fraction=0.1 leaves no validation sample: the exemplar pools are "
                                         r"too small \(data.skip_missing=true dropped 1051 training samples, 8 are "
                                         r"left\)"):
        PairDataModule(data_config(partial.root, "data.skip_missing=true", "data.val_fraction=0.1")).setup()
    carved = PairDataModule(data_config(partial.root, "data.skip_missing=true", "data.val_fraction=0.5"))
    assert len(carved.samples("val")) == 4 and len(carved.samples("train")) == 4


def test_data_exclude_refuses_unknown_keys_and_explains_hydra_numbers(partial):
    key = partial.test[0].key_str  # 26_4: Hydra reads an unquoted 26_4 as the number 264 (so would it 2_64)
    with pytest.raises(ValueError, match=rf"data.exclude names 1 key\(s\) that no split of the annotations has: "
                                         rf"{key.replace('_', '')}; {key.replace('_', '')} looks like .*{key}.* read "
                                         r"by Hydra as a number: quote the keys"):
        PairDataModule(data_config(partial.root, "data.skip_missing=true", f"data.exclude=[{key}]")).setup()


# ------------------------------------------------------------------------------------------ the check


def prepare_config(root: Path, *overrides: str):
    return compose_config("prepare", f"data.root={root}", "check=true", "workers=1", *overrides)


def test_check_with_skip_missing_passes_and_reports_kept_counts(partial, tmp_path, capsys):
    """Point 3: check=true honours skip_missing (passes, prints what each split keeps), lists every problem to
    check_report, and shows the samples whose folder exists first."""
    report = tmp_path / "problems.csv"
    assert check(prepare_config(partial.root, "data.skip_missing=true", f"check_report={report}")) is True
    out = capsys.readouterr().out
    assert "with data.skip_missing=true a run drops those samples and starts with:" in out
    assert f"  train: {TRAIN_FOUND} found, {TRAIN_FOUND - 8} dropped" in out and ", 8 kept" in out
    assert f"  test: {TEST_FOUND} found, {TEST_FOUND - 4} dropped" in out and ", 4 kept" in out
    assert "or set data.skip_missing=true" not in out and f"{report} lists every one" in out
    listed = [ln for ln in out.splitlines() if re.match(r"  \d+_\d+: ", ln)]
    assert any(ln.startswith(f"  {partial.short.key_str}: too few frames") for ln in listed)
    with report.open() as file:
        rows = list(csv.DictReader(file))
    assert tuple(rows[0]) == REPORT_COLUMNS and len(rows) == TRAIN_FOUND + TEST_FOUND - 12
    short = next(r for r in rows if r["key"] == partial.short.key_str)
    assert short["split"] == "train" and short["problem"] == "too_few_frames"
    assert short["paths"].split(";") == [str(partial.root / partial.short.frames / f"{partial.short.end_frame + n:06d}.jpg")
                                         for n in (1, 2, 3)]
    absent = [r["problem"] == "missing_folder" or "none of its" in r["detail"] for r in rows]
    assert absent == sorted(absent)  # the samples that are partly there first
    assert {r["split"] for r in rows} == {"train", "test"}


def test_check_without_skip_missing_fails_and_advises_it(partial, capsys):
    assert check(prepare_config(partial.root)) is False
    assert "or set data.skip_missing=true to drop (and log) these samples" in capsys.readouterr().out


def test_check_with_skip_missing_fails_when_a_run_would_refuse(tmp_path, capsys):
    layout = lay_out(tmp_path / "frames", with_test=False)
    assert check(prepare_config(layout.root, "data.skip_missing=true")) is False
    assert ("with data.skip_missing=true a run would refuse to start: the test split would be empty"
            in capsys.readouterr().out)


# ------------------------------------------------------------------------------------------ the documents


def _window(text: str, where: str) -> tuple[int, int, int]:
    found = WINDOW_LINE.search(text)
    assert found, f"{where} does not state the MTL-AQA frame window ('frame window: train end_frame-105 .. ...')"
    return int(found.group(1)), int(found.group(2)), int(found.group(3))


def _reader_window(partial: Partial) -> tuple[int, int, int]:
    datamodule = PairDataModule(data_config(partial.root, "data.skip_missing=true"))
    datamodule.setup()
    train, test = partial.train[0], partial.test[0]
    train_frames = datamodule.reader.candidate_frames(train)
    test_frames = datamodule.reader.candidate_frames(test)
    assert test_frames[-1] == test.end_frame
    return (int(train_frames[0]) - train.end_frame, int(train_frames[-1]) - train.end_frame,
            int(test_frames[0]) - test.end_frame)


def test_the_data_config_header_states_the_frames_the_reader_asks_for(partial):
    assert _window((CONF_DIR / "data" / "mtl_aqa.yaml").read_text(), "conf/data/mtl_aqa.yaml") == \
        _reader_window(partial)
    assert _window((CONF_DIR / "data" / "synthetic.yaml").read_text(), "conf/data/synthetic.yaml") == (-105, 3, -102)


def test_the_readme_states_the_frames_the_reader_asks_for(partial):
    assert _window((REPO / "README.md").read_text(), "README.md") == _reader_window(partial)
