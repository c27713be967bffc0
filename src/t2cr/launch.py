"""Start the other DDP processes of one job ourselves, each re-running exactly this job's config.

Lightning's own launcher re-runs the script with the original command line; under a Hydra multirun
that makes every rank walk the whole sweep, with its own timestamp and, with an adaptive sweeper,
different hyper-parameters. Here rank 0 writes the job's resolved config and starts ranks
1..devices-1 on that file, with the environment that Lightning's LightningEnvironment reads
(LOCAL_RANK set means "processes are created externally", so Lightning spawns nothing itself).
Clusters that start every process themselves (SLURM tasks, torchrun) are left alone.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from t2cr.devices import cpus_per_process

log = logging.getLogger(__name__)

EXTERNAL_LAUNCH_VARS = ("LOCAL_RANK", "TORCHELASTIC_RUN_ID")
PARENT_PID_VAR = "T2CR_DDP_PARENT_PID"
AGENT_STORE_VAR = "TORCHELASTIC_USE_AGENT_STORE"  # torch: the ranks join a store served by their launcher
# torch before 2.4 or so prefixes an agent store's keys with this attempt number and fails where it is unset
RESTART_COUNT_VAR = "TORCHELASTIC_RESTART_COUNT"


def exit_with_parent(poll_s: float = 1.0) -> None:
    """In a rank started by `launch_local_ranks`: end this process when rank 0's process is gone.

    Without it a rank whose peer died could wait in a collective until the process-group timeout.
    """
    parent = os.environ.get(PARENT_PID_VAR)
    if not parent:
        return

    rank0 = int(parent)

    def gone() -> bool:
        # launch_local_ranks starts this rank as rank 0's child. A dead rank 0 that its own parent has not
        # reaped yet still answers kill(pid, 0), but its children are re-parented at its exit.
        return os.getppid() != rank0

    def watch() -> None:
        while True:
            if gone():
                log.error("rank 0 (pid %s) is gone; this rank stops too", parent)
                os._exit(1)
            time.sleep(poll_s)

    threading.Thread(target=watch, daemon=True, name="t2cr-parent-watch").start()


def launched_externally() -> bool:
    if any(v in os.environ for v in EXTERNAL_LAUNCH_VARS):
        return True
    # SLURM starts one task per process when ntasks matches the devices (submitit launcher)
    return int(os.environ.get("SLURM_NTASKS", "1")) > 1


def _rendezvous_store(host: str):
    """The job's rendezvous store, served by this process on a port the system picks as it binds it.

    Every rank, this one included, joins it as a client (TORCHELASTIC_USE_AGENT_STORE, torch's switch for a
    store an agent serves), so no port is chosen, closed and bound again later, when another job may have
    taken it."""
    from torch.distributed import TCPStore

    return TCPStore(host, 0, is_master=True, wait_for_workers=False)


def _watch(children: list[subprocess.Popen]) -> None:
    """If a child rank dies with an error, end this process too instead of hanging in a collective."""
    while True:
        for child in children:
            code = child.poll()
            if code not in (None, 0):
                log.error("DDP rank process %d exited with code %d; stopping the job", child.pid, code)
                for other in children:
                    if other.poll() is None:
                        other.kill()
                os._exit(code)
        if all(child.poll() is not None for child in children):
            return
        time.sleep(1.0)


class LocalRanks:
    """The other local ranks of one job; `finish()` waits for them and restores this process.

    A Hydra multirun runs several jobs in one process, so each job's rendezvous variables and
    process group must be gone before the next job starts.
    """

    _VARS = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "NODE_RANK", "LOCAL_RANK", AGENT_STORE_VAR,
             RESTART_COUNT_VAR)

    def __init__(self, children: list[subprocess.Popen], saved_env: dict[str, str | None], store: object = None) -> None:
        self.children, self.saved_env = children, saved_env
        self.store = store  # the rendezvous store this process serves until the job ends

    def finish(self, timeout: float = 300) -> None:
        import torch.distributed as dist

        try:
            for child in self.children:
                code = child.wait(timeout=timeout)
                if code != 0:
                    raise RuntimeError(f"DDP rank process {child.pid} exited with code {code}")
        finally:
            for child in self.children:
                if child.poll() is None:
                    child.kill()
            if dist.is_available() and dist.is_initialized():
                dist.destroy_process_group()
            self.store = None  # the port is released with it
            for name, value in self.saved_env.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def launch_local_ranks(entry_module: str, config_dir: Path, config_name: str, run_dir: Path,
                       devices: int, num_nodes: int = 1, threads: int | None = None) -> LocalRanks | None:
    """Start local ranks 1..devices-1 of this node (rank 0 is the caller).

    threads: OMP_NUM_THREADS of each rank (None: this job's cores / devices), unless the user set it:
    every rank would otherwise start one thread per core of the node.
    """
    if devices <= 1 or launched_externally():
        return None
    if num_nodes > 1:
        raise ValueError("several nodes need a cluster launcher: use hydra/launcher=slurm (one task per "
                         "GPU) or torchrun, which start every process themselves")
    saved = {name: os.environ.get(name) for name in LocalRanks._VARS}
    host = os.environ.get("MASTER_ADDR", "127.0.0.1")
    store = _rendezvous_store(host)
    os.environ.update({"MASTER_ADDR": host, "MASTER_PORT": str(store.port), AGENT_STORE_VAR: "True",
                       RESTART_COUNT_VAR: "0", "WORLD_SIZE": str(devices), "NODE_RANK": "0", "LOCAL_RANK": "0"})
    threads = threads or cpus_per_process("auto", devices)
    children = []
    for local_rank in range(1, devices):
        # the user's own OMP_NUM_THREADS, where set, wins
        env = {"OMP_NUM_THREADS": str(threads), **os.environ, "LOCAL_RANK": str(local_rank),
               PARENT_PID_VAR: str(os.getpid())}
        command = [sys.executable, "-m", entry_module, "--config-path", str(config_dir.resolve()),
                   "--config-name", config_name, f'hydra.run.dir="{run_dir}"', "hydra.output_subdir=null",
                   f"hydra.job.name=rank_{local_rank}"]
        children.append(subprocess.Popen(command, env=env))
    threading.Thread(target=_watch, args=(children,), daemon=True).start()
    return LocalRanks(children, saved, store)
