"""A plan as ready-to-run configuration for the training stack: TRL (a ``trl <command> --config`` YAML, or a Python
script with the objective's config + ``LoraConfig`` + ``BitsAndBytesConfig``), axolotl YAML, an accelerate config and a
DeepSpeed JSON.

The plan's ``objective`` picks the trainer, as TRL 1.16 names it: ``sft`` (``trl sft``, ``SFTConfig``), ``dpo``
(``trl dpo``, ``DPOConfig``), ``kto`` (``trl kto``, ``KTOConfig``), ``reward`` (``trl reward``, ``RewardConfig``: a
sequence-classification model, PEFT's ``SEQ_CLS`` task), ``grpo`` (``trl grpo``, ``GRPOConfig``), and the experimental
``orpo`` (``trl.experimental.orpo.ORPOConfig``) and ``simpo`` (``trl.experimental.cpo.CPOConfig`` with
``loss_type="simpo"``, ``cpo_alpha=0``), which have no ``trl`` command: their YAML holds the same flat keys for
``TrlParser`` and says so. axolotl says the objective with ``rl:`` (or ``reward_model: true``).

Each export sets what the plan's memory depends on, as the plan means it: the model loaded in ``dtype`` with no
autocast (tuneplan's LoRA, QLoRA and full plans train in that dtype; only ``mixed_precision`` loads fp32 and
autocasts), the quantization, the adapters, batch, sequence, accumulation, checkpointing, optimizer, attention and
the GPUs. Options memory does not depend on (learning rate, dataset, output directory) get ordinary defaults or a
placeholder to fill in. What a format cannot express is said in ``notes`` (and as comments in YAML and Python).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import yaml

from estimator import Plan, deepspeed_config

FORMATS: tuple[str, ...] = ("trl", "trl-python", "axolotl", "accelerate", "deepspeed")
LEARNING_RATE = 2e-4
"""SFT's learning rate; the other objectives get their TRL config's own default (``TRL_OBJECTIVES``)."""
OUTPUT_DIR = "outputs"
DATASET = "your-org/your-dataset"

AXOLOTL_OPTIM = {"adamw_8bit": "adamw_bnb_8bit"}
AXOLOTL_ATTENTION = {"sdpa": "sdp_attention", "flash_attention_2": "flash_attention", "eager": "eager_attention"}


@dataclass(frozen=True)
class TrlObjective:
    """How TRL 1.16 runs one objective: its CLI command (None: none exists), config and trainer classes and the module
    they come from, the config's default learning rate, and the dataset the trainer reads."""

    command: str | None
    config: str
    trainer: str
    module: str
    learning_rate: float
    dataset: str


_PAIRS = "a preference dataset: prompt, chosen and rejected columns"
TRL_OBJECTIVES: dict[str, TrlObjective] = {
    "sft": TrlObjective("sft", "SFTConfig", "SFTTrainer", "trl", LEARNING_RATE, "a text or messages column"),
    "dpo": TrlObjective("dpo", "DPOConfig", "DPOTrainer", "trl", 1e-6, _PAIRS),
    "kto": TrlObjective("kto", "KTOConfig", "KTOTrainer", "trl", 1e-6,
                        "an unpaired preference dataset: prompt, completion and a boolean label"),
    "reward": TrlObjective("reward", "RewardConfig", "RewardTrainer", "trl", 1e-4,
                           "a preference dataset: chosen and rejected columns (and an optional prompt)"),
    "grpo": TrlObjective("grpo", "GRPOConfig", "GRPOTrainer", "trl", 1e-6,
                         "a prompt-only dataset: a prompt column (the plan's seq_len tokens at most)"),
    "orpo": TrlObjective(None, "ORPOConfig", "ORPOTrainer", "trl.experimental.orpo", 1e-6, _PAIRS),
    "simpo": TrlObjective(None, "CPOConfig", "CPOTrainer", "trl.experimental.cpo", 1e-6, _PAIRS),
}  # fmt: skip
GRPO_REWARD = "think_format_reward"
"""A reward function TRL's ``trl grpo`` script knows by name (``reward_funcs``): a placeholder to replace; a reward
function takes no GPU memory (a reward model would, and is not planned)."""

AXOLOTL_DATASETS = {"sft": "alpaca", "dpo": "chatml.intel", "simpo": "chatml.intel", "orpo": "chat_template.argilla",
                    "kto": "llama3.ultra", "reward": "bradley_terry.chat_template",
                    "grpo": "rewards.prompt_transform"}  # fmt: skip
"""axolotl's dataset ``type`` per objective, from its RLHF and reward-modelling guides (placeholders to replace)."""


@dataclass(frozen=True)
class Exported:
    """One exported file: its text, media type and a file name, and what the format could not express."""

    format: str
    text: str
    media_type: str
    filename: str
    notes: tuple[str, ...]


def export_plan(plan: Plan, fmt: str, model_id: str | None) -> Exported:
    """``plan`` in ``fmt`` (one of ``FORMATS``); ``model_id``: the Hub id to load (None: a placeholder)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    model = model_id or "path/or/hub-id-of-the-model"
    notes = list(_notes(plan, fmt, model_id)) + _objective_notes(plan, fmt)
    if fmt == "trl":
        name = TRL_OBJECTIVES[plan.objective].command or plan.objective
        return _yaml(fmt, trl_config(plan, model), f"{name}.yaml", notes)
    if fmt == "trl-python":
        return Exported(fmt, trl_python(plan, model, notes), "text/x-python", "train.py", tuple(notes))
    if fmt == "axolotl":
        return _yaml(fmt, axolotl_config(plan, model), "axolotl.yaml", notes)
    if fmt == "accelerate":
        return _yaml(fmt, accelerate_config(plan), "accelerate.yaml", notes)
    text = json.dumps(deepspeed_config(plan), indent=2) + "\n"
    return Exported(fmt, text, "application/json", "ds_config.json", tuple(notes))


def _yaml(fmt: str, data: dict[str, Any], filename: str, notes: list[str]) -> Exported:
    head = "".join(f"# {n}\n" for n in [f"tuneplan plan exported for {fmt}", *notes])
    body = yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
    return Exported(fmt, head + body, "application/yaml", filename, tuple(notes))


def _notes(plan: Plan, fmt: str, model_id: str | None) -> list[str]:
    out = []
    if model_id is None:
        out.append("the plan names its model by an inline config.json: set the model path or Hub id")
    prepares = fmt == "axolotl" or plan.objective in ("sft", "orpo", "simpo")
    if plan.method == "qlora" and plan.prepare_kbit is False and fmt in ("trl", "trl-python", "axolotl") and prepares:
        out.append("prepare_kbit false: these trainers always run prepare_model_for_kbit_training on a quantized "
                   "model (the fp32 upcast the plan leaves out)")  # fmt: skip
    if fmt == "axolotl" and plan.mixed_precision:
        out.append("mixed_precision: axolotl's bf16/fp16 switch also loads the weights in 16 bits; the plan's fp32 "
                   "master weights have no axolotl option")  # fmt: skip
    if fmt in ("accelerate", "deepspeed") and plan.sharding != "ddp" and plan.dtype != "float32":
        out.append(f"DeepSpeed's {plan.dtype} mode keeps fp32 master weights of what trains in the optimizer")
    if fmt in ("trl", "trl-python") and (plan.num_gpus > 1 or plan.sharding != "ddp"):
        out.append(f"{plan.num_gpus} GPUs, {plan.sharding}: launch with accelerate launch --config_file "
                   "accelerate.yaml (tuneplan export --format accelerate)")  # fmt: skip
    if plan.sharding == "ddp" and fmt == "deepspeed":
        out.append("the plan shards nothing (ddp): ZeRO stage 0")
    return out


def _objective_notes(plan: Plan, fmt: str) -> list[str]:
    """What the objective needs said in ``fmt``: how to run it, and what the format cannot express (nothing for SFT,
    whose exports are as they always were)."""
    o = plan.objective
    if o == "sft":
        return []
    t = TRL_OBJECTIVES[o]
    out = []
    if fmt in ("accelerate", "deepspeed"):
        out.append(f"objective {o}: this launcher config is the same for every objective; the trainer's config sets "
                   "it (tuneplan export --format trl, trl-python or axolotl)")  # fmt: skip
    if fmt == "trl" and t.command:
        out.append(f"objective {o}: run with trl {t.command} --config {t.command}.yaml (TRL's {t.config})")
    elif fmt == "trl":
        out.append(f"objective {o}: TRL 1.16 has no 'trl {o}' command; these are {t.module}.{t.config}'s keys, read "
                   f"with TrlParser((ScriptArguments, {t.config}, ModelConfig)); or run the script of tuneplan "
                   "export --format trl-python")  # fmt: skip
    if fmt in ("trl", "trl-python", "axolotl"):
        out.append(f"objective {o}: the trainer reads {t.dataset}")
    if fmt in ("trl", "trl-python") and plan.method == "qlora" and plan.upcast_non_quantized and o in (
            "dpo", "kto", "grpo", "reward"):  # fmt: skip
        out.append(f"TRL's {t.trainer} does not run prepare_model_for_kbit_training (it casts the adapters to bf16): "
                   "the plan counts that fp32 upcast, so it errs high for this run; set prepare_kbit false to plan "
                   "the run as exported")  # fmt: skip
    if fmt in ("trl", "trl-python") and o in ("orpo", "simpo") and plan.num_gpus > 1:
        out.append(f"{t.trainer} loads the model with device_map 'auto' (all visible GPUs in each process) unless "
                   "model_init_kwargs names one: with several processes give each its own GPU (device_map {'': "
                   "local rank})")  # fmt: skip
    if o == "grpo":
        out += _grpo_notes(plan, fmt)
    if fmt == "axolotl":
        out += _axolotl_objective_notes(plan)
    return out


def _grpo_notes(plan: Plan, fmt: str) -> list[str]:
    out = []
    if fmt in ("trl", "trl-python"):
        out.append(f"grpo: seq_len {plan.seq_len} is the prompt's length: TRL 1.16's GRPOConfig has no "
                   "max_prompt_length, so keep the dataset's prompts within it")  # fmt: skip
        out.append(f"grpo: reward_funcs {GRPO_REWARD} is a placeholder for your reward functions (a reward model "
                   "would add its own memory, which the plan does not count)")  # fmt: skip
    if plan.vllm_mode == "server" and fmt != "deepspeed":
        out.append("grpo: vllm_mode server generates on other GPUs: start trl vllm-serve --model <the model> there "
                   "first; this config's GPUs train only")  # fmt: skip
    return out


def _axolotl_objective_notes(plan: Plan) -> list[str]:
    o = plan.objective
    out = []
    if o == "kto" and plan.precompute_ref_log_probs:
        out.append("kto: axolotl passes precompute_ref_log_probs to DPO only: its KTO holds and runs the reference, "
                   "which this plan leaves out (plan it with precompute_ref_log_probs false)")  # fmt: skip
    if o == "grpo":
        out.append("grpo: axolotl neither truncates nor filters prompts by sequence_len (the plan's prompt length): "
                   "keep the dataset's prompts within it")  # fmt: skip
        out.append("grpo: trl.reward_funcs rewards.reward_func and the dataset type rewards.prompt_transform are "
                   "placeholders for your rewards.py, as axolotl's GRPO guide writes it")  # fmt: skip
        if plan.num_generations < 2:
            out.append("grpo: axolotl refuses num_generations below 2")
    if plan.sharding == "fsdp" and plan.num_gpus > 1 and plan.quantized and o in ("dpo", "kto", "orpo"):
        out.append(f"axolotl refuses FSDP2 with a 4/8-bit base for rl {o}: use DeepSpeed (sharding zero*)")
    out.append("axolotl's rl keys are held to its config schema (axolotl.utils.schemas) as read from its source; "
               "axolotl itself was not run on this file")  # fmt: skip
    return out


def _dtype_flags(plan: Plan) -> tuple[str, bool, bool]:
    """(dtype the weights load in, bf16 autocast, fp16 autocast): autocast only for mixed precision."""
    if plan.mixed_precision:
        return "float32", plan.dtype == "bfloat16", plan.dtype == "float16"
    return plan.dtype, False, False


def _targets(plan: Plan) -> str | list[str]:
    return plan.target_modules if isinstance(plan.target_modules, str) else list(plan.target_modules)


def _length(plan: Plan) -> dict[str, Any]:
    """Epochs, or the steps of the plan's token budget (one GPU's share of it per step)."""
    if plan.train_tokens:
        per_step = plan.batch_size * plan.seq_len * plan.grad_accum_steps * plan.num_gpus
        return {"max_steps": -(-plan.train_tokens // per_step)}
    return {"num_train_epochs": plan.epochs}


def trl_config(plan: Plan, model: str) -> dict[str, Any]:
    """Flat keys of ``trl <command> --config``: TRL's ``ModelConfig``, the objective's config (``SFTConfig``,
    ``DPOConfig``, ...) and ``ScriptArguments`` (GRPO's ``GRPOScriptArguments``)."""
    dtype, bf16, fp16 = _dtype_flags(plan)
    out: dict[str, Any] = {"model_name_or_path": model, "dtype": dtype, "attn_implementation": plan.attn_implementation}
    if plan.adapters:
        out |= {"use_peft": True, "lora_r": plan.lora_r, "lora_alpha": plan.lora_alpha,
                "lora_dropout": plan.lora_dropout, "lora_target_modules": _targets(plan),
                "use_dora": plan.use_dora}  # fmt: skip
        if plan.modules_to_save:
            out["lora_modules_to_save"] = list(plan.modules_to_save)
        if plan.objective == "reward":
            out["lora_task_type"] = "SEQ_CLS"  # the score head, kept trainable by PEFT (modules_to_save)
    if plan.quantized and plan.quant_type == "int8":
        out["load_in_8bit"] = True
    elif plan.quantized:
        out |= {"load_in_4bit": True, "bnb_4bit_quant_type": plan.quant_type, "use_bnb_nested_quant": plan.double_quant}
        if plan.quant_storage != "uint8":
            out["bnb_4bit_quant_storage"] = plan.quant_storage
    out |= {"dataset_name": DATASET, "output_dir": OUTPUT_DIR, "per_device_train_batch_size": plan.batch_size,
            "gradient_accumulation_steps": plan.grad_accum_steps, **_trl_objective(plan),
            "activation_checkpointing": plan.gradient_checkpointing,
            "activation_checkpointing_kwargs": {"use_reentrant": False}, "optim": plan.optimizer,
            "learning_rate": TRL_OBJECTIVES[plan.objective].learning_rate, "bf16": bf16, "fp16": fp16,
            **_length(plan)}  # fmt: skip
    return out


def _trl_objective(plan: Plan) -> dict[str, Any]:
    """The objective's own keys in its TRL config: the row length (``max_length``: prompt + completion) or, for
    GRPO, the generation (TRL 1.16's GRPOConfig has no prompt length), and what holds a reference model."""
    o = plan.objective
    if o == "sft":
        return {"max_length": plan.seq_len, "packing": False}
    if o in ("dpo", "kto"):
        return {"max_length": plan.seq_len, "precompute_ref_log_probs": plan.precompute_ref_log_probs}
    if o == "simpo":
        return {"max_length": plan.seq_len, "loss_type": "simpo", "cpo_alpha": 0.0}
    if o in ("orpo", "reward"):
        return {"max_length": plan.seq_len}
    out: dict[str, Any] = {"reward_funcs": [GRPO_REWARD], "num_generations": plan.num_generations,
                           "max_completion_length": plan.max_completion_length, "beta": plan.beta,
                           "use_vllm": plan.vllm_mode != "none"}  # fmt: skip
    if plan.vllm_mode != "none":
        out["vllm_mode"] = plan.vllm_mode
    if plan.vllm_mode == "colocate":
        out["vllm_gpu_memory_utilization"] = plan.vllm_gpu_memory_utilization
    return out


def trl_python(plan: Plan, model: str, notes: list[str]) -> str:
    """A script: ``BitsAndBytesConfig`` + ``LoraConfig`` + the objective's config built at import, training in
    ``main()``."""
    t = TRL_OBJECTIVES[plan.objective]
    dtype = _dtype_flags(plan)[0]
    c = trl_config(plan, model)
    keys = (
        "output_dir",
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
        *_trl_objective(plan),
        "activation_checkpointing",
        "activation_checkpointing_kwargs",
        "optim",
        "learning_rate",
        "bf16",
        "fp16",
    )
    args = {k: c[k] for k in keys if k != "reward_funcs"} | _length(plan)  # fmt: skip
    lines = [f'"""Fine-tune {model} as tuneplan planned it; run: python train.py (set DATASET first)."""', ""]
    lines += [f"# {n}" for n in notes] + ["import torch", "from datasets import load_dataset"]
    lines += ["from peft import LoraConfig"] if plan.adapters else []
    lines += ["from transformers import BitsAndBytesConfig"] if plan.quantized else []
    lines += [f"from {t.module} import {t.config}, {t.trainer}"]
    lines += [f"from trl.rewards import {GRPO_REWARD}"] if plan.objective == "grpo" else []
    lines += ["", f"MODEL = {model!r}", f"DATASET = {DATASET!r}", ""]
    init = [f'"dtype": torch.{dtype}', f'"attn_implementation": {plan.attn_implementation!r}']
    if plan.quantized:
        lines.append(f"bnb_config = BitsAndBytesConfig({_bnb_args(plan)})")
        init.append('"quantization_config": bnb_config')
    lines.append(f"peft_config = {_lora_python(plan)}")
    lines.append(f"training_args = {t.config}(")
    lines += [f"    {k}={v!r}," for k, v in args.items()] + [f"    model_init_kwargs={{{', '.join(init)}}},", ")"]
    rewards = f"reward_funcs=[{GRPO_REWARD}], " if plan.objective == "grpo" else ""
    lines += ["", "", "def main() -> None:", "    dataset = load_dataset(DATASET, split='train')",
              f"    trainer = {t.trainer}(",
              f"        model=MODEL, {rewards}args=training_args, train_dataset=dataset, peft_config=peft_config",
              "    )", "    trainer.train()", "", "", 'if __name__ == "__main__":', "    main()", ""]  # fmt: skip
    return "\n".join(lines)


def _bnb_args(plan: Plan) -> str:
    if plan.quant_type == "int8":
        return "load_in_8bit=True"
    return (f"load_in_4bit=True, bnb_4bit_quant_type={plan.quant_type!r}, bnb_4bit_use_double_quant="
            f"{plan.double_quant}, bnb_4bit_compute_dtype=torch.{plan.dtype}, "
            f"bnb_4bit_quant_storage=torch.{plan.quant_storage}")  # fmt: skip


def _lora_python(plan: Plan) -> str:
    if not plan.adapters:
        return "None  # full fine-tuning: every weight trains"
    saved = f", modules_to_save={list(plan.modules_to_save)!r}" if plan.modules_to_save else ""
    task = "SEQ_CLS" if plan.objective == "reward" else "CAUSAL_LM"  # reward: the score head trains (modules_to_save)
    return (f"LoraConfig(r={plan.lora_r}, lora_alpha={plan.lora_alpha!r}, lora_dropout={plan.lora_dropout!r}, "
            f"target_modules={_targets(plan)!r}, use_dora={plan.use_dora}, bias='none', task_type={task!r}"
            f"{saved})")  # fmt: skip


def axolotl_config(plan: Plan, model: str) -> dict[str, Any]:
    """axolotl's YAML keys: non-AMP ``bfloat16``/``float16`` load the weights in 16 bits without autocast; the
    objective as ``rl:`` (or ``reward_model: true``) with its keys (``_axolotl_objective``)."""
    out: dict[str, Any] = {"base_model": model} | _axolotl_objective(plan)
    if plan.adapters:
        out["adapter"] = "qlora" if plan.quantized and plan.quant_type != "int8" else "lora"
        if plan.quantized and plan.quant_type == "int8":
            out["load_in_8bit"] = True
        elif plan.quantized:
            out["load_in_4bit"] = True
            out["bnb_config_kwargs"] = {"bnb_4bit_quant_type": plan.quant_type,
                                        "bnb_4bit_use_double_quant": plan.double_quant}  # fmt: skip
        out |= {"lora_r": plan.lora_r, "lora_alpha": plan.lora_alpha, "lora_dropout": plan.lora_dropout}
        if plan.target_modules == "all-linear":
            out["lora_target_linear"] = True
        else:
            out["lora_target_modules"] = list(plan.target_modules)
        if plan.modules_to_save:
            out["lora_modules_to_save"] = list(plan.modules_to_save)
        if plan.use_dora:
            out["peft_use_dora"] = True
    amp = {"bfloat16": "bf16", "float16": "fp16"}
    if plan.mixed_precision:
        out[amp[plan.dtype]] = True
    else:
        out["bf16"] = False
        if plan.dtype != "float32":
            out[plan.dtype] = True  # bfloat16: true / float16: true (axolotl's non-AMP switches)
    epochs = {"num_epochs": plan.epochs} if not plan.train_tokens else {"max_steps": _length(plan)["max_steps"]}
    out |= {"sequence_len": plan.seq_len, "micro_batch_size": plan.batch_size,
            "gradient_accumulation_steps": plan.grad_accum_steps, **epochs,
            "optimizer": AXOLOTL_OPTIM.get(plan.optimizer, plan.optimizer),
            "learning_rate": TRL_OBJECTIVES[plan.objective].learning_rate,
            "gradient_checkpointing": plan.gradient_checkpointing, AXOLOTL_ATTENTION[plan.attn_implementation]: True,
            "datasets": [{"path": DATASET, "type": AXOLOTL_DATASETS[plan.objective]}],
            "output_dir": OUTPUT_DIR}  # fmt: skip
    if plan.sharding.startswith("zero"):
        out["deepspeed"] = "ds_config.json"  # tuneplan export --format deepspeed
    elif plan.sharding == "fsdp" and plan.num_gpus > 1:
        fsdp = _fsdp_accelerate(plan)
        out["fsdp_version"] = 2
        out["fsdp_config"] = {k.removeprefix("fsdp_"): v for k, v in fsdp["fsdp_config"].items() if k != "fsdp_version"}
        if "parallelism_config" in fsdp:
            mesh = fsdp["parallelism_config"]
            out["dp_shard_size"] = mesh["parallelism_config_dp_shard_size"]
            out["dp_replicate_size"] = mesh["parallelism_config_dp_replicate_size"]
    return out


def _axolotl_objective(plan: Plan) -> dict[str, Any]:
    """axolotl's keys for the objective (``axolotl.utils.schemas.config`` and ``.trl``, and how
    ``axolotl.core.builders.rl`` passes them to TRL): ``rl`` (dpo, kto, orpo, simpo, grpo), ``reward_model: true``
    (an ``AutoModelForSequenceClassification`` with one label), DPO's ``precompute_ref_log_probs``, SimPO's
    ``cpo_alpha`` 0 (CPOConfig's default 1.0 adds the chosen NLL), GRPO's ``trl:`` section and ``vllm:`` share."""
    o = plan.objective
    if o == "sft":
        return {}
    if o == "reward":
        return {"reward_model": True, "model_type": "AutoModelForSequenceClassification", "num_labels": 1}
    out: dict[str, Any] = {"rl": o, "remove_unused_columns": False}
    if o == "dpo":
        out["precompute_ref_log_probs"] = plan.precompute_ref_log_probs
    elif o == "simpo":
        out |= {"cpo_alpha": 0.0, "simpo_gamma": 0.5}  # simpo_gamma: CPOConfig's default (axolotl passes None)
    elif o == "grpo":
        trl: dict[str, Any] = {"beta": plan.beta, "num_generations": plan.num_generations,
                               "max_completion_length": plan.max_completion_length,
                               "reward_funcs": ["rewards.reward_func"],
                               "use_vllm": plan.vllm_mode != "none"}  # fmt: skip
        if plan.vllm_mode != "none":
            trl["vllm_mode"] = plan.vllm_mode
        out["trl"] = trl
        if plan.vllm_mode == "colocate":
            out["vllm"] = {"gpu_memory_utilization": plan.vllm_gpu_memory_utilization}
    return out


def accelerate_config(plan: Plan) -> dict[str, Any]:
    """``accelerate launch --config_file``: one process per GPU; ZeRO stages through accelerate's DeepSpeed plugin,
    FSDP as FSDP2 (``fully_shard`` per decoder layer, as ``trainer.dist`` measures it)."""
    n = plan.num_gpus
    zero = plan.sharding.startswith("zero")
    fsdp = plan.sharding == "fsdp" and n > 1
    distributed = "DEEPSPEED" if zero else "FSDP" if fsdp else ("MULTI_GPU" if n > 1 else "NO")
    _, bf16, fp16 = _dtype_flags(plan)
    mixed = "bf16" if bf16 else "fp16" if fp16 else "no"
    if zero and plan.dtype != "float32":
        mixed = "bf16" if plan.dtype == "bfloat16" else "fp16"  # DeepSpeed trains 16-bit weights only in its mode
    out: dict[str, Any] = {"compute_environment": "LOCAL_MACHINE", "distributed_type": distributed,
                           "mixed_precision": mixed, "num_machines": 1, "num_processes": n, "machine_rank": 0,
                           "gpu_ids": "all", "use_cpu": False, "rdzv_backend": "static", "same_network": True,
                           "main_training_function": "main", "debug": False}  # fmt: skip
    if zero:
        out["deepspeed_config"] = {"zero_stage": int(plan.sharding[-1]),
                                   "gradient_accumulation_steps": plan.grad_accum_steps,
                                   "offload_optimizer_device": "none", "offload_param_device": "none",
                                   "zero3_init_flag": plan.sharding == "zero3"}  # fmt: skip
        if plan.offload != "none":
            out["deepspeed_config"]["offload_optimizer_device"] = "cpu"
        if plan.offload == "params":
            out["deepspeed_config"]["offload_param_device"] = "cpu"
    if fsdp:
        out |= _fsdp_accelerate(plan)
    return out


def _fsdp_accelerate(plan: Plan) -> dict[str, Any]:
    """accelerate's FSDP2 keys: ``reshard_after_forward`` is the strategy (False: shard_grad_op), CPU offload is
    ``CPUOffloadPolicy`` (parameters, gradients and optimizer state), hybrid shard is a 2-D data-parallel mesh."""
    out: dict[str, Any] = {
        "fsdp_config": {
            "fsdp_version": 2,
            "fsdp_reshard_after_forward": plan.fsdp_strategy != "shard_grad_op",
            "fsdp_offload_params": plan.offload == "params",
            "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "fsdp_cpu_ram_efficient_loading": True,
            "fsdp_state_dict_type": "SHARDED_STATE_DICT",
            "fsdp_activation_checkpointing": plan.gradient_checkpointing,
        }  # fmt: skip
    }
    if plan.fsdp_strategy == "hybrid_shard":
        group = plan.shard_group_size or plan.num_gpus
        out["parallelism_config"] = {"parallelism_config_dp_replicate_size": plan.num_gpus // group,
                                     "parallelism_config_dp_shard_size": group}  # fmt: skip
    return out
