"""Each config value is defined once: the dataclasses are the schemas (t2cr.schemas), and no YAML leaf of
their groups repeats a schema default."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest
import yaml

from t2cr.resources import CONF_DIR
from t2cr.schemas import METHOD_SCHEMAS, SCHEMAS


def _defaults(schema: type) -> dict:
    """The schema's defaults as plain values; a nested dataclass field (also Optional[...] = None) by its
    own dataclass's defaults, so that a YAML block under it is compared leaf by leaf."""
    hints = typing.get_type_hints(schema)
    values = {}
    for f in dataclasses.fields(schema):
        nested = [t for t in (hints[f.name], *typing.get_args(hints[f.name])) if dataclasses.is_dataclass(t)]
        if nested:
            values[f.name] = _defaults(nested[0])
        elif f.default is not dataclasses.MISSING:
            values[f.name] = f.default
        else:
            values[f.name] = f.default_factory()  # type: ignore[misc]
    return values


def _repeats(node: dict, defaults: dict, path: str = "") -> list[str]:
    found = []
    for key, value in node.items():
        if key == "defaults" or key not in defaults:
            continue
        default = defaults[key]
        if isinstance(value, dict) and isinstance(default, dict):
            found += _repeats(value, default, f"{path}{key}.")
        elif value == default and type(value) is type(default) or (value is None and default is None):
            found.append(f"{path}{key}: {value!r}")
    return found


def _schema_of(group: str, path: Path) -> type:
    """The group's schema; a model option of another method names its own (defaults: [schema_<method>, ...])."""
    text = yaml.safe_load(path.read_text()) or {}
    named = [d for d in text.get("defaults", []) if isinstance(d, str) and d in METHOD_SCHEMAS]
    return METHOD_SCHEMAS[named[0]] if group == "model" and named else SCHEMAS[group]


def _files() -> list[tuple[Path, dict]]:
    cases = [(path, _defaults(_schema_of(group, path))) for group in SCHEMAS
             for path in sorted((CONF_DIR / group).glob("*.yaml"))]
    return cases


@pytest.mark.parametrize(("path", "defaults"), _files(), ids=lambda v: v.relative_to(CONF_DIR).as_posix()
                         if isinstance(v, Path) else "")
def test_no_yaml_leaf_repeats_its_schema_default(path, defaults):
    text = yaml.safe_load(path.read_text()) or {}
    if path.read_text().startswith("# @package _global_"):
        # a global overlay (runtime=fast_ablation) writes into several groups: compare each with its schema
        group_defaults = {g: _defaults(s) for g, s in SCHEMAS.items()}
        found = [f"{g}.{r}" for g, section in text.items() if g in group_defaults and isinstance(section, dict)
                 for r in _repeats(section, group_defaults[g])]
    else:
        found = _repeats(text, defaults)
    assert not found, f"{path.relative_to(CONF_DIR)} repeats its schema's defaults (drop these lines): {found}"


def test_every_group_file_extends_its_schema():
    for group in SCHEMAS:
        for path in sorted((CONF_DIR / group).glob("*.yaml")):
            text = yaml.safe_load(path.read_text()) or {}
            if path.read_text().startswith("# @package _global_"):
                continue
            names = ["schema"] + (list(METHOD_SCHEMAS) if group == "model" else [])
            assert any(name in text.get("defaults", []) for name in names), \
                f"{path.relative_to(CONF_DIR)}: defaults must start with schema"


def test_the_check_finds_a_repeated_default():
    defaults = _defaults(SCHEMAS["data"])
    assert _repeats({"batch_size": 4, "synthetic": {"seed": 0}, "num_frames": 96},
                    defaults) == ["batch_size: 4", "synthetic.seed: 0"]


def _leaves(node, prefix: str = "") -> dict:
    if isinstance(node, dict):
        return {k: v for key, value in node.items() for k, v in _leaves(value, f"{prefix}{key}.").items()}
    return {prefix[:-1]: node}


def _composed_sections(group: str) -> list[dict]:
    """The group's section of the composed run config, for each option of the group and each experiment
    (an experiment may be the only place that keeps a default)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    section = group.replace("/", ".")
    required = ["data.root=b"]
    top = group.split("/")[0]
    runs = [[f"{top}={p.stem}"] for p in sorted((CONF_DIR / top).glob("*.yaml"))]
    runs += [[f"experiment={p.stem}"] for p in sorted((CONF_DIR / "experiment").glob("*.yaml"))]
    sections = []
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for overrides in runs:
            cfg = compose(config_name="train", overrides=[*overrides, *required])
            node = OmegaConf.select(cfg, section)
            sections.append(OmegaConf.to_container(node, resolve=True))
    return sections


@pytest.mark.parametrize("group", list(SCHEMAS))
def test_every_schema_default_is_used_by_some_config(group):
    # a default that every config overrides is a second, unused definition of the value (issue 13)
    defaults = {k: v for k, v in _leaves(_defaults(SCHEMAS[group])).items() if v != "???"}
    composed = [_leaves(section) for section in _composed_sections(group)]
    unused = sorted(key for key, value in defaults.items()
                    if all(key in run and run[key] != value for run in composed) and any(key in run for run in composed))
    assert not unused, f"{group}: every config overrides these schema defaults (give them a value a config uses): {unused}"
