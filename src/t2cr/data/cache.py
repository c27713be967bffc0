"""Prepared uint8 frame cache: decode and resize every frame a run can read once, then memory-map it.

`t2cr-prepare data=<name> data.cache_dir=<folder>` writes the cache; a run with the same `data.cache_dir`
reads it (data.use_cache=auto) as soon as it is complete and was made for the same data settings.

data.cache_dir holds one cache folder per data settings, named by a digest of them (`settings_folder`):

    <data.cache_dir>/frames-<16 hex digits of sha256(cache_settings)>/   one cache, laid out as below

so jobs whose settings differ (a sweep over data.train_shift, the resize, ...) write and read different
folders, and a cache folder never changes under a run reading it: a job with other settings never empties
or rebuilds it (issue 29). A data.cache_dir that is itself a cache folder (the flat layout t2cr wrote before)
is still read, and continued, by runs with its own settings (`cache_folder`); a job with other settings
leaves it alone and writes its digest-named folder beside its files.

Layout of a cache folder:

    settings.json        what the cache holds: format version, resize, resize method (the interpolation) and the data
                         settings that determine the content (name, format, root, source, pattern,
                         num_frames, frame_selection, train_shift); written first
    samples/<name>.npy   uint8 (n, H, W, 3): the sample's candidate frames (SampleReader.candidate_frames),
                         resized to data.transform.resize
    samples/<name>.json  {"key", "frames": frame number of each row, "frame_count", "shape", "bytes"}
    manifest.json        settings + number of samples, frames and bytes, and the entries; written last

Every file is written under a temporary name and renamed into place (t2cr.io.atomic_write), the
sample's .json after its .npy, so an interrupted prepare never leaves a truncated file and a rerun
continues where it stopped (samples whose files are complete for the same settings are skipped). A
folder without manifest.json, or whose manifest was made for other settings, is never read as a cache,
and prepare_cache refuses to write into a folder made for other settings. Concurrent prepares of one
folder take turns (a filelock on its .lock file).

An array, once an index names it, is never replaced: a reader holds an entry's index (the frame numbers of
its rows) and opens the array it names at every read. Where an entry must be written again for the same
settings (its sample's frames changed), the new rows go to a new file, `samples/<name>+<n>.npy`, which the
new index names ("array"); the old file stays for the readers of the old index.

Resizing: frames are resized with exactly the operation VideoTransform applies (data.transform.interpolation:
torch bilinear with antialias on float frames in [0, 1], or PIL's nearest neighbour) and rounded to uint8;
VideoTransform then skips its own resize because the frames already have the target size. The cached path
therefore differs from reading the raw frames only by that rounding: at most half a uint8 step (0.5 / 255)
per pixel before normalisation, and nothing at all where the raw frames already have the target size or are
resized with nearest. The settings record the resize method, so a run with another interpolation never reads
the cache, and frames the cache lacks are resized with the cache's own method.

There is no implicit cache location: without data.cache_dir no cache is read or written
(`resolve_cache_dir`); a cache is large and belongs where the user puts it (e.g. a node-local disk).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from t2cr.data.frames import FrameSource, VideoFileSource, build_frame_source
from t2cr.data.samples import Sample
from t2cr.data.transforms import CHUNK_FRAMES, check_interpolation, resize_frames
from t2cr.io import atomic_write, file_lock, read_json, remove_temporaries, write_json

log = logging.getLogger(__name__)

WRITER = "t2cr.data.cache"
CACHE_FORMAT = 1
RESIZE_METHOD = "torch-bilinear-antialias"  # bump with any change of resize_frames
# the resize method a cache records for each data.transform.interpolation; bilinear keeps the name caches had
# before the option existed, so they stay valid
RESIZE_METHODS = {"bilinear": RESIZE_METHOD, "nearest": "pil-nearest"}
SETTINGS_FILE = "settings.json"
MANIFEST_FILE = "manifest.json"
SAMPLES_DIR = "samples"
LOCK_FILE = ".lock"
USE_CACHE_MODES = ("auto", "never", "require")
SETTINGS_FOLDER_PREFIX = "frames-"
_SETTINGS_FOLDER = re.compile(r"frames-[0-9a-f]{16}")
ARRAY_SEPARATOR = "+"  # between an entry's name and the number of a rewritten array: no entry name holds it

ProgressFn = Callable[[int, int], None]  # (samples done, samples in all)


class CacheMissError(KeyError):
    """A sample or frame that the cache does not hold, read without a fallback source."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class CacheUnavailableError(RuntimeError):
    """data.use_cache=require without a complete cache for the data settings."""


# ---------------------------------------------------------------------------------------------- settings


def resolve_cache_dir(config) -> Path | None:
    """The cache folder of a DataConfig: data.cache_dir, or None (no cache) when it is not set."""
    return Path(config.cache_dir).expanduser() if config.cache_dir else None


def cache_identity(config) -> dict[str, Any]:
    """The data settings that determine a cache's content."""
    identity: dict[str, Any] = {
        "name": config.name, "format": config.format, "root": str(config.root), "source": config.source,
        "num_frames": int(config.num_frames), "frame_selection": config.frame_selection,
        "train_shift": int(config.train_shift),
    }
    if config.source == "video":
        identity["video"] = {"pattern": config.video.pattern, "first_frame": int(config.video.first_frame)}
    else:
        identity["frame_pattern"] = config.frame_pattern
    return identity


def resize_method(interpolation: str) -> str:
    """The resize method a cache made with data.transform.interpolation=`interpolation` records."""
    return RESIZE_METHODS[check_interpolation(interpolation)]


def interpolation_of(settings: dict[str, Any], where: Path) -> str:
    """The interpolation of a cache's settings or manifest; one written before the key existed is bilinear."""
    method = settings.get("resize_method", RESIZE_METHOD)
    for interpolation, recorded in RESIZE_METHODS.items():
        if recorded == method:
            return interpolation
    raise ValueError(f"{where} was resized with {method!r}, which this t2cr does not know "
                     f"(it knows {sorted(RESIZE_METHODS.values())}); prepare the cache again")


def cache_settings(config, resize_hw: Sequence[int] | None = None) -> dict[str, Any]:
    """What a cache made for `config` records (and what a run compares with its manifest)."""
    resize = config.transform.resize if resize_hw is None else resize_hw
    return {"writer": WRITER, "format_version": CACHE_FORMAT, "resize": [int(v) for v in resize],
            "resize_method": resize_method(config.transform.interpolation), "data": cache_identity(config)}


def settings_digest(settings: dict[str, Any]) -> str:
    """16 hex digits of the sha256 of `settings` (as JSON with sorted keys): the name of their cache folder."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def settings_folder(cache_dir: str | os.PathLike, settings: dict[str, Any]) -> Path:
    """The folder under data.cache_dir that holds the cache made for `settings` (cache_settings)."""
    return Path(cache_dir) / f"{SETTINGS_FOLDER_PREFIX}{settings_digest(settings)}"


def cache_folder(cache_dir: str | os.PathLike, settings: dict[str, Any]) -> Path:
    """The cache folder for `settings` under data.cache_dir: data.cache_dir itself where it is a cache of the
    flat layout made for these settings (written before caches had one folder per settings), else
    settings_folder. Both are only ever written for these settings."""
    cache_dir = Path(cache_dir)
    if read_json(cache_dir / SETTINGS_FILE) == settings:
        return cache_dir
    return settings_folder(cache_dir, settings)


def _settings_without_config(reader, raw_source, resize: list[int], interpolation: str) -> dict[str, Any]:
    pattern = getattr(raw_source, "pattern", None)
    data = {"name": None, "format": None, "root": str(getattr(raw_source, "root", "")),
            "source": "video" if isinstance(raw_source, VideoFileSource) else "jpeg",
            "num_frames": int(reader.num_frames), "frame_selection": reader.selection,
            "train_shift": int(reader.train_shift)}
    if data["source"] == "video":
        data["video"] = {"pattern": pattern, "first_frame": int(getattr(raw_source, "first_frame", 0))}
    else:
        data["frame_pattern"] = pattern
    return {"writer": WRITER, "format_version": CACHE_FORMAT, "resize": resize,
            "resize_method": resize_method(interpolation), "data": data}


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def entry_name(sample: Sample) -> str:
    """File stem of a sample in the cache: its key, with a short hash where the key is not a safe name."""
    key = sample.key_str
    name = _UNSAFE.sub("_", key)
    if name != key or not name or name.startswith("."):
        name = f"{name.lstrip('.')}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"
    return name


def settings_difference(recorded: dict[str, Any], expected: dict[str, Any]) -> str | None:
    """The first setting in which a cache's recorded settings (or manifest) differ from `expected`, or None."""
    for field_name, value in expected.items():
        if field_name != "data" and recorded.get(field_name) != value:
            return f"made with {field_name}={recorded.get(field_name)!r}, the config has {value!r}"
    cached = recorded.get("data") or {}
    for field_name, value in expected["data"].items():
        if cached.get(field_name) != value:
            return f"made for data.{field_name}={cached.get(field_name)!r}, the config has {value!r}"
    return None


def array_path(samples_dir: Path, name: str, index: dict) -> Path:
    """The .npy file an entry's index names: samples/<name>.npy, or the rewritten one its "array" names."""
    array = index.get("array", f"{name}.npy")
    if not isinstance(array, str) or Path(array).name != array or not array.endswith(".npy"):
        raise ValueError(f"{samples_dir / name}.json names the array {array!r}, which is no file of {samples_dir}")
    return samples_dir / array


def _entry_complete(samples_dir: Path, name: str) -> bool:
    index = read_json(samples_dir / f"{name}.json")
    return isinstance(index, dict) and array_path(samples_dir, name, index).is_file()


def _folder_status(folder: Path, expected: dict[str, Any]) -> str:
    """'complete', or why this cache folder cannot serve the settings `expected`."""
    manifest = read_json(folder / MANIFEST_FILE)
    if not isinstance(manifest, dict):
        return f"{folder} has no {MANIFEST_FILE} (never prepared, or the prepare did not finish)"
    difference = settings_difference(manifest, expected)
    if difference is not None:
        return difference
    for name in manifest.get("entries", []):
        if not _entry_complete(folder / SAMPLES_DIR, name):
            return f"entry {name} is missing"
    return "complete"


def cache_status(cache_dir: str | os.PathLike | None, config) -> str:
    """'complete', or why data.cache_dir cannot serve `config` (no cache, other settings, files missing)."""
    if cache_dir is None:
        return "data.cache_dir is not set"
    cache_dir = Path(cache_dir)
    if not cache_dir.is_dir():
        return f"{cache_dir} does not exist"
    expected = cache_settings(config)
    folder = cache_folder(cache_dir, expected)
    if folder == cache_dir or folder.is_dir():
        return _folder_status(folder, expected)
    flat = read_json(cache_dir / MANIFEST_FILE)
    difference = settings_difference(flat, expected) if isinstance(flat, dict) else None
    if difference is not None:  # a cache of the flat layout made for other settings: say which differ
        return difference
    return f"{cache_dir} holds no frame cache for these data settings ({folder.name} does not exist)"


# ---------------------------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class _Entry:
    array: Path
    numbers: np.ndarray  # sorted frame numbers of the rows
    frame_count: int | None


class CachedFrameSource:
    """FrameSource over a prepared cache; frames it does not hold come from `fallback` (resized alike).

    Without a fallback, a sample or frame that is not cached is a CacheMissError (a KeyError).
    """

    def __init__(self, cache_dir: str | os.PathLike, fallback: FrameSource | None = None) -> None:
        self.cache_dir = Path(cache_dir)
        self.fallback = fallback
        settings = read_json(self.cache_dir / MANIFEST_FILE) or read_json(self.cache_dir / SETTINGS_FILE)
        if not isinstance(settings, dict) or "resize" not in settings:
            raise FileNotFoundError(f"{self.cache_dir} is not a frame cache (no {MANIFEST_FILE} or {SETTINGS_FILE}); "
                                    "write one with t2cr-prepare")
        self.resize = tuple(int(v) for v in settings["resize"])
        # frames the cache lacks are resized as the cached ones were, whatever the run's own setting
        self.interpolation = interpolation_of(settings, self.cache_dir)
        self._entries: dict[str, _Entry | None] = {}

    def entry(self, sample: Sample) -> _Entry | None:
        name = entry_name(sample)
        if name not in self._entries:
            # the index and the array it names are read together, once: that array never changes
            index = read_json(self.cache_dir / SAMPLES_DIR / f"{name}.json")
            array = array_path(self.cache_dir / SAMPLES_DIR, name, index) if isinstance(index, dict) else None
            if array is not None and array.is_file():
                count = index.get("frame_count")
                self._entries[name] = _Entry(array, np.asarray(index["frames"], dtype=np.int64),
                                             None if count is None else int(count))
            else:
                self._entries[name] = None
        return self._entries[name]

    def frame_count(self, sample: Sample) -> int:
        entry = self.entry(sample)
        if entry is not None and entry.frame_count is not None:
            return entry.frame_count  # the count the cached frames were chosen with
        if self.fallback is not None:
            return self.fallback.frame_count(sample)
        if entry is not None and len(entry.numbers):
            return int(entry.numbers[-1]) + 1
        raise CacheMissError(f"sample {sample.key_str} is not in the frame cache {self.cache_dir} and there is no "
                             "raw source to count its frames")

    def read(self, sample: Sample, frame_numbers: Sequence[int]) -> np.ndarray:
        numbers = np.asarray(frame_numbers, dtype=np.int64).reshape(-1)
        entry = self.entry(sample)
        if entry is None:
            if self.fallback is None:
                raise CacheMissError(f"sample {sample.key_str} is not in the frame cache {self.cache_dir} "
                                     f"(run t2cr-prepare with this data.cache_dir, or data.use_cache=auto)")
            return resize_frames(self.fallback.read(sample, numbers), self.resize, self.interpolation)
        array = np.load(entry.array, mmap_mode="r")
        rows = np.clip(np.searchsorted(entry.numbers, numbers), 0, max(len(entry.numbers) - 1, 0))
        hit = entry.numbers[rows] == numbers if len(entry.numbers) else np.zeros(len(numbers), dtype=bool)
        if hit.all():
            return np.asarray(array[rows])
        missing = numbers[~hit]
        if self.fallback is None:
            held = f"{entry.numbers[0]}..{entry.numbers[-1]}" if len(entry.numbers) else "none"
            raise CacheMissError(f"frames {sorted(set(missing.tolist()))[:5]} of sample {sample.key_str} are not in "
                                 f"the frame cache {entry.array} (it holds frames {held}); prepare the cache with "
                                 "the run's data.num_frames / frame_selection / train_shift")
        out = np.empty((len(numbers), *array.shape[1:]), dtype=np.uint8)
        out[hit] = array[rows[hit]]
        out[~hit] = resize_frames(self.fallback.read(sample, missing), array.shape[1:3], self.interpolation)
        return out


def open_frame_source(config, raw: FrameSource | None = None) -> FrameSource:
    """The frame source a run reads, after data.use_cache.

    auto: the cache in data.cache_dir when it is complete and made for these settings (frames it lacks
    come from the raw source), the raw source otherwise; never: the raw source; require: the cache, with
    no raw fallback (the raw frames need not exist, e.g. the cache was copied to a node), or an error.
    """
    mode = config.use_cache
    if mode not in USE_CACHE_MODES:
        raise ValueError(f"unknown data.use_cache {mode!r}; expected one of {USE_CACHE_MODES}")
    raw = build_frame_source(config) if raw is None else raw
    if mode == "never":
        return raw
    cache_dir = resolve_cache_dir(config)
    status = cache_status(cache_dir, config)
    if status == "complete":
        folder = cache_folder(cache_dir, cache_settings(config))
        log.info("reading frames from the cache %s", folder)
        return CachedFrameSource(folder, fallback=None if mode == "require" else raw)
    if mode == "require":
        where = f"data.cache_dir={cache_dir}" if cache_dir is not None else "data.cache_dir=<folder>"
        raise CacheUnavailableError(f"data.use_cache=require but there is no usable frame cache: {status}. "
                                    f"Run `t2cr-prepare data={config.name} {where}` (with this run's other "
                                    "data.* overrides) first, or set data.use_cache=auto")
    if cache_dir is not None:
        log.warning("frame cache %s not used (%s); reading the raw frames. Run `t2cr-prepare data=%s "
                    "data.cache_dir=%s` (with this run's other data.* overrides) to build it", cache_dir, status,
                    config.name, cache_dir)
    return raw


# ---------------------------------------------------------------------------------------------- writing


@dataclass
class PrepareSummary:
    cache_dir: Path
    samples: int  # in the cache for this prepare
    prepared: int  # written now
    reused: int  # already cached with the same settings
    frames: int
    bytes: int
    seconds: float


def save_array(path: Path, frames: np.ndarray) -> None:
    with open(path, "wb") as handle:  # a handle: np.save would add ".npy" to a path without it
        np.save(handle, frames)


def _claim_folder(folder: Path) -> None:
    """Create the folder; refuse one that holds anything else than frame caches (flat or per settings)."""
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"data.cache_dir={folder} is a file, not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    own = {SETTINGS_FILE, MANIFEST_FILE, SAMPLES_DIR}
    foreign = sorted(p.name for p in folder.iterdir()
                     if p.name not in own and not p.name.startswith(".") and not _SETTINGS_FOLDER.fullmatch(p.name))
    if foreign:
        raise ValueError(f"data.cache_dir={folder} holds other files than a frame cache ({', '.join(foreign[:5])}"
                         f"{' ...' if len(foreign) > 5 else ''}); choose an empty or new folder")


def claim(cache_dir: Path) -> None:
    """Create a cache folder and its samples/; refuse one that holds anything else than a frame cache."""
    _claim_folder(cache_dir)
    (cache_dir / SAMPLES_DIR).mkdir(exist_ok=True)


def prepare_folder(cache_dir: str | os.PathLike, settings: dict[str, Any]) -> Path:
    """The cache folder to write the cache for `settings` into, under data.cache_dir (cache_folder); refuses a
    data.cache_dir that holds other things than frame caches."""
    cache_dir = Path(cache_dir)
    _claim_folder(cache_dir)
    return cache_folder(cache_dir, settings)


def cached_index(samples_dir: Path, name: str, numbers: np.ndarray, resize: list[int]) -> dict | None:
    """The sample's index when its files are complete for these frames and this resize, else None."""
    index = read_json(samples_dir / f"{name}.json")
    if not isinstance(index, dict):
        return None
    try:
        size = array_path(samples_dir, name, index).stat().st_size
    except OSError:
        return None
    if (index.get("frames") != numbers.tolist() or index.get("bytes") != size
            or list(index.get("shape", []))[1:3] != resize):
        return None
    return index


def _resize_of(resize_hw: Sequence[int] | None, config) -> list[int]:
    if resize_hw is None:
        if config is None:
            raise ValueError("prepare_cache needs resize_hw or config")
        resize_hw = config.transform.resize
    return [int(v) for v in resize_hw]


def unique_entries(samples: Sequence[Sample]) -> dict[str, Sample]:
    """Entry name -> sample, each sample once; two different samples on one name are refused."""
    unique: dict[str, Sample] = {}
    for sample in samples:
        name = entry_name(sample)
        if name in unique and unique[name] != sample:
            raise ValueError(f"samples {unique[name].key_str} and {sample.key_str} share the cache entry {name} but "
                             "differ")
        unique.setdefault(name, sample)
    return unique


def adopt_settings(cache_dir: Path, settings: dict[str, Any]) -> None:
    """Record `settings` in a new cache folder; refuse a folder made for other settings (or for unknown ones).

    Such a folder is never emptied and rebuilt: a run may be reading it, and would go on reading the new
    arrays without any error (issue 29). Each settings' cache has its own folder (settings_folder).
    """
    recorded = read_json(cache_dir / SETTINGS_FILE)
    if recorded == settings:
        return
    if recorded is None and not any((cache_dir / SAMPLES_DIR).glob("*.json")):
        write_json(cache_dir / SETTINGS_FILE, settings, indent=1)
        return
    difference = (settings_difference(recorded, settings) if isinstance(recorded, dict)
                  else f"{SETTINGS_FILE} is missing or unreadable")
    name = (settings.get("data") or {}).get("name") or "<name>"
    raise ValueError(f"{cache_dir} holds a frame cache made for other data settings ({difference}), which is never "
                     "rebuilt in place (a run may be reading it): give this one its own folder, e.g. run "
                     f"`t2cr-prepare data={name} data.cache_dir={cache_dir}` (with the run's data.* overrides), which "
                     "writes it into a subfolder named by its settings")


start_over_unless_made_for = adopt_settings  # the name t2cr.data.video_import imports


_Todo = tuple[str, Sample, np.ndarray]  # entry name, sample, frame numbers to cache


def _split_cached(unique: dict[str, Sample], reader, samples_dir: Path,
                  resize: list[int]) -> tuple[dict[str, dict], list[_Todo]]:
    """The indexes of the entries already complete, and the entries still to write."""
    indexes: dict[str, dict] = {}
    todo: list[_Todo] = []
    for name, sample in unique.items():
        numbers = np.asarray(reader.candidate_frames(sample), dtype=np.int64)
        index = cached_index(samples_dir, name, numbers, resize)
        if index is None:
            todo.append((name, sample, numbers))
        else:
            indexes[name] = index
    return indexes, todo


def _prepare_entry(raw_source: FrameSource, samples_dir: Path, resize: list[int], interpolation: str, name: str,
                   sample: Sample, numbers: np.ndarray) -> tuple[str, dict]:
    """Decode, resize and write one entry: its .npy, then its .json index (which marks it complete)."""
    frames = _decode(raw_source, sample, numbers, resize, interpolation)
    count = int(raw_source.frame_count(sample)) if sample.end_frame is None else None
    return name, write_entry(samples_dir, name, sample, numbers, frames, count)


def write_entry(samples_dir: Path, name: str, sample: Sample, numbers: np.ndarray, frames: np.ndarray,
                frame_count: int | None) -> dict:
    """Write one entry (prepare_cache and the video import): its array, then its .json index, which marks it
    complete. An entry written again gets a new array file that its new index names (new_array_path)."""
    array = new_array_path(samples_dir, name)
    size = atomic_write(array, lambda to: save_array(to, frames))
    index = {"key": sample.key_str, "frames": numbers.tolist(), "frame_count": frame_count,
             "shape": list(frames.shape), "bytes": size}
    if array.name != f"{name}.npy":
        index["array"] = array.name
    write_json(samples_dir / f"{name}.json", index, indent=1)
    return index


def new_array_path(samples_dir: Path, name: str) -> Path:
    """Where to write an entry's array: samples/<name>.npy while no index exists (no reader can have read one),
    else a file no index has named yet, so that a reader holding the old index keeps reading the old rows."""
    if not (samples_dir / f"{name}.json").exists():
        return samples_dir / f"{name}.npy"
    number = 1
    while (samples_dir / f"{name}{ARRAY_SEPARATOR}{number}.npy").exists():
        number += 1
    return samples_dir / f"{name}{ARRAY_SEPARATOR}{number}.npy"


def run_each(task: Callable[..., Any], items: Sequence[tuple], workers: int) -> Iterator[Any]:
    """`task(*item)` for every item, results as they finish: in order on this thread for workers <= 1,
    else on `workers` threads. The first error cancels what has not started and is raised."""
    if workers <= 1:
        for item in items:
            yield task(*item)
        return
    if not items:
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="t2cr-prepare") as pool:
        pending = {pool.submit(task, *item) for item in items}
        while pending:
            finished, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for future in finished:
                if future.exception() is not None:
                    for other in pending:
                        other.cancel()
                    raise future.exception()
                yield future.result()


def write_manifest(cache_dir: Path, settings: dict[str, Any], names: list[str],
                    indexes: dict[str, dict]) -> tuple[int, int]:
    """Write the manifest (last: it marks the cache complete) unless it is there already; (frames, bytes)."""
    frames = sum(int(index["shape"][0]) for index in indexes.values())
    size = sum(int(index["bytes"]) for index in indexes.values())
    manifest = {**settings, "samples": len(names), "frames": frames, "bytes": size, "entries": sorted(names)}
    if read_json(cache_dir / MANIFEST_FILE) != manifest:
        write_json(cache_dir / MANIFEST_FILE, manifest, indent=1)
    return frames, size


def prepare_cache(samples: Sequence[Sample], reader, raw_source: FrameSource, cache_dir: str | os.PathLike,
                  resize_hw: Sequence[int] | None = None, *, config=None, workers: int = 2,
                  progress: ProgressFn | None = None) -> PrepareSummary:
    """Decode every sample's candidate frames once from `raw_source`, resize them and store them.

    `reader` (a SampleReader) chooses the frames (candidate_frames, over `raw_source`); `resize_hw`
    (height, width) defaults to config.transform.resize; `config` (the DataConfig) names the data
    settings in the manifest that a run compares with its own (without it a run never picks the cache
    up by itself, see open_frame_source). The interpolation is config.transform.interpolation, without a
    config the reader's transform's. Samples already cached with the same settings are skipped.

    `cache_dir` is the cache folder itself; a folder made for other settings is refused, never rebuilt
    (adopt_settings). Under a data.cache_dir, prepare_folder gives the folder for the settings.
    """
    start = time.perf_counter()
    cache_dir = Path(cache_dir)
    resize = _resize_of(resize_hw, config)
    if reader.source is not raw_source:
        reader = copy.copy(reader)
        reader.source = raw_source
    interpolation = config.transform.interpolation if config is not None else reader.transform.interpolation
    settings = (cache_settings(config, resize) if config is not None
                else _settings_without_config(reader, raw_source, resize, interpolation))
    unique = unique_entries(samples)

    claim(cache_dir)
    samples_dir = cache_dir / SAMPLES_DIR
    with file_lock(cache_dir / LOCK_FILE):
        remove_temporaries(cache_dir)  # left by a killed prepare
        remove_temporaries(samples_dir)
        adopt_settings(cache_dir, settings)
        indexes, todo = _split_cached(unique, reader, samples_dir, resize)
        reused = len(indexes)
        if todo:
            (cache_dir / MANIFEST_FILE).unlink(missing_ok=True)  # incomplete until the new one is written
        if progress is not None:
            progress(reused, len(unique))
        prepare_one = functools.partial(_prepare_entry, raw_source, samples_dir, resize, interpolation)
        for name, index in run_each(prepare_one, todo, workers):
            indexes[name] = index
            if progress is not None:
                progress(len(indexes), len(unique))
        frames, size = write_manifest(cache_dir, settings, list(unique), indexes)
    return PrepareSummary(cache_dir, len(unique), len(todo), reused, frames, size, time.perf_counter() - start)


def _decode(raw_source: FrameSource, sample: Sample, numbers: np.ndarray, resize: list[int],
            interpolation: str) -> np.ndarray:
    if len(numbers) == 0:
        return np.empty((0, *resize, 3), dtype=np.uint8)
    # a video is decoded from its start on every read: read it once; image files a chunk at a time
    chunk = len(numbers) if isinstance(raw_source, VideoFileSource) else CHUNK_FRAMES
    parts = [resize_frames(raw_source.read(sample, numbers[i:i + chunk]), resize, interpolation)
             for i in range(0, len(numbers), chunk)]
    return np.concatenate(parts)


__all__ = [
    "CacheMissError",
    "CacheUnavailableError",
    "CachedFrameSource",
    "PrepareSummary",
    "cache_folder",
    "cache_identity",
    "cache_settings",
    "cache_status",
    "entry_name",
    "open_frame_source",
    "prepare_cache",
    "prepare_folder",
    "resize_frames",
    "resize_method",
    "resolve_cache_dir",
    "settings_folder",
]
