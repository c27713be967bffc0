"""t2cr-prepare: write the uint8 frame cache of a dataset, or check that every frame decodes.

    t2cr-prepare data=mtl_aqa data.annotations=... data.root=... data.cache_dir=/scratch/mtl_aqa_cache
    t2cr-prepare data=mtl_aqa data.annotations=... data.root=... check=true   # exit 1 on any problem

The cache holds every frame that any read of any sample of the train, val and test splits can take,
resized to data.transform.resize; a run with the same data.* settings and data.cache_dir reads it.
"""

from __future__ import annotations

import time

import hydra
from omegaconf import DictConfig, open_dict
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from t2cr.data.cache import PrepareSummary, prepare_cache, resolve_cache_dir
from t2cr.data.check import SampleProblem, check_samples, format_report
from t2cr.data.frames import build_frame_source
from t2cr.data.reading import SampleReader
from t2cr.data.samples import Sample
from t2cr.run import CONF_DIR, build_datamodule

SPLITS = ("train", "val", "test")


def load(cfg: DictConfig, checking: bool = False):
    """The data module over the raw frames, every sample it keeps, a raw reader.

    Preparing runs the data module's own existence check, so a missing frame stops it with the paths,
    or with data.skip_missing=true drops those samples as training would; checking runs ours (decoding).
    """
    with open_dict(cfg):
        cfg.data.use_cache = "never"  # prepare and check look at the raw frames
        cfg.data.check = not checking
    datamodule = build_datamodule(cfg)
    samples: dict[str, Sample] = {}
    for split in SPLITS:
        for sample in datamodule.samples(split):
            samples.setdefault(sample.key_str, sample)
    config = datamodule.config
    reader = datamodule.reader
    raw = SampleReader(build_frame_source(config), reader.transform, reader.num_frames, reader.selection,
                       reader.train_shift)
    return datamodule, list(samples.values()), raw


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())


def check(cfg: DictConfig) -> list[SampleProblem]:
    _, samples, reader = load(cfg, checking=True)
    start = time.perf_counter()
    with _progress() as bar:
        task = bar.add_task("checking frames", total=len(samples))
        problems = check_samples(samples, reader, decode=True, workers=int(cfg.workers),
                                 progress=lambda done, total: bar.update(task, completed=done))
    print(format_report(problems))
    print(f"checked {len(samples)} samples in {time.perf_counter() - start:.1f} s")
    return problems


def prepare(cfg: DictConfig) -> PrepareSummary:
    if not cfg.data.get("cache_dir"):
        raise SystemExit(f"t2cr-prepare needs a folder for the cache: t2cr-prepare data={cfg.data.name} "
                         "data.cache_dir=<folder> (runs then read it with the same data.cache_dir)")
    datamodule, samples, reader = load(cfg)
    config = datamodule.config
    cache_dir = resolve_cache_dir(config)
    with _progress() as bar:
        task = bar.add_task(f"caching frames in {cache_dir}", total=len(samples))
        summary = prepare_cache(samples, reader, reader.source, cache_dir, config.transform.resize, config=config,
                                workers=int(cfg.workers),
                                progress=lambda done, total: bar.update(task, completed=done, total=total))
    print(f"frame cache {summary.cache_dir}: {summary.samples} samples ({summary.prepared} written, "
          f"{summary.reused} already cached), {summary.frames} frames, {summary.bytes / 2**20:.1f} MiB, "
          f"{summary.seconds:.1f} s")
    print(f"runs with data.cache_dir={summary.cache_dir} read it (data.use_cache=auto, or require)")
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
    from t2cr.cli.common import UserError
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
def main(cfg: DictConfig) -> None:
    if cfg.check:
        if check(cfg):
            raise SystemExit(1)
        return
    prepare(cfg)


if __name__ == "__main__":
    main()
