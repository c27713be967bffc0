"""Files from others are data, never code (issue 29): an annotation pickle builds plain data only.

`pickle.loads` runs whatever callable a file names (its `__reduce__`), so a folder passed as data.annotations,
or named by a checkpoint's stored run settings, could run code while it is read. t2cr reads every annotation
pickle with `packaged.PlainDataUnpickler`: numpy arrays, dtypes and scalars and builtin containers only; any
other global, and any persistent id, is refused in one line naming the file and the global, before it runs.
"""

from __future__ import annotations

import io
import math
import os
import pathlib
import pickle
import shlex
import shutil
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from framework_helpers import run_cli, tiny_overrides
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from t2cr.bank import BANK_KEY, build_exemplar_bank
from t2cr.cli.train import run_settings
from t2cr.data import packaged
from t2cr.data.packaged import RefusedPickleError, load_pickle
from t2cr.data.synthetic import ANNOTATIONS_DIR, ANNOTATIONS_FILE, load_sample_frames
from t2cr.module import T2CRModule
from t2cr.resources import CONF_DIR
from t2cr.run import build_datamodule

PACKAGED_FILES = sorted(p.relative_to(packaged.packaged_root()).as_posix()
                        for p in packaged.packaged_root().rglob("*.pkl"))
REFUSAL = "annotation files may hold only plain data (lists, dicts, numbers, strings, numpy arrays)"


# ------------------------------------------------------------------------------ crafted files


class TouchesMarker:
    """Unpickled by pickle.loads, this creates `marker`: what any code run by a crafted file stands for."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


class ShellTouchesMarker(TouchesMarker):
    """The same through a shell command (os.system), the classic payload."""

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def crafted_folder(dataset: str, file_name: str, payload: object, folder: Path) -> Path:
    """A copy of the packaged annotation folder of `dataset` (e.g. 'MTL-AQA') whose `file_name` is `payload`."""
    shutil.copytree(packaged.packaged_root() / dataset, folder)
    (folder / file_name).write_bytes(pickle.dumps(payload, protocol=4))
    return folder


def same(a: object, b: object) -> bool:
    """Deep equality that also compares numpy arrays (values, dtype, shape) and NaN floats."""
    if type(a) is not type(b):
        return False
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, (float, np.floating)) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


# ------------------------------------------------------------------------------ real files still load


@pytest.mark.parametrize("name", PACKAGED_FILES)
def test_every_packaged_annotation_file_loads_exactly_as_pickle_loads_gives(name):
    path = packaged.packaged_root() / name
    assert same(load_pickle(path, name), pickle.loads(path.read_bytes()))


def test_the_synthetic_generators_files_load_exactly_as_pickle_loads_gives(tiny_synthetic):
    files = sorted((tiny_synthetic / ANNOTATIONS_DIR).glob("*.pkl"))
    assert len(files) == 3
    for path in files:
        assert same(load_pickle(path, path.name), pickle.loads(path.read_bytes()))
    annotations = pickle.loads((tiny_synthetic / ANNOTATIONS_DIR / ANNOTATIONS_FILE).read_bytes())
    key = next(iter(annotations))
    assert load_sample_frames(tiny_synthetic, key).shape[0] == 16  # reads the annotations itself


PLAIN_VALUES = {
    "containers": {"list": [1, 2.5, "x", None, True], "tuple": (1, ("a", b"raw")), "set": {1, 2},
                   "frozenset": frozenset({3}), "complex": 1 + 2j, "bytearray": bytearray(b"ab"),
                   "ordered": OrderedDict(a=1), (3, 17): {"nested": [1.0, float("inf")]}},
    "numpy": {"array": np.arange(6, dtype=np.float32).reshape(2, 3), "ints": np.array([1, 2], dtype=np.int64),
              "text": np.array(["a", "bc"]), "scalar": np.float64(2.5), "int_scalar": np.int32(7),
              "bool": np.bool_(True), "dtype": np.dtype("f4")},
}


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_plain_data_of_every_protocol_loads_as_pickle_loads_gives(protocol, tmp_path):
    """A user's own annotation file may be written with any protocol (2 writes bytes via _codecs.encode, 5
    writes arrays via numpy's _frombuffer)."""
    path = tmp_path / "mine.pkl"
    path.write_bytes(pickle.dumps(PLAIN_VALUES, protocol=protocol))
    loaded = load_pickle(path, "an annotation file")
    expected = pickle.loads(path.read_bytes())
    for group, values in PLAIN_VALUES.items():
        for key in values:
            value, want = loaded[group][key], expected[group][key]
            if isinstance(want, (set, frozenset, complex, bytearray, np.dtype, np.generic)):
                assert type(value) is type(want) and value == want, key
            else:
                assert same(value, want), key


# ------------------------------------------------------------------------------ crafted files are refused


@pytest.mark.parametrize("payload_type", [TouchesMarker, ShellTouchesMarker])
def test_a_crafted_pickle_is_refused_naming_the_file_and_the_global_and_never_runs(payload_type, tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "final_annotations_dict_with_dive_number.pkl"
    path.write_bytes(pickle.dumps(payload_type(marker)))
    with pytest.raises(RefusedPickleError) as refused:
        load_pickle(path, "MTL-AQA annotation file")
    message = str(refused.value)
    called = "pathlib.Path.touch" if payload_type is TouchesMarker else f"{os.system.__module__}.system"
    assert message == f"{path}: refused to load {called}: {REFUSAL}"
    assert not marker.exists()
    pickle.loads(path.read_bytes())  # the same file run by pickle.loads does create it: the payload is real
    assert marker.exists()


def test_a_global_hidden_in_a_nested_value_is_refused_too(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "labels.pkl"
    path.write_bytes(pickle.dumps({("01", 1): [np.arange(3), {"deep": TouchesMarker(marker)}]}))
    with pytest.raises(RefusedPickleError, match=r"refused to load pathlib\.Path\.touch"):
        load_pickle(path, "FineDiving annotation file")
    assert not marker.exists()


def test_the_synthetic_frame_reader_refuses_a_crafted_annotation_file(tiny_synthetic, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(tiny_synthetic, root)
    marker = tmp_path / "marker"
    (root / ANNOTATIONS_DIR / ANNOTATIONS_FILE).write_bytes(pickle.dumps(TouchesMarker(marker)))
    with pytest.raises(RefusedPickleError, match=r"refused to load pathlib\.Path\.touch"):
        load_sample_frames(root, (1, 1))
    assert not marker.exists()


class _PersistentIds(pickle.Pickler):
    def persistent_id(self, obj):
        return "external" if isinstance(obj, str) and obj == "elsewhere" else None


def test_a_persistent_id_is_refused(tmp_path):
    buffer = io.BytesIO()
    _PersistentIds(buffer, protocol=2).dump({"a": "elsewhere"})
    path = tmp_path / "persistent.pkl"
    path.write_bytes(buffer.getvalue())
    with pytest.raises(RefusedPickleError, match=rf"{path}: refused to load a persistent id: annotation files"):
        load_pickle(path, "an annotation file")


def test_codecs_encode_builds_latin1_bytes_only(tmp_path):
    """Protocol 2 writes bytes as _codecs.encode(text, 'latin1'); another codec is no plain data."""
    crafted = (b"\x80\x02c_codecs\nencode\nq\x00X\x04\x00\x00\x00textq\x01X\x06\x00\x00\x00base64q\x02\x86q\x03"
               b"Rq\x04.")
    path = tmp_path / "codec.pkl"
    path.write_bytes(crafted)
    with pytest.raises(ValueError, match="_codecs.encode with encoding 'base64'"):
        load_pickle(path, "an annotation file")


# ------------------------------------------------------------------------------ through the commands

def assert_one_line_refusal(result, command: str, path: Path, marker: Path) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, (result.stdout[-2000:], result.stderr[-4000:])
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"t2cr-{command}: error: {path}: refused to load "), lines[0]
    assert lines[0].endswith(REFUSAL), lines[0]
    assert not marker.exists()


def test_prepare_check_refuses_a_crafted_mtl_aqa_annotation_file(tmp_path):
    marker = tmp_path / "marker"
    folder = crafted_folder("MTL-AQA", "final_annotations_dict_with_dive_number.pkl", TouchesMarker(marker),
                            tmp_path / "crafted")
    result = run_cli("prepare", ["data=mtl_aqa", f"data.annotations={folder}", f"data.root={tmp_path / 'frames'}",
                                 "check=true"], cwd=tmp_path, timeout=300, check=False)
    assert_one_line_refusal(result, "prepare", folder / "final_annotations_dict_with_dive_number.pkl", marker)


def test_prepare_check_refuses_a_crafted_jigsaws_label_file(tmp_path):
    """JIGSAWS' label.pkl is read before its format is checked: the payload ran, then the format error came."""
    marker = tmp_path / "marker"
    folder = crafted_folder("JIGSAWS", "label.pkl", ShellTouchesMarker(marker), tmp_path / "crafted")
    result = run_cli("prepare", ["data=jigsaws", f"data.annotations={folder}", f"data.root={tmp_path / 'frames'}",
                                 "check=true"], cwd=tmp_path, timeout=300, check=False)
    assert_one_line_refusal(result, "prepare", folder / "label.pkl", marker)


@pytest.fixture(scope="module")
def crafted_settings_checkpoint(tiny_synthetic, tmp_path_factory) -> tuple[Path, Path, Path]:
    """A tiny model saved as t2cr-train saves it, whose stored run settings point data.annotations at a copy of
    the tiny data's annotations with a crafted annotation dict: (checkpoint, crafted file, marker)."""
    folder = tmp_path_factory.mktemp("crafted_settings")
    marker = folder / "marker"
    annotations = folder / "annotations"
    shutil.copytree(tiny_synthetic / ANNOTATIONS_DIR, annotations)
    (annotations / ANNOTATIONS_FILE).write_bytes(pickle.dumps(TouchesMarker(marker)))
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        resolved = OmegaConf.to_container(compose(config_name="train", overrides=tiny_overrides(tiny_synthetic)),
                                          resolve=True)
    resolved["model"]["action_classifier"] = False  # the training CLI decides it from the data
    datamodule = build_datamodule(OmegaConf.create({"data": resolved["data"]}))
    run = run_settings(resolved)
    module = T2CRModule(resolved["model"], resolved["loss"], resolved["optim"], resolved["runtime"], run=run)
    bank = build_exemplar_bank(module.model, datamodule, 2, 0)
    hyper_parameters = dict(module.hparams)
    hyper_parameters["run"] = {**run, "data": {**run["data"], "annotations": str(annotations)}}
    path = folder / "crafted_settings.ckpt"
    torch.save({"hyper_parameters": hyper_parameters, "state_dict": module.state_dict(), BANK_KEY: bank,
                "pytorch-lightning_version": pl.__version__}, path)  # what Lightning writes
    assert T2CRModule.from_checkpoint(str(path)).run_settings["data"]["annotations"] == str(annotations)
    return path, annotations / ANNOTATIONS_FILE, marker


def test_eval_refuses_a_checkpoint_whose_run_settings_name_a_crafted_annotation_file(crafted_settings_checkpoint,
                                                                                      tmp_path):
    checkpoint, crafted, marker = crafted_settings_checkpoint
    result = run_cli("eval", [f"ckpt_path={checkpoint}", "trainer=cpu", f"hydra.run.dir={tmp_path / 'eval'}"],
                     cwd=tmp_path, timeout=300, check=False)
    assert_one_line_refusal(result, "eval", crafted, marker)


def test_explain_refuses_a_checkpoint_whose_run_settings_name_a_crafted_annotation_file(
        crafted_settings_checkpoint, tmp_path):
    checkpoint, crafted, marker = crafted_settings_checkpoint
    pool = next(iter(torch.load(checkpoint, weights_only=True)[BANK_KEY]["pools"]))
    result = run_cli("explain", [f"ckpt_path={checkpoint}", "sample='1_4'", f"pool={pool}", "steps=2",
                                 f"output_dir={tmp_path}", "device=cpu"], cwd=tmp_path, timeout=300, check=False)
    assert_one_line_refusal(result, "explain", crafted, marker)
