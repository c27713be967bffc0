"""Run the entry points in subprocesses on a tiny synthetic dataset (tiny backbone, few frames)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def tiny_overrides(data_root: Path) -> list[str]:
    return [
        "experiment=smoke", "logger=csv", "callbacks.progress=none",
        f"data.synthetic.root={data_root}", f"data.annotations={data_root}/annotations",
        f"data.root={data_root}/frames",
        "data.synthetic.num_train=12", "data.synthetic.num_test=7", "data.synthetic.num_events=2",
        "data.synthetic.height=32", "data.synthetic.width=32", "data.synthetic.frames_per_dive=16",
        "data.num_frames=16", "data.transform.resize=[32,32]", "data.transform.crop=[28,28]",
        "data.num_workers=0", "data.voting_exemplars=3", "data.batch_size=4", "data.eval_batch_size=2",
        "model.backbone.name=tiny", "data.clip_length=8", "data.num_clips=3",
        "data.base_starts=[0,4,8]", "model.clips.aux_strategy=2-clip-avg1",
        "trainer.max_epochs=2", "trainer.deterministic=true", "trainer.accelerator=cpu",
    ]


def run_cli(entry: str, overrides: list[str], cwd: Path, timeout: float = 900,
            check: bool = True, path: Path | None = None) -> subprocess.CompletedProcess:
    """`path`: a folder put ahead on PYTHONPATH (e.g. tests/, for a test's own callbacks in callbacks.extra)."""
    env = {k: v for k, v in os.environ.items() if k not in ("T2CR_RUN_STAMP", "LOCAL_RANK", "WORLD_SIZE")}
    env["PYTHONWARNINGS"] = "ignore"
    env["WANDB_SILENT"] = "true"
    if path is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(path), env.get("PYTHONPATH")]))
    result = subprocess.run([sys.executable, "-m", f"t2cr.cli.{entry}", *overrides], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"t2cr-{entry} failed ({result.returncode}):\n{result.stdout[-4000:]}\n"
                             f"{result.stderr[-6000:]}")
    return result


def read_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def trained_steps(run_dir: Path) -> list[int]:
    """The global steps the last process of a run trained, from its CSV log (logger=csv with
    trainer.log_every_n_steps=1: a row per training step; a resumed process starts the file anew)."""
    with open(run_dir / "csv" / "metrics.csv", newline="") as file:
        return [int(row["step"]) for row in csv.DictReader(file) if row.get("train/loss_total_step")]


def assert_resumed_from(run_dir: Path, checkpoint_step: int) -> None:
    """The resumed process went on from `checkpoint_step`: it trained exactly the steps after it (a
    resume that started again from scratch would train them all) and wrote over `last.ckpt` (not a
    `last-v1.ckpt` beside a stale one)."""
    final_step = read_metrics(run_dir)["global_step"]
    steps = trained_steps(run_dir)
    assert len(steps) == final_step - checkpoint_step > 0, (checkpoint_step, final_step, steps)
    # consecutive from the checkpoint's step; after a checkpoint saved before a batch (SIGTERM) Lightning's
    # logger step runs one ahead (its restart assumes a save after a batch, and adds one)
    assert steps == list(range(steps[0], steps[0] + len(steps))), steps
    assert steps[0] in (checkpoint_step, checkpoint_step + 1), (checkpoint_step, steps)
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("last*")) == ["last.ckpt"]
