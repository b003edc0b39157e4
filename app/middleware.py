"""ASGI pieces of the app: the request-body limit, and static files that browsers may cache for good."""

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
