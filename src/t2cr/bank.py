"""The exemplar bank a checkpoint carries, so that a new video is scored without the training data.

For every exemplar pool a seeded set of K training exemplars: their keys, their scores in the
model's score space and their backbone clip features (computed with the checkpoint's own weights).

Also what a video must be for a checkpoint to score it (`ClipNeeds`, `read_scoring_video`): at least the
frames the clip plan reads, one frame size; the model then reads `data.num_frames` frames spread evenly
over it, and every repetition or subsampling that this implies is reported as a warning.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from t2cr.cli.common import UserError
from t2cr.data.datamodule import PairDataModule
from t2cr.data.exemplars import stable_rng
from t2cr.data.frames import IMAGE_SUFFIXES, decode_image, decode_video, linspace_indices
from t2cr.data.transforms import TransformConfig, VideoTransform
from t2cr.models.t2cr import T2CR
from t2cr.module import EXEMPLAR_BANK_KEY, T2CRModule

BANK_KEY = EXEMPLAR_BANK_KEY
# still images PyAV would decode as a one-frame "video"
STILL_IMAGE_SUFFIXES = (*IMAGE_SUFFIXES, ".bmp", ".tif", ".tiff", ".webp")


@torch.no_grad()
def build_exemplar_bank(model: T2CR, datamodule: PairDataModule, k: int, seed: int,
                        device: torch.device | str = "cpu") -> dict[str, Any]:
    datamodule.setup()
    config = datamodule.config
    was_training = model.training
    model.eval().to(device)
    pools: dict[str, Any] = {}
    for pool_key, members in datamodule.pools.pools.items():
        picked = stable_rng(seed, "bank", pool_key).choice(len(members), size=min(k, len(members)), replace=False)
        samples = [datamodule.pools.train[members[i]] for i in sorted(picked)]
        base = aux = None
        if model.votes_with_exemplars:  # USDL, MUSDL score a video alone: no frames read, no backbone pass
            videos = torch.stack([datamodule.reader(s, None) for s in samples]).to(device)
            base, aux = model.extract_clip_features(videos)
        pools[str(pool_key)] = {
            "keys": [s.key_str for s in samples],
            "scores": torch.tensor([datamodule.scores.target(s) for s in samples], dtype=torch.float32),
            "base": None if base is None else base.float().cpu(),
            "aux": None if aux is None else aux.float().cpu(),
        }
    model.train(was_training)
    return {
        "rule": datamodule.pools.rule,
        "divide_by_difficulty": config.divide_by_difficulty,
        "num_frames": config.num_frames,
        "transform": asdict(config.transform),
        "pools": pools,
    }


class ExemplarBank(Callback):
    """The checkpoints a run is scored with carry the exemplar bank of their own weights: the final epoch's
    (`last.ckpt`) and each new best epoch's (`best-*.ckpt`).

    Built in `on_save_checkpoint` under the run's precision (its features are then those the in-training
    evaluation computed), once per global step, so `last.ckpt` and `best-*.ckpt` of one epoch share it. The
    epochs between and a SIGTERM save in the middle of an epoch carry none: the bank costs a backbone pass
    over K exemplars per pool. Only rank 0 writes checkpoints, so only rank 0 builds it.
    """

    def __init__(self, k: int, seed: int) -> None:
        self.k, self.seed = k, seed
        self._built: tuple[int, dict[str, Any]] | None = None  # (global step, bank)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        if not trainer.is_global_zero or trainer.interrupted or trainer.datamodule is None:
            return
        if not (self._final(trainer) or self._new_best(trainer)):
            return
        if self._built is None or self._built[0] != trainer.global_step:
            with trainer.precision_plugin.forward_context():
                bank = build_exemplar_bank(pl_module.model, trainer.datamodule, self.k, self.seed, pl_module.device)
            self._built = (trainer.global_step, bank)
        checkpoint[BANK_KEY] = self._built[1]

    @staticmethod
    def _final(trainer: pl.Trainer) -> bool:
        last_epoch = trainer.max_epochs is not None and trainer.current_epoch + 1 >= trainer.max_epochs > 0
        last_step = trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps
        return last_epoch or last_step or trainer.should_stop

    @staticmethod
    def _new_best(trainer: pl.Trainer) -> bool:
        # a monitored ModelCheckpoint names its new best file before writing it: this save is that file
        return any(cb.monitor and cb.best_model_path and not Path(cb.best_model_path).exists()
                   for cb in trainer.checkpoint_callbacks)


def resolve_pool(bank: dict[str, Any], pool: object) -> str:
    names = list(bank["pools"])
    if pool is None:
        if len(names) == 1:
            return names[0]
        raise UserError(f"this model compares against exemplars of the same {bank['rule']}: name the pool "
                        f"with pool=<value>; available: {', '.join(sorted(names))}")
    for candidate in (str(pool), str(float(pool)) if _is_number(pool) else None):
        if candidate in bank["pools"]:
            return candidate
    raise UserError(f"pool {pool!r} is not in the checkpoint's exemplar bank ({bank['rule']}); "
                    f"available: {', '.join(sorted(names))}")


def _is_number(value: object) -> bool:
    try:
        float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True


@torch.no_grad()
def score_frames(model: T2CR, bank: dict[str, Any], frames: np.ndarray, pool: object = None,
                 difficulty: float | None = None, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Score one video (uint8 frames (T, H, W, 3), the whole clip of one action) against the bank."""
    pool_name = resolve_pool(bank, pool)
    entry = bank["pools"][pool_name]
    transform = VideoTransform(TransformConfig(**bank["transform"]))
    video = transform(frames[linspace_indices(len(frames), bank["num_frames"])], None).unsqueeze(0)
    model.eval().to(device)
    query = model.encode(*model.extract_clip_features(video.to(device)))
    scores = entry["scores"].to(device).unsqueeze(0)
    if model.votes_with_exemplars:
        exemplar_aux = None if entry["aux"] is None else entry["aux"].to(device)
        exemplars = model.encode(entry["base"].to(device), exemplar_aux)
        vote = model.vote(query, exemplars.tokens.unsqueeze(0), scores)
    else:  # USDL, MUSDL: the video alone gives the score; the pool only names the difficulty
        vote = model.vote(query, None, scores)
    scale = 1.0
    if bank["divide_by_difficulty"]:
        if difficulty is None:
            if bank["rule"] != "difficulty":
                raise UserError("this model predicts score / difficulty: give the dive's difficulty=<DD>")
            difficulty = float(pool_name)
        scale = float(difficulty)
    def as_float(values: torch.Tensor | None) -> float | None:
        # a part the method does not have (no direct path, no exemplars) is null: JSON has no NaN
        value = None if values is None else float(values[0]) * scale
        return value if value is not None and math.isfinite(value) else None

    score = float(vote.score[0]) * scale
    if not math.isfinite(score):
        raise UserError(f"the model's score of this video is {score}: the checkpoint's weights give no finite "
                        "score (check the run that wrote it)")
    return {
        "score": score,
        "direct": as_float(vote.direct),
        "contrastive": as_float(vote.contrastive),
        "pool": pool_name,
        "difficulty": difficulty,
        # the exemplars the score was voted from; none for a method that scores the video alone
        "exemplars": [
            {"key": key, "score": float(s) * scale, "delta": float(d) * scale}
            for key, s, d in zip(entry["keys"], entry["scores"].tolist(), vote.deltas[0].tolist())
        ] if model.votes_with_exemplars else [],
    }


# ------------------------------------------------------------------------------ scoring inputs
@dataclass(frozen=True)
class ClipNeeds:
    """What a checkpoint needs of a video to score it."""

    frames_needed: int  # frames its clip plan reads (base and auxiliary paths): fewer is refused
    num_frames: int  # data.num_frames: the window the model reads, spread evenly over the video
    clip_length: int
    frame_selection: str | None = None  # how the run read its samples (data.frame_selection), None: unknown

    @classmethod
    def of(cls, module: T2CRModule) -> ClipNeeds:
        """The needs of a checkpoint's module (its clip plans, its bank's window, its run's frame selection)."""
        model = module.model
        plans = [model.base_plan] + ([model.aux_plan] if model.aux_plan is not None else [])
        run_data = (module.run_settings or {}).get("data") or {}
        bank = module.exemplar_bank or {}
        return cls(frames_needed=max(plan.frames_needed for plan in plans),
                   num_frames=int(bank.get("num_frames", model.config.clips.num_frames)),
                   clip_length=model.base_plan.length, frame_selection=run_data.get("frame_selection"))

    def merged(self, other: ClipNeeds) -> ClipNeeds:
        """Needs of one input shown to two checkpoints (t2cr-explain compare_ckpt=): the larger minimum."""
        return ClipNeeds(max(self.frames_needed, other.frames_needed), self.num_frames,
                         max(self.clip_length, other.clip_length), self.frame_selection)

    def describe(self) -> str:
        return f"clips of {self.clip_length} frames from a {self.num_frames}-frame window"


@dataclass
class ScoringInput:
    frames: np.ndarray  # every frame read, uint8 (N, H, W, 3)
    source_frames: np.ndarray  # the num_frames frames the model reads: indices into `frames`
    warnings: list[str] = field(default_factory=list)


def read_scoring_video(path: str | Path, needs: ClipNeeds, option: str = "video") -> ScoringInput:
    """A video file or a folder of frames (name order) that the checkpoint can score, or a `UserError`.

    Refused: a missing path, a single image, fewer frames than the clip plan reads, frames of different
    sizes, a file that does not decode. Accepted inputs get `num_frames` evenly spread frames, with a warning
    for every repetition or subsampling (`select_frames`).
    """
    path = Path(path)
    source = f"{option}={path}"
    if not path.exists():
        raise UserError(f"{source} does not exist")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise UserError(f"{source} is a folder without {'/'.join(IMAGE_SUFFIXES)} frames")
        _check_enough(len(files), needs, source)  # before decoding anything
        frames = _decode_images(files)
        names = [f.name for f in files]
    elif path.suffix.lower() in STILL_IMAGE_SUFFIXES:
        raise UserError(f"{source} is a single image, not a video: 1 frame found, {needs.frames_needed} needed "
                        f"({needs.describe()}); give a video file or a folder of its frames")
    else:
        frames = _decode_video(path)
        names = [f"frame {i}" for i in range(len(frames))]
        _check_enough(len(frames), needs, source)
    _check_one_size(frames, names, source)
    stacked = np.stack(frames)
    source_frames, warnings = select_frames(len(stacked), needs, source)
    return ScoringInput(stacked, source_frames, warnings)


def select_frames(num_found: int, needs: ClipNeeds, source: str) -> tuple[np.ndarray, list[str]]:
    """The `num_frames` frames the model reads of `num_found` (evenly spread, as `score_frames` takes them), and
    what that does to the video: frames repeated (a video shorter than the window) or skipped (a longer one)."""
    _check_enough(num_found, needs, source)
    indices = linspace_indices(num_found, needs.num_frames)
    window = needs.num_frames
    warnings = []
    if num_found < window:
        repeated = window - len(np.unique(indices))
        warnings.append(f"{source} has {num_found} frames, fewer than the {window} the model reads "
                        f"(data.num_frames): {repeated} frames were repeated, evenly spread, so the video plays "
                        f"{window / num_found:.2f}x slower")
    elif num_found > window:
        step = (num_found - 1) / max(window - 1, 1)
        text = (f"{source} has {num_found} frames, more than the {window} the model reads (data.num_frames): "
                f"{window} evenly spread frames were taken (linspace, one every {step:.2f}), so the video plays "
                f"{step:.2f}x faster")
        if needs.frame_selection == "end_aligned":
            text += (f"; the run read {window} consecutive frames per sample (data.frame_selection=end_aligned): "
                     f"trim the video to the action's last {window} frames to score it as the run read its samples")
        warnings.append(text)
    return indices, warnings


def _check_enough(num_found: int, needs: ClipNeeds, source: str) -> None:
    if num_found < needs.frames_needed:
        raise UserError(f"{source} has {num_found} frame{'s' if num_found != 1 else ''}, too few to score: "
                        f"{needs.frames_needed} needed, the checkpoint reads {needs.describe()}")


def _check_one_size(frames: list[np.ndarray], names: list[str], source: str) -> None:
    """One size per video: the transform resizes a video as one block, and frames of another size are most
    likely another video's (resize them first if they belong to this one)."""
    first = frames[0].shape
    for frame, name in zip(frames, names):
        if frame.shape != first:
            raise UserError(f"{source} mixes frame sizes: {name} is {_size(frame.shape)}, the frames before it "
                            f"({names[0]} on) are {_size(first)}; give frames of one size")


def _size(shape: tuple[int, ...]) -> str:
    return f"{shape[1]}x{shape[0]}"  # width x height, as image viewers show it


def _decode_images(files: list[Path]) -> list[np.ndarray]:
    try:
        return [decode_image(f) for f in files]
    except ValueError as error:  # a frame PIL cannot decode; the message names it
        raise UserError(str(error)) from error


def _decode_video(path: Path) -> list[np.ndarray]:
    try:
        return decode_video(path)
    except ValueError as error:  # FFmpeg cannot decode the file, or it has no frames; the message names it
        raise UserError(str(error)) from error
