"""The one place errors become HTTP answers: JSON ``{"detail": "<what to fix>", ...}`` with a 4xx status.

* ``app.errors.AppError`` (Hub lookups, jobs, service limits) → its ``status_code``, ``detail`` and extra fields;
* ``estimator.EstimatorError`` → 422 (``UnknownModelError``: 404 with ``suggestions``);
* request validation → 422 with one readable ``detail`` and the per-field list under ``errors``; a body the JSON
  parser could not read at all (nested too deeply) → 422 saying so, not FastAPI's generic 400;
* other HTTP errors (unknown route, wrong method) → their status, as JSON;
* anything else is a bug: logged with its traceback, answered 500 as JSON.

``describe_errors`` is also what the page uses to explain a bad form field.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from app.errors import AppError
from estimator import EstimatorError, UnknownModelError

log = logging.getLogger(__name__)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error)  # type: ignore[arg-type]
    app.add_exception_handler(EstimatorError, _estimator_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _internal_error)


def error_body(exc: AppError | EstimatorError) -> tuple[dict[str, Any], int]:
    """The JSON body and status of a typed error."""
    if isinstance(exc, AppError):
        return {"detail": exc.message, **exc.extra}, exc.status_code
    if isinstance(exc, UnknownModelError):
        return {"detail": str(exc), "suggestions": list(exc.suggestions)}, 404
    return {"detail": str(exc)}, 422


async def _app_error(request: Request, exc: AppError) -> JSONResponse:
    body, status = error_body(exc)
    return JSONResponse(body, status_code=status, headers=exc.headers)


async def _estimator_error(request: Request, exc: EstimatorError) -> JSONResponse:
    body, status = error_body(exc)
    return JSONResponse(body, status_code=status)


BODY_PARSE_ERROR = "There was an error parsing the body"  # FastAPI's 400 when the body parser itself fails


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    """HTTP errors as JSON; FastAPI's generic 400 for an unreadable body becomes a 422 that says what to fix."""
    if exc.status_code == 400 and exc.detail == BODY_PARSE_ERROR:
        cause = exc.__cause__
        why = (
            "it nests objects or lists too deeply (a plan nests 3 or 4 levels)"
            if isinstance(cause, RecursionError)
            else f"{type(cause).__name__ if cause else 'parse error'}"
        )
        detail = f"the body could not be read as JSON: {why}; send a JSON object with the plan fields"
        return JSONResponse({"detail": detail, "errors": [{"field": "body", "message": detail}]}, status_code=422)
    return JSONResponse({"detail": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    """A bug, not bad input: logged with its traceback, answered as JSON like every other error."""
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(
        {"detail": f"internal error ({type(exc).__name__}); this is a bug in tuneplan, please report it"},
        status_code=500,
    )


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """Pydantic's errors → one readable ``detail`` plus the list under ``errors``."""
    described = describe_errors([dict(e) for e in exc.errors()])
    detail = "; ".join(item["message"] for item in described[:6]) or "invalid request"
    return JSONResponse({"detail": detail, "errors": described}, status_code=422)


_MESSAGES: dict[str, Callable[[dict[str, Any]], str]] = {
    "missing": lambda e: (
        "is required" if len(e.get("loc", ())) > 1 else "the body is required: send a JSON object with the plan fields"
    ),
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


def describe_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pydantic errors as ``{"field", "message"}`` items, one per field and message (a union's branches merged)."""
    described: list[dict[str, Any]] = []
    seen: set[str] = set()
    by_field: dict[str, dict[str, Any]] = {}
    for error in errors:
        item = _describe(error)
        field = item["field"]
        if _is_union_branch(error) and field in by_field:
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
    return described
