"""axolotl and TRL configs read into plans: the options that matter mapped, the rest listed as ignored, and a clear
error for a file tuneplan cannot plan."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from app.configs import import_config
from app.errors import InvalidRequest
from estimator import PlanError

AXOLOTL = """
base_model: Qwen/Qwen2.5-7B
adapter: qlora
load_in_4bit: true
bnb_config_kwargs:
  bnb_4bit_quant_type: fp4
  bnb_4bit_use_double_quant: false
lora_r: 64
lora_alpha: 16
lora_dropout: 0.05
lora_target_modules: [q_proj, k_proj, v_proj, o_proj]
lora_modules_to_save: [lm_head]
sequence_len: 4096
micro_batch_size: 2
gradient_accumulation_steps: 4
num_epochs: 3
optimizer: adamw_bnb_8bit
bfloat16: true
bf16: false
gradient_checkpointing: true
flash_attention: true
deepspeed: deepspeed_configs/zero2.json
learning_rate: 0.0002
datasets:
  - path: mhenrichsen/alpaca_2k_test
    type: alpaca
wandb_project: demo
"""


def test_axolotl_options_that_matter_are_mapped() -> None:
    got = import_config(AXOLOTL, origin="axolotl.yaml")
    assert got.format == "axolotl"
    p = got.plan
    assert (p.model, p.method, p.quant_type, p.double_quant) == ("Qwen/Qwen2.5-7B", "qlora", "fp4", False)
    assert (p.lora_r, p.lora_alpha, p.lora_dropout) == (64, 16, 0.05)
    assert p.target_modules == ("q_proj", "k_proj", "v_proj", "o_proj") and p.modules_to_save == ("lm_head",)
    assert (p.seq_len, p.batch_size, p.grad_accum_steps, p.epochs) == (4096, 2, 4, 3)
    assert (p.optimizer, p.dtype, p.mixed_precision) == ("adamw_8bit", "bfloat16", False)
    assert (p.gradient_checkpointing, p.attn_implementation, p.sharding) == (True, "flash_attention_2", "zero2")
    assert got.ignored == ["datasets", "learning_rate", "wandb_project"]
    assert got.mapped["micro_batch_size"] == "batch_size" and got.mapped["deepspeed"] == "sharding"
    assert any("zero2.json" in n for n in got.notes)  # the stage comes from the file name, said so


@pytest.mark.parametrize(("stage", "sections", "offload"), [
    (2, {"offload_optimizer": {"device": "cpu", "pin_memory": True}}, "optimizer"),
    (3, {"offload_optimizer": {"device": "cpu"}, "offload_param": {"device": "cpu"}}, "params"),
    (3, {"offload_optimizer": {"device": "none"}}, "none"),
    (3, {"offload_optimizer": {"device": "nvme", "nvme_path": "/local_nvme"}}, "optimizer"),
])  # fmt: skip
def test_an_inline_deepspeed_config_brings_its_offload(stage: int, sections: dict[str, Any], offload: str) -> None:
    """axolotl's ``deepspeed`` may hold the DeepSpeed JSON itself: its ZeRO stage and its offload sections are
    read (the JSON ``tuneplan export --format deepspeed`` writes has the same keys)."""
    deepspeed = {"zero_optimization": {"stage": stage, **sections}}
    text = yaml.safe_dump({"base_model": "meta-llama/Llama-3.1-8B", "deepspeed": deepspeed})
    p = import_config(text, "axolotl").plan
    assert (p.sharding, p.offload) == (f"zero{stage}", offload)
    nvme = any(isinstance(v, dict) and v.get("device") == "nvme" for v in sections.values())
    assert p.offload_device == ("nvme" if nvme else "cpu")


def test_axolotl_defaults_are_axolotls() -> None:
    p = import_config("base_model: meta-llama/Llama-3.1-8B\nmicro_batch_size: 1\ngradient_accumulation_steps: 8\n").plan
    assert p.method == "full" and p.seq_len == 512 and not p.gradient_checkpointing  # axolotl's defaults
    assert p.dtype == "bfloat16"  # bf16: auto
    lora = import_config("base_model: x/y\nadapter: lora\nlora_r: 8\nmicro_batch_size: 1\n")
    assert lora.plan.target_modules == ("q_proj", "v_proj") and lora.plan.lora_dropout == 0.0
    assert any("PEFT adapts its default modules" in n for n in lora.notes)
    eight = import_config("base_model: x/y\nadapter: lora\nload_in_8bit: true\nfp16: true\nlora_r: 8\n").plan
    assert (eight.method, eight.quant_type, eight.dtype) == ("qlora", "int8", "float16")


TRL = {
    "model_name_or_path": "meta-llama/Llama-3.1-8B",
    "dtype": "float32",
    "bf16": True,
    "per_device_train_batch_size": 4,
    "gradient_accumulation_steps": 2,
    "max_length": 2048,
    "gradient_checkpointing": False,
    "optim": "adamw_torch_fused",
    "max_steps": 1000,
    "learning_rate": 1e-5,
    "report_to": "none",
}


def test_trl_full_fine_tune_with_autocast_is_mixed_precision() -> None:
    got = import_config(json.dumps(TRL), origin="sft.json")
    p = got.plan
    assert got.format == "trl" and (p.method, p.dtype, p.mixed_precision) == ("full", "bfloat16", True)
    assert (p.batch_size, p.seq_len, p.gradient_checkpointing, p.optimizer) == (4, 2048, False, "adamw_torch")
    assert p.train_tokens == 1000 * 4 * 2048 * 2
    assert got.ignored == ["learning_rate", "report_to"]


def test_trl_qlora_with_trls_defaults() -> None:
    text = "model_name_or_path: Qwen/Qwen2.5-1.5B\ndtype: bfloat16\nbf16: false\nuse_peft: true\nload_in_4bit: true\n"
    got = import_config(text)
    p = got.plan
    assert (p.method, p.quant_type, p.double_quant) == ("qlora", "nf4", False)  # TRL: nested quant off
    assert (p.lora_r, p.lora_alpha, p.lora_dropout, p.seq_len) == (16, 32, 0.05, 1024)
    assert p.gradient_checkpointing and p.batch_size == 8  # TRL's and TrainingArguments' defaults
    assert p.target_modules == ("q_proj", "v_proj") and got.notes


@pytest.mark.parametrize(
    ("text", "fmt", "message"),
    [
        ("{not yaml: [", None, "not valid YAML or JSON"),
        ("- a\n- b\n", None, "must be a mapping"),
        ("learning_rate: 1\n", None, "neither an axolotl config .* nor a TRL config"),
        ("base_model: x/y\nadapter: ia3\n", None, "adapter 'ia3' is not planned"),
        ("base_model: x/y\nload_in_4bit: true\n", None, "need an adapter"),
        ("base_model: x/y\nadapter: lora\nlora_r: many\n", None, "lora_r must be an integer; got 'many'"),
        ("base_model: x/y\nsequence_len: true\n", None, "sequence_len must be an integer"),
        ("base_model: x/y\noptimizer: lion_8bit\n", None, "optimizer 'lion_8bit' is not one tuneplan plans"),
        ("model_name_or_path: x/y\nload_in_4bit: true\n", None, "only with use_peft"),
        ("model_name_or_path: x/y\ndtype: [1]\n", None, "dtype \\[1\\] is not one tuneplan plans"),
        ("base_model: x/y\n", "keras", "format 'keras' cannot be imported"),
    ],
)
def test_a_file_tuneplan_cannot_plan_says_what_to_fix(text: str, fmt: str | None, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        import_config(text, fmt)


def test_values_the_plan_rejects_are_plan_errors() -> None:
    with pytest.raises(PlanError, match="lora_dropout must be"):
        import_config("base_model: x/y\nadapter: lora\nlora_dropout: 2.0\n")
    with pytest.raises(PlanError, match="give exactly one of 'model'"):
        import_config("micro_batch_size: 2\n", "axolotl")


AXOLOTL_GRPO = """
base_model: Qwen/Qwen2.5-1.5B-Instruct
rl: grpo
trl:
  beta: 0.001
  max_completion_length: 256
  use_vllm: true
  vllm_mode: colocate
  num_generations: 4
  reward_funcs: ["rewards.rand_reward_func"]
vllm:
  gpu_memory_utilization: 0.5
adapter: lora
lora_r: 16
micro_batch_size: 2
gradient_accumulation_steps: 2
sequence_len: 512
"""


def test_axolotl_rl_keys_are_the_objective() -> None:
    got = import_config(AXOLOTL_GRPO)
    p = got.plan
    assert (p.objective, p.beta, p.max_completion_length, p.num_generations) == ("grpo", 0.001, 256, 4)
    assert (p.vllm_mode, p.vllm_gpu_memory_utilization, p.seq_len) == ("colocate", 0.5, 512)
    assert got.mapped["rl"] == "objective" and got.mapped["vllm"] == "vllm_gpu_memory_utilization"
    dpo = import_config("base_model: x/y\nrl: dpo\nprecompute_ref_log_probs: true\nremove_unused_columns: false\n")
    assert (dpo.plan.objective, dpo.plan.precompute_ref_log_probs) == ("dpo", True)
    assert dpo.ignored == ["remove_unused_columns"]
    ipo = import_config("base_model: x/y\nrl: ipo\n")
    assert ipo.plan.objective == "dpo" and any("planned as dpo" in n for n in ipo.notes)
    kto = import_config("base_model: x/y\nrl: kto\nprecompute_ref_log_probs: true\n")
    assert (kto.plan.objective, kto.plan.precompute_ref_log_probs) == ("kto", False)  # axolotl: DPO only
    simpo = import_config("base_model: x/y\nrl: simpo\n")
    assert simpo.plan.objective == "simpo" and any("cpo_alpha 1.0" in n for n in simpo.notes)
    reward = import_config("base_model: x/y\nreward_model: true\nnum_labels: 1\n")
    assert reward.plan.objective == "reward" and reward.mapped["num_labels"] == "objective"
    assert import_config("base_model: x/y\nrl: orpo\n").plan.objective == "orpo"


def test_trl_objective_from_the_file_name_or_its_keys() -> None:
    text = "model_name_or_path: x/y\nper_device_train_batch_size: 2\nmax_length: 512\n"
    assert import_config(text, origin="configs/dpo.yaml").plan.objective == "dpo"
    assert import_config(text, origin="sft.yaml").plan.objective == "sft"
    assert import_config(text).plan.objective == "sft"  # no key of another objective: TRL's sft
    assert import_config(text, objective="orpo").plan.objective == "orpo"
    kto = import_config(text + "desirable_weight: 1.0\nprecompute_ref_log_probs: true\n")
    assert (kto.plan.objective, kto.plan.precompute_ref_log_probs) == ("kto", True)
    grpo = import_config(
        "model_name_or_path: x/y\nper_device_train_batch_size: 4\nnum_generations: 4\nbeta: 0.04\n"
        "use_vllm: true\nvllm_mode: server\nmax_completion_length: 64\nsteps_per_generation: 2\n"
    )  # fmt: skip
    p = grpo.plan
    assert (p.objective, p.num_generations, p.beta, p.vllm_mode, p.max_completion_length) == (
        "grpo", 4, 0.04, "server", 64)  # fmt: skip
    assert p.seq_len == 512 and any("max_prompt_length" in n for n in grpo.notes)
    assert any("steps_per_generation 2 is not planned" in n for n in grpo.notes)
    simpo = import_config(text + "loss_type: simpo\ncpo_alpha: 0.0\n")
    assert simpo.plan.objective == "simpo" and not any("cpo_alpha" in n for n in simpo.notes)
    reward = import_config(text + "use_peft: true\nlora_task_type: SEQ_CLS\n")
    assert reward.plan.objective == "reward" and reward.mapped["lora_task_type"] == "objective"
    loose = import_config(text + "use_peft: true\nlora_dropout: 0.1\ndisable_dropout: false\n", objective="dpo")
    assert any("errs low" in n for n in loose.notes)


@pytest.mark.parametrize(
    ("text", "objective", "message"),
    [
        ("model_name_or_path: x/y\nnum_generations: 4\ndesirable_weight: 1.0\n", None, "grpo and kto configs"),
        ("model_name_or_path: x/y\ncpo_alpha: 0.0\n", None, "loss_type 'sigmoid' is not planned"),
        ("model_name_or_path: x/y\n", "ppo", "objective 'ppo' is not planned"),
        ("base_model: x/y\nrl: ebft\n", None, "rl 'ebft' is not planned"),
        ("base_model: x/y\nrl: dpo\n", "kto", "says dpo, not kto"),
        ("base_model: x/y\nprocess_reward_model: true\n", None, "process_reward_model"),
        ("model_name_or_path: x/y\nuse_vllm: true\nvllm_mode: remote\n", None, "vllm_mode 'remote'"),
    ],
)
def test_an_objective_tuneplan_cannot_plan_says_what_to_fix(text: str, objective: str | None, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        import_config(text, objective=objective)
