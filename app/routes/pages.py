"""The planner page.

``GET /`` renders ``templates/index.html`` with the form (derived from ``estimator.Plan``, ``app.view.form``) filled
from the query string and, when the plan is valid, the results rendered on the server: the page is useful before,
and without, its JavaScript. ``static/app.js`` then updates the results in place through ``POST /api/charts``
(the payload of ``app.view.page.compute`` plus the result fragments as HTML) and keeps the URL in step.

Both are ``async``: the Hub lookup runs on the Hub lane, the estimates, charts and templates on the CPU lane
(``app.lanes``).
"""

from __future__ import annotations

from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Body, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.templating import Jinja2Templates

from app.deps import ContextDep
from app.errors import AppError
from app.handlers import error_body
from app.lanes import resolve_plan
from app.schemas import ERROR_RESPONSES
from app.security import Caller
from app.service import config_label
from app.settings import Settings
from app.view import form as page_form
from app.view.page import compute_resolved, page_plan, results_view
from estimator import EstimatorError, catalog, count_text, gb_text, gib_text

router = APIRouter(responses=ERROR_RESPONSES)


@lru_cache(maxsize=4)
def templates(directory: Path) -> Jinja2Templates:
    t = Jinja2Templates(directory=directory)
    t.env.filters.update(gib=gib_text, gb=gb_text, count=count_text)
    t.env.globals["plotly_version"] = metadata.version("plotly")
    return t


def render_fragments(t: Jinja2Templates, view: dict[str, Any]) -> dict[str, str]:
    """The result fragments (``summary``, ``notes``, ``storage``, ``fits``) as HTML strings."""
    module = t.env.get_template("_results.html").module
    return {name: str(getattr(module, name)(view)) for name in ("summary", "notes", "storage", "fits")}


def verify_box(settings: Settings, caller: Caller) -> dict[str, Any]:
    """What the page's verify box needs to know: whether this caller can start runs, and with a token."""
    needs_token = settings.api_token_value() is not None
    enabled = settings.jobs_enabled and (needs_token or caller.loopback)
    reason = ""
    if not settings.jobs_enabled:
        reason = "Verify runs are disabled on this server."
    elif not enabled:
        reason = "This server runs verify runs only for its own machine (it has no API token)."
    return {"enabled": enabled, "needs_token": needs_token, "reason": reason}


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def index(request: Request, ctx: ContextDep) -> Response:
    """The planner: the form filled from the query string, and the results when the plan is valid."""
    settings, service, lanes = ctx.settings, ctx.service, ctx.lanes
    params = {k: request.query_params.getlist(k) for k in request.query_params}
    state = await lanes.cpu(lambda: page_form.parse_query(params))
    payload: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    status = 422 if state.errors else 200
    if state.plan is not None:
        try:
            plan, view = page_plan(state.plan | {"method": state.method})
            resolved = await resolve_plan(service, lanes, plan, ctx.hub_token, settings.hub_timeout_s)
            payload = await lanes.cpu(lambda: compute_resolved(service, plan, view, resolved))
        except (AppError, EstimatorError) as exc:
            error, status = error_body(exc)
    suggestions = (error or {}).get("suggestions") or []
    context = {
        "form": state.values,
        "groups": page_form.form_groups(state),
        "method": state.method,
        "methods": page_form.METHOD_LABELS,
        "form_errors": state.errors,
        "gpus": catalog.gpus(),
        "models": catalog.models(),
        "script_fields": page_form.script_fields(),
        "result": results_view(payload) if payload else None,
        "error": error,
        "initial": {"charts": payload["charts"], "method": payload["method"]} if payload else None,
        "config_name": config_label(state.config) if state.config else "",
        "suggestions": [
            {"id": sid, "href": "?" + page_form.query_string(state.values | {"model": sid, "config": ""})}
            for sid in suggestions
        ],
        "verify": verify_box(settings, ctx.caller),
    }
    t = templates(settings.templates_dir)
    return await lanes.cpu(lambda: t.TemplateResponse(request, "index.html", context, status_code=status))


@router.post("/api/charts", tags=["page"])
async def api_charts(ctx: ContextDep, plan: dict[str, Any] = Body(...)) -> JSONResponse:  # noqa: B008
    """Estimates for full, LoRA and QLoRA side by side, sequence-length and batch-size sweeps, and the page's
    Plotly figures, for a plan like ``POST /api/estimate`` (``method`` may be ``compare``)."""
    settings, service, lanes = ctx.settings, ctx.service, ctx.lanes
    parsed, view = page_plan(plan)
    resolved = await resolve_plan(service, lanes, parsed, ctx.hub_token, settings.hub_timeout_s)
    t = templates(settings.templates_dir)

    def work() -> JSONResponse:
        payload = compute_resolved(service, parsed, view, resolved)
        payload["html"] = render_fragments(t, results_view(payload))
        return JSONResponse(payload)

    return await lanes.cpu(work)
