"""The plan: what a user wants to fine-tune, and how.

One schema serves the CLI (kebab-case flags, ``--plan FILE``), the REST body and the job records.
Field names are the ones the training stack uses (transformers ``TrainingArguments``, PEFT ``LoraConfig``,
``BitsAndBytesConfig``), so a plan reads like the script it stands for.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from ._errors import PlanError

Method = Literal["full", "lora", "qlora"]
DType = Literal["bfloat16", "float16", "float32"]
QuantType = Literal["nf4", "fp4", "int8"]
Optimizer = Literal["adamw_torch", "adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit", "sgd", "adafactor"]
AttnImplementation = Literal["eager", "sdpa", "flash_attention_2"]
Device = Literal["cuda", "cpu"]
Sharding = Literal["ddp", "zero1", "zero2", "zero3"]

METHODS: tuple[str, ...] = get_args(Method)
DTYPES: tuple[str, ...] = get_args(DType)
QUANT_TYPES: tuple[str, ...] = get_args(QuantType)
OPTIMIZERS: tuple[str, ...] = get_args(Optimizer)
ATTN_IMPLEMENTATIONS: tuple[str, ...] = get_args(AttnImplementation)
DEVICES: tuple[str, ...] = get_args(Device)
SHARDINGS: tuple[str, ...] = get_args(Sharding)

MAX_SEQ_LEN = 4 * 1024 * 1024
MAX_BATCH_SIZE = 1 << 20


@dataclass(frozen=True)
class Plan:
    """A fine-tuning plan. Defaults follow the QLoRA recipe (PEFT + bitsandbytes + transformers)."""

    model: str | None = None
    """Hub repo id (``org/name``) or catalog id. Exactly one of ``model`` and ``config`` is given."""
    config: Mapping[str, Any] | None = field(default=None, compare=False, hash=False)
    """An inline Hugging Face ``config.json`` object."""
    method: Method = "qlora"
    dtype: DType = "bfloat16"
    """Dtype of the frozen base weights and of the compute (``bnb_4bit_compute_dtype`` for QLoRA)."""
    mixed_precision: bool = False
    """Full fine-tuning only: fp32 master weights with 16-bit autocast (Trainer ``bf16=True`` on an fp32 load)."""
    quant_type: QuantType = "nf4"
    double_quant: bool = True
    prepare_kbit: bool | None = None
    """Run ``prepare_model_for_kbit_training`` (upcasts non-quantized params to fp32). None: True for qlora."""
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] | Literal["all-linear"] = "all-linear"
    modules_to_save: tuple[str, ...] = ()
    use_dora: bool = False
    optimizer: Optimizer = "adamw_torch"
    batch_size: int = 1
    seq_len: int = 2048
    gradient_checkpointing: bool = True
    attn_implementation: AttnImplementation = "sdpa"
    gpu: str | None = None
    num_gpus: int = 1
    sharding: Sharding = "ddp"
    device: Device = "cuda"
    allow_long_context: bool = False
    """Allow ``seq_len`` beyond the model's ``max_position_embeddings``."""

    def __post_init__(self) -> None:
        _check_choice("method", self.method, METHODS)
        _check_choice("dtype", self.dtype, DTYPES)
        _check_choice("quant_type", self.quant_type, QUANT_TYPES)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("attn_implementation", self.attn_implementation, ATTN_IMPLEMENTATIONS)
        _check_choice("device", self.device, DEVICES)
        _check_choice("sharding", self.sharding, SHARDINGS)
        if (self.model is None) == (self.config is None):
            raise PlanError("give exactly one of 'model' (a Hub or catalog id) and 'config' (a config.json object)")
        _check_int("batch_size", self.batch_size, 1, MAX_BATCH_SIZE)
        _check_int("seq_len", self.seq_len, 1, MAX_SEQ_LEN)
        _check_int("num_gpus", self.num_gpus, 1, 4096)
        _check_int("lora_r", self.lora_r, 1, 65536)
        if not isinstance(self.lora_alpha, int | float) or self.lora_alpha <= 0:
            raise PlanError("lora_alpha must be a positive number")
        if not isinstance(self.lora_dropout, int | float) or not 0.0 <= self.lora_dropout < 1.0:
            raise PlanError("lora_dropout must be in [0, 1)")
        if self.target_modules != "all-linear":
            if isinstance(self.target_modules, str) or not all(isinstance(t, str) and t for t in self.target_modules):
                raise PlanError("target_modules must be 'all-linear' or a list of module names")
            if not self.target_modules:
                raise PlanError("target_modules is empty: name at least one module, or use 'all-linear'")
            object.__setattr__(self, "target_modules", tuple(self.target_modules))
        object.__setattr__(self, "modules_to_save", tuple(self.modules_to_save))
        if self.method == "full" and self.use_dora:
            raise PlanError("use_dora applies to lora and qlora, not to full fine-tuning")
        if self.mixed_precision and self.dtype == "float32":
            raise PlanError("mixed_precision needs a 16-bit dtype (bfloat16 or float16) for the compute")
        if self.model is not None and (not isinstance(self.model, str) or not self.model.strip()):
            raise PlanError("model must be a non-empty Hub id like 'meta-llama/Llama-3.1-8B' or a catalog id")

    @property
    def quantized(self) -> bool:
        return self.method == "qlora"

    @property
    def adapters(self) -> bool:
        return self.method in ("lora", "qlora")

    @property
    def upcast_non_quantized(self) -> bool:
        """Whether ``prepare_model_for_kbit_training`` runs (QLoRA only)."""
        if self.method != "qlora":
            return False
        return True if self.prepare_kbit is None else self.prepare_kbit

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with the same field names (config included when given)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = list(value)
            if f.name == "config" and value is not None:
                value = dict(value)
            out[f.name] = value
        return out

    def replace(self, **changes: Any) -> Plan:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Plan:
        """Build a plan from a JSON object; unknown keys are an error that names them."""
        if not isinstance(data, Mapping):
            raise PlanError("a plan is a JSON object")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise PlanError(f"unknown plan field(s): {', '.join(unknown)}; known fields: {', '.join(sorted(names))}")
        kwargs = dict(data)
        for key in ("target_modules", "modules_to_save"):
            value = kwargs.get(key)
            if isinstance(value, list):
                kwargs[key] = tuple(value)
        try:
            return cls(**kwargs)
        except TypeError as exc:  # pragma: no cover - guarded by the names check
            raise PlanError(str(exc)) from exc

    @classmethod
    def from_json(cls, text: str) -> Plan:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PlanError(f"the plan is not valid JSON: {exc}") from exc
        return cls.from_dict(data)


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise PlanError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PlanError(f"{name} must be an integer; got {value!r}")
    if not low <= value <= high:
        raise PlanError(f"{name} must be between {low} and {high}; got {value}")
