"""Evaluation uses the run's own settings (issue 12): the checkpoint carries its data settings, seed and
matmul precision; t2cr-eval applies them, lets the command line move the data and change K / the seed
as reported deviations, and refuses an override that changes what a score means."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import yaml
from framework_helpers import tiny_overrides
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf, open_dict

from t2cr.bank import BANK_KEY, build_exemplar_bank
from t2cr.cli.common import UserError
from t2cr.cli.run_settings import effective_settings
from t2cr.cli.train import run_settings
from t2cr.module import T2CRModule
from t2cr.resources import CONF_DIR
from t2cr.run import build_datamodule

TRAINED_SEED = 3  # not eval.yaml's default seed (0): only the checkpoint can supply it


def compose_train(overrides: list[str]) -> dict:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return OmegaConf.to_container(compose(config_name="train", overrides=overrides), resolve=True)


@pytest.fixture(scope="module")
def checkpoint(tiny_synthetic, tmp_path_factory) -> Path:
    """An untrained tiny model saved as t2cr-train saves it, with the run settings of the tiny synthetic data
    (K = 3, 16 frames, 28 x 28 crops), seed 3, matmul precision `high`, and an exemplar bank."""
    overrides = [*tiny_overrides(tiny_synthetic), f"seed={TRAINED_SEED}", "trainer.matmul_precision=high",
                 "trainer.precision=bf16-mixed"]
    resolved = compose_train(overrides)
    resolved["model"]["action_classifier"] = False  # the training CLI decides it from the data
    module = T2CRModule(resolved["model"], resolved["loss"], resolved["optim"], resolved["runtime"],
                        run=run_settings(resolved))
    datamodule = build_datamodule(OmegaConf.create({"data": resolved["data"]}))
    bank = build_exemplar_bank(module.model, datamodule, 2, TRAINED_SEED)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.ckpt"
    torch.save({"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict(), BANK_KEY: bank,
                "pytorch-lightning_version": pl.__version__}, path)  # what Lightning writes
    return path


def run_eval(args: list[str], monkeypatch, cwd: Path) -> int:
    return run_command("eval", [*args, "trainer=cpu"], monkeypatch, cwd)


def run_command(name: str, args: list[str], monkeypatch, cwd: Path) -> int:
    """t2cr-<name> in this process (Hydra's own entry point, so that the command-line overrides are real)."""
    command = importlib.import_module(f"t2cr.cli.{name}")
    monkeypatch.chdir(cwd)  # a default data path, if used, would land here and not in the checkout
    monkeypatch.setattr(sys, "argv", [f"t2cr-{name}", *args, "hydra/job_logging=none", "hydra/hydra_logging=none"])
    GlobalHydra.instance().clear()
    try:
        command.main()
    except SystemExit as stop:
        return int(stop.code or 0)
    finally:
        GlobalHydra.instance().clear()
        torch.set_float32_matmul_precision("highest")
    return 0


def outputs(run_dir: Path) -> tuple[dict, dict]:
    return json.loads((run_dir / "metrics.json").read_text()), yaml.safe_load((run_dir / "config.yaml").read_text())


def test_the_checkpoint_keeps_its_run_settings(checkpoint, tiny_synthetic):
    run = T2CRModule.from_checkpoint(str(checkpoint)).run_settings
    assert run["seed"] == TRAINED_SEED and run["matmul_precision"] == "high" and run["precision"] == "bf16-mixed"
    assert run["data"]["voting_exemplars"] == 3 and run["data"]["num_frames"] == 16
    assert run["data"]["root"] == f"{tiny_synthetic}/frames" and run["data"]["seed"] == TRAINED_SEED


def test_eval_without_data_overrides_uses_the_checkpoints_settings(checkpoint, tmp_path, monkeypatch):
    code = run_eval([f"ckpt_path={checkpoint}", f"hydra.run.dir={tmp_path / 'eval'}"], monkeypatch, tmp_path)
    assert code == 0
    metrics, config = outputs(tmp_path / "eval")
    saved = T2CRModule.from_checkpoint(str(checkpoint)).run_settings
    assert metrics["data_settings"] == "checkpoint" and metrics["deviations"] == {}
    assert metrics["test/num_samples"] == 7  # the tiny data set's test split, not eval.yaml's default data
    assert config["data"] == saved["data"] and config["seed"] == TRAINED_SEED
    assert config["trainer"]["matmul_precision"] == "high"
    assert config["trainer"]["precision"] == "bf16-mixed"  # the features the run's own evaluation computed


def test_k_and_seed_overrides_are_applied_and_reported(checkpoint, tiny_synthetic, tmp_path, monkeypatch, capsys):
    code = run_eval([f"ckpt_path={checkpoint}", "data.voting_exemplars=2", "seed=5", "data.num_workers=0",
                     f"data.root={tiny_synthetic}/frames", f"hydra.run.dir={tmp_path / 'eval'}"], monkeypatch, tmp_path)
    assert code == 0
    metrics, config = outputs(tmp_path / "eval")
    # data.num_workers and data.root say how and where the data is read: not deviations
    assert metrics["deviations"] == {"data.voting_exemplars": {"trained": 3, "used": 2},
                                     "seed": {"trained": TRAINED_SEED, "used": 5}}
    assert config["data"]["voting_exemplars"] == 2 and config["data"]["seed"] == 5
    assert "data.voting_exemplars: trained 3, used 2" in capsys.readouterr().err


@pytest.mark.parametrize("override, key", [
    ("data.divide_by_difficulty=false", "data.divide_by_difficulty"),
    ("data.exemplar_rule=random", "data.exemplar_rule"),
    ("data.transform.crop=[24,24]", "data.transform.crop"),
    ("data=mtl_aqa", "data.name"),
])
def test_an_override_that_changes_what_scores_mean_is_refused(override, key, checkpoint, tmp_path, monkeypatch,
                                                              capsys):
    code = run_eval([f"ckpt_path={checkpoint}", override, f"hydra.run.dir={tmp_path / 'eval'}"], monkeypatch,
                    tmp_path)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("t2cr-eval: error: ") and key in err[-1] and override in err[-1]
    assert not (tmp_path / "eval" / "metrics.json").exists()


def test_an_old_checkpoint_is_evaluated_with_the_command_lines_data_and_a_warning(checkpoint, tiny_synthetic, tmp_path,
                                                                                  monkeypatch, capsys):
    old = torch.load(checkpoint, map_location="cpu", weights_only=True)
    old["hyper_parameters"].pop("run")
    torch.save(old, tmp_path / "old.ckpt")
    data = [o for o in tiny_overrides(tiny_synthetic) if o.startswith("data.")]
    code = run_eval([f"ckpt_path={tmp_path / 'old.ckpt'}", *data, f"hydra.run.dir={tmp_path / 'eval'}"], monkeypatch,
                    tmp_path)
    assert code == 0
    assert "carries no run settings" in capsys.readouterr().err
    metrics, config = outputs(tmp_path / "eval")
    assert metrics["data_settings"] == "command line" and metrics["test/num_samples"] == 7
    assert config["trainer"]["matmul_precision"] == "highest"


def test_explain_reads_a_dataset_sample_with_the_checkpoints_data_settings(checkpoint, tmp_path, monkeypatch,
                                                                           capsys):
    pool = next(iter(torch.load(checkpoint, weights_only=True)[BANK_KEY]["pools"]))
    args = [f"ckpt_path={checkpoint}", "sample='1_4'", f"pool={pool}", "steps=2", "internal_batch_size=2",
            "num_frames_shown=2", f"output_dir={tmp_path}", "name=x", "device=cpu"]
    assert run_command("explain", args, monkeypatch, tmp_path) == 0
    # the tiny data set's 16 frames, not the 103 of explain.yaml's default data
    assert np.load(tmp_path / "x.npz")["source_frames"].max() == 15
    assert "deviations" not in json.loads((tmp_path / "x.json").read_text())
    assert run_command("explain", [*args, "data.exemplar_rule=random"], monkeypatch, tmp_path) == 2
    assert "t2cr-explain: error: data.exemplar_rule=random" in capsys.readouterr().err


# ------------------------------------------------------------------------------ the rules, directly
def saved_run() -> dict:
    data = compose_train(["experiment=smoke"])
    return {"data": data["data"], "seed": 0, "matmul_precision": "highest"}


def settings_for(overrides: list[str], config: str = "eval"):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name=config, overrides=["ckpt_path=x.ckpt", *overrides], return_hydra_config=True)
        groups = set(cfg.hydra.runtime.choices)
        with open_dict(cfg):
            cfg.pop("hydra")
        composed = OmegaConf.to_container(cfg, resolve=True)
    return effective_settings(saved_run(), composed, overrides, groups, "x.ckpt")


def test_where_the_data_lives_is_applied_without_a_deviation():
    settings = settings_for(["data.root=/elsewhere/frames", "data.cache_dir=/scratch/c", "data.eval_batch_size=8"])
    assert settings.data["root"] == "/elsewhere/frames" and settings.data["cache_dir"] == "/scratch/c"
    assert settings.data["eval_batch_size"] == 8 and settings.deviations == {}
    assert settings.data["num_frames"] == 32  # the smoke run's, not eval.yaml's default data (103)


def test_group_overrides_must_give_the_checkpoints_own_values():
    # the training overlay the checkpoint was made with: nothing changes
    assert settings_for(["+experiment=smoke"]).data == saved_run()["data"]
    refused = (r"\+data/transform=reference_code sets data\.transform\.crop=\[112, 112\], "
               r"but x\.ckpt was trained with \[32, 32\]")
    with pytest.raises(UserError, match=refused):
        settings_for(["+data/transform=reference_code"])
    with pytest.raises(UserError, match="trained with data.num_frames=32"):
        settings_for(["data.num_frames=16"])


def test_an_explicit_matmul_precision_is_a_deviation():
    settings = settings_for(["trainer.matmul_precision=high"])
    assert settings.matmul_precision == "high"
    assert settings.deviations == {"trainer.matmul_precision": {"trained": "highest", "used": "high"}}


def test_score_computes_under_the_runs_precision(checkpoint, tmp_path, monkeypatch):
    """The bank's features were computed under the run's precision (bf16-mixed here): the query's are too."""
    from PIL import Image

    from t2cr.bank import score_frames
    from t2cr.cli.common import precision_context
    from t2cr.data.frames import read_any_video

    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(16):
        Image.new("RGB", (40, 30), (i * 13, 90, 160 - i * 5)).save(frames / f"{i:04d}.jpg")
    module = T2CRModule.from_checkpoint(str(checkpoint))
    pool = min(module.exemplar_bank["pools"]) if "pools" in module.exemplar_bank else None
    args = [f"ckpt_path={checkpoint}", f"video={frames}", f"output={tmp_path / 'score.json'}"]
    if pool is not None:
        args.append(f"pool={pool}")
    assert run_command("score", args, monkeypatch, tmp_path) == 0
    scored = json.loads((tmp_path / "score.json").read_text())
    video = read_any_video(str(frames))
    with precision_context("bf16-mixed", "cpu"):
        mixed = score_frames(module.model, module.exemplar_bank, video, pool, None, "cpu")
    full = score_frames(module.model, module.exemplar_bank, video, pool, None, "cpu")
    assert scored["score"] == mixed["score"] and scored["score"] != full["score"]


def test_the_bank_goes_into_final_and_new_best_checkpoints_only(tmp_path, monkeypatch):
    """ExemplarBank builds the bank (a backbone pass) for the checkpoints a run is scored with, not every epoch."""
    from contextlib import nullcontext
    from types import SimpleNamespace

    import t2cr.bank as bank_module

    built = []
    monkeypatch.setattr(bank_module, "build_exemplar_bank", lambda *args: built.append(args) or {"pools": {}})
    old_best = tmp_path / "best-epoch000.ckpt"
    old_best.write_bytes(b"")
    monitor = SimpleNamespace(monitor="val/spearman", best_model_path=str(old_best))

    def save(epoch: int, step: int) -> dict:
        trainer = SimpleNamespace(is_global_zero=True, interrupted=False, datamodule=object(), max_epochs=10,
                                  max_steps=-1, current_epoch=epoch, global_step=step, should_stop=False,
                                  checkpoint_callbacks=[monitor],
                                  precision_plugin=SimpleNamespace(forward_context=nullcontext))
        checkpoint: dict = {}
        callback.on_save_checkpoint(trainer, SimpleNamespace(model=None, device="cpu"), checkpoint)
        return checkpoint

    callback = bank_module.ExemplarBank(k=2, seed=0)
    assert BANK_KEY not in save(epoch=3, step=40) and not built  # an epoch between: no backbone pass
    monitor.best_model_path = str(tmp_path / "best-epoch004.ckpt")  # named, not yet written: this save
    assert BANK_KEY in save(epoch=4, step=50) and len(built) == 1
    assert BANK_KEY in save(epoch=4, step=50) and len(built) == 1  # last.ckpt of the same step shares it
    assert BANK_KEY in save(epoch=9, step=100) and len(built) == 2  # the final epoch


@pytest.mark.parametrize(("value", "tf32"), [("highest", False), ("high", True), ("medium", True)])
def test_matmul_precision_sets_matmuls_and_cudnn_convolutions_alike(value, tf32):
    """highest is exact fp32 for I3D's convolutions too (cuDNN's own flag is TF32 by default)."""
    from t2cr.cli.common import set_matmul_precision

    before = (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32)
    try:
        torch.backends.cudnn.allow_tf32 = not tf32  # the opposite, so that an ignored setting shows
        set_matmul_precision(value)
        assert torch.get_float32_matmul_precision() == value
        assert torch.backends.cuda.matmul.allow_tf32 is (value != "highest")
        assert torch.backends.cudnn.allow_tf32 is tf32
    finally:
        torch.set_float32_matmul_precision(before[0])
        torch.backends.cudnn.allow_tf32 = before[1]
