"""The DataLoader every loader of the data module is: it starts reading at the first batch asked for, and its
worker processes leave the stopping signals to their training process.

Why it starts late. Lightning makes a fit's first training iterator before it sets the sampler's epoch and
before a resumed run's callbacks say which batches the epoch already trained. A DataLoader with worker
processes pulls sampler indices (and starts reading) the moment its iterator is made, so a run resumed into
epoch 2 read epoch 0's order and epoch 0's random draws (with 0 workers the read happened to start late
enough). Deferring the start to the first `next()` makes the sampler's state at that batch the one used,
whatever the number of workers.

Why workers ignore SIGTERM and SIGINT. A cluster's preemption, `timeout`, `kill -- -PGID` and Ctrl-C signal
the whole process group: a worker that dies of it makes the training process fail ("DataLoader worker ...
is killed by signal") before it can save. The training process handles the signal (t2cr.reliability) and
ends its workers itself: Lightning's loops do so for the loaders they iterate, and at interpreter exit every
loader's workers are ended before Python's multiprocessing joins them (a worker that ignores SIGTERM would
otherwise keep that join waiting for ever).
"""

from __future__ import annotations

import atexit
import os
import signal
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from torch.utils.data import DataLoader
from torch.utils.data.dataloader import _MultiProcessingDataLoaderIter


def worker_start(worker_id: int) -> None:
    """A loader worker's first act (`worker_init_fn`): leave SIGTERM and SIGINT to the training process; seed
    as Lightning's own worker init would (`seed_everything(workers=True)`), which this one replaces."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if int(os.environ.get("PL_SEED_WORKERS", "0")):
        from lightning_fabric.utilities.seed import pl_worker_init_function

        pl_worker_init_function(worker_id)


def _end_workers(iterator: weakref.ref, workers: list) -> None:
    alive = iterator()
    if alive is not None:
        alive._shutdown_workers()
    for worker in workers:  # one its iterator did not end: multiprocessing's SIGTERM would not either
        if worker.is_alive():
            worker.kill()
            worker.join()


class _StartsOnFirstBatch(Iterator):
    def __init__(self, start: Callable[[], Iterator]) -> None:
        self._start, self._iterator = start, None

    def __next__(self) -> Any:
        if self._iterator is None:
            self._iterator = self._start()
        return next(self._iterator)


class DeferredLoader(DataLoader):
    """A DataLoader whose iterator starts (asks its sampler, starts or wakes its workers) at the first batch."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("num_workers", 0) > 0 and kwargs.get("worker_init_fn") is None:
            kwargs["worker_init_fn"] = worker_start
        super().__init__(*args, **kwargs)

    def __iter__(self) -> Iterator:
        return _StartsOnFirstBatch(super().__iter__)

    def _get_iterator(self) -> Iterator:
        # torch makes an iterator here: once per loader with persistent workers, else once per epoch
        iterator = super()._get_iterator()
        if isinstance(iterator, _MultiProcessingDataLoaderIter):
            # registered after torch's own exit hook, so it runs before it (torch's makes shutting down a no-op)
            # and before multiprocessing's join of the workers
            atexit.register(_end_workers, weakref.ref(iterator), list(iterator._workers))
        return iterator
