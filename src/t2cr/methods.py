"""The methods the framework trains, keyed by `model.method`: each a config schema, an nn.Module and its loss.

The LightningModule builds all three through `method_of`; adding a method is one entry here, one schema
registered by t2cr.schemas, and one conf/model/<name>.yaml.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from t2cr.baseline_losses import CoReLoss, MUSDLLoss, USDLLoss
from t2cr.losses import LossConfig, T2CRLoss
from t2cr.models.base import ClipModel
from t2cr.models.core import CoRe, CoReConfig
from t2cr.models.t2cr import T2CR, T2CRConfig
from t2cr.models.usdl import MUSDL, USDL, MUSDLConfig, USDLConfig

Gather = Callable[[Tensor], tuple[Tensor, int]]


@dataclass(frozen=True)
class Method:
    config: type  # the schema of conf/model/<name>.yaml
    model: type[ClipModel]
    # (loss config, the built model, gather) -> the loss object, called as T2CRLoss is
    loss: Callable[[LossConfig, Any, Gather | None], nn.Module]


METHODS: dict[str, Method] = {
    "t2cr": Method(T2CRConfig, T2CR, lambda config, model, gather: T2CRLoss(config, gather=gather)),
    "usdl": Method(USDLConfig, USDL, lambda config, model, gather: USDLLoss(model)),
    "musdl": Method(MUSDLConfig, MUSDL, lambda config, model, gather: MUSDLLoss(model)),
    "core": Method(CoReConfig, CoRe, lambda config, model, gather: CoReLoss(model)),
}


def method_of(model: dict[str, Any]) -> Method:
    """The method a model config section names. T2CR's schema has no `method` key (its configs and
    checkpoints stay as they were before the baselines, so old runs resume): no key means T2CR."""
    name = model.get("method", "t2cr")
    if name not in METHODS:
        raise ValueError(f"unknown model.method {name!r}; expected one of {sorted(METHODS)} (select it with "
                         f"model=<name>)")
    return METHODS[name]
