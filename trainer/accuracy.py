"""The accuracy suite: the analytic estimate held against real CPU runs and traced runs at real sizes.

A case is a plan and a config. ``check_case`` runs it for real (``trainer.run.run``, live-tensor tracking on the
CPU) or traced (``trainer.traced.traced_run``, FakeTensorMode), estimates it with ``estimator.estimate`` and
returns both side by side with signed errors. ``tests/trainer/test_accuracy.py`` asserts the tolerances below on
every case; ``python -m bench.accuracy`` writes the table in docs/accuracy.md.

Tolerances (issue: "the analytic peak within 3 % of the measured/traced live-tensor peak in every case and
every component within 5 % or 1 MiB"):
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from estimator import Plan, estimate, relative_error

PEAK_TOLERANCE = 0.03
COMPONENT_TOLERANCE = 0.05
COMPONENT_SLACK = 1024 * 1024
TRACED_VS_REAL = 0.001

# Components compared one by one; activations and logits are compared together, since backward temporaries of
# the loss cannot be told apart from layer activations by a live-tensor tracker.
EXACT_COMPONENTS = ("weights", "adapters", "optimizer", "reference")
COMPARED = ("weights", "adapters", "gradients", "optimizer", "reference", "activations+logits")


def _tiny(model_type: str, **extra: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "model_type": model_type,
        "hidden_size": 256,
        "intermediate_size": 768,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 2048,
        "max_position_embeddings": 1024,
        "tie_word_embeddings": False,
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": 2,
    }
    cfg.update(extra)
    return cfg


LLAMA = _tiny("llama")
LLAMA_V256 = _tiny("llama", vocab_size=256)  # small logits: the layers' and the final norm's backward set the peak
QWEN2 = _tiny("qwen2", tie_word_embeddings=True)
MISTRAL = _tiny("mistral", num_key_value_heads=1)
QWEN3 = _tiny("qwen3", head_dim=64)
GEMMA2 = _tiny("gemma2", head_dim=64, tie_word_embeddings=True, final_logit_softcapping=None,
               attn_logit_softcapping=None, query_pre_attn_scalar=64)  # fmt: skip
PHI3 = _tiny("phi3", num_key_value_heads=4)
OLMO2 = _tiny("olmo2")
MIXTRAL = _tiny("mixtral", num_local_experts=4, num_experts_per_tok=2, intermediate_size=256)


def _small(model_type: str, **extra: Any) -> dict[str, Any]:
    """The newer families' tiny configs: hidden 256, MLP 512, 2 layers, 4 heads / 2 KV heads, vocabulary 2048."""
    cfg: dict[str, Any] = {
        "model_type": model_type, "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 2048, "max_position_embeddings": 512,
        "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2,
    }  # fmt: skip
    cfg.update(extra)
    return cfg


SMOLLM3 = _small("smollm3", tie_word_embeddings=True)
# the older dense families: Gemma's tanh-GELU MLP, Phi's and GPT-NeoX's partial rotary and LayerNorm, StarCoder2's
# biased GELU MLP, Falcon's native config in its new decoder layout
GEMMA = _small("gemma", head_dim=64, tie_word_embeddings=True)
GEMMA3_TEXT = _small("gemma3_text", num_hidden_layers=3, head_dim=64, sliding_window=128, sliding_window_pattern=3,
                     final_logit_softcapping=None, attn_logit_softcapping=None, query_pre_attn_scalar=64)  # fmt: skip
PHI = _small("phi", num_key_value_heads=4, partial_rotary_factor=0.5, resid_pdrop=0.0, embd_pdrop=0.0)
GPT_NEOX = _small("gpt_neox", num_key_value_heads=4, rotary_pct=0.25, hidden_dropout=0.0, attention_dropout=0.0)
STARCODER2 = _small("starcoder2", sliding_window=None, residual_dropout=0.0, embedding_dropout=0.0)
FALCON = _small("falcon", num_kv_heads=2, new_decoder_architecture=True, parallel_attn=True, bias=False,
                alibi=False, hidden_dropout=0.0, attention_dropout=0.0)  # fmt: skip
GRANITE = _small("granite", logits_scaling=8.0, embedding_multiplier=12.0, residual_multiplier=0.22,
                 attention_multiplier=0.0078125)  # fmt: skip
COHERE = _small("cohere", use_qk_norm=True, logit_scale=0.0625)
COHERE2 = _small("cohere2", logit_scale=0.25, sliding_window=256)
OLMO3 = _small("olmo3", sliding_window=256)
OLMOE = _small("olmoe", intermediate_size=128, num_experts=4, num_experts_per_tok=2)
QWEN3_MOE = _small("qwen3_moe", head_dim=64, moe_intermediate_size=128, num_experts=4, num_experts_per_tok=2)
QWEN2_MOE = _small("qwen2_moe", moe_intermediate_size=128, shared_expert_intermediate_size=256, num_experts=4,
                   num_experts_per_tok=2)  # fmt: skip
GRANITEMOE = _small("granitemoe", intermediate_size=128, num_local_experts=4, num_experts_per_tok=2, logits_scaling=4.0)
_ROUTED = dict(num_hidden_layers=3, moe_intermediate_size=128, n_routed_experts=4, num_experts_per_tok=2,
               first_k_dense_replace=1)  # fmt: skip
GLM4_MOE = _small("glm4_moe", **_ROUTED, n_shared_experts=1, head_dim=64, attention_bias=True, use_qk_norm=True,
                  n_group=1, topk_group=1)  # fmt: skip
_MLA = dict(kv_lora_rank=64, qk_nope_head_dim=64, qk_rope_head_dim=64, v_head_dim=64, num_key_value_heads=4)
DEEPSEEK_V3 = _small("deepseek_v3", **_ROUTED, **_MLA, n_shared_experts=1, q_lora_rank=128, n_group=1, topk_group=1)
DEEPSEEK_V2 = _small("deepseek_v2", **_ROUTED, **_MLA, n_shared_experts=2, q_lora_rank=None)
GPT_OSS = _small("gpt_oss", intermediate_size=128, head_dim=64, num_local_experts=4, num_experts_per_tok=2,
                 sliding_window=128)  # fmt: skip
LLAMA4_TEXT = _small(
    "llama4_text",
    num_hidden_layers=4,
    intermediate_size=128,
    intermediate_size_mlp=512,
    head_dim=64,
    num_local_experts=4,
    num_experts_per_tok=1,
    interleave_moe_layer_step=2,
    attention_chunk_size=256,
)
GPT_BIGCODE: dict[str, Any] = {
    "model_type": "gpt_bigcode", "n_embd": 256, "n_layer": 2, "n_head": 4, "vocab_size": 2048, "n_positions": 512,
    "multi_query": True, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0, "pad_token_id": 0,
    "bos_token_id": 1, "eos_token_id": 2,
}  # fmt: skip
_RW = {"vocab_size": 2048, "hidden_size": 256, "n_head": 4, "n_layer": 2, "parallel_attn": True, "bias": False,
       "alibi": False, "hidden_dropout": 0.0, "attention_dropout": 0.0, "pad_token_id": 0, "bos_token_id": 1,
       "eos_token_id": 2}  # fmt: skip
REFINED_WEB_MODEL = {"model_type": "RefinedWebModel", **_RW, "multi_query": True}  # Falcon-7B's legacy layout
REFINED_WEB = {"model_type": "RefinedWeb", **_RW, "n_head_kv": 2}  # Falcon-40B's legacy layout
# Vision-language (tiny towers: width 128, 2-4 blocks; token ids inside the tiny vocabulary)
_VL_TOKENS = {"image_token_id": 2000, "vision_start_token_id": 2001, "vision_end_token_id": 2002,
              "video_token_id": 2003}  # fmt: skip
_VL_TEXT: dict[str, Any] = {
    "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "vocab_size": 2048, "bos_token_id": 1, "eos_token_id": 2,
    "rope_scaling": {"type": "mrope", "mrope_section": [8, 12, 12]},
}  # fmt: skip
QWEN2_VL: dict[str, Any] = {
    "model_type": "qwen2_vl",
    **_VL_TOKENS,
    "text_config": {"model_type": "qwen2_vl_text", **_VL_TEXT},
    "vision_config": {"depth": 2, "embed_dim": 128, "hidden_size": 256, "num_heads": 4, "mlp_ratio": 2},
}
QWEN2_5_VL: dict[str, Any] = {
    "model_type": "qwen2_5_vl",
    **_VL_TOKENS,
    "text_config": {"model_type": "qwen2_5_vl_text", **_VL_TEXT},
    "vision_config": {
        "depth": 4,
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_heads": 4,
        "out_hidden_size": 256,
        "window_size": 112,
        "fullatt_block_indexes": [1, 3],
    },
}
# Qwen3-VL: a tiny Qwen3 text model (head_dim 64, interleaved M-RoPE) and tower (width 128, 4 blocks, DeepStack
# after blocks 1 and 2 into the first two decoder layers, an 8 × 8 position grid, 16² patches)
QWEN3_VL: dict[str, Any] = {
    "model_type": "qwen3_vl",
    **_VL_TOKENS,
    "text_config": {
        "model_type": "qwen3_vl_text", **{k: v for k, v in _VL_TEXT.items() if k != "rope_scaling"},
        "num_hidden_layers": 3, "head_dim": 64,
        "rope_parameters": {"rope_type": "default", "rope_theta": 5000000, "mrope_section": [12, 10, 10],
                            "mrope_interleaved": True},
    },
    "vision_config": {
        "depth": 4, "hidden_size": 128, "intermediate_size": 256, "num_heads": 4, "out_hidden_size": 256,
        "num_position_embeddings": 64, "deepstack_visual_indexes": [1, 2], "patch_size": 16,
    },
}  # fmt: skip
# Qwen3-VL-MoE: the same tower over a tiny Qwen3-MoE text model (4 experts, 2 per token, the first layer dense)
QWEN3_VL_MOE: dict[str, Any] = QWEN3_VL | {
    "model_type": "qwen3_vl_moe",
    "text_config": QWEN3_VL["text_config"] | {
        "model_type": "qwen3_vl_moe_text", "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 128,
        "decoder_sparse_step": 1, "mlp_only_layers": [0],
    },
}  # fmt: skip
# Gemma 3: a tiny Gemma 3 text model and SigLIP tower (width 128, 2 layers, 224² images in 14² patches: 256
# patches pooled 4 × 4 to 16 tokens; boi/eoi/image ids inside the tiny vocabulary)
GEMMA3: dict[str, Any] = {
    "model_type": "gemma3",
    "text_config": {
        "model_type": "gemma3_text", **{k: v for k, v in _VL_TEXT.items() if k != "rope_scaling"}, "head_dim": 64,
        "query_pre_attn_scalar": 64, "sliding_window": 128, "max_position_embeddings": 1024, "pad_token_id": 0,
    },
    "vision_config": {
        "model_type": "siglip_vision_model", "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
        "num_attention_heads": 4, "image_size": 224, "patch_size": 14, "vision_use_head": False,
    },
    "mm_tokens_per_image": 16, "boi_token_index": 2000, "eoi_token_index": 2001, "image_token_index": 2002,
    "tie_word_embeddings": True, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2,
}  # fmt: skip
# Idefics3 / SmolVLM: a tiny Llama and tower (width 128, 2 layers, tiles of 128² in 16² patches: 64 patches shuffled
# by 2 to 16 tokens a tile; a square image is 4 × 4 tiles and the global one)
_IDEFICS_TEXT: dict[str, Any] = {
    "model_type": "llama", **{k: v for k, v in _VL_TEXT.items() if k != "rope_scaling"}, "pad_token_id": 0,
    "max_position_embeddings": 2048,
}  # fmt: skip
_IDEFICS_VISION: dict[str, Any] = {
    "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
    "image_size": 128, "patch_size": 16,
}  # fmt: skip
IDEFICS3: dict[str, Any] = {
    "model_type": "idefics3", "text_config": _IDEFICS_TEXT,
    "vision_config": {"model_type": "idefics3_vision", **_IDEFICS_VISION}, "scale_factor": 2,
    "image_token_id": 2000, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2,
}  # fmt: skip
SMOLVLM: dict[str, Any] = IDEFICS3 | {
    "model_type": "smolvlm", "vision_config": {"model_type": "smolvlm_vision", **_IDEFICS_VISION},
}  # fmt: skip
# Mistral 3: a tiny Mistral language model and Pixtral tower (width 128, 2 layers, patch 14, longest edge 224: a
# 224² image is 256 patches merged 2 × 2 to 64 features, 8 rows of 8 [IMG] and an [IMG_BREAK]/[IMG_END])
MISTRAL3: dict[str, Any] = {
    "model_type": "mistral3",
    "text_config": {
        "model_type": "mistral", **{k: v for k, v in _VL_TEXT.items() if k != "rope_scaling"}, "head_dim": 64,
        "max_position_embeddings": 1024, "sliding_window": None, "pad_token_id": 11,
    },
    "vision_config": {
        "model_type": "pixtral", "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
        "num_attention_heads": 4, "head_dim": 32, "image_size": 224, "patch_size": 14,
    },
    "image_token_index": 10, "spatial_merge_size": 2, "vision_feature_layer": -1, "multimodal_projector_bias": False,
    "tie_word_embeddings": False, "pad_token_id": 11, "bos_token_id": 1, "eos_token_id": 2,
}  # fmt: skip
# LLaVA 1.5: a tiny Llama language model and CLIP tower (width 128, 2 layers, 224² images in 14² patches: 256 patches
# and the class token, 256 image tokens; the image id inside the tiny vocabulary)
LLAVA: dict[str, Any] = {
    "model_type": "llava",
    "text_config": {"model_type": "llama", **{k: v for k, v in _VL_TEXT.items() if k != "rope_scaling"},
                    "max_position_embeddings": 1024, "pad_token_id": 0},
    "vision_config": {
        "model_type": "clip_vision_model", "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
        "num_attention_heads": 4, "image_size": 224, "patch_size": 14, "projection_dim": 64,
    },
    "image_token_index": 2000, "vision_feature_layer": -2, "vision_feature_select_strategy": "default",
    "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2,
}  # fmt: skip
# Llama 3.2 Vision: a tiny language model of 4 layers, 1 and 3 cross-attention layers (skipped without images), and a
# tower of width 128 (2 local layers, 1 global, the first layer's output as the intermediate feature: 256 into the
# projector), tiles of 112² in 14² patches (64 patches and the class token a tile, padded to 72), up to 4 tiles
MLLAMA: dict[str, Any] = {
    "model_type": "mllama",
    "text_config": {
        "model_type": "mllama_text_model", **{k: v for k, v in _VL_TEXT.items() if k != "rope_scaling"},
        "num_hidden_layers": 4, "cross_attention_layers": [1, 3], "max_position_embeddings": 1024,
        "rope_parameters": {"rope_type": "default", "rope_theta": 500000.0}, "pad_token_id": 0,
    },
    "vision_config": {
        "model_type": "mllama_vision_model", "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
        "num_global_layers": 1, "attention_heads": 4, "intermediate_layers_indices": [0], "vision_output_dim": 256,
        "image_size": 112, "patch_size": 14, "max_num_tiles": 4,
    },
    "image_token_index": 2048, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2,
}  # fmt: skip
# LLaVA-NeXT: LLaVA's tiny language model and CLIP tower at 112² tiles (8 × 8 patches and the class token), pinpoints
# up to 2 × 2 tiles (an image is cut into at most 4 tiles and the base image: 325 positions through the tower)
LLAVA_NEXT: dict[str, Any] = LLAVA | {
    "model_type": "llava_next",
    "vision_config": LLAVA["vision_config"] | {"image_size": 112},
    "image_grid_pinpoints": [[112, 224], [224, 112], [224, 224]],
}
LLAMA4_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
"""Llama 4's LoRA targets in the grid: attention, the shared expert and the dense layers' MLP (``all-linear``
would adapt the router, which PEFT cannot run for Llama 4's)."""
GPT2: dict[str, Any] = {
    "model_type": "gpt2", "n_embd": 256, "n_layer": 3, "n_head": 4, "vocab_size": 2048, "n_positions": 1024,
    "bos_token_id": 0, "eos_token_id": 0, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
}  # fmt: skip


@dataclass(frozen=True)
class Case:
    id: str
    config: Mapping[str, Any]
    plan: dict[str, Any] = field(default_factory=dict)

    def make_plan(self) -> Plan:
        base: dict[str, Any] = {
            "device": "cpu",
            "batch_size": 2,
            "seq_len": 256,
            "lora_dropout": 0.0,
            "padding": "none",
        }
        return Plan.from_dict(base | self.plan | {"config": dict(self.config)})


def _c(id: str, config: Mapping[str, Any], **plan: Any) -> Case:
    return Case(id, config, plan)


# The CPU grid: real training runs on tiny models.
CPU_CASES: tuple[Case, ...] = (
    _c("llama-qlora-gc", LLAMA, method="qlora", gradient_checkpointing=True),
    _c("llama-qlora-nogc", LLAMA, method="qlora", gradient_checkpointing=False),
    _c("llama-qlora-nogc-dropout", LLAMA, method="qlora", gradient_checkpointing=False, lora_dropout=0.1),
    _c("llama-qlora-fp4-nodq", LLAMA, method="qlora", quant_type="fp4", double_quant=False),
    _c("llama-qlora-eager-gc", LLAMA, method="qlora", attn_implementation="eager"),
    _c("llama-qlora-b4-s128", LLAMA, method="qlora", batch_size=4, seq_len=128, gradient_checkpointing=False),
    _c("llama-lora-gc", LLAMA, method="lora"),
    _c("llama-lora-nogc", LLAMA, method="lora", gradient_checkpointing=False),
    _c("llama-lora-gc-dropout", LLAMA, method="lora", lora_dropout=0.1),
    _c("llama-lora-eager-nogc", LLAMA, method="lora", attn_implementation="eager", gradient_checkpointing=False),
    _c("llama-lora-qv", LLAMA, method="lora", target_modules=["q_proj", "v_proj"], gradient_checkpointing=False),
    _c("llama-full-gc", LLAMA, method="full"),
    _c("llama-full-nogc", LLAMA, method="full", gradient_checkpointing=False),
    _c("llama-v256-full-gc-b4", LLAMA_V256, method="full", batch_size=4),  # the MLP's backward in the first layer
    _c("llama-v256-full-nogc-b4", LLAMA_V256, method="full", batch_size=4, gradient_checkpointing=False),  # final norm
    _c("qwen2-qlora-gc", QWEN2, method="qlora"),
    _c("qwen2-lora-nogc", QWEN2, method="lora", gradient_checkpointing=False, lora_dropout=0.05),
    _c("mistral-qlora-s512", MISTRAL, method="qlora", batch_size=1, seq_len=512),
    _c("mistral-lora-nogc", MISTRAL, method="lora", gradient_checkpointing=False),
    _c("qwen3-qlora-gc", QWEN3, method="qlora"),
    _c("gemma2-qlora-gc", GEMMA2, method="qlora"),  # sdpa requested: transformers runs Gemma 2 eager
    _c("gemma2-lora-nogc", GEMMA2, method="lora", attn_implementation="eager", gradient_checkpointing=False),
    _c("phi3-qlora-gc", PHI3, method="qlora"),
    _c("phi3-lora-nogc", PHI3, method="lora", gradient_checkpointing=False),
    _c("olmo2-lora-gc", OLMO2, method="lora"),
    _c("gpt2-lora-nogc", GPT2, method="lora", gradient_checkpointing=False),
    _c("gpt2-full-gc", GPT2, method="full"),
    _c("mixtral-qlora-gc", MIXTRAL, method="qlora"),
    _c("mixtral-lora-nogc", MIXTRAL, method="lora", gradient_checkpointing=False),
    # the setup around the model: padding, the training loop, the loss kernel, a pinned SDPA backend
    _c("llama-lora-padded-nogc", LLAMA, method="lora", padding="padded", gradient_checkpointing=False),
    _c("llama-qlora-padded-gc", LLAMA, method="qlora", padding="padded"),
    _c("llama-qlora-packed-nogc", LLAMA, method="qlora", padding="packed", gradient_checkpointing=False),
    _c("llama-lora-plain-gc", LLAMA, method="lora", training_loop="plain"),
    _c("llama-qlora-plain-gc", LLAMA, method="qlora", training_loop="plain"),
    _c("llama-full-plain-nogc", LLAMA, method="full", training_loop="plain", gradient_checkpointing=False),
    _c("llama-lora-chunked-gc", LLAMA, method="lora", loss="chunked"),
    _c("llama-qlora-chunked-nogc", LLAMA, method="qlora", loss="chunked", gradient_checkpointing=False),
    _c("llama-full-chunked-plain-gc", LLAMA, method="full", loss="chunked", training_loop="plain"),
    _c("qwen2-lora-chunked-padded-b1", QWEN2, method="lora", loss="chunked", padding="padded", batch_size=1),
    _c("llama-lora-math-nogc", LLAMA, method="lora", sdpa_backend="math", gradient_checkpointing=False),
    _c("llama-qlora-math-gc", LLAMA, method="qlora", sdpa_backend="math"),
    # newer and legacy families (tiny: hidden 256, 2-4 layers)
    _c("smollm3-qlora-gc", SMOLLM3, method="qlora"),
    _c("granite-qlora-gc", GRANITE, method="qlora"),
    _c("cohere-lora-nogc", COHERE, method="lora", gradient_checkpointing=False),
    _c("cohere2-qlora-gc", COHERE2, method="qlora"),  # sliding window at the row's length: a mask
    _c("olmo3-lora-nogc", OLMO3, method="lora", gradient_checkpointing=False),
    _c("gpt-bigcode-lora-nogc", GPT_BIGCODE, method="lora", gradient_checkpointing=False),
    _c("refinedwebmodel-lora-nogc", REFINED_WEB_MODEL, method="lora", gradient_checkpointing=False),
    _c("refinedweb-qlora-gc", REFINED_WEB, method="qlora"),
    _c("gemma-qlora-gc", GEMMA, method="qlora"),
    _c("gemma-lora-nogc", GEMMA, method="lora", gradient_checkpointing=False),
    _c("gemma3-text-qlora-gc", GEMMA3_TEXT, method="qlora"),  # local layers' sliding window inside the row: masks
    _c("phi-qlora-gc", PHI, method="qlora"),
    _c("phi-lora-nogc", PHI, method="lora", gradient_checkpointing=False),
    _c("gpt-neox-lora-nogc", GPT_NEOX, method="lora", gradient_checkpointing=False),
    _c("gpt-neox-qlora-gc", GPT_NEOX, method="qlora"),
    _c("starcoder2-qlora-gc", STARCODER2, method="qlora"),
    _c("starcoder2-lora-nogc", STARCODER2, method="lora", gradient_checkpointing=False),
    _c("falcon-lora-gc", FALCON, method="lora"),
    _c("falcon-full-nogc", FALCON, method="full", gradient_checkpointing=False),
    # objectives, with TRL's own trainers (trainer.objectives): the reference copy, the "ref" adapter, bf16 QLoRA
    _c("llama-dpo-qlora-gc", LLAMA, method="qlora", objective="dpo"),
    _c("llama-dpo-full-gc", LLAMA, method="full", objective="dpo"),
    _c("llama-kto-qlora-gc", LLAMA, method="qlora", objective="kto"),  # unpaired, a KL batch, the "ref" adapter
    _c("llama-orpo-qlora-gc", LLAMA, method="qlora", objective="orpo"),  # fp32 logits: three gradients at once
    _c("llama-simpo-lora-nogc", LLAMA, method="lora", objective="simpo", gradient_checkpointing=False),
    _c("llama-orpo-full-gc", LLAMA, method="full", objective="orpo"),  # the first layer's gated MLP backward peaks
    # reward modelling: AutoModelForSequenceClassification (one-logit score head), TRL's RewardTrainer; QLoRA as TRL's
    # reward script loads it (no prepare_model_for_kbit_training: bf16 adapters and score copy)
    _c("llama-reward-lora-gc", LLAMA, method="lora", objective="reward"),
    _c("llama-reward-qlora-gc", LLAMA, method="qlora", objective="reward", prepare_kbit=False),
    _c("llama-reward-full-nogc", LLAMA, method="full", objective="reward", gradient_checkpointing=False),
    _c("llama-reward-full-gc", LLAMA, method="full", objective="reward"),  # the first layer's MLP backward peaks
    _c("llama-reward-qlora-padded-dropout", LLAMA, method="qlora", objective="reward", prepare_kbit=False,
       padding="padded", lora_dropout=0.05),  # RewardConfig's disable_dropout: LoRA's dropout allocates nothing
    _c(
        "llama-grpo-lora-gc",
        LLAMA,
        method="lora",
        objective="grpo",
        seq_len=64,
        max_completion_length=64,
        num_generations=2,
    ),  # generation with transformers' generate, then TRL's loss
    _c("olmoe-qlora-gc", OLMOE, method="qlora"),
    _c("qwen3-moe-qlora-gc", QWEN3_MOE, method="qlora"),
    _c("qwen2-moe-lora-nogc", QWEN2_MOE, method="lora", gradient_checkpointing=False),  # the gated shared expert
    _c("granitemoe-qlora-gc", GRANITEMOE, method="qlora"),
    _c("glm4-moe-qlora-gc", GLM4_MOE, method="qlora"),
    _c("deepseek-v3-lora-nogc", DEEPSEEK_V3, method="lora", gradient_checkpointing=False),
    _c("deepseek-v2-lora-nogc", DEEPSEEK_V2, method="lora", gradient_checkpointing=False),
    _c("gpt-oss-qlora-gc", GPT_OSS, method="qlora"),  # eager attention with sinks
    _c("gpt-oss-lora-nogc", GPT_OSS, method="lora", gradient_checkpointing=False),
    # Llama 4: every expert on every token, the MoE layer's recompute, a NoPE last layer (the peak is in layer 1)
    _c("llama4-qlora-gc", LLAMA4_TEXT, method="qlora", target_modules=list(LLAMA4_TARGETS)),
    _c("llama4-lora-gc", LLAMA4_TEXT, method="lora", target_modules=list(LLAMA4_TARGETS)),
    _c("llama4-qlora-nogc", LLAMA4_TEXT, method="qlora", target_modules=list(LLAMA4_TARGETS),
       gradient_checkpointing=False),
    _c("llama4-lora-nogc", LLAMA4_TEXT, method="lora", target_modules=list(LLAMA4_TARGETS),
       gradient_checkpointing=False),
    # vision-language: images and video through the model's own processors (trainer.vision), the tower's activations
    _c("qwen2-vl-lora-gc-448", QWEN2_VL, method="lora", images_per_sample=1, image_size=(448, 448), seq_len=64,
       batch_size=1),
    _c("qwen2.5-vl-qlora-gc-448", QWEN2_5_VL, method="qlora", images_per_sample=1, image_size=(448, 448),
       seq_len=64, batch_size=1),
    _c("qwen2-vl-full-nogc-2x224", QWEN2_VL, method="full", gradient_checkpointing=False, images_per_sample=1,
       image_size=(224, 336), seq_len=64),
    # a video through the video processor's own bounds and patching: 3 frames of 224² (enlarged to 336², the last
    # frame repeated to make two temporal patches: 1,152 patches, 290 tokens)
    _c("qwen2-vl-lora-gc-video-3x224", QWEN2_VL, method="lora", video_frames=3, image_size=(224, 224), seq_len=64,
       batch_size=1),
    # an image and a video: two runs of the tower, both held to its backward, which peaks in the larger (the video's)
    _c("qwen2.5-vl-qlora-gc-448-video-4x448", QWEN2_5_VL, method="qlora", images_per_sample=1, video_frames=4,
       image_size=(448, 448), seq_len=8, batch_size=1),
    # Qwen3-VL: 16² patches, the learned position grid, DeepStack features added into the first decoder layers
    _c("qwen3-vl-lora-gc-448", QWEN3_VL, method="lora", images_per_sample=1, image_size=(448, 448), seq_len=64,
       batch_size=1),
    _c("qwen3-vl-qlora-gc-2img", QWEN3_VL, method="qlora", images_per_sample=2, image_size=(320, 480), seq_len=32),
    _c("qwen3-vl-full-nogc-2x256", QWEN3_VL, method="full", gradient_checkpointing=False, images_per_sample=1,
       image_size=(256, 384), seq_len=64),
    _c("qwen3-vl-lora-nogc-dropout-2img", QWEN3_VL, method="lora", gradient_checkpointing=False, lora_dropout=0.05,
       images_per_sample=2, image_size=(384, 512), seq_len=16, batch_size=1),
    _c("qwen3-vl-lora-gc-2img", QWEN3_VL, method="lora", images_per_sample=2, image_size=(512, 512), seq_len=8,
       batch_size=1),  # two 512² images (1,024 patches each) over 8 text tokens
    # a Qwen3-VL video: 4 frames of 320² within the video processor's budget (two temporal patches of 20 × 20: 800
    # patches; per temporal patch its timestamp as text and two delimiters: 216 tokens)
    _c("qwen3-vl-lora-gc-video-4x320", QWEN3_VL, method="lora", video_frames=4, image_size=(320, 320), seq_len=32,
       batch_size=1),
    _c("qwen3-vl-full-nogc-video-6x192", QWEN3_VL, method="full", gradient_checkpointing=False, video_frames=6,
       image_size=(192, 256), seq_len=16, batch_size=1),  # three temporal patches of 12 × 16, no checkpointing
    _c("qwen3-vl-moe-lora-gc-448", QWEN3_VL_MOE, method="lora", images_per_sample=1, image_size=(448, 448),
       seq_len=64, batch_size=1),
    _c("qwen3-vl-moe-qlora-gc-2img", QWEN3_VL_MOE, method="qlora", images_per_sample=2, image_size=(320, 480),
       seq_len=32),
    # 3 frames (the last repeated) of 256 × 384 and an image: two runs of the tower and their DeepStack features
    # joined at the image and video tokens
    _c("qwen3-vl-moe-qlora-gc-video-3x256", QWEN3_VL_MOE, method="qlora", images_per_sample=1, video_frames=3,
       image_size=(256, 384), seq_len=16, batch_size=1),
    _c("qwen3-vl-moe-full-nogc-2x256", QWEN3_VL_MOE, method="full", gradient_checkpointing=False,
       images_per_sample=1, image_size=(256, 384), seq_len=64),
    _c("gemma3-lora-gc-224", GEMMA3, method="lora", images_per_sample=1, seq_len=64, batch_size=2),
    _c("gemma3-qlora-gc-2img", GEMMA3, method="qlora", images_per_sample=2, seq_len=16),  # the tower's backward peaks
    _c("gemma3-full-nogc-2img", GEMMA3, method="full", gradient_checkpointing=False, images_per_sample=2, seq_len=16),
    # Idefics3 / SmolVLM: every image cut into tiles (the tower runs on all of them), the processor's tokens
    _c("idefics3-lora-gc-square", IDEFICS3, method="lora", images_per_sample=1, seq_len=64, batch_size=1),
    _c("smolvlm-qlora-gc-2img", SMOLVLM, method="qlora", images_per_sample=2, image_size=(300, 500), seq_len=16,
       batch_size=1),
    _c("smolvlm-full-nogc-wide", SMOLVLM, method="full", gradient_checkpointing=False, images_per_sample=2,
       image_size=(200, 800), seq_len=16, batch_size=2),
    _c("mistral3-lora-gc-224", MISTRAL3, method="lora", images_per_sample=1, seq_len=64, batch_size=2),
    _c("mistral3-qlora-gc-2img", MISTRAL3, method="qlora", images_per_sample=2, image_size=(300, 200), seq_len=16),
    _c("mistral3-lora-gc-4x448", MISTRAL3, method="lora", images_per_sample=2, image_size=(448, 448),
       max_pixels=448 * 448, seq_len=16, batch_size=2),  # 4,096 patches in one sequence: a 32 MiB block mask
    _c("mistral3-full-nogc-2img", MISTRAL3, method="full", gradient_checkpointing=False, images_per_sample=2,
       seq_len=16),
    _c("llava-lora-gc-224", LLAVA, method="lora", images_per_sample=1, seq_len=64, batch_size=2),
    _c("llava-qlora-gc-2img", LLAVA, method="qlora", images_per_sample=2, seq_len=16),
    _c("llava-full-nogc-2img", LLAVA, method="full", gradient_checkpointing=False, images_per_sample=2, seq_len=16),
    # Llama 3.2 Vision without images: the cross-attention layers are skipped (no activations, no gradients)
    _c("mllama-lora-gc-text", MLLAMA, method="lora"),
    _c("mllama-qlora-gc-text", MLLAMA, method="qlora"),
    _c("mllama-full-nogc-text", MLLAMA, method="full", gradient_checkpointing=False),
    # with images: every image as 4 tiles through the tower (no checkpointing there), the cross-attention layers run
    _c("mllama-lora-gc-img", MLLAMA, method="lora", images_per_sample=1, seq_len=64, batch_size=2),
    _c("mllama-qlora-gc-2img", MLLAMA, method="qlora", images_per_sample=2, image_size=(300, 200), seq_len=16),
    _c("mllama-full-nogc-2img", MLLAMA, method="full", gradient_checkpointing=False, images_per_sample=2,
       seq_len=16),
    # LLaVA-NeXT: unset image_size is the largest pinpoint (2 × 2 tiles, 336 tokens); 300×200 goes to 224² with its
    # padding's columns cut off; 100×250 to 112×224
    _c("llava-next-lora-gc-224", LLAVA_NEXT, method="lora", images_per_sample=1, seq_len=64, batch_size=2),
    _c("llava-next-qlora-gc-2img", LLAVA_NEXT, method="qlora", images_per_sample=2, image_size=(300, 200),
       seq_len=16),
    _c("llava-next-full-nogc-2img", LLAVA_NEXT, method="full", gradient_checkpointing=False, images_per_sample=2,
       image_size=(100, 250), seq_len=16),
)  # fmt: skip

# Traced runs at real sizes (FakeTensorMode on the CPU: nothing is allocated).
TRACED_CASES: tuple[Case, ...] = ()


def _catalog_config(model_id: str) -> dict[str, Any]:
    from estimator import catalog

    entry = catalog.find_model(model_id)
    if entry is None:  # pragma: no cover - the catalog is data shipped with the package
        raise KeyError(model_id)
    return dict(entry.config)


DEEPSEEK_V2_LITE: dict[str, Any] = {
    "architectures": ["DeepseekV2ForCausalLM"], "model_type": "deepseek_v2", "attention_bias": False,
    "attention_dropout": 0.0, "bos_token_id": 100000, "eos_token_id": 100001, "first_k_dense_replace": 1,
    "hidden_act": "silu", "hidden_size": 2048, "intermediate_size": 10944, "kv_lora_rank": 512,
    "max_position_embeddings": 163840, "moe_intermediate_size": 1408, "moe_layer_freq": 1, "n_group": 1,
    "n_routed_experts": 64, "n_shared_experts": 2, "norm_topk_prob": False, "num_attention_heads": 16,
    "num_experts_per_tok": 6, "num_hidden_layers": 27, "num_key_value_heads": 16, "q_lora_rank": None,
    "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "rms_norm_eps": 1e-6,
    "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 0.707, "mscale_all_dim": 0.707,
                     "original_max_position_embeddings": 4096, "type": "yarn"},
    "rope_theta": 10000, "routed_scaling_factor": 1.0, "scoring_func": "softmax", "seq_aux": True,
    "tie_word_embeddings": False, "topk_group": 1, "topk_method": "greedy", "torch_dtype": "bfloat16",
    "use_cache": True, "v_head_dim": 128, "vocab_size": 102400,
}  # fmt: skip
"""deepseek-ai/DeepSeek-V2-Lite's config.json: multi-head latent attention (no query LoRA, kv_lora_rank 512), one
dense layer then 26 MoE layers of 64 routed experts (6 per token) and 2 shared ones; 15.7 B parameters."""

MLLAMA_11B: dict[str, Any] = {
    "model_type": "mllama",
    "text_config": {
        "model_type": "mllama_text_model", "vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336,
        "num_hidden_layers": 40, "num_attention_heads": 32, "num_key_value_heads": 8,
        "cross_attention_layers": [3, 8, 13, 18, 23, 28, 33, 38], "max_position_embeddings": 131072,
        "rope_parameters": {"rope_type": "default", "rope_theta": 500000.0}, "pad_token_id": 128004,
        "bos_token_id": 128000, "eos_token_id": 128001,
    },
    "vision_config": {
        "model_type": "mllama_vision_model", "hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32,
        "num_global_layers": 8, "attention_heads": 16, "intermediate_layers_indices": [3, 7, 15, 23, 30],
        "vision_output_dim": 7680, "image_size": 560, "patch_size": 14, "max_num_tiles": 4,
    },
    "image_token_index": 128256,
}  # fmt: skip
"""``MllamaConfig``'s defaults (documented as Llama 3.2 11B Vision's: 10,670,220,835 parameters) with 560² tiles
(what the brief and the processor's tile size say; not checked against the Hub, which is unreachable): not a
catalog entry."""

BENCH_ONLY_REAL = frozenset(
    {
        "llama4-qlora-nogc",
        "llama4-lora-nogc",
        "mllama-lora-gc-text",
        "qwen3-vl-lora-gc-2img",
        "qwen3-vl-lora-nogc-dropout-2img",
        "qwen3-vl-moe-lora-gc-448",
        "qwen3-vl-full-nogc-video-6x192",
        "qwen3-vl-moe-qlora-gc-video-3x256",
        "llava-lora-gc-224",
        "mistral3-lora-gc-4x448",
        "llama-reward-qlora-padded-dropout",
        "gemma-qlora-gc",
        "phi-qlora-gc",
        "gpt-neox-qlora-gc",
        "starcoder2-qlora-gc",
    }
)
"""CPU cases run by ``python -m bench.accuracy`` but not by the default test suite, whose 15 minutes on two cores
they would overrun: each repeats a family and a method another case of the suite holds (the suite keeps, per family,
its checkpointed LoRA or QLoRA case with images and its full fine-tune)."""


BENCH_ONLY_TRACED = frozenset(
    {
        "deepseek-v2-lite-qlora-gc",
        "mllama-11b-lora-gc-img",
        "mllama-11b-qlora-gc-img",
        "llama-3.1-8b-grpo-lora-c32",
        "llama-3.1-8b-simpo-lora-s512",
        "gemma3-4b-lora-gc-2img",
        "llama-3.1-8b-reward-lora-gc",
        "llama-3.1-8b-orpo-qlora-s512",
        "llama-3.1-8b-reward-qlora-gc",
        "qwen3-vl-8b-lora-gc-2img",
        "qwen3-vl-8b-lora-gc-video-16x448",
    }
)
"""Traced cases run by ``python -m bench.accuracy`` but not by the default test suite (20 s for DeepSeek-V2-Lite
QLoRA, 60-80 s for GRPO's 32 decoding steps of an 8B model under fake tensors, 60 s for Gemma 3 4B's two images,
35 s for reward LoRA at 8B, 9-10 s each for ORPO's and reward's QLoRA at 8B: DPO's stays in the suite for the
preference objectives; 50 s for Llama 3.2 11B Vision with one image; 30 s for Qwen3-VL 8B's two images: its tiny
case is traced against its real run in the suite)."""


def traced_cases() -> tuple[Case, ...]:
    real = {"device": "cuda", "batch_size": 1, "seq_len": 2048, "lora_dropout": 0.0, "padding": "none"}
    return (
        Case("llama-3.2-1b-qlora-gc", _catalog_config("llama-3.2-1b"), real | {"method": "qlora"}),
        Case("llama-3.1-8b-qlora-gc", _catalog_config("llama-3.1-8b"), real | {"method": "qlora"}),
        # without checkpointing every layer keeps SDPA's math path tensors and o_proj's input, its own copy there
        Case("llama-3.2-1b-qlora-nogc-s512", _catalog_config("llama-3.2-1b"),
             real | {"method": "qlora", "gradient_checkpointing": False, "seq_len": 512}),
        Case("llama-3.1-8b-lora-gc", _catalog_config("llama-3.1-8b"), real | {"method": "lora"}),
        Case(
            "qwen2.5-1.5b-lora-nogc-s1024",
            _catalog_config("qwen2.5-1.5b"),
            real | {"method": "lora", "gradient_checkpointing": False, "seq_len": 1024},
        ),  # fmt: skip
        # QLoRA of a GQA model on CUDA: SDPA's math path (traced as CUDA runs it); at Mistral's 32k vocabulary the
        # attention backward of the recomputed layer sets the peak
        Case("mistral-7b-qlora-gc", _catalog_config("mistral-7b-v0.1"), real | {"method": "qlora"}),
        Case("mistral-7b-lora-gc", _catalog_config("mistral-7b-v0.1"), real | {"method": "lora"}),
        Case("qwen2.5-7b-qlora-gc-s4096", _catalog_config("qwen2.5-7b"), real | {"method": "qlora", "seq_len": 4096}),
        # the setup: a padded batch of two (memory-efficient attention, K/V repeated), a plain loop, the chunked
        # loss (its CPU fallback: device cpu, as the trace runs it)
        Case("llama-3.1-8b-qlora-padded-b2", _catalog_config("llama-3.1-8b"),
             real | {"method": "qlora", "padding": "padded", "batch_size": 2}),
        Case("llama-3.1-8b-lora-plain", _catalog_config("llama-3.1-8b"), real | {"method": "lora",
             "training_loop": "plain"}),
        Case("llama-3.1-8b-qlora-chunked-cpu", _catalog_config("llama-3.1-8b"),
             real | {"method": "qlora", "loss": "chunked", "device": "cpu"}),
        # a vision-language model with two images at the processor's cap (4,900 patches, 1,227 tokens each)
        Case("qwen2-vl-2b-lora-gc-2img", _catalog_config("qwen2-vl-2b-instruct"),
             real | {"method": "lora", "seq_len": 128, "images_per_sample": 2}),
        # Qwen3-VL 8B with two 1024² images (4,096 patches each, 1,026 tokens): the tower, its DeepStack mergers and
        # their features added into the first three decoder layers, at real size
        Case("qwen3-vl-8b-lora-gc-2img", _catalog_config("qwen3-vl-8b-instruct"),
             real | {"method": "lora", "seq_len": 128, "images_per_sample": 2, "image_size": (1024, 1024)}),
        # Qwen3-VL 8B with a video of 16 frames of 448² (eight temporal patches of 28 × 28: 6,272 patches, 1,634
        # tokens with the timestamps): the video's run of the tower and its DeepStack features, at real size
        Case("qwen3-vl-8b-lora-gc-video-16x448", _catalog_config("qwen3-vl-8b-instruct"),
             real | {"method": "lora", "seq_len": 128, "video_frames": 16, "image_size": (448, 448)}),
        # Gemma 3 4B with two 896² images (4,096 patches each, pooled to 256 tokens): the SigLIP tower at real size
        Case("gemma3-4b-lora-gc-2img", _catalog_config("gemma-3-4b-it"),
             real | {"method": "lora", "seq_len": 128, "images_per_sample": 2}),
        # Llama 3.2 11B Vision with one image: 4 tiles of 1,608 padded positions through 40 tower layers that keep
        # their tensors (no checkpointing there), 6,404 image features for 8 cross-attention layers. QLoRA: each
        # SDPA call as CUDA selects it, the decoder's fp32 grouped heads on the math path, the tower's fp32
        # attention with its float mask on the memory-efficient kernel
        Case("mllama-11b-lora-gc-img", MLLAMA_11B, real | {"method": "lora", "seq_len": 128, "images_per_sample": 1}),
        Case("mllama-11b-qlora-gc-img", MLLAMA_11B, real | {"method": "qlora", "seq_len": 128,
             "images_per_sample": 1}),
        # LLaVA-NeXT (Mistral 7B, CLIP ViT-L/14-336) with one image at the largest pinpoint: 4 tiles and the base
        # image, their sizes read from the batch's image_sizes, kept real through the trace
        Case("llava-v1.6-mistral-7b-qlora-gc-img", _catalog_config("llava-v1.6-mistral-7b"),
             real | {"method": "qlora", "seq_len": 128, "images_per_sample": 1}),
        # Mistral Small 3.2 (24B, Pixtral tower) with one image at the tower's 1540² (110 × 110 patches)
        Case("mistral-small-3.2-lora-gc-img", _catalog_config("mistral-small-3.2-24b-instruct"),
             real | {"method": "lora", "seq_len": 128, "images_per_sample": 1}),
        # multi-head latent attention and MoE at real size: CUDA's memory-efficient kernel for q/k and v of
        # different head dims, LoRA on the fused experts (W + ΔW of each expert stack), QLoRA's fp32 experts
        Case("deepseek-v2-lite-lora-gc", DEEPSEEK_V2_LITE, real | {"method": "lora"}),
        Case("deepseek-v2-lite-qlora-gc", DEEPSEEK_V2_LITE, real | {"method": "qlora"}),
        # objectives with TRL's own trainers (device cpu: the fused log-prob head's CPU fallback, as traced)
        Case("llama-3.1-8b-dpo-qlora-s512", _catalog_config("llama-3.1-8b"),
             real | {"method": "qlora", "objective": "dpo", "seq_len": 512, "device": "cpu"}),
        Case("llama-3.1-8b-orpo-qlora-s512", _catalog_config("llama-3.1-8b"),
             real | {"method": "qlora", "objective": "orpo", "seq_len": 512, "device": "cpu"}),
        Case("llama-3.1-8b-simpo-lora-s512", _catalog_config("llama-3.1-8b"),
             real | {"method": "lora", "objective": "simpo", "seq_len": 512, "device": "cpu"}),
        # reward modelling (TRL's RewardTrainer on the sequence-classification model; the layers' backward peaks)
        Case("llama-3.1-8b-reward-qlora-gc", _catalog_config("llama-3.1-8b"),
             real | {"method": "qlora", "objective": "reward", "prepare_kbit": False}),
        Case("llama-3.1-8b-reward-lora-gc", _catalog_config("llama-3.1-8b"),
             real | {"method": "lora", "objective": "reward"}),
        Case("llama-3.1-8b-grpo-lora-c32", _catalog_config("llama-3.1-8b"),
             real | {"method": "lora", "objective": "grpo", "batch_size": 2, "num_generations": 2, "seq_len": 256,
                     "max_completion_length": 32, "device": "cpu"}),
    )  # fmt: skip


def compare(est: Mapping[str, Any], measured: Mapping[str, Any]) -> dict[str, Any]:
    """Estimated vs measured live-tensor peak and components at the peak, with signed relative errors."""
    e_comp = est["memory"]["components"]
    m_comp = measured.get("components", {})
    rows: dict[str, dict[str, Any]] = {}
    for name in COMPARED:
        if name == "activations+logits":
            e = e_comp["activations"] + e_comp["logits"]
            m = m_comp.get("activations", 0) + m_comp.get("logits", 0)
        else:
            e, m = e_comp[name], m_comp.get(name, 0)
        rows[name] = {"estimated": e, "measured": m, "error": relative_error(e, m),
                      "ok": abs(e - m) <= max(COMPONENT_TOLERANCE * m, COMPONENT_SLACK)}  # fmt: skip
    # the tracker sees live tensors only: compare with the estimate's tensor peak (no cuBLAS workspace)
    e_peak = next(t["bytes"] for t in est["memory"]["terms"] if t["name"] == "tensor_peak")
    m_peak = measured["peak_allocated"]
    return {
        "peak": {
            "estimated": e_peak,
            "measured": m_peak,
            "error": relative_error(e_peak, m_peak),
            "ok": abs(e_peak - m_peak) <= PEAK_TOLERANCE * m_peak,
        },  # fmt: skip
        "components": rows,
        "estimated_phase": est["memory"]["peak_phase"],
        "measured_phase": measured.get("peak_phase"),
    }


def check_case(case: Case, mode: str = "real") -> dict[str, Any]:
    """Run ``case`` (``real`` on the CPU, or ``traced``) and compare it with the estimate."""
    plan = case.make_plan()
    est = estimate(plan).to_dict()
    if mode == "real":
        from .run import run

        result = run(plan, dict(case.config), device="cpu")
    else:
        from .traced import traced_run

        result = traced_run(plan, dict(case.config))
    return {"id": case.id, "mode": mode, "plan": case.plan, "comparison": compare(est, result["measured"]),
            "result": result}  # fmt: skip
