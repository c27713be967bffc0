"""t2cr-prepare: write the uint8 frame cache of a dataset, or check that every frame decodes.

    t2cr-prepare data=mtl_aqa data.annotations=... data.root=... data.cache_dir=/scratch/mtl_aqa_cache
    t2cr-prepare data=mtl_aqa data.annotations=... data.root=... check=true   # exit 1 on any problem
    t2cr-prepare data=mtl_aqa data.root=... check=true data.skip_missing=true check_report=problems.csv
    t2cr-prepare data=mtl_aqa data.annotations=... videos=/data/MTL-AQA/whole_videos data.cache_dir=...

The cache holds every frame that any read of any sample of the train, val and test splits can take,
resized to data.transform.resize; a run with the same data.* settings and data.cache_dir reads it. Each
data settings' cache is a subfolder of data.cache_dir named by their digest (t2cr.data.cache.settings_folder),
so prepares with other settings never touch a cache that runs are reading.
With videos=<folder> the frames come straight from the published videos, each decoded once
(t2cr.data.video_import); jpeg_dir=<folder> also writes them as JPEG files in data.frame_pattern's layout.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from t2cr.cli.common import UserError, command, user_errors
from t2cr.data.cache import PrepareSummary, cache_settings, prepare_cache, prepare_folder, resolve_cache_dir
from t2cr.data.check import SampleProblem, check_samples, format_report, problem_kinds, write_problem_report
from t2cr.data.frames import build_frame_source
from t2cr.data.reading import SampleReader
from t2cr.data.samples import Sample
from t2cr.data.video_import import (
    ImportSummary,
    JpegOutput,
    VideoImportError,
    VideoJob,
    import_videos,
    missing_videos,
    plan_videos,
)
from t2cr.resources import CONF_DIR
from t2cr.run import build_datamodule

SPLITS = ("train", "val", "test")
SHOWN_SAMPLES = 20  # samples listed by name in a summary


def load(cfg: DictConfig, checking: bool = False):
    """The data module over the raw frames, every sample it keeps, a raw reader.

    Preparing runs the data module's own existence check, so a missing frame stops it with the paths,
    or with data.skip_missing=true drops those samples as training would; checking runs ours (decoding).
    """
    with open_dict(cfg):
        cfg.data.use_cache = "never"  # prepare and check look at the raw frames
        cfg.data.check = not checking
    datamodule = build_datamodule(cfg)
    config = datamodule.config
    reader = datamodule.reader
    raw = SampleReader(build_frame_source(config), reader.transform, reader.num_frames, reader.selection,
                       reader.train_shift, reader.shifted_keys)
    return datamodule, every_sample(datamodule), raw


def every_sample(datamodule) -> list[Sample]:
    """Every sample of the train, val and test splits, each once."""
    samples: dict[str, Sample] = {}
    for split in SPLITS:
        for sample in datamodule.samples(split):
            samples.setdefault(sample.key_str, sample)
    return list(samples.values())


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())


def check(cfg: DictConfig) -> bool:
    """Decode every frame a run can read; print what is wrong (and, with check_report=<file>, list every problem
    there). True when a run could start on these frames: no problem, or data.skip_missing=true and what it
    would drop leaves samples to train on, to test on and in every exemplar pool."""
    datamodule, samples, reader = load(cfg, checking=True)
    start = time.perf_counter()
    with _progress() as bar:
        task = bar.add_task("checking frames", total=len(samples))
        problems = check_samples(samples, reader, decode=True, workers=int(cfg.workers),
                                 progress=lambda done, total: bar.update(task, completed=done))
    skip_missing = datamodule.config.skip_missing
    report_file = None
    if cfg.get("check_report"):
        report_file = str(write_problem_report(problems, Path(str(cfg.check_report)).expanduser(),
                                               datamodule.official_splits_of()))
    print(format_report(problems, skip_missing=skip_missing, report_file=report_file))
    print(f"checked {len(samples)} samples in {time.perf_counter() - start:.1f} s"
          + (f"; every problem (key, split, problem, detail, paths, frames): {report_file}" if report_file else ""))
    if not problems:
        return True
    if not skip_missing:
        return False
    return _would_start(datamodule, problems)


def _would_start(datamodule, problems: list[SampleProblem]) -> bool:
    """With data.skip_missing=true: what a run would keep of each split, or why it would refuse to start."""
    try:
        _, accounts = datamodule.plan(problem_kinds(problems))
    except (ValueError, KeyError) as error:  # the refusal a run would print: shown, and the check fails
        reason = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"with data.skip_missing=true a run would refuse to start: {reason}")
        return False
    print("with data.skip_missing=true a run drops those samples and starts with:")
    for account in accounts.values():
        print(f"  {account.summary()}")
        for line in account.key_lines():
            print(f"    {line}")
    return True


def prepare(cfg: DictConfig) -> PrepareSummary:
    if not cfg.data.get("cache_dir"):
        raise SystemExit(f"t2cr-prepare needs a folder for the cache: t2cr-prepare data={cfg.data.name} "
                         "data.cache_dir=<folder> (runs then read it with the same data.cache_dir)")
    datamodule, samples, reader = load(cfg)
    config = datamodule.config
    cache_dir = resolve_cache_dir(config)
    folder = prepare_folder(cache_dir, cache_settings(config))
    with _progress() as bar:
        task = bar.add_task(f"caching frames in {folder}", total=len(samples))
        summary = prepare_cache(samples, reader, reader.source, folder, config.transform.resize, config=config,
                                workers=int(cfg.workers),
                                progress=lambda done, total: bar.update(task, completed=done, total=total))
    print(f"frame cache {summary.cache_dir}: {summary.samples} samples ({summary.prepared} written, "
          f"{summary.reused} already cached), {summary.frames} frames, {summary.bytes / 2**20:.1f} MiB, "
          f"{summary.seconds:.1f} s")
    print(f"runs with data.cache_dir={cache_dir} and these data settings read it (data.use_cache=auto, or require)")
    return summary


# ---------------------------------------------------------------------------------------------- videos=


def _video_folders(cfg: DictConfig) -> tuple[Path, Path | None]:
    videos = Path(str(cfg.videos)).expanduser()
    if not videos.is_dir():
        raise UserError(f"videos={videos} is not a folder: point videos= at the folder holding the published "
                        f"videos of {cfg.data.name} (data.video.pattern names each sample's file in it)")
    if not cfg.data.get("cache_dir"):
        raise UserError(f"t2cr-prepare videos= needs a folder for the cache: t2cr-prepare data={cfg.data.name} "
                        f"videos={videos} data.cache_dir=<folder> (runs then read it with the same data.cache_dir)")
    return videos, (Path(str(cfg.jpeg_dir)).expanduser() if cfg.get("jpeg_dir") else None)


def _samples_for_import(cfg: DictConfig, videos: Path, jpeg_dir: Path | None):
    """The data settings and every sample, read from the annotations only (no frame exists yet)."""
    with open_dict(cfg):
        if OmegaConf.is_missing(cfg.data, "root"):
            # the cache records data.root, and a run reads it under the same one: where the raw frames are
            # (the JPEGs written now), or else the videos
            cfg.data.root = os.path.abspath(jpeg_dir or videos)  # as typed: no symlink resolved
        cfg.data.use_cache = "never"
        cfg.data.check = False
        cfg.data.check_decode = False
    datamodule = build_datamodule(cfg)
    return datamodule.config, every_sample(datamodule), datamodule.reader.shifted_keys


def _videos_present(jobs: list[VideoJob], config, videos: Path) -> tuple[list[VideoJob], list[VideoJob]]:
    """The jobs whose video is there and those whose video is missing (allowed by data.skip_missing only)."""
    missing = missing_videos(jobs)
    if missing and not config.skip_missing:
        first = missing[0]
        raise UserError(f"{len(missing)} of {len(jobs)} videos are missing, e.g. {first.path} (sample "
                        f"{first.samples[0][1].key_str}): point videos= at the folder holding them "
                        f"(data.video.pattern={config.video.pattern!r} names each sample's file under "
                        f"videos={videos}), or set data.skip_missing=true to cache the samples of the others")
    absent = {job.name for job in missing}
    return [job for job in jobs if job.name not in absent], missing


def _report_import(summary: ImportSummary, config, missing: list[VideoJob], jpeg: JpegOutput | None,
                   cache_dir: Path) -> None:
    print(f"frame cache {summary.cache_dir}: {summary.videos} videos ({summary.decoded_videos} decoded, "
          f"{summary.reused_videos} already done), {summary.samples} samples, {summary.frames} frames, "
          f"{summary.bytes / 2**20:.1f} MiB, {summary.seconds:.1f} s ({summary.decoded_frames} frames decoded, "
          f"{summary.frames_per_second:.0f} frames/s)")
    if jpeg is not None:
        print(f"JPEG frames under {jpeg.root} (data.frame_pattern={jpeg.pattern!r}): {summary.jpegs} written now"
              + (f", those of {summary.reused_videos} videos before" if summary.reused_videos else ""))
    if missing:
        keys = [sample.key_str for job in missing for _, sample in job.samples]
        print(f"{len(keys)} samples not cached: their video is missing (data.skip_missing=true), e.g. "
              + ", ".join(f"{job.path}" for job in missing[:3]))
    if summary.outside:
        print(f"{len(summary.outside)} samples not cached: their frame range falls outside their video:")
        for outside in summary.outside[:SHOWN_SAMPLES]:
            print(f"  {outside.describe()}")
        if len(summary.outside) > SHOWN_SAMPLES:
            print(f"  ... and {len(summary.outside) - SHOWN_SAMPLES} more")
        print("  check data.video.first_frame and the videos; runs drop these samples with "
              "data.skip_missing=true")
    # without the JPEGs there are no raw frames behind the cache: a run must not look for them
    use = "" if jpeg is not None else " data.use_cache=require"
    print(f"runs read it with data.root={config.root} data.cache_dir={cache_dir}{use}")


def prepare_from_videos(cfg: DictConfig) -> ImportSummary:
    """t2cr-prepare videos=<folder>: the frame cache straight from the published videos, each decoded once."""
    videos, jpeg_dir = _video_folders(cfg)
    try:
        config, samples, shifted_keys = _samples_for_import(cfg, videos, jpeg_dir)
        jobs, missing = _videos_present(plan_videos(samples, videos, config.video.pattern), config, videos)
        jpeg = None if jpeg_dir is None else JpegOutput(jpeg_dir, config.frame_pattern, int(cfg.jpeg_quality))
        cache_dir = resolve_cache_dir(config)
        folder = prepare_folder(cache_dir, cache_settings(config))
        with _progress() as bar:
            task = bar.add_task(f"decoding videos into {folder}", total=len(jobs))

            def show(done: int, total: int, frames: int) -> None:
                bar.update(task, completed=done, total=total,
                           description=f"decoding videos into {folder} ({frames} frames)")

            summary = import_videos(jobs, config, folder, jpeg=jpeg, workers=int(cfg.workers), progress=show,
                                    shifted_keys=shifted_keys)
    except VideoImportError as error:
        raise UserError(str(error)) from None
    _report_import(summary, config, missing, jpeg, cache_dir)
    return summary


def prepare_command(cfg: DictConfig, cache_dir: str) -> str:
    """The t2cr-prepare command line that caches the frames of this run's data settings."""
    from hydra.core.hydra_config import HydraConfig

    hydra = HydraConfig.get()
    data = [o for o in hydra.overrides.task if o.startswith(("data.", "data=", "+data", "experiment=", "+experiment="))
            and not o.startswith(("data.cache_dir=", "data.use_cache="))]
    choice = hydra.runtime.choices.get("data", cfg.data.name)
    first = [] if any(o.startswith("data=") for o in data) else [f"data={choice}"]
    return " ".join(["t2cr-prepare", *first, *data, f"data.cache_dir={cache_dir}"])


def cache_for_accelerator(cfg: DictConfig, started_by_cluster: bool, workers: int = 4) -> None:
    """An accelerator run reads the uint8 frame cache: JPEG decoding per step would keep the GPU waiting.

    With data.use_cache=auto and a data.cache_dir that is not complete, the cache is built here, once, with a
    progress bar (before any other process of the job starts; the generated synthetic data gets a folder beside
    it when none is named); without data.cache_dir, or when a cluster
    started every process (they would all write it), the run is refused with the exact t2cr-prepare command.
    data.use_cache=never reads the raw frames on purpose.
    """
    from t2cr.config import to_dataclass
    from t2cr.data.cache import cache_status
    from t2cr.data.config import DataConfig

    if cfg.data.use_cache != "auto":
        return
    if not cfg.data.cache_dir and cfg.data.get("synthetic"):
        with open_dict(cfg):  # generated data (make train on a GPU): its cache goes beside it
            cfg.data.cache_dir = f"{cfg.data.synthetic.root}_frame_cache"
    config = to_dataclass(DataConfig, cfg.data)
    status = cache_status(resolve_cache_dir(config), config)
    if status == "complete":
        return
    folder = cfg.data.cache_dir or f"<folder for the {cfg.data.name} frame cache>"
    if not cfg.data.cache_dir or started_by_cluster:
        raise UserError(f"a GPU run reads the uint8 frame cache, and there is none ({status}). Build it once with "
                        f"`{prepare_command(cfg, folder)}` and pass data.cache_dir={folder} to this run, or set "
                        "data.use_cache=never to decode the raw frames at every step (the GPU then waits)")
    print(f"building the frame cache {cfg.data.cache_dir} for this GPU run ({status}); later runs read it")
    run = cfg.copy()  # prepare reads the raw frames: its settings stay out of this run's config
    with open_dict(run):
        run.workers = workers
    prepare(run)


@hydra.main(config_path=str(CONF_DIR), config_name="prepare", version_base="1.3")
def hydra_main(cfg: DictConfig) -> None:
    with user_errors("prepare"):
        if cfg.get("videos"):
            if cfg.check:
                raise UserError("check=true checks extracted frames; with videos= the import itself reports "
                                "unreadable videos and samples outside their video: drop one of the two")
            prepare_from_videos(cfg)
            return
        if cfg.get("jpeg_dir"):
            raise UserError("jpeg_dir= writes the frames decoded from videos=<folder>: add videos=, or drop jpeg_dir=")
        if cfg.check:
            if not check(cfg):
                raise SystemExit(1)
            return
        prepare(cfg)


main = command("prepare", hydra_main)

if __name__ == "__main__":
    main()
