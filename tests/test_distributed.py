"""t2cr.distributed on 2 gloo processes: gather_batch (torch's autograd all-gather and the fallback older torch
takes) and GlobalBatchNorm, against single-process computations.

Each process computes its own loss on the gathered batch; the gradient a process gets for its own rows must
be the gradient of the sum of all processes' losses (what DDP optimises), worked out here in closed form.
"""

from __future__ import annotations

import json
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

        if hasattr(functional, "all_gather_single_autograd"):
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
    from t2cr.distributed import _torch_all_gather_autograd

    if not hide and _torch_all_gather_autograd() is None:
        pytest.skip(f"torch {torch.__version__} has no all_gather_single_autograd (the fallback case runs)")
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


def _batchnorm_inputs() -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(3)
    # 2 processes with 3 and 2 samples (a last, shorter batch): the merge must weigh them by their counts
    full = torch.randn(5, 4, 3, 2, 2, generator=generator, dtype=torch.float64) * 3 + 1
    weights = torch.randn(5, 4, 3, 2, 2, generator=generator, dtype=torch.float64)
    affine = {"weight": torch.rand(4, generator=generator, dtype=torch.float64) + 0.5,
              "bias": torch.randn(4, generator=generator, dtype=torch.float64)}
    return full, weights, affine


SPLIT = (3, 2)


def _batchnorm(affine: dict[str, torch.Tensor]) -> torch.nn.BatchNorm3d:
    layer = torch.nn.BatchNorm3d(4, momentum=0.3).double()
    with torch.no_grad():
        layer.weight.copy_(affine["weight"])
        layer.bias.copy_(affine["bias"])
    return layer


class _CollectiveCount:
    """Counts torch.distributed's collectives called in this process (all of them, whatever the wrapper)."""

    NAMES = ("all_reduce", "all_gather", "all_gather_into_tensor", "reduce_scatter_tensor", "broadcast")

    def __init__(self) -> None:
        self.calls = 0
        for name in self.NAMES:
            original = getattr(dist, name)

            def counted(*args, _original=original, **kwargs):
                self.calls += 1
                return _original(*args, **kwargs)

            setattr(dist, name, counted)


def _second_input(full: torch.Tensor) -> torch.Tensor:
    return full.flip(0) * 0.5 + 2  # another batch: normalised about a shift (the running mean) that is not 0


def _batchnorm_rank(rank: int, init_file: str, out_dir: str) -> None:
    from t2cr.distributed import GlobalBatchNorm

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        full, weights, affine = _batchnorm_inputs()
        start = sum(SPLIT[:rank])
        rows = slice(start, start + SPLIT[rank])
        layer = GlobalBatchNorm().apply(_batchnorm(affine))
        count = _CollectiveCount()
        with torch.no_grad():
            layer(full[rows])  # a first step moves the running statistics
        mine = _second_input(full)[rows].clone().requires_grad_()
        before_forward = count.calls
        out = layer(mine)
        forward_calls = count.calls - before_forward
        (weights[rows] * out).sum().backward()  # this process's part of the loss
        torch.save({"out": out.detach(), "grad": mine.grad, "weight": layer.weight.grad, "bias": layer.bias.grad,
                    "mean": layer.running_mean, "var": layer.running_var,
                    "calls": [forward_calls, count.calls - before_forward - forward_calls]},
                   Path(out_dir) / f"bn{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_global_batchnorm_on_2_processes_is_batchnorm_on_the_global_batch(tmp_path):
    """Outputs, input gradients, the summed weight gradients (what DDP all-reduces) and the running statistics
    of 2 processes equal torch's BatchNorm3d on the whole batch, with shares of different sizes, on a second
    step (a running mean that is not 0); one collective forward and one backward."""
    os.environ.pop("LOCAL_RANK", None)
    mp.spawn(_batchnorm_rank, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    full, weights, affine = _batchnorm_inputs()
    reference = _batchnorm(affine)  # torch's own layer, one process, the global batch
    with torch.no_grad():
        reference(full)
    x = _second_input(full).clone().requires_grad_()
    out = reference(x)
    (weights * out).sum().backward()
    got = [torch.load(tmp_path / f"bn{rank}.pt", weights_only=True) for rank in range(WORLD)]
    close = {"rtol": 1e-10, "atol": 1e-12}
    torch.testing.assert_close(torch.cat([g["out"] for g in got]), out.detach(), **close)
    torch.testing.assert_close(torch.cat([g["grad"] for g in got]), x.grad, **close)
    torch.testing.assert_close(got[0]["weight"] + got[1]["weight"], reference.weight.grad, **close)
    torch.testing.assert_close(got[0]["bias"] + got[1]["bias"], reference.bias.grad, **close)
    assert [g["calls"] for g in got] == [[1, 1]] * WORLD
    for g in got:  # every process keeps the global running statistics
        torch.testing.assert_close(g["mean"], reference.running_mean, **close)
        torch.testing.assert_close(g["var"], reference.running_var, **close)


@pytest.mark.parametrize("processes", [1, 2])
def test_a_training_step_reads_the_host_once(processes, tiny_synthetic, tmp_path):
    """The default path (rich progress bar, SIGTERM agreement, finite check, GlobalBatchNorm under DDP): one
    host read per training step on every process; logging steps (every trainer.log_every_n_steps, set beyond
    the run here) add one per logged value."""
    from framework_helpers import run_cli, tiny_overrides

    overrides = [o for o in tiny_overrides(tiny_synthetic) if not o.startswith("callbacks.progress")]
    run_cli("train", [*overrides, "callbacks.progress=rich", "data.batch_size=2", "trainer.max_epochs=1",
                      "trainer.log_every_n_steps=1000", "test_best=false", f"hydra.run.dir={tmp_path / 'run'}",
                      *(["trainer=ddp_cpu"] if processes > 1 else []),
                      "+callbacks.extra.count._target_=host_reads.CountHostReads",
                      f"+callbacks.extra.count.path={tmp_path / 'reads.json'}"],
            cwd=tmp_path, path=Path(__file__).parent)
    for rank in range(processes):
        windows = json.loads((tmp_path / f"reads_rank{rank}.json").read_text())
        assert len(windows) == 5  # 6 steps of one epoch: 5 whole windows between their ends
        assert [w["host_reads"] for w in windows] == [1] * 5, windows
