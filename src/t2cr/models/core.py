"""CoRe: group-aware contrastive regression (Yu et al., ICCV 2021).

Sources: the paper ("Group-aware Contrastive Regression for Action Quality Assessment", Sec. 3)
and its official code, github.com/yuxumin/CoRe: `models/Backbone.py` (clip features of the 10 clips
averaged; the pair feature is [exemplar, query, exemplar score / score_range]), `models/RegressTree.py`
(the binary regression tree: a first 2F+1 -> 256 layer, per level a two-way classifier and two children
per node, one regressor per leaf; depth 5, 16 leaves), `utils/Group_helper.py` (symmetric groups: the
positive half split at quantiles of the training pairs' |score difference|, from 0 to score_range,
mirrored for the negative half; the within-group target is the position in the group, 0..1),
`tools/helper.py` (NLL over the leaves plus MSE of each leaf's regression on its members, both pair
orders; the prediction reads the most probable leaf; the test score is the mean over the exemplars of
exemplar score + predicted difference), `datasets/MTLPair.py` (the differences within DD pools) and
`configs/MTL_CoRe.yaml` (RT_depth 5, score_range 30 with DD, base_lr 1e-3, backbone at 0.1 x, no weight
decay, voter_number 10). Written here from those descriptions, not copied.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from t2cr.config_checks import require_integer, require_number
from t2cr.models.base import ClipModel, mean_vote, voting_pairs
from t2cr.models.t2cr import PairOutput, VideoEncoding, VoteOutput, heads_in_fp32
from t2cr.models.usdl import BaselineConfig


@dataclass
class CoReConfig(BaselineConfig):
    """The schema of conf/model/core.yaml (yuxumin/CoRe configs/MTL_CoRe.yaml, models/RegressTree.py)."""

    method: str = "core"
    depth: int = 5  # RT_depth: 2^(depth-1) = 16 leaves (groups)
    hidden: int = 256  # hidden_channel of the tree
    score_range: float = 30.0  # score_range (MTL-AQA with DD): scales the exemplar score input, caps the groups

    def __post_init__(self) -> None:
        require_integer(self.depth, "model.depth", minimum=2)
        require_integer(self.hidden, "model.hidden", minimum=1)
        require_number(self.score_range, "model.score_range", low=0.0, low_open=True)


def group_edges(differences: Sequence[float], depth: int, score_range: float) -> torch.Tensor:
    """(2^(depth-1), 2) [left, right] bounds of the symmetric groups (Group_helper, Symmetrical=True).

    The positive half holds 2^(depth-2) groups: group i spans the i/n and (i+1)/n quantiles of the sorted
    |differences| (the sample at int(q * (len - 1))), the first starting at 0 and the last ending at
    score_range; the negative half mirrors it. Leaf order: most negative group first."""
    values = sorted(abs(float(d)) for d in differences)
    if not values:
        raise ValueError("CoRe's groups need score differences of training pairs, and there are none (every "
                         "exemplar pool holds one sample?)")
    if values[-1] > float(score_range):
        raise ValueError(f"model.score_range={float(score_range):g} is below the largest training score difference "
                         f"{values[-1]:.4g}: CoRe's last group would end before it starts. Set data.score_range to "
                         "the data's target range (model.score_range follows its top)")
    half = 2 ** (depth - 1) // 2
    last = len(values) - 1
    positive = []
    for i in range(half):
        left = 0.0 if i == 0 else values[int(i / half * last)]
        right = float(score_range) if i == half - 1 else values[int((i + 1) / half * last)]
        positive.append((left, right))
    negative = [(-right, -left) for left, right in reversed(positive)]
    return torch.tensor(negative + positive, dtype=torch.float64)


def assign_groups(delta: torch.Tensor, edges: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Score differences (B,) -> (group index (B,), position inside the group (B,)).

    As Group_helper.produce_label: a difference >= 0 belongs to [left, right), one < 0 to (left, right]; the
    position is (delta - left) / (right - left), or delta - left in a group of width 0. A difference outside
    every group (beyond +-score_range) goes to the outermost group (ours: the reference leaves it in group 0)."""
    edges = edges.to(delta.device, delta.dtype)
    left, right = edges[:, 0], edges[:, 1]
    d = delta.unsqueeze(1)
    inside = torch.where(d >= 0, (d >= left) & (d < right), (d > left) & (d <= right))
    first_inside = inside.float().argmax(dim=1)
    outer = torch.where(delta >= 0, torch.full_like(first_inside, edges.shape[0] - 1), torch.zeros_like(first_inside))
    group = torch.where(inside.any(dim=1), first_inside, outer)
    lo, hi = left[group], right[group]
    width = hi - lo
    position = torch.where(width > 0, (delta - lo) / torch.where(width > 0, width, torch.ones_like(width)), delta - lo)
    return group, position


def recover_difference(group: torch.Tensor, position: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Group index and position -> score difference (Group_helper.inference)."""
    edges = edges.to(position.device, position.dtype)
    lo, hi = edges[group, 0], edges[group, 1]
    return torch.where(hi > lo, lo + (hi - lo) * position, lo + position)


class RegressionTree(nn.Module):
    """The group-aware regression tree: a binary tree of depth `depth` whose nodes each hold a hidden vector;
    every inner node splits its vector into two children and a two-way choice (log-softmax); a leaf's
    log-probability is the sum of the choices on its path; each leaf regresses the position in its group."""

    def __init__(self, in_dim: int, hidden: int, depth: int) -> None:
        super().__init__()
        self.depth, self.hidden, self.num_leaves = depth, hidden, 2 ** (depth - 1)
        self.first = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU())
        # level l has 2^l nodes; grouped 1x1 convolutions apply one small layer per node in a single call
        self.split = nn.ModuleList([nn.Conv1d(2 ** level * hidden, 2 ** (level + 1) * hidden, 1, groups=2 ** level)
                                    for level in range(depth - 1)])
        self.choose = nn.ModuleList([nn.Conv1d(2 ** level * hidden, 2 ** (level + 1), 1, groups=2 ** level)
                                     for level in range(depth - 1)])
        self.leaf = nn.Conv1d(self.num_leaves * hidden, self.num_leaves, 1, groups=self.num_leaves)

    def forward(self, pair: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, in_dim) -> leaf log-probabilities (B, leaves) and per-leaf positions (B, leaves)."""
        b = pair.shape[0]
        x = self.first(pair).unsqueeze(-1)  # (B, hidden, 1): the root
        log_p = pair.new_zeros(b, 1)
        for split, choose in zip(self.split, self.choose):
            step = F.log_softmax(choose(x).reshape(b, -1, 2), dim=-1)  # (B, nodes, 2)
            log_p = (log_p.unsqueeze(-1) + step).reshape(b, -1)  # children of node n at 2n, 2n + 1
            x = F.relu(split(x))
        return log_p, self.leaf(x).squeeze(-1)


@dataclass
class CoReOutput(PairOutput):
    """PairOutput plus the tree's raw outputs for both pair orders (query vs exemplar first, then exemplar vs
    query): what CoReLoss trains."""

    leaf_log_probs: torch.Tensor | None = None  # (2B, leaves)
    positions: torch.Tensor | None = None  # (2B, leaves)


class CoRe(ClipModel):
    """CoRe (Yu et al., ICCV 2021, Sec. 3; yuxumin/CoRe): the query-minus-exemplar score difference regressed
    by the group-aware regression tree from [exemplar feature, query feature, exemplar score / score_range];
    K-exemplar voting at test as T2CR (mean of exemplar score + difference), no direct score. The group
    bounds come from the training data (`prepare`) and are kept in the checkpoint."""

    pair_reads_scores = True  # the tree reads the exemplar's score: forward takes query_score / exemplar_score

    def __init__(self, config: CoReConfig, backbone: nn.Module | None = None) -> None:
        super().__init__(config, backbone, two_path=False)
        feature_dim = config.backbone.feature_dim
        self.tree = RegressionTree(2 * feature_dim + 1, config.hidden, config.depth)
        # NaN until prepare() / set_groups(): a persistent buffer, so evaluation reads them from the checkpoint
        self.register_buffer("group_edges", torch.full((self.tree.num_leaves, 2), float("nan"), dtype=torch.float64))

    # ------------------------------------------------------------------------------------ groups
    def set_groups(self, differences: Sequence[float]) -> None:
        """Group bounds from the score differences of training pairs (model score space)."""
        edges = group_edges(differences, self.config.depth, self.config.score_range)
        self.group_edges.copy_(edges.to(self.group_edges.device))

    def prepare(self, data: object) -> None:
        """Group bounds from the differences of every two training samples that share an exemplar pool (DD
        pools on MTL-AQA: datasets/MTLPair.py `delta`). Kept when already set (a resumed run)."""
        if bool(torch.isnan(self.group_edges).any()):
            self.set_groups(data.training_score_differences())

    def check_groups(self) -> None:
        if bool(torch.isnan(self.group_edges).any()):
            raise RuntimeError("CoRe's group bounds are not set: the module sets them from the training data at "
                               "fit start (model.prepare(datamodule)); call model.set_groups(differences) outside one")

    # ----------------------------------------------------------------------------------- heads
    @heads_in_fp32
    def encode(self, base_features: torch.Tensor, aux_features: torch.Tensor | None = None) -> VideoEncoding:
        """Clip features (V, M, F) -> their mean over the clips as one token (V, 1, F); no direct score."""
        tokens = base_features.mean(dim=1).unsqueeze(1)
        return VideoEncoding(tokens, None, tokens, None, None)

    @heads_in_fp32
    def tree_outputs(self, query_tokens: torch.Tensor, exemplar_tokens: torch.Tensor,
                     exemplar_scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 1, F), (B, 1, F), (B,) -> leaf log-probabilities and positions (B, leaves)."""
        pair = torch.cat([exemplar_tokens[:, 0], query_tokens[:, 0],
                          (exemplar_scores / self.config.score_range).unsqueeze(1).to(query_tokens.dtype)], dim=1)
        return self.tree(pair)

    def read_difference(self, leaf_log_probs: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """The most probable leaf's group and its regressed position -> the score difference."""
        self.check_groups()
        group = leaf_log_probs.argmax(dim=1)
        position = positions.gather(1, group.unsqueeze(1)).squeeze(1)
        return recover_difference(group, position, self.group_edges).to(positions.dtype)

    # ----------------------------------------------------------------------------------- forward
    def forward(self, query: torch.Tensor, exemplar: torch.Tensor, self_difference: bool = True,
                query_score: torch.Tensor | None = None, exemplar_score: torch.Tensor | None = None) -> CoReOutput:
        """Both pair orders through the tree. The tree reads the exemplar's score: `forward` takes the scores
        as keyword arguments (the module passes them); `self_difference` is ignored (one path)."""
        if query.shape != exemplar.shape:
            raise ValueError(f"query {tuple(query.shape)} and exemplar {tuple(exemplar.shape)} differ in shape")
        if query_score is None or exemplar_score is None:
            raise ValueError("CoRe's tree reads the exemplar's score: pass query_score= and exemplar_score=")
        base, _ = self.clip_features(torch.cat([query, exemplar]))
        encoding = self.encode(base)
        b = query.shape[0]
        q, e = encoding.select(slice(0, b)), encoding.select(slice(b, None))
        log_p, positions = self.tree_outputs(torch.cat([q.tokens, e.tokens]), torch.cat([e.tokens, q.tokens]),
                                             torch.cat([exemplar_score, query_score]))
        with torch.no_grad():
            deltas = self.read_difference(log_p, positions) if not torch.isnan(self.group_edges).any() \
                else torch.full_like(positions[:, 0], float("nan"))
        return CoReOutput(query=q, exemplar=e, delta=deltas[:b], delta_reverse=deltas[b:], self_delta_query=None,
                          self_delta_exemplar=None, leaf_log_probs=log_p, positions=positions)

    def vote(self, query: VideoEncoding, exemplar_tokens: torch.Tensor, exemplar_scores: torch.Tensor,
             exemplar_mask: torch.Tensor | None = None) -> VoteOutput:
        """K-exemplar voting (tools/helper.py network_forward_test): mean over the exemplars of exemplar score +
        predicted difference; exemplar_tokens (B, K, 1, F), masked exemplars left out."""
        b, k = exemplar_scores.shape
        query_tokens, exemplar_tokens = voting_pairs(query.tokens, exemplar_tokens, exemplar_scores)
        log_p, positions = self.tree_outputs(query_tokens, exemplar_tokens, exemplar_scores.reshape(b * k))
        deltas = self.read_difference(log_p, positions).reshape(b, k)
        contrastive = mean_vote(deltas, exemplar_scores, exemplar_mask)
        return VoteOutput(score=contrastive, direct=None, contrastive=contrastive, deltas=deltas)
