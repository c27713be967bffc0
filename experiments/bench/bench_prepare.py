"""Frames per second from published videos to the uint8 frame cache: t2cr-prepare videos= against the old route.

Examples (from the repository root):

    python experiments/bench/bench_prepare.py                          # defaults, human-readable
    python experiments/bench/bench_prepare.py --videos 2 --frames 600 --json
    python experiments/bench/bench_prepare.py --workers 4 --with-jpeg

What it does, in one run:

1. Writes (or reuses) --videos generated "competition videos" of --frames frames at --height x --width
   (default 256 x 456, about the reference code's MTL-AQA frame size) with libx264 (CRF 23, as a streaming
   site's H.264), under --root: a textured background panning, a moving figure and a little noise, so
   that neither the codec nor JPEG gets trivially small files. Every --spacing frames a "dive" ends; each
   is an MTL-AQA sample (103 frames ending there, a temporal shift of up to 3: 109 frames cached).
2. Old route: every frame of every video decoded and written as a JPEG file ({event:02d}/{frame:06d}.jpg
   from 1, what the official `ffmpeg -i 01.mp4 %06d.jpg` extraction does; here PyAV + Pillow, quality
   --jpeg-quality), then `prepare_cache` (what `t2cr-prepare data.cache_dir=` runs) reads the frames the
   samples need back from the JPEGs, resizes them to 128 x 228 and writes the cache.
3. New route: `import_videos` (what `t2cr-prepare videos=` runs): each video decoded once, the frames the
   samples need resized and written to the cache; decoding stops after the last frame a sample needs.
   With --with-jpeg it is timed a second time writing those frames as JPEG files as well (jpeg_dir=).

Both routes run --workers videos (or samples) at a time and start from an empty output folder; the videos
sit in the page cache for both. The new route runs torch on one thread per worker (its own threads are the
parallelism); the old route is timed as t2cr-prepare runs it (torch's default threads) and once more with
torch on one thread, so that the ratio is not only that setting. Figure: video frames per second = the frames of all videos / the route's
wall time, and the ratio new / old, measured in this one run. The two caches are compared entry by entry
(same samples and frame numbers; pixel difference = the old route's JPEG loss). The 1-minute load average
before and after is reported because other processes sharing the CPUs change the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from t2cr.data.cache import SAMPLES_DIR, prepare_cache
from t2cr.data.config import DataConfig
from t2cr.data.frames import JpegFolderSource
from t2cr.data.reading import SampleReader
from t2cr.data.samples import Sample
from t2cr.data.transforms import TransformConfig, VideoTransform
from t2cr.data.video_import import JpegOutput, import_videos, plan_videos

SAMPLE_FRAMES, SHIFT = 103, 3  # MTL-AQA's sample and temporal shift
FRAME_PATTERN = "{folder}/{frame:06d}.jpg"


# ---------------------------------------------------------------------------------------------- inputs


def render(index: int, texture: np.ndarray, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """One frame: the texture panning by 2 px a frame, a moving block, a little noise."""
    offset = (2 * index) % (texture.shape[1] - width)
    frame = texture[:height, offset:offset + width].copy()
    x = int((width - 40) * (0.5 + 0.5 * np.sin(index / 17)))
    y = int((height - 60) * (0.5 + 0.5 * np.cos(index / 23)))
    frame[y:y + 60, x:x + 40] = (230, 90, 40)
    noise = rng.integers(-6, 7, size=frame.shape, dtype=np.int16)
    return np.clip(frame.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def write_video(path: Path, frames: int, height: int, width: int, seed: int) -> None:
    import av

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(height // 8 + 1, (width + 2 * frames) // 8 + 2, 3), dtype=np.uint8)
    texture = np.kron(small, np.ones((8, 8, 1), dtype=np.uint8))  # 8 x 8 blocks of colour
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.partial")
    with av.open(str(temporary), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "23", "preset": "veryfast"}
        for index in range(frames):
            image = av.VideoFrame.from_ndarray(render(index, texture, height, width, rng), format="rgb24")
            for packet in stream.encode(image):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    os.replace(temporary, path)


def make_videos(args: argparse.Namespace) -> Path:
    folder = Path(args.root) / f"videos_{args.videos}x{args.frames}_{args.height}x{args.width}"
    for event in range(1, args.videos + 1):
        path = folder / f"{event:02d}.mp4"
        if not path.is_file():
            print(f"writing {path}", file=sys.stderr)
            write_video(path, args.frames, args.height, args.width, seed=event)
    return folder


def make_samples(args: argparse.Namespace) -> list[Sample]:
    """A dive ends every --spacing frames (annotation numbers from 1), far enough from both ends."""
    samples = []
    for event in range(1, args.videos + 1):
        for idx, end in enumerate(range(args.spacing, args.frames - SHIFT + 1, args.spacing), 1):
            samples.append(Sample(key=(event, idx), score=50.0, difficulty=2.0, action_type="105B",
                                  frames=f"{event:02d}", start_frame=end - SAMPLE_FRAMES + 1, end_frame=end))
    return samples


def data_config(root: Path, cache_dir: Path) -> DataConfig:
    return DataConfig(name="mtl_aqa", format="mtl_aqa", root=str(root), cache_dir=str(cache_dir),
                      frame_pattern=FRAME_PATTERN, num_frames=SAMPLE_FRAMES, train_shift=SHIFT, synthetic=None,
                      transform=TransformConfig(resize=[128, 228]))


# ---------------------------------------------------------------------------------------------- routes


def extract_jpegs(video: Path, folder: Path, quality: int) -> int:
    """Every frame of the video as {frame:06d}.jpg from 1, as ffmpeg's default numbering writes them."""
    import av
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    count = 0
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_type = "AUTO"
        for count, frame in enumerate(container.decode(stream), 1):
            Image.fromarray(frame.to_ndarray(format="rgb24")).save(folder / f"{count:06d}.jpg", quality=quality)
    return count


def old_route(videos: Path, samples: list[Sample], out: Path, args: argparse.Namespace,
              torch_threads: int | None = None) -> dict[str, Any]:
    """torch_threads None: torch's default, as t2cr-prepare runs prepare_cache today."""
    import torch

    default = torch.get_num_threads()
    torch.set_num_threads(torch_threads or default)
    try:
        return _old_route(videos, samples, out, args)
    finally:
        torch.set_num_threads(default)


def _old_route(videos: Path, samples: list[Sample], out: Path, args: argparse.Namespace) -> dict[str, Any]:
    from concurrent.futures import ThreadPoolExecutor

    frames_dir, cache_dir = out / "frames", out / "cache"
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.workers) as pool:
        counts = list(pool.map(lambda v: extract_jpegs(v, frames_dir / v.stem, args.jpeg_quality),
                               sorted(videos.glob("*.mp4"))))
    extracted = time.perf_counter()
    config = data_config(frames_dir, cache_dir)
    source = JpegFolderSource(frames_dir, FRAME_PATTERN)
    reader = SampleReader(source, VideoTransform(config.transform), SAMPLE_FRAMES, "end_aligned", SHIFT)
    summary = prepare_cache(samples, reader, source, cache_dir, config.transform.resize, config=config,
                            workers=args.workers)
    end = time.perf_counter()
    jpeg_bytes = sum(p.stat().st_size for p in frames_dir.rglob("*.jpg"))
    return {"seconds": end - start, "extract_s": extracted - start, "cache_s": end - extracted,
            "video_frames": sum(counts), "jpegs_written": sum(counts), "jpeg_mib": jpeg_bytes / 2**20,
            "cached_frames": summary.frames, "cache_dir": str(cache_dir)}


def new_route(videos: Path, samples: list[Sample], out: Path, args: argparse.Namespace,
              with_jpeg: bool) -> dict[str, Any]:
    cache_dir = out / "cache"
    config = data_config(videos, cache_dir)
    jpeg = JpegOutput(out / "frames", FRAME_PATTERN, args.jpeg_quality) if with_jpeg else None
    start = time.perf_counter()
    jobs = plan_videos(samples, videos, config.video.pattern)
    summary = import_videos(jobs, config, cache_dir, jpeg=jpeg, workers=args.workers)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "decoded_frames": summary.decoded_frames, "jpegs_written": summary.jpegs,
            "cached_frames": summary.frames, "outside": len(summary.outside), "cache_dir": str(cache_dir)}


def compare_caches(old: Path, new: Path) -> dict[str, Any]:
    """Same entries and frame numbers; the largest and mean pixel difference (the JPEG route's loss)."""
    names = sorted(p.stem for p in (old / SAMPLES_DIR).glob("*.json"))
    same = names == sorted(p.stem for p in (new / SAMPLES_DIR).glob("*.json"))
    largest, total, count = 0, 0.0, 0
    for name in names if same else []:
        a, b = (json.loads((c / SAMPLES_DIR / f"{name}.json").read_text()) for c in (old, new))
        same &= a["frames"] == b["frames"] and a["shape"] == b["shape"]
        x, y = (np.load(c / SAMPLES_DIR / f"{name}.npy").astype(np.int16) for c in (old, new))
        largest, total, count = max(largest, int(np.abs(x - y).max())), total + float(np.abs(x - y).sum()), count + x.size
    return {"same_entries_and_frames": bool(same), "entries": len(names), "max_abs_diff": largest,
            "mean_abs_diff": total / max(count, 1)}


# ---------------------------------------------------------------------------------------------- main


def run(args: argparse.Namespace) -> dict[str, Any]:
    videos = make_videos(args)
    samples = make_samples(args)
    work = Path(args.root) / "routes"
    shutil.rmtree(work, ignore_errors=True)
    load_before = os.getloadavg()[0]
    old = old_route(videos, samples, work / "old", args)
    new = new_route(videos, samples, work / "new", args, with_jpeg=False)
    old_one_thread = old_route(videos, samples, work / "old_1", args, torch_threads=1)
    result: dict[str, Any] = {
        "videos": args.videos, "frames_per_video": args.frames, "size": [args.height, args.width],
        "samples": len(samples), "workers": args.workers, "cpus": os.cpu_count(), "jpeg_quality": args.jpeg_quality,
        "old": old, "new": new, "comparison": compare_caches(Path(old["cache_dir"]), Path(new["cache_dir"])),
    }
    frames = old["video_frames"]
    result["old_fps"] = frames / old["seconds"]
    result["new_fps"] = frames / new["seconds"]
    result["ratio"] = result["new_fps"] / result["old_fps"]
    result["old_torch_1_thread"] = old_one_thread
    result["old_torch_1_thread_fps"] = frames / old_one_thread["seconds"]
    result["ratio_vs_old_torch_1_thread"] = result["new_fps"] / result["old_torch_1_thread_fps"]
    if args.with_jpeg:
        with_jpeg = new_route(videos, samples, work / "new_jpeg", args, with_jpeg=True)
        result["new_with_jpeg"] = with_jpeg
        result["new_with_jpeg_fps"] = frames / with_jpeg["seconds"]
        result["ratio_with_jpeg"] = result["new_with_jpeg_fps"] / result["old_fps"]
    result["load_1min"] = [load_before, os.getloadavg()[0]]
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return result


def report(r: dict[str, Any]) -> str:
    old, new = r["old"], r["new"]
    lines = [
        (f"{r['videos']} videos x {r['frames_per_video']} frames ({r['size'][0]} x {r['size'][1]}, H.264), "
         f"{r['samples']} samples of {SAMPLE_FRAMES} frames (+-{SHIFT}), cache resize 128 x 228, "
         f"{r['workers']} workers, {r['cpus']} CPUs"),
        (f"old route (every frame -> JPEG, then JPEG -> cache): {old['seconds']:.1f} s "
         f"(extract {old['extract_s']:.1f} s, {old['jpegs_written']} JPEGs, {old['jpeg_mib']:.0f} MiB; cache "
         f"{old['cache_s']:.1f} s) = {r['old_fps']:.0f} video frames/s"),
        (f"new route (t2cr-prepare videos=): {new['seconds']:.1f} s ({new['decoded_frames']} frames decoded, "
         f"{new['cached_frames']} cached) = {r['new_fps']:.0f} video frames/s"),
        f"ratio new / old: {r['ratio']:.2f}x",
        (f"old route with torch on 1 thread per worker, as the new route runs it: "
         f"{r['old_torch_1_thread']['seconds']:.1f} s = {r['old_torch_1_thread_fps']:.0f} video frames/s; "
         f"ratio new / that: {r['ratio_vs_old_torch_1_thread']:.2f}x"),
    ]
    if "new_with_jpeg" in r:
        jpeg = r["new_with_jpeg"]
        lines.append(f"new route with jpeg_dir= ({jpeg['jpegs_written']} JPEGs): {jpeg['seconds']:.1f} s = "
                     f"{r['new_with_jpeg_fps']:.0f} video frames/s, {r['ratio_with_jpeg']:.2f}x the old route")
    c = r["comparison"]
    lines.append(f"caches: same {c['entries']} entries and frame numbers: {c['same_entries_and_frames']}; pixel "
                 f"difference (the old route's JPEG loss) max {c['max_abs_diff']}, mean {c['mean_abs_diff']:.2f}")
    lines.append(f"1-minute load average before / after: {r['load_1min'][0]:.2f} / {r['load_1min'][1]:.2f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="/tmp/t2cr_bench_prepare", help="folder for the videos and the outputs")
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--frames", type=int, default=1500, help="frames per video")
    parser.add_argument("--spacing", type=int, default=250, help="frames between two samples' end frames (>= 103)")
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=456)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--jpeg-quality", type=int, default=90)
    parser.add_argument("--with-jpeg", action="store_true", help="also time the new route writing JPEGs")
    parser.add_argument("--keep", action="store_true", help="keep the routes' outputs under --root/routes")
    parser.add_argument("--json", action="store_true", help="print one JSON object only")
    args = parser.parse_args()
    if args.spacing < SAMPLE_FRAMES + SHIFT or args.frames < args.spacing + SHIFT:
        parser.error(f"need --spacing >= {SAMPLE_FRAMES + SHIFT} and --frames >= --spacing + {SHIFT}")
    result = run(args)
    print(json.dumps(result) if args.json else report(result))


if __name__ == "__main__":
    main()
