#!/usr/bin/env bash
# The wheels gpu_check.sh needs on a bare CUDA image (Python 3.12, torch, Lightning, numpy, scipy, PyYAML, but no
# Hydra): hydra-core, omegaconf and the ANTLR runtime they parse overrides with, for Python 3.12 on x86-64,
# into .whl/ (git-ignored). Run it where pip reaches PyPI; carry .whl/ to the GPU machine with the checkout.
#
#   bash experiments/bench/wheelhouse.sh && du -sh .whl
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
WHEELS=${WHEELS:-.whl}
mkdir -p "$WHEELS"
# pure-Python wheels: any platform tag does; pinned to the versions t2cr is tested with
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform any \
    -d "$WHEELS" "hydra-core==1.3.8" "omegaconf==2.3.1"
# the ANTLR runtime omegaconf pins (4.9.*) is published as a source archive only: build its (pure-Python) wheel here
"$PYTHON" -m pip wheel -q --no-deps -w "$WHEELS" "antlr4-python3-runtime==4.9.3"
ls -l "$WHEELS"
