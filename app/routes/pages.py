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
from app.lanes import resolve_plan
from app.schemas import ERROR_RESPONSES
from app.security import Caller
from app.service import config_label
from app.settings import Settings
from app.view import form as page_form
from app.view.messages import page_error
from app.view.page import compute_resolved, page_plan, results_view
from estimator import EstimatorError, RuleOfThumb, catalog, count_text, gb_text, gib_text

router = APIRouter(responses=ERROR_RESPONSES)


@lru_cache(maxsize=4)
def templates(directory: Path) -> Jinja2Templates:
    t = Jinja2Templates(directory=directory)
    t.env.filters.update(gib=gib_text, gb=gb_text, count=count_text)
    t.env.globals["plotly_version"] = metadata.version("plotly")
    return t


SEED_PARAMS = 10 * 10**9
"""The rule-of-thumb card's example when there is no model to take the count from: 10B → 20 / 5 / 0.2 / 5.2 GB."""
RULE_FRACTION = 0.01
FRAGMENTS = ("summary", "advice", "notes", "serving", "timecost", "storage", "fits", "sticky")
EXPORTS = (("trl", "TRL (YAML)"), ("trl-python", "TRL (Python)"), ("axolotl", "axolotl"),
           ("accelerate", "accelerate"), ("deepspeed", "DeepSpeed"))  # fmt: skip


def render_fragments(t: Jinja2Templates, view: dict[str, Any]) -> dict[str, str]:
    """The result fragments (``FRAGMENTS``) as HTML strings."""
    module = t.env.get_template("_results.html").module
    return {name: str(getattr(module, name)(view)) for name in FRAGMENTS}


def custom_gpu(value: Any) -> catalog.GPU | None:
    """The custom GPU a form value stands for (``NAME:BYTES``), for the GPU control; None for a catalog id."""
    gpu = catalog.find_gpu(str(value)) if value else None
    return gpu if gpu is not None and gpu.custom else None


def verify_box(settings: Settings, caller: Caller, runner: Any) -> dict[str, Any]:
    """What the page's verify box needs to know: whether this caller can start runs (and if not, why), with a
    token, and on which device."""
    needs_token = settings.api_token_value() is not None
    reason = ""
    if not settings.jobs_enabled:
        reason = "Verify runs are disabled on this server."
    elif not (needs_token or caller.loopback):
        reason = "This server runs verify runs only for its own machine (it has no API token)."
    elif not runner.train_extra_installed():
        reason = "This server cannot run them: the train extra is not installed (pip install -e '.[train]')."
    elif settings.verify_device == "cuda" and not runner.has_gpu():
        reason = "This server is set to verify on a GPU (TUNEPLAN_VERIFY_DEVICE=cuda) and has none."
    return {"enabled": not reason, "needs_token": needs_token, "reason": reason}


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
            error, status = page_error(exc, state.plan.get("model"))
    suggestions = (error or {}).get("suggestions") or []
    model_params = _params(payload)
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
        "verify": verify_box(settings, ctx.caller, ctx.state.runner),
        "custom_gpu": custom_gpu,
        "exports": EXPORTS,
        "rule": RuleOfThumb(model_params or SEED_PARAMS, RULE_FRACTION).to_dict(),
        "rule_params": f"{model_params or SEED_PARAMS:,}",
    }
    t = templates(settings.templates_dir)
    return await lanes.cpu(lambda: t.TemplateResponse(request, "index.html", context, status_code=status))


def _params(payload: dict[str, Any] | None) -> int | None:
    if not payload:
        return None
    return int(payload["estimates"][payload["primary"]]["params"]["total"])


@router.post("/api/charts", tags=["page"])
async def api_charts(ctx: ContextDep, plan: dict[str, Any] = Body(...)) -> JSONResponse:  # noqa: B008
    """Estimates for full, LoRA and QLoRA side by side, sequence-length and batch-size sweeps, and the page's
    Plotly figures, for a plan like ``POST /api/estimate`` (``method`` may be ``compare``). An error answers as
    the API does, plus ``message`` (for a person on the page) and ``fields`` (the plan fields it is about)."""
    settings, service, lanes = ctx.settings, ctx.service, ctx.lanes
    model = plan.get("model") if isinstance(plan, dict) and isinstance(plan.get("model"), str) else None
    try:
        parsed, view = page_plan(plan)
        resolved = await resolve_plan(service, lanes, parsed, ctx.hub_token, settings.hub_timeout_s)
    except (AppError, EstimatorError) as exc:
        body, status = page_error(exc, model)
        return JSONResponse(body, status_code=status)
    t = templates(settings.templates_dir)

    def work() -> JSONResponse:
        try:
            payload = compute_resolved(service, parsed, view, resolved)
        except (AppError, EstimatorError) as exc:
            body, status = page_error(exc, model)
            return JSONResponse(body, status_code=status)
        payload["html"] = render_fragments(t, results_view(payload))
        return JSONResponse(payload)

    return await lanes.cpu(work)
