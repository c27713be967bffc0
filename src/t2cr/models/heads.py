"""Score regressor and action-type classifier that act on clip tokens."""

from __future__ import annotations

import torch
from torch import nn


class ScoreRegressor(nn.Module):
    """Per-token MLP dim -> hidden -> mid -> 1, averaged over tokens (Sec. 3.1).

    The paper describes three Linear+ReLU stages; the last stage has no ReLU here because the
    difference score it predicts is signed.
    """

    def __init__(self, dim: int = 64, hidden: int = 256, mid: int = 64) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, mid), nn.ReLU(inplace=True),
            nn.Linear(mid, 1),
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, L, dim) -> score (B,)."""
        return self.mlp(tokens).squeeze(-1).mean(dim=1)


class ActionClassifier(nn.Module):
    """Action-type logits from the clip-averaged latent (softmax lives in the loss)."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"the action-type classifier needs >= 2 classes, got {num_classes}")
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, L, dim) -> logits (B, num_classes)."""
        return self.fc(tokens.mean(dim=1))
