"""The REST API: estimates, the model catalog and Hub resolution, GPUs, health.

Thin routes: they take a derived request model (``app.schemas``), hand the plan to the estimate service
(``app.service``) and return the estimator's JSON contract unchanged. Typed errors become 4xx JSON in
``app.handlers``. The routes are ``async``: an estimate answered from the cache is a dictionary lookup on the event
loop; estimator work runs on the CPU lane and Hub lookups on the Hub lane (``app.lanes``), each bounded, so neither
can hold up the other, nor ``/healthz``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from functools import lru_cache
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from app import VERSION
from app.deps import Context, ContextDep
from app.hub import ResolvedModel
from app.hub.client import hub_timeout
from app.lanes import estimate_answer
from app.schemas import (
    ERROR_RESPONSES,
    ErrorBody,
    Health,
    ModelDetail,
    ModelSummary,
    ParameterCounts,
    PlanBody,
    PlanQuery,
)
from app.service import guarded
from estimator import WHY_EXACT_DIFFERS, EstimatorError, Plan, RuleOfThumb, catalog, estimate, parse_config

router = APIRouter(responses=ERROR_RESPONSES)

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "gated repo and no token: send X-HF-Token"},
    403: {"model": ErrorBody, "description": "the token has not been granted access to the repo"},
    404: {"model": ErrorBody, "description": "unknown model; `suggestions` lists close catalog matches"},
    413: {"model": ErrorBody, "description": "request body too large (inline configs are capped)"},
    422: {"model": ErrorBody, "description": "invalid plan or config; `detail` says what to fix"},
    503: {"model": ErrorBody, "description": "the Hugging Face Hub could not be reached"},
    504: {"model": ErrorBody, "description": "the Hugging Face Hub did not answer in time"},
}


@lru_cache(maxsize=1)
def _estimate_responses() -> dict[int | str, dict[str, Any]]:
    example = estimate(Plan(model="llama-3.1-8b", seq_len=2048)).to_dict()
    ok = {
        "description": "the estimator's JSON contract (docs/schema.md); all byte counts are integers",
        "content": {"application/json": {"schema": {"type": "object", "additionalProperties": True},
                                         "example": example}},
    }  # fmt: skip
    return {200: ok} | ERRORS


def json_response(content: Any, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(content, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
    return Response(body, media_type="application/json", headers=headers)


async def _estimate(ctx: Context, plan: Plan) -> Response:
    body, source = await estimate_answer(ctx.service, ctx.lanes, plan, ctx.hub_token, ctx.settings.hub_timeout_s)
    return Response(body, media_type="application/json", headers={"X-Model-Source": source})


@router.post(
    "/api/estimate",
    tags=["estimate"],
    summary="Estimate disk and GPU memory of a fine-tuning plan",
    response_model=None,
    responses=_estimate_responses(),
)
async def post_estimate(body: PlanBody, ctx: ContextDep) -> Response:
    """The plan (a model id or an inline ``config``) → ``estimate(plan, config=...).to_dict()``.

    A catalog id or catalog Hub id is answered from the embedded catalog; any other id is resolved on the
    Hugging Face Hub (``config.json`` and safetensors headers; no weights). The header ``X-Model-Source`` says
    where the config came from: ``inline``, ``catalog``, ``hub-config`` or ``hub-safetensors-metadata``.
    """
    return await _estimate(ctx, body.to_plan())


@router.get(
    "/api/estimate",
    tags=["estimate"],
    summary="Estimate from query parameters (curl convenience)",
    response_model=None,
    responses=_estimate_responses(),
)
async def get_estimate(query: Annotated[PlanQuery, Query()], ctx: ContextDep) -> Response:
    """Every plan field as a query parameter: ``/api/estimate?model=llama-3.1-8b&method=lora&seq_len=4096``.

    ``target_modules`` and ``modules_to_save`` take comma-separated names. Inline configs need ``POST``.
    """
    return await _estimate(ctx, query.to_plan())


@lru_cache(maxsize=4096)
def _catalog_summary(model_id: str) -> ModelSummary:
    m = catalog.find_model(model_id)
    assert m is not None
    model_type: str | None
    context: int | None
    try:
        arch = parse_config(m.config)
        model_type, context = arch.model_type, arch.max_position_embeddings
    except EstimatorError:
        model_type, context = m.config.get("model_type"), m.config.get("max_position_embeddings")
    return ModelSummary(id=m.id, hf_id=m.hf_id, name=m.name, family=m.family, gated=m.gated, params=m.params,
                        model_type=model_type, max_position_embeddings=context)  # fmt: skip


def _model_detail(resolved: ResolvedModel) -> dict[str, Any]:
    what = "catalog config" if resolved.source == "catalog" else "Hub config"
    arch = guarded(lambda: parse_config(resolved.config), what)
    probe = Plan(config=resolved.config, method="full", seq_len=1, allow_long_context=True)
    params = guarded(lambda: estimate(probe).to_dict()["params"], what)
    entry = catalog.find_model(resolved.catalog_id) if resolved.catalog_id is not None else None
    by_dtype = resolved.safetensors_params
    counts = ParameterCounts(
        total=params["total"],
        embedding=params.get("embedding"),
        lm_head=params.get("lm_head"),
        by_role=params.get("by_role"),
        source=resolved.params_source,  # type: ignore[arg-type]
        catalog_total=entry.params if entry is not None else None,
        safetensors_by_dtype=by_dtype,
        safetensors_total=sum(by_dtype.values()) if by_dtype else None,
    )
    source: Literal["catalog", "hub"] = "catalog" if resolved.source == "catalog" else "hub"
    detail = ModelDetail(
        id=resolved.repo_id, catalog_id=resolved.catalog_id, source=source,
        revision=resolved.revision, commit=resolved.commit, gated=resolved.gated, cached=resolved.cached,
        model_type=arch.model_type, max_position_embeddings=arch.max_position_embeddings,
        architecture=dataclasses.asdict(arch), parameters=counts, config=resolved.config,
        notes=list(resolved.notes) + list(arch.notes),
    )  # fmt: skip
    return detail.model_dump(mode="json")


@router.get("/api/models", tags=["models"], summary="Search the model catalog", response_model=list[ModelSummary])
async def list_models(
    ctx: ContextDep,
    q: Annotated[str, Query(max_length=200, description="search text: id, Hub id, name or family")] = "",
    limit: Annotated[int, Query(ge=1, le=200, description="at most this many results")] = 50,
) -> list[ModelSummary]:
    """Catalog models matching ``q`` (best first); an empty ``q`` lists the catalog."""
    return await ctx.lanes.cpu(lambda: [_catalog_summary(m.id) for m in catalog.search_models(q, limit=limit)])


@router.get(
    "/api/models/{repo_id:path}",
    tags=["models"],
    summary="Resolve a model id: architecture and exact parameter counts",
    response_model=ModelDetail,
    responses=ERRORS,
)
async def get_model(
    repo_id: Annotated[str, Path(max_length=200, description="a catalog id or a Hub repo id ('org/name')")],
    ctx: ContextDep,
    revision: Annotated[str, Query(min_length=1, max_length=255, description="Hub branch, tag or commit")] = "main",
) -> Response:
    """Catalog models resolve offline; other ids via the Hub (``config.json`` + safetensors headers).

    ``parameters.source`` says where the exact counts come from: ``catalog``, ``hub config`` or
    ``hub safetensors metadata`` (per-dtype counts of the checkpoint, read with HTTP range requests).
    """
    settings, token = ctx.settings, ctx.hub_token
    deadline = time.monotonic() + settings.hub_timeout_s
    resolved = await ctx.lanes.hub(
        lambda: ctx.hub.resolve(repo_id, token, revision, deadline),
        deadline,
        lambda: hub_timeout(repo_id, settings.hub_timeout_s, settings.hf_endpoint),
    )
    return json_response(await ctx.lanes.cpu(lambda: _model_detail(resolved)))


@router.get("/api/rule-of-thumb", tags=["estimate"], summary="The rule of thumb for any parameter count")
async def rule_of_thumb(
    params: Annotated[float, Query(ge=1, le=1e15, description="number of parameters, e.g. 1e10")],
    trainable_fraction: Annotated[float, Query(ge=0, le=1, description="share of parameters in the adapter")] = 0.01,
) -> dict[str, Any]:
    """``{params, trainable_fraction, fp16, int4, adapter, qlora_total, why_exact_differs}`` in bytes: params × 2
    (16-bit), × 0.5 (4-bit), the adapter in 16-bit, and QLoRA's 4-bit base plus adapter; ``why_exact_differs``
    says why a real model's exact figures are not these (``POST /api/estimate`` gives them)."""
    rule = RuleOfThumb(int(params), trainable_fraction)
    return rule.to_dict() | {"why_exact_differs": list(WHY_EXACT_DIFFERS)}


@router.get("/api/gpus", tags=["gpus"], summary="The GPU catalog", response_model=list[catalog.GPU])
async def list_gpus() -> tuple[catalog.GPU, ...]:
    """Every catalog GPU: memory as sold and as usable by one process, bf16 peak, bandwidth."""
    return catalog.gpus()


@router.get("/healthz", tags=["health"], summary="Liveness", response_model=Health)
async def healthz(request: Request) -> Health:
    """Always ``{"status": "ok"}`` while the process serves requests. Answered on the event loop: it waits for no
    thread, no Hub lookup and no disk."""
    return Health(version=VERSION, hf_endpoint=request.app.state.tuneplan.settings.hf_endpoint)
