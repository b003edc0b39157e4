"""Llama 3.2 Vision (``MllamaForConditionalGeneration``, model type ``mllama``): the language model with its
cross-attention layers, the two-stage vision tower and the projector (transformers 5.24, ``modeling_mllama.py``,
``configuration_mllama.py``).

The language model (``MllamaTextModel``, module ``model.language_model``): ``embed_tokens`` of ``vocab_size + 8``
rows (the image token, 128256 = ``vocab_size``, and seven more), ``num_hidden_layers`` layers of which those in
``cross_attention_layers`` are ``MllamaCrossAttentionDecoderLayer`` and the others Llama's self-attention layer
(``MllamaSelfAttentionDecoderLayer``). Both kinds have ``input_layernorm``, ``post_attention_layernorm`` and the
gated ``mlp``; a cross-attention layer has ``cross_attn`` (``q_proj`` from the text, ``k_proj``/``v_proj`` from the
image features, ``o_proj``, no biases, head_dim = hidden_size // heads, and ``q_norm``/``k_norm`` RMSNorms of
head_dim) and two tanh gates (``cross_attn_attn_gate``, ``cross_attn_mlp_gate``: bare Parameters of one element)
where a self-attention layer has ``self_attn``. ``lm_head`` has ``vocab_size`` rows and is never tied to the
embeddings (the class declares no tied weights, so ``tie_word_embeddings`` changes nothing; their shapes differ).

The tower (``MllamaVisionModel``, module ``model.vision_model``): a Conv2d patch embedding without bias, a class
embedding (a bare Parameter), a gated position embedding (``gated_positional_embedding``: a gate, one row per
patch and the class token, and a tile position ``nn.Embedding`` of one row per aspect ratio and the padding id,
``max_num_tiles × patches × hidden_size`` wide), the pre- and post-tile position embeddings (a gate and an
``nn.Embedding`` of ``max_num_tiles × hidden_size`` per aspect ratio), ``layernorm_pre``/``layernorm_post``, the
local ``transformer`` (``num_hidden_layers`` layers: LayerNorms, q/k/v/o_proj without bias, fc1/fc2 with bias) and
the ``global_transformer`` (``num_global_layers`` such layers with ``gate_attn``/``gate_ffn``). The projector
(``model.multi_modal_projector``) is one ``nn.Linear`` with bias from ``vision_output_dim`` (the last hidden state
and the intermediate layers', concatenated) to the text width. bitsandbytes converts every ``nn.Linear`` but
``lm_head`` (transformers' ``get_keys_to_not_convert``: the output embeddings and the last parameter, which is
``lm_head``'s); PEFT's all-linear adapts the same ones, the projector and the cross-attention projections included;
the Conv2d, the embeddings and the gates are neither.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._errors import ConfigError
from ._vision import VisionTower, _int, _text_width, _width_and_heads

MLLAMA_CROSS_LAYERS = (3, 8, 13, 18, 23, 28, 33, 38)
"""``MllamaTextConfig``'s default ``cross_attention_layers`` (Llama 3.2 11B Vision's)."""
MLLAMA_ASPECT_RATIOS = 8
"""``MllamaVisionConfig``'s default ``supported_aspect_ratios``: the 8 tile grids of at most 4 tiles."""
MLLAMA_EXTRA_EMBEDDINGS = 8
"""Rows ``MllamaTextModel.embed_tokens`` has beyond ``vocab_size`` (the image token is ``vocab_size``)."""
CROSS_QUERY = "cross_query"  # cross_attn.q_proj: the normalized text of a cross-attention layer
CROSS_STATES = "cross_states"  # cross_attn.k_proj / v_proj: the projected image features
CROSS_OUTPUT = "cross_output"  # cross_attn.o_proj: the cross-attention output


def cross_attention_layers(text: Mapping[str, Any], layers: int) -> tuple[int, ...]:
    """The text config's ``cross_attention_layers`` (absent: ``MllamaTextConfig``'s default) that exist: the model
    makes layer ``i`` a cross-attention layer when ``i`` is in the list, so an index past the last layer makes none."""
    raw = text.get("cross_attention_layers")
    if raw is None:
        raw = list(MLLAMA_CROSS_LAYERS)
    if not isinstance(raw, list) or any(isinstance(i, bool) or not isinstance(i, int) for i in raw):
        raise ConfigError(f"text_config.cross_attention_layers must be a list of layer indices, got {raw!r}")
    return tuple(sorted({i for i in raw if 0 <= i < layers}))


def mllama_tower(config: Mapping[str, Any]) -> VisionTower:
    """The tower and projector of an mllama config (``MllamaVisionConfig``'s defaults for absent fields: Llama 3.2
    11B Vision's, 32 local and 8 global layers of 1280, 16 heads, patch 14; ``image_size`` 448 is the class's default,
    the published configs say 560)."""
    raw = config.get("vision_config")
    vc: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    embed, heads = _width_and_heads({"num_attention_heads": vc.get("attention_heads", 16), **vc}, 1280, 16)
    depth = _int(vc, "num_hidden_layers", 32)
    indices = vc.get("intermediate_layers_indices")
    if indices is None:
        indices = [3, 7, 15, 23, 30]
    if not isinstance(indices, list) or any(isinstance(i, bool) or not isinstance(i, int) for i in indices):
        raise ConfigError(f"vision_config.intermediate_layers_indices must be a list of integers, got {indices!r}")
    ratios = vc.get("supported_aspect_ratios")
    if ratios is not None and not isinstance(ratios, list):
        raise ConfigError(f"vision_config.supported_aspect_ratios must be a list of [rows, cols], got {ratios!r}")
    return VisionTower(
        model_type="mllama", depth=depth, embed_dim=embed, num_heads=heads,
        mlp_width=_int(vc, "intermediate_size", 5120), out_hidden_size=_text_width(config, 4096),
        patch_size=_int(vc, "patch_size", 14), temporal_patch_size=1, in_channels=_int(vc, "num_channels", 3),
        spatial_merge_size=1, image_size=_int(vc, "image_size", 448), feature_layers=1 + len(indices),
        global_depth=_int(vc, "num_global_layers", 8), max_tiles=_int(vc, "max_num_tiles", 4),
        aspect_ratios=len(ratios) if ratios else MLLAMA_ASPECT_RATIOS,
        projector_in=_int(vc, "vision_output_dim", 7680),
    )  # fmt: skip


def mllama_tensors(tower: VisionTower) -> list[Any]:
    """``MllamaVisionModel`` (``model.vision_model``) and the projector (``model.multi_modal_projector``), role
    vision."""
    from ._inventory import EMBEDDING, NO_INPUT, PARAMETER, Tensor, _linear, _vision_norm

    v, e, w = tower.module, tower.embed_dim, tower.mlp_width
    positions, rows = tower.patches_per_side**2 + 1, tower.aspect_ratios + 1
    conv = (e, tower.in_channels, tower.patch_size, tower.patch_size)
    g = f"{v}.gated_positional_embedding"
    out = [
        Tensor(f"{v}.class_embedding", (e,), "vision", v, PARAMETER),
        Tensor(f"{v}.patch_embedding.weight", conv, "vision", f"{v}.patch_embedding", PARAMETER),
        Tensor(f"{g}.gate", (1,), "vision", g, PARAMETER),
        Tensor(f"{g}.embedding", (positions, e), "vision", g, PARAMETER),
        Tensor(f"{g}.tile_embedding.weight", (rows, tower.max_tiles * positions * e), "vision",
               f"{g}.tile_embedding", EMBEDDING),
    ]  # fmt: skip
    for stage in ("pre", "post"):
        t = f"{v}.{stage}_tile_positional_embedding"
        out.append(Tensor(f"{t}.gate", (1,), "vision", t, PARAMETER))
        out.append(Tensor(f"{t}.embedding.weight", (rows, tower.max_tiles * e), "vision", f"{t}.embedding", EMBEDDING))
    out += _vision_norm(f"{v}.layernorm_pre", e, True, 1) + _vision_norm(f"{v}.layernorm_post", e, True, 1)
    for stack, depth in (("transformer", tower.depth), ("global_transformer", tower.global_depth)):
        b = f"{v}.{stack}.layers.{{i}}"
        out += _vision_norm(f"{b}.input_layernorm", e, True, depth)
        out += _vision_norm(f"{b}.post_attention_layernorm", e, True, depth)
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            out += _linear(f"{b}.self_attn.{name}", e, e, "vision", NO_INPUT, False, depth)
        out += _linear(f"{b}.mlp.fc1", w, e, "vision", NO_INPUT, True, depth)
        out += _linear(f"{b}.mlp.fc2", e, w, "vision", NO_INPUT, True, depth)
        if stack == "global_transformer":
            out += [Tensor(f"{b}.gate_attn", (1,), "vision", b, PARAMETER, layers=depth),
                    Tensor(f"{b}.gate_ffn", (1,), "vision", b, PARAMETER, layers=depth)]  # fmt: skip
    p = "model.multi_modal_projector"
    out += _linear(p, tower.out_hidden_size, tower.projector_in, "vision", NO_INPUT, True, 1)
    return out


def cross_attention_tensors(base: str, h: int, heads: int, kv_heads: int, layers: int) -> list[Any]:
    """The cross-attention layers' own parameters (``layers`` of them, under ``{base}.layers.{i}``): ``cross_attn``'s
    projections and q/k norms, and the two gates. Their MLP and layer norms are the self-attention layers' (same
    names and shapes), listed with those."""
    from ._inventory import NORM, PARAMETER, Tensor, _linear

    d = h // heads
    p = f"{base}.layers.{{i}}"
    a = f"{p}.cross_attn"
    out = _linear(f"{a}.q_proj", heads * d, h, "attention", CROSS_QUERY, False, layers)
    out += _linear(f"{a}.k_proj", kv_heads * d, h, "attention", CROSS_STATES, False, layers)
    out += _linear(f"{a}.v_proj", kv_heads * d, h, "attention", CROSS_STATES, False, layers)
    out += _linear(f"{a}.o_proj", h, heads * d, "attention", CROSS_OUTPUT, False, layers)
    out += [Tensor(f"{a}.{n}.weight", (d,), "norm", f"{a}.{n}", NORM, False, layers) for n in ("q_norm", "k_norm")]
    out += [Tensor(f"{p}.{n}", (1,), "attention", p, PARAMETER, False, layers)
            for n in ("cross_attn_attn_gate", "cross_attn_mlp_gate")]  # fmt: skip
    return out


def is_cross_layer_only(module: str) -> bool:
    """A module of the language model only a cross-attention layer has: its ``cross_attn``, or the layer itself
    (which holds the gates)."""
    layers = "model.language_model.layers.{i}"
    return module == layers or module.startswith(f"{layers}.cross_attn")


def layers_run(arch: Any, images: bool) -> int:
    """Decoder layers a step runs: all, but without images ``MllamaTextModel`` skips every cross-attention layer
    (``cross_attention_states`` None and nothing cached: ``continue``), so it neither runs nor saves anything."""
    if images or not arch.cross_attention_layers:
        return int(arch.num_hidden_layers)
    return int(arch.num_hidden_layers) - len(arch.cross_attention_layers)


def stepped_text_layers(arch: Any, images: bool, module: str, layers: int) -> int:
    """Of a language-model module's ``layers`` instances, those that get a gradient: without images the skipped
    cross-attention layers' parameters (and the adapters on them) get none, so AdamW gives them no state either:
    their ``cross_attn`` and gates none, the MLP and norms both kinds of layer share the self-attention layers'
    share."""
    cross = len(arch.cross_attention_layers)
    if images or not cross or not module.startswith("model.language_model.layers."):
        return layers
    if is_cross_layer_only(module):
        return 0
    return layers if ".self_attn" in module else layers - cross
