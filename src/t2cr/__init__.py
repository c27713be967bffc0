"""T2CR: two-path target-aware contrastive regression for action quality assessment."""

__version__ = "0.1.0"
