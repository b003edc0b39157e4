"""Request and response models of the REST API.

The request models are derived from ``estimator.Plan``'s field declarations (``estimator.plan_fields()``): the same
names, defaults, kinds, bounds, choices and help text, so a field added to the plan appears here, in the OpenAPI
schema and in every request without another edit. ``Plan`` itself stays the one place that decides what a valid
plan is: ``to_plan()`` hands the values to it, and combinations only the plan checks raise ``PlanError`` (422).
Responses carry the estimator's JSON contract as a plain object (documented with an example computed by the
estimator), so the API never drifts from ``estimate(...).to_dict()``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator
from pydantic.fields import FieldInfo

from app.jobs.runner import MAX_STEPS
from estimator import Plan, PlanField, catalog, parse_pair, plan_fields

QUERY_LIST_MAX = 4096
"""Longest comma-separated module list in a query string."""


class CustomGpu(BaseModel):
    """A GPU that is not in the catalog: its name and memory (what ``nvidia-smi`` lists as its total, in bytes)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=catalog.MAX_CUSTOM_NAME, description="what to call it")
    memory_bytes: int = Field(ge=catalog.MIN_CUSTOM_BYTES, le=catalog.MAX_CUSTOM_BYTES,
                              description="its memory in bytes (24 GiB: 25769803776)")  # fmt: skip


def field_type(f: PlanField, *, query: bool = False) -> tuple[Any, FieldInfo]:
    """The pydantic annotation and ``Field`` of a plan field (``query``: lists as comma-separated text)."""
    s = f.spec
    bounds = f.bounds_text()
    info: dict[str, Any] = {"description": s.help + (f" Allowed: {bounds}." if bounds else "")}
    annotation: Any
    if s.kind == "choice":
        annotation = Literal[s.choices]
    elif s.kind == "bool":
        annotation = bool
    elif s.kind == "tristate":
        annotation = bool | None
    elif s.kind in ("int", "number"):
        # a float default (dropout) is a float; an int default (alpha) keeps ints as given
        annotation = int if s.kind == "int" else float if isinstance(f.default, float) else int | float
        if s.low is not None:
            info["gt" if s.low_open else "ge"] = s.low
        if s.high is not None:
            info["lt" if s.high_open else "le"] = s.high
    elif s.kind in ("modules", "targets"):
        if query:
            annotation = str
            info["max_length"] = QUERY_LIST_MAX
        else:
            annotation = list[str] if s.kind == "modules" else Literal["all-linear"] | list[str]
    elif s.kind == "model" or (s.kind == "gpu" and query):
        annotation = str | None
        info.update(min_length=1, max_length=s.max_length)
    elif s.kind == "gpu":
        annotation = Annotated[str, Field(min_length=1, max_length=s.max_length)] | CustomGpu | None
    elif s.kind == "pair":
        side = Annotated[int, Field(ge=s.low, le=s.high)]
        annotation = (str | None) if query else (tuple[side, side] | None)
        if query:
            info["max_length"] = 64
    else:  # config
        annotation = dict[str, Any] | None
    default = f.default
    if query and s.kind in ("modules", "targets"):
        default = default if isinstance(default, str) else ",".join(default)
    elif isinstance(default, tuple):
        default = list(default)
    return annotation, Field(default, **info)


class PlanModel(BaseModel):
    """Base of the derived request models: converts to ``estimator.Plan``."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @model_validator(mode="before")
    @classmethod
    def _comma_separated(cls, data: Any) -> Any:
        """Module lists may also come as one comma-separated string (as a query string sends them)."""
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for f in plan_fields():
            value = out.get(f.name)
            annotation = cls.model_fields.get(f.name)
            as_text = annotation is not None and annotation.annotation in (str, str | None)
            if f.spec.kind in ("modules", "targets") and isinstance(value, str) and value != "all-linear":
                if not as_text:
                    out[f.name] = split_modules(value)
            elif f.spec.kind == "pair" and isinstance(value, str) and not as_text:
                out[f.name] = parse_pair(value)
        return out

    def plan_data(self) -> dict[str, Any]:
        """The plan fields as ``Plan.from_dict`` takes them (comma lists split)."""
        names = {f.name: f for f in plan_fields()}
        data = {k: v for k, v in self.model_dump().items() if k in names}
        for name, value in data.items():
            if names[name].spec.kind in ("modules", "targets") and isinstance(value, str) and value != "all-linear":
                data[name] = split_modules(value)
            elif names[name].spec.kind == "pair":
                data[name] = list(value) if isinstance(value, tuple) else parse_pair(value)
        return data

    def to_plan(self) -> Plan:
        """The ``estimator.Plan`` (raises ``PlanError`` on combinations only the plan checks)."""
        return Plan.from_dict(self.plan_data())


def split_modules(text: str) -> list[str]:
    return [part.strip() for part in text.replace(" ", ",").split(",") if part.strip()]


def plan_model(
    name: str,
    *,
    query: bool = False,
    exclude: tuple[str, ...] = (),
    overrides: dict[str, tuple[Any, Any]] | None = None,
    base: type[PlanModel] = PlanModel,
) -> type[PlanModel]:
    """A pydantic model with every plan field (less ``exclude``, with ``overrides``)."""
    fields: dict[str, Any] = {f.name: field_type(f, query=query) for f in plan_fields() if f.name not in exclude}
    fields.update(overrides or {})
    model: type[PlanModel] = create_model(name, __base__=base, **fields)
    return model


PLAN_EXAMPLES: list[Any] = [
    {"model": "llama-3.1-8b", "method": "qlora", "seq_len": 2048, "batch_size": 1},
    {
        "config": {
            "model_type": "llama",
            "vocab_size": 32000,
            "hidden_size": 2048,
            "intermediate_size": 5632,
            "num_hidden_layers": 22,
            "num_attention_heads": 32,
            "num_key_value_heads": 4,
            "max_position_embeddings": 2048,
        },
        "method": "lora",
        "lora_r": 8,
    },
]

if TYPE_CHECKING:  # the derived classes are ordinary PlanModels to the type checker
    _BodyFields = PlanModel
    _QueryFields = PlanModel
else:
    _BodyFields = plan_model("PlanFields")
    _QueryFields = plan_model(
        "PlanQueryFields",
        query=True,
        exclude=("config",),
        overrides={"model": (str, Field(..., min_length=1, max_length=plan_fields()[0].spec.max_length))},
    )


class PlanBody(_BodyFields):
    """``POST /api/estimate``: a plan, with a model id or an inline ``config.json``."""

    model_config = ConfigDict(json_schema_extra={"examples": PLAN_EXAMPLES})


class PlanQuery(_QueryFields):
    """``GET /api/estimate``: the same plan as query parameters (module lists comma-separated)."""


# ---------------------------------------------------------------------------------------------- responses


class FieldError(BaseModel):
    """One invalid field of a request."""

    field: str | None = Field(description="the field ('lora_r', 'config.hidden_size'), or null for the whole body")
    message: str


class ErrorBody(BaseModel):
    """Every error: ``detail`` says what to fix; some errors add fields (``suggestions``, ``errors``)."""

    model_config = ConfigDict(extra="allow")

    detail: str = Field(description="what went wrong and what to do about it")
    errors: list[FieldError] | None = Field(None, description="request validation: one entry per invalid field")
    suggestions: list[str] | None = Field(
        None,
        description="a model that did not resolve (unknown, or the Hub unreachable): catalog ids of its shape family "
        "(instruct, chat and base variants) first, then close matches",
    )


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorBody, "description": "invalid request: `detail` says what to fix, `errors` lists the fields"},
}
"""The 422 answer of every route (instead of FastAPI's default ``HTTPValidationError``, which this app never sends)."""


class ModelSummary(BaseModel):
    """A catalog model."""

    id: str
    hf_id: str
    name: str
    family: str
    gated: bool
    params: int
    model_type: str | None = None
    max_position_embeddings: int | None = None


class ParameterCounts(BaseModel):
    """Exact parameter counts of a resolved model and where they come from."""

    total: int = Field(description="parameters of AutoModelForCausalLM.from_config (tied embeddings once)")
    embedding: int | None = None
    lm_head: int | None = None
    by_role: dict[str, Any] | None = None
    source: Literal["catalog", "hub config", "hub safetensors metadata"]
    catalog_total: int | None = Field(None, description="the catalog's verified count (catalog models)")
    safetensors_by_dtype: dict[str, int] | None = Field(
        None, description="parameters per dtype in the repo's safetensors headers (read over range requests)"
    )
    safetensors_total: int | None = None


class ModelDetail(BaseModel):
    """A model id resolved to its architecture."""

    id: str = Field(description="the id as resolved (the Hub id for catalog models)")
    catalog_id: str | None
    source: Literal["catalog", "hub"]
    revision: str | None = None
    commit: str | None = None
    gated: bool
    cached: bool = Field(False, description="served from the app's on-disk Hub cache")
    model_type: str
    max_position_embeddings: int
    architecture: dict[str, Any] = Field(description="estimator.Architecture, field for field")
    parameters: ParameterCounts
    config: dict[str, Any]
    notes: list[str] = Field(default_factory=list)


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    version: str
    hf_endpoint: str


class JobBody(PlanBody):
    """``POST /api/jobs``: the plan body of ``POST /api/estimate``, plus where and how long to run it."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"model": "llama-3.2-1b", "method": "qlora", "seq_len": 512, "batch_size": 1, "device": "cuda"},
                {
                    "config": {
                        "model_type": "llama",
                        "vocab_size": 1024,
                        "hidden_size": 128,
                        "intermediate_size": 256,
                        "num_hidden_layers": 2,
                        "num_attention_heads": 4,
                        "num_key_value_heads": 2,
                        "max_position_embeddings": 512,
                    },
                    "method": "qlora",
                    "seq_len": 64,
                    "lora_dropout": 0.0,
                    "device": "cpu",
                },
            ]
        }
    )

    device: Literal["cpu", "cuda"] | None = Field(
        None, description="where the run executes; default: the server's verify_device (auto: cuda if a GPU)."
    )
    steps: int = Field(1, ge=1, le=MAX_STEPS, description=f"measured steps after one warm-up step: 1 to {MAX_STEPS}.")
    allow_oom: bool = Field(
        False,
        description="run it even when its estimate exceeds the device's memory (the GPU's, or the host's available "
        "memory on CPU), to see the out-of-memory; otherwise such a run is refused with a 422.",
    )

    def plan_for(self, device: str) -> Plan:
        """The plan to estimate and run: this body on ``device``."""
        return Plan.from_dict(self.plan_data() | {"device": device})
