"""The REST API: estimates, the model catalog and Hub resolution, GPUs, health.

Routes stay thin: they validate (``app.schemas``), resolve the model (``app.hub``), call the estimator
and return its JSON contract unchanged. Errors are raised as ``estimator.EstimatorError`` /
``app.hub.HubError`` and turned into JSON 4xx answers by the one handler in ``app.main``.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
from functools import lru_cache
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from app.config_guard import guard_config_call
from app.hub import HubClient, ResolvedModel, clean_token, find_catalog_model
from app.schemas import (
    ESTIMATE_EXAMPLE,
    ErrorBody,
    GPUInfo,
    Health,
    ModelDetail,
    ModelSummary,
    ParameterCounts,
    PlanBody,
    PlanQuery,
)
from app.settings import Settings
from estimator import catalog
from estimator._errors import EstimatorError, PlanError
from estimator._plan import Plan

log = logging.getLogger(__name__)

router = APIRouter()

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "gated repo and no token: send X-HF-Token"},
    403: {"model": ErrorBody, "description": "the token has not been granted access to the repo"},
    404: {"model": ErrorBody, "description": "unknown model; `suggestions` lists close catalog matches"},
    413: {"model": ErrorBody, "description": "request body too large (inline configs are capped)"},
    422: {"model": ErrorBody, "description": "invalid plan or config; `detail` says what to fix"},
    503: {"model": ErrorBody, "description": "the Hugging Face Hub could not be reached"},
    504: {"model": ErrorBody, "description": "the Hugging Face Hub did not answer in time"},
}
_ESTIMATE_200: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the estimator's JSON contract (docs/schema.md); all byte counts are integers",
        "content": {
            "application/json": {
                "schema": {"type": "object", "additionalProperties": True},
                "example": ESTIMATE_EXAMPLE,
            }
        },
    }
}

TokenHeader = Annotated[
    str | None,
    Header(
        alias="X-HF-Token",
        max_length=1024,
        description="Hugging Face token for gated/private repos (or send 'Authorization: Bearer hf_...'). "
        "Used for this request only; never logged or stored.",
    ),
]


# ---------------------------------------------------------------------------------------------- helpers


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _hub(request: Request) -> HubClient:
    hub: HubClient = request.app.state.hub
    return hub


def request_token(request: Request, header_token: str | None) -> str | None:
    token = clean_token(header_token)
    if token is None:
        auth = request.headers.get("authorization")
        if auth and auth[:7].lower() == "bearer ":
            token = clean_token(auth)
    return token


async def resolve_model(request: Request, model: str, token: str | None, revision: str = "main") -> ResolvedModel:
    return await run_in_threadpool(_hub(request).resolve, model, token, revision)


def check_config_size(config: dict[str, Any], settings: Settings, request: Request) -> None:
    length = int(request.headers.get("content-length") or 0)
    if length and length <= settings.max_config_bytes:
        return
    size = len(json.dumps(config, separators=(",", ":")))
    if size > settings.max_config_bytes:
        raise PlanError(
            f"the inline config is {size} bytes; the limit is {settings.max_config_bytes} bytes: "
            "send config.json itself, not a checkpoint or an index"
        )


def _json(content: Any, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(content, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
    return Response(body, media_type="application/json", headers=headers)


def check_gpu(gpu: str | None) -> None:
    if gpu is not None and catalog.find_gpu(gpu) is None:
        close = difflib.get_close_matches(gpu.lower(), [g.id for g in catalog.gpus()], n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise PlanError(f"gpu {gpu[:100]!r} is not in the GPU catalog: {hint}GET /api/gpus lists the ids")


async def _estimate(request: Request, body: PlanBody, token: str | None) -> Response:
    from estimator import estimate

    check_gpu(body.gpu)
    if body.config is not None:
        check_config_size(body.config, _settings(request), request)
        plan = body.to_plan()
        result = guard_config_call(lambda: estimate(plan).to_dict(), "inline config")
        return _json(result, {"X-Model-Source": "inline"})
    assert body.model is not None
    if find_catalog_model(body.model) is not None:
        plan = body.to_plan()
        return _json(estimate(plan).to_dict(), {"X-Model-Source": "catalog"})
    plan = body.to_plan()  # check the plan before any Hub traffic
    resolved = await resolve_model(request, body.model, token)
    result = guard_config_call(lambda: estimate(plan, config=resolved.config).to_dict(), "Hub config")
    return _json(result, {"X-Model-Source": resolved.params_source.replace(" ", "-")})


@lru_cache(maxsize=4096)
def _catalog_summary(model_id: str) -> ModelSummary:
    from estimator import parse_config

    m = catalog.find_model(model_id)
    assert m is not None
    model_type: str | None
    context: int | None
    try:
        arch = parse_config(m.config)
        model_type, context = arch.model_type, arch.max_position_embeddings
    except EstimatorError:
        model_type, context = m.config.get("model_type"), m.config.get("max_position_embeddings")
    return ModelSummary(
        id=m.id,
        hf_id=m.hf_id,
        name=m.name,
        family=m.family,
        gated=m.gated,
        params=m.params,
        model_type=model_type,
        max_position_embeddings=context,
    )


def _model_detail(resolved: ResolvedModel) -> dict[str, Any]:
    from estimator import estimate, parse_config

    what = "catalog config" if resolved.source == "catalog" else "Hub config"
    arch = guard_config_call(lambda: parse_config(resolved.config), what)
    probe = Plan(config=resolved.config, method="full", seq_len=1, allow_long_context=True)
    params = guard_config_call(lambda: estimate(probe).to_dict()["params"], what)
    catalog_total = None
    if resolved.catalog_id is not None:
        entry = catalog.find_model(resolved.catalog_id)
        catalog_total = entry.params if entry is not None else None
    by_dtype = resolved.safetensors_params
    detail = ModelDetail(
        id=resolved.repo_id,
        catalog_id=resolved.catalog_id,
        source="catalog" if resolved.source == "catalog" else "hub",
        revision=resolved.revision,
        commit=resolved.commit,
        gated=resolved.gated,
        cached=resolved.cached,
        model_type=arch.model_type,
        max_position_embeddings=arch.max_position_embeddings,
        architecture=dataclasses.asdict(arch),
        parameters=ParameterCounts(
            total=params["total"],
            embedding=params.get("embedding"),
            lm_head=params.get("lm_head"),
            by_role=params.get("by_role"),
            source=resolved.params_source,  # type: ignore[arg-type]
            catalog_total=catalog_total,
            safetensors_by_dtype=by_dtype,
            safetensors_total=sum(by_dtype.values()) if by_dtype else None,
        ),
        config=resolved.config,
        notes=list(resolved.notes) + list(arch.notes),
    )
    return detail.model_dump(mode="json")


# ---------------------------------------------------------------------------------------------- routes


@router.post(
    "/api/estimate",
    tags=["estimate"],
    summary="Estimate disk and GPU memory of a fine-tuning plan",
    response_model=None,
    responses=_ESTIMATE_200 | _ERRORS,
)
async def post_estimate(body: PlanBody, request: Request, x_hf_token: TokenHeader = None) -> Response:
    """The plan (a model id or an inline ``config``) → ``estimate(plan, config=...).to_dict()``.

    A catalog id or catalog Hub id is answered from the embedded catalog; any other id is resolved on the
    Hugging Face Hub (``config.json`` and safetensors headers; no weights). The header ``X-Model-Source`` says
    where the config came from: ``inline``, ``catalog``, ``hub-config`` or ``hub-safetensors-metadata``.
    """
    return await _estimate(request, body, request_token(request, x_hf_token))


@router.get(
    "/api/estimate",
    tags=["estimate"],
    summary="Estimate from query parameters (curl convenience)",
    response_model=None,
    responses=_ESTIMATE_200 | _ERRORS,
)
async def get_estimate(
    query: Annotated[PlanQuery, Query()], request: Request, x_hf_token: TokenHeader = None
) -> Response:
    """Every plan field as a query parameter: ``/api/estimate?model=llama-3.1-8b&method=lora&seq_len=4096``.

    ``target_modules`` and ``modules_to_save`` take comma-separated names. Inline configs need ``POST``.
    """
    return await _estimate(request, query.to_body(), request_token(request, x_hf_token))


@router.get("/api/models", tags=["models"], summary="Search the model catalog", response_model=list[ModelSummary])
def list_models(
    q: Annotated[str, Query(max_length=200, description="search text: id, Hub id, name or family")] = "",
    limit: Annotated[int, Query(ge=1, le=200, description="at most this many results")] = 50,
) -> list[ModelSummary]:
    """Catalog models matching ``q`` (best first); an empty ``q`` lists the catalog."""
    return [_catalog_summary(m.id) for m in catalog.search_models(q, limit=limit)]


@router.get(
    "/api/models/{repo_id:path}",
    tags=["models"],
    summary="Resolve a model id: architecture and exact parameter counts",
    response_model=ModelDetail,
    responses=_ERRORS,
)
async def get_model(
    repo_id: Annotated[str, Path(max_length=200, description="a catalog id or a Hub repo id ('org/name')")],
    request: Request,
    x_hf_token: TokenHeader = None,
    revision: Annotated[str, Query(min_length=1, max_length=255, description="Hub branch, tag or commit")] = "main",
) -> Response:
    """Catalog models resolve offline; other ids via the Hub (``config.json`` + safetensors headers).

    ``parameters.source`` says where the exact counts come from: ``catalog``, ``hub config`` or
    ``hub safetensors metadata`` (per-dtype counts of the checkpoint, read with HTTP range requests).
    """
    resolved = await resolve_model(request, repo_id, request_token(request, x_hf_token), revision)
    return _json(_model_detail(resolved))


@router.get("/api/gpus", tags=["gpus"], summary="The GPU catalog", response_model=list[GPUInfo])
def list_gpus() -> list[GPUInfo]:
    """Every catalog GPU: memory as sold and as usable by one process, bf16 peak, bandwidth."""
    return [GPUInfo(**dataclasses.asdict(g)) for g in catalog.gpus()]


@router.get("/healthz", tags=["health"], summary="Liveness", response_model=Health)
def healthz(request: Request) -> JSONResponse:
    """Always ``{"status": "ok"}`` while the process serves requests; touches neither the Hub nor the disk."""
    from app.main import VERSION

    return JSONResponse({"status": "ok", "version": VERSION, "hf_endpoint": _settings(request).hf_endpoint})
