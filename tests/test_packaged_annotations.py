"""The official annotation files ship with t2cr: `data.annotations: packaged` reads them, checksums checked."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from t2cr.config import to_dataclass
from t2cr.data import packaged
from t2cr.data.annotations import read_annotations
from t2cr.data.config import DataConfig
from t2cr.resources import CONF_DIR

COUNTS = {"mtl_aqa": (1059, 353), "finediving": (2251, 749)}


def _data_config(name: str, *overrides: str) -> DataConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"data={name}", "data.root=frames", *overrides])
    return to_dataclass(DataConfig, OmegaConf.to_container(cfg.data, resolve=True))


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_a_dataset_config_reads_the_packaged_files_without_any_path(name):
    config = _data_config(name)
    assert config.annotations == packaged.PACKAGED
    splits = read_annotations(config)
    assert (len(splits["train"]), len(splits["test"])) == COUNTS[name]


def test_jigsaws_folds_come_from_the_packaged_splits():
    splits = read_annotations(_data_config("jigsaws", "data.task=Suturing", "data.fold=0"))
    assert len(splits["train"]) + len(splits["test"]) == 39  # Suturing: 9 + 10 + 10 + 10 trials


def test_a_user_folder_still_overrides_the_packaged_files(tmp_path):
    copy = tmp_path / "mine"
    shutil.copytree(packaged.packaged_folder("mtl_aqa"), copy)
    (copy / "test_split_0.pkl").write_bytes((copy / "train_split_0.pkl").read_bytes())  # a user's own split
    splits = read_annotations(_data_config("mtl_aqa", f"data.annotations={copy}"))
    assert len(splits["test"]) == 1059  # read from the user's folder, with no checksum of ours applied


def test_every_packaged_file_matches_its_checksum_and_is_listed():
    root = packaged.packaged_root()
    sums = packaged._checksums(root.resolve())
    on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*.pkl")}
    assert on_disk == set(sums) and len(sums) == 13
    for name in sums:
        packaged.load_pickle(root / name, name)  # raises on a mismatch


def test_a_damaged_packaged_file_is_refused_naming_it(tmp_path, monkeypatch):
    root = tmp_path / "annotation_files"
    shutil.copytree(packaged.packaged_root(), root)
    damaged = root / "JIGSAWS" / "label.pkl"
    content = bytearray(damaged.read_bytes())
    content[len(content) // 2] ^= 1  # one bit of one label
    damaged.write_bytes(bytes(content))
    monkeypatch.setattr(packaged, "packaged_root", lambda: root)
    with pytest.raises(ValueError, match=r"label.pkl: the packaged annotation file does not match .*SHA256SUMS"):
        read_annotations(_data_config("jigsaws", "data.task=Suturing", "data.fold=0"))


def test_aqa7_has_no_packaged_files_and_says_where_they_come_from():
    with pytest.raises(ValueError, match="ships no annotation files for data.format='aqa7'"):
        packaged.packaged_folder("aqa7")
    with pytest.raises(ValueError, match="set data.annotations to the folder holding the dataset's official"):
        read_annotations(_data_config("aqa7"))


def test_the_package_data_is_declared_for_installation():
    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert '"t2cr.data" = ["annotation_files/*", "annotation_files/*/*"]' in text
