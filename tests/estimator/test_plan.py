"""Plan validation: every bad field names itself; JSON round trip."""

from __future__ import annotations

from typing import Any

import pytest

from estimator import Plan, PlanError

BAD: list[tuple[dict[str, Any], str]] = [
    ({"method": "bogus"}, r"method must be one of full, lora, qlora; got 'bogus'"),
    ({"dtype": "int4"}, r"dtype must be one of bfloat16, float16, float32"),
    ({"quant_type": "nf8"}, r"quant_type must be one of nf4, fp4, int8"),
    ({"optimizer": "adam"}, r"optimizer must be one of adamw_torch"),
    ({"attn_implementation": "flash"}, r"attn_implementation must be one of eager, sdpa, flash_attention_2"),
    ({"device": "tpu"}, r"device must be one of cuda, cpu"),
    ({"sharding": "fsdp2"}, r"sharding must be one of ddp, fsdp, zero1, zero2, zero3"),
    ({"offload": "params", "sharding": "ddp", "num_gpus": 2}, r"offload 'params' needs sharding fsdp or zero3"),
    ({"offload": "optimizer", "sharding": "fsdp", "num_gpus": 2}, r"offload 'optimizer' is DeepSpeed ZeRO"),
    (
        {"offload": "optimizer", "sharding": "zero2", "num_gpus": 2, "offload_device": "nvme"},
        r"offload_device 'nvme' is DeepSpeed ZeRO-3's .*got sharding zero2",
    ),
    ({"sharding": "zero3", "num_gpus": 2, "offload_device": "nvme"}, r"offload_device 'nvme' .*offload none"),
    (
        {"offload": "optimizer", "sharding": "zero2", "num_gpus": 2, "optimizer": "adamw_8bit"},
        r"DeepSpeed's offload steps its own CPU AdamW .*choose optimizer adamw_torch",
    ),
    (
        {"sharding": "fsdp", "fsdp_strategy": "hybrid_shard", "num_gpus": 6, "shard_group_size": 4},
        r"shard_group_size \(4\) must divide num_gpus \(6\)",
    ),
    ({"batch_size": 0}, r"batch_size must be between 1 and"),
    ({"batch_size": 1.5}, r"batch_size must be an integer; got 1.5"),
    ({"batch_size": True}, r"batch_size must be an integer; got True"),
    ({"seq_len": 0}, r"seq_len must be between 1 and 4194304; got 0"),
    ({"seq_len": 4 * 1024 * 1024 + 1}, r"seq_len must be between 1 and 4194304"),
    ({"num_gpus": 0}, r"num_gpus must be between 1 and 4096"),
    ({"lora_r": 0}, r"lora_r must be between 1 and 65536"),
    ({"lora_alpha": 0}, r"lora_alpha must be in \(0, 1000000000\]; got 0"),
    ({"lora_alpha": "8"}, r"lora_alpha must be a number in \(0, 1000000000\]; got '8'"),
    ({"double_quant": 1}, r"double_quant must be true or false; got 1"),
    ({"prepare_kbit": "yes"}, r"prepare_kbit must be true, false or null"),
    ({"modules_to_save": "lm_head"}, r"modules_to_save must be a list of module names"),
    ({"modules_to_save": ["x"] * 300}, r"modules_to_save lists 300 modules; at most 256"),
    ({"gpu": ""}, r"gpu must be a catalog GPU id, a GPU name, or a custom card"),
    ({"gpu": "A100"}, r"gpu .A100. matches 2 catalog GPUs: a100-40gb .*, a100-80gb"),
    ({"gpu": {"name": "x", "memory_bytes": 10}}, r"memory_bytes must be an integer between"),
    ({"model": None, "config": [1]}, r"config must be a JSON object"),
    ({"lora_dropout": 1.0}, r"lora_dropout must be in \[0, 1\)"),
    ({"lora_dropout": -0.1}, r"lora_dropout must be in \[0, 1\)"),
    ({"target_modules": "q_proj"}, r"target_modules must be 'all-linear' or a list of module names"),
    ({"target_modules": ("q_proj", "")}, r"target_modules must be 'all-linear' or a list"),
    ({"target_modules": ()}, r"target_modules is empty"),
    ({"method": "full", "use_dora": True}, r"use_dora applies to lora and qlora"),
    ({"mixed_precision": True, "dtype": "float32"}, r"mixed_precision needs a 16-bit dtype"),
    ({"model": "  "}, r"model must be a non-empty Hub id"),
    ({"model": None}, r"give exactly one of 'model'"),
    ({"config": {"model_type": "llama"}}, r"give exactly one of 'model'"),
]


@pytest.mark.parametrize(("changes", "message"), BAD, ids=[next(iter(c)) + str(i) for i, (c, _) in enumerate(BAD)])
def test_bad_field(changes: dict[str, Any], message: str) -> None:
    kwargs: dict[str, Any] = {"model": "llama-3.1-8b"} | changes
    with pytest.raises(PlanError, match=message):
        Plan(**kwargs)


def test_defaults_are_the_qlora_recipe() -> None:
    p = Plan(model="llama-3.1-8b")
    assert (p.method, p.quant_type, p.double_quant, p.target_modules) == ("qlora", "nf4", True, "all-linear")
    assert p.quantized and p.adapters and p.upcast_non_quantized
    assert not Plan(model="x", method="qlora", prepare_kbit=False).upcast_non_quantized
    assert not Plan(model="x", method="lora").upcast_non_quantized
    assert not Plan(model="x", method="full").adapters


def test_from_dict_unknown_keys() -> None:
    with pytest.raises(PlanError, match=r"unknown plan field\(s\): bogus, lr; known fields: .*allow_long_context"):
        Plan.from_dict({"model": "gpt2", "lr": 1e-4, "bogus": 1})
    with pytest.raises(PlanError, match="a plan is a JSON object"):
        Plan.from_dict(["model"])  # type: ignore[arg-type]
    with pytest.raises(PlanError, match="the plan is not valid JSON"):
        Plan.from_json("{model: gpt2")


def test_round_trip() -> None:
    p = Plan.from_dict({"model": "llama-3.1-8b", "method": "lora", "target_modules": ["q_proj", "v_proj"],
                        "modules_to_save": ["lm_head"], "lora_r": 8, "seq_len": 4096, "device": "cpu",
                        "use_dora": True})  # fmt: skip
    assert p.target_modules == ("q_proj", "v_proj") and p.modules_to_save == ("lm_head",)  # lists become tuples
    d = p.to_dict()
    assert d["target_modules"] == ["q_proj", "v_proj"] and d["modules_to_save"] == ["lm_head"]
    assert Plan.from_dict(d) == p
    import json

    assert Plan.from_json(json.dumps(d)) == p
    c = Plan(config={"model_type": "llama"}, method="full")
    dc = c.to_dict()
    assert dc["config"] == {"model_type": "llama"} and dc["model"] is None
    back = Plan.from_dict(dc)
    assert back == c and back.config == {"model_type": "llama"}
    assert p.replace(seq_len=1).seq_len == 1
    with pytest.raises(PlanError, match="seq_len must be between"):
        p.replace(seq_len=-1)
