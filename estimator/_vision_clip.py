"""LLaVA 1.5's CLIP tower and projector on images: their saved tensors, forward and backward (transformers 5.24,
``llava/modeling_llava.py`` and ``clip/modeling_clip.py``; the tower's shapes and tokens are in ``estimator._vision``).

The tower runs all the step's images as one batch of ``(image_size/patch)² + 1`` positions each (the class token
first), in the decoder's activation dtype (fp32 under QLoRA's upcast), SDPA with no mask (eager is refused). Every
encoder layer runs whatever ``vision_feature_layer`` picks (``select_hidden_states`` keeps only the picked hidden
state; with the default -2 the last layer's output reaches no loss, and its tensors live as long as the model's
output, which keeps ``image_outputs``, until the training loop drops it before the backward). The projector reads
the picked hidden state without the class token ("default" strategy), and its output is the image features
``masked_scatter`` puts into the embeddings.
"""

from __future__ import annotations

from dataclasses import replace

from ._arch import Architecture
from ._lora import AdapterPlan
from ._memory import _Flow, _linear_inputs, param_dtype_bytes, pixel_bytes, siglip_block, tower_backward_work
from ._plan import Plan
from ._vision import VisionTower, image_patches, image_tokens, pixel_values

PROJECTOR = "model.multi_modal_projector"


def clip_block(tower: VisionTower, adapters: AdapterPlan, f: _Flow, patches: int) -> int:
    """One CLIP encoder layer's saved tensors over ``patches`` positions (``CLIPEncoderLayer``: SigLIP's layer,
    ``siglip_block``, but for the MLP's activation): ``quick_gelu`` (``x · sigmoid(1.702 x)``) saves fc1's output
    and the sigmoid's output, one patches × intermediate tensor more than SigLIP's tanh GELU."""
    return siglip_block(tower, adapters, f, patches) + patches * tower.mlp_width * f.ad


def _projector_input(f: _Flow, adapters: AdapterPlan, module: str, rows: int, width: int) -> int:
    """What a projector linear keeps of its ``rows × width`` input (the decoder's rules, ``_linear_inputs``)."""
    name = f"{PROJECTOR}.{module}"
    adapted = (name,) if any(a.module == name for a in adapters.adapted) else ()
    return _linear_inputs(replace(f, T=rows, lora=adapted), (name,), width)


def _projector_saved(tower: VisionTower, adapters: AdapterPlan, f: _Flow, tokens: int) -> int:
    """``LlavaMultiModalProjector``'s saved tensors over ``tokens`` image tokens: ``linear_1``'s input (the picked
    hidden state, E × feature layers wide) and ``linear_2``'s (the GELU's output) as their adapters keep them, and
    the GELU's input (the text width)."""
    h = tower.out_hidden_size
    linears = _projector_input(f, adapters, "linear_1", tokens, tower.embed_dim * tower.feature_layers)
    linears += _projector_input(f, adapters, "linear_2", tokens, h)
    return linears + tokens * h * f.ad


def clip_activations(
    arch: Architecture, tower: VisionTower, adapters: AdapterPlan, plan: Plan, f: _Flow
) -> tuple[int, int]:
    """(held, backward) bytes of LLaVA's CLIP tower and projector on the step's images (``vision_activations`` for
    Qwen's).

    Held from the tower's forward to its backward: the processor's fp32 ``pixel_values`` (full fine-tuning in 16
    bits: also the Conv2d's 16-bit copy of them, kept for its weight's gradient), ``pre_layrnorm``'s input and
    statistics, the encoder layers' saved tensors (with checkpointing each layer's input, positions × E; without,
    ``clip_block``; the last layer's only while the model's output lives when its output reaches no loss:
    ``clip_output``), the projector's (``_projector_saved``) and, with adapters (a frozen base), the two leaves
    ``enable_input_require_grads`` makes: the patch embedding's output (patches × E) and the text embeddings'
    (b·s × the text width; ``masked_scatter``'s copy is the decoder's input). Its backward, after the decoder's,
    frees the projector's saved tensors first: one layer's saved tensors (recomputed under checkpointing), the
    layer's working gradients (``tower_backward_work``: quick_gelu's backward is Qwen2-VL's) and the text leaf's
    gradient (made when the decoder's backward reaches it).
    """
    p, ad, e = f.patches, f.ad, tower.embed_dim
    images = p // image_patches(tower, None, 0)
    tokens = images * image_tokens(tower, None, 0)
    pixels = pixel_bytes(arch, p)
    if plan.method == "full" and param_dtype_bytes(plan) != 4:  # a trained Conv2d keeps its cast input
        pixels += param_dtype_bytes(plan) * pixel_values(tower, p)
    pre_norm = p * e * ad + 8 * p
    block = clip_block(tower, adapters, f, p)
    # an idle last layer's input (checkpointed) or tensors (not) go with the model's output (``clip_output``)
    layers = (tower.depth - int(tower.idle_tail)) * (p * e * ad if plan.gradient_checkpointing else block)
    projector = _projector_saved(tower, adapters, f, tokens)
    # enable_input_require_grads makes the patch embedding's and the text embedding's outputs leaves that need a
    # gradient: autograd keeps them to the end (masked_scatter's output, not the text embeddings, is the stream)
    text_leaf = f.T * arch.hidden_size * ad
    leaves = (p - images) * e * ad + text_leaf if plan.method != "full" else 0
    work = tower_backward_work(tower, plan, f, p) + (text_leaf if leaves else 0)  # the text leaf's gradient
    recomputed = block if plan.gradient_checkpointing else 0  # without, the layer's tensors are in ``layers``
    return pixels + pre_norm + layers + projector + leaves, recomputed + work - projector


def clip_output(tower: VisionTower, adapters: AdapterPlan, plan: Plan, f: _Flow) -> int:
    """What the model's output (``image_outputs``) keeps of the tower through the forward's end, freed when the
    training loop drops the output before the backward (the Trainer keeps only the loss): the image features the
    projector hands the language model (tokens × the text width; ``masked_scatter`` does not save them), the tower's
    ``last_hidden_state`` (positions × E) and, with ``vision_feature_layer`` before the last layer's output (-2, the
    default), that layer's saved tensors (``clip_block``; checkpointed, its input): its output reaches no loss, so
    only the output's graph holds them (the projector's ``linear_1`` reads the picked state through a copy without
    the class token)."""
    p, ad = f.patches, f.ad
    tokens = p // image_patches(tower, None, 0) * image_tokens(tower, None, 0)
    tail = 0
    if tower.idle_tail:  # the last layer's tensors, or its checkpointed input
        tail = p * tower.embed_dim * ad if plan.gradient_checkpointing else clip_block(tower, adapters, f, p)
    return tokens * tower.out_hidden_size * ad + p * tower.embed_dim * ad + tail


def clip_forward(tower: VisionTower, adapters: AdapterPlan, plan: Plan, f: _Flow) -> int:
    """The CLIP tower's forward at its peak, above what it holds for the backward: with checkpointing, the layer
    that runs makes the tensors ``clip_block`` counts and frees them as it goes (an upper bound: all of them at
    once); without, they are held already."""
    if not f.patches or not plan.gradient_checkpointing:
        return 0
    return clip_block(tower, adapters, f, f.patches)
