"""The make-it-fit advisor (the contract's ``advice``): each lever is the plan re-estimated with it applied."""

from __future__ import annotations

from typing import Any

import pytest

from estimator import Plan, estimate


def _advice(plan: Plan) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = estimate(plan).to_dict()["advice"]
    return out


@pytest.mark.parametrize(
    "plan",
    [Plan(model="llama-3.1-8b", gpu="rtx-4090", batch_size=4, seq_len=4096),
     Plan(model="llama-3.1-8b", method="full", gpu="a100-80gb", gradient_checkpointing=False),
     Plan(model="qwen2.5-1.5b", method="lora", batch_size=2, attn_implementation="eager")],
    ids=["qlora-4090", "full-a100", "lora-eager"],
)  # fmt: skip
def test_each_lever_is_the_plan_estimated_again_with_its_changes(plan: Plan) -> None:
    base = estimate(plan, with_advice=False).memory
    levers = _advice(plan)
    assert levers, plan
    for lever in levers:
        again = estimate(plan.replace(**lever["plan_changes"]), with_advice=False)
        assert lever["total"] == again.memory.total and lever["peak_allocated"] == again.memory.peak_allocated
        assert lever["fit_bytes"] == again.memory.fit_bytes
        assert lever["saves_bytes"] == base.total - again.memory.total > 0, lever["lever"]
        if plan.gpu is not None:
            assert lever["fits"] == again.to_dict()["fit"]["fits"], lever["lever"]
            assert lever["step_s"] == pytest.approx(again.time.step_s if again.time else None, rel=1e-6)
    assert [lv["saves_bytes"] for lv in levers] == sorted((lv["saves_bytes"] for lv in levers), reverse=True)


def test_accumulation_keeps_the_tokens_per_optimizer_step() -> None:
    plan = Plan(model="llama-3.1-8b", gpu="rtx-4090", batch_size=4, seq_len=4096, grad_accum_steps=2)
    levers = {lv["lever"]: lv for lv in _advice(plan)}
    tokens = plan.batch_size * plan.seq_len * plan.grad_accum_steps
    for key in ("micro_batch", "shorter_sequence"):
        c = plan.to_dict() | levers[key]["plan_changes"]
        assert c["batch_size"] * c["seq_len"] * c["grad_accum_steps"] == tokens, key
        assert levers[key]["fits"] is True  # the least change that fits the card
    # the least change that fits: a micro-batch of 2 does not fit a 4090 here, 1 does
    assert levers["micro_batch"]["plan_changes"] == {"batch_size": 1, "grad_accum_steps": 8}
    assert not estimate(plan.replace(batch_size=2, grad_accum_steps=4)).to_dict()["fit"]["fits"]


def test_levers_follow_the_plan() -> None:
    full_plan = Plan(model="llama-3.1-8b", method="full", gradient_checkpointing=False, batch_size=4, seq_len=4096)
    full = {lv["lever"] for lv in _advice(full_plan)}
    assert {"gradient_checkpointing", "optimizer_8bit"} <= full and "qlora" not in full
    assert "lora" in {lv["lever"] for lv in _advice(Plan(model="llama-3.1-8b", method="full"))}
    lora = {lv["lever"] for lv in _advice(Plan(model="llama-3.1-8b", method="lora"))}
    assert "qlora" in lora and "gradient_checkpointing" not in lora  # already on: nothing to save
    chunked = {lv["lever"] for lv in _advice(Plan(model="llama-3.1-8b", loss="chunked"))}
    assert "chunked_loss" not in chunked
    targets = {lv["lever"]: lv for lv in _advice(Plan(model="gpt2", method="lora", device="cpu"))}
    # GPT-2's attention output and MLP output are both c_proj: the attention one is named with its parent
    assert targets["fewer_targets"]["plan_changes"] == {"target_modules": ["c_attn", "attn.c_proj"]}


def test_a_card_without_bfloat16_needs_fp16_first() -> None:
    levers = _advice(Plan(model="llama-3.1-8b", gpu="t4"))
    assert levers[0]["lever"] == "fp16" and levers[0]["required"] and levers[0]["fits"] is True
    assert levers[0]["plan_changes"] == {"dtype": "float16"}
    assert all(not lv["fits"] for lv in levers[1:])  # still bf16: none of the others runs on a T4
    assert all(lv["lever"] != "fp16" for lv in _advice(Plan(model="llama-3.1-8b", gpu="l4")))


def test_without_a_gpu_the_least_change() -> None:
    levers = {lv["lever"]: lv for lv in _advice(Plan(model="llama-3.1-8b", method="lora", batch_size=4))}
    assert levers["micro_batch"]["plan_changes"] == {"batch_size": 2, "grad_accum_steps": 2}
    assert levers["shorter_sequence"]["plan_changes"] == {"seq_len": 1024, "grad_accum_steps": 2}
    assert levers["sharding"]["plan_changes"] == {"sharding": "zero3", "num_gpus": 2}
    assert all(lv["fits"] is None and lv["step_s"] is None for lv in levers.values())
