"""A rank started by rank 0 stops when rank 0 has died, also while rank 0 is an unreaped zombie."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import ClassVar

import pytest
from process_sync import CHECK_IN, LIFELINE_VAR, Lifeline, LifelineTimeout

from t2cr.launch import PARENT_PID_VAR

RANK = textwrap.dedent(f"""
    import threading
    {CHECK_IN}
    from t2cr.launch import exit_with_parent
    exit_with_parent(poll_s=0.05)
    threading.Event().wait()  # for ever: only the watchdog ends this rank
""")
RANK0 = textwrap.dedent("""
    import os, subprocess, sys
    subprocess.Popen([sys.executable, "-c", sys.argv[1]], env={**os.environ, sys.argv[2]: str(os.getpid())})
    os._exit(3)  # rank 0 dies at once
""")


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_a_rank_stops_when_rank0_dies_before_anyone_reaps_it(tmp_path):
    """Rank 1 checks in at a lifeline (a named pipe it holds open until it ends) before it imports anything;
    the test blocks until rank 1 has ended and only then reaps rank 0. The 60 s bounds only matter if rank 1
    never starts or never ends (without its watchdog it would wait for ever)."""
    with Lifeline(tmp_path / "lifeline") as lifeline:
        rank0 = subprocess.Popen([sys.executable, "-c", RANK0, RANK, PARENT_PID_VAR],
                                 env={**os.environ, LIFELINE_VAR: str(lifeline.path)})
        try:
            [rank1] = lifeline.check_ins(1, timeout=60)
            try:
                lifeline.wait_ended(timeout=60)
            except LifelineTimeout as timeout:
                pytest.fail(f"rank 1 kept running after rank 0 died: {timeout}")
            # rank 0 has exited and was never reaped while rank 1 ran: kill(pid, 0) still succeeds on it
            assert _state(rank0.pid) == "Z"
        finally:
            if lifeline.pids and not lifeline.ended:
                os.kill(lifeline.pids[0], signal.SIGKILL)
            assert rank0.wait() == 3
    assert rank1 != rank0.pid


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
