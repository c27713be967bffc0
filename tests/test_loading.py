"""The data module's DataLoader: it starts at the first batch, its workers survive a group signal, and a
process never waits for its workers at exit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from t2cr.data.datamodule import EpochSampler
from t2cr.data.loading import DeferredLoader


class _Identity(Dataset):
    def __len__(self) -> int:
        return 8

    def __getitem__(self, item):
        return torch.tensor(item)  # (epoch, index)


def _loader(kind: type, workers: int) -> DataLoader:
    sampler = EpochSampler(8, seed=5, shuffle=True, batch_size=2)
    return kind(_Identity(), batch_size=2, sampler=sampler, num_workers=workers, persistent_workers=workers > 0)


@pytest.mark.parametrize("workers", [0, 2])
def test_the_epoch_and_skip_set_after_the_iterator_is_made_are_the_ones_read(workers):
    """Lightning makes a fit's first iterator, then sets the sampler's epoch, then (resumed mid-epoch) skips
    the batches done: the batches must be those of the epoch and position set last."""
    loader = _loader(DeferredLoader, workers)
    expected = EpochSampler(8, seed=5, shuffle=True, batch_size=2)
    expected.set_epoch(3)
    order = [index for _, index in expected]  # epoch 3's permutation, computed independently of the loader

    iterator = iter(loader)
    loader.sampler.set_epoch(3)
    loader.sampler.skip_batches(1)
    read = torch.cat(list(iterator))
    assert read[:, 0].tolist() == [3] * 6  # every item drawn with epoch 3's randomness
    assert read[:, 1].tolist() == order[2:]  # epoch 3's order, the first batch skipped


def test_a_plain_loader_with_workers_reads_the_epoch_it_was_made_in():
    """Why DeferredLoader exists: the same sequence on torch's DataLoader reads epoch 0 (its workers take
    indices as soon as the iterator is made)."""
    loader = _loader(DataLoader, 2)
    iterator = iter(loader)
    loader.sampler.set_epoch(3)
    assert torch.cat(list(iterator))[:, 0].tolist() == [0] * 8


class _SignalsItsWorker(Dataset):
    """Each item sends SIGTERM and SIGINT to the process reading it (as a group signal reaches a worker)."""

    def __len__(self) -> int:
        return 6

    def __getitem__(self, index: int) -> int:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
        return index


def test_loader_workers_leave_sigterm_and_sigint_to_the_training_process():
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    loader = DeferredLoader(_SignalsItsWorker(), batch_size=2, num_workers=2)
    try:
        assert torch.cat(list(loader)).tolist() == list(range(6))
    finally:
        for signum, handler in previous.items():  # this process's handlers are untouched
            assert signal.getsignal(signum) == handler


def test_a_worker_without_it_dies_of_the_signal():
    """The reference behaviour the above guards against: torch's default worker dies, the loader fails."""
    loader = DataLoader(_SignalsItsWorker(), batch_size=2, num_workers=1)
    with pytest.raises(RuntimeError, match="DataLoader worker"):
        list(loader)


EXIT_SCRIPT = textwrap.dedent("""
    import torch
    from t2cr.data.loading import DeferredLoader
    loader = DeferredLoader(torch.utils.data.TensorDataset(torch.arange(64)), batch_size=2, num_workers=2,
                            persistent_workers=True)
    next(iter(loader))  # workers started and busy prefetching; the process ends without shutting them down
    print("ending", flush=True)
""")


def test_a_process_ends_without_waiting_for_its_workers():
    """Workers that ignore SIGTERM would keep Python's exit-time join of them waiting for ever; the loader ends
    them first. (The timeout only turns a hang into a failure.)"""
    done = subprocess.run([sys.executable, "-c", EXIT_SCRIPT], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0 and done.stdout == "ending\n", done.stderr[-2000:]
