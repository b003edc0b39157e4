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
from estimator import OBJECTIVES, Plan

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


def import_config(
    text: str, fmt: str | None = None, origin: str = "the config", objective: str | None = None
) -> Imported:
    """The plan an axolotl or TRL config stands for (``fmt`` None: told apart by their keys). ``objective``: the TRL
    command the file is for (``trl dpo --config``: dpo); None: axolotl's ``rl:`` / ``reward_model``, or for TRL the
    file's name (``dpo.yaml``), else the objective whose config alone has the file's keys, else sft."""
    data = parse_text(text, origin)
    if fmt is not None and fmt not in IMPORT_FORMATS:
        raise InvalidRequest(f"format {fmt!r} cannot be imported; one of {', '.join(IMPORT_FORMATS)}")
    if objective is not None and objective not in OBJECTIVES:
        raise InvalidRequest(f"objective {objective!r} is not planned; one of {', '.join(OBJECTIVES)}")
    fmt = fmt or detect(data, origin)
    r = _Reader(data, origin)
    if fmt == "axolotl":
        _axolotl(r)
        _axolotl_objective(r, objective)
    else:
        _trl(r)
        _trl_objective(r, objective or _trl_objective_of(data, origin))
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
        zero = ds["zero_optimization"] if isinstance(ds, Mapping) else {}
        params, optimizer = _offload_device(zero.get("offload_param")), _offload_device(zero.get("offload_optimizer"))
        if params and stage == 3:
            r.fields["offload"] = "params"
        elif optimizer:
            r.fields["offload"] = "optimizer"
        if stage == 3 and "nvme" in (params, optimizer):
            r.fields["offload_device"] = "nvme"


def _offload_device(section: Any) -> str | None:
    """Where a DeepSpeed ``offload_optimizer`` / ``offload_param`` section offloads to (cpu or nvme; None: not)."""
    device = section.get("device") if isinstance(section, Mapping) else None
    return device if device in ("cpu", "nvme") else None


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


# keys only one objective's TRL config (or script arguments) has: a file with them is for that objective
TRL_OBJECTIVE_KEYS: dict[str, tuple[str, ...]] = {
    "grpo": ("num_generations", "use_vllm", "vllm_mode", "vllm_gpu_memory_utilization", "reward_funcs",
             "reward_model_name_or_path", "steps_per_generation", "generation_batch_size"),
    "kto": ("desirable_weight", "undesirable_weight"),
    "simpo": ("cpo_alpha", "simpo_gamma"),
    "reward": ("center_rewards_coefficient",),
    "dpo": ("f_divergence_type", "use_weighting", "loss_weights", "ld_alpha", "discopop_tau"),
    "sft": ("packing", "dataset_text_field", "completion_only_loss", "assistant_only_loss", "packing_strategy"),
}  # fmt: skip
TRL_COMMANDS = {"sft": "sft", "dpo": "dpo", "kto": "kto", "reward": "reward", "grpo": "grpo", "orpo": "orpo",
                "simpo": "simpo", "cpo": "simpo"}  # fmt: skip
"""File names (``dpo.yaml``) that say the objective: TRL's commands, and the experimental configs' names."""


def _trl_objective_of(data: Mapping[str, Any], origin: str) -> str:
    """The objective of a TRL file that does not name its command: its file name, else its keys, else sft."""
    stem = re.sub(r"\.(ya?ml|json)$", "", origin.replace("\\", "/").rsplit("/", 1)[-1].lower())
    if stem in TRL_COMMANDS:
        return TRL_COMMANDS[stem]
    found = {o for o, keys in TRL_OBJECTIVE_KEYS.items() if any(k in data for k in keys)}
    if data.get("loss_type") == "simpo":
        found.add("simpo")
    if data.get("lora_task_type") == "SEQ_CLS":
        found.add("reward")
    if "precompute_ref_log_probs" in data and not found & {"kto", "dpo"}:
        found.add("dpo")  # DPO's or KTO's; KTO's files have its weights
    if len(found) > 1:
        raise InvalidRequest(f"{origin} has keys of TRL's {' and '.join(sorted(found))} configs: name the objective "
                             "(the trl command the file is for)")  # fmt: skip
    return found.pop() if found else "sft"


def _trl_objective(r: _Reader, objective: str) -> None:
    """The objective and its fields from a TRL config (``DPOConfig``, ``GRPOConfig``, ...), with TRL's defaults."""
    d = r.data
    if objective == "sft":
        return
    r.fields["objective"] = objective
    r.notes.append(f"objective {objective} (TRL's {_TRL_CONFIG[objective]})")
    if "lora_task_type" in d:
        r.mapped["lora_task_type"] = "objective"
    _dropout_note(r, objective, d.get("disable_dropout"))
    if objective in ("dpo", "kto"):
        r.take("precompute_ref_log_probs", "precompute_ref_log_probs", bool)
    if objective == "simpo":
        if d.get("loss_type", "sigmoid") != "simpo":
            raise InvalidRequest(f"{r.origin}: CPO's loss_type {d.get('loss_type', 'sigmoid')!r} is not planned; "
                                 "SimPO is loss_type: simpo")  # fmt: skip
        r.mapped["loss_type"] = "objective"
        _cpo_alpha(r, d.get("cpo_alpha", 1.0), "cpo_alpha")
    if objective == "grpo":
        r.take("num_generations", "num_generations", int)
        r.take("max_completion_length", "max_completion_length", int)
        r.take("beta", "beta", (int, float))
        _vllm(r, d.get("use_vllm"), d.get("vllm_mode", "colocate"), "use_vllm")
        r.take("vllm_gpu_memory_utilization", "vllm_gpu_memory_utilization", (int, float))
        _generation_batch(r, d)
        if "seq_len" not in r.mapped.values():
            r.fields["seq_len"] = 512
            r.notes.append("grpo: seq_len is the prompt's length, which TRL 1.16's GRPOConfig does not set (no "
                           "max_prompt_length): planned as 512, set it to your prompts' length")  # fmt: skip


_TRL_CONFIG = {"dpo": "DPOConfig", "kto": "KTOConfig", "reward": "RewardConfig", "grpo": "GRPOConfig",
               "orpo": "experimental ORPOConfig", "simpo": "experimental CPOConfig, loss_type simpo"}  # fmt: skip


def _dropout_note(r: _Reader, objective: str, disable: Any) -> None:
    """TRL's disable_dropout (True but for GRPO) is what the plan counts; a file that says otherwise gets a note."""
    default = objective != "grpo"
    if disable is None or bool(disable) is default:
        if disable is not None:
            r.mapped["disable_dropout"] = "lora_dropout"
        return
    r.mapped["disable_dropout"] = "lora_dropout"
    if default:
        r.notes.append(f"disable_dropout false: the plan counts TRL's default for {objective} (dropout off), so "
                       "LoRA's dropout copies are not counted: the estimate errs low")  # fmt: skip
    else:
        r.notes.append("disable_dropout true: the plan counts GRPO's default (dropout on): the estimate errs high")


def _cpo_alpha(r: _Reader, alpha: Any, key: str) -> None:
    if alpha != 0:
        r.notes.append(f"{key} {alpha} (CPOConfig's default 1.0 when unset) adds the chosen answers' NLL to SimPO's "
                       "loss, which the plan (SimPO: cpo_alpha 0) does not count: set it to 0")  # fmt: skip
    if key in r.data:
        r.mapped[key] = "objective"


def _vllm(r: _Reader, use: Any, mode: Any, key: str | None) -> None:
    """``use_vllm`` and ``vllm_mode`` (TRL's default colocate) as the plan's ``vllm_mode``; ``key``: the file's key
    for ``use_vllm`` (None: inside axolotl's ``trl:`` section)."""
    if not use:
        r.fields["vllm_mode"] = "none"
    elif mode in ("colocate", "server"):
        r.fields["vllm_mode"] = mode
    else:
        raise InvalidRequest(f"{r.origin}: vllm_mode {mode!r} is not planned; use colocate or server")
    if key is None:
        return
    r.mapped |= {k: "vllm_mode" for k in (key, "vllm_mode") if k in r.data}


def _generation_batch(r: _Reader, d: Mapping[str, Any]) -> None:
    for key in ("steps_per_generation", "generation_batch_size"):
        if d.get(key) is not None:
            r.notes.append(f"grpo: {key} {d[key]} is not planned: the plan generates batch_size × grad_accum_steps "
                           "completions at once (TRL's default)")  # fmt: skip


def _axolotl_objective(r: _Reader, objective: str | None) -> None:
    """axolotl's ``rl:`` (dpo, ipo, kto, orpo, simpo, grpo, gdpo) or ``reward_model: true``, and their keys."""
    d = r.data
    rl = d.get("rl")
    if d.get("process_reward_model"):
        raise InvalidRequest(f"{r.origin}: process_reward_model (a token-classification model) is not planned")
    if rl is None and d.get("reward_model"):
        rl = "reward"
        r.mapped |= {k: "objective" for k in ("reward_model", "model_type", "num_labels") if k in d}
    elif rl is not None:
        r.mapped["rl"] = "objective"
    if rl in ("ipo", "gdpo"):
        r.notes.append(f"rl {rl} is planned as {'dpo' if rl == 'ipo' else 'grpo'}: the same step, another loss")
        rl = "dpo" if rl == "ipo" else "grpo"
    if rl is not None and rl not in OBJECTIVES:
        raise InvalidRequest(f"{r.origin}: rl {rl!r} is not planned; use dpo, ipo, kto, orpo, simpo, grpo or gdpo, "
                             "or reward_model: true")  # fmt: skip
    if objective is not None and rl is not None and objective != rl:
        raise InvalidRequest(f"{r.origin}: the file says {rl}, not {objective}")
    o = rl or objective or "sft"
    if o == "sft":
        return
    r.fields["objective"] = o
    section = d.get("trl")
    trl: Mapping[str, Any] = section if isinstance(section, Mapping) else {}
    if o == "dpo":
        r.take("precompute_ref_log_probs", "precompute_ref_log_probs", bool)
    if o == "kto" and d.get("precompute_ref_log_probs"):
        r.notes.append("precompute_ref_log_probs: axolotl passes it to DPO only; its KTO holds and runs the "
                       "reference, as planned here")  # fmt: skip
        r.mapped["precompute_ref_log_probs"] = "objective"
    if o == "simpo":
        _cpo_alpha(r, d.get("cpo_alpha", 1.0), "cpo_alpha")
    if o == "grpo":
        for key in ("num_generations", "max_completion_length"):
            if isinstance(trl.get(key), int) and not isinstance(trl[key], bool):
                r.fields[key] = trl[key]
        beta = trl.get("beta", d.get("rl_beta"))
        if isinstance(beta, (int, float)) and not isinstance(beta, bool):
            r.fields["beta"] = beta
            r.mapped["rl_beta" if "beta" not in trl else "trl"] = "beta"
        _vllm(r, trl.get("use_vllm"), trl.get("vllm_mode") or "colocate", None)
        _generation_batch(r, trl)
        if trl:
            r.mapped["trl"] = "num_generations, max_completion_length, beta, vllm_mode"
        vllm = d.get("vllm")
        share = vllm.get("gpu_memory_utilization") if isinstance(vllm, Mapping) else None
        if r.fields.get("vllm_mode") == "colocate" and isinstance(share, (int, float)):
            r.fields["vllm_gpu_memory_utilization"] = share
            r.mapped["vllm"] = "vllm_gpu_memory_utilization"
