"""Config parsing: errors say what to fix; head_dim, GQA and nested configs are read as transformers reads them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from estimator import (
    LEGACY_MODEL_TYPES,
    SUPPORTED_MODEL_TYPES,
    WORK_LIMITS,
    ConfigError,
    UnsupportedModelError,
    legacy_config,
    parse_config,
)

CONFIG_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "configs"


def _fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((CONFIG_DIR / f"{name}.json").read_text())
    return data


def test_not_a_mapping() -> None:
    with pytest.raises(ConfigError, match="a config must be a JSON object"):
        parse_config([1, 2])  # type: ignore[arg-type]


@pytest.mark.parametrize("cfg", [{}, {"model_type": ""}, {"model_type": 3}, {"hidden_size": 4096}])
def test_no_model_type(cfg: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="the config has no 'model_type'"):
        parse_config(cfg)


def test_unsupported_model_type_lists_the_supported_ones() -> None:
    with pytest.raises(UnsupportedModelError, match=r"model_type 'bert' is not supported; supported model types: "
                       r"llama, mistral, .*olmo2, .*deepseek_v3, .*RefinedWeb$"):  # fmt: skip
        parse_config({"model_type": "bert"})
    try:
        parse_config({"model_type": "t5"})
    except UnsupportedModelError as exc:
        assert all(mt in str(exc) for mt in SUPPORTED_MODEL_TYPES)
    assert issubclass(UnsupportedModelError, ConfigError)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("hidden_size", "4096", r"hidden_size must be an integer; got '4096'"),
        ("hidden_size", 128.5, r"hidden_size must be an integer; got 128.5"),
        ("num_hidden_layers", True, r"num_hidden_layers must be an integer; got True"),
        ("vocab_size", -1, r"vocab_size must not be negative; got -1"),
        ("num_hidden_layers", 0, r"hidden_size, num_hidden_layers and vocab_size must be positive"),
        ("num_key_value_heads", 3, r"num_attention_heads \(4\) must be a multiple of num_key_value_heads \(3\)"),
        ("num_attention_heads", 0, r"hidden_size \(128\) is not divisible by num_attention_heads \(0\)"),
        ("num_attention_heads", 3, r"hidden_size \(128\) is not divisible by num_attention_heads \(3\); set head_dim"),
        ("tie_word_embeddings", "yes", r"tie_word_embeddings must be true or false; got 'yes'"),
        ("attention_bias", 1, r"attention_bias must be true or false"),
    ],
)
def test_bad_field(field: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(_fixture("llama") | {field: value})


def test_integral_float_accepted() -> None:
    assert parse_config(_fixture("llama") | {"hidden_size": 128.0}).hidden_size == 128


def test_bad_mlp_only_layers_and_gemma3_text_config() -> None:
    with pytest.raises(ConfigError, match="mlp_only_layers must be a list of layer indices"):
        parse_config(_fixture("qwen2_moe") | {"mlp_only_layers": "0"})
    with pytest.raises(ConfigError, match="a gemma3 config needs a 'text_config' object"):
        parse_config({"model_type": "gemma3"})


def test_head_dim_honoured() -> None:
    a = parse_config(_fixture("llama") | {"head_dim": 64})
    assert (a.head_dim, a.q_dim, a.kv_dim) == (64, 256, 128)
    a = parse_config(_fixture("llama"))
    assert (a.head_dim, a.q_dim, a.kv_dim) == (32, 128, 64)
    # head_dim lets heads not divide hidden_size
    assert parse_config(_fixture("llama") | {"num_attention_heads": 3, "num_key_value_heads": 1,
                                             "head_dim": 64}).q_dim == 192  # fmt: skip
    assert parse_config(_fixture("gemma")).head_dim == 64
    assert parse_config({k: v for k, v in _fixture("gemma").items() if k != "head_dim"}).head_dim == 256


def test_gqa() -> None:
    a = parse_config(_fixture("llama"))
    assert (a.num_attention_heads, a.num_key_value_heads) == (4, 2)
    assert parse_config(_fixture("llama") | {"num_key_value_heads": None}).num_key_value_heads == 4
    assert parse_config({k: v for k, v in _fixture("llama").items() if k != "num_key_value_heads"}).kv_dim == 128
    assert parse_config({k: v for k, v in _fixture("mistral").items() if k != "num_key_value_heads"}
                        | {"num_attention_heads": 8}).num_key_value_heads == 8  # fmt: skip
    falcon = parse_config(_fixture("falcon"))
    assert (falcon.num_key_value_heads, falcon.fused_qkv, falcon.parallel_block) == (2, True, True)
    assert parse_config(_fixture("falcon_rw") | {"multi_query": True}).num_key_value_heads == 1


def test_gemma3_text_config_note() -> None:
    a = parse_config(_fixture("gemma3"))
    assert a.model_type == "gemma3_text" and a.source_model_type == "gemma3"
    assert a.vision is not None and a.vision.kind == "siglip" and any("SigLIP vision tower" in n for n in a.notes)
    tower = a.vision  # 64 / 16 = 4 patches a side, pooled 2 × 2 to 2 × 2 tokens
    assert (tower.depth, tower.embed_dim, tower.mm_tokens_per_image, tower.spatial_merge_size) == (1, 64, 4, 2)
    b = parse_config(_fixture("gemma3_text"))
    assert b.source_model_type == "gemma3_text" and not b.notes


def test_moe_layers() -> None:
    assert parse_config(_fixture("mixtral")).moe_layers == (0, 1)
    a = parse_config(_fixture("qwen2_moe") | {"num_hidden_layers": 4, "decoder_sparse_step": 2})
    assert a.moe_layers == (1, 3) and a.dense_layers == 2 and a.is_moe
    assert parse_config(_fixture("qwen3_moe") | {"mlp_only_layers": [0, 1]}).moe_layers == ()
    assert not parse_config(_fixture("llama")).is_moe


def test_every_supported_type_parses_from_its_fixture() -> None:
    seen = {parse_config(json.loads(p.read_text())).source_model_type for p in CONFIG_DIR.glob("*.json")}
    assert seen == set(SUPPORTED_MODEL_TYPES) | set(LEGACY_MODEL_TYPES)


def test_legacy_falcon_configs_read_as_transformers_falcon() -> None:
    old = parse_config(_fixture("RefinedWebModel"))
    assert (old.model_type, old.source_model_type) == ("falcon", "RefinedWebModel")
    assert (old.num_attention_heads, old.num_hidden_layers, old.num_key_value_heads) == (4, 2, 1)  # multi_query
    new = parse_config(_fixture("RefinedWeb"))
    assert (new.num_attention_heads, new.num_key_value_heads, new.norms_per_layer) == (4, 2, 2)  # ln_attn, ln_mlp
    assert any("legacy Falcon config" in n for n in new.notes)
    converted = legacy_config(_fixture("RefinedWeb"))
    assert converted["model_type"] == "falcon" and converted["new_decoder_architecture"] is True
    assert "auto_map" not in converted and "n_head" not in converted and converted["num_kv_heads"] == 2


@pytest.mark.parametrize("field", ["hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size"])
def test_a_size_field_is_never_guessed(field: str) -> None:
    config = {k: v for k, v in _fixture("llama").items() if k != field}
    with pytest.raises(ConfigError, match=f"the llama config has no '{field}': it sets the model's size"):
        parse_config(config)
    gpt2 = {k: v for k, v in _fixture("gpt2").items() if k not in ("n_embd", "hidden_size")}
    with pytest.raises(ConfigError, match=r"has no 'n_embd' \(or 'hidden_size'\)"):
        parse_config(gpt2)


@pytest.mark.parametrize(
    ("fixture", "field", "value"),
    [
        ("qwen2_moe", "num_hidden_layers", 10_000_000),
        ("llama", "num_hidden_layers", 1025),
        ("gpt2", "n_layer", 5000),
        ("qwen3_moe", "num_experts", 100_000),
        ("mixtral", "num_local_experts", 2048),
        ("qwen2_moe", "decoder_sparse_step", 10**9),
    ],
)
def test_fields_that_set_the_work_are_bounded(fixture: str, field: str, value: int) -> None:
    limit = WORK_LIMITS[field]
    with pytest.raises(ConfigError, match=f"{field} is {value}; at most {limit} is supported"):
        parse_config(_fixture(fixture) | {field: value})


def test_the_largest_moe_config_allowed_parses_in_linear_time() -> None:
    """1024 layers with every other one listed as dense: the MoE layers are the others (a set lookup per layer)."""
    layers = WORK_LIMITS["num_hidden_layers"]
    config = _fixture("qwen2_moe") | {"num_hidden_layers": layers, "mlp_only_layers": list(range(0, layers, 2)),
                                      "num_experts": WORK_LIMITS["num_experts"]}  # fmt: skip
    arch = parse_config(config)
    assert arch.moe_layers == tuple(range(1, layers, 2)) and arch.dense_layers == layers // 2
    with pytest.raises(ConfigError, match="mlp_only_layers lists 1025 layers; at most 1024"):
        parse_config(config | {"mlp_only_layers": list(range(layers + 1))})
    with pytest.raises(ConfigError, match=r"num_experts_per_tok \(16\) must not exceed the experts \(8\)"):
        parse_config(config | {"num_experts_per_tok": 16, "num_experts": 8})
