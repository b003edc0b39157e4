"""Llama 3.2 Vision's images in memory (transformers 5.24, ``modeling_mllama.py``): the tower over every image's
``max_num_tiles`` tiles, the projector, and the cross-attention layers' keys and values over the image features.

The tower (``MllamaVisionModel``): every image runs as ``max_num_tiles`` tiles whatever its size (the processor
zero-fills the unused ones; ``aspect_ratio_mask`` masks them), each tile ``P = (image_size/patch)² + 1`` positions
(the class token), padded to a multiple of 8 (``P8``) after ``layernorm_pre``; the local and the global transformer
attend over all of an image's tiles as one sequence of ``max_num_tiles · P8`` rows under one float mask of that
length squared per image, in the tower's dtype (``_prepare_aspect_ratio_attention_mask``), shared by every layer.
Its layers are plain modules, not checkpointing layers: the tower keeps every layer's saved tensors until its
backward at the step's end whatever ``gradient_checkpointing`` says. The output is the global transformer's last
hidden state and the intermediate layers' (``intermediate_layers_indices``), padding removed and concatenated to
``vision_output_dim``; ``multi_modal_projector`` maps it to the text width: ``cross_attention_states``,
``images · max_num_tiles · P`` rows per sample, every cross-attention layer's keys and values.

Measured on the CPU grid (docs/accuracy.md: LoRA with checkpointing +1.31 %, QLoRA with checkpointing -0.01 %, full
fine-tuning without -0.26 %) and traced at real size (MllamaConfig's defaults, 11B, with 560² tiles, LoRA with one
image at 128 tokens: +0.06 %). On CUDA the masks' 16-aligned padded copies are counted from torch's code, not
measured.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from ._vision import VisionTower
from ._vision_mllama import CROSS_OUTPUT, CROSS_QUERY, CROSS_STATES

if TYPE_CHECKING:
    from ._arch import Architecture
    from ._lora import AdapterPlan
    from ._memory import _Flow
    from ._plan import Plan

PROJECTOR = "model.multi_modal_projector"


def padded_positions(tower: VisionTower) -> int:
    """A tile's positions in the tower: the patches and the class token, padded to a multiple of 8."""
    positions = tower.patches_per_side**2 + 1
    return -(-positions // 8) * 8


def images_of(tower: VisionTower, patches: int) -> int:
    """Images of the step, from the tower's rows (``max_num_tiles · P8`` each)."""
    return patches // (tower.max_tiles * padded_positions(tower))


def feature_rows(tower: VisionTower, patches: int) -> int:
    """Rows of the image features (``cross_attention_states``): every image's tiles, their padding removed."""
    return images_of(tower, patches) * tower.max_tiles * (tower.patches_per_side**2 + 1)


def _adapted(adapters: AdapterPlan, modules: tuple[str, ...]) -> tuple[str, ...]:
    names = {a.module for a in adapters.adapted}
    return tuple(m for m in modules if m in names)


def _inputs(
    f: _Flow, adapters: AdapterPlan, modules: tuple[str, ...], rows: int, width: int, shared: bool = False
) -> int:
    """The decoder's rule for linear inputs (``_linear_inputs``) over ``rows`` rows of ``width`` for the linears
    ``modules`` (full names), as their adapters keep them."""
    from ._memory import _linear_inputs

    return _linear_inputs(replace(f, T=rows, lora=_adapted(adapters, modules)), modules, width, shared)


def padded_copy(f: _Flow, rows: int, length: int) -> int:
    """CUDA's memory-efficient SDPA kernel (the one a float mask leaves) wants a mask's rows aligned to 16 elements:
    torch's ``preprocess_mask`` pads a mask of ``rows`` rows of ``length`` into a new tensor at each call when
    ``length`` is not a multiple of 16, which the call keeps for its backward (as ``estimator._memory_pixtral``
    counts it; from torch's code, not measured on a GPU). 0 on the CPU."""
    if not f.cuda or length % 16 == 0:
        return 0
    return f.ad * rows * (-(-length // 16) * 16)


def mllama_block(tower: VisionTower, adapters: AdapterPlan, plan: Plan, f: _Flow, stack: str, rows: int) -> int:
    """One tower layer's saved tensors over ``rows`` rows (``MllamaVisionEncoderLayer``): two LayerNorms (input,
    fp32 mean and rstd), the linears' inputs as their adapters keep them (q/k/v_proj share input_layernorm's
    output, o_proj reads SDPA's output, which SDPA keeps, fc1 post_attention_layernorm's, fc2 the GELU's output),
    SDPA's q, k, v, output and fp32 log-sum-exp, fc1's output (the exact GELU's input); a global layer's tanh gates,
    trained, keep the attention's and the MLP's outputs too."""
    e, m, n, ad = tower.embed_dim, tower.mlp_width, rows, f.ad
    b = f"{tower.module}.{stack}.layers.{{i}}."
    qkv = tuple(b + f"self_attn.{x}" for x in ("q_proj", "k_proj", "v_proj"))
    linears = _inputs(f, adapters, qkv, n, e)
    linears += _inputs(f, adapters, (b + "self_attn.o_proj",), n, e, shared=True)
    linears += _inputs(f, adapters, (b + "mlp.fc1",), n, e)
    linears += _inputs(f, adapters, (b + "mlp.fc2",), n, m)
    gates = 2 * n * e * ad if stack == "global_transformer" and plan.method == "full" else 0
    side = tower.max_tiles * padded_positions(tower)
    gates += padded_copy(f, n, side)  # CUDA: the tiles² mask padded at this layer's call
    return 2 * (ad * e + 8) * n + linears + 4 * n * e * ad + 4 * n * tower.num_heads + n * m * ad + gates


def mllama_activations(
    arch: Architecture, tower: VisionTower, adapters: AdapterPlan, plan: Plan, f: _Flow
) -> tuple[int, int]:
    """(held, backward) bytes of the tower and the projector on the step's images.

    Held from the forward to the tower's backward at the step's end: the processor's fp32 ``pixel_values`` (full
    fine-tuning in 16 bits: the Conv2d's cast copy too), ``layernorm_pre``'s input and statistics over the unpadded
    tiles, every local and global layer's saved tensors (``mllama_block``; no checkpointing in the tower), the tile
    mask (images × (max_num_tiles · P8)² in the activation dtype), ``layernorm_post``'s, the projector's input as its
    adapter keeps it, and the image features (rows × the text width) every cross-attention layer reads; the text's
    cross-attention mask ((b, 1, s, features per row) in the activation dtype, made once) with them. The tower's
    backward, after the decoder's: the gradients of the intermediate features (one buffer of the stacked layers'
    width, held until the lowest of them is reached) and a layer's working gradients (``tower_backward_work``), the
    projector's tensors and the features freed by then."""
    from ._memory import param_dtype_bytes, pixel_bytes, tower_backward_work

    n, ad, e = f.patches, f.ad, tower.embed_dim
    rows = feature_rows(tower, n)
    images = images_of(tower, n)
    pixels = pixel_bytes(arch, n)
    if plan.method == "full" and param_dtype_bytes(plan) != 4:
        pixels += param_dtype_bytes(plan) * pixels // 4
    pre = rows * e * ad + 8 * rows
    blocks = tower.depth * mllama_block(tower, adapters, plan, f, "transformer", n)
    blocks += tower.global_depth * mllama_block(tower, adapters, plan, f, "global_transformer", n)
    side = tower.max_tiles * padded_positions(tower)
    mask = images * side * side * ad
    post = n * e * ad + 8 * n
    width = tower.projector_in
    projector = _inputs(f, adapters, (PROJECTOR,), rows, width)
    features = rows * arch.hidden_size * ad
    text_mask = f.s * rows * ad + f.T * ad  # (b, 1, s, rows / b) and the full-row mask (b, 1, s, 1)
    held = pixels + pre + blocks + mask + post + projector + features + text_mask
    intermediate = n * e * (tower.feature_layers - 1) * ad
    work = intermediate + tower_backward_work(tower, plan, f, n) - projector - features - text_mask
    return held, work


def mllama_output(tower: VisionTower, plan: Plan, f: _Flow) -> int:
    """The tower's output (the concatenated features, rows × ``vision_output_dim``), which the model's output keeps
    (``image_outputs``) through the forward's end (full fine-tuning: the projector saves it, counted with it)."""
    rows = feature_rows(tower, f.patches)
    return 0 if plan.method == "full" else rows * tower.projector_in * f.ad


def cross_layer_saved(arch: Architecture, adapters: AdapterPlan, plan: Plan, f: _Flow) -> int:
    """One cross-attention layer's saved tensors (``MllamaCrossAttentionDecoderLayer`` with the step's image
    features): input_layernorm's, q_proj's input, q_norm's and k_norm's fp32 input copies and rsqrt (their outputs
    too when trained), k_proj's and v_proj's input (the features, held with the tower: only what their adapters
    add), SDPA's q, its keys and values repeated to the query heads (the cross mask makes transformers repeat them)
    over the feature rows, its output and log-sum-exp, o_proj's input, the tanh gates' inputs when trained, and the
    MLP's (``_mlp_saved``)."""
    from ._memory import _linear_inputs, _mlp_saved, _norm_saved

    tower = arch.vision
    assert tower is not None
    h, a, kv, d, ad, T = arch.hidden_size, arch.num_attention_heads, arch.num_key_value_heads, arch.head_dim, f.ad, f.T
    rows = feature_rows(tower, f.patches)
    trained = plan.method == "full"
    norm = _norm_saved(arch, f, h, trained)
    total = norm + _linear_inputs(f, (CROSS_QUERY,), h)
    total += (
        4 * T * a * d + 4 * T * a + 4 * rows * kv * d + 4 * rows * kv + (ad * (T * a + rows * kv) * d if trained else 0)
    )
    total += _linear_inputs(replace(f, T=rows), (CROSS_STATES,), h, shared=True)
    total += ad * T * a * d * 2 + 2 * ad * rows * a * d + 4 * T * a
    total += _linear_inputs(f, (CROSS_OUTPUT,), a * d, shared=True)
    total += 2 * T * h * ad if trained else 0
    total += padded_copy(f, T, rows // f.b)  # CUDA: the cross mask (b, 1, s, features per row) padded at this call
    return total + _mlp_saved(arch, f, norm, False)
