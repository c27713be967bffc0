"""t2cr-tables SWEEP_DIR [...] --table tableN|auto: one of the paper's tables from a sweep's runs.

Reads every job folder under the sweep folder(s) (metrics.json, config.yaml), groups the runs by the
table's row key(s), and prints mean +- std over seeds of Spearman and R-l2 beside the paper's values
(experiments/paper_results.yaml) with the difference; failed and missing runs are listed under it. Runs
that are not the paper's protocol (fast ablation mode, random-init backbone, limited batches, fewer epochs
than the setting, samples dropped by data.skip_missing / data.exclude, another resize or crop than the data
config's) are marked [a], [b], ... on their rows and each listed under the table.

Examples::

    t2cr-tables multirun/aqa7/2025-01-01_10-00-00 --table table8
    t2cr-tables multirun/jigsaws/<stamp> --table auto --metric best --format csv --out table4.csv

No Hydra here: plain argparse.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from t2cr import tables


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="t2cr-tables",
        description="Lay out a sweep's runs as one of the T2CR paper's tables, beside the paper's numbers.")
    parser.add_argument("sweep_dirs", nargs="+", type=Path, metavar="SWEEP_DIR",
                        help="sweep (multirun) folder(s) or run folder(s), searched recursively")
    parser.add_argument("--table", default="auto",
                        help="table1 .. table11, fig7, or auto (inferred from the config keys that vary; "
                             "default)")
    parser.add_argument("--protocol", "--metric", dest="metric", choices=tables.METRIC_CHOICES, default="last",
                        help="last: the last epoch's test/spearman, test/rl2 (default); best: the checkpoint chosen "
                             "on validation, best/test/*; reference: as the official code reports, the best test "
                             "Spearman and the minimum test R-l2 over the epochs, each on its own")
    parser.add_argument("--format", choices=("markdown", "csv"), default="markdown")
    parser.add_argument("--out", type=Path, default=None, help="write here instead of stdout")
    parser.add_argument("--paper", type=Path, default=None,
                        help=f"the paper's values (default: {tables.default_paper_results_path()})")
    parser.add_argument("--no-filter", action="store_true",
                        help="use runs of any dataset (e.g. synthetic), not only the table's")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        paper = tables.load_paper_results(args.paper)
        runs = tables.load_runs(args.sweep_dirs)
        if not runs:
            raise ValueError(f"no run folders under {', '.join(map(str, args.sweep_dirs))}")
        table = args.table
        if table == "auto":
            table, reason = tables.infer_table(runs, paper)
            print(f"t2cr-tables: {table} ({reason})", file=sys.stderr)
        elif table not in paper["tables"]:
            raise ValueError(f"unknown table {table!r}; known: auto, {', '.join(paper['tables'])}")
        result = tables.build_table(runs, paper, table, metric=args.metric, use_filter=not args.no_filter,
                                    sources=args.sweep_dirs)
    except (OSError, ValueError, KeyError, TypeError) as err:
        print(f"t2cr-tables: error: {err}", file=sys.stderr)
        return 2
    text = tables.render(result, args.format)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"t2cr-tables: wrote {args.out} ({len(runs)} job folder(s), {len(result.issues)} issue(s), "
              f"{len(result.deviations)} deviation(s) from the paper's protocol)", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
