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


@hydra.main(config_path=str(CONF_DIR), config_name="prepare", version_base="1.3")
def main(cfg: DictConfig) -> None:
    if cfg.check:
        if check(cfg):
            raise SystemExit(1)
        return
    prepare(cfg)


if __name__ == "__main__":
    main()
