"""Data check: does every frame that a run can read exist (and decode)?

`check_samples(samples, reader, decode=False)` looks at every frame number any read of a sample can
take (SampleReader.candidate_frames). Without `decode` it only looks for the files: one directory
listing per folder for image files, a stat per video (and the container's frame count where the
sample has no end frame). With `decode` it also decodes every such frame (`t2cr-prepare check=true`).
`format_report(problems)` turns the findings into a message with the paths and how to fix them.
"""

from __future__ import annotations

import copy
import os
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from t2cr.data.frames import IMAGE_SUFFIXES, JpegFolderSource, VideoFileSource, decode_image, decode_video
from t2cr.data.samples import Sample

PROBLEM_KINDS = ("missing_folder", "missing_video", "missing_frames", "too_few_frames", "unreadable")
SHOWN_FRAMES = 5  # frame numbers named in a problem's detail


@dataclass(frozen=True)
class SampleProblem:
    key: str  # Sample.key_str
    kind: str  # one of PROBLEM_KINDS
    detail: str
    path: str | None = None  # the folder, video or (first) frame file concerned
    frames: tuple[int, ...] = ()  # the frame numbers concerned, where there are some


def _numbers(frames: Sequence[int]) -> str:
    frames = list(frames)
    shown = ", ".join(str(f) for f in frames[:SHOWN_FRAMES])
    return f"{shown}, ... ({len(frames)} in all)" if len(frames) > SHOWN_FRAMES else shown


class _Listings:
    """Directory listings, each read once (many samples share a folder)."""

    def __init__(self) -> None:
        self._names: dict[Path, frozenset[str] | None] = {}

    def names(self, folder: Path) -> frozenset[str] | None:
        if folder not in self._names:
            try:
                with os.scandir(folder) as entries:
                    self._names[folder] = frozenset(entry.name for entry in entries)
            except (FileNotFoundError, NotADirectoryError):
                self._names[folder] = None
        return self._names[folder]


class _Checker:
    def __init__(self, reader, decode: bool) -> None:
        from t2cr.data.cache import CachedFrameSource

        source = reader.source
        if isinstance(source, CachedFrameSource) and source.fallback is not None:
            reader = copy.copy(reader)  # check the raw frames behind the cache
            reader.source = source = source.fallback
        self.reader, self.source, self.decode = reader, source, decode
        self.listings = _Listings()

    def __call__(self, sample: Sample) -> list[SampleProblem]:
        from t2cr.data.cache import CachedFrameSource

        source = self.source
        if isinstance(source, CachedFrameSource):  # a cache without raw frames behind it
            return self.cached(sample)
        if isinstance(source, JpegFolderSource):
            return self.pattern(sample) if source.pattern is not None else self.listing(sample)
        if isinstance(source, VideoFileSource):
            return self.video(sample)
        return self.generic(sample)

    # -------------------------------------------------------------------------------- helpers
    def problem(self, sample: Sample, kind: str, detail: str, path: Path | str | None = None,
                frames: Sequence[int] = ()) -> SampleProblem:
        return SampleProblem(sample.key_str, kind, detail, None if path is None else str(path),
                             tuple(int(f) for f in frames))

    def short_for_num_frames(self, sample: Sample, count: int) -> SampleProblem | None:
        """A sample read whole (no end frame) from a source holding fewer than num_frames frames."""
        if sample.end_frame is not None:
            return None
        available = count - (sample.start_frame or 0)
        if available >= self.reader.num_frames:
            return None
        return self.problem(sample, "too_few_frames", f"holds {max(available, 0)} frames, fewer than data.num_frames="
                            f"{self.reader.num_frames} (frames would repeat)")

    def decode_files(self, sample: Sample, files: Sequence[tuple[int, Path]]) -> list[SampleProblem]:
        bad: list[tuple[int, Path, str]] = []
        for number, path in files:
            try:
                decode_image(path)
            except (OSError, ValueError) as error:
                bad.append((number, path, str(error)))
        if not bad:
            return []
        detail = f"{len(bad)} frame(s) cannot be decoded ({_numbers([b[0] for b in bad])}): {bad[0][2]}"
        return [self.problem(sample, "unreadable", detail, bad[0][1], [b[0] for b in bad])]

    # -------------------------------------------------------------------------------- sources
    def pattern(self, sample: Sample) -> list[SampleProblem]:
        source: JpegFolderSource = self.source
        try:
            candidates = [int(n) for n in self.reader.candidate_frames(sample)]
        except FileNotFoundError:  # no end frame: counting the frames needs the folder
            return [self.problem(sample, "missing_folder", "frame folder is missing", source.folder(sample))]
        paths = [source.path(sample, n) for n in candidates]
        absent = sorted({p.parent for p in paths if self.listings.names(p.parent) is None})
        if absent:
            return [self.problem(sample, "missing_folder", "frame folder is missing", absent[0])]
        present = [(n, p) for n, p in zip(candidates, paths) if p.name in self.listings.names(p.parent)]
        missing = [(n, p) for n, p in zip(candidates, paths) if p.name not in self.listings.names(p.parent)]
        problems: list[SampleProblem] = []
        if missing:
            numbers = [n for n, _ in missing]
            if not present:
                detail = (f"none of its {len(candidates)} frames exist ({_numbers(numbers)}), e.g. {missing[0][1]}: "
                          f"does data.frame_pattern={source.pattern!r} match the file names?")
                problems.append(self.problem(sample, "missing_frames", detail, missing[0][1], numbers))
            elif min(numbers) > max(n for n, _ in present):
                last = max(n for n, _ in present)
                detail = (f"the folder ends at frame {last}, the sample needs frames up to {max(candidates)} "
                          f"(missing {_numbers(numbers)}, e.g. {missing[0][1]})")
                problems.append(self.problem(sample, "too_few_frames", detail, missing[0][1].parent, numbers))
            else:
                detail = f"{len(numbers)} frame file(s) missing ({_numbers(numbers)}), e.g. {missing[0][1]}"
                problems.append(self.problem(sample, "missing_frames", detail, missing[0][1], numbers))
        if sample.end_frame is None:
            short = self.short_for_num_frames(sample, source.frame_count(sample))
            if short is not None:
                problems.append(short)
        if self.decode:
            problems += self.decode_files(sample, present)
        return problems

    def listing(self, sample: Sample) -> list[SampleProblem]:
        source: JpegFolderSource = self.source
        folder = source.folder(sample)
        names = self.listings.names(folder)
        if names is None:
            return [self.problem(sample, "missing_folder", "frame folder is missing", folder)]
        files = sorted(folder / n for n in names if Path(n).suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            return [self.problem(sample, "too_few_frames", f"the folder holds no {'/'.join(IMAGE_SUFFIXES)} images",
                                 folder)]
        candidates = [int(n) for n in self.reader.candidate_frames(sample)]
        problems: list[SampleProblem] = []
        beyond = [n for n in candidates if n >= len(files)]
        if beyond:
            problems.append(self.problem(sample, "too_few_frames", f"the folder holds {len(files)} images, the sample "
                                         f"needs frames up to {max(candidates)}", folder, beyond))
        short = self.short_for_num_frames(sample, len(files))
        if short is not None:
            problems.append(SampleProblem(short.key, short.kind, short.detail, str(folder)))
        if self.decode:
            problems += self.decode_files(sample, [(n, files[n]) for n in candidates if n < len(files)])
        return problems

    def video(self, sample: Sample) -> list[SampleProblem]:
        source: VideoFileSource = self.source
        path = source.path(sample)
        if not path.is_file():
            return [self.problem(sample, "missing_video", "video file is missing", path)]
        if not self.decode and sample.end_frame is not None:
            return []  # existence only
        try:
            count = source.frame_count(sample)  # the container's count (what the reader uses)
            candidates = [int(n) for n in self.reader.candidate_frames(sample)]
        except Exception as error:  # noqa: BLE001 - any PyAV / FFmpeg error of a broken file
            return [self.problem(sample, "unreadable", f"cannot read the video's frame count: {error}", path)]
        problems: list[SampleProblem] = []
        short = self.short_for_num_frames(sample, count)
        if short is not None:
            problems.append(SampleProblem(short.key, short.kind, short.detail, str(path)))
        if self.decode:
            try:
                count = len(decode_video(path, last_frame=max(candidates)))
            except (OSError, ValueError) as error:
                return problems + [self.problem(sample, "unreadable", str(error), path)]
        beyond = [n for n in candidates if n >= count]
        if beyond:
            problems.append(self.problem(sample, "too_few_frames", f"the video has {count} frames, the sample "
                                         f"needs frames up to {max(candidates)}", path, beyond))
        return problems

    def cached(self, sample: Sample) -> list[SampleProblem]:
        """The cache must hold the sample and every frame a read of it can take."""
        entry = self.source.entry(sample)
        where = self.source.cache_dir
        if entry is None:
            return [self.problem(sample, "missing_frames", "not in the frame cache (data.use_cache=require)", where)]
        try:
            candidates = self.reader.candidate_frames(sample)
        except KeyError as error:
            return [self.problem(sample, "missing_frames", str(error), where)]
        absent = sorted({int(n) for n in candidates} - {int(n) for n in entry.numbers})
        if absent:
            return [self.problem(sample, "missing_frames", f"the frame cache lacks {len(absent)} of its frames",
                                 entry.array, absent)]
        return []

    def generic(self, sample: Sample) -> list[SampleProblem]:
        try:
            candidates = self.reader.candidate_frames(sample)
            if self.decode:
                self.source.read(sample, candidates)
        except (FileNotFoundError, KeyError) as error:
            return [self.problem(sample, "missing_frames", str(error))]
        except (OSError, ValueError) as error:
            return [self.problem(sample, "unreadable", str(error))]
        return []


def check_samples(samples: Sequence[Sample], reader, decode: bool = False, workers: int = 1,
                  progress: Callable[[int, int], None] | None = None) -> list[SampleProblem]:
    """Problems with the frames of `samples` as `reader` (a SampleReader) would read them, in sample order.

    Where `reader` reads a frame cache with a raw fallback, the raw frames are checked.
    """
    checker = _Checker(reader, decode)
    results: list[list[SampleProblem]] = []
    if workers > 1 and decode:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="t2cr-check") as pool:
            for done, found in enumerate(pool.map(checker, samples), 1):
                results.append(found)
                if progress is not None:
                    progress(done, len(samples))
    else:
        for done, sample in enumerate(samples, 1):
            results.append(checker(sample))
            if progress is not None:
                progress(done, len(samples))
    return [problem for found in results for problem in found]


_HINTS = {
    "missing_folder": "frame folders and videos are looked for under data.root: is data.root right?",
    "missing_video": "videos are found as data.root / data.video_pattern: are data.root and data.video_pattern "
                     "right?",
    "missing_frames": "frame files are found as data.root / data.frame_pattern: does data.frame_pattern match your "
                      "extraction's file names (and is the extraction complete)?",
    "too_few_frames": "the sample needs more frames than its folder or video holds: re-extract all frames, or "
                      "lower data.num_frames / data.train_shift",
    "unreadable": "the files named above are corrupt or truncated: re-extract or re-download them",
}


def format_report(problems: Sequence[SampleProblem], limit: int = 20) -> str:
    """A readable report: counts by kind, the first `limit` problems with their paths, how to fix them."""
    if not problems:
        return "data check: no problems found"
    kinds = Counter(p.kind for p in problems)
    samples = len({p.key for p in problems})
    summary = ", ".join(f"{count} {kind.replace('_', ' ')}" for kind, count in sorted(kinds.items()))
    lines = [f"data check: {len(problems)} problem(s) in {samples} sample(s) ({summary})"]
    for problem in problems[:limit]:
        where = f"\n      {problem.path}" if problem.path else ""
        lines.append(f"  {problem.key}: {problem.kind.replace('_', ' ')}: {problem.detail}{where}")
    if len(problems) > limit:
        lines.append(f"  ... and {len(problems) - limit} more")
    lines.append("how to fix:")
    for kind in PROBLEM_KINDS:
        if kind in kinds:
            lines.append(f"  - {_HINTS[kind]}")
    lines.append("  - or set data.skip_missing=true to drop (and log) these samples")
    return "\n".join(lines)


def problem_keys(problems: Sequence[SampleProblem]) -> list[str]:
    """The keys of the samples with problems, each once, in order."""
    return list(dict.fromkeys(p.key for p in problems))


__all__ = ["PROBLEM_KINDS", "SampleProblem", "check_samples", "format_report", "problem_keys"]
