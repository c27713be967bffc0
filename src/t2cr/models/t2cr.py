"""The T2CR model: backbone -> target-aware attention -> (two paths) -> difference transformer.

One forward serves training and evaluation. `forward` takes a batch of query / exemplar videos;
`forward_features` does the same from clip features (so evaluation and the fast ablation mode can
run the backbone once per video); `vote` scores queries against K exemplars (Eq. 3, 11).
Every ablation of Tables 5, 8, 9, 10, 11 is a field of `T2CRConfig`.
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch import nn

from t2cr.config_checks import require_integer, require_number
from t2cr.models.attention import TargetAwareAttention
from t2cr.models.backbones import BackboneConfig
from t2cr.models.base import ClipModel, mean_vote, voting_pairs
from t2cr.models.clips import ClipPlan, aux_clip_plan, base_clip_starts, parse_aux_strategy
from t2cr.models.decoder import DifferenceTransformer, FeatureSubtraction
from t2cr.models.heads import ActionClassifier, ScoreRegressor, TokenScoreHead
from t2cr.models.two_path import PATH_FUSIONS, ClipExpansion, build_path_fusion

MTL_AQA_BASE_STARTS = [0, 10, 20, 30, 40, 50, 60, 70, 80, 86]  # 103 frames, Sec. 4.5 / Table 10


@dataclass
class ClipConfig:
    num_frames: int = 103
    clip_length: int = 16
    num_base_clips: int = 10
    # explicit starts (the paper's for 103 frames); null derives them from num_frames
    base_starts: list[int] | None = field(default_factory=lambda: list(MTL_AQA_BASE_STARTS))
    overlapping: bool = True
    aux_strategy: str = "8-clip-avg1"  # Table 10 / Fig. 7: <N>-clip-{same,avg1,avg2,2x}


@dataclass
class AttentionConfig:
    feature_first: bool = True  # alpha_t^(1)
    clip: bool = True  # alpha_c^(2)
    feature_second: bool = True  # alpha_t^(3)
    bottleneck: int = 64


@dataclass
class DecoderConfig:
    kind: str = "transformer"  # transformer | subtract (the I3D+MLP baseline)
    layers: int = 3
    heads: int = 8
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    final_norm: bool = True  # a LayerNorm after the last block (false: the official code's decoder)


@dataclass
class T2CRConfig:
    """The schema of conf/model: every default of the model (Sec. 3, 4.3) lives here."""

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    clips: ClipConfig = field(default_factory=ClipConfig)
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    hidden_dim: int = 256
    latent_dim: int = 64
    regressor_hidden: int = 256
    regressor_mid: int = 64
    direct_regression: bool = True  # +DR of Table 5
    # Eq. 1-2: one regressor R(.|W) gives the direct and the difference score (as the reference code);
    # false gives the direct score a head of its own
    shared_regressor: bool = True
    action_classifier: bool = True  # +Action Type of Table 5
    num_action_types: int = 0  # set from the data at start; needed when action_classifier is on
    two_path: bool = True  # +Two-pathway of Table 5
    expansion_kernel: int = 3
    # The official code's way where it differs from the paper's text (paper_method=t2cr_reference; README, "Where
    # we differ"). Fusion of the paths: "separable" (path embeddings + the paper's separable self-attention on the
    # fused tokens) or "conv" (a 1x1 convolution over the clips per path, then MobileViTv2 attention, each side of
    # every comparison on its own: t2cr.models.two_path.ConvPathFusion)
    path_fusion: str = "separable"
    # the direct regressor, the classifier and the token score head also read the auxiliary path (trained by
    # the loss; the final score reads the base path only)
    aux_path_heads: bool = False
    token_score_head: bool = False  # a second, linear score head on the tokens (trained only)
    regressor_se: bool = False  # squeeze-excitation before the regressor's last layer


# where conf/model/t2cr.yaml takes each clip setting from: a refusal names both keys
CLIP_SOURCES = {"num_frames": "data.num_frames", "clip_length": "data.clip_length",
                "num_base_clips": "data.num_clips", "base_starts": "data.base_starts"}


def _clip_key(name: str) -> str:
    source = CLIP_SOURCES.get(name)
    return f"model.clips.{name}" + ("" if source is None else f" (from {source})")


def check_clip_config(config: ClipConfig) -> None:
    """The clip settings are counts and frame numbers a plan can be built from."""
    for name in ("num_frames", "clip_length", "num_base_clips"):
        require_integer(getattr(config, name), _clip_key(name), minimum=1)
    starts = config.base_starts
    if starts is not None and any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 0
                                  for s in starts):
        raise ValueError(f"{_clip_key('base_starts')} must be frame numbers >= 0, got {list(starts)}")
    if starts is None and config.num_frames < config.clip_length:
        raise ValueError(f"{_clip_key('num_frames')}={config.num_frames} is shorter than one clip "
                         f"({_clip_key('clip_length')}={config.clip_length})")


def build_clip_plans(config: ClipConfig, two_path: bool = True) -> tuple[ClipPlan, ClipPlan | None]:
    """Base and auxiliary clip plans of a clip configuration."""
    check_clip_config(config)
    starts = config.base_starts
    if starts is None:
        starts = base_clip_starts(config.num_frames, config.num_base_clips, config.clip_length,
                                  config.overlapping)
    elif len(starts) != config.num_base_clips:
        raise ValueError(f"model.clips.base_starts has {len(starts)} starts but num_base_clips is "
                         f"{config.num_base_clips}")
    base = ClipPlan(tuple(int(s) for s in starts), config.clip_length)
    base.check_fits(config.num_frames, "base path (model.clips)")
    if not two_path:
        return base, None
    num_aux, strategy = parse_aux_strategy(config.aux_strategy)
    if num_aux < 1:
        raise ValueError(f"model.clips.aux_strategy={config.aux_strategy!r}: the auxiliary path needs N >= 1 "
                         "clips")
    if strategy != "2x" and num_aux >= base.num_clips:
        raise ValueError(f"the auxiliary path samples sparsely: N={num_aux} must be < M={base.num_clips} "
                         f"(model.clips.aux_strategy={config.aux_strategy!r})")
    aux = aux_clip_plan(strategy, num_aux, base.starts, config.num_frames, config.clip_length)
    return base, aux


def check_model_config(config: T2CRConfig) -> None:
    """Every width, count and rate of the model is one its layers can be built with; torch would refuse the
    rest with errors that name no setting (an even expansion kernel only at the first forward)."""
    for key in ("hidden_dim", "latent_dim", "regressor_hidden", "regressor_mid", "attention.bottleneck",
                "expansion_kernel"):
        value = config
        for part in key.split("."):
            value = getattr(value, part)
        require_integer(value, f"model.{key}", minimum=1)
    require_integer(config.num_action_types, "model.num_action_types", minimum=0)
    if config.path_fusion not in PATH_FUSIONS:
        raise ValueError(f"model.path_fusion is {config.path_fusion!r}; expected one of {list(PATH_FUSIONS)}")
    if config.two_path and config.expansion_kernel % 2 == 0:
        raise ValueError(f"model.expansion_kernel must be odd (the clip expansion keeps the feature length), "
                         f"got {config.expansion_kernel}")
    if config.decoder.kind == "transformer":
        decoder = config.decoder
        require_integer(decoder.layers, "model.decoder.layers", minimum=1)
        require_integer(decoder.heads, "model.decoder.heads", minimum=1)
        if config.latent_dim % decoder.heads:
            raise ValueError(f"model.latent_dim={config.latent_dim} is not divisible by model.decoder.heads="
                             f"{decoder.heads}")
        require_number(decoder.mlp_ratio, "model.decoder.mlp_ratio", low=0.0, low_open=True)
        if int(config.latent_dim * decoder.mlp_ratio) < 1:
            raise ValueError(f"model.decoder.mlp_ratio={decoder.mlp_ratio} leaves the decoder MLP no unit "
                             f"(model.latent_dim={config.latent_dim})")
        require_number(decoder.dropout, "model.decoder.dropout", 0.0, 1.0, high_open=True)


_Method = TypeVar("_Method", bound=Callable[..., Any])


def _fp32(value: Any) -> Any:
    """Half and bfloat16 tensors as float32; anything else as it is (float64 stays float64)."""
    if isinstance(value, torch.Tensor) and value.dtype in (torch.float16, torch.bfloat16):
        return value.float()
    return value


def heads_in_fp32(method: _Method) -> _Method:
    """Run a method of the heads in fp32 with autocast off.

    Under bf16-mixed only the backbone gains from bf16; a score regressed in bf16 keeps 8 bits of
    mantissa (25.3 comes out as 25.25), which would make the results depend on the hardware."""

    @functools.wraps(method)
    def wrapper(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        tensor = next((a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)), None)
        device_type = tensor.device.type if tensor is not None else "cpu"
        with torch.autocast(device_type=device_type, enabled=False):
            return method(self, *map(_fp32, args), **{k: _fp32(v) for k, v in kwargs.items()})

    return wrapper  # type: ignore[return-value]


def _select(value: Any, index: torch.Tensor | slice) -> Any:
    """The rows `index` of a tensor, or of every tensor of a dataclass; None stays None."""
    if value is None:
        return None
    if dataclasses.is_dataclass(value):
        return dataclasses.replace(value, **{f.name: _select(getattr(value, f.name), index)
                                             for f in dataclasses.fields(value)})
    return value[index]


@dataclass
class PathHeads:
    """What the heads read from one path's tokens of V videos; None where a head is off."""

    direct: torch.Tensor | None  # direct score (V,)
    logits: torch.Tensor | None  # action-type logits (V, num_action_types)
    token_score: torch.Tensor | None = None  # the token score head's score (V,)


@dataclass
class VideoEncoding:
    """What the model knows about a batch of V videos (no exemplar involved)."""

    base_tokens: torch.Tensor  # f_M (V, M, d)
    aux_tokens: torch.Tensor | None  # f_N expanded to (V, M, d); None with one path
    tokens: torch.Tensor  # tokens the difference transformer compares: fused (V, 2M, d) or f_M
    direct: torch.Tensor | None  # direct score (V,), from the base path: the one Eq. 3 uses
    logits: torch.Tensor | None  # action-type logits (V, num_action_types), base path
    # the official code's heads, by keyword only: subclasses' own fields stay positional after `logits`
    _: dataclasses.KW_ONLY
    token_score: torch.Tensor | None = None  # the token score head on the base path (V,)
    aux_heads: PathHeads | None = None  # the same heads on the auxiliary path (model.aux_path_heads)

    def select(self, index: torch.Tensor | slice) -> VideoEncoding:
        """The videos `index` (every per-video field, subclasses' included)."""
        return _select(self, index)


@dataclass
class PairOutput:
    query: VideoEncoding
    exemplar: VideoEncoding
    delta: torch.Tensor  # predicted s_Q - s_E (B,)
    delta_reverse: torch.Tensor  # predicted s_E - s_Q (B,): "f_QM also guides f_EM"
    self_delta_query: torch.Tensor | None  # base vs auxiliary path of Q (B,)
    self_delta_exemplar: torch.Tensor | None


@dataclass
class VoteOutput:
    score: torch.Tensor  # (B,) final score, Eq. 3 (before the dataset's score transform)
    direct: torch.Tensor | None  # (B,) s_hat^1, Eq. 1
    contrastive: torch.Tensor  # (B,) s_hat^2, Eq. 11
    deltas: torch.Tensor  # (B, K) difference score against each exemplar


class T2CR(ClipModel):
    """T2CR (the paper, Sec. 3): target-aware attention, two paths, difference transformer, K-exemplar voting."""

    def __init__(self, config: T2CRConfig, backbone: nn.Module | None = None) -> None:
        check_model_config(config)
        if config.action_classifier and config.num_action_types < 2:
            raise ValueError("model.action_classifier is on but model.num_action_types is "
                             f"{config.num_action_types}; set it from the data or turn the classifier off")
        # the backbone and clip plans (ClipModel), then the heads: the same construction order, so the same
        # initial weights for a seed, as before the base class existed
        super().__init__(config, backbone, two_path=config.two_path)
        feature_dim, d = config.backbone.feature_dim, config.latent_dim
        self.attention = TargetAwareAttention(
            feature_dim, config.hidden_dim, d, config.attention.feature_first, config.attention.clip,
            config.attention.feature_second, config.attention.bottleneck,
        )
        self.expansion = (ClipExpansion(self.aux_plan.num_clips, self.base_plan.num_clips,
                                        config.expansion_kernel) if config.two_path else None)
        self.fusion = (build_path_fusion(config.path_fusion, self.base_plan.num_clips, d) if config.two_path
                       else None)
        if config.decoder.kind == "transformer":
            self.contrast: nn.Module = DifferenceTransformer(d, config.decoder.layers, config.decoder.heads,
                                                             config.decoder.mlp_ratio, config.decoder.dropout,
                                                             config.decoder.final_norm)
        elif config.decoder.kind == "subtract":
            self.contrast = FeatureSubtraction()
        else:
            raise ValueError(f"unknown model.decoder.kind {config.decoder.kind!r}; "
                             "expected 'transformer' or 'subtract'")
        self.regressor = ScoreRegressor(d, config.regressor_hidden, config.regressor_mid, config.regressor_se)
        # a separate direct head only on request (Eq. 1-2 share R); the shared one is never registered twice
        self.direct_regressor = (ScoreRegressor(d, config.regressor_hidden, config.regressor_mid, config.regressor_se)
                                 if config.direct_regression and not config.shared_regressor else None)
        self.classifier = (ActionClassifier(d, config.num_action_types) if config.action_classifier else None)
        self.token_score = TokenScoreHead(d) if config.token_score_head else None

    # ------------------------------------------------------------------------------------- heads
    @heads_in_fp32
    def encode(self, base_features: torch.Tensor, aux_features: torch.Tensor | None = None) -> VideoEncoding:
        """Clip features of V videos -> their tokens, direct score and action-type logits."""
        base_tokens = self.attention(base_features)
        aux_tokens, tokens = None, base_tokens
        if self.expansion is not None:
            if aux_features is None:
                raise ValueError("the two-path model needs auxiliary clip features")
            aux_tokens = self.attention(self.expansion(aux_features))
            tokens = self.fusion(base_tokens, aux_tokens)
        base = self.path_heads(base_tokens)
        aux = self.path_heads(aux_tokens) if aux_tokens is not None and self.config.aux_path_heads else None
        return VideoEncoding(base_tokens, aux_tokens, tokens, base.direct, base.logits, token_score=base.token_score,
                             aux_heads=aux)

    def path_heads(self, tokens: torch.Tensor) -> PathHeads:
        """The direct score, action-type logits and token score of one path's tokens (V, M, d)."""
        return PathHeads(self.direct_score(tokens) if self.config.direct_regression else None,
                         self.classifier(tokens) if self.classifier is not None else None,
                         self.token_score(tokens) if self.token_score is not None else None)

    @heads_in_fp32
    def difference(self, query_tokens: torch.Tensor, exemplar_tokens: torch.Tensor) -> torch.Tensor:
        """Difference score (Eq. 5-6) of query tokens (B, L, d) against exemplar tokens (B, L', d)."""
        return self.regressor(self.contrast(query_tokens, exemplar_tokens))

    def direct_score(self, base_tokens: torch.Tensor) -> torch.Tensor:
        """Direct score (Eq. 1) of base-path tokens (V, M, d)."""
        head = self.direct_regressor if self.direct_regressor is not None else self.regressor
        return head(base_tokens)

    def self_difference(self, encoding: VideoEncoding) -> torch.Tensor | None:
        """Self-difference (Eq. 14): a video's base path against its auxiliary path."""
        if encoding.aux_tokens is None:
            return None
        return self.difference(*self.fusion.each_path(encoding.base_tokens, encoding.aux_tokens))

    # ----------------------------------------------------------------------------------- forward
    def forward(self, query: torch.Tensor, exemplar: torch.Tensor, self_difference: bool = True) -> PairOutput:
        """Query and exemplar videos (B, 3, T, H, W), or their stored clip features (B, M + N, F),
        -> everything the losses need (the self-differences only when `self_difference`)."""
        if query.shape != exemplar.shape:
            raise ValueError(f"query {tuple(query.shape)} and exemplar {tuple(exemplar.shape)} differ in shape")
        base, aux = self.clip_features(torch.cat([query, exemplar]))
        b = query.shape[0]
        split = (lambda t: None if t is None else (t[:b], t[b:]))
        base_q, base_e = split(base)
        aux_q, aux_e = split(aux) if aux is not None else (None, None)
        return self.forward_features(base_q, aux_q, base_e, aux_e, self_difference)

    def forward_features(self, query_base: torch.Tensor, query_aux: torch.Tensor | None,
                         exemplar_base: torch.Tensor, exemplar_aux: torch.Tensor | None,
                         self_difference: bool = True) -> PairOutput:
        """The pair forward from clip features (B, M, F) / (B, N, F)."""
        b = query_base.shape[0]
        both_aux = None if query_aux is None else torch.cat([query_aux, exemplar_aux])
        encoding = self.encode(torch.cat([query_base, exemplar_base]), both_aux)
        query, exemplar = encoding.select(slice(0, b)), encoding.select(slice(b, None))
        # both directions in one decoder call: Q attends to E, and E to Q
        deltas = self.difference(torch.cat([query.tokens, exemplar.tokens]),
                                 torch.cat([exemplar.tokens, query.tokens]))
        self_delta = self.self_difference(encoding) if self_difference else None
        return PairOutput(
            query=query, exemplar=exemplar, delta=deltas[:b], delta_reverse=deltas[b:],
            self_delta_query=None if self_delta is None else self_delta[:b],
            self_delta_exemplar=None if self_delta is None else self_delta[b:],
        )

    # ------------------------------------------------------------------------------------ voting
    @heads_in_fp32
    def vote(self, query: VideoEncoding, exemplar_tokens: torch.Tensor, exemplar_scores: torch.Tensor,
             exemplar_mask: torch.Tensor | None = None) -> VoteOutput:
        """K-exemplar voting (Eq. 11) and the final score (Eq. 3).

        query: encodings of B queries; exemplar_tokens (B, K, L, d); exemplar_scores (B, K) in the
        model's score space; exemplar_mask (B, K) marks the exemplars that count (padding of pools
        smaller than K). Without direct regression (baseline) the final score is s_hat^2.
        """
        b, k = exemplar_scores.shape
        deltas = self.difference(*voting_pairs(query.tokens, exemplar_tokens, exemplar_scores)).reshape(b, k)
        contrastive = mean_vote(deltas, exemplar_scores, exemplar_mask)
        score = contrastive if query.direct is None else (query.direct + contrastive) / 2
        return VoteOutput(score=score, direct=query.direct, contrastive=contrastive, deltas=deltas)
