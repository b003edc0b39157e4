"""What to do with a plan besides estimating it: which GPU to rent, the price table, configs out and in.

Thin routes over ``app.service`` (rent, the model's Hub id) and ``app.configs`` (export, import); the work runs on
the app's lanes (``app.lanes``: Hub lookups on the Hub lane within the deadline, the rest on the CPU lane); errors
become 4xx JSON in ``app.handlers`` (a bad config file or plan is a 422 that says what to fix).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from app.configs import FORMATS, IMPORT_FORMATS, export_plan, import_config
from app.configs.imports import MAX_IMPORT_BYTES
from app.deps import Context, ContextDep
from app.lanes import resolve_plan
from app.routes.api import ERRORS, json_response
from app.schemas import PlanBody, PlanQuery
from estimator import COUNTS, OBJECTIVES, Plan, default_prices

assert COUNTS == (1, 2, 4, 8)  # as the rent routes' docs say

router = APIRouter()

ExportFormat = Literal["trl", "trl-python", "axolotl", "accelerate", "deepspeed"]
ImportFormat = Literal["axolotl", "trl"]
ImportObjective = Literal["sft", "dpo", "orpo", "simpo", "kto", "reward", "grpo"]
assert set(OBJECTIVES) == set(ImportObjective.__args__)  # type: ignore[attr-defined]
assert set(FORMATS) == set(ExportFormat.__args__) and set(IMPORT_FORMATS) == set(ImportFormat.__args__)  # type: ignore[attr-defined]


class ImportBody(BaseModel):
    """``POST /api/import``: a training config's text."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"text": "base_model: meta-llama/Llama-3.1-8B\nadapter: qlora\nload_in_4bit: true\nlora_r: 16\n"
                 "lora_alpha: 32\nlora_target_linear: true\nsequence_len: 2048\nmicro_batch_size: 2\n"
                 "gradient_accumulation_steps: 4\n"}]})  # fmt: skip

    text: str = Field(max_length=MAX_IMPORT_BYTES, description="the file's contents: axolotl YAML or TRL YAML/JSON")
    format: ImportFormat | None = Field(None, description="axolotl or trl; default: told apart by the keys")
    objective: ImportObjective | None = Field(
        None,
        description="the objective (the trl command) the file is for; default: axolotl's rl: or reward_model, or "
        "the keys only one TRL objective's config has, else sft",
    )


async def _rent(ctx: Context, plan: Plan) -> Response:
    service = ctx.service
    resolved = await resolve_plan(service, ctx.lanes, plan, ctx.hub_token, ctx.settings.hub_timeout_s)
    return json_response(await ctx.lanes.cpu(lambda: service.rent_resolved(plan, resolved)))


RENT_SUMMARY = "Which GPU to rent: every catalog GPU and count that fits, cheapest first"


@router.post("/api/rent", tags=["rent"], summary=RENT_SUMMARY, response_model=None, responses=ERRORS)
async def post_rent(body: PlanBody, ctx: ContextDep) -> Response:
    """Every catalog GPU × count (1, 2, 4 and 8 GPUs) where the plan fits, with step time, tokens/s and
    the cost at each listed price; sorted by the run's cost for the plan's token budget (``train_tokens``, or
    ``dataset_tokens`` × ``epochs``), else by cost per million tokens. The plan's ``gpu`` and ``num_gpus`` are
    ignored. GPUs without a price follow, fastest first."""
    return await _rent(ctx, body.to_plan())


@router.get("/api/rent", tags=["rent"], summary=RENT_SUMMARY, response_model=None, responses=ERRORS)
async def get_rent(query: Annotated[PlanQuery, Query()], ctx: ContextDep) -> Response:
    """``POST /api/rent`` from query parameters: ``/api/rent?model=llama-3.1-8b&method=qlora&train_tokens=1e8``."""
    return await _rent(ctx, query.to_plan())


@router.get(
    "/api/prices",
    tags=["rent"],
    summary="The price table in use (each price with its date and source)",
    responses=ERRORS,
)
async def get_prices(ctx: ContextDep) -> dict[str, Any]:
    """The server's price table (``TUNEPLAN_PRICES``), else the built-in one; ``origin`` says which."""
    table = ctx.service.prices or default_prices()
    return {"origin": table.origin, "prices": [p.to_dict() for p in table.prices]}


async def _export(ctx: Context, plan: Plan, fmt: str) -> Response:
    service = ctx.service
    resolved = await resolve_plan(service, ctx.lanes, plan, ctx.hub_token, ctx.settings.hub_timeout_s)

    def export() -> Any:
        service.contract(plan, resolved)  # the plan must estimate (a bad config or plan is a 4xx here)
        return export_plan(plan, fmt, service.model_id(plan, resolved))

    out = await ctx.lanes.cpu(export)
    return json_response({"format": out.format, "filename": out.filename, "media_type": out.media_type,
                          "text": out.text, "notes": list(out.notes)})  # fmt: skip


EXPORT_SUMMARY = "A plan as ready-to-run training configuration"
EXPORT_OK: dict[int | str, dict[str, Any]] = {
    200: {"description": "``{format, filename, media_type, text, notes}``: ``text`` is the file (TRL YAML for "
          "`trl <objective> --config` or a Python script, axolotl YAML, accelerate YAML, DeepSpeed JSON); ``notes`` "
          "say what the format cannot express", "content": {"application/json": {}}},
}  # fmt: skip
EXPORT_RESPONSES = EXPORT_OK | ERRORS


@router.post("/api/export/{format}", tags=["configs"], summary=EXPORT_SUMMARY, response_model=None,
             responses=EXPORT_RESPONSES)  # fmt: skip
async def post_export(
    body: PlanBody,
    ctx: ContextDep,
    format: Annotated[ExportFormat, Path(description="trl, trl-python, axolotl, accelerate or deepspeed")],
) -> Response:
    """The plan's model, quantization, adapters, batch, sequence, accumulation, checkpointing, optimizer, attention
    and GPUs in the format's own keys; what the format cannot express is a comment in it."""
    return await _export(ctx, body.to_plan(), format)


@router.get("/api/export/{format}", tags=["configs"], summary=EXPORT_SUMMARY, response_model=None,
            responses=EXPORT_RESPONSES)  # fmt: skip
async def get_export(
    query: Annotated[PlanQuery, Query()],
    ctx: ContextDep,
    format: Annotated[ExportFormat, Path(description="trl, trl-python, axolotl, accelerate or deepspeed")],
) -> Response:
    """``POST /api/export/{format}`` from query parameters: ``/api/export/axolotl?model=llama-3.1-8b&method=lora``."""
    return await _export(ctx, query.to_plan(), format)


@router.post("/api/import", tags=["configs"], summary="An axolotl or TRL config read into a plan", responses=ERRORS)
async def post_import(body: ImportBody, ctx: ContextDep) -> dict[str, Any]:
    """``{"format", "plan", "mapped", "ignored", "notes"}``: ``mapped`` says which key set which plan field,
    ``ignored`` lists the keys memory does not depend on (accepted, not used)."""
    imported = await ctx.lanes.cpu(lambda: import_config(body.text, body.format, "the config", body.objective))
    return imported.to_dict()
