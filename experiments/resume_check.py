"""Kill a run in each epoch, resume it, and compare it with the uninterrupted run (issue 32's check).

    python experiments/resume_check.py                       # the issue's 2-process run, kills in epochs 0-3
    python experiments/resume_check.py --processes 1 --args "trainer.limit_train_batches=8 trainer.max_epochs=2"

Runs the uninterrupted run once, then for every kill (SIGTERM or SIGKILL to the run's whole process group,
from inside the run at a given batch of a given epoch: tests/kill_points.py) the interrupted run and its
`resume=true`, and prints one markdown row per kill: where the checkpoint stood, the test Spearman and R-l2
of both runs, and the largest difference of any weight, buffer or optimizer state (0 = bit for bit).
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
# the issue's command: 2 gloo processes, the smoke experiment (cosine schedule), validation every 2 epochs
ISSUE_ARGS = ("experiment=smoke model.backbone.name=tiny data.batch_size=4 data.eval_batch_size=4 "
              "trainer.max_epochs=4 trainer.check_val_every_n_epoch=2 trainer.deterministic=true seed=3 "
              "logger=csv callbacks.progress=none test_best=false")


def train(arguments: list[str], cwd: Path) -> int:
    """t2cr-train as the leader of its own process group; what outlives its main process is killed."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "tests"), os.environ.get("PYTHONPATH")]))}
    with open(cwd / "runs.log", "a") as log:
        process = subprocess.Popen([sys.executable, "-m", "t2cr.cli.train", *arguments], cwd=cwd, env=env,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            return process.wait(timeout=1800)
        finally:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def read(run_dir: Path) -> tuple[dict, dict]:
    import json

    metrics = json.loads((run_dir / "metrics.json").read_text())
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    return metrics, checkpoint


def tensors(value, prefix: str = "") -> dict[str, torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return {prefix: value}
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (list, tuple)) else ()
    return {k: t for key, item in items for k, t in tensors(item, f"{prefix}/{key}").items()}


def largest_difference(a: dict, b: dict) -> float:
    ta = {**tensors(a["state_dict"], "w"), **tensors(a["optimizer_states"], "o")}
    tb = {**tensors(b["state_dict"], "w"), **tensors(b["optimizer_states"], "o")}
    if ta.keys() != tb.keys():
        return float("inf")
    return max((ta[k].double() - tb[k].double()).abs().max().item() if ta[k].numel() else 0.0 for k in ta)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--args", default="", help="Hydra overrides added to the issue's command")
    parser.add_argument("--kills", default="0:3:SIGTERM,1:3:SIGTERM,2:3:SIGTERM,3:3:SIGTERM,1:3:SIGKILL,"
                        "2:3:SIGKILL,3:3:SIGKILL", help="epoch:batch:signal, each sent to the whole process group "
                        "after that training batch")
    parser.add_argument("--workdir", type=Path, help="default: a new temporary folder")
    args = parser.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="t2cr-resume-check-"))
    work.mkdir(parents=True, exist_ok=True)
    common = [*shlex.split(ISSUE_ARGS), *(["trainer=ddp_cpu"] if args.processes > 1 else []),
              *shlex.split(args.args), f"data.synthetic.root={work / 'data'}"]
    print(f"t2cr-train {' '.join(common)}  (work folder {work}, {time.strftime('%Y-%m-%d %H:%M')})", flush=True)
    straight = work / "uninterrupted"
    if train([*common, f"hydra.run.dir={straight}"], work) != 0:
        raise SystemExit(f"the uninterrupted run failed: see {work / 'runs.log'}")
    metrics, reference = read(straight)
    print(f"uninterrupted: test Spearman {metrics['test/spearman']:.6f}, R-l2 {metrics['test/rl2']:.4f}, "
          f"step {metrics['global_step']}\n")
    print("| kill (group) | checkpoint at step | test Spearman | R-l2 | largest weight / optimizer difference |")
    print("|---|---|---|---|---|")
    failures = 0
    for kill in args.kills.split(","):
        epoch, batch, name = kill.split(":")
        run_dir = work / f"kill_e{epoch}_b{batch}_{name}"
        spec = {"_target_": "kill_points.KillAt", "at": "train_batch", "epoch": epoch, "batch": batch,
                "signal_name": name, "target": "group"}
        code = train([*common, f"hydra.run.dir={run_dir}", *(f"+callbacks.extra.kill.{k}={v}" for k, v in spec.items())],
                     work)
        last = run_dir / "checkpoints" / "last.ckpt"
        if not last.is_file():
            failures += 1
            print(f"| {name} after batch {batch} of epoch {epoch} | none (the run exited {code}) | | | |", flush=True)
            continue
        saved = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
        code = train([*common, f"hydra.run.dir={run_dir}", "resume=true"], work)
        if code != 0:
            failures += 1
            print(f"| {name} after batch {batch} of epoch {epoch} | {saved} | resume failed ({code}) | | |", flush=True)
            continue
        resumed_metrics, resumed = read(run_dir)
        difference = largest_difference(resumed, reference)
        failures += difference != 0.0 or resumed_metrics["test/spearman"] != metrics["test/spearman"]
        print(f"| {name} after batch {batch} of epoch {epoch} | {saved} | {resumed_metrics['test/spearman']:.6f} | "
              f"{resumed_metrics['test/rl2']:.4f} | {difference:.3g} |", flush=True)
    print(f"\n{failures} of {len(args.kills.split(','))} resumed runs differ from the uninterrupted one")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
