"""A broken step, a failed write, a killed run or a failing rank loses nothing and hangs nothing."""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from framework_helpers import run_cli, tiny_overrides
from process_sync import CHECK_IN, LIFELINE_VAR, Lifeline, LifelineTimeout
from pytorch_lightning.utilities.exceptions import SIGTERMException

from t2cr.data.datamodule import EpochSampler
from t2cr.reliability import (
    AtomicCheckpointIO,
    NonFiniteLossError,
    SaveOnSigterm,
    SeedEachStep,
    StepStatus,
    StopRequested,
    check_finite,
    step_seed,
)


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


def _one_process() -> SimpleNamespace:
    return SimpleNamespace(world_size=1, is_global_zero=True, global_step=7, global_rank=0,
                           fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace()))


@pytest.fixture
def stop_handlers():
    """SIGTERM's and SIGINT's handlers restored after the test."""
    saved = {signum: signal.getsignal(signum) for signum in SaveOnSigterm.SIGNALS}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_stops_before_the_next_batch_and_says_which(signum, tmp_path, stop_handlers):
    callback, trainer = SaveOnSigterm(tmp_path / "last.ckpt"), _one_process()
    callback.on_train_start(trainer, None)  # installs the handlers
    callback.on_train_batch_start(trainer, None, None, 0)  # nothing received: trains on
    try:
        os.kill(os.getpid(), signum)  # delivered to this (the main) thread's handler
        with pytest.raises(StopRequested) as stop:
            callback.on_train_batch_start(trainer, None, None, 1)
    except KeyboardInterrupt:
        pytest.fail("SIGINT reached Python's default handler: the run would stop mid-step without saving")
    assert stop.value.signum == signum and isinstance(stop.value, SIGTERMException)  # the save path


def test_a_second_ctrl_c_stops_at_once(tmp_path, stop_handlers):
    callback, trainer = SaveOnSigterm(tmp_path / "last.ckpt"), _one_process()
    callback.on_train_start(trainer, None)
    os.kill(os.getpid(), signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
    with pytest.raises(StopRequested):  # a SIGTERM after a Ctrl-C keeps the first signal's stop
        os.kill(os.getpid(), signal.SIGTERM)
        callback.on_train_batch_start(trainer, None, None, 0)


@pytest.mark.parametrize(("values", "signals", "expected"), [
    ([1.5, -0.25], [0, 0], (True, 0, 1.5)),  # the total (first here) read back exactly
    ([1.5, float("nan")], [0, 0], (False, 0, None)),
    ([float("inf"), 2.0], [0, 0], (False, 0, None)),
    ([1.5, 2.0], [0, 3], (True, signal.SIGINT, None)),
    ([1.5, 2.0], [1, 3], (True, signal.SIGTERM, None)),  # SIGTERM wins
    ([float("nan"), 2.0], [1, 0], (False, signal.SIGTERM, None)),  # a stop and a broken step: both known
])
def test_a_step_status_carries_finiteness_stop_and_loss_in_one_read(values, signals, expected):
    values = torch.tensor(values)
    status = StepStatus.read(values[0], values, torch.tensor(signals, dtype=torch.float32))
    assert (status.finite, status.stop, status.loss) == expected


def test_each_step_draws_from_generators_seeded_by_seed_step_and_rank():
    """Two steps of one run, or one step of two ranks, draw differently; the same step always alike."""
    callback = SeedEachStep(seed=11)

    def draws(step: int, rank: int) -> torch.Tensor:
        torch.rand(5)  # whatever the stream had drawn before
        callback.on_train_batch_start(SimpleNamespace(global_step=step, global_rank=rank), None, None, 0)
        return torch.rand(64)  # what dropout's masks are drawn from: the global generator

    first = draws(3, 0)
    expected = torch.Generator().manual_seed(step_seed(11, 3, 0))  # an independent generator, same seed
    assert torch.equal(first, torch.rand(64, generator=expected))
    assert torch.equal(draws(3, 0), first)
    assert not torch.equal(draws(4, 0), first) and not torch.equal(draws(3, 1), first)
    assert step_seed(11, 3, 0) != step_seed(12, 3, 0) and 0 <= step_seed(11, 3, 0) < 2 ** 63


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


# The resume tests (kill points, signals, processes, workers, schedules): tests/test_resume_exact.py


# ------------------------------------------------------------------------------------ DDP faults
FAULT_JOB = textwrap.dedent('''
    """Two gloo ranks started by t2cr.launch; rank FAULT_RANK fails at FAULT_STAGE: "start" (before the process
    group exists, e.g. a rank whose configuration check fails) or "step" (at its third training step)."""
    CHECK_IN  # first: the test learns that this rank runs, and when it has ended
    import os, sys
    from pathlib import Path

    run_dir = Path(os.environ["RUN_DIR"])
    fault_rank, stage = int(os.environ["FAULT_RANK"]), os.environ["FAULT_STAGE"]
    rank = int(os.environ.get("LOCAL_RANK", 0))  # set for the ranks t2cr.launch starts

    from datetime import timedelta
    import torch
    import pytorch_lightning as pl
    from pytorch_lightning.strategies import DDPStrategy
    from t2cr.launch import exit_with_parent, launch_local_ranks

    def fail(rank):
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
    # a collective (and the rendezvous) gives up only after COLLECTIVE_TIMEOUT_S: longer than the test waits
    timeout = timedelta(seconds=int(os.environ["COLLECTIVE_TIMEOUT_S"]))
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy=DDPStrategy(process_group_backend="gloo",
                         timeout=timeout), max_epochs=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(Faulty(), torch.utils.data.DataLoader(data, batch_size=4))
    if ranks is not None:
        ranks.finish()
''').replace("CHECK_IN", CHECK_IN, 1)


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["step", "start"])
@pytest.mark.parametrize("fault_rank", [0, 1])
def test_a_failing_rank_ends_every_rank(tmp_path, fault_rank, stage):
    """The failing rank's peer stops, whether the failure came inside a collective (gloo notices the closed
    connection) or before the process group existed (only t2cr.launch's watchdogs notice: rank 0 watches the
    ranks it started, they watch rank 0). Without them the peer would wait for the rendezvous until the
    collective timeout (COLLECTIVE_TIMEOUT_S, an hour: beyond every bound below, which only a failure reaches).

    Every rank checks in at a lifeline (tests/process_sync.py) as its first act and holds it until it ends.
    The test blocks on rank 0's end (reaping it as soon as it ends, as a shell reaps the command it started),
    then on the lifeline's end, which comes when every rank has ended: no rank is left running."""
    (tmp_path / "fault_job.py").write_text(FAULT_JOB)
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT")}
    env.update({"PYTHONPATH": f"{tmp_path}{os.pathsep}{env.get('PYTHONPATH', '')}", "RUN_DIR": str(tmp_path),
                "FAULT_RANK": str(fault_rank), "FAULT_STAGE": stage, "COLLECTIVE_TIMEOUT_S": "3600",
                "PYTHONWARNINGS": "ignore"})
    with Lifeline(tmp_path / "lifeline") as lifeline:
        env[LIFELINE_VAR] = str(lifeline.path)
        with open(tmp_path / "output.txt", "w") as output:  # both ranks write here
            process = subprocess.Popen([sys.executable, "-m", "fault_job"], cwd=tmp_path, env=env, stdout=output,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        try:
            process.wait(timeout=240)  # rank 0
            pids = lifeline.check_ins(2, timeout=60)
            lifeline.wait_ended(timeout=120)  # and every rank
        except (subprocess.TimeoutExpired, LifelineTimeout) as hung:
            pytest.fail(f"a rank kept running after rank {fault_rank} failed at {stage}: {hung}\n"
                        + (tmp_path / "output.txt").read_text()[-3000:])
        finally:
            try:
                os.killpg(process.pid, signal.SIGKILL)  # whatever is left of the job (it is its own group)
            except ProcessLookupError:
                pass
            process.wait()
    output = (tmp_path / "output.txt").read_text()
    assert process.returncode != 0, output[-3000:]
    assert f"injected failure on rank {fault_rank}" in output, output[-3000:]
    assert len(set(pids)) == 2 and process.pid in pids, pids  # rank 0 is the process started here
