"""The paper's settings (conf/experiment/) and sweeps (experiments/*.yaml): they compose, instantiate,
expand to the intended jobs, and line up with the rows of experiments/paper_results.yaml.

The sweeps are expanded without running them, the way Hydra's BasicSweeper does: the composed
sweep's `hydra.sweeper.params` are parsed with Hydra's override parser and crossed. One slow test
runs a 2-job sweep on tiny synthetic data and lays it out with t2cr-tables.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from t2cr import tables
from t2cr.config import to_dataclass
from t2cr.data.config import DataConfig
from t2cr.losses import LossConfig
from t2cr.models.t2cr import T2CRConfig, build_clip_plans
from t2cr.module import OptimConfig
from t2cr.run import CONF_DIR

REPO = CONF_DIR.parent
EXPERIMENTS = REPO / "experiments"
EXPERIMENT_DIR = CONF_DIR / "experiment"
PATHS = ["data.annotations=a", "data.root=b", "model.backbone.checkpoint=c"]
SEEDS = [0, 1, 2]

AQA7 = ["diving", "gym_vault", "ski_big_air", "snowboard_big_air", "sync_diving_3m", "sync_diving_10m"]
JIGSAWS = {"suturing": "Suturing", "needle_passing": "Needle_Passing", "knot_tying": "Knot_Tying"}
TABLE6 = {"mse": (True, False, False), "ntxent": (False, True, False), "self": (False, False, True),
          "mse_ntxent": (True, True, False), "ntxent_self": (False, True, True),
          "mse_self": (True, False, True), "mse_ntxent_self": (True, True, True)}
TABLE11 = {"none": (False, False, False), "t1": (True, False, False), "t1_c2": (True, True, False),
           "t1_c2_t3": (True, True, True)}

# overlay -> (data group, name, the data keys that define the setting)
OVERLAYS: dict[str, tuple[str, str, dict]] = {
    "mtl_aqa_dd": ("mtl_aqa", "mtl_aqa_dd", {"exemplar_rule": "difficulty", "divide_by_difficulty": True}),
    "mtl_aqa_wo_dd": ("mtl_aqa", "mtl_aqa_wo_dd", {"exemplar_rule": "random", "divide_by_difficulty": False}),
    "finediving_dn": ("finediving", "finediving_dn", {"exemplar_rule": "action_type", "divide_by_difficulty": False}),
    "finediving_wo_dn": ("finediving", "finediving_wo_dn", {"exemplar_rule": "random", "divide_by_difficulty": False}),
}
OVERLAYS.update({f"aqa7_{c}": ("aqa7", f"aqa7_{c}", {"classes": [i], "exemplar_rule": "group"})
                 for i, c in enumerate(AQA7, start=1)})
OVERLAYS.update({f"jigsaws_{t}_fold{f}": ("jigsaws", f"jigsaws_{t}_fold{f}",
                                          {"task": task, "fold": f, "exemplar_rule": "group"})
                 for t, task in JIGSAWS.items() for f in range(4)})
OVERLAYS.update({f"table6/{r}": ("mtl_aqa", f"mtl_aqa_dd_t6_{r}", {"exemplar_rule": "difficulty"}) for r in TABLE6})
OVERLAYS.update({f"table11/{r}": ("aqa7", f"aqa7_diving_t11_{r}", {"classes": [1]}) for r in TABLE11})

# sweep -> (paper table, settings per seed, base overlay)
SWEEPS: dict[str, tuple[str, int, str]] = {
    "table1": ("table1", 6, "aqa7_diving"),
    "table2": ("table2", 2, "mtl_aqa_dd"),
    "table3": ("table3", 2, "finediving_dn"),
    "table4": ("table4", 12, "jigsaws_suturing_fold0"),
    "table5": ("table5", 5, "mtl_aqa_dd"),
    "table6": ("table6", 7, "mtl_aqa_dd"),
    "table7": ("table7", 4, "mtl_aqa_dd"),
    "table8": ("table8", 5, "aqa7_diving"),
    "table9": ("table9", 4, "aqa7_diving"),
    "table10": ("table10", 4, "aqa7_diving"),
    "table11": ("table11", 4, "aqa7_diving"),
    "fig7_n": ("fig7", 8, "aqa7_diving"),
    "fig7_k": ("fig7", 10, "aqa7_diving"),
}


def compose_train(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


def instantiate(cfg) -> tuple[T2CRConfig, LossConfig, DataConfig, OptimConfig]:
    OmegaConf.resolve(cfg)
    model = to_dataclass(T2CRConfig, cfg.model)
    loss = to_dataclass(LossConfig, cfg.loss)
    data = to_dataclass(DataConfig, cfg.data)
    optim = to_dataclass(OptimConfig, cfg.optim)
    base, aux = build_clip_plans(model.clips, model.two_path)
    assert base.num_clips == data.num_clips
    if model.two_path:
        assert aux is not None
    return model, loss, data, optim


def sweep_jobs(sweep_cfg) -> list[list[str]]:
    """The jobs' overrides, as Hydra's BasicSweeper expands `hydra.sweeper.params`."""
    params = OmegaConf.to_container(sweep_cfg.hydra.sweeper.params)
    overrides = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    (jobs,) = BasicSweeper.split_arguments(overrides, None)
    return jobs


# ------------------------------------------------------------------------------------------ overlays


def test_every_overlay_is_listed():
    found = {str(p.relative_to(EXPERIMENT_DIR).with_suffix("")) for p in EXPERIMENT_DIR.rglob("*.yaml")}
    assert found - {"smoke", "paper/common"} == set(OVERLAYS)


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_overlay_composes_and_instantiates(overlay):
    group, name, expected = OVERLAYS[overlay]
    text = (EXPERIMENT_DIR / f"{overlay}.yaml").read_text()
    assert text.startswith("# @package _global_\n")
    bare = compose_train(f"experiment={overlay}")
    for key in ("annotations", "root"):  # the user passes the paths
        assert OmegaConf.is_missing(bare.data, key), key
    cfg = compose_train(f"experiment={overlay}", *PATHS)
    assert cfg.name == name and cfg.data.name == group
    model, loss, data, optim = instantiate(cfg)
    for key, value in expected.items():
        assert getattr(data, key) == value, key
    # Sec. 4.3: K = 10, N = 8, the learning rates, tau and lambda_1..5
    assert data.voting_exemplars == 10 and model.clips.aux_strategy == "8-clip-avg1"
    assert (optim.backbone_lr, optim.head_lr, optim.weight_decay) == (1e-4, 1e-3, 0.0)
    assert loss.tau == 0.1
    assert (loss.reg_weight, loss.cls_weight, loss.aln_weight, loss.self_weight, loss.path_weight) == (1, 1, 0.1, 10, 1)
    assert (model.decoder.layers, model.decoder.heads) == (3, 8)
    assert model.backbone.checkpoint == "c" and data.annotations == "a" and data.root == "b"
    assert (data.num_clips, data.num_frames) == {"mtl_aqa": (10, 103), "aqa7": (10, 103), "finediving": (9, 96),
                                                  "jigsaws": (10, 160)}[group]
    # our choices (conf/experiment/paper/common.yaml), not the paper's
    assert data.batch_size == 2 and cfg.trainer.max_epochs == 200
    # the rows of Tables 6 and 11 change only their switches
    row = overlay.split("/")[-1]
    if overlay.startswith("table6/"):
        assert (loss.use_path_mse, loss.use_path_ntxent, loss.use_self_reg) == TABLE6[row]
    elif overlay.startswith("table11/"):
        attention = model.attention
        assert (attention.feature_first, attention.clip, attention.feature_second) == TABLE11[row]
    else:  # the full T2CR: every switch at the model's default
        assert model.two_path and model.direct_regression and model.decoder.kind == "transformer"
        assert loss.use_path_mse and loss.use_path_ntxent and loss.use_self_reg and loss.use_cls and loss.use_aln


def test_variant_is_not_overridden_by_the_overlay():
    """conf/variant comes before conf/experiment in the defaults list: an overlay must leave its keys alone."""
    model, loss, _, _ = instantiate(compose_train("experiment=mtl_aqa_dd", "variant=table5_baseline", *PATHS))
    assert model.decoder.kind == "subtract" and not model.two_path and not model.direct_regression
    assert not loss.use_cls and not loss.use_aln


# -------------------------------------------------------------------------------------------- sweeps


@pytest.fixture(scope="module")
def paper():
    return tables.load_paper_results(EXPERIMENTS / "paper_results.yaml")


def compose_sweep(sweep: str, *overrides: str, hydra: bool = False):
    """As `t2cr-train --config-dir experiments --config-name <sweep>`: the sweep is the primary config,
    conf/ (with train.yaml) on the search path."""
    with initialize_config_dir(config_dir=str(EXPERIMENTS), version_base="1.3"):
        return compose(config_name=sweep, overrides=[f"hydra.searchpath=[file://{CONF_DIR}]", *overrides],
                       return_hydra_config=hydra)


def test_every_sweep_is_listed():
    found = {p.stem for p in EXPERIMENTS.glob("*.yaml")} - {"paper_results"}
    assert found == set(SWEEPS)


@pytest.mark.parametrize("sweep", sorted(SWEEPS))
def test_sweep_expands_and_every_job_composes(sweep, paper, tmp_path):
    table, settings, base = SWEEPS[sweep]
    cfg = compose_sweep(sweep, *PATHS, hydra=True)
    assert cfg.hydra.mode.name == "MULTIRUN"
    assert OmegaConf.to_container(cfg.hydra.sweep)["dir"].startswith(f"multirun/{sweep}/")
    assert cfg.hydra.runtime.choices.experiment == base
    jobs = sweep_jobs(cfg)
    assert len(jobs) == settings * len(SEEDS), jobs
    assert sorted({j for job in jobs for j in job if j.startswith("seed=")}) == [f"seed={s}" for s in SEEDS]
    settings_seen = {tuple(j for j in job if not j.startswith("seed=")) for job in jobs}
    assert len(settings_seen) == settings

    # every job composes and instantiates; its resolved config, with made-up metrics, is one run of
    # the paper's table: each row gets exactly the three seeds, nothing unmatched, mixed or missing
    runs = []
    for i, job in enumerate(jobs):
        job_cfg = compose_sweep(sweep, *PATHS, *job)
        instantiate(job_cfg)
        config = OmegaConf.to_container(job_cfg, resolve=True)
        runs.append(tables.Run(path=tmp_path / str(i), config=config,
                               metrics={"test/spearman": 0.5 + 0.01 * i, "test/rl2": 1.0}))
    result = tables.build_table(runs, paper, table)
    assert not result.issues, [issue.text() for issue in result.issues]
    rows = [row for row in result.rows if not row.average]
    expected_rows = {"table4": 3}.get(table, settings)  # Table 4 combines the four folds of a task
    assert len(rows) == expected_rows
    assert all(row.seeds == SEEDS for row in result.rows)
    if table != "fig7":
        inferred, _ = tables.infer_table(runs, paper)
        assert inferred == table


def test_table5_jobs_are_the_variants():
    cfg = compose_sweep("table5", "variant=table5_action_type", "seed=1", *PATHS)
    model, _, data, _ = instantiate(cfg)
    assert model.action_classifier and not model.two_path and data.exemplar_rule == "difficulty"
    assert cfg.seed == 1 and data.seed == 1


def test_seeds_can_be_replaced_from_the_command_line():
    """Command-line sweeps come after hydra.sweeper.params, key by key, as in BasicSweeper.sweep."""
    cfg = compose_sweep("table8", *PATHS, hydra=True)
    params = OmegaConf.to_container(cfg.hydra.sweeper.params)
    arguments = [f"{k}={v}" for k, v in params.items()] + ["seed=0,1,2,3,4", "model.decoder.layers=1,3"]
    (jobs,) = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(arguments), None)
    assert len(jobs) == 10


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_make_targets_pass_the_paths():
    for sweep in SWEEPS:
        out = subprocess.run(["make", "-n", "-o", ".install.stamp", sweep,
                              "ANNOTATIONS=/ann", "DATA_ROOT=/frames", "I3D=/i3d.pth", "SEEDS=0,1"],
                             cwd=REPO, capture_output=True, text=True, check=True).stdout
        assert f"--config-dir experiments --config-name {sweep}" in out
        assert "data.annotations=/ann data.root=/frames model.backbone.checkpoint=/i3d.pth" in out
        assert "seed=0,1" in out
    missing = subprocess.run(["make", "-o", ".install.stamp", "table8"], cwd=REPO, capture_output=True, text=True,
                             check=False)
    assert missing.returncode != 0 and "ANNOTATIONS" in missing.stdout + missing.stderr


# ------------------------------------------------------------------------------------------ slow: run


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_two_rows_of_table8_on_synthetic_data(tiny_synthetic, tmp_path):
    """Two rows of the Table 8 sweep (layers 1 and 3, one seed) on tiny synthetic data, one sweep
    folder, then t2cr-tables lays them out beside the paper's 0.8226 and 0.8901."""
    from framework_helpers import run_cli, tiny_overrides

    sweep_dir = tmp_path / "sweep"
    overrides = [o for o in tiny_overrides(tiny_synthetic) if not o.startswith("trainer.max_epochs=")]
    run_cli("train", ["--config-dir", str(EXPERIMENTS), "--config-name", "table8", *overrides,
                      "trainer.max_epochs=1", "model.decoder.layers=1,3", "seed=0",
                      f"hydra.sweep.dir={sweep_dir}"], cwd=tmp_path, timeout=200)
    jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir())
    assert [p.name.split("_")[0] for p in jobs] == ["0", "1"] and all("smoke" in p.name for p in jobs)
    runs = tables.load_runs(sweep_dir)
    assert sorted(r.get("model.decoder.layers") for r in runs) == [1, 3] and not any(r.failed for r in runs)

    result = subprocess.run([sys.executable, "-m", "t2cr.cli.tables", str(sweep_dir), "--table", "table8",
                             "--no-filter"], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    lines = {line.split("|")[1].strip(): line for line in result.stdout.splitlines() if line.startswith("| ")}
    assert "0.8226" in lines["1"] and "(n=1)" in lines["1"]
    assert "0.8901" in lines["3"] and "(n=1)" in lines["3"]
    assert "(n=1)" not in lines["5"]
