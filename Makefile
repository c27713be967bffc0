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
	$(PYTHON) -m pytest -q

test-fast: install
	$(PYTHON) -m pytest -q -m "not slow"

lint: install
	$(PYTHON) -m ruff check src tests experiments

clean:
	rm -rf $(STAMP) build *.egg-info src/*.egg-info .pytest_cache
