"""`gateway serve --workers N`: N processes serving one port, each the whole
gateway, under a supervisor.

The supervisor binds one socket per worker to the port with SO_REUSEPORT
(the kernel spreads new connections over them by their addresses; from one
shared socket, the first worker awake could accept a whole burst) and
starts each worker as a fresh `gateway serve` process serving its socket.
It then only passes signals on and watches:

- SIGTERM or SIGINT: every worker shuts down gracefully (gateway/server.py);
  the supervisor exits 0 once all have exited 0.
- SIGHUP: every worker reloads (gateway/runtime.py).
- A worker that exits on its own (a bug, the kernel's OOM killer, or a
  configuration it cannot load at start): the others are shut down
  gracefully and the supervisor exits non-zero (the worker's status, or 1).
  Restarting is the orchestrator's job (systemd, Kubernetes), which sees and
  counts the crash; a worker restarted in place would hide it.
- A supervisor that is killed outright: its workers notice within a second
  and shut down gracefully.

Shared by the workers: the state store (gateway/store.py), so an
Idempotency-Key runs its create once and an OAuth2 refresh token is spent
once whichever worker a call reaches, exactly as between instances; and, for
/metrics, a directory of the supervisor's own (gateway/metrics.py), removed
when it exits. Each worker's own: a connection's circuit breaker and its cap
on calls under way (`limits.max_in_flight`). Sharing either would put a state
store round trip on every call; per worker, a failing provider is called at
most `breaker.failures` times per worker before every circuit opens, and a
connection may have N × `max_in_flight` calls under way.
"""

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import logs

log = logging.getLogger("gateway")

_KILL_AFTER = 10.0  # seconds past the graceful timeout a worker may take to exit before it is killed


def count(value: str) -> int:
    """--workers: a number, or `auto`: one per core."""
    if value == "auto":
        return os.cpu_count() or 1
    number = int(value)
    if number < 1:
        raise ValueError(value)
    return number


def listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


def supervise(workers: int, host: str, port: int, serve_args: list[str], graceful_timeout: float) -> int:
    """Run `workers` workers of `gateway serve *serve_args` on host:port until a signal stops them."""
    try:
        sockets = [listen(host, port)]
        port = sockets[0].getsockname()[1]  # port 0: the one the kernel chose, for every worker
        sockets += [listen(host, port) for _ in range(workers - 1)]
    except OSError as exc:
        print(f"gateway: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return 2
    shared = Path(tempfile.mkdtemp(prefix="gateway-metrics-"))
    running: dict[int, subprocess.Popen] = {}
    stopping: list[float] = []  # when the stop began: the workers' deadline counts from it

    def stop(signum: int | None = None, frame: object = None) -> None:
        if not stopping:
            stopping.append(time.monotonic())
        _signal(running, signal.SIGTERM)

    def reload(signum: int, frame: object) -> None:
        _signal(running, signal.SIGHUP)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, reload)
    status = 0
    try:
        for sock in sockets:
            # Its own process group: a terminal's Ctrl-C reaches the supervisor, which passes it on once.
            worker = subprocess.Popen([sys.executable, "-m", "gateway", "serve", *serve_args,
                                       "--listen-fd", str(sock.fileno()), "--metrics-dir", str(shared)],
                                      pass_fds=(sock.fileno(),), process_group=0)
            running[worker.pid] = worker
            sock.close()  # the worker's now: a worker gone takes its socket, and its share of connections, with it
        log.info("supervising %d workers on http://%s:%d (pids %s)", workers, host, port,
                 ", ".join(map(str, running)))
        if stopping:
            stop()  # a signal came while they started
        while running:
            pid, wait_status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                if stopping and time.monotonic() > stopping[0] + graceful_timeout + _KILL_AFTER:
                    log.error("worker(s) %s did not exit in time; killing them", ", ".join(map(str, running)))
                    _signal(running, signal.SIGKILL)
                    stopping[0] = float("inf")
                time.sleep(0.1)
                continue
            worker = running.pop(pid, None)
            if worker is None:
                continue
            worker.returncode = code = os.waitstatus_to_exitcode(wait_status)
            if not stopping:
                log.error("worker %d exited unexpectedly (%s); stopping the others", pid, _described(code),
                          extra=logs.event("worker_died"))
                status = code if code > 0 else 1
                stop()
            elif code != 0 and status == 0:
                status = code if code > 0 else 1
    finally:
        _signal(running, signal.SIGKILL)
        shutil.rmtree(shared, ignore_errors=True)
    return status


def _signal(running: dict[int, subprocess.Popen], signum: int) -> None:
    # os.kill, not Popen.send_signal: that reaps an exited worker, which os.waitpid then never reports.
    for pid in running:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def _described(code: int) -> str:
    return f"status {code}" if code >= 0 else f"signal {signal.Signals(-code).name}"
