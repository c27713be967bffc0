"""Processes, GPUs and cores of a job (issue 20): device forms, global batches, workers, threads, packed sweeps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from t2cr import devices
from t2cr.cli.common import UserError, user_errors
from t2cr.devices import (
    JOB_CPUS_VAR,
    check_global_batches,
    count_devices,
    cpus_per_process,
    gpu_sets,
    loader_workers,
    processes_per_node,
)
from t2cr.resources import CONF_DIR

TESTS = str(Path(__file__).parent)
PATHS = ["data.annotations=/data/annotations", "data.root=/data/frames", "model.backbone.checkpoint=/w/model_rgb.pth"]


def _compose(overrides: list[str], name: str = "train"):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


@pytest.fixture
def gpus(monkeypatch):
    """Pretend this machine has n GPUs."""
    def fake(n: int) -> None:
        monkeypatch.setattr(devices, "gpu_count", lambda: n)
    return fake


# ------------------------------------------------------------------------------------ device forms
@pytest.mark.parametrize("given,count", [
    (2, 2), ("2", 2), (-1, 8), ("-1", 8), ("auto", 8), ([0, 1], 2), ("0,1", 2), ("1,", 1), ("0, 3, 5", 3),
    (OmegaConf.create({"d": [2, 3]}).d, 2),
])
def test_every_lightning_device_form_is_a_count(given, count):
    assert count_devices(given, all_devices=8) == count


@pytest.mark.parametrize("given", [0, -2, "x", [0, 0], [], True, 1.5])
def test_what_is_not_a_device_form_is_refused(given):
    with pytest.raises(UserError, match="trainer.devices"):
        count_devices(given, all_devices=8)


def test_every_gpu_is_refused_where_it_is_unknown():
    with pytest.raises(UserError, match="every visible GPU, which nobody knows here: give the number"):
        count_devices(-1, None, "nobody knows here")


def test_processes_per_node_by_accelerator(gpus):
    gpus(4)
    assert processes_per_node({"accelerator": "gpu", "devices": "0,1"}) == 2
    assert processes_per_node({"accelerator": "auto", "devices": -1}) == 4
    with pytest.raises(UserError, match=r"asks for 5 GPU\(s\) per node; 4 visible here"):
        processes_per_node({"accelerator": "gpu", "devices": 5})
    gpus(0)
    assert processes_per_node({"accelerator": "auto", "devices": "auto"}) == 1  # the CPU, as Lightning
    assert processes_per_node({"accelerator": "cpu", "devices": 2}) == 2
    with pytest.raises(UserError, match="no meaning on cpu"):
        processes_per_node({"accelerator": "cpu", "devices": -1})


@pytest.mark.parametrize("form", ["[0,1]", "'0,1'"])
def test_ddp_start_counts_a_device_list(form, gpus, monkeypatch, tmp_path):
    """`int(trainer.devices)` once failed for [0,1] and "0,1"."""
    from t2cr import run

    gpus(2)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # keep this test process's threads as they are
    for var in ("LOCAL_RANK", "NODE_RANK", "SLURM_PROCID", "RANK"):
        monkeypatch.delenv(var, raising=False)
    started = {}
    monkeypatch.setattr(run, "launch_local_ranks", lambda *args, **kwargs: started.update(devices=args[4], **kwargs))
    cfg = _compose(["trainer=ddp", f"trainer.devices={form}"])
    run.start_other_ranks(cfg, {"trainer": {}}, tmp_path, "t2cr.cli.train")
    assert started["devices"] == 2 and started["threads"] >= 1


# ------------------------------------------------------------------------------------ global batches
def test_the_paper_batch_on_an_8_gpu_node_is_refused_before_anything_starts(gpus, monkeypatch, capsys):
    """trainer=ddp trainer.devices=-1 on 8 GPUs: 2 pairs cannot be shared by 8 processes."""
    import t2cr.cli.train as train_cli
    from t2cr import run

    gpus(8)

    def must_not_run(*args, **kwargs):
        raise AssertionError("started work before refusing")

    monkeypatch.setattr(train_cli, "build_datamodule", must_not_run)
    monkeypatch.setattr(run, "launch_local_ranks", must_not_run)
    monkeypatch.setattr(train_cli, "HydraConfig", SimpleNamespace(
        get=lambda: SimpleNamespace(runtime=SimpleNamespace(output_dir="/tmp/t2cr-never-written"))))
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    cfg = _compose(["experiment=mtl_aqa_dd", "trainer=ddp", "trainer.devices=-1", *PATHS])
    with pytest.raises(SystemExit) as exit_info, user_errors("train"):
        train_cli.train(cfg)
    assert exit_info.value.code == 2
    line = capsys.readouterr().err.strip()
    assert "\n" not in line
    assert line.startswith("t2cr-train: error: data.batch_size=2 and data.eval_batch_size=2 are global")
    assert "the 8 processes of trainer.devices=-1 (8 visible GPUs)" in line
    assert "trainer.devices=2" in line and "hydra/launcher=gpu_slots" in line


def test_trainer_ddp_takes_two_gpus_and_fits_the_paper_batch(gpus):
    gpus(8)
    cfg = _compose(["experiment=mtl_aqa_dd", "trainer=ddp", *PATHS])
    assert cfg.trainer.devices == 2
    assert check_global_batches(cfg.data, cfg.trainer, ("batch_size", "eval_batch_size")) == 2


def test_the_refusal_suggests_a_device_count_that_fits_every_node(gpus):
    gpus(8)
    trainer = {"accelerator": "gpu", "devices": 4, "num_nodes": 2}
    with pytest.raises(UserError, match=r"8 processes of trainer.devices=4 x trainer.num_nodes=2: .*"
                                        r"\(trainer.devices=2\)"):
        check_global_batches({"batch_size": 4, "eval_batch_size": 8}, trainer, ("batch_size", "eval_batch_size"))
    # evaluation checks its own batch only
    assert check_global_batches({"batch_size": 3, "eval_batch_size": 8}, trainer, ("eval_batch_size",)) == 8


# ------------------------------------------------------------------------------------ cores
def test_cores_per_process_and_loader_workers(monkeypatch):
    monkeypatch.setenv(JOB_CPUS_VAR, "16")
    assert cpus_per_process("auto", 8) == 2 and cpus_per_process("auto", 1) == 16
    assert cpus_per_process("auto", 32) == 1  # never none
    assert cpus_per_process(3, 8) == 3 and cpus_per_process("3", 8) == 3
    assert loader_workers("auto", 2) == 1 and loader_workers("auto", 1) == 0 and loader_workers(5, 1) == 5
    for bad in ("atuo", -1, True):
        with pytest.raises(UserError):
            loader_workers(bad, 4)
    with pytest.raises(UserError, match="trainer.cpus_per_process"):
        cpus_per_process(0, 1)


def test_data_configs_default_to_workers_from_the_cores(monkeypatch):
    from t2cr import run
    from t2cr.data.datamodule import PairDataModule

    monkeypatch.setattr(PairDataModule, "setup", lambda self, stage=None: None)
    monkeypatch.setenv(JOB_CPUS_VAR, "16")
    # 2 processes (trainer=ddp_cpu) on 16 cores: 8 each, 7 loader workers each
    assert run.build_datamodule(_compose(["data=mtl_aqa", "trainer=ddp_cpu", *PATHS])).num_workers() == 7
    assert run.build_datamodule(_compose(["data=mtl_aqa", "trainer=ddp_cpu", "trainer.cpus_per_process=3",
                                          *PATHS])).num_workers() == 2
    assert run.build_datamodule(_compose(["data=mtl_aqa", "trainer=ddp_cpu", "data.num_workers=5",
                                          *PATHS])).num_workers() == 5


RANK_ENV = textwrap.dedent('''
    import json, os, sys
    from pathlib import Path
    Path(os.environ["RUN_DIR"], f"rank{os.environ['LOCAL_RANK']}.json").write_text(json.dumps(dict(os.environ)))
''')


@pytest.mark.parametrize("user_threads", [None, "3"])
def test_started_ranks_get_their_share_of_threads(user_threads, monkeypatch, tmp_path):
    from t2cr.launch import launch_local_ranks

    (tmp_path / "rank_env.py").write_text(RANK_ENV)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setenv("RUN_DIR", str(tmp_path))
    monkeypatch.setenv(JOB_CPUS_VAR, "16")
    for var in ("LOCAL_RANK", "TORCHELASTIC_RUN_ID", "SLURM_NTASKS", "OMP_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    if user_threads:
        monkeypatch.setenv("OMP_NUM_THREADS", user_threads)
    ranks = launch_local_ranks("rank_env", tmp_path, "config", tmp_path, devices=4)
    ranks.finish(timeout=60)
    for rank in (1, 2, 3):
        env = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert env["OMP_NUM_THREADS"] == (user_threads or "4")  # 16 cores / 4 processes


# ------------------------------------------------------------------------------------ packed sweeps
def test_gpu_sets_are_disjoint_and_leave_the_rest_idle():
    assert gpu_sets(range(8), 2) == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert gpu_sets([4, 5, 6, 7, 2], 2) == [[4, 5], [6, 7]]
    with pytest.raises(UserError, match="3 GPUs per job .*, 2 to share out"):
        gpu_sets([0, 1], 3)


SWEEP_APP = textwrap.dedent('''
    import json, os
    from pathlib import Path
    import hydra

    @hydra.main(config_path=".", config_name="app", version_base="1.3")
    def main(cfg):
        from process_sync import Party  # tests/, on PYTHONPATH

        gpus = os.environ["CUDA_VISIBLE_DEVICES"]
        party = Party(cfg.barrier, str(cfg.job), info=gpus)
        group = party.wait()  # returns once another job waits there too, or raises after the barrier's timeout
        Path(cfg.out, f"{cfg.job}.json").write_text(json.dumps({
            "gpus": gpus, "cpus": os.environ.get("T2CR_JOB_CPUS"), "group": group}))
        party.leave()

    if __name__ == "__main__":
        main()
''')
MEET_TIMEOUT_S = 120  # how long a job waits at the barrier for another one: only a failure waits this long


@pytest.mark.slow
def test_a_packed_sweep_runs_concurrent_jobs_on_disjoint_gpus(tmp_path):
    """hydra/launcher=gpu_slots, 4 jobs of 2 GPUs on 4 (faked) GPUs: two at a time, never sharing a GPU.

    Each job waits at a barrier of 2 that the test serves, so the sweep ends only if the jobs ran two at a
    time (run one after another, the first job waits MEET_TIMEOUT_S there and fails, and so does every later
    one). The barrier's log (every job's arrival and its leaving, in the order they happened) says which jobs
    ran side by side, without clocks."""
    from process_sync import Barrier

    (tmp_path / "app.py").write_text(SWEEP_APP)
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [TESTS, os.environ.get("PYTHONPATH")]))}
    with Barrier(parties=2, timeout=MEET_TIMEOUT_S) as barrier:
        (tmp_path / "app.yaml").write_text(f"trainer:\n  devices: 2\njob: 0\nout: {out}\nbarrier: '{barrier.address}'\n")
        result = subprocess.run(
            [sys.executable, "app.py", "-m", "job=0,1,2,3", "hydra/launcher=gpu_slots",
             "hydra.launcher.visible_gpus=[0,1,2,3]", f"hydra.searchpath=[file://{CONF_DIR}]",
             f"hydra.sweep.dir={tmp_path / 'sweep'}"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, (barrier.broken, result.stderr[-4000:])
    jobs = {str(j): json.loads((out / f"{j}.json").read_text()) for j in range(4)}
    assert all(job["gpus"] in ("0,1", "2,3") for job in jobs.values())
    assert all(job["cpus"] == str(max(1, devices.available_cpus() // 2)) for job in jobs.values())
    # every job met another one at the barrier: 2 pairs that ran at the same time
    assert sorted(name for group in barrier.groups for name in group) == sorted(jobs), barrier.groups
    assert all(jobs[name]["group"] in barrier.groups for name in jobs)
    # replayed in the order it happened: the jobs running at once (2 at most) never share a GPU
    running: set[str] = set()
    most = 0
    for event, name in barrier.log:
        if event == "leave":
            running.remove(name)
            continue
        for other in running:
            assert not set(jobs[name]["gpus"].split(",")) & set(jobs[other]["gpus"].split(",")), (name, other)
        running.add(name)
        most = max(most, len(running))
    assert most == 2 and not running, barrier.log
