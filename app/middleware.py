"""ASGI pieces of the app: the request-body limit, static files that browsers may cache for good, the trusted-host
check and the security headers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.responses import JSONResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

BODY_SLACK_BYTES = 16 * 1024
"""Room for the plan fields next to an inline config of ``max_config_bytes``."""


class ImmutableStaticFiles(StaticFiles):
    """Static files whose URLs carry their version (``plotly.min.js?v=<plotly version>``): cacheable for a year."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
        return response


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with a JSON 413 before anything parses them."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length: int | None = None
        chunked = False
        for key, value in scope.get("headers", ()):
            if key == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = None
            elif key == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if length is not None:
            if length > self.max_bytes:
                await self._refuse(send, length)
                return
            await self.app(scope, receive, send)
            return
        if not chunked:
            await self.app(scope, receive, send)
            return
        # no length announced: read the body here, bounded, then hand it on in one piece
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay({"type": "http.disconnect"}), send)
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await self._refuse(send, len(body))
                return
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay({"type": "http.request", "body": bytes(body), "more_body": False}, receive), send)

    async def _refuse(self, send: Send, size: int) -> None:
        response = JSONResponse(
            {
                "detail": f"the request body is {size} bytes; at most {self.max_bytes} are accepted "
                f"(an inline config.json may be {self.max_bytes - BODY_SLACK_BYTES} bytes): "
                "send config.json itself, trimmed of anything but the architecture"
            },
            status_code=413,
        )
        await response({"type": "http"}, _replay({"type": "http.disconnect"}), send)


def _replay(first: Message, then: Receive | None = None) -> Callable[[], Awaitable[Message]]:
    """A ``receive`` that answers ``first`` once, then defers to ``then`` (or reports a disconnect)."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return first
        if then is not None:
            return await then()
        return {"type": "http.disconnect"}

    return receive


# ---------------------------------------------------------------------------------------------- hosts and headers


def host_of(header: str | None) -> str | None:
    """The host name of a ``Host`` header, lower case, without its port or an IPv6 literal's brackets; None when
    the header is missing or malformed."""
    if not header:
        return None
    header = header.strip().lower()
    if header.startswith("["):
        end = header.find("]")
        if end < 0:
            return None
        host, rest = header[1:end], header[end + 1 :]
    else:
        host, colon, port = header.partition(":")
        rest = colon + port
    if not host or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
        return None
    return host


def host_allowed(host: str, allowed: list[str]) -> bool:
    """Whether ``host`` matches one of ``allowed`` (a name, ``*.domain`` for its subdomains, or ``*``)."""
    return any(a == "*" or host == a.strip("[]") or (a.startswith("*.") and host.endswith(a[1:])) for a in allowed)


class TrustedHosts:
    """Refuse requests whose ``Host`` header names a host this server does not answer to, with a JSON 400.

    A page on another site can make a browser send requests to a loopback server through a DNS name that resolves
    to 127.0.0.1 (DNS rebinding): the ``Host`` header then names the attacker's domain, and is refused here."""

    def __init__(self, app: ASGIApp, allowed_hosts: list[str]) -> None:
        self.app = app
        self.allowed = [h.lower() for h in allowed_hosts]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or "*" in self.allowed:
            await self.app(scope, receive, send)
            return
        header = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"host"), None)
        host = host_of(header)
        if host is not None and host_allowed(host, self.allowed):
            await self.app(scope, receive, send)
            return
        shown = (header or "")[:100]
        response = JSONResponse(
            {"detail": f"this server does not answer to the host {shown!r}: reach it by one of its allowed host "
                       "names, or add this one to TUNEPLAN_ALLOWED_HOSTS on the server"},
            status_code=400,
        )  # fmt: skip
        await response(scope, receive, send)


CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        # Plotly and Swagger UI set style attributes and insert <style> elements from script
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
        "object-src 'none'",
    )
)
"""What the page may load: its own scripts, styles, images and API only; no inline script, no eval, no framing.
docs/security.md says why each source is there."""

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
)


class SecurityHeaders:
    """Add the security headers (CSP, nosniff, no framing, no referrer) to every HTTP answer that lacks them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in SECURITY_HEADERS if k not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
