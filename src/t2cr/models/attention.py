"""Target-aware attention (Sec. 3.1, Eq. 4, Fig. 4).

Clip features f of shape (B, C clips, T features) are re-weighted three times: over the feature
axis (alpha_t^(1)), over the clips (alpha_c^(2)) and over the feature axis again (alpha_t^(3)).
Each level is a softmax over its axis, rescaled by the axis length so that uniform weights leave
the features unchanged; this keeps the scale of f whether a level is on or off (Table 11).
An MLP then maps the 1024-d features to the latent tokens (1024 -> 256 -> 64). With all levels
off the module is the two-layer MLP of the paper's I3D+MLP baseline.
"""

from __future__ import annotations

import torch
from torch import nn


class FeatureAxisAttention(nn.Module):
    """alpha_t: softmax weights over the feature axis, computed per clip by a bottleneck MLP."""

    def __init__(self, feature_dim: int, bottleneck: int = 64) -> None:
        super().__init__()
        self.score = nn.Sequential(
            nn.Linear(feature_dim, bottleneck), nn.ReLU(inplace=True), nn.Linear(bottleneck, feature_dim)
        )

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weights = torch.softmax(self.score(features), dim=-1) * features.shape[-1]
        return features * weights, weights


class ClipAxisAttention(nn.Module):
    """alpha_c: softmax weights over the clips (additive attention score per clip)."""

    def __init__(self, feature_dim: int, hidden: int = 256) -> None:
        super().__init__()
        self.score = nn.Sequential(nn.Linear(feature_dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weights = torch.softmax(self.score(features).squeeze(-1), dim=-1) * features.shape[1]
        return features * weights.unsqueeze(-1), weights


class TargetAwareAttention(nn.Module):
    """Hierarchical attention + MLP: (B, C, feature_dim) -> latent tokens (B, C, latent_dim)."""

    def __init__(
        self,
        feature_dim: int = 1024,
        hidden_dim: int = 256,
        latent_dim: int = 64,
        feature_first: bool = True,
        clip: bool = True,
        feature_second: bool = True,
        bottleneck: int = 64,
    ) -> None:
        super().__init__()
        self.feature_first = FeatureAxisAttention(feature_dim, bottleneck) if feature_first else None
        self.clip = ClipAxisAttention(feature_dim, hidden_dim) if clip else None
        self.feature_second = FeatureAxisAttention(feature_dim, bottleneck) if feature_second else None
        self.mlp = nn.Sequential(
            nn.Linear(feature_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, latent_dim)
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        for level in (self.feature_first, self.clip, self.feature_second):
            if level is not None:
                features, _ = level(features)
        return self.mlp(features)
