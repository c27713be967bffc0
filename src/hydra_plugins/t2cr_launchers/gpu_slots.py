"""hydra/launcher=gpu_slots: the jobs of a sweep side by side on one node, each on its own GPUs.

submitit's local executor (hydra/launcher=submitit_local) starts every job of a sweep at once and
gives each the same GPUs: CUDA_VISIBLE_DEVICES is the first `gpus_per_node` of its `visible_gpus`
(submitit/local/local.py, `LocalExecutor._submit_command`). This launcher keeps submitit for the jobs
(a process each, logs, timeouts, pickled results) and only chooses the `visible_gpus` each job is
submitted with: the node's GPUs are cut into sets of `gpus_per_job`, one job runs on each set, and the
next job starts on a set when the job there ends.

Imported by Hydra's plugin scan in every Hydra app: nothing heavy at module level.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, filter_overrides
from omegaconf import OmegaConf

try:
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher
except ImportError as missing:  # optional: every other Hydra app still scans this plugin without a warning
    from hydra.plugins.launcher import Launcher

    _MISSING_SUBMITIT = missing

    class LocalLauncher(Launcher):  # type: ignore[no-redef]
        """Stands in where hydra-submitit-launcher is not installed: asking for the launcher says so."""

        def __init__(self, **_: Any) -> None:
            from t2cr.optional import MissingPackage

            raise MissingPackage("hydra/launcher=gpu_slots needs the hydra-submitit-launcher package, which is "
                                 "not installed here: pip install hydra-submitit-launcher") from _MISSING_SUBMITIT

        def setup(self, **_: Any) -> None:
            raise NotImplementedError  # never reached: __init__ refuses

log = logging.getLogger(__name__)

POLL_S = 0.5  # how often running jobs are checked for their end


class GpuSlotsLauncher(LocalLauncher):
    """submitit's local launcher, one job per GPU set at a time."""

    def __init__(self, gpus_per_job: Any, visible_gpus: Sequence[int] | None = None, **params: Any) -> None:
        super().__init__(**params)
        self.gpus_per_job = OmegaConf.to_container(gpus_per_job) if OmegaConf.is_config(gpus_per_job) else gpus_per_job
        self.visible_gpus = None if visible_gpus is None else [int(g) for g in visible_gpus]

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit

        from t2cr.cli.common import user_errors
        from t2cr.devices import JOB_CPUS_VAR, available_cpus, count_devices, gpu_sets, visible_gpu_ids

        assert self.config is not None
        with user_errors(self.config.hydra.job.name):  # one line and exit 2, as the command's own errors
            visible = self.visible_gpus if self.visible_gpus is not None else visible_gpu_ids()
            free = gpu_sets(visible, count_devices(self.gpus_per_job, len(visible)))
        executor = submitit.LocalExecutor(folder=self.params["submitit_folder"],
                                          max_num_timeout=self.params.get("max_num_timeout", 0))
        executor.update_parameters(**{k: v for k, v in self.params.items()
                                      if k not in ("submitit_folder", "max_num_timeout")})
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        log.info("gpu_slots: %d jobs, %d at a time on GPUs %s; sweep output dir: %s", len(job_overrides),
                 len(free), free, sweep_dir)

        # each job's share of the cores (trainer.cpus_per_process: auto reads it); submitit hands a job
        # this process's environment
        cpus = str(max(1, available_cpus() // min(len(free), len(job_overrides))))
        saved_cpus = os.environ.get(JOB_CPUS_VAR)
        os.environ[JOB_CPUS_VAR] = cpus
        pending = deque(enumerate(job_overrides, start=initial_job_idx))
        running: dict[int, tuple[Any, list[int]]] = {}
        ended: dict[int, Any] = {}
        try:
            while pending or running:
                while pending and free:
                    gpus = free.pop(0)
                    idx, overrides = pending.popleft()
                    executor.update_parameters(gpus_per_node=len(gpus), visible_gpus=gpus)
                    log.info("\t#%d on GPUs %s : %s", idx, gpus, " ".join(filter_overrides(overrides)))
                    job = executor.submit(self, list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}",
                                          Singleton.get_state())
                    running[idx] = (job, gpus)
                for idx in [i for i, (job, _) in running.items() if job.done()]:
                    job, gpus = running.pop(idx)
                    ended[idx] = job
                    free.append(gpus)
                if running and not (pending and free):
                    time.sleep(POLL_S)
        finally:
            if saved_cpus is None:
                os.environ.pop(JOB_CPUS_VAR, None)
            else:
                os.environ[JOB_CPUS_VAR] = saved_cpus
            for job, _ in running.values():  # interrupted (Ctrl-C, an error here): stop what still runs
                job.cancel()
        # as submitit_local: a job that failed raises here, after every job has ended
        return [ended[idx].results()[0] for idx in sorted(ended)]
