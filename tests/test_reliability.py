"""A broken step, a failed write, a killed run or a failing rank loses nothing and hangs nothing."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch
from framework_helpers import assert_resumed_from, read_metrics, run_cli, tiny_overrides

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
    run_dir = tmp_path / "nan"
    # constant rates: the resumed run goes on to more epochs, which a cosine schedule refuses (its horizon is fixed)
    overrides = [*tiny_overrides(data_root), "optim.lr_schedule=constant", f"hydra.run.dir={run_dir}"]
    run_cli("train", [*overrides, "trainer.max_epochs=1"], cwd=tmp_path)
    last = run_dir / "checkpoints" / "last.ckpt"
    # weights that have blown up (each x 1e30, still finite): the first resumed step's loss overflows. (A
    # broken label no longer gets this far: the annotation readers refuse non-finite and impossible scores.)
    checkpoint = torch.load(last, weights_only=False)
    step = checkpoint["global_step"]
    for tensor in checkpoint["state_dict"].values():
        if tensor.is_floating_point():
            tensor.mul_(1e30)
    assert all(bool(torch.isfinite(t).all()) for t in checkpoint["state_dict"].values() if t.is_floating_point())
    torch.save(checkpoint, last)
    before = _digest(last)
    result = run_cli("train", [*overrides, "trainer.max_epochs=3", "resume=true"], cwd=tmp_path, check=False)
    assert result.returncode != 0
    assert "NonFiniteLossError" in result.stderr and f"non-finite loss at global step {step}:" in result.stderr
    assert step > 0 and _digest(last) == before  # nothing was written over the last checkpoint
    others = [p.name for p in last.parent.iterdir() if p.name != "last.ckpt" and not p.name.startswith("best-")]
    assert others == []  # no other checkpoint, no temporary file


def _uninterrupted(data_root: Path, tmp_path: Path, epochs: int, extra: tuple[str, ...] = ()) -> Path:
    run_dir = tmp_path / "straight"
    run_cli("train", [*tiny_overrides(data_root), "data.batch_size=2", f"trainer.max_epochs={epochs}",
                      f"hydra.run.dir={run_dir}", *extra], cwd=tmp_path)
    return run_dir


class _Output(threading.Thread):
    """Collects a pipe's bytes as they come (so that the writer never blocks on a full pipe)."""

    def __init__(self, stream) -> None:
        super().__init__(daemon=True)
        self.stream, self.data, self.lock = stream, bytearray(), threading.Lock()

    def run(self) -> None:
        for chunk in iter(lambda: self.stream.read1(65536), b""):
            with self.lock:
                self.data += chunk

    def contains(self, pattern: re.Pattern) -> bool:
        with self.lock:
            return pattern.search(self.data) is not None

    def text(self) -> str:
        with self.lock:
            return self.data.decode(errors="replace")


def _interrupted(data_root: Path, tmp_path: Path, epochs: int, sig: int,
                 extra: tuple[str, ...] = ()) -> tuple[Path, int]:
    """Start a run, send `sig` once its progress bar shows 2 batches of the second epoch done, then resume
    it to the end. The interrupted checkpoint's position is kept in `interrupted_at.json`."""
    run_dir = tmp_path / f"signal{sig}"
    overrides = [*(o for o in tiny_overrides(data_root) if not o.startswith("callbacks.progress=")),
                 "callbacks.progress=tqdm", "data.batch_size=2", f"trainer.max_epochs={epochs}",
                 "trainer.log_every_n_steps=1", f"hydra.run.dir={run_dir}", *extra]
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "WORLD_SIZE")}
    process = subprocess.Popen([sys.executable, "-m", "t2cr.cli.train", *overrides], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = _Output(process.stdout)
    output.start()
    # the bar is drawn after each training batch: "Epoch 1:  33%|###   | 2/6 [...]"
    progress = re.compile(rb"Epoch 1:\s+\d+%\|[^|]*\|\s*2/\d+")
    try:
        deadline = time.monotonic() + 600
        while not output.contains(progress):
            assert process.poll() is None and time.monotonic() < deadline, output.text()[-4000:]
            time.sleep(0.01)
        process.send_signal(sig)
        process.wait(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
        output.join(timeout=10)
    assert not (run_dir / "metrics.json").exists(), "the run finished before the signal"
    code = process.returncode
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    where = {"global_step": saved["global_step"], "epoch": saved["epoch"],
             "in_epoch": saved["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]["completed"]}
    (run_dir / "interrupted_at.json").write_text(json.dumps(where))
    run_cli("train", [*overrides, "resume=true"], cwd=tmp_path)
    # a "resume" that started again from scratch would reach the same weights (training is deterministic):
    # the resumed process must have trained only the steps after the checkpoint
    assert_resumed_from(run_dir, where["global_step"])
    return run_dir, code


def _interruption(run_dir: Path) -> dict:
    return json.loads((run_dir / "interrupted_at.json").read_text())


def _assert_mid_epoch(where: dict, steps_per_epoch: int) -> None:
    """Saved inside an epoch, at the step the signal found: not the last epoch-end checkpoint."""
    assert 0 < where["in_epoch"] < steps_per_epoch, f"not saved inside an epoch: {where}"
    assert where["global_step"] % steps_per_epoch != 0, where
    assert where["global_step"] == where["epoch"] * steps_per_epoch + where["in_epoch"], where


def _same_result(a: Path, b: Path) -> None:
    ma, mb = read_metrics(a), read_metrics(b)
    assert ma["global_step"] == mb["global_step"]
    for key in ("test/spearman", "test/rl2", "test/l2"):
        assert ma[key] == pytest.approx(mb[key], rel=1e-6), key
    # the learning curve of a resumed run includes the epochs validated before the stop
    assert [p["epoch"] for p in ma["curve"]] == [p["epoch"] for p in mb["curve"]], (ma["curve"], mb["curve"])
    for pa, pb in zip(ma["curve"], mb["curve"]):
        assert pa["val/spearman"] == pytest.approx(pb["val/spearman"], rel=1e-6, nan_ok=True), (pa, pb)
    sa = torch.load(a / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    sb = torch.load(b / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert sa.keys() == sb.keys()
    for name in sa:
        torch.testing.assert_close(sa[name], sb[name], rtol=1e-6, atol=1e-7, msg=name)


@pytest.mark.slow
def test_sigkill_then_resume_matches_the_uninterrupted_run(data_root, tmp_path):
    epochs = 4
    straight = _uninterrupted(data_root, tmp_path, epochs)
    steps_per_epoch = read_metrics(straight)["global_step"] // epochs
    resumed, code = _interrupted(data_root, tmp_path, epochs, sig=signal.SIGKILL)
    assert code == -signal.SIGKILL
    where = _interruption(resumed)  # the first epoch's checkpoint: the killed epoch is trained again
    assert where["global_step"] == steps_per_epoch == where["in_epoch"] > 2, where
    _same_result(resumed, straight)


@pytest.mark.slow
def test_sigterm_saves_mid_epoch_and_resumes_exactly(data_root, tmp_path):
    epochs = 4
    every_epoch = ("trainer.check_val_every_n_epoch=1",)  # a validated epoch before the stop, for the curve
    straight = _uninterrupted(data_root, tmp_path, epochs, every_epoch)
    steps_per_epoch = read_metrics(straight)["global_step"] // epochs
    resumed, code = _interrupted(data_root, tmp_path, epochs, signal.SIGTERM, every_epoch)
    assert code == 0  # saved and exited cleanly
    _assert_mid_epoch(_interruption(resumed), steps_per_epoch)
    assert [p["epoch"] for p in read_metrics(resumed)["curve"]] == [0, 1, 2, 3]
    _same_result(resumed, straight)


@pytest.mark.slow
def test_ddp_run_killed_or_terminated_resumes_to_the_uninterrupted_result(data_root, tmp_path):
    """2 gloo processes, one pair each: SIGKILL and SIGTERM inside an epoch, then resume=true."""
    ddp = ("trainer=ddp_cpu",)
    epochs = 4
    straight = _uninterrupted(data_root, tmp_path, epochs, ddp)
    steps_per_epoch = read_metrics(straight)["global_step"] // epochs
    killed, code = _interrupted(data_root, tmp_path, epochs, signal.SIGKILL, ddp)
    assert code == -signal.SIGKILL
    assert _interruption(killed)["global_step"] == steps_per_epoch > 2
    _same_result(killed, straight)
    terminated, code = _interrupted(data_root, tmp_path, epochs, signal.SIGTERM, ddp)
    assert code == 0  # every rank saved and exited cleanly
    _assert_mid_epoch(_interruption(terminated), steps_per_epoch)
    _same_result(terminated, straight)


# ------------------------------------------------------------------------------------ DDP faults
FAULT_JOB = textwrap.dedent('''
    """Two gloo ranks started by t2cr.launch; rank FAULT_RANK fails at FAULT_STAGE: "start" (before the process
    group exists, e.g. a rank whose configuration check fails) or "step" (at its third training step)."""
    import os, sys, time
    from pathlib import Path

    run_dir = Path(os.environ["RUN_DIR"])
    fault_rank, stage = int(os.environ["FAULT_RANK"]), os.environ["FAULT_STAGE"]
    rank = int(os.environ.get("LOCAL_RANK", 0))  # set for the ranks t2cr.launch starts
    (run_dir / f"rank{rank}.pid").write_text(str(os.getpid()))  # first: a watchdog may end this rank early

    from datetime import timedelta
    import torch
    import pytorch_lightning as pl
    from pytorch_lightning.strategies import DDPStrategy
    from t2cr.launch import exit_with_parent, launch_local_ranks

    def fail(rank):
        (run_dir / "failed_at").write_text(repr(time.time()))
        raise RuntimeError(f"injected failure on rank {rank}")

    class Faulty(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)
        def training_step(self, batch, index):
            if index == 2 and stage == "step" and self.global_rank == fault_rank:
                fail(self.global_rank)
            return self.layer(batch[0]).pow(2).mean()
        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    if "LOCAL_RANK" in os.environ:
        exit_with_parent(0.2)
    ranks = launch_local_ranks("fault_job", run_dir, "config", run_dir, devices=2)
    if stage == "start" and rank == fault_rank:
        fail(rank)
    data = torch.utils.data.TensorDataset(torch.randn(400, 4))
    # a collective (and the rendezvous) gives up only after COLLECTIVE_TIMEOUT_S: longer than the test allows
    timeout = timedelta(seconds=int(os.environ["COLLECTIVE_TIMEOUT_S"]))
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy=DDPStrategy(process_group_backend="gloo",
                         timeout=timeout), max_epochs=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(Faulty(), torch.utils.data.DataLoader(data, batch_size=4))
    if ranks is not None:
        ranks.finish()
''')


def _running(pid: int) -> bool:
    """Whether process `pid` still runs (a zombie waiting for its parent to reap it does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # no /proc (or it just ended): os.kill's answer stands
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["step", "start"])
@pytest.mark.parametrize("fault_rank", [0, 1])
def test_a_failing_rank_ends_every_rank(tmp_path, fault_rank, stage):
    """The failing rank's peer stops within seconds, whether the failure came inside a collective (gloo
    notices the closed connection) or before the process group existed (only t2cr.launch's watchdogs
    notice: rank 0 watches the ranks it started, they watch rank 0). Without them the peer would wait for
    the rendezvous until the collective timeout (COLLECTIVE_TIMEOUT_S, far above the bound below).

    Every rank writes its PID; none may be left running. Rank 0 is reaped as soon as it ends, as a shell
    reaps the command it started: the ranks' watchdog (`exit_with_parent`) probes rank 0's PID, and a
    zombie rank 0 that its parent has not reaped yet still answers that probe."""
    (tmp_path / "fault_job.py").write_text(FAULT_JOB)
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT")}
    env.update({"PYTHONPATH": f"{tmp_path}{os.pathsep}{env.get('PYTHONPATH', '')}", "RUN_DIR": str(tmp_path),
                "FAULT_RANK": str(fault_rank), "FAULT_STAGE": stage, "COLLECTIVE_TIMEOUT_S": "150",
                "PYTHONWARNINGS": "ignore"})
    deadline = time.monotonic() + 240
    with open(tmp_path / "output.txt", "w") as output:  # both ranks write here
        process = subprocess.Popen([sys.executable, "-m", "fault_job"], cwd=tmp_path, env=env, stdout=output,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        process.wait(timeout=240)  # rank 0 (reaped at once, as a shell reaps the command it started)
        pids = {int(path.read_text()) for path in tmp_path.glob("rank*.pid")}
        while any(_running(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        ended = time.time()
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # whatever is left of the job (it is its own group)
        except ProcessLookupError:
            pass
    output = (tmp_path / "output.txt").read_text()
    assert process.returncode != 0, output[-3000:]
    assert f"injected failure on rank {fault_rank}" in output, output[-3000:]
    assert len(pids) == 2 and process.pid in pids, pids  # rank 0 is the process started here
    after_failure = ended - float((tmp_path / "failed_at").read_text())
    assert not [pid for pid in pids if _running(pid)], "a rank process is still running"
    assert after_failure < 60, f"the last rank ended {after_failure:.0f} s after rank {fault_rank} failed"
