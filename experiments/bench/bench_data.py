"""Training pairs per second of two data loaders on a synthetic MTL-AQA-layout JPEG dataset.

Examples (from the repository root):

    python experiments/bench/bench_data.py                                   # defaults, human-readable
    python experiments/bench/bench_data.py --videos 8 --batches 4 --json     # small, one JSON object
    python experiments/bench/bench_data.py --videos 32 --batches 20 --warmup 4 --workers 4 --batch 2

What it does, in one run:

1. Writes (or reuses) a synthetic dataset with t2cr.data.synthetic in MTL-AQA's layout (annotation
   pickles, frames/{event:02d}/{frame:06d}.jpg) at --height x --width (default 256 x 455, the frame size
   of the reference code's MTL-AQA frames): --videos training samples (+1 test sample, which the
   generator requires) of --frames frames, under --root.
2. Reference-style loader, re-implemented here after the official CoRe/T2CR MTL-AQA dataset: a training
   item is a (query, exemplar of the same difficulty) pair; every video is --frames JPEGs decoded one by
   one with PIL, each frame resized with PIL to 128 high x 228 wide, turned into a float tensor, cropped
   to 112 x 112, flipped and ImageNet-normalised on its own, then stacked to (3, T, 112, 112); temporal
   shift of up to +-3 frames as in the reference.
3. Ours: the project's data path. The uint8 frame cache is prepared once (t2cr.data.cache.prepare_cache,
   as t2cr-prepare does), then PairDataModule(DataConfig(cache_dir=..., use_cache="require",
   transform resize [128, 228], crop [112, 112])).train_dataloader() is iterated. Its batches hold uint8
   frames at 128 x 228 plus crop offsets and flips. Training finishes them (crop, flip, normalise) where
   it runs fastest: on the accelerator in on_after_batch_transfer when there is one, in the loader
   workers when training runs on the CPU (PairDataModule.normalise_in_workers, chosen from the trainer's
   device). The headline figure ("ours") does exactly that on the current device (CUDA if available, else
   CPU), including the transfer and the finish step in the timed loop; the loader-only figure hands out
   the uint8 frames without finishing them. The reference batches are not moved anywhere.

Both loaders get the same --workers and --batch, persistent workers and pin_memory when CUDA is
available; an epoch that ends inside a measurement rolls over into the next. Each loader is timed over
--batches batches after --warmup batches (the first of which includes the worker start-up, reported as
startup_s). The loaders are measured one after the other, never at the same time.

Figures: pairs per second and ms per pair of the reference, of ours with the finish step and of ours
loader-only; ratio = ours / reference (ratio_loader_only for the loader-only figure). The 1-minute load
average before and after is reported because other processes sharing the CPUs change the figures.

Caveats: the synthetic frames are simple drawings that compress to small JPEGs (real broadcast frames are
larger and slower to decode, which would slow the reference further), but they are 4:4:4 (the generator's
fixed setting), a little slower to decode than the 4:2:0 of a typical extraction. Both the JPEGs and the
cache sit in the page cache after the first run, so disk speed is not measured. On a CPU-only machine
the finish step runs in the loader workers, in parallel, as a CPU training run does.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import pickle
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from t2cr.data.cache import prepare_cache, resolve_cache_dir
from t2cr.data.config import DataConfig
from t2cr.data.datamodule import PairDataModule
from t2cr.data.synthetic import (
    ANNOTATIONS_DIR,
    ANNOTATIONS_FILE,
    FRAMES_DIR,
    TRAIN_SPLIT_FILE,
    SyntheticConfig,
    ensure_synthetic_dataset,
)
from t2cr.data.transforms import IMAGENET_MEAN, IMAGENET_STD, TransformConfig

RESIZE_HW = (128, 228)  # the reference's MTL-AQA resize, [height, width]
CROP = 112
TEMPORAL_SHIFT = 3  # the reference's +-3 frame jitter of the end frame (our data.train_shift)


# ---------------------------------------------------------------------------------------------- dataset


def synthetic_config(args: argparse.Namespace) -> SyntheticConfig:
    """The synthetic dataset of these sizes; its folder name carries the sizes so that runs with other
    sizes do not overwrite it."""
    root = Path(args.root) / f"synthetic_{args.videos}v_{args.frames}f_{args.height}x{args.width}"
    return SyntheticConfig(root=str(root), num_train=args.videos, num_test=1,
                           num_events=max(1, min(4, args.videos + 1)), frames_per_dive=args.frames,
                           height=args.height, width=args.width)


# ---------------------------------------------------------------------------------------------- reference


class ReferencePairDataset(Dataset):
    """(query, exemplar of the same difficulty) pairs read frame by frame with PIL, as the reference does."""

    def __init__(self, dataset_root: Path, num_frames: int) -> None:
        annotations = dataset_root / ANNOTATIONS_DIR
        with open(annotations / ANNOTATIONS_FILE, "rb") as handle:
            self.labels: dict[tuple[int, int], dict[str, Any]] = pickle.load(handle)
        with open(annotations / TRAIN_SPLIT_FILE, "rb") as handle:
            self.keys: list[tuple[int, int]] = [tuple(k) for k in pickle.load(handle)]
        self.frames_root = dataset_root / FRAMES_DIR
        self.num_frames = num_frames
        self.by_difficulty: dict[float, list[tuple[int, int]]] = {}
        for key in self.keys:
            self.by_difficulty.setdefault(self.labels[key]["difficulty"], []).append(key)
        self.mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.keys)

    def load_video(self, key: tuple[int, int]) -> torch.Tensor:
        end = self.labels[key]["end_frame"] + random.randint(-TEMPORAL_SHIFT, TEMPORAL_SHIFT)
        first = end - self.num_frames + 1
        # one crop and flip per video, applied to each frame separately (clip-consistent video transforms)
        top = random.randint(0, RESIZE_HW[0] - CROP)
        left = random.randint(0, RESIZE_HW[1] - CROP)
        flip = random.random() < 0.5
        frames = []
        for number in range(first, end + 1):
            path = self.frames_root / f"{key[0]:02d}" / f"{number:06d}.jpg"
            with Image.open(path) as decoded:  # PIL sizes are (width, height)
                image = decoded.convert("RGB").resize((RESIZE_HW[1], RESIZE_HW[0]), Image.Resampling.BILINEAR)
            frame = torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous().float().div(255)
            frame = frame[:, top:top + CROP, left:left + CROP]
            if flip:
                frame = frame.flip(-1)
            frames.append((frame - self.mean) / self.std)
        return torch.stack(frames, dim=1)  # (3, T, 112, 112)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        query = self.keys[index]
        pool = [k for k in self.by_difficulty[self.labels[query]["difficulty"]] if k != query] or [query]
        exemplar = random.choice(pool)
        return {
            "query": self.load_video(query), "exemplar": self.load_video(exemplar),
            "query_score": torch.tensor(self.labels[query]["final_score"], dtype=torch.float32),
            "exemplar_score": torch.tensor(self.labels[exemplar]["final_score"], dtype=torch.float32),
        }


def reference_loader(dataset_root: Path, args: argparse.Namespace) -> DataLoader:
    dataset = ReferencePairDataset(dataset_root, args.frames)
    return DataLoader(dataset, batch_size=args.batch, shuffle=True, num_workers=args.workers,
                      pin_memory=torch.cuda.is_available(), persistent_workers=args.workers > 0,
                      drop_last=False)


# ---------------------------------------------------------------------------------------------- ours


def data_config(synthetic: SyntheticConfig, cache_dir: Path, args: argparse.Namespace) -> DataConfig:
    """conf/data/synthetic.yaml's reading settings at the reference's MTL-AQA frame and crop sizes."""
    root = Path(synthetic.root)
    return DataConfig(
        name="synthetic", format="mtl_aqa", annotations=str(root / ANNOTATIONS_DIR), root=str(root / FRAMES_DIR),
        num_frames=args.frames, frame_selection="end_aligned", train_shift=TEMPORAL_SHIFT,
        exemplar_rule="difficulty", batch_size=args.batch, num_workers=args.workers, seed=0,
        transform=TransformConfig(resize=list(RESIZE_HW), crop=[CROP, CROP], flip=True),
        synthetic=synthetic, cache_dir=str(cache_dir), use_cache="require",
    )


def prepare_frame_cache(config: DataConfig, workers: int) -> dict[str, Any]:
    """What t2cr-prepare does, without Hydra and its progress bar: cache every frame any split can read."""
    raw = PairDataModule(replace(config, use_cache="never"))
    samples = {}
    for split in ("train", "val", "test"):
        for sample in raw.samples(split):
            samples.setdefault(sample.key_str, sample)
    summary = prepare_cache(list(samples.values()), raw.reader, raw.reader.source, resolve_cache_dir(config),
                            config.transform.resize, config=config, workers=max(1, workers))
    return {"samples": summary.samples, "written": summary.prepared, "frames": summary.frames,
            "mib": round(summary.bytes / 2**20, 1), "seconds": round(summary.seconds, 2)}


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


# ---------------------------------------------------------------------------------------------- timing


def endless(loader: DataLoader, on_epoch: Callable[[int], None] | None = None) -> Iterator[dict]:
    """Batches across epoch ends, so that --warmup + --batches may exceed one epoch."""
    epoch = 0
    while True:
        if on_epoch is not None:
            on_epoch(epoch)
        yield from loader
        epoch += 1


def measure(loader: DataLoader, warmup: int, batches: int, step: Callable[[dict], dict] | None = None,
            on_epoch: Callable[[int], None] | None = None) -> tuple[dict[str, float], dict]:
    """Rate over `batches` batches after `warmup`; the first warm-up batch's latency is the start-up."""
    stream = endless(loader, on_epoch)
    start = time.perf_counter()
    first = next(stream)
    if step is not None:
        first = step(first)
    startup = time.perf_counter() - start
    for _ in range(warmup - 1):
        batch = next(stream)
        if step is not None:
            step(batch)
    pairs = 0
    start = time.perf_counter()
    for _ in range(batches):
        batch = next(stream)
        if step is not None:
            batch = step(batch)
        pairs += int(batch["query_score"].shape[0])  # the last batch of an epoch may be short
    seconds = time.perf_counter() - start
    stream.close()  # stops the loader's iterator, then its persistent workers go with the loader
    return {"pairs": pairs, "seconds": seconds, "pairs_per_s": pairs / seconds,
            "ms_per_pair": 1000.0 * seconds / pairs, "startup_s": startup}, first


def shapes(batch: dict, names: tuple[str, ...]) -> dict[str, list[int]]:
    return {name: list(batch[name].shape) for name in names if name in batch}


# ---------------------------------------------------------------------------------------------- main


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    load_before = os.getloadavg()[0]

    synthetic = synthetic_config(args)
    start = time.perf_counter()
    print(f"dataset {synthetic.root} ...", file=sys.stderr)
    dataset_root = ensure_synthetic_dataset(synthetic)
    dataset_s = time.perf_counter() - start

    cache_dir = Path(args.root) / f"cache_{Path(synthetic.root).name}_{RESIZE_HW[0]}x{RESIZE_HW[1]}"
    config = data_config(synthetic, cache_dir, args)
    print(f"frame cache {cache_dir} ...", file=sys.stderr)
    cache = prepare_frame_cache(config, args.workers)

    print("timing the reference-style loader ...", file=sys.stderr)
    loader = reference_loader(dataset_root, args)
    reference, reference_batch = measure(loader, args.warmup, args.batches)
    del loader
    gc.collect()

    datamodule = PairDataModule(config)
    datamodule.setup("fit")

    def finish(batch: dict) -> dict:
        batch = datamodule.on_after_batch_transfer(to_device(batch, device), 0)
        if device.type == "cuda":
            torch.cuda.synchronize()  # the finish step's kernels belong to the timed batch
        return batch

    results, first_batches = {}, {}
    for name, step in (("ours_loader_only", None), ("ours", finish)):
        print(f"timing {name.replace('_', ' ')} ...", file=sys.stderr)
        # what a trainer on this device does: finish in the workers on a CPU, after the transfer on a GPU
        datamodule.normalise_in_workers = name == "ours" and device.type == "cpu"
        loader = datamodule.train_dataloader()
        results[name], first_batches[name] = measure(loader, args.warmup, args.batches, step,
                                                     loader.sampler.set_epoch)
        del loader
        gc.collect()

    return {
        "ratio": results["ours"]["pairs_per_s"] / reference["pairs_per_s"],
        "ratio_loader_only": results["ours_loader_only"]["pairs_per_s"] / reference["pairs_per_s"],
        "reference": reference,
        "ours": results["ours"],
        "ours_loader_only": results["ours_loader_only"],
        "sizes": {"videos": args.videos, "frames": args.frames, "height": args.height, "width": args.width,
                  "resize_hw": list(RESIZE_HW), "crop": CROP, "batch": args.batch, "batches": args.batches,
                  "warmup": args.warmup},
        "shapes": {"reference": shapes(reference_batch, ("query", "exemplar")),
                   "ours": shapes(first_batches["ours"], ("query", "exemplar")),
                   "ours_loader_only": shapes(first_batches["ours_loader_only"], ("query_frames",))},
        "workers": args.workers,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        "finish_device": device.type,
        "normalise_in_workers": device.type == "cpu",
        "loadavg_1min": {"before": load_before, "after": os.getloadavg()[0]},
        "dataset": {"root": str(dataset_root), "seconds_to_ensure": round(dataset_s, 2)},
        "cache": {"dir": str(cache_dir), **cache},
    }


def report(result: dict[str, Any]) -> str:
    sizes = result["sizes"]
    setup = (f"{sizes['videos']} training videos x {sizes['frames']} JPEG frames of {sizes['height']} x "
             f"{sizes['width']}, resize {sizes['resize_hw'][0]} x {sizes['resize_hw'][1]}, crop {sizes['crop']}; "
             f"batch {sizes['batch']} pairs, {result['workers']} workers, {sizes['batches']} timed batches after "
             f"{sizes['warmup']} warm-up")
    machine = (f"cpus {result['cpu_count']}, torch threads {result['torch_threads']}, device {result['device']}, "
               f"load average {result['loadavg_1min']['before']:.2f} before / "
               f"{result['loadavg_1min']['after']:.2f} after")
    lines = [setup, machine, "", f"{'loader':34s} {'pairs/s':>9s} {'ms/pair':>9s} {'start-up s':>11s}"]
    names = (("reference", "reference (PIL per frame)"),
             ("ours", "ours (cache + finish in workers)" if result["normalise_in_workers"]
              else f"ours (cache + finish on {result['finish_device']})"),
             ("ours_loader_only", "ours, loader only"))
    for key, label in names:
        figures = result[key]
        lines.append(f"{label:34s} {figures['pairs_per_s']:9.2f} {figures['ms_per_pair']:9.1f} "
                     f"{figures['startup_s']:11.2f}")
    lines += ["", f"ratio ours / reference: {result['ratio']:.2f} (loader only: {result['ratio_loader_only']:.2f})",
              f"batch shapes: {result['shapes']}"]
    return "\n".join(lines)


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="/tmp/t2cr_bench_data", help="folder for the dataset and the cache")
    parser.add_argument("--videos", type=positive, default=16, help="training videos")
    parser.add_argument("--frames", type=int, default=103, help="frames per video (>= 16)")
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=455)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=positive, default=2, help="pairs per batch")
    parser.add_argument("--batches", type=positive, default=20, help="timed batches per loader")
    parser.add_argument("--warmup", type=positive, default=2, help="batches before timing (worker start-up)")
    parser.add_argument("--json", action="store_true", help="print one JSON object only")
    args = parser.parse_args()

    # with --json, stdout carries the JSON object alone: anything else printed goes to stderr
    with contextlib.redirect_stdout(sys.stderr):
        result = run(args)
    print(json.dumps(result) if args.json else report(result))


if __name__ == "__main__":
    main()
