"""The activations of Mistral 3's Pixtral tower and projector on a step's images (``estimator._vision_pixtral`` for
the structure; transformers 5.24's ``modeling_pixtral.py`` and ``modeling_mistral3.py`` for every term).

The tower runs all of the step's images as ONE sequence of ``patches`` rows (``PixtralVisionModel.forward``: the
patch embeddings of every image concatenated), each image attending only to itself. Under eager and SDPA that is a
block-diagonal float mask (``generate_block_attention_mask``): (patches, patches) in the activation dtype, built
once and passed to every layer, so held until the tower's backward (SDPA keeps it for its backward; with
checkpointing, each checkpointed layer keeps it as an input). It grows with the square of the step's patches: two
rows of two 1540² images (48,400 patches) make a 4.7 GB bf16 mask. Flash attention runs the images by
``cu_seqlens`` and builds none. Eager attention (the scores of every head over the whole sequence) is refused.
"""

from __future__ import annotations

from dataclasses import replace

from ._lora import AdapterPlan
from ._memory import _Flow, _linear_inputs, _tower_input, param_dtype_bytes, siglip_backward_work
from ._plan import Plan
from ._vision import VisionTower, pixel_values


def pixtral_mask(plan: Plan, f: _Flow) -> int:
    """The tower's block-diagonal mask over the step's patches (activation dtype; 0 under flash attention)."""
    if plan.attn_implementation == "flash_attention_2":
        return 0
    return f.ad * f.patches * f.patches


def padded_mask(plan: Plan, f: _Flow) -> int:
    """CUDA's memory-efficient SDPA kernel (the one a float mask leaves) wants the mask's rows aligned to 16
    elements: torch's ``preprocess_mask`` pads a mask whose row stride is not (patches not a multiple of 16) into a
    new tensor at each layer's call, which that layer's backward keeps. Its bytes (0 on the CPU, whose kernel takes
    the mask as it is, or when aligned). Read from torch's code, not measured on a GPU: an upper bound."""
    n = f.patches
    if not f.cuda or not pixtral_mask(plan, f) or n % 16 == 0:
        return 0
    return f.ad * n * (-(-n // 16) * 16)


def pixtral_note(plan: Plan, f: _Flow) -> str:
    """What the tower's attention over the step's images costs."""
    mask = pixtral_mask(plan, f)
    if not mask:
        return f"the Pixtral tower runs the step's {f.patches} patches as one sequence (flash attention: no mask)"
    return (
        f"the Pixtral tower runs the step's {f.patches} patches as one sequence, each image attending to itself "
        f"through a {f.patches}² block-diagonal mask ({mask / 2**20:.1f} MiB, held until the tower's backward; it "
        "grows with the square of images × patches per image)"
        + (
            f"; CUDA's memory-efficient SDPA pads it to rows of 16 at each layer ({padded / 2**20:.1f} MiB a copy, "
            "counted as each layer's backward keeps it: an upper bound, not measured on a GPU)"
            if (padded := padded_mask(plan, f))
            else ""
        )
    )


def _rms(e: int, n: int, ad: int, trained: bool) -> int:
    """An RMSNorm's saved tensors over ``n`` rows (``PixtralRMSNorm`` / ``Mistral3RMSNorm``): its fp32 input and
    rsqrt, and the normalized input when its weight is trained."""
    return (4 * e + 4) * n + (ad * e * n if trained else 0)


def pixtral_block(tower: VisionTower, adapters: AdapterPlan, f: _Flow, patches: int) -> int:
    """One ``PixtralAttentionLayer``'s saved tensors over ``patches`` rows (SDPA): the two RMSNorms
    (``attention_norm``, ``ffn_norm``), the linears' inputs as their adapters keep them (``_tower_input``: q/k/v_proj
    share attention_norm's output, o_proj reads SDPA's output, gate/up_proj ffn_norm's, down_proj the gated
    product), SDPA's rotated q and k, v, its output and fp32 log-sum-exp (the rotation saves only cos and sin, shared
    by the layers), and the gated MLP's gate and up outputs and GELU's output."""
    e, m, n, ad = tower.embed_dim, tower.mlp_width, patches, f.ad
    trained = not f.frozen_base
    b = "transformer.layers.{i}."
    qkv = tuple(b + f"attention.{x}" for x in ("q_proj", "k_proj", "v_proj"))
    linears = _tower_input(tower, f, adapters, qkv, n, e)
    linears += _tower_input(tower, f, adapters, (b + "attention.o_proj",), n, e, shared=True)
    linears += _tower_input(tower, f, adapters, (b + "feed_forward.gate_proj", b + "feed_forward.up_proj"), n, e)
    linears += _tower_input(tower, f, adapters, (b + "feed_forward.down_proj",), n, m)
    attention = 4 * n * e * ad + 4 * n * tower.num_heads
    return 2 * _rms(e, n, ad, trained) + linears + attention + 3 * n * m * ad


def pixtral_activations(tower: VisionTower, adapters: AdapterPlan, plan: Plan, f: _Flow) -> tuple[int, int]:
    """(held, backward) bytes of the Pixtral tower and Mistral 3's projector on the step's images.

    Held from the tower's forward to its backward: the processor's fp32 ``pixel_values`` (full fine-tuning in 16
    bits: also the Conv2d's cast copy, kept for its weight's gradient), the Conv2d's output (patches × E; seen alive
    in the tower's backward on the CPU grid's tracker), ``ln_pre``'s saved tensors, the rotary cos and sin (patches
    × head_dim each, activation dtype), the block mask (``pixtral_mask``), the layers' saved tensors (with
    checkpointing each layer's input, patches × E; without, ``pixtral_block`` and, on CUDA, each layer's padded
    mask, ``padded_mask``), the projector's: its RMSNorm over the patches, the merger's unfolded input (patches /
    merge² rows of merge²·E) as merging_layer's adapter keeps it, linear_1's and linear_2's inputs likewise, the
    GELU's input, and the features it hands the language model (tokens × the text width); and the tower's output
    (``last_hidden_state``, patches × E), which the model's output keeps (``image_outputs``) through the decoder's
    forward. The tower's backward, after the decoder's, frees the projector's tensors: one layer's saved tensors
    (recomputed under checkpointing) and its working gradients (``siglip_backward_work``: the MLP's intermediate's
    gradients from the frozen base and the adapter, and their sum only when their dtypes differ), the mask still
    held, and the decoder's input embeddings (``inputs_embeds`` after the image features are scattered in, tokens ×
    the text width) with their gradient, both seen alive at the tower's backward peak on the CPU grid's tracker.
    """
    p, ad, e, h = f.patches, f.ad, tower.embed_dim, tower.out_hidden_size
    trained = plan.method == "full"
    pixels = 4 * pixel_values(tower, p)  # (images, 3, H, W): one size per plan, no padding; 3·patch² per patch
    if trained and param_dtype_bytes(plan) != 4:  # a trained Conv2d keeps its cast input
        pixels += param_dtype_bytes(plan) * pixel_values(tower, p)
    ln_pre = _rms(e, p, ad, trained)
    rope = 2 * p * tower.head_dim * ad
    block = pixtral_block(tower, adapters, f, p)
    tokens, k2 = p // tower.spatial_merge_size**2, tower.spatial_merge_size**2
    pj = "model.multi_modal_projector."
    projector = _rms(e, p, ad, trained) + tokens * h * ad  # the norm; the GELU's input (linear_1's output)
    projector += _projector_input(tower, adapters, f, pj + "patch_merger.merging_layer", tokens, e * k2)
    projector += _projector_input(tower, adapters, f, pj + "linear_1", tokens, e * tower.feature_layers)
    projector += _projector_input(tower, adapters, f, pj + "linear_2", tokens, h)
    features, output, conv = tokens * h * ad, p * e * ad, p * e * ad
    padded = padded_mask(plan, f)
    if plan.gradient_checkpointing:  # each layer's input; in the backward, the recomputed layer and its mask copy
        layers, recomputed = tower.depth * p * e * ad, block + padded
    else:  # every layer's saved tensors and its own padded mask copy
        layers, recomputed = tower.depth * (block + padded), 0
    embeds = 2 * f.T * h * ad  # the decoder's input embeddings and their gradient
    work = siglip_backward_work(tower, plan, f, p) + embeds
    held = pixels + conv + ln_pre + rope + pixtral_mask(plan, f) + layers + projector + features + output
    return held, recomputed + work - projector - features - output


def pixtral_forward(tower: VisionTower, adapters: AdapterPlan, plan: Plan, f: _Flow) -> int:
    """The tower's forward at its peak above what it holds: with checkpointing, the layer that runs makes the
    tensors ``pixtral_block`` counts (an upper bound: all of them at once); without, they are held already."""
    if not f.patches or not plan.gradient_checkpointing:
        return 0
    return pixtral_block(tower, adapters, f, f.patches) + padded_mask(plan, f)


def _projector_input(tower: VisionTower, adapters: AdapterPlan, f: _Flow, module: str, rows: int, width: int) -> int:
    """A projector linear's input as ``_tower_input`` counts it (the projector's modules sit outside the tower's
    module path)."""
    adapted = any(a.module == module for a in adapters.adapted)
    return _linear_inputs(replace(f, T=rows, lora=(module,) if adapted else ()), (module,), width)
