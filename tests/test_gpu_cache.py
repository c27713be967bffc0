"""A GPU run reads the uint8 frame cache: it builds an incomplete one once, or refuses with the command."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from t2cr.cli.common import UserError
from t2cr.cli.prepare import cache_for_accelerator
from t2cr.config import to_dataclass
from t2cr.data.cache import cache_status, resolve_cache_dir
from t2cr.data.config import DataConfig
from t2cr.resources import CONF_DIR


def compose_run(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)  # as inside t2cr-train: the command line's overrides are known
    return cfg


def status(cfg) -> str:
    config = to_dataclass(DataConfig, cfg.data)
    return cache_status(resolve_cache_dir(config), config)


@pytest.fixture()
def small(tiny_synthetic) -> list[str]:
    return [f"data.synthetic.root={tiny_synthetic}", "data.synthetic.num_train=12", "data.synthetic.num_test=7",
            "data.synthetic.num_events=2", "data.synthetic.height=32", "data.synthetic.width=32",
            "data.synthetic.frames_per_dive=16", "data.num_frames=16", "data.transform.resize=[32,32]",
            "data.transform.crop=[28,28]", "data.clip_length=8", "data.num_clips=3", "data.base_starts=[0,4,8]"]


def test_without_a_cache_folder_the_run_is_refused_with_the_prepare_command():
    cfg = compose_run("data=mtl_aqa", "data.annotations=ann", "data.root=frames", "data.train_shift=2")
    with pytest.raises(UserError) as refused:
        cache_for_accelerator(cfg, started_by_cluster=False)
    message = str(refused.value)
    assert "t2cr-prepare data=mtl_aqa data.annotations=ann data.root=frames data.train_shift=2 " in message
    assert "data.cache_dir=" in message and "data.use_cache=never" in message


def test_an_incomplete_cache_is_built_once_then_read(small, tmp_path):
    cfg = compose_run(*small, f"data.cache_dir={tmp_path / 'cache'}")
    assert status(cfg) != "complete"
    cache_for_accelerator(cfg, started_by_cluster=False, workers=1)
    assert status(cfg) == "complete" and cfg.data.use_cache == "auto"  # the run's own config is untouched
    written = sorted(p.stat().st_mtime_ns for p in (tmp_path / "cache").rglob("*") if p.is_file())
    cache_for_accelerator(cfg, started_by_cluster=False)  # complete: nothing is written again
    assert sorted(p.stat().st_mtime_ns for p in (tmp_path / "cache").rglob("*") if p.is_file()) == written


def test_processes_a_cluster_started_do_not_all_write_the_cache(small, tmp_path):
    cfg = compose_run(*small, f"data.cache_dir={tmp_path / 'cache'}")
    with pytest.raises(UserError, match="t2cr-prepare"):
        cache_for_accelerator(cfg, started_by_cluster=True)
    assert not (tmp_path / "cache").exists()


def test_reading_raw_frames_on_purpose_is_left_alone(small):
    cfg = compose_run(*small)
    with open_dict(cfg):
        cfg.data.use_cache = "never"
    cache_for_accelerator(cfg, started_by_cluster=False)  # no cache folder, no error


def test_generated_data_gets_its_cache_beside_it(small, tmp_path):
    """`make train` on a GPU machine: the synthetic data set is cached next to where it is generated."""
    root = tmp_path / "synthetic"
    cfg = compose_run(*[o for o in small if not o.startswith("data.synthetic.root=")], f"data.synthetic.root={root}")
    cache_for_accelerator(cfg, started_by_cluster=False, workers=1)
    assert cfg.data.cache_dir == f"{root}_frame_cache" and status(cfg) == "complete"
