"""The methods tables of t2cr-tables (issue 16): rows by model.method, each method's number from the T2CR
paper's Tables 2-3 beside ours; runs from before model.method existed count as T2CR's."""

from __future__ import annotations

import math

import pytest
from test_tables import _config, _job, _metrics, _row

from t2cr import tables


@pytest.fixture()
def paper():
    return tables.load_paper_results()


def _method_config(seed: int, method: str | None) -> dict:
    config = _config(seed, data_name="mtl_aqa", classes=None, exemplar_rule="difficulty")
    if method is not None:
        config["model"]["method"] = method
    return config


def test_methods_table_prints_each_methods_paper_number_beside_ours(tmp_path, paper):
    values = {"usdl": 0.80, "musdl": 0.82, "core": 0.85, None: 0.90}  # None: a T2CR run from before model.method
    num = 0
    for method, sp in values.items():
        for seed in (0, 1, 2):
            _job(tmp_path, num, f"{method}_{seed}", _method_config(seed, method), _metrics(sp + 0.01 * seed, 0.5))
            num += 1
    runs = tables.load_runs(tmp_path)
    assert tables.infer_table(runs, paper)[0] == "methods_mtl_aqa_dd"
    result = tables.build_table(runs, paper, "methods_mtl_aqa_dd")
    assert not result.issues, [issue.text() for issue in result.issues]
    assert [r.name for r in result.rows] == ["t2cr", "usdl", "musdl", "core"]
    usdl = _row(result, "usdl")
    assert usdl.paper == {"spearman": 0.9231, "rl2": 0.468} and usdl.seeds == [0, 1, 2]
    assert _row(result, "t2cr").paper == {"spearman": 0.9638, "rl2": 0.222}
    markdown = tables.render_markdown(result)
    assert "USDL [35]" in markdown and "CoRe [42]" in markdown and "0.9512" in markdown


def test_methods_tables_copy_the_papers_rows(paper):
    t = paper["tables"]
    assert t["methods_mtl_aqa_wo_dd"]["rows"]["musdl"]["spearman"] == 0.9158
    assert t["methods_finediving_dn"]["rows"]["core"] == {"label": "CoRe [42]", "spearman": 0.9061, "rl2": 0.3615}
    assert t["methods_finediving_wo_dn"]["rows"]["usdl"]["rl2"] == 0.5927
    assert t["methods_aqa7_core"]["average"]["rl2"] == 2.12 and t["methods_jigsaws_musdl"]["average"]["spearman"] == 0.70
    assert t["methods_aqa7_usdl"]["rows"]["gym_vault"] == {"group": 2, "label": "Gym Vault", "spearman": 0.7570,
                                                          "rl2": 2.09}
    assert t["methods_jigsaws_usdl"]["rows"]["KT"]["rl2"] is None  # the paper prints "-"
    assert "methods_aqa7_musdl" not in t  # Table 1 has no MUSDL row


def test_the_papers_t2cr_tables_read_only_t2cr_runs(tmp_path, paper):
    """A methods sweep's folder holds USDL, MUSDL and CoRe runs of the same data setting: Table 2's "w/ DD" row
    is T2CR's, so only the T2CR runs fill it."""
    for num, (method, sp) in enumerate([(None, 0.90), ("t2cr", 0.91), ("usdl", 0.20), ("core", 0.30)]):
        _job(tmp_path, num, f"{method}", _method_config(num, method), _metrics(sp, 0.5))
    result = tables.build_table(tables.load_runs(tmp_path), paper, "table2")
    row = _row(result, "w/ DD")
    assert row.seeds == [0, 1]
    assert row.mean("spearman") == pytest.approx(0.905)


def test_a_methods_jigsaws_sweep_fills_each_methods_table_per_task(tmp_path, paper):
    """Table 4 per method: USDL's and CoRe's runs of all tasks and folds in one folder; each method's table
    reads its own runs (Fisher z over the folds, as Table 4), T2CR's Table 4 none of them."""
    num = 0
    for method, base in (("usdl", 0.5), ("core", 0.7)):
        for task in ("Suturing", "Needle_Passing", "Knot_Tying"):
            for fold in range(4):
                config = _config(0, data_name="jigsaws", task=task, fold=fold)
                config["model"]["method"] = method
                _job(tmp_path, num, f"{method}_{task}_{fold}", config, _metrics(base + 0.02 * fold, 3.0))
                num += 1
    runs = tables.load_runs(tmp_path)
    core = tables.build_table(runs, paper, "methods_jigsaws_core")
    # the USDL runs are named as left out, nothing else is wrong
    assert [(i.kind, "12 run(s) with model.method=usdl" in i.detail) for i in core.issues] == [("skipped", True)]
    by_hand = math.tanh(sum(math.atanh(0.7 + 0.02 * f) for f in range(4)) / 4)
    assert _row(core, "S").mean("spearman") == pytest.approx(by_hand, abs=1e-12)
    assert _row(core, "NP").paper == {"spearman": 0.86, "rl2": 5.688}
    usdl = tables.build_table(runs, paper, "methods_jigsaws_usdl")
    assert _row(usdl, "KT").mean("spearman") == pytest.approx(math.tanh(sum(math.atanh(0.5 + 0.02 * f)
                                                                              for f in range(4)) / 4))
    assert _row(usdl, "KT").paper == {"spearman": 0.61, "rl2": None}
    t2cr = tables.build_table(runs, paper, "table4")
    assert all(row.n == 0 for row in t2cr.rows)
    # a folder of one method's runs names its table without --table
    assert tables.infer_table([r for r in runs if r.get("model.method") == "core"], paper)[0] == "methods_jigsaws_core"
