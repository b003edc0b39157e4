"""Tiny model configs for the trainer tests: every dimension a multiple of 64 (bitsandbytes' CPU kernels need it)."""

from __future__ import annotations

from typing import Any

from estimator import Plan

LLAMA: dict[str, Any] = {
    "model_type": "llama",
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 1024,
    "max_position_embeddings": 512,
    "tie_word_embeddings": False,
}

QWEN2_TIED: dict[str, Any] = {
    "model_type": "qwen2",
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 1024,
    "max_position_embeddings": 512,
    "tie_word_embeddings": True,
}

GPT2: dict[str, Any] = {
    "model_type": "gpt2",
    "n_embd": 128,
    "n_layer": 2,
    "n_head": 4,
    "vocab_size": 1024,
    "n_positions": 512,
    "bos_token_id": 0,
    "eos_token_id": 0,
}

MIXTRAL: dict[str, Any] = {
    "model_type": "mixtral",
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 1024,
    "num_local_experts": 4,
    "num_experts_per_tok": 2,
    "max_position_embeddings": 512,
}

BATCH = 2
SEQ = 64


def dist_plan(method: Any, sharding: Any, n: int, strategy: Any = "full_shard") -> Plan:
    """A data-parallel plan of the tiny Llama on ``n`` CPU ranks, as tests/trainer/test_dist_runs.py runs it: fp32 for
    full fine-tuning, bf16 else, no dropout, no padding."""
    return Plan(config=LLAMA, batch_size=BATCH, seq_len=SEQ, device="cpu", method=method, sharding=sharding,
                num_gpus=n, fsdp_strategy=strategy, dtype="float32" if method == "full" else "bfloat16",
                lora_dropout=0.0, padding="none")  # fmt: skip
