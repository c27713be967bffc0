"""What every method of the framework shares: the I3D backbone and the clip plan.

`ClipModel` builds the backbone (`build_backbone`, which loads the Kinetics checkpoint), the base and
auxiliary clip plans, and turns videos into clip features; the methods (T2CR, USDL, MUSDL, CoRe)
subclass it and add their heads. The protocol the LightningModule, `t2cr.bank`, `t2cr.features` and
`t2cr.explain` use on top of it: `encode(base, aux) -> VideoEncoding`, `vote(query, exemplar_tokens,
exemplar_scores, exemplar_mask) -> VoteOutput` (exemplar_tokens None
where `votes_with_exemplars` is False), `forward(query, exemplar, self_difference=...) ->
PairOutput`, and `prepare(data)` for methods that need statistics of the training data.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from t2cr.models.backbones import build_backbone


class ClipModel(nn.Module):
    """Backbone + clip plans. `config` has `backbone` (BackboneConfig) and `clips` (ClipConfig)."""

    # True: `forward` also takes query_score= and exemplar_score= (a method whose pair input includes the
    # exemplar's score, CoRe); the module passes them only then, so T2CR's forward keeps its signature
    pair_reads_scores = False
    # False: `vote` reads the query alone (USDL, MUSDL), so evaluation neither encodes the K exemplars nor
    # computes their clip features, and `vote` receives exemplar_tokens=None
    votes_with_exemplars = True
    # False: the score is read off as a distribution's peak (argmax: USDL, MUSDL), so it has no gradient with
    # respect to the video and gradient attributions (t2cr-explain) are refused
    score_has_gradient = True

    def __init__(self, config: Any, backbone: nn.Module | None = None, two_path: bool = True) -> None:
        super().__init__()
        # imported here: t2cr.models.t2cr imports this module
        from t2cr.models.t2cr import build_clip_plans

        self.config = config
        self.base_plan, self.aux_plan = build_clip_plans(config.clips, two_path)
        indices = [self.base_plan.frame_indices()]
        if self.aux_plan is not None:
            indices.append(self.aux_plan.frame_indices())
        self.register_buffer("clip_frame_indices", torch.cat(indices), persistent=False)

        self.backbone = backbone if backbone is not None else build_backbone(config.backbone)
        if not config.backbone.trainable:
            self.backbone.requires_grad_(False)
        self.channels_last = False  # use_channels_last(): a layout choice, not part of the model

    # ----------------------------------------------------------------------------------- backbone
    @property
    def num_base_clips(self) -> int:
        return self.base_plan.num_clips

    def use_channels_last(self) -> None:
        """Backbone weights and clips in channels-last 3D layout (same numbers, faster on some GPUs)."""
        self.backbone.to(memory_format=torch.channels_last_3d)
        self.channels_last = True

    @property
    def num_clips(self) -> int:
        """Clips per video over both paths (M + N): the rows of a stored clip-feature tensor."""
        return int(self.clip_frame_indices.shape[0])

    def clip_features(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Videos (V, 3, T, H, W) through the backbone, or stored clip features (V, M + N, F) split by path."""
        if inputs.dim() == 5:
            inputs = self.video_clip_features(inputs)
        if inputs.dim() != 3 or inputs.shape[1] != self.num_clips:
            raise ValueError(f"expected videos (V, 3, T, H, W) or clip features (V, {self.num_clips}, F), "
                             f"got shape {tuple(inputs.shape)}")
        m = self.base_plan.num_clips
        return inputs[:, :m], (inputs[:, m:] if self.aux_plan is not None else None)

    def extract_clip_features(self, videos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Videos (V, 3, T, H, W) -> base (V, M, F) and auxiliary (V, N, F) clip features."""
        return self.clip_features(self.video_clip_features(videos))

    def video_clip_features(self, videos: torch.Tensor) -> torch.Tensor:
        """Videos (V, 3, T, H, W) -> clip features (V, M + N, F), base path first; what a feature store keeps.

        All clips of all videos go through the backbone in one batched call.
        """
        if videos.dim() != 5:
            raise ValueError(f"videos must be (V, 3, T, H, W), got shape {tuple(videos.shape)}")
        num_frames = videos.shape[2]
        needed = self.base_plan.frames_needed if self.aux_plan is None else max(
            self.base_plan.frames_needed, self.aux_plan.frames_needed)
        if num_frames < needed:
            raise ValueError(f"the clip plan needs {needed} frames per video, the batch has {num_frames}; "
                             "check model.clips against the data's frame count")
        v, c, _, h, w = videos.shape
        clips = videos[:, :, self.clip_frame_indices]  # (V, 3, clips, L, H, W)
        num_clips, length = self.clip_frame_indices.shape
        clips = clips.permute(0, 2, 1, 3, 4, 5).reshape(v * num_clips, c, length, h, w)
        if self.channels_last:
            clips = clips.contiguous(memory_format=torch.channels_last_3d)
        return self.backbone(clips).reshape(v, num_clips, -1)

    # ----------------------------------------------------------------------------- data, optimisation
    def prepare(self, data: Any) -> None:
        """Take what the method needs from the training data before the first step (the data module, at
        fit start). Nothing for most methods; CoRe's group boundaries, MUSDL's check for judge scores."""

    def parameter_groups(self, backbone_lr: float = 1e-4, head_lr: float = 1e-3) -> list[dict]:
        """Adam groups: the backbone at `backbone_lr`, everything else at `head_lr`."""
        backbone_ids = {id(p) for p in self.backbone.parameters()}
        heads = [p for p in self.parameters() if id(p) not in backbone_ids and p.requires_grad]
        backbone = [p for p in self.backbone.parameters() if p.requires_grad]
        return [{"params": backbone, "lr": backbone_lr, "name": "backbone"},
                {"params": heads, "lr": head_lr, "name": "heads"}]


def voting_pairs(query_tokens: torch.Tensor, exemplar_tokens: torch.Tensor,
                 exemplar_scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries (B, L, d) against their K exemplars (B, K, L', d) as B x K pairs: (B*K, L, d), (B*K, L', d)."""
    b, k = exemplar_scores.shape
    if exemplar_tokens.shape[:2] != (b, k):
        raise ValueError(f"exemplar_tokens {tuple(exemplar_tokens.shape)} do not match exemplar_scores "
                         f"{tuple(exemplar_scores.shape)}")
    if k < 1:
        raise ValueError("voting needs K >= 1 exemplars")
    queries = query_tokens.unsqueeze(1).expand(b, k, *query_tokens.shape[1:])
    return queries.reshape(b * k, *query_tokens.shape[1:]), exemplar_tokens.reshape(b * k, *exemplar_tokens.shape[2:])


def mean_vote(deltas: torch.Tensor, exemplar_scores: torch.Tensor,
              exemplar_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 11: the mean over the K exemplars of exemplar score + predicted difference (B, K) -> (B,); masked
    exemplars (padding of pools smaller than K) left out."""
    votes = deltas + exemplar_scores
    if exemplar_mask is None:
        return votes.mean(dim=1)
    weights = exemplar_mask.to(votes.dtype)
    return (votes * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1)
