"""Where the shipped configuration lives: `conf/` (the Hydra configs) and `experiments/*.yaml` (the sweeps and
the paper's published numbers), inside the package.

In a checkout, `src/t2cr/conf` and `src/t2cr/experiments` are links to the repository's top-level `conf/` and
`experiments/` (each file is written once); a built wheel holds copies of the YAML files, so an installed
t2cr finds them without a checkout.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
CONF_DIR = PACKAGE_DIR / "conf"
EXPERIMENTS_DIR = PACKAGE_DIR / "experiments"
PAPER_RESULTS = EXPERIMENTS_DIR / "paper_results.yaml"
