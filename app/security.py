"""Who a request is, and what it may do: the server's API token, loopback clients, and which Hub token serves it.

No web framework here (``app.deps`` reads the request and calls these). docs/security.md is the threat model:

* ``POST /api/estimate``, the page, the catalogs: open to anyone who can reach the server.
* The jobs API (``/api/jobs``) launches training processes. With ``TUNEPLAN_API_TOKEN`` set, every jobs route needs
  ``Authorization: Bearer <token>`` (compared in constant time); without one, it answers loopback clients only.
* The server's own Hub token (``HF_TOKEN``) serves only requests that carry the API token; anyone else reaches
  public repos only, or private ones with their own ``X-HF-Token``.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from dataclasses import dataclass

from app.errors import Forbidden, Unauthorized
from app.settings import Settings

TOKEN_HINT = "send the server's API token as 'Authorization: Bearer <TUNEPLAN_API_TOKEN>'"


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` (an address or a name) is this machine's loopback: 127.0.0.0/8, ::1 or ``localhost``."""
    if not host:
        return False
    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def token_matches(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a presented token with the server's."""
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8"))


def token_fingerprint(token: str) -> str:
    """What a job on a private repo keeps of the Hub token that opened it: a SHA-256, never the token."""
    return hashlib.sha256(f"tuneplan-hub-token\n{token}".encode()).hexdigest()


@dataclass(frozen=True)
class Caller:
    """Who sent a request."""

    authenticated: bool
    """It carries the server's API token."""
    loopback: bool
    """It comes from this machine's loopback interface."""
    own_hub_token: str | None = None
    """Its own Hugging Face token (``X-HF-Token``)."""

    def hub_token(self, settings: Settings) -> str | None:
        """The Hub token for this caller's lookups: its own, else the server's if it carries the API token."""
        if self.own_hub_token is not None:
            return self.own_hub_token
        return settings.token() if self.authenticated else None


def identify(settings: Settings, presented: str | None, client_host: str | None, own: str | None) -> Caller:
    """The caller of a request (``presented``: its bearer token); ``Unauthorized`` when it presents an API token that
    is not the server's. Without an API token on the server, a bearer token means nothing."""
    expected = settings.api_token_value()
    authenticated = False
    if expected is not None and presented is not None:
        if not token_matches(presented, expected):
            raise Unauthorized(f"the API token is wrong: {TOKEN_HINT}")
        authenticated = True
    return Caller(authenticated=authenticated, loopback=is_loopback(client_host), own_hub_token=own)


def check_jobs_access(settings: Settings, caller: Caller) -> None:
    """Whether ``caller`` may use the jobs API (which launches training processes on this machine)."""
    if not settings.jobs_enabled:
        raise Forbidden(
            "verify runs are disabled on this server (tuneplan serve --no-jobs, TUNEPLAN_JOBS_ENABLED=false): "
            "estimates still work; run 'tuneplan verify' on a machine of your own"
        )
    if settings.api_token_value() is not None:
        if not caller.authenticated:
            raise Unauthorized(f"the jobs API launches training runs on this server: {TOKEN_HINT}")
        return
    if not caller.loopback:
        raise Forbidden(
            "this server has no API token (TUNEPLAN_API_TOKEN), so its jobs API answers only on loopback: "
            "start it with TUNEPLAN_API_TOKEN set and send 'Authorization: Bearer <token>'"
        )


SERVER_TOKEN_ACCESS = "server-token"
"""``JobRow.access`` of a job on a private repo resolved with the server's Hub token."""


def job_access(private: bool, caller: Caller) -> str | None:
    """What a job records about who may read it: None for public repos, else whose Hub token opened the repo."""
    if not private:
        return None
    if caller.own_hub_token is not None:
        return token_fingerprint(caller.own_hub_token)
    return SERVER_TOKEN_ACCESS


def may_see(access: str | None, caller: Caller) -> bool:
    """Whether ``caller`` may read a job: jobs on private repos need the API token or the Hub token that opened
    them."""
    if access is None or caller.authenticated:
        return True
    own = caller.own_hub_token
    return own is not None and access != SERVER_TOKEN_ACCESS and hmac.compare_digest(token_fingerprint(own), access)
