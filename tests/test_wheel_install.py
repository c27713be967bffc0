"""A pip-installed t2cr (a wheel, no checkout) finds its configs, sweeps and paper numbers, and trains."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from framework_helpers import REPO, read_metrics, tiny_overrides

# run from an empty folder with only the installed copy ahead of everything else on the path
INSTALLED_TRAIN = """
import sys, t2cr
print("T2CR_FROM", t2cr.__file__, flush=True)
from t2cr.cli.train import main
sys.argv = ["t2cr-train", *sys.argv[1:]]
main()
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The wheel built from this checkout, installed without dependencies into a throwaway folder."""
    root = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(root / "dist")], check=True, capture_output=True, text=True, timeout=600)
    wheel = next((root / "dist").glob("t2cr-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "-q", "--target",
                    str(root / "site"), str(wheel)], check=True, capture_output=True, text=True, timeout=600)
    return root / "site"


def _run(installed: Path, arguments: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("T2CR_RUN_STAMP", "LOCAL_RANK", "WORLD_SIZE")}
    env.update({"PYTHONPATH": str(installed), "PYTHONWARNINGS": "ignore"})
    return subprocess.run([sys.executable, "-c", INSTALLED_TRAIN, *arguments], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600, check=False)


def test_the_wheel_holds_every_config_and_sweep_file_and_no_scripts(installed):
    wheel_conf = {p.relative_to(installed / "t2cr" / "conf") for p in (installed / "t2cr" / "conf").rglob("*.yaml")}
    repo_conf = {p.relative_to(REPO / "conf") for p in (REPO / "conf").rglob("*.yaml")}
    assert wheel_conf == repo_conf and len(repo_conf) > 40
    shipped = {p.name for p in (installed / "t2cr" / "experiments").iterdir()}
    assert shipped == {p.name for p in (REPO / "experiments").glob("*.yaml")} and "paper_results.yaml" in shipped
    assert not (installed / "t2cr" / "conf").is_symlink()  # copies, not the checkout's links
    wheel = next(installed.parent.glob("dist/*.whl"))
    assert not [n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("t2cr/experiments/") and n.endswith(".py")]


@pytest.mark.slow
def test_an_installed_t2cr_composes_and_trains_from_an_empty_folder(installed, tiny_synthetic, tmp_path):
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    composed = _run(installed, ["experiment=smoke", "--cfg", "job"], empty)
    assert composed.returncode == 0, composed.stderr[-3000:]
    assert f"T2CR_FROM {installed / 't2cr' / '__init__.py'}" in composed.stdout  # the installed copy, not src/
    assert "name: smoke" in composed.stdout
    run_dir = tmp_path / "run"
    trained = _run(installed, [*tiny_overrides(tiny_synthetic), "trainer.max_epochs=1", f"hydra.run.dir={run_dir}"],
                   empty)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert f"T2CR_FROM {installed / 't2cr' / '__init__.py'}" in trained.stdout
    assert read_metrics(run_dir)["global_step"] > 0
    from t2cr.tables import load_paper_results  # the installed copy's default paper file is the shipped one
    assert load_paper_results(installed / "t2cr" / "experiments" / "paper_results.yaml") == load_paper_results()
