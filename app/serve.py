"""``tuneplan serve``: check that the settings are safe to serve with, then run uvicorn (``--workers`` processes).

The settings come from the environment (``TUNEPLAN_HOST``, ``TUNEPLAN_PORT``, ``TUNEPLAN_WORKERS``, ...); the command
line's options win and are handed to the worker processes through their environment, so every worker serves with
the same settings. A server that would expose the jobs API (which launches training processes) beyond loopback with
no API token refuses to start and says why (docs/security.md).

With ``--workers N`` each worker listens on its own ``SO_REUSEPORT`` socket, so the kernel spreads connections
over them by hash. uvicorn's own workers share one socket, and the same worker wins most accepts: six times 50
keep-alive connections were split 17-21 against 29-33 that way, and 23-25 against 25-27 in four of six trials with
a socket per worker (docs/performance.md); the worker holding more connections sets the latency tail.
``Workers`` supervises them as uvicorn's supervisor does: restarts a worker that dies, stops all on SIGINT/SIGTERM.
Where the platform has no ``SO_REUSEPORT``, uvicorn's own workers serve.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from types import FrameType

from pydantic import ValidationError

from app.security import is_loopback
from app.settings import LOOPBACK_HOSTS, Settings

SUPERVISOR_ENV = "TUNEPLAN_SUPERVISOR_PID"
"""Set by ``serve`` for ``--workers`` > 1: each worker process dies with the process that supervises them."""


class ServeError(Exception):
    """The server must not start as asked (exit code 2)."""


def exposure_problem(settings: Settings) -> str | None:
    """Why these settings must not be served, or None."""
    if settings.jobs_enabled and settings.api_token_value() is None and not is_loopback(settings.host):
        return (
            f"serving on {settings.host!r} would let anyone who can reach this machine launch training runs "
            "(POST /api/jobs) with no credential: set TUNEPLAN_API_TOKEN (clients then send 'Authorization: Bearer "
            "<token>'), or add --no-jobs to serve estimates only"
        )
    return None


def notes(settings: Settings) -> list[str]:
    """What the person starting the server should know about its settings."""
    out = []
    if not is_loopback(settings.host) and set(settings.allowed_hosts) <= set(LOOPBACK_HOSTS):
        out.append(
            f"listening on {settings.host}, but answering only requests addressed to "
            f"{', '.join(settings.allowed_hosts)}: set TUNEPLAN_ALLOWED_HOSTS to the names clients use"
        )
    if settings.token() is not None and settings.api_token_value() is None:
        out.append(
            "HF_TOKEN is set but TUNEPLAN_API_TOKEN is not: the server's Hub token serves only requests that carry "
            "the API token, so it serves none"
        )
    return out


def settings_for(host: str | None, port: int | None, workers: int | None, jobs: bool) -> Settings:
    """The environment's settings with the command line's options on top."""
    given = (("host", host), ("port", port), ("workers", workers))
    overrides: dict[str, object] = {k: v for k, v in given if v is not None}
    if not jobs:
        overrides["jobs_enabled"] = False
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ServeError(f"invalid settings: {problems}") from None


def serve(host: str | None = None, port: int | None = None, workers: int | None = None, jobs: bool = True) -> None:
    """Serve ``app.main:create_app`` with uvicorn; ``SystemExit(2)`` with a message when the settings are unsafe."""
    try:
        settings = settings_for(host, port, workers, jobs)
        problem = exposure_problem(settings)
        if problem:
            raise ServeError(problem)
    except ServeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    for note in notes(settings):
        print(f"note: {note}", file=sys.stderr)
    os.environ.update(
        TUNEPLAN_HOST=settings.host,
        TUNEPLAN_PORT=str(settings.port),
        TUNEPLAN_WORKERS=str(settings.workers),
        TUNEPLAN_JOBS_ENABLED="true" if settings.jobs_enabled else "false",
    )
    if settings.workers > 1:
        os.environ[SUPERVISOR_ENV] = str(os.getpid())
        if hasattr(socket, "SO_REUSEPORT"):
            Workers(settings.host, settings.port, settings.workers).run()
            return
    import uvicorn

    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level="info",
    )


# ---------------------------------------------------------------------------------------------- workers

log = logging.getLogger("uvicorn.error")
STOP_TIMEOUT_S = 30.0


def listening_socket(host: str, port: int, reuse_port: bool) -> socket.socket:
    """A TCP socket listening on ``host:port`` (IPv4 or IPv6), with ``SO_REUSEPORT`` when asked."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    sock.listen(2048)
    return sock


def run_worker(host: str, port: int) -> None:
    """One web worker: its own ``SO_REUSEPORT`` socket on the shared port, the app from the environment."""
    import uvicorn

    sock = listening_socket(host, port, reuse_port=True)
    config = uvicorn.Config("app.main:create_app", factory=True, host=host, port=port, log_level="info")
    uvicorn.Server(config).run(sockets=[sock])


class Workers:
    """Run ``n`` worker processes on one port (``SO_REUSEPORT``), restart any that dies, stop them all on
    SIGINT/SIGTERM (each stops gracefully: its runs are killed and marked failed)."""

    def __init__(self, host: str, port: int, n: int) -> None:
        self.host, self.port, self.n = host, port, n
        self.context = multiprocessing.get_context("spawn")
        self.processes: list[multiprocessing.process.BaseProcess] = []
        self.stopping = False

    def _spawn(self) -> multiprocessing.process.BaseProcess:
        process = self.context.Process(target=run_worker, args=(self.host, self.port), name="tuneplan-worker")
        process.start()
        return process

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def run(self) -> None:
        import uvicorn

        uvicorn.Config("app.main:create_app", log_level="info")  # configures uvicorn's logging, as in a worker
        # the port must be free of anything else (another server would share its connections through SO_REUSEPORT)
        listening_socket(self.host, self.port, reuse_port=False).close()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._stop)
        self.processes = [self._spawn() for _ in range(self.n)]
        log.info("serving on %s:%d with %d workers (pids %s)", self.host, self.port, self.n,
                 ", ".join(str(p.pid) for p in self.processes))  # fmt: skip
        while not self.stopping:
            time.sleep(0.5)
            for i, process in enumerate(self.processes):
                if not process.is_alive() and not self.stopping:
                    log.warning("worker %s exited with %s: starting another", process.pid, process.exitcode)
                    self.processes[i] = self._spawn()
        for process in self.processes:
            process.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for process in self.processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
