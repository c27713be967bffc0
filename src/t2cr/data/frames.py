"""Frame sources: where decoded uint8 frames (T, H, W, 3) come from."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image


class JpegFolderSource:
    """Frames stored as JPEG files named by a pattern, e.g. '{folder}/{frame:06d}.jpg' under a root."""

    def __init__(self, root: str | Path, pattern: str = "{folder}/{frame:06d}.jpg") -> None:
        self.root = Path(root)
        self.pattern = pattern

    def path(self, folder: str, frame: int) -> Path:
        return self.root / self.pattern.format(folder=folder, frame=frame)

    def read(self, folder: str, frame_numbers: Sequence[int]) -> np.ndarray:
        frames = []
        for number in frame_numbers:
            path = self.path(folder, int(number))
            try:
                with Image.open(path) as image:
                    frames.append(np.asarray(image.convert("RGB")))
            except FileNotFoundError:
                raise FileNotFoundError(f"frame {path} is missing (data.root={self.root}, "
                                        f"data.frame_pattern={self.pattern!r})") from None
        return np.stack(frames)


def read_video_file(path: str | Path) -> np.ndarray:
    """All frames of a video file decoded with PyAV -> uint8 (T, H, W, 3)."""
    import av

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video {path} not found")
    try:
        with av.open(str(path)) as container:
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    except av.error.FFmpegError as error:
        raise ValueError(f"cannot decode video {path}: {error}") from error
    if not frames:
        raise ValueError(f"video {path} has no decodable frames")
    return np.stack(frames)


def read_frame_folder(path: str | Path) -> np.ndarray:
    """Every image of a folder in name order -> uint8 (T, H, W, 3)."""
    path = Path(path)
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not files:
        raise ValueError(f"no .jpg/.png frames in {path}")
    frames = []
    for file in files:
        with Image.open(file) as image:
            frames.append(np.asarray(image.convert("RGB")))
    return np.stack(frames)


def read_any_video(path: str | Path) -> np.ndarray:
    """A video file or a folder of frames."""
    return read_frame_folder(path) if Path(path).is_dir() else read_video_file(path)


def linspace_indices(num_available: int, num_frames: int) -> np.ndarray:
    """num_frames indices spread evenly over num_available frames (repeats when there are fewer)."""
    return np.linspace(0, num_available - 1, num_frames).round().astype(int)
