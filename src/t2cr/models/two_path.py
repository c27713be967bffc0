"""Two-path pieces (Sec. 3.2): N -> M clip expansion and the lightweight fusion of both paths.

Two fusions, chosen by `model.path_fusion`: `PathFusion` (ours, the paper's text) and `ConvPathFusion` (the
official code's). Both give the fused tokens of a video, `forward(base, aux)`, and the two sides that the
self-difference (Eq. 14) compares, `each_path(base, aux)`.
"""

from __future__ import annotations

import torch
from torch import nn


class ClipExpansion(nn.Module):
    """Expands N auxiliary clips to M with two conv + BatchNorm + ReLU modules.

    As in the reference code the convolution runs along the feature axis with the clips as
    channels: (V, N, F) -> (V, M, F), kernel 3, so every output clip mixes all input clips locally
    in feature space.
    """

    def __init__(self, num_in: int, num_out: int, kernel_size: int = 3) -> None:
        super().__init__()
        padding = kernel_size // 2
        self.layers = nn.Sequential(
            nn.Conv1d(num_in, num_out, kernel_size, padding=padding), nn.BatchNorm1d(num_out),
            nn.ReLU(inplace=True),
            nn.Conv1d(num_out, num_out, kernel_size, padding=padding), nn.BatchNorm1d(num_out),
            nn.ReLU(inplace=True),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)


class SeparableSelfAttention(nn.Module):
    """Linear-cost self-attention of MobileViTv2 (ref. [22] of the paper).

    One score per token, softmax over tokens, gives a context vector (a weighted sum of key
    projections) that gates ReLU'd value projections of every token. Pre-norm, residual, with a
    pre-norm MLP after it.
    """

    def __init__(self, dim: int, mlp_ratio: float = 2.0) -> None:
        super().__init__()
        self.dim = dim
        self.norm = nn.LayerNorm(dim)
        self.to_score_key_value = nn.Linear(dim, 1 + 2 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm_mlp = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        score, key, value = self.to_score_key_value(self.norm(tokens)).split([1, self.dim, self.dim], dim=-1)
        context = (torch.softmax(score, dim=1) * key).sum(dim=1, keepdim=True)
        tokens = tokens + self.out(torch.relu(value) * context)
        return tokens + self.mlp(self.norm_mlp(tokens))


class PathFusion(nn.Module):
    """Fuses a video's base and auxiliary tokens: (V, M, d) + (V, M, d) -> (V, 2M, d).

    A learned embedding per path tells the fusion which field of view each token comes from.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.path_embedding = nn.Parameter(torch.zeros(2, dim))
        nn.init.normal_(self.path_embedding, std=0.02)
        self.attention = SeparableSelfAttention(dim)

    def forward(self, base: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        tokens = torch.cat([base + self.path_embedding[0], aux + self.path_embedding[1]], dim=1)
        return self.attention(tokens)

    def each_path(self, base: torch.Tensor, aux: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The self-difference compares the paths' own tokens."""
        return base, aux


class ContextGatedAttention(nn.Module):
    """MobileViTv2's separable attention as the official T2CR code uses it: no norm, no MLP, no activation.

    A softmax over tokens of one score per token weighs the key projections into a context vector, which
    gates the value projection of every token; an output projection follows. Linear weights start at
    N(0, 0.001^2) with zero biases, so the residual branch starts near zero."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.to_score_key_value = nn.Linear(dim, 1 + 2 * dim)
        self.out = nn.Linear(dim, dim)
        for layer in (self.to_score_key_value, self.out):
            nn.init.normal_(layer.weight, std=0.001)
            nn.init.zeros_(layer.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        score, key, value = self.to_score_key_value(tokens).split([1, self.dim, self.dim], dim=-1)
        context = (torch.softmax(score, dim=1) * key).sum(dim=1, keepdim=True)
        return self.out(value * context)


class ConvPathFusion(nn.Module):
    """The official code's fusion: a 1x1 convolution over the clips per path (each output clip a learned mix of
    the path's M clips), then the context-gated attention added residually.

    A pair's sides are the concatenated paths (V, 2M, d); the self-difference's sides are each path mixed and
    attended on its own (M tokens each), as that code's decoder does for its 10-token inputs."""

    def __init__(self, num_clips: int, dim: int) -> None:
        super().__init__()
        self.base_mix = nn.Conv1d(num_clips, num_clips, kernel_size=1)
        self.aux_mix = nn.Conv1d(num_clips, num_clips, kernel_size=1)
        self.attention = ContextGatedAttention(dim)

    def _attend(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens + self.attention(tokens)

    def forward(self, base: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        return self._attend(torch.cat([self.base_mix(base), self.aux_mix(aux)], dim=1))

    def each_path(self, base: torch.Tensor, aux: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._attend(self.base_mix(base)), self._attend(self.aux_mix(aux))


PATH_FUSIONS = ("separable", "conv")  # model.path_fusion: PathFusion (ours), ConvPathFusion (the official code)


def build_path_fusion(kind: str, num_clips: int, dim: int) -> nn.Module:
    if kind == "separable":
        return PathFusion(dim)
    if kind == "conv":
        return ConvPathFusion(num_clips, dim)
    raise ValueError(f"unknown model.path_fusion {kind!r}; expected one of {list(PATH_FUSIONS)}")
