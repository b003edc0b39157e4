"""config.json -> Architecture: the numbers that decide every tensor of a causal LM.

A config is data: it is read as a mapping and never executed (no ``auto_map``, no remote code). Field names
are the Hugging Face ones; each family's defaults are the defaults of its transformers ``*Config`` class
(transformers 5.x), since a Hub config.json omits fields equal to them.

Two exceptions to "absent means the transformers default":

* The fields that set the model's size (``SIZE_FIELDS``: width, depth, heads, vocabulary, MLP width where its
  family has no formula for it) are never guessed: ``save_pretrained`` always writes them (they are not fields of
  the base ``PretrainedConfig``, so its diff against the defaults keeps them), and a config without one is not the
  model's real config. A default of 4096 for a missing ``hidden_size`` would size another model.
* The fields that set the amount of work of an estimate (``WORK_LIMITS``: layers, experts, layer lists) are bounded
  to generous real-world limits, and parsing is linear in the number of layers, so no config can make an estimate
  slow or large.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._errors import ConfigError, UnsupportedModelError

Norm = str  # "rmsnorm" | "layernorm"

MAX_LAYERS = 1024
"""Decoder layers (``num_hidden_layers``); the deepest published causal LMs have under 200."""
MAX_EXPERTS = 1024
"""Routed experts per MoE layer (``num_experts``); published models have at most a few hundred."""

WORK_LIMITS: dict[str, int] = {
    "num_hidden_layers": MAX_LAYERS,
    "n_layer": MAX_LAYERS,
    "num_experts": MAX_EXPERTS,
    "num_local_experts": MAX_EXPERTS,
    "num_experts_per_tok": MAX_EXPERTS,
    "decoder_sparse_step": MAX_LAYERS,
}
"""The config fields that set how much work an estimate does, with their upper bounds (``mlp_only_layers`` holds at
most ``MAX_LAYERS`` entries). A larger value is a ``ConfigError`` that names the field and the limit."""

SIZE_FIELDS: tuple[str, ...] = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                "num_attention_heads")  # fmt: skip
"""Fields that set the model's size: required when the family's parser reads them (under any alias)."""
SIZE_FIELDS_SET = frozenset(SIZE_FIELDS)


@dataclass(frozen=True)
class Architecture:
    """The structure of a decoder-only transformer, in Hugging Face field names where one exists."""

    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    max_position_embeddings: int
    tie_word_embeddings: bool
    hidden_act: str = "silu"
    # attention
    qkv_bias: bool = False
    o_bias: bool = False
    fused_qkv: bool = False  # one query_key_value / qkv_proj / c_attn linear
    qk_norm: str = "none"  # "none" | "head" (weight of head_dim) | "full" (weight of a*d / k*d, OLMo 2)
    qk_norm_bias: bool = False
    # MLP
    mlp_gated: bool = True  # gate/up/down (SwiGLU, GeGLU) vs up/down (GELU)
    fused_gate_up: bool = False  # Phi-3 gate_up_proj
    mlp_bias: bool = False
    # norms
    norm: Norm = "rmsnorm"
    norm_bias: bool = False
    norms_per_layer: int = 2
    parallel_block: bool = False  # attention and MLP read the same normalized input (GPT-NeoX, Phi, Falcon)
    # embeddings / head
    position_embeddings: int = 0  # learned absolute positions (GPT-2 wpe)
    lm_head_bias: bool = False
    # mixture of experts
    num_experts: int = 0
    num_experts_per_tok: int = 0
    moe_intermediate_size: int = 0
    shared_expert_intermediate_size: int = 0
    moe_layers: tuple[int, ...] = ()
    # soft-capping (Gemma 2)
    attn_logit_softcapping: float = 0.0
    final_logit_softcapping: float = 0.0
    # bookkeeping
    source_model_type: str = ""
    notes: tuple[str, ...] = ()

    @property
    def q_dim(self) -> int:
        return self.num_attention_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_key_value_heads * self.head_dim

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def dense_layers(self) -> int:
        return self.num_hidden_layers - len(self.moe_layers)


SUPPORTED_MODEL_TYPES: tuple[str, ...] = (
    "llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma", "gemma2",
    "gemma3_text", "gemma3", "phi", "phi3", "gpt2", "gpt_neox", "falcon", "starcoder2", "olmo2",
)  # fmt: skip


def parse_config(config: Mapping[str, Any]) -> Architecture:
    """Read a Hugging Face config.json mapping into an Architecture.

    Raises:
        ConfigError: the mapping is not a config of a causal LM, or a field has the wrong type.
        UnsupportedModelError: its ``model_type`` is not one modelled exactly (the message lists those that are).
    """
    if not isinstance(config, Mapping):
        raise ConfigError("a config must be a JSON object (the contents of config.json)")
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise ConfigError("the config has no 'model_type'; upload the model's config.json as published on the Hub")
    notes: list[str] = []
    if model_type == "gemma3":
        text = config.get("text_config")
        if not isinstance(text, Mapping):
            raise ConfigError("a gemma3 config needs a 'text_config' object")
        notes.append("gemma3: the language model (text_config) only; the vision tower is not counted")
        arch = _parse(dict(text, model_type="gemma3_text"), "gemma3_text")
        return _with(arch, source_model_type="gemma3", notes=tuple(notes) + arch.notes)
    if model_type not in _PARSERS:
        raise UnsupportedModelError(
            f"model_type {model_type!r} is not supported; supported model types: " + ", ".join(SUPPORTED_MODEL_TYPES)
        )
    return _parse(config, model_type)


def _with(arch: Architecture, **changes: Any) -> Architecture:
    from dataclasses import replace

    return replace(arch, **changes)


def _parse(config: Mapping[str, Any], model_type: str) -> Architecture:
    r = _Reader(config, model_type)
    arch = _PARSERS[model_type](r)
    if arch.hidden_size <= 0 or arch.num_hidden_layers <= 0 or arch.vocab_size <= 0:
        raise ConfigError("hidden_size, num_hidden_layers and vocab_size must be positive")
    if arch.num_attention_heads <= 0 or arch.num_key_value_heads <= 0 or arch.head_dim <= 0:
        raise ConfigError("num_attention_heads, num_key_value_heads and head_dim must be positive")
    if arch.num_experts_per_tok > arch.num_experts:
        raise ConfigError(
            f"num_experts_per_tok ({arch.num_experts_per_tok}) must not exceed the experts ({arch.num_experts})"
        )
    if arch.num_attention_heads % arch.num_key_value_heads:
        raise ConfigError(
            f"num_attention_heads ({arch.num_attention_heads}) must be a multiple of "
            f"num_key_value_heads ({arch.num_key_value_heads})"
        )
    return _with(arch, source_model_type=arch.source_model_type or model_type)


class _Reader:
    def __init__(self, config: Mapping[str, Any], model_type: str) -> None:
        self.c = config
        self.model_type = model_type

    def num(self, name: str, default: int | None = None, *aliases: str) -> int:
        """The integer field ``name`` (or an alias); ``default`` when absent, except for ``SIZE_FIELDS``."""
        for key in (name, *aliases):
            value = self.c.get(key)
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, int):
                    if not (isinstance(value, float) and value.is_integer()):
                        raise ConfigError(f"{key} must be an integer; got {value!r}")
                    value = int(value)
                if value < 0:
                    raise ConfigError(f"{key} must not be negative; got {value}")
                return _within_limit(key, value)
        if default is None or not SIZE_FIELDS_SET.isdisjoint((name, *aliases)):
            also = f" (or {', '.join(repr(a) for a in aliases)})" if aliases else ""
            raise ConfigError(
                f"the {self.model_type} config has no '{name}'{also}: it sets the model's size, so it is never "
                "guessed; send the model's config.json as published"
            )
        return default

    def opt_int(self, name: str) -> int | None:
        value = self.c.get(name)
        return None if value is None else self.num(name)

    def flag(self, name: str, default: bool) -> bool:
        value = self.c.get(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false; got {value!r}")
        return value

    def text(self, name: str, default: str) -> str:
        value = self.c.get(name)
        return value if isinstance(value, str) else default

    def head_dim(self, hidden: int, heads: int) -> int:
        explicit = self.opt_int("head_dim")
        if explicit:
            return explicit
        if heads <= 0 or hidden % heads:
            raise ConfigError(f"hidden_size ({hidden}) is not divisible by num_attention_heads ({heads}); set head_dim")
        return hidden // heads

    def kv_heads(self, heads: int, name: str = "num_key_value_heads") -> int:
        value = self.opt_int(name)
        return heads if value is None else value

    def max_pos(self, default: int) -> int:
        return self.num("max_position_embeddings", default)


def _within_limit(key: str, value: int) -> int:
    limit = WORK_LIMITS.get(key)
    if limit is not None and value > limit:
        raise ConfigError(
            f"{key} is {value}; at most {limit} is supported (published models stay far below it): "
            "check the config.json"
        )
    return value


def _llama_like(r: _Reader, *, defaults: dict[str, Any], **fields: Any) -> Architecture:
    hidden = r.num("hidden_size", defaults.get("hidden_size"))
    heads = r.num("num_attention_heads", defaults.get("num_attention_heads"))
    # a family's own default (Mistral's 8 KV heads, Gemma's head_dim 256) applies only when the key is absent
    absent = {k: defaults[k] for k in ("num_key_value_heads", "head_dim") if k in defaults and k not in r.c}
    kwargs: dict[str, Any] = dict(
        model_type=r.model_type,
        vocab_size=r.num("vocab_size", defaults.get("vocab_size")),
        hidden_size=hidden,
        intermediate_size=r.num("intermediate_size", defaults.get("intermediate_size")),
        num_hidden_layers=r.num("num_hidden_layers", defaults.get("num_hidden_layers")),
        num_attention_heads=heads,
        num_key_value_heads=absent.get("num_key_value_heads") or r.kv_heads(heads),
        head_dim=absent.get("head_dim") or r.head_dim(hidden, heads),
        max_position_embeddings=r.max_pos(defaults.get("max_position_embeddings", 2048)),
        tie_word_embeddings=r.flag("tie_word_embeddings", defaults.get("tie_word_embeddings", False)),
        hidden_act=r.text("hidden_act", defaults.get("hidden_act", "silu")),
    )
    kwargs.update(fields)
    return Architecture(**kwargs)


def _llama(r: _Reader) -> Architecture:
    bias = r.flag("attention_bias", False)
    return _llama_like(
        r,
        defaults=dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                      num_attention_heads=32),
        qkv_bias=bias, o_bias=bias, mlp_bias=r.flag("mlp_bias", False),
    )  # fmt: skip


def _mistral(r: _Reader) -> Architecture:
    return _llama_like(
        r,
        defaults=dict(vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=4096 * 32),
    )  # fmt: skip


def _mixtral(r: _Reader) -> Architecture:
    layers = r.num("num_hidden_layers", 32)
    return _llama_like(
        r,
        defaults=dict(vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=4096 * 32),
        num_experts=r.num("num_local_experts", 8),
        num_experts_per_tok=r.num("num_experts_per_tok", 2),
        moe_intermediate_size=r.num("intermediate_size", 14336),
        moe_layers=tuple(range(layers)),
    )  # fmt: skip


def _qwen2(r: _Reader) -> Architecture:
    return _llama_like(
        r,
        defaults=dict(vocab_size=151936, hidden_size=4096, intermediate_size=22016, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=32768),
        qkv_bias=True,
    )  # fmt: skip


def _moe_layer_indices(r: _Reader, layers: int, experts: int) -> tuple[int, ...]:
    """Layers whose MLP is the sparse MoE block (transformers' Qwen2-MoE/Qwen3-MoE rule); linear in the layers."""
    if experts <= 0:
        return ()
    step = r.num("decoder_sparse_step", 1)
    only = r.c.get("mlp_only_layers") or []
    if not isinstance(only, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in only):
        raise ConfigError("mlp_only_layers must be a list of layer indices")
    if len(only) > MAX_LAYERS:
        raise ConfigError(f"mlp_only_layers lists {len(only)} layers; at most {MAX_LAYERS} is supported")
    dense = set(only)
    return tuple(i for i in range(layers) if i not in dense and step > 0 and (i + 1) % step == 0)


def _qwen2_moe(r: _Reader) -> Architecture:
    layers = r.num("num_hidden_layers", 24)
    experts = r.num("num_experts", 60, "num_local_experts")
    return _llama_like(
        r,
        defaults=dict(vocab_size=151936, hidden_size=2048, intermediate_size=5632, num_hidden_layers=24,
                      num_attention_heads=16, num_key_value_heads=16, max_position_embeddings=32768),
        qkv_bias=True,
        num_experts=experts,
        num_experts_per_tok=r.num("num_experts_per_tok", 4),
        moe_intermediate_size=r.num("moe_intermediate_size", 1408),
        shared_expert_intermediate_size=r.num("shared_expert_intermediate_size", 5632),
        moe_layers=_moe_layer_indices(r, layers, experts),
    )  # fmt: skip


def _qwen3(r: _Reader) -> Architecture:
    bias = r.flag("attention_bias", False)
    return _llama_like(
        r,
        defaults=dict(vocab_size=151936, hidden_size=4096, intermediate_size=22016, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=32, head_dim=128, max_position_embeddings=32768),
        qkv_bias=bias, o_bias=bias, qk_norm="head",
    )  # fmt: skip


def _qwen3_moe(r: _Reader) -> Architecture:
    layers = r.num("num_hidden_layers", 24)
    experts = r.num("num_experts", 128, "num_local_experts")
    bias = r.flag("attention_bias", False)
    return _llama_like(
        r,
        defaults=dict(vocab_size=151936, hidden_size=2048, intermediate_size=6144, num_hidden_layers=24,
                      num_attention_heads=32, num_key_value_heads=4, max_position_embeddings=32768),
        qkv_bias=bias, o_bias=bias, qk_norm="head",
        num_experts=experts,
        num_experts_per_tok=r.num("num_experts_per_tok", 8),
        moe_intermediate_size=r.num("moe_intermediate_size", 768),
        moe_layers=_moe_layer_indices(r, layers, experts),
    )  # fmt: skip


_GEMMA_DEFAULTS = dict(vocab_size=256000, hidden_size=3072, intermediate_size=24576, num_hidden_layers=28,
                       num_attention_heads=16, num_key_value_heads=16, head_dim=256, max_position_embeddings=8192,
                       tie_word_embeddings=True, hidden_act="gelu_pytorch_tanh")  # fmt: skip


def _gemma(r: _Reader) -> Architecture:
    bias = r.flag("attention_bias", False)
    return _llama_like(r, defaults=_GEMMA_DEFAULTS, qkv_bias=bias, o_bias=bias)


def _softcaps(r: _Reader, attn: float, final: float) -> dict[str, float]:
    out = {}
    for name, default in (("attn_logit_softcapping", attn), ("final_logit_softcapping", final)):
        value = r.c.get(name, default)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ConfigError(f"{name} must be a number or null; got {value!r}")
        out[name] = float(value or 0.0)
    return out


def _gemma2(r: _Reader) -> Architecture:
    bias = r.flag("attention_bias", False)
    d = dict(_GEMMA_DEFAULTS, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
             num_attention_heads=8, num_key_value_heads=4)  # fmt: skip
    return _llama_like(r, defaults=d, qkv_bias=bias, o_bias=bias, norms_per_layer=4, **_softcaps(r, 50.0, 30.0))


def _gemma3_text(r: _Reader) -> Architecture:
    bias = r.flag("attention_bias", False)
    d = dict(_GEMMA_DEFAULTS, vocab_size=262208, hidden_size=2304, intermediate_size=9216,
             num_hidden_layers=26, num_attention_heads=8, num_key_value_heads=4,
             max_position_embeddings=131072)  # fmt: skip
    return _llama_like(r, defaults=d, qkv_bias=bias, o_bias=bias, norms_per_layer=4, qk_norm="head")


def _phi(r: _Reader) -> Architecture:
    return _llama_like(
        r,
        defaults=dict(vocab_size=51200, hidden_size=2048, intermediate_size=8192, num_hidden_layers=24,
                      num_attention_heads=32, hidden_act="gelu_new"),
        qkv_bias=True, o_bias=True, mlp_gated=False, mlp_bias=True, norm="layernorm", norm_bias=True,
        norms_per_layer=1, parallel_block=True, lm_head_bias=True,
        qk_norm="head" if r.flag("qk_layernorm", False) else "none", qk_norm_bias=True,
    )  # fmt: skip


def _phi3(r: _Reader) -> Architecture:
    return _llama_like(
        r,
        defaults=dict(vocab_size=32064, hidden_size=3072, intermediate_size=8192, num_hidden_layers=32,
                      num_attention_heads=32, max_position_embeddings=4096),
        fused_qkv=True, fused_gate_up=True,
    )  # fmt: skip


def _gpt2(r: _Reader) -> Architecture:
    hidden = r.num("n_embd", 768, "hidden_size")
    heads = r.num("n_head", 12, "num_attention_heads")
    positions = r.num("n_positions", 1024, "max_position_embeddings")
    return Architecture(
        model_type="gpt2",
        vocab_size=r.num("vocab_size", 50257),
        hidden_size=hidden,
        intermediate_size=r.opt_int("n_inner") or 4 * hidden,
        num_hidden_layers=r.num("n_layer", 12, "num_hidden_layers"),
        num_attention_heads=heads,
        num_key_value_heads=heads,
        head_dim=r.head_dim(hidden, heads),
        max_position_embeddings=positions,
        tie_word_embeddings=r.flag("tie_word_embeddings", True),
        hidden_act=r.text("activation_function", "gelu_new"),
        qkv_bias=True, o_bias=True, fused_qkv=True, mlp_gated=False, mlp_bias=True,
        norm="layernorm", norm_bias=True, position_embeddings=positions,
    )  # fmt: skip


def _gpt_neox(r: _Reader) -> Architecture:
    bias = r.flag("attention_bias", True)
    return _llama_like(
        r,
        defaults=dict(vocab_size=50432, hidden_size=6144, intermediate_size=24576, num_hidden_layers=44,
                      num_attention_heads=64, hidden_act="gelu"),
        num_key_value_heads=r.num("num_attention_heads", 64),
        qkv_bias=bias, o_bias=bias, fused_qkv=True, mlp_gated=False, mlp_bias=True,
        norm="layernorm", norm_bias=True, parallel_block=r.flag("use_parallel_residual", True),
    )  # fmt: skip


def _falcon(r: _Reader) -> Architecture:
    hidden = r.num("hidden_size", 4544)
    heads = r.num("num_attention_heads", 71, "n_head")
    head_dim = r.head_dim(hidden, heads)
    new_arch = r.flag("new_decoder_architecture", False)
    multi_query = r.flag("multi_query", True)
    parallel = r.flag("parallel_attn", True)
    if new_arch:
        kv = r.kv_heads(heads, "num_kv_heads")
        parallel = True
        n_ln = r.opt_int("num_ln_in_parallel_attn") or 2
    else:
        kv = 1 if multi_query else heads
        n_ln = 1
    norms = 2 if not parallel else n_ln
    return Architecture(
        model_type="falcon",
        vocab_size=r.num("vocab_size", 65024),
        hidden_size=hidden,
        intermediate_size=r.opt_int("ffn_hidden_size") or 4 * hidden,
        num_hidden_layers=r.num("num_hidden_layers", 32, "n_layer"),
        num_attention_heads=heads,
        num_key_value_heads=kv,
        head_dim=head_dim,
        max_position_embeddings=r.max_pos(2048),
        tie_word_embeddings=r.flag("tie_word_embeddings", True),
        hidden_act=r.text("activation", "gelu"),
        qkv_bias=r.flag("bias", False), o_bias=r.flag("bias", False), fused_qkv=True,
        mlp_gated=False, mlp_bias=r.flag("bias", False), norm="layernorm", norm_bias=True,
        norms_per_layer=norms, parallel_block=parallel,
    )  # fmt: skip


def _starcoder2(r: _Reader) -> Architecture:
    bias = r.flag("use_bias", True)
    return _llama_like(
        r,
        defaults=dict(vocab_size=49152, hidden_size=3072, intermediate_size=12288, num_hidden_layers=30,
                      num_attention_heads=24, max_position_embeddings=4096, tie_word_embeddings=True,
                      hidden_act="gelu_pytorch_tanh"),
        num_key_value_heads=r.num("num_key_value_heads", 2),
        qkv_bias=bias, o_bias=bias, mlp_gated=False, mlp_bias=bias, norm="layernorm", norm_bias=True,
    )  # fmt: skip


def _olmo2(r: _Reader) -> Architecture:
    bias = r.flag("attention_bias", False)
    return _llama_like(
        r,
        defaults=dict(vocab_size=50304, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                      num_attention_heads=32),
        qkv_bias=bias, o_bias=bias, qk_norm="full",
    )  # fmt: skip


_PARSERS = {
    "llama": _llama,
    "mistral": _mistral,
    "mixtral": _mixtral,
    "qwen2": _qwen2,
    "qwen2_moe": _qwen2_moe,
    "qwen3": _qwen3,
    "qwen3_moe": _qwen3_moe,
    "gemma": _gemma,
    "gemma2": _gemma2,
    "gemma3_text": _gemma3_text,
    "phi": _phi,
    "phi3": _phi3,
    "gpt2": _gpt2,
    "gpt_neox": _gpt_neox,
    "falcon": _falcon,
    "starcoder2": _starcoder2,
    "olmo2": _olmo2,
}


NO_SDPA = frozenset({"gemma2"})


def attention_implementation(model_type: str, requested: str) -> str:
    """The attention transformers will run: Gemma 2 has no SDPA path, so ``sdpa`` falls back to ``eager``."""
    if requested == "sdpa" and model_type in NO_SDPA:
        return "eager"
    return requested
