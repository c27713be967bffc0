"""Range checks of numeric settings, each refusal one line naming the config key.

OmegaConf checks the types of a composed config but not the ranges; torch and numpy refuse a zero batch
size, an empty crop or an out-of-range dropout only when a loader or layer is built, with errors that name
no setting (and NaN passes every comparison). The schemas check their values with these helpers instead.
"""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from t2cr.data.config import DataConfig


def require_integer(value: Any, key: str, minimum: int | None = None) -> int:
    """`value` must be an integer (not a bool), >= `minimum` when given."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{key} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{key} must be >= {minimum}, got {value}")
    return int(value)


def require_number(value: Any, key: str, low: float | None = None, high: float | None = None,
                   low_open: bool = False, high_open: bool = False) -> float:
    """`value` must be a finite number within the given bounds."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{key} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{key} must be a finite number, got {value}")
    below = low is not None and (value <= low if low_open else value < low)
    above = high is not None and (value >= high if high_open else value > high)
    if below or above:
        left = "(-inf" if low is None else f"{'(' if low_open else '['}{low:g}"
        right = "inf)" if high is None else f"{high:g}{')' if high_open else ']'}"
        raise ValueError(f"{key} must be in {left}, {right}, got {value}")
    return float(value)


def require_size(value: Any, key: str) -> None:
    """An image size: [height, width], two integers >= 1."""
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ValueError(f"{key} must be [height, width], got {value!r}")
    for part in value:
        require_integer(part, f"{key} ([height, width] {list(value)})", minimum=1)


def check_data_config(config: DataConfig) -> None:
    """The numeric data settings the datamodule and its loaders use, before any file is read."""
    for name in ("num_frames", "voting_exemplars", "batch_size", "eval_batch_size"):
        require_integer(getattr(config, name), f"data.{name}", minimum=1)
    for name in ("split_id", "train_shift"):  # a file number; a shift drawn from [-shift, shift]
        require_integer(getattr(config, name), f"data.{name}", minimum=0)
    require_number(config.val_fraction, "data.val_fraction", 0.0, 1.0, high_open=True)
    low_high = list(config.score_range)
    if len(low_high) != 2 or not all(isinstance(v, (int, float)) for v in low_high) or not low_high[1] > low_high[0]:
        raise ValueError(f"data.score_range={low_high} must be [low, high] with high > low (the range of the "
                         "target the model regresses: score / DD with data.divide_by_difficulty, else the score)")
    require_size(config.transform.resize, "data.transform.resize")
    require_size(config.transform.crop, "data.transform.crop")
