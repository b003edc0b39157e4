"""config.json -> Architecture: the numbers that decide every tensor of a causal LM.

A config is data: it is read as a mapping and never executed (no ``auto_map``, no remote code). Field names
are the Hugging Face ones; each family's defaults are the defaults of its transformers ``*Config`` class
(transformers 5.x), since a Hub config.json omits fields equal to them.

Two exceptions to "absent means the transformers default":

* The fields that set the model's size (``SIZE_FIELDS``: width, depth, heads, vocabulary, MLP width where its
  family has no formula for it) are never guessed in a top-level config: ``save_pretrained`` always writes them
  there (they are not fields of the base ``PretrainedConfig``, so its diff against the defaults keeps them), and a
  config without one is not the model's real config. A default of 4096 for a missing ``hidden_size`` would size
  another model. A composite's ``text_config`` is the exception to the exception: ``to_diff_dict`` writes a
  sub-config as its diff against its own class's defaults, so a published LLaVA 1.5 config leaves the Llama sizes
  that equal ``LlamaConfig``'s out, and transformers fills them in; the estimator does the same there, and says so.
* The fields that set the amount of work of an estimate (``WORK_LIMITS``: layers, experts, layer lists) are bounded
  to generous real-world limits, and parsing is linear in the number of layers, so no config can make an estimate
  slow or large.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from ._errors import ConfigError, UnsupportedModelError
from ._vision import CLIP_VL, IDEFICS_VL, MLLAMA_VL, PIXTRAL_VL, QWEN3_VL, QWEN_VL, VisionTower, vision_tower
from ._vision_pixtral import pixtral_tower

Norm = str  # "rmsnorm" | "layernorm" | "cohere" (CohereLayerNorm: weight only, centred, computed in fp32)

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
    rotary_dim: int = 0  # rotary embedding width per head (partial_rotary_factor · head_dim); 0: the whole head
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
    nope_layers: tuple[int, ...] = ()  # layers without rotary embeddings (Llama 4's every fourth: no qk-norm either)
    # how transformers 5 names and lays out the MoE block
    moe_block: str = "mlp"  # the decoder layer's feed-forward attribute: mlp, feed_forward (Llama 4), block_sparse_moe
    router_name: str = "gate"  # gate, or router (gpt-oss, Llama 4, Granite MoE)
    router_bias: bool = False  # gpt-oss
    router_linear: bool = False  # the router is an nn.Linear subclass returning a tuple (Llama 4): LoRA cannot wrap it
    experts_in_out: bool = False  # fused experts stored (E, in, out) (gpt-oss, Llama 4) instead of (E, out, in)
    expert_bias: bool = False  # gpt-oss: gate_up_proj_bias, down_proj_bias
    shared_experts_name: str = ""  # shared_expert (Qwen2-MoE, Llama 4) or shared_experts (DeepSeek, GLM-4 MoE)
    shared_expert_gate: bool = False  # Qwen2-MoE's sigmoid gate of the shared expert (Linear(h, 1))
    # multi-head latent attention (DeepSeek-V2/V3): kv_lora_rank > 0
    q_lora_rank: int = 0  # 0: q_proj straight from the hidden size
    kv_lora_rank: int = 0
    qk_nope_head_dim: int = 0
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0
    attention_sinks: bool = False  # gpt-oss: one learned sink logit per head
    sliding_window: int = 0  # some layers attend within a window (sliding, or Llama 4's chunks): a mask from there
    kv_broadcast: bool = False  # one K/V head broadcast to the query heads in SDPA (Falcon's old multi-query)
    dense_experts: bool = False  # every expert runs on every token (Llama 4 in transformers 5: E·T rows, not k·T)
    logits_scaled: bool = False  # the head scales the logits (Cohere logit_scale, Granite logits_scaling): a copy
    checkpoint_format: str = ""  # "mxfp4" (gpt-oss experts), "fp8" (DeepSeek-V3 block-wise), "float32" (the config's
    # torch_dtype): how the Hub files store it ("": 16-bit)
    checkpoint_block: tuple[int, int] = (128, 128)  # fp8: quantization_config.weight_block_size (one scale per block)
    config_dtype: str = ""  # the config's torch_dtype / dtype (its text_config's in a composite); "": it names none
    # soft-capping (Gemma 2)
    attn_logit_softcapping: float = 0.0
    final_logit_softcapping: float = 0.0
    # vision-language models: the vision tower (its parameters are role "vision")
    vision: VisionTower | None = None
    cross_attention_layers: tuple[int, ...] = ()  # Mllama: layers that attend to the image features instead
    extra_embeddings: int = 0  # Mllama: embed_tokens rows beyond vocab_size (lm_head has vocab_size)
    # bookkeeping
    source_model_type: str = ""
    generic: bool = False  # no hand-written family: sizes read the generic way, parameters from transformers
    notes: tuple[str, ...] = ()

    @property
    def mla(self) -> bool:
        """Multi-head latent attention (DeepSeek-V2/V3)."""
        return self.kv_lora_rank > 0

    @property
    def q_dim(self) -> int:
        if self.mla:
            return self.num_attention_heads * (self.qk_nope_head_dim + self.qk_rope_head_dim)
        return self.num_attention_heads * self.head_dim

    @property
    def attn_head_dim(self) -> int:
        """The head dim of q and k in the attention kernel (nope + rope under MLA)."""
        return self.qk_nope_head_dim + self.qk_rope_head_dim if self.mla else self.head_dim

    @property
    def v_head_dim_differs(self) -> bool:
        """v's head dim differs from q/k's (MLA): fused kernels that need one head dim cannot run."""
        return self.mla and self.v_head_dim != self.attn_head_dim

    @property
    def o_in(self) -> int:
        """o_proj's input width: the attention output, a·v_head_dim under MLA."""
        return self.num_attention_heads * self.v_head_dim if self.mla else self.q_dim

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
    "smollm3", "granite", "cohere", "cohere2", "olmo3", "gpt_bigcode", "olmoe", "granitemoe", "glm4_moe",
    "deepseek_v2", "deepseek_v3", "gpt_oss", "llama4_text", "qwen2_vl", "qwen2_5_vl", "llava",
    "idefics3", "smolvlm",
    "mistral3",
    "llava_next",
    "mllama",
    "qwen3_vl",
    "qwen3_vl_moe",
)  # fmt: skip
LEGACY_MODEL_TYPES: dict[str, str] = {"RefinedWebModel": "falcon", "RefinedWeb": "falcon"}
"""Old Hub model types transformers maps to a current one (its ``CONFIG_MAPPING`` aliases), read as that type."""


def parse_config(config: Mapping[str, Any]) -> Architecture:
    """Read a Hugging Face config.json mapping into an Architecture.

    Raises:
        ConfigError: the mapping is not a config of a causal LM, or a field has the wrong type.
        UnsupportedModelError: its ``model_type`` is not one modelled exactly (the message lists those that are).
    """
    arch = _parse_config(config)
    return _with(arch, config_dtype=config_dtype(config))


def config_dtype(config: Mapping[str, Any]) -> str:
    """The dtype a config names for its weights: ``torch_dtype`` (transformers 5 writes ``dtype``), else its
    ``text_config``'s (a composite's); "" when it names none (configs written before transformers saved it, GPT-2's,
    whose files are fp32)."""
    text = config.get("text_config")
    return _named_dtype(config) or (_named_dtype(text) if isinstance(text, Mapping) else "")


def _named_dtype(config: Mapping[str, Any]) -> str:
    """The ``torch_dtype`` one config mapping names (transformers 5 writes ``dtype``); "" for none."""
    dtype = config.get("torch_dtype", config.get("dtype"))
    return dtype if isinstance(dtype, str) else ""


def _parse_config(config: Mapping[str, Any]) -> Architecture:
    if not isinstance(config, Mapping):
        raise ConfigError("a config must be a JSON object (the contents of config.json)")
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise ConfigError("the config has no 'model_type'; upload the model's config.json as published on the Hub")
    if model_type in LEGACY_MODEL_TYPES:
        arch = _parse(legacy_config(config), LEGACY_MODEL_TYPES[model_type])
        note = f"{model_type}: the legacy Falcon config, read as transformers' falcon (its conversion's field names)"
        return _with(arch, source_model_type=model_type, notes=(note, *arch.notes))
    if model_type == "gemma3":
        text = config.get("text_config")
        if not isinstance(text, Mapping):
            raise ConfigError("a gemma3 config needs a 'text_config' object")
        return _gemma3(config, text)
    if model_type in QWEN_VL:
        return _qwen_vl(config, model_type)
    if model_type in QWEN3_VL:
        return _qwen3_vl(config, model_type)
    if model_type in CLIP_VL:
        return _llava(config, model_type)
    if model_type in IDEFICS_VL:
        return _idefics3(config, model_type)
    if model_type in PIXTRAL_VL:
        return _mistral3(config, model_type)
    if model_type in MLLAMA_VL:
        return _mllama(config, model_type)
    if model_type not in _PARSERS:
        raise UnsupportedModelError(
            f"model_type {model_type!r} is not supported; supported model types: "
            + ", ".join((*SUPPORTED_MODEL_TYPES, *LEGACY_MODEL_TYPES))
        )
    return _parse(config, model_type)


def _gemma3(config: Mapping[str, Any], text: Mapping[str, Any]) -> Architecture:
    """Gemma 3 (``Gemma3ForConditionalGeneration``, what ``AutoModelForCausalLM`` builds for it): the Gemma 3 text
    model of ``text_config`` and the SigLIP tower and projector of ``vision_config``, counted whether the plan has
    images or not (the weights are loaded either way)."""
    source = dict(text, model_type="gemma3_text")
    if "tie_word_embeddings" in config:  # a composite config's own flag decides the tie (PreTrainedModel)
        source["tie_word_embeddings"] = config["tie_word_embeddings"]
    arch = _parse(source, "gemma3_text", nested=True)
    tower = vision_tower(config)
    note = (
        f"gemma3: the language model and the SigLIP vision tower ({tower.depth} blocks of width {tower.embed_dim}) "
        f"with its projector; bitsandbytes quantizes the tower's linears too and LoRA's all-linear adapts them (as "
        "transformers and PEFT do); the Conv2d patch embedding, the position embedding and the projector's bare "
        "mm_input_projection_weight stay 16-bit and are not adapted"
    )
    return _with(arch, source_model_type="gemma3", vision=tower, notes=(note, *arch.notes))


def _text_config(config: Mapping[str, Any], model_type: str, allowed: tuple[str, ...]) -> tuple[dict[str, Any], str]:
    """A composite VLM config's ``text_config`` (absent: empty, the composite's default language model, ``allowed[0]``)
    and its model type, refused unless the llama-style inventory builds it under ``language_model``."""
    raw = config.get("text_config")
    text: dict[str, Any] = dict(raw) if isinstance(raw, Mapping) else {}
    text_type = str(text.get("model_type", allowed[0]))
    if text_type not in allowed:
        raise UnsupportedModelError(
            f"{model_type} with a {text_type!r} language model is not supported; its text_config can be one of: "
            + ", ".join(allowed)
        )
    return text, text_type


LLAVA_TEXT_TYPES = ("llama", "mistral", "qwen2", "gemma")
"""Language models LLaVA checkpoints pair with that the llama-style inventory builds under ``language_model``."""


def _llava(config: Mapping[str, Any], model_type: str) -> Architecture:
    """LLaVA 1.5 (``LlavaForConditionalGeneration``, transformers' image-text-to-text model) and LLaVA-NeXT
    (``LlavaNextForConditionalGeneration``: the same and ``image_newline``): the language model of ``text_config``
    (the configs' default: Llama) and the CLIP tower and projector of ``vision_config``."""
    text, text_type = _text_config(config, "llava", LLAVA_TEXT_TYPES)
    tie = config.get("tie_word_embeddings") or text.get("tie_word_embeddings", text_type == "gemma")
    arch = _parse(dict(text, model_type=text_type, tie_word_embeddings=bool(tie)), text_type, nested=True)
    tower = replace(vision_tower(config), out_hidden_size=arch.hidden_size)  # the projector's output: its width
    note = (
        f"{model_type}: the language model ({text_type}) and the CLIP vision tower ({tower.depth} layers of width "
        f"{tower.embed_dim}) with its projector; bitsandbytes quantizes the tower's and the projector's linears and "
        "LoRA's all-linear adapts them (as transformers and PEFT do); the Conv2d patch embedding, the class and "
        "position embeddings stay 16-bit and are not adapted"
        + (
            "; LLaVA-NeXT's image_newline too (its images: tiles of the best image_grid_pinpoints resolution "
            "and the base image, as LlavaNextProcessor cuts them)"
            if model_type == "llava_next"
            else ""
        )
    )
    return _with(arch, source_model_type=model_type, vision=tower, notes=(note, *arch.notes))


def _idefics3(config: Mapping[str, Any], model_type: str) -> Architecture:
    """Idefics3 / SmolVLM (``Idefics3ForConditionalGeneration`` / ``SmolVLMForConditionalGeneration``): the Llama of
    ``text_config`` (the configs' default, ``rms_norm_eps`` 1e-5 when absent) and the vision tower and connector of
    ``vision_config``, counted whether the plan has images or not."""
    text, _ = _text_config(config, model_type, ("llama",))
    text.setdefault("rms_norm_eps", 1e-5)
    tie = config.get("tie_word_embeddings", False)
    arch = _parse(dict(text, model_type="llama", tie_word_embeddings=bool(tie)), "llama", nested=True)
    tower = vision_tower(config)
    note = (
        f"{model_type}: the language model (llama) and the vision tower ({tower.depth} layers of width "
        f"{tower.embed_dim}) with its connector (pixel shuffle by {tower.spatial_merge_size}, one linear); "
        "bitsandbytes quantizes the tower's linears and the connector's projection and LoRA's all-linear adapts "
        "them (as transformers and PEFT do); the Conv2d patch embedding and the position embedding stay 16-bit "
        "and are not adapted"
    )
    return _with(arch, source_model_type=model_type, vision=tower, notes=(note, *arch.notes))


MISTRAL3_TEXT_TYPES = ("mistral", "llama")
"""Language models of Mistral 3 checkpoints the llama-style inventory builds under ``language_model``."""


def _mistral3(config: Mapping[str, Any], model_type: str) -> Architecture:
    """Mistral 3 (``Mistral3ForConditionalGeneration``): the language model of ``text_config`` (``Mistral3Config``'s
    default: Mistral) and the Pixtral tower and projector (``estimator._vision_pixtral``). The composite's own
    ``tie_word_embeddings`` decides the tie, ``Mistral3Config``'s default true (the text config's flag is not read:
    checked on the meta build), except in a config transformers 4 wrote, whose checkpoint holds its own lm_head
    (``mistral3_tie``)."""
    text, text_type = _text_config(config, "mistral3", MISTRAL3_TEXT_TYPES)
    tie = mistral3_tie(config)
    # a text_config object takes its class's defaults for what it leaves out (without one, Mistral3Config makes
    # the 24B's, which are not read here: its sizes are then required)
    nested = isinstance(config.get("text_config"), Mapping)
    arch = _parse(dict(text, model_type=text_type, tie_word_embeddings=bool(tie)), text_type, nested=nested)
    tower = replace(pixtral_tower(config), out_hidden_size=arch.hidden_size)  # the projector's output: its width
    note = (
        f"{model_type}: the language model ({text_type}) and the Pixtral vision tower ({tower.depth} layers of width "
        f"{tower.embed_dim}) with its projector (RMSNorm, patch merger, two linears); bitsandbytes quantizes the "
        "tower's, the merger's and the projector's linears and LoRA's all-linear adapts them (as transformers and "
        "PEFT do); the Conv2d patch embedding stays 16-bit and is not adapted"
    )
    return _with(arch, source_model_type=model_type, vision=tower, notes=(note, *arch.notes))


MLLAMA_TEXT_IGNORED = ("head_dim", "attention_bias", "mlp_bias", "tie_word_embeddings")
"""Llama fields ``MllamaTextModel`` does not read: its head_dim is hidden_size // heads, it has no biases, and its
``lm_head`` (``vocab_size`` rows) is never tied to ``embed_tokens`` (``vocab_size + 8``)."""


def _mllama(config: Mapping[str, Any], model_type: str) -> Architecture:
    """Llama 3.2 Vision (``MllamaForConditionalGeneration``, transformers' image-text-to-text model; its causal-LM
    class ``MllamaForCausalLM`` is the language model alone, which cannot take images): the Llama-style language
    model of ``text_config`` with its ``cross_attention_layers``, the tower and the projector
    (``estimator._vision_mllama``)."""
    from ._vision_mllama import MLLAMA_EXTRA_EMBEDDINGS, cross_attention_layers

    text, _ = _text_config(config, model_type, ("mllama_text_model",))
    text = {k: v for k, v in text.items() if k not in MLLAMA_TEXT_IGNORED}
    text.setdefault("rms_norm_eps", 1e-5)
    arch = _parse(dict(text, model_type="llama", tie_word_embeddings=False), "llama")
    cross = cross_attention_layers(text, arch.num_hidden_layers)
    tower = vision_tower(config)
    note = (
        f"{model_type}: the language model ({arch.num_hidden_layers} layers, {len(cross)} of them cross-attention "
        f"layers that a batch without images skips) and the vision tower ({tower.depth} local and "
        f"{tower.global_depth} global layers of width {tower.embed_dim}) with its projector; bitsandbytes quantizes "
        "the tower's, the cross-attention layers' and the projector's linears and LoRA's all-linear adapts them (as "
        "transformers and PEFT do); the Conv2d patch embedding, the position and tile embeddings and the gates stay "
        "16-bit and are not adapted"
    )
    return _with(arch, source_model_type=model_type, vision=tower, cross_attention_layers=cross,
                 extra_embeddings=MLLAMA_EXTRA_EMBEDDINGS, notes=(note, *arch.notes))  # fmt: skip


def _qwen_vl(config: Mapping[str, Any], model_type: str) -> Architecture:
    """Qwen2-VL / Qwen2.5-VL: a Qwen2 language model (``text_config``, or the top-level fields of the published
    configs, which transformers moves into it) and the vision tower of ``vision_config``."""
    text = config.get("text_config")
    source = dict(text) if isinstance(text, Mapping) else {k: v for k, v in config.items() if k != "vision_config"}
    if "tie_word_embeddings" in config:  # a composite config's own flag decides the tie (PreTrainedModel)
        source["tie_word_embeddings"] = config["tie_word_embeddings"]
    arch = _parse(dict(source, model_type="qwen2"), "qwen2")
    tower = vision_tower(config)
    note = (
        f"{model_type}: the language model and the vision tower ({tower.depth} blocks of width {tower.embed_dim}); "
        "bitsandbytes quantizes the tower's and the merger's linears too, and LoRA's all-linear adapts them (as "
        "transformers and PEFT do); the Conv3d patch embedding stays 16-bit and is not adapted"
    )
    return _with(arch, model_type=model_type, source_model_type=model_type, vision=tower, notes=(note, *arch.notes))


def _qwen3_vl(config: Mapping[str, Any], model_type: str) -> Architecture:
    """Qwen3-VL (``Qwen3VLForConditionalGeneration``): the Qwen3 language model of ``text_config``
    (``qwen3_vl_text``: Qwen3's q/k norms and head_dim; ``Qwen3VLTextConfig``'s defaults for absent fields, read as
    Qwen3's) and the tower, mergers and DeepStack mergers of ``vision_config`` (``estimator._vision_qwen3``). The
    composite's own ``tie_word_embeddings`` decides the tie (``Qwen3VLConfig``'s default false)."""
    moe = model_type == "qwen3_vl_moe"
    text, _ = _text_config(config, model_type, (f"{model_type}_text",))
    text.setdefault("max_position_embeddings", 128000)  # Qwen3VL(Moe)TextConfig's, where Qwen3's differs
    if moe:  # Qwen3VLMoeTextConfig's defaults where Qwen3MoeConfig's differ
        for name, value in (("num_experts", 60), ("num_experts_per_tok", 4), ("moe_intermediate_size", 1408),
                            ("intermediate_size", 5632), ("num_key_value_heads", 16)):  # fmt: skip
            text.setdefault(name, value)
    text["tie_word_embeddings"] = bool(config.get("tie_word_embeddings", False))
    family = "qwen3_moe" if moe else "qwen3"
    arch = _parse(dict(text, model_type=family), family)
    tower = vision_tower(config)
    if len(tower.deepstack) > arch.num_hidden_layers and not tower.refusal:  # the extra features reach no loss
        tower = replace(tower, refusal=(
            f"{len(tower.deepstack)} DeepStack feature sets for {arch.num_hidden_layers} decoder layers are not "
            "modelled (the ones past the last layer reach no loss)"))  # fmt: skip
    note = (
        f"{model_type}: the language model ({family}) and the vision tower ({tower.depth} blocks of width "
        f"{tower.embed_dim}) with its merger and {len(tower.deepstack)} DeepStack mergers; bitsandbytes quantizes "
        "the tower's and the mergers' linears and LoRA's all-linear adapts them (as transformers and PEFT do); the "
        "Conv3d patch embedding and the position embedding stay 16-bit and are not adapted"
    )
    return _with(arch, model_type=model_type, source_model_type=model_type, vision=tower, notes=(note, *arch.notes))


def checkpoint_tie(config: Mapping[str, Any], composite_tie: bool, text_tie: bool) -> bool:
    """Whether a composite checkpoint's lm_head is its token embedding as ``from_pretrained`` of transformers 5 loads
    it, given the composite config class's ``tie_word_embeddings`` default (``composite_tie``) and its text config's
    flag (``text_tie``). A config that states the flag decides; one transformers 5 wrote means the composite's
    default. transformers 4 wrote the flag out only when it differed from ``PretrainedConfig``'s default (true) and
    tied by the text config's flag (``get_text_config(decoder=True)``), so a checkpoint it wrote over an untied text
    config carries its own ``lm_head.weight``: where transformers 5 defaults the composite to tied (Mistral 3,
    InternVL, Janus, DeepSeek-VL ...), ``from_pretrained`` finds both tensors with different values and leaves them
    untied (``PreTrainedModel.tie_weights``: "both are present in the checkpoints with different values, so we will
    NOT tie them"), and a model built from the config alone would count ``vocab_size × hidden_size`` fewer
    parameters (671,088,640 for Mistral Small 3.1 / 3.2, written by 4.50 - 4.57) than the one the user trains.
    Tested by saving tiny checkpoints and loading them (tests/estimator/test_inventory.py, tests/app/
    test_inventory.py)."""
    tie = config.get("tie_word_embeddings")
    if isinstance(tie, bool):
        return tie
    if str(config.get("transformers_version", "")).startswith("4."):
        return composite_tie and text_tie
    return composite_tie


def mistral3_tie(config: Mapping[str, Any]) -> bool:
    """``checkpoint_tie`` with ``Mistral3Config``'s defaults: tied, over a text config (Mistral's, Llama's) that is
    not unless it says so."""
    text = config.get("text_config")
    return checkpoint_tie(config, True, bool(isinstance(text, Mapping) and text.get("tie_word_embeddings", False)))


def legacy_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A config as transformers 5 reads it, the model it builds the one ``from_pretrained`` loads:

    * a legacy Falcon config (``RefinedWebModel`` / ``RefinedWeb``, written for the repo's own remote code) as the
      ``falcon`` config transformers reads: its conversion script (``models/falcon/convert_custom_code_checkpoint.py``)
      renames ``n_head``, ``n_layer`` and ``n_head_kv`` (whose presence means the new decoder architecture) and
      drops ``auto_map``;
    * a Mistral 3 config transformers 4 wrote without ``tie_word_embeddings`` states the tie its checkpoint has
      (``mistral3_tie``).

    Any other config is returned as a plain copy."""
    data = dict(config)
    if data.get("model_type") == "mistral3":
        data["tie_word_embeddings"] = mistral3_tie(data)
        return data
    if data.get("model_type") not in LEGACY_MODEL_TYPES:
        return data
    data["model_type"] = "falcon"
    data.pop("auto_map", None)
    for old, new in (("n_head", "num_attention_heads"), ("n_layer", "num_hidden_layers")):
        if old in data:
            data[new] = data.pop(old)
    if "n_head_kv" in data:
        data["new_decoder_architecture"] = True
        data["num_kv_heads"] = data.pop("n_head_kv")
        data.pop("multi_query", None)
    else:
        data["new_decoder_architecture"] = False
    return data


def _with(arch: Architecture, **changes: Any) -> Architecture:
    return replace(arch, **changes)


def _parse(config: Mapping[str, Any], model_type: str, nested: bool = False) -> Architecture:
    """``config`` read as ``model_type``'s family; ``nested``: it is a composite's ``text_config``, whose absent
    size fields are that family's config-class defaults (noted)."""
    r = _Reader(config, model_type, nested)
    arch = _PARSERS[model_type](r)
    if not arch.checkpoint_format and _named_dtype(config) == "float32":
        arch = _with(arch, checkpoint_format="float32")  # the files hold fp32 weights (StarCoderBase, Pythia-style)
    if arch.checkpoint_format in ("mxfp4", "fp8"):
        arch = _with(arch, notes=(*arch.notes, _checkpoint_note(r, arch)))
    if r.defaulted:
        fields = ", ".join(f"{n} {getattr(arch, n)}" for n in SIZE_FIELDS if n in r.defaulted)
        note = (
            f"text_config leaves out {fields}: equal to {model_type}'s config-class defaults, which save_pretrained "
            "does not write in a sub-config; read as those defaults, as transformers does"
        )
        arch = _with(arch, notes=(*arch.notes, note))
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
    return _with(arch, source_model_type=arch.source_model_type or model_type, rotary_dim=_rotary_dim(r, arch))


PARTIAL_ROTARY_DEFAULTS = {"glm4_moe": 0.5, "phi": 0.5, "gpt_neox": 0.25}
"""``partial_rotary_factor`` where a family's config class sets one by default (transformers 5.24's
``configuration_glm4_moe.py``, ``configuration_phi.py``; GPT-NeoX's ``rotary_pct``)."""


def _rotary_dim(r: _Reader, arch: Architecture) -> int:
    """The rotary width per head, ``int(head_dim · partial_rotary_factor)`` as transformers' rope init computes it
    (``modeling_rope_utils``), read from the config's ``partial_rotary_factor``, its ``rope_parameters`` or
    ``rotary_pct``; 0 when the whole head rotates or the model has no rotary embedding."""
    if arch.position_embeddings or arch.mla:
        return 0
    rope = r.c.get("rope_parameters")
    nested = rope.get("partial_rotary_factor") if isinstance(rope, Mapping) else None
    factor = next(
        (v for v in (r.c.get("partial_rotary_factor"), nested, r.c.get("rotary_pct")) if v is not None),
        PARTIAL_ROTARY_DEFAULTS.get(r.model_type, 1.0),
    )
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 0 < factor <= 1:
        raise ConfigError(f"partial_rotary_factor must be a number in (0, 1]; got {factor!r}")
    dim = int(arch.head_dim * factor)
    return 0 if dim >= arch.head_dim else dim


class _Reader:
    def __init__(self, config: Mapping[str, Any], model_type: str, nested: bool = False) -> None:
        self.c = config
        self.model_type = model_type
        self.nested = nested
        """A composite's sub-config: absent size fields are its class's defaults (``to_diff_dict`` omits them)."""
        self.defaulted: list[str] = []
        """The size fields read as defaults (nested configs only), for the note that says so."""

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
        size = not SIZE_FIELDS_SET.isdisjoint((name, *aliases))
        if default is not None and size and self.nested:
            self.defaulted.append(name)
        elif default is None or size:
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


def _window(r: _Reader, name: str = "sliding_window", flag: str | None = None) -> int:
    """The local attention window of the layers that use one (0: none): ``sliding_window``, or Llama 4's
    ``attention_chunk_size``; families that switch it on with a flag (``use_sliding_window``) need the flag."""
    if flag is not None and not r.flag(flag, False):
        return 0
    value = r.c.get(name)
    return 0 if value is None else r.num(name)


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
        head_dim=fields.pop("head_dim", None) or absent.get("head_dim") or r.head_dim(hidden, heads),
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
        sliding_window=_window(r),
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
        sliding_window=_window(r),
    )  # fmt: skip


def _qwen2(r: _Reader) -> Architecture:
    return _llama_like(
        r,
        defaults=dict(vocab_size=151936, hidden_size=4096, intermediate_size=22016, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=32768),
        qkv_bias=True,
        sliding_window=_window(r, flag="use_sliding_window"),
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
        shared_experts_name="shared_expert", shared_expert_gate=True,
        moe_layers=_moe_layer_indices(r, layers, experts),
        sliding_window=_window(r, flag="use_sliding_window"),
    )  # fmt: skip


def _qwen3(r: _Reader) -> Architecture:
    bias = r.flag("attention_bias", False)
    return _llama_like(
        r,
        defaults=dict(vocab_size=151936, hidden_size=4096, intermediate_size=22016, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=32, head_dim=128, max_position_embeddings=32768),
        qkv_bias=bias, o_bias=bias, qk_norm="head",
        sliding_window=_window(r, flag="use_sliding_window"),
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
        sliding_window=_window(r, flag="use_sliding_window"),
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
    return _llama_like(
        r, defaults=d, qkv_bias=bias, o_bias=bias, norms_per_layer=4, qk_norm="head", sliding_window=_window(r)
    )


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
        sliding_window=_window(r),
    )  # fmt: skip


def _gpt2(r: _Reader, model_type: str = "gpt2", act: str = "gelu_new", multi_query: bool = False) -> Architecture:
    """GPT-2's config names; GPT-BigCode reads the same ones (its own activation default, one K/V head)."""
    hidden = r.num("n_embd", 768, "hidden_size")
    heads = r.num("n_head", 12, "num_attention_heads")
    positions = r.num("n_positions", 1024, "max_position_embeddings")
    return Architecture(
        model_type=model_type,
        vocab_size=r.num("vocab_size", 50257),
        hidden_size=hidden,
        intermediate_size=r.opt_int("n_inner") or 4 * hidden,
        num_hidden_layers=r.num("n_layer", 12, "num_hidden_layers"),
        num_attention_heads=heads,
        num_key_value_heads=1 if multi_query else heads,
        head_dim=r.head_dim(hidden, heads),
        max_position_embeddings=positions,
        tie_word_embeddings=r.flag("tie_word_embeddings", True),
        hidden_act=r.text("activation_function", act),
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
        norms_per_layer=norms, parallel_block=parallel, kv_broadcast=not new_arch and multi_query,
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
        sliding_window=_window(r),
    )  # fmt: skip


def _olmo2(r: _Reader) -> Architecture:
    bias = r.flag("attention_bias", False)
    return _llama_like(
        r,
        defaults=dict(vocab_size=50304, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                      num_attention_heads=32),
        qkv_bias=bias, o_bias=bias, qk_norm="full",
    )  # fmt: skip


def _smollm3(r: _Reader) -> Architecture:
    bias = r.flag("attention_bias", False)
    return _llama_like(
        r,
        defaults=dict(vocab_size=128256, hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
                      num_attention_heads=16, num_key_value_heads=4, max_position_embeddings=32768,
                      tie_word_embeddings=True),
        qkv_bias=bias, o_bias=bias, mlp_bias=r.flag("mlp_bias", False),
        sliding_window=_window(r, flag="use_sliding_window"),
    )  # fmt: skip


def _scaled(r: _Reader, name: str, neutral: float) -> bool:
    """Whether a logits multiplier/divisor field differs from its neutral value (the head then makes a copy)."""
    value = r.c.get(name, neutral)
    if value is None:
        return False
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number; got {value!r}")
    return float(value) != neutral


def _granite(r: _Reader) -> Architecture:
    bias = r.flag("attention_bias", False)
    return _llama_like(
        r,
        defaults=dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                      num_attention_heads=32),
        qkv_bias=bias, o_bias=bias, mlp_bias=r.flag("mlp_bias", False),
        logits_scaled=_scaled(r, "logits_scaling", 1.0),
    )  # fmt: skip


def _cohere(r: _Reader) -> Architecture:
    """Cohere (Command R) and Cohere2 (Command R7B / A): one LayerNorm without bias feeding attention and MLP in
    parallel, tied embeddings, logits scaled by ``logit_scale``; Cohere's optional per-head q/k LayerNorms."""
    bias = r.flag("attention_bias", False)
    qk = r.model_type == "cohere" and r.flag("use_qk_norm", False)
    return _llama_like(
        r,
        defaults=dict(vocab_size=256000, hidden_size=8192, intermediate_size=22528, num_hidden_layers=40,
                      num_attention_heads=64, max_position_embeddings=8192, tie_word_embeddings=True),
        qkv_bias=bias, o_bias=bias, norm="cohere", norms_per_layer=1, parallel_block=True,
        qk_norm="head_per_head" if qk else "none", logits_scaled=_scaled(r, "logit_scale", 1.0),
        sliding_window=_window(r) if r.model_type == "cohere2" else 0,
    )  # fmt: skip


def _olmo3(r: _Reader) -> Architecture:
    """OLMo 3: OLMo 2's layer with sliding-window layers."""
    return _with(_olmo2(r), sliding_window=_window(r))


def _gpt_bigcode(r: _Reader) -> Architecture:
    """GPT-BigCode (StarCoder 1, SantaCoder): GPT-2 layout with nn.Linear layers and multi-query attention."""
    return _gpt2(r, "gpt_bigcode", "gelu_pytorch_tanh", multi_query=r.flag("multi_query", True))


def _olmoe(r: _Reader) -> Architecture:
    layers = r.num("num_hidden_layers", 16)
    bias = r.flag("attention_bias", False)
    return _llama_like(
        r,
        defaults=dict(vocab_size=50304, hidden_size=2048, intermediate_size=2048, num_hidden_layers=16,
                      num_attention_heads=16, max_position_embeddings=4096),
        qkv_bias=bias, o_bias=bias, qk_norm="full",
        num_experts=r.num("num_experts", 64), num_experts_per_tok=r.num("num_experts_per_tok", 8),
        moe_intermediate_size=r.num("intermediate_size", 2048), moe_layers=tuple(range(layers)),
    )  # fmt: skip


def _granitemoe(r: _Reader) -> Architecture:
    layers = r.num("num_hidden_layers", 32)
    bias = r.flag("attention_bias", False)
    return _llama_like(
        r,
        defaults=dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                      num_attention_heads=32),
        qkv_bias=bias, o_bias=bias,
        num_experts=r.num("num_local_experts", 8), num_experts_per_tok=r.num("num_experts_per_tok", 2),
        moe_intermediate_size=r.num("intermediate_size", 11008), moe_layers=tuple(range(layers)),
        moe_block="block_sparse_moe", router_name="router", logits_scaled=_scaled(r, "logits_scaling", 1.0),
    )  # fmt: skip


def _first_dense(r: _Reader, layers: int, default: int) -> tuple[int, ...]:
    """DeepSeek / GLM-4 MoE: the first ``first_k_dense_replace`` layers are dense, the others MoE."""
    first = r.num("first_k_dense_replace", default)
    return tuple(range(min(first, layers), layers))


def _glm4_moe(r: _Reader) -> Architecture:
    layers = r.num("num_hidden_layers", 46)
    bias = r.flag("attention_bias", False)
    hidden, heads = r.num("hidden_size", 4096), r.num("num_attention_heads", 96)
    return _llama_like(
        r,
        defaults=dict(vocab_size=151552, hidden_size=4096, intermediate_size=10944, num_hidden_layers=46,
                      num_attention_heads=96, num_key_value_heads=8, max_position_embeddings=131072),
        head_dim=r.opt_int("head_dim") or hidden // heads,  # Glm4MoeAttention: hidden_size // heads, floored
        qkv_bias=bias, qk_norm="head" if r.flag("use_qk_norm", False) else "none",
        num_experts=r.num("n_routed_experts", 128), num_experts_per_tok=r.num("num_experts_per_tok", 8),
        moe_intermediate_size=r.num("moe_intermediate_size", 1408),
        shared_expert_intermediate_size=r.num("moe_intermediate_size", 1408) * r.num("n_shared_experts", 1),
        shared_experts_name="shared_experts", moe_layers=_first_dense(r, layers, 1),
    )  # fmt: skip


def _deepseek(r: _Reader) -> Architecture:
    """DeepSeek-V2 / V3: multi-head latent attention (q through a low-rank q_a/q_b pair unless q_lora_rank is null,
    k/v through one compressed latent), the first ``first_k_dense_replace`` layers dense, the others MoE with
    ``n_shared_experts`` shared experts fused into one MLP."""
    v3 = r.model_type == "deepseek_v3"
    layers = r.num("num_hidden_layers", 61 if v3 else 32)
    d = dict(vocab_size=129280, hidden_size=7168, intermediate_size=18432, num_hidden_layers=61,
             num_attention_heads=128) if v3 else dict(vocab_size=102400, hidden_size=4096, intermediate_size=11008,
                                                      num_hidden_layers=32, num_attention_heads=32)  # fmt: skip
    mi = r.num("moe_intermediate_size", 2048 if v3 else 1407)
    rope, nope = r.num("qk_rope_head_dim", 64), r.num("qk_nope_head_dim", 128)
    q_rank = r.c.get("q_lora_rank", 1536)
    return _llama_like(
        r,
        defaults=d | dict(max_position_embeddings=4096 if v3 else 2048),
        head_dim=rope, qkv_bias=r.flag("attention_bias", False),
        q_lora_rank=0 if q_rank is None else r.num("q_lora_rank"), kv_lora_rank=r.num("kv_lora_rank", 512),
        qk_nope_head_dim=nope, qk_rope_head_dim=rope, v_head_dim=r.num("v_head_dim", 128),
        num_experts=r.num("n_routed_experts", 256 if v3 else 64),
        num_experts_per_tok=r.num("num_experts_per_tok", 8 if v3 else 6),
        moe_intermediate_size=mi, shared_expert_intermediate_size=mi * r.num("n_shared_experts", 1 if v3 else 2),
        shared_experts_name="shared_experts", moe_layers=_first_dense(r, layers, 3 if v3 else 0),
        checkpoint_format="fp8" if _quant_method(r) == "fp8" else "", checkpoint_block=_weight_block(r),
    )  # fmt: skip


def _checkpoint_note(r: _Reader, arch: Architecture) -> str:
    """What an MXFP4 or fp8 checkpoint costs on disk and how it is loaded for training."""
    if arch.checkpoint_format == "mxfp4":
        note = (
            "the checkpoint stores the experts in MXFP4 (4.25 bits per weight: the download); for training "
            "transformers loads them dequantized to bf16 (Mxfp4Config(dequantize=True), as TRL's gpt-oss recipe "
            "does), which every memory figure counts"
        )
    else:
        note = (
            f"the checkpoint stores the decoder's linears in fp8 with an fp32 scale per {arch.checkpoint_block[0]}"
            f"×{arch.checkpoint_block[1]} block (the download); for training they are loaded dequantized to bf16 "
            "(FineGrainedFP8Config(dequantize=True)), which every memory figure counts"
        )
    mtp = r.c.get("num_nextn_predict_layers")
    if isinstance(mtp, int) and not isinstance(mtp, bool) and mtp > 0:
        note += (
            f"; the files also hold {mtp} multi-token-prediction layer(s), which transformers does not load and "
            "the download figure does not count"
        )
    return note


def _weight_block(r: _Reader) -> tuple[int, int]:
    """An fp8 checkpoint's ``quantization_config.weight_block_size`` (rows, columns per scale; default 128 × 128)."""
    q = r.c.get("quantization_config")
    block = q.get("weight_block_size") if isinstance(q, Mapping) else None
    if block is None:
        return (128, 128)
    if not (isinstance(block, list | tuple) and len(block) == 2
            and all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in block)):  # fmt: skip
        raise ConfigError(f"quantization_config.weight_block_size must be two positive integers; got {block!r}")
    return (block[0], block[1])


def _quant_method(r: _Reader) -> str:
    q = r.c.get("quantization_config")
    method = q.get("quant_method") if isinstance(q, Mapping) else None
    return method if isinstance(method, str) else ""


def _gpt_oss(r: _Reader) -> Architecture:
    """gpt-oss: attention with biases and per-head sinks, MoE experts with biases stored (E, in, out), a router with
    a bias; the Hub checkpoints store the experts in MXFP4 (``quantization_config.quant_method: mxfp4``)."""
    layers = r.num("num_hidden_layers", 36)
    bias = r.flag("attention_bias", True)
    return _llama_like(
        r,
        defaults=dict(vocab_size=201088, hidden_size=2880, intermediate_size=2880, num_hidden_layers=36,
                      num_attention_heads=64, num_key_value_heads=8, head_dim=64, max_position_embeddings=131072),
        qkv_bias=bias, o_bias=bias, attention_sinks=True,
        num_experts=r.num("num_local_experts", 128), num_experts_per_tok=r.num("num_experts_per_tok", 4),
        moe_intermediate_size=r.num("intermediate_size", 2880), moe_layers=tuple(range(layers)),
        router_name="router", router_bias=True, experts_in_out=True, expert_bias=True,
        checkpoint_format="mxfp4" if _quant_method(r) == "mxfp4" else "",
        sliding_window=_window(r),
    )  # fmt: skip


def _llama4_text(r: _Reader) -> Architecture:
    """Llama 4's language model: MoE layers every ``interleave_moe_layer_step`` (or at ``moe_layers``) with one
    shared expert, dense layers with ``intermediate_size_mlp``; experts stored (E, in, out)."""
    layers = r.num("num_hidden_layers", 48)
    step = r.num("interleave_moe_layer_step", 1)
    listed = r.c.get("moe_layers")
    if listed is not None:
        if not isinstance(listed, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in listed):
            raise ConfigError("moe_layers must be a list of layer indices")
        if len(listed) > MAX_LAYERS:
            raise ConfigError(f"moe_layers lists {len(listed)} layers; at most {MAX_LAYERS} is supported")
        moe = tuple(i for i in range(layers) if i in set(listed))
    else:
        moe = tuple(range(step - 1, layers, step)) if step > 0 else ()
    mi = r.num("intermediate_size", 8192)
    bias = r.flag("attention_bias", False)
    # Llama4TextConfig: no_rope_layers[i] is 1 where layer i uses rope, default a NoPE layer every interval-th
    flags = r.c.get("no_rope_layers")
    interval = r.num("no_rope_layer_interval", 4)
    if flags:
        if not isinstance(flags, list) or not all(f in (0, 1) for f in flags) or len(flags) > MAX_LAYERS:
            raise ConfigError("no_rope_layers must be a list of 0/1 flags, one per layer (1: the layer uses rope)")
        nope = tuple(i for i, f in enumerate(flags) if not f)
    else:
        nope = tuple(i for i in range(layers) if interval and (i + 1) % interval == 0)
    return _llama_like(
        r,
        defaults=dict(vocab_size=202048, hidden_size=5120, intermediate_size_mlp=16384, num_hidden_layers=48,
                      num_attention_heads=40, num_key_value_heads=8, head_dim=128, max_position_embeddings=131072),
        intermediate_size=r.num("intermediate_size_mlp", 16384), qkv_bias=bias, o_bias=bias,
        num_experts=r.num("num_local_experts", 16), num_experts_per_tok=r.num("num_experts_per_tok", 1),
        moe_intermediate_size=mi, shared_expert_intermediate_size=mi, shared_experts_name="shared_expert",
        moe_layers=moe, moe_block="feed_forward", router_name="router", router_linear=True, experts_in_out=True,
        sliding_window=_window(r, "attention_chunk_size"), dense_experts=True,
        qk_norm="l2" if r.flag("use_qk_norm", True) else "none", nope_layers=nope,
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
    "smollm3": _smollm3,
    "granite": _granite,
    "cohere": _cohere,
    "cohere2": _cohere,
    "olmo3": _olmo3,
    "gpt_bigcode": _gpt_bigcode,
    "olmoe": _olmoe,
    "granitemoe": _granitemoe,
    "glm4_moe": _glm4_moe,
    "deepseek_v2": _deepseek,
    "deepseek_v3": _deepseek,
    "gpt_oss": _gpt_oss,
    "llama4_text": _llama4_text,
}


NO_SDPA = frozenset({"gemma2", "gpt_oss"})


def attention_implementation(model_type: str, requested: str) -> str:
    """The attention transformers will run: Gemma 2 and gpt-oss have no SDPA path (``_supports_sdpa = False``), so
    ``sdpa`` falls back to ``eager``."""
    if requested == "sdpa" and model_type in NO_SDPA:
        return "eager"
    return requested
