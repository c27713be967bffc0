"""A sweep reads well: job folders and W&B runs are named by the keys that vary, grouped by sweep."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from t2cr.sweeps import MAX_DIRNAME, SWEEP_VARYING_VAR, job_dirname, sweep_group, varying_keys

# the overrides of the issue's example sweep (with its six constant overrides)
ISSUE_SWEEP = ["experiment=smoke", "trainer=ddp_cpu", "model.backbone.name=tiny", "data.batch_size=4",
               "data.eval_batch_size=4", "trainer.max_epochs=1", "logger=csv", "callbacks.progress=none",
               "test_best=false", "model.decoder.layers=1,2"]


def test_the_varying_keys_of_a_sweep():
    assert varying_keys(ISSUE_SWEEP) == ["model.decoder.layers"]
    params = {"seed": "0,1,2", "data.voting_exemplars": "1,5,10", "model.heads": "4"}
    assert varying_keys(["data.classes=[1],[2]", "x=[1,2]"], params) == ["data.classes", "data.voting_exemplars",
                                                                          "seed"]


def test_a_job_folder_leads_with_what_varies(monkeypatch):
    dirname = ("callbacks.progress=none,data.batch_size=4,data.eval_batch_size=4,data.root=/data/frames,"
               "model.backbone.name=tiny,model.decoder.layers=2,test_best=false,trainer.max_epochs=1")
    monkeypatch.setenv(SWEEP_VARYING_VAR, "model.decoder.layers,seed")
    assert job_dirname(dirname, 1) == "model.decoder.layers=2,seed=1"
    monkeypatch.setenv(SWEEP_VARYING_VAR, "")
    assert job_dirname(dirname, 0) == "seed=0"
    monkeypatch.delenv(SWEEP_VARYING_VAR)  # outside a sweep: every override but paths, as before
    assert job_dirname("b=2,a=1,data.root=/x", 3) == "a=1,b=2,seed=3"


def test_long_varying_values_shorten_keys_first_and_keep_the_seed(monkeypatch):
    keys = [f"model.some.deeply.nested.key_{i}" for i in range(4)]
    monkeypatch.setenv(SWEEP_VARYING_VAR, ",".join(keys))
    name = job_dirname(",".join(f"{k}=value{i}" for i, k in enumerate(keys)), 7)
    assert name == "key_0=value0,key_1=value1,key_2=value2,key_3=value3,seed=7"
    monkeypatch.setenv(SWEEP_VARYING_VAR, "data.classes")
    name = job_dirname("data.classes=[" + ",".join(map(str, range(60))) + "]", 2)
    assert len(name) <= MAX_DIRNAME and name.startswith("classes=[0,1,2") and name.endswith(",seed=2")


def test_the_group_is_the_sweep_name_and_stamp():
    assert sweep_group("multirun/table8/2026-11-30_10-00-00") == "table8/2026-11-30_10-00-00"


TASK = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from t2cr.resources import CONF_DIR
    from t2cr.run import build_logger
    from t2cr.sweeps import wandb_identity

    @hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
    def task(cfg):
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        logger = build_logger(cfg, run_dir, job_type="train", **wandb_identity(cfg.name, run_dir))
        init = {k: logger._wandb_init.get(k) for k in ("name", "group", "job_type", "tags", "id")}
        (Path(sys.argv[0]).parent / f"job{HydraConfig.get().job.num}.json").write_text(json.dumps(
            {"folder": run_dir.relative_to(Path(HydraConfig.get().sweep.dir)).as_posix(), "wandb": init}))

    task()
""")


@pytest.mark.parametrize("config_dir", [None, "experiments"])
def test_a_composed_two_value_sweep_names_folders_and_wandb_runs(tmp_path, config_dir):
    """The real Hydra multirun of conf/train.yaml (its callbacks and sweep subdir), with a task that only
    records its folder and its W&B logger's settings (no training)."""
    script = tmp_path / "task.py"
    script.write_text(TASK)
    sweep_dir = tmp_path / "multirun" / "smoke" / "stamp"
    args = [*ISSUE_SWEEP, "logger=wandb", "data.root=/data/frames", f"hydra.sweep.dir={sweep_dir}"]
    if config_dir:  # an experiments/ sweep: its own sweeper params vary the seed (and the table's values)
        args = ["--config-dir", str(Path(__file__).resolve().parents[1] / "experiments"), "--config-name",
                "fig7_k", "data.root=/data/frames", f"hydra.sweep.dir={sweep_dir}", "logger=wandb"]
    env = {k: v for k, v in os.environ.items() if k != SWEEP_VARYING_VAR}
    result = subprocess.run([sys.executable, str(script), "-m", *args], capture_output=True, text=True,
                            timeout=300, env=env, cwd=tmp_path, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("job*.json"), key=lambda p: int(p.stem[3:]))]
    folders = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir())
    if config_dir is None:
        assert [j["folder"] for j in jobs] == ["0_model.decoder.layers=1,seed=0", "1_model.decoder.layers=2,seed=0"]
        assert folders == [j["folder"] for j in jobs]
        assert all(j["wandb"]["tags"] == [] for j in jobs)
    else:
        # <job number>_<setting name (the table's row)>_<what varies>,seed=<seed>
        assert len(jobs) == 30 and all(j["folder"].startswith(f"{i}_aqa7_diving_data.voting_exemplars=")
                                       for i, j in enumerate(jobs))
        assert all(",seed=" in j["folder"] and "/" not in j["folder"] for j in jobs)
        assert all(j["wandb"]["tags"] == ["fig7_k"] for j in jobs)
    for job in jobs:
        assert job["wandb"]["name"] == job["folder"]
        assert job["wandb"]["group"] == "smoke/stamp" and job["wandb"]["job_type"] == "train"
