"""The prepared GPU check parses, and on a machine without a GPU it says so and succeeds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "bench" / "gpu_check.sh"


def test_gpu_check_is_valid_bash():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the no-GPU path needs a machine without a GPU")
def test_gpu_check_without_a_gpu_exits_0_and_says_so(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable}
    result = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "no CUDA GPU" in result.stdout and not list(tmp_path.iterdir())  # nothing measured, nothing written
