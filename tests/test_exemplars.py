import pytest
from helpers import shared_annotations

from t2cr.data.annotations import read_annotations
from t2cr.data.config import DataConfig
from t2cr.data.exemplars import ExemplarPools
from t2cr.data.samples import Sample

MTL = shared_annotations() / "MTL-AQA"


def _sample(key, difficulty, action="101A"):
    return Sample(key=key, score=50.0, difficulty=difficulty, action_type=action, frames="01", start_frame=0,
                  end_frame=10)


def test_mtl_aqa_split_sizes_and_fields():
    splits = read_annotations(DataConfig(format="mtl_aqa", annotations=str(MTL), split_id=0))
    assert len(splits["train"]) == 1059 and len(splits["test"]) == 353
    assert not {s.key for s in splits["train"]} & {s.key for s in splits["test"]}
    assert len({s.action_type for s in splits["train"] + splits["test"]}) == 58
    assert all(s.difficulty > 0 and 0 <= s.score <= 104.5 for s in splits["train"])


def test_mtl_aqa_pools_by_difficulty_and_seeded_voting():
    splits = read_annotations(DataConfig(format="mtl_aqa", annotations=str(MTL)))
    pools = ExemplarPools(splits["train"], "difficulty")
    for sample in splits["test"][:50]:
        chosen, mask = pools.voting(sample, 10, seed=0)
        assert all(pools.train[i].difficulty == sample.difficulty for i in chosen)
        assert (chosen, mask) == pools.voting(sample, 10, seed=0)  # pure function of (seed, key)
    assert any(pools.voting(s, 10, 0)[0] != pools.voting(s, 10, 1)[0] for s in splits["test"][:10])
    lonely = [s for s in splits["train"] if len(pools.pool(s)) == 1]
    assert lonely and lonely[0].difficulty == 1.5  # README: DD 1.5 has a single training sample


def test_training_draw_never_returns_the_query_unless_alone():
    import numpy as np

    train = [_sample((1, i), 2.0) for i in range(4)] + [_sample((2, 0), 3.0)]
    pools = ExemplarPools(train, "difficulty")
    rng = np.random.default_rng(0)
    for _ in range(50):
        assert pools.draw_training(train[0], rng) in (1, 2, 3)
    assert pools.draw_training(train[4], rng) == 4  # alone in its pool


def test_small_pools_use_all_members_or_draw_with_replacement():
    train = [_sample((1, i), 2.0) for i in range(3)]
    pools = ExemplarPools(train, "difficulty")
    query = _sample((9, 9), 2.0)
    chosen, mask = pools.voting(query, 5, seed=0, policy="all")
    assert sorted(i for i, keep in zip(chosen, mask) if keep) == [0, 1, 2] and mask.count(False) == 2
    chosen, mask = pools.voting(query, 5, seed=0, policy="replace")
    assert len(chosen) == 5 and all(mask)
    assert pools.small_pool_samples([query], 5) == ["9_9"]


def test_empty_pool_is_named():
    pools = ExemplarPools([_sample((1, 0), 2.0)], "difficulty")
    with pytest.raises(KeyError, match="difficulty 3.5"):
        pools.voting(_sample((5, 5), 3.5), 3, 0)
