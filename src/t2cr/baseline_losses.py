"""The losses of the baseline methods (USDL, MUSDL, CoRe), called as T2CRLoss is.

Each takes `(output, query_score, exemplar_score, query_label, exemplar_label, query_judges=None,
exemplar_judges=None)` and returns the weighted terms with "total". Sources are named in the models'
docstrings (t2cr.models.usdl, t2cr.models.core).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from t2cr.models.core import CoRe, assign_groups
from t2cr.models.usdl import MUSDL, USDL


def gaussian_soft_label(centre: Tensor, num_bins: int, sigma: float) -> Tensor:
    """(...,) centres in bin units -> (..., num_bins) discretised Gaussian N(centre, sigma^2) at the bin
    positions 0..num_bins-1, normalised to sum 1 (MUSDL's dataset.py: norm.pdf over the bins, then / sum)."""
    positions = torch.arange(num_bins, dtype=torch.float64, device=centre.device)
    log_density = -0.5 * ((positions - centre.double().unsqueeze(-1)) / sigma) ** 2
    return torch.softmax(log_density, dim=-1).to(centre.dtype if centre.is_floating_point() else torch.float32)


def kl_to_soft_label(log_probs: Tensor, target: Tensor) -> Tensor:
    """KL(target || prediction) summed over the bins, averaged over the leading dimension (the batch); 0 log 0 = 0.

    The paper's KL-divergence loss. The reference calls nn.KLDivLoss() with its default reduction, which
    also divides by the number of bins (a constant factor 1/101 or 1/21 on the loss, i.e. on the learning
    rate); ours: the KL divergence itself, batch mean."""
    target = target.to(log_probs.dtype)
    per_sample = (torch.xlogy(target, target) - target * log_probs).sum(dim=-1)
    return per_sample.reshape(per_sample.shape[0], -1).sum(dim=1).mean()


class USDLLoss(nn.Module):
    """KL divergence of each video's predicted score distribution to a Gaussian around its true score; both
    videos of each pair are samples."""

    def __init__(self, model: USDL) -> None:
        super().__init__()
        cfg = model.config
        self.num_bins, self.sigma = cfg.num_bins, cfg.sigma
        self.to_bin = model.score_to_bin

    def forward(self, output, query_score: Tensor, exemplar_score: Tensor, query_label: Tensor | None = None,
                exemplar_label: Tensor | None = None, query_judges: Tensor | None = None,
                exemplar_judges: Tensor | None = None) -> dict[str, Tensor]:
        log_probs = torch.cat([output.query.log_probs, output.exemplar.log_probs]).float()
        target = gaussian_soft_label(self.to_bin(torch.cat([query_score, exemplar_score]).float()), self.num_bins,
                                     self.sigma)
        kl = kl_to_soft_label(log_probs, target)
        return {"kl": kl, "total": kl}


class MUSDLLoss(nn.Module):
    """Per judge, KL divergence of the predicted distribution of that judge's mark to a Gaussian around it,
    summed over the judges (MTL-AQA/main.py compute_loss); both videos of each pair are samples."""

    def __init__(self, model: MUSDL) -> None:
        super().__init__()
        cfg = model.config
        self.num_bins, self.sigma, self.num_judges = cfg.num_bins, cfg.sigma, cfg.num_judges
        self.to_bin = model.score_to_bin

    def forward(self, output, query_score: Tensor, exemplar_score: Tensor, query_label: Tensor | None = None,
                exemplar_label: Tensor | None = None, query_judges: Tensor | None = None,
                exemplar_judges: Tensor | None = None) -> dict[str, Tensor]:
        if query_judges is None or exemplar_judges is None:
            raise ValueError("model=musdl needs per-judge scores and the batch has none: use data whose annotations "
                             "hold judge_scores (data=mtl_aqa, data=jigsaws, the synthetic data) or another model")
        judges = torch.cat([query_judges, exemplar_judges]).float()
        if judges.shape[-1] != self.num_judges:
            raise ValueError(f"model.num_judges={self.num_judges} but the data has {judges.shape[-1]} judges per "
                             f"sample; set model.num_judges={judges.shape[-1]}")
        log_probs = torch.cat([output.query.log_probs, output.exemplar.log_probs]).float()  # (2B, J, bins)
        target = gaussian_soft_label(self.to_bin(judges), self.num_bins, self.sigma)
        kl = kl_to_soft_label(log_probs, target)  # summed over judges and bins, mean over videos
        return {"kl": kl, "total": kl}


def tree_loss(leaf_log_probs: Tensor, positions: Tensor, group: Tensor, target_position: Tensor) -> tuple[Tensor, Tensor]:
    """(NLL of the true group, regression loss): the squared error of the true leaf's position, averaged over
    the pairs.

    The reference (tools/helper.py) averages the error per leaf over that leaf's pairs, then sums over the
    leaves; it trains with one pair per step (configs/MTL_CoRe.yaml, bs_train 1), where both are the same
    number. For a batch of several pairs the per-leaf form couples the pairs of a batch, so a batch split over
    DDP processes would optimise another loss than on one process; the plain mean over pairs does not (ours).
    """
    nll = F.nll_loss(leaf_log_probs, group)
    error = (positions.gather(1, group.unsqueeze(1)).squeeze(1) - target_position) ** 2
    return nll, error.mean()


class CoReLoss(nn.Module):
    """Group classification (NLL) + within-group regression (MSE) of the score difference, for both pair orders."""

    def __init__(self, model: CoRe) -> None:
        super().__init__()
        self.model = [model]  # a list: the model's parameters must not register twice (the module owns them)

    def forward(self, output, query_score: Tensor, exemplar_score: Tensor, query_label: Tensor | None = None,
                exemplar_label: Tensor | None = None, query_judges: Tensor | None = None,
                exemplar_judges: Tensor | None = None) -> dict[str, Tensor]:
        model = self.model[0]
        model.check_groups()
        delta = torch.cat([query_score - exemplar_score, exemplar_score - query_score]).double()
        group, position = assign_groups(delta, model.group_edges)
        b = query_score.shape[0]
        # at least fp32 (autocast's half precision is too coarse for the NLL), never below the model's own dtype
        dtype = torch.promote_types(output.leaf_log_probs.dtype, torch.float32)
        log_p, positions = output.leaf_log_probs.to(dtype), output.positions.to(dtype)
        position = position.to(dtype)
        terms: dict[str, Tensor] = {}
        # each pair order is its own term sum, as the reference adds the two orders' losses
        nll_q, reg_q = tree_loss(log_p[:b], positions[:b], group[:b], position[:b])
        nll_e, reg_e = tree_loss(log_p[b:], positions[b:], group[b:], position[b:])
        terms["cls"] = nll_q + nll_e
        terms["reg"] = reg_q + reg_e
        terms["total"] = terms["cls"] + terms["reg"]
        return terms

