"""PairDataModule on a tiny synthetic dataset: batches, determinism, exemplar rules, val split."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from t2cr.data.config import DataConfig
from t2cr.data.datamodule import PairDataModule
from t2cr.data.transforms import TransformConfig


@pytest.fixture(scope="module")
def synthetic_root(tiny_synthetic) -> Path:
    return tiny_synthetic


def _config(dataset: Path, **overrides) -> DataConfig:
    base = {"annotations": str(dataset / "annotations"), "root": str(dataset / "frames"), "num_frames": 16,
            "train_shift": 2, "voting_exemplars": 3, "num_workers": 0, "batch_size": 4, "eval_batch_size": 2,
            "transform": TransformConfig(resize=[24, 24], crop=[20, 20]), "synthetic": None}
    return DataConfig(**{**base, **overrides})


def test_train_and_test_batches(synthetic_root):
    dm = PairDataModule(_config(synthetic_root))
    batch = dm.crop_flip_normalise(next(iter(dm.train_dataloader())))
    assert batch["query"].shape == (4, 3, 16, 20, 20) and batch["exemplar"].shape == (4, 3, 16, 20, 20)
    assert batch["query_score"].dtype == torch.float32 and batch["query_label"].shape == (4,)
    test = dm.crop_flip_normalise(next(iter(dm.test_dataloader())))
    assert test["query"].shape == (2, 3, 16, 20, 20) and test["exemplars"].shape == (2, 3, 3, 16, 20, 20)
    assert test["exemplar_mask"].shape == (2, 3)


def test_training_pairs_follow_the_difficulty_rule(synthetic_root):
    dm = PairDataModule(_config(synthetic_root))
    dataset = dm.train_dataloader().dataset
    for index in range(len(dataset)):
        item = dataset[(0, index)]
        query = dm.samples("train")[index]
        # scores are final / DD in the model's space; same DD pool means the same DD
        exemplar_score = item["exemplar_score"].item()
        pool_scores = [s.score / s.difficulty for s in dm.samples("train") if s.difficulty == query.difficulty]
        assert any(abs(exemplar_score - p) < 1e-5 for p in pool_scores)


def test_training_items_are_a_function_of_seed_epoch_index(synthetic_root):
    dm_a, dm_b = PairDataModule(_config(synthetic_root)), PairDataModule(_config(synthetic_root))
    a, b = dm_a.train_dataloader().dataset, dm_b.train_dataloader().dataset
    item_a = {key: dm_a.crop_flip_normalise(a[key]) for key in ((0, 3), (1, 3), (2, 5))}
    for key, item in item_a.items():
        other = dm_b.crop_flip_normalise(b[key])
        torch.testing.assert_close(item["query"], other["query"], rtol=0, atol=0)
        torch.testing.assert_close(item["exemplar"], other["exemplar"], rtol=0, atol=0)
    assert not torch.equal(item_a[(0, 3)]["query"], item_a[(1, 3)]["query"])  # crops / shifts change per epoch


def test_voting_exemplars_identical_across_constructions_and_workers(synthetic_root):
    first = PairDataModule(_config(synthetic_root)).voting_exemplars("test")
    second = PairDataModule(_config(synthetic_root)).voting_exemplars("test")
    assert first == second and len(first) == 7
    one = {seed: PairDataModule(_config(synthetic_root, seed=seed, voting_exemplars=1)).voting_exemplars("test")
           for seed in (0, 1)}
    assert one[0] != one[1]  # the seed matters

    def collect(workers: int) -> list[tuple[int, list[float]]]:
        dm = PairDataModule(_config(synthetic_root, num_workers=workers))
        out = []
        for batch in dm.test_dataloader():
            out += list(zip(batch["index"].tolist(), batch["exemplar_scores"].tolist()))
        return out

    assert collect(0) == collect(2)


def test_samples_need_no_frames(synthetic_root, tmp_path):
    config = _config(synthetic_root, root=str(tmp_path / "nowhere"), check=False)
    dm = PairDataModule(config)
    samples = dm.samples("test")
    assert len(samples) == 7 and all(s.difficulty and s.action_type for s in samples)
    assert set(dm.voting_exemplars("test")) == {s.key_str for s in samples}


def test_seeded_validation_split(synthetic_root):
    dm = PairDataModule(_config(synthetic_root, val_fraction=0.5))
    train, val = dm.samples("train"), dm.samples("val")
    assert len(val) + len(train) == 12 and not {s.key for s in train} & {s.key for s in val}
    assert len(val) == 6  # one of the two members of each of the six difficulty pools
    # stratified by exemplar pool: every pool keeps training members, so no validation sample is orphaned
    assert {s.difficulty for s in val} <= {s.difficulty for s in train}
    assert [s.key for s in PairDataModule(_config(synthetic_root, val_fraction=0.5)).samples("val")] == \
        [s.key for s in val]
    exemplar_keys = {k for keys in dm.voting_exemplars("val").values() for k in keys}
    assert exemplar_keys <= {s.key_str for s in train}  # validation never votes with itself
    with pytest.raises(ValueError, match="val_fraction"):
        PairDataModule(_config(synthetic_root, val_fraction=1.0))
    with pytest.raises(ValueError, match="leaves no validation sample"):
        PairDataModule(_config(synthetic_root, val_fraction=0.1)).setup()


def test_distributed_shards_cover_train_and_test_once(synthetic_root):
    from t2cr.data.datamodule import EpochSampler

    test_shards = [list(EpochSampler(7, 0, False, rank, 2)) for rank in range(2)]
    assert sorted(i for shard in test_shards for _, i in shard) == list(range(7))  # no padding in evaluation
    train_shards = [list(EpochSampler(7, 0, True, rank, 2)) for rank in range(2)]
    assert len(train_shards[0]) == len(train_shards[1]) == 4  # padded to equal length for DDP steps
    assert {i for shard in train_shards for _, i in shard} == set(range(7))
