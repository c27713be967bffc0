"""The config schemas: the dataclasses hold every default, the YAML files of conf/ only what differs.

Each group's YAML starts with `defaults: [schema, _self_]`: `schema` is the group's dataclass, stored
here in Hydra's ConfigStore as a structured config, so a composed config is typed (a misspelt key or a
wrongly typed value fails at composition, naming the key) and a value is defined in one place.
`register()` runs when `t2cr.run` is imported, which every entry point (and every test that composes
conf/) does before composing.
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from t2cr.data.config import DataConfig
from t2cr.data.transforms import TransformConfig
from t2cr.losses import LossConfig
from t2cr.methods import METHODS
from t2cr.models.t2cr import T2CRConfig
from t2cr.module import OptimConfig, RuntimeConfig

SCHEMA_NAME = "schema"
# config group -> its schema
SCHEMAS: dict[str, type] = {
    "model": T2CRConfig,
    "loss": LossConfig,
    "optim": OptimConfig,
    "runtime": RuntimeConfig,
    "data": DataConfig,
    # a transform option is a whole transform: selecting one (e.g. +data/transform=reference_code on data whose
    # own file sets a transform) resets every field to the schema's before the option's own values
    "data/transform": TransformConfig,
}
# the other methods' model schemas (t2cr.methods), stored as model/schema_<method>: conf/model/<method>.yaml
# starts with `defaults: [schema_<method>, _self_]` (T2CR's is `schema`, above)
METHOD_SCHEMAS: dict[str, type] = {f"schema_{name}": method.config for name, method in METHODS.items()
                                   if name != "t2cr"}


def register() -> None:
    """Store every schema as `<group>/schema` (idempotent)."""
    store = ConfigStore.instance()
    for group, schema in SCHEMAS.items():
        store.store(group=group, name=SCHEMA_NAME, node=schema)
    for name, schema in METHOD_SCHEMAS.items():
        store.store(group="model", name=name, node=schema)


register()
