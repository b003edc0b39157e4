"""Architecture -> the exact list of parameter tensors ``AutoModelForCausalLM.from_config`` creates.

Names, shapes and module kinds follow transformers 5.x. Tests hold ``Inventory.total`` equal to
``sum(p.numel() for p in model.parameters())`` of the model transformers builds on the meta device for every
supported ``model_type`` (tied embeddings counted once, as ``parameters()`` de-duplicates them).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from math import prod

from ._arch import Architecture
from ._vision import VisionTower

# Module kinds. bitsandbytes (through transformers' ``replace_with_bnb_linear``) converts modules whose type is
# exactly ``nn.Linear`` or ``Conv1D``; PEFT's ``all-linear`` matches any ``nn.Linear`` subclass or ``Conv1D``.
LINEAR = "linear"  # torch.nn.Linear
CONV1D = "conv1d"  # transformers Conv1D (GPT-2): weight stored as (in, out)
SUBCLASS_LINEAR = "linear_subclass"  # an nn.Linear subclass (FalconLinear): not converted by bnb
OPAQUE_LINEAR = "linear_opaque"  # an nn.Linear subclass whose forward returns no tensor: PEFT's LoRA cannot wrap it
EMBEDDING = "embedding"
NORM = "norm"
ROUTER = "router"  # MoE router holding a plain weight Parameter (not nn.Linear in transformers 5)
EXPERTS = "experts"  # fused 3-D expert weights (transformers 5 ``*Experts`` modules), not nn.Linear
PARAMETER = "parameter"  # a bare Parameter of a module that is none of the above (gpt-oss's attention sinks)

LINEAR_KINDS = (LINEAR, CONV1D, SUBCLASS_LINEAR, OPAQUE_LINEAR)

# What a parameter's module reads: the activation its backward needs (a linear's input, kept for the gradient of its
# weight or of a LoRA on it), named as the memory model (estimator/_memory.py) counts saved inputs. Modules with the
# same one share one saved tensor; LoRA adds a copy per adapted module. Norms read the stream they normalize and are
# counted by their own rule: NO_INPUT.
NO_INPUT = ""
INPUT_IDS = "input_ids"  # token and position embeddings: indices, nothing to save
ATTENTION_INPUT = "attention_input"  # q/k/v_proj, qkv_proj, query_key_value, c_attn: the normalized layer input
ATTENTION_OUTPUT = "attention_output"  # o_proj, dense, attn.c_proj: the attention output, a·d wide
MLP_INPUT = "mlp_input"  # gate/up_proj, gate_up_proj, fc1, c_fc, dense_h_to_4h: the MLP's input, h wide
MLP_HIDDEN = "mlp_hidden"  # down_proj, fc2, mlp.c_proj, dense_4h_to_h: the activated intermediate, i wide
ROUTER_INPUT = "router_input"  # the MoE router (mlp.gate): the MoE block's input
EXPERT_INPUT = "expert_input"  # fused experts.gate_up_proj: the routed tokens' inputs
EXPERT_HIDDEN = "expert_hidden"  # fused experts.down_proj: the routed tokens' intermediates
SHARED_EXPERT_INPUT = "shared_expert_input"  # shared_expert.gate/up_proj and shared_expert_gate: the MoE input
SHARED_EXPERT_HIDDEN = "shared_expert_hidden"  # shared_expert.down_proj: the shared expert's intermediate
HEAD_INPUT = "head_input"  # lm_head: the final norm's output
MLA_Q_LATENT = "mla_q_latent"  # q_b_proj: q_a_layernorm's output, q_lora_rank wide
MLA_KV_LATENT = "mla_kv_latent"  # kv_b_proj: kv_a_layernorm's output, kv_lora_rank wide


@dataclass(frozen=True)
class Tensor:
    """One parameter tensor (repeated over ``layers`` decoder layers when its name holds ``{i}``)."""

    name: str
    shape: tuple[int, ...]
    role: str  # embedding | position_embedding | attention | mlp | expert | router | shared_expert | norm | lm_head
    module: str
    kind: str
    is_bias: bool = False
    layers: int = 1
    reads: str = NO_INPUT  # the activation its module reads (ATTENTION_INPUT, MLP_HIDDEN, ...; see above)

    @property
    def numel(self) -> int:
        """Elements of one instance."""
        return prod(self.shape)

    @property
    def total(self) -> int:
        """Elements over all layers."""
        return self.numel * self.layers

    @property
    def in_features(self) -> int:
        return self.shape[0] if self.kind == CONV1D else self.shape[-1]

    @property
    def out_features(self) -> int:
        return self.shape[1] if self.kind == CONV1D else self.shape[0]

    @property
    def leaf(self) -> str:
        """The module's own name (``q_proj``), what PEFT's target_modules names."""
        return self.module.rsplit(".", 1)[-1]

    @property
    def bnb_quantized(self) -> bool:
        """Converted to Linear4bit / Linear8bitLt by transformers + bitsandbytes (weight only, not lm_head)."""
        return self.kind in (LINEAR, CONV1D) and not self.is_bias and self.role != "lm_head"


@dataclass(frozen=True)
class Inventory:
    """Every parameter tensor of a model, with totals by role."""

    arch: Architecture
    tensors: tuple[Tensor, ...]

    def __iter__(self) -> Iterator[Tensor]:
        return iter(self.tensors)

    @cached_property
    def total(self) -> int:
        return sum(t.total for t in self.tensors)

    def by_role(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.tensors:
            key = "bias" if t.is_bias else t.role
            out[key] = out.get(key, 0) + t.total
        return out

    @cached_property
    def quantizable(self) -> int:
        """Elements that bitsandbytes stores in 4 or 8 bits."""
        return sum(t.total for t in self.tensors if t.bnb_quantized)

    def linear_weights(self) -> list[Tensor]:
        """Weights of linear modules (any kind), lm_head included."""
        return [t for t in self.tensors if t.kind in LINEAR_KINDS and not t.is_bias]


def build_inventory(arch: Architecture) -> Inventory:
    """List every parameter tensor of ``arch`` as transformers instantiates it."""
    family = _FAMILY.get(arch.model_type, "llama")
    return Inventory(arch, tuple(_BUILDERS[family](arch)))


def _linear(
    module: str, out_f: int, in_f: int, role: str, reads: str, bias: bool, layers: int, kind: str = LINEAR
) -> list[Tensor]:
    shape = (in_f, out_f) if kind == CONV1D else (out_f, in_f)
    ts = [Tensor(f"{module}.weight", shape, role, module, kind, False, layers, reads)]
    if bias:
        ts.append(Tensor(f"{module}.bias", (out_f,), role, module, kind, True, layers, reads))
    return ts


def _norm(module: str, dim: int, arch: Architecture, layers: int, bias: bool | None = None) -> list[Tensor]:
    ts = [Tensor(f"{module}.weight", (dim,), "norm", module, NORM, False, layers)]
    if arch.norm_bias if bias is None else bias:
        ts.append(Tensor(f"{module}.bias", (dim,), "norm", module, NORM, True, layers))
    return ts


def _head(arch: Architecture, out: list[Tensor]) -> None:
    if not arch.tie_word_embeddings:
        out.extend(_linear("lm_head", arch.vocab_size, arch.hidden_size, "lm_head", HEAD_INPUT, arch.lm_head_bias, 1))
    elif arch.lm_head_bias:
        out.append(Tensor("lm_head.bias", (arch.vocab_size,), "lm_head", "lm_head", LINEAR, True, 1, HEAD_INPUT))


def _llama_family(arch: Architecture) -> list[Tensor]:
    """Llama, Mistral, Mixtral, Qwen2/3 (+MoE), Gemma 1/2/3, Phi, Phi-3, StarCoder2, OLMo 2/3, OLMoE, SmolLM3,
    Granite (+MoE), Cohere 1/2, GLM-4 MoE, DeepSeek-V2/V3, gpt-oss, Llama 4 (text)."""
    h, L, mt = arch.hidden_size, arch.num_hidden_layers, arch.model_type
    base = arch.vision.text_module if arch.vision else "model"  # a VLM's decoder sits under its language_model
    p = f"{base}.layers.{{i}}"
    out: list[Tensor] = [Tensor(f"{base}.embed_tokens.weight", (arch.vocab_size + arch.extra_embeddings, h),
                                "embedding", f"{base}.embed_tokens", EMBEDDING, reads=INPUT_IDS)]  # fmt: skip
    cross = len(arch.cross_attention_layers)
    out += _mla(arch, f"{p}.self_attn") if arch.mla else _attention(arch, f"{p}.self_attn", L - cross)
    if cross:  # Mllama's cross-attention layers: their own attention, the same MLP and norms
        from ._vision_mllama import cross_attention_tensors

        out += cross_attention_tensors(base, h, arch.num_attention_heads, arch.num_key_value_heads, cross)
    m = f"{p}.{arch.moe_block}"
    dense = arch.dense_layers
    if dense:
        out += _dense_mlp(arch, m, dense)
    if arch.moe_layers:
        out += _moe(arch, m, len(arch.moe_layers))
    if mt in ("olmo2", "olmo3"):
        norm_names: tuple[str, ...] = ("post_attention_layernorm", "post_feedforward_layernorm")
    elif arch.norms_per_layer == 4:
        norm_names = ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                      "post_feedforward_layernorm")  # fmt: skip
    elif arch.norms_per_layer == 1:
        norm_names = ("input_layernorm",)
    else:
        norm_names = ("input_layernorm", "post_attention_layernorm")
    for n in norm_names:
        out += _norm(f"{p}.{n}", h, arch, L)
    out += _norm("model.final_layernorm" if mt == "phi" else f"{base}.norm", h, arch, 1)
    _head(arch, out)
    if arch.vision is not None:
        out += vision_tensors(arch.vision)
    return out


def vision_tensors(tower: VisionTower) -> list[Tensor]:
    """The vision tower and its merger or projector, role ``vision``: Qwen's (``_qwen_tower``) or SigLIP's with
    Gemma 3's projector (``_siglip_tower``). They read nothing the decoder's activation rules count
    (``estimator._memory.vision_activations`` counts the tower's own activations)."""
    if tower.kind == "qwen":
        return _qwen_tower(tower)
    if tower.kind == "idefics3":
        from ._vision_idefics import idefics_tensors

        return idefics_tensors(tower)
    if tower.kind == "pixtral":
        return _pixtral_tower(tower)
    if tower.kind == "mllama":
        from ._vision_mllama import mllama_tensors

        return mllama_tensors(tower)
    if tower.kind == "qwen3":
        from ._vision_qwen3 import qwen3_tensors

        return qwen3_tensors(tower)
    return _clip_tower(tower) if tower.kind == "clip" else _siglip_tower(tower)


def _qwen_tower(tower: VisionTower) -> list[Tensor]:
    """The vision tower and its merger as ``Qwen2VisionTransformerPretrainedModel`` /
    ``Qwen2_5_VisionTransformerPretrainedModel`` build them (module ``model.visual``). The linears are
    ``nn.Linear`` (bitsandbytes converts them, PEFT's all-linear matches them), the Conv3d patch embedding is
    neither."""
    v, e, d, w = tower.module, tower.embed_dim, tower.depth, tower.mlp_width
    conv = (e, tower.in_channels, tower.temporal_patch_size, tower.patch_size, tower.patch_size)
    out = [Tensor(f"{v}.patch_embed.proj.weight", conv, "vision", f"{v}.patch_embed.proj", PARAMETER)]
    b = f"{v}.blocks.{{i}}"
    layernorm = not tower.gated
    out += _vision_norm(f"{b}.norm1", e, layernorm, d) + _vision_norm(f"{b}.norm2", e, layernorm, d)
    out += _linear(f"{b}.attn.qkv", 3 * e, e, "vision", NO_INPUT, True, d)
    out += _linear(f"{b}.attn.proj", e, e, "vision", NO_INPUT, True, d)
    if tower.gated:
        for name, o, i in (("gate_proj", w, e), ("up_proj", w, e), ("down_proj", e, w)):
            out += _linear(f"{b}.mlp.{name}", o, i, "vision", NO_INPUT, True, d)
    else:
        out += _linear(f"{b}.mlp.fc1", w, e, "vision", NO_INPUT, True, d)
        out += _linear(f"{b}.mlp.fc2", e, w, "vision", NO_INPUT, True, d)
    merged = e * tower.spatial_merge_size**2
    out += _vision_norm(f"{v}.merger.ln_q", e, layernorm, 1)
    out += _linear(f"{v}.merger.mlp.0", merged, merged, "vision", NO_INPUT, True, 1)
    out += _linear(f"{v}.merger.mlp.2", tower.out_hidden_size, merged, "vision", NO_INPUT, True, 1)
    return out


def _siglip_tower(tower: VisionTower) -> list[Tensor]:
    """``SiglipVisionModel`` (module ``model.vision_tower``) and ``Gemma3MultiModalProjector``
    (``model.multi_modal_projector``). The Conv2d patch embedding (with bias) and the position embedding (an
    ``nn.Embedding`` of one row per patch) are neither converted by bitsandbytes nor matched by all-linear; the
    blocks' q/k/v/out_proj and fc1/fc2 are ``nn.Linear`` with biases (converted and matched). With
    ``vision_use_head``: the attention-pooling head's probe, its ``nn.MultiheadAttention`` (packed in-projection
    Parameters; its out_proj is ``NonDynamicallyQuantizableLinear``, an ``nn.Linear`` subclass), LayerNorm and
    MLP. The projector's ``mm_input_projection_weight`` is a bare Parameter (vision width × text width, used by
    ``torch.matmul``) after an RMSNorm without bias."""
    v, e, w = tower.module, tower.embed_dim, tower.mlp_width
    out = siglip_body(tower)
    if tower.use_head:
        h = f"{v}.head"
        out.append(Tensor(f"{h}.probe", (1, 1, e), "vision", h, PARAMETER))
        out.append(Tensor(f"{h}.attention.in_proj_weight", (3 * e, e), "vision", f"{h}.attention", PARAMETER))
        out.append(Tensor(f"{h}.attention.in_proj_bias", (3 * e,), "vision", f"{h}.attention", PARAMETER, True))
        out += _linear(f"{h}.attention.out_proj", e, e, "vision", NO_INPUT, True, 1, SUBCLASS_LINEAR)
        out += _vision_norm(f"{h}.layernorm", e, True, 1)
        out += _linear(f"{h}.mlp.fc1", w, e, "vision", NO_INPUT, True, 1)
        out += _linear(f"{h}.mlp.fc2", e, w, "vision", NO_INPUT, True, 1)
    p = "model.multi_modal_projector"
    out.append(Tensor(f"{p}.mm_input_projection_weight", (e, tower.out_hidden_size), "vision", p, PARAMETER))
    out += _vision_norm(f"{p}.mm_soft_emb_norm", e, False, 1)
    return out


def _clip_tower(tower: VisionTower) -> list[Tensor]:
    """``CLIPVisionModel`` (module ``model.vision_tower``) and ``LlavaMultiModalProjector``
    (``model.multi_modal_projector``): a class embedding (a bare Parameter), a Conv2d patch embedding without bias,
    a position embedding of one row per patch and the class token, ``pre_layrnorm`` (transformers' spelling), the
    encoder layers SigLIP's blocks share, ``post_layernorm``, then ``linear_1`` (E × feature layers to the text
    width) and ``linear_2``, ``nn.Linear`` with ``multimodal_projector_bias``: bitsandbytes converts and all-linear
    adapts them like the tower's linears. LLaVA-NeXT (``LlavaNextModel``) adds ``image_newline``, a bare Parameter
    of the text width."""
    v, e, d, w = tower.module, tower.embed_dim, tower.depth, tower.mlp_width
    emb = f"{v}.embeddings"
    conv = (e, tower.in_channels, tower.patch_size, tower.patch_size)
    out = [
        Tensor(f"{emb}.class_embedding", (e,), "vision", emb, PARAMETER),
        Tensor(f"{emb}.patch_embedding.weight", conv, "vision", f"{emb}.patch_embedding", PARAMETER),
        Tensor(f"{emb}.position_embedding.weight", (tower.patches_per_side**2 + 1, e), "vision",
               f"{emb}.position_embedding", EMBEDDING),
    ]  # fmt: skip
    out += _vision_norm(f"{v}.pre_layrnorm", e, True, 1)
    out += _encoder_layers(f"{v}.encoder.layers.{{i}}", e, w, d)
    out += _vision_norm(f"{v}.post_layernorm", e, True, 1)
    p, h, bias = "model.multi_modal_projector", tower.out_hidden_size, tower.projector_bias
    out += _linear(f"{p}.linear_1", h, e * tower.feature_layers, "vision", NO_INPUT, bias, 1)
    out += _linear(f"{p}.linear_2", h, h, "vision", NO_INPUT, bias, 1)
    if tower.model_type == "llava_next":  # the learned token after each row of an image's tiled features
        out.append(Tensor("model.image_newline", (h,), "vision", "model", PARAMETER))
    return out


def siglip_body(tower: VisionTower) -> list[Tensor]:
    """A SigLIP-style vision transformer's body (Gemma 3's ``SiglipVisionModel``, Idefics3's and SmolVLM's
    ``Idefics3VisionTransformer``): the Conv2d patch embedding with bias, one learned position per patch of the
    fixed ``image_size`` (an ``nn.Embedding``), the encoder layers and ``post_layernorm``."""
    v, e = tower.module, tower.embed_dim
    emb = f"{v}.embeddings"
    conv = (e, tower.in_channels, tower.patch_size, tower.patch_size)
    out = [
        Tensor(f"{emb}.patch_embedding.weight", conv, "vision", f"{emb}.patch_embedding", PARAMETER),
        Tensor(f"{emb}.patch_embedding.bias", (e,), "vision", f"{emb}.patch_embedding", PARAMETER, True),
        Tensor(f"{emb}.position_embedding.weight", (tower.patches_per_side**2, e), "vision",
               f"{emb}.position_embedding", EMBEDDING),
    ]  # fmt: skip
    out += _encoder_layers(f"{v}.encoder.layers.{{i}}", e, tower.mlp_width, tower.depth)
    return out + _vision_norm(f"{v}.post_layernorm", e, True, 1)


def _encoder_layers(b: str, e: int, w: int, d: int) -> list[Tensor]:
    """SigLIP's and CLIP's encoder layers: two LayerNorms, q/k/v/out_proj and the fc1/fc2 MLP, all with biases."""
    out = _vision_norm(f"{b}.layer_norm1", e, True, d) + _vision_norm(f"{b}.layer_norm2", e, True, d)
    for name in ("k_proj", "v_proj", "q_proj", "out_proj"):
        out += _linear(f"{b}.self_attn.{name}", e, e, "vision", NO_INPUT, True, d)
    out += _linear(f"{b}.mlp.fc1", w, e, "vision", NO_INPUT, True, d)
    out += _linear(f"{b}.mlp.fc2", e, w, "vision", NO_INPUT, True, d)
    return out


def _vision_norm(module: str, dim: int, layernorm: bool, layers: int) -> list[Tensor]:
    ts = [Tensor(f"{module}.weight", (dim,), "vision", module, NORM, False, layers)]
    if layernorm:
        ts.append(Tensor(f"{module}.bias", (dim,), "vision", module, NORM, True, layers))
    return ts


def _attention(arch: Architecture, a: str, layers: int | None = None) -> list[Tensor]:
    """q/k/v (or a fused qkv_proj), o_proj, q/k norms and gpt-oss's sinks, in ``layers`` layers (all of them)."""
    h, mt, qkv_in, qkv_b = arch.hidden_size, arch.model_type, ATTENTION_INPUT, arch.qkv_bias
    L = arch.num_hidden_layers if layers is None else layers
    out: list[Tensor] = []
    if arch.fused_qkv:  # Phi-3
        out += _linear(f"{a}.qkv_proj", arch.q_dim + 2 * arch.kv_dim, h, "attention", qkv_in, qkv_b, L)
    else:
        out += _linear(f"{a}.q_proj", arch.q_dim, h, "attention", qkv_in, qkv_b, L)
        out += _linear(f"{a}.k_proj", arch.kv_dim, h, "attention", qkv_in, qkv_b, L)
        out += _linear(f"{a}.v_proj", arch.kv_dim, h, "attention", qkv_in, qkv_b, L)
    o_name = "dense" if mt == "phi" else "o_proj"
    out += _linear(f"{a}.{o_name}", h, arch.q_dim, "attention", ATTENTION_OUTPUT, arch.o_bias, L)
    if arch.qk_norm == "head":
        names = ("q_layernorm", "k_layernorm") if mt == "phi" else ("q_norm", "k_norm")
        for n in names:
            out += _norm(f"{a}.{n}", arch.head_dim, arch, L, bias=arch.qk_norm_bias)
    elif arch.qk_norm == "head_per_head":  # Cohere: a LayerNorm weight per head, (heads, head_dim)
        d = arch.head_dim
        out.append(Tensor(f"{a}.q_norm.weight", (arch.num_attention_heads, d), "norm", f"{a}.q_norm", NORM, False, L))
        out.append(Tensor(f"{a}.k_norm.weight", (arch.num_key_value_heads, d), "norm", f"{a}.k_norm", NORM, False, L))
    elif arch.qk_norm == "full":
        out += _norm(f"{a}.q_norm", arch.q_dim, arch, L)
        out += _norm(f"{a}.k_norm", arch.kv_dim, arch, L)
    if arch.attention_sinks:
        out.append(Tensor(f"{a}.sinks", (arch.num_attention_heads,), "attention", a, PARAMETER, False, L))
    return out


def _mla(arch: Architecture, a: str) -> list[Tensor]:
    """DeepSeek's multi-head latent attention: q through q_a_proj → q_a_layernorm → q_b_proj (or one q_proj), k/v
    through kv_a_proj_with_mqa (the latent and the shared rotary key) → kv_a_layernorm → kv_b_proj; o_proj."""
    h, L, a_h = arch.hidden_size, arch.num_hidden_layers, arch.num_attention_heads
    qk = arch.qk_nope_head_dim + arch.qk_rope_head_dim
    out: list[Tensor] = []
    if arch.q_lora_rank:
        out += _linear(f"{a}.q_a_proj", arch.q_lora_rank, h, "attention", ATTENTION_INPUT, arch.qkv_bias, L)
        out += _norm(f"{a}.q_a_layernorm", arch.q_lora_rank, arch, L)
        out += _linear(f"{a}.q_b_proj", a_h * qk, arch.q_lora_rank, "attention", MLA_Q_LATENT, False, L)
    else:
        out += _linear(f"{a}.q_proj", a_h * qk, h, "attention", ATTENTION_INPUT, False, L)
    kv_a = arch.kv_lora_rank + arch.qk_rope_head_dim
    out += _linear(f"{a}.kv_a_proj_with_mqa", kv_a, h, "attention", ATTENTION_INPUT, arch.qkv_bias, L)
    out += _norm(f"{a}.kv_a_layernorm", arch.kv_lora_rank, arch, L)
    kv_b = a_h * (arch.qk_nope_head_dim + arch.v_head_dim)
    out += _linear(f"{a}.kv_b_proj", kv_b, arch.kv_lora_rank, "attention", MLA_KV_LATENT, False, L)
    out += _linear(f"{a}.o_proj", h, arch.o_in, "attention", ATTENTION_OUTPUT, arch.o_bias, L)
    return out


def _dense_mlp(arch: Architecture, m: str, layers: int) -> list[Tensor]:
    h, i, b, mt = arch.hidden_size, arch.intermediate_size, arch.mlp_bias, arch.model_type
    if mt == "phi":
        return _linear(f"{m}.fc1", i, h, "mlp", MLP_INPUT, True, layers) + _linear(
            f"{m}.fc2", h, i, "mlp", MLP_HIDDEN, True, layers
        )
    if mt == "starcoder2":
        return _linear(f"{m}.c_fc", i, h, "mlp", MLP_INPUT, b, layers) + _linear(
            f"{m}.c_proj", h, i, "mlp", MLP_HIDDEN, b, layers
        )
    if arch.fused_gate_up:
        return _linear(f"{m}.gate_up_proj", 2 * i, h, "mlp", MLP_INPUT, b, layers) + _linear(
            f"{m}.down_proj", h, i, "mlp", MLP_HIDDEN, b, layers
        )
    out = _linear(f"{m}.gate_proj", i, h, "mlp", MLP_INPUT, b, layers)
    out += _linear(f"{m}.up_proj", i, h, "mlp", MLP_INPUT, b, layers)
    return out + _linear(f"{m}.down_proj", h, i, "mlp", MLP_HIDDEN, b, layers)


def _moe(arch: Architecture, m: str, moe: int) -> list[Tensor]:
    """The sparse block: router, fused experts (E, out, in) or (E, in, out), biases, shared experts and gate."""
    h, e, mi, x = arch.hidden_size, arch.num_experts, arch.moe_intermediate_size, f"{m}.experts"
    g = f"{m}.{arch.router_name}"
    kind = OPAQUE_LINEAR if arch.router_linear else ROUTER  # Llama4Router returns (scores, logits)
    out = [Tensor(f"{g}.weight", (e, h), "router", g, kind, False, moe, ROUTER_INPUT)]
    if arch.router_bias:
        out.append(Tensor(f"{g}.bias", (e,), "router", g, ROUTER, True, moe, ROUTER_INPUT))
    gate_up, down = ((e, h, 2 * mi), (e, mi, h)) if arch.experts_in_out else ((e, 2 * mi, h), (e, h, mi))
    out.append(Tensor(f"{x}.gate_up_proj", gate_up, "expert", x, EXPERTS, False, moe, EXPERT_INPUT))
    if arch.expert_bias:
        out.append(Tensor(f"{x}.gate_up_proj_bias", (e, 2 * mi), "expert", x, EXPERTS, True, moe, EXPERT_INPUT))
    out.append(Tensor(f"{x}.down_proj", down, "expert", x, EXPERTS, False, moe, EXPERT_HIDDEN))
    if arch.expert_bias:
        out.append(Tensor(f"{x}.down_proj_bias", (e, h), "expert", x, EXPERTS, True, moe, EXPERT_HIDDEN))
    if arch.shared_experts_name:  # Qwen2-MoE builds it even at shared_expert_intermediate_size 0
        si, s = arch.shared_expert_intermediate_size, f"{m}.{arch.shared_experts_name}"
        out += _linear(f"{s}.gate_proj", si, h, "shared_expert", SHARED_EXPERT_INPUT, False, moe)
        out += _linear(f"{s}.up_proj", si, h, "shared_expert", SHARED_EXPERT_INPUT, False, moe)
        out += _linear(f"{s}.down_proj", h, si, "shared_expert", SHARED_EXPERT_HIDDEN, False, moe)
    if arch.shared_expert_gate:
        out += _linear(f"{m}.shared_expert_gate", 1, h, "router", SHARED_EXPERT_INPUT, False, moe)
    return out


def _gpt2(arch: Architecture) -> list[Tensor]:
    """GPT-2 (``Conv1D`` layers: weights (in, out)) and GPT-BigCode (the same names with ``nn.Linear`` layers,
    weights (out, in), and one fused q|k|v of h + 2·kv_dim: 3h for GPT-2's full heads)."""
    h, L, i = arch.hidden_size, arch.num_hidden_layers, arch.intermediate_size
    kind = LINEAR if arch.model_type == "gpt_bigcode" else CONV1D
    p = "transformer.h.{i}"
    out = [
        Tensor("transformer.wte.weight", (arch.vocab_size, h), "embedding", "transformer.wte", EMBEDDING,
               reads=INPUT_IDS),
        Tensor("transformer.wpe.weight", (arch.position_embeddings, h), "position_embedding", "transformer.wpe",
               EMBEDDING, reads=INPUT_IDS),
    ]  # fmt: skip
    out += _norm(f"{p}.ln_1", h, arch, L)
    out += _linear(f"{p}.attn.c_attn", h + 2 * arch.kv_dim, h, "attention", ATTENTION_INPUT, True, L, kind)
    out += _linear(f"{p}.attn.c_proj", h, h, "attention", ATTENTION_OUTPUT, True, L, kind)
    out += _norm(f"{p}.ln_2", h, arch, L)
    out += _linear(f"{p}.mlp.c_fc", i, h, "mlp", MLP_INPUT, True, L, kind)
    out += _linear(f"{p}.mlp.c_proj", h, i, "mlp", MLP_HIDDEN, True, L, kind)
    out += _norm("transformer.ln_f", h, arch, 1)
    _head(arch, out)
    return out


def _gpt_neox(arch: Architecture) -> list[Tensor]:
    h, L, i = arch.hidden_size, arch.num_hidden_layers, arch.intermediate_size
    p = "gpt_neox.layers.{i}"
    out = [Tensor("gpt_neox.embed_in.weight", (arch.vocab_size, h), "embedding", "gpt_neox.embed_in", EMBEDDING,
                  reads=INPUT_IDS)]  # fmt: skip
    out += _norm(f"{p}.input_layernorm", h, arch, L)
    out += _norm(f"{p}.post_attention_layernorm", h, arch, L)
    out += _linear(f"{p}.attention.query_key_value", 3 * h, h, "attention", ATTENTION_INPUT, arch.qkv_bias, L)
    out += _linear(f"{p}.attention.dense", h, h, "attention", ATTENTION_OUTPUT, arch.o_bias, L)
    out += _linear(f"{p}.mlp.dense_h_to_4h", i, h, "mlp", MLP_INPUT, True, L)
    out += _linear(f"{p}.mlp.dense_4h_to_h", h, i, "mlp", MLP_HIDDEN, True, L)
    out += _norm("gpt_neox.final_layer_norm", h, arch, 1)
    _head(arch, out)
    return out


def _falcon(arch: Architecture) -> list[Tensor]:
    h, L, i = arch.hidden_size, arch.num_hidden_layers, arch.intermediate_size
    p = "transformer.h.{i}"
    qkv = arch.q_dim + 2 * arch.kv_dim
    out = [Tensor("transformer.word_embeddings.weight", (arch.vocab_size, h), "embedding",
                  "transformer.word_embeddings", EMBEDDING, reads=INPUT_IDS)]  # fmt: skip
    a, k = f"{p}.self_attention", SUBCLASS_LINEAR
    out += _linear(f"{a}.query_key_value", qkv, h, "attention", ATTENTION_INPUT, arch.qkv_bias, L, k)
    out += _linear(f"{a}.dense", h, h, "attention", ATTENTION_OUTPUT, arch.o_bias, L, k)
    out += _linear(f"{p}.mlp.dense_h_to_4h", i, h, "mlp", MLP_INPUT, arch.mlp_bias, L, k)
    out += _linear(f"{p}.mlp.dense_4h_to_h", h, i, "mlp", MLP_HIDDEN, arch.mlp_bias, L, k)
    if not arch.parallel_block:
        names: tuple[str, ...] = ("input_layernorm", "post_attention_layernorm")
    elif arch.norms_per_layer == 2:
        names = ("ln_attn", "ln_mlp")
    else:
        names = ("input_layernorm",)
    for n in names:
        out += _norm(f"{p}.{n}", h, arch, L)
    out += _norm("transformer.ln_f", h, arch, 1)
    _head(arch, out)
    return out


_FAMILY = {"gpt2": "gpt2", "gpt_neox": "gpt_neox", "falcon": "falcon", "gpt_bigcode": "gpt_bigcode"}
_BUILDERS = {"llama": _llama_family, "gpt2": _gpt2, "gpt_neox": _gpt_neox, "falcon": _falcon,
             "gpt_bigcode": _gpt2}  # fmt: skip


def _pixtral_tower(tower: VisionTower) -> list[Tensor]:
    """``PixtralVisionModel`` (``model.vision_tower``) and ``Mistral3MultiModalProjector``
    (``model.multi_modal_projector``), as ``estimator._vision_pixtral`` lists them."""
    v, e, d, m = tower.module, tower.embed_dim, tower.depth, tower.mlp_width
    conv = (e, tower.in_channels, tower.patch_size, tower.patch_size)
    out = [Tensor(f"{v}.patch_conv.weight", conv, "vision", f"{v}.patch_conv", PARAMETER)]
    out += _vision_norm(f"{v}.ln_pre", e, False, 1)
    b = f"{v}.transformer.layers.{{i}}"
    out += _vision_norm(f"{b}.attention_norm", e, False, d) + _vision_norm(f"{b}.ffn_norm", e, False, d)
    for name in ("k_proj", "v_proj", "q_proj", "o_proj"):
        out += _linear(f"{b}.attention.{name}", e, e, "vision", NO_INPUT, False, d)
    out += _linear(f"{b}.feed_forward.gate_proj", m, e, "vision", NO_INPUT, False, d)
    out += _linear(f"{b}.feed_forward.up_proj", m, e, "vision", NO_INPUT, False, d)
    out += _linear(f"{b}.feed_forward.down_proj", e, m, "vision", NO_INPUT, False, d)
    p, h, bias, k = "model.multi_modal_projector", tower.out_hidden_size, tower.projector_bias, tower.spatial_merge_size
    out += _vision_norm(f"{p}.norm", e, False, 1)
    out += _linear(f"{p}.patch_merger.merging_layer", e, e * k * k, "vision", NO_INPUT, False, 1)
    out += _linear(f"{p}.linear_1", h, e * tower.feature_layers, "vision", NO_INPUT, bias, 1)
    out += _linear(f"{p}.linear_2", h, h, "vision", NO_INPUT, bias, 1)
    return out
