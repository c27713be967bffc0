"""Score regressor and action-type classifier that act on clip tokens."""

from __future__ import annotations

import torch
from torch import nn


class SqueezeExcitation(nn.Module):
    """Per-feature gates from the token average (squeeze over tokens, bottleneck, sigmoid): (B, L, C) -> (B, L, C).

    The official T2CR code's regressor has one before its last layer (reduction 16, no biases)."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        squeezed = max(1, channels // reduction)
        self.gate = nn.Sequential(nn.Linear(channels, squeezed, bias=False), nn.ReLU(inplace=True),
                                  nn.Linear(squeezed, channels, bias=False), nn.Sigmoid())

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens * self.gate(tokens.mean(dim=1)).unsqueeze(1)


class ScoreRegressor(nn.Module):
    """Per-token MLP dim -> hidden -> mid -> 1, averaged over tokens (Sec. 3.1).

    The paper describes three Linear+ReLU stages; the last stage has no ReLU here because the
    difference score it predicts is signed. `squeeze_excitation` gates the mid features first (the
    official code's regressor; then a token's score depends on the other tokens).
    """

    def __init__(self, dim: int = 64, hidden: int = 256, mid: int = 64, squeeze_excitation: bool = False) -> None:
        super().__init__()
        # one Sequential as before the gate existed: checkpoints keep their keys, a seed its initial weights
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, mid), nn.ReLU(inplace=True),
            nn.Linear(mid, 1),
        )
        self.gate = SqueezeExcitation(mid) if squeeze_excitation else None

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, L, dim) -> score (B,)."""
        hidden = self.mlp[:-1](tokens)
        if self.gate is not None:
            hidden = self.gate(hidden)
        return self.mlp[-1](hidden).squeeze(-1).mean(dim=1)


class TokenScoreHead(nn.Module):
    """The official code's second score head: one linear score per token, averaged over the tokens: (B, L, d) -> (B,).

    Trained by its own MSE to the score (`loss.score_head_weight`); the final score never reads it."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, 1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.fc(tokens).squeeze(-1).mean(dim=1)


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
