"""Data check: does every frame that a run can read exist (and decode)?

`check_samples(samples, reader, decode=False)` looks at every frame number any read of a sample can
take (SampleReader.candidate_frames: a training sample's window with the data.train_shift margin, a
val/test sample's without). Without `decode` it only looks for the files: one directory listing per
folder for image files, a stat per video (and the container's frame count where the sample has no end
frame). With `decode` it also decodes every such frame (`t2cr-prepare check=true`).
`format_report(problems)` turns the findings into a message with the paths and how to fix them, the
samples that are partly there first (on a partial dataset those are the user's own);
`write_problem_report` lists every problem in a CSV file (`t2cr-prepare check=true check_report=<file>`).
"""

from __future__ import annotations

import copy
import csv
import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from t2cr.data.frames import IMAGE_SUFFIXES, JpegFolderSource, VideoFileSource, decode_image, decode_video
from t2cr.data.samples import Sample

PROBLEM_KINDS = ("missing_folder", "missing_video", "missing_frames", "too_few_frames", "unreadable")
# kinds where nothing of the sample exists (also missing_frames with none of them there): listed after the
# samples that are partly there
ABSENT_KINDS = ("missing_folder", "missing_video")
SHOWN_FRAMES = 5  # frame numbers named in a problem's detail
REPORT_COLUMNS = ("key", "split", "problem", "detail", "paths", "frames")


@dataclass(frozen=True)
class SampleProblem:
    key: str  # Sample.key_str
    kind: str  # one of PROBLEM_KINDS
    detail: str
    path: str | None = None  # the folder, video or (first) frame file concerned
    frames: tuple[int, ...] = ()  # the frame numbers concerned, where there are some
    paths: tuple[str, ...] = ()  # every file concerned where there are several (missing frame files)
    none_there: bool = False  # no frame of the sample exists (its folder may, holding other samples' frames)

    @property
    def absent(self) -> bool:
        """Nothing of the sample is there: on a partial dataset, one that was never downloaded or extracted."""
        return self.none_there or self.kind in ABSENT_KINDS

    @property
    def all_paths(self) -> tuple[str, ...]:
        return self.paths or ((self.path,) if self.path else ())


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
                frames: Sequence[int] = (), paths: Sequence[Path | str] = (), none_there: bool = False) -> SampleProblem:
        return SampleProblem(sample.key_str, kind, detail, None if path is None else str(path),
                             tuple(int(f) for f in frames), tuple(str(p) for p in paths), none_there)

    def needed(self, sample: Sample, frames: Sequence[int]) -> str:
        """Why the sample needs these frames: the window, or the data.train_shift margin of a training sample."""
        why = self.reader.why_needed(sample, frames)
        return f" [{why}]" if why else ""

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
            return [self.problem(sample, "missing_folder", f"frame folder is missing (the sample reads frames "
                                 f"{min(candidates)}..{max(candidates)})", absent[0])]
        present = [(n, p) for n, p in zip(candidates, paths) if p.name in self.listings.names(p.parent)]
        missing = [(n, p) for n, p in zip(candidates, paths) if p.name not in self.listings.names(p.parent)]
        problems = [self.missing_files(sample, candidates, present, missing)] if missing else []
        if sample.end_frame is None:
            short = self.short_for_num_frames(sample, source.frame_count(sample))
            if short is not None:
                problems.append(short)
        if self.decode:
            problems += self.decode_files(sample, present)
        return problems

    def missing_files(self, sample: Sample, candidates: Sequence[int], present: Sequence[tuple[int, Path]],
                      missing: Sequence[tuple[int, Path]]) -> SampleProblem:
        """The problem of a sample some of whose frame files are missing (pattern sources)."""
        numbers = [n for n, _ in missing]
        files = [p for _, p in missing]
        example = files[0]
        if not present:
            # other frames named alike in the folder: the pattern is right, this sample's were never extracted
            alike = [n for n in self.listings.names(example.parent) or ()
                     if len(n) == len(example.name) and Path(n).suffix == example.suffix]
            why = (f"the folder holds {len(alike)} other frames named alike: this sample's were not extracted" if alike
                   else f"does data.frame_pattern={self.source.pattern!r} match the file names?")
            detail = (f"none of its {len(candidates)} frames exist (frames {min(candidates)}..{max(candidates)}, "
                      f"e.g. {example}): {why}")
            return self.problem(sample, "missing_frames", detail, example, numbers, files, none_there=True)
        needed = self.needed(sample, numbers)
        if min(numbers) > max(n for n, _ in present):
            detail = (f"the folder ends at frame {max(n for n, _ in present)}, the sample needs frames up to "
                      f"{max(candidates)} (missing {_numbers(numbers)}, e.g. {example}){needed}")
            return self.problem(sample, "too_few_frames", detail, example.parent, numbers, files)
        detail = f"{len(numbers)} frame file(s) missing ({_numbers(numbers)}), e.g. {example}{needed}"
        return self.problem(sample, "missing_frames", detail, example, numbers, files)

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
                                         f"needs frames up to {max(candidates)}{self.needed(sample, beyond)}",
                                         folder, beyond))
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
                                         f"needs frames up to {max(candidates)}{self.needed(sample, beyond)}",
                                         path, beyond))
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
            return [self.problem(sample, "missing_frames", f"the frame cache lacks {len(absent)} of its frames "
                                 f"({_numbers(absent)}){self.needed(sample, absent)}", entry.array, absent)]
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
    "missing_video": "videos are found as data.root / data.video.pattern: are data.root and data.video.pattern "
                     "right?",
    "missing_frames": "frame files are found as data.root / data.frame_pattern: does data.frame_pattern match your "
                      "extraction's file names (and is the extraction complete)?",
    "too_few_frames": "the sample needs more frames than its folder or video holds: re-extract all frames, or "
                      "lower data.num_frames / data.train_shift",
    "unreadable": "the files named above are corrupt or truncated: re-extract or re-download them",
}


def present_first(problems: Sequence[SampleProblem]) -> list[SampleProblem]:
    """The problems of samples that are partly there first, in their order, then those of samples of which
    nothing exists: on a partial dataset the user's own few samples come before the many never downloaded."""
    absent = {p.key for p in problems if p.absent}
    return sorted(problems, key=lambda p: p.key in absent)  # stable: sample order within each group


def format_report(problems: Sequence[SampleProblem], limit: int = 20, skip_missing: bool = False,
                  report_file: str | None = None) -> str:
    """A readable report: counts by kind, the first `limit` problems with their paths (samples that are partly
    there first), how to fix them. `skip_missing`: the run drops these samples (no advice to set it);
    `report_file`: where every problem is listed (named instead of the advice to write one)."""
    if not problems:
        return "data check: no problems found"
    kinds = Counter(p.kind for p in problems)
    samples = len({p.key for p in problems})
    absent = len({p.key for p in problems if p.absent})
    summary = ", ".join(f"{count} {kind.replace('_', ' ')}" for kind, count in sorted(kinds.items()))
    head = (f"data check: {len(problems)} problem(s) in {samples} sample(s) ({summary}); "
            f"{samples - absent} of these samples are partly there (listed first), {absent} not at all")
    lines = [head]
    for problem in present_first(problems)[:limit]:
        where = f"\n      {problem.path}" if problem.path else ""
        lines.append(f"  {problem.key}: {problem.kind.replace('_', ' ')}: {problem.detail}{where}")
    if len(problems) > limit:
        every = (f"{report_file} lists every one" if report_file else
                 "t2cr-prepare data=<name> check=true check_report=<file.csv> lists every one")
        lines.append(f"  ... and {len(problems) - limit} more ({every})")
    lines.append("how to fix:")
    for kind in PROBLEM_KINDS:
        if kind in kinds:
            lines.append(f"  - {_HINTS[kind]}")
    if skip_missing:
        lines.append("  - data.skip_missing=true drops these samples (a run logs what each split keeps)")
    else:
        lines.append("  - or set data.skip_missing=true to drop (and log) these samples")
    return "\n".join(lines)


def write_problem_report(problems: Sequence[SampleProblem], path: str | os.PathLike,
                         splits_of: Mapping[str, str]) -> Path:
    """Every problem as a CSV row (REPORT_COLUMNS; paths and frame numbers joined by ';'), samples that are
    partly there first. `splits_of`: sample key -> the split(s) it belongs to."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(REPORT_COLUMNS)
        for problem in present_first(problems):
            writer.writerow([problem.key, splits_of.get(problem.key, ""), problem.kind, problem.detail,
                             ";".join(problem.all_paths), ";".join(str(f) for f in problem.frames)])
    return path


def problem_keys(problems: Sequence[SampleProblem]) -> list[str]:
    """The keys of the samples with problems, each once, in order."""
    return list(dict.fromkeys(p.key for p in problems))


def problem_kinds(problems: Sequence[SampleProblem]) -> dict[str, str]:
    """Sample key -> the kind of its first problem (why a run with data.skip_missing=true drops it)."""
    kinds: dict[str, str] = {}
    for problem in problems:
        kinds.setdefault(problem.key, problem.kind)
    return kinds


__all__ = ["PROBLEM_KINDS", "REPORT_COLUMNS", "SampleProblem", "check_samples", "format_report", "present_first",
           "problem_keys", "problem_kinds", "write_problem_report"]
