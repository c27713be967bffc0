"""The prepared GPU check parses, fits its time budget, and on a machine without a GPU it says so and succeeds;
on a GPU machine without Hydra it stops in one line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "experiments" / "bench"
SCRIPT = BENCH / "gpu_check.sh"
BUDGET_S = 7 * 60


def test_gpu_check_and_wheelhouse_are_valid_bash():
    for script in (SCRIPT, BENCH / "wheelhouse.sh"):
        subprocess.run(["bash", "-n", str(script)], check=True)


def test_every_step_is_killed_in_time_and_all_fit_in_seven_minutes():
    text = SCRIPT.read_text()
    steps = [(name, int(limit)) for name, limit in re.findall(r"^\s*step (\w+) (\d+) ", text, re.MULTILINE)]
    assert {name for name, _ in steps} >= {"lightning", "deterministic", "softdtw", "ddp2"}
    kill_after = int(re.search(r"^KILL_AFTER=(\d+)", text, re.MULTILINE).group(1))
    assert sum(limit + kill_after for _, limit in steps) <= BUDGET_S, steps
    calls = re.findall(r"^\s*timeout\b.*$", text, re.MULTILINE)  # every command the script bounds
    assert calls and all(re.match(r"\s*timeout -k ", call) for call in calls), calls  # no child outlives its step


@pytest.mark.skipif(torch.cuda.is_available(), reason="the no-GPU path needs a machine without a GPU")
def test_gpu_check_without_a_gpu_exits_0_and_says_so(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path / "out"), "WORK": str(tmp_path / "work"), "PYTHON": sys.executable}
    result = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "no CUDA GPU" in result.stdout and not list(tmp_path.iterdir())  # nothing measured, nothing written


# a GPU that torch reports, on an image without Hydra (the bare CUDA image the checks run on)
FAKE_GPU_SITE = textwrap.dedent('''
    import importlib.abc, sys
    import torch
    torch.cuda.is_available = lambda: True
    torch.cuda.device_count = lambda: 1
    torch.cuda.get_device_name = lambda *args: "a faked GPU"

    class NoHydra(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "hydra":
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, NoHydra())
''')


def test_gpu_check_without_hydra_stops_in_one_line_before_any_step(tmp_path):
    (tmp_path / "shim").mkdir()
    (tmp_path / "shim" / "sitecustomize.py").write_text(FAKE_GPU_SITE)
    env = {**os.environ, "OUT": str(tmp_path / "out"), "WORK": str(tmp_path / "work"), "PYTHON": sys.executable,
           "WHEELS": str(tmp_path / "no_wheels"), "PYTHONPATH": str(tmp_path / "shim")}
    result = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu_check: cannot import what training needs") \
        and "hydra" in lines[0] and "wheelhouse.sh" in lines[0], lines
    assert not list((tmp_path / "out").iterdir()) and not list((tmp_path / "work").glob("*.rc"))
