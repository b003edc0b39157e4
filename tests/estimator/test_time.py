"""The time model: FLOPs counted by hand, its measured figures re-derived from the H200 runs, the H200's step times,
MFU sources, tokens and run length, and the time and cost keys of the contract.

The FLOP count is also held exactly to torch's own FLOP counter on real CPU steps (tests/trainer/test_time_flops.py).
"""

from __future__ import annotations

import json
import math
import statistics
from importlib import resources

import pytest

from bench import time_model
from estimator import (
    Plan,
    PlanError,
    adapter_plan,
    build_inventory,
    catalog,
    default_mfu,
    estimate,
    parse_config,
    step_flops,
    step_time,
    throughput,
)

DATA = json.loads((resources.files("estimator") / "data" / "throughput.json").read_text())
_LLAMA_8B = catalog.find_model("llama-3.1-8b")
assert _LLAMA_8B is not None
LLAMA_8B = _LLAMA_8B


def _time(plan: Plan, gpu: str = "h100-sxm") -> dict:
    return estimate(plan.replace(gpu=gpu)).to_dict()["time"]


def test_linear_and_head_flops_by_hand() -> None:
    """Llama 3.1 8B LoRA, no checkpointing: every count from the config's numbers, not the inventory."""
    c = LLAMA_8B.config
    h, i, L, V = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["vocab_size"]
    q, kv = c["num_attention_heads"] * 128, c["num_key_value_heads"] * 128
    b, s, r = 2, 1024, 16
    T = b * s
    plan = Plan(model="llama-3.1-8b", method="lora", batch_size=b, seq_len=s, gradient_checkpointing=False)
    inv = build_inventory(parse_config(c))
    f = step_flops(inv, adapter_plan(inv, plan), plan)
    per_layer = h * q + 2 * h * kv + q * h + 3 * h * i
    assert f.parts["linear_forward"] == 2 * T * per_layer * L
    # no input gradient for the first layer's q/k/v: the embeddings' output needs none without checkpointing
    assert f.parts["linear_backward"] == 2 * T * per_layer * L - 2 * T * h * (q + 2 * kv)
    lora_in_out = (h + q) + (h + kv) * 2 + (q + h) + 2 * (h + i) + (i + h)
    assert f.parts["lora_forward"] == 2 * T * r * lora_in_out * L
    assert f.parts["head_forward"] == f.parts["head_backward"] == 2 * T * h * V
    # sdpa on CUDA at bf16: flash kernel, causal half, QKᵀ recomputed in the backward (2.5 × the forward)
    assert f.parts["attention_forward"] == 4 * b * s * s * q * L // 2
    assert f.parts["attention_backward"] == f.parts["attention_forward"] * 5 // 2
    assert set(f.by_dtype) == {"bfloat16", "float32"}  # LoRA A/B run in fp32
    assert f.by_dtype["float32"] == f.parts["lora_forward"] + f.parts["lora_backward"]


def test_checkpointing_recomputes_the_layers_but_not_the_head() -> None:
    plan = Plan(model="llama-3.1-8b", method="full", batch_size=1, seq_len=512)
    inv = build_inventory(parse_config(LLAMA_8B.config))
    with_gc = step_flops(inv, adapter_plan(inv, plan), plan)
    without = step_flops(inv, adapter_plan(inv, plan), plan.replace(gradient_checkpointing=False))
    c = LLAMA_8B.config
    down = 2 * 512 * c["hidden_size"] * c["intermediate_size"] * c["num_hidden_layers"]
    # the recompute stops at the last saved tensor: each layer's down projection is not run again
    layers_forward = without.parts["linear_forward"] + without.parts["attention_forward"]
    assert with_gc.parts["recompute"] == layers_forward - down
    assert with_gc.total - without.total == with_gc.parts["recompute"]
    assert "recompute" not in without.parts


def test_qlora_upcast_runs_attention_and_head_in_fp32() -> None:
    plan = Plan(model="llama-3.1-8b", method="qlora", batch_size=1, seq_len=2048, gradient_checkpointing=False)
    inv = build_inventory(parse_config(LLAMA_8B.config))
    f = step_flops(inv, adapter_plan(inv, plan), plan)
    fp32 = sum(f.parts[k] for k in ("attention_forward", "attention_backward", "head_forward", "head_backward"))
    fp32 += f.parts["lora_forward"] + f.parts["lora_backward"]
    assert f.by_dtype["float32"] == fp32
    # fp32 q/k/v with grouped KV heads: SDPA's math path, the whole s × s and no recompute of QKᵀ
    assert f.parts["attention_backward"] == 2 * f.parts["attention_forward"]
    assert f.dequant_bytes == int(inv.quantizable * 2.5 * 2)  # forward and backward, 0.5 B read + 2 B written
    no_upcast = step_flops(inv, adapter_plan(inv, plan), plan.replace(prepare_kbit=False))
    # without the upcast only LoRA's A and B run in fp32
    assert no_upcast.by_dtype["float32"] == no_upcast.parts["lora_forward"] + no_upcast.parts["lora_backward"]


def test_measured_figures_are_what_the_h200_runs_give() -> None:
    """throughput.json's host seconds per op and the H200's MFU are re-derived from bench/results/gpu_h200.json."""
    derived = time_model.calibrate()
    assert DATA["host"]["op_s"] == derived["op_s"]
    h200 = DATA["mfu"]["by_gpu"]["h200"]
    assert h200["kind"] == "measured" and h200["mfu"] == derived["mfu"]
    assert derived["mfu_runs"] == ["llama-3.1-8b/qlora/gc/s2048", "llama-3.1-8b/qlora/nogc/s2048"]


def test_h200_step_times() -> None:
    """Every H200 run's mean step time against the model (2 timed steps each: run-to-run noise is ±25 % on the
    host-bound runs, e.g. 0.10 s and 0.15 s for the same 1B LoRA step at 2,048 and 512 tokens)."""
    runs = time_model.cases()
    assert len(runs) == 24
    errors = {r["name"]: (r["estimated_s"] - r["measured_s"]) / r["measured_s"] for r in runs}
    assert max(abs(e) for e in errors.values()) < 0.5, errors
    assert statistics.median(abs(e) for e in errors.values()) < 0.12, errors
    gpu_bound = [r["name"] for r in runs if r["bound"] == "gpu"]
    assert gpu_bound == ["llama-3.1-8b/qlora/gc/s2048", "llama-3.1-8b/qlora/nogc/s2048"]
    assert all(abs(errors[n]) < 0.05 for n in gpu_bound), errors


def test_mfu_sources() -> None:
    public = default_mfu("rtx-4090")
    assert public.kind == "public" and public.text.startswith("public figures, until a verify run on this card")
    assert public.source.startswith("https://")
    assert default_mfu("h200").kind == "measured"
    assert default_mfu("a100-80gb").value > default_mfu("h100-sxm").value  # as the public figures have it
    t = _time(Plan(model="llama-3.1-8b", method="lora", batch_size=8, mfu=0.5))
    assert t["mfu"] == {"value": 0.5, "kind": "plan", "text": "set in the plan (mfu)", "source": "plan"}


def test_mfu_is_an_input_of_the_time() -> None:
    plan = Plan(model="llama-3.1-8b", method="lora", batch_size=16, seq_len=4096)
    a, b = _time(plan.replace(mfu=0.2)), _time(plan.replace(mfu=0.4))
    assert a["bound"] == b["bound"] == "gpu"
    assert a["compute_s"] == pytest.approx(2 * b["compute_s"], rel=1e-5)
    assert a["memory_s"] == b["memory_s"]
    with pytest.raises(PlanError, match="mfu must be"):
        Plan(model="llama-3.1-8b", mfu=1.5)


def test_tokens_steps_and_run_length() -> None:
    plan = Plan(model="llama-3.1-8b", method="qlora", batch_size=4, seq_len=2048, grad_accum_steps=4,
                num_gpus=2, dataset_tokens=10_000_000, epochs=3)  # fmt: skip
    t = _time(plan)
    assert t["tokens_per_step"] == 4 * 2048 * 4 * 2
    assert t["run_tokens"] == 30_000_000 and t["steps"] == math.ceil(30_000_000 / t["tokens_per_step"])
    assert t["run_s"] == pytest.approx(t["steps"] * t["step_s"], rel=1e-6)
    assert t["tokens_per_s"] == pytest.approx(t["tokens_per_step"] / t["step_s"], rel=1e-5)
    assert t["tokens_per_s_per_gpu"] == pytest.approx(t["tokens_per_s"] / 2, rel=1e-5)
    one = _time(plan.replace(grad_accum_steps=1))
    # accumulation repeats the micro-batches; the optimizer's update runs once per step
    assert t["compute_s"] == pytest.approx(4 * one["compute_s"], rel=1e-6)
    assert _time(plan.replace(train_tokens=1_000_000))["run_tokens"] == 1_000_000  # the budget wins
    assert _time(plan.replace(dataset_tokens=0))["run_s"] is None


def test_time_and_cost_in_the_contract() -> None:
    d = estimate(Plan(model="llama-3.1-8b", method="qlora", gpu="h100-sxm", train_tokens=10**8)).to_dict()
    assert d["time"]["step_s"] > 0 and d["time"]["tokens_per_s"] > 0 and d["time"]["run_hours"] > 0
    assert d["cost"] and all(c["gpu"] == "h100-sxm" and c["date"] and c["source"] for c in d["cost"])
    cheapest = d["cost"][0]
    assert cheapest["usd_per_gpu_hour"] == min(c["usd_per_gpu_hour"] for c in d["cost"])
    assert cheapest["run_usd"] == pytest.approx(cheapest["usd_per_hour"] * d["time"]["run_s"] / 3600, abs=0.01)
    no_gpu = estimate(Plan(model="llama-3.1-8b")).to_dict()
    assert no_gpu["time"] is None and no_gpu["cost"] == []


def test_a_card_without_the_plans_dtype_has_no_time() -> None:
    assert _time(Plan(model="llama-3.2-1b", method="lora"), "t4") is None  # no bf16 tensor cores
    t = _time(Plan(model="llama-3.2-1b", method="lora", dtype="float16"), "t4")
    assert t is not None and t["peak_tflops"]["float16"] == 65.0


def test_every_catalog_gpu_has_its_peaks() -> None:
    for gpu in catalog.gpus():
        peak = throughput(gpu)
        assert peak.tflops["float16"] > 0 and peak.tflops["float32"] > 0 and peak.source, gpu.id
        if gpu.bf16_tflops:
            assert peak.tflops["bfloat16"] == gpu.bf16_tflops


def test_step_time_is_pure_and_repeatable() -> None:
    plan = Plan(model="qwen2.5-1.5b", method="lora", batch_size=2)
    inv = build_inventory(parse_config(catalog.find_model("qwen2.5-1.5b").config))  # type: ignore[union-attr]
    gpu = catalog.find_gpu("l40s")
    assert gpu is not None
    a, b = step_time(inv, adapter_plan(inv, plan), plan, gpu), step_time(inv, adapter_plan(inv, plan), plan, gpu)
    assert a == b and a is not None and a.step_s == max(a.gpu_s, a.host_s)
