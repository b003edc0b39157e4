"""``tuneplan serve``: check that the settings are safe to serve with, then run uvicorn (``--workers`` processes).

The settings come from the environment (``TUNEPLAN_HOST``, ``TUNEPLAN_PORT``, ``TUNEPLAN_WORKERS``, ...); the command
line's options win and are handed to the worker processes through their environment, so every worker serves with
the same settings. A server that would expose the jobs API (which launches training processes) beyond loopback with
no API token refuses to start and says why (docs/security.md).
"""

from __future__ import annotations

import os
import sys

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
    import uvicorn

    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level="info",
    )
