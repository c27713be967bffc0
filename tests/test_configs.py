"""Every config in conf/ composes, and its sections instantiate."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from t2cr.config import to_dataclass
from t2cr.data.config import DataConfig
from t2cr.losses import LossConfig
from t2cr.methods import method_of
from t2cr.models.t2cr import T2CR, T2CRConfig, build_clip_plans
from t2cr.module import OptimConfig
from t2cr.resources import CONF_DIR
from t2cr.run import build_trainer

GROUPS = {group: sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
          for group in ("data", "model", "loss", "optim", "trainer", "logger", "callbacks", "variant", "experiment")}


def _compose(overrides, name="train"):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


def test_conf_dir_is_the_repository_conf():
    """The package's conf/ is the repository's top-level conf/ (a link in a checkout: each file written once)."""
    assert CONF_DIR.resolve() == Path(__file__).resolve().parents[1] / "conf"
    assert all(GROUPS[g] for g in GROUPS), GROUPS


@pytest.mark.parametrize("group,option", [(g, o) for g, options in GROUPS.items() for o in options])
def test_every_option_composes_and_instantiates(group, option):
    # the real datasets' paths are required (???); any value composes
    required = ["data.annotations=/data/annotations", "data.root=/data/frames",
                "model.backbone.checkpoint=/weights/model_rgb.pth"]
    cfg = _compose([f"{group}={option}", *required])
    OmegaConf.resolve(cfg)
    # each model option by its method's schema (model.method: t2cr, usdl, musdl, core)
    model = to_dataclass(method_of(cfg.model).config, cfg.model)
    to_dataclass(LossConfig, cfg.loss)
    to_dataclass(OptimConfig, cfg.optim)
    to_dataclass(DataConfig, cfg.data)
    build_clip_plans(model.clips, getattr(model, "two_path", False))
    if group == "trainer" and cfg.trainer.accelerator in ("cpu", "auto"):
        trainer = build_trainer(cfg, logger=False, callbacks=[], run_dir=Path("/tmp"))
        assert trainer.max_epochs == cfg.trainer.max_epochs


def test_smoke_experiment_builds_the_real_model():
    cfg = _compose(["experiment=smoke", "model.num_action_types=6"])
    model = T2CR(to_dataclass(T2CRConfig, cfg.model))
    assert type(model.backbone).__name__ == "I3D" and model.config.two_path and model.classifier is not None
    assert cfg.name == "smoke"


def test_eval_and_score_configs_compose():
    assert _compose(["ckpt_path=x.ckpt"], "eval").ckpt_path == "x.ckpt"
    cfg = _compose(["ckpt_path=x.ckpt", "video=v.mp4", "pool=2.4"], "score")
    assert cfg.pool == 2.4 and cfg.video == "v.mp4"


def test_unknown_key_is_refused_with_its_name():
    cfg = _compose(["+model.no_such_switch=true"])
    with pytest.raises(Exception, match="no_such_switch"):
        to_dataclass(T2CRConfig, cfg.model)


def _slurm(*overrides):
    import t2cr.devices  # noqa: F401  (registers the t2cr_slurm_* resolvers, as every t2cr command does)

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", return_hydra_config=True,
                      overrides=["hydra/launcher=slurm", "trainer=ddp", "resume=auto", *overrides])
    return cfg.hydra.launcher


def test_slurm_launcher_config_composes():
    launcher = _slurm("trainer.num_nodes=2", "trainer.cpus_per_process=2", "data.batch_size=4",
                      "data.eval_batch_size=4")
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.tasks_per_node == 2 and launcher.nodes == 2 and launcher.gpus_per_node == 2
    assert launcher.cpus_per_task == 2  # per task (one task per GPU), not per node
    assert launcher.max_num_timeout > 0
    for devices in ("[0,1,2,3]", "'0,1,2,3'", "4"):
        assert _slurm(f"trainer.devices={devices}", "trainer.cpus_per_process=2",
                      "data.eval_batch_size=4").tasks_per_node == 4


@pytest.mark.parametrize("overrides,refusal", [
    (["trainer.devices=-1", "trainer.cpus_per_process=2"], "trainer.devices=-1 means every visible GPU"),
    (["trainer.devices=auto", "trainer.cpus_per_process=2"], "trainer.devices='auto' means every visible GPU"),
    ([], "set trainer.cpus_per_process="),  # auto: SLURM must reserve a number
    (["trainer.devices=4", "trainer.cpus_per_process=2", "experiment=mtl_aqa_dd"],
     "data.batch_size=2 and data.eval_batch_size=2 are global .* 4 processes"),
    # a requeued job must continue, not start again over its own last.ckpt
    (["trainer.cpus_per_process=2", "data.eval_batch_size=4", "resume=false"], r"pass resume=auto .*\(resume=False"),
    (["trainer.cpus_per_process=2", "data.eval_batch_size=4", "resume=true"], r"pass resume=auto .*\(resume=True"),
])
def test_slurm_launcher_refuses_what_it_cannot_reserve(overrides, refusal):
    launcher = _slurm(*overrides)
    with pytest.raises(Exception, match=refusal):
        OmegaConf.to_container(launcher, resolve=True)


def test_a_slurm_sweep_refuses_in_one_line_before_submitting(monkeypatch, capsys):
    from t2cr.devices import LaunchCheck

    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", return_hydra_config=True,
                      overrides=["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=-1", "trainer.cpus_per_process=2"])
    assert cfg.hydra.callbacks.launch_check._target_ == "t2cr.devices.LaunchCheck"
    with pytest.raises(SystemExit) as exit_info:
        LaunchCheck().on_multirun_start(config=cfg, config_name="train")
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().startswith(
        f"t2cr-{cfg.hydra.job.name}: error: trainer.devices=-1 means every visible GPU")


@pytest.mark.parametrize("preset,resize,interpolation",
                         [("ours", [128, 228], "bilinear"), ("reference_code", [228, 128], "nearest")])
def test_transform_presets(preset, resize, interpolation):
    cfg = _compose(["data=mtl_aqa", f"data/transform={preset}", "data.annotations=a", "data.root=b"])
    data = to_dataclass(DataConfig, cfg.data)
    assert data.transform.resize == resize and data.transform.crop == [112, 112]
    assert data.transform.interpolation == interpolation
