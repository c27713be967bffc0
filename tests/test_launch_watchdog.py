"""A rank started by rank 0 stops when rank 0 has died, also while rank 0 is an unreaped zombie."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

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
