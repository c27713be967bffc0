"""The paper's tables from our runs: mean +- std over seeds beside the paper's numbers (``t2cr-tables``).

A sweep folder (a Hydra multirun, or any folder holding run folders at any depth) is read job by job:
each job folder's ``metrics.json`` (absent when the job failed) and ``config.yaml`` (the resolved
configuration; ``.hydra/config.yaml`` when the job died before writing it). The table's specification
and the paper's values come from ``experiments/paper_results.yaml`` (see the comments there): the runs
are filtered to the table's dataset, matched to its rows by the row key(s), and summarised per row over
seeds. AQA-7 (Table 1) and JIGSAWS (Table 4) use the ``groups`` layout: per class / task (over the four
folds for JIGSAWS: correlations averaged through Fisher's z, R-l2 plainly), then the average over the
classes / tasks, per seed, again Fisher's z for the correlation and the plain mean for R-l2.

Nothing is dropped silently: failed jobs, rows without runs, incomplete fold sets, runs that match no
row, duplicates and runs of another dataset are listed under the table.

Runs that do not follow the paper's protocol are labelled (``deviations``): the fast ablation mode, a
randomly initialised backbone, limited batches, fewer epochs than the setting (the experiment's
``trainer.max_epochs``, read from conf/experiment), samples dropped from the splits (``data.skip_missing``
or ``data.exclude``; metrics.json's ``samples_per_split``) and a resize / crop other than the data config's.
Each gets a mark ([a], [b], ...) on the rows whose runs have it and a line under the table.

Std is the sample standard deviation over seeds (``ddof=1``); with one seed there is none.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from t2cr.metrics import fisher_z_mean
from t2cr.resources import CONF_DIR, PAPER_RESULTS

__all__ = [
    "Deviation",
    "Issue",
    "RowResult",
    "Run",
    "TableResult",
    "build_table",
    "default_paper_results_path",
    "find_job_dirs",
    "infer_table",
    "load_paper_results",
    "load_runs",
    "render",
    "render_csv",
    "render_markdown",
]

METRICS = ("spearman", "rl2")
METRIC_CHOICES = ("last", "best", "reference")  # t2cr-tables --protocol
#: folders never searched for runs (a job's own sub-folders)
SKIP_DIRS = {".hydra", "wandb", "checkpoints", "csv", "__pycache__", ".git"}
#: runs of another dataset are counted, and this many named
SHOW_SKIPPED = 10
_MISSING = object()


# ----------------------------------------------------------------------------------------- loading


def default_paper_results_path() -> Path:
    """``experiments/paper_results.yaml`` as shipped inside the package (the repository's, in a checkout)."""
    return PAPER_RESULTS


def load_paper_results(path: str | Path | None = None) -> dict[str, Any]:
    """Read ``paper_results.yaml`` (default: :func:`default_paper_results_path`)."""
    path = Path(path) if path is not None else default_paper_results_path()
    if not path.is_file():
        raise FileNotFoundError(f"paper results file not found: {path} (pass --paper FILE)")
    with path.open() as f:
        data = yaml.safe_load(f)
    if not isinstance(data, dict) or not isinstance(data.get("tables"), dict):
        raise TypeError(f"{path}: expected a mapping with a 'tables' mapping")
    return data


def get_key(config: dict[str, Any] | None, dotted: str) -> Any:
    """``config['a']['b']`` for ``'a.b'``; a private sentinel when a part is missing."""
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _normalise(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        f = float(value)
        return int(f) if f.is_integer() else f
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _normalise(v) for k, v in value.items()}
    return str(value)


def canon(value: Any) -> str:
    """A canonical text of a config value for comparisons: 3 == 3.0, true != 1 != "1", [1] == (1,)."""
    if value is _MISSING:
        return "<missing>"
    return json.dumps(_normalise(value), sort_keys=True)


def show(value: Any) -> str:
    """A short human form of a config value."""
    if value is _MISSING:
        return "<missing>"
    if isinstance(value, str):
        return value
    return json.dumps(_normalise(value))


# config keys some runs do not record, with the value those runs had: model.method (issue 16) names the
# baselines (model=usdl, musdl, core); T2CR's config has no such key (its runs and checkpoints stay as they
# were), so a run without it trained T2CR and a methods table places it in T2CR's row
METHOD_KEY = "model.method"
ADDED_KEYS: dict[str, Any] = {METHOD_KEY: "t2cr"}


@dataclass
class Run:
    """One job folder: its configuration and metrics (None when absent / unreadable)."""

    path: Path
    config: dict[str, Any] | None
    metrics: dict[str, Any] | None
    overrides: list[str] = field(default_factory=list)
    problem: str | None = None  # why the job counts as failed
    choices: dict[str, Any] = field(default_factory=dict)  # Hydra's config group choices (.hydra/hydra.yaml)

    def get(self, key: str) -> Any:
        value = get_key(self.config, key)
        if value is _MISSING and self.config is not None and key in ADDED_KEYS:
            return ADDED_KEYS[key]
        return value

    def choice(self, group: str) -> str | None:
        """The option of a config group the run used (experiment, data), from Hydra's record or the overrides."""
        if self.choices.get(group) is not None:
            return str(self.choices[group])
        for override in self.overrides:
            name, _, value = override.lstrip("+").partition("=")
            if name == group and value:
                return value
        return None

    @property
    def seed(self) -> Any:
        seed = self.get("seed")
        return None if seed is _MISSING else seed

    @property
    def failed(self) -> bool:
        return self.metrics is None


def _is_job_dir(path: Path) -> bool:
    return ((path / "metrics.json").is_file() or (path / "config.yaml").is_file()
            or (path / ".hydra" / "overrides.yaml").is_file() or (path / ".hydra" / "config.yaml").is_file())


def find_job_dirs(root: str | Path) -> list[Path]:
    """Job (run) folders under ``root`` at any depth; ``root`` itself when it is one."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"not a folder: {root}")
    found = []
    for dirpath, dirnames, _ in os.walk(root):
        here = Path(dirpath)
        if _is_job_dir(here):
            found.append(here)
            dirnames[:] = []  # a job's sub-folders (checkpoints, wandb, ...) hold no other jobs
            continue
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
    return sorted(found, key=_natural)


def _natural(path: Path) -> list[Any]:
    """Sort key: job 2 before job 10."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", str(path))]


def _read_yaml(path: Path) -> Any:
    with path.open() as f:
        return yaml.safe_load(f)


def _load_config(path: Path, problems: list[str]) -> dict[str, Any] | None:
    """The job's resolved config.yaml, else the one Hydra wrote at start (.hydra/config.yaml)."""
    for candidate in (path / "config.yaml", path / ".hydra" / "config.yaml"):
        if not candidate.is_file():
            continue
        try:
            loaded = _read_yaml(candidate)
        except (OSError, yaml.YAMLError) as err:
            problems.append(f"unreadable {candidate.name}: {err}")
            continue
        if isinstance(loaded, dict):
            return loaded
    return None


def _load_overrides(path: Path) -> list[str]:
    overrides_path = path / ".hydra" / "overrides.yaml"
    if not overrides_path.is_file():
        return []
    try:
        return [str(o) for o in _read_yaml(overrides_path) or []]
    except (OSError, yaml.YAMLError):
        return []


def _load_metrics(path: Path, problems: list[str]) -> dict[str, Any] | None:
    metrics_path = path / "metrics.json"
    if not metrics_path.is_file():
        problems.append("no metrics.json")
        return None
    try:
        loaded = json.loads(metrics_path.read_text())
    except (OSError, ValueError) as err:
        problems.append(f"unreadable metrics.json: {err}")
        return None
    if not isinstance(loaded, dict):
        problems.append("metrics.json is not a mapping")
        return None
    return loaded


def _load_choices(path: Path) -> dict[str, Any]:
    """hydra.runtime.choices of the job's .hydra/hydra.yaml; {} without it (the run's setting is then read from
    its overrides, or not compared)."""
    hydra_path = path / ".hydra" / "hydra.yaml"
    if not hydra_path.is_file():
        return {}
    try:
        choices = get_key(_read_yaml(hydra_path), "hydra.runtime.choices")
    except (OSError, yaml.YAMLError):
        return {}  # only the comparison with the setting is lost; the run's metrics are still read
    return choices if isinstance(choices, dict) else {}


def load_run(path: Path) -> Run:
    problems: list[str] = []
    config = _load_config(path, problems)
    overrides = _load_overrides(path)
    metrics = _load_metrics(path, problems)
    if config is None:
        problems.append("no config.yaml")
    return Run(path=path, config=config, metrics=metrics, overrides=overrides,
               problem="; ".join(problems) if metrics is None or config is None else None,
               choices=_load_choices(path))


def load_runs(roots: str | Path | Iterable[str | Path]) -> list[Run]:
    """Every job under one or several sweep folders."""
    if isinstance(roots, (str, Path)):
        roots = [roots]
    return [load_run(p) for root in roots for p in find_job_dirs(root)]


# ------------------------------------------------------------------------------------------ results


def _seed_order(seed: Any) -> tuple:
    if isinstance(seed, (int, float)) and not isinstance(seed, bool):
        return (0, float(seed), "")
    return (1, 0.0, str(seed))


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _std(values: Sequence[float]) -> float | None:
    """Sample standard deviation (ddof=1); None with fewer than 2 values."""
    if len(values) < 2:
        return None
    m = sum(values) / len(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


@dataclass
class RowResult:
    """One line of a table: our values per seed and the paper's."""

    name: str
    label: str
    values: dict[str, dict[Any, float]] = field(default_factory=lambda: {m: {} for m in METRICS})
    paper: dict[str, float | None] = field(default_factory=dict)
    average: bool = False
    runs: list[Run] = field(default_factory=list, repr=False)  # the runs placed in this row
    marks: list[str] = field(default_factory=list)  # the deviations of its runs (Deviation.mark)

    @property
    def seeds(self) -> list[Any]:
        return sorted(self.values["spearman"], key=_seed_order)

    @property
    def n(self) -> int:
        return len(self.values["spearman"])

    def series(self, metric: str) -> list[float]:
        return [self.values[metric][s] for s in self.seeds]

    def mean(self, metric: str) -> float | None:
        return _mean(self.series(metric))

    def std(self, metric: str) -> float | None:
        return _std(self.series(metric))

    def diff(self, metric: str) -> float | None:
        ours, theirs = self.mean(metric), self.paper.get(metric)
        if ours is None or theirs is None:
            return None
        return ours - theirs


@dataclass
class Issue:
    """Something under the table: a failed job, a missing row, a run that fits nowhere, ..."""

    kind: str  # failed | missing | incomplete | unmatched | duplicate | no-metric | mixed | skipped
    detail: str
    row: str | None = None
    seed: Any = None
    path: str | None = None

    def text(self) -> str:
        where = []
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.seed is not None:
            where.append(f"seed {self.seed}")
        head = f"{self.kind}: " + (", ".join(where) + ": " if where else "")
        return head + self.detail + (f" [{self.path}]" if self.path else "")


@dataclass
class Deviation:
    """A way some runs differ from the paper's protocol: a mark on their rows and a line under the table."""

    mark: str  # a, b, ...
    text: str
    paths: set[str] = field(default_factory=set)  # the runs concerned


@dataclass
class TableResult:
    name: str
    spec: dict[str, Any]
    metric: str
    metric_keys: dict[str, str]
    rows: list[RowResult]
    issues: list[Issue]
    sources: list[str]
    filtered: bool = True
    deviations: list[Deviation] = field(default_factory=list)  # settings of the runs that differ from the paper's
    # where a published average of this paper table is not the average of its own per-group numbers
    paper_notes: list[str] = field(default_factory=list)

    @property
    def has_paper_values(self) -> bool:
        return self.spec.get("rows") is not None


# ------------------------------------------------------------------------------------------ building


def _row_keys(spec: dict[str, Any]) -> list[str]:
    keys = spec.get("row_key") or []
    keys = [keys] if isinstance(keys, str) else list(keys)
    for extra in (spec.get("group_key"), spec.get("fold_key")):
        if extra and extra not in keys:
            keys.append(extra)
    return keys


def _known_keys(paper: dict[str, Any]) -> list[str]:
    keys: list[str] = []
    for spec in paper["tables"].values():
        for k in _row_keys(spec):
            if k not in keys:
                keys.append(k)
    return keys


def _passes_filter(run: Run, spec: dict[str, Any]) -> tuple[bool, str]:
    for key, want in (spec.get("filter") or {}).items():
        have = run.get(key)
        if canon(have) != canon(want):
            return False, f"{key}={show(have)}"
    return True, ""


def _row_match(spec: dict[str, Any], name: str, row: dict[str, Any]) -> dict[str, Any]:
    if row.get("match") is not None:
        return dict(row["match"])
    keys = _row_keys(spec)
    if len(keys) != 1:
        raise ValueError(f"row {name!r}: a table with several row keys needs `match` per row")
    return {keys[0]: yaml.safe_load(str(name))}


def _row_matches(run: Run, match: dict[str, Any]) -> bool:
    return all(canon(run.get(k)) == canon(v) for k, v in match.items())


def _metric_keys(paper: dict[str, Any], metric: str) -> dict[str, str]:
    if metric not in METRIC_CHOICES:
        raise ValueError(f"metric must be one of {METRIC_CHOICES}, got {metric!r}")
    spec = paper.get("metrics") or {}
    defaults = {"last": "test/{m}", "best": "best/test/{m}", "reference": "reference/test/{m}"}
    return {m: (spec.get(m) or {}).get(metric, defaults[metric].format(m=m)) for m in METRICS}


def _group_metric_key(key: str, group: str) -> str:
    """``test/spearman`` -> ``test/<group>/spearman`` (the per-group keys of a multi-group run)."""
    head, _, leaf = key.rpartition("/")
    return f"{head}/{group}/{leaf}" if head else f"{group}/{leaf}"


def _read_metrics(run: Run, keys: dict[str, str]) -> tuple[dict[str, float] | None, str]:
    assert run.metrics is not None
    out = {}
    for m, key in keys.items():
        value = run.metrics.get(key)
        if value is None:
            return None, f"no {key} in metrics.json"
        try:
            out[m] = float(value)
        except (TypeError, ValueError):
            return None, f"{key} is not a number: {value!r}"
    return out, ""


def _failed_issue(run: Run, row: str | None, where: str = "") -> Issue:
    detail = (run.problem or "failed") + (f" ({where})" if where else "")
    if run.overrides:
        detail += f"; overrides: {' '.join(run.overrides)}"
    return Issue("failed", detail, row=row, seed=run.seed, path=str(run.path))


def _skipped_issues(skipped: dict[str, list[Run]], spec: dict[str, Any]) -> list[Issue]:
    want = ", ".join(f"{k}={show(v)}" for k, v in (spec.get("filter") or {}).items())
    issues = []
    for why, runs in sorted(skipped.items()):
        names = [r.path.name for r in runs[:SHOW_SKIPPED]]
        if len(runs) > SHOW_SKIPPED:
            names.append(f"... {len(runs) - SHOW_SKIPPED} more")
        issues.append(Issue("skipped", f"{len(runs)} run(s) with {why}, not this table's data "
                            f"({want}): {', '.join(names)}"))
    return issues


def _mixed_issues(rows_runs: dict[str, list[Run]], ignore: set[str], known: list[str]) -> list[Issue]:
    """Rows whose runs also differ in another ablation key than the table's own."""
    issues = []
    for name, runs in rows_runs.items():
        for key in known:
            if key in ignore:
                continue
            values = sorted({canon(r.get(key)) for r in runs})
            if len(values) > 1:
                issues.append(Issue("mixed", f"its runs differ in {key} ({', '.join(values)})", row=name))
    return issues


def build_table(runs: Sequence[Run], paper: dict[str, Any], table: str, metric: str = "last",
                use_filter: bool = True, sources: Sequence[str | Path] = ()) -> TableResult:
    """Summarise ``runs`` as ``table`` of ``paper`` (the loaded ``paper_results.yaml``)."""
    tables = paper["tables"]
    if table not in tables:
        raise KeyError(f"unknown table {table!r}; known: {', '.join(tables)}")
    spec = tables[table]
    keys = _metric_keys(paper, metric)
    selected: list[Run] = []
    issues: list[Issue] = []
    skipped: dict[str, list[Run]] = {}
    for run in runs:
        if run.config is None:
            issues.append(_failed_issue(run, None))
            continue
        ok, why = _passes_filter(run, spec) if use_filter else (True, "")
        if ok:
            selected.append(run)
        else:
            skipped.setdefault(why, []).append(run)
    layout = spec.get("layout", "plain")
    if layout == "plain":
        rows, more = _build_plain(selected, spec, keys, _known_keys(paper))
    elif layout == "groups":
        rows, more = _build_groups(selected, spec, keys, _known_keys(paper))
    else:
        raise ValueError(f"{table}: unknown layout {layout!r}")
    issues += more + _skipped_issues(skipped, spec)
    deviations = _deviations(selected)
    for row in rows:
        paths = {str(run.path) for run in row.runs}
        row.marks = [d.mark for d in deviations if d.paths & paths]
    return TableResult(name=table, spec=spec, metric=metric, metric_keys=keys, rows=rows, issues=issues,
                       sources=[str(s) for s in sources], filtered=use_filter, deviations=deviations,
                       paper_notes=paper_average_notes(paper, spec))


def _decimals(value: float) -> int:
    text = repr(float(value))
    return len(text.split(".")[1]) if "." in text and "e" not in text else 6


def paper_average_notes(paper: dict[str, Any], spec: dict[str, Any]) -> list[str]:
    """Every published average of the same paper table (the tables whose source names it: Table 1 holds T2CR's
    and the baselines' rows) that its own per-group numbers do not give, at the average's printed precision:
    Spearman averaged through Fisher's z (as our averages are, and as the papers state), R-l2 plainly."""
    paper_table = str(spec.get("source", "")).split(" (")[0].split(", row")[0]
    notes = []
    for other in paper["tables"].values():
        average, rows = other.get("average"), other.get("rows")
        if not (average and rows and str(other.get("source", "")).startswith(paper_table)):
            continue
        who = str(other.get("source", "")).partition(", row ")[2] or "T2CR"
        for metric, combine, how in (("spearman", fisher_z_mean, "Fisher-z average"),
                                     ("rl2", lambda v: sum(v) / len(v), "mean")):
            values = [r[metric] for r in rows.values() if r.get(metric) is not None]
            if average.get(metric) is None or len(values) != len(rows):
                continue
            computed = combine(values)
            # the published numbers are rounded: allow half a unit of the inputs' last digit and of the average's
            slack = 0.5 * 10.0 ** -max(_decimals(v) for v in values) + 0.5 * 10.0 ** -_decimals(average[metric])
            if abs(computed - float(average[metric])) > slack * (1 + 1e-9):
                shown = max(_decimals(average[metric]), *(_decimals(v) for v in values))
                notes.append(f"{who}'s published {metric} average {average[metric]} is not the {how} of its own "
                             f"per-group numbers ({computed:.{shown}f})")
    return notes


FAST_ABLATION_NOTE = ("fast ablation mode (runtime=fast_ablation): I3D frozen at its Kinetics weights, clip features "
                      "computed once without training augmentation; the paper fine-tunes I3D (Sec. 4.3), so these "
                      "numbers compare rows with each other, not with the paper's column")
#: kind -> what it means; a run's detail (the values) follows in parentheses
DEVIATION_NOTES = {
    "fast_ablation": FAST_ABLATION_NOTE,
    "random_init": "backbone from random weights (model.backbone.random_init=true); the paper fine-tunes I3D from "
                   "its Kinetics weights",
    "limited_batches": "limited batches: not every sample was trained on or evaluated",
    "fewer_epochs": "fewer epochs than the setting",
    "dropped_samples": "samples dropped from the splits (data.skip_missing / data.exclude): the test set is not the "
                       "paper's",
    "transform": "frames resized or cropped otherwise than the data config",
}
SHOWN_DETAILS = 5  # distinct values named per deviation


def _deviations(runs: Sequence[Run]) -> list[Deviation]:
    """The ways the runs differ from the paper's protocol, in DEVIATION_NOTES order, each marked a, b, ..."""
    found: dict[str, dict[str, list[str]]] = {}  # kind -> run path -> its details
    for run in runs:
        for kind, detail in run_deviations(run):
            found.setdefault(kind, {}).setdefault(str(run.path), []).append(detail)
    deviations = []
    for kind in (k for k in DEVIATION_NOTES if k in found):
        paths = found[kind]
        share = "all runs" if len(paths) == len(runs) else f"{len(paths)} of {len(runs)} runs"
        details = list(dict.fromkeys(d for ds in paths.values() for d in ds if d))
        shown = "; ".join(details[:SHOWN_DETAILS]) + ("; ..." if len(details) > SHOWN_DETAILS else "")
        text = f"{share}: {DEVIATION_NOTES[kind]}" + (f" ({shown})" if shown else "")
        deviations.append(Deviation(mark=chr(ord("a") + len(deviations)), text=text, paths=set(paths)))
    return deviations


def run_deviations(run: Run) -> list[tuple[str, str]]:
    """(kind, detail) for each way this run is not the paper's protocol (kinds of DEVIATION_NOTES)."""
    found: list[tuple[str, str]] = []
    if get_key(run.config, "runtime.stored_features") is True:
        found.append(("fast_ablation", ""))
    if run.get("model.backbone.random_init") is True:
        found.append(("random_init", ""))
    limits = _limited_batches(run)
    if limits:
        found.append(("limited_batches", ", ".join(limits)))
    epochs = _fewer_epochs(run)
    if epochs:
        found.append(("fewer_epochs", epochs))
    dropped = _dropped_samples(run)
    if dropped:
        found.append(("dropped_samples", dropped))
    found += [("transform", detail) for detail in _changed_transform(run)]
    return found


LIMIT_KEYS = ("trainer.limit_train_batches", "trainer.limit_val_batches", "trainer.limit_test_batches")


def _limited_batches(run: Run) -> list[str]:
    """Lightning's limit_*_batches other than all of them (null or the float 1.0; an int counts batches)."""
    limited = []
    for key in LIMIT_KEYS:
        value = run.get(key)
        if value is _MISSING or value is None or (isinstance(value, float) and value == 1.0):
            continue
        limited.append(f"{key}={show(value)}")
    return limited


def _fewer_epochs(run: Run) -> str:
    """'2 of 200 epochs, experiment=mtl_aqa_dd' when the run trained fewer than its experiment's setting; '' when
    it did not, or when the setting is not known (no experiment, or one without trainer.max_epochs)."""
    experiment = run.choice("experiment")
    setting = setting_max_epochs(experiment) if experiment else None
    if setting is None:
        return ""
    trained = (run.metrics or {}).get("epochs")
    if not isinstance(trained, (int, float)) or isinstance(trained, bool):
        trained = run.get("trainer.max_epochs")
    if not isinstance(trained, (int, float)) or isinstance(trained, bool) or trained >= setting:
        return ""
    return f"{int(trained)} of {setting} epochs, experiment={experiment}"


def _dropped_samples(run: Run) -> str:
    """'train 1051 of 1059, test 349 of 353' from metrics.json's samples_per_split; runs written before it was
    recorded: data.exclude's keys, or data.skip_missing=true (which may have dropped some)."""
    counts = (run.metrics or {}).get("samples_per_split")
    if isinstance(counts, dict):
        parts = [f"{split} {c.get('dropped')} of {c.get('found')}" for split, c in counts.items()
                 if isinstance(c, dict) and c.get("dropped")]
        return ", ".join(parts)
    exclude = run.get("data.exclude")
    if isinstance(exclude, list) and exclude:
        return f"data.exclude={show(exclude)}"
    if run.get("data.skip_missing") is True and run.metrics is not None:
        return "data.skip_missing=true; metrics.json does not record what it dropped"
    return ""


def _changed_transform(run: Run) -> list[str]:
    """data.transform.resize / crop / interpolation where they differ from the setting's (data config, experiment
    overlay)."""
    if not isinstance(run.get("data.transform"), dict):
        return []
    data = run.choice("data") or show(run.get("data.name"))
    expected = setting_transform(data, run.choice("experiment"))
    if expected is None:
        return []
    changed = []
    for name, value in expected.items():
        have = run.get(f"data.transform.{name}")
        if have is not _MISSING and canon(have) != canon(value):
            changed.append(f"data.transform.{name}={show(have)}, data={data} has {show(value)}")
    return changed


@cache
def _conf_yaml(relative: str) -> dict[str, Any] | None:
    """conf/<relative>.yaml as a mapping; None when there is no such config."""
    path = CONF_DIR / f"{relative}.yaml"
    if not path.is_file():
        return None
    loaded = _read_yaml(path)
    return loaded if isinstance(loaded, dict) else None


def _experiment_chain(experiment: str | None) -> list[dict[str, Any]]:
    """The experiment's config and the experiment configs it includes (defaults '/experiment/...'), most
    specific first."""
    chain: list[dict[str, Any]] = []
    todo, seen = ([experiment] if experiment else []), set()
    while todo:
        name = todo.pop(0)
        node = None if name in seen else _conf_yaml(f"experiment/{name}")
        seen.add(name)
        if node is None:
            continue
        chain.append(node)
        todo += [entry[len("/experiment/"):] for entry in node.get("defaults") or []
                 if isinstance(entry, str) and entry.startswith("/experiment/")]
    return chain


def setting_max_epochs(experiment: str) -> int | None:
    """trainer.max_epochs of conf/experiment/<experiment>.yaml (or of an experiment it includes); None if unset."""
    for node in _experiment_chain(experiment):
        value = get_key(node, "trainer.max_epochs")
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def setting_transform(data: str, experiment: str | None = None) -> dict[str, Any] | None:
    """resize, crop and interpolation as conf/data/<data>.yaml sets them (its transform preset, its own transform block, the
    experiment's overlay over both, the schema's defaults under all); None for an unknown data config."""
    # imported only when a run is compared: it imports torch
    from t2cr.data.transforms import TransformConfig

    node = _conf_yaml(f"data/{data}")
    if node is None:
        return None
    schema = TransformConfig()
    values: dict[str, Any] = {"resize": list(schema.resize), "crop": list(schema.crop),
                              "interpolation": schema.interpolation}
    presets = [entry["transform"] for entry in node.get("defaults") or []
               if isinstance(entry, dict) and isinstance(entry.get("transform"), str)]
    layers = [_conf_yaml(f"data/transform/{preset}") or {} for preset in presets]
    layers.append(node.get("transform") or {})
    layers += [get_key(n, "data.transform") for n in reversed(_experiment_chain(experiment))]
    for layer in layers:
        if isinstance(layer, dict):
            values.update({k: layer[k] for k in values if k in layer})
    return values


def _paper_values(row: dict[str, Any] | None) -> dict[str, float | None]:
    row = row or {}
    return {m: (float(row[m]) if row.get(m) is not None else None) for m in METRICS}


def _row_results(specs: dict[str, dict[str, Any]]) -> dict[str, RowResult]:
    return {name: RowResult(name=name, label=str(row.get("label", name)), paper=_paper_values(row))
            for name, row in specs.items()}


def _missing_issues(results: dict[str, RowResult], detail: str) -> list[Issue]:
    return [Issue("missing", detail, row=name) for name, result in results.items() if result.n == 0]


def _open_row_specs(runs: Sequence[Run], row_keys: list[str]) -> dict[str, dict[str, Any]]:
    """No paper values (Fig. 7): one row per distinct setting among the runs, in the order of the values."""
    specs: dict[str, dict[str, Any]] = {}
    for run in sorted(runs, key=lambda r: [_seed_order(r.get(k)) for k in row_keys]):
        name = " / ".join(show(run.get(k)) for k in row_keys)
        specs.setdefault(name, {"match": {k: run.get(k) for k in row_keys}})
    return specs


@dataclass
class _Placed:
    """The runs placed so far: the rows' results, each row's runs, and where each (row, seed) came from."""

    results: dict[str, RowResult]
    runs: dict[str, list[Run]] = field(default_factory=dict)
    paths: dict[tuple[str, Any], str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.runs = {name: [] for name in self.results}


def _place_plain_run(run: Run, matches: dict[str, dict[str, Any]], row_keys: list[str], keys: dict[str, str],
                     placed: _Placed) -> Issue | None:
    """Put one run's metrics into its row; the issue when it cannot be used."""
    names = [name for name, match in matches.items() if _row_matches(run, match)]
    if not names:
        values = ", ".join(f"{k}={show(run.get(k))}" for k in row_keys)
        return Issue("unmatched", f"no row has {values}", seed=run.seed, path=str(run.path))
    name = names[0]
    if run.failed:
        return _failed_issue(run, name)
    placed.runs[name].append(run)
    values, why = _read_metrics(run, keys)
    if values is None:
        return Issue("no-metric", why, row=name, seed=run.seed, path=str(run.path))
    if (name, run.seed) in placed.paths:
        return Issue("duplicate", f"seed already read from {placed.paths[name, run.seed]}; this run is not used",
                     row=name, seed=run.seed, path=str(run.path))
    placed.paths[name, run.seed] = str(run.path)
    for m in METRICS:
        placed.results[name].values[m][run.seed] = values[m]
    return None


def _build_plain(runs: Sequence[Run], spec: dict[str, Any], keys: dict[str, str],
                 known: list[str]) -> tuple[list[RowResult], list[Issue]]:
    row_keys = _row_keys(spec)
    specs = spec.get("rows")
    if specs is None:
        specs = _open_row_specs(runs, row_keys)
    matches = {name: _row_match(spec, name, row) for name, row in specs.items()}
    placed = _Placed(_row_results(specs))
    issues = [issue for run in runs if (issue := _place_plain_run(run, matches, row_keys, keys, placed))]
    issues += _missing_issues(placed.results, "no finished run")
    issues += _mixed_issues(placed.runs, set(row_keys) | set(spec.get("filter") or {}) | {"seed"}, known)
    for name, result in placed.results.items():
        result.runs = placed.runs[name]
    return list(placed.results.values()), issues


#: (row, seed) -> fold (canon; "" without folds) -> (metrics, path)
_Cells = dict[tuple[str, Any], dict[str, tuple[dict[str, float], str]]]


@dataclass
class _Groups:
    """A ``groups`` table: one row per group (AQA-7 class, JIGSAWS task), combined over the folds if any."""

    group_key: str
    fold_key: str | None
    folds: list[str]  # canon
    fold_show: dict[str, str]  # canon -> shown
    specs: dict[str, dict[str, Any]]
    by_group: dict[str, str]  # canon group value -> row name

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> _Groups:
        folds = spec.get("folds") or []
        rows: dict[str, dict[str, Any]] = spec["rows"]
        return cls(group_key=spec["group_key"], fold_key=spec.get("fold_key"), folds=[canon(f) for f in folds],
                   fold_show={canon(f): show(f) for f in folds}, specs=rows,
                   by_group={canon(row["group"]): name for name, row in rows.items()})

    def groups_of(self, run: Run) -> tuple[list[Any], bool]:
        """The groups a run covers, and whether it covers only one (then its metrics are the group's)."""
        value = run.get(self.group_key)
        if value is None:  # e.g. data.classes=null: one model on every class
            return [row["group"] for row in self.specs.values()], False
        if isinstance(value, (list, tuple)):
            return list(value), len(value) == 1
        return [value], True

    def fold_of(self, run: Run) -> str:
        return canon(run.get(self.fold_key)) if self.fold_key else ""

    def fold_where(self, run: Run) -> str:
        return f"{self.fold_key}={show(run.get(self.fold_key))}" if self.fold_key else ""

    def fold_text(self, run: Run) -> str:
        return f", {self.fold_where(run)}" if self.fold_key else ""

    def metric_keys(self, keys: dict[str, str], name: str, single: bool) -> dict[str, str]:
        if single:
            return keys
        group = str(self.specs[name].get("metric_name", name))
        return {m: _group_metric_key(k, group) for m, k in keys.items()}

    def combine(self, cell: dict[str, tuple[dict[str, float], str]]) -> tuple[float, float]:
        """Spearman (Fisher z over the folds) and R-l2 (plain mean over the folds) of one row and seed."""
        if not self.fold_key:
            return cell[""][0]["spearman"], cell[""][0]["rl2"]
        sp = fisher_z_mean([cell[f][0]["spearman"] for f in self.folds])
        return sp, sum(cell[f][0]["rl2"] for f in self.folds) / len(self.folds)


def _match_groups(run: Run, layout: _Groups, groups: list[Any]) -> tuple[list[str], list[Issue]]:
    names, issues = [], []
    for g in groups:
        name = layout.by_group.get(canon(g))
        if name is None:
            issues.append(Issue("unmatched", f"no row for {layout.group_key} value {show(g)}{layout.fold_text(run)}",
                                seed=run.seed, path=str(run.path)))
        else:
            names.append(name)
    return names, issues


def _add_cell(run: Run, name: str, metric_keys: dict[str, str], layout: _Groups, cells: _Cells) -> Issue | None:
    values, why = _read_metrics(run, metric_keys)
    if values is None:
        return Issue("no-metric", why + layout.fold_text(run), row=name, seed=run.seed, path=str(run.path))
    cell = cells.setdefault((name, run.seed), {})
    fold = layout.fold_of(run)
    if fold in cell:
        return Issue("duplicate", f"already read from {cell[fold][1]}{layout.fold_text(run)}; this run is "
                     "not used", row=name, seed=run.seed, path=str(run.path))
    cell[fold] = (values, str(run.path))
    return None


def _place_group_run(run: Run, layout: _Groups, keys: dict[str, str], cells: _Cells,
                     rows_runs: dict[str, list[Run]]) -> list[Issue]:
    """Put one run's metrics into the cell (row, seed, fold) of each group it covers; the issues."""
    groups, single = layout.groups_of(run)
    names, issues = _match_groups(run, layout, groups)
    if not names:
        return issues
    if layout.fold_key and layout.fold_of(run) not in layout.folds:
        issues.append(Issue("unmatched", f"{layout.fold_where(run)} is not one of the folds "
                            f"{', '.join(layout.fold_show.values())}", row=",".join(names), seed=run.seed,
                            path=str(run.path)))
        return issues
    if run.failed:
        return [*issues, _failed_issue(run, ",".join(names), layout.fold_where(run))]
    for name in names:
        rows_runs[name].append(run)
        issue = _add_cell(run, name, layout.metric_keys(keys, name, single), layout, cells)
        if issue is not None:
            issues.append(issue)
    return issues


def _combine_cells(cells: _Cells, layout: _Groups, results: dict[str, RowResult]) -> list[Issue]:
    """Per row and seed: combine the folds into the row's value (a seed without every fold is left out)."""
    issues = []
    for (name, seed), cell in sorted(cells.items(), key=lambda kv: (kv[0][0], _seed_order(kv[0][1]))):
        have = [f for f in layout.folds if f in cell]
        if len(have) < len(layout.folds):
            lacking = [layout.fold_show[f] for f in layout.folds if f not in cell]
            issues.append(Issue("incomplete", f"{layout.fold_key} {', '.join(layout.fold_show[f] for f in have)} of "
                                f"{', '.join(layout.fold_show.values())} finished (missing {', '.join(lacking)}); "
                                "this seed is left out of the row", row=name, seed=seed))
            continue
        sp, rl2 = layout.combine(cell)
        results[name].values["spearman"][seed] = sp
        results[name].values["rl2"][seed] = rl2
    return issues


def _average_row(rows: list[RowResult], average_spec: dict[str, Any]) -> tuple[RowResult, list[Issue]]:
    """The average over the rows, per seed: Fisher z for the correlation, the plain mean for R-l2."""
    average = RowResult(name="average", label=str(average_spec.get("label", "Avg.")),
                        paper=_paper_values(average_spec), average=True)
    issues = []
    for seed in sorted({s for r in rows for s in r.values["spearman"]}, key=_seed_order):
        lacking = [r.name for r in rows if seed not in r.values["spearman"]]
        if lacking:
            issues.append(Issue("incomplete", f"no value for {', '.join(lacking)}; this seed is left out "
                                "of the average", row=average.name, seed=seed))
            continue
        average.values["spearman"][seed] = fisher_z_mean([r.values["spearman"][seed] for r in rows])
        average.values["rl2"][seed] = sum(r.values["rl2"][seed] for r in rows) / len(rows)
    if average.n == 0:
        issues.append(Issue("missing", "no seed has a value for every row", row=average.name))
    return average, issues


def _build_groups(runs: Sequence[Run], spec: dict[str, Any], keys: dict[str, str],
                  known: list[str]) -> tuple[list[RowResult], list[Issue]]:
    layout = _Groups.from_spec(spec)
    results = _row_results(layout.specs)
    cells: _Cells = {}
    rows_runs: dict[str, list[Run]] = {name: [] for name in layout.specs}
    issues = [issue for run in runs for issue in _place_group_run(run, layout, keys, cells, rows_runs)]
    issues += _combine_cells(cells, layout, results)
    issues += _missing_issues(results, "no finished run" + (" set of all folds" if layout.fold_key else ""))
    for name, result in results.items():
        result.runs = rows_runs[name]
    rows = list(results.values())
    if spec.get("average") is not None:
        average, more = _average_row(rows, spec["average"])
        average.runs = list({str(run.path): run for row in rows for run in row.runs}.values())
        issues += more
        rows.append(average)
    ignore = {layout.group_key, "seed"} | ({layout.fold_key} if layout.fold_key else set()) | set(spec.get("filter") or {})
    issues += _mixed_issues(rows_runs, ignore, known)
    return rows, issues


# ---------------------------------------------------------------------------------------- inference


def infer_table(runs: Sequence[Run], paper: dict[str, Any]) -> tuple[str, str]:
    """The table a sweep was run for, from the config keys that vary between its runs.

    A candidate's dataset filter must hold for every run; among the candidates the one whose row keys
    cover the most varying keys wins, then the one with the fewest row keys that do not vary. With no
    varying key only a ``groups`` table (one run may cover every AQA-7 class) can be inferred.

    Returns ``(table, reason)``; raises ValueError when no table or several fit equally well.
    """
    usable = [r for r in runs if r.config is not None]
    if not usable:
        raise ValueError("no run with a readable config.yaml")
    varying = {k for k in _known_keys(paper) if len({canon(r.get(k)) for r in usable}) > 1}
    if METHOD_KEY in varying:
        # runs of different methods differ in every model key of their own schemas (a USDL run has no
        # model.decoder): those differences come with the method, the sweep varies the method
        varying = {k for k in varying if k == METHOD_KEY or not k.startswith("model.")}
    candidates = []
    for name, spec in paper["tables"].items():
        if spec.get("rows") is None:
            continue  # Fig. 7 has no paper values: only on request
        if not all(_passes_filter(r, spec)[0] for r in usable):
            continue
        keys = set(_row_keys(spec))
        cover = len(keys & varying)
        if cover == 0 and not (not varying and spec.get("layout") == "groups"):
            continue
        candidates.append((-cover, len(keys - varying), name))
    shown = ", ".join(sorted(varying)) or "none"
    if not candidates:
        names = sorted({show(r.get("data.name")) for r in usable})
        raise ValueError(f"cannot infer the table: data.name {', '.join(names)}, varying keys {shown}; "
                         "pass --table (and --no-filter for other data)")
    candidates.sort()
    best = [name for cover, extra, name in candidates if (cover, extra) == candidates[0][:2]]
    if len(best) > 1:
        raise ValueError(f"cannot infer the table, several fit ({', '.join(best)}; varying keys {shown}): "
                         "pass --table")
    return best[0], f"varying keys: {shown}"


# ---------------------------------------------------------------------------------------- rendering


def _fmt(value: float | None, digits: int = 4, sign: bool = False) -> str:
    if value is None:
        return "—"
    if math.isnan(value):
        return "nan"
    value = round(value, digits) + 0.0  # no "-0.0000"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _fmt_paper(value: float | None) -> str:
    return "—" if value is None else f"{value:g}"


def _ours(row: RowResult, metric: str) -> str:
    if row.n == 0:
        return "—"
    std = row.std(metric)
    return f"{_fmt(row.mean(metric))} ± {_fmt(std) if std is not None else '–'} (n={row.n})"


def _title(result: TableResult) -> str:
    label = result.name.replace("table", "Table ") if result.name.startswith("table") else result.name
    return f"{label}: {result.spec.get('title', '')}".rstrip(": ")


def _metric_text(result: TableResult) -> str:
    which = {"last": "last epoch", "best": "the best-validated epoch's checkpoint",
             "reference": "the reference's protocol: best test Spearman and minimum test R-l2 over epochs, each "
                          "on its own"}[result.metric]
    return f"{result.metric_keys['spearman']}, {result.metric_keys['rl2']} ({which})"


def render_markdown(result: TableResult) -> str:
    spec = result.spec
    labels = {m: ("Sp. Corr." if m == "spearman" else "R-l2 (x100)") for m in METRICS}
    lines = [f"### {_title(result)}", ""]
    lines.append(f"Source: {spec.get('source', '?')}; dataset: {spec.get('dataset', '?')}; "
                 f"runs: {', '.join(result.sources) or '?'}.")
    lines.append(f"Ours: mean ± sample std over seeds (n seeds) of {_metric_text(result)}; "
                 "Δ = ours − paper." + ("" if result.filtered else " Dataset filter off."))
    if not result.has_paper_values:
        lines.append(f"Paper: {spec.get('paper_note', 'no values')}.")
    lines.append("")
    header = [str(spec.get("row_header", "Row"))]
    for m in METRICS:
        header += [f"{labels[m]} ours"] + ([f"{labels[m]} paper", "Δ"] if result.has_paper_values else [])
    header.append("seeds")
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for row in result.rows:
        label = f"**{row.label}**" if row.average else row.label
        cells = [label + (f" [{', '.join(row.marks)}]" if row.marks else "")]
        for m in METRICS:
            cells.append(_ours(row, m))
            if result.has_paper_values:
                cells += [_fmt_paper(row.paper.get(m)), _fmt(row.diff(m), sign=True)]
        cells.append(", ".join(str(s) for s in row.seeds) or "—")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if result.paper_notes:
        lines += [f"- **Paper's average**: {note}." for note in result.paper_notes]
        lines.append("")
    if result.deviations:  # marked on the rows above: these numbers are not comparable with the paper's
        lines += [f"- **Deviation from the paper** [{d.mark}]: {d.text}." for d in result.deviations]
        lines.append("")
    if result.issues:
        lines.append("Missing / failed / left out:")
        lines += [f"- {issue.text()}" for issue in result.issues]
    else:
        lines.append("Missing / failed / left out: none.")
    return "\n".join(lines) + "\n"


CSV_COLUMNS = ["table", "kind", "row", "label", "n", "seeds",
               "spearman_mean", "spearman_std", "spearman_paper", "spearman_diff",
               "rl2_mean", "rl2_std", "rl2_paper", "rl2_diff", "metric", "detail", "path", "deviations"]


def _num(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def render_csv(result: TableResult) -> str:
    """One line per row (kind ``row`` / ``average``), then one per issue (kind = the issue's kind)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in result.rows:
        line = {"table": result.name, "kind": "average" if row.average else "row", "row": row.name,
                "label": row.label, "n": row.n, "seeds": " ".join(str(s) for s in row.seeds),
                "metric": result.metric, "detail": "", "path": "", "deviations": " ".join(row.marks)}
        for m in METRICS:
            line.update({f"{m}_mean": _num(row.mean(m)), f"{m}_std": _num(row.std(m)),
                         f"{m}_paper": _num(row.paper.get(m)), f"{m}_diff": _num(row.diff(m))})
        writer.writerow(line)
    for deviation in result.deviations:
        rows = " ".join(row.name for row in result.rows if deviation.mark in row.marks)
        writer.writerow({"table": result.name, "kind": "deviation", "row": rows, "label": deviation.mark,
                         "metric": result.metric, "detail": deviation.text, "deviations": deviation.mark})
    for issue in result.issues:
        writer.writerow({"table": result.name, "kind": issue.kind, "row": issue.row or "",
                         "seeds": "" if issue.seed is None else str(issue.seed), "metric": result.metric,
                         "detail": issue.detail, "path": issue.path or ""})
    return buf.getvalue()


def render(result: TableResult, fmt: str = "markdown") -> str:
    if fmt == "markdown":
        return render_markdown(result)
    if fmt == "csv":
        return render_csv(result)
    raise ValueError(f"format must be markdown or csv, got {fmt!r}")
