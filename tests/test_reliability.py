"""A broken step, a failed write, a killed run or a failing rank loses nothing and hangs nothing."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from framework_helpers import read_metrics, run_cli, tiny_overrides

from t2cr.data.datamodule import EpochSampler
from t2cr.reliability import AtomicCheckpointIO, NonFiniteLossError, check_finite


@pytest.fixture(scope="module")
def data_root(tiny_synthetic) -> Path:
    return tiny_synthetic


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------------------- units
def test_non_finite_loss_names_step_and_terms():
    terms = {"reg": torch.tensor(1.5), "aln": torch.tensor(float("nan")), "total": torch.tensor(float("nan"))}
    with pytest.raises(NonFiniteLossError, match=r"global step 17: \['aln', 'total'\].*reg=1.5"):
        check_finite(terms, 17)
    check_finite({"reg": torch.tensor(1.0), "total": torch.tensor(1.0)}, 3)  # finite: silent


def test_failed_checkpoint_write_leaves_the_previous_one(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1, "weights": torch.arange(5.0)}, path)
    before = _digest(path)

    def disk_full(obj, target, *args, **kwargs):
        Path(target).write_bytes(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        io.save_checkpoint({"step": 2, "weights": torch.zeros(5)}, path)
    monkeypatch.undo()
    assert _digest(path) == before and torch.load(path, weights_only=True)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # no temporary file left


def test_sampler_skips_the_batches_done_before_a_resume():
    sampler = EpochSampler(10, seed=0, shuffle=True, batch_size=2)
    sampler.set_epoch(3)
    full = list(sampler)
    sampler.skip_batches(2)
    assert list(sampler) == full[4:] and len(sampler) == 10  # Lightning counts the skipped ones as done
    assert list(sampler) == full  # only the first pass after a resume is shortened


# ------------------------------------------------------------------------------- end to end (slow)
@pytest.mark.slow
def test_non_finite_loss_stops_and_keeps_last_checkpoint(data_root, tmp_path):
    import pickle
    import shutil

    data = Path(shutil.copytree(data_root, tmp_path / "data"))
    run_dir = tmp_path / "nan"
    overrides = [*tiny_overrides(data), f"hydra.run.dir={run_dir}"]
    run_cli("train", [*overrides, "trainer.max_epochs=1"], cwd=tmp_path)
    last = run_dir / "checkpoints" / "last.ckpt"
    before = _digest(last)
    # one training label turns infinite (a broken annotation): the resumed epoch meets it
    path = data / "annotations" / "final_annotations_dict_with_dive_number.pkl"
    labels = pickle.loads(path.read_bytes())
    key = pickle.loads((data / "annotations" / "train_split_0.pkl").read_bytes())[0]
    labels[tuple(key)]["final_score"] = float("inf")
    path.write_bytes(pickle.dumps(labels))
    result = run_cli("train", [*overrides, "trainer.max_epochs=3", "resume=true"], cwd=tmp_path, check=False)
    assert result.returncode != 0
    assert "NonFiniteLossError" in result.stderr and "non-finite loss at global step" in result.stderr
    assert _digest(last) == before  # the broken state was never written over the last good one


def _uninterrupted(data_root: Path, tmp_path: Path, epochs: int, extra: tuple[str, ...] = ()) -> Path:
    run_dir = tmp_path / "straight"
    run_cli("train", [*tiny_overrides(data_root), "data.batch_size=2", f"trainer.max_epochs={epochs}",
                      f"hydra.run.dir={run_dir}", *extra], cwd=tmp_path)
    return run_dir


def _interrupted(data_root: Path, tmp_path: Path, epochs: int, sig: int,
                 extra: tuple[str, ...] = ()) -> tuple[Path, int]:
    """Start a run, send `sig` once the first epoch's checkpoint exists, then resume it to the end."""
    run_dir = tmp_path / f"signal{sig}"
    overrides = [*tiny_overrides(data_root), "data.batch_size=2", f"trainer.max_epochs={epochs}",
                 f"hydra.run.dir={run_dir}", *extra]
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "WORLD_SIZE")}
    process = subprocess.Popen([sys.executable, "-m", "t2cr.cli.train", *overrides], cwd=tmp_path, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 240
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.1)  # into a later epoch
    process.send_signal(sig)
    process.communicate(timeout=120)
    assert not (run_dir / "metrics.json").exists(), "the run finished before the signal; make it longer"
    code = process.returncode
    saved = torch.load(last, weights_only=False)
    (run_dir / "interrupted_at.json").write_text(json.dumps(
        {"global_step": saved["global_step"],
         "in_epoch": saved["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]["completed"]}))
    resumed = run_cli("train", [*overrides, "resume=true"], cwd=tmp_path)
    # a "resume" that silently started again from scratch would give the same weights (training is
    # deterministic): the resumed process must have restored the interrupted state
    assert "Restoring states from the checkpoint path" in resumed.stderr + resumed.stdout
    return run_dir, code


def _interruption(run_dir: Path) -> dict:
    return json.loads((run_dir / "interrupted_at.json").read_text())


def _same_result(a: Path, b: Path) -> None:
    ma, mb = read_metrics(a), read_metrics(b)
    assert ma["global_step"] == mb["global_step"]
    for key in ("test/spearman", "test/rl2", "test/l2"):
        assert ma[key] == pytest.approx(mb[key], rel=1e-6), key
    sa = torch.load(a / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    sb = torch.load(b / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    for name in sa:
        torch.testing.assert_close(sa[name], sb[name], rtol=1e-6, atol=1e-7, msg=name)


@pytest.mark.slow
def test_sigkill_then_resume_matches_the_uninterrupted_run(data_root, tmp_path):
    straight = _uninterrupted(data_root, tmp_path, epochs=20)
    resumed, code = _interrupted(data_root, tmp_path, epochs=20, sig=signal.SIGKILL)
    assert code == -signal.SIGKILL
    _same_result(resumed, straight)


@pytest.mark.slow
def test_sigterm_saves_mid_epoch_and_resumes_exactly(data_root, tmp_path):
    straight = _uninterrupted(data_root, tmp_path, epochs=20)
    resumed, code = _interrupted(data_root, tmp_path, epochs=20, sig=signal.SIGTERM)
    assert code == 0  # saved and exited cleanly
    _same_result(resumed, straight)


@pytest.mark.slow
def test_ddp_run_killed_or_terminated_resumes_to_the_uninterrupted_result(data_root, tmp_path):
    """2 gloo processes, one pair each: SIGKILL after an epoch, SIGTERM inside an epoch, then resume=true."""
    ddp = ("trainer=ddp_cpu",)
    epochs = 8
    straight = _uninterrupted(data_root, tmp_path, epochs, ddp)
    steps_per_epoch = read_metrics(straight)["global_step"] // epochs
    killed, code = _interrupted(data_root, tmp_path, epochs, signal.SIGKILL, ddp)
    assert code == -signal.SIGKILL
    assert 0 < _interruption(killed)["global_step"] < epochs * steps_per_epoch
    _same_result(killed, straight)
    terminated, code = _interrupted(data_root, tmp_path, epochs, signal.SIGTERM, ddp)
    assert code == 0  # every rank saved and exited cleanly
    where = _interruption(terminated)
    assert 0 < where["in_epoch"] < steps_per_epoch, f"not saved inside an epoch: {where}"
    _same_result(terminated, straight)


# ------------------------------------------------------------------------------------ DDP faults
FAULT_JOB = textwrap.dedent('''
    """Two gloo ranks started by t2cr.launch; rank FAULT_RANK raises at its third training step."""
    import os, sys
    from pathlib import Path
    from datetime import timedelta
    import torch
    import pytorch_lightning as pl
    from pytorch_lightning.strategies import DDPStrategy
    from t2cr.launch import exit_with_parent, launch_local_ranks

    class Faulty(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)
        def training_step(self, batch, index):
            if index == 2 and self.global_rank == int(os.environ["FAULT_RANK"]):
                raise RuntimeError(f"injected failure on rank {self.global_rank}")
            return self.layer(batch[0]).pow(2).mean()
        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    run_dir = Path(os.environ["RUN_DIR"])
    if "LOCAL_RANK" in os.environ:
        exit_with_parent(0.2)
    ranks = launch_local_ranks("fault_job", run_dir, "config", run_dir, devices=2)
    data = torch.utils.data.TensorDataset(torch.randn(400, 4))
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy=DDPStrategy(process_group_backend="gloo",
                         timeout=timedelta(seconds=60)), max_epochs=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(Faulty(), torch.utils.data.DataLoader(data, batch_size=4))
    if ranks is not None:
        ranks.finish()
''')


@pytest.mark.slow
@pytest.mark.parametrize("fault_rank", [0, 1])
def test_a_failing_rank_ends_every_rank(tmp_path, fault_rank):
    (tmp_path / "fault_job.py").write_text(FAULT_JOB)
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT")}
    env.update({"PYTHONPATH": f"{tmp_path}{os.pathsep}{env.get('PYTHONPATH', '')}", "RUN_DIR": str(tmp_path),
                "FAULT_RANK": str(fault_rank), "PYTHONWARNINGS": "ignore"})
    start = time.monotonic()
    process = subprocess.Popen([sys.executable, "-m", "fault_job"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=150)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    elapsed = time.monotonic() - start
    assert process.returncode != 0, output[-3000:]
    assert f"injected failure on rank {fault_rank}" in output
    assert elapsed < 100, f"took {elapsed:.0f} s"
    time.sleep(1.5)  # the other rank's own watchdog polls every 0.2 s
    leftovers = subprocess.run(["pgrep", "-f", "-m", "fault_job"], capture_output=True, text=True, check=False)
    assert leftovers.stdout.strip() == "", "a rank process is still running"
