"""The web app: ``create_app(settings)`` builds it, ``serve(host, port)`` runs it with uvicorn.

Everything the app needs is embedded (catalog, GPU table, templates, static files), so ``tuneplan serve``
works with no configuration. Errors are JSON everywhere: ``{"detail": "<what to fix>", ...}`` with a 4xx
status, from one handler for the estimator's and the Hub client's typed errors and one for request
validation.

Startup stays light: nothing here imports torch (or anything of the training stack).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib import metadata
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.hub import HubClient, HubError
from app.settings import Settings
from estimator._errors import EstimatorError, UnknownModelError

log = logging.getLogger(__name__)

try:
    VERSION = metadata.version("tuneplan")
except metadata.PackageNotFoundError:  # run from a checkout
    VERSION = "0.1.0"

BODY_SLACK_BYTES = 16 * 1024
"""Room for the plan fields next to an inline config of ``max_config_bytes``."""

DESCRIPTION = """\
Plan the disk and GPU memory of a full, LoRA or QLoRA fine-tune of a Hugging Face causal LM.

* `POST /api/estimate` (or `GET` with query parameters): a plan → the estimate (docs/schema.md).
* `GET /api/models?q=`: search the catalog; `GET /api/models/{id}`: resolve any model id (catalog, or the
  Hugging Face Hub: config.json plus safetensors headers, no weights).
* `GET /api/gpus`: the GPU catalog.
* `POST /api/jobs`: verify a plan with a real run (queued, run as its own process); `GET /api/jobs/{id}`: its
  status, result and measured-vs-estimated rows; `DELETE /api/jobs/{id}`: cancel it.

Gated or private Hub repos need a token: send `X-HF-Token: hf_...` or `Authorization: Bearer hf_...` (used for
that request only, never logged or stored), or start the server with `HF_TOKEN` set.

Every error is JSON `{"detail": "<what to fix>"}` with a 4xx status.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app. With no ``settings``, they are read from the environment (``TUNEPLAN_*``)."""
    settings = settings or Settings()
    hub = HubClient(settings)

    from app import jobs

    runner = jobs.JobRunner(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        runner.start()
        try:
            yield
        finally:
            runner.stop()
            hub.close()

    app = FastAPI(title="tuneplan", version=VERSION, description=DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    app.state.hub = hub
    app.state.jobs = runner

    from app import api

    app.include_router(api.router)
    app.include_router(jobs.router)
    try:
        from app import pages  # the page engineer's module; optional until it lands
    except ModuleNotFoundError as exc:
        if exc.name != "app.pages":
            raise
    else:
        app.include_router(pages.router)
    if settings.static_dir.is_dir():
        app.mount("/static", StaticFiles(directory=settings.static_dir), name="static")

    app.add_exception_handler(EstimatorError, _error_handler)
    app.add_exception_handler(HubError, _error_handler)
    app.add_exception_handler(RequestValidationError, _validation_handler)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _internal_error_handler)
    app.add_middleware(BodyLimit, max_bytes=settings.max_config_bytes + BODY_SLACK_BYTES)
    return app


def serve(host: str, port: int) -> None:
    """Run the app with uvicorn on ``host:port`` (what ``tuneplan serve`` calls)."""
    import uvicorn

    settings = Settings(host=host, port=port)
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")


# ---------------------------------------------------------------------------------------------- errors


async def _error_handler(request: Request, exc: Exception) -> JSONResponse:
    """``EstimatorError`` and ``HubError`` → JSON 4xx/5xx (Hub outages) with what to fix."""
    if isinstance(exc, HubError):
        return JSONResponse({"detail": exc.message, **exc.extra}, status_code=exc.status_code)
    if isinstance(exc, UnknownModelError):
        return JSONResponse({"detail": str(exc), "suggestions": list(exc.suggestions)}, status_code=404)
    return JSONResponse({"detail": str(exc)}, status_code=422)


async def _internal_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """A bug, not bad input: logged with its traceback, answered as JSON like every other error."""
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(
        {"detail": f"internal error ({type(exc).__name__}); this is a bug in tuneplan, please report it"},
        status_code=500,
    )


_MESSAGES: dict[str, Callable[[dict[str, Any]], str]] = {
    "missing": lambda e: "is required",
    "extra_forbidden": lambda e: "is not a known field (check the spelling against GET /docs)",
    "greater_than_equal": lambda e: f"must be ≥ {e['ctx']['ge']}",
    "greater_than": lambda e: f"must be > {e['ctx']['gt']}",
    "less_than_equal": lambda e: f"must be ≤ {e['ctx']['le']}",
    "less_than": lambda e: f"must be < {e['ctx']['lt']}",
    "int_parsing": lambda e: "must be an integer",
    "int_type": lambda e: "must be an integer",
    "int_from_float": lambda e: "must be a whole number",
    "float_parsing": lambda e: "must be a number",
    "float_type": lambda e: "must be a number",
    "bool_parsing": lambda e: "must be true or false",
    "bool_type": lambda e: "must be true or false",
    "string_type": lambda e: "must be a string",
    "string_too_short": lambda e: f"must have at least {e['ctx']['min_length']} character(s)",
    "string_too_long": lambda e: f"must have at most {e['ctx']['max_length']} characters",
    "too_long": lambda e: f"must have at most {e['ctx']['max_length']} items",
    "dict_type": lambda e: "must be a JSON object",
    "list_type": lambda e: "must be a list",
    "literal_error": lambda e: f"must be one of {e['ctx']['expected']}",
    "model_attributes_type": lambda e: "the body must be a JSON object with the plan fields",
    "model_type": lambda e: "the body must be a JSON object with the plan fields",
}


def _is_union_branch(error: dict[str, Any]) -> bool:
    return any(
        str(p) in ("int", "float", "str") or str(p).startswith(("literal[", "list[", "function-"))
        for p in error["loc"][1:]
    )


def _describe(error: dict[str, Any]) -> dict[str, Any]:
    loc = [str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path", "header")]
    # a union (target_modules: 'all-linear' | list) reports one error per branch; name the field only
    loc = [p for p in loc if not p.startswith(("literal[", "list[", "function-")) and p not in ("int", "float")]
    field = ".".join(loc)
    kind = str(error.get("type", ""))
    if kind == "json_invalid":
        message = f"the body is not valid JSON ({error.get('ctx', {}).get('error', 'parse error')})"
        return {"field": "body", "message": message}
    if kind == "value_error":
        message = str(error.get("msg", "")).removeprefix("Value error, ")
    else:
        try:
            message = _MESSAGES[kind](error)
        except (KeyError, TypeError):
            message = str(error.get("msg", "is invalid"))
    raw = error.get("input")
    got = ""
    if kind not in ("missing", "value_error", "model_attributes_type") and isinstance(raw, str | int | float | bool):
        shown = repr(raw) if len(repr(raw)) <= 60 else repr(raw)[:57] + "..."
        got = f" (got {shown})"
    text = f"{field} {message}{got}" if field else f"{message}{got}"
    return {"field": field or None, "message": text}


async def _validation_handler(request: Request, exc: RequestValidationError) -> JSONResponse:
    """Pydantic's errors → one readable ``detail`` plus the list under ``errors``."""
    described: list[dict[str, Any]] = []
    seen: set[str] = set()
    by_field: dict[str, dict[str, Any]] = {}
    for error in exc.errors():
        item = _describe(dict(error))
        field = item["field"]
        if _is_union_branch(dict(error)) and field in by_field:
            # one error per branch of a union (e.g. 'all-linear' | list): say both in one sentence
            first = by_field[field]
            alternative = item["message"].removeprefix(f"{field} ").split(" (got ")[0]
            head, _, got = first["message"].partition(" (got ")
            first["message"] = f"{head}, or {alternative}" + (f" (got {got}" if got else "")
            continue
        if item["message"] not in seen:
            seen.add(item["message"])
            described.append(item)
            if field is not None:
                by_field.setdefault(field, item)
    detail = "; ".join(item["message"] for item in described[:6]) or "invalid request"
    return JSONResponse({"detail": detail, "errors": described}, status_code=422)


# ---------------------------------------------------------------------------------------------- limits


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
