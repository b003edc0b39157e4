"""The planner page.

``GET /`` renders ``templates/index.html`` with the form (derived from ``estimator.Plan``, ``app.view.form``) filled
from the query string and, when the plan is valid, the results rendered on the server: the page is useful before,
and without, its JavaScript. ``static/app.js`` then updates the results in place through ``POST /api/charts``
(the payload of ``app.view.page.compute`` plus the result fragments as HTML) and keeps the URL in step.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Body, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.templating import Jinja2Templates

from app.deps import HubTokenDep, ServiceDep, SettingsDep
from app.errors import AppError
from app.handlers import error_body
from app.service import config_label
from app.view import form as page_form
from app.view.page import compute, results_view
from estimator import EstimatorError, catalog, count_text, gb_text, gib_text

router = APIRouter()


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


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def index(request: Request, settings: SettingsDep, service: ServiceDep, token: HubTokenDep) -> Response:
    """The planner: the form filled from the query string, and the results when the plan is valid."""
    state = page_form.parse_query({k: request.query_params.getlist(k) for k in request.query_params})
    payload: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    status = 422 if state.errors else 200
    if state.plan is not None:
        try:
            payload = compute(service, state.plan | {"method": state.method}, token)
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
    }
    return templates(settings.templates_dir).TemplateResponse(request, "index.html", context, status_code=status)


@router.post("/api/charts", tags=["page"])
def api_charts(
    settings: SettingsDep,
    service: ServiceDep,
    token: HubTokenDep,
    plan: dict[str, Any] = Body(...),  # noqa: B008
) -> JSONResponse:
    """Estimates for full, LoRA and QLoRA side by side, sequence-length and batch-size sweeps, and the page's
    Plotly figures, for a plan like ``POST /api/estimate`` (``method`` may be ``compare``)."""
    payload = compute(service, plan, token)
    payload["html"] = render_fragments(templates(settings.templates_dir), results_view(payload))
    return JSONResponse(payload)
