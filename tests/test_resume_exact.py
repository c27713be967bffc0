"""A killed or stopped run resumes to exactly the uninterrupted result, wherever the signal came.

One family of cases over what a resume can get wrong: kill points (inside the first epoch, right after an
epoch-end and a best checkpoint, inside a later epoch after a validation, during a validation), with and
without validation between, constant and cosine schedules, 1 and 2 processes, 0 and 2 loader workers,
SIGKILL / SIGTERM / SIGINT to the main process, to one rank or to the whole process group, dropout on.

Each case runs the tiny smoke setting in its own process group, signals it from inside the run at an exact
point of its own progress (tests/kill_points.py: a step, an epoch start, a validation batch; no timers),
resumes it with resume=true, and compares it with the uninterrupted run of the same setting: metrics, the
learning curve, every weight, buffer and optimizer state, bit for bit (the runs are deterministic).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from framework_helpers import assert_resumed_from, read_metrics, run_cli, tiny_overrides

TESTS = Path(__file__).resolve().parent
EPOCHS = 3
TRAIN_SAMPLES, BATCH = 12, 2  # the tiny synthetic data's training split, the global batch
STEPS = TRAIN_SAMPLES // BATCH  # global steps per epoch


@dataclass(frozen=True)
class Setting:
    """What an interrupted run shares with its uninterrupted reference."""

    processes: int = 1
    workers: int = 2
    schedule: str = "cosine"
    val_every: int = 1
    extra: tuple[str, ...] = ()

    def overrides(self, data_root: Path) -> list[str]:
        ddp = ["trainer=ddp_cpu", "trainer.cpus_per_process=1"] if self.processes > 1 else []
        return [*tiny_overrides(data_root), *ddp, f"data.num_workers={self.workers}", f"data.batch_size={BATCH}",
                f"optim.lr_schedule={self.schedule}", f"trainer.check_val_every_n_epoch={self.val_every}",
                f"trainer.max_epochs={EPOCHS}", "trainer.log_every_n_steps=1", "test_best=false", *self.extra]

    @property
    def name(self) -> str:
        extra = "-".join(e.split(".")[-1].replace("=", "") for e in self.extra)
        return f"p{self.processes}w{self.workers}-{self.schedule}-val{self.val_every}" + (f"-{extra}" if extra else "")


@dataclass(frozen=True)
class Kill:
    """Where the signal comes (kill_points.KillAt) and where the checkpoint it leaves must stand."""

    at: str
    epoch: int
    batch: int = 0
    signal_name: str = "SIGKILL"
    target: str = "self"
    rank: int = 0

    def overrides(self) -> list[str]:
        spec = {"_target_": "kill_points.KillAt", "at": self.at, "epoch": self.epoch, "batch": self.batch,
                "signal_name": self.signal_name, "target": self.target, "rank": self.rank}
        return [f"+callbacks.extra.kill.{key}={value}" for key, value in spec.items()]

    def saved_step(self, setting: Setting) -> int:
        """The global step of the checkpoint the run leaves: a SIGKILL leaves the last epoch-end one; SIGTERM
        and SIGINT save before the next training batch (after the validation they came in), under DDP one
        batch later (the processes learn of the signal from the next step's collective)."""
        if self.signal_name == "SIGKILL":
            return self.epoch * STEPS
        later = 1 if setting.processes > 1 else 0
        if self.at == "train_batch":
            return self.epoch * STEPS + self.batch + 1 + later
        if self.at == "epoch_start":
            return self.epoch * STEPS + later
        return (self.epoch + 1) * STEPS + later  # validation_batch: after the epoch's checkpoints

    def exit_code(self) -> int:
        return {"SIGKILL": -signal.SIGKILL, "SIGTERM": 0, "SIGINT": 128 + signal.SIGINT}[self.signal_name]


ONE = Setting()  # 1 process, 2 workers, cosine, validation every epoch
ONE_PLAIN = Setting(workers=0, schedule="constant", val_every=2)
TWO = Setting(processes=2, workers=2, schedule="cosine", val_every=2)  # the DDP setting
TWO_PLAIN = Setting(processes=2, workers=0, schedule="constant", val_every=1)
DROPOUT = Setting(extra=("model.decoder.dropout=0.3",))

slow = pytest.mark.slow
extended = pytest.mark.extended  # make test-all only: a faster case guards the same mechanism
CASES = [
    # fast: a whole-group SIGTERM with loader workers inside a later epoch; the DDP kill after a best
    pytest.param(ONE, Kill("train_batch", 1, 2, "SIGTERM", "group"), id="1p-group-sigterm-later-epoch"),
    pytest.param(TWO, Kill("epoch_start", 2, target="group"), id="2p-group-sigkill-after-best-checkpoint"),
    # slow: the rest of the space
    pytest.param(ONE, Kill("train_batch", 0, 1, "SIGTERM"), id="1p-sigterm-first-epoch", marks=slow),
    pytest.param(ONE, Kill("validation_batch", 1, 1), id="1p-sigkill-during-validation", marks=[slow, extended]),
    pytest.param(ONE, Kill("validation_batch", 1, 1, "SIGTERM", "group"), id="1p-group-sigterm-during-validation",
                 marks=slow),
    pytest.param(ONE_PLAIN, Kill("train_batch", 2, 3), id="1p-sigkill-later-epoch-no-validation-between",
                 marks=[slow, extended]),
    pytest.param(ONE_PLAIN, Kill("train_batch", 1, 1, "SIGINT", "group"), id="1p-ctrl-c", marks=slow),
    pytest.param(DROPOUT, Kill("train_batch", 1, 2, "SIGTERM"), id="1p-dropout-sigterm", marks=[slow, extended]),
    pytest.param(TWO_PLAIN, Kill("train_batch", 1, 1, "SIGTERM", rank=1), id="2p-sigterm-rank1-only",
                 marks=slow),
    pytest.param(TWO, Kill("train_batch", 2, 0, "SIGTERM", "group"), id="2p-group-sigterm-with-workers",
                 marks=[slow, extended]),
]


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("T2CR_RUN_STAMP", "LOCAL_RANK", "WORLD_SIZE")}
    env.update({"PYTHONWARNINGS": "ignore", "WANDB_SILENT": "true",
                "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))})
    return env


def _train(overrides: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """t2cr-train as the leader of its own process group (a group signal must not reach pytest); whatever
    of the group outlives its main process (a rank, a worker) is killed before the next run starts."""
    process = subprocess.Popen([sys.executable, "-m", "t2cr.cli.train", *overrides], cwd=cwd, env=_environment(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


@pytest.fixture(scope="module")
def references(tiny_synthetic, tmp_path_factory):
    """The uninterrupted run of each setting, made once per module on first use."""
    made: dict[Setting, Path] = {}
    root = tmp_path_factory.mktemp("uninterrupted")

    def reference(setting: Setting) -> Path:
        if setting not in made:
            run_dir = root / setting.name
            run_cli("train", [*setting.overrides(tiny_synthetic), f"hydra.run.dir={run_dir}"], cwd=root)
            made[setting] = run_dir
        return made[setting]

    return reference


def _checkpoint(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)


def _tensors(value, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor of a nested checkpoint entry, by its path."""
    if isinstance(value, torch.Tensor):
        return {prefix: value}
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (list, tuple)) else ()
    return {k: t for key, item in items for k, t in _tensors(item, f"{prefix}/{key}").items()}


def assert_same_run(resumed: Path, straight: Path) -> None:
    """Metrics, learning curve, weights, buffers and optimizer state equal to the bit."""
    mr, ms = read_metrics(resumed), read_metrics(straight)
    for key in ("global_step", "epochs", "test/spearman", "test/rl2", "test/l2", "curve"):
        assert mr[key] == ms[key], (key, mr[key], ms[key])
    cr, cs = _checkpoint(resumed), _checkpoint(straight)
    for entry in ("state_dict", "optimizer_states", "lr_schedulers"):
        tr, ts = _tensors(cr[entry]), _tensors(cs[entry])
        assert tr.keys() == ts.keys(), entry
        differ = [k for k in tr if not torch.equal(tr[k], ts[k])]
        assert not differ, f"{entry}: {len(differ)} of {len(tr)} tensors differ, e.g. {differ[:3]}"
    assert cr["lr_schedulers"] == cs["lr_schedulers"]  # the schedules' plain state (epoch, last rates) too


@pytest.mark.parametrize(("setting", "kill"), CASES)
def test_a_killed_run_resumes_to_the_uninterrupted_result(setting, kill, tiny_synthetic, references, tmp_path):
    straight = references(setting)
    assert read_metrics(straight)["global_step"] == EPOCHS * STEPS
    run_dir = tmp_path / "run"
    overrides = [*setting.overrides(tiny_synthetic), f"hydra.run.dir={run_dir}"]

    stopped = _train([*overrides, *kill.overrides()], cwd=tmp_path)
    assert stopped.returncode == kill.exit_code(), stopped.stderr[-4000:]
    assert not (run_dir / "metrics.json").exists(), "the run finished before the signal"
    saved = _checkpoint(run_dir)
    in_epoch = saved["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]["completed"]
    assert saved["global_step"] == kill.saved_step(setting), (saved["global_step"], in_epoch)
    if kill.signal_name != "SIGKILL":
        assert f"stopped by {kill.signal_name}" in stopped.stdout, stopped.stdout[-2000:]

    resumed = _train([*overrides, "resume=true"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    # a "resume" that started again from scratch would reach the same weights: it must train only the rest
    assert_resumed_from(run_dir, saved["global_step"])
    assert_same_run(run_dir, straight)


def test_callbacks_extra_adds_the_users_callbacks_and_refuses_what_is_not_one():
    from omegaconf import OmegaConf

    from t2cr.run import extra_callbacks

    specs = OmegaConf.create({"kill": {"_target_": "kill_points.KillAt", "at": "epoch_start", "epoch": 2,
                                       "signal_name": "SIGTERM"}, "off": None})
    made = extra_callbacks(specs)
    assert len(made) == 1 and (made[0].at, made[0].epoch, made[0].signal) == ("epoch_start", 2, signal.SIGTERM)
    with pytest.raises(ValueError, match=r"callbacks.extra.lr has no _target_"):
        extra_callbacks(OmegaConf.create({"lr": {"logging_interval": "epoch"}}))
    with pytest.raises(TypeError, match=r"callbacks.extra.d: collections.OrderedDict is not a Lightning Callback"):
        extra_callbacks(OmegaConf.create({"d": {"_target_": "collections.OrderedDict"}}))
