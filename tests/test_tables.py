"""Tests for t2cr.tables / t2cr-tables on fake sweep folders, and spot checks of paper_results.yaml."""

from __future__ import annotations

import csv
import io
import json
import math
import statistics

import pytest
import yaml

from t2cr import tables
from t2cr.cli.tables import main as tables_main
from t2cr.metrics import fisher_z_mean


@pytest.fixture(scope="module")
def paper():
    return tables.load_paper_results()


def _config(seed, data_name="aqa7", classes=(1,), layers=3, heads=8, strategy="8-clip-avg1",
            attention=(True, True, True), path_losses=(True, True, True), task=None, fold=None,
            exemplar_rule="group"):
    data = {"name": data_name, "classes": list(classes) if classes is not None else None,
            "exemplar_rule": exemplar_rule, "voting_exemplars": 10, "seed": seed}
    if task is not None:
        data = {"name": data_name, "task": task, "fold": fold, "exemplar_rule": exemplar_rule,
                "voting_exemplars": 10, "seed": seed}
    return {
        "name": data_name, "seed": seed, "data": data,
        "model": {
            "clips": {"aux_strategy": strategy},
            "attention": dict(zip(("feature_first", "clip", "feature_second"), attention)),
            "decoder": {"kind": "transformer", "layers": layers, "heads": heads},
            "direct_regression": True, "action_classifier": True, "two_path": True,
        },
        "loss": {**dict(zip(("use_path_mse", "use_path_ntxent", "use_self_reg"), path_losses)),
                 "use_cls": True, "use_aln": True},
    }


def _job(root, num, name, config, metrics=None, overrides=()):
    """A Hydra multirun job folder: config.yaml, .hydra/overrides.yaml and (unless failed) metrics.json."""
    job = root / f"{num}_{name}"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(list(overrides) or [name]))
    if metrics is not None:
        (job / "config.yaml").write_text(yaml.safe_dump(config))
        (job / "metrics.json").write_text(json.dumps(metrics))
    else:  # a job that died: only Hydra's own copy of the config
        (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    return job


def _metrics(sp, rl2, best_sp=None, best_rl2=None, **extra):
    out = {"test/spearman": sp, "test/rl2": rl2, "test/l2": 1.0,
           "best/test/spearman": sp if best_sp is None else best_sp,
           "best/test/rl2": rl2 if best_rl2 is None else best_rl2}
    out.update(extra)
    return out


def _row(result, name):
    return next(r for r in result.rows if r.name == name)


# ------------------------------------------------------------------------------ Table 8 (plain layout)


@pytest.fixture()
def table8_sweep(tmp_path):
    sweep = tmp_path / "multirun" / "aqa7" / "stamp"
    sweep.mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    values = {  # layers -> seed -> (spearman, rl2); rows 5 and 10 have no finished run
        1: {0: (0.80, 0.70), 1: (0.84, 0.66)},
        3: {0: (0.88, 0.60), 1: (0.90, 0.56)},
        7: {0: (0.86, 0.64)},
    }
    num = 0
    for layers, seeds in values.items():
        for seed, (sp, rl2) in seeds.items():
            _job(sweep, num, f"model.decoder.layers={layers},seed={seed}", _config(seed, layers=layers),
                 _metrics(sp, rl2, best_sp=sp + 0.01, best_rl2=rl2 - 0.01))
            num += 1
    failed = _job(sweep, num, "model.decoder.layers=7,seed=1", _config(1, layers=7), None,
                  overrides=["model.decoder.layers=7", "seed=1"])
    return sweep, failed


def test_table8_means_stds_paper_and_difference(table8_sweep, paper):
    sweep, _ = table8_sweep
    runs = tables.load_runs(sweep)
    assert len(runs) == 6
    result = tables.build_table(runs, paper, "table8")
    assert [r.name for r in result.rows] == ["1", "3", "5", "7", "10"]
    one = _row(result, "1")
    assert one.n == 2 and one.seeds == [0, 1]
    assert one.mean("spearman") == pytest.approx(0.82)
    assert one.std("spearman") == pytest.approx(statistics.stdev([0.80, 0.84]))
    assert one.std("spearman") == pytest.approx(math.sqrt(2 * 0.02**2))  # ddof=1 by hand
    assert one.mean("rl2") == pytest.approx(0.68)
    assert one.paper == {"spearman": 0.8226, "rl2": 0.68}
    assert one.diff("spearman") == pytest.approx(0.82 - 0.8226)
    assert one.diff("rl2") == pytest.approx(0.0, abs=1e-12)
    three = _row(result, "3")
    assert three.mean("spearman") == pytest.approx(0.89)
    assert three.mean("rl2") == pytest.approx(0.58)
    assert three.diff("spearman") == pytest.approx(0.89 - 0.8901)
    seven = _row(result, "7")
    assert seven.n == 1 and seven.std("spearman") is None
    assert _row(result, "5").n == 0 and _row(result, "5").mean("spearman") is None

    md = tables.render_markdown(result)
    assert "Table 8" in md
    line = next(ln for ln in md.splitlines() if ln.startswith("| 1 |"))
    assert "0.8200 ± 0.0283 (n=2)" in line and "0.8226" in line and "-0.0026" in line
    assert "0.6800 ± 0.0283 (n=2)" in line and "0.68" in line and "+0.0000" in line
    assert any(ln.startswith("| 5 | — |") for ln in md.splitlines())


def test_table8_lists_missing_rows_and_failed_job(table8_sweep, paper):
    sweep, failed = table8_sweep
    result = tables.build_table(tables.load_runs(sweep), paper, "table8")
    kinds = {(i.kind, i.row) for i in result.issues}
    assert ("missing", "5") in kinds and ("missing", "10") in kinds
    assert ("failed", "7") in kinds
    fail = next(i for i in result.issues if i.kind == "failed")
    assert fail.seed == 1 and fail.path == str(failed) and "no metrics.json" in fail.detail
    assert "model.decoder.layers=7 seed=1" in fail.detail
    md = tables.render_markdown(result)
    tail = md.split("Missing / failed / left out:")[1]
    assert "missing: row 5" in tail and "missing: row 10" in tail
    assert "failed: row 7, seed 1" in tail and str(failed) in tail


def test_table8_best_metric(table8_sweep, paper):
    sweep, _ = table8_sweep
    result = tables.build_table(tables.load_runs(sweep), paper, "table8", metric="best")
    assert _row(result, "1").mean("spearman") == pytest.approx(0.83)
    assert _row(result, "1").mean("rl2") == pytest.approx(0.67)
    assert "best/test/spearman" in tables.render_markdown(result)


def test_table8_csv_parses(table8_sweep, paper):
    sweep, _ = table8_sweep
    result = tables.build_table(tables.load_runs(sweep), paper, "table8")
    rows = list(csv.DictReader(io.StringIO(tables.render_csv(result))))
    assert list(rows[0]) == tables.CSV_COLUMNS
    data = {r["row"]: r for r in rows if r["kind"] == "row"}
    assert set(data) == {"1", "3", "5", "7", "10"}
    assert float(data["1"]["spearman_mean"]) == pytest.approx(0.82)
    assert float(data["1"]["spearman_std"]) == pytest.approx(statistics.stdev([0.80, 0.84]))
    assert float(data["1"]["spearman_paper"]) == 0.8226
    assert float(data["1"]["spearman_diff"]) == pytest.approx(0.82 - 0.8226)
    assert data["1"]["n"] == "2" and data["1"]["seeds"] == "0 1"
    assert data["5"]["spearman_mean"] == "" and data["5"]["n"] == "0"
    assert data["7"]["spearman_std"] == ""
    issues = [(r["kind"], r["row"]) for r in rows if r["kind"] not in ("row", "average")]
    assert ("failed", "7") in issues and ("missing", "5") in issues and ("missing", "10") in issues


def test_cli_auto_markdown_and_csv_file(table8_sweep, tmp_path, capsys):
    sweep, _ = table8_sweep
    assert tables_main([str(sweep)]) == 0
    captured = capsys.readouterr()
    assert "table8" in captured.err and "model.decoder.layers" in captured.err
    assert "| 3 | 0.8900 ± 0.0141 (n=2) | 0.8901 | -0.0001 |" in captured.out
    out = tmp_path / "t8.csv"
    assert tables_main([str(sweep), "--table", "table8", "--format", "csv", "--out", str(out),
                        "--metric", "best"]) == 0
    rows = list(csv.DictReader(out.open()))
    assert {r["metric"] for r in rows} == {"best"}
    assert tables_main([str(sweep), "--table", "table99"]) == 2


def test_other_dataset_runs_are_listed_not_used(table8_sweep, paper):
    sweep, _ = table8_sweep
    _job(sweep, 50, "data=synthetic", _config(0, data_name="synthetic", layers=3), _metrics(0.1, 9.0))
    _job(sweep, 51, "model.decoder.layers=2", _config(0, layers=2), _metrics(0.5, 1.0))
    _job(sweep, 52, "dup", _config(0, layers=3), _metrics(0.2, 2.0))
    result = tables.build_table(tables.load_runs(sweep), paper, "table8")
    assert _row(result, "3").mean("spearman") == pytest.approx(0.89)  # neither the synthetic nor the dup
    kinds = [i.kind for i in result.issues]
    assert "skipped" in kinds and "unmatched" in kinds and "duplicate" in kinds
    skipped = next(i for i in result.issues if i.kind == "skipped")
    assert "data.name=synthetic" in skipped.detail
    unfiltered = tables.build_table(tables.load_runs(sweep), paper, "table8", use_filter=False)
    assert _row(unfiltered, "3").n == 2  # seed 0 of the synthetic run duplicates the aqa7 seed 0


def test_mixed_settings_within_a_row_are_reported(tmp_path, paper):
    _job(tmp_path, 0, "a", _config(0, layers=3, heads=8), _metrics(0.9, 0.6))
    _job(tmp_path, 1, "b", _config(1, layers=3, heads=16), _metrics(0.8, 0.7))
    result = tables.build_table(tables.load_runs(tmp_path), paper, "table8")
    mixed = [i for i in result.issues if i.kind == "mixed"]
    assert mixed and mixed[0].row == "3" and "model.decoder.heads" in mixed[0].detail


# ------------------------------------------------------------------------------------------- Table 6


def test_table6_rows_keyed_by_three_switches(tmp_path, paper):
    sweep = tmp_path / "t6"
    settings = {(True, True, True): [(0.96, 0.22), (0.97, 0.24)],
                (True, False, False): [(0.95, 0.25)],
                (False, True, True): [(0.94, 0.26), (0.96, 0.22)]}
    num = 0
    for switches, values in settings.items():
        for seed, (sp, rl2) in enumerate(values):
            _job(sweep, num, f"s{num}", _config(seed, data_name="mtl_aqa", classes=None, path_losses=switches,
                                                exemplar_rule="difficulty"), _metrics(sp, rl2))
            num += 1
    _job(sweep, num, "failed", _config(0, data_name="mtl_aqa", classes=None, path_losses=(True, True, False)))
    runs = tables.load_runs(sweep)
    assert tables.infer_table(runs, paper)[0] == "table6"
    result = tables.build_table(runs, paper, "table6")
    full = _row(result, "mse+ntxent+self_reg")
    assert full.mean("spearman") == pytest.approx(0.965) and full.mean("rl2") == pytest.approx(0.23)
    assert full.std("rl2") == pytest.approx(statistics.stdev([0.22, 0.24]))
    assert full.paper == {"spearman": 0.9638, "rl2": 0.222}
    assert full.diff("spearman") == pytest.approx(0.965 - 0.9638)
    assert _row(result, "mse").mean("spearman") == pytest.approx(0.95)
    assert _row(result, "ntxent+self_reg").mean("spearman") == pytest.approx(0.95)
    missing = {i.row for i in result.issues if i.kind == "missing"}
    assert missing == {"ntxent", "self_reg", "mse+ntxent", "mse+self_reg"}
    assert [(i.row, i.seed) for i in result.issues if i.kind == "failed"] == [("mse+ntxent", 0)]
    line = next(ln for ln in tables.render_markdown(result).splitlines() if ln.startswith("| mse+ntxent+self_reg"))
    assert "0.9650 ± 0.0071 (n=2)" in line and "0.9638" in line and "+0.0012" in line


def test_fast_ablation_runs_are_labelled_a_deviation(tmp_path, paper):
    sweep = tmp_path / "t6fast"
    for seed in (0, 1):
        config = _config(seed, data_name="mtl_aqa", classes=None, exemplar_rule="difficulty")
        config["runtime"] = {"stored_features": seed == 0}
        _job(sweep, seed, f"s{seed}", config, _metrics(0.9, 0.3))
    result = tables.build_table(tables.load_runs(sweep), paper, "table6")
    # a Deviation (mark, text, runs) since the protocol labels: the text as before, a mark on the rows
    assert result.deviations and result.deviations[0].text.startswith("1 of 2 runs: fast ablation mode")
    markdown = tables.render_markdown(result)
    assert "- **Deviation from the paper** [a]: 1 of 2 runs: fast ablation mode" in markdown
    assert any(ln.startswith("| mse+ntxent+self_reg [a] |") for ln in markdown.splitlines())
    rows = list(csv.DictReader(io.StringIO(tables.render_csv(result))))
    assert [r["kind"] for r in rows].count("deviation") == 1
    plain = tables.build_table(tables.load_runs(sweep / "1_s1"), paper, "table6")
    assert plain.deviations == [] and "Deviation" not in tables.render_markdown(plain)


def _hydra_record(job, experiment, data):
    """The choices Hydra records in .hydra/hydra.yaml (the run's experiment and data config)."""
    (job / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(
        {"hydra": {"runtime": {"choices": {"experiment": experiment, "data": data, "data/transform": "ours"}}}}))


def test_runs_off_the_paper_protocol_are_marked_and_listed(tmp_path, paper):
    """Issue 21 point 8: a throwaway run (random-init I3D, 2 steps, 8 of 1059 training samples, small frames)
    is marked in the row and each way it differs is listed under the table."""
    sweep = tmp_path / "t2"
    paper_like = _config(0, data_name="mtl_aqa", classes=None, exemplar_rule="difficulty")
    paper_like["data"]["transform"] = {"resize": [128, 228], "crop": [112, 112]}
    paper_like["trainer"] = {"max_epochs": 200, "limit_train_batches": None, "limit_val_batches": 1.0}
    paper_like["model"]["backbone"] = {"random_init": False}
    full = _job(sweep, 0, "full", paper_like, _metrics(0.96, 0.22, epochs=200, samples_per_split={
        "train": {"found": 1059, "dropped": 0, "kept": 1059}, "test": {"found": 353, "dropped": 0, "kept": 353}}))
    _hydra_record(full, "mtl_aqa_dd", "mtl_aqa")
    throwaway = _config(1, data_name="mtl_aqa", classes=None, exemplar_rule="random")
    throwaway["data"]["transform"] = {"resize": [64, 64], "crop": [56, 56], "interpolation": "nearest"}
    throwaway["trainer"] = {"max_epochs": 1, "limit_train_batches": 2, "limit_test_batches": 0.5}
    throwaway["model"]["backbone"] = {"random_init": True}
    small = _job(sweep, 1, "throwaway", throwaway, _metrics(0.70, 4.0, epochs=1, samples_per_split={
        "train": {"found": 1059, "dropped": 1051, "kept": 8}, "test": {"found": 353, "dropped": 349, "kept": 4}}))
    _hydra_record(small, "mtl_aqa_wo_dd", "mtl_aqa")
    result = tables.build_table(tables.load_runs(sweep), paper, "table2")
    texts = {d.mark: d.text for d in result.deviations}
    assert list(texts) == ["a", "b", "c", "d", "e"]
    assert texts["a"].startswith("1 of 2 runs: backbone from random weights (model.backbone.random_init=true)")
    assert "trainer.limit_train_batches=2, trainer.limit_test_batches=0.5" in texts["b"]
    assert "1 of 200 epochs, experiment=mtl_aqa_wo_dd" in texts["c"]
    assert "train 1051 of 1059, test 349 of 353" in texts["d"]
    assert "data.transform.resize=[64, 64], data=mtl_aqa has [128, 228]" in texts["e"]
    assert "data.transform.crop=[56, 56], data=mtl_aqa has [112, 112]" in texts["e"]
    assert "data.transform.interpolation=nearest, data=mtl_aqa has bilinear" in texts["e"]
    assert _row(result, "w/o DD").marks == ["a", "b", "c", "d", "e"] and _row(result, "w/ DD").marks == []
    markdown = tables.render_markdown(result)
    lines = markdown.splitlines()
    assert any(ln.startswith("| w/o DD [a, b, c, d, e] | 0.7000") for ln in lines)
    assert any(ln.startswith("| w/ DD | 0.9600") for ln in lines)
    table_end = max(i for i, ln in enumerate(lines) if ln.startswith("|"))
    listed = [ln for ln in lines[table_end:] if ln.startswith("- **Deviation from the paper**")]
    assert [ln.split("]")[0] for ln in listed] == [f"- **Deviation from the paper** [{m}" for m in "abcde"]
    rows = list(csv.DictReader(io.StringIO(tables.render_csv(result))))
    assert {r["label"]: r["row"] for r in rows if r["kind"] == "deviation"} == {m: "w/o DD" for m in "abcde"}
    assert next(r for r in rows if r["row"] == "w/o DD" and r["kind"] == "row")["deviations"] == "a b c d e"


def test_unknown_setting_is_not_compared_and_old_runs_say_what_is_unknown(tmp_path, paper):
    """No experiment recorded: the epochs are not compared; a run from before samples_per_split with
    data.skip_missing=true is labelled as possibly having dropped samples."""
    config = _config(0, data_name="mtl_aqa", classes=None, exemplar_rule="difficulty")
    config["trainer"] = {"max_epochs": 1}
    config["data"]["skip_missing"] = True
    _job(tmp_path, 0, "old", config, _metrics(0.9, 0.3, epochs=1))
    result = tables.build_table(tables.load_runs(tmp_path), paper, "table2")
    expected = ("all runs: samples dropped from the splits (data.skip_missing / data.exclude): the test set is not "
                "the paper's (data.skip_missing=true; metrics.json does not record what it dropped)")
    assert [d.text for d in result.deviations] == [expected]
    assert tables.setting_max_epochs("table6/mse") == 200  # through mtl_aqa_dd and paper/common
    assert tables.setting_max_epochs("no_such_experiment") is None
    assert tables.setting_transform("jigsaws") == {"resize": [128, 170], "crop": [112, 112],
                                                   "interpolation": "bilinear"}


# ----------------------------------------------------------------------- Table 4 (JIGSAWS, folds)


def test_table4_folds_fisher_z_then_tasks_fisher_z(tmp_path, paper):
    sweep = tmp_path / "jig"
    tasks = ["Suturing", "Needle_Passing", "Knot_Tying"]
    sp = {  # (task, seed) -> per-fold spearman, rl2 = 1 + fold + seed + task index
        (t, s): [0.5 + 0.1 * i + 0.05 * f + 0.02 * s for f in range(4)]
        for i, t in enumerate(tasks) for s in (0, 1)
    }
    num = 0
    for (task, seed), folds in sp.items():
        for fold, value in enumerate(folds):
            if task == "Knot_Tying" and seed == 1 and fold == 3:
                _job(sweep, num, "kt_failed", _config(seed, data_name="jigsaws", task=task, fold=fold))
            else:
                rl2 = 1.0 + fold + seed + tasks.index(task)
                _job(sweep, num, f"{task}_{fold}_{seed}",
                     _config(seed, data_name="jigsaws", task=task, fold=fold), _metrics(value, rl2))
            num += 1
    runs = tables.load_runs(sweep)
    assert tables.infer_table(runs, paper)[0] == "table4"
    result = tables.build_table(runs, paper, "table4")

    def task_seed(task, seed):  # by hand: Fisher z over the four folds, R-l2 plainly
        zs = [math.atanh(v) for v in sp[task, seed]]
        rl2 = sum(1.0 + f + seed + tasks.index(task) for f in range(4)) / 4
        return math.tanh(sum(zs) / 4), rl2

    s_row = _row(result, "S")
    assert s_row.seeds == [0, 1]
    expected = [task_seed("Suturing", s) for s in (0, 1)]
    assert s_row.values["spearman"][0] == pytest.approx(expected[0][0], abs=1e-12)
    assert s_row.mean("spearman") == pytest.approx((expected[0][0] + expected[1][0]) / 2, abs=1e-12)
    assert s_row.mean("rl2") == pytest.approx((expected[0][1] + expected[1][1]) / 2)
    assert s_row.paper == {"spearman": 0.93, "rl2": 2.203}
    kt = _row(result, "KT")
    assert kt.seeds == [0]  # seed 1 lacks fold 3
    incomplete = [i for i in result.issues if i.kind == "incomplete"]
    assert any(i.row == "KT" and i.seed == 1 and "missing 3" in i.detail for i in incomplete)
    assert any(i.row == "average" and i.seed == 1 for i in incomplete)
    assert any(i.kind == "failed" and i.row == "KT" and i.seed == 1 for i in result.issues)
    avg = _row(result, "average")
    assert avg.average and avg.seeds == [0]
    per_task = [task_seed(t, 0) for t in tasks]
    by_hand = math.tanh(sum(math.atanh(v) for v, _ in per_task) / 3)
    assert avg.mean("spearman") == pytest.approx(by_hand, abs=1e-12)
    assert avg.mean("spearman") == pytest.approx(fisher_z_mean([v for v, _ in per_task]), abs=1e-12)
    assert avg.mean("rl2") == pytest.approx(sum(r for _, r in per_task) / 3)
    assert avg.paper == {"spearman": 0.91, "rl2": 3.279}
    md = tables.render_markdown(result)
    assert "| **Avg.** |" in md and "3.279" in md
    assert list(csv.DictReader(io.StringIO(tables.render_csv(result))))[-1]["table"] == "table4"


# ------------------------------------------------------------------------ Table 1 (AQA-7, classes)


CLASSES = ["diving", "gym_vault", "ski_big_air", "snowboard_big_air", "sync_diving_3m", "sync_diving_10m"]


def test_table1_one_model_per_class(tmp_path, paper):
    sweep = tmp_path / "aqa7"
    values = {c: [(0.6 + 0.05 * i + 0.01 * s, 1.0 + i + 0.1 * s) for s in (0, 1)] for i, c in enumerate(CLASSES)}
    num = 0
    for i, c in enumerate(CLASSES):
        for seed in (0, 1):
            if c == "sync_diving_10m" and seed == 1:
                continue  # never ran
            _job(sweep, num, f"c{i + 1}s{seed}", _config(seed, classes=[i + 1]), _metrics(*values[c][seed]))
            num += 1
    runs = tables.load_runs(sweep)
    assert tables.infer_table(runs, paper)[0] == "table1"
    result = tables.build_table(runs, paper, "table1")
    diving = _row(result, "diving")
    assert diving.mean("spearman") == pytest.approx(0.605) and diving.paper == {"spearman": 0.8901, "rl2": 0.59}
    assert diving.label == "Diving"
    assert _row(result, "sync_diving_10m").seeds == [0]
    avg = _row(result, "average")
    assert avg.seeds == [0]
    by_hand = math.tanh(sum(math.atanh(values[c][0][0]) for c in CLASSES) / 6)
    assert avg.mean("spearman") == pytest.approx(by_hand, abs=1e-12)
    assert avg.mean("rl2") == pytest.approx(sum(values[c][0][1] for c in CLASSES) / 6)
    assert avg.diff("spearman") == pytest.approx(by_hand - 0.8726, abs=1e-12)
    assert any(i.kind == "incomplete" and i.row == "average" and i.seed == 1 for i in result.issues)


def test_table1_multi_class_run_uses_per_class_keys(tmp_path, paper):
    per_class = {c: (0.7 + 0.04 * i, 2.0 + i) for i, c in enumerate(CLASSES)}
    extra = {}
    for c, (sp, rl2) in per_class.items():
        extra[f"test/{c}/spearman"], extra[f"test/{c}/rl2"] = sp, rl2
        extra[f"best/test/{c}/spearman"], extra[f"best/test/{c}/rl2"] = sp - 0.1, rl2
    extra["test/spearman_fisher_z"] = fisher_z_mean([v for v, _ in per_class.values()])
    _job(tmp_path, 0, "all", _config(0, classes=None), _metrics(0.5, 9.0, **extra))
    runs = tables.load_runs(tmp_path)
    assert tables.infer_table(runs, paper)[0] == "table1"
    result = tables.build_table(runs, paper, "table1")
    for c, (sp, rl2) in per_class.items():
        assert _row(result, c).mean("spearman") == pytest.approx(sp)
        assert _row(result, c).mean("rl2") == pytest.approx(rl2)
    assert _row(result, "average").mean("spearman") == pytest.approx(extra["test/spearman_fisher_z"])
    best = tables.build_table(runs, paper, "table1", metric="best")
    assert _row(best, "diving").mean("spearman") == pytest.approx(per_class["diving"][0] - 0.1)
    assert not [i for i in result.issues if i.kind in ("missing", "incomplete", "failed")]


def test_infer_table_refuses_ambiguous_sweeps(tmp_path, paper):
    _job(tmp_path, 0, "a", _config(0, layers=3, heads=8), _metrics(0.9, 0.6))
    _job(tmp_path, 1, "b", _config(0, layers=5, heads=16), _metrics(0.8, 0.7))
    with pytest.raises(ValueError, match="several fit"):
        tables.infer_table(tables.load_runs(tmp_path), paper)


def test_fig7_has_no_paper_values_rows_from_runs(tmp_path, paper):
    _job(tmp_path, 0, "a", _config(0, strategy="6-clip-avg1"), _metrics(0.85, 0.7))
    _job(tmp_path, 1, "b", _config(0, strategy="8-clip-avg1"), _metrics(0.89, 0.6))
    result = tables.build_table(tables.load_runs(tmp_path), paper, "fig7")
    assert [r.name for r in result.rows] == ["6-clip-avg1 / 10", "8-clip-avg1 / 10"]
    assert all(r.paper == {"spearman": None, "rl2": None} for r in result.rows)
    md = tables.render_markdown(result)
    header = next(ln for ln in md.splitlines() if ln.startswith("| aux strategy"))
    assert "no values in the paper text" in md and "paper" not in header and "Δ" not in header


# ------------------------------------------------------------------------- paper_results.yaml


def test_paper_results_spot_checks(paper):
    t = paper["tables"]
    assert t["table2"]["rows"]["w/ DD"] == {"match": {"data.exemplar_rule": "difficulty"},
                                           "spearman": 0.9638, "rl2": 0.222}
    assert t["table2"]["rows"]["w/o DD"]["spearman"] == 0.9464 and t["table2"]["rows"]["w/o DD"]["rl2"] == 0.308
    assert t["table8"]["row_key"] == "model.decoder.layers"
    assert t["table8"]["rows"]["3"] == {"spearman": 0.8901, "rl2": 0.59}
    assert t["table1"]["rows"]["diving"]["spearman"] == 0.8901 and t["table1"]["rows"]["diving"]["rl2"] == 0.59
    assert t["table1"]["average"]["spearman"] == 0.8726 and t["table1"]["average"]["rl2"] == 1.62
    assert t["table4"]["rows"]["S"]["spearman"] == 0.93 and t["table4"]["rows"]["S"]["rl2"] == 2.203
    assert t["table4"]["average"] == {"label": "Avg.", "spearman": 0.91, "rl2": 3.279}
    full = next(r for r in t["table6"]["rows"].values()
                if r["match"] == {"loss.use_path_mse": True, "loss.use_path_ntxent": True, "loss.use_self_reg": True})
    assert (full["spearman"], full["rl2"]) == (0.9638, 0.222)
    assert t["table10"]["rows"]["8-clip-avg1"]["spearman"] == 0.8901
    none = t["table11"]["rows"]["none"]
    assert none["spearman"] == 0.8755 and not any(none["match"].values())
    assert t["fig7"]["rows"] is None  # a plot: no numbers transcribed
    assert [len(t[f"table{i}"]["rows"]) for i in range(1, 12)] == [6, 2, 2, 3, 5, 7, 4, 5, 4, 4, 4]


def test_paper_results_consistent_with_the_paper_averages(paper):
    t1 = paper["tables"]["table1"]
    rows = t1["rows"].values()
    assert sum(r["rl2"] for r in rows) / 6 == pytest.approx(t1["average"]["rl2"], abs=0.005)
    assert fisher_z_mean([r["spearman"] for r in rows]) == pytest.approx(t1["average"]["spearman"], abs=0.005)
    t4 = paper["tables"]["table4"]
    assert sum(r["rl2"] for r in t4["rows"].values()) / 3 == pytest.approx(t4["average"]["rl2"], abs=0.0005)
    assert fisher_z_mean([r["spearman"] for r in t4["rows"].values()]) == pytest.approx(0.91, abs=0.005)


def test_protocol_reference_shows_the_reference_figures_and_says_so(tmp_path, capsys):
    """--protocol reference reads reference/test/* (best test Spearman, minimum test R-l2 over the epochs), and
    the table's header names the protocol; last and reference give different cells from the same runs."""
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    for seed, (last, best_over_epochs, min_rl2) in enumerate([(0.80, 0.86, 0.50), (0.82, 0.90, 0.40)]):
        _job(sweep, seed, f"layers3_seed{seed}", _config(seed, layers=3),
             _metrics(last, 0.9, **{"reference/test/spearman": best_over_epochs, "reference/test/rl2": min_rl2}))
    assert tables_main([str(sweep), "--table", "table8", "--no-filter", "--protocol", "reference"]) == 0
    out = capsys.readouterr().out
    assert "reference/test/spearman, reference/test/rl2 (the reference's protocol" in out
    assert "| 3 | 0.8800 ± 0.0283 (n=2) |" in out  # mean and sd of 0.86, 0.90
    assert tables_main([str(sweep), "--table", "table8", "--no-filter", "--protocol", "last"]) == 0
    assert "| 3 | 0.8100 ± 0.0141 (n=2) |" in capsys.readouterr().out  # 0.80, 0.82


def test_reference_protocol_takes_each_figure_at_its_own_best_epoch():
    from t2cr.cli.train import reference_protocol

    curve = [{"epoch": 0, "val/spearman": 0.5, "val/rl2": 2.0}, {"epoch": 1, "val/spearman": 0.7, "val/rl2": 3.0},
             {"epoch": 2, "val/spearman": 0.6, "val/rl2": 1.5}]
    got = reference_protocol(curve, {"test/spearman": 0.65, "test/rl2": 1.8}, has_val=False)
    # by hand: the best Spearman is epoch 1's, the lowest R-l2 epoch 2's (a different epoch)
    assert got["reference/test/spearman"] == 0.7 and got["reference/test/rl2"] == 1.5
    assert reference_protocol(curve, {"test/spearman": 0.75, "test/rl2": 1.0}, has_val=False)[
        "reference/test/rl2"] == 1.0  # the last evaluation counts too
    withheld = reference_protocol(curve, {"test/spearman": 0.65}, has_val=True)
    assert withheld["reference/test/spearman"] is None and "validation split" in withheld["reference_protocol"]


def test_a_published_average_that_its_own_rows_do_not_give_is_noted_in_every_table_of_that_paper_table():
    """Issue 27: CoRe's AQA-7 average in Table 1 (0.8401) is not the Fisher-z average of its classes (0.8433)."""
    def spec(source: str, average: float) -> dict:
        return {"source": source, "layout": "groups", "rows": {"a": {"spearman": 0.5, "rl2": 1.0},
                                                                 "b": {"spearman": 0.9, "rl2": 2.0}},
                "average": {"spearman": average, "rl2": 1.5}}

    # by hand: tanh((atanh 0.5 + atanh 0.9) / 2) = tanh((0.549306 + 1.472219) / 2) = tanh(1.010763) = 0.76608
    paper = {"tables": {"table1": spec("Sec. 4.4, Table 1", 0.7661),
                        "methods_core": spec("Sec. 4.4, Table 1 (AQA-7), row CoRe [42]", 0.7001),
                        "table4": spec("Sec. 4.4, Table 4", 0.7001)}}
    # T2CR's own average holds; Table 4 is another paper table
    expected = ("CoRe [42]'s published spearman average 0.7001 is not the Fisher-z average of its own per-group "
                "numbers (0.7661)")
    assert tables.paper_average_notes(paper, paper["tables"]["table1"]) == [expected]
    assert tables.paper_average_notes(paper, paper["tables"]["table4"])[0].startswith("T2CR's published spearman")
    real = tables.load_paper_results()
    table1 = tables.paper_average_notes(real, real["tables"]["table1"])
    assert len(table1) == 1 and "0.8401" in table1[0] and "(0.8433)" in table1[0]
