"""Integrated Gradients over the frames of one video (the maps of the paper's Sec. 4.6, Fig. 8-9).

The attributed function maps a normalised video (1, 3, T, H, W) to one number: the final score
(direct + contrastive) / 2 as in `T2CR.vote`, the direct score, or the contrastive score. The
exemplars are those of the checkpoint's bank and are held fixed: their tokens are computed once from
the bank's clip features, outside the attributed function and without gradient, so every pixel's
attribution is about the query video alone. Captum computes the Integrated Gradients; this module
builds the function, the baseline, the figure and the files.

Baselines: `black` is a black video in pixel space, i.e. (0 - mean) / std per channel after the
model's normalisation (not zero in normalised space, which would be a grey-ish, channel-shifted
video); `blur` is the input blurred with a Gaussian over H and W (a torch convolution).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from t2cr.bank import resolve_pool
from t2cr.data.frames import linspace_indices
from t2cr.data.transforms import TransformConfig, VideoTransform
from t2cr.models.t2cr import T2CR
from t2cr.optional import require

TARGETS = ("final", "direct", "contrastive")
BASELINES = ("black", "blur")


# ------------------------------------------------------------------------------------ inputs
def prepare_video(frames: np.ndarray, bank: dict[str, Any]) -> tuple[torch.Tensor, np.ndarray]:
    """uint8 frames (N, H, W, 3) -> the model's input (1, 3, T, h, w) and the N-frame index of each of T.

    The same sampling and evaluation transform as `t2cr.bank.score_frames`.
    """
    source_frames = linspace_indices(len(frames), bank["num_frames"])
    transform = VideoTransform(TransformConfig(**bank["transform"]))
    return transform(frames[source_frames], None).unsqueeze(0), source_frames


def normalisation(bank: dict[str, Any], device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of the bank's transform, shaped (1, 3, 1, 1, 1)."""
    transform = VideoTransform(TransformConfig(**bank["transform"]))
    return (transform.mean.view(1, 3, 1, 1, 1).to(device), transform.std.view(1, 3, 1, 1, 1).to(device))


def gaussian_blur(video: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur over the last two dimensions (H, W) of any tensor; edges replicated."""
    if sigma <= 0:
        return video.clone()
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=video.dtype, device=video.device)
    kernel = torch.exp(-offsets ** 2 / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    *lead, h, w = video.shape
    flat = video.reshape(-1, 1, h, w)
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))
    return flat.reshape(*lead, h, w)


def default_blur_sigma(video: torch.Tensor) -> float:
    """A tenth of the frame's shorter side: the figure's shape is gone, its colours stay."""
    return 0.1 * min(video.shape[-2:])


def make_baseline(video: torch.Tensor, bank: dict[str, Any], kind: str,
                  blur_sigma: float | None = None) -> torch.Tensor:
    """The IG baseline of a normalised video (1, 3, T, H, W), in the same normalised space."""
    if kind == "black":
        mean, std = normalisation(bank, video.device)
        return ((torch.zeros_like(video) - mean) / std).to(video.dtype)
    if kind == "blur":
        sigma = default_blur_sigma(video) if blur_sigma is None else float(blur_sigma)
        return gaussian_blur(video, sigma)
    raise ValueError(f"unknown baseline {kind!r}; expected one of {', '.join(BASELINES)}")


# ------------------------------------------------------------------------------- attribution
@contextmanager
def _evaluating_without_weight_grads(model: T2CR):
    """Evaluation mode, and no gradient for the weights (only the input's is wanted); restored after."""
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for parameter, _ in flags:
        parameter.requires_grad_(False)
    try:
        yield model
    finally:
        for parameter, flag in flags:
            parameter.requires_grad_(flag)
        model.train(was_training)


def score_scale(bank: dict[str, Any], pool_name: str, difficulty: float | None) -> tuple[float, str]:
    """Factor from the model's score space to the reported score, as in `score_frames`."""
    if not bank.get("divide_by_difficulty"):
        return 1.0, "score"
    if difficulty is not None:
        return float(difficulty), "score"
    if bank["rule"] == "difficulty":
        return float(pool_name), "score"
    return 1.0, "score / DD (give difficulty=<DD> for the final score)"


@torch.no_grad()
def fixed_exemplars(model: T2CR, bank: dict[str, Any], pool_name: str,
                    device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens (K, L, d) and scores (K,) of a pool's exemplars, from the bank's clip features, no gradient."""
    entry = bank["pools"][pool_name]
    aux = None if entry["aux"] is None else entry["aux"].to(device)
    tokens = model.encode(entry["base"].to(device), aux).tokens.detach()
    return tokens, entry["scores"].to(device=device, dtype=tokens.dtype).detach()


def make_forward(model: T2CR, bank: dict[str, Any], pool_name: str, target: str,
                 scale: float = 1.0, device: torch.device | str = "cpu") -> Callable[[torch.Tensor], torch.Tensor]:
    """videos (n, 3, T, H, W) -> (n,) the chosen score against the pool's exemplars, held fixed."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; expected one of {', '.join(TARGETS)}")
    method = getattr(model.config, "method", "t2cr")
    if not model.score_has_gradient:
        raise ValueError(f"a model.method={method} checkpoint reads its score as the peak of a distribution "
                         "(argmax), which has no gradient: Integrated Gradients cannot attribute it; explain a "
                         "T2CR or CoRe checkpoint")
    if target == "direct" and not getattr(model.config, "direct_regression", False):
        raise ValueError(f"this model (model.method={method}) has no direct regression path: use target=final "
                         "or target=contrastive")
    exemplar_tokens, exemplar_scores = fixed_exemplars(model, bank, pool_name, device)

    def forward(videos: torch.Tensor) -> torch.Tensor:
        n = videos.shape[0]
        query = model.encode(*model.extract_clip_features(videos))
        vote = model.vote(query, exemplar_tokens.unsqueeze(0).expand(n, *exemplar_tokens.shape),
                          exemplar_scores.unsqueeze(0).expand(n, -1))
        value = {"final": vote.score, "direct": vote.direct, "contrastive": vote.contrastive}[target]
        return value * scale

    return forward


def attribute(model: T2CR, bank: dict[str, Any], video: torch.Tensor, pool: object = None, target: str = "final",
              baseline: str = "black", steps: int = 32, internal_batch_size: int | None = 4,
              blur_sigma: float | None = None, difficulty: float | None = None,
              method: str = "gausslegendre") -> tuple[torch.Tensor, dict[str, Any]]:
    """Integrated Gradients of one normalised video (1, 3, T, H, W) -> (attributions of its shape, info).

    info: f_input and f_baseline (the attributed score at the input and at the baseline), delta
    (Captum's convergence delta: sum of attributions - (f_input - f_baseline)), relative_error
    (|delta| / |f_input - f_baseline|), the final / direct / contrastive scores of the input, and
    the settings. `internal_batch_size` interpolation steps go through the model at a time, so the
    memory does not grow with `steps`.
    """
    IntegratedGradients = require("captum.attr", "t2cr-explain (Integrated Gradients)", "captum").IntegratedGradients

    if video.dim() != 5 or video.shape[0] != 1 or video.shape[1] != 3:
        raise ValueError(f"video must be (1, 3, T, H, W), got {tuple(video.shape)}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    pool_name = resolve_pool(bank, pool)
    scale, space = score_scale(bank, pool_name, difficulty)
    device = video.device
    sigma = (default_blur_sigma(video) if blur_sigma is None else float(blur_sigma)) if baseline == "blur" else None
    with _evaluating_without_weight_grads(model):
        forward = make_forward(model, bank, pool_name, target, scale, device)
        start = make_baseline(video, bank, baseline, sigma).detach()
        inputs = video.detach()
        with torch.no_grad():
            f_input, f_baseline = (float(v) for v in forward(torch.cat([inputs, start])))
            tokens, scores = fixed_exemplars(model, bank, pool_name, device)
            query = model.encode(*model.extract_clip_features(inputs))
            vote = model.vote(query, tokens.unsqueeze(0), scores.unsqueeze(0))
        integrated = IntegratedGradients(forward)
        attributions, delta = integrated.attribute(
            inputs, baselines=start, n_steps=int(steps), method=method,
            internal_batch_size=None if not internal_batch_size else int(internal_batch_size),
            return_convergence_delta=True,
        )
    attributions = attributions.detach()
    total = float(attributions.sum())
    difference = f_input - f_baseline
    info = {
        "pool": pool_name,
        "target": target,
        "baseline": baseline,
        "blur_sigma": sigma,
        "steps": int(steps),
        "method": method,
        "internal_batch_size": internal_batch_size,
        "scale": scale,
        "score_space": space,
        "f_input": f_input,
        "f_baseline": f_baseline,
        "attribution_sum": total,
        "delta": float(delta.reshape(-1)[0]),
        "relative_error": abs(float(delta.reshape(-1)[0])) / max(abs(difference), 1e-12),
        "score": float(vote.score[0]) * scale,
        "direct": None if vote.direct is None else float(vote.direct[0]) * scale,
        "contrastive": float(vote.contrastive[0]) * scale,
    }
    return attributions, info


# ------------------------------------------------------------------------------------ outputs
def shown_frames(num_frames: int, num_shown: int) -> np.ndarray:
    """`num_shown` evenly spaced frame indices of a T-frame input (no repeats)."""
    return linspace_indices(num_frames, max(1, min(int(num_shown), num_frames)))


def heat_maps(attributions: torch.Tensor, frames: Sequence[int], percentile: float = 99.0) -> np.ndarray:
    """sum |attr| over channels at the given frames -> (F, H, W) in [0, 1].

    One normaliser for all shown frames of a row (a high percentile, so one hot pixel does not wash out
    the rest): the frames of a row stay comparable with each other.
    """
    magnitude = attributions.detach().float().reshape(3, *attributions.shape[-3:]).abs().sum(0)
    maps = magnitude[list(frames)].cpu().numpy()
    top = float(np.percentile(maps, percentile)) if maps.size else 0.0
    if top <= 0:
        top = float(maps.max()) if maps.size and maps.max() > 0 else 1.0
    return np.clip(maps / top, 0.0, 1.0)


def denormalise(video: torch.Tensor, bank: dict[str, Any]) -> np.ndarray:
    """Normalised (1, 3, T, H, W) -> RGB (T, H, W, 3) in [0, 1]."""
    mean, std = normalisation(bank, video.device)
    rgb = (video.detach().float() * std + mean).clamp(0, 1)[0]
    return rgb.permute(1, 2, 3, 0).cpu().numpy()


def render_figure(video: torch.Tensor, bank: dict[str, Any], rows: Sequence[tuple[str, torch.Tensor]],
                  frames: Sequence[int], path: str | Path, title: str = "",
                  frame_labels: Sequence[int] | None = None, alpha: float = 0.5, cmap: str = "jet",
                  column_inches: float = 1.5, dpi: int = 100) -> Path:
    """Fig. 8 layout: the frames on top, one row of heat maps per (label, attributions) below (Fig. 9)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rgb = denormalise(video, bank)
    frames = list(frames)
    columns, num_rows = len(frames), 1 + len(rows)
    aspect = rgb.shape[1] / rgb.shape[2]
    fig, axes = plt.subplots(num_rows, columns, squeeze=False, dpi=dpi,
                             figsize=(column_inches * columns + 0.4, column_inches * aspect * num_rows + 0.5))
    labels = list(frame_labels) if frame_labels is not None else frames
    for j, t in enumerate(frames):
        axes[0, j].imshow(rgb[t])
        axes[0, j].set_title(f"frame {labels[j]}", fontsize=8)
    axes[0, 0].set_ylabel("frames", fontsize=8)
    for i, (label, attributions) in enumerate(rows, start=1):
        maps = heat_maps(attributions, frames)
        for j, t in enumerate(frames):
            axes[i, j].imshow(rgb[t])
            axes[i, j].imshow(maps[j], cmap=cmap, alpha=alpha, vmin=0.0, vmax=1.0)
        axes[i, 0].set_ylabel(label, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def save_attributions(path: str | Path, attributions: torch.Tensor, info: dict[str, Any], frames: Sequence[int],
                      source_frames: Sequence[int], extra: dict[str, Any] | None = None) -> Path:
    """Compressed npz: attributions (float16, the input's shape), shown frames, score, f(baseline), delta."""
    arrays: dict[str, Any] = {
        "attributions": attributions.detach().cpu().numpy().astype(np.float16),
        "frame_indices": np.asarray(frames, dtype=np.int64),  # shown frames, indices into T
        "source_frames": np.asarray(source_frames, dtype=np.int64),  # frame of the video file for each of T
        "score": np.float64(info["score"]),
        "f_input": np.float64(info["f_input"]),
        "f_baseline": np.float64(info["f_baseline"]),
        "delta": np.float64(info["delta"]),
        "target": np.str_(info["target"]),
        "baseline": np.str_(info["baseline"]),
        "pool": np.str_(info["pool"]),
    }
    for key, value in (extra or {}).items():
        arrays[key] = value
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return path


def log_to_wandb(png: Path, output_dir: Path, info: dict[str, Any], project: str, name: str) -> str:
    """Log the figure and the numbers to an offline W&B run under output_dir; returns the run folder."""
    wandb = require("wandb", "logging the explanation to W&B")

    run = wandb.init(project=project, name=name, dir=str(output_dir), mode="offline", job_type="explain",
                     config={k: v for k, v in info.items() if isinstance(v, (int, float, str)) or v is None})
    run.log({"explain/integrated_gradients": wandb.Image(str(png)),
             **{f"explain/{k}": info[k] for k in ("score", "f_input", "f_baseline", "delta")}})
    folder = str(run.dir)
    run.finish()
    return folder
