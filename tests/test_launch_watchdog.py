"""A rank started by rank 0 stops when rank 0 has died, also while rank 0 is an unreaped zombie."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import ClassVar

from t2cr.launch import PARENT_PID_VAR

RANK = textwrap.dedent("""
    import time
    from t2cr.launch import exit_with_parent
    exit_with_parent(poll_s=0.05)
    time.sleep(120)
""")
RANK0 = textwrap.dedent("""
    import os, subprocess, sys
    child = subprocess.Popen([sys.executable, "-c", sys.argv[1]], env={**os.environ, sys.argv[2]: str(os.getpid())})
    open(sys.argv[3], "w").write(str(child.pid))
    os._exit(3)  # rank 0 dies at once
""")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_a_rank_stops_when_rank0_dies_before_anyone_reaps_it(tmp_path):
    pid_file = tmp_path / "rank1.pid"
    rank0 = subprocess.Popen([sys.executable, "-c", RANK0, RANK, PARENT_PID_VAR, str(pid_file)])
    deadline = time.monotonic() + 30
    while not (pid_file.is_file() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    rank1 = int(pid_file.read_text())
    try:
        # rank 0 has exited but is not reaped (no wait() yet): kill(pid, 0) still succeeds on it. Rank 1 still
        # has to import t2cr.launch, which takes seconds on a loaded machine: wait for it (well under its sleep)
        deadline = time.monotonic() + 45
        while _alive(rank1) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(rank1), "rank 1 kept running after rank 0 died"
    finally:
        if _alive(rank1):
            os.kill(rank1, 9)
        rank0.wait()


class _FinishedRank:
    """Stands in for a started rank process: records its environment, has already exited cleanly."""

    started: ClassVar[list[dict[str, str]]] = []

    def __init__(self, command, env) -> None:
        self.pid = 0
        _FinishedRank.started.append(dict(env))

    def poll(self) -> int:
        return 0

    def wait(self, timeout=None) -> int:
        return 0


def _bindable(port: int) -> bool:
    import errno
    import socket

    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as error:
            assert error.errno == errno.EADDRINUSE
            return False
    return True


def test_the_rendezvous_port_stays_bound_from_its_choice_to_the_end_of_the_job(monkeypatch, tmp_path):
    """No other job can take the port between choosing it and the ranks' rendezvous: this process serves the
    rendezvous store on it from the moment it is chosen, and every rank joins that store."""
    import torch.distributed as dist

    from t2cr import launch

    for name in (*launch.EXTERNAL_LAUNCH_VARS, *launch.LocalRanks._VARS, "SLURM_NTASKS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(launch.subprocess, "Popen", _FinishedRank)
    _FinishedRank.started.clear()
    ranks = launch.launch_local_ranks("t2cr.cli.train", tmp_path, "config", tmp_path, devices=3)
    port = int(os.environ["MASTER_PORT"])
    assert not _bindable(port)  # held, not merely chosen
    assert os.environ[launch.AGENT_STORE_VAR] == "True"
    assert [(env["MASTER_PORT"], env[launch.AGENT_STORE_VAR], env["LOCAL_RANK"]) for env in _FinishedRank.started] \
        == [(str(port), "True", "1"), (str(port), "True", "2")]
    client = dist.TCPStore("127.0.0.1", port, is_master=False)  # what each rank's rendezvous connects to
    client.set("ready", "yes")
    assert ranks.store.get("ready") == b"yes"
    del client
    ranks.finish()
    assert _bindable(port) and launch.AGENT_STORE_VAR not in os.environ and "MASTER_PORT" not in os.environ
