"""What the console scripts share: how a user error is reported, the float32 matmul precision."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

import torch

MATMUL_PRECISIONS = ("highest", "high", "medium")


class UserError(Exception):
    """A mistake in the command line or its inputs, reported as one line (no traceback), exit code 2."""


@contextmanager
def user_errors(command: str) -> Iterator[None]:
    """Report a `UserError` as `t2cr-<command>: error: ...` and exit 2; HYDRA_FULL_ERROR=1 keeps the traceback."""
    try:
        yield
    except UserError as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"t2cr-{command}: error: {error}", file=sys.stderr)
        sys.stderr.flush()
        raise SystemExit(2) from None


def warn(command: str, message: str) -> None:
    print(f"t2cr-{command}: warning: {message}", file=sys.stderr)
    sys.stderr.flush()


def set_matmul_precision(value: str) -> None:
    """`torch.set_float32_matmul_precision`: highest is the paper's fp32; high uses TF32 on Ampere+ GPUs."""
    if value not in MATMUL_PRECISIONS:
        raise UserError(f"trainer.matmul_precision={value!r} is not one of {', '.join(MATMUL_PRECISIONS)} "
                        "(highest: exact fp32 as the paper; high: TF32 matmuls on Ampere+ GPUs, faster)")
    torch.set_float32_matmul_precision(value)


def precision_context(precision: str, device: str | torch.device) -> AbstractContextManager[object]:
    """Autocast as a run with `trainer.precision=<precision>` computes (bf16-mixed, 16-mixed); nothing for
    full precision. Lightning's own plugin, so that scoring computes what the in-training evaluation did."""
    if not str(precision).endswith("-mixed"):
        return contextlib.nullcontext()
    from pytorch_lightning.plugins.precision import MixedPrecision

    return MixedPrecision(str(precision), torch.device(device).type).forward_context()
