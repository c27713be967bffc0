"""Published on-disk layouts -> batches: point data.root at each dataset's layout and read right frames.

For MTL-AQA, FineDiving and JIGSAWS (the real annotation files) and AQA-7 (a Split_4 .mat pair written
here), small synthetic frames are written in exactly the published layout for a handful of keys only:
a few training samples and a few test samples that share an exemplar pool. The data module, composed
from the dataset's own yaml (data.skip_missing=true), must keep exactly those keys and give batches of
the dataset's length T.

Every frame encodes what it is: rows 0-15 hold a uniform colour that encodes the frame number (mod 512,
8 levels per channel, 32 units apart, so JPEG / codec loss of up to 15 units per channel is tolerated),
rows 16-23 a colour that encodes the folder (a per-folder tag). The colours are uniform along the rows,
so flips do not matter, and the 20 x 20 crop of a 24 x 32 frame always shows the frame code in its rows
0-11 and the tag in its rows 16-19, whatever the crop offset. Batches are un-normalised and decoded, so
a test knows which file every frame of a batch came from.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import real_annotations
from hydra import compose, initialize_config_dir
from PIL import Image
from scipy.io import savemat

from t2cr.config import to_dataclass
from t2cr.data.annotations import read_annotations
from t2cr.data.cache import CachedFrameSource, prepare_cache
from t2cr.data.config import DataConfig
from t2cr.data.datamodule import DataCheckError, PairDataModule
from t2cr.data.frames import VideoFileSource, build_frame_source
from t2cr.data.reading import SampleReader
from t2cr.data.samples import Sample
from t2cr.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from t2cr.models.t2cr import T2CRConfig, build_clip_plans
from t2cr.resources import CONF_DIR

HEIGHT, WIDTH = 24, 32  # written frames; equal to data.transform.resize, so nothing is resized
CROP = 20
K = 2  # data.voting_exemplars
BATCH = 2
COMMON = ["data.skip_missing=true", "data.num_workers=0", f"data.voting_exemplars={K}",
          f"data.batch_size={BATCH}", f"data.eval_batch_size={BATCH}",
          f"data.transform.resize=[{HEIGHT},{WIDTH}]", f"data.transform.crop=[{CROP},{CROP}]"]

# ------------------------------------------------------------------------------------------ colour code
BASE = 8  # levels per channel
STEP = 256 // BASE
CODES = BASE ** 3  # distinct codes: frame numbers are encoded mod 512
CODE_ROWS = 16  # image rows 0-15: frame code; rows 16-23: folder tag (16: a JPEG / H.26x block boundary)


def colour(code: int) -> np.ndarray:
    code %= CODES
    return np.array([STEP * ((code // BASE ** c) % BASE) + STEP // 2 for c in range(3)], dtype=np.uint8)


def frame_image(number: int, tag: int) -> np.ndarray:
    image = np.empty((HEIGHT, WIDTH, 3), dtype=np.uint8)
    image[:CODE_ROWS] = colour(number)
    image[CODE_ROWS:] = colour(tag)
    return image


def _decode_rgb(rgb: np.ndarray) -> np.ndarray:
    """(T, 3) mean colours -> codes."""
    levels = np.clip(np.floor(rgb / STEP), 0, BASE - 1).astype(int)
    return levels[:, 0] + BASE * levels[:, 1] + BASE ** 2 * levels[:, 2]


def decode(video: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """A normalised (3, T, 20, 20) video -> (frame number mod 512, folder tag) of each frame."""
    assert video.shape[0] == 3 and video.shape[-2:] == (CROP, CROP)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1, 1)
    pixels = ((video.double() * std + mean) * 255).numpy()  # before normalisation, 0-255
    # crop rows 1-10 are image rows 1-14 for any crop top 0-4; crop rows 17-19 are image rows 17-23
    numbers = _decode_rgb(pixels[:, :, 1:11].mean(axis=(2, 3)).T)
    tags = _decode_rgb(pixels[:, :, 17:20].mean(axis=(2, 3)).T)
    return numbers, tags


def write_jpeg(path: Path, number: int, tag: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(frame_image(number, tag)).save(path, quality=90)


def write_mp4(path: Path, count: int, tag: int) -> None:
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"qscale": "2"}
        for number in range(count):
            frame = av.VideoFrame.from_ndarray(frame_image(number, tag), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_colour_code_survives_jpeg_round_trip(tmp_path):
    """The decoder itself: every code and tag comes back from a JPEG, for every crop offset and a flip."""
    from t2cr.data.transforms import TransformConfig, VideoTransform

    frames = []
    for number in range(CODES):
        write_jpeg(tmp_path / "f.jpg", number, (7 * number + 3) % CODES)
        frames.append(np.asarray(Image.open(tmp_path / "f.jpg").convert("RGB")))
    frames = np.stack(frames)
    transform = VideoTransform(TransformConfig([HEIGHT, WIDTH], [CROP, CROP], flip=True))
    for seed in range(6):  # random crops (top 0-4) and flips
        numbers, tags = decode(transform(frames, np.random.default_rng(seed)))
        assert numbers.tolist() == list(range(CODES))
        assert tags.tolist() == [(7 * n + 3) % CODES for n in range(CODES)]


# ------------------------------------------------------------------------------------------ layouts
@dataclass
class Layout:
    name: str  # conf/data/<name>.yaml
    annotations: Path
    root: Path
    num_frames: int  # T
    train_keys: list
    test_keys: list
    tags: dict[str, int]  # Sample.frames (folder) -> tag
    overrides: list[str] = field(default_factory=list)
    eval_frames: Callable[[Sample], np.ndarray] | None = None  # the published frames of an eval read

    def config(self, *overrides: str, root: Path | None = None) -> DataConfig:
        return compose_data(self.name, f"data.annotations={self.annotations}",
                            f"data.root={self.root if root is None else root}", *COMMON, *self.overrides,
                            *overrides)


def compose_cfg(name: str, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=[f"data={name}", *overrides])


def compose_data(name: str, *overrides: str) -> DataConfig:
    return to_dataclass(DataConfig, compose_cfg(name, *overrides).data)




def mtl_aqa_layout(root: Path) -> Layout:
    """{root}/{event:02d}/{frame:06d}.jpg, frames end_frame-105 .. end_frame+3 (103 frames, shift +-3)."""
    annotations = real_annotations("MTL-AQA")
    splits = read_annotations(DataConfig(format="mtl_aqa", annotations=str(annotations)))
    difficulty = 3.0  # rule difficulty: the test samples' pool is the training samples of DD 3.0
    train = [s for s in splits["train"] if s.difficulty == difficulty][:3]
    test = [s for s in splits["test"] if s.difficulty == difficulty][:2]
    tags = {}
    for sample in train + test:
        event = int(sample.key[0])
        tags[sample.frames] = event
        for number in range(sample.end_frame - 105, sample.end_frame + 4):
            write_jpeg(root / f"{event:02d}" / f"{number:06d}.jpg", number, event)
    return Layout("mtl_aqa", annotations, root, 103, [s.key for s in train], [s.key for s in test], tags,
                  eval_frames=lambda s: np.arange(s.end_frame - 102, s.end_frame + 1))


def finediving_layout(root: Path) -> Layout:
    """{root}/{event}/{idx}/{frame:05d}.jpg with absolute frame numbers start..end; 96 by linspace."""
    annotations = real_annotations("FineDiving")
    splits = read_annotations(DataConfig(format="finediving", annotations=str(annotations),
                                         frame_pattern="{folder}/{frame:05d}.jpg"))
    action = "407c"  # rule action_type
    train = [s for s in splits["train"] if s.action_type == action][:3]
    test = [s for s in splits["test"] if s.action_type == action][:2]
    tags = {}
    for i, sample in enumerate(train + test):
        event, idx = sample.key
        tags[sample.frames] = 100 + i
        for number in range(sample.start_frame, sample.end_frame + 1):
            write_jpeg(root / event / str(idx) / f"{number:05d}.jpg", number, 100 + i)
    return Layout("finediving", annotations, root, 96, [s.key for s in train], [s.key for s in test], tags,
                  eval_frames=lambda s: np.linspace(s.start_frame, s.end_frame, 96).round().astype(int))


def write_aqa7_split(folder: Path, train: list[tuple[int, int]], test: list[tuple[int, int]]) -> Path:
    """Split_4/split_4_{train,test}_list.mat as the archive ships them: N x 3 [class, index, score]."""
    (folder / "Split_4").mkdir(parents=True, exist_ok=True)

    def rows(keys):
        return np.array([[c, i, 40.0 + 3 * n] for n, (c, i) in enumerate(keys)], dtype=np.float64)

    savemat(folder / "Split_4" / "split_4_train_list.mat", {"consolidated_train_list": rows(train)})
    savemat(folder / "Split_4" / "split_4_test_list.mat", {"consolidated_test_list": rows(test)})
    return folder


AQA7_CLASS_FOLDERS = {1: "diving", 2: "gym_vault", 7: "trampoline"}


def aqa7_layout(root: Path, annotations: Path) -> Layout:
    """{root}/{class}-out/{idx:03d}/img_{n:05d}.jpg, n = 1..103; data.classes=[1] (diving)."""
    train = [(1, 1), (1, 2), (1, 3)]
    test = [(1, 101), (1, 102)]
    # more rows than frames: diving 4, 5 / 103 have none (dropped), gym_vault and trampoline are other classes
    write_aqa7_split(annotations, train + [(1, 4), (1, 5), (2, 1), (7, 1)], test + [(1, 103), (2, 101)])
    tags = {}
    for cls, idx in train + test:
        folder = f"{AQA7_CLASS_FOLDERS[cls]}-out/{idx:03d}"
        tags[folder] = idx
        for number in range(1, 104):
            write_jpeg(root / folder / f"img_{number:05d}.jpg", number, idx)
    return Layout("aqa7", annotations, root, 103, train, test, tags,
                  eval_frames=lambda s: np.arange(1, 104))


JIGSAWS_IMAGES = 170


def _jigsaws_keys() -> tuple[Path, list[str], list[str]]:
    annotations = real_annotations("JIGSAWS")
    splits = read_annotations(DataConfig(format="jigsaws", annotations=str(annotations), task="Suturing",
                                         fold=0, frame_pattern=None))
    return annotations, [s.key for s in splits["train"][:3]], [s.key for s in splits["test"][:2]]


def jigsaws_layout(root: Path) -> Layout:
    """{root}/{name}_capture1/ with 170 images, listed in name order; 160 by linspace over the listing."""
    annotations, train, test = _jigsaws_keys()
    tags = {}
    for i, name in enumerate(train + test):
        tags[f"{name}_capture1"] = 200 + i
        for index in range(JIGSAWS_IMAGES):  # names start at 1: frame numbers index the listing, not the name
            write_jpeg(root / f"{name}_capture1" / f"frame_{index + 1:04d}.jpg", index, 200 + i)
    return Layout("jigsaws", annotations, root, 160, train, test, tags,
                  overrides=["data.task=Suturing", "data.fold=0"],
                  eval_frames=lambda s: np.linspace(0, JIGSAWS_IMAGES - 1, 160).round().astype(int))


def jigsaws_video_layout(root: Path) -> Layout:
    """{root}/{name}_capture1.mp4, 170 frames; frame numbers are 0-based indices, count from the container."""
    annotations, train, test = _jigsaws_keys()
    tags = {}
    for i, name in enumerate(train + test):
        tags[f"{name}_capture1"] = 200 + i
        write_mp4(root / f"{name}_capture1.mp4", JIGSAWS_IMAGES, 200 + i)
    return Layout("jigsaws", annotations, root, 160, train, test, tags,
                  overrides=["data.task=Suturing", "data.fold=0", "data.source=video",
                             "data.video.pattern='{folder}.mp4'"],
                  eval_frames=lambda s: np.linspace(0, JIGSAWS_IMAGES - 1, 160).round().astype(int))


@pytest.fixture(scope="module")
def layouts(tmp_path_factory) -> dict[str, Callable[[], Layout]]:
    """Each layout written on first use, once per module."""
    made: dict[str, Layout] = {}

    def maker(name: str) -> Callable[[], Layout]:
        def make() -> Layout:
            if name not in made:
                base = tmp_path_factory.mktemp(name)
                if name == "aqa7":
                    made[name] = aqa7_layout(base / "frames", base / "AQA-7")
                else:
                    build = {"mtl_aqa": mtl_aqa_layout, "finediving": finediving_layout,
                             "jigsaws": jigsaws_layout, "jigsaws_video": jigsaws_video_layout}[name]
                    made[name] = build(base / "frames")
            return made[name]
        return make

    return {name: maker(name) for name in ("mtl_aqa", "finediving", "aqa7", "jigsaws", "jigsaws_video")}


# ------------------------------------------------------------------------------------------ checks
def possible_reads(config: DataConfig, reader: SampleReader, sample: Sample) -> list[list[int]]:
    """Every frame list a training read of `sample` may take (the published temporal jitter)."""
    if config.frame_selection == "linspace" or not config.train_shift:
        return [reader.frame_numbers(sample, None).tolist()]
    end, length = sample.end_frame, config.num_frames
    return [list(range(end + shift - length + 1, end + shift + 1))
            for shift in range(-config.train_shift, config.train_shift + 1)]


def assert_reads(video: torch.Tensor, layout: Layout, sample: Sample, frames: np.ndarray | list[int]) -> None:
    numbers, tags = decode(video)
    assert tags.tolist() == [layout.tags[sample.frames]] * layout.num_frames, \
        f"frames of {sample.key_str} come from another folder"
    assert numbers.tolist() == (np.asarray(frames) % CODES).tolist(), f"wrong frames of {sample.key_str}"


def check_datamodule(layout: Layout, datamodule: PairDataModule) -> None:
    datamodule.setup()
    config, reader, T = datamodule.config, datamodule.reader, layout.num_frames
    train, test = datamodule.samples("train"), datamodule.samples("test")
    # only the keys whose frames were written remain
    assert sorted(s.key for s in train) == sorted(layout.train_keys)
    assert sorted(s.key for s in test) == sorted(layout.test_keys)
    assert len({datamodule.pools.pool_key(s) for s in train + test}) == 1  # one shared exemplar pool

    batch = datamodule.crop_flip_normalise(next(iter(datamodule.train_dataloader())))
    assert batch["query"].shape == batch["exemplar"].shape == (BATCH, 3, T, CROP, CROP)
    assert torch.isfinite(batch["query"]).all() and torch.isfinite(batch["exemplar"]).all()
    assert torch.isfinite(batch["query_score"]).all() and torch.isfinite(batch["exemplar_score"]).all()
    for b in range(BATCH):
        query = train[int(batch["index"][b])]
        numbers, tags = decode(batch["query"][b])
        assert set(tags.tolist()) == {layout.tags[query.frames]}, f"query {query.key_str}: frames of another folder"
        assert any(numbers.tolist() == [n % CODES for n in read] for read in possible_reads(config, reader, query)), \
            f"query {query.key_str}: decoded frames {numbers.tolist()} are no training read of the sample"
        # the exemplar: some other training sample of the pool, read whole and in order
        numbers, tags = decode(batch["exemplar"][b])
        matches = [s for s in train if s.key != query.key and layout.tags[s.frames] == tags[0]
                   and any(numbers.tolist() == [n % CODES for n in read]
                           for read in possible_reads(config, reader, s))]
        assert len(set(tags.tolist())) == 1 and matches, f"exemplar of {query.key_str} is no pool member"

    batch = datamodule.crop_flip_normalise(next(iter(datamodule.test_dataloader())))
    assert batch["query"].shape == (BATCH, 3, T, CROP, CROP)
    assert batch["exemplars"].shape == (BATCH, K, 3, T, CROP, CROP)
    assert torch.isfinite(batch["query"]).all() and torch.isfinite(batch["exemplars"]).all()
    assert batch["exemplar_mask"].all()
    voting = datamodule.voting_exemplars("test")
    by_key = {s.key_str: s for s in train}
    for b in range(BATCH):
        sample = test[int(batch["index"][b])]
        frames = reader.frame_numbers(sample, None)
        assert frames.tolist() == layout.eval_frames(sample).tolist()  # the published frame selection
        assert_reads(batch["query"][b], layout, sample, frames)
        assert len(voting[sample.key_str]) == K
        for k, key in enumerate(voting[sample.key_str]):
            exemplar = by_key[key]
            assert_reads(batch["exemplars"][b, k], layout, exemplar, reader.frame_numbers(exemplar, None))


@pytest.mark.parametrize("name", ["mtl_aqa", "finediving", "aqa7", "jigsaws"])
def test_published_layout_gives_batches_of_the_right_frames(layouts, name):
    layout = layouts[name]()
    datamodule = PairDataModule(layout.config())
    check_datamodule(layout, datamodule)
    assert not isinstance(datamodule.reader.source, CachedFrameSource)


def test_jigsaws_videos_give_batches_of_the_right_frames(layouts):
    layout = layouts["jigsaws_video"]()
    datamodule = PairDataModule(layout.config())
    datamodule.setup()
    assert isinstance(datamodule.reader.source, VideoFileSource)
    sample = datamodule.samples("test")[0]
    assert datamodule.reader.source.frame_count(sample) == JIGSAWS_IMAGES  # from the container
    check_datamodule(layout, datamodule)


# ------------------------------------------------------------------------------------------ model side
@pytest.mark.parametrize("name, clips, starts", [
    ("mtl_aqa", 10, [0, 10, 20, 30, 40, 50, 60, 70, 80, 86]),
    ("finediving", 9, [0, 10, 20, 30, 40, 50, 60, 70, 80]),
    ("aqa7", 10, [0, 10, 20, 30, 40, 50, 60, 70, 80, 86]),
    ("jigsaws", 10, list(range(0, 160, 16))),
])
def test_dataset_clip_plan_fits_its_frames(name, clips, starts):
    cfg = compose_cfg(name, "data.annotations=x", "data.root=y", *COMMON)
    data = to_dataclass(DataConfig, cfg.data)
    model = to_dataclass(T2CRConfig, cfg.model)
    assert model.clips.num_frames == data.num_frames
    base, aux = build_clip_plans(model.clips)
    assert base.num_clips == clips and list(base.starts) == starts
    assert base.frames_needed <= data.num_frames
    assert aux is not None and aux.frames_needed <= data.num_frames
    if name == "jigsaws":  # back-to-back clips cover all 160 frames
        assert base.frames_needed == 160


# ------------------------------------------------------------------------------------------ cache
def _items(datamodule: PairDataModule, epochs=(0, 1)) -> list[tuple[str, torch.Tensor]]:
    train = datamodule.train_dataloader().dataset
    test = datamodule.test_dataloader().dataset
    out = []
    for epoch in epochs:
        for index in range(len(train)):
            item = datamodule.crop_flip_normalise(train[(epoch, index)])
            out += [(f"train {epoch} {index} query", item["query"]),
                    (f"train {epoch} {index} exemplar", item["exemplar"])]
    for index in range(len(test)):
        item = datamodule.crop_flip_normalise(test[(0, index)])
        out += [(f"test {index} query", item["query"]), (f"test {index} exemplars", item["exemplars"])]
    return out


def _prepare(datamodule: PairDataModule, config: DataConfig) -> None:
    """What t2cr-prepare does (t2cr.cli.prepare.prepare), over the samples the run keeps."""
    samples: dict[str, Sample] = {}
    for split in ("train", "val", "test"):
        for sample in datamodule.samples(split):
            samples.setdefault(sample.key_str, sample)
    reader = datamodule.reader
    raw = SampleReader(build_frame_source(config), reader.transform, reader.num_frames, reader.selection,
                       reader.train_shift)
    summary = prepare_cache(list(samples.values()), raw, raw.source, config.cache_dir, config.transform.resize,
                            config=config, workers=1)
    assert summary.samples == len(samples) and summary.prepared == len(samples)


@pytest.mark.slow
def test_mtl_aqa_cache_gives_exactly_the_jpeg_tensors(layouts, tmp_path):
    layout = layouts["mtl_aqa"]()
    cache_dir = tmp_path / "cache"
    jpeg = PairDataModule(layout.config())
    expected = _items(jpeg)

    cached_config = layout.config(f"data.cache_dir={cache_dir}")
    _prepare(jpeg, cached_config)
    cached = PairDataModule(cached_config)
    cached.setup()
    assert isinstance(cached.reader.source, CachedFrameSource)
    assert [s.key for s in cached.samples("train")] == [s.key for s in jpeg.samples("train")]
    assert [s.key for s in cached.samples("test")] == [s.key for s in jpeg.samples("test")]
    got = _items(cached)
    assert [name for name, _ in got] == [name for name, _ in expected]
    for (name, a), (_, b) in zip(expected, got):
        assert torch.equal(a, b), name
    check_datamodule(layout, cached)


def _reads(datamodule: PairDataModule, samples: list[Sample]) -> list[tuple[str, torch.Tensor]]:
    """Evaluation reads and seeded training reads (shift, crop, flip) of `samples`."""
    out = []
    for sample in samples:
        out.append((f"{sample.key_str} eval", datamodule.reader(sample, None)))
        for seed in range(3):
            out.append((f"{sample.key_str} train {seed}", datamodule.reader(sample, np.random.default_rng(seed))))
    return out


@pytest.fixture(scope="module")
def mtl_aqa_required(tmp_path_factory):
    """An MTL-AQA subset, its cache prepared, then its raw frames deleted."""
    tmp_path = tmp_path_factory.mktemp("mtl_aqa_required")
    layout = mtl_aqa_layout(tmp_path / "frames")
    cache_dir = tmp_path / "cache"
    jpeg = PairDataModule(layout.config())
    jpeg.setup()
    kept = jpeg.samples("train") + jpeg.samples("test")
    expected = _reads(jpeg, kept)
    _prepare(jpeg, layout.config(f"data.cache_dir={cache_dir}"))
    shutil.rmtree(layout.root)
    return layout, cache_dir, kept, expected


def test_mtl_aqa_cache_required_reads_without_raw_frames(mtl_aqa_required):
    layout, cache_dir, kept, expected = mtl_aqa_required
    required = PairDataModule(layout.config(f"data.cache_dir={cache_dir}", "data.use_cache=require"))
    required.setup()  # data.root no longer exists: the cache alone serves the run
    assert isinstance(required.reader.source, CachedFrameSource) and required.reader.source.fallback is None
    got = _reads(required, kept)
    assert [name for name, _ in got] == [name for name, _ in expected]
    for (name, a), (_, b) in zip(expected, got):
        assert torch.equal(a, b), name


def test_mtl_aqa_cache_required_keeps_only_cached_samples(mtl_aqa_required):
    """With data.use_cache=require the data check looks at the cache (t2cr.data.check), so
    data.skip_missing=true keeps the 3 + 2 samples the cache holds out of the 1412 of the splits, as it
    keeps the samples whose raw frames exist, and the run trains and tests on them. (Regression: the
    check once ignored the cache, kept every sample and the first training batch failed with
    CacheMissError.)"""
    layout, cache_dir, _, _ = mtl_aqa_required
    required = PairDataModule(layout.config(f"data.cache_dir={cache_dir}", "data.use_cache=require"))
    required.setup()
    assert sorted(s.key for s in required.samples("train")) == sorted(layout.train_keys)
    assert sorted(s.key for s in required.samples("test")) == sorted(layout.test_keys)
    check_datamodule(layout, required)


def test_cache_required_without_skip_missing_refuses_samples_it_lacks(tmp_path):
    """Without data.skip_missing, samples that the required cache does not hold stop the run before any
    training step (DataCheckError naming them), not mid-epoch. (Regression, as above.)"""
    layout = aqa7_layout(tmp_path / "frames", tmp_path / "AQA-7")
    cache_dir = tmp_path / "cache"
    jpeg = PairDataModule(layout.config())
    _prepare(jpeg, layout.config(f"data.cache_dir={cache_dir}"))
    shutil.rmtree(layout.root)
    # diving 4 and 5 (train) and 103 (test) are in the split but have no frames, so were never cached
    with pytest.raises(DataCheckError, match=r"data\.skip_missing") as error:
        PairDataModule(layout.config(f"data.cache_dir={cache_dir}", "data.use_cache=require",
                                     "data.skip_missing=false")).setup()
    assert "1_4" in str(error.value) and "1_103" in str(error.value)


def test_prepare_command_honours_skip_missing(tmp_path):
    """t2cr-prepare runs the data check with data.skip_missing=true: on a layout with missing samples it
    caches the samples a run keeps, and the run then reads them from the cache. (Regression: it once
    turned the check off, cached every sample of the splits and died with FileNotFoundError on the first
    missing frame.)"""
    from t2cr.cli.prepare import prepare as prepare_command

    layout = aqa7_layout(tmp_path / "frames", tmp_path / "AQA-7")
    cache_dir = tmp_path / "cache"
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="prepare", overrides=[
            "data=aqa7", f"data.annotations={layout.annotations}", f"data.root={layout.root}",
            f"data.cache_dir={cache_dir}", "workers=1", *COMMON])
    summary = prepare_command(cfg)
    assert summary.samples == len(layout.train_keys) + len(layout.test_keys)
    cached = PairDataModule(layout.config(f"data.cache_dir={cache_dir}"))
    cached.setup()
    assert isinstance(cached.reader.source, CachedFrameSource)
    check_datamodule(layout, cached)


# ------------------------------------------------------------------------------------------ missing frames
def _aqa7_exact(tmp_path: Path) -> Layout:
    """An AQA-7 layout whose split lists exactly the samples whose frames are written."""
    layout = aqa7_layout(tmp_path / "frames", tmp_path / "AQA-7")
    write_aqa7_split(layout.annotations, layout.train_keys, layout.test_keys)
    return layout


def test_missing_frame_refuses_to_start_naming_the_path(tmp_path):
    layout = _aqa7_exact(tmp_path)
    PairDataModule(layout.config("data.skip_missing=false")).setup()  # complete: starts
    missing = layout.root / "diving-out" / "102" / "img_00050.jpg"
    missing.unlink()
    with pytest.raises(DataCheckError) as error:
        PairDataModule(layout.config("data.skip_missing=false")).setup()
    message = str(error.value)
    assert str(missing) in message and "data.skip_missing" in message and "1_102" in message
    # with skip_missing the sample is dropped instead
    kept = PairDataModule(layout.config()).samples("test")
    assert [s.key for s in kept] == [(1, 101)]


def test_missing_folder_refuses_to_start_naming_the_path(tmp_path):
    layout = _aqa7_exact(tmp_path)
    folder = layout.root / "diving-out" / "002"
    shutil.rmtree(folder)
    with pytest.raises(DataCheckError) as error:
        PairDataModule(layout.config("data.skip_missing=false")).setup()
    message = str(error.value)
    assert str(folder) in message and "data.skip_missing" in message and "1_2" in message


def test_missing_jigsaws_video_refuses_to_start_naming_the_path(layouts, tmp_path):
    layout = layouts["jigsaws_video"]()
    root = tmp_path / "videos"
    shutil.copytree(layout.root, root)
    # every other Suturing video is missing as well; the report names the first ones, with their paths
    with pytest.raises(DataCheckError) as error:
        PairDataModule(layout.config("data.skip_missing=false", root=root)).setup()
    message = str(error.value)
    first_missing = next(s for s in read_annotations(layout.config(root=root))["train"]
                         if s.key not in layout.train_keys)
    assert str(root / f"{first_missing.key}_capture1.mp4") in message and "data.skip_missing" in message
