"""What the console scripts share: how a user error is reported, the float32 matmul precision."""

from __future__ import annotations

import contextlib
import errno
import linecache
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, NoReturn

import torch

from t2cr.io import NAMED_FILE_ERRORS, WriteFailed, free_space
from t2cr.optional import MissingPackage

MATMUL_PRECISIONS = ("highest", "high", "medium")


class UserError(Exception):
    """A mistake in the command line or its inputs, reported as one line (no traceback), exit code 2."""


# set by `command` for the whole process tree: "1" when the user asked for tracebacks (HYDRA_FULL_ERROR=1)
TRACEBACKS_VAR = "T2CR_TRACEBACKS"
PACKAGE_DIR = Path(__file__).resolve().parents[1]
# errors that name the file they are about, wherever they are raised
FILE_ERRORS = NAMED_FILE_ERRORS
# errors that t2cr raises on purpose for bad input (validation of configs, data and checkpoints)
INPUT_ERRORS = (ValueError, TypeError, KeyError, RuntimeError)
# a full disk or quota wherever a file is written (t2cr's own files raise WriteFailed, which says more)
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def _tracebacks_wanted() -> bool:
    return os.environ.get(TRACEBACKS_VAR, os.environ.get("HYDRA_FULL_ERROR", "0")) == "1"


def _raised_on_purpose_by_t2cr(error: BaseException) -> bool:
    """The innermost frame is a `raise` statement of t2cr's own code: a refusal we wrote, not a bug
    surfacing from inside torch or a typo in our code (those keep their traceback)."""
    tb = error.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    filename = Path(tb.tb_frame.f_code.co_filename).resolve()
    if PACKAGE_DIR not in filename.parents:
        return False
    return linecache.getline(str(filename), tb.tb_lineno).strip().startswith("raise")


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in str(text).strip().splitlines() if line.strip())


def user_error_message(error: BaseException) -> str | None:
    """The one line to print for a user error, or None for an error that is a bug (it keeps its traceback)."""
    from hydra.errors import (
        ConfigCompositionException,
        InstantiationException,
        MissingConfigException,
        OverrideParseException,
    )
    from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

    if isinstance(error, (UserError, MissingPackage, WriteFailed)):
        return str(error)
    if isinstance(error, InstantiationException) and isinstance(error.__cause__, (UserError, MissingPackage)):
        return str(error.__cause__)  # refused by a class Hydra built (a launcher, a callback)
    if isinstance(error, MissingMandatoryValue):
        key = getattr(error, "full_key", None) or "a required value"
        return f"{key} is required and has no value: pass {key}=<value> on the command line"
    if isinstance(error, (ConfigCompositionException, MissingConfigException, OverrideParseException)):
        cause = error.__cause__
        detail = f": {str(cause).strip().splitlines()[0]}" if cause is not None and str(cause).strip() else ""
        text = str(error).split("Config search path")[0]  # Hydra's search path is noise to a user
        return _one_line(text) + detail
    if isinstance(error, OmegaConfBaseException):
        key = getattr(error, "full_key", None)
        return _one_line(getattr(error, "msg", error)) + (f" (config key {key})" if key else "")
    if isinstance(error, FILE_ERRORS):
        return _one_line(error)
    if isinstance(error, OSError) and error.errno in NO_SPACE:
        return _no_space(error)
    if isinstance(error, INPUT_ERRORS) and _raised_on_purpose_by_t2cr(error):
        return _one_line(error.args[0] if isinstance(error, KeyError) and error.args else error)
    return None


def _no_space(error: OSError) -> str:
    """A full disk met while writing a file that is not t2cr's own (a log, a plot): the file and the free space."""
    if not error.filename:
        return f"a write failed: {error.strerror} ({free_space(os.getcwd())} here); free space and run again"
    target = Path(os.fsdecode(error.filename))
    return (f"cannot write {target.name} in {target.parent}: {error.strerror} ({free_space(target.parent)}); "
            "free space or write elsewhere")


def exit_with_error(command: str, message: str) -> NoReturn:
    """Print `t2cr-<command>: error: <message>` and exit 2 (SystemExit passes Hydra, which turns a callback's
    exceptions into warnings)."""
    print(f"t2cr-{command}: error: {message}", file=sys.stderr)
    sys.stderr.flush()
    raise SystemExit(2)


@contextmanager
def user_errors(command: str) -> Iterator[None]:
    """Report a user error (`user_error_message`) as `t2cr-<command>: error: ...` and exit 2; other errors
    and HYDRA_FULL_ERROR=1 keep the traceback."""
    try:
        yield
    except Exception as error:
        message = user_error_message(error)
        if message is None or _tracebacks_wanted():
            raise
        exit_with_error(command, message)


def command(name: str, hydra_main: Callable[[], Any]) -> Callable[[], None]:
    """The console entry of `t2cr-<name>`: runs a `@hydra.main` function so that Hydra's own errors
    (a misspelt key, an unknown config option, a bad override) are reported in the same one line as ours.

    Hydra prints those itself unless HYDRA_FULL_ERROR=1, so it is set for the process tree and the user's
    own choice is kept in T2CR_TRACEBACKS (DDP and launcher children inherit both)."""

    def run() -> None:
        os.environ.setdefault(TRACEBACKS_VAR, os.environ.get("HYDRA_FULL_ERROR", "0"))
        os.environ["HYDRA_FULL_ERROR"] = "1"
        with user_errors(name):
            hydra_main()

    return run


def warn(command: str, message: str) -> None:
    print(f"t2cr-{command}: warning: {message}", file=sys.stderr)
    sys.stderr.flush()


def set_matmul_precision(value: str) -> None:
    """float32 matmuls and cuDNN convolutions: highest is the paper's exact fp32 for both; high (and medium)
    allow TF32 on Ampere+ GPUs for both (medium: bf16 matmuls)."""
    if value not in MATMUL_PRECISIONS:
        raise UserError(f"trainer.matmul_precision={value!r} is not one of {', '.join(MATMUL_PRECISIONS)} "
                        "(highest: exact fp32 as the paper; high: TF32 matmuls and convolutions on Ampere+ GPUs, "
                        "faster)")
    torch.set_float32_matmul_precision(value)
    # cuDNN convolutions (all of I3D) follow their own flag, TF32 by default; the legacy flag on purpose: it
    # exists on every torch we support, and mixing it with the newer per-operator API is refused by torch
    torch.backends.cudnn.allow_tf32 = value != "highest"


def precision_context(precision: str, device: str | torch.device) -> AbstractContextManager[object]:
    """Autocast as a run with `trainer.precision=<precision>` computes (bf16-mixed, 16-mixed); nothing for
    full precision. Lightning's own plugin, so that scoring computes what the in-training evaluation did."""
    if not str(precision).endswith("-mixed"):
        return contextlib.nullcontext()
    from pytorch_lightning.plugins.precision import MixedPrecision

    return MixedPrecision(str(precision), torch.device(device).type).forward_context()
