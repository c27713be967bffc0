"""Third-party messages a t2cr user cannot act on, filtered where they are emitted.

Each filter matches one message exactly, so any other warning of the same library still shows.
"""

from __future__ import annotations

import logging
import warnings

# Lightning advertises its cloud products at every run start ("💡 Tip: ... litlogger / litmodels")
LIGHTNING_TIP = "💡 Tip"
LIGHTNING_LOGGERS = ("lightning_utilities.core.rank_zero", "lightning_fabric.utilities.rank_zero",
                     "pytorch_lightning.utilities.rank_zero")


class _DropLightningTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(LIGHTNING_TIP)


def quiet_third_party() -> None:
    """Install the filters (idempotent; every process of a run calls it)."""
    for name in LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropLightningTips) for f in logger.filters):
            logger.addFilter(_DropLightningTips())
    # torch 2.13 deprecates constructing LeafSpec, which Lightning 2.6's own pytree helper still does
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            module=r"pytorch_lightning\.utilities\._pytree")
