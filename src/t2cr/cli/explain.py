"""t2cr-explain ckpt_path=... video=...: Integrated Gradients maps over the frames of one video.

    t2cr-explain ckpt_path=outputs/smoke/<stamp>/checkpoints/last.ckpt video=dive.mp4 pool=2.4
    t2cr-explain ckpt_path=A.ckpt compare_ckpt=B.ckpt video=dive.mp4 target=contrastive baseline=blur

Writes <output_dir>/<name>.png (the layout of the paper's Fig. 8: evenly spaced frames on top, their
attribution maps below; with compare_ckpt one row of maps per checkpoint, Fig. 9) and <name>.npz
(the raw attributions, float16, with the frame indices, the score, f(baseline) and Captum's
convergence delta). The exemplars come from the checkpoint's bank and are held fixed. With sample=<key>
the dataset is read with the checkpoint's own data settings (t2cr.cli.run_settings: data.root /
data.annotations may point elsewhere; other data overrides are refused or reported as deviations); the
float32 matmul precision is the checkpoint's. A video is checked and resampled as t2cr-score does it
(t2cr.bank.read_scoring_video: too few frames, a single image or mixed frame sizes are refused; the
resampling is reported under `warnings` in <name>.json), and so are the checkpoints (t2cr.checkpoints).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig

from t2cr.bank import ClipNeeds, ScoringInput, read_scoring_video, select_frames
from t2cr.checkpoints import load_checkpoint
from t2cr.cli.common import UserError, command, set_matmul_precision, user_errors, warn
from t2cr.cli.run_settings import apply_run_settings
from t2cr.data.frames import read_any_video
from t2cr.explain import (
    attribute,
    log_to_wandb,
    prepare_video,
    render_figure,
    save_attributions,
    shown_frames,
)
from t2cr.resources import CONF_DIR


def _same_input(bank_a: dict[str, Any], bank_b: dict[str, Any]) -> None:
    for key in ("num_frames", "transform"):
        if bank_a[key] != bank_b[key]:
            raise UserError(f"compare_ckpt reads videos differently ({key}: {bank_a[key]} vs {bank_b[key]}); "
                            "the two checkpoints' maps can only be shown over the same input frames")


def _input_frames(cfg: DictConfig):
    """The frames of `video=` (a file or frame folder), or of the dataset sample `sample=<key>` of `data.*`,
    read as evaluation reads it (no temporal jitter)."""
    if bool(cfg.video) == bool(cfg.sample):
        raise ValueError("give exactly one of video=<file or frame folder> and sample=<dataset key, e.g. 1_4>")
    if cfg.video:
        return read_any_video(cfg.video)
    from t2cr.run import build_datamodule

    datamodule = build_datamodule(cfg)
    for split in ("test", "val", "train"):
        for sample in datamodule.samples(split):
            if sample.key_str == str(cfg.sample):
                return datamodule.reader.read_frames(sample, None)
    hint = ""
    if isinstance(cfg.sample, int):  # Hydra reads 1_4 as the integer 14
        hint = "; quote keys with underscores: sample=\"'1_4'\""
    raise KeyError(f"sample={cfg.sample} is not a key of {cfg.data.name} (keys look like "
                   f"{datamodule.samples('test')[0].key_str!r}){hint}")


def _explained_input(cfg: DictConfig, needs: ClipNeeds) -> ScoringInput:
    """`video=` checked and resampled as t2cr-score does it, or the dataset sample (data.num_frames frames)."""
    if cfg.video and not cfg.sample:
        return read_scoring_video(cfg.video, needs, "video")
    frames = _input_frames(cfg)  # refuses both / neither of video= and sample=
    return ScoringInput(frames, *select_frames(len(frames), needs, f"sample={cfg.sample}"))


def explain(cfg: DictConfig) -> dict[str, Any]:
    device = cfg.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    options = {"target": cfg.target, "baseline": cfg.baseline, "steps": int(cfg.steps),
               "internal_batch_size": cfg.internal_batch_size, "blur_sigma": cfg.blur_sigma,
               "difficulty": cfg.difficulty}
    module = load_checkpoint(str(cfg.ckpt_path), "ckpt_path", need_bank=True)
    bank = module.exemplar_bank
    needs = ClipNeeds.of(module)
    other = None
    if cfg.compare_ckpt:
        other = load_checkpoint(str(cfg.compare_ckpt), "compare_ckpt", need_bank=True)
        _same_input(bank, other.exemplar_bank)
        needs = needs.merged(ClipNeeds.of(other))
    set_matmul_precision((module.run_settings or {}).get("matmul_precision", "highest"))
    deviations = None
    if cfg.sample:  # only a dataset sample reads data.*; a video file is read as the checkpoint's bank says
        deviations = apply_run_settings(cfg, module.run_settings, "explain", str(cfg.ckpt_path))
    explained = _explained_input(cfg, needs)
    for message in explained.warnings:
        warn("explain", message)
    video, source_frames = prepare_video(explained.frames, bank)
    video = video.to(device)
    attributions, info = attribute(module.model.to(device), bank, video, cfg.pool, **options)
    label_a = cfg.label or Path(str(cfg.ckpt_path)).stem
    rows = [(f"IG {label_a}", attributions)]
    infos = [info]
    extra: dict[str, Any] = {}
    if other is not None:
        attributions_b, info_b = attribute(other.model.to(device), other.exemplar_bank, video, cfg.pool, **options)
        label_b = cfg.compare_label or Path(str(cfg.compare_ckpt)).stem
        if label_b == label_a:
            label_a, label_b = "A: " + label_a, "B: " + label_b
            rows[0] = (f"IG {label_a}", attributions)
        rows.append((f"IG {label_b}", attributions_b))
        infos.append(info_b)
        extra = {"attributions_compare": attributions_b.detach().cpu().numpy().astype("float16"),
                 "score_compare": info_b["score"], "f_input_compare": info_b["f_input"],
                 "f_baseline_compare": info_b["f_baseline"], "delta_compare": info_b["delta"]}

    shown = shown_frames(video.shape[2], cfg.num_frames_shown)
    output_dir = Path(str(cfg.output_dir))
    source = cfg.video if cfg.video else f"sample_{cfg.sample}"
    name = cfg.name or f"{Path(str(source)).stem}_{cfg.target}_{cfg.baseline}"
    title = " | ".join(f"{label.removeprefix('IG ')}: score {i['score']:.2f}, {cfg.target} {i['f_input']:.2f} "
                       f"(baseline {i['f_baseline']:.2f})" for (label, _), i in zip(rows, infos))
    png = render_figure(video, bank, rows, shown, output_dir / f"{name}.png",
                        title=f"Integrated Gradients ({cfg.baseline} baseline, {cfg.steps} steps)\n{title}",
                        frame_labels=[int(source_frames[t]) for t in shown], alpha=float(cfg.alpha))
    npz = save_attributions(output_dir / f"{name}.npz", attributions, info, shown, source_frames, extra)
    result: dict[str, Any] = {"video": str(source), "checkpoint": str(cfg.ckpt_path), "png": str(png),
                              "npz": str(npz), "warnings": explained.warnings, **info}
    if cfg.compare_ckpt:
        result["compare"] = {"checkpoint": str(cfg.compare_ckpt), **infos[1]}
    if deviations:
        result["deviations"] = deviations
    if cfg.wandb:
        result["wandb_dir"] = log_to_wandb(png, output_dir, info, str(cfg.wandb_project), name)
    (output_dir / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")

    for (label, _), i in zip(rows, infos):
        direct = "n/a" if i["direct"] is None else f"{i['direct']:.3f}"
        print(f"{label.removeprefix('IG ')}: score {i['score']:.3f} (direct {direct}, contrastive "
              f"{i['contrastive']:.3f}, pool {i['pool']}, {i['score_space']})")
        print(f"  IG of {i['target']}: f(input) {i['f_input']:.4f}  f(baseline) {i['f_baseline']:.4f}  "
              f"sum(attr) {i['attribution_sum']:.4f}  delta {i['delta']:.2e} "
              f"({100 * i['relative_error']:.2f}% of f(input) - f(baseline))")
    print(f"outputs: {png}  {npz}  {output_dir / (name + '.json')}")
    return result


@hydra.main(config_path=str(CONF_DIR), config_name="explain", version_base="1.3")
def hydra_main(cfg: DictConfig) -> None:
    with user_errors("explain"):
        explain(cfg)


main = command("explain", hydra_main)

if __name__ == "__main__":
    main()
