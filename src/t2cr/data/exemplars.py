"""Exemplar pools, the training draw and the seeded K-exemplar choice for voting.

A pool groups the training samples an exemplar may come from (same difficulty, same action type,
same class, or all of them), by `data.exemplar_rule`. The voting choice for an evaluated sample
is a pure function of (seed, sample key), so predictions do not depend on the number of GPUs,
workers, or the order of evaluation (the reference code shuffles without a seed).
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from collections.abc import Hashable, Sequence

import numpy as np

from t2cr.data.samples import Sample

log = logging.getLogger(__name__)

POOL_KEYS = {
    "difficulty": lambda s: s.difficulty,
    "action_type": lambda s: s.action_type,
    "group": lambda s: s.group,
    "random": lambda s: None,
}
SMALL_POOL_POLICIES = ("all", "replace")


def stable_rng(*parts: object) -> np.random.Generator:
    """A numpy Generator seeded by a hash of `parts` (stable across processes and Python runs)."""
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


class EmptyPoolError(KeyError):
    """A sample to evaluate (or train on) whose exemplar pool no training sample is in."""

    def __str__(self) -> str:  # the message itself, not KeyError's repr of it
        return str(self.args[0]) if self.args else ""


class ExemplarPools:
    def __init__(self, train: Sequence[Sample], rule: str) -> None:
        if rule not in POOL_KEYS:
            raise ValueError(f"unknown data.exemplar_rule {rule!r}; expected one of {sorted(POOL_KEYS)}")
        if not train:
            # a run refuses an empty train split earlier, saying what emptied it (t2cr.data.splits)
            raise ValueError("the exemplar pools need at least one training sample, and the train split is empty")
        self.rule = rule
        self.train = list(train)
        self._pool_key = POOL_KEYS[rule]
        pools: dict[Hashable, list[int]] = defaultdict(list)
        for index, sample in enumerate(self.train):
            pools[self._pool_key(sample)].append(index)
        self.pools = dict(pools)
        self._index_of_key = {s.key: i for i, s in enumerate(self.train)}

    def pool_key(self, sample: Sample) -> Hashable:
        return self._pool_key(sample)

    def pool(self, sample: Sample) -> list[int]:
        key = self._pool_key(sample)
        if key not in self.pools:
            raise EmptyPoolError(f"sample {sample.key_str} has {self.rule} {key!r}, which no training sample has: "
                                 f"its exemplar pool is empty (known: {sorted(map(str, self.pools))[:20]}); use "
                                 "data.exemplar_rule=random or leave the sample out with "
                                 f"'data.exclude=[\"{sample.key_str}\"]'")
        return self.pools[key]

    def draw_training(self, query: Sample, rng: np.random.Generator) -> int:
        """One exemplar index from the query's pool, never the query itself unless it is alone."""
        members = self.pool(query)
        own = self._index_of_key.get(query.key)
        others = [i for i in members if i != own] or members
        return others[int(rng.integers(len(others)))]

    def voting(self, sample: Sample, k: int, seed: int, policy: str = "all") -> tuple[list[int], list[bool]]:
        """K exemplar indices for `sample` and a mask of which ones count.

        With a pool smaller than K, 'all' uses every member once (the rest is masked padding) and
        'replace' draws K with replacement.
        """
        if k < 1:
            raise ValueError(f"data.voting_exemplars must be >= 1, got {k}")
        if policy not in SMALL_POOL_POLICIES:
            raise ValueError(f"unknown data.small_pool_policy {policy!r}; expected one of {SMALL_POOL_POLICIES}")
        own = self._index_of_key.get(sample.key)
        members = [i for i in self.pool(sample) if i != own] or self.pool(sample)
        rng = stable_rng(seed, sample.key_str)
        if len(members) >= k:
            chosen = rng.choice(len(members), size=k, replace=False)
            return [members[i] for i in chosen], [True] * k
        if policy == "replace":
            chosen = rng.choice(len(members), size=k, replace=True)
            return [members[i] for i in chosen], [True] * k
        padding = k - len(members)
        return members + [members[0]] * padding, [True] * len(members) + [False] * padding

    def small_pool_samples(self, samples: Sequence[Sample], k: int) -> list[str]:
        """Keys of the samples whose pool (without themselves) has fewer than K members."""
        small = []
        for sample in samples:
            own = self._index_of_key.get(sample.key)
            members = [i for i in self.pool(sample) if i != own]
            if len(members) < k:
                small.append(sample.key_str)
        return small
