"""Clip features computed once: exact fast evaluation, the fast ablation mode's store, the device-side
transform, bf16 training on CPU."""

from __future__ import annotations

import copy
import dataclasses
import warnings
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from t2cr import features as clip_store
from t2cr.data.config import DataConfig
from t2cr.data.datamodule import PairDataModule
from t2cr.data.transforms import IMAGENET_MEAN, IMAGENET_STD, TransformConfig, VideoTransform
from t2cr.features import ClipFeatures
from t2cr.losses import LossConfig
from t2cr.models.backbones import BackboneConfig
from t2cr.models.t2cr import ClipConfig, T2CRConfig
from t2cr.module import OptimConfig, RuntimeConfig, T2CRModule

K = 3


def _data(root: Path, **overrides) -> DataConfig:
    base = {"annotations": str(root / "annotations"), "root": str(root / "frames"), "num_frames": 16,
            "train_shift": 2, "voting_exemplars": K, "num_workers": 0, "batch_size": 4, "eval_batch_size": 2,
            "transform": TransformConfig(resize=[24, 24], crop=[20, 20]), "synthetic": None}
    return DataConfig(**{**base, **overrides})


def _model(num_types: int, backbone: str = "tiny", trainable: bool = True) -> dict:
    config = T2CRConfig(
        backbone=BackboneConfig(name=backbone, feature_dim=1024 if backbone == "i3d" else 64, random_init=True,
                                trainable=trainable),
        clips=ClipConfig(num_frames=16, clip_length=8, num_base_clips=3, base_starts=[0, 4, 8],
                         aux_strategy="2-clip-avg1"),
        hidden_dim=32, latent_dim=16, regressor_hidden=32, regressor_mid=16, num_action_types=num_types)
    config.attention.bottleneck = 8
    config.decoder.heads = 2
    return dataclasses.asdict(config)


def _module(model: dict, **runtime) -> T2CRModule:
    return T2CRModule(model, dataclasses.asdict(LossConfig()), dataclasses.asdict(OptimConfig()),
                      dataclasses.asdict(RuntimeConfig(**runtime)))


def _trainer(**overrides) -> pl.Trainer:
    settings = {"accelerator": "cpu", "devices": 1, "logger": False, "enable_checkpointing": False,
                "enable_progress_bar": False, "enable_model_summary": False, "max_epochs": 1,
                "use_distributed_sampler": False, "num_sanity_val_steps": 0, "limit_val_batches": 0,
                "callbacks": [ClipFeatures()]}
    return pl.Trainer(**{**settings, **overrides})


def _test_rows(module: T2CRModule, datamodule: PairDataModule, **trainer) -> list[dict]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _trainer(**trainer).test(module, datamodule=datamodule, verbose=False)
    return module.predictions["test"]


def _assert_same_rows(a: list[dict], b: list[dict]) -> None:
    assert [r["index"] for r in a] == [r["index"] for r in b] and len(a) == 7
    for key in ("pred", "direct", "contrastive"):
        np.testing.assert_allclose([r[key] for r in a], [r[key] for r in b], rtol=1e-5, atol=1e-5, err_msg=key)


# ------------------------------------------------------------------------------- exact fast evaluation
@pytest.mark.parametrize("backbone", ["tiny", "i3d"])
def test_evaluation_with_features_once_equals_the_naive_evaluation(tiny_synthetic, backbone):
    fast_data, naive_data = PairDataModule(_data(tiny_synthetic)), PairDataModule(_data(tiny_synthetic))
    torch.manual_seed(0)
    fast = _module(_model(fast_data.num_action_types, backbone), eval_features_once=True)
    naive = _module(_model(fast_data.num_action_types, backbone), eval_features_once=False)
    naive.load_state_dict(fast.state_dict())
    fast_rows, naive_rows = _test_rows(fast, fast_data), _test_rows(naive, naive_data)
    _assert_same_rows(fast_rows, naive_rows)
    assert len({round(r["pred"], 4) for r in fast_rows}) > 1  # not a constant predictor
    # the fast path ran the backbone once per distinct video: the 7 queries and their exemplars
    voting = fast_data.voting_exemplars("test")
    distinct = set(voting) | {key for keys in voting.values() for key in keys}
    assert fast.feature_passes == len(distinct) < 7 * (1 + K)
    assert naive.feature_passes == 0 and naive.features is None
    assert fast.features is None  # dropped after the loop: the backbone may train on


def test_a_method_that_votes_without_exemplars_computes_only_the_queries(tiny_synthetic):
    """USDL scores a video alone: its evaluation pays for the 7 test queries, not their K exemplars, and gives
    the numbers of the naive evaluation from frames."""
    from t2cr.models.usdl import USDLConfig

    config = USDLConfig(backbone=BackboneConfig(name="tiny", feature_dim=64, random_init=True),
                        clips=ClipConfig(num_frames=16, clip_length=8, num_base_clips=3, base_starts=[0, 4, 8]),
                        hidden=[16])
    fast_data, naive_data = PairDataModule(_data(tiny_synthetic)), PairDataModule(_data(tiny_synthetic))
    torch.manual_seed(0)
    fast = _module(dataclasses.asdict(config), eval_features_once=True)
    naive = _module(dataclasses.asdict(config), eval_features_once=False)
    naive.load_state_dict(fast.state_dict())
    encoded = []
    naive.model.backbone.register_forward_hook(lambda module, inputs, output: encoded.append(inputs[0].shape[0]))
    fast_rows, naive_rows = _test_rows(fast, fast_data), _test_rows(naive, naive_data)
    assert [r["index"] for r in fast_rows] == [r["index"] for r in naive_rows] and len(fast_rows) == 7
    np.testing.assert_allclose([r["pred"] for r in fast_rows], [r["pred"] for r in naive_rows], rtol=1e-5)
    assert fast.feature_passes == 7  # the queries; with their exemplars it would be more
    assert len(fast_data.evaluation_videos("test")) > 7
    assert sum(encoded) == 7 * 3  # from frames too: the queries' 3 clips each, no exemplar through the backbone


def test_limited_evaluation_computes_only_what_it_reads(tiny_synthetic):
    datamodule = PairDataModule(_data(tiny_synthetic))
    module = _module(_model(datamodule.num_action_types))
    rows = _test_rows(module, datamodule, limit_test_batches=1)
    assert len(rows) == 2  # one batch of 2 queries
    voting = datamodule.voting_exemplars("test")
    keys = [datamodule.samples("test")[r["index"]].key_str for r in rows]
    assert module.feature_passes == len(set(keys) | {k for key in keys for k in voting[key]})


def test_evaluation_videos_are_one_list_split_into_disjoint_shares(tiny_synthetic):
    datamodule = PairDataModule(_data(tiny_synthetic))
    ids = datamodule.evaluation_videos("test", None, world_size=2)
    assert ids == datamodule.evaluation_videos("test", None, world_size=1)  # every video, whatever the world
    shares = [clip_store.share(ids, rank, 2) for rank in range(2)]
    assert sorted(shares[0] + shares[1]) == ids and not set(shares[0]) & set(shares[1])
    test = datamodule.samples("test")
    voting = datamodule.voting_exemplars("test")
    expected = {datamodule.video_ids[s.key_str] for s in test}
    expected |= {datamodule.video_ids[k] for s in test for k in voting[s.key_str]}
    assert set(ids) == expected
    # one batch per process: queries 0 and 2 (rank 0), 1 and 3 (rank 1), eval batch 1 per process
    first = datamodule.evaluation_videos("test", [1, 1])  # Lightning's batch count of each process
    wanted = {datamodule.video_ids[test[i].key_str] for i in (0, 1)}
    wanted |= {datamodule.video_ids[k] for i in (0, 1) for k in voting[test[i].key_str]}
    assert set(first) == wanted


def test_feature_table_refuses_unknown_videos():
    table = clip_store.FeatureTable(4, 2, 3)
    table.put(torch.tensor([0, 2]), torch.ones(2, 2, 3))
    assert table.lookup(torch.tensor([[2, 0]])).shape == (1, 2, 2, 3)
    assert table.missing(range(4)) == [1, 3]
    with pytest.raises(clip_store.MissingFeaturesError, match=r"video ids \[1\]"):
        table.lookup(torch.tensor([0, 1]))


# ------------------------------------------------------------------------------- fast ablation mode
def test_fast_ablation_mode_stores_features_once_and_trains_only_the_heads(tiny_synthetic, tmp_path):
    cache = tmp_path / "features"
    datamodule = PairDataModule(_data(tiny_synthetic))
    model = _model(datamodule.num_action_types, trainable=False)
    torch.manual_seed(1)
    module = _module(model, stored_features=True, feature_cache_dir=str(cache))
    backbone_before = copy.deepcopy(module.model.backbone.state_dict())
    heads_before = copy.deepcopy(module.model.regressor.state_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _trainer(max_steps=3).fit(module, datamodule=datamodule)
    assert module.feature_passes == len(datamodule.videos)  # every video once, before training
    assert datamodule.frames_in == {"train": False, "eval": False}
    stores = list(cache.glob("clip_features-*.pt"))
    assert len(stores) == 1
    for name, value in module.model.backbone.state_dict().items():
        assert torch.equal(value, backbone_before[name]), name  # frozen
    assert any(not torch.equal(v, heads_before[n]) for n, v in module.model.regressor.state_dict().items())

    # the stored features are the backbone's features of each video's evaluation read
    stored = clip_store.load_store(stores[0], ClipFeatures.store_settings(module.model, datamodule))
    module.model.eval()
    for sample in datamodule.videos[:3]:
        with torch.no_grad():
            expected = module.model.video_clip_features(datamodule.reader(sample, None)[None])[0]
        torch.testing.assert_close(stored[sample.key_str], expected, rtol=1e-5, atol=1e-6)

    # a second job of the sweep reads the store and computes nothing
    again = _module(model, stored_features=True, feature_cache_dir=str(cache))
    again.load_state_dict(module.state_dict())
    rows = _test_rows(again, PairDataModule(_data(tiny_synthetic)))
    assert again.feature_passes == 0
    naive = _module(model, eval_features_once=False)
    naive.load_state_dict(module.state_dict())
    _assert_same_rows(rows, _test_rows(naive, PairDataModule(_data(tiny_synthetic))))


def test_stored_features_need_a_frozen_backbone():
    with pytest.raises(ValueError, match="model.backbone.trainable=false"):
        _module(_model(3, trainable=True), stored_features=True)


def test_store_names_its_settings_and_refuses_others(tmp_path):
    torch.manual_seed(0)
    model = _module(_model(3)).model
    settings = clip_store.feature_store_settings(model.backbone, model.clip_frame_indices, {"name": "x"}, [24, 24],
                                                 [20, 20])
    path = clip_store.store_path(tmp_path, settings)
    rows = {"a": torch.randn(5, 64), "b": torch.randn(5, 64)}
    clip_store.save_store(path, settings, rows)
    loaded = clip_store.load_store(path, settings)
    assert loaded.keys() == rows.keys() and torch.equal(loaded["a"], rows["a"])
    # other weights -> another file; a file under the wrong name is refused, not read
    with torch.no_grad():
        next(model.backbone.parameters()).add_(1e-3)
    changed = clip_store.feature_store_settings(model.backbone, model.clip_frame_indices, {"name": "x"},
                                                [24, 24], [20, 20])
    assert clip_store.store_path(tmp_path, changed) != path
    with pytest.raises(ValueError, match="other settings"):
        clip_store.load_store(path, changed)
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary left behind


def test_store_name_changes_with_the_interpolation_and_bilinear_keeps_the_old_name(tmp_path):
    model = _module(_model(3)).model
    args = (model.backbone, model.clip_frame_indices, {"name": "x"}, [24, 24], [20, 20])
    old = clip_store.feature_store_settings(*args)  # a store made before data.transform.interpolation existed
    assert "interpolation" not in old
    assert clip_store.feature_store_settings(*args, "bilinear") == old
    nearest = clip_store.feature_store_settings(*args, "nearest")
    assert nearest["interpolation"] == "nearest"
    assert clip_store.store_path(tmp_path, nearest) != clip_store.store_path(tmp_path, old)


# ------------------------------------------------------------------------------- transform on the device
def _reference_transform(frames: np.ndarray, resize, crop, rng) -> torch.Tensor:
    """The per-video CPU transform the loaders used before the device-side one (float resize first)."""
    video = torch.from_numpy(frames).permute(0, 3, 1, 2).float().div(255)
    if tuple(video.shape[-2:]) != tuple(resize):
        video = F.interpolate(video, size=tuple(resize), mode="bilinear", align_corners=False, antialias=True)
        video = video.mul(255).round().clamp(0, 255).div(255)
    (h, w), (ch, cw) = resize, crop
    if rng is None:
        top, left = (h - ch) // 2, (w - cw) // 2
    else:
        top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    video = video[:, :, top:top + ch, left:left + cw]
    if rng is not None and rng.random() < 0.5:
        video = video.flip(-1)
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1, 1)
    return (video.permute(1, 0, 2, 3) - mean) / std


@pytest.mark.parametrize("resize", [[24, 30], [20, 22]])
def test_device_side_transform_equals_the_per_video_reference(resize):
    transform = VideoTransform(TransformConfig(resize=resize, crop=[16, 18]))
    frames = np.random.default_rng(0).integers(0, 256, (4, 6, 20, 22, 3), dtype=np.uint8)
    seeds = [None, 1, 2, 3]
    prepared, offsets, flips, expected = [], [], [], []
    for video, seed in zip(frames, seeds):
        draws = None if seed is None else np.random.default_rng(seed)
        offset, flip = transform.draw(draws)
        prepared.append(transform.prepare(video))
        offsets.append(offset)
        flips.append(flip)
        expected.append(_reference_transform(video, resize, [16, 18],
                                             None if seed is None else np.random.default_rng(seed)))
    assert prepared[0].dtype == torch.uint8 and tuple(prepared[0].shape) == (6, *resize, 3)
    assert any(bool(f) for f in flips) and not all(bool(f) for f in flips)
    batched = transform.crop_flip_normalise(torch.stack(prepared), torch.stack(offsets), torch.stack(flips))
    assert batched.shape == (4, 3, 6, 16, 18)
    for got, want in zip(batched, expected):
        torch.testing.assert_close(got, want, rtol=0, atol=2e-6)  # x * scale - shift vs (x / 255 - m) / s


def test_loader_batches_carry_uint8_frames_until_the_device(tiny_synthetic):
    datamodule = PairDataModule(_data(tiny_synthetic))
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["query_frames"].dtype == torch.uint8 and batch["query_frames"].shape == (4, 16, 24, 24, 3)
    assert "query" not in batch
    finished = datamodule.on_after_batch_transfer(batch, 0)
    assert finished["query"].shape == (4, 3, 16, 20, 20) and finished["query"].dtype == torch.float32
    assert "query_frames" not in finished


def test_crop_draws_and_evaluation_metadata_stay_on_the_host(tiny_synthetic):
    """Only what the model reads goes to the device: reading crop offsets or sample indices from device
    tensors would make the host wait for the accelerator at every batch."""
    datamodule = PairDataModule(_data(tiny_synthetic))
    meta = torch.device("meta")  # a device that is not the host, on any machine
    for batch in (next(iter(datamodule.train_dataloader())), next(iter(datamodule.test_dataloader()))):
        moved = datamodule.transfer_batch_to_device(batch, meta, 0)
        host = {k for k in moved if k in PairDataModule.HOST_KEYS or k.endswith(("_offsets", "_flip"))}
        assert host and all(moved[k].device.type == "cpu" for k in host), host
        assert all(v.device == meta for k, v in moved.items() if k not in host and isinstance(v, torch.Tensor))
        finished = datamodule.on_after_batch_transfer(moved, 0)
        assert finished["query"].device == meta and finished["query"].dtype == torch.float32


def test_cpu_training_normalises_frames_in_the_loader_workers(tiny_synthetic):
    raw_data = PairDataModule(_data(tiny_synthetic))
    raw = raw_data.crop_flip_normalise(next(iter(raw_data.test_dataloader())))
    in_workers = PairDataModule(_data(tiny_synthetic, num_workers=1))
    in_workers.trainer = _trainer()  # a CPU trainer: crops and normalisation belong in the workers
    batch = next(iter(in_workers.test_dataloader()))
    assert "query_frames" not in batch and batch["exemplars"].dtype == torch.float32
    assert torch.equal(batch["query"], raw["query"]) and torch.equal(batch["exemplars"], raw["exemplars"])
    assert in_workers.on_after_batch_transfer(batch, 0) is batch  # nothing left to do on the device


# ------------------------------------------------------------------------------- precision and layout
def test_bf16_mixed_training_steps_are_finite_on_cpu(tiny_synthetic):
    datamodule = PairDataModule(_data(tiny_synthetic))
    module = _module(_model(datamodule.num_action_types))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = _trainer(max_steps=3, precision="bf16-mixed", limit_val_batches=1)
        trainer.fit(module, datamodule=datamodule)
    assert trainer.global_step == 3
    logged = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/loss")}
    assert logged and all(np.isfinite(v) for v in logged.values())
    assert np.isfinite(module.metrics["val"]["val/spearman"])
    assert all(p.dtype == torch.float32 for p in module.parameters())  # mixed: fp32 master weights


def test_channels_last_backbone_gives_the_same_features():
    torch.manual_seed(0)
    plain = _module(_model(3), channels_last=False).model.eval()
    fast = _module(_model(3), channels_last=True).model.eval()
    fast.load_state_dict(plain.state_dict())
    assert fast.channels_last and not plain.channels_last
    videos = torch.randn(2, 3, 16, 20, 20)
    with torch.no_grad():
        torch.testing.assert_close(fast.video_clip_features(videos), plain.video_clip_features(videos),
                                   rtol=1e-5, atol=1e-5)
