"""What the app tests share: the tiny configs and checkpoints the local Hub serves, and the tokens it knows."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.trainer.trainer_cases import LLAMA

GRANTED_TOKEN = "hf_granted_test_token"
UNGRANTED_TOKEN = "hf_not_granted_token"
API_TOKEN = "tuneplan-test-api-token-0123456789"
"""The server's API token in the tests that set one (``TUNEPLAN_API_TOKEN``)."""


def local_client(app: FastAPI, **kwargs: Any) -> TestClient:
    """A TestClient whose requests come from loopback (127.0.0.1) and name it as their host, as a browser on the
    server's own machine sends them."""
    return TestClient(app, base_url="http://127.0.0.1", client=("127.0.0.1", 50000), **kwargs)


def tiny_llama_config(**overrides: Any) -> dict[str, Any]:
    """A complete, small Llama config.json (hidden 64, 2 layers, vocab 256)."""
    config: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": 256,
        "hidden_size": 64,
        "intermediate_size": 172,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": False,
        "hidden_act": "silu",
        "torch_dtype": "bfloat16",
    }
    config.update(overrides)
    return config


# The tiny Llama the verify runs train (tests/app/test_jobs.py, test_browser_jobs.py): the trainer tests' own
# (every dimension a multiple of 64, as bitsandbytes' CPU kernels need), with its architecture named.
TINY_RUN_CONFIG: dict[str, Any] = {"architectures": ["LlamaForCausalLM"], **LLAMA}


def llama_tensors(config: dict[str, Any], dtype: str = "BF16") -> dict[str, tuple[str, list[int]]]:
    """The tensors of a Llama checkpoint with this config (names and shapes as transformers saves them)."""
    h = config["hidden_size"]
    i = config["intermediate_size"]
    v = config["vocab_size"]
    heads = config["num_attention_heads"]
    kv = config["num_key_value_heads"]
    d = config.get("head_dim", h // heads)
    out: dict[str, tuple[str, list[int]]] = {"model.embed_tokens.weight": (dtype, [v, h])}
    for layer in range(config["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        out[p + "self_attn.q_proj.weight"] = (dtype, [heads * d, h])
        out[p + "self_attn.k_proj.weight"] = (dtype, [kv * d, h])
        out[p + "self_attn.v_proj.weight"] = (dtype, [kv * d, h])
        out[p + "self_attn.o_proj.weight"] = (dtype, [h, heads * d])
        out[p + "mlp.gate_proj.weight"] = (dtype, [i, h])
        out[p + "mlp.up_proj.weight"] = (dtype, [i, h])
        out[p + "mlp.down_proj.weight"] = (dtype, [h, i])
        out[p + "input_layernorm.weight"] = (dtype, [h])
        out[p + "post_attention_layernorm.weight"] = (dtype, [h])
    out["model.norm.weight"] = (dtype, [h])
    if not config.get("tie_word_embeddings", False):
        out["lm_head.weight"] = (dtype, [v, h])
    return out


def count(tensors: dict[str, tuple[str, list[int]]]) -> int:
    total = 0
    for _, shape in tensors.values():
        n = 1
        for dim in shape:
            n *= dim
        total += n
    return total


TINY = tiny_llama_config()
TINY_TENSORS = llama_tensors(TINY)
TINY_PARAMS = count(TINY_TENSORS)
# A config that names no dtype (as GPT-2's and other configs written before transformers saved torch_dtype) over
# fp32 files that also hold a buffer beside the weights
NO_DTYPE = {k: v for k, v in TINY.items() if k != "torch_dtype"}
ROTARY_BUFFER: dict[str, tuple[str, list[int]]] = {"model.layers.0.self_attn.rotary_emb.inv_freq": ("F32", [8])}


def split_tensors(tensors: dict[str, tuple[str, list[int]]], parts: int) -> list[dict[str, tuple[str, list[int]]]]:
    items = list(tensors.items())
    size = -(-len(items) // parts)
    return [dict(items[k : k + size]) for k in range(0, len(items), size)]
