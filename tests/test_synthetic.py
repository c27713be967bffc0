import json
import os
import pickle
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.stats import spearmanr

from t2cr.data import synthetic
from t2cr.data.config import DataConfig, ensure_generated
from t2cr.data.synthetic import (
    ACTION_TYPES,
    ANNOTATIONS_FILE,
    FRAME_PATTERN,
    MANIFEST_FILE,
    SyntheticConfig,
    dataset_status,
    ensure_synthetic_dataset,
    load_sample_frames,
    load_truth,
    make_annotations,
    middle_three_sum,
)

SMALL = {"num_train": 12, "num_test": 6, "num_events": 2, "height": 32, "width": 32}


def small(root: Path, **overrides) -> SyntheticConfig:
    return SyntheticConfig(root=str(root), **{**SMALL, **overrides})


def read_pickles(root: Path):
    out = []
    for name in (ANNOTATIONS_FILE, "train_split_0.pkl", "test_split_0.pkl"):
        with open(root / "annotations" / name, "rb") as handle:
            out.append(pickle.load(handle))
    return out


def all_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory) -> Path:
    return ensure_synthetic_dataset(small(tmp_path_factory.mktemp("small") / "synthetic"))


def test_config_is_validated():
    with pytest.raises(ValueError, match="num_train must be >= 1"):
        SyntheticConfig(num_train=0)
    with pytest.raises(TypeError, match="height must be an integer"):
        SyntheticConfig(height=32.0)
    with pytest.raises(TypeError, match="seed must be an integer"):
        SyntheticConfig(seed=True)
    with pytest.raises(ValueError, match="frames_per_dive must be >= 16"):
        SyntheticConfig(frames_per_dive=8)
    with pytest.raises(ValueError, match="num_judges must be odd"):
        SyntheticConfig(num_judges=6)
    with pytest.raises(ValueError, match="jpeg_quality"):
        SyntheticConfig(jpeg_quality=100)
    with pytest.raises(ValueError, match="every event needs at least one dive"):
        SyntheticConfig(num_train=2, num_test=1, num_events=4)
    with pytest.raises(ValueError, match="root"):
        SyntheticConfig(root="")


def test_generation_is_byte_identical(tmp_path, small_dataset):
    again = ensure_synthetic_dataset(small(tmp_path / "again"))
    first, second = all_files(small_dataset), all_files(again)
    assert first.keys() == second.keys()
    assert sum(name.endswith(".jpg") for name in first) > 18 * 32
    different = [name for name in first if first[name] != second[name]]
    assert not different


def test_second_call_does_not_rewrite_and_changed_config_regenerates(tmp_path):
    config = small(tmp_path / "ds")
    root = ensure_synthetic_dataset(config)
    frame = root / "frames" / FRAME_PATTERN.format(event=1, frame=0)
    stamps = {p: p.stat().st_mtime_ns for p in (root / MANIFEST_FILE, frame, root / "annotations" / ANNOTATIONS_FILE)}
    assert ensure_synthetic_dataset(config) == root
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps

    before = json.loads((root / MANIFEST_FILE).read_text())
    changed = small(tmp_path / "ds", seed=1)
    assert dataset_status(changed) == "other config"
    ensure_synthetic_dataset(changed)
    after = json.loads((root / MANIFEST_FILE).read_text())
    assert after["config"]["seed"] == 1 and after["content_sha256"] != before["content_sha256"]
    assert dataset_status(changed) == "complete" and dataset_status(config) == "other config"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ds.") and not p.name.endswith(".lock")]


def test_layout_and_score_rule(small_dataset):
    root = small_dataset
    config = small(root)
    annotations, train, test = read_pickles(root)
    assert len(train) == config.num_train and len(test) == config.num_test
    assert not set(train) & set(test) and set(train) | set(test) == set(annotations)
    assert all(isinstance(k, tuple) and all(type(v) is int for v in k) for k in annotations)

    by_event: dict[int, list[dict]] = {}
    for (event, idx), ann in annotations.items():
        by_event.setdefault(event, []).append(ann)
        assert ann["end_frame"] - ann["start_frame"] + 1 == config.frames_per_dive
        for f in range(ann["start_frame"], ann["end_frame"] + 1):
            assert (root / "frames" / FRAME_PATTERN.format(event=event, frame=f)).is_file()
        judges = ann["judge_scores"]
        assert len(judges) == config.num_judges
        assert all(0 <= j <= 10 and j * 2 == int(j * 2) for j in judges)
        middle = sorted(judges)[2:5]
        assert ann["final_score"] == pytest.approx(ann["difficulty"] * sum(middle), abs=1e-6)
        assert middle_three_sum(judges) == sum(middle)
        action = next(a for a in ACTION_TYPES if a.dive_number == ann["dive_number"])
        assert ann["difficulty"] == action.difficulty
        assert ann["ss_no"] == int(action.dive_number[-2]) and ann["tw_no"] == 0 and ann["armstand"] == 0
        assert isinstance(ann["final_score"], float) and isinstance(ann["dive_number"], str)

    step = config.frames_per_dive + config.gap_frames
    for event, anns in by_event.items():
        starts = sorted(a["start_frame"] for a in anns)
        # back to back, empty pool before, between and after the dives
        assert starts == [config.gap_frames + k * step for k in range(len(anns))]
        frames = sorted((root / "frames" / f"{event:02d}").iterdir())
        last = starts[-1] + config.frames_per_dive - 1 + config.gap_frames
        assert [p.name for p in frames] == [f"{f:06d}.jpg" for f in range(last + 1)]
        with Image.open(frames[0]) as image:
            assert image.mode == "RGB" and image.size == (config.width, config.height)

    truth = load_truth(root)
    assert set(truth) == {f"{e}_{i}" for e, i in annotations}
    for (event, idx), ann in annotations.items():
        t = truth[f"{event}_{idx}"]
        assert t["dive_number"] == ann["dive_number"]
        assert set(t["execution_components"]) >= {"steadiness_error", "entry_error", "splash_error"}
        assert t["split"] == ("train" if (event, idx) in train else "test")


def test_default_config_pools_and_execution_spread():
    data = make_annotations(SyntheticConfig())
    assert len(data.train_split) == 96 and len(data.test_split) == 48
    train_dd = Counter(data.annotations[k]["difficulty"] for k in data.train_split)
    assert set(train_dd) == {a.difficulty for a in ACTION_TYPES}
    assert min(train_dd.values()) >= 2
    # execution varies widely inside every DD pool (the contrastive model ranks within a pool)
    for dd in train_dd:
        judged = [sum(sorted(data.annotations[k]["judge_scores"])[2:5]) / 3 for k in data.train_split
                  if data.annotations[k]["difficulty"] == dd]
        assert max(judged) - min(judged) >= 2.5, dd
    execution = np.array([t["execution"] for t in data.truth.values()])
    judged = np.array([t["judged_execution"] for t in data.truth.values()])
    assert np.std(execution) > 4 * np.std(judged - execution)  # execution variance >> judge noise
    # annotations alone are deterministic too
    assert make_annotations(SyntheticConfig()).annotations == data.annotations


@pytest.fixture(scope="module")
def analysis_set(tmp_path_factory):
    """200 dives at 32x32, read back from the JPEGs, with their truth."""
    config = SyntheticConfig(root=str(tmp_path_factory.mktemp("analysis") / "synthetic"), num_train=150,
                             num_test=50, height=32, width=32)
    root = ensure_synthetic_dataset(config)
    annotations = read_pickles(root)[0]
    truth = load_truth(root)
    keys = sorted(annotations)
    videos = np.stack([load_sample_frames(root, k, annotations) for k in keys]).astype(np.float32)
    return videos, [truth[f"{e}_{i}"] for e, i in keys]


def _head_body_angles(video: np.ndarray, frames: range) -> np.ndarray:
    """Orientation (degrees, 0 = head up) from the yellow head and the red body centroids."""
    r, g, b = video[..., 0], video[..., 1], video[..., 2]
    head = (r > 190) & (g > 160) & (b < 150)
    body = (r > 130) & (g < 120) & (b < 120)
    ys, xs = np.mgrid[0:video.shape[1], 0:video.shape[2]]
    out = []
    for f in frames:
        if not head[f].any() or not body[f].any():
            out.append(np.nan)
            continue
        dx = xs[head[f]].mean() - xs[body[f]].mean()
        dy = ys[head[f]].mean() - ys[body[f]].mean()
        out.append(np.degrees(np.arctan2(dx, -dy)))
    return np.array(out)


def test_a_single_frame_does_not_reveal_quality_but_the_motion_does(analysis_set):
    videos, truths = analysis_set
    frames, height = videos.shape[1:3]
    execution = np.array([t["execution"] for t in truths])
    # any fixed frame index: its brightness says nothing about the execution. With n = 200 the null
    # standard error of Spearman's rho is 1 / sqrt(n - 1) = 0.07; 0.3 is > 4 of them, for 32 frames.
    brightness = videos.mean(axis=(2, 3, 4))
    single = np.array([spearmanr(brightness[:, k], execution)[0] for k in range(frames)])
    assert np.max(np.abs(single)) < 0.3, single.round(2)

    # over time: the frame-difference energy around the water line (the splash) tracks the execution
    band = videos[:, :, int(0.55 * height):]
    energy = np.abs(np.diff(band, axis=1)).mean(axis=(2, 3, 4)).sum(axis=1)
    rho = spearmanr(energy, execution)[0]
    assert rho < -0.4, rho
    splash = np.array([t["execution_components"]["splash_error"] for t in truths])
    assert spearmanr(energy, splash)[0] > 0.5

    # the other two components are visible in the motion too: irregular somersaults and the entry tilt
    irregularity, tilt = [], []
    for video, t in zip(videos, truths):
        t0, entry = t["timing"]["takeoff_frame"], t["timing"]["entry_frame"]
        angles = _head_body_angles(video, range(t0, entry - 1))
        steps = (np.diff(angles) + 180.0) % 360.0 - 180.0
        irregularity.append(np.nanmean(np.abs(np.diff(steps))))
        tilt.append(abs(abs(angles[-1]) - 180.0))
    steadiness = [t["execution_components"]["steadiness_error"] for t in truths]
    entry_error = [t["execution_components"]["entry_error"] for t in truths]
    assert spearmanr(irregularity, steadiness)[0] > 0.5
    assert spearmanr(tilt, entry_error)[0] > 0.8


def test_incomplete_dataset_is_regenerated(tmp_path):
    config = small(tmp_path / "ds")
    root = ensure_synthetic_dataset(config)
    reference = all_files(root)

    victim = root / "frames" / FRAME_PATTERN.format(event=2, frame=5)
    victim.unlink()
    assert dataset_status(config) == "event 2 frames incomplete"
    ensure_synthetic_dataset(config)
    assert all_files(root) == reference

    (root / MANIFEST_FILE).unlink()
    assert dataset_status(config) == "no manifest"
    ensure_synthetic_dataset(config)
    assert all_files(root) == reference

    truncated = root / "frames" / FRAME_PATTERN.format(event=1, frame=3)
    truncated.write_bytes(truncated.read_bytes()[:100])
    assert dataset_status(config) == "event 1 frames have the wrong size"
    ensure_synthetic_dataset(config)
    assert all_files(root) == reference


def test_failed_generation_leaves_nothing_behind(tmp_path, monkeypatch):
    config = small(tmp_path / "ds", num_train=6, num_test=2)

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(synthetic, "encode_jpeg", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        ensure_synthetic_dataset(config)
    assert not (tmp_path / "ds").exists()
    assert [p.name for p in tmp_path.iterdir()] == [".ds.lock"]


def test_a_foreign_folder_is_never_overwritten(tmp_path):
    root = tmp_path / "mine"
    root.mkdir()
    (root / "thesis.tex").write_text("precious")
    with pytest.raises(ValueError, match="not a synthetic dataset"):
        ensure_synthetic_dataset(small(root))
    assert (root / "thesis.tex").read_text() == "precious"
    assert os.listdir(root) == ["thesis.tex"]


def test_the_data_path_of_real_datasets_does_not_import_the_generator():
    code = ("import sys\n"
            "import t2cr.data.cache, t2cr.data.config, t2cr.data.datamodule\n"
            "from t2cr.data.config import DataConfig, ensure_generated\n"
            "ensure_generated(DataConfig(name='mtl_aqa'))\n"
            "print('t2cr.data.synthetic' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_a_data_config_with_synthetic_settings_generates_the_dataset(tmp_path):
    config = DataConfig(synthetic=small(tmp_path / "ds", num_train=6, num_test=2))
    assert SyntheticConfig is type(config.synthetic)  # the generator's config is the data config's schema
    ensure_generated(config)
    assert dataset_status(config.synthetic) == "complete"
    ensure_generated(DataConfig(synthetic=None))  # real data: nothing to generate
