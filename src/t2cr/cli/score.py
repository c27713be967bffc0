"""t2cr-score ckpt_path=... video=...: the score of one video, with its direct and contrastive parts.

    t2cr-score ckpt_path=outputs/smoke/<stamp>/checkpoints/last.ckpt video=dive.mp4 pool=2.4

The checkpoint carries an exemplar bank (clip features and scores of seeded training exemplars per
pool), so no training data is needed. `pool` names the exemplar pool (the difficulty or dive number)
where the model was trained with one. The float32 matmul precision is the checkpoint's (its run's
trainer.matmul_precision).

Refused with one line (exit 2): a file that is not a t2cr checkpoint with an exemplar bank
(t2cr.checkpoints), a single image, a video or frame folder with fewer frames than the clip plan reads, a
frame folder that mixes frame sizes (t2cr.bank.read_scoring_video). A video shorter or longer than the
model's data.num_frames window is resampled to it, and the JSON says so under `warnings`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig

from t2cr.bank import ClipNeeds, read_scoring_video, resolve_pool, score_frames
from t2cr.checkpoints import load_checkpoint
from t2cr.cli.common import command, precision_context, set_matmul_precision, user_errors, warn
from t2cr.resources import CONF_DIR


def score(cfg: DictConfig) -> dict[str, Any]:
    device = cfg.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    module = load_checkpoint(str(cfg.ckpt_path), "ckpt_path", need_bank=True)
    bank = module.exemplar_bank
    set_matmul_precision((module.run_settings or {}).get("matmul_precision", "highest"))
    resolve_pool(bank, cfg.pool)  # a wrong pool= is refused before the video is decoded
    scoring_input = read_scoring_video(cfg.video, ClipNeeds.of(module), "video")
    for message in scoring_input.warnings:
        warn("score", message)
    with precision_context((module.run_settings or {}).get("precision", "32-true"), device):
        result = score_frames(module.model, bank, scoring_input.frames, cfg.pool, cfg.difficulty, device)
    result = {"video": str(cfg.video), "checkpoint": str(cfg.ckpt_path),
              "num_frames_read": len(scoring_input.frames), "num_frames_used": len(scoring_input.source_frames),
              "warnings": scoring_input.warnings, **result}
    text = json.dumps(result, indent=2, allow_nan=False)  # strict JSON: a part a method lacks is null
    print(text)
    if cfg.output:
        Path(cfg.output).write_text(text + "\n")
    return result


@hydra.main(config_path=str(CONF_DIR), config_name="score", version_base="1.3")
def hydra_main(cfg: DictConfig) -> None:
    with user_errors("score"):
        score(cfg)


main = command("score", hydra_main)

if __name__ == "__main__":
    main()
