"""Training through the real path (`t2cr-train`: Lightning, the data module, the loaders, the callbacks) per
precision / layout / compile variant, and two deterministic runs compared bit for bit, measured in one run.

Each variant is one `t2cr-train` process on the embedded synthetic data, one epoch of `--steps` training
steps, with `step_times.StepTimes` recording each step's wall time and the peak memory. Reported per variant:
the first step (for `compile`, the compilation), the median of the later steps, pairs per second, peak
memory, and each variant's speed-up over fp32 (ratios from this one run).

  fp32                trainer.precision=32-true, trainer.matmul_precision=highest (exact fp32 matmuls and convs)
  bf16                trainer.precision=bf16-mixed
  bf16_channels_last  bf16-mixed, runtime.channels_last=true (the default layout)
  compile             bf16-mixed, channels-last, runtime.compile=true (torch.compile of the I3D)

--deterministic-twice trains the same run twice with trainer.deterministic=true and compares every tensor of
the two last.ckpt files (weights, buffers, optimizer state): {"identical": ..., "max_abs_diff": ...}.
--ddp-equivalence trains on 1 device and on 2 (trainer=ddp, the same global batch) and reports the largest
relative difference of the logged per-step losses.

Presets: `paper` is the default synthetic data at the paper's clip size (103 frames, 16-frame clips, M = 10,
N = 8, rendered at --size + 16 and cropped to --size, 112 by default); `smoke` the smoke experiment's small
sizes (for a CPU or a quick look). The I3D is randomly initialised (timing does not depend on the weights).

  GPU:  python experiments/bench/bench_lightning.py --preset paper --accelerator gpu --json
  CPU:  python experiments/bench/bench_lightning.py --preset smoke --accelerator cpu --steps 3 --variants fp32,bf16
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
VARIANTS: dict[str, list[str]] = {
    "fp32": ["trainer.precision=32-true", "trainer.matmul_precision=highest", "runtime.channels_last=false"],
    "bf16": ["trainer.precision=bf16-mixed", "runtime.channels_last=false"],
    "bf16_channels_last": ["trainer.precision=bf16-mixed", "runtime.channels_last=true"],
    "compile": ["trainer.precision=bf16-mixed", "runtime.channels_last=true", "runtime.compile=true"],
}


def preset_overrides(args: argparse.Namespace) -> list[str]:
    if args.preset == "smoke":
        sizes = ["experiment=smoke"]
    else:
        rendered = args.size + 16
        sizes = [f"data.synthetic.height={rendered}", f"data.synthetic.width={rendered}",
                 f"data.transform.resize=[{rendered},{rendered}]", f"data.transform.crop=[{args.size},{args.size}]"]
    root = Path(args.work) / f"synthetic_{args.preset}_{args.size}"
    return [*sizes, "logger=csv", "callbacks.progress=none", f"data.synthetic.root={root}",
            f"data.annotations={root}/annotations", f"data.root={root}/frames",
            f"data.synthetic.num_train={max(8, 2 * args.steps * args.batch)}", "data.synthetic.num_test=4",
            "data.synthetic.num_events=2", "data.voting_exemplars=2", f"data.batch_size={args.batch}",
            f"data.eval_batch_size={args.batch}", f"data.num_workers={args.workers}",
            f"trainer.accelerator={args.accelerator}", "trainer.devices=1", "trainer.max_epochs=1",
            f"trainer.limit_train_batches={args.steps}", "trainer.limit_val_batches=0", "test_best=false",
            "trainer.log_every_n_steps=1", *([f"data.cache_dir={Path(args.work) / 'frame_cache'}"]
                                             if args.accelerator == "gpu" else [])]


def train(name: str, overrides: list[str], args: argparse.Namespace, timeout: float) -> dict[str, Any]:
    """One `t2cr-train` process; its step times, or the last line of its error."""
    run_dir = Path(args.work) / name
    times = run_dir / "step_times.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
           "PYTHONWARNINGS": "ignore", "WANDB_MODE": "disabled"}
    command = [sys.executable, "-m", "t2cr.cli.train", *preset_overrides(args), *overrides,
               f"hydra.run.dir={run_dir}", "+callbacks.extra.step_times._target_=step_times.StepTimes",
               f"+callbacks.extra.step_times.path={times}"]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"failed": f"timed out after {timeout:.0f} s", "run_dir": str(run_dir)}
    if done.returncode != 0 or not times.is_file():
        lines = [line for line in done.stderr.splitlines() if line.strip()] or ["no output"]
        return {"failed": lines[-1][-400:], "exit": done.returncode, "run_dir": str(run_dir)}
    recorded = json.loads(times.read_text())
    return {"run_dir": str(run_dir), **recorded}


def timing_row(result: dict[str, Any], batch: int) -> dict[str, Any]:
    if "failed" in result:
        return {"failed": result["failed"]}
    steps = result["step_s"]
    steady = statistics.median(steps[1:]) if len(steps) > 1 else steps[0]
    return {"first_step_s": round(steps[0], 4), "median_step_s": round(steady, 4),
            "pairs_per_s": round(batch / steady, 3), "peak_gib": round(result["peak_bytes"] / 2**30, 3),
            "steps": len(steps), "device": result["device"]}


def checkpoint_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint by its key path (model weights and buffers, optimizer state)."""
    flat: dict[str, torch.Tensor] = {}

    def walk(value: Any, key: str) -> None:
        if isinstance(value, torch.Tensor):
            flat[key] = value
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{key}/{k}")
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk(v, f"{key}/{i}")

    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    walk({k: checkpoint[k] for k in ("state_dict", "optimizer_states") if k in checkpoint}, "")
    return flat


def compare_checkpoints(a: Path, b: Path) -> dict[str, Any]:
    first, second = checkpoint_tensors(a), checkpoint_tensors(b)
    if first.keys() != second.keys():
        return {"identical": False, "differs": "the checkpoints hold different tensors"}
    different = [k for k in first if not torch.equal(first[k], second[k])]
    worst = max((float((first[k].double() - second[k].double()).abs().max()) for k in different), default=0.0)
    return {"identical": not different, "tensors": len(first), "different_tensors": len(different),
            "max_abs_diff": worst, "first_different": different[:3]}


def logged_losses(run_dir: Path) -> list[float]:
    """train/loss_total_step of each step, from the csv logger's metrics.csv under the run."""
    rows = []
    for path in sorted(run_dir.rglob("metrics.csv")):
        with path.open() as handle:
            rows += [float(r["train/loss_total_step"]) for r in csv.DictReader(handle) if r.get("train/loss_total_step")]
    return rows


def deterministic_twice(args: argparse.Namespace) -> dict[str, Any]:
    runs = [train(f"deterministic_{i}", [*VARIANTS["fp32"], "trainer.deterministic=true"], args, args.timeout)
            for i in (1, 2)]
    failed = [r["failed"] for r in runs if "failed" in r]
    if failed:
        return {"failed": failed[0]}
    paths = [Path(r["run_dir"]) / "checkpoints" / "last.ckpt" for r in runs]
    return compare_checkpoints(*paths)


def ddp_equivalence(args: argparse.Namespace) -> dict[str, Any]:
    one = train("ddp_reference_1", VARIANTS["fp32"], args, args.timeout)
    strategy = "trainer=ddp" if args.accelerator == "gpu" else "trainer=ddp_cpu"
    # the trainer group's own accelerator, then the preset's (same) one: both before the 2 devices
    two = train("ddp_2", [*VARIANTS["fp32"], strategy, "trainer.devices=2"], args, args.timeout)
    for result in (one, two):
        if "failed" in result:
            return {"failed": result["failed"]}
    a, b = logged_losses(Path(one["run_dir"])), logged_losses(Path(two["run_dir"]))
    if not a or len(a) != len(b):
        return {"failed": f"logged steps differ: {len(a)} on 1 device, {len(b)} on 2"}
    worst = max(abs(x - y) / max(abs(x), 1e-12) for x, y in zip(a, b))
    return {"steps": len(a), "max_relative_loss_difference": worst}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=("paper", "smoke"), default="paper")
    parser.add_argument("--size", type=int, default=112, help="crop size of the paper preset")
    parser.add_argument("--batch", type=int, default=2, help="pairs per step (global)")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--accelerator", choices=("gpu", "cpu"), default="gpu" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--deterministic-twice", action="store_true")
    parser.add_argument("--ddp-equivalence", action="store_true")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per t2cr-train process")
    parser.add_argument("--work", default="/tmp/t2cr_bench_lightning")
    parser.add_argument("--json", action="store_true", help="print one JSON line only")
    args = parser.parse_args(argv)
    unknown = set(args.variants.split(",")) - set(VARIANTS) - {""}
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    report: dict[str, Any] = {"preset": args.preset, "size": args.size, "batch": args.batch,
                              "gpu": torch.cuda.get_device_name(0) if args.accelerator == "gpu" else None,
                              "variants": {}}
    for name in filter(None, args.variants.split(",")):
        report["variants"][name] = timing_row(train(name, VARIANTS[name], args, args.timeout), args.batch)
        add_speedups(report["variants"])
        partial(report, args)
    if args.deterministic_twice:
        report["deterministic_twice"] = deterministic_twice(args)
        partial(report, args)
    if args.ddp_equivalence:
        report["ddp_equivalence"] = ddp_equivalence(args)
    print(json.dumps(report) if args.json else json.dumps(report, indent=2))
    return 0


def add_speedups(rows: dict[str, dict[str, Any]]) -> None:
    fp32 = rows.get("fp32", {}).get("median_step_s")
    for row in rows.values():
        if fp32 and "median_step_s" in row:
            row["speedup_over_fp32"] = round(fp32 / row["median_step_s"], 3)


def partial(report: dict[str, Any], args: argparse.Namespace) -> None:
    """With --json, the report so far as a line of its own: a caller that stops this script at a deadline
    (gpu_check.sh) still has every finished measurement in the last line."""
    if args.json:
        print(json.dumps(report), flush=True)


if __name__ == "__main__":
    sys.exit(main())
