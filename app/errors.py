"""Typed errors of the app: each carries the HTTP status it answers with and a message that says what to fix.

No web framework here: the job runner and the Hub client raise these, ``app.handlers`` turns them (and the
estimator's errors) into JSON answers, and the CLI prints them with exit code 2::

    AppError                       status   raised by
    ├── InvalidRequest              422      service (config too large or too deep), page form, jobs (pre-flight)
    ├── Unauthorized                401      jobs API without the server's API token (or a wrong one)
    ├── Forbidden                   403      jobs API from a non-loopback client with no API token set, or disabled
    ├── NotFound                    404      jobs (unknown job id)
    ├── Conflict                    409      jobs (cancel a finished job)
    ├── TooManyJobs                 429      jobs (the queue is full)
    ├── NotAvailable                503      jobs (train extra missing)
    ├── NoGpu                       422      jobs (cuda asked for on a server without a GPU)
    └── HubError                    502      app.hub: the Hugging Face Hub lookups
        ├── HubInvalidId            422
        ├── HubRepoNotFound         404      (``suggestions``: close catalog ids)
        ├── HubGated                401/403
        ├── HubBadConfig            422
        ├── HubUnavailable          503      (``suggestions``: catalog ids of the model's shape family)
        └── HubTimeout              504      (``suggestions``: likewise)

``estimator.EstimatorError`` stays the estimator's own tree (422, ``UnknownModelError`` 404).
"""

from __future__ import annotations

from typing import Any

FALLBACK_HINT = "use a catalog model (GET /api/models) or send the model's config.json inline as 'config'"
"""What the API tells a developer to do when a Hub lookup fails; the page and the CLI say it their own way."""


class AppError(Exception):
    """Bad input or an unavailable service that the caller can act on; ``status_code`` is the HTTP answer."""

    status_code = 400
    headers: dict[str, str] | None = None
    """HTTP headers of the answer (``WWW-Authenticate``, ``Retry-After``)."""

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra


class InvalidRequest(AppError):
    status_code = 422


class Unauthorized(AppError):
    status_code = 401
    headers = {"WWW-Authenticate": 'Bearer realm="tuneplan jobs"'}


class Forbidden(AppError):
    status_code = 403


class NotFound(AppError):
    status_code = 404


class TooManyJobs(AppError):
    status_code = 429
    headers = {"Retry-After": "60"}


class Conflict(AppError):
    status_code = 409


class NotAvailable(AppError):
    status_code = 503


class NoGpu(AppError):
    status_code = 422


class HubError(AppError):
    """A Hub lookup failed in a way the user can act on."""

    status_code = 502


class HubInvalidId(HubError):
    """The id is not a well-formed Hub repo id."""

    status_code = 422


class HubRepoNotFound(HubError):
    """No such repo (or revision) on the Hub, or a private repo and no token that can see it."""

    status_code = 404

    def __init__(self, message: str, suggestions: tuple[str, ...] = (), **extra: Any) -> None:
        super().__init__(message, suggestions=list(suggestions), **extra)
        self.suggestions = suggestions


class HubGated(HubError):
    """A gated repo: 401 without a token, 403 with a token that has not been granted access."""

    status_code = 401

    def __init__(self, message: str, status_code: int = 401, **extra: Any) -> None:
        super().__init__(message, **extra)
        self.status_code = status_code


class HubUnavailable(HubError):
    """The Hub could not be reached or answered with a server error."""

    status_code = 503


class HubTimeout(HubError):
    """The Hub did not answer within ``hub_timeout_s``."""

    status_code = 504


class HubBadConfig(HubError):
    """The repo has no usable ``config.json`` (missing, not JSON, not an object, too large)."""

    status_code = 422
