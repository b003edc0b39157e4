"""An axolotl YAML or a TRL config (``trl sft --config``, YAML or JSON) read into a plan.

The options memory depends on are mapped onto plan fields, with each tool's own defaults for those the file leaves
out (axolotl: no adapter is full fine-tuning, ``lora_dropout`` 0, double quantization on; TRL: ``use_peft`` off,
``lora_dropout`` 0.05, nested quantization off, gradient checkpointing on, ``max_length`` 1024). Every other key is
accepted and listed as ignored. A value tuneplan cannot plan is a 422 / exit code 2 that says what to change.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from app.errors import InvalidRequest
from estimator import Plan

IMPORT_FORMATS: tuple[str, ...] = ("axolotl", "trl")
MAX_IMPORT_BYTES = 256 * 1024

OPTIMIZERS = {
    "adamw_torch": "adamw_torch", "adamw_torch_fused": "adamw_torch", "adamw_hf": "adamw_torch",
    "adamw_bnb_8bit": "adamw_8bit", "adamw_8bit": "adamw_8bit", "paged_adamw_8bit": "paged_adamw_8bit",
    "paged_adamw_32bit": "paged_adamw_32bit", "sgd": "sgd", "adafactor": "adafactor",
}  # fmt: skip
_DEFAULT_TARGETS = (
    "{key} not set: PEFT adapts its default modules for the model (q_proj, v_proj on Llama-style "
    "models), planned as q_proj, v_proj"
)
DTYPES = {"bfloat16": "bfloat16", "bf16": "bfloat16", "float16": "float16", "fp16": "float16",
          "float32": "float32", "fp32": "float32", "auto": "bfloat16"}  # fmt: skip


@dataclass
class Imported:
    """A plan read from a training config: which keys made it, which were ignored, and notes."""

    format: str
    plan: Plan
    mapped: dict[str, str] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        plan = self.plan.to_dict()
        return {"format": self.format, "plan": plan, "mapped": self.mapped, "ignored": self.ignored,
                "notes": self.notes}  # fmt: skip


class _Reader:
    """The file's keys, taken one at a time: what is taken is mapped, the rest is ignored at the end."""

    def __init__(self, data: Mapping[str, Any], origin: str) -> None:
        self.data = data
        self.origin = origin
        self.fields: dict[str, Any] = {}
        self.mapped: dict[str, str] = {}
        self.notes: list[str] = []

    def has(self, key: str) -> bool:
        return key in self.data and self.data[key] is not None

    def take(
        self, key: str, to: str, kind: type | tuple[type, ...], convert: Callable[[Any], Any] = lambda v: v
    ) -> None:
        """Map ``key`` onto plan field ``to`` when present, checking its type."""
        if not self.has(key):
            return
        value = self.data[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _kinds(kind)):
            raise InvalidRequest(f"{self.origin}: {key} must be {_kind_text(kind)}; got {value!r}")
        self.fields[to] = convert(value)
        self.mapped[key] = to

    def choose(self, key: str, to: str, table: Mapping[str, str]) -> None:
        if not self.has(key):
            return
        value = self.data[key]
        if not isinstance(value, str) or value not in table:
            raise InvalidRequest(f"{self.origin}: {key} {value!r} is not one tuneplan plans; use one of "
                                 + ", ".join(sorted(table)))  # fmt: skip
        self.fields[to] = table[value]
        self.mapped[key] = to

    def ignored(self) -> list[str]:
        return sorted(k for k in self.data if k not in self.mapped)


def _kinds(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _kind_text(kind: type | tuple[type, ...]) -> str:
    names = {bool: "true or false", int: "an integer", float: "a number", str: "text", list: "a list"}
    return " or ".join(names.get(k, k.__name__) for k in _kinds(kind))


def parse_text(text: str, origin: str) -> dict[str, Any]:
    """The file as a mapping (YAML, which JSON is a part of); a clear error for anything else."""
    if len(text.encode()) > MAX_IMPORT_BYTES:
        raise InvalidRequest(f"{origin} is over {MAX_IMPORT_BYTES // 1024} KiB; send the training config only")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidRequest(f"{origin} is not valid YAML or JSON: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise InvalidRequest(f"{origin} must be a mapping of option names to values (an axolotl or TRL config)")
    return data


def detect(data: Mapping[str, Any], origin: str) -> str:
    if "base_model" in data:
        return "axolotl"
    if any(k in data for k in ("model_name_or_path", "per_device_train_batch_size", "use_peft")):
        return "trl"
    raise InvalidRequest(
        f"{origin} is neither an axolotl config (it has no base_model) nor a TRL config (no model_name_or_path): "
        "give one of those, or name the format"
    )


def import_config(text: str, fmt: str | None = None, origin: str = "the config") -> Imported:
    """The plan an axolotl or TRL config stands for (``fmt`` None: told apart by their keys)."""
    data = parse_text(text, origin)
    if fmt is not None and fmt not in IMPORT_FORMATS:
        raise InvalidRequest(f"format {fmt!r} cannot be imported; one of {', '.join(IMPORT_FORMATS)}")
    fmt = fmt or detect(data, origin)
    r = _Reader(data, origin)
    if fmt == "axolotl":
        _axolotl(r)
    else:
        _trl(r)
    plan = Plan.from_dict(r.fields)
    return Imported(fmt, plan, r.mapped, r.ignored(), r.notes)


def _lora(r: _Reader, dropout_default: float, prefix: str = "lora_") -> None:
    r.take(f"{prefix}r", "lora_r", int)
    r.take(f"{prefix}alpha", "lora_alpha", (int, float))
    r.take(f"{prefix}dropout", "lora_dropout", (int, float))
    r.fields.setdefault("lora_dropout", dropout_default)
    r.take(f"{prefix}modules_to_save", "modules_to_save", list)


def _targets(value: Any, r: _Reader, key: str) -> Any:
    if value == "all-linear" or value == ["all-linear"]:
        return "all-linear"
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise InvalidRequest(f"{r.origin}: {key} must be 'all-linear' or a list of module names; got {value!r}")


def _axolotl(r: _Reader) -> None:
    r.take("base_model", "model", str)
    adapter = r.data.get("adapter") or None
    four, eight = bool(r.data.get("load_in_4bit")), bool(r.data.get("load_in_8bit"))
    if adapter not in (None, "lora", "qlora"):
        raise InvalidRequest(f"{r.origin}: adapter {adapter!r} is not planned; use lora, qlora, or none (full)")
    if adapter is None and (four or eight):
        raise InvalidRequest(f"{r.origin}: load_in_4bit / load_in_8bit need an adapter (lora or qlora)")
    r.fields["method"] = "full" if adapter is None else "qlora" if (four or eight) else "lora"
    r.mapped |= {k: "method" for k in ("adapter", "load_in_4bit", "load_in_8bit") if k in r.data}
    if eight:
        r.fields["quant_type"] = "int8"
    bnb = r.data.get("bnb_config_kwargs") or {}
    if four and isinstance(bnb, Mapping):
        r.fields["quant_type"] = bnb.get("bnb_4bit_quant_type", "nf4")
        r.fields["double_quant"] = bool(bnb.get("bnb_4bit_use_double_quant", True))
        r.mapped["bnb_config_kwargs"] = "quant_type, double_quant"
    if adapter is not None:
        _lora(r, 0.0)
        if r.data.get("lora_target_linear"):
            r.fields["target_modules"] = "all-linear"
            r.mapped["lora_target_linear"] = "target_modules"
        elif r.has("lora_target_modules"):
            r.fields["target_modules"] = _targets(r.data["lora_target_modules"], r, "lora_target_modules")
            r.mapped["lora_target_modules"] = "target_modules"
        else:
            r.fields["target_modules"] = ["q_proj", "v_proj"]
            r.notes.append(_DEFAULT_TARGETS.format(key="lora_target_modules / lora_target_linear"))
        r.take("peft_use_dora", "use_dora", bool)
    r.take("sequence_len", "seq_len", int)
    r.take("micro_batch_size", "batch_size", int)
    r.take("gradient_accumulation_steps", "grad_accum_steps", int)
    r.take("num_epochs", "epochs", (int, float))
    r.choose("optimizer", "optimizer", OPTIMIZERS)
    _axolotl_precision(r, eight)
    _axolotl_runtime(r)


def _axolotl_precision(r: _Reader, eight: bool) -> None:
    """axolotl's dtype rule: bf16 or bfloat16 → bf16 weights; fp16, float16 or 8-bit → fp16; else fp32."""
    d = r.data
    # axolotl's default bf16 is "auto": bf16 where the GPU has it, unless fp16 is asked for
    bf16 = d.get("bf16", False if d.get("fp16") or d.get("float16") else "auto")
    amp = bf16 in (True, "auto") or bool(d.get("fp16"))
    if bf16 in (True, "auto") or d.get("bfloat16"):
        r.fields["dtype"] = "bfloat16"
    elif d.get("fp16") or d.get("float16") or eight:
        r.fields["dtype"] = "float16"
    else:
        r.fields["dtype"] = "float32"
    r.mapped |= {k: "dtype" for k in ("bf16", "fp16", "bfloat16", "float16", "float32") if k in d}
    if amp:
        r.notes.append("bf16/fp16 (autocast) is planned as weights and compute in that dtype; autocast's own copies "
                       "of activations are not counted")  # fmt: skip


def _axolotl_runtime(r: _Reader) -> None:
    d = r.data
    gc = d.get("gradient_checkpointing", False)
    if gc in ("offload", "offload_disk"):
        r.notes.append(f"gradient_checkpointing {gc!r}: planned as checkpointing on GPU (the estimate errs high)")
    r.fields["gradient_checkpointing"] = bool(gc)
    r.mapped["gradient_checkpointing"] = "gradient_checkpointing"
    for key, impl in (
        ("flash_attention", "flash_attention_2"),
        ("sdp_attention", "sdpa"),
        ("eager_attention", "eager"),
    ):
        if d.get(key):
            r.fields["attn_implementation"] = impl
            r.mapped[key] = "attn_implementation"
    if isinstance(d.get("max_steps"), int) and not isinstance(d["max_steps"], bool):
        f = r.fields
        per_step = f.get("batch_size", 1) * f.get("seq_len", 512) * f.get("grad_accum_steps", 1)
        f["train_tokens"] = d["max_steps"] * per_step
        r.mapped["max_steps"] = "train_tokens"
    r.fields.setdefault("seq_len", 512)  # axolotl's default sequence_len
    _deepspeed(r, d.get("deepspeed"))
    _fsdp(r, d.get("fsdp"), d.get("fsdp_config"))


def _fsdp(r: _Reader, fsdp: Any, config: Any) -> None:
    """axolotl's FSDP: ``fsdp_config`` (FSDP2 keys, with or without the ``fsdp_`` prefix) or the older ``fsdp``
    word list (``full_shard``, ``shard_grad_op``, ``hybrid_shard``, ``offload``)."""
    if not fsdp and not config:
        return
    cfg: Mapping[str, Any] = config if isinstance(config, Mapping) else {}
    words = [str(w).lower() for w in (fsdp if isinstance(fsdp, list) else str(fsdp or "").split())]

    def get(key: str) -> Any:
        return cfg.get(key, cfg.get("fsdp_" + key))

    strategy = str(get("sharding_strategy") or "").lower()
    if r.data.get("dp_replicate_size", 1) not in (1, None) and isinstance(r.data.get("dp_shard_size"), int):
        strategy = "hybrid_shard"
        r.fields["shard_group_size"] = r.data["dp_shard_size"]
        r.fields["num_gpus"] = r.data["dp_shard_size"] * int(r.data["dp_replicate_size"])
        r.mapped |= {"dp_shard_size": "shard_group_size", "dp_replicate_size": "num_gpus"}
    r.fields["sharding"] = "fsdp"
    r.mapped["fsdp_config" if cfg else "fsdp"] = "sharding"
    if get("reshard_after_forward") is False or "shard_grad_op" in (strategy, *words):
        r.fields["fsdp_strategy"] = "shard_grad_op"
    elif "hybrid_shard" in (strategy, *words):
        r.fields["fsdp_strategy"] = "hybrid_shard"
    if get("offload_params") or "offload" in words:
        r.fields["offload"] = "params"
    if "num_gpus" not in r.fields:
        r.notes.append("FSDP: the config does not say how many GPUs; set num_gpus (planned as 1 until then)")


def _deepspeed(r: _Reader, ds: Any) -> None:
    stage: int | None = None
    if isinstance(ds, Mapping) and isinstance(ds.get("zero_optimization"), Mapping):
        stage = ds["zero_optimization"].get("stage")
    elif isinstance(ds, str) and (m := re.search(r"zero([0-3])", ds)):
        stage = int(m.group(1))
        r.notes.append(f"ZeRO stage {stage} read from the DeepSpeed file's name {ds!r} (the file is not opened)")
    if stage in (1, 2, 3):
        r.fields["sharding"] = f"zero{stage}"
        r.mapped["deepspeed"] = "sharding"


def _trl(r: _Reader) -> None:
    d = r.data
    r.take("model_name_or_path", "model", str)
    four, eight = bool(d.get("load_in_4bit")), bool(d.get("load_in_8bit"))
    peft = bool(d.get("use_peft"))
    if (four or eight) and not peft:
        raise InvalidRequest(f"{r.origin}: load_in_4bit / load_in_8bit train only with use_peft: true")
    r.fields["method"] = "qlora" if four or eight else "lora" if peft else "full"
    r.mapped |= {k: "method" for k in ("use_peft", "load_in_4bit", "load_in_8bit") if k in d}
    if eight:
        r.fields["quant_type"] = "int8"
    elif four:
        r.choose("bnb_4bit_quant_type", "quant_type", {"nf4": "nf4", "fp4": "fp4"})
        r.take("use_bnb_nested_quant", "double_quant", bool)
        r.choose("bnb_4bit_quant_storage", "quant_storage", {k: k for k in ("uint8", "bfloat16", "float16", "float32")})
        r.fields.setdefault("double_quant", False)  # TRL's default
    if peft:
        r.fields |= {"lora_r": 16, "lora_alpha": 32}  # TRL's ModelConfig defaults
        _lora(r, 0.05)
        targets = d.get("lora_target_modules")
        r.fields["target_modules"] = _targets(targets, r, "lora_target_modules") if targets else ["q_proj", "v_proj"]
        r.mapped["lora_target_modules"] = "target_modules"
        if not targets:
            r.notes.append(_DEFAULT_TARGETS.format(key="lora_target_modules"))
        r.take("use_dora", "use_dora", bool)
    _trl_training(r)


def _trl_training(r: _Reader) -> None:
    d = r.data
    r.take("per_device_train_batch_size", "batch_size", int)
    r.take("gradient_accumulation_steps", "grad_accum_steps", int)
    length = "max_length" if r.has("max_length") else "max_seq_length"
    r.take(length, "seq_len", int)
    r.fields.setdefault("seq_len", 1024)  # SFTConfig's default max_length
    gc_key = "activation_checkpointing" if r.has("activation_checkpointing") else "gradient_checkpointing"
    r.take(gc_key, "gradient_checkpointing", bool)
    r.fields.setdefault("gradient_checkpointing", True)  # TRL's default
    r.choose("optim", "optimizer", OPTIMIZERS)
    r.choose("attn_implementation", "attn_implementation",
             {"eager": "eager", "sdpa": "sdpa", "flash_attention_2": "flash_attention_2"})  # fmt: skip
    r.take("num_train_epochs", "epochs", (int, float))
    key = "dtype" if r.has("dtype") else "torch_dtype"
    r.choose(key, "dtype", DTYPES)
    if d.get(key) == "auto":
        r.notes.append(f"{key} auto loads the checkpoint's dtype: planned as bfloat16")
    r.fields.setdefault("dtype", "float32")  # ModelConfig's default
    bf16 = d.get("bf16")
    amp = "bf16" if (not d.get("fp16") if bf16 is None else bf16) else "fp16" if d.get("fp16") else None
    if amp and r.fields["method"] == "full" and r.fields["dtype"] == "float32":
        r.fields |= {"dtype": "bfloat16" if amp == "bf16" else "float16", "mixed_precision": True}
        r.mapped[amp if amp in d else "dtype"] = "mixed_precision"
    elif amp:
        r.mapped.setdefault(amp, "dtype") if amp in d else None
        r.notes.append(f"{amp} autocast (TRL's default unless bf16: false) over {r.fields['dtype']} weights is "
                       f"planned in {r.fields['dtype']} without autocast's copies")  # fmt: skip
    if isinstance(d.get("max_steps"), int) and not isinstance(d["max_steps"], bool) and d["max_steps"] > 0:
        f = r.fields
        r.fields["train_tokens"] = d["max_steps"] * f.get("batch_size", 8) * f["seq_len"] * f.get(
            "grad_accum_steps", 1)  # fmt: skip
        r.mapped["max_steps"] = "train_tokens"
    r.fields.setdefault("batch_size", 8)  # TrainingArguments' default per_device_train_batch_size
