"""experiments/bench/bench_lightning.py: the checkpoint comparison, the step-time summary, and the script end to end
at a tiny size on the CPU (every mode: variants, two deterministic runs, 1 process against 2)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "experiments" / "bench"
sys.path.insert(0, str(BENCH))

import bench_lightning


def _checkpoint(path: Path, bump: float = 0.0, momentum_bump: float = 0.0) -> Path:
    torch.save({"state_dict": {"w": torch.tensor([1.0, 2.0]) + bump, "bn.running_mean": torch.zeros(3)},
                "optimizer_states": [{"state": {0: {"exp_avg": torch.ones(2) + momentum_bump}}}],
                "epoch": 3}, path)
    return path


def test_compare_checkpoints_finds_a_difference_in_any_weight_or_optimizer_tensor(tmp_path):
    same = bench_lightning.compare_checkpoints(_checkpoint(tmp_path / "a.ckpt"), _checkpoint(tmp_path / "b.ckpt"))
    assert same["identical"] and same["tensors"] == 3 and same["max_abs_diff"] == 0.0
    weight = bench_lightning.compare_checkpoints(_checkpoint(tmp_path / "a.ckpt"),
                                                 _checkpoint(tmp_path / "c.ckpt", bump=2.0 ** -20))
    assert not weight["identical"] and weight["first_different"] == ["/state_dict/w"]
    assert weight["max_abs_diff"] == pytest.approx(2.0 ** -20, rel=1e-3)  # one float32 ulp of 2.0 is 2^-22
    moment = bench_lightning.compare_checkpoints(_checkpoint(tmp_path / "a.ckpt"),
                                                 _checkpoint(tmp_path / "d.ckpt", momentum_bump=0.5))
    assert moment["different_tensors"] == 1 and moment["max_abs_diff"] == 0.5


def test_timing_row_reports_the_first_step_apart_and_the_median_of_the_rest():
    row = bench_lightning.timing_row({"step_s": [9.0, 0.5, 0.7, 0.4, 0.6], "peak_bytes": 3 * 2**30, "device": "cpu"},
                                     batch=2)
    assert row["first_step_s"] == 9.0 and row["median_step_s"] == 0.55  # median of 0.4, 0.5, 0.6, 0.7
    assert row["pairs_per_s"] == pytest.approx(2 / 0.55, abs=1e-3) and row["peak_gib"] == 3.0


@pytest.mark.slow
@pytest.mark.extended
def test_the_benchmark_runs_every_mode_end_to_end_on_the_cpu(tmp_path):
    done = subprocess.run([sys.executable, str(BENCH / "bench_lightning.py"), "--preset", "smoke", "--accelerator", "cpu",
                           "--steps", "2", "--variants", "fp32,bf16", "--deterministic-twice", "--ddp-equivalence",
                           "--workers", "0", "--work", str(tmp_path), "--json"],
                          capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    for name in ("fp32", "bf16"):
        row = report["variants"][name]
        assert row["steps"] == 2 and row["median_step_s"] > 0 and row["peak_gib"] > 0, row
    assert report["variants"]["fp32"]["speedup_over_fp32"] == 1.0
    assert report["deterministic_twice"]["identical"], report["deterministic_twice"]  # CPU runs are deterministic
    ddp = report["ddp_equivalence"]
    assert ddp["steps"] == 2 and ddp["max_relative_loss_difference"] < 1e-3, ddp
