"""Bad input is refused before any training step, with a message naming the file, key or setting."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest
import torch
from helpers import shared_annotations, tiny_config
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException

from t2cr.data.config import DataConfig
from t2cr.data.datamodule import DataCheckError, PairDataModule
from t2cr.data.transforms import TransformConfig, VideoTransform
from t2cr.losses import LossConfig
from t2cr.models.backbones import BackboneConfig, build_backbone
from t2cr.models.i3d import I3D, CheckpointMismatchError
from t2cr.models.t2cr import T2CR
from t2cr.resources import CONF_DIR


@pytest.fixture(scope="module")
def pristine(tiny_synthetic) -> Path:
    return tiny_synthetic


@pytest.fixture
def dataset(pristine, tmp_path) -> Path:
    return Path(shutil.copytree(pristine, tmp_path / "synthetic"))


def _config(dataset: Path, **overrides) -> DataConfig:
    base = {"annotations": str(dataset / "annotations"), "root": str(dataset / "frames"), "num_frames": 16,
            "voting_exemplars": 2, "num_workers": 0, "transform": TransformConfig(resize=[24, 24], crop=[20, 20]),
            "synthetic": None}
    return DataConfig(**{**base, **overrides})


def _setup(config: DataConfig) -> PairDataModule:
    dm = PairDataModule(config)
    dm.setup()
    return dm


def test_missing_dataset_root(dataset):
    with pytest.raises(FileNotFoundError, match="data.root=.*nowhere does not exist"):
        _setup(_config(dataset, root=str(dataset / "nowhere")))


def test_missing_annotation_file(dataset):
    (dataset / "annotations" / "final_annotations_dict_with_dive_number.pkl").unlink()
    with pytest.raises(FileNotFoundError, match="final_annotations_dict_with_dive_number.pkl.*data.annotations"):
        _setup(_config(dataset))


def test_annotation_file_of_another_format(dataset):
    path = dataset / "annotations" / "final_annotations_dict_with_dive_number.pkl"
    # a FineDiving-style entry (a list, not MTL-AQA's dict with dive numbers)
    path.write_bytes(pickle.dumps({("01", 1): ["407c", 88.0, 3.2, None, None]}))
    with pytest.raises(ValueError, match="does not hold MTL-AQA annotations.*data.format"):
        _setup(_config(dataset))


def test_annotation_folder_of_another_dataset():
    annotations = shared_annotations()
    config = DataConfig(format="mtl_aqa", annotations=str(annotations / "FineDiving"), check=False, synthetic=None)
    with pytest.raises(FileNotFoundError, match="MTL-AQA annotation file not found"):
        _setup(config)


def test_split_key_absent_from_annotations(dataset):
    path = dataset / "annotations" / "test_split_0.pkl"
    keys = pickle.loads(path.read_bytes())
    path.write_bytes(pickle.dumps([*keys, (99, 99)]))
    with pytest.raises(KeyError, match=r"test_split_0.pkl: 1 keys are not in the annotation file.*\(99, 99\)"):
        _setup(_config(dataset))


def test_frame_folder_missing(dataset):
    shutil.rmtree(dataset / "frames" / "02")
    with pytest.raises(DataCheckError, match=r"(?s)frames/02.*data.skip_missing"):
        _setup(_config(dataset))



def test_skip_missing_drops_and_keeps_the_rest(dataset):
    dm = _setup(_config(dataset))
    victim = dm.samples("test")[0]
    frame = dataset / "frames" / f"{victim.key[0]:02d}" / f"{victim.end_frame:06d}.jpg"
    frame.unlink()
    with pytest.raises(DataCheckError, match=f"(?s){victim.key_str}.*{frame.name}"):
        _setup(_config(dataset))
    kept = _setup(_config(dataset, skip_missing=True))  # the opt-in drops (and logs) only that sample
    assert [s.key for s in kept.samples("test")] == [s.key for s in dm.samples("test")[1:]]
    assert len(kept.samples("train")) == len(dm.samples("train"))


def test_too_few_frames_for_the_plan(dataset):
    with pytest.raises(DataCheckError, match="frames"):
        _setup(_config(dataset, num_frames=400))  # reads before frame 0 / past the folder


def test_corrupt_jpeg(dataset):
    victim = sorted((dataset / "frames" / "01").iterdir())[10]
    victim.write_bytes(b"not a jpeg at all")
    with pytest.raises(DataCheckError, match=f"(?s)unreadable.*{victim.name}"):
        _setup(_config(dataset, check_decode=True))


def test_unreadable_video(tmp_path):
    from t2cr.data.frames import VideoFileSource, decode_video
    from t2cr.data.samples import Sample

    (tmp_path / "clip.mp4").write_bytes(b"\x00" * 2048)
    with pytest.raises(ValueError, match="cannot decode video .*clip.mp4"):
        decode_video(tmp_path / "clip.mp4")
    sample = Sample(key="x", score=1.0, difficulty=None, action_type=None, frames="clip")
    with pytest.raises(ValueError, match="clip.mp4"):
        VideoFileSource(tmp_path).read(sample, [0, 1])


def test_crop_larger_than_frames():
    with pytest.raises(ValueError, match=r"data.transform.crop \[130, 112\] is larger than data.transform.resize"):
        VideoTransform(TransformConfig(resize=[128, 228], crop=[130, 112]))


def test_n_not_below_m_and_plan_past_the_frames():
    with pytest.raises(ValueError, match="N=10 must be < M=10"):
        T2CR(tiny_config(**{"clips.aux_strategy": "10-clip-avg1"}))
    with pytest.raises(ValueError, match="needs 102 frames but the video has 96"):
        T2CR(tiny_config(**{"clips.num_frames": 96}))


def test_k_below_one(dataset):
    with pytest.raises(ValueError, match="data.voting_exemplars must be >= 1"):
        _setup(_config(dataset, voting_exemplars=0))


def test_empty_exemplar_pool(dataset):
    path = dataset / "annotations" / "final_annotations_dict_with_dive_number.pkl"
    labels = pickle.loads(path.read_bytes())
    test_key = pickle.loads((dataset / "annotations" / "test_split_0.pkl").read_bytes())[0]
    labels[tuple(test_key)]["difficulty"] = 9.9
    path.write_bytes(pickle.dumps(labels))
    with pytest.raises(KeyError, match="difficulty 9.9, which no training sample has.*data.exemplar_rule"):
        _setup(_config(dataset))


def test_unknown_action_type_at_test(dataset):
    path = dataset / "annotations" / "final_annotations_dict_with_dive_number.pkl"
    labels = pickle.loads(path.read_bytes())
    test_key = pickle.loads((dataset / "annotations" / "test_split_0.pkl").read_bytes())[0]
    labels[tuple(test_key)]["dive_number"] = "5337D"
    path.write_bytes(pickle.dumps(labels))
    with pytest.raises(KeyError, match="action_type '5337D', which no training sample has"):
        _setup(_config(dataset, exemplar_rule="action_type"))


def test_negative_loss_weight():
    with pytest.raises(ValueError, match="loss.aln_weight must be >= 0"):
        LossConfig(aln_weight=-0.1)


def test_unknown_config_key_is_named_by_hydra():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"), \
            pytest.raises(ConfigCompositionException, match="model.decoder.layerz"):
        compose(config_name="train", overrides=["model.decoder.layerz=3"])


def test_missing_i3d_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.backbone.checkpoint"):
        build_backbone(BackboneConfig(name="i3d"))
    with pytest.raises(FileNotFoundError, match="no_such_model_rgb.pth"):
        build_backbone(BackboneConfig(name="i3d", checkpoint=str(tmp_path / "no_such_model_rgb.pth")))


def test_checkpoint_with_mismatched_keys(tmp_path):
    state = I3D().state_dict()
    state["mixed_5c.branch_9.conv3d.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "model_rgb.pth")
    with pytest.raises(CheckpointMismatchError, match="branch_9"):
        build_backbone(BackboneConfig(name="i3d", checkpoint=str(tmp_path / "model_rgb.pth")))


def test_val_fraction_outside_range(dataset):
    for bad in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match=r"data.val_fraction must be in \[0, 1\)"):
            PairDataModule(_config(dataset, val_fraction=bad))


def test_resume_with_a_changed_model_configuration(tmp_path):
    import dataclasses

    from t2cr.cli.train import refuse_changed_model

    model = dataclasses.asdict(tiny_config())
    torch.save({"hyper_parameters": {"model": model}}, tmp_path / "last.ckpt")
    refuse_changed_model(str(tmp_path / "last.ckpt"), model)  # the same: fine
    changed = {**model, "decoder": {**model["decoder"], "layers": 5}, "two_path": False}
    with pytest.raises(ValueError, match="model.decoder.layers, model.two_path differ"):
        refuse_changed_model(str(tmp_path / "last.ckpt"), changed)


def test_resume_from_a_folder_without_checkpoints(tmp_path):
    from omegaconf import OmegaConf

    from t2cr.cli.train import resume_checkpoint

    cfg = OmegaConf.create({"resume": True, "ckpt_path": None})
    with pytest.raises(FileNotFoundError, match="last.ckpt, which does not exist.*hydra.run.dir"):
        resume_checkpoint(cfg, tmp_path)
    assert resume_checkpoint(OmegaConf.create({"resume": "auto", "ckpt_path": None}), tmp_path) is None


def test_required_paths_left_unset_are_named():
    from omegaconf.errors import MissingMandatoryValue

    from t2cr.config import to_dataclass

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["data=mtl_aqa"])
    with pytest.raises(MissingMandatoryValue, match="data.root"):
        to_dataclass(DataConfig, cfg.data)
