"""Names of a sweep's jobs for people: job folders and W&B runs lead with what varies across the sweep.

A job's own config only holds its own values, so the sweep's parent process (`SweepNames`, a Hydra
callback) finds the keys that take several values (command-line sweeps such as `model.decoder.layers=1,2`
and the `hydra.sweeper.params` of an `experiments/` file) and hands them to every job in the environment
(`T2CR_SWEEP_VARYING`; local, submitit and SLURM jobs inherit it). `t2cr-tables` never parses these names:
it reads each job's `config.yaml` and `metrics.json`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from t2cr.resources import EXPERIMENTS_DIR

SWEEP_VARYING_VAR = "T2CR_SWEEP_VARYING"
MAX_DIRNAME = 120


def split_top_level(text: str) -> list[str]:
    """Split at commas outside brackets: 'a=[1,2],b=3' -> ['a=[1,2]', 'b=3']."""
    parts, depth, current = [], 0, []
    for char in text:
        depth += char in "[{("
        depth -= char in "]})"
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def varying_keys(overrides: Sequence[str], sweeper_params: Mapping[str, Any] | None = None) -> list[str]:
    """The keys that take more than one value in a sweep (command line and `hydra.sweeper.params`)."""
    items = [*overrides, *(f"{key}={value}" for key, value in (sweeper_params or {}).items())]
    keys = set()
    for override in OverridesParser.create().parse_overrides(items):
        if override.is_sweep_override() and len(list(override.sweep_string_iterator())) > 1:
            keys.add(override.key_or_group)
    return sorted(keys)


def _key(part: str) -> str:
    return part.split("=", 1)[0].lstrip("+~")


def _shorten(parts: list[str], seed_part: str) -> str:
    """Within MAX_DIRNAME: keys cut to their last component, then a digest for the rest; the seed stays."""
    name = ",".join([*parts, seed_part])
    if len(name) <= MAX_DIRNAME:
        return name
    short = [f"{_key(p).rsplit('.', 1)[-1]}={p.split('=', 1)[1]}" if "=" in p else p for p in parts]
    name = ",".join([*short, seed_part])
    if len(name) <= MAX_DIRNAME:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    return f"{name[: MAX_DIRNAME - len(seed_part) - 10]}~{digest},{seed_part}"


def job_dirname(override_dirname: str, seed: object) -> str:
    """A sweep job's folder name (after Hydra's `<job number>_`): the values that vary across the sweep,
    then the seed; no constant override and no path (they are in the job's config.yaml).

    Without the sweep's varying keys (a job started outside `t2cr-train -m`) every override that is not a
    path is named, as before."""
    parts = [p for p in split_top_level(override_dirname) if p and "/" not in p.split("=", 1)[-1]]
    parts = [p for p in parts if _key(p) != "seed"]
    varying = os.environ.get(SWEEP_VARYING_VAR)
    if varying is not None:
        keys = {k for k in varying.split(",") if k}
        parts = [p for p in parts if _key(p) in keys]
    name = _shorten(sorted(parts), f"seed={seed}")
    return name.replace("/", ".")


def sweep_group(sweep_dir: str | os.PathLike) -> str:
    """The W&B group of a sweep's runs: `<sweep name>/<stamp>`, the last two parts of its folder."""
    path = Path(sweep_dir)
    return f"{path.parent.name}/{path.name}"


def paper_table(config_name: str | None) -> str | None:
    """The paper table a sweep reproduces, when it is one of `experiments/<table>.yaml`."""
    if config_name and (EXPERIMENTS_DIR / f"{config_name}.yaml").is_file():
        return config_name
    return None


class SweepNames(Callback):
    """In the sweep's parent process, before any job starts: which keys vary, for the jobs' names."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        params = config.hydra.sweeper.get("params")
        params = OmegaConf.to_container(params, resolve=False) if params else {}
        keys = varying_keys(list(config.hydra.overrides.task), params)  # type: ignore[arg-type]
        os.environ[SWEEP_VARYING_VAR] = ",".join(keys)


if not OmegaConf.has_resolver("t2cr_dirname"):
    OmegaConf.register_new_resolver("t2cr_dirname", job_dirname)


def wandb_identity(run_name: str, run_dir: Path) -> dict[str, Any]:
    """W&B name, group and tags of the current Hydra job: a sweep's job is named by its folder (what
    varies, then the seed) and grouped by sweep, tagged with the paper table of an `experiments/` sweep;
    a single run keeps `<name>-<stamp>`. Pure functions of the folders, so a resumed run keeps them."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra = HydraConfig.get()
    table = paper_table(hydra.job.config_name)
    tags = [table] if table else []
    if hydra.mode == RunMode.MULTIRUN:
        return {"name": run_dir.name, "group": sweep_group(hydra.sweep.dir), "tags": tags}
    return {"name": f"{run_name}-{run_dir.name}", "group": None, "tags": tags}
