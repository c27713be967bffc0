"""PairDataModule: annotation -> Sample -> frame source -> frame selection -> transform -> batch.

Training items are (query, exemplar) pairs; evaluation items are a query with its K voting
exemplars. Every random choice of a training item (temporal shift, exemplar, crop, flip) is a pure
function of (seed, epoch, index), and the voting exemplars of a sample a pure function of (seed,
key), so a run is reproducible whatever the number of workers or processes, and resumes exactly.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate, get_worker_info

from t2cr.config_checks import check_data_config
from t2cr.data.annotations import read_annotations
from t2cr.data.cache import CachedFrameSource, cache_identity, open_frame_source
from t2cr.data.check import check_samples, format_report, problem_kinds
from t2cr.data.config import DataConfig, ensure_generated
from t2cr.data.exemplars import ExemplarPools, stable_rng
from t2cr.data.loading import DeferredLoader
from t2cr.data.reading import SampleReader
from t2cr.data.samples import Sample
from t2cr.data.splits import (
    EXCLUDED,
    RunSamples,
    SplitAccount,
    drop_samples,
    excluded_keys,
    refuse_empty_splits,
    run_samples,
)
from t2cr.data.transforms import VideoTransform
from t2cr.devices import available_cpus, loader_workers

log = logging.getLogger(__name__)


class DataCheckError(ValueError):
    """Frames are missing or unreadable; raised before any training step (and before t2cr-prepare writes)."""


class EpochSampler(Sampler):
    """Yields (epoch, index) so that items can seed their randomness; shards across processes.

    Training: a permutation seeded by (seed, epoch), padded to a multiple of the world size (as a
    DistributedSampler would). Evaluation: in order, no padding, rank r takes r, r + W, ...
    """

    def __init__(self, size: int, seed: int, shuffle: bool, rank: int = 0, world_size: int = 1,
                 batch_size: int = 1) -> None:
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.rank, self.world_size, self.batch_size = rank, world_size, batch_size
        self.epoch = 0
        self._skip = 0  # samples of this epoch already trained on (mid-epoch resume)

    def skip_batches(self, batches: int) -> None:
        self._skip = batches * self.batch_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.size))
        order = stable_rng(self.seed, "order", self.epoch).permutation(self.size).tolist()
        padded = math.ceil(self.size / self.world_size) * self.world_size
        return order + order[: padded - self.size]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        mine = self._order()[self.rank :: self.world_size][self._skip :]
        self._skip = 0  # only the first pass after a resume is shortened
        return iter([(self.epoch, i) for i in mine])

    def __len__(self) -> int:
        # the whole epoch: after a resume Lightning counts the skipped batches as done
        return len(self._order()[self.rank :: self.world_size])


class ScoreSpace:
    """Model targets: score / difficulty with DD (the prediction is multiplied back), else score."""

    def __init__(self, divide_by_difficulty: bool) -> None:
        self.divide_by_difficulty = divide_by_difficulty

    def scale(self, sample: Sample) -> float:
        if not self.divide_by_difficulty:
            return 1.0
        if not sample.difficulty:
            raise ValueError(f"sample {sample.key_str} has no difficulty; set data.divide_by_difficulty=false")
        return float(sample.difficulty)

    def target(self, sample: Sample) -> float:
        return sample.score / self.scale(sample)


VIDEO_NAMES = ("query", "exemplar", "exemplars", "video")


def refuse_targets_outside(splits: dict[str, list[Sample]], scores: ScoreSpace, config: DataConfig) -> None:
    """Every split's targets lie in data.score_range, or the run stops here, before training: a target beyond
    it would fall outside USDL's bins (its prediction saturates) and CoRe's groups."""
    low, high = (float(v) for v in config.score_range)
    for split, samples in splits.items():
        for sample in samples:
            target = scores.target(sample)
            if not low - 1e-9 <= target <= high + 1e-9:
                space = "score / DD" if scores.divide_by_difficulty else "score"
                raise ValueError(f"data.score_range=[{low:g}, {high:g}] does not hold {split} sample {sample.key_str}'s "
                                 f"{space} {target:.4g}: set data.score_range to the range of {space} in "
                                 f"{config.name} (data.divide_by_difficulty={scores.divide_by_difficulty})")


def crop_flip_normalise_batch(batch: dict, transform: VideoTransform) -> dict:
    """uint8 frames + crop/flip draws (<name>_frames / _offsets / _flip) -> normalised float <name>."""
    for name in VIDEO_NAMES:
        if f"{name}_frames" in batch:
            frames = batch.pop(f"{name}_frames")
            out = _shared_output(frames, transform) if get_worker_info() is not None else None
            batch[name] = transform.crop_flip_normalise(frames, batch.pop(f"{name}_offsets"), batch.pop(f"{name}_flip"), out)
    return batch


def _shared_output(frames: torch.Tensor, transform: VideoTransform) -> torch.Tensor:
    """The float output of a batch, allocated in shared memory as default_collate does in a worker: the
    batch then reaches the main process without another copy of its largest tensor."""
    shape = (*frames.shape[:-4], 3, frames.shape[-4], *transform.crop)
    storage = torch.UntypedStorage._new_shared(math.prod(shape) * 4)
    return torch.empty(0, dtype=torch.float32).set_(storage, 0, shape)


class CropFlipNormaliseCollate:
    """Collate uint8 items, then crop, flip and normalise the whole batch at once (CPU training: in the loader workers).

    Stacking uint8 and writing each float once is cheaper than normalising item by item and stacking floats."""

    def __init__(self, transform: VideoTransform) -> None:
        self.transform = transform

    def __call__(self, items: list[dict]) -> dict:
        # the uint8 frames are stacked in private memory: only the normalised floats travel to the main process
        frames = {key: torch.stack([item.pop(key) for item in items]) for key in list(items[0])
                  if key.endswith("_frames")}
        return crop_flip_normalise_batch({**default_collate(items), **frames}, self.transform)


def add_frames(item: dict, name: str, raws: Sequence[dict[str, torch.Tensor]], stacked: bool) -> None:
    """Put read_raw results under <name>_frames / _offsets / _flip (stacked: a K axis first)."""
    for field in ("frames", "offsets", "flip"):
        values = [raw[field] for raw in raws]
        item[f"{name}_{field}"] = torch.stack(values) if stacked else values[0]


class PairTrainDataset(Dataset):
    """(query, exemplar) pairs. With frames, uint8 frames + crop/flip draws (cropped, flipped and normalised on the device);
    without (stored clip features), only the video ids the module looks its features up by."""

    def __init__(self, samples: Sequence[Sample], pools: ExemplarPools, reader: SampleReader,
                 labels: dict[str, int], scores: ScoreSpace, seed: int, video_ids: dict[str, int],
                 with_frames: bool = True, with_judges: bool = False) -> None:
        """with_judges: items carry query_judges / exemplar_judges (every sample has judge scores)."""
        self.samples, self.pools, self.reader = list(samples), pools, reader
        self.labels, self.scores, self.seed = labels, scores, seed
        self.video_ids, self.with_frames, self.with_judges = video_ids, with_frames, with_judges

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item: tuple[int, int]) -> dict:
        epoch, index = item
        rng = stable_rng(self.seed, "train", epoch, index)
        query = self.samples[index]
        exemplar = self.pools.train[self.pools.draw_training(query, rng)]
        item = {
            "query_score": torch.tensor(self.scores.target(query), dtype=torch.float32),
            "exemplar_score": torch.tensor(self.scores.target(exemplar), dtype=torch.float32),
            "query_label": self.labels.get(query.action_type, -1),
            "exemplar_label": self.labels.get(exemplar.action_type, -1),
            "query_video": self.video_ids[query.key_str], "exemplar_video": self.video_ids[exemplar.key_str],
            "index": index,
        }
        if self.with_judges:
            item["query_judges"] = torch.tensor(query.judge_scores, dtype=torch.float32)
            item["exemplar_judges"] = torch.tensor(exemplar.judge_scores, dtype=torch.float32)
        if self.with_frames:
            add_frames(item, "query", [self.reader.read_raw(query, rng)], stacked=False)
            add_frames(item, "exemplar", [self.reader.read_raw(exemplar, rng)], stacked=False)
        return item


class VotingDataset(Dataset):
    """A query with its K voting exemplars; frames only when the evaluation runs the backbone per batch."""

    def __init__(self, samples: Sequence[Sample], exemplars: list[tuple[list[int], list[bool]]],
                 pools: ExemplarPools, reader: SampleReader, labels: dict[str, int], scores: ScoreSpace,
                 video_ids: dict[str, int], groups: Sequence[str] = (), with_frames: bool = True) -> None:
        self.samples, self.exemplars, self.pools = list(samples), exemplars, pools
        self.reader, self.labels, self.scores = reader, labels, scores
        self.video_ids, self.with_frames = video_ids, with_frames
        self.group_index = {g: i for i, g in enumerate(groups)}

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item: tuple[int, int]) -> dict:
        _, index = item
        sample = self.samples[index]
        chosen, mask = self.exemplars[index]
        exemplars = [self.pools.train[i] for i in chosen]
        item = {
            "query_video": self.video_ids[sample.key_str],
            "exemplar_videos": torch.tensor([self.video_ids[e.key_str] for e in exemplars]),
            "exemplar_scores": torch.tensor([self.scores.target(e) for e in exemplars], dtype=torch.float32),
            "exemplar_mask": torch.tensor(mask),
            "true_score": torch.tensor(sample.score, dtype=torch.float64),
            "scale": torch.tensor(self.scores.scale(sample), dtype=torch.float64),
            "label": self.labels.get(sample.action_type, -1),
            "group": self.group_index.get(sample.group, -1),
            "index": index,
        }
        if self.with_frames:
            add_frames(item, "query", [self.reader.read_raw(sample, None)], stacked=False)
            add_frames(item, "exemplars", [self.reader.read_raw(e, None) for e in exemplars], stacked=True)
        return item


class VideoDataset(Dataset):
    """Evaluation reads (centre crop, no jitter) of videos by id: what clip features are computed from."""

    def __init__(self, videos: Sequence[Sample], ids: Sequence[int], reader: SampleReader) -> None:
        self.videos, self.ids, self.reader = videos, list(ids), reader

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, position: int) -> dict:
        video_id = self.ids[position]
        item = {"video_id": video_id}
        add_frames(item, "video", [self.reader.read_raw(self.videos[video_id], None)], stacked=False)
        return item


class PairDataModule(pl.LightningDataModule):
    def __init__(self, config: DataConfig, cpus_per_process: int | None = None) -> None:
        """cpus_per_process: the cores of each training process (t2cr.run.build_datamodule derives them from
        trainer.cpus_per_process); None: every core this process may use."""
        super().__init__()
        self.config = config
        self.cpus_per_process = cpus_per_process
        self.scores = ScoreSpace(config.divide_by_difficulty)
        self._splits: dict[str, list[Sample]] | None = None
        self.annotated: dict[str, list[Sample]] | None = None  # the official splits, as the annotations list them
        self.excluded: list[str] = []  # data.exclude's keys
        self.accounts: dict[str, SplitAccount] = {}  # per official split: found, dropped (why), kept
        # what the loaders hand the model: frames, or only video ids when the module holds clip features
        self.frames_in = {"train": True, "eval": True}
        self._video_loaders: dict[tuple, DataLoader] = {}
        # where crop / flip / normalisation run: None = in the loader workers when training runs on the
        # CPU (they work in parallel there), after the transfer when it runs on an accelerator
        self.normalise_in_workers: bool | None = None
        check_data_config(config)  # numeric ranges, before any file is read

    # ------------------------------------------------------------------------------ preparation
    def prepare_data(self) -> None:
        ensure_generated(self.config)  # the embedded dataset, when data.synthetic asks for it

    def setup(self, stage: str | None = None) -> None:
        if self._splits is not None:
            return
        self.prepare_data()  # idempotent; makes setup() enough outside a Trainer
        self.annotated = read_annotations(self.config)
        self.excluded = excluded_keys(self.annotated, self.config.exclude)
        # only training samples are shifted (data.train_shift): val/test samples need no margin frames
        self.reader = SampleReader(open_frame_source(self.config), VideoTransform(self.config.transform),
                                   self.config.num_frames, self.config.frame_selection, self.config.train_shift,
                                   shifted_keys=[s.key_str for s in self.annotated["train"]])
        problems: dict[str, str] = {}
        if self.config.check or self.config.check_decode:
            if not isinstance(self.reader.source, CachedFrameSource) and not Path(self.config.root).exists():
                raise FileNotFoundError(f"data.root={self.config.root} does not exist: point it at the "
                                        f"{self.config.name} frames (see the data config's header for the layout)")
            problems = self._frame_problems()
        known, self.accounts = self.plan(problems)
        refuse_targets_outside(known.splits, self.scores, self.config)
        self._log_accounts(known)
        self._splits, self._voting = known.splits, known.voting
        self.action_types, self.labels, self.groups = known.action_types, known.labels, known.groups
        self.pools, self.videos, self.video_ids = known.pools, known.videos, known.video_ids

    def plan(self, problems: dict[str, str]) -> tuple[RunSamples, dict[str, SplitAccount]]:
        """The run's samples once data.exclude's keys and those with frame `problems` (key -> problem kind,
        dropped by data.skip_missing) are left out, with each official split's account (found, dropped and
        why, kept). Refuses as a run does, before the first step: an empty train or test split, an evaluated
        sample with an empty exemplar pool. t2cr-prepare check=true asks the same of what its check found."""
        if self.annotated is None:  # asked before setup: read the annotations (setup plans itself)
            self.setup()
        reasons = {**{key: EXCLUDED for key in self.excluded}, **problems}
        kept, accounts = drop_samples(self.annotated, reasons)
        refuse_empty_splits(kept, accounts, self.config)
        dropped_train = [s for s in self.annotated["train"] if s.key_str in problems]
        return run_samples(self.config, kept, dropped_train), accounts

    def _frame_problems(self) -> dict[str, str]:
        """Before any training step: the frames of every sample not excluded must exist (and decode, with
        data.check_decode). Key -> problem kind of the samples data.skip_missing drops; refused without it."""
        excluded = set(self.excluded)
        samples = list({s.key_str: s for split in self.annotated.values() for s in split
                        if s.key_str not in excluded}.values())
        problems = check_samples(samples, self.reader, decode=self.config.check_decode)
        if problems and not self.config.skip_missing:
            kinds = problem_kinds(problems)
            raise DataCheckError(f"the data check found {len(kinds)} of {len(samples)} samples with missing or "
                                 f"unreadable frames:\n{format_report(problems)}")
        return problem_kinds(problems)

    def _log_accounts(self, known: RunSamples) -> None:
        """Per split: found, dropped (why), kept; the dropped keys (and the kept ones when they are few)."""
        dropped = any(account.dropped for account in self.accounts.values())
        level = logging.WARNING if dropped else logging.INFO
        # without the data check nothing is known about the frames: "0 dropped" alone would read as "all there"
        unchecked = "" if self.config.check or self.config.check_decode else " (frames not checked: data.check=false)"
        for split in ("train", "test"):
            account = self.accounts[split]
            log.log(level, "data %s%s", account.summary(), unchecked)
            for line in account.key_lines():
                log.log(level, "data %s", line)
        if known.splits["val"]:
            log.info("data val: %d samples carved from train's kept ones (data.val_fraction=%s), %d left to train on",
                     len(known.splits["val"]), self.config.val_fraction, len(known.splits["train"]))

    def split_counts(self) -> dict[str, dict[str, int]]:
        """Found / dropped / kept per official split (metrics.json keeps it: t2cr-tables labels runs that dropped
        samples); val, when carved, counts as part of train."""
        self.setup()
        return {split: account.counts() for split, account in self.accounts.items()}

    def official_splits_of(self) -> dict[str, str]:
        """Sample key -> the official split(s) listing it ('train', 'test', or 'train+test')."""
        self.setup()
        splits: dict[str, list[str]] = {}
        for split, samples in self.annotated.items():
            for sample in samples:
                splits.setdefault(sample.key_str, []).append(split)
        return {key: "+".join(names) for key, names in splits.items()}

    # ------------------------------------------------------------------------------ inspection
    @property
    def num_action_types(self) -> int:
        self.setup()
        return len(self.action_types)

    def samples(self, split: str) -> list[Sample]:
        """The split's sample records, without reading any frame."""
        self.setup()
        if split not in self._splits:
            raise KeyError(f"unknown split {split!r}; expected one of {sorted(self._splits)}")
        return list(self._splits[split])

    def voting_exemplars(self, split: str) -> dict[str, list[str]]:
        """Sample key -> the keys of its K voting exemplars (masked padding left out)."""
        self.setup()
        return {
            s.key_str: [self.pools.train[i].key_str for i, keep in zip(*choice) if keep]
            for s, choice in zip(self._splits[split], self._voting[split])
        }

    def has_split(self, split: str) -> bool:
        self.setup()
        return bool(self._splits.get(split))

    # ------------------------------------------------------------------------------ inputs
    def use_stored_features(self, train: bool, evaluation: bool) -> None:
        """Loaders stop reading frames where the module looks clip features up by video id instead."""
        self.frames_in = {"train": not train, "eval": not evaluation}

    def evaluation_split(self, stage: str) -> str:
        """The split a validation ('val') or test ('test') loop runs over."""
        if stage == "test":
            return "test"
        return "val" if self.has_split("val") else "test"

    def evaluation_videos(self, stage: str, batches_per_rank: Sequence[int] | None = None,
                          world_size: int = 1, with_exemplars: bool = True) -> list[int]:
        """Ids of every video (queries and their voting exemplars) an evaluation loop reads, over all ranks.

        `batches_per_rank[r]`: how many of its batches process r's loop takes (Lightning's num_val_batches after
        limit_val_batches and friends), so that a limited loop does not pay for videos it never reads; its
        length is the world size. Without it, every batch of `world_size` processes. The same list on every
        process. `with_exemplars` False: the queries only (for a method that scores a video without exemplars).
        """
        self.setup()
        split = self.evaluation_split(stage)
        world = len(batches_per_rank) if batches_per_rank is not None else world_size
        batch = self._per_process(self.config.eval_batch_size, "eval_batch_size", world)
        needed: set[int] = set()
        samples, voting = self._splits[split], self._voting[split]
        for rank in range(world):
            indices = [i for _, i in EpochSampler(len(samples), self.config.seed, False, rank, world)]
            if batches_per_rank is not None:
                indices = indices[: batches_per_rank[rank] * batch]
            for i in indices:
                needed.add(self.video_ids[samples[i].key_str])
                if not with_exemplars:
                    continue
                chosen, _ = voting[i]
                needed.update(self.video_ids[self.pools.train[j].key_str] for j in chosen)
        return sorted(needed)

    def data_identity(self) -> dict:
        """The data settings that determine what a video's frames are (what stored clip features depend on)."""
        return cache_identity(self.config)

    def video_loader(self, ids: Sequence[int], batch_size: int) -> DataLoader:
        """Evaluation reads of the given videos, in order (for computing clip features).

        The loader of a given list is kept, with persistent workers: every validation epoch reads the
        same videos, and restarting worker processes each time would cost more than the reads.
        """
        self.setup()
        in_workers = self._normalise_in_workers()
        key = (tuple(ids), batch_size, in_workers)
        if key not in self._video_loaders:
            workers = min(self.num_workers(), len(ids))
            self._video_loaders[key] = DeferredLoader(
                VideoDataset(self.videos, ids, self.reader), batch_size=batch_size, shuffle=False,
                num_workers=workers, pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0,
                collate_fn=self._collate(in_workers))
        return self._video_loaders[key]

    def num_workers(self) -> int:
        """Loader processes per training process: data.num_workers, or for auto the process's cores - 1."""
        return loader_workers(self.config.num_workers, self.cpus_per_process or available_cpus())

    def crop_flip_normalise(self, batch: dict) -> dict:
        """uint8 frames + crop/flip draws -> normalised float videos, on the batch's device."""
        return crop_flip_normalise_batch(batch, self.reader.transform)

    def _collate(self, in_workers: bool):
        return CropFlipNormaliseCollate(self.reader.transform) if in_workers else default_collate

    def _normalise_in_workers(self) -> bool:
        if self.normalise_in_workers is not None:
            return self.normalise_in_workers
        trainer = getattr(self, "trainer", None)
        return trainer is not None and trainer.strategy.root_device.type == "cpu"

    # evaluation metadata and crop/flip draws stay on the host: they are read there (as Python numbers),
    # and reading device tensors would make the host wait for the accelerator at every batch
    HOST_KEYS = ("index", "true_score", "scale", "group")

    def transfer_batch_to_device(self, batch: dict, device: torch.device, dataloader_idx: int) -> dict:
        host = {k: batch.pop(k) for k in list(batch) if k in self.HOST_KEYS or k.endswith(("_offsets", "_flip"))}
        batch = super().transfer_batch_to_device(batch, device, dataloader_idx)
        batch.update(host)
        return batch

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        # crops, flips and normalisation run on the accelerator, batched, after a uint8 transfer
        return self.crop_flip_normalise(batch)

    # ------------------------------------------------------------------------------ loaders
    def _rank_world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 1
        return trainer.global_rank, trainer.world_size

    def _per_process(self, global_batch: int, what: str, world: int | None = None) -> int:
        world = self._rank_world()[1] if world is None else world
        if global_batch % world:
            raise ValueError(f"data.{what}={global_batch} is global and must be divisible by the "
                             f"{world} processes")
        return global_batch // world

    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool, workers: int | None = None) -> DataLoader:
        rank, world = self._rank_world()
        workers = self.num_workers() if workers is None else workers
        return DeferredLoader(
            dataset, batch_size=batch_size,
            sampler=EpochSampler(len(dataset), self.config.seed, shuffle, rank, world, batch_size),
            num_workers=workers, pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0,
            drop_last=False, collate_fn=self._collate(self._normalise_in_workers()),
        )

    @property
    def has_judge_scores(self) -> bool:
        """Every training sample (and exemplar) lists the same number of per-judge scores: the batches carry them."""
        self.setup()
        counts = {None if s.judge_scores is None else len(s.judge_scores) for s in self.pools.train}
        return len(counts) == 1 and None not in counts

    @property
    def num_judges(self) -> int | None:
        """Judges per sample where the batches carry judge scores, else None."""
        return len(self.pools.train[0].judge_scores) if self.has_judge_scores else None

    def training_score_differences(self) -> list[float]:
        """|target difference| of every two training samples that share an exemplar pool (model score space):
        the pairs training can draw, from which CoRe builds its groups."""
        self.setup()
        targets = [self.scores.target(s) for s in self.pools.train]
        differences = []
        for members in self.pools.pools.values():
            values = [targets[i] for i in members]
            differences += [abs(a - b) for i, a in enumerate(values) for b in values[i + 1:]]
        return differences

    def train_dataloader(self) -> DataLoader:
        self.setup()
        dataset = PairTrainDataset(self._splits["train"], self.pools, self.reader, self.labels, self.scores,
                                   self.config.seed, self.video_ids, self.frames_in["train"],
                                   with_judges=self.has_judge_scores)
        return self._loader(dataset, self._per_process(self.config.batch_size, "batch_size"), True,
                            workers=None if self.frames_in["train"] else 0)

    def _voting_loader(self, split: str) -> DataLoader:
        self.setup()
        with_frames = self.frames_in["eval"]
        dataset = VotingDataset(self._splits[split], self._voting[split], self.pools, self.reader, self.labels,
                                self.scores, self.video_ids, self.groups, with_frames)
        # without frames an item is a handful of numbers: worker processes would only cost their start
        return self._loader(dataset, self._per_process(self.config.eval_batch_size, "eval_batch_size"), False,
                            workers=None if with_frames else 0)

    def val_dataloader(self) -> DataLoader:
        return self._voting_loader(self.evaluation_split("val"))

    def test_dataloader(self) -> DataLoader:
        return self._voting_loader("test")
