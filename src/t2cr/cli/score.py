"""t2cr-score ckpt_path=... video=...: the score of one video, with its direct and contrastive parts.

    t2cr-score ckpt_path=outputs/smoke/<stamp>/checkpoints/last.ckpt video=dive.mp4 pool=2.4

The checkpoint carries an exemplar bank (clip features and scores of seeded training exemplars per
pool), so no training data is needed. `pool` names the exemplar pool (the difficulty or dive number)
where the model was trained with one. The float32 matmul precision is the checkpoint's (its run's
trainer.matmul_precision).
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from t2cr.bank import score_frames
from t2cr.cli.common import precision_context, set_matmul_precision
from t2cr.data.frames import read_any_video
from t2cr.module import T2CRModule
from t2cr.run import CONF_DIR


def score(cfg: DictConfig) -> dict:
    device = cfg.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    module = T2CRModule.from_checkpoint(str(cfg.ckpt_path), map_location="cpu")
    bank = getattr(module, "exemplar_bank", None)
    if not bank:
        raise ValueError(f"{cfg.ckpt_path} carries no exemplar bank: use the last.ckpt or best checkpoint that "
                         "t2cr-train writes at the end of training")
    set_matmul_precision((module.run_settings or {}).get("matmul_precision", "highest"))
    frames = read_any_video(cfg.video)
    with precision_context((module.run_settings or {}).get("precision", "32-true"), device):
        result = score_frames(module.model, bank, frames, cfg.pool, cfg.difficulty, device)
    result = {"video": str(cfg.video), "checkpoint": str(cfg.ckpt_path), "num_frames_read": len(frames), **result}
    text = json.dumps(result, indent=2)
    print(text)
    if cfg.output:
        Path(cfg.output).write_text(text + "\n")
    return result


@hydra.main(config_path=str(CONF_DIR), config_name="score", version_base="1.3")
def main(cfg: DictConfig) -> None:
    score(cfg)


if __name__ == "__main__":
    main()
