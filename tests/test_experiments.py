"""The paper's settings (conf/experiment/) and sweeps (experiments/*.yaml): they compose, instantiate,
expand to the intended jobs, and line up with the rows of experiments/paper_results.yaml.

The sweeps are expanded without running them, the way Hydra's BasicSweeper does: the composed
sweep's `hydra.sweeper.params` are parsed with Hydra's override parser and crossed. One slow test
runs a 2-job sweep on tiny synthetic data and lays it out with t2cr-tables.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from t2cr import tables
from t2cr.config import to_dataclass
from t2cr.data.config import DataConfig
from t2cr.losses import LossConfig
from t2cr.methods import method_of
from t2cr.metrics import fisher_z_mean
from t2cr.models.t2cr import T2CRConfig, build_clip_plans
from t2cr.module import OptimConfig
from t2cr.resources import CONF_DIR

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "experiments"
EXPERIMENT_DIR = CONF_DIR / "experiment"
PATHS = ["data.annotations=a", "data.root=b", "model.backbone.checkpoint=c"]
SEEDS = [0, 1, 2]

TABLE6 = {"mse": (True, False, False), "ntxent": (False, True, False), "self": (False, False, True),
          "mse_ntxent": (True, True, False), "ntxent_self": (False, True, True),
          "mse_self": (True, False, True), "mse_ntxent_self": (True, True, True)}
TABLE11 = {"none": (False, False, False), "t1": (True, False, False), "t1_c2": (True, True, False),
           "t1_c2_t3": (True, True, True)}

MTL_DD = {"exemplar_rule": "difficulty", "divide_by_difficulty": True}
AQA7_DIVING = {"classes": [1], "exemplar_rule": "group", "divide_by_difficulty": False}

# Every setting of the paper, each reachable by one command: setting -> (overrides, data group, run name,
# the data values that define it). The values are those of the per-class / per-fold overlays these
# commands replace (conf/experiment/aqa7_<class>.yaml, jigsaws_<task>_fold<f>.yaml, named by the keys
# here): both forms were composed side by side, and the whole resolved config of every setting and of
# every sweep job was the same but for the run name.
SETTINGS: dict[str, tuple[list[str], str, str, dict]] = {
    "mtl_aqa_dd": (["experiment=mtl_aqa_dd"], "mtl_aqa", "mtl_aqa_dd", MTL_DD),
    "mtl_aqa_wo_dd": (["experiment=mtl_aqa_wo_dd"], "mtl_aqa", "mtl_aqa_wo_dd",
                      {"exemplar_rule": "random", "divide_by_difficulty": False, "score_range": [0.0, 104.5]}),
    "finediving_dn": (["experiment=finediving_dn"], "finediving", "finediving_dn",
                      {"exemplar_rule": "action_type", "divide_by_difficulty": False}),
    "finediving_wo_dn": (["experiment=finediving_wo_dn"], "finediving", "finediving_wo_dn",
                         {"exemplar_rule": "random", "divide_by_difficulty": False}),
    "aqa7_diving": (["experiment=aqa7", "data.classes=[1]"], "aqa7", "aqa7_diving", AQA7_DIVING),
    "aqa7_gym_vault": (["experiment=aqa7", "data.classes=[2]"], "aqa7", "aqa7_gym_vault",
                       {"classes": [2], "exemplar_rule": "group", "divide_by_difficulty": False}),
    "aqa7_ski_big_air": (["experiment=aqa7", "data.classes=[3]"], "aqa7", "aqa7_ski_big_air",
                         {"classes": [3], "exemplar_rule": "group", "divide_by_difficulty": False}),
    "aqa7_snowboard_big_air": (["experiment=aqa7", "data.classes=[4]"], "aqa7", "aqa7_snowboard_big_air",
                               {"classes": [4], "exemplar_rule": "group", "divide_by_difficulty": False}),
    "aqa7_sync_diving_3m": (["experiment=aqa7", "data.classes=[5]"], "aqa7", "aqa7_sync_diving_3m",
                            {"classes": [5], "exemplar_rule": "group", "divide_by_difficulty": False}),
    "aqa7_sync_diving_10m": (["experiment=aqa7", "data.classes=[6]"], "aqa7", "aqa7_sync_diving_10m",
                             {"classes": [6], "exemplar_rule": "group", "divide_by_difficulty": False}),
    **{f"jigsaws_{task.lower()}_fold{fold}": (
        ["experiment=jigsaws", f"data.task={task}", f"data.fold={fold}"], "jigsaws", f"jigsaws_{task}_fold{fold}",
        {"task": task, "fold": fold, "exemplar_rule": "group", "divide_by_difficulty": False})
       for task in ("Suturing", "Needle_Passing", "Knot_Tying") for fold in range(4)},
    # the rows of Tables 6 and 11 change only their switches (checked below), not the data
    **{f"table6/{r}": ([f"experiment=table6/{r}"], "mtl_aqa", f"mtl_aqa_dd_t6_{r}", MTL_DD) for r in TABLE6},
    **{f"table11/{r}": ([f"experiment=table11/{r}"], "aqa7", f"aqa7_diving_t11_{r}", AQA7_DIVING) for r in TABLE11},
}
# overlay file -> the setting it gives without further overrides
OVERLAYS = {"mtl_aqa_dd": "mtl_aqa_dd", "mtl_aqa_wo_dd": "mtl_aqa_wo_dd", "finediving_dn": "finediving_dn",
            "finediving_wo_dn": "finediving_wo_dn", "aqa7": "aqa7_diving", "jigsaws": "jigsaws_suturing_fold0",
            **{f"table6/{r}": f"table6/{r}" for r in TABLE6}, **{f"table11/{r}": f"table11/{r}" for r in TABLE11}}

# sweep -> (paper table, settings per seed, base overlay, the paper setting of each setting in job order:
# a list of len(settings per seed), or one setting shared by every job)
SWEEPS: dict[str, tuple[str, int, str, list[str] | str]] = {
    "table1": ("table1", 6, "aqa7", ["aqa7_diving", "aqa7_gym_vault", "aqa7_ski_big_air", "aqa7_snowboard_big_air",
                                     "aqa7_sync_diving_3m", "aqa7_sync_diving_10m"]),
    "table2": ("table2", 2, "mtl_aqa_dd", ["mtl_aqa_wo_dd", "mtl_aqa_dd"]),
    "table3": ("table3", 2, "finediving_dn", ["finediving_wo_dn", "finediving_dn"]),
    "table4": ("table4", 12, "jigsaws", [f"jigsaws_{task}_fold{fold}" for task in ("suturing", "needle_passing",
                                                                                     "knot_tying")
                                         for fold in range(4)]),
    "table5": ("table5", 5, "mtl_aqa_dd", "mtl_aqa_dd"),
    "table6": ("table6", 7, "mtl_aqa_dd", [f"table6/{r}" for r in TABLE6]),
    "table7": ("table7", 4, "mtl_aqa_dd", "mtl_aqa_dd"),
    "table8": ("table8", 5, "aqa7", "aqa7_diving"),
    "table9": ("table9", 4, "aqa7", "aqa7_diving"),
    "table10": ("table10", 4, "aqa7", "aqa7_diving"),
    "table11": ("table11", 4, "aqa7", [f"table11/{r}" for r in TABLE11]),
    "fig7_n": ("fig7", 8, "aqa7", "aqa7_diving"),
    "fig7_k": ("fig7", 10, "aqa7", "aqa7_diving"),
    # T2CR, USDL, MUSDL, CoRe at their papers' settings (conf/paper_method), rows by model.method
    "methods": ("methods_mtl_aqa_dd", 4, "mtl_aqa_dd", "mtl_aqa_dd"),
}
# the row of the paper's table that each setting's runs fill (where the setting, not a swept model key,
# selects the row)
ROWS: dict[str, dict[str, str]] = {
    "table1": {"aqa7_diving": "diving", "aqa7_gym_vault": "gym_vault", "aqa7_ski_big_air": "ski_big_air",
               "aqa7_snowboard_big_air": "snowboard_big_air", "aqa7_sync_diving_3m": "sync_diving_3m",
               "aqa7_sync_diving_10m": "sync_diving_10m"},
    "table2": {"mtl_aqa_wo_dd": "w/o DD", "mtl_aqa_dd": "w/ DD"},
    "table3": {"finediving_wo_dn": "w/o DN", "finediving_dn": "w/ DN"},
    "table4": {f"jigsaws_{task}_fold{fold}": row for task, row in
               (("suturing", "S"), ("needle_passing", "NP"), ("knot_tying", "KT")) for fold in range(4)},
    "table6": {"table6/mse": "mse", "table6/ntxent": "ntxent", "table6/self": "self_reg",
               "table6/mse_ntxent": "mse+ntxent", "table6/ntxent_self": "ntxent+self_reg",
               "table6/mse_self": "mse+self_reg", "table6/mse_ntxent_self": "mse+ntxent+self_reg"},
    "table11": {"table11/none": "none", "table11/t1": "t1", "table11/t1_c2": "t1+c2", "table11/t1_c2_t3": "t1+c2+t3"},
}


def compose_train(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


def instantiate(cfg) -> tuple[T2CRConfig, LossConfig, DataConfig, OptimConfig]:
    OmegaConf.resolve(cfg)
    model = to_dataclass(method_of(cfg.model).config, cfg.model)  # each method by its own schema
    loss = to_dataclass(LossConfig, cfg.loss)
    data = to_dataclass(DataConfig, cfg.data)
    optim = to_dataclass(OptimConfig, cfg.optim)
    two_path = getattr(model, "two_path", False)  # the baselines have one path
    base, aux = build_clip_plans(model.clips, two_path)
    assert base.num_clips == data.num_clips
    if two_path:
        assert aux is not None
    return model, loss, data, optim


def sweep_jobs(sweep_cfg) -> list[list[str]]:
    """The jobs' overrides, as Hydra's BasicSweeper expands `hydra.sweeper.params`."""
    params = OmegaConf.to_container(sweep_cfg.hydra.sweeper.params)
    overrides = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    (jobs,) = BasicSweeper.split_arguments(overrides, None)
    return jobs


# ------------------------------------------------------------------------------------------ overlays


def expected_data(group: str, values: dict) -> dict:
    """The data section a paper setting must have: the data group's values, the shared paper settings
    (experiment/paper/common.yaml), then exactly the setting's own values, as the old overlays built it."""
    cfg = compose_train("experiment=paper/common", f"data={group}", *PATHS)
    data = OmegaConf.to_container(cfg.data, resolve=True)
    assert set(values) <= set(data), set(values) - set(data)
    return {**data, **values}


def test_every_overlay_is_listed():
    found = {str(p.relative_to(EXPERIMENT_DIR).with_suffix("")) for p in EXPERIMENT_DIR.rglob("*.yaml")}
    assert found - {"smoke", "paper/common"} == set(OVERLAYS)
    # one overlay per setting of the paper: classes and folds are values, not files
    assert {overrides[0].removeprefix("experiment=") for overrides, *_ in SETTINGS.values()} == set(OVERLAYS)
    assert len(OVERLAYS) == 4 + 2 + len(TABLE6) + len(TABLE11) < len(SETTINGS) == 4 + 6 + 12 + len(TABLE6) + len(TABLE11)


def test_run_names_tell_the_settings_apart():
    names = [name for _, _, name, _ in SETTINGS.values()]
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_overlay_alone_is_its_default_setting(overlay):
    overrides, _, name, _ = SETTINGS[OVERLAYS[overlay]]
    alone, explicit = compose_train(f"experiment={overlay}", *PATHS), compose_train(*overrides, *PATHS)
    assert OmegaConf.to_container(alone, resolve=True) == OmegaConf.to_container(explicit, resolve=True)
    assert alone.name == name


@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_setting_composes_and_instantiates(setting):
    overrides, group, name, expected = SETTINGS[setting]
    overlay = overrides[0].removeprefix("experiment=")
    text = (EXPERIMENT_DIR / f"{overlay}.yaml").read_text()
    assert text.startswith("# @package _global_\n")
    bare = compose_train(*overrides)
    assert OmegaConf.is_missing(bare.data, "root")  # the user passes the frames
    # the official annotation files ship with t2cr, except AQA-7's (its archive only: refused when read)
    assert bare.data.annotations == "packaged"
    cfg = compose_train(*overrides, *PATHS)
    assert cfg.name == name and cfg.data.name == group
    assert OmegaConf.to_container(cfg.data, resolve=True) == expected_data(group, expected)
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
    row = setting.split("/")[-1]
    if setting.startswith("table6/"):
        assert (loss.use_path_mse, loss.use_path_ntxent, loss.use_self_reg) == TABLE6[row]
    elif setting.startswith("table11/"):
        attention = model.attention
        assert (attention.feature_first, attention.clip, attention.feature_second) == TABLE11[row]
    else:  # the full T2CR: every switch at the model's default
        assert model.two_path and model.direct_regression and model.decoder.kind == "transformer"
        assert loss.use_path_mse and loss.use_path_ntxent and loss.use_self_reg and loss.use_cls and loss.use_aln


def test_aqa7_on_several_classes_composes():
    """One model on all six classes (data.classes=null) or on a few still composes under the paper's setting."""
    cfg = compose_train("experiment=aqa7", "data.classes=null", *PATHS)
    assert cfg.name == "aqa7_all" and instantiate(cfg)[2].classes is None
    cfg = compose_train("experiment=aqa7", "data.classes=[2,5]", *PATHS)
    assert instantiate(cfg)[2].classes == [2, 5]


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
    table, settings, base, job_settings = SWEEPS[sweep]
    cfg = compose_sweep(sweep, *PATHS, hydra=True)
    assert cfg.hydra.mode.name == "MULTIRUN"
    assert OmegaConf.to_container(cfg.hydra.sweep)["dir"].startswith(f"multirun/{sweep}/")
    assert cfg.hydra.runtime.choices.experiment == base
    jobs = sweep_jobs(cfg)
    assert len(jobs) == settings * len(SEEDS), jobs
    assert sorted({j for job in jobs for j in job if j.startswith("seed=")}) == [f"seed={s}" for s in SEEDS]
    settings_seen = {tuple(j for j in job if not j.startswith("seed=")) for job in jobs}
    assert len(settings_seen) == settings
    if isinstance(job_settings, str):
        job_settings = [job_settings] * settings
    assert len(job_settings) == settings
    data_expected = {s: expected_data(SETTINGS[s][1], SETTINGS[s][3]) for s in set(job_settings)}

    # every job composes and instantiates with the data settings and run name of its paper setting (the
    # seed is swept last: jobs i*3 .. i*3+2 are setting i); its resolved config, with made-up metrics, is
    # one run of the paper's table: each row gets exactly the three seeds, nothing unmatched, mixed or
    # missing, and the setting's runs fill the setting's row
    runs, row_values = [], {}
    for i, job in enumerate(jobs):
        job_cfg = compose_sweep(sweep, *PATHS, *job)
        setting = job_settings[i // len(SEEDS)]
        name = SETTINGS[setting][2]
        assert job_cfg.name == name and job_cfg.seed == SEEDS[i % len(SEEDS)], job
        # the setting's own values come from the table above, not from the job's overrides; other data
        # keys a sweep varies (K in Fig. 7) are the job's
        swept = {key.removeprefix("data."): yaml.safe_load(value) for key, _, value in
                 (o.partition("=") for o in job) if key.startswith("data.") and key[5:] not in SETTINGS[setting][3]}
        assert OmegaConf.to_container(job_cfg.data, resolve=True) == {**data_expected[setting], **swept,
                                                                      "seed": job_cfg.seed}, job
        instantiate(job_cfg)
        config = OmegaConf.to_container(job_cfg, resolve=True)
        metrics = {"test/spearman": 0.5 + 0.01 * i, "test/rl2": 1.0 + i}
        runs.append(tables.Run(path=tmp_path / str(i), config=config, metrics=metrics))
        if table in ROWS:
            row_values.setdefault((ROWS[table][setting], job_cfg.seed), []).append(metrics)
    result = tables.build_table(runs, paper, table)
    assert not result.issues, [issue.text() for issue in result.issues]
    rows = [row for row in result.rows if not row.average]
    expected_rows = {"table4": 3}.get(table, settings)  # Table 4 combines the four folds of a task
    assert len(rows) == expected_rows
    assert all(row.seeds == SEEDS for row in result.rows)
    if table in ROWS:
        assert {row.name for row in rows} == set(ROWS[table].values())
        for row in rows:
            for seed in SEEDS:
                cell = row_values[row.name, seed]  # one run per seed, or the four folds of a JIGSAWS task
                assert len(cell) == (4 if table == "table4" else 1)
                assert row.values["spearman"][seed] == pytest.approx(
                    fisher_z_mean([m["test/spearman"] for m in cell]))
                assert row.values["rl2"][seed] == pytest.approx(sum(m["test/rl2"] for m in cell) / len(cell))
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
                      "trainer.max_epochs=2", "trainer.check_val_every_n_epoch=1", "model.decoder.layers=1,3",
                      "seed=0",
                      f"hydra.sweep.dir={sweep_dir}"], cwd=tmp_path, timeout=200)
    jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir())
    assert [p.name.split("_")[0] for p in jobs] == ["0", "1"] and all("smoke" in p.name for p in jobs)
    runs = tables.load_runs(sweep_dir)
    assert sorted(r.get("model.decoder.layers") for r in runs) == [1, 3] and not any(r.failed for r in runs)

    result = subprocess.run([sys.executable, "-m", "t2cr.cli.tables", str(sweep_dir), "--table", "table8",
                             "--no-filter"], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    # a row name carries the marks of its deviations from the paper's protocol: "1 [a, b]"
    lines = {line.split("|")[1].strip().split(" [")[0]: line for line in result.stdout.splitlines()
             if line.startswith("| ")}
    assert "0.8226" in lines["1"] and "(n=1)" in lines["1"]
    assert "0.8901" in lines["3"] and "(n=1)" in lines["3"]
    assert "(n=1)" not in lines["5"]

    # the reference's protocol: each run's best test Spearman and lowest test R-l2 over its evaluated epochs
    # (no validation split: the epochs were evaluated on test), by hand from its curve and last evaluation
    for run in runs:
        metrics = json.loads((run.path / "metrics.json").read_text())
        curve = metrics["curve"]
        assert [p["epoch"] for p in curve] == [0, 1]
        assert metrics["reference/test/spearman"] == max([p["val/spearman"] for p in curve] + [metrics["test/spearman"]])
        assert metrics["reference/test/rl2"] == min([p["val/rl2"] for p in curve] + [metrics["test/rl2"]])
    reference = subprocess.run([sys.executable, "-m", "t2cr.cli.tables", str(sweep_dir), "--table", "table8",
                                "--no-filter", "--protocol", "reference"], cwd=tmp_path, capture_output=True,
                               text=True, timeout=60, check=False)
    assert reference.returncode == 0, reference.stderr
    assert "(the reference's protocol" in reference.stdout
