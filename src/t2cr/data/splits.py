"""The sample lists of a run, from the official splits: no frame is read here.

Train, a seeded validation split carved out of it (stratified by exemplar pool), test; the action-type
labels and the groups (AQA-7 classes, JIGSAWS tasks) over all three; the exemplar pools; every video once
(the ids clip features are kept under); and the seeded K voting exemplars of every val/test sample.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from t2cr.data.config import DataConfig
from t2cr.data.exemplars import ExemplarPools, stable_rng
from t2cr.data.samples import Sample

log = logging.getLogger(__name__)

Voting = list[tuple[list[int], list[bool]]]  # per sample: indices into the training pool list, and a mask


@dataclass
class RunSamples:
    splits: dict[str, list[Sample]]
    action_types: list
    labels: dict
    groups: list
    pools: ExemplarPools
    videos: list[Sample]
    video_ids: dict[str, int]
    voting: dict[str, Voting]


def run_samples(config: DataConfig, official: dict[str, list[Sample]]) -> RunSamples:
    """Everything a run knows about its samples, from the official train and test lists."""
    train, test = official["train"], official["test"]
    val: list[Sample] = []
    if config.val_fraction > 0:
        train, val = carve_validation(train, config)
    splits = {"train": train, "val": val, "test": test}
    unseen = {s.action_type for s in val + test} - {s.action_type for s in train}
    if unseen:
        log.warning("action types in val/test that no training sample has: %s (their exemplar pools are "
                    "empty under data.exemplar_rule=action_type)", sorted(map(str, unseen)))
    types = sorted({s.action_type for s in train + val + test if s.action_type is not None})
    pools = ExemplarPools(train, config.exemplar_rule)
    videos, video_ids = video_table(splits, config)
    return RunSamples(
        splits=splits, action_types=types, labels={t: i for i, t in enumerate(types)},
        # AQA-7 classes / JIGSAWS tasks: metrics are also reported per group
        groups=sorted({s.group for s in train + val + test if s.group is not None}),
        pools=pools, videos=videos, video_ids=video_ids,
        voting={split: voting_exemplars(pools, splits[split], split, config) for split in ("val", "test")})


def voting_exemplars(pools: ExemplarPools, samples: list[Sample], split: str, config: DataConfig) -> Voting:
    """The seeded K voting exemplars of every sample (a pure function of the seed and the sample's key)."""
    small = pools.small_pool_samples(samples, config.voting_exemplars)
    if small:
        log.warning("%d %s samples have fewer than K=%d exemplars in their pool (policy %r): %s",
                    len(small), split, config.voting_exemplars, config.small_pool_policy,
                    ", ".join(small[:20]) + (" ..." if len(small) > 20 else ""))
    return [pools.voting(s, config.voting_exemplars, config.seed, config.small_pool_policy) for s in samples]


def video_table(splits: dict[str, list[Sample]], config: DataConfig) -> tuple[list[Sample], dict[str, int]]:
    """Every video of the run once (train, val, test): the ids clip features are stored under."""
    videos: list[Sample] = []
    ids: dict[str, int] = {}
    for split in ("train", "val", "test"):
        for sample in splits[split]:
            known = ids.get(sample.key_str)
            if known is None:
                ids[sample.key_str] = len(videos)
                videos.append(sample)
            elif videos[known] != sample:
                raise ValueError(f"two different samples share the key {sample.key_str!r} "
                                 f"({videos[known]} and {sample}); the annotations of {config.annotations} "
                                 "must name each video once")
    return videos, ids


def carve_validation(train: list[Sample], config: DataConfig) -> tuple[list[Sample], list[Sample]]:
    """A seeded validation split, stratified by exemplar pool; every pool keeps >= 1 training member."""
    pool_of = ExemplarPools(train, config.exemplar_rule).pool_key
    by_pool: dict[object, list[int]] = {}
    for index, sample in enumerate(train):
        by_pool.setdefault(pool_of(sample), []).append(index)
    held_out: set[int] = set()
    for key in sorted(by_pool, key=str):
        members = by_pool[key]
        count = min(round(len(members) * config.val_fraction), len(members) - 1)
        order = stable_rng(config.seed, "val_split", key).permutation(len(members))
        held_out.update(members[i] for i in order[:count])
    if not held_out:
        raise ValueError(f"data.val_fraction={config.val_fraction} leaves no validation sample: the "
                         "exemplar pools are too small; raise it or set it to 0")
    return ([s for i, s in enumerate(train) if i not in held_out],
            [s for i, s in enumerate(train) if i in held_out])
