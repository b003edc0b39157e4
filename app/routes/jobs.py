"""Verify jobs over HTTP: queue a real run of a plan, poll it, cancel it (the runner is ``app.jobs.runner``).

Every route needs the server's API token when it has one (else a loopback client): ``JobsContextDep``
(``app.security``). A job on a private or gated repo is readable only with the API token or the Hub token that
opened the repo; to anyone else it does not exist (404).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse

from app.deps import JobsContextDep
from app.errors import NotFound
from app.jobs.limits import gpu_memory, preflight, run_preview
from app.jobs.store import JobRow
from app.lanes import resolve_plan
from app.schemas import ERROR_RESPONSES, ErrorBody, JobBody
from app.security import Caller, job_access, may_see
from app.service import Resolved
from estimator import Plan

router = APIRouter(responses=ERROR_RESPONSES)

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "the server has an API token and the request does not carry it"},
    403: {"model": ErrorBody, "description": "no API token on the server and the client is not on loopback, or "
          "verify runs are disabled"},
    404: {"model": ErrorBody, "description": "unknown job id (or unknown model)"},
    409: {"model": ErrorBody, "description": "the job has already finished (or was cancelled)"},
    422: {"model": ErrorBody, "description": "invalid plan, a run over the device's memory (allow_oom runs it), or "
          "cuda asked for on a server without a GPU"},
    429: {"model": ErrorBody, "description": "too many jobs are waiting (TUNEPLAN_MAX_QUEUED_JOBS)"},
    503: {"model": ErrorBody, "description": "the train extra is not installed on the server (or the Hub is down)"},
}  # fmt: skip


def _visible(runner: Any, job_id: str, caller: Caller) -> JobRow:
    row: JobRow = runner.get(job_id)
    if not may_see(row.access, caller):
        raise NotFound(f"no job {job_id[:64]!r}: GET /api/jobs lists the recent ones")
    return row


JobId = Annotated[str, PathParam(min_length=1, max_length=64, description="a job id from POST /api/jobs")]


async def _placed(body: JobBody, ctx: JobsContextDep) -> tuple[str, Plan, Resolved]:
    """The device a run of ``body`` goes to (the runner must be ready), the plan for it, and its resolved model."""
    runner = ctx.runner

    def where() -> str:
        runner.check_ready()
        return runner.run_device(body.device)

    device = await ctx.lanes.cpu(where)
    plan = body.plan_for(device)
    return device, plan, await resolve_plan(ctx.service, ctx.lanes, plan, ctx.hub_token, ctx.settings.hub_timeout_s)


@router.post(
    "/api/jobs",
    tags=["verify"],
    summary="Verify a plan with a real run",
    status_code=202,
    response_model=None,
    responses=ERRORS,
)
async def create_job(body: JobBody, ctx: JobsContextDep) -> JSONResponse:
    """Estimate the plan for the run's device and queue a real run of it (``python -m trainer.run``).

    The run builds the model from its config with random weights (nothing is downloaded) and trains one
    warm-up step plus ``steps`` measured steps on a synthetic batch. On CUDA it reads the allocator's peaks and
    the driver's use; on CPU it measures the live tensors. A plan whose estimate exceeds the device's memory (the
    GPU's, or the host's available memory for a CPU run) is refused with a 422 that gives both, unless
    ``allow_oom`` is true: it then runs, and the result says ``"oom": true``. Poll ``GET /api/jobs/{id}`` (the
    ``url`` of the answer).
    """

    runner, service, lanes, settings, caller = ctx.runner, ctx.service, ctx.lanes, ctx.settings, ctx.caller
    device, plan, resolved = await _placed(body, ctx)

    def queue() -> JobRow:
        estimate = service.contract(plan, resolved)
        if not body.allow_oom:
            preflight(settings, device, estimate)
        stored_plan = {k: v for k, v in plan.to_dict().items() if k != "config"}  # the config is stored on its own
        private = resolved.hub is not None and bool(resolved.hub.gated)
        return runner.submit(device=device, steps=body.steps, plan=stored_plan, config=dict(resolved.config),
                             estimate=estimate, access=job_access(private, caller))  # fmt: skip

    row = await lanes.cpu(queue)
    url = f"/api/jobs/{row.id}"
    return JSONResponse({"id": row.id, "status": row.status, "url": url}, status_code=202, headers={"Location": url})


@router.post("/api/jobs/preflight", tags=["verify"], summary="What a verify run of a plan would take", responses=ERRORS)
async def preflight_job(body: JobBody, ctx: JobsContextDep) -> dict[str, Any]:
    """Before starting a run: the device it would go to, its host memory (the CPU estimate's tensors plus the
    process), its GPU memory, about how long it takes in all (``time_s``; rough, from this project's measured
    runs), and whether the pre-flight lets it start (``runs``; else ``reason``, the 422 ``POST /api/jobs`` would
    answer). Nothing is queued."""
    service, lanes, settings = ctx.service, ctx.lanes, ctx.settings
    device, plan, resolved = await _placed(body, ctx)

    def preview() -> dict[str, Any]:
        estimate = service.contract(plan, resolved, advice=False)
        gpu = gpu_memory() if device == "cuda" else None
        seconds = service.run_seconds(plan, resolved, body.steps, gpu[0] if gpu else None)
        return run_preview(settings, device, estimate, seconds)

    return await lanes.cpu(preview)


@router.get("/api/jobs", tags=["verify"], summary="Recent verify jobs, newest first")
def list_jobs(
    ctx: JobsContextDep,
    limit: Annotated[int, Query(ge=1, le=200, description="at most this many jobs")] = 20,
) -> list[dict[str, Any]]:
    """Each job's id, status, device, model, method, times and error (no estimate or result: see the job)."""
    return [row.summary() for row in ctx.runner.store.recent(limit) if may_see(row.access, ctx.caller)]


@router.get("/api/jobs/{job_id}", tags=["verify"], summary="A verify job", responses=ERRORS)
def get_job(job_id: JobId, ctx: JobsContextDep) -> dict[str, Any]:
    """The job: ``status`` (queued, running, done, failed, cancelled), the plan, the ``estimate`` (for the run's
    device), the trainer's ``result`` (``result.measured``) and ``comparison`` rows (``name``, ``estimated``,
    ``measured``, ``error_percent`` = (estimated - measured) / measured) per component and for the peaks. While it
    runs, ``progress`` says the phase its run is in (building, warm-up, measuring, tracking, writing), its number
    (``index`` of ``count``) and the seconds since it started (``elapsed_s``)."""
    row = _visible(ctx.runner, job_id, ctx.caller)
    return row.detail() | {"progress": ctx.runner.progress(row)}


@router.delete("/api/jobs/{job_id}", tags=["verify"], summary="Cancel a verify job", responses=ERRORS)
def cancel_job(job_id: JobId, ctx: JobsContextDep) -> dict[str, Any]:
    """Cancel a queued job, or kill a running one; the job stays listed as ``cancelled`` (409 once it has finished
    or been cancelled)."""
    _visible(ctx.runner, job_id, ctx.caller)
    return ctx.runner.cancel(job_id).detail()
