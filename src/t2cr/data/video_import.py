"""Published videos -> the uint8 frame cache, each video decoded once (`t2cr-prepare videos=<folder>`).

The datasets are published as videos (MTL-AQA: one competition video per event, a sample is a frame range
of it; AQA-7: one clip per sample; JIGSAWS: one .avi per trial and camera). `import_videos` decodes every
video once, front to back, keeps the frames its samples can read (SampleReader.candidate_frames, the frames
`prepare_cache` stores), resizes them with the cache's resize and interpolation and writes them in the cache's
own format: `settings.json`, `samples/<entry>.npy` + `.json` and `manifest.json`, through t2cr.data.cache's
entry names, settings and manifest. A run reads the result with CachedFrameSource / open_frame_source unchanged.
Optionally the decoded frames are also written as JPEG files in the layout of `data.frame_pattern`.

Frame numbering: decoded frame i of a video (0-based, in the order the decoder hands them out: every frame
of the stream once, none repeated or dropped because of its timestamps) is annotation frame
`i + data.video.first_frame`. first_frame is 1 for MTL-AQA and AQA-7: their reference frames were
extracted with ffmpeg's default numbering (`ffmpeg -i 01.mp4 %06d.jpg` names the first frame 000001.jpg,
MTL-AQA's frame_extractor.sh; AQA-7's clips hold img_00001.jpg .. img_00103.jpg), and start_frame /
end_frame count those files. A sample read whole (JIGSAWS) numbers its frames from 0, as a listed
folder does, whatever first_frame is. On a constant-frame-rate file this equals ffmpeg's extraction; on a variable-frame-rate file
ffmpeg would by default repeat or drop frames to a constant rate, which this import does not (ffmpeg's
`-fps_mode passthrough`).

A sample whose frames are not all in its video (a range that starts before the first frame or ends after
the last) is not cached; it is reported in the summary (`ImportSummary.outside`).

Resuming: each finished video leaves `.video_import/<digest>.json` in the cache folder (the video's size and
modification time, its frame count, the samples outside it, the import settings). A rerun skips every video
whose record matches and whose entries are complete, so a killed import continues where it stopped; every
file is written atomically, so none is ever truncated.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from t2cr.data.cache import (
    LOCK_FILE,
    MANIFEST_FILE,
    SAMPLES_DIR,
    cache_settings,
    cached_index,
    claim,
    run_each,
    start_over_unless_made_for,
    unique_entries,
    write_entry,
    write_manifest,
)
from t2cr.data.frames import fill_pattern, path_under, video_name
from t2cr.data.reading import SampleReader
from t2cr.data.samples import Sample
from t2cr.data.transforms import CHUNK_FRAMES, resize_frames
from t2cr.io import file_lock, read_json, remove_temporaries, temporary_path, write_json
from t2cr.optional import require

log = logging.getLogger(__name__)

RECORD_DIR = ".video_import"  # hidden: a cache folder holds nothing else a cache reader would see
LISTED_JPEG = "{folder}/{frame:06d}.jpg"  # JPEG names for a listed layout (data.frame_pattern null), from 0
FRAMES_PER_REPORT = 64  # decoded frames between two progress reports of a worker


class VideoImportError(ValueError):
    """A problem with the user's videos or settings; the message names the file or key and the fix."""


# ---------------------------------------------------------------------------------------------- videos


@dataclass(frozen=True)
class VideoJob:
    """One video and the samples (cache entry name, sample) whose frames it holds."""

    name: str  # the file's path under the videos folder, as data.video.pattern names it
    path: Path
    samples: tuple[tuple[str, Sample], ...]


def plan_videos(samples: Sequence[Sample], videos_dir: str | os.PathLike, pattern: str) -> list[VideoJob]:
    """The videos to decode, each with every sample it serves (a sample once), in file-name order."""
    by_video: dict[str, list[tuple[str, Sample]]] = {}
    for name, sample in unique_entries(samples).items():
        by_video.setdefault(video_name(pattern, sample), []).append((name, sample))
    return [VideoJob(name, path_under(videos_dir, name, f"the video of sample {items[0][1].key_str}"), tuple(items))
            for name, items in sorted(by_video.items())]


def missing_videos(jobs: Sequence[VideoJob]) -> list[VideoJob]:
    return [job for job in jobs if not job.path.is_file()]


def decoded_frames(path: Path, threads: int = 0) -> Iterator[Any]:
    """The video's frames (av.VideoFrame) in decoding order; `threads` decoder threads (0: FFmpeg chooses)."""
    av = require("av", "reading video files", "av")

    try:
        container = av.open(str(path))
    except av.error.FFmpegError as error:
        raise VideoImportError(f"cannot open video {path}: {error}; re-download it (or point videos= / "
                               "data.video.pattern at the right files)") from None
    with container:
        if not container.streams.video:
            raise VideoImportError(f"{path} holds no video stream; replace it with the published video")
        stream = container.streams.video[0]
        stream.codec_context.thread_type = "AUTO"  # frame and slice threads: several frames in flight
        stream.codec_context.thread_count = threads
        try:
            yield from container.decode(stream)
        except av.error.FFmpegError as error:
            raise VideoImportError(f"cannot decode video {path}: {error}; re-download it") from None


def count_packets(path: Path) -> int:
    """The video's frame count from its packets, read without decoding. Containers' own frame counts are often
    wrong (AVI, variable frame rates); this one is checked against the decoded count all the same."""
    av = require("av", "reading video files", "av")

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoImportError(f"{path} holds no video stream; replace it with the published video")
            stream = container.streams.video[0]
            return sum(1 for packet in container.demux(stream) if packet.size)
    except av.error.FFmpegError as error:
        raise VideoImportError(f"cannot read video {path}: {error}; re-download it") from None


# ---------------------------------------------------------------------------------------------- options


@dataclass(frozen=True)
class FrameSelection:
    """Which frames a run can read of a sample: SampleReader's rule for the data settings."""

    num_frames: int
    selection: str
    train_shift: int
    shifted_keys: frozenset[str] | None = None  # the samples training reads (None: all); others are not shifted

    @classmethod
    def of(cls, config, shifted_keys: Collection[str] | None = None) -> FrameSelection:
        keys = None if shifted_keys is None else frozenset(shifted_keys)
        return cls(int(config.num_frames), config.frame_selection, int(config.train_shift), keys)

    def candidates(self, sample: Sample, frame_count: int | None) -> np.ndarray:
        """Annotation frame numbers of every frame a read of `sample` can take (sorted, unique); `frame_count`
        is its video's, needed only by samples read whole (no end frame)."""
        reader = SampleReader(_KnownFrameCount(frame_count), None, self.num_frames, self.selection, self.train_shift,
                              self.shifted_keys)
        return np.asarray(reader.candidate_frames(sample), dtype=np.int64)


class _KnownFrameCount:
    """The frame count SampleReader asks its source for, known from the decoded video."""

    def __init__(self, count: int | None) -> None:
        self.count = count

    def frame_count(self, sample: Sample) -> int:
        if self.count is None:
            raise RuntimeError(f"sample {sample.key_str} is read whole: its video's frame count is needed first")
        return self.count

    def read(self, sample: Sample, frame_numbers: Sequence[int]) -> np.ndarray:
        raise NotImplementedError("frames come from the decoded video")


@dataclass(frozen=True)
class JpegOutput:
    """Also write the decoded frames as JPEG files under `root` in the reference layout: `pattern` is
    data.frame_pattern (the frames the samples can read, named by annotation frame number); None is a listed
    layout (every frame of the video, `{folder}/{frame:06d}.jpg` from 0, in name order)."""

    root: Path
    pattern: str | None
    quality: int = 95

    def spec(self) -> dict[str, Any]:
        return {"root": str(Path(self.root).resolve()), "pattern": self.pattern, "quality": self.quality}


# ---------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class OutsideSample:
    """A sample whose frame range is not all in its video: reported, not cached."""

    key: str
    entry: str
    video: str
    first: int  # its first and last candidate frame (annotation numbers)
    last: int
    video_frames: int | None  # frames in the video (None: not decoded to its end)
    first_frame: int  # the annotation number of the video's first frame

    def describe(self) -> str:
        if self.video_frames is None:
            held = f"its frames are numbered from {self.first_frame}"
        else:
            held = (f"it has {self.video_frames} frames, numbered {self.first_frame}.."
                    f"{self.first_frame + self.video_frames - 1}")
        return f"{self.key}: frames {self.first}..{self.last} of {self.video} ({held})"


@dataclass
class VideoResult:
    job: VideoJob
    indexes: dict[str, dict]  # entry name -> its index (.json content), for every sample cached
    outside: list[OutsideSample]
    frames: int | None  # the video's frame count (None: not decoded to its end, and no sample needed it)
    decoded: int  # frames decoded now (0 for a video finished before)
    jpegs: int
    reused: bool


@dataclass
class ImportSummary:
    cache_dir: Path
    videos: int
    decoded_videos: int  # decoded now
    reused_videos: int  # finished by an earlier import with the same settings
    samples: int  # cached
    frames: int  # cached frames
    bytes: int
    outside: list[OutsideSample]
    decoded_frames: int
    jpegs: int
    seconds: float

    @property
    def frames_per_second(self) -> float:
        return self.decoded_frames / self.seconds if self.seconds > 0 else 0.0


# ---------------------------------------------------------------------------------------------- decoding


@dataclass
class _Gather:
    """One sample's frames, collected row by row while its video is decoded."""

    name: str
    sample: Sample
    numbers: np.ndarray  # annotation frame numbers: the entry's rows
    indices: np.ndarray  # the decoded-frame index of each row
    whole: bool  # read whole: its frames depend on the video's frame count
    rows: np.ndarray | None = None
    filled: int = 0

    @property
    def complete(self) -> bool:
        return self.filled == len(self.indices)

    def put(self, row: int, frame: np.ndarray) -> None:
        if self.rows is None:
            self.rows = np.empty((len(self.indices), *frame.shape), dtype=np.uint8)
        self.rows[row] = frame
        self.filled += 1


@dataclass(frozen=True)
class _Pass:
    decoded: int  # frames decoded
    reached_end: bool  # the whole stream was decoded: `decoded` is the video's frame count
    jpegs: int


JpegTargets = Callable[[int], Sequence[Path]]  # decoded-frame index -> the JPEG files to write it to


@dataclass
class _Context:
    """What every video's import shares."""

    samples_dir: Path
    resize: list[int]
    interpolation: str  # data.transform.interpolation: frames resized as a run's VideoTransform would
    selection: FrameSelection
    first_frame: int
    jpeg: JpegOutput | None
    threads: int  # decoder threads per video
    report_frames: Callable[[int], None]
    pool: ThreadPoolExecutor | None = None  # converts, writes and resizes chunks of decoded frames
    in_flight: int = 2  # chunks per video handed to the pool and not yet delivered

    def gathers(self, items: Sequence[tuple[str, Sample]], count: int | None) -> tuple[list[_Gather], list[_Gather]]:
        """The samples' gathers: those the video can hold, and those starting before its first frame."""
        inside, before = [], []
        for name, sample in items:
            whole = sample.end_frame is None
            numbers = self.selection.candidates(sample, count if whole else None)
            first = 0 if whole else self.first_frame  # a sample read whole numbers its frames from 0
            gather = _Gather(name, sample, numbers, numbers - first, whole)
            (before if len(numbers) and numbers[0] < first else inside).append(gather)
        return inside, before


def _write_jpeg(path: Path, rgb: np.ndarray, quality: int) -> None:
    """Whole or absent: a kill leaves at most a hidden temporary file."""
    from PIL import Image

    temporary = temporary_path(path)
    try:
        Image.fromarray(rgb).save(temporary, format="JPEG", quality=quality)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


@dataclass(frozen=True)
class _Chunk:
    """Decoded frames that something needs, processed together: colour conversion, JPEG files, resize."""

    frames: list[tuple[int, Any]]  # (decoded index, av.VideoFrame)
    wanted: frozenset[int]  # the indices whose resized frame goes into the cache
    targets: dict[int, Sequence[Path]]  # index -> JPEG files to write


def _process(chunk: _Chunk, resize: list[int], interpolation: str,
             quality: int) -> tuple[list[int], np.ndarray | None, int]:
    """(indices, their frames at the cache's size, JPEG files written); runs on the pool's threads."""
    indices, rgbs, jpegs = [], [], 0
    for index, frame in chunk.frames:
        rgb = frame.to_ndarray(format="rgb24")  # what VideoFileSource reads: the same pixels
        for target in chunk.targets.get(index, ()):
            _write_jpeg(target, rgb, quality)
            jpegs += 1
        if index in chunk.wanted:
            indices.append(index)
            rgbs.append(rgb)
    return indices, (resize_frames(np.stack(rgbs), resize, interpolation) if rgbs else None), jpegs


class _Pipeline:
    """Hands chunks of decoded frames to the pool (or processes them here without one) and their results to
    the samples' rows in decoding order, with a bounded number of chunks in flight (bounded memory)."""

    def __init__(self, ctx: _Context, wanted: dict[int, list[tuple[_Gather, int]]],
                 on_complete: Callable[[_Gather], None]) -> None:
        self.ctx, self.wanted, self.on_complete = ctx, wanted, on_complete
        self.pending: deque = deque()
        self.jpegs = 0
        self.quality = ctx.jpeg.quality if ctx.jpeg is not None else 0

    def submit(self, chunk: _Chunk) -> None:
        if self.ctx.pool is None:
            self._deliver(_process(chunk, self.ctx.resize, self.ctx.interpolation, self.quality))
            return
        self.pending.append(self.ctx.pool.submit(_process, chunk, self.ctx.resize, self.ctx.interpolation,
                                                 self.quality))
        while len(self.pending) > self.ctx.in_flight:
            self._deliver(self.pending.popleft().result())

    def drain(self) -> None:
        while self.pending:
            self._deliver(self.pending.popleft().result())

    def cancel(self) -> None:
        for future in self.pending:
            future.cancel()

    def _deliver(self, result: tuple[list[int], np.ndarray | None, int]) -> None:
        indices, resized, jpegs = result
        self.jpegs += jpegs
        for index, frame in zip(indices, resized if resized is not None else ()):
            for gather, row in self.wanted[index]:
                gather.put(row, frame)
                if gather.complete:
                    self.on_complete(gather)


def _decode_pass(path: Path, gathers: Sequence[_Gather], ctx: _Context, jpeg_targets: JpegTargets | None,
                 to_end: bool, on_complete: Callable[[_Gather], None]) -> _Pass:
    """Decode the video once, front to back: fill the gathers, write the JPEGs; stop after the last frame
    anything needs unless `to_end`. This thread only decodes; the pool converts, writes and resizes."""
    wanted: dict[int, list[tuple[_Gather, int]]] = {}
    for gather in gathers:
        for row, index in enumerate(gather.indices.tolist()):
            wanted.setdefault(index, []).append((gather, row))
    last = max(wanted, default=-1)
    pipeline = _Pipeline(ctx, wanted, on_complete)
    frames: list[tuple[int, Any]] = []
    targets: dict[int, Sequence[Path]] = {}
    decoded = unreported = 0
    reached_end = True
    stream = decoded_frames(path, ctx.threads)
    try:
        for index, frame in enumerate(stream):
            decoded, unreported = index + 1, unreported + 1
            jpegs = jpeg_targets(index) if jpeg_targets is not None else ()
            if jpegs:
                targets[index] = jpegs
            if index in wanted or jpegs:
                frames.append((index, frame))
            if len(frames) >= CHUNK_FRAMES:
                pipeline.submit(_Chunk(frames, frozenset(i for i, _ in frames if i in wanted), targets))
                frames, targets = [], {}
            if unreported >= FRAMES_PER_REPORT:
                ctx.report_frames(unreported)
                unreported = 0
            if index >= last and not to_end:
                reached_end = False
                break
        if frames:
            pipeline.submit(_Chunk(frames, frozenset(i for i, _ in frames if i in wanted), targets))
        pipeline.drain()
    finally:
        pipeline.cancel()  # after an error: drop what has not started
        stream.close()  # the container closes once no frame of it is in flight any more
    ctx.report_frames(unreported)
    if decoded == 0:
        raise VideoImportError(f"video {path} has no decodable frames; re-download it")
    return _Pass(decoded, reached_end, pipeline.jpegs)


def _jpeg_targets(job: VideoJob, gathers: Sequence[_Gather], ctx: _Context) -> tuple[JpegTargets | None, bool]:
    """Where each decoded frame goes as a JPEG file, and whether that needs the video decoded to its end."""
    jpeg = ctx.jpeg
    if jpeg is None:
        return None, False
    root = Path(jpeg.root)
    # every folder and file is checked to stay under jpeg_dir= before anything is created
    folders = {path_under(root, sample.frames, f"the JPEG folder of sample {sample.key_str}"): sample.frames
               for _, sample in job.samples}
    if jpeg.pattern is None:  # a listed layout: every frame, named in frame order
        for folder in sorted(folders):
            folder.mkdir(parents=True, exist_ok=True)
            remove_temporaries(folder)  # left by a killed import
        names = sorted(folders.values())
        return (lambda index: [fill_pattern(root, LISTED_JPEG, {"folder": name, "frame": index}, "a JPEG frame")
                               for name in names]), True
    by_index: dict[int, set[Path]] = {}
    for gather in gathers:
        what = f"a JPEG frame of sample {gather.sample.key_str}"
        for number, index in zip(gather.numbers.tolist(), gather.indices.tolist()):
            by_index.setdefault(index, set()).add(
                fill_pattern(root, jpeg.pattern, {"folder": gather.sample.frames, "frame": number}, what))
    for parent in {p.parent for paths in by_index.values() for p in paths}:
        parent.mkdir(parents=True, exist_ok=True)
        remove_temporaries(parent)
    return (lambda index: sorted(by_index.get(index, ()))), False


def _write_entry(samples_dir: Path, gather: _Gather, frame_count: int | None) -> dict:
    """The cache entry exactly as prepare_cache writes one: the .npy, then the .json index that marks it whole."""
    index = write_entry(samples_dir, gather.name, gather.sample, gather.numbers, gather.rows, frame_count)
    gather.rows = None  # written: free the frames while the video goes on
    return index


def _outside(job: VideoJob, gathers: Sequence[_Gather], frames: int | None, first_frame: int) -> list[OutsideSample]:
    return [OutsideSample(g.sample.key_str, g.name, job.name, int(g.numbers[0]), int(g.numbers[-1]), frames,
                          first_frame) for g in gathers]


def _import_video(job: VideoJob, ctx: _Context) -> VideoResult:
    """Decode one video once and write the cache entries of all its samples (and its JPEGs)."""
    indexes: dict[str, dict] = {}
    has_whole = any(sample.end_frame is None for _, sample in job.samples)
    # samples read whole choose their frames from the frame count: plan with the packet count, check it below
    count = count_packets(job.path) if has_whole else None
    inside, before = ctx.gathers(job.samples, count)

    def write_fixed(gather: _Gather) -> None:
        if not gather.whole:  # a whole sample waits until the frame count it was planned with is confirmed
            indexes[gather.name] = _write_entry(ctx.samples_dir, gather, None)

    targets, jpeg_to_end = _jpeg_targets(job, inside, ctx)
    done = _decode_pass(job.path, inside, ctx, targets, has_whole or jpeg_to_end, write_fixed)
    fixed, whole = [g for g in inside if not g.whole], [g for g in inside if g.whole]
    again = _Pass(0, True, 0)
    if whole and done.decoded != count:
        # rare (a packet that holds no frame, or two): the frames of a whole sample depend on the true count
        log.warning("%s: its packets count %d frames, %d were decoded; choosing the frames of its samples read whole "
                    "again and decoding it once more", job.path, count, done.decoded)
        count = done.decoded
        whole, before_again = ctx.gathers([(g.name, g.sample) for g in whole], count)
        before += before_again
        again = _decode_pass(job.path, whole, ctx, _jpeg_targets(job, whole, ctx)[0] if ctx.jpeg and ctx.jpeg.pattern
                             else None, False, lambda gather: None)
    for gather in whole:
        if gather.complete:
            indexes[gather.name] = _write_entry(ctx.samples_dir, gather, count)
    frames = done.decoded if done.reached_end else None
    beyond = [g for g in fixed + whole if not g.complete]
    return VideoResult(job, indexes, _outside(job, before + beyond, frames, ctx.first_frame), frames,
                       done.decoded + again.decoded, done.jpegs + again.jpegs, reused=False)


# ---------------------------------------------------------------------------------------------- resuming


def _record_path(cache_dir: Path, job: VideoJob) -> Path:
    return cache_dir / RECORD_DIR / f"{hashlib.sha1(job.name.encode()).hexdigest()[:16]}.json"


def _file_state(path: Path) -> dict[str, int]:
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _write_record(cache_dir: Path, identity: dict, result: VideoResult, jpeg: JpegOutput | None) -> None:
    record = {"identity": identity, "video": result.job.name, **_file_state(result.job.path), "frames": result.frames,
              "outside": [vars(o) for o in result.outside], "jpeg": None if jpeg is None else jpeg.spec()}
    write_json(_record_path(cache_dir, result.job), record, indent=1)


def _finished(job: VideoJob, cache_dir: Path, identity: dict, ctx: _Context) -> VideoResult | None:
    """The video's result when an earlier import finished it with these settings and its entries are whole."""
    record = read_json(_record_path(cache_dir, job))
    if not isinstance(record, dict) or record.get("identity") != identity or record.get("video") != job.name:
        return None
    if {k: record.get(k) for k in ("size", "mtime_ns")} != _file_state(job.path):
        return None  # the video file changed
    if ctx.jpeg is not None and record.get("jpeg") != ctx.jpeg.spec():
        return None
    outside = [OutsideSample(**o) for o in record.get("outside", [])]
    skipped = {o.entry for o in outside}
    indexes = {}
    for name, sample in job.samples:
        if name in skipped:
            continue
        if sample.end_frame is None and record.get("frames") is None:
            return None
        numbers = ctx.selection.candidates(sample, record.get("frames"))
        index = cached_index(ctx.samples_dir, name, numbers, ctx.resize)
        if index is None:
            return None
        indexes[name] = index
    return VideoResult(job, indexes, outside, record.get("frames"), 0, 0, reused=True)


# ---------------------------------------------------------------------------------------------- import


class _Progress:
    """Videos done and frames decoded, reported from the worker threads."""

    def __init__(self, total: int, report: Callable[[int, int, int], None] | None) -> None:
        self.total, self.report = total, report
        self.videos = self.frames = 0
        self._lock = threading.Lock()

    def add(self, videos: int = 0, frames: int = 0) -> None:
        with self._lock:
            self.videos += videos
            self.frames += frames
            if self.report is not None:
                self.report(self.videos, self.total, self.frames)


@contextmanager
def _torch_threads(count: int) -> Iterator[None]:
    """Torch's intra-op threads set to `count` for the block. The pool's threads are the parallelism; each resize
    spreading over every core as well oversubscribes them (2.5x slower measured on a busy 2-core machine)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def _pool(workers: int) -> Iterator[ThreadPoolExecutor | None]:
    if workers <= 1:
        yield None
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="t2cr-video-frames") as pool:
        yield pool


def import_videos(jobs: Sequence[VideoJob], config, cache_dir: str | os.PathLike, *, jpeg: JpegOutput | None = None,
                  workers: int = 2, progress: Callable[[int, int, int], None] | None = None,
                  shifted_keys: Collection[str] | None = None) -> ImportSummary:
    """Decode each job's video once into the frame cache in `cache_dir` (the format prepare_cache writes).

    `config` (the DataConfig) gives the frame selection, the resize, data.video.first_frame and the
    settings the manifest records (a run with the same data settings and data.cache_dir reads the cache).
    `workers` videos are decoded at a time; `progress(videos done, videos in all, frames decoded)` is called
    from the worker threads. Videos finished by an earlier import with the same settings are not decoded again.
    """
    start = time.perf_counter()
    cache_dir = Path(cache_dir)
    first_frame = int(config.video.first_frame)
    resize = [int(v) for v in config.transform.resize]
    settings = cache_settings(config, resize)
    identity = {"cache": settings, "pattern": config.video.pattern, "first_frame": first_frame}
    try:
        claim(cache_dir)
    except ValueError as error:  # a file, or a folder holding other things than a cache
        raise VideoImportError(str(error)) from None
    counter = _Progress(len(jobs), progress)
    ctx = _Context(cache_dir / SAMPLES_DIR, resize, config.transform.interpolation,
                   FrameSelection.of(config, shifted_keys), first_frame, jpeg,
                   max(1, (os.cpu_count() or 1) // max(1, workers)), lambda frames: counter.add(frames=frames),
                   in_flight=max(1, workers))
    results: list[VideoResult] = []
    # resizing (and JPEG encoding) costs far more than decoding: the pool spreads it over `workers` threads
    # even while a single long video is decoded
    with file_lock(cache_dir / LOCK_FILE), _pool(workers) as ctx.pool, _torch_threads(1):
        for folder in (cache_dir, ctx.samples_dir, cache_dir / RECORD_DIR):
            remove_temporaries(folder)  # left by a killed import
        start_over_unless_made_for(cache_dir, settings)
        todo = []
        for job in jobs:
            finished = _finished(job, cache_dir, identity, ctx)
            if finished is None:
                todo.append(job)
            else:
                results.append(finished)
        if todo:
            (cache_dir / MANIFEST_FILE).unlink(missing_ok=True)  # incomplete until the new one is written
        counter.add(videos=len(results))
        for result in run_each(lambda job: _import_video(job, ctx), [(job,) for job in todo], workers):
            _write_record(cache_dir, identity, result, jpeg)
            results.append(result)
            counter.add(videos=1)
        indexes = {name: index for result in results for name, index in result.indexes.items()}
        frames, size = write_manifest(cache_dir, settings, list(indexes), indexes)
    return ImportSummary(cache_dir, len(jobs), len(todo), len(jobs) - len(todo), len(indexes), frames, size,
                         sorted((o for r in results for o in r.outside), key=lambda o: (o.video, o.key)),
                         sum(r.decoded for r in results), sum(r.jpegs for r in results), time.perf_counter() - start)


__all__ = [
    "FrameSelection",
    "ImportSummary",
    "JpegOutput",
    "OutsideSample",
    "VideoImportError",
    "VideoJob",
    "decoded_frames",
    "import_videos",
    "missing_videos",
    "plan_videos",
    "video_name",
]
