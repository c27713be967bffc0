"""Packages only some settings need (W&B, PyAV, Captum, submitit), imported where they are used.

A run that does not ask for one trains without it; one that does and lacks it stops with one line naming
the package, what needs it and how to get it (`t2cr.cli.common` reports MissingPackage as a user error).
"""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingPackage(ImportError):
    """An optional package that the asked-for setting needs is not installed."""


def require(module: str, needed_for: str, package: str | None = None) -> ModuleType:
    """Import `module`, or raise MissingPackage naming `needed_for` and the pip package to install."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        package = package or module
        raise MissingPackage(f"{needed_for} needs the {package} package, which is not installed here: "
                             f"pip install {package} (it comes with t2cr's own install)") from error
