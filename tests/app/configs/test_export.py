"""Exports loaded by the real libraries' own parsers, and read back into the plan they came from.

TRL: ``trl sft --config`` YAML through ``TrlParser`` (the parser the ``trl`` command uses), then TRL's own
``get_quantization_config`` / ``get_peft_config``, which build the real ``BitsAndBytesConfig`` and ``LoraConfig``;
the Python script is loaded as a module (its ``main()`` is not run: it would download a model). accelerate: its
config file class. DeepSpeed: ``DeepSpeedConfig``, which validates every key with pydantic. axolotl does not
install next to this stack (it pins other transformers, peft and accelerate versions), so its YAML is held to
the keys of its config schema and read back by tuneplan's importer.
"""

from __future__ import annotations

import importlib
import runpy
import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.configs import FORMATS, export_plan, import_config
from estimator import Plan, plan_fields

MODEL = "meta-llama/Llama-3.1-8B"
QLORA = Plan(model="llama-3.1-8b", method="qlora", batch_size=4, seq_len=4096, grad_accum_steps=8,
             lora_r=32, lora_alpha=64, lora_dropout=0.1, optimizer="paged_adamw_8bit", attn_implementation="sdpa",
             train_tokens=10**8)  # fmt: skip
PLANS = {
    "qlora": QLORA,
    "qlora-int8-targets": QLORA.replace(
        quant_type="int8",
        target_modules=("q_proj", "v_proj"),
        use_dora=True,
        modules_to_save=("lm_head",),
        train_tokens=0,
        epochs=2,
    ),  # fmt: skip
    "lora-fp16-nogc": QLORA.replace(method="lora", dtype="float16", gradient_checkpointing=False, optimizer="sgd"),
    "full-mixed": QLORA.replace(method="full", mixed_precision=True, optimizer="adamw_torch"),
    "full-zero3": QLORA.replace(method="full", num_gpus=8, sharding="zero3", optimizer="adamw_8bit"),
    "full-fsdp-offload": QLORA.replace(method="full", num_gpus=4, sharding="fsdp", offload="params"),
    "full-zero3-offload": QLORA.replace(
        method="full", num_gpus=4, sharding="zero3", offload="params", optimizer="adamw_torch"
    ),  # fmt: skip
    "lora-zero2-offload": QLORA.replace(
        method="lora", num_gpus=2, sharding="zero2", offload="optimizer", optimizer="adamw_torch"
    ),  # fmt: skip
    "full-zero3-nvme": QLORA.replace(
        method="full", num_gpus=8, sharding="zero3", offload="params", offload_device="nvme", optimizer="adamw_torch"
    ),  # fmt: skip
    "lora-fsdp-hybrid": QLORA.replace(
        method="lora", num_gpus=8, sharding="fsdp", fsdp_strategy="hybrid_shard", shard_group_size=4
    ),  # fmt: skip
    "qlora-fsdp-grad-op": QLORA.replace(
        num_gpus=2, sharding="fsdp", fsdp_strategy="shard_grad_op", quant_storage="bfloat16"
    ),  # fmt: skip
}


def _read_back(plan: Plan, fmt: str) -> Plan:
    """What tuneplan's importer reads from the export: the plan's memory-relevant fields."""
    return import_config(export_plan(plan, fmt, MODEL).text, fmt).plan


def _same(a: Plan, b: Plan, *ignore: str) -> None:
    skip = {"model", "config", "gpu", "num_gpus", "sharding", "train_tokens", "epochs", "mfu", "dataset_tokens",
            "prepare_kbit", "lora_alpha", "fsdp_strategy", "offload", "offload_device", "shard_group_size",
            *ignore}  # fmt: skip
    skip |= {f.name for f in plan_fields() if f.spec.methods and a.method not in f.spec.methods}
    da, db = a.to_dict(), b.to_dict()
    assert {k: v for k, v in da.items() if k not in skip} == {k: v for k, v in db.items() if k not in skip}


@pytest.mark.parametrize("name", sorted(PLANS))
def test_trl_yaml_loads_in_trls_own_parser(name: str, tmp_path: Path) -> None:
    trl = pytest.importorskip("trl")  # a module: its names are untyped here, as the tests check them
    import torch

    utils = importlib.import_module("trl.trainer.utils")

    plan = PLANS[name]
    path = tmp_path / "sft.yaml"
    path.write_text(export_plan(plan, "trl", MODEL).text)
    # TrainingArguments refuses bf16 autocast where no GPU has it (here): say the run is on the CPU
    cpu = [] if torch.cuda.is_available() else ["--use_cpu", "true"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no deprecated option in the export
        script, sft, model = trl.TrlParser((trl.ScriptArguments, trl.SFTConfig, trl.ModelConfig)).parse_args_and_config(
            ["--config", str(path), *cpu]
        )
    assert model.model_name_or_path == MODEL and model.dtype == ("float32" if plan.mixed_precision else plan.dtype)
    assert sft.per_device_train_batch_size == plan.batch_size and sft.max_length == plan.seq_len
    assert sft.gradient_accumulation_steps == plan.grad_accum_steps
    assert sft.activation_checkpointing is plan.gradient_checkpointing and sft.bf16 is plan.mixed_precision
    assert model.attn_implementation == plan.attn_implementation and script.dataset_name
    if plan.train_tokens:
        assert sft.max_steps == -(-plan.train_tokens // (plan.batch_size * plan.seq_len * 8 * plan.num_gpus))
    _trl_objects(plan, utils.get_quantization_config(model), utils.get_peft_config(model))
    _same(plan, _read_back(plan, "trl"))


def _trl_objects(plan: Plan, bnb: Any, peft: Any) -> None:
    if plan.quantized and plan.quant_type == "int8":
        assert bnb.load_in_8bit
    elif plan.quantized:
        assert bnb.load_in_4bit and bnb.bnb_4bit_quant_type == plan.quant_type
        assert bnb.bnb_4bit_use_double_quant is plan.double_quant
    else:
        assert bnb is None
    if not plan.adapters:
        assert peft is None
        return
    targets = plan.target_modules if isinstance(plan.target_modules, str) else set(plan.target_modules)
    assert peft.r == plan.lora_r and peft.lora_dropout == plan.lora_dropout and peft.target_modules == targets
    assert peft.use_dora is plan.use_dora and (peft.modules_to_save or []) == list(plan.modules_to_save)


@pytest.mark.parametrize("name", ["qlora", "qlora-int8-targets", "full-zero3"])
def test_trl_python_script_builds_the_real_configs(name: str, tmp_path: Path) -> None:
    pytest.importorskip("trl")
    plan = PLANS[name]
    path = tmp_path / "train.py"
    path.write_text(export_plan(plan, "trl-python", MODEL).text)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        module = runpy.run_path(str(path), run_name="not_main")  # builds the configs; main() would train
    args = module["training_args"]
    assert args.per_device_train_batch_size == plan.batch_size and args.max_length == plan.seq_len
    assert args.bf16 is plan.mixed_precision and args.activation_checkpointing is plan.gradient_checkpointing
    assert args.optim == plan.optimizer
    init = args.model_init_kwargs
    assert str(init["dtype"]) == "torch." + ("float32" if plan.mixed_precision else plan.dtype)
    _trl_objects(plan, init.get("quantization_config"), module["peft_config"])
    assert module["MODEL"] == MODEL and callable(module["main"])


@pytest.mark.parametrize("name", sorted(PLANS))
def test_accelerate_config_loads_in_accelerates_own_class(name: str, tmp_path: Path) -> None:
    pytest.importorskip("accelerate")
    from accelerate.commands.config.config_args import load_config_from_file

    plan = PLANS[name]
    path = tmp_path / "accelerate.yaml"
    path.write_text(export_plan(plan, "accelerate", MODEL).text)
    config = load_config_from_file(str(path))
    assert config.num_processes == plan.num_gpus
    zero = plan.sharding.startswith("zero")
    fsdp = plan.sharding == "fsdp"
    expected = "DEEPSPEED" if zero else "FSDP" if fsdp else "MULTI_GPU" if plan.num_gpus > 1 else "NO"
    assert str(config.distributed_type).endswith(expected)
    if zero:
        assert config.deepspeed_config["zero_stage"] == int(plan.sharding[-1])
    mixed = str(config.mixed_precision)
    assert mixed.endswith("bf16") if plan.mixed_precision or zero else mixed.endswith("no")


@pytest.mark.parametrize("name", [n for n in sorted(PLANS) if PLANS[n].sharding == "fsdp"])
def test_accelerate_fsdp_config_launches_as_the_plan_says(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """accelerate launch's own parser reads the file, turns it into the launched processes' environment, and
    accelerate's FSDP plugin built from that environment is FSDP2 with the plan's strategy, offload and mesh."""
    pytest.importorskip("accelerate")
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.launch import prepare_multi_gpu_env
    from torch.distributed.fsdp import CPUOffloadPolicy

    plan = PLANS[name]
    path = tmp_path / "accelerate.yaml"
    path.write_text(export_plan(plan, "accelerate", MODEL).text)
    args, _, _ = _validate_launch_command(launch_command_parser().parse_args(["--config_file", str(path), "t.py"]))
    env = prepare_multi_gpu_env(args)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    plugin = FullyShardedDataParallelPlugin()
    assert env["ACCELERATE_USE_FSDP"] == "true" and plugin.fsdp_version == 2
    assert plugin.reshard_after_forward is (plan.fsdp_strategy != "shard_grad_op")
    assert isinstance(plugin.cpu_offload, CPUOffloadPolicy) is (plan.offload == "params")
    assert plugin.activation_checkpointing is plan.gradient_checkpointing
    if plan.fsdp_strategy == "hybrid_shard":
        group = plan.shard_group_size or plan.num_gpus
        assert env["PARALLELISM_CONFIG_DP_SHARD_SIZE"] == str(group)
        assert int(env["PARALLELISM_CONFIG_DP_REPLICATE_SIZE"]) * group == plan.num_gpus
    else:
        assert env.get("ACCELERATE_USE_PARALLELISM_CONFIG") != "true"


@pytest.mark.parametrize("name", sorted(PLANS))
def test_deepspeed_json_loads_in_deepspeeds_own_class(name: str) -> None:
    pytest.importorskip("deepspeed")
    from deepspeed.runtime.config import DeepSpeedConfig

    plan = PLANS[name]
    text = export_plan(plan, "deepspeed", MODEL).text
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DeepSpeed warns that it falls back to the CPU accelerator here
        config = DeepSpeedConfig(yaml.safe_load(text))
    assert config.train_micro_batch_size_per_gpu == plan.batch_size
    assert config.gradient_accumulation_steps == plan.grad_accum_steps
    assert config.zero_optimization_stage == (int(plan.sharding[-1]) if plan.sharding.startswith("zero") else 0)
    assert config.bfloat16_config.enabled is (plan.dtype == "bfloat16")
    zero, offload = config.zero_config, plan.offload if plan.sharding.startswith("zero") else "none"
    device = plan.offload_device
    assert (zero.offload_optimizer is not None and zero.offload_optimizer.device == device) is (offload != "none")
    assert (zero.offload_param is not None and zero.offload_param.device == device) is (offload == "params")
    # offload: the engine builds DeepSpeed's CPU AdamW from the config (a torch optimizer handed in is refused)
    assert (config.optimizer_name == "adamw") is (offload != "none")


# axolotl's config keys (axolotl.utils.schemas: AxolotlInputConfig and the models it inherits), for those exported
AXOLOTL_KEYS = {
    "base_model", "adapter", "load_in_4bit", "load_in_8bit", "bnb_config_kwargs", "lora_r", "lora_alpha",
    "lora_dropout", "lora_target_linear", "lora_target_modules", "lora_modules_to_save", "peft_use_dora", "bf16",
    "fp16", "bfloat16", "float16", "sequence_len", "micro_batch_size", "gradient_accumulation_steps", "num_epochs",
    "max_steps", "optimizer", "learning_rate", "gradient_checkpointing", "sdp_attention", "flash_attention",
    "eager_attention", "datasets", "output_dir", "deepspeed", "fsdp_version", "fsdp_config", "dp_shard_size",
    "dp_replicate_size",
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(PLANS))
def test_axolotl_yaml_uses_axolotls_keys_and_reads_back(name: str) -> None:
    plan = PLANS[name]
    exported = export_plan(plan, "axolotl", MODEL)
    data = yaml.safe_load(exported.text)
    assert set(data) <= AXOLOTL_KEYS
    assert data["base_model"] == MODEL and data["micro_batch_size"] == plan.batch_size
    assert ("adapter" in data) is plan.adapters
    # axolotl's non-AMP switch loads the weights in the plan's dtype (its AMP switch also loads in 16 bits)
    assert data.get("bfloat16", False) is (plan.dtype == "bfloat16" and not plan.mixed_precision)
    back = _read_back(plan, "axolotl")
    if plan.sharding == "fsdp":  # FSDP2 in axolotl's keys; its FSDP-QLoRA sets the 4-bit storage dtype itself
        assert (back.sharding, back.fsdp_strategy, back.offload) == (plan.sharding, plan.fsdp_strategy, plan.offload)
        assert back.shard_group_size == (plan.shard_group_size if plan.fsdp_strategy == "hybrid_shard" else 0)
        _same(plan, back, "quant_storage")
    elif plan.mixed_precision:
        assert any("master weights" in n for n in exported.notes)
        _same(plan, back, "mixed_precision")
    else:
        _same(plan, back)


def test_every_format_exports_every_plan() -> None:
    for plan in PLANS.values():
        for fmt in FORMATS:
            out = export_plan(plan, fmt, None)
            assert out.text and out.filename and "path/or/hub-id-of-the-model" in out.text or fmt in (
                "accelerate", "deepspeed")  # fmt: skip
            assert any("inline config" in n for n in out.notes)


# one plan per objective: QLoRA, LoRA (reward's SEQ_CLS adapters), full (DPO's held reference), vLLM colocate
OBJECTIVE_PLANS = {
    "dpo": QLORA.replace(objective="dpo", prepare_kbit=False, train_tokens=0),
    "dpo-full-precomputed": QLORA.replace(method="full", objective="dpo", precompute_ref_log_probs=True),
    "kto": QLORA.replace(method="lora", objective="kto", optimizer="adamw_torch"),
    "orpo": QLORA.replace(objective="orpo"),
    "simpo": QLORA.replace(method="lora", objective="simpo"),
    "reward": QLORA.replace(method="lora", objective="reward", seq_len=2048),
    "grpo": QLORA.replace(objective="grpo", seq_len=256, num_generations=4, max_completion_length=128, beta=0.04),
    "grpo-colocate": QLORA.replace(
        method="full",
        objective="grpo",
        seq_len=256,
        num_generations=16,
        vllm_mode="colocate",
        vllm_gpu_memory_utilization=0.4,
        optimizer="adamw_torch",
    ),  # fmt: skip
    "grpo-server-2gpu": QLORA.replace(method="lora", objective="grpo", seq_len=128, vllm_mode="server", num_gpus=2),
    "simpo-2gpu": QLORA.replace(method="lora", objective="simpo", num_gpus=2),
}
TRL_CLASSES = {"dpo": "DPOConfig", "kto": "KTOConfig", "reward": "RewardConfig", "grpo": "GRPOConfig",
               "orpo": "ORPOConfig", "simpo": "CPOConfig"}  # fmt: skip


def _trl_parser(objective: str) -> Any:
    """The parser ``trl <objective>`` builds (its script's ``make_parser``), or, for the experimental ORPO and CPO
    configs that have no command, ``TrlParser`` over the same dataclasses."""
    trl = importlib.import_module("trl")
    if objective in ("dpo", "kto", "reward", "grpo"):
        return importlib.import_module(f"trl.scripts.{objective}").make_parser()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # trl.experimental warns on import that its API may change
        module = importlib.import_module("trl.experimental.orpo" if objective == "orpo" else "trl.experimental.cpo")
    config = module.ORPOConfig if objective == "orpo" else module.CPOConfig
    return trl.TrlParser((trl.ScriptArguments, config, trl.ModelConfig))


@pytest.mark.parametrize("name", sorted(OBJECTIVE_PLANS))
def test_trl_yaml_of_an_objective_loads_in_its_commands_parser(name: str, tmp_path: Path) -> None:
    pytest.importorskip("trl")
    import torch

    utils = importlib.import_module("trl.trainer.utils")
    plan = OBJECTIVE_PLANS[name]
    exported = export_plan(plan, "trl", MODEL)
    command = plan.objective if plan.objective not in ("orpo", "simpo") else None
    assert exported.filename == f"{plan.objective}.yaml"
    assert any(f"trl {command} --config" in n for n in exported.notes) if command else any(
        "has no 'trl" in n for n in exported.notes)  # fmt: skip
    path = tmp_path / exported.filename
    path.write_text(exported.text)
    cpu = [] if torch.cuda.is_available() else ["--use_cpu", "true"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        parsed = _trl_parser(plan.objective).parse_args_and_config(["--config", str(path), *cpu])
    script, args, model = parsed[:3]
    assert type(args).__name__ == TRL_CLASSES[plan.objective] and script.dataset_name
    assert model.model_name_or_path == MODEL and args.per_device_train_batch_size == plan.batch_size
    assert args.gradient_accumulation_steps == plan.grad_accum_steps
    assert args.activation_checkpointing is plan.gradient_checkpointing
    if plan.objective == "grpo":
        assert (args.num_generations, args.max_completion_length) == (plan.num_generations, plan.max_completion_length)
        assert args.beta == plan.beta and args.use_vllm is (plan.vllm_mode != "none") and script.reward_funcs
        if plan.vllm_mode == "colocate":
            assert args.vllm_mode == "colocate"
            assert args.vllm_gpu_memory_utilization == plan.vllm_gpu_memory_utilization
    else:
        assert args.max_length == plan.seq_len
    if plan.objective in ("dpo", "kto"):
        assert args.precompute_ref_log_probs is plan.precompute_ref_log_probs
    if plan.objective == "simpo":
        assert (args.loss_type, args.cpo_alpha) == ("simpo", 0.0)
    assert args.learning_rate == {"reward": 1e-4}.get(plan.objective, 1e-6)  # the config's own default
    peft = utils.get_peft_config(model)
    _trl_objects(plan, utils.get_quantization_config(model), peft)
    if plan.adapters:
        assert str(peft.task_type).endswith("SEQ_CLS" if plan.objective == "reward" else "CAUSAL_LM")


@pytest.mark.parametrize("name", sorted(OBJECTIVE_PLANS))
def test_trl_python_script_of_an_objective_builds_its_config(name: str, tmp_path: Path) -> None:
    pytest.importorskip("trl")
    plan = OBJECTIVE_PLANS[name]
    text = export_plan(plan, "trl-python", MODEL).text
    t = TRL_CLASSES[plan.objective]
    trainer = t.replace("Config", "Trainer")
    module_name = {"orpo": "trl.experimental.orpo", "simpo": "trl.experimental.cpo"}.get(plan.objective, "trl")
    assert f"from {module_name} import {t}, {trainer}" in text and f"trainer = {trainer}(" in text
    path = tmp_path / "train.py"
    path.write_text(text)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", module="trl.experimental")  # the experimental API's import warning
        module = runpy.run_path(str(path), run_name="not_main")
    args = module["training_args"]
    assert type(args).__name__ == t and args.per_device_train_batch_size == plan.batch_size
    if plan.objective == "grpo":
        assert args.num_generations == plan.num_generations and args.beta == plan.beta
        assert args.max_completion_length == plan.max_completion_length and callable(module["think_format_reward"])
    else:
        assert args.max_length == plan.seq_len
    if plan.objective == "simpo":
        assert (args.loss_type, args.cpo_alpha) == ("simpo", 0.0)
    _trl_objects(plan, args.model_init_kwargs.get("quantization_config"), module["peft_config"])
    if plan.adapters:
        assert str(module["peft_config"].task_type).endswith("SEQ_CLS" if plan.objective == "reward" else "CAUSAL_LM")


AXOLOTL_RL_KEYS = {"rl", "remove_unused_columns", "precompute_ref_log_probs", "cpo_alpha", "simpo_gamma", "trl",
                   "vllm", "reward_model", "model_type", "num_labels"}  # fmt: skip
AXOLOTL_TRL_KEYS = {"beta", "num_generations", "max_completion_length", "reward_funcs", "use_vllm", "vllm_mode"}


@pytest.mark.parametrize("name", sorted(OBJECTIVE_PLANS))
def test_axolotl_yaml_says_the_objective(name: str) -> None:
    plan = OBJECTIVE_PLANS[name]
    exported = export_plan(plan, "axolotl", MODEL)
    data = yaml.safe_load(exported.text)
    assert set(data) <= AXOLOTL_KEYS | AXOLOTL_RL_KEYS and set(data.get("trl", {})) <= AXOLOTL_TRL_KEYS
    if plan.objective == "reward":
        assert data["reward_model"] is True and data["num_labels"] == 1 and "rl" not in data
    else:
        assert data["rl"] == plan.objective and data["remove_unused_columns"] is False
    if plan.objective == "dpo":
        assert data["precompute_ref_log_probs"] is plan.precompute_ref_log_probs
    if plan.objective == "simpo":
        assert data["cpo_alpha"] == 0.0
    if plan.objective == "grpo":
        assert data["trl"]["num_generations"] == plan.num_generations and data["trl"]["beta"] == plan.beta
        assert data["trl"]["max_completion_length"] == plan.max_completion_length
        assert data.get("vllm", {}).get("gpu_memory_utilization") == (
            plan.vllm_gpu_memory_utilization if plan.vllm_mode == "colocate" else None)  # fmt: skip
    assert data["datasets"][0]["type"] != "alpaca" and any("not run on this file" in n for n in exported.notes)


def test_launcher_configs_do_not_claim_an_objective() -> None:
    for plan in OBJECTIVE_PLANS.values():
        for fmt in ("accelerate", "deepspeed"):
            out = export_plan(plan, fmt, MODEL)
            assert "sft" not in out.text.lower() and not any("sft" in n.lower() for n in out.notes)
            assert any(f"objective {plan.objective}" in n for n in out.notes)
            sft = export_plan(plan.replace(objective="sft"), fmt, MODEL)
            assert _body(sft.text) == _body(out.text)  # the same launcher: only the notes differ
            assert any("trl vllm-serve" in n for n in out.notes) is (plan.vllm_mode == "server" and fmt != "deepspeed")
        if plan.objective in ("orpo", "simpo"):
            assert any("device_map 'auto'" in n for n in export_plan(plan, "trl", MODEL).notes) is (plan.num_gpus > 1)


def _body(text: str) -> str:
    return "".join(line for line in text.splitlines(keepends=True) if not line.startswith("#"))


@pytest.mark.parametrize("fmt", ["trl", "axolotl"])
@pytest.mark.parametrize("name", sorted(OBJECTIVE_PLANS))
def test_an_objectives_export_reads_back_as_its_plan(name: str, fmt: str) -> None:
    """The importer takes the objective from axolotl's rl:/reward_model, and from a TRL file's name (dpo.yaml)."""
    plan = OBJECTIVE_PLANS[name]
    exported = export_plan(plan, fmt, MODEL)
    back = import_config(exported.text, fmt, exported.filename).plan
    assert back.objective == plan.objective
    ignore = ["mixed_precision"] if fmt == "axolotl" and plan.mixed_precision else []
    if fmt == "trl" and plan.objective == "grpo":
        ignore.append("seq_len")  # TRL 1.16's GRPOConfig has no prompt length (said in the export's notes)
        assert any("max_prompt_length" in n for n in exported.notes)
    _same(plan, back, *ignore)
