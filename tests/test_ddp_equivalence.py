"""A training step on 2 processes is the step on 1 process with the same global batch.

For the default model, the official code's preset (paper_method=t2cr_reference) and every job of every sweep
in experiments/ (tiny backbone in place of I3D,
small frames): 2 gloo processes with one pair each give the same loss terms and the same gradients as
one process with both pairs. DDP's part (the gradient average) is done by hand here, as DDP does it;
what is tested is ours: NT-Xent* over the global batch and BatchNorm layers with global statistics.
The same cases check that every trainable parameter gets a gradient (DDP refuses the others).
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from omegaconf import OmegaConf
from test_experiments import PATHS, SWEEPS, compose_sweep, compose_train, sweep_jobs

from t2cr.distributed import GlobalBatchNorm
from t2cr.module import T2CRModule

NUM_TYPES = 3
PAIRS = 2  # global batch: one pair per process on 2 processes


def _case(cfg) -> dict:
    """The model and loss of a composed job, with the tiny backbone standing in for I3D."""
    OmegaConf.resolve(cfg)
    model = OmegaConf.to_container(cfg.model)
    model["backbone"].update(name="tiny", checkpoint=None)
    model["num_action_types"] = NUM_TYPES
    return {"model": model, "loss": OmegaConf.to_container(cfg.loss)}


@functools.lru_cache(maxsize=1)
def all_cases() -> dict[str, dict]:
    """Every distinct (model, loss) of the default run, the smoke run and every sweep job, by a readable name."""
    cases = {"default": _case(compose_train(*PATHS)), "smoke": _case(compose_train("experiment=smoke")),
             # the official code's way (issue 27): its symmetric SimCLR loss couples the batch twice per path
             "t2cr_reference": _case(compose_train("paper_method=t2cr_reference", *PATHS))}
    seen = {json.dumps(c, sort_keys=True) for c in cases.values()}
    for sweep in sorted(SWEEPS):
        settings = {tuple(o for o in job if not o.startswith("seed=")): None
                    for job in sweep_jobs(compose_sweep(sweep, *PATHS, hydra=True))}
        for job in settings:
            case = _case(compose_sweep(sweep, *PATHS, *job))
            key = json.dumps(case, sort_keys=True)
            if key not in seen:
                seen.add(key)
                cases[f"{sweep}:{','.join(job)}"] = case
    return cases


DTYPES = {"float64": (torch.float64, 1e-9), "float32": (torch.float32, 5e-5)}  # dtype, largest relative error


class _TrainingData:
    """What a method's `prepare` reads of the data module at fit start: CoRe's group bounds come from the
    training pairs' score differences, MUSDL checks the judges (the module calls it in `setup("fit")`)."""

    def __init__(self, case: dict) -> None:
        self.has_judge_scores = True
        self.num_judges = case["model"].get("num_judges")
        self.config = SimpleNamespace(name="test", divide_by_difficulty=True)

    def training_score_differences(self) -> list[float]:
        return [0.1 * i for i in range(1, 60)]


def build(case: dict, dtype: torch.dtype = torch.float32) -> T2CRModule:
    torch.manual_seed(0)  # the same initial weights in every process, as DDP's first broadcast makes them
    module = T2CRModule(case["model"], case["loss"], {}, {"channels_last": False})
    module.model.prepare(_TrainingData(case))
    return module.to(dtype).train()


def make_batch(case: dict, pairs: int, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    frames = case["model"]["clips"]["num_frames"]

    def videos() -> torch.Tensor:
        offsets = torch.randn(pairs, 3, 1, 1, 1, generator=generator)
        return torch.randn(pairs, 3, frames, 16, 16, generator=generator) * 0.5 + offsets

    return {"query": videos().to(dtype), "exemplar": videos().to(dtype),
            "query_score": (torch.rand(pairs, generator=generator) * 10).to(dtype),
            "exemplar_score": (torch.rand(pairs, generator=generator) * 10).to(dtype),
            "query_label": torch.randint(0, NUM_TYPES, (pairs,), generator=generator),
            "exemplar_label": torch.randint(0, NUM_TYPES, (pairs,), generator=generator),
            # per-judge marks (0, 0.5, ..., 10) for a method that reads them (MUSDL), as PairDataModule adds them
            **{f"{video}_judges": (torch.randint(0, 21, (pairs, case["model"]["num_judges"]), generator=generator)
                                   * 0.5).to(dtype)
               for video in ("query", "exemplar") if "num_judges" in case["model"]}}


def step(module: T2CRModule, batch: dict[str, torch.Tensor]) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    terms = module.loss_terms(batch)
    terms["total"].backward()
    grads = {n: p.grad.detach().clone() for n, p in module.named_parameters() if p.grad is not None}
    return {k: v.detach() for k, v in terms.items()}, grads


def _rank_main(rank: int, world: int, init_file: str, out_dir: str, cases: dict[str, dict]) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        results = {}
        for key, (name, case) in ((f"{d} {n}", (n, c)) for d in DTYPES for n, c in cases.items()):
            dtype = DTYPES[key.split()[0]][0]
            module = GlobalBatchNorm().apply(build(case, dtype))
            full = make_batch(case, PAIRS, dtype)
            share = PAIRS // world
            mine = {k: v[rank * share:(rank + 1) * share] for k, v in full.items()}
            terms, grads = step(module, mine)
            # what DDP does with the gradients, and the global value of each (local-mean) term
            names = sorted(terms)
            values = torch.stack([terms[n].double() for n in names])
            dist.all_reduce(values)
            for g in grads.values():
                dist.all_reduce(g)
                g /= world
            running = {n: b.clone() for n, b in module.named_buffers() if "running" in n}
            results[key] = {"terms": dict(zip(names, (values / world).tolist())), "grads": grads,
                             "running": running}
        if rank == 0:
            torch.save(results, Path(out_dir) / "ddp.pt")
    finally:
        dist.destroy_process_group()


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


@pytest.mark.slow
def test_two_processes_equal_one_for_every_sweep_row(tmp_path):
    cases = all_cases()
    assert len(cases) > 20  # the sweeps' rows are really here
    os.environ.pop("LOCAL_RANK", None)
    mp.spawn(_rank_main, args=(2, str(tmp_path / "init"), str(tmp_path), cases), nprocs=2, join=True)
    distributed = torch.load(tmp_path / "ddp.pt", weights_only=True)
    report = []
    for dtype_name, (dtype, tolerance) in DTYPES.items():
        worst_term, worst_grad = (0.0, ""), (0.0, "")
        for name, case in cases.items():
            module = GlobalBatchNorm().apply(build(case, dtype))
            terms, grads = step(module, make_batch(case, PAIRS, dtype))
            other = distributed[f"{dtype_name} {name}"]
            assert set(other["terms"]) == set(terms), name
            for term, value in terms.items():
                error = abs(other["terms"][term] - float(value)) / max(abs(float(value)), 1e-6)
                worst_term = max(worst_term, (error, f"{name} {term}"))
            # the whole gradient, and each parameter's against it (a bias before a softmax has a zero
            # gradient in exact arithmetic, where a relative error of its own means nothing)
            names = sorted(grads)
            assert set(other["grads"]) == set(names), name
            whole = torch.cat([grads[n].flatten() for n in names])
            worst_grad = max(worst_grad, (relative(torch.cat([other["grads"][n].flatten() for n in names]), whole),
                                          f"{name} (all parameters)"))
            for param in names:
                error = float((other["grads"][param] - grads[param]).norm() / whole.norm())
                worst_grad = max(worst_grad, (error, f"{name} {param}"))
            for buffer, value in module.named_buffers():
                if "running" in buffer:
                    assert relative(other["running"][buffer], value) < tolerance, f"{name} {buffer}"
        report.append(f"{dtype_name}: loss term {worst_term[0]:.1e} ({worst_term[1]}), "
                      f"gradient {worst_grad[0]:.1e} ({worst_grad[1]})")
        assert worst_term[0] < tolerance, (dtype_name, worst_term)
        assert worst_grad[0] < tolerance, (dtype_name, worst_grad)
    print(f"\n{len(cases)} cases; largest relative differences, 2 processes vs 1:\n" + "\n".join(report))


def test_every_sweep_row_gives_every_trainable_parameter_a_gradient():
    """Fast: one backward per distinct (model, loss) of every sweep job; DDP fails on the parameters left out."""
    for name, case in all_cases().items():
        module = build(case)
        _, grads = step(module, make_batch(case, PAIRS))
        missing = [n for n, p in module.named_parameters() if p.requires_grad and n not in grads]
        assert not missing, f"{name}: no gradient for {missing}"


def _logged_losses(run_dir: Path) -> list[dict[str, float]]:
    import csv

    with open(run_dir / "csv" / "metrics.csv") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("train/loss_total_step")]
    return [{k: float(v) for k, v in r.items() if k.startswith("train/loss_") and k.endswith("_step") and v}
            for r in rows]


@pytest.mark.slow
@pytest.mark.extended
def test_a_table7_row_trains_under_ddp_as_on_one_process(tiny_synthetic, tmp_path):
    """`loss.use_cls=false` (Table 7) once crashed DDP; NT-Xent* once had no negatives with one pair per process."""
    from framework_helpers import read_metrics, run_cli, tiny_overrides

    common = [*tiny_overrides(tiny_synthetic), "data.batch_size=2", "loss.use_cls=false", "loss.use_path_mse=false",
              "trainer.max_epochs=1", "trainer.log_every_n_steps=1", "test_best=false"]
    runs = {}
    for name, extra in {"one": [], "ddp": ["trainer=ddp_cpu"]}.items():
        runs[name] = tmp_path / name
        run_cli("train", [*common, *extra, f"hydra.run.dir={runs[name]}"], cwd=tmp_path)
    one, ddp = _logged_losses(runs["one"]), _logged_losses(runs["ddp"])
    assert len(one) == len(ddp) == read_metrics(runs["ddp"])["global_step"] == 6
    assert all(row["train/loss_path_step"] > 0.01 for row in ddp)  # NT-Xent* alone, with negatives
    for key, value in one[0].items():  # the first step starts from the same weights
        assert ddp[0][key] == pytest.approx(value, rel=1e-5), key
    for a, b in zip(one, ddp):
        assert b["train/loss_total_step"] == pytest.approx(a["train/loss_total_step"], rel=1e-3)
