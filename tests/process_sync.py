"""Synchronisation between a test and processes it did not start itself (a launcher's jobs, a rank's ranks),
without sleeps or polling: every wait blocks on an event the other side causes, and its timeout is only a
bound that turns a failure into a clear error instead of a hang.

- `Barrier`: N processes meet; each blocks until N are there at once, so passing it proves that they ran at
  the same time (one after another they never meet: the first waits `timeout` s, fails, and breaks the
  barrier for every later one, as `threading.Barrier`). The test serves it on a local TCP port; a process
  takes part with `Party(address, name).wait()` (tests/ on its PYTHONPATH). The server also keeps, in the
  order it saw them, every arrival and every `leave()`: `leave()` returns only once it is recorded, so a
  leave comes in the log before anything the leaving process causes afterwards (its end, the next job a
  launcher starts in its place).
- `Lifeline`: learn that processes started and when the last of them ended. Each process checks in as its
  first act (`check_in(path)`, or the one line `CHECK_IN`): it opens a named pipe for writing, writes its
  PID and keeps the pipe open until it ends, which the kernel does for it however it ends (exit, os._exit,
  SIGKILL), before the process is a zombie. The test reads the check-ins as they come and then reads on to
  the end of the pipe, which comes exactly when every process that checked in (and every process that
  inherited the descriptor by fork) has ended.
"""

from __future__ import annotations

import json
import os
import select
import socket
import threading
from pathlib import Path

# ------------------------------------------------------------------------------------------------- Barrier


class BarrierBroken(RuntimeError):
    """A party waited `timeout` s at the barrier without the others coming (or came after that)."""


class Barrier:
    """Groups of `parties` processes meet (see the module's docstring); `groups` says who met whom."""

    def __init__(self, parties: int, timeout: float) -> None:
        self.parties, self.timeout = parties, timeout
        self.groups: list[list[str]] = []
        self.log: list[tuple[str, str]] = []  # ("arrive" | "leave", name), in the order they happened
        self.info: dict[str, object] = {}  # what each party said about itself on arrival
        self.broken: str | None = None
        self._waiting: list[tuple[str, socket.socket]] = []
        self._lock = threading.Condition()
        self._server = socket.create_server(("127.0.0.1", 0))
        host, port = self._server.getsockname()[:2]
        self.address = f"{host}:{port}"
        threading.Thread(target=self._serve, daemon=True, name="barrier-server").start()

    def close(self) -> None:
        """Stop accepting parties (the connections still open end with their processes)."""
        try:
            self._server.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        except OSError:
            pass
        self._server.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:  # closed
                return
            threading.Thread(target=self._party, args=(conn,), daemon=True, name="barrier-party").start()

    @staticmethod
    def _send(conn: socket.socket, reply: dict) -> None:
        try:
            conn.sendall((json.dumps(reply) + "\n").encode())
        except OSError:  # the party has gone: its own error says why
            pass

    def _party(self, conn: socket.socket) -> None:
        with conn, conn.makefile("r") as lines:
            arrival = json.loads(lines.readline() or "null")
            if not arrival:
                return
            name = arrival["name"]
            with self._lock:
                self.log.append(("arrive", name))
                self.info[name] = arrival.get("info")
                if self.broken:
                    self._send(conn, {"error": self.broken})
                    return
                self._waiting.append((name, conn))
                generation = len(self.groups)
                if len(self._waiting) == self.parties:
                    group, self._waiting = self._waiting, []
                    self.groups.append([member for member, _ in group])
                    for _, member_conn in group:
                        self._send(member_conn, {"group": self.groups[-1]})
                    self._lock.notify_all()
                elif not self._lock.wait_for(lambda: len(self.groups) > generation or self.broken, self.timeout):
                    self.broken = (f"{name} waited {self.timeout:g} s at the barrier for {self.parties} parties; "
                                   f"only {[member for member, _ in self._waiting]} came: they did not run at "
                                   "the same time")
                    for _, member_conn in self._waiting:
                        self._send(member_conn, {"error": self.broken})
                    self._waiting = []
                    self._lock.notify_all()
                    return
                elif self.broken and len(self.groups) <= generation:
                    return  # another party's timeout broke the barrier, and told this one
            # met: stay connected until the party leaves (or ends without leaving: the end of the stream)
            if lines.readline().strip() == "leave":
                with self._lock:
                    self.log.append(("leave", name))
                self._send(conn, {"left": name})


class Party:
    """One process's place at a `Barrier` served at `address` ("host:port")."""

    def __init__(self, address: str, name: str, info: object = None) -> None:
        host, port = address.rsplit(":", 1)
        self.name = name
        self._conn = socket.create_connection((host, int(port)))
        self._lines = self._conn.makefile("r")
        self._conn.sendall((json.dumps({"name": name, "info": info}) + "\n").encode())

    def _reply(self) -> dict:
        line = self._lines.readline()
        if not line:
            raise BarrierBroken(f"{self.name}: the barrier's server closed the connection")
        return json.loads(line)

    def wait(self) -> list[str]:
        """Block until the group is complete; the names of the group (this one included)."""
        reply = self._reply()
        if "error" in reply:
            raise BarrierBroken(reply["error"])
        return reply["group"]

    def leave(self) -> None:
        """Say that this process is done; returns once the barrier's log has it."""
        self._conn.sendall(b"leave\n")
        self._reply()
        self._lines.close()
        self._conn.close()


# ------------------------------------------------------------------------------------------------ Lifeline
LIFELINE_VAR = "T2CR_TEST_LIFELINE"

# the same as check_in(os.environ[LIFELINE_VAR]) for a script that cannot import this module; the descriptor
# stays open until the process ends (os.open's descriptors are not inherited by exec'd programs)
CHECK_IN = (f"import os; _lifeline = os.open(os.environ[{LIFELINE_VAR!r}], os.O_WRONLY | os.O_NONBLOCK); "
            "os.write(_lifeline, f'{os.getpid()}\\n'.encode())")


def check_in(path: str | os.PathLike) -> int:
    """In a watched process: check in at the `Lifeline` at `path`; the descriptor is held until this process
    ends (not inherited by the programs it execs). Fails at once (ENXIO) where no test reads the pipe."""
    fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


class LifelineTimeout(AssertionError):
    pass


class Lifeline:
    """A named pipe at `path` that watched processes check in to (see the module's docstring)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        os.mkfifo(self.path)
        self._read: int | None = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        # this end keeps the pipe from ending before everyone expected has checked in
        self._hold: int | None = os.open(self.path, os.O_WRONLY)
        self._buffer = b""
        self.pids: list[int] = []
        self.ended = False

    def _next_chunk(self, timeout: float, waiting_for: str) -> bytes:
        readable, _, _ = select.select([self._read], [], [], timeout)  # blocks until data or the end
        if not readable:
            raise LifelineTimeout(f"nothing for {timeout:g} s while waiting for {waiting_for} "
                                  f"(checked in: {self.pids})")
        return os.read(self._read, 4096)

    def check_ins(self, count: int, timeout: float) -> list[int]:
        """Block until `count` processes have checked in (each wait for the next one bounded by `timeout`);
        their PIDs in the order they came."""
        while len(self.pids) < count:
            chunk = self._next_chunk(timeout, f"{count} check-ins")
            if not chunk:  # unreachable while this end is held
                raise LifelineTimeout(f"the pipe ended after {self.pids}")
            self._buffer += chunk
            *lines, self._buffer = self._buffer.split(b"\n")
            self.pids += [int(line) for line in lines]
        return list(self.pids)

    def wait_ended(self, timeout: float) -> None:
        """Block until every process that checked in has ended (LifelineTimeout after `timeout` s with no
        news). Call it after `check_ins`: a process that checks in later is not waited for."""
        if self._hold is not None:
            os.close(self._hold)
            self._hold = None
        while not self.ended:
            chunk = self._next_chunk(timeout, "the end of every process that checked in")
            self._buffer += chunk
            self.ended = not chunk

    def close(self) -> None:
        for fd in (self._hold, self._read):
            if fd is not None:
                os.close(fd)
        self._hold = self._read = None
        self.path.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
