"""Tests for the I3D backbone and its strict Kinetics checkpoint loader (CPU, small clips)."""

from __future__ import annotations

import ast
import os
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from t2cr.models.i3d import (
    I3D,
    CheckpointMismatchError,
    MaxPool3dSame,
    Unit3D,
    load_kinetics_checkpoint,
    same_padding,
)

# the reference key list: ../shared/reference beside the checkout (or $T2CR_REFERENCE, the folder holding it)
REFERENCE_TSV = Path(os.environ.get("T2CR_REFERENCE", Path(__file__).resolve().parents[2] / "shared" / "reference")) / "i3d_kinetics_rgb_keys.tsv"


def _read_reference() -> dict[str, tuple[int, ...]]:
    if not REFERENCE_TSV.is_file():
        pytest.skip(f"reference key list {REFERENCE_TSV} not present on this machine")
    shapes: dict[str, tuple[int, ...]] = {}
    for line in REFERENCE_TSV.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, shape = line.split("\t")
        shapes[key] = tuple(ast.literal_eval(shape))
    return shapes


@pytest.fixture(scope="module")
def model() -> I3D:
    torch.manual_seed(0)
    return I3D().eval()


@pytest.fixture(scope="module")
def reference_state() -> dict[str, torch.Tensor]:
    """A 287-key checkpoint like the 2018 ``model_rgb.pth``: random values, no ``num_batches_tracked``."""
    torch.manual_seed(1)
    src = I3D()
    state = {}
    for k, v in src.state_dict().items():
        if k.endswith("num_batches_tracked"):
            continue
        # Distinct from any fresh init (BN stats are otherwise exactly 0/1), so equality proves loading.
        state[k] = torch.rand_like(v) + 0.5 if "running_var" in k else torch.randn_like(v)
    return state


def _save(obj: object, path: Path) -> Path:
    torch.save(obj, path)
    return path


def _snapshot(m: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def _assert_state_equal(m: nn.Module, expected: dict[str, torch.Tensor]) -> None:
    actual = m.state_dict()
    for k, v in expected.items():
        assert torch.equal(actual[k], v), k


# --------------------------------------------------------------------------------------- architecture


def test_state_dict_matches_reference_tsv(model: I3D) -> None:
    reference = _read_reference()
    assert len(reference) == 344
    actual = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert list(actual) == list(reference)  # same keys, same order
    assert actual == reference


@pytest.mark.parametrize(
    ("in_size", "kernel", "stride", "expected"),
    [
        (112, 7, 2, (2, 3)),  # out 56: 55*2+7-112 = 5
        (224, 7, 2, (2, 3)),  # out 112: 111*2+7-224 = 5
        (16, 7, 2, (2, 3)),  # out 8: 7*2+7-16 = 5
        (56, 3, 2, (0, 1)),  # out 28: 27*2+3-56 = 1, extra pixel goes after
        (57, 3, 2, (1, 1)),  # out 29: 28*2+3-57 = 2
        (7, 2, 2, (0, 1)),  # out 4: 3*2+2-7 = 1
        (8, 2, 2, (0, 0)),  # out 4: 3*2+2-8 = 0
        (14, 3, 1, (1, 1)),  # stride 1: k-1 = 2
        (8, 1, 1, (0, 0)),
        (1, 3, 2, (1, 1)),  # out 1: 0+3-1 = 2
        (2, 1, 2, (0, 0)),  # would be negative (-1) -> clamped to 0
    ],
)
def test_same_padding(in_size: int, kernel: int, stride: int, expected: tuple[int, int]) -> None:
    assert same_padding(in_size, kernel, stride) == expected


def test_unit_stride1_matches_torch_same_padding() -> None:
    # For stride 1, PyTorch's padding="same" also puts the odd extra pixel after: an independent check.
    unit = Unit3D(4, 5, (2, 3, 4), use_bn=False, activation=False)
    x = torch.randn(1, 4, 5, 6, 7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # even-kernel "same" copy warning
        ref = F.conv3d(x, unit.conv3d.weight, padding="same")
    torch.testing.assert_close(unit(x), ref)


def test_maxpool_same_output_size_and_padding_value() -> None:
    pool = MaxPool3dSame((1, 3, 3), (1, 2, 2))
    x = -torch.rand(1, 2, 3, 7, 8) - 1.0  # all negative: zero padding would leak 0 into the border
    y = pool(x)
    assert y.shape == (1, 2, 3, 4, 4)  # ceil(7/2), ceil(8/2)
    assert (y < 0).all()
    assert list(pool.parameters()) == []


def test_forward_shape_small(model: I3D) -> None:
    with torch.no_grad():
        out = model(torch.randn(2, 3, 16, 64, 64))
    assert out.shape == (2, 1024)
    assert torch.isfinite(out).all()


def test_forward_shape_112(model: I3D) -> None:
    with torch.no_grad():
        out = model(torch.randn(2, 3, 16, 112, 112))
    assert out.shape == (2, 1024)


def test_logits_shape(model: I3D) -> None:
    with torch.no_grad():
        out = model.logits(torch.randn(1, 3, 16, 64, 64))
    assert out.shape == (1, 400)


def test_rejects_bad_input(model: I3D) -> None:
    with pytest.raises(ValueError, match="N, 3, T, H, W"):
        model(torch.randn(1, 1, 16, 64, 64))


# --------------------------------------------------------------------------------------- batch norm


def _bn_stats(m: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in m.state_dict().items() if "running_" in k}


def test_freeze_bn_keeps_running_stats() -> None:
    m = I3D(freeze_bn=True)
    m.train()
    assert m.training
    bns = [b for b in m.modules() if isinstance(b, nn.BatchNorm3d)]
    assert len(bns) == 57 and all(not b.training for b in bns)
    assert all(b.eps == pytest.approx(1e-3) for b in bns)
    before = _bn_stats(m)
    with torch.no_grad():
        m(torch.randn(2, 3, 8, 32, 32))
    after = _bn_stats(m)
    assert all(torch.equal(before[k], after[k]) for k in before)
    # BN params still train unless freeze_bn_affine is set.
    assert all(b.weight.requires_grad and b.bias.requires_grad for b in bns)


def test_without_freeze_bn_running_stats_change() -> None:
    m = I3D(freeze_bn=False)
    m.train()
    assert all(b.training for b in m.modules() if isinstance(b, nn.BatchNorm3d))
    before = _bn_stats(m)
    with torch.no_grad():
        m(torch.randn(2, 3, 8, 32, 32))
    after = _bn_stats(m)
    assert not torch.equal(
        before["conv3d_1a_7x7.batch3d.running_mean"], after["conv3d_1a_7x7.batch3d.running_mean"]
    )
    assert not torch.equal(
        before["mixed_5c.branch_0.batch3d.running_var"], after["mixed_5c.branch_0.batch3d.running_var"]
    )


def test_freeze_bn_affine_only_touches_bn_params() -> None:
    m = I3D(freeze_bn=True, freeze_bn_affine=True)
    bn_param_ids = {id(p) for b in m.modules() if isinstance(b, nn.BatchNorm3d) for p in b.parameters()}
    assert len(bn_param_ids) == 2 * 57
    for name, p in m.named_parameters():
        if id(p) in bn_param_ids:
            assert not p.requires_grad, name
        else:
            assert p.requires_grad, name


# --------------------------------------------------------------------------------------- checkpoint loading


def test_load_reference_checkpoint_without_num_batches_tracked(
    tmp_path: Path, reference_state: dict[str, torch.Tensor]
) -> None:
    assert len(reference_state) == 287
    path = _save(reference_state, tmp_path / "model_rgb.pth")
    m = I3D()
    load_kinetics_checkpoint(m, path)
    _assert_state_equal(m, reference_state)
    assert all(int(v) == 0 for k, v in m.state_dict().items() if k.endswith("num_batches_tracked"))


@pytest.mark.parametrize("wrap", ["module_prefix", "state_dict", "model", "state_dict_and_prefix"])
def test_load_wrapped_checkpoints(
    tmp_path: Path, reference_state: dict[str, torch.Tensor], wrap: str
) -> None:
    prefixed = {f"module.{k}": v for k, v in reference_state.items()}
    obj = {
        "module_prefix": prefixed,
        "state_dict": {"state_dict": reference_state, "epoch": 3},
        "model": {"model": reference_state},
        "state_dict_and_prefix": {"state_dict": prefixed},
    }[wrap]
    m = I3D()
    m.load_kinetics_checkpoint(_save(obj, tmp_path / "ckpt.pth"))  # method form
    _assert_state_equal(m, reference_state)


def test_missing_file_raises_with_guidance(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "model_rgb.pth"
    with pytest.raises(FileNotFoundError) as info:
        load_kinetics_checkpoint(I3D(), missing)
    msg = str(info.value)
    assert str(missing) in msg
    assert "model.backbone.checkpoint" in msg and "model_rgb.pth" in msg and "scratch" in msg


def test_none_path_raises() -> None:
    with pytest.raises(FileNotFoundError, match="model.backbone.checkpoint"):
        load_kinetics_checkpoint(I3D(), None)


def _corrupt(state: dict[str, torch.Tensor], kind: str) -> tuple[dict[str, torch.Tensor], str]:
    state = dict(state)
    if kind == "missing":
        key = "mixed_4d.branch_1.1.conv3d.weight"
        del state[key]
    elif kind == "unexpected":
        key = "fc.weight"
        state[key] = torch.zeros(3)
    else:
        key = "conv3d_0c_1x1.conv3d.bias"
        state[key] = torch.zeros(401)
    return state, key


@pytest.mark.parametrize("kind", ["missing", "unexpected", "shape"])
def test_mismatch_raises_and_leaves_model_untouched(
    tmp_path: Path, reference_state: dict[str, torch.Tensor], kind: str
) -> None:
    bad, key = _corrupt(reference_state, kind)
    path = _save(bad, tmp_path / "bad.pth")
    m = I3D()
    before = _snapshot(m)
    with pytest.raises(CheckpointMismatchError) as info:
        m.load_kinetics_checkpoint(path)
    assert isinstance(info.value, ValueError)
    assert key in str(info.value)
    assert str(path) in str(info.value)
    _assert_state_equal(m, before)


def test_mismatch_lists_at_most_ten_keys(tmp_path: Path, reference_state: dict[str, torch.Tensor]) -> None:
    bad = {k: v for k, v in reference_state.items() if not k.startswith("mixed_5")}  # 60 missing
    with pytest.raises(CheckpointMismatchError) as info:
        load_kinetics_checkpoint(I3D(), _save(bad, tmp_path / "bad.pth"))
    err = info.value
    assert len(err.missing) == 60
    assert "60 missing key(s)" in str(err) and "and 50 more" in str(err)


def test_other_num_classes_does_not_load_partially(
    tmp_path: Path, reference_state: dict[str, torch.Tensor]
) -> None:
    with pytest.raises(CheckpointMismatchError, match="conv3d_0c_1x1.conv3d.weight"):
        load_kinetics_checkpoint(I3D(num_classes=10), _save(reference_state, tmp_path / "ckpt.pth"))


def test_random_init_gives_features_that_tell_videos_apart():
    """PyTorch's default conv init made every video's features ~1e-6 and identical to 1e-7."""
    torch.manual_seed(0)
    model = I3D(freeze_bn=True).eval()
    with torch.no_grad():
        features = model(torch.randn(4, 3, 8, 56, 56))
    magnitude, spread = features.abs().mean().item(), features.std(0).mean().item()
    assert magnitude > 0.1 and spread > 0.01 * magnitude


def _aten_ops_of_a_backward(module: torch.nn.Module, clips: torch.Tensor) -> set[str]:
    from torch.utils._python_dispatch import TorchDispatchMode

    class Record(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.names: set[str] = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.add(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    with Record() as record:
        module(clips).sum().backward()
    return record.names


# torch.use_deterministic_algorithms(True) (trainer.deterministic=true) raises on these backward ops on CUDA
CUDA_NONDETERMINISTIC = {"adaptive_avg_pool3d", "_adaptive_avg_pool3d", "avg_pool3d", "adaptive_avg_pool2d",
                         "_adaptive_avg_pool2d", "adaptive_max_pool2d", "fractional_max_pool3d"}


@pytest.mark.parametrize("name", ["i3d", "tiny"])
def test_backbone_training_uses_no_op_that_deterministic_cuda_refuses(name):
    from t2cr.models.backbones import BackboneConfig, build_backbone

    backbone = build_backbone(BackboneConfig(name=name, random_init=True, freeze_bn=True,
                                             feature_dim=1024 if name == "i3d" else 64)).train()
    ops = _aten_ops_of_a_backward(backbone, torch.randn(2, 3, 8, 32, 32))
    assert "convolution_backward" in ops  # the recorder sees the backward
    assert not ops & CUDA_NONDETERMINISTIC, sorted(ops & CUDA_NONDETERMINISTIC)
