"""W&B, PyAV, Captum and submitit are optional: a run that does not ask for them trains without them, and one
that does stops with one line naming the package."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from framework_helpers import read_metrics, tiny_overrides

from t2cr.optional import MissingPackage, require

BLOCKED = ("wandb", "av", "captum", "submitit")

# runs t2cr-train with the optional packages made unimportable (as on a machine without them)
BLOCKING_TRAIN = textwrap.dedent('''
    import importlib.abc, sys

    BLOCKED = {blocked!r}

    class Blocked(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)", name=name)
            return None

    sys.meta_path.insert(0, Blocked())
    from t2cr.cli.train import main

    sys.argv = ["t2cr-train", *sys.argv[1:]]
    try:
        main()
    finally:
        imported = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
        print("IMPORTED", imported, flush=True)
''').format(blocked=BLOCKED)


def _train_without_optional_packages(overrides: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("T2CR_RUN_STAMP", "LOCAL_RANK", "WORLD_SIZE")}
    env["PYTHONWARNINGS"] = "ignore"
    return subprocess.run([sys.executable, "-c", BLOCKING_TRAIN, *overrides], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600, check=False)


@pytest.mark.slow
def test_a_csv_logged_run_trains_without_the_optional_packages(tiny_synthetic, tmp_path):
    run_dir = tmp_path / "run"
    done = _train_without_optional_packages([*tiny_overrides(tiny_synthetic), "trainer.max_epochs=1",
                                             f"hydra.run.dir={run_dir}"], tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "IMPORTED []" in done.stdout
    assert read_metrics(run_dir)["global_step"] > 0


def test_logger_wandb_without_wandb_is_one_line_naming_the_package(tiny_synthetic, tmp_path):
    overrides = [*tiny_overrides(tiny_synthetic), "logger=wandb", f"hydra.run.dir={tmp_path / 'run'}"]
    done = _train_without_optional_packages(overrides, tmp_path)
    assert done.returncode == 2, done.stderr[-4000:]
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("t2cr-train: error: logger=wandb") and "pip install wandb" in lines[-1], lines[-3:]
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("module", BLOCKED)
def test_require_names_the_missing_package(module, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)  # import of it raises ImportError
    with pytest.raises(MissingPackage, match=rf"reading X needs the {module} package.*pip install {module}"):
        require(module, "reading X")


def test_decoding_a_video_without_pyav_names_pyav(tmp_path, monkeypatch):
    from t2cr.data.frames import decode_video

    monkeypatch.setitem(sys.modules, "av", None)
    (tmp_path / "dive.mp4").write_bytes(b"not decoded")
    with pytest.raises(MissingPackage, match="reading video files needs the av package"):
        decode_video(tmp_path / "dive.mp4")


GPU_SLOTS_WITHOUT_SUBMITIT_LAUNCHER = textwrap.dedent('''
    import sys

    sys.modules["hydra_plugins.hydra_submitit_launcher.submitit_launcher"] = None  # as where it is not installed
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    from t2cr.cli.common import user_error_message

    try:
        instantiate({"_target_": "hydra_plugins.t2cr_launchers.gpu_slots.GpuSlotsLauncher", "gpus_per_job": 1})
    except InstantiationException as error:
        print("LINE", user_error_message(error))
''')


def test_the_gpu_slots_launcher_without_hydra_submitit_launcher_imports_and_refuses_in_one_line():
    """Hydra scans every launcher plugin in every command: ours must import without the optional
    hydra-submitit-launcher (else each command prints an import warning), and asking for it names the package."""
    done = subprocess.run([sys.executable, "-c", GPU_SLOTS_WITHOUT_SUBMITIT_LAUNCHER], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert ("LINE hydra/launcher=gpu_slots needs the hydra-submitit-launcher package, which is not installed here: "
            "pip install hydra-submitit-launcher") in done.stdout, done.stdout
