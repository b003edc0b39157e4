"""Serving the fine-tuned model: weights by format, the KV cache and the total (the contract's ``serving``)."""

from __future__ import annotations

from typing import Any

import pytest

from estimator import Plan, catalog, estimate


def _serving(**plan: Any) -> dict[str, Any]:
    out: dict[str, Any] = estimate(Plan(**plan)).to_dict()["serving"]
    return out


def test_the_kv_cache_is_two_tensors_per_layer_per_token() -> None:
    # Llama 3.1 8B: 32 layers × 8 KV heads × head dim 128 × 2 (K and V) × 2 bytes = 128 KiB per token
    s = _serving(model="llama-3.1-8b", serve_context_len=8192, serve_concurrency=4)
    assert s["kv_cache_per_token"] == 131_072 and s["kv_cache"] == 131_072 * 8192 * 4
    # GPT-2: 12 layers × 12 heads × 64, no grouped KV heads; context 0 serves the training seq_len (1,024 here)
    s = _serving(model="gpt2", device="cpu")
    assert s["kv_cache_per_token"] == 2 * 12 * 768 * 2 and s["context_len"] == 1024 and s["concurrency"] == 1


def test_weights_by_format() -> None:
    """On the CPU (no allocator rounding) the served weights are exact sums of the parameters."""
    est = estimate(Plan(model="qwen2.5-0.5b", method="qlora", device="cpu"))
    params, lora = est.inventory.total, est.adapters.lora_params
    merged = _serving(model="qwen2.5-0.5b", method="qlora", device="cpu")
    assert merged["format"] == "merged_16bit" and merged["weights"] == 2 * params
    four = _serving(model="qwen2.5-0.5b", method="qlora", device="cpu", serve_format="merged_4bit")
    adapter = _serving(model="qwen2.5-0.5b", method="qlora", device="cpu", serve_format="base_adapter")
    assert four["weights"] < merged["weights"] and adapter["weights"] == four["weights"] + 4 * lora
    lora_base = _serving(model="qwen2.5-0.5b", method="lora", device="cpu", serve_format="base_adapter")
    assert lora_base["weights"] == 2 * params + 4 * lora
    full = _serving(model="qwen2.5-0.5b", method="full", device="cpu", serve_format="base_adapter")
    assert full["weights"] == 2 * params  # no adapter: the fine-tuned weights themselves


def test_the_total_adds_up_and_fits_against_the_plans_gpu() -> None:
    s = _serving(model="llama-3.1-8b", gpu="rtx-4090", serve_context_len=4096)
    assert s["total"] == s["weights"] + s["kv_cache"] + s["activations"] + s["overhead"]
    gpu = catalog.find_gpu("rtx-4090")
    assert gpu is not None and s["usable_bytes"] == gpu.usable_bytes and s["fits"] == (s["total"] <= gpu.usable_bytes)
    assert s["overhead"] > 0 and "fits" not in _serving(model="llama-3.1-8b")  # no GPU: no verdict
    assert _serving(model="llama-3.1-8b", device="cpu")["overhead"] == 0


@pytest.mark.parametrize("concurrency", [1, 8])
def test_more_sequences_more_cache(concurrency: int) -> None:
    one = _serving(model="llama-3.2-1b", serve_context_len=2048)
    many = _serving(model="llama-3.2-1b", serve_context_len=2048, serve_concurrency=concurrency)
    assert many["kv_cache"] == concurrency * one["kv_cache"] and many["weights"] == one["weights"]
