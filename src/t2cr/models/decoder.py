"""Target-aware difference transformer (Sec. 3.1, Eq. 5-6) and the baseline's subtraction."""

from __future__ import annotations

import torch
from torch import nn


class CrossAttentionBlock(nn.Module):
    """Pre-norm block: query tokens attend to exemplar tokens, then an MLP; both residual."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads != 0:
            raise ValueError(f"decoder dim {dim} is not divisible by the number of heads {heads}")
        self.norm_query = nn.LayerNorm(dim)
        self.norm_memory = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm_mlp = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim), nn.Dropout(dropout)
        )

    def forward(self, query: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        memory = self.norm_memory(memory)
        attended, _ = self.attention(self.norm_query(query), memory, memory, need_weights=False)
        query = query + attended
        return query + self.mlp(self.norm_mlp(query))


class DifferenceTransformer(nn.Module):
    """L cross-attention blocks (Tables 8, 9): (B, Lq, d) x (B, Le, d) -> difference tokens (B, Lq, d)."""

    def __init__(self, dim: int = 64, layers: int = 3, heads: int = 8, mlp_ratio: float = 4.0,
                 dropout: float = 0.0, final_norm: bool = True) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError(f"the difference transformer needs >= 1 layer, got {layers}")
        self.blocks = nn.ModuleList(CrossAttentionBlock(dim, heads, mlp_ratio, dropout) for _ in range(layers))
        # pre-norm blocks leave their output unnormalised; the official code's decoder hands it on as it is
        self.norm = nn.LayerNorm(dim) if final_norm else nn.Identity()

    def forward(self, query: torch.Tensor, exemplar: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            query = block(query, exemplar)
        return self.norm(query)


class FeatureSubtraction(nn.Module):
    """The I3D+MLP baseline's contrast: the query tokens minus the exemplar tokens."""

    def forward(self, query: torch.Tensor, exemplar: torch.Tensor) -> torch.Tensor:
        if query.shape != exemplar.shape:
            raise ValueError(f"subtraction needs equal token shapes, got {tuple(query.shape)} and "
                             f"{tuple(exemplar.shape)}")
        return query - exemplar
