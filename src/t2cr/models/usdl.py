"""USDL and MUSDL: uncertainty-aware score distribution learning (Tang et al., CVPR 2020).

Sources: the paper ("Uncertainty-aware Score Distribution Learning for Action Quality Assessment",
Sec. 3) and its official code, github.com/nzl-thu/MUSDL: `models/evaluator.py` (the head),
`MTL-AQA/opts.py` (bins, score and judge ranges, seven judges), `MTL-AQA/config.py` (sigma, learning
rate, weight decay), `MTL-AQA/main.py` (clip features averaged over the clips; the prediction read as
the distribution's peak, `argmax`; MUSDL's middle three judges times DD), `MTL-AQA/dataset.py`
(the Gaussian soft labels) and `JIGSAWS/main.py`, `JIGSAWS/config.py` (the six sub-scores as judges,
summed; sigma 1). Written here from those descriptions, not copied.

Both methods predict from the query alone: they use no exemplar. In training every video of a pair is an
independent sample; at evaluation `vote` returns the direct prediction, and no exemplar is encoded
(`votes_with_exemplars = False`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from t2cr.config_checks import require_integer, require_number
from t2cr.models.backbones import BackboneConfig
from t2cr.models.base import ClipModel
from t2cr.models.t2cr import ClipConfig, PairOutput, VideoEncoding, VoteOutput, heads_in_fp32


@dataclass
class BaselineConfig:
    """What every baseline's schema shares with T2CRConfig: the backbone, the clips, the action-type keys that
    t2cr-train sets from the data (the baselines have no action-type classifier: kept off)."""

    method: str = "usdl"
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    clips: ClipConfig = field(default_factory=ClipConfig)
    action_classifier: bool = False  # no baseline classifies action types; t2cr-train reads this key
    num_action_types: int = 0


@dataclass
class USDLConfig(BaselineConfig):
    """The schema of conf/model/usdl.yaml (nzl-thu/MUSDL, MTL-AQA/opts.py and config.py)."""

    method: str = "usdl"
    num_bins: int = 101  # output_dim['USDL'] = 101: the score normalised to 0..100
    # the score range the bins cover, in the model's score space. The reference: 0..104.5 (final scores,
    # label_max); ours: 0..30 by default, the model space with DD (score / DD <= 3 judges x 10)
    score_min: float = 0.0
    score_max: float = 30.0
    sigma: float = 5.0  # --std default 5, in bins (the Gaussian's scale over the bin index)
    hidden: list[int] = field(default_factory=lambda: [256, 128])  # MLP_block: 1024 -> 256 -> 128 -> bins

    def __post_init__(self) -> None:
        check_distribution_config(self, "num_bins", minimum_bins=2)
        if not self.score_max > self.score_min:
            raise ValueError(f"model.score_max={self.score_max} must exceed model.score_min={self.score_min}")


@dataclass
class MUSDLConfig(BaselineConfig):
    """The schema of conf/model/musdl.yaml (nzl-thu/MUSDL, MTL-AQA/opts.py and config.py)."""

    method: str = "musdl"
    num_judges: int = 7  # num_judges = 7 (MTL-AQA's judge_scores); JIGSAWS: 6 GRS sub-scores
    num_bins: int = 21  # output_dim['MUSDL'] = 21: a judge's mark 0, 0.5, ..., 10 (JIGSAWS: 1..5, 5 bins)
    judge_min: float = 0.0
    judge_max: float = 10.0
    # how the judges' marks give the score: middle_three (diving, MTL-AQA/main.py: the sorted marks' [2:5]
    # summed, times DD) or sum (JIGSAWS/main.py: every sub-score summed). conf/model/musdl.yaml takes these
    # five from the data's `judges`
    judge_rule: str = "middle_three"
    sigma: float = 5.0  # the same --std (default 5, in bins) as USDL; JIGSAWS/config.py: 1
    hidden: list[int] = field(default_factory=lambda: [256, 128])

    def __post_init__(self) -> None:
        check_distribution_config(self, "num_bins", minimum_bins=2)
        if self.judge_rule not in ("middle_three", "sum"):
            raise ValueError(f"model.judge_rule must be middle_three or sum, got {self.judge_rule!r}")
        require_integer(self.num_judges, "model.num_judges", minimum=3 if self.judge_rule == "middle_three" else 1)
        if self.judge_rule == "middle_three" and self.num_judges % 2 == 0:
            raise ValueError(f"model.num_judges must be odd (diving keeps the middle three), got {self.num_judges}")
        if not self.judge_max > self.judge_min:
            raise ValueError(f"model.judge_max={self.judge_max} must exceed model.judge_min={self.judge_min}")


def check_distribution_config(config: USDLConfig | MUSDLConfig, bins_key: str, minimum_bins: int) -> None:
    require_integer(getattr(config, bins_key), f"model.{bins_key}", minimum=minimum_bins)
    require_number(config.sigma, "model.sigma", low=0.0, low_open=True)
    for i, width in enumerate(config.hidden):
        require_integer(width, f"model.hidden[{i}]", minimum=1)


class DistributionHead(nn.Module):
    """Pooled clip feature -> log-probabilities over score bins (MLP with ReLU, softmax at the end)."""

    def __init__(self, in_dim: int, hidden: list[int], num_bins: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for width in hidden:
            layers += [nn.Linear(in_dim, width), nn.ReLU()]
            in_dim = width
        layers.append(nn.Linear(in_dim, num_bins))
        self.mlp = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        # log-softmax rather than the reference's softmax followed by log: the same values, no log(0)
        return torch.log_softmax(self.mlp(features), dim=-1)


@dataclass
class DistributionEncoding(VideoEncoding):
    """A VideoEncoding that also carries the predicted score distribution(s): (V, bins), or (V, judges, bins)."""

    log_probs: torch.Tensor | None = None


class _DirectModel(ClipModel):
    """The shared shape of the non-pairwise methods: pooled clip features -> direct score, no exemplar."""

    votes_with_exemplars = False
    score_has_gradient = False  # the peak bin (argmax)

    def __init__(self, config: BaselineConfig, backbone: nn.Module | None = None) -> None:
        super().__init__(config, backbone, two_path=False)

    def distribution(self, pooled: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def read_score(self, log_probs: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @heads_in_fp32
    def encode(self, base_features: torch.Tensor, aux_features: torch.Tensor | None = None) -> DistributionEncoding:
        """Clip features (V, M, F) -> their mean over the clips (MTL-AQA/main.py: `clip_feats.mean(1)`), the
        score distribution and the score read from it. `aux_features` is ignored (one path)."""
        pooled = base_features.mean(dim=1)
        log_probs = self.distribution(pooled)
        tokens = pooled.unsqueeze(1)
        return DistributionEncoding(tokens, None, tokens, self.read_score(log_probs), None, log_probs)

    def forward(self, query: torch.Tensor, exemplar: torch.Tensor, self_difference: bool = True) -> PairOutput:
        """Both videos of each pair encoded as independent samples (`self_difference` is ignored: one path).
        The deltas are the difference of the two direct predictions (not trained: the loss uses the
        distributions)."""
        if query.shape != exemplar.shape:
            raise ValueError(f"query {tuple(query.shape)} and exemplar {tuple(exemplar.shape)} differ in shape")
        base, _ = self.clip_features(torch.cat([query, exemplar]))
        encoding = self.encode(base)
        b = query.shape[0]
        q, e = encoding.select(slice(0, b)), encoding.select(slice(b, None))
        return PairOutput(query=q, exemplar=e, delta=q.direct - e.direct, delta_reverse=e.direct - q.direct,
                          self_delta_query=None, self_delta_exemplar=None)

    def vote(self, query: VideoEncoding, exemplar_tokens: torch.Tensor | None, exemplar_scores: torch.Tensor,
             exemplar_mask: torch.Tensor | None = None) -> VoteOutput:
        """The query's direct prediction: USDL and MUSDL use no exemplar, so the K exemplars are ignored
        (`exemplar_tokens` may be None; the contrastive score and the deltas are NaN)."""
        nan = torch.full_like(exemplar_scores, float("nan"))
        return VoteOutput(score=query.direct, direct=query.direct, contrastive=nan[:, 0], deltas=nan)


class USDL(_DirectModel):
    """USDL (Tang et al., CVPR 2020, Sec. 3; nzl-thu/MUSDL): one distribution over `num_bins` score bins,
    trained with KL divergence to a discretised Gaussian around the true score; the prediction is the
    distribution's peak (`argmax`, MTL-AQA/main.py `compute_score`), mapped back to the score range."""

    def __init__(self, config: USDLConfig, backbone: nn.Module | None = None) -> None:
        super().__init__(config, backbone)
        self.head = DistributionHead(config.backbone.feature_dim, list(config.hidden), config.num_bins)

    def distribution(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.head(pooled)

    def bin_width(self) -> float:
        return (self.config.score_max - self.config.score_min) / (self.config.num_bins - 1)

    def score_to_bin(self, score: torch.Tensor) -> torch.Tensor:
        """Scores in the model's space -> (fractional) bin positions: the soft label's centre."""
        return (score - self.config.score_min) / self.bin_width()

    def read_score(self, log_probs: torch.Tensor) -> torch.Tensor:
        return self.config.score_min + log_probs.argmax(dim=-1).to(log_probs.dtype) * self.bin_width()


def middle_judges_sum(judges: torch.Tensor) -> torch.Tensor:
    """(V, J) judge marks -> the sum of the middle three after dropping the (J - 3) / 2 highest and lowest
    (diving's rule; MTL-AQA/main.py sorts the seven and sums [2:5])."""
    drop = (judges.shape[-1] - 3) // 2
    return judges.sort(dim=-1).values[..., drop:drop + 3].sum(dim=-1)


class MUSDL(_DirectModel):
    """MUSDL (Tang et al., CVPR 2020, Sec. 3, multi-path; nzl-thu/MUSDL): one distribution per judge over the marks
    judge_min..judge_max, each trained with KL divergence to a Gaussian around that judge's mark; the
    prediction is each judge's peak mark, combined by `judge_rule`:
    - middle_three (diving): the middle three summed. In the model's score space with DD (score / DD,
      data.divide_by_difficulty=true) that sum is the prediction, and the DD multiplies it back, as the
      reference's `sum(middle three) * difficulty`;
    - sum (JIGSAWS): every judge's mark summed, the score itself (no DD).
    Needs per-judge scores in the data."""

    def __init__(self, config: MUSDLConfig, backbone: nn.Module | None = None) -> None:
        super().__init__(config, backbone)
        self.heads = nn.ModuleList([DistributionHead(config.backbone.feature_dim, list(config.hidden), config.num_bins)
                                    for _ in range(config.num_judges)])

    def distribution(self, pooled: torch.Tensor) -> torch.Tensor:
        return torch.stack([head(pooled) for head in self.heads], dim=1)  # (V, judges, bins)

    def bin_width(self) -> float:
        return (self.config.judge_max - self.config.judge_min) / (self.config.num_bins - 1)

    def score_to_bin(self, marks: torch.Tensor) -> torch.Tensor:
        return (marks - self.config.judge_min) / self.bin_width()

    def read_score(self, log_probs: torch.Tensor) -> torch.Tensor:
        marks = self.config.judge_min + log_probs.argmax(dim=-1).to(log_probs.dtype) * self.bin_width()
        return middle_judges_sum(marks) if self.config.judge_rule == "middle_three" else marks.sum(dim=-1)

    def prepare(self, data: object) -> None:
        """Refuse data without per-judge scores, or with another number of judges, before the first step."""
        has = getattr(data, "has_judge_scores", None)
        if has is not None and not has:
            raise ValueError("model=musdl needs per-judge scores (judge_scores in the annotations) and the data "
                             f"({getattr(getattr(data, 'config', None), 'name', '?')}) has none: use data with judges "
                             "(data=mtl_aqa, data=jigsaws or the synthetic data) or another model")
        with_dd = getattr(getattr(data, "config", None), "divide_by_difficulty", None)
        if self.config.judge_rule == "middle_three" and with_dd is False:
            raise ValueError("model=musdl predicts the middle three judges' sum, the score only in the space with DD: "
                             "set data.divide_by_difficulty=true")
        if self.config.judge_rule == "sum" and with_dd is True:
            raise ValueError("model.judge_rule=sum predicts the judges' sum, the score itself, not score / DD: "
                             "set data.divide_by_difficulty=false")
        count = getattr(data, "num_judges", None)
        if count is not None and count != self.config.num_judges:
            raise ValueError(f"model.num_judges={self.config.num_judges} but the data has {count} judges per "
                             f"sample; set model.num_judges={count}")
