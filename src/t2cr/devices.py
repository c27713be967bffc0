"""How many processes a job runs and what each one may use: the one place where `trainer.devices`,
`trainer.cpus_per_process` and `data.num_workers: auto` become numbers.

`trainer.devices` takes every form Lightning accepts: a count (2, "2"), every visible GPU (-1, "-1",
"auto"), GPU indices ([0, 1], "0,1"; "1," is GPU 1 alone). Batch sizes are global, so the process
count must divide them; that is checked here before any process starts.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from t2cr.cli.common import UserError, user_errors

log = logging.getLogger(__name__)

# the cores one job may use: hydra/launcher=gpu_slots sets it in each job it packs onto a node
JOB_CPUS_VAR = "T2CR_JOB_CPUS"
PACKING_HINT = ("or run several jobs of a sweep side by side, each on its own GPUs "
                "(hydra/launcher=gpu_slots, see experiments/README.md)")


def gpu_count() -> int:
    import torch  # lazily: the Hydra launcher plugin imports this module in every Hydra app

    return torch.cuda.device_count()


def visible_gpu_ids() -> list[int]:
    """The GPUs this process may use, as ids a child's CUDA_VISIBLE_DEVICES names them by.

    A child given CUDA_VISIBLE_DEVICES=1 gets physical GPU 1 whatever this process sees, so the ids come
    from this process's own CUDA_VISIBLE_DEVICES where it is set.
    """
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is None:
        return list(range(gpu_count()))
    ids = [part.strip() for part in listed.split(",") if part.strip()]
    if not all(i.isdigit() for i in ids):  # GPU-<uuid> / MIG names: submitit's visible_gpus takes integers
        raise UserError(f"CUDA_VISIBLE_DEVICES={listed} does not name GPUs by number: give them as "
                        "hydra.launcher.visible_gpus=[0,1,...]")
    return [int(i) for i in ids]


def count_devices(devices: Any, all_devices: int | None, why_unknown: str = "is not known here") -> int:
    """The number of devices on one node that `devices` asks for, in any form Lightning accepts.

    all_devices: what -1 / "auto" stand for (the visible GPUs); None where that is unknown, and they
    are refused with `why_unknown`.
    """
    given = devices
    if isinstance(devices, str):
        text = devices.strip()
        if "," in text:  # Lightning reads "0,1" (and "1,") as GPU indices, "2" as a count
            devices = [part for part in text.split(",") if part.strip()]
        elif text in ("-1", "auto"):
            devices = -1
        elif text.isdigit():
            devices = int(text)
    if isinstance(devices, Sequence) and not isinstance(devices, str):
        indices = [str(d).strip() for d in devices]
        if not indices or not all(i.isdigit() for i in indices) or len(set(indices)) != len(indices):
            raise UserError(f"trainer.devices={given!r}: a list of GPU indices must name distinct GPUs, e.g. [0,1]")
        return len(indices)
    if devices == -1:
        if all_devices is None:
            raise UserError(f"trainer.devices={given!r} means every visible GPU, which {why_unknown}: "
                            "give the number of GPUs per node (e.g. trainer.devices=2)")
        return all_devices
    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
        raise UserError(f"trainer.devices={given!r} is not a device count (2), -1 / auto (every visible GPU), "
                        "or GPU indices ([0,1] or '0,1')")
    return devices


def processes_per_node(trainer: Mapping[str, Any]) -> int:
    """The processes of this job on each node: one per device of `trainer.accelerator`."""
    accelerator = str(trainer["accelerator"])
    devices = trainer["devices"]
    visible = gpu_count() if accelerator in ("gpu", "cuda", "auto") else 0
    if accelerator == "auto":
        accelerator = "gpu" if visible else "cpu"  # Lightning's choice
    if accelerator not in ("gpu", "cuda"):
        # Lightning: "auto" is one process off the GPU; -1 has no meaning there
        return 1 if devices == "auto" else count_devices(devices, None, f"has no meaning on {accelerator}")
    count = count_devices(devices, visible)
    if count > visible:
        raise UserError(f"trainer.devices={_show(devices)} asks for {count} GPU(s) per node; {visible} visible here")
    return count


def uses_gpu(trainer: Mapping[str, Any]) -> bool:
    """Whether the job runs on GPUs (`trainer.accelerator` gpu / cuda, or auto with a GPU visible)."""
    accelerator = str(trainer["accelerator"])
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and gpu_count() > 0)


def check_global_batches(data: Mapping[str, Any], trainer: Mapping[str, Any], keys: Sequence[str],
                         per_node: int | None = None) -> int:
    """Refuse global batch sizes (`data.<key>`) that the job's processes cannot share evenly.

    Returns the number of processes. per_node: the processes per node where already known.
    """
    nodes = int(trainer["num_nodes"])
    per_node = processes_per_node(trainer) if per_node is None else per_node
    processes = per_node * nodes
    uneven = {key: int(data[key]) for key in keys if int(data[key]) % processes}
    if not uneven:
        return processes
    sizes = " and ".join(f"data.{key}={value}" for key, value in uneven.items())
    where = f"trainer.devices={_show(trainer['devices'])}"
    if str(trainer["devices"]).strip() in ("-1", "auto"):
        where += f" ({per_node} visible GPUs)"
    if nodes > 1:
        where += f" x trainer.num_nodes={nodes}"
    common = math.gcd(*(int(data[key]) for key in keys))
    fits = [d for d in range(per_node - 1, 0, -1) if common % (d * nodes) == 0]
    fewer = f"trainer.devices={fits[0]}" if fits else "fewer nodes"
    raise UserError(f"{sizes} {'is' if len(uneven) == 1 else 'are'} global (over all processes) and must divide "
                    f"by the {processes} processes of {where}: use fewer devices per job ({fewer}), {PACKING_HINT}")


def gpu_sets(visible: Sequence[int], per_job: int) -> list[list[int]]:
    """Disjoint sets of `per_job` GPUs out of `visible`, in order (hydra/launcher=gpu_slots runs a job on each)."""
    if not visible:
        raise UserError("hydra/launcher=gpu_slots shares GPUs out, and no GPU is visible here: on the CPU, "
                        "leave the launcher as it is")
    if per_job > len(visible):
        raise UserError(f"hydra/launcher=gpu_slots: {per_job} GPUs per job (trainer.devices), {len(visible)} to "
                        f"share out ({list(visible)}): use fewer per job, or name the GPUs with "
                        "hydra.launcher.visible_gpus=[0,1,...]")
    sets = [list(visible[i:i + per_job]) for i in range(0, len(visible) - per_job + 1, per_job)]
    if len(visible) % per_job:
        log.warning("GPUs %s stay idle: %d GPUs do not make sets of %d", list(visible[len(sets) * per_job:]),
                    len(visible), per_job)
    return sets


def available_cpus() -> int:
    """The cores this job may use: its share of a packed node (JOB_CPUS_VAR), else this process's CPU
    affinity (which SLURM, taskset and containers narrow), else every core."""
    if os.environ.get(JOB_CPUS_VAR):
        return max(1, int(os.environ[JOB_CPUS_VAR]))
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1  # macOS has no affinity call


def cpus_per_process(value: Any, processes: int) -> int:
    """`trainer.cpus_per_process`: a number as given; auto: the job's cores shared by its processes on the node."""
    if value == "auto":
        return max(1, available_cpus() // max(1, processes))
    if isinstance(value, bool) or not str(value).isdigit() or int(value) < 1:
        raise UserError(f"trainer.cpus_per_process={value!r} is not auto or a number of cores >= 1")
    return int(value)


def loader_workers(value: Any, cpus: int) -> int:
    """`data.num_workers`: a number as given; auto: one fewer than the process's cores (one core stays with
    the training loop), at least 0."""
    if value == "auto":
        return max(0, cpus - 1)
    if isinstance(value, bool) or not str(value).isdigit():
        raise UserError(f"data.num_workers={value!r} is not auto or a number of loader processes >= 0")
    return int(value)


def _show(value: Any) -> str:
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value)
    return str(value).replace(" ", "") if isinstance(value, (list, tuple)) else str(value)


# ------------------------------------------------------------------------- conf/hydra/launcher/slurm.yaml
def slurm_tasks_per_node(devices: Any, num_nodes: int, batch_size: int, eval_batch_size: int) -> int:
    """One SLURM task per GPU: the count must be known when the job is submitted, and divide the batches."""
    count = count_devices(devices, None, "SLURM cannot know when the job is submitted (one task per GPU)")
    trainer = {"devices": devices, "num_nodes": num_nodes}
    data = {"batch_size": batch_size, "eval_batch_size": eval_batch_size}
    check_global_batches(data, trainer, ("batch_size", "eval_batch_size"), per_node=count)
    return count


def slurm_cpus_per_task(cpus: Any) -> int:
    if cpus == "auto":
        raise UserError("hydra/launcher=slurm reserves cpus_per_task cores for each task (one per GPU): set "
                        "trainer.cpus_per_process=<cores per node / GPUs per node>, e.g. 2 on a node with 16 "
                        "cores and 8 GPUs")
    return cpus_per_process(cpus, 1)


def slurm_requeues(resume: Any, requeues: int) -> int:
    """`max_num_timeout` of hydra/launcher=slurm, once `resume` lets a requeued job continue: with resume=false
    it would start again from epoch 0 and write over the last.ckpt it could have continued from."""
    if str(resume) != "auto":
        raise UserError(f"hydra/launcher=slurm requeues a job that reaches its time limit (up to {requeues} times): "
                        f"pass resume=auto so that the requeued job continues from its last.ckpt (resume={resume} "
                        "would start it again from epoch 0 and write over that checkpoint)")
    return int(requeues)


class LaunchCheck(Callback):
    """Before a sweep submits anything: the launcher's settings resolve, or the sweep stops with the
    command's one-line error (exit 2). Hydra would otherwise print the resolver's error under a long
    traceback, and turns a callback's exception into a warning; SystemExit passes both."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        with user_errors(config.hydra.job.name):
            try:
                OmegaConf.to_container(config.hydra.launcher, resolve=True)
            except Exception as error:
                cause: BaseException | None = error
                while cause is not None and not isinstance(cause, UserError):
                    cause = cause.__cause__ or cause.__context__  # OmegaConf re-raises without `from`
                if cause is None:
                    raise
                raise cause from None


for _name, _resolver in {"t2cr_slurm_tasks": slurm_tasks_per_node, "t2cr_slurm_cpus": slurm_cpus_per_task,
                         "t2cr_slurm_requeues": slurm_requeues}.items():
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _resolver)
