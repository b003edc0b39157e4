"""LLaVA 1.5's CLIP tower and projector on images: their saved tensors, forward and backward (transformers 5.24,
``llava/modeling_llava.py`` and ``clip/modeling_clip.py``; the tower's shapes and tokens are in ``estimator._vision``).

The tower runs all the step's images as one batch of ``(image_size/patch)² + 1`` positions each (the class token
first), in the decoder's activation dtype (fp32 under QLoRA's upcast), SDPA with no mask (eager is refused). Every
encoder layer runs whatever ``vision_feature_layer`` picks (``select_hidden_states`` keeps only the picked hidden
state; with the default -2 the last layer's output reaches no loss, and its tensors live as long as the model's
output, which keeps ``image_outputs``, until the training loop drops it before the backward). The projector reads
the picked hidden state without the class token ("default" strategy), and its output is the image features
``masked_scatter`` puts into the embeddings.

LLaVA-NeXT (``llava_next/modeling_llava_next.py``, ``image_processing_pil_llava_next.py``,
``processing_llava_next.py``): the same tower and projector over tiles. The image processor picks the
``image_grid_pinpoints`` resolution that keeps most of the image with least padding (``select_best_resolution``),
resizes the image into it keeping the aspect ratio, pads the rest and cuts it into tiles of the tower's
``image_size``, and puts the whole image resized to one tile (the base image) first: ``pixel_values`` of (images,
tiles + 1, 3, image_size, image_size), fp32. ``get_image_features`` concatenates every image's tiles into one batch
of squares (a copy) for the tower, runs the projector over all of their patches, and ``pack_image_features`` makes
each image's features anew: the tiles' patches laid out as the padded image (a contiguous copy), the padding's
rows or columns cut off (``unpad_image``), ``image_newline`` appended to each row (a concatenation) and the base
image's patches first (another). ``LlavaNextProcessor._get_number_of_features`` counts those tokens the same way:
``<image>`` tokens = the unpadded patches, one newline per unpadded row and the base image's patches (its
``num_additional_image_tokens`` 1, the class token, less one with the "default" strategy).
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
    gradient (made when the decoder's backward reaches it). LLaVA-NeXT: the same over every tile and base image
    (each a square of patches and a class token); under full fine-tuning the Conv2d keeps its input, the copy of
    the tiles ``get_image_features`` concatenates (cast to the model's dtype, or itself in fp32). Measured on the
    CPU grid (``llava-*``, ``llava-next-*``: docs/accuracy.md).
    """
    p, ad, e = f.patches, f.ad, tower.embed_dim
    tiles = _tiles(tower, p)  # LLaVA 1.5: the images; LLaVA-NeXT: every image's tiles and base image
    tokens = tiles * (tower.patches_per_side**2 + int(tower.keep_class))  # through the projector
    pixels = pixel_bytes(arch, p)
    if plan.method == "full" and tower.grid_pinpoints:  # the trained Conv2d keeps its input: the tiles' copy, cast
        pixels += param_dtype_bytes(plan) * pixel_values(tower, p)
    elif plan.method == "full" and param_dtype_bytes(plan) != 4:  # a trained Conv2d keeps its cast input
        pixels += param_dtype_bytes(plan) * pixel_values(tower, p)
    pre_norm = p * e * ad + 8 * p
    block = clip_block(tower, adapters, f, p)
    # an idle last layer's input (checkpointed) or tensors (not) go with the model's output (``clip_output``)
    layers = (tower.depth - int(tower.idle_tail)) * (p * e * ad if plan.gradient_checkpointing else block)
    projector = _projector_saved(tower, adapters, f, tokens)
    # enable_input_require_grads makes the patch embedding's and the text embedding's outputs leaves that need a
    # gradient: autograd keeps them to the end (masked_scatter's output, not the text embeddings, is the stream)
    text_leaf = f.T * arch.hidden_size * ad
    leaves = (p - tiles) * e * ad + text_leaf if plan.method != "full" else 0
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
    the class token). LLaVA-NeXT's output keeps the packed features instead (``next_tokens`` per image): the
    projector's output over every tile is freed once ``pack_image_features`` has copied it."""
    p, ad = f.patches, f.ad
    tokens = p // image_patches(tower, plan.image_size, 0) * image_tokens(tower, plan.image_size, 0)
    tail = 0
    if tower.idle_tail:  # the last layer's tensors, or its checkpointed input
        tail = p * tower.embed_dim * ad if plan.gradient_checkpointing else clip_block(tower, adapters, f, p)
    # LLaVA-NeXT: the packed features (the model's torch.cat of them lives while the decoder's layers run, freed
    # when its forward returns, before the head's logits: not at the forward's peak)
    return tokens * tower.out_hidden_size * ad + p * tower.embed_dim * ad + tail


def clip_forward(tower: VisionTower, adapters: AdapterPlan, plan: Plan, f: _Flow) -> int:
    """The CLIP tower's forward at its peak, above what it holds for the backward: with checkpointing, the layer
    that runs makes the tensors ``clip_block`` counts and frees them as it goes (an upper bound: all of them at
    once); without, they are held already. LLaVA-NeXT: the larger of that and ``pack_image_features``' peak, both
    beside the fp32 copy ``get_image_features`` makes of the tiles (``torch.cat``, alive until it returns; kept by
    the Conv2d already when full fine-tuning trains it in fp32)."""
    if not f.patches:
        return 0
    layer = clip_block(tower, adapters, f, f.patches) if plan.gradient_checkpointing else 0
    if not tower.grid_pinpoints:
        return layer
    copy = 4 * pixel_values(tower, f.patches)
    if plan.method == "full" and param_dtype_bytes(plan) == 4:
        copy = 0
    return copy + max(layer, _pack_peak(tower, adapters, plan, f))


def _pack_peak(tower: VisionTower, adapters: AdapterPlan, plan: Plan, f: _Flow) -> int:
    """``pack_image_features`` at its peak, as it builds the last image's features: the projector's output over
    every tile (tiles · side² × the text width, freed when it returns), the features of the images before (tokens
    × width each), and the larger of the tiles laid out as the padded image (a contiguous copy) with the unpadded
    rows and their newlines (a concatenation), or those with the features whole (the base image's first); and what
    the model's output keeps of the tower by then (``clip_output`` less the features)."""
    side2, h, ad = tower.patches_per_side**2, tower.out_hidden_size, f.ad
    per_image = image_patches(tower, plan.image_size, 0)
    images, tiles = f.patches // per_image, _tiles(tower, f.patches)
    rows, cols = next_grid(tower, plan.image_size)
    features = next_tokens(tower, plan.image_size)
    unpadded, laid_out = features - side2, rows * cols * side2
    projected = tiles * side2
    live = projected + (images - 1) * features + unpadded + max(laid_out, features)
    kept = clip_output(tower, adapters, plan, f) - images * features * h * ad
    return live * h * ad + kept


def _tiles(tower: VisionTower, patches: int) -> int:
    """Squares the tower runs over ``patches`` positions (each its patches and a class token): LLaVA 1.5's images,
    LLaVA-NeXT's tiles and base images."""
    return patches // (tower.patches_per_side**2 + 1)


def select_best_resolution(size: tuple[int, int], pinpoints: tuple[tuple[int, int], ...]) -> tuple[int, int]:
    """The pinpoint (height, width) an image of ``size`` (height, width) is resized into: the one keeping most of
    its pixels, then the one wasting fewest (``transformers.image_processing_utils.select_best_resolution``)."""
    height, width = size
    best, kept, wasted = pinpoints[0], 0, float("inf")
    for h, w in pinpoints:
        scale = min(w / width, h / height)
        effective = min(int(width * scale) * int(height * scale), width * height)
        waste = w * h - effective
        if effective > kept or (effective == kept and waste < wasted):
            best, kept, wasted = (h, w), effective, waste
    return best


def next_size(tower: VisionTower, image_size: tuple[int, int] | None) -> tuple[int, int]:
    """The image size a LLaVA-NeXT plan's images have: ``image_size``, unset the processor's largest, the
    pinpoint of most pixels (its images are cut into the most tiles)."""
    return image_size or max(tower.grid_pinpoints, key=lambda p: p[0] * p[1])


def next_grid(tower: VisionTower, image_size: tuple[int, int] | None) -> tuple[int, int]:
    """Rows and columns of tiles of the tower's ``image_size`` a LLaVA-NeXT image is cut into (the base image
    aside): its best pinpoint over the tile (``get_anyres_image_grid_shape``)."""
    height, width = select_best_resolution(next_size(tower, image_size), tower.grid_pinpoints)
    return height // tower.image_size, width // tower.image_size


def next_tokens(tower: VisionTower, image_size: tuple[int, int] | None) -> int:
    """``<image>`` tokens of one LLaVA-NeXT image (``LlavaNextProcessor._get_number_of_features``, its
    ``_get_unpadded_features`` and the "default" strategy's class token off; the model's ``pack_image_features``
    makes as many): the tiles' patches as the padded image (rows · side by cols · side), less the padding's rows or
    columns on the side the aspect ratio leaves, one newline per remaining row, and the base image's side²."""
    height, width = next_size(tower, image_size)
    rows, cols = next_grid(tower, image_size)
    side = tower.patches_per_side
    current_h, current_w = rows * side, cols * side
    if width / height > current_w / current_h:
        padding = (current_h - int(round(height * (current_w / width), 7))) // 2
        current_h -= 2 * padding
    else:
        padding = (current_w - int(round(width * (current_h / height), 7))) // 2
        current_w -= 2 * padding
    return current_h * current_w + current_h + side * side


def next_refusal(tower: VisionTower) -> str:
    """Why a LLaVA-NeXT config's images cannot be counted ("" when they can): the "full" strategy (the class token
    kept: ``pack_image_features`` cannot lay a tile's side² + 1 features out as a square), pinpoints not cut into
    whole tiles (the model's grid is the pinpoint over the tile, the processor's tiles are not)."""
    if tower.keep_class:
        return "vision_feature_select_strategy 'full' cannot be tiled (LLaVA-NeXT's anyres needs 'default')"
    tile = tower.image_size
    ragged = [list(p) for p in tower.grid_pinpoints if p[0] % tile or p[1] % tile]
    if ragged:
        return f"image_grid_pinpoints {ragged} are not multiples of the vision image_size ({tile})"
    return ""


def next_plan_error(plan: Plan) -> str:
    """Why a plan's images on LLaVA-NeXT cannot be counted ("" when they can): a ``max_pixels`` (its processor
    resizes an image into a pinpoint resolution, under no pixel cap)."""
    if plan.max_pixels:
        return (
            "max_pixels does not apply to llava_next: its processor resizes an image into the image_grid_pinpoints "
            "resolution that fits it best and cuts it into tiles; leave max_pixels at 0 and give image_size"
        )
    return ""


def next_note(tower: VisionTower, plan: Plan, tokens: int, patches: int) -> str:
    """The estimate's note on a LLaVA-NeXT plan's images."""
    rows, cols = next_grid(tower, plan.image_size)
    height, width = next_size(tower, plan.image_size)
    return (
        f"images: {tokens} image tokens per row; each {height}×{width} image is resized into the pinpoint "
        f"{rows * tower.image_size}×{cols * tower.image_size} and cut as the processor cuts it: {rows} × {cols} tiles "
        f"of {tower.image_size}² and the base image, {patches} positions through the vision tower (the class tokens "
        "too), one token per patch left after the padding is cut off, an image_newline per row of them and the base "
        "image's patches, no delimiters; the tower's activations are counted (its backward runs last, after the "
        "decoder's)"
    )
