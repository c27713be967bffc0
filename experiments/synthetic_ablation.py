"""Table 5's two ends, and the baseline methods, on the embedded synthetic data under one protocol.

Every run is trained exactly as the default run (`make train` = `t2cr-train experiment=smoke`: the same data,
scale, epochs, optimiser and exemplar voting), one run per seed, each in its own process; only the
overrides of its variant tell them apart:
- `t2cr`: full T2CR (no override);
- `baseline`: Table 5's I3D + MLP (`variant=table5_baseline`: an MLP instead of the target-aware attention,
  feature subtraction instead of the difference transformer, one path, difference regression only);
- `usdl`, `musdl`, `core`: the earlier methods (`model=usdl|musdl|core`, README "Baselines").
The measure is the test Spearman in the model's own score space (score / DD): the synthetic DD alone ranks
the final scores well, so only this ranking says whether a model sees the execution in the motion.

    python experiments/synthetic_ablation.py                      # baseline and t2cr, seeds 0 1 2
    python experiments/synthetic_ablation.py --variants t2cr usdl musdl core --out synthetic_methods
    python experiments/synthetic_ablation.py --seeds 0 1 2 3 4 --out /tmp/ablation
    python experiments/synthetic_ablation.py -- trainer.max_epochs=20   # Hydra overrides for every run

The runs work in --out (the synthetic dataset is generated there once, under data/, and each run writes
<variant>/seed<N>/); a run whose metrics.json is already there is read, not repeated, so an interrupted
ablation continues where it stopped (--again repeats every run). The table gives, per variant, mean and
sample standard deviation over the seeds of the last epoch's and the best epoch's model-space Spearman,
of the last epoch's direct and contrastive parts, and of the plain test Spearman, then every run's own
figures and its wall and CPU time.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

VARIANTS = {  # slug -> (name in the table, the Hydra overrides that select it on top of experiment=smoke)
    "baseline": ("I3D+MLP (Table 5 baseline)", ["variant=table5_baseline"]),
    "t2cr": ("T2CR", []),
    "usdl": ("USDL", ["model=usdl"]),
    "musdl": ("MUSDL", ["model=musdl"]),
    "core": ("CoRe", ["model=core"]),
}
COLUMNS = (("test/spearman_model_space", "model space, last"),
           ("best/test/spearman_model_space", "model space, best epoch"),
           ("part/direct", "its direct part (Eq. 1), last"),
           ("part/contrastive", "its contrastive part (Eq. 11), last"),
           ("test/spearman", "Spearman, last"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=["baseline", "t2cr"])
    parser.add_argument("--out", type=Path, default=Path("synthetic_ablation"),
                        help="working folder: the generated data and every run's outputs")
    parser.add_argument("--again", action="store_true", help="repeat runs whose metrics.json exists")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run (after --)")
    return parser.parse_args(argv)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_one(out: Path, variant: str, seed: int, overrides: list[str], again: bool) -> dict[str, Any]:
    """Train and test one (variant, seed) in a child process; its metrics.json plus wall and CPU seconds."""
    run_dir = (out / variant / f"seed{seed}").resolve()
    metrics_file = run_dir / "metrics.json"
    timing_file = run_dir / "timing.json"
    if metrics_file.is_file() and not again:
        print(f"{variant}, seed {seed}: read from {metrics_file}", flush=True)
    else:
        command = [sys.executable, "-m", "t2cr.cli.train", "experiment=smoke", f"seed={seed}",
                   *VARIANTS[variant][1], "logger=none", "callbacks.progress=none", f"hydra.run.dir={run_dir}",
                   *overrides]
        print(f"{variant}, seed {seed}: {' '.join(command[1:])}", flush=True)
        start, cpu = time.monotonic(), _children_cpu()
        result = subprocess.run(command, check=False, cwd=out, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        timing = {"wall_s": time.monotonic() - start, "cpu_s": _children_cpu() - cpu}
        (run_dir / "train_output.txt").write_text(result.stdout)
        if result.returncode != 0:
            raise SystemExit(f"{variant}, seed {seed} failed (exit {result.returncode}); its output:\n"
                             + "\n".join(result.stdout.splitlines()[-30:]))
        timing_file.write_text(json.dumps(timing))
    metrics = json.loads(metrics_file.read_text())
    if timing_file.is_file():
        metrics.update(json.loads(timing_file.read_text()))
    metrics.update(part_rankings(run_dir / "predictions_test.csv"))
    return metrics


def part_rankings(predictions: Path) -> dict[str, float]:
    """Model-space Spearman of the last epoch's direct and contrastive parts (NaN for a part the model lacks).

    The final score of T2CR averages the two (Eq. 3); the baseline has only the contrastive part."""
    from t2cr.metrics import spearman

    with predictions.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    true = [float(r["true"]) / float(r["scale"]) for r in rows]
    result = {}
    for part in ("direct", "contrastive"):
        values = [float(r[part]) / float(r["scale"]) for r in rows]
        result[f"part/{part}"] = (float("nan") if any(math.isnan(v) for v in values)
                                  else float(spearman(values, true)))
    return result


def mean_std(values: list[float]) -> str:
    if any(math.isnan(v) for v in values):
        return "-"
    if len(values) < 2:
        return f"{values[0]:.3f}" if values else "-"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def table(results: dict[str, dict[int, dict[str, Any]]], seeds: list[int]) -> str:
    lines = [(f"{len(seeds)} seeds ({', '.join(map(str, seeds))}), mean ± sample std; test split, "
              "model space = score / DD"),
             "",
             "| variant | " + " | ".join(label for _, label in COLUMNS) + " |",
             "|---|" + "---|" * len(COLUMNS)]
    for variant, runs in results.items():
        cells = [mean_std([float(runs[s][key]) for s in seeds]) for key, _ in COLUMNS]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    lines += ["", "per run: model space last / best (best epoch), Spearman last, wall s, CPU s"]
    for variant, runs in results.items():
        for seed in seeds:
            m = runs[seed]
            wall = f"{m['wall_s']:.0f}" if "wall_s" in m else "-"
            cpu = f"{m['cpu_s']:.0f}" if "cpu_s" in m else "-"
            lines.append(f"  {variant:<28} seed {seed}: {m['test/spearman_model_space']:.3f} / "
                         f"{m['best/test/spearman_model_space']:.3f} ({m['best_epoch']}), "
                         f"{m['test/spearman']:.3f}, {wall}, {cpu}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[int, dict[str, Any]]] = {}
    for variant in args.variants:
        results[VARIANTS[variant][0]] = {seed: run_one(args.out, variant, seed, args.overrides, args.again)
                                         for seed in args.seeds}
    report = table(results, args.seeds)
    print()
    print(report)
    (args.out / "synthetic_ablation.md").write_text(report + "\n")


if __name__ == "__main__":
    main()
