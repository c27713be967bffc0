"""Issue 29: a shared folder never changes under a running job.

- A run folder is locked for its run: a second t2cr-train into it is refused at once in one line (exit 2) and
  changes nothing there, the first run finishes unharmed, and a resumed run proceeds once the first has ended.
  The DDP ranks of one run share its folder and are not refused.
- The fast ablation mode's feature store is computed once per settings digest: a job that finds another one
  computing it waits, then reads that job's file.

No sleeps and no polling: the first run pauses at a point of its own progress and waits on its stdin; the
store's first job waits on a pipe for the second job to find the lock held.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import pytorch_lightning as pl
from framework_helpers import assert_resumed_from, read_metrics, run_cli, tiny_overrides
from pytorch_lightning.callbacks import Callback

TESTS = Path(__file__).resolve().parent
PAUSED = "t2cr-test: paused"
BOUND_S = 600  # only turns a hang into a failure; nothing waits for it to pass


class PauseAtEpoch(Callback):
    """In a t2cr-train run (`+callbacks.extra.pause._target_=test_run_folder_lock.PauseAtEpoch`): when epoch
    `epoch` starts (the previous epoch's checkpoints written), print PAUSED and wait for a line on stdin."""

    def __init__(self, epoch: int = 1) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            print(PAUSED, flush=True)
            sys.stdin.readline()


def _environment() -> dict[str, str]:
    """What run_cli gives its runs (tests/ on PYTHONPATH), for a run this test drives through its pipes."""
    env = {k: v for k, v in os.environ.items() if k not in ("T2CR_RUN_STAMP", "LOCAL_RANK", "WORLD_SIZE")}
    env.update(PYTHONWARNINGS="ignore", WANDB_SILENT="true",
               PYTHONPATH=os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")])))
    return env


def _snapshot(folder: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every path under `folder` with its modification time and, for a file, its bytes."""
    return {p.relative_to(folder).as_posix(): (p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else None)
            for p in sorted(folder.rglob("*"))}


@pytest.mark.slow
def test_a_second_run_into_a_running_runs_folder_is_refused_and_changes_nothing(tiny_synthetic, tmp_path):
    run_dir = tmp_path / "run"
    # a constant learning rate: the resumed run may train more epochs than the first planned
    overrides = [*tiny_overrides(tiny_synthetic), "trainer.log_every_n_steps=1", "optim.lr_schedule=constant",
                 f"hydra.run.dir={run_dir}"]
    with open(tmp_path / "first.err", "w") as first_err:
        first = subprocess.Popen(
            [sys.executable, "-m", "t2cr.cli.train", *overrides,
             "+callbacks.extra.pause._target_=test_run_folder_lock.PauseAtEpoch"], cwd=tmp_path, env=_environment(),
            text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=first_err)
    try:
        for line in first.stdout:  # the first run is mid-run: epoch 0's checkpoints written, epoch 1 to come
            if line.strip() == PAUSED:
                break
        else:
            pytest.fail(f"the first run ended without pausing:\n{(tmp_path / 'first.err').read_text()[-4000:]}")
        assert (run_dir / "checkpoints" / "last.ckpt").is_file()
        before = _snapshot(run_dir)

        second = run_cli("train", [*overrides, "trainer.max_epochs=3"], cwd=tmp_path, check=False)

        assert second.returncode == 2, second.stderr[-3000:]
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, second.stderr[-3000:]
        assert lines[0] == (f"t2cr-train: error: {run_dir} is in use by another t2cr-train run (it holds "
                            ".t2cr-run.lock there): wait for that run to end, or choose another hydra.run.dir")
        assert _snapshot(run_dir) == before  # not a file written, touched or added: .hydra/, the log, checkpoints
    finally:
        first.communicate("go on\n", timeout=BOUND_S)  # the first run goes on to its end

    assert first.returncode == 0, (tmp_path / "first.err").read_text()[-4000:]
    finished = read_metrics(run_dir)
    assert finished["epochs"] == 2 and finished["global_step"] > 0  # the first run went on unharmed
    # once the first run has ended, the folder is free: a resumed run continues from the first run's last.ckpt
    run_cli("train", [*overrides, "resume=true", "trainer.max_epochs=3"], cwd=tmp_path)
    assert_resumed_from(run_dir, finished["global_step"])


@pytest.mark.slow
def test_the_ddp_ranks_of_a_run_share_its_locked_folder(tiny_synthetic, tmp_path):
    run_dir = tmp_path / "ddp"
    run_cli("train", [*tiny_overrides(tiny_synthetic), "trainer=ddp_cpu", "trainer.max_epochs=1",
                      f"hydra.run.dir={run_dir}"], cwd=tmp_path, timeout=BOUND_S)
    assert read_metrics(run_dir)["epochs"] == 1
    assert (run_dir / "rank_1.log").is_file()  # rank 1 ran in the folder that rank 0 held locked
    assert (run_dir / ".t2cr-run.lock").is_file()


# ------------------------------------------------------------------------------------ the feature store
def _store_job(role: str, data_root: Path, cache: Path, peer: Any, first_computes: Any, results: Any) -> None:
    """One job of a fast ablation sweep that wants the clip-feature store (a spawned process).

    first: once it computes (holding the store's lock, if there is one), it waits for a word from the second
    job. second: starts once the first computes; says "waiting" when it finds a lock held, "done" at its end.
    """
    import filelock
    import torch
    from filelock import Timeout
    from test_features import _data, _model, _module

    from t2cr import features as clip_store
    from t2cr.data.datamodule import PairDataModule

    torch.manual_seed(0)  # both jobs build the same backbone: one store digest
    datamodule = PairDataModule(_data(data_root))
    module = _module(_model(datamodule.num_action_types, trainable=False), stored_features=True,
                     feature_cache_dir=str(cache))
    trainer = SimpleNamespace(datamodule=datamodule, strategy=SimpleNamespace(root_device=torch.device("cpu")),
                              global_rank=0)
    found_held: list[str] = []
    if role == "first":
        compute = clip_store.fill_table

        def compute_once_the_second_job_asked(*args: Any, **kwargs: Any) -> int:
            first_computes.set()
            peer.recv()  # "waiting": the second job found the lock held; "done": it did not wait
            return compute(*args, **kwargs)

        clip_store.fill_table = compute_once_the_second_job_asked
    else:
        first_computes.wait(BOUND_S)
        acquire = filelock.FileLock.acquire

        def acquire_saying_when_held(self: Any, *args: Any, blocking: bool | None = None, **kwargs: Any) -> Any:
            if blocking is not False:
                try:
                    return acquire(self, blocking=False)
                except Timeout:
                    found_held.append(str(self.lock_file))
                    peer.send("waiting")
            return acquire(self, *args, blocking=blocking, **kwargs)

        filelock.FileLock.acquire = acquire_saying_when_held
    clip_store.ClipFeatures().setup(trainer, module, "fit")
    if role == "second":
        peer.send("done")
    features = module.features.features.contiguous().numpy().tobytes()
    results.put((role, module.feature_passes, found_held, hashlib.sha256(features).hexdigest()))


@pytest.mark.slow
def test_two_jobs_wanting_one_feature_store_compute_it_once(tiny_synthetic, tmp_path):
    cache = tmp_path / "features"
    spawn = multiprocessing.get_context("spawn")  # torch's thread pools are not safe to fork
    first_end, second_end = spawn.Pipe()
    first_computes, results = spawn.Event(), spawn.Queue()
    jobs = [spawn.Process(target=_store_job, args=(role, tiny_synthetic, cache, end, first_computes, results))
            for role, end in (("first", first_end), ("second", second_end))]
    for job in jobs:
        job.start()
    try:
        got = {role: (passes, held, digest) for role, passes, held, digest in
               (results.get(timeout=BOUND_S) for _ in jobs)}
    finally:
        for job in jobs:
            job.join(BOUND_S)
    assert [job.exitcode for job in jobs] == [0, 0]
    stores = list(cache.glob("clip_features-*.pt"))
    assert len(stores) == 1, stores
    videos = 12 + 7
    # the backbone ran over every video once in all: the first job computed, the second waited for its lock
    assert (got["first"][0], got["second"][0]) == (videos, 0)
    assert got["second"][1] == [f"{stores[0]}.lock"]  # the lock named after the store's digest file
    assert got["second"][2] == got["first"][2]  # and read the features the first one wrote


@pytest.mark.parametrize("rank_variable", ["RANK", "SLURM_PROCID", "LOCAL_RANK"])
def test_only_rank_zero_of_an_externally_launched_job_takes_the_run_folder_lock(monkeypatch, tmp_path, rank_variable):
    """torchrun and SLURM start every rank with the user's command line, so each composes the lock callback: only
    the job's rank 0 may take the lock (the others would be refused by it)."""
    import t2cr.run as run_module

    taken: list[Path] = []
    monkeypatch.setattr(run_module, "pin_run_dir", lambda config: tmp_path)
    monkeypatch.setattr(run_module, "lock_run_folder",
                        lambda path: taken.append(path) or SimpleNamespace(release=lambda: None))
    for name in ("LOCAL_RANK", "NODE_RANK", "SLURM_PROCID", "RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(rank_variable, "1")
    run_module.RunFolderLock().on_run_start(None)
    assert taken == []
    monkeypatch.setenv(rank_variable, "0")
    callback = run_module.RunFolderLock()
    callback.on_run_start(None)
    assert taken == [tmp_path]
    callback.on_run_end(None)
    assert callback.lock is None
