"""t2cr-train: fit T2CR, test the last and the best checkpoints, write the run's outputs.

    t2cr-train experiment=smoke                      # the default run (make train)
    t2cr-train data=mtl_aqa model.backbone.checkpoint=/path/model_rgb.pth
    t2cr-train hydra.run.dir=outputs/smoke/<stamp> resume=true    # continue from last.ckpt
"""

from __future__ import annotations

import logging
import math
import signal
import sys
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities.exceptions import SIGTERMException

from t2cr.bank import ExemplarBank
from t2cr.cli.common import command, set_matmul_precision, user_errors
from t2cr.cli.prepare import cache_for_accelerator
from t2cr.devices import check_global_batches, uses_gpu
from t2cr.io import write_json, write_text
from t2cr.launch import launched_externally
from t2cr.module import T2CRModule
from t2cr.plots import scatter_plot
from t2cr.reliability import RUN_DIR_ELSEWHERE
from t2cr.resources import CONF_DIR
from t2cr.run import (
    ValidationCurve,
    build_callbacks,
    build_datamodule,
    build_logger,
    build_trainer,
    is_rank_zero,
    start_other_ranks,
    write_predictions_csv,
)
from t2cr.sweeps import wandb_identity

log = logging.getLogger(__name__)


def resume_checkpoint(cfg: DictConfig, run_dir: Path) -> str | None:
    """The checkpoint that `resume=true` / `ckpt_path=...` asks to continue from."""
    wanted = cfg.ckpt_path
    last = run_dir / "checkpoints" / "last.ckpt"
    if cfg.resume == "auto":  # requeued cluster jobs: continue when there is something to continue
        return str(last) if last.is_file() else None
    if cfg.resume is True or wanted == "last":
        path = last
        if not path.is_file():
            raise FileNotFoundError(
                f"resume asked for {path}, which does not exist: pass the folder of the run to continue as "
                f"hydra.run.dir=<run folder> (it holds checkpoints/last.ckpt), or drop resume=true")
        return str(path)
    if wanted:
        if not Path(wanted).is_file():
            raise FileNotFoundError(f"ckpt_path={wanted} does not exist")
        return str(wanted)
    return None


def refuse_changed_model(checkpoint: str, model: dict[str, Any], max_epochs: int | None = None) -> None:
    """Resuming under another model configuration would silently mix two experiments; so would resuming a
    learning-rate schedule planned over `max_epochs` (optim.lr_schedule=cosine) with another number of epochs,
    since the restored scheduler keeps its old horizon."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    for scheduler in state.get("lr_schedulers") or []:
        planned = scheduler.get("T_max")
        if max_epochs is not None and planned is not None and planned != max_epochs:
            raise ValueError(f"{checkpoint} decays its learning rates over {planned} epochs (optim.lr_schedule=cosine): "
                             f"resume with trainer.max_epochs={planned}, or start a new run folder for "
                             f"trainer.max_epochs={max_epochs}")
    saved = state.get("hyper_parameters", {}).get("model")
    if saved is None:
        return
    changed = sorted(_diff(saved, model))
    if changed:
        raise ValueError(f"{checkpoint} was trained with another model configuration: "
                         + ", ".join(f"model.{key}" for key in changed[:20])
                         + " differ. Resume with the run's own settings (its config.yaml) or start a new run folder")


def _diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = set(old) | set(new)
        return [d for k in keys for d in _diff(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [] if old == new else [prefix.rstrip(".")]


def train(cfg: DictConfig) -> dict[str, Any]:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    # before anything starts: no data generated, no rank launched (every rank of a torchrun / SLURM job refuses)
    check_global_batches(cfg.data, cfg.trainer, ("batch_size", "eval_batch_size"))
    if uses_gpu(cfg.trainer):  # before the other ranks start: one process builds the frame cache, if any does
        cache_for_accelerator(cfg, started_by_cluster=launched_externally())
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg)
    if cfg.model.action_classifier:
        if datamodule.num_action_types < 2:
            # JIGSAWS, one AQA-7 class: nothing to classify (the paper uses action types only on
            # MTL-AQA and FineDiving)
            log.info("the data has %d action type(s): the action-type classifier and J_cls are off",
                     datamodule.num_action_types)
            cfg.model.action_classifier = False
        else:
            cfg.model.num_action_types = datamodule.num_action_types
    resume_from = resume_checkpoint(cfg, run_dir)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    if resume_from:
        refuse_changed_model(resume_from, resolved["model"], cfg.trainer.max_epochs)
    ranks = start_other_ranks(cfg, resolved, run_dir, "t2cr.cli.train")
    try:
        return _fit_and_test(cfg, run_dir, datamodule, resolved, resume_from)
    except SIGTERMException as stop:
        # SaveOnSigterm saved last.ckpt on the way out; a preempted job ends here, also inside a sweep
        signum = getattr(stop, "signum", signal.SIGTERM)
        if is_rank_zero():
            print(f"stopped by {signal.Signals(signum).name}; {run_dir / 'checkpoints' / 'last.ckpt'} holds the run: "
                  f"continue with resume=true hydra.run.dir={run_dir}")
            sys.stdout.flush()
    finally:
        if ranks is not None:
            ranks.finish()
    # reached only after a stop signal: a preempted job ends cleanly; Ctrl-C ends a shell loop of runs too
    # (the other ranks end cleanly, so rank 0's watch of them does not cut its save short)
    raise SystemExit(128 + signal.SIGINT if signum == signal.SIGINT and is_rank_zero() else 0)


def run_settings(resolved: dict[str, Any]) -> dict[str, Any]:
    """What the checkpoint keeps so that t2cr-eval / -score / -explain score as this run did."""
    return {"data": resolved["data"], "seed": resolved["seed"],
            "matmul_precision": resolved["trainer"]["matmul_precision"], "precision": resolved["trainer"]["precision"]}


def _fit_and_test(cfg: DictConfig, run_dir: Path, datamodule, resolved: dict[str, Any],
                  resume_from: str | None) -> dict[str, Any]:
    logger = build_logger(cfg, run_dir, job_type="train", **wandb_identity(cfg.name, run_dir))
    callbacks, last_checkpoint, best_checkpoint = build_callbacks(cfg, run_dir)
    # what t2cr-score needs, in the checkpoints Lightning writes (K exemplars per pool, seeded)
    callbacks.append(ExemplarBank(datamodule.config.voting_exemplars, cfg.seed))
    trainer = build_trainer(cfg, logger, callbacks, run_dir)
    module = T2CRModule(resolved["model"], resolved["loss"], resolved["optim"], resolved.get("runtime"),
                        run=run_settings(resolved))
    module.group_names = list(datamodule.groups)

    trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from)
    # read now: testing the best checkpoint below restores the callbacks' state as of that epoch
    curve = list(next(c for c in callbacks if isinstance(c, ValidationCurve)).points)
    trainer.test(module, datamodule=datamodule, verbose=False)
    results: dict[str, Any] = dict(module.metrics.get("test", {}))
    last_rows = module.predictions.get("test", [])
    last_path = Path(last_checkpoint.last_model_path) if last_checkpoint.last_model_path else None

    best_rows: list[dict[str, float]] = []
    best_path = Path(best_checkpoint.best_model_path) if best_checkpoint.best_model_path else None
    if cfg.test_best and best_path and best_path.is_file():
        trainer.test(module, datamodule=datamodule, ckpt_path=str(best_path), verbose=False)
        results.update({f"best/{k}": v for k, v in module.metrics.get("test", {}).items()})
        best_rows = module.predictions.get("test", [])

    if not trainer.is_global_zero:
        return results
    results.update(reference_protocol(curve, results, datamodule.has_split("val")))
    results.update({
        "best_epoch": int(module.best.get("epoch", -1)),
        "best_selected_on": "val" if datamodule.has_split("val") else "test",
        "best/val/spearman": module.best.get("val/spearman"),
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        # model-space and plain Spearman of every validated epoch: whether the model learns, not only its best
        "curve": curve,
        "last_checkpoint": str(last_path) if last_path else None,
        "best_checkpoint": str(best_path) if best_path else None,
        # found / dropped / kept per official split: t2cr-tables labels a run that dropped samples
        "samples_per_split": datamodule.split_counts(),
    })
    write_text(run_dir / "config.yaml", OmegaConf.to_yaml(resolved), elsewhere=RUN_DIR_ELSEWHERE)
    write_json(run_dir / "metrics.json", results, elsewhere=RUN_DIR_ELSEWHERE)
    keys = [s.key_str for s in datamodule.samples("test")]
    write_predictions_csv(run_dir / "predictions_test.csv", last_rows, keys)
    plot = scatter_plot([r["true"] for r in last_rows], [r["pred"] for r in last_rows],
                        run_dir / "scatter_test.png",
                        f"{cfg.name}: test Spearman {results.get('test/spearman', float('nan')):.4f}, "
                        f"R-l2 {results.get('test/rl2', float('nan')):.3f}")
    if best_rows:
        write_predictions_csv(run_dir / "predictions_test_best.csv", best_rows, keys)
    _log_to_wandb(logger, plot, last_rows, keys, results)
    _print_summary(run_dir, results)
    return results


def _log_to_wandb(logger: Any, plot: Path, rows: list[dict[str, float]], keys: list[str],
                  results: dict[str, Any]) -> None:
    from pytorch_lightning.loggers import WandbLogger

    if not isinstance(logger, WandbLogger):
        return
    import wandb

    logger.experiment.log({"test/scatter": wandb.Image(str(plot))})
    logger.log_table("test/predictions", columns=["key", "true", "pred", "direct", "contrastive"],
                     data=[[keys[r["index"]], r["true"], r["pred"], r["direct"], r["contrastive"]] for r in rows])
    for name, value in results.items():
        if isinstance(value, (int, float)):
            logger.experiment.summary[f"final/{name}"] = value
    wandb.finish()  # sweep jobs in one process each get their own run


def reference_protocol(curve: list[dict[str, float]], results: dict[str, Any], has_val: bool) -> dict[str, Any]:
    """The figures the official T2CR / CoRe code reports: the best test Spearman and the minimum test R-l2 over
    every evaluated epoch, each chosen on its own (the test split is what they evaluate each epoch). Only where
    the epochs were evaluated on the test split (no validation split); else None, with the reason."""
    if has_val:
        return {"reference/test/spearman": None, "reference/test/rl2": None,
                "reference_protocol": "not recorded: the epochs were evaluated on the validation split"}
    points = [p for p in curve if "val/spearman" in p]
    spearman = [p["val/spearman"] for p in points] + [results.get("test/spearman")]
    rl2 = [p["val/rl2"] for p in points if "val/rl2" in p] + [results.get("test/rl2")]
    spearman = [v for v in spearman if v is not None and math.isfinite(v)]
    rl2 = [v for v in rl2 if v is not None and math.isfinite(v)]
    return {"reference/test/spearman": max(spearman) if spearman else None,
            "reference/test/rl2": min(rl2) if rl2 else None,
            "reference_protocol": f"best test Spearman and minimum test R-l2 over {len(points)} evaluated epochs "
                                  "and the last, each on its own (as the official code reports)"}


def _print_summary(run_dir: Path, results: dict[str, Any]) -> None:
    """Scores, where the outputs are, and how long the run took.

    The times come from what the run left behind, so that no timer has to be threaded through the run:
    the run starts when Hydra writes `.hydra/` (or, on first use, when the synthetic dataset is complete),
    training with its validations ends when the last epoch's `checkpoints/last.ckpt` is written, and
    testing is what follows. The total is the process's own wall time where the system says it (Linux:
    Python's start and imports included), else the time since `.hydra/`.
    """
    import os
    import time

    nan = float("nan")
    line = (f"test Spearman {results.get('test/spearman', nan):.4f}  "
            f"R-l2(x100) {results.get('test/rl2', nan):.4f}  L2 {results.get('test/l2', nan):.4f}")
    if "test/spearman_model_space" in results:
        line += f"  model space (score / DD) {results['test/spearman_model_space']:.4f}"
    if "best/test/spearman" in results:
        line += (f"  |  best epoch {results['best_epoch']} (on {results['best_selected_on']}): "
                 f"test Spearman {results['best/test/spearman']:.4f}")
        if "best/test/spearman_model_space" in results:
            line += f", model space {results['best/test/spearman_model_space']:.4f}"
    print(line)
    curve = results.get("curve") or []
    key = "val/spearman_model_space" if any("val/spearman_model_space" in p for p in curve) else "val/spearman"
    if curve:
        print(f"learning curve ({key} by epoch): "
              + "  ".join(f"{p['epoch']}: {p[key]:.3f}" for p in curve if key in p))

    def mtime(path: Path) -> float | None:
        try:
            return path.stat().st_mtime
        except OSError:
            return None

    now = time.time()
    started = mtime(run_dir / ".hydra")
    try:  # the embedded dataset generated by this run: training starts once it is complete
        synthetic_root = OmegaConf.load(run_dir / "config.yaml").data.get("synthetic")
        generated = mtime(Path(synthetic_root.root) / "manifest.json") if synthetic_root else None
    except Exception:  # noqa: BLE001 - a summary never fails a finished run
        generated = None
    if started is not None and generated is not None and generated > started:
        started = generated
    total = None
    try:  # Linux: seconds since this process started, from the kernel's clock ticks
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        total = float(Path("/proc/uptime").read_text().split()[0]) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        total = now - started if started is not None else None
    trained = mtime(run_dir / "checkpoints" / "last.ckpt")
    epochs = int(results.get("epochs") or 0)
    times = []
    if started is not None and trained is not None and epochs > 0 and trained >= started:
        fit = trained - started
        times.append(f"training {fit:.0f} s for {epochs} epochs ({fit / epochs:.1f} s per epoch, validations "
                     f"included), testing {now - trained:.0f} s")
    if total is not None:
        times.append(f"total {total:.0f} s ({total / 60:.1f} min)")
    try:
        import resource

        cpu = sum(resource.getrusage(who).ru_utime + resource.getrusage(who).ru_stime
                  for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
        times.append(f"CPU {cpu:.0f} s")
    except (ImportError, OSError, ValueError):
        pass
    if times:
        print("time: " + ", ".join(times))
    print(f"outputs: {run_dir}  (metrics.json, config.yaml, checkpoints/, scatter_test.png, predictions_test.csv)")
    sys.stdout.flush()


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
def hydra_main(cfg: DictConfig) -> float | None:
    with user_errors("train"):
        set_matmul_precision(cfg.trainer.matmul_precision)
        results = train(cfg)
    return results.get("test/spearman")


main = command("train", hydra_main)

if __name__ == "__main__":
    main()
