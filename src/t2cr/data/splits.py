"""The sample lists of a run, from the official splits: no frame is read here.

Train, a seeded validation split carved out of it (stratified by exemplar pool), test; the action-type
labels and the groups (AQA-7 classes, JIGSAWS tasks) over all three; the exemplar pools; every video once
(the ids clip features are kept under); and the seeded K voting exemplars of every val/test sample.

Before that, the samples a run leaves out: `data.exclude`'s keys and, with `data.skip_missing=true`, those the
data check found without frames (`drop_samples`, one `SplitAccount` per split: found, dropped and why, kept).
A run whose train or test split would be empty, or whose evaluated samples would have an empty exemplar pool,
is refused here, before the first step, with what caused it.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from t2cr.data.config import DataConfig
from t2cr.data.exemplars import EmptyPoolError, ExemplarPools, stable_rng
from t2cr.data.samples import Sample

log = logging.getLogger(__name__)

Voting = list[tuple[list[int], list[bool]]]  # per sample: indices into the training pool list, and a mask
Splits = dict[str, list[Sample]]

EXCLUDED = "data.exclude"  # why a sample was dropped when the user named it; other reasons are data check kinds
SHOWN_KEYS = 20  # sample keys named in a log line or message


@dataclass
class SplitAccount:
    """One official split before a run: how many samples the annotations list, which were dropped and why, which
    are kept."""

    split: str
    found: int
    dropped: dict[str, str]  # key -> why (data.exclude, or the data check's problem kind), in split order
    kept: list[str]

    def reasons(self) -> str:
        """'data.skip_missing=true: 1040 missing folder, 11 too few frames; data.exclude: 2'."""
        counts = Counter(self.dropped.values())
        missing = [f"{count} {why.replace('_', ' ')}" for why, count in sorted(counts.items()) if why != EXCLUDED]
        parts = [f"data.skip_missing=true: {', '.join(missing)}"] if missing else []
        if counts[EXCLUDED]:
            parts.append(f"{EXCLUDED}: {counts[EXCLUDED]}")
        return "; ".join(parts)

    def summary(self) -> str:
        dropped = f"{len(self.dropped)} dropped ({self.reasons()})" if self.dropped else "0 dropped"
        return f"{self.split}: {self.found} found, {dropped}, {len(self.kept)} kept"

    def key_lines(self) -> list[str]:
        """The dropped keys, in split order; the kept ones too when they are few (a partial dataset: the user's)."""
        if not self.dropped:
            return []
        lines = [f"{self.split}: dropped {name_keys(list(self.dropped))}"]
        if self.kept and len(self.kept) <= SHOWN_KEYS:
            lines.append(f"{self.split}: kept {name_keys(self.kept)}")
        return lines

    def counts(self) -> dict[str, int]:
        """What metrics.json records (t2cr-tables labels a run that dropped samples)."""
        return {"found": self.found, "dropped": len(self.dropped), "kept": len(self.kept)}


def name_keys(keys: Sequence[str], shown: int = SHOWN_KEYS) -> str:
    listed = ", ".join(keys[:shown])
    return listed + (f" ... and {len(keys) - shown} more" if len(keys) > shown else "")


def exclude_override(keys: Sequence[str]) -> str:
    """The override that leaves these samples out, quoted so that bash and Hydra keep each key a string (Hydra
    reads an unquoted 1_17 as the number 117)."""
    return "'data.exclude=" + json.dumps(list(keys), separators=(",", ":")) + "'"


def excluded_keys(official: Mapping[str, Sequence[Sample]], exclude: Iterable[object] | None) -> list[str]:
    """data.exclude as sample keys; a key that no split has is refused (a typo would otherwise keep the sample)."""
    wanted = [str(key) for key in exclude or ()]
    known = {s.key_str for samples in official.values() for s in samples}
    unknown = [key for key in wanted if key not in known]
    if not unknown:
        return wanted
    squeezed: dict[str, list[str]] = {}  # what Hydra makes of an unquoted key: 1_17 is the number 117
    for key in sorted(known):
        squeezed.setdefault(key.replace("_", ""), []).append(key)
    number = next((key for key in unknown if key in squeezed), None)
    hint = ""
    if number is not None:
        hint = (f"; {number} looks like {' or '.join(squeezed[number])} read by Hydra as a number: quote the keys, "
                f"e.g. {exclude_override(squeezed[number][:1])}")
    raise ValueError(f"data.exclude names {len(unknown)} key(s) that no split of the annotations has: "
                     f"{name_keys(unknown)}{hint}. Keys are written as the logs and t2cr-prepare's check report "
                     "write them (MTL-AQA: <event>_<index>, e.g. 1_17)")


def drop_samples(official: Mapping[str, Sequence[Sample]],
                 reasons: Mapping[str, str]) -> tuple[Splits, dict[str, SplitAccount]]:
    """Every split without the samples `reasons` names (key -> why), and what happened to each split."""
    kept: Splits = {}
    accounts: dict[str, SplitAccount] = {}
    for split, samples in official.items():
        kept[split] = [s for s in samples if s.key_str not in reasons]
        accounts[split] = SplitAccount(split, len(samples),
                                       {s.key_str: reasons[s.key_str] for s in samples if s.key_str in reasons},
                                       [s.key_str for s in kept[split]])
    return kept, accounts


def refuse_empty_splits(kept: Mapping[str, Sequence[Sample]], accounts: Mapping[str, SplitAccount],
                        config: DataConfig) -> None:
    """Train (training and the exemplar pools) and test (the run's metrics) need samples: refused before the
    first step, saying what emptied them."""
    needs = {"train": "training and the exemplar pools need at least one training sample",
             "test": "a run would train and then end without test metrics"}
    for split, need in needs.items():
        if kept[split]:
            continue
        account = accounts[split]
        if account.found == 0:
            cause = f"the annotations (data.annotations={config.annotations}) list no {split} sample"
            fix = "check data.annotations and the reader's options (data.split_id, data.classes, data.task, data.fold)"
        else:
            cause = f"all {account.found} of its samples were dropped ({account.reasons()})"
            fix = (f"put the frames of some {split} samples under data.root={config.root} (`t2cr-prepare "
                   f"data={config.name} data.root={config.root} check=true data.skip_missing=true "
                   "check_report=problems.csv` lists what each sample lacks)")
            if not any(why != EXCLUDED for why in account.dropped.values()):
                fix = "remove some of its keys from data.exclude"
        raise ValueError(f"the {split} split would be empty: {cause}; {need}. Refusing before the first step: {fix}")


def refuse_empty_pools(pools: ExemplarPools, splits: Mapping[str, Sequence[Sample]], config: DataConfig,
                       dropped_train: Sequence[Sample] = ()) -> None:
    """Every evaluated sample needs training samples in its exemplar pool; all those without are named at once."""
    orphans = [(split, s) for split in ("val", "test") for s in splits.get(split, ())
               if pools.pool_key(s) not in pools.pools]
    if not orphans:
        return
    rule = config.exemplar_rule
    by_value: dict[object, list[str]] = {}
    for _, sample in orphans:
        by_value.setdefault(pools.pool_key(sample), []).append(sample.key_str)
    listing = "; ".join(f"{name_keys(keys, 5)} {'has' if len(keys) == 1 else 'have'} {rule} {value!r}, which no "
                        "training sample has" for value, keys in list(by_value.items())[:SHOWN_KEYS])
    if len(by_value) > SHOWN_KEYS:
        listing += f"; ... and {len(by_value) - SHOWN_KEYS} more {rule} values"
    had = {pools.pool_key(s) for s in dropped_train}
    caused = [value for value in by_value if value in had]
    cause = ""
    if caused:
        share = "each of these" if len(caused) == len(by_value) else f"{len(caused)} of these {len(by_value)}"
        cause = (f" (data.skip_missing=true dropped the training samples of {share} {rule} values: their frames "
                 "are missing)")
    keys = [s.key_str for _, s in orphans]
    leave_out = exclude_override(keys[:SHOWN_KEYS]) + (f" and the other {len(keys) - SHOWN_KEYS} keys"
                                                      if len(keys) > SHOWN_KEYS else "")
    where = " and ".join(sorted({split for split, _ in orphans}, reverse=True))
    raise EmptyPoolError(f"the exemplar pools (data.exemplar_rule={rule}) of {len(orphans)} {where} sample(s) are "
                         f"empty: {listing}{cause}. Use data.exemplar_rule=random, or leave them out with "
                         f"{leave_out}")


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


def run_samples(config: DataConfig, official: dict[str, list[Sample]],
                dropped_train: Sequence[Sample] = ()) -> RunSamples:
    """Everything a run knows about its samples, from the official train and test lists (after drops);
    `dropped_train`: the training samples data.skip_missing dropped (named when they emptied a pool)."""
    train, test = official["train"], official["test"]
    val: list[Sample] = []
    if config.val_fraction > 0:
        train, val = carve_validation(train, config, dropped=len(dropped_train))
    splits = {"train": train, "val": val, "test": test}
    types = sorted({s.action_type for s in train + val + test if s.action_type is not None})
    pools = ExemplarPools(train, config.exemplar_rule)
    # an action type, difficulty or group that no training sample has: refused here, all samples named at
    # once, under the rule in use only (other rules draw exemplars by another attribute)
    refuse_empty_pools(pools, splits, config, dropped_train)
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


def carve_validation(train: list[Sample], config: DataConfig, dropped: int = 0) -> tuple[list[Sample], list[Sample]]:
    """A seeded validation split, stratified by exemplar pool; every pool keeps >= 1 training member.
    `dropped`: training samples data.skip_missing dropped before (named when no validation sample is left)."""
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
        after = (f" (data.skip_missing=true dropped {dropped} training samples, {len(train)} are left)"
                 if dropped else "")
        raise ValueError(f"data.val_fraction={config.val_fraction} leaves no validation sample: the "
                         f"exemplar pools are too small{after}; raise it or set it to 0")
    return ([s for i, s in enumerate(train) if i not in held_out],
            [s for i, s in enumerate(train) if i in held_out])
