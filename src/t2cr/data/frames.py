"""Frame sources: where decoded uint8 frames (T, H, W, 3) of a sample come from.

A source knows how many frames a sample's folder or video holds and reads a list of frame numbers.
`data.source` picks one (jpeg | video); a prepared frame cache (t2cr-prepare) is read instead when
it exists (see t2cr.data.cache).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path, PureWindowsPath
from typing import Protocol

import numpy as np
from PIL import Image

from t2cr.data.samples import Sample
from t2cr.optional import require

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class FrameSource(Protocol):
    def frame_count(self, sample: Sample) -> int:
        """Frames available for the sample (used when its annotation gives no frame range)."""

    def read(self, sample: Sample, frame_numbers: Sequence[int]) -> np.ndarray:
        """uint8 (len(frame_numbers), H, W, 3)."""


class PathOutsideRootError(ValueError):
    """A path built from a sample's folder, key or a pattern that would lead outside its root folder."""


def _not_relative(relative: str) -> str | None:
    """Why `relative` is no relative path at all, or None: an absolute path (on any platform), or a NUL
    character (the operating system would cut the name there)."""
    if "\0" in relative:
        return "holds a NUL character"
    if os.path.isabs(relative) or PureWindowsPath(relative).anchor:
        return "is an absolute path"
    return None


def leaves_root(relative: str) -> str | None:
    """Why `relative`, a value put into a path, could name a place outside whatever root it is joined to, or
    None: it is not relative, or it climbs with a '..' part."""
    reason = _not_relative(relative)
    if reason is None and ".." in relative.replace("\\", "/").split("/"):
        reason = "climbs out with '..'"
    return reason


def path_under(root: str | os.PathLike, relative: str, what: str) -> Path:
    """`root / relative`, refused with a PathOutsideRootError unless it stays inside `root`.

    `relative` comes from annotation files (a sample's folder, its key) through a pattern; the readers refuse a
    key that is a path, and this check holds wherever the value came from. Lexical (no symlink is followed): a
    data root may link to frames stored elsewhere, which is the user's choice, not the annotation file's."""
    reason = _not_relative(relative)
    if reason is None:
        root_text = os.path.abspath(root)
        joined = os.path.abspath(os.path.join(root_text, relative))
        if os.path.commonpath([root_text, joined]) != root_text:
            reason = "leads outside it"
    if reason is not None:
        raise PathOutsideRootError(f"{what} {relative!r} {reason}: refusing to read or write outside {root}")
    return Path(root) / relative


def refuse_climbing_values(values: dict[str, object], what: str) -> None:
    """Refuse a text about to be put into a path pattern that would climb out of the root (see leaves_root).
    The pattern itself may hold '/' ({event}/{idx}); the values substituted may not climb with '..'."""
    for field, value in values.items():
        parts = value if isinstance(value, tuple) else (value,)  # a key such as (event, idx)
        for part in parts:
            reason = leaves_root(part) if isinstance(part, str) else None
            if reason is not None:
                raise PathOutsideRootError(f"{what}: its {field} {part!r} {reason}; a value put into a path "
                                           "must stay under the root folder")


def fill_pattern(root: str | os.PathLike, pattern: str, values: dict[str, object], what: str) -> Path:
    """`root / pattern.format(**values)`: every text substituted and the whole path stay under `root`."""
    refuse_climbing_values(values, what)
    return path_under(root, pattern.format(**values), what)


def decode_image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise
    except OSError as error:  # PIL's error for truncated or corrupt files
        raise ValueError(f"cannot decode frame {path}: {error}") from error


class JpegFolderSource:
    """Image files per sample folder.

    With a pattern (e.g. '{folder}/{frame:06d}.jpg') frame numbers are the numbers in the file names;
    without one (None) the folder's images are listed in name order and frame numbers index that list
    (the reference loaders of JIGSAWS and FineDiving glob the folder the same way).
    """

    def __init__(self, root: str | Path, pattern: str | None = "{folder}/{frame:06d}.jpg") -> None:
        self.root = Path(root)
        self.pattern = pattern

    def folder(self, sample: Sample) -> Path:
        return path_under(self.root, sample.frames, f"the frame folder of sample {sample.key_str}")

    def listing(self, sample: Sample) -> list[Path]:
        folder = self.folder(sample)
        if not folder.is_dir():
            raise FileNotFoundError(f"frame folder {folder} of sample {sample.key_str} is missing "
                                    f"(data.root={self.root})")
        return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)

    def path(self, sample: Sample, frame: int) -> Path:
        if self.pattern is None:
            raise ValueError("a listing source has no per-frame path pattern")
        return fill_pattern(self.root, self.pattern, {"folder": sample.frames, "frame": int(frame)},
                            f"frame {frame} of sample {sample.key_str}")

    def frame_count(self, sample: Sample) -> int:
        return len(self.listing(sample))

    def read(self, sample: Sample, frame_numbers: Sequence[int]) -> np.ndarray:
        if self.pattern is None:
            files = self.listing(sample)
            paths = []
            for number in frame_numbers:
                if not 0 <= number < len(files):
                    raise FileNotFoundError(f"frame {number} of {self.folder(sample)} is missing: the folder "
                                            f"holds {len(files)} images")
                paths.append(files[number])
        else:
            paths = [self.path(sample, n) for n in frame_numbers]
        frames = []
        for path in paths:
            try:
                frames.append(decode_image(path))
            except FileNotFoundError:
                raise FileNotFoundError(f"frame {path} of sample {sample.key_str} is missing (data.root="
                                        f"{self.root}, data.frame_pattern={self.pattern!r})") from None
        return np.stack(frames)


def video_name(pattern: str, sample: Sample) -> str:
    """The sample's video file name: `data.video.pattern` with folder, key and group filled in."""
    values = {"folder": sample.frames, "key": sample.key, "group": sample.group or ""}
    refuse_climbing_values(values, f"the video of sample {sample.key_str}")
    try:
        return pattern.format(**values)
    except (KeyError, IndexError, ValueError, TypeError) as error:
        raise ValueError(
            f"data.video.pattern={pattern!r} cannot name the video of sample {sample.key_str} "
            f"({type(error).__name__}: {error}); its fields are folder={sample.frames!r}, key={sample.key!r}, "
            f"group={sample.group!r}") from None


class VideoFileSource:
    """One video file per sample (`data.video.pattern` under the root). Annotation frame n is the decoded
    frame n - first_frame (`data.video.first_frame`: 1 where the reference frames count from 1); a sample
    read whole (no end frame) numbers its frames from 0, as a listed folder does."""

    def __init__(self, root: str | Path, pattern: str = "{folder}.mp4", first_frame: int = 0) -> None:
        self.root = Path(root)
        self.pattern = pattern
        self.first_frame = int(first_frame)

    def path(self, sample: Sample) -> Path:
        return path_under(self.root, video_name(self.pattern, sample), f"the video of sample {sample.key_str}")

    def frame_count(self, sample: Sample) -> int:
        av = require("av", "reading video files", "av")

        path = self._existing(sample)
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if stream.frames:
                return int(stream.frames)
            return sum(1 for _ in container.decode(stream))

    def read(self, sample: Sample, frame_numbers: Sequence[int]) -> np.ndarray:
        path = self._existing(sample)
        offset = 0 if sample.end_frame is None else self.first_frame  # a sample read whole counts from 0
        wanted = sorted({int(n) - offset for n in frame_numbers})
        decoded = decode_video(path, last_frame=wanted[-1])
        missing = [n + offset for n in wanted if n >= len(decoded) or n < 0]
        if missing:
            raise ValueError(f"video {path} of sample {sample.key_str} has {len(decoded)} frames, numbered "
                             f"{offset}..{len(decoded) - 1 + offset} (data.video.first_frame); frames {missing[:5]} "
                             "were asked for")
        return np.stack([decoded[int(n) - offset] for n in frame_numbers])

    def _existing(self, sample: Sample) -> Path:
        path = self.path(sample)
        if not path.is_file():
            raise FileNotFoundError(f"video {path} of sample {sample.key_str} is missing (data.root={self.root}, "
                                    f"data.video.pattern={self.pattern!r})")
        return path


def decode_video(path: str | Path, last_frame: int | None = None) -> list[np.ndarray]:
    """Frames of a video file decoded with PyAV, stopping after `last_frame` when given."""
    av = require("av", "reading video files", "av")

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video {path} not found")
    frames: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                frames.append(frame.to_ndarray(format="rgb24"))
                if last_frame is not None and len(frames) > last_frame:
                    break
    except av.error.FFmpegError as error:
        raise ValueError(f"cannot decode video {path}: {error}") from error
    if not frames:
        raise ValueError(f"video {path} has no decodable frames")
    return frames


def read_video_file(path: str | Path) -> np.ndarray:
    """All frames of a video file -> uint8 (T, H, W, 3)."""
    return np.stack(decode_video(path))


def read_frame_folder(path: str | Path) -> np.ndarray:
    """Every image of a folder in name order -> uint8 (T, H, W, 3)."""
    path = Path(path)
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"no .jpg/.png frames in {path}")
    return np.stack([decode_image(f) for f in files])


def read_any_video(path: str | Path) -> np.ndarray:
    """A video file or a folder of frames."""
    return read_frame_folder(path) if Path(path).is_dir() else read_video_file(path)


def linspace_indices(num_available: int, num_frames: int) -> np.ndarray:
    """num_frames indices spread evenly over num_available frames (repeats when there are fewer)."""
    return np.linspace(0, num_available - 1, num_frames).round().astype(int)


def build_frame_source(config) -> FrameSource:
    """The raw source of `data.source` (the frame cache wraps it in t2cr.data.cache when present)."""
    if config.source == "jpeg":
        return JpegFolderSource(config.root, config.frame_pattern)
    if config.source == "video":
        return VideoFileSource(config.root, config.video.pattern, config.video.first_frame)
    raise ValueError(f"unknown data.source {config.source!r}; expected 'jpeg' or 'video'")
