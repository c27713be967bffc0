"""NT-Xent* (Eq. 17) over the global batch on 2 gloo processes, with t2cr.distributed.gather_batch.

Each process holds its rows of one global batch of 6 videos and computes nt_xent_star (and T2CRLoss) on them
with gather=gather_batch. What DDP optimises is the mean over the processes of their losses; its gradient
with respect to a process's rows is that process's .grad divided by the number of processes (gather_batch's
backward sums every process's gradient of those rows). Both must equal the single-process loss of the
whole batch: the value against the plain-Python loop of tests/test_science_losses.py, the gradients against
finite differences of that loop (and the single-process code). One spawn serves every test of this file.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from test_science_losses import (
    CONFIG,
    brute_nt_xent,
    brute_nt_xent_grad,
    fake_output,
    flat_rows,
    reference_terms,
)

from t2cr.losses import LossConfig, T2CRLoss, nt_xent_star

WORLD, LOCAL = 2, 3
GLOBAL = WORLD * LOCAL
TAU = 0.37  # not the default 0.1
TOKEN_FIELDS = ("base_tokens", "aux_tokens")


def _global_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """(6, 2, 3) base and aux tokens; aux rows of different norms, aux_4 close to base_1 (a hard negative
    that lives on the other process for rank 0)."""
    g = torch.Generator().manual_seed(21)
    base = torch.randn(GLOBAL, 2, 3, generator=g, dtype=torch.float64)
    aux = torch.randn(GLOBAL, 2, 3, generator=g, dtype=torch.float64) * torch.linspace(0.5, 4.0, GLOBAL,
                                                                                       dtype=torch.float64
                                                                                       ).view(-1, 1, 1)
    aux[4] = base[1] * 1.5 + 0.05 * aux[4]
    return base, aux


def _local_output(out, rows: slice, requires_grad: bool):
    """The fake output restricted to `rows`, its token tensors fresh leaves (gradients per process)."""
    local = copy.deepcopy(out)
    for video in (local.query, local.exemplar):
        for name in ("direct", "logits", "tokens", *TOKEN_FIELDS):
            setattr(video, name, getattr(video, name)[rows].clone())
        for name in TOKEN_FIELDS:
            getattr(video, name).requires_grad_(requires_grad)
    for name in ("delta", "delta_reverse", "self_delta_query", "self_delta_exemplar"):
        setattr(local, name, getattr(local, name)[rows].clone())
    return local


def _token_grads(out) -> dict[str, torch.Tensor]:
    return {f"{v}.{n}": getattr(getattr(out, v), n).grad for v in ("query", "exemplar") for n in TOKEN_FIELDS}


def _rank_main(rank: int, init_file: str, out_dir: str) -> None:
    from t2cr.distributed import gather_batch

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        rows = slice(rank * LOCAL, (rank + 1) * LOCAL)
        base, aux = (t[rows].clone().requires_grad_() for t in _global_batch())
        loss = nt_xent_star(base, aux, tau=TAU, gather=gather_batch)
        loss.backward()

        out, scores = fake_output(seed=13, batch=GLOBAL)
        local = _local_output(out, rows, requires_grad=True)
        local_scores = {name: value[rows] for name, value in scores.items()}
        terms = T2CRLoss(LossConfig(**CONFIG), gather=gather_batch)(local, **local_scores)
        terms["total"].backward()
        torch.save({"loss": loss.detach(), "grad_base": base.grad, "grad_aux": aux.grad,
                    "terms": {name: value.detach() for name, value in terms.items()},
                    "term_grads": _token_grads(local)}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    """The saved results of both processes (one spawn for the whole file)."""
    folder = tmp_path_factory.mktemp("science_ddp")
    os.environ.pop("LOCAL_RANK", None)
    mp.spawn(_rank_main, args=(str(folder / "init"), str(folder)), nprocs=WORLD, join=True)
    return [torch.load(folder / f"rank{rank}.pt", weights_only=True) for rank in range(WORLD)]


def test_the_mean_of_the_processes_losses_is_the_global_batch_loss(ranks):
    """Reference: the Python loop of Eq. 17 over all 6 videos (and the single-process nt_xent_star)."""
    base, aux = _global_batch()
    expected = brute_nt_xent(flat_rows(base), flat_rows(aux), TAU)
    mean_over_processes = sum(r["loss"].item() for r in ranks) / WORLD
    assert mean_over_processes == pytest.approx(expected, rel=1e-12)
    assert nt_xent_star(base, aux, tau=TAU).item() == pytest.approx(expected, rel=1e-12)
    # each process's anchors see the other process's rows as negatives: a local-only loss differs
    local_only = brute_nt_xent(flat_rows(base[:LOCAL]), flat_rows(aux[:LOCAL]), TAU)
    assert ranks[0]["loss"].item() != pytest.approx(local_only, rel=1e-3)


def test_each_process_gets_the_global_batch_gradient_of_its_own_rows(ranks):
    """Reference: finite differences of the Python loop over the whole batch, and single-process autograd."""
    base, aux = _global_batch()
    fd_base, fd_aux = brute_nt_xent_grad(base, aux, TAU)
    single_base, single_aux = base.clone().requires_grad_(), aux.clone().requires_grad_()
    nt_xent_star(single_base, single_aux, tau=TAU).backward()
    # what DDP applies: the mean over the processes of their gradients
    ddp_base = torch.cat([r["grad_base"] for r in ranks]) / WORLD
    ddp_aux = torch.cat([r["grad_aux"] for r in ranks]) / WORLD
    torch.testing.assert_close(ddp_base, fd_base, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(ddp_aux, fd_aux, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(ddp_base, single_base.grad, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(ddp_aux, single_aux.grad, rtol=1e-12, atol=1e-14)


def test_t2cr_loss_with_gather_is_the_global_batch_loss_terms_and_token_gradients(ranks):
    """T2CRLoss(gather=gather_batch) on each process's pairs: the mean over processes of every term is the
    independent reference of the global batch, and the token gradients (over the processes' mean) are the
    single-process ones."""
    out, scores = fake_output(seed=13, batch=GLOBAL)
    expected = reference_terms(out, scores, CONFIG)
    for name, value in expected.items():
        mean_over_processes = sum(r["terms"][name].item() for r in ranks) / WORLD
        assert mean_over_processes == pytest.approx(value, rel=1e-10), name
    single = _local_output(out, slice(None), requires_grad=True)
    T2CRLoss(LossConfig(**CONFIG))(single, **scores)["total"].backward()
    for name, grad in _token_grads(single).items():
        ddp = torch.cat([r["term_grads"][name] for r in ranks]) / WORLD
        torch.testing.assert_close(ddp, grad, rtol=1e-12, atol=1e-14, msg=name)
