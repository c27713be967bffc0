"""data.transform.interpolation (issue 27): "bilinear" (ours, torch's antialiased bilinear) or "nearest" (what the
official T2CR code's torch_videovision Resize does to its PIL frames: PIL's NEAREST). One run resizes every
frame the same way: the transform, the frame cache (which records its method, so a run with the other one does
not read it, and whose fallback frames are resized with the cache's own method) and the video import.

Every expectation is computed here independently: nearest by the pixel-centre rule on sizes without ties and by
PIL's own resize (the reference code's call), bilinear by torch's F.interpolate called directly.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from test_cache_and_check import all_samples, data_config, prepare, raw_reader
from test_configs import _compose
from test_video_import import mtl_config, run_import

from t2cr.config import to_dataclass
from t2cr.data.cache import (
    MANIFEST_FILE,
    SAMPLES_DIR,
    SETTINGS_FILE,
    CachedFrameSource,
    CacheUnavailableError,
    cache_status,
    entry_name,
    open_frame_source,
)
from t2cr.data.config import DataConfig
from t2cr.data.frames import build_frame_source
from t2cr.data.synthetic import SyntheticConfig, ensure_synthetic_dataset
from t2cr.data.transforms import TransformConfig, VideoTransform, resize_frames

# raw frames 30 high x 42 wide, resized to 24 x 24: no output pixel centre falls exactly between two source
# pixels ((2i + 1) * in / (2 * out) is never an integer: in has one factor 2, 2 * out four), so the rule below
# has no ties to break
RAW_HW = (30, 42)
RESIZE = [24, 24]


def nearest_by_centre(frames: np.ndarray, size_hw) -> np.ndarray:
    """Nearest neighbour as PIL does it, written out: output pixel i takes source pixel floor((i + 0.5) * in / out).

    Only for sizes without exact ties (PIL's fixed-point arithmetic breaks those either way)."""
    def source(n_in: int, n_out: int) -> list[int]:
        picked = [int((i + 0.5) * n_in / n_out) for i in range(n_out)]
        assert all((2 * i + 1) * n_in % (2 * n_out) for i in range(n_out)), "a tie: choose other sizes"
        return picked

    rows, cols = source(frames.shape[1], size_hw[0]), source(frames.shape[2], size_hw[1])
    return np.stack([[[frame[r][c] for c in cols] for r in rows] for frame in frames]).astype(np.uint8)


def pil_nearest(frames: np.ndarray, size_hw) -> np.ndarray:
    """torch_videovision's resize_clip on PIL frames with its default interpolation: img.resize((w, h), NEAREST)."""
    return np.stack([np.asarray(Image.fromarray(f).resize((size_hw[1], size_hw[0]), Image.NEAREST)) for f in frames])


def torch_bilinear(frames: np.ndarray, size_hw) -> np.ndarray:
    """Our bilinear, called directly: torch's, half-pixel centres, antialiased, rounded to uint8."""
    video = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    video = F.interpolate(video, size=tuple(size_hw), mode="bilinear", align_corners=False, antialias=True)
    return (video * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def random_frames(height: int, width: int, count: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(count, height, width, 3), dtype=np.uint8)


# ------------------------------------------------------------------------------------------- the resize


@pytest.mark.parametrize("size", [(18, 22), (36, 50)], ids=["shrink", "enlarge"])
def test_nearest_takes_the_source_pixel_under_each_output_pixels_centre(size):
    frames = random_frames(30, 42)
    expected = nearest_by_centre(frames, size)
    assert np.array_equal(resize_frames(frames, size, "nearest"), expected)
    # the transform of a run with data.transform.interpolation=nearest resizes so
    transform = VideoTransform(TransformConfig(resize=list(size), crop=[16, 16], interpolation="nearest"))
    assert np.array_equal(transform.prepare(frames).numpy(), expected)


def test_nearest_equals_the_reference_codes_pil_resize_at_its_frame_size():
    """A 640 x 360 broadcast frame to the code's 228 high x 128 wide, exact ties included."""
    frames = random_frames(360, 640, count=2, seed=1)
    assert np.array_equal(resize_frames(frames, (228, 128), "nearest"), pil_nearest(frames, (228, 128)))


@pytest.mark.parametrize("size", [(18, 22), (36, 50)], ids=["shrink", "enlarge"])
def test_bilinear_stays_torchs_antialiased_bilinear(size):
    frames = random_frames(30, 42, seed=2)
    expected = torch_bilinear(frames, size)
    assert np.array_equal(resize_frames(frames, size), expected)  # the default, for callers without a config
    assert np.array_equal(resize_frames(frames, size, "bilinear"), expected)
    transform = VideoTransform(TransformConfig(resize=list(size), crop=[16, 16]))
    assert np.array_equal(transform.prepare(frames).numpy(), expected)


# ------------------------------------------------------------------------------------------- the settings


@pytest.mark.parametrize("preset,resize,interpolation",
                         [("ours", [128, 228], "bilinear"), ("reference_code", [228, 128], "nearest")])
def test_the_presets_say_where_their_frames_come_from(preset, resize, interpolation):
    cfg = _compose(["data=mtl_aqa", f"data/transform={preset}", "data.annotations=a", "data.root=b"])
    transform = to_dataclass(DataConfig, cfg.data).transform
    assert (transform.resize, transform.crop, transform.flip) == (resize, [112, 112], True)
    assert transform.interpolation == interpolation


def test_an_unknown_interpolation_is_refused_naming_the_setting():
    message = r"data\.transform\.interpolation must be one of \['bilinear', 'nearest'\], got 'bicubic'"
    with pytest.raises(ValueError, match=message):
        TransformConfig(interpolation="bicubic")
    cfg = _compose(["data=mtl_aqa", "data.annotations=a", "data.root=b", "data.transform.interpolation=bicubic"])
    with pytest.raises(ValueError, match=message):  # as a run composes it
        to_dataclass(DataConfig, cfg.data)
    with pytest.raises(ValueError, match=message):
        resize_frames(random_frames(30, 42), (18, 22), "bicubic")


# ------------------------------------------------------------------------------------------- the frame cache


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("interpolation") / "synthetic"
    return ensure_synthetic_dataset(SyntheticConfig(root=str(root), num_train=4, num_test=2, num_events=1,
                                                    height=RAW_HW[0], width=RAW_HW[1], frames_per_dive=16))


@pytest.fixture
def dataset(pristine, tmp_path) -> Path:
    return Path(shutil.copytree(pristine, tmp_path / "synthetic"))


def configs(dataset: Path, cache: Path, **overrides) -> tuple[DataConfig, DataConfig]:
    """The same data read with bilinear and with nearest frames."""
    bilinear = data_config(dataset, cache, resize=RESIZE, **overrides)
    nearest = data_config(dataset, cache, transform=TransformConfig(resize=RESIZE, crop=[20, 20],
                                                                    interpolation="nearest"), **overrides)
    return bilinear, nearest


def test_a_bilinear_cache_is_not_read_by_a_nearest_run(dataset, tmp_path):
    bilinear, nearest = configs(dataset, tmp_path / "cache")
    samples = all_samples(bilinear)
    prepare(bilinear, samples, workers=1)
    manifest = json.loads((tmp_path / "cache" / MANIFEST_FILE).read_text())
    assert manifest["resize_method"] == "torch-bilinear-antialias"  # the name caches had before the option
    assert cache_status(tmp_path / "cache", bilinear) == "complete"
    assert "resize_method" in cache_status(tmp_path / "cache", nearest)
    source = open_frame_source(nearest)
    assert not isinstance(source, CachedFrameSource)
    # what the nearest run reads: its own resize of the raw frames, not the cache's bilinear ones
    sample = samples[0]
    numbers = raw_reader(nearest).frame_numbers(sample, None)
    raw = build_frame_source(nearest).read(sample, numbers)
    assert np.array_equal(VideoTransform(nearest.transform).prepare(source.read(sample, numbers)).numpy(),
                          nearest_by_centre(raw, RESIZE))
    with pytest.raises(CacheUnavailableError, match="resize_method"):
        open_frame_source(data_config(dataset, tmp_path / "cache", use_cache="require",
                                      transform=nearest.transform))


def test_a_nearest_cache_holds_nearest_frames_and_resizes_what_it_lacks_alike(dataset, tmp_path):
    _, nearest = configs(dataset, tmp_path / "cache")
    samples = all_samples(nearest)
    prepare(nearest, samples[:3], workers=1)
    raw = build_frame_source(nearest)
    sample = samples[0]
    index = json.loads((tmp_path / "cache" / SAMPLES_DIR / f"{entry_name(sample)}.json").read_text())
    stored = np.load(tmp_path / "cache" / SAMPLES_DIR / f"{entry_name(sample)}.npy")
    assert np.array_equal(stored, nearest_by_centre(raw.read(sample, index["frames"]), RESIZE))
    # frames and samples the cache lacks come from the raw frames, resized with the cache's method: a reader
    # built without any transform setting (CachedFrameSource knows only the cache) still gets nearest frames
    source = CachedFrameSource(tmp_path / "cache", fallback=raw)
    outside = [index["frames"][0] - 1, index["frames"][0]]  # the first is no candidate frame
    assert np.array_equal(source.read(sample, outside), nearest_by_centre(raw.read(sample, outside), RESIZE))
    other = samples[4]
    numbers = [other.end_frame - 1, other.end_frame]
    assert np.array_equal(source.read(other, numbers), nearest_by_centre(raw.read(other, numbers), RESIZE))


def test_a_cache_from_before_the_option_is_bilinear(dataset, tmp_path):
    bilinear, _ = configs(dataset, tmp_path / "cache")
    samples = all_samples(bilinear)
    prepare(bilinear, samples[:3], workers=1)
    for name in (MANIFEST_FILE, SETTINGS_FILE):  # as an older t2cr wrote them: no resize_method
        path = tmp_path / "cache" / name
        path.write_text(json.dumps({k: v for k, v in json.loads(path.read_text()).items() if k != "resize_method"}))
    source = CachedFrameSource(tmp_path / "cache", fallback=build_frame_source(bilinear))
    other = samples[4]
    numbers = [other.end_frame - 1, other.end_frame]
    assert np.array_equal(source.read(other, numbers),
                          torch_bilinear(build_frame_source(bilinear).read(other, numbers), RESIZE))


# ------------------------------------------------------------------------------------------- the video import


def test_imported_videos_are_resized_with_the_configs_interpolation(competition, tmp_path):
    import av

    for name in ("videos", "annotations"):
        shutil.copytree(competition / name, tmp_path / name)
    config = mtl_config(tmp_path, transform=TransformConfig(resize=[36, 20], crop=[16, 16], interpolation="nearest"))
    run_import(config, workers=1)
    manifest = json.loads((tmp_path / "cache" / MANIFEST_FILE).read_text())
    assert manifest["resize_method"] != "torch-bilinear-antialias"
    with av.open(str(tmp_path / "videos" / "01.mp4")) as container:
        decoded = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])
    entry = manifest["entries"][0]
    index = json.loads((tmp_path / "cache" / SAMPLES_DIR / f"{entry}.json").read_text())
    assert index["key"].startswith("1_")  # a sample of 01.mp4; annotation frame n is decoded frame n - 1
    rows = np.load(tmp_path / "cache" / SAMPLES_DIR / f"{entry}.npy")
    assert np.array_equal(rows, pil_nearest(decoded[np.asarray(index["frames"]) - 1], (36, 20)))


@pytest.fixture(scope="module")
def competition(tmp_path_factory) -> Path:
    from test_video_import import RANGES, write_mtl_annotations, write_video

    pytest.importorskip("av")
    root = tmp_path_factory.mktemp("competition")
    write_video(root / "videos" / "01.mp4", 120)
    write_video(root / "videos" / "02.mp4", 90, variable_rate=True)
    write_mtl_annotations(root / "annotations", RANGES, test=[(1, 3), (2, 1)])
    return root
