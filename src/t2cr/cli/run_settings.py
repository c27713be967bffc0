"""Evaluate a checkpoint under the settings it was trained with (t2cr-eval, t2cr-explain).

A score means what the run's data settings make it mean: the dataset, score / DD or not, the exemplar
rule, the clip plan, the transform. The checkpoint carries them (`T2CRModule.run_settings`), and the
commands use them by default. The command line may still say where the data lives and how it is
loaded (`WHERE_KEYS`), and explicitly change K or the seed (`DEVIATION_KEYS`: applied, and reported as
deviations); an override that changes any other data setting is refused, naming the key.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict

from t2cr.cli.common import UserError, warn
from t2cr.launch import PARENT_PID_VAR
from t2cr.run import is_rank_zero

# where the data lives and how it is read and batched: applied as given, the scores mean the same
WHERE_KEYS = frozenset({"root", "annotations", "cache_dir", "use_cache", "source", "frame_pattern", "video.pattern",
                        "video.first_frame",
                        "synthetic.root", "num_workers", "eval_batch_size", "batch_size", "check", "check_decode"})
# changes the user may ask for explicitly; applied and reported (skip_missing can shrink the test set)
DEVIATION_KEYS = frozenset({"voting_exemplars", "seed", "skip_missing"})
# config groups that never touch data.*
NON_DATA_GROUPS = frozenset({"trainer", "runtime"})


@dataclass
class RunSettings:
    data: dict[str, Any]
    seed: Any
    matmul_precision: str
    precision: str
    deviations: dict[str, dict[str, Any]] = field(default_factory=dict)


def effective_settings(run: dict[str, Any], composed: dict[str, Any], overrides: Sequence[str],
                       groups: Collection[str], ckpt: str) -> RunSettings:
    """The checkpoint's `run` settings with the command line's allowed overrides applied.

    composed: the command's resolved config; overrides: what the user typed (Hydra's task overrides);
    groups: the config groups of the command (an override of one is a group choice, not a value).
    Raises UserError for an override that would change what the scores mean.
    """
    saved = run["data"]
    data = copy.deepcopy(saved)
    composed_data = composed.get("data") or {}
    settings = RunSettings(data, run.get("seed", saved.get("seed")), run.get("matmul_precision", "highest"),
                           run.get("precision", "32-true"))
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key, typed = override.key_or_group, override.input_line
        if key in groups:
            _check_group(key, typed, saved, composed_data, ckpt)
        elif key == "seed":  # the data's seed follows the run's (data.seed: ${seed})
            _deviate(settings, "seed", saved.get("seed"), composed_data.get("seed"))
            data["seed"] = composed_data.get("seed")
            settings.seed = composed.get("seed")
        elif key in ("trainer.matmul_precision", "trainer.precision"):
            name = key.removeprefix("trainer.")
            _deviate(settings, key, getattr(settings, name), composed["trainer"][name])
            setattr(settings, name, composed["trainer"][name])
        elif key.startswith("data."):
            path = key.removeprefix("data.")
            used, trained = _get(composed_data, path), _get(saved, path)
            if path in WHERE_KEYS or path in DEVIATION_KEYS:
                if path in DEVIATION_KEYS:
                    _deviate(settings, key, trained, used)
                _set(data, path, used, typed, ckpt)
            elif used != trained:
                raise UserError(f"{typed} would change what the scores mean: {ckpt} was trained with "
                                f"{key}={_show(trained)}. Drop the override (the data settings come from the "
                                "checkpoint), or train a model with this setting")
    return settings


def _check_group(group: str, typed: str, saved: dict[str, Any], composed: dict[str, Any], ckpt: str) -> None:
    """`data=<name>` names the dataset (its other defaults are not applied: the checkpoint's are); another group
    that sets data.* (data/transform, +experiment) must give the checkpoint's own values."""
    if group in NON_DATA_GROUPS or group.startswith("hydra/"):
        return
    if group == "data":
        if composed.get("name") != saved.get("name"):
            raise UserError(f"{typed}: {ckpt} was trained on data.name={_show(saved.get('name'))}; its scores mean "
                            "nothing on another dataset. Drop data= (the data settings come from the checkpoint) "
                            "and point data.root / data.annotations at its data")
        return
    prefix = group.removeprefix("data/").replace("/", ".") + "." if group.startswith("data/") else ""
    used, trained = _flatten(composed), _flatten(saved)
    for path in sorted(set(used) | set(trained)):
        if not path.startswith(prefix) or _exempt(path):
            continue
        if used.get(path) != trained.get(path):
            raise UserError(f"{typed} sets data.{path}={_show(used.get(path))}, but {ckpt} was trained with "
                            f"{_show(trained.get(path))}. Drop {typed}: the data settings come from the checkpoint")


def _exempt(path: str) -> bool:
    return path in WHERE_KEYS or path in DEVIATION_KEYS


def _deviate(settings: RunSettings, key: str, trained: Any, used: Any) -> None:
    if used != trained:
        settings.deviations[key] = {"trained": trained, "used": used}
    else:
        settings.deviations.pop(key, None)


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _get(tree: dict[str, Any] | None, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(tree, dict):
            return None
        tree = tree.get(part)
    return tree


def _set(tree: dict[str, Any], path: str, value: Any, typed: str, ckpt: str) -> None:
    *parents, last = path.split(".")
    for part in parents:
        if not isinstance(tree.get(part), dict):
            # e.g. data.synthetic.root for a checkpoint of real data: no generator to point anywhere
            raise UserError(f"{typed}: {ckpt} has no data.{part} settings to apply it to")
        tree = tree[part]
    tree[last] = value


def _show(value: Any) -> str:
    return json.dumps(value)


def apply_run_settings(cfg: DictConfig, run: dict[str, Any] | None, command: str, ckpt: str) -> dict[str, Any] | None:
    """Replace cfg.data (and cfg.seed, cfg.trainer.matmul_precision and .precision where present) by the checkpoint's settings
    with the command line's allowed overrides. Returns the deviations ({} when none), or None for a checkpoint
    that carries no run settings: then the command line's data settings are used, with a warning."""
    if run is None:
        if is_rank_zero():
            warn(command, f"{ckpt} carries no run settings (it was written before checkpoints kept them): using the "
                          f"data settings of this command line (data.name={cfg.data.name}, "
                          f"data.voting_exemplars={cfg.data.voting_exemplars}, data.seed={cfg.data.seed}); make sure "
                          "they are the ones it was trained with")
        return None
    if os.environ.get(PARENT_PID_VAR):
        return {}  # a DDP rank started by rank 0 runs rank 0's config, where the settings are already applied
    hydra = HydraConfig.get()
    composed = OmegaConf.to_container(cfg, resolve=True)
    settings = effective_settings(run, composed, list(hydra.overrides.task), set(hydra.runtime.choices), ckpt)
    with open_dict(cfg):
        cfg.data = settings.data
        cfg.seed = settings.seed
        if "trainer" in cfg:
            cfg.trainer.matmul_precision = settings.matmul_precision
            cfg.trainer.precision = settings.precision  # bf16-mixed features differ from fp32 ones
    if settings.deviations and is_rank_zero():
        shown = ", ".join(f"{k}: trained {_show(v['trained'])}, used {_show(v['used'])}"
                          for k, v in settings.deviations.items())
        warn(command, f"deviations from the run's own settings: {shown}")
    return settings.deviations
