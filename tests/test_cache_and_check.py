"""Frame cache (t2cr.data.cache), data check (t2cr.data.check) and t2cr-prepare."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from t2cr.data.annotations import read_annotations
from t2cr.data.cache import (
    LOCK_FILE,
    MANIFEST_FILE,
    SAMPLES_DIR,
    CachedFrameSource,
    CacheMissError,
    CacheUnavailableError,
    cache_status,
    entry_name,
    open_frame_source,
    prepare_cache,
    resize_frames,
)
from t2cr.data.check import check_samples, format_report
from t2cr.data.config import DataConfig
from t2cr.data.frames import JpegFolderSource, VideoFileSource, build_frame_source
from t2cr.data.reading import SampleReader
from t2cr.data.samples import Sample
from t2cr.data.synthetic import SyntheticConfig, ensure_synthetic_dataset
from t2cr.data.transforms import TransformConfig, VideoTransform

REPO = Path(__file__).resolve().parents[1]


def make_dataset(root: Path, num_events: int = 1) -> Path:
    return ensure_synthetic_dataset(SyntheticConfig(root=str(root), num_train=6, num_test=4, num_events=num_events,
                                                    height=32, width=32, frames_per_dive=16))


def data_config(root: Path, cache_dir: Path | None = None, **overrides) -> DataConfig:
    transform = TransformConfig(resize=overrides.pop("resize", [24, 24]), crop=[20, 20])
    fields = {"format": "mtl_aqa", "annotations": str(root / "annotations"), "root": str(root / "frames"),
              "frame_pattern": "{folder}/{frame:06d}.jpg", "num_frames": 16, "train_shift": 2, "transform": transform,
              "num_workers": 0, "voting_exemplars": 2, "synthetic": None,
              "cache_dir": None if cache_dir is None else str(cache_dir)}
    return DataConfig(**{**fields, **overrides})


def all_samples(config: DataConfig) -> list[Sample]:
    splits = read_annotations(config)
    return splits["train"] + splits["test"]


def raw_reader(config: DataConfig, source=None) -> SampleReader:
    return SampleReader(build_frame_source(config) if source is None else source, VideoTransform(config.transform),
                        config.num_frames, config.frame_selection, config.train_shift)


def prepare(config: DataConfig, samples: list[Sample], **kwargs):
    reader = raw_reader(config)
    return prepare_cache(samples, reader, reader.source, config.cache_dir, config.transform.resize, config=config,
                         **kwargs)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("cache") / "synthetic")


@pytest.fixture(scope="module")
def pristine_events(tmp_path_factory) -> Path:
    """Four events (frame folders), so that each damage below hits other samples."""
    return make_dataset(tmp_path_factory.mktemp("check") / "synthetic", num_events=4)


@pytest.fixture
def dataset(pristine, tmp_path) -> Path:
    return Path(shutil.copytree(pristine, tmp_path / "synthetic"))


# ------------------------------------------------------------------------------------------- cache


def _pil_bilinear(frames: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """An independent reference: PIL's bilinear resize (its filter widens when it shrinks: antialiased)."""
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(frame).resize((size_hw[1], size_hw[0]), Image.BILINEAR))
                     for frame in frames])


def _interpolate_float64(frames: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """The documented resize computed here in float64: bilinear, half-pixel centres, antialiased."""
    video = torch.from_numpy(frames).permute(0, 3, 1, 2).double() / 255
    video = torch.nn.functional.interpolate(video, size=size_hw, mode="bilinear", align_corners=False,
                                            antialias=True)
    return (video * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("size", [(18, 22), (36, 50)], ids=["shrink", "enlarge"])
def test_resize_frames_is_an_antialiased_bilinear_resize_rounded(size):
    frames = np.random.default_rng(0).integers(0, 256, size=(3, 30, 40, 3), dtype=np.uint8)
    resized = resize_frames(frames, size)
    assert resized.dtype == np.uint8 and resized.shape == (3, *size, 3)
    ours = resized.astype(np.int64)
    # against PIL (another implementation of the same filter): one uint8 step at most, rarely
    pil = np.abs(ours - _pil_bilinear(frames, size))
    assert pil.max() <= 1 and pil.mean() < 0.3, (pil.max(), pil.mean())
    # against the same resize in float64: only float32 rounding ties may differ, by one step
    exact = np.abs(ours - _interpolate_float64(frames, size))
    assert exact.max() <= 1 and (exact > 0).mean() < 0.05, (exact.max(), (exact > 0).mean())
    # VideoTransform reads frames through this resize (prepare), and frames already at size stay as they are
    transform = VideoTransform(TransformConfig(resize=list(size), crop=list(size), flip=False))
    assert np.array_equal(transform.prepare(frames).numpy(), resized)
    assert np.array_equal(resize_frames(frames, (30, 40)), frames)


def test_cached_reads_equal_jpeg_reads(dataset, tmp_path):
    config = data_config(dataset, tmp_path / "cache")
    samples = all_samples(config)
    summary = prepare(config, samples, workers=2)
    assert (summary.samples, summary.prepared, summary.reused) == (10, 10, 0)
    assert summary.frames == 10 * (16 + 2 * 2) and summary.bytes > summary.frames * 24 * 24 * 3
    manifest = json.loads((tmp_path / "cache" / MANIFEST_FILE).read_text())
    assert manifest["resize"] == [24, 24] and manifest["samples"] == 10
    assert manifest["data"]["num_frames"] == 16 and manifest["data"]["train_shift"] == 2
    assert manifest["data"]["frame_pattern"] == "{folder}/{frame:06d}.jpg"
    stored = np.load(tmp_path / "cache" / SAMPLES_DIR / f"{entry_name(samples[0])}.npy", mmap_mode="r")
    assert stored.dtype == np.uint8 and stored.shape == (20, 24, 24, 3)

    source = open_frame_source(config)
    assert isinstance(source, CachedFrameSource) and source.fallback is not None
    jpeg, cached = raw_reader(config), raw_reader(config, source)
    for sample in samples[:6]:
        for seed in (None, 0, 1, 2, 3):
            rng_a = None if seed is None else np.random.default_rng(seed)
            rng_b = None if seed is None else np.random.default_rng(seed)
            a, b = jpeg(sample, rng_a), cached(sample, rng_b)
            assert a.shape == b.shape == (3, 16, 20, 20)
            # the transform rounds its resize to uint8 steps, as the cache stores it: identical tensors
            assert torch.equal(a, b)


def test_cache_without_resize_is_bit_exact(dataset, tmp_path):
    config = data_config(dataset, tmp_path / "cache", resize=[32, 32])  # the frames' own size
    samples = all_samples(config)
    prepare(config, samples, workers=1)
    jpeg, cached = raw_reader(config), raw_reader(config, open_frame_source(config))
    assert isinstance(cached.source, CachedFrameSource)
    for sample in samples[:4]:
        numbers = jpeg.frame_numbers(sample, np.random.default_rng(5))
        assert np.array_equal(jpeg.source.read(sample, numbers), cached.source.read(sample, numbers))
        assert torch.equal(jpeg(sample, np.random.default_rng(7)), cached(sample, np.random.default_rng(7)))


def test_uncached_frames_fall_back_or_fail_clearly(dataset, tmp_path):
    config = data_config(dataset, tmp_path / "cache")
    samples = all_samples(config)
    prepare(config, samples[:5], workers=1)
    raw = build_frame_source(config)
    with_fallback = CachedFrameSource(tmp_path / "cache", fallback=raw)
    strict = CachedFrameSource(tmp_path / "cache")
    sample = samples[0]
    outside = [sample.start_frame - 3, sample.start_frame]  # the first is no candidate frame
    mixed = with_fallback.read(sample, outside)
    assert mixed.shape == (2, 24, 24, 3)
    assert np.array_equal(mixed[0], resize_frames(raw.read(sample, outside[:1]), (24, 24))[0])
    assert np.array_equal(mixed[1], strict.read(sample, outside[1:])[0])
    with pytest.raises(KeyError, match=f"frames \\[{outside[0]}\\] of sample {sample.key_str}"):
        strict.read(sample, outside)
    with pytest.raises(CacheMissError, match=f"sample {samples[7].key_str} is not in the frame cache"):
        strict.read(samples[7], [samples[7].end_frame])
    assert with_fallback.read(samples[7], [samples[7].end_frame]).shape == (1, 24, 24, 3)
    # the prepare wrote no manifest for samples 5..9, but this one is complete for its five samples
    assert cache_status(tmp_path / "cache", config) == "complete"


def test_manifest_mismatch_auto_reads_raw_require_refuses(dataset, tmp_path):
    config = data_config(dataset, tmp_path / "cache")
    prepare(config, all_samples(config), workers=1)
    other = data_config(dataset, tmp_path / "cache", resize=[28, 28])
    assert "resize" in cache_status(tmp_path / "cache", other)
    assert isinstance(open_frame_source(other), JpegFolderSource)
    other.use_cache = "require"
    with pytest.raises(CacheUnavailableError, match="t2cr-prepare data=synthetic"):
        open_frame_source(other)
    config.use_cache = "never"
    assert isinstance(open_frame_source(config), JpegFolderSource)
    config.use_cache = "require"
    strict = open_frame_source(config)
    assert isinstance(strict, CachedFrameSource) and strict.fallback is None
    shifted = data_config(dataset, tmp_path / "cache", train_shift=3)
    assert "train_shift" in cache_status(tmp_path / "cache", shifted)
    assert isinstance(open_frame_source(data_config(dataset, None)), JpegFolderSource)  # no cache_dir: raw
    with pytest.raises(CacheUnavailableError, match="data.cache_dir"):
        open_frame_source(data_config(dataset, None, use_cache="require"))


class FailingSource:
    """The raw source, failing on the read after `reads_left` reads (an interrupted prepare)."""

    def __init__(self, inner, reads_left: int) -> None:
        self.inner, self.reads_left = inner, reads_left
        self.root, self.pattern = inner.root, inner.pattern

    def frame_count(self, sample):
        return self.inner.frame_count(sample)

    def read(self, sample, frame_numbers):
        if self.reads_left == 0:
            raise RuntimeError("interrupted")
        self.reads_left -= 1
        return self.inner.read(sample, frame_numbers)


def cache_files(cache: Path) -> dict[str, int]:
    """Modification time of every file of the cache; the lock file is the lock library's (some filelock
    versions truncate it on every acquisition)."""
    return {p.relative_to(cache).as_posix(): p.stat().st_mtime_ns for p in sorted(cache.rglob("*"))
            if p.is_file() and p.name != LOCK_FILE}


@pytest.mark.parametrize("workers", [1, 3])
def test_interrupted_prepare_leaves_no_partial_file_and_resumes(dataset, tmp_path, workers):
    config = data_config(dataset, tmp_path / "cache")
    samples = all_samples(config)
    source = FailingSource(build_frame_source(config), reads_left=7)  # 2 reads (16 + 4 frames) per sample
    reader = raw_reader(config, source)
    with pytest.raises(RuntimeError, match="interrupted"):
        prepare_cache(samples, reader, source, config.cache_dir, config.transform.resize, config=config,
                      workers=workers)
    cache = tmp_path / "cache"
    assert not (cache / MANIFEST_FILE).exists()
    assert cache_status(cache, config).startswith(f"{cache} has no manifest")
    assert isinstance(open_frame_source(config), JpegFolderSource)
    names = [p.name for p in cache.rglob("*")]
    assert not [n for n in names if ".tmp-" in n], names
    arrays = sorted((cache / SAMPLES_DIR).glob("*.npy"))
    assert 1 <= len(arrays) < len(samples)
    for array in arrays:  # every array that is there is complete and indexed
        index = json.loads(array.with_suffix(".json").read_text())
        assert np.load(array).shape == tuple(index["shape"]) == (20, 24, 24, 3)

    done = set(cache_files(cache))
    summary = prepare(config, samples, workers=workers)
    assert summary.reused == len(arrays) and summary.prepared == len(samples) - len(arrays)
    assert cache_status(cache, config) == "complete" and done <= set(cache_files(cache))


def test_second_prepare_is_a_no_op_and_other_settings_are_refused(dataset, tmp_path):
    """A folder prepared for some settings is never rebuilt in place for others (issue 29: a run may be reading
    it); t2cr-prepare gives other settings a folder of their own (tests/test_cache_sharing.py)."""
    config = data_config(dataset, tmp_path / "cache")
    samples = all_samples(config)
    prepare(config, samples, workers=2)
    before = cache_files(tmp_path / "cache")
    summary = prepare(config, samples, workers=2)
    assert (summary.prepared, summary.reused) == (0, len(samples))
    assert cache_files(tmp_path / "cache") == before
    resized = data_config(dataset, tmp_path / "cache", resize=[28, 28])
    with pytest.raises(ValueError, match="never rebuilt in place"):
        prepare(resized, samples, workers=2)
    assert cache_files(tmp_path / "cache") == before
    assert cache_status(tmp_path / "cache", config) == "complete"
    assert "resize" in cache_status(tmp_path / "cache", resized)


def test_prepare_refuses_a_foreign_folder(dataset, tmp_path):
    config = data_config(dataset, tmp_path / "cache")
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "thesis.tex").write_text("keep me")
    with pytest.raises(ValueError, match="holds other files than a frame cache"):
        prepare(config, all_samples(config))
    assert (tmp_path / "cache" / "thesis.tex").read_text() == "keep me"


# ------------------------------------------------------------------------------------------- check


@pytest.fixture
def damaged(pristine_events, tmp_path):
    """One damage per event folder: a deleted frame, a corrupt frame, a deleted folder, a cut folder."""
    root = Path(shutil.copytree(pristine_events, tmp_path / "synthetic"))
    config = data_config(root)
    samples = all_samples(config)
    reader = raw_reader(config)
    by_event: dict[int, list[Sample]] = {}
    for sample in sorted(samples, key=lambda s: s.key):
        by_event.setdefault(sample.key[0], []).append(sample)
    frames = root / "frames"
    deleted_sample = by_event[1][0]
    deleted = frames / "01" / f"{deleted_sample.start_frame + 3:06d}.jpg"
    deleted.unlink()
    corrupt_sample = by_event[2][-1]
    corrupt = frames / "02" / f"{corrupt_sample.end_frame - 1:06d}.jpg"
    corrupt.write_bytes(b"\xff\xd8 this is no jpeg " * 20)
    shutil.rmtree(frames / "03")
    short_sample = by_event[4][-1]
    for number in range(short_sample.end_frame - 4, short_sample.end_frame + 20):
        (frames / "04" / f"{number:06d}.jpg").unlink(missing_ok=True)
    return {"root": root, "config": config, "samples": samples, "reader": reader, "deleted": (deleted_sample, deleted),
            "corrupt": (corrupt_sample, corrupt), "folder": (by_event[3], frames / "03"),
            "short": (short_sample, frames / "04")}


def test_check_without_decode_finds_missing_files_only(damaged):
    problems = check_samples(damaged["samples"], damaged["reader"], decode=False)
    by_key = {}
    for problem in problems:
        by_key.setdefault(problem.key, []).append(problem)
    sample, path = damaged["deleted"]
    (problem,) = by_key[sample.key_str]
    assert problem.kind == "missing_frames" and problem.path == str(path) and problem.frames == (sample.start_frame + 3,)
    folder_samples, folder = damaged["folder"]
    for sample in folder_samples:
        (problem,) = by_key[sample.key_str]
        assert problem.kind == "missing_folder" and problem.path == str(folder)
    sample, folder = damaged["short"]
    (problem,) = by_key[sample.key_str]
    assert problem.kind == "too_few_frames" and str(folder) in problem.path
    assert problem.frames == tuple(range(sample.end_frame - 4, sample.end_frame + 3))
    assert damaged["corrupt"][0].key_str not in by_key
    assert set(by_key) == {damaged["deleted"][0].key_str, sample.key_str, *(s.key_str for s in folder_samples)}


def test_check_with_decode_finds_the_corrupt_frame(damaged):
    problems = check_samples(damaged["samples"], damaged["reader"], decode=True, workers=2)
    sample, path = damaged["corrupt"]
    (problem,) = [p for p in problems if p.key == sample.key_str]
    assert problem.kind == "unreadable" and problem.path == str(path) and problem.frames == (sample.end_frame - 1,)
    kinds = {p.kind for p in problems}
    assert kinds == {"missing_frames", "missing_folder", "too_few_frames", "unreadable"}
    report = format_report(problems, limit=20)
    for p in problems:
        assert p.key in report and p.path in report
    assert "data.root" in report and "data.frame_pattern" in report and "data.skip_missing=true" in report
    assert "... and" in format_report(problems, limit=2)
    assert check_samples(damaged["samples"][:0], damaged["reader"], decode=True) == []


def test_check_of_clean_data_is_empty(pristine_events):
    config = data_config(pristine_events)
    assert check_samples(all_samples(config), raw_reader(config), decode=True) == []
    assert format_report([]) == "data check: no problems found"


def cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run([sys.executable, "-m", "t2cr.cli.prepare", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300, check=False)


def cli_data_args(root: Path) -> list[str]:
    return ["data=synthetic", "data.synthetic=null", f"data.annotations={root / 'annotations'}",
            f"data.root={root / 'frames'}", "data.num_frames=16", "data.train_shift=2", "data.transform.resize=[24,24]",
            "data.transform.crop=[20,20]", "data.voting_exemplars=2", "data.num_workers=0"]


@pytest.mark.slow
def test_prepare_cli_check_and_cache(damaged, pristine_events, tmp_path):
    bad = cli([*cli_data_args(damaged["root"]), "check=true"], tmp_path)
    assert bad.returncode == 1, bad.stderr[-3000:]
    for path in (damaged["deleted"][1], damaged["corrupt"][1], damaged["folder"][1]):
        assert str(path) in bad.stdout
    assert "data.skip_missing=true" in bad.stdout

    good = cli([*cli_data_args(pristine_events), "check=true"], tmp_path)
    assert good.returncode == 0, good.stdout[-3000:] + good.stderr[-3000:]
    assert "no problems found" in good.stdout

    made = cli([*cli_data_args(pristine_events), f"data.cache_dir={tmp_path / 'cache'}"], tmp_path)
    assert made.returncode == 0, made.stderr[-3000:]
    # 6 training samples x (16 + 2 x train_shift 2) frames + 4 test samples x 16 (never shifted: no margin)
    assert "10 samples (10 written, 0 already cached), 184 frames" in made.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "synthetic"]  # no stray outputs in the cwd
    config = data_config(pristine_events, tmp_path / "cache")
    config.name = "synthetic"
    assert cache_status(tmp_path / "cache", config) == "complete"


# ------------------------------------------------------------------------------------------- video


def write_video(path: Path, frames: int = 20, size: int = 32) -> None:
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"qscale": "2"}
        for t in range(frames):
            image = np.zeros((size, size, 3), dtype=np.uint8)
            image[..., 0] = 10 * t
            image[..., 1] = 255 - 10 * t
            image[: size // 2, :, 2] = 128
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_video_source_and_its_cache(tmp_path):
    write_video(tmp_path / "videos" / "dive_a.mp4")
    sample = Sample(key="dive_a", score=1.0, difficulty=None, action_type=None, frames="dive_a")
    config = DataConfig(name="videos", root=str(tmp_path / "videos"), source="video", num_frames=8,
                        frame_selection="linspace", transform=TransformConfig(resize=[32, 32], crop=[28, 28]),
                        cache_dir=str(tmp_path / "cache"), synthetic=None)
    raw = build_frame_source(config)
    assert isinstance(raw, VideoFileSource) and raw.frame_count(sample) == 20
    frames = raw.read(sample, [0, 10, 19])
    assert frames.shape == (3, 32, 32, 3)
    assert abs(int(frames[1, 20, 5, 0]) - 100) <= 8 and abs(int(frames[2, 20, 5, 1]) - 65) <= 8  # colours per frame
    reader = raw_reader(config)
    summary = prepare_cache([sample], reader, raw, config.cache_dir, None, config=config)
    assert summary.frames == 8
    source = open_frame_source(config)
    assert isinstance(source, CachedFrameSource)
    strict = CachedFrameSource(config.cache_dir)
    assert strict.frame_count(sample) == 20  # stored at prepare time: no raw source needed
    numbers = reader.frame_numbers(sample, None)
    assert np.array_equal(strict.read(sample, numbers), raw.read(sample, numbers))
    assert torch.equal(reader(sample, None), raw_reader(config, source)(sample, None))
    assert check_samples([sample], reader, decode=True) == []
    missing = Sample(key="dive_b", score=1.0, difficulty=None, action_type=None, frames="dive_b")
    (problem,) = check_samples([missing], reader, decode=False)
    assert problem.kind == "missing_video" and problem.path == str(tmp_path / "videos" / "dive_b.mp4")
    (tmp_path / "videos" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 garbage" * 10)
    broken = Sample(key="broken", score=1.0, difficulty=None, action_type=None, frames="broken")
    (problem,) = check_samples([broken], reader, decode=True)
    assert problem.kind == "unreadable" and problem.path == str(tmp_path / "videos" / "broken.mp4")


def test_prepare_cli_refuses_without_cache_dir(pristine_events, tmp_path):
    from hydra import compose, initialize_config_dir

    from t2cr.cli.prepare import prepare as prepare_command
    from t2cr.resources import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="prepare", overrides=cli_data_args(pristine_events))
    assert cfg.check is False and cfg.workers == 2 and cfg.data.cache_dir is None
    with pytest.raises(SystemExit, match="data.cache_dir=<folder>"):
        prepare_command(cfg)
