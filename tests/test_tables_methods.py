"""The methods tables of t2cr-tables (issue 16): rows by model.method, each method's number from the T2CR
paper's Tables 2-3 beside ours; runs from before model.method existed count as T2CR's."""

from __future__ import annotations

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
    comparisons = paper["comparisons"]
    assert comparisons["table1"]["core"]["rl2"][-1] == 2.12 and comparisons["table4"]["musdl"]["spearman"][-1] == 0.70
