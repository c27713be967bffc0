# Installs into the active Python environment. On a machine without torch it first takes the CPU
# build torch==2.13.0, so that pip never resolves a multi-GB CUDA build; a GPU user who already has
# a CUDA build of torch keeps it.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
STAMP := .install.stamp

.PHONY: install train test test-fast lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install "torch==2.13.0"
	$(PIP) install -e ".[dev]"
	touch $(STAMP)

# the default run: the real model at a reduced size on the embedded synthetic data
train: install
	$(PYTHON) -m t2cr.cli.train experiment=smoke

test: install
	$(PYTHON) -m pytest -q -m "not extended"

test-all: install
	$(PYTHON) -m pytest -q

test-fast: install
	$(PYTHON) -m pytest -q -m "not slow"

lint: install
	$(PYTHON) -m ruff check src tests experiments

clean:
	rm -rf $(STAMP) build *.egg-info src/*.egg-info .pytest_cache

# ------------------------------------------------------------------------------------------------------
# The paper's tables as Hydra sweeps: one target per sweep file experiments/<sweep>.yaml, each a whole
# table x 3 seeds in one sweep folder multirun/<sweep>/<stamp>/ (jobs, epochs and cost:
# experiments/README.md). The paths are the dataset's the sweep trains on (MTL-AQA, FineDiving and JIGSAWS
# read the annotation files shipped with t2cr; AQA-7's come from its archive: ANNOTATIONS=):
#   make table8 ANNOTATIONS=/data/AQA-7 DATA_ROOT=/data/AQA-7/frames I3D=/data/model_rgb.pth
#   t2cr-tables multirun/table8/<stamp> --table table8
# SEEDS=0,1,2,3,4 replaces the seeds; ARGS='...' appends Hydra overrides (e.g. trainer=ddp,
# hydra/launcher=slurm, data.cache_dir=...); FAST=1 runs the sweep in the fast ablation mode
# (runtime=fast_ablation: I3D frozen, clip features computed once; a deviation from the paper).
SWEEPS := table1 table2 table3 table4 table5 table6 table7 table8 table9 table10 table11 fig7_n fig7_k methods

.PHONY: $(SWEEPS)

$(SWEEPS): install
	@if [ -z "$(DATA_ROOT)" ] || [ -z "$(I3D)" ]; then \
		echo "make $@: pass DATA_ROOT=<frames> I3D=<model_rgb.pth> (and ANNOTATIONS=<folder holding Split_4> for AQA-7)" >&2; exit 2; fi
	$(PYTHON) -m t2cr.cli.train --config-dir experiments --config-name $@ \
		$(if $(ANNOTATIONS),data.annotations=$(ANNOTATIONS)) data.root=$(DATA_ROOT) model.backbone.checkpoint=$(I3D) \
		$(if $(SEEDS),seed=$(SEEDS)) $(if $(FAST),runtime=fast_ablation) $(ARGS)
