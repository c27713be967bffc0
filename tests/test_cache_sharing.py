"""Issue 29: a frame cache folder never changes under a run reading it.

data.cache_dir holds one cache folder per data settings (named by their digest): a prepare with other settings
(a sweep over data.train_shift or the resize sharing one data.cache_dir) writes its own folder and never
empties or rebuilds another; an entry written again for the same settings goes to a new array file, so a reader
holding the old index keeps reading the old rows; a cache of the older flat layout is read by runs with its
settings and left alone by the others; prepares of the same settings still take turns on the folder's lock.
Everything runs in this process, step after step (threads and events for the lock): no sleeps, no polling.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import numpy as np
import pytest
from filelock import Timeout
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from t2cr.cli.prepare import load, prepare
from t2cr.config import to_dataclass
from t2cr.data.cache import (
    LOCK_FILE,
    SAMPLES_DIR,
    SETTINGS_FOLDER_PREFIX,
    CachedFrameSource,
    cache_settings,
    cache_status,
    entry_name,
    open_frame_source,
    prepare_cache,
    prepare_folder,
    resize_frames,
)
from t2cr.data.config import DataConfig
from t2cr.data.reading import SampleReader
from t2cr.data.samples import Sample
from t2cr.io import file_lock
from t2cr.resources import CONF_DIR

A = ("data.transform.resize=[24,24]", "data.train_shift=1")
B = ("data.transform.resize=[28,28]", "data.train_shift=2")
B_SHIFT = ("data.transform.resize=[24,24]", "data.train_shift=2")  # only train_shift differs from A


def compose_prepare(dataset: Path, cache_dir: Path, settings: tuple[str, ...]) -> DictConfig:
    """The t2cr-prepare config for the shared tiny synthetic data, one `settings`, one data.cache_dir."""
    overrides = [f"data.synthetic.root={dataset}", "data.synthetic.num_train=12", "data.synthetic.num_test=7",
                 "data.synthetic.num_events=2", "data.synthetic.height=32", "data.synthetic.width=32",
                 "data.synthetic.frames_per_dive=16", "data.num_frames=16", "data.transform.crop=[20,20]",
                 "data.clip_length=8", "data.num_clips=3", "data.base_starts=[0,4,8]", "workers=1",
                 f"data.cache_dir={cache_dir}", *settings]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="prepare", overrides=overrides)


def data_config(cfg: DictConfig, use_cache: str = "require") -> DataConfig:
    config = to_dataclass(DataConfig, cfg.data)
    config.use_cache = use_cache
    return config


Raw = tuple[DataConfig, list[Sample], SampleReader]


def raw_samples(cfg: DictConfig) -> Raw:
    """What t2cr-prepare reads for `cfg`: the data settings, every sample, a reader over the raw frames."""
    datamodule, samples, reader = load(cfg.copy())
    return datamodule.config, samples, reader


def cache_error(source: CachedFrameSource, raw: Raw) -> int:
    """Largest |cached - raw| over every frame a run with these settings can read of every sample, the raw
    frames resized with the settings; also checks that the cache holds exactly those frames (its train_shift)."""
    config, samples, reader = raw
    worst = 0
    for sample in samples:
        numbers = reader.candidate_frames(sample)
        entry = source.entry(sample)
        assert entry is not None and np.array_equal(entry.numbers, numbers), sample.key_str
        cached = source.read(sample, numbers)
        expected = resize_frames(reader.source.read(sample, numbers), config.transform.resize,
                                 config.transform.interpolation)
        assert cached.shape == expected.shape, (sample.key_str, cached.shape, expected.shape)
        worst = max(worst, int(np.abs(cached.astype(np.int16) - expected.astype(np.int16)).max()))
    return worst


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """(inode, modification time) of every file under `folder` but the lock file (the lock library's)."""
    return {p.relative_to(folder).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != LOCK_FILE}


def open_cache(cfg: DictConfig) -> CachedFrameSource:
    source = open_frame_source(data_config(cfg))  # require: the cache or an error, no raw fallback
    assert isinstance(source, CachedFrameSource) and source.fallback is None
    return source


def test_two_settings_share_one_cache_dir_each_complete_each_read_its_own_frames(tiny_synthetic, tmp_path):
    cache_dir = tmp_path / "cache"
    a, b = (compose_prepare(tiny_synthetic, cache_dir, settings) for settings in (A, B))
    made_a = prepare(a)
    files_a = snapshot(made_a.cache_dir)
    made_b = prepare(b)
    assert made_a.cache_dir != made_b.cache_dir and made_a.cache_dir.parent == made_b.cache_dir.parent == cache_dir
    assert sorted(p.name for p in cache_dir.iterdir() if not p.name.startswith(".")) == sorted(
        [made_a.cache_dir.name, made_b.cache_dir.name])
    assert made_a.cache_dir.name.startswith(SETTINGS_FOLDER_PREFIX)
    assert snapshot(made_a.cache_dir) == files_a  # B wrote nothing into A's folder
    for cfg, made in ((a, made_a), (b, made_b)):
        assert cache_status(cache_dir, data_config(cfg)) == "complete"
        source = open_cache(cfg)
        assert source.cache_dir == made.cache_dir
        assert cache_error(source, raw_samples(cfg)) == 0


def test_a_reader_open_while_a_job_with_other_settings_prepares_keeps_reading_its_frames(tiny_synthetic, tmp_path):
    """The issue's case: a run reads the cache of A; a job with another train_shift prepares the same
    data.cache_dir; the run's reader still reads A's frames, exactly (it read 182 away before the fix)."""
    cache_dir = tmp_path / "cache"
    a, b = (compose_prepare(tiny_synthetic, cache_dir, settings) for settings in (A, B_SHIFT))
    raw_a = raw_samples(a)
    prepare(a)
    reading = open_cache(a)
    assert cache_error(reading, raw_a) == 0  # every sample's index is now held by the reader
    prepare(b)
    assert cache_error(reading, raw_a) == 0
    assert cache_error(open_cache(a), raw_a) == 0 and cache_error(open_cache(b), raw_samples(b)) == 0


def test_an_old_flat_cache_is_read_with_its_settings_and_never_wiped_for_others(tiny_synthetic, tmp_path):
    flat = tmp_path / "cache"
    a, b = (compose_prepare(tiny_synthetic, flat, settings) for settings in (A, B))
    raw_a = config, samples, reader = raw_samples(a)
    prepare_cache(samples, reader, reader.source, flat, config=config, workers=1)  # the layout older t2cr wrote
    assert (flat / SAMPLES_DIR).is_dir() and not list(flat.glob(f"{SETTINGS_FOLDER_PREFIX}*"))
    before = snapshot(flat)
    reading = open_cache(a)
    assert reading.cache_dir == flat and cache_error(reading, raw_a) == 0
    again = prepare(a)  # t2cr-prepare with its settings continues it in place: nothing to write
    assert again.cache_dir == flat and (again.prepared, again.reused) == (0, len(samples))

    other = prepare(b)  # other settings: their own folder beside the flat cache's files
    assert other.cache_dir.parent == flat and other.cache_dir.name.startswith(SETTINGS_FOLDER_PREFIX)
    assert {k: v for k, v in snapshot(flat).items() if not k.startswith(SETTINGS_FOLDER_PREFIX)} == before
    raw_b = config_b, samples_b, reader_b = raw_samples(b)
    assert cache_error(reading, raw_a) == 0 and open_cache(a).cache_dir == flat
    assert open_cache(b).cache_dir == other.cache_dir and cache_error(open_cache(b), raw_b) == 0

    # the library, pointed at the flat folder itself with other settings, refuses instead of rebuilding it
    with pytest.raises(ValueError, match=f"{flat} holds a frame cache made for other data settings .*resize"):
        prepare_cache(samples_b, reader_b, reader_b.source, flat, config=config_b, workers=1)
    assert {k: v for k, v in snapshot(flat).items() if not k.startswith(SETTINGS_FOLDER_PREFIX)} == before
    assert cache_error(reading, raw_a) == 0


def test_an_entry_written_again_for_the_same_settings_leaves_the_old_rows_to_their_readers(tiny_synthetic, tmp_path):
    """Same settings, a sample whose frames changed (e.g. an edited annotation): its entry is written again,
    to a new array file; a reader holding the old index reads the old rows, a new reader the new ones."""
    cfg = compose_prepare(tiny_synthetic, tmp_path / "cache", A)
    config, samples, reader = raw_samples(cfg)
    folder = prepare_folder(config.cache_dir, cache_settings(config))
    prepare_cache(samples, reader, reader.source, folder, config=config, workers=1)
    sample = next(s for s in samples if s.end_frame is not None and s.end_frame - s.start_frame >= 15)
    old_reader = CachedFrameSource(folder)
    old = old_reader.entry(sample).numbers
    old_rows = old_reader.read(sample, old)
    assert np.array_equal(old_rows, resize_frames(reader.source.read(sample, old), (24, 24)))

    moved = dataclasses.replace(sample, start_frame=sample.start_frame - 2, end_frame=sample.end_frame - 2)
    again = prepare_cache([moved if s is sample else s for s in samples], reader, reader.source, folder,
                          config=config, workers=1)
    assert (again.prepared, again.reused) == (1, len(samples) - 1)
    assert np.array_equal(old_reader.read(sample, old), old_rows)  # the reader's index and rows still agree
    name = entry_name(sample)
    assert (folder / SAMPLES_DIR / f"{name}+1.npy").is_file() and (folder / SAMPLES_DIR / f"{name}.npy").is_file()
    new_reader = CachedFrameSource(folder)
    new = new_reader.entry(moved).numbers
    assert np.array_equal(new, reader.candidate_frames(moved)) and not np.array_equal(new, old)
    assert np.array_equal(new_reader.read(moved, new), resize_frames(reader.source.read(moved, new), (24, 24)))


class GatedSource:
    """The raw frames; the first read says so (`inside`) and waits for `release`: a prepare held mid-way."""

    def __init__(self, inner, inside: threading.Event, release: threading.Event) -> None:
        self.inner, self.inside, self.release = inner, inside, release
        self.root, self.pattern = inner.root, inner.pattern

    def frame_count(self, sample):
        return self.inner.frame_count(sample)

    def read(self, sample, frame_numbers):
        if not self.inside.is_set():
            self.inside.set()
            self.release.wait()
        return self.inner.read(sample, frame_numbers)


def test_two_prepares_of_the_same_settings_take_turns_and_leave_one_complete_cache(tiny_synthetic, tmp_path):
    cfg = compose_prepare(tiny_synthetic, tmp_path / "cache", A)
    raw = config, samples, reader = raw_samples(cfg)
    folder = prepare_folder(config.cache_dir, cache_settings(config))
    inside, release = threading.Event(), threading.Event()
    results: dict[str, object] = {}

    def run(name: str, source) -> None:
        try:
            results[name] = prepare_cache(samples, reader, source, folder, config=config, workers=1)
        except Exception as error:  # noqa: BLE001 - the assertion below reports it
            results[name] = error
        finally:
            inside.set()  # never leave the test waiting on a prepare that failed before its first read

    first = threading.Thread(target=run, args=("first", GatedSource(reader.source, inside, release)))
    first.start()
    inside.wait()  # the first prepare is inside, between its first read and its first write
    try:
        with pytest.raises(Timeout):  # ... and holds the folder's lock: a second writer cannot get in now
            file_lock(folder / LOCK_FILE).acquire(timeout=0)
        second = threading.Thread(target=run, args=("second", reader.source))
        second.start()
    finally:
        release.set()
    first.join()
    second.join()
    made, waited = results["first"], results["second"]
    assert not isinstance(made, BaseException) and not isinstance(waited, BaseException), results
    assert (made.prepared, waited.prepared, waited.reused) == (len(samples), 0, len(samples))
    assert cache_status(config.cache_dir, data_config(cfg)) == "complete"
    assert cache_error(open_cache(cfg), raw) == 0


def test_the_video_import_writes_an_entry_again_beside_the_old_array(tmp_path):
    """t2cr-prepare videos= writes its entries as prepare_cache does: a second write of an entry goes to a new
    array file that its new index names, and the array the first index names keeps its rows."""
    from t2cr.data.cache import array_path
    from t2cr.data.video_import import _Gather, _write_entry

    samples_dir = tmp_path / "samples"
    samples_dir.mkdir()
    sample = Sample(key=("a", 1), score=1.0, difficulty=None, action_type=None, frames="a")
    numbers = np.arange(3)
    first_rows = np.full((3, 4, 4, 3), 7, dtype=np.uint8)
    first = _write_entry(samples_dir, _Gather("a_1", sample, numbers, numbers, False, first_rows.copy()), None)
    held = np.load(array_path(samples_dir, "a_1", first), mmap_mode="r")  # a reader holding the first index
    second = _write_entry(samples_dir, _Gather("a_1", sample, numbers, numbers, False, first_rows + 1), None)
    assert array_path(samples_dir, "a_1", second) != array_path(samples_dir, "a_1", first)
    assert np.array_equal(np.load(array_path(samples_dir, "a_1", first)), first_rows)
    assert np.array_equal(held, first_rows)
    assert np.array_equal(np.load(array_path(samples_dir, "a_1", second)), first_rows + 1)
