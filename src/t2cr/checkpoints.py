"""Which files t2cr-score, t2cr-explain and t2cr-eval accept as a checkpoint, and one line on why any other is refused.

A t2cr checkpoint is what t2cr-train writes through Lightning: a dict with the weights (`state_dict`), the
T2CRModule hyper-parameters (`model`, `loss`, `optim`, and the run's settings) and, in `last.ckpt` and
`best-*.ckpt`, the exemplar bank that scoring votes with. The file is inspected with `weights_only=True`
(no code in it runs) before Lightning rebuilds the module, so that a truncated download, a bare state
dict such as I3D's `model_rgb.pth` or another project's checkpoint is named for what it is instead of
failing deep inside torch or Lightning.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from omegaconf.errors import OmegaConfBaseException

from t2cr.cli.common import UserError
from t2cr.module import EXEMPLAR_BANK_KEY, T2CRModule

HPARAM_KEYS = ("model", "loss", "optim")  # T2CRModule's required constructor arguments
BANK_KEYS = ("rule", "divide_by_difficulty", "num_frames", "transform", "pools")  # what scoring reads
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default format is a zip archive


def load_checkpoint(path: str | Path, option: str = "ckpt_path", need_bank: bool = True,
                    runtime: dict[str, Any] | None = None,
                    map_location: str | torch.device = "cpu") -> T2CRModule:
    """The T2CRModule of a t2cr checkpoint (`T2CRModule.from_checkpoint`), or a `UserError` naming the file.

    option: the command-line key that gave the path (named in the message); need_bank: scoring and
    explanations vote with the checkpoint's exemplar bank, evaluation computes its exemplars from the data.
    """
    path = Path(path)
    inspect_checkpoint(path, option, need_bank)
    try:
        return T2CRModule.from_checkpoint(str(path), map_location=map_location, runtime=runtime)
    except RuntimeError as error:
        if "Error(s) in loading state_dict" not in str(error):
            raise
        raise _refused(path, option, "its weights do not fit the T2CR model its hyper-parameters describe "
                                     f"({_first_line(error)})") from error
    except (TypeError, ValueError, OmegaConfBaseException) as error:
        # e.g. a model setting this version of t2cr does not know
        raise _refused(path, option, "its hyper-parameters do not build a T2CR model of this version "
                                     f"({type(error).__name__}: {_first_line(error)})") from error


def inspect_checkpoint(path: str | Path, option: str = "ckpt_path", need_bank: bool = True) -> dict[str, Any]:
    """The checkpoint's contents (tensors memory-mapped where the format allows), after checking that they are
    a t2cr checkpoint; raises `UserError` with what the file is instead."""
    path = Path(path)
    contents = _read(path, option)
    reason = _not_a_t2cr_checkpoint(contents)
    if reason is None and need_bank:
        reason = _no_usable_bank(contents)
    if reason is not None:
        raise _refused(path, option, reason)
    return contents


def _read(path: Path, option: str) -> Any:
    if not path.exists():
        raise UserError(f"{option}={path} does not exist")
    if path.is_dir():
        raise UserError(f"{option}={path} is a folder, not a checkpoint file")
    size = path.stat().st_size
    if size == 0:
        raise _refused(path, option, "the file is empty")
    is_zip = zipfile.is_zipfile(path)
    with path.open("rb") as handle:
        head = handle.read(len(ZIP_MAGIC))
    if head == ZIP_MAGIC and not is_zip:
        # a zip archive's directory is at its end: a partly written or copied checkpoint loses it
        raise _refused(path, option, f"unreadable zip archive ({size} bytes without the archive's directory: "
                                     "a truncated or corrupt file; copy or write it again)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as error:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        if found and not found.group(1).startswith("torch."):
            raise _refused(path, option, f"it holds Python objects of other code ({found.group(1)}), which a "
                                         "t2cr checkpoint never contains; t2cr does not run code from a "
                                         "checkpoint (torch.load weights_only=True)") from error
        # a cut-off torch name (e.g. torch._utils._rebuild_tens) or no name: the pickle itself is damaged
        raise _refused(path, option, "unreadable, a truncated or corrupt torch pickle") from error
    # what torch.load raises for a file that is neither of its formats, or a damaged one
    except (RuntimeError, EOFError, LookupError, ValueError, OSError) as error:
        kind = "a corrupt zip archive" if is_zip else "neither a torch zip archive nor a torch pickle"
        raise _refused(path, option, f"unreadable, {kind} ({type(error).__name__}: "
                                     f"{_first_line(error) or 'no message'})") from error


def _not_a_t2cr_checkpoint(contents: Any) -> str | None:
    if not isinstance(contents, dict):
        return f"it holds a {type(contents).__name__}, not a checkpoint dict"
    if contents and all(isinstance(value, torch.Tensor) for value in contents.values()):
        first = next(iter(contents))
        count = f"{len(contents)} tensor{'s' if len(contents) != 1 else ''}"
        return (f"a bare state dict of {count} (first: {first!r}), such as I3D's model_rgb.pth "
                "or a module's state_dict(), with no hyper-parameters and no exemplar bank; pass the last.ckpt "
                "or best-*.ckpt that t2cr-train writes (Kinetics I3D weights go to t2cr-train as "
                "model.backbone.checkpoint=)")
    keys = ", ".join(map(str, list(contents)[:8])) or "none"
    if "state_dict" not in contents:
        return f"no state_dict (its keys: {keys}), so not a Lightning checkpoint"
    if "hyper_parameters" not in contents:
        return f"no hyper-parameters (its keys: {keys}); t2cr checkpoints keep the model, loss and optim settings"
    hparams = contents["hyper_parameters"]
    missing = [key for key in HPARAM_KEYS if not isinstance(hparams, dict) or key not in hparams]
    if missing:
        shown = ", ".join(map(str, list(hparams)[:8])) if isinstance(hparams, dict) else type(hparams).__name__
        return (f"a checkpoint of another model: its hyper-parameters ({shown or 'none'}) lack T2CRModule's "
                f"{', '.join(missing)}")
    if "pytorch-lightning_version" not in contents:
        return "no pytorch-lightning_version entry, so not written by Lightning"
    return None


def _no_usable_bank(contents: dict[str, Any]) -> str | None:
    bank = contents.get(EXEMPLAR_BANK_KEY)
    if not bank:
        return ("no exemplar bank to vote with: only the last.ckpt and best-*.ckpt that t2cr-train writes carry "
                "one (the epochs between and a save on SIGTERM do not)")
    missing = [key for key in BANK_KEYS if key not in bank]
    if missing or not bank["pools"]:
        return f"its exemplar bank is incomplete (missing {', '.join(missing) or 'pools'})"
    return None


def _refused(path: Path, option: str, reason: str) -> UserError:
    return UserError(f"{option}={path} is not a t2cr checkpoint: {reason}")


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:300] if lines else ""
