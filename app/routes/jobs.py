"""Verify jobs over HTTP: queue a real run of a plan, poll it, cancel it (the runner is ``app.jobs.runner``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse

from app.deps import HubTokenDep, RunnerDep, ServiceDep
from app.schemas import ErrorBody, JobBody

router = APIRouter()

ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "unknown job id (or unknown model)"},
    409: {"model": ErrorBody, "description": "the job has already finished"},
    422: {"model": ErrorBody, "description": "invalid plan, or cuda asked for on a server without a GPU"},
    503: {"model": ErrorBody, "description": "the train extra is not installed on the server (or the Hub is down)"},
}

JobId = Annotated[str, PathParam(min_length=1, max_length=64, description="a job id from POST /api/jobs")]


@router.post(
    "/api/jobs",
    tags=["verify"],
    summary="Verify a plan with a real run",
    status_code=202,
    response_model=None,
    responses=ERRORS,
)
def create_job(body: JobBody, runner: RunnerDep, service: ServiceDep, token: HubTokenDep) -> JSONResponse:
    """Estimate the plan for the run's device and queue a real run of it (``python -m trainer.run``).

    The run builds the model from its config with random weights (nothing is downloaded) and trains one
    warm-up step plus ``steps`` measured steps on a synthetic batch. On CUDA it reads the allocator's peaks and
    the driver's use; on CPU it measures the live tensors. A plan over the device's memory is run anyway: the
    result then says ``"oom": true``. Poll ``GET /api/jobs/{id}`` (the ``url`` of the answer).
    """
    runner.check_ready()
    device = runner.run_device(body.device)
    plan = body.plan_for(device)
    estimate, resolved = service.estimate(plan, token)
    stored_plan = {k: v for k, v in plan.to_dict().items() if k != "config"}  # the config is stored on its own
    row = runner.submit(device=device, steps=body.steps, plan=stored_plan, config=dict(resolved.config),
                        estimate=estimate)  # fmt: skip
    url = f"/api/jobs/{row.id}"
    return JSONResponse({"id": row.id, "status": row.status, "url": url}, status_code=202, headers={"Location": url})


@router.get("/api/jobs", tags=["verify"], summary="Recent verify jobs, newest first")
def list_jobs(
    runner: RunnerDep, limit: Annotated[int, Query(ge=1, le=200, description="at most this many jobs")] = 20
) -> list[dict[str, Any]]:
    """Each job's id, status, device, model, method, times and error (no estimate or result: see the job)."""
    return [row.summary() for row in runner.store.recent(limit)]


@router.get("/api/jobs/{job_id}", tags=["verify"], summary="A verify job", responses=ERRORS)
def get_job(job_id: JobId, runner: RunnerDep) -> dict[str, Any]:
    """The job: ``status`` (queued, running, done, failed, cancelled), the plan, the ``estimate`` (for the run's
    device), the trainer's ``result`` (``result.measured``) and ``comparison`` rows (``name``, ``estimated``,
    ``measured``, ``error_percent`` = (estimated - measured) / measured) per component and for the peaks."""
    return runner.get(job_id).detail()


@router.delete("/api/jobs/{job_id}", tags=["verify"], summary="Cancel a verify job", responses=ERRORS)
def cancel_job(job_id: JobId, runner: RunnerDep) -> dict[str, Any]:
    """Cancel a queued job, or kill a running one; the job stays listed as ``cancelled``."""
    return runner.cancel(job_id).detail()
