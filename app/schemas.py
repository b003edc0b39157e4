"""Request and response models of the REST API.

The request models mirror ``estimator.Plan`` field for field (same names, same defaults), with bounds and
descriptions that say what to fix; :meth:`PlanBody.to_plan` hands the values to ``Plan``, which stays the one
place that decides what a valid plan is. Responses carry the estimator's JSON contract as a plain object
(documented with an example), so the API never drifts from ``estimate(...).to_dict()``.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from estimator._plan import (
    MAX_BATCH_SIZE,
    MAX_SEQ_LEN,
    AttnImplementation,
    Device,
    DType,
    Method,
    Optimizer,
    Plan,
    QuantType,
    Sharding,
)

MAX_MODEL_ID = 200
MAX_MODULES = 256
MAX_MODULE_NAME = 128


class _PlanFields(BaseModel):
    """The plan fields shared by the JSON body and the query string (everything but the model and config)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    method: Method = Field("qlora", description="full fine-tuning, LoRA, or QLoRA (4-bit base + LoRA).")
    dtype: DType = Field(
        "bfloat16",
        description="dtype of the frozen base weights and of the compute (bnb_4bit_compute_dtype).",
    )
    mixed_precision: bool = Field(
        False, description="full only: fp32 master weights with 16-bit autocast (needs a 16-bit dtype)."
    )
    quant_type: QuantType = Field("nf4", description="qlora: bitsandbytes quantization (bnb_4bit_quant_type).")
    double_quant: bool = Field(True, description="qlora: quantize the quantization constants too.")
    prepare_kbit: bool | None = Field(
        None, description="qlora: run prepare_model_for_kbit_training (upcasts non-quantized params to fp32)."
    )
    lora_r: int = Field(16, ge=1, le=65536, description="LoRA rank r: an integer ≥ 1.")
    lora_alpha: int | float = Field(32, gt=0, le=1e9, description="LoRA alpha: a positive number.")
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0, description="LoRA dropout, in [0, 1).")
    use_dora: bool = Field(False, description="lora/qlora: weight-decomposed LoRA (DoRA).")
    optimizer: Optimizer = Field("adamw_torch", description="optimizer (transformers TrainingArguments.optim).")
    batch_size: int = Field(1, ge=1, le=MAX_BATCH_SIZE, description="per-device micro-batch size: ≥ 1.")
    seq_len: int = Field(
        2048,
        ge=1,
        le=MAX_SEQ_LEN,
        description="tokens per sequence: ≥ 1, within the model's context unless allow_long_context is set.",
    )
    gradient_checkpointing: bool = Field(True, description="recompute activations in the backward pass.")
    attn_implementation: AttnImplementation = Field("sdpa", description="attention kernel.")
    gpu: str | None = Field(
        None, max_length=100, description="a catalog GPU id (GET /api/gpus) to check the fit against."
    )
    num_gpus: int = Field(1, ge=1, le=4096, description="GPUs in data parallel: 1 to 4096.")
    sharding: Sharding = Field("ddp", description="how state is split across GPUs (ddp or ZeRO stage).")
    device: Device = Field("cuda", description="where training runs.")
    allow_long_context: bool = Field(False, description="allow seq_len beyond the model's max_position_embeddings.")


class PlanBody(_PlanFields):
    """``POST /api/estimate``: a plan, with a model id or an inline ``config.json``."""

    model_config = ConfigDict(
        extra="forbid",
        str_strip_whitespace=True,
        json_schema_extra={
            "examples": [
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
        },
    )

    model: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_MODEL_ID,
        description="a Hub repo id ('org/name') or a catalog id (GET /api/models). Give this or 'config'.",
    )
    config: dict[str, Any] | None = Field(
        None, description="an inline Hugging Face config.json object (at most 256 KiB). Give this or 'model'."
    )
    target_modules: Literal["all-linear"] | list[str] = Field(
        "all-linear",
        description="LoRA target modules: 'all-linear' or a non-empty list of module names (e.g. q_proj); "
        "a comma-separated string is accepted too.",
    )
    modules_to_save: list[str] = Field(
        default_factory=list,
        max_length=MAX_MODULES,
        description="modules trained in full next to the adapters.",
    )

    @field_validator("target_modules", "modules_to_save", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        """Also accept module names as one comma-separated string, as the query string sends them."""
        if isinstance(value, str) and value != "all-linear":
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _one_source(self) -> PlanBody:
        if (self.model is None) == (self.config is None):
            raise ValueError("give exactly one of 'model' (a Hub or catalog id) and 'config' (a config.json object)")
        if isinstance(self.target_modules, list):
            _check_modules("target_modules", self.target_modules)
            if not self.target_modules:
                raise ValueError("target_modules is empty: name at least one module, or use 'all-linear'")
        _check_modules("modules_to_save", self.modules_to_save)
        return self

    def to_plan(self, *, with_config: bool = True) -> Plan:
        """The ``estimator.Plan`` (raises ``PlanError`` on combinations only the plan checks)."""
        data = self.model_dump()
        if not with_config:
            data["config"] = None
        targets = data["target_modules"]
        data["target_modules"] = targets if targets == "all-linear" else tuple(targets)
        data["modules_to_save"] = tuple(data["modules_to_save"])
        return Plan(**data)


class PlanQuery(_PlanFields):
    """``GET /api/estimate``: the same plan as query parameters (lists comma-separated)."""

    model: str = Field(
        ..., min_length=1, max_length=MAX_MODEL_ID, description="a Hub repo id ('org/name') or a catalog id."
    )
    target_modules: str = Field(
        "all-linear",
        min_length=1,
        max_length=4096,
        description="'all-linear' or comma-separated module names, e.g. 'q_proj,v_proj'.",
    )
    modules_to_save: str = Field(
        "", max_length=4096, description="comma-separated modules trained in full, e.g. 'lm_head'."
    )

    def to_body(self) -> PlanBody:
        data = self.model_dump()
        targets = [t.strip() for t in self.target_modules.split(",") if t.strip()]
        data["target_modules"] = "all-linear" if targets == ["all-linear"] else targets
        data["modules_to_save"] = [t.strip() for t in self.modules_to_save.split(",") if t.strip()]
        try:
            return PlanBody.model_validate(data)
        except ValidationError as exc:  # e.g. target_modules=" " splits to nothing: a 422, not a 500
            raise RequestValidationError(exc.errors(include_url=False)) from None


def _check_modules(name: str, modules: list[str]) -> None:
    if len(modules) > MAX_MODULES:
        raise ValueError(f"{name} lists {len(modules)} modules; at most {MAX_MODULES}")
    for module in modules:
        if not module or len(module) > MAX_MODULE_NAME:
            raise ValueError(f"{name} entries must be module names of 1 to {MAX_MODULE_NAME} characters")


# ---------------------------------------------------------------------------------------------- responses

ESTIMATE_EXAMPLE: dict[str, Any] = {
    "plan": {"model": "llama-3.1-8b", "method": "qlora", "seq_len": 2048, "batch_size": 1},
    "params": {"total": 8030261248, "trainable": 41943040, "quantized": 6979321856, "embedding": 525336576},
    "storage": {"base_16bit": 16060522496, "adapter": 83886080, "checkpoint": 335544320},
    "memory": {
        "components": {
            "weights": 5700000000,
            "adapters": 83886080,
            "gradients": 83886080,
            "optimizer": 335544320,
        },
        "peak_allocated": 7400000000,
        "peak_reserved": 8100000000,
        "peak_phase": "backward",
    },
    "fits": [{"gpu": "rtx-4090", "fits": True, "headroom_bytes": 15000000000}],
}


class ErrorBody(BaseModel):
    """Every error: ``detail`` says what to fix; some errors add fields (``suggestions``, ``errors``)."""

    model_config = ConfigDict(extra="allow")

    detail: str = Field(description="what went wrong and what to do about it")


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


class GPUInfo(BaseModel):
    """A catalog GPU."""

    id: str
    name: str
    vendor: str
    memory_bytes: int
    usable_bytes: int
    bf16_tflops: float | None
    bandwidth_gbs: float
    tdp_w: int
    hourly_usd: float | None
    memory_note: str = ""


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
