"""Figures: predicted vs true scores (the layout of the paper's Fig. 5)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def scatter_plot(true: Sequence[float], pred: Sequence[float], path: Path, title: str) -> Path:
    """One point per video, the identity line in red."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    ax.scatter(true, pred, s=12, alpha=0.75, color="tab:blue", edgecolors="none")
    low, high = min(min(true), min(pred)), max(max(true), max(pred))
    ax.plot([low, high], [low, high], color="red", linewidth=1)
    ax.set_xlabel("true score")
    ax.set_ylabel("predicted score")
    ax.set_title(title, fontsize=9)
    ax.set_aspect("equal", adjustable="datalim")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
