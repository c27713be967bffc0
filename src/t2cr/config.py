"""Typed views of Hydra / OmegaConf configuration sections."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf

T = TypeVar("T")


def to_dataclass(schema: type[T], section: Mapping[str, Any] | DictConfig | None) -> T:
    """Merge a config section onto the dataclass schema and return the dataclass.

    Unknown keys and wrongly typed values fail here, with OmegaConf naming the key.
    """
    if isinstance(section, DictConfig):
        # interpolations point outside the section; a required value left as ??? must fail here, not
        # fall back to the schema's default (e.g. a data path)
        section = OmegaConf.to_container(section, resolve=True, throw_on_missing=True)
    merged = OmegaConf.merge(OmegaConf.structured(schema), section or {})
    return OmegaConf.to_object(merged)  # type: ignore[return-value]
