"""gather_batch on 2 gloo processes, with torch's autograd all-gather and with the fallback older torch takes.

Each process computes its own loss on the gathered batch; the gradient a process gets for its own rows must
be the gradient of the sum of all processes' losses (what DDP optimises), worked out here in closed form.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

ROWS, DIM, WORLD = 3, 4, 2


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    full = torch.randn(WORLD * ROWS, DIM, generator=generator, dtype=torch.float64)
    weights = torch.randn(WORLD, WORLD * ROWS, DIM, generator=generator, dtype=torch.float64)  # one per process
    return full, weights


def _rank_main(rank: int, init_file: str, out_dir: str, hide: bool) -> None:
    if hide:  # as on a torch release without it
        import torch.distributed._functional_collectives as functional

        del functional.all_gather_single_autograd
    from t2cr.distributed import _torch_all_gather_autograd, gather_batch

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        full, weights = _inputs()
        mine = full[rank * ROWS:(rank + 1) * ROWS].clone().requires_grad_()
        everyone, start = gather_batch(mine)
        # a different, nonlinear loss on each process
        loss = (weights[rank] * everyone).sum() + (rank + 1) * everyone.pow(2).sum()
        loss.backward()
        # tolist: torch's function returns a tensor subclass that weights-only loading refuses
        torch.save({"everyone": torch.tensor(everyone.tolist(), dtype=full.dtype), "start": start, "grad": mine.grad,
                    "torch_function": _torch_all_gather_autograd() is not None}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("hide", [False, True], ids=["torch-all-gather", "fallback"])
def test_gather_batch_values_and_gradients_equal_the_single_process_computation(hide, tmp_path):
    os.environ.pop("LOCAL_RANK", None)
    mp.spawn(_rank_main, args=(str(tmp_path / "init"), str(tmp_path), hide), nprocs=WORLD, join=True)
    full, weights = _inputs()
    # d/d full of sum_p [ (W_p * full).sum() + (p + 1) * |full|^2 ]
    gradient = weights.sum(0) + 2 * full * sum(p + 1 for p in range(WORLD))
    for rank in range(WORLD):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert got["torch_function"] is not hide  # the path meant to be tested is the one that ran
        assert torch.equal(got["everyone"], full) and got["start"] == rank * ROWS
        torch.testing.assert_close(got["grad"], gradient[rank * ROWS:(rank + 1) * ROWS], rtol=1e-12, atol=1e-12)
