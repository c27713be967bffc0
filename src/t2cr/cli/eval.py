"""t2cr-eval ckpt_path=...: K-exemplar evaluation of a checkpoint -> metrics.json.

    t2cr-eval ckpt_path=outputs/smoke/<stamp>/checkpoints/last.ckpt
    t2cr-eval ckpt_path=outputs/smoke/<stamp>/checkpoints/last.ckpt trainer=ddp_cpu   # same numbers, 2 processes
    t2cr-eval ckpt_path=outputs/smoke/<stamp>/checkpoints/last.ckpt data.root=/elsewhere/frames data.voting_exemplars=3

The data settings (dataset, DD, exemplar rule, K, seed, clip plan, transform) and the matmul precision
are the checkpoint's own (t2cr.cli.run_settings): data.root / data.annotations / data.cache_dir and
loader keys may be overridden, K and the seed explicitly (reported as deviations in metrics.json);
an override that changes what the scores mean is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from t2cr.checkpoints import load_checkpoint
from t2cr.cli.common import command, set_matmul_precision, user_errors
from t2cr.cli.run_settings import apply_run_settings
from t2cr.devices import check_global_batches
from t2cr.io import write_json
from t2cr.module import T2CRModule
from t2cr.plots import scatter_plot
from t2cr.resources import CONF_DIR
from t2cr.run import (
    build_datamodule,
    build_trainer,
    start_other_ranks,
    write_predictions_csv,
)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    ckpt = Path(cfg.ckpt_path)
    runtime = OmegaConf.to_container(cfg.runtime, resolve=True) if "runtime" in cfg else None
    # evaluation computes its exemplars' features from the data: no bank needed
    module = load_checkpoint(ckpt, "ckpt_path", need_bank=False, runtime=runtime)
    deviations = apply_run_settings(cfg, module.run_settings, "eval", str(ckpt))
    set_matmul_precision(cfg.trainer.matmul_precision)
    check_global_batches(cfg.data, cfg.trainer, ("eval_batch_size",))  # before any rank starts
    datamodule = build_datamodule(cfg)
    module.group_names = list(datamodule.groups)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    ranks = start_other_ranks(cfg, resolved, run_dir, "t2cr.cli.eval")
    try:
        return _test(cfg, run_dir, module, datamodule, resolved, ckpt, deviations)
    finally:
        if ranks is not None:
            ranks.finish()


def _test(cfg: DictConfig, run_dir: Path, module: T2CRModule, datamodule, resolved: dict[str, Any],
          ckpt: Path, deviations: dict[str, Any] | None) -> dict[str, Any]:
    trainer = build_trainer(cfg, logger=False, callbacks=[], run_dir=run_dir)
    trainer.test(module, datamodule=datamodule, verbose=False)
    results: dict[str, Any] = {**module.metrics.get("test", {}), "checkpoint": str(ckpt),
                               "world_size": trainer.world_size,
                               # where the data settings came from, and what the command line changed in them
                               "data_settings": "checkpoint" if deviations is not None else "command line",
                               "deviations": deviations or {}}
    if trainer.is_global_zero:
        rows = module.predictions.get("test", [])
        keys = [s.key_str for s in datamodule.samples("test")]
        OmegaConf.save(resolved, run_dir / "config.yaml")
        write_json(run_dir / "metrics.json", results)
        write_predictions_csv(run_dir / "predictions_test.csv", rows, keys)
        scatter_plot([r["true"] for r in rows], [r["pred"] for r in rows], run_dir / "scatter_test.png",
                     f"{ckpt.name}: test Spearman {results.get('test/spearman', float('nan')):.4f}")
        print(f"test Spearman {results.get('test/spearman', float('nan')):.4f}  "
              f"R-l2(x100) {results.get('test/rl2', float('nan')):.4f}  L2 {results.get('test/l2', float('nan')):.4f}")
        print(f"outputs: {run_dir}")
    return results


@hydra.main(config_path=str(CONF_DIR), config_name="eval", version_base="1.3")
def hydra_main(cfg: DictConfig) -> None:
    with user_errors("eval"):
        evaluate(cfg)


main = command("eval", hydra_main)

if __name__ == "__main__":
    main()
