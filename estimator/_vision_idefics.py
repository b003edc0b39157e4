"""Idefics3 and SmolVLM: the vision tower, its connector and the image tokens their processors make.

Both (transformers 5.24, ``idefics3/modeling_idefics3.py``, ``smolvlm/modeling_smolvlm.py``, the same modules under
two names) build ``model.vision_model`` (``Idefics3VisionTransformer``: a SigLIP-like encoder with a Conv2d patch
embedding with bias, an ``nn.Embedding`` of one position per patch of the fixed ``vision_config.image_size``,
``num_hidden_layers`` pre-norm layers of LayerNorm, q/k/v/out_proj and a fc1/fc2 MLP, every linear with bias, and
``post_layernorm``), ``model.connector`` (a pixel shuffle that folds ``scale_factor²`` neighbouring patches into one
vector of ``hidden_size · scale_factor²``, then ``modality_projection.proj``, an ``nn.Linear`` without bias to the
text width) and ``model.text_model``, the Llama of ``text_config`` (``AutoModel``), with ``lm_head`` beside
``model``.

Image tokens (``Idefics3Processor`` / ``SmolVLMProcessor`` and their image processors): one tile of the vision
``image_size`` makes ``image_seq_len = (image_size / patch_size)² / scale_factor²`` ``<image>`` tokens. With
``do_image_splitting`` (the image processors' default) an image is first resized so its longest edge is
``size["longest_edge"]`` (up or down), then both sides are rounded up to multiples of ``max_image_size
["longest_edge"]`` and it is cut into ``rows × cols`` tiles of that side, plus the whole image resized to one tile
(the global image); an image that fits one tile is not cut. The text then holds, per tile,
``<fake_token_around_image><row_r_col_c>`` and the tile's tokens, a ``\\n`` after each row, and ``\\n<fake_token_
around_image><global-img>`` + tokens + ``<fake_token_around_image>`` for the global image; without splitting, only
the global image's ``image_seq_len + 3``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._vision import VisionTower, _int, _text_width, _width_and_heads

LONGEST_EDGE_TILES = 4  # size["longest_edge"] = 4 × max_image_size["longest_edge"] in every published processor
if TYPE_CHECKING:
    from ._arch import Architecture
    from ._lora import AdapterPlan
    from ._memory import _Flow
    from ._plan import Plan

IMAGE_EXTRA_TOKENS = 3  # <fake_token_around_image><global-img> … <fake_token_around_image> around a global image
TILE_EXTRA_TOKENS = 2  # <fake_token_around_image><row_r_col_c> before each tile's tokens


def idefics_tower(config: Mapping[str, Any], vc: Mapping[str, Any], model_type: str) -> VisionTower:
    """The tower of an Idefics3 / SmolVLM config (``Idefics3VisionConfig`` / ``SmolVLMVisionConfig``'s defaults for
    absent fields: 12 layers of 1152, 16 heads, 3072 wide MLP, image 224, patch 32; ``scale_factor`` 2; the text
    model's ``hidden_size``, Llama's 4096 by default). ``spatial_merge_size`` holds ``scale_factor`` and
    ``mm_tokens_per_image`` the tokens of one tile, ``image_seq_len``."""
    embed, heads = _width_and_heads(vc, 1152, 16)
    image, patch = _int(vc, "image_size", 224), _int(vc, "patch_size", 32)
    scale = _int(config, "scale_factor", 2, "")
    return VisionTower(
        model_type=model_type, depth=_int(vc, "num_hidden_layers", 12), embed_dim=embed, num_heads=heads,
        mlp_width=_int(vc, "intermediate_size", 3072), out_hidden_size=_text_width(config, 4096),
        patch_size=patch, temporal_patch_size=1, in_channels=_int(vc, "num_channels", 3), spatial_merge_size=scale,
        image_size=image, mm_tokens_per_image=(image // patch) ** 2 // scale**2,
    )  # fmt: skip


def shuffle_error(tower: VisionTower) -> str:
    """Why the connector cannot pixel-shuffle a tile ("" when it can): ``pixel_shuffle`` views the
    ``(image_size/patch)²`` patches as a square and folds ``scale_factor`` of them along each side, so the patches per
    side must be a positive multiple of ``scale_factor`` (else the view fails or the tokens do not match)."""
    side, scale = tower.patches_per_side, tower.spatial_merge_size
    if side and side % scale == 0:
        return ""
    return (
        f"scale_factor ({scale}) must divide the patches per side (vision_config.image_size // patch_size = {side}) "
        "for the connector's pixel shuffle"
    )


def images_error(tower: VisionTower, plan: Plan) -> str:
    """Why a plan's images on Idefics3 / SmolVLM cannot be counted ("" when they can): a tower whose patches the
    connector cannot shuffle, a ``max_pixels`` (these processors resize by the longest edge, not under a pixel cap),
    or eager attention on the tower (its tiles × heads × patches² scores are not modelled)."""
    if shuffle_error(tower):
        return shuffle_error(tower)
    if plan.max_pixels:
        return (
            f"max_pixels does not apply to {tower.model_type}: its processor resizes an image's longest edge to 4 "
            "tiles of the vision image_size and cuts it into tiles; leave max_pixels at 0 and give image_size"
        )
    if plan.attn_implementation == "eager":
        return (
            f"eager attention is not modelled for {tower.model_type}'s vision tower (its tiles × heads × patches² "
            "scores and their backward would not be counted); use attn_implementation 'sdpa'"
        )
    return ""


def _rescale_to_max_len(height: int, width: int, max_len: int) -> tuple[int, int]:
    """``_resize_output_size_rescale_to_max_len``: the longest edge becomes ``max_len``, the other keeps the aspect
    ratio, rounded up to even."""
    aspect = width / height
    if width >= height:
        width = max_len
        height = int(width / aspect)
        height += height % 2
    else:
        height = max_len
        width = int(height * aspect)
        width += width % 2
    return max(height, 1), max(width, 1)


MAX_IMAGE_SIZE = 4096  # image_processing_*: the absolute cap on a resized side


def _below_upper_bound(height: int, width: int, max_len: int) -> tuple[int, int]:
    """``_resize_output_size_scale_below_upper_bound``: the longest edge capped at ``max_len``."""
    aspect = width / height
    if width >= height and width > max_len:
        width, height = max_len, int(max_len / aspect)
    elif height > width and height > max_len:
        height, width = max_len, int(max_len * aspect)
    return max(height, 1), max(width, 1)


def tile_grid(image_size: tuple[int, int], longest_edge: int, tile: int) -> tuple[int, int]:
    """Rows and columns of tiles an image of ``image_size`` (height, width) is cut into with splitting on, as the
    image processor cuts it (``resize`` to ``longest_edge``, ``resize_for_vision_encoder``: the longer side rounded
    up to a multiple of ``tile``, the other from the aspect ratio, rounded up too; ``split_images``); ``(0, 0)`` when
    the result is a single tile (no split, the image alone)."""
    height, width = _rescale_to_max_len(image_size[0], image_size[1], longest_edge)
    height, width = _below_upper_bound(height, width, MAX_IMAGE_SIZE)
    aspect = width / height
    if width >= height:
        width = math.ceil(width / tile) * tile
        height = math.ceil(int(width / aspect) / tile) * tile
    else:
        height = math.ceil(height / tile) * tile
        width = math.ceil(int(height * aspect) / tile) * tile
    if height > tile or width > tile:
        return (height - tile) // tile + 1, (width - tile) // tile + 1
    return 0, 0


def image_tiles(grid: tuple[int, int]) -> int:
    """Tiles the vision tower sees for one image: ``rows · cols`` and the global image, or the global image alone."""
    rows, cols = grid
    return rows * cols + 1 if rows or cols else 1


def image_grid(tower: VisionTower, image_size: tuple[int, int] | None) -> tuple[int, int]:
    """The tile grid of one image of ``image_size`` (unset: a square, the processor's largest, 4 × 4 tiles) under
    the published processors' sizes: tiles of the vision ``image_size`` (``max_image_size``: the connector's tokens
    per tile must be the processor's ``image_seq_len``) and ``size["longest_edge"]`` four tiles
    (``Idefics3ImageProcessor``'s 4 · 364 with its 364 tile; Idefics3-8B's 4 · 364, SmolVLM's 4 · 384 and 4 · 512)."""
    tile = tower.image_size
    height, width = image_size if image_size is not None else (tile, tile)
    return tile_grid((height, width), LONGEST_EDGE_TILES * tile, tile)


def idefics_image_tokens(tower: VisionTower, grid: tuple[int, int]) -> int:
    """Language-model tokens of one image cut into ``grid`` (rows, cols): ``image_seq_len + 3`` for the global image
    and, when split, ``rows · (cols · (image_seq_len + 2) + 1)`` and one token for the ``\\n`` before the global
    image (an upper bound by one where the tokenizer merges it with the row's ``\\n`` into ``\\n\\n``, SmolVLM's and
    Idefics3's do)."""
    rows, cols = grid
    seq = tower.mm_tokens_per_image
    tokens = seq + IMAGE_EXTRA_TOKENS
    if rows or cols:
        tokens += rows * (cols * (seq + TILE_EXTRA_TOKENS) + 1) + 1
    return tokens


def tiles_note(tower: VisionTower, plan: Plan, tokens: int, patches: int) -> str:
    """The estimate's note on an Idefics3 / SmolVLM plan's images."""
    rows, cols = image_grid(tower, plan.image_size)
    grid = f"{rows} × {cols} tiles and the global image" if rows else "one tile (not split)"
    return (
        f"images: {tokens} image tokens per row; each image is cut as the processor cuts it (splitting on, its "
        f"longest edge resized to {LONGEST_EDGE_TILES} tiles of {tower.image_size}²): {grid}, {patches} patches "
        f"through the vision tower, {tower.mm_tokens_per_image} tokens a tile after the pixel shuffle by "
        f"{tower.spatial_merge_size}, with the processor's row/column, global and fake-image tokens (a \\n\\n pair "
        "counted as two tokens: one above a tokenizer that merges it); the tower's activations are counted (its "
        "backward runs last, after the decoder's)"
    )


def idefics_tensors(tower: VisionTower) -> list[Any]:
    """``Idefics3VisionTransformer`` (module ``model.vision_model``) and ``Idefics3Connector``
    (``model.connector``). The Conv2d patch embedding (with bias) and the position embedding (an ``nn.Embedding``)
    are neither converted by bitsandbytes nor matched by all-linear; the layers' q/k/v/out_proj and fc1/fc2 are
    ``nn.Linear`` with biases and ``modality_projection.proj`` an ``nn.Linear`` without (converted and matched)."""
    from ._inventory import NO_INPUT, _linear, siglip_body

    e = tower.embed_dim
    out = siglip_body(tower)
    p = "model.connector.modality_projection.proj"
    out += _linear(p, tower.out_hidden_size, e * tower.spatial_merge_size**2, "vision", NO_INPUT, False, 1)
    return out


def idefics_pixel_bytes(tower: VisionTower, patches: int) -> int:
    """The image processor's batch for ``patches`` patches: fp32 ``pixel_values`` (tiles, 3, image_size²) and the
    int64 ``pixel_attention_mask`` (tiles, image_size²; all ones, every tile is a full square), both alive from
    before the forward to after the optimizer step."""
    tiles = patches // tower.patches_per_side**2
    return tiles * tower.image_size**2 * (4 * tower.in_channels + 8)


def idefics_activations(
    arch: Architecture, tower: VisionTower, adapters: AdapterPlan, plan: Plan, f: _Flow
) -> tuple[int, int]:
    """(held, backward) bytes of the Idefics3 / SmolVLM tower and connector on the step's tiles (every image's tiles
    and global image are one batch of squares through the tower: ``get_image_features``).

    Held from the tower's forward to its backward: the processor's batch (``idefics_pixel_bytes``; full fine-tuning:
    also the model-dtype copy of the pixels the trained Conv2d keeps, and the position ids the trained position
    embedding keeps, int64 per patch), the encoder layers' saved tensors (SigLIP's layers: ``siglip_block``, SDPA with
    no mask: the processor's mask is all ones and transformers skips it), ``post_layernorm``'s input and statistics,
    the connector's: ``modality_projection.proj``'s input (the pixel-shuffled copy, tiles · image_seq_len rows of
    E · scale_factor²) as its adapter keeps it (``_linear_inputs``), and the image features it hands the language
    model (tokens × the text width, which the model's output keeps through ``image_outputs``); and the tower's
    ``last_hidden_state`` (patches × E), kept by the same output. Its backward, after the decoder's, frees the
    connector's tensors: one layer's saved tensors (recomputed under checkpointing) and its working gradients
    (``siglip_backward_work``). Not counted: the image features' ``torch.cat`` copy ``inputs_merger`` scatters into
    the embeddings, freed before the first decoder layer runs."""
    from ._memory import param_dtype_bytes, siglip_backward_work, siglip_block

    p, ad, e = f.patches, f.ad, tower.embed_dim
    pixels = idefics_pixel_bytes(tower, p)
    if plan.method == "full":  # the trained Conv2d keeps its cast input, the position embedding its indices
        pixels += param_dtype_bytes(plan) * (p // tower.patches_per_side**2) * tower.in_channels * tower.image_size**2
        pixels += 8 * p
    block = siglip_block(tower, adapters, f, p)
    layers = tower.depth * p * e * ad if plan.gradient_checkpointing else tower.depth * block
    after = _after_layers(tower, adapters, f)
    work = siglip_backward_work(tower, plan, f, p)
    recomputed = block if plan.gradient_checkpointing else 0
    return pixels + layers + after, recomputed + work - after


def _after_layers(tower: VisionTower, adapters: AdapterPlan, f: _Flow) -> int:
    """What the tower holds from after its layers (see ``idefics_activations``): ``post_layernorm``'s input and
    statistics, the connector's projection input as its adapter keeps it, the image features and the tower's
    ``last_hidden_state``."""
    from dataclasses import replace

    from ._memory import _linear_inputs

    p, ad, e, scale = f.patches, f.ad, tower.embed_dim, tower.spatial_merge_size
    tokens = p // scale**2
    proj = "model.connector.modality_projection.proj"
    adapted = ("proj",) if any(a.module == proj for a in adapters.adapted) else ()
    connector = _linear_inputs(replace(f, T=tokens, lora=adapted), ("proj",), e * scale**2)
    return p * e * ad + 8 * p + connector + tokens * tower.out_hidden_size * ad + p * e * ad


def idefics_forward(tower: VisionTower, adapters: AdapterPlan, plan: Plan, f: _Flow) -> int:
    """The tower's forward at its peak, above what ``idefics_activations`` holds for the backward (at least 0).

    Made then and not counted there: the copies ``get_image_features`` makes for the tower's run (the pixels cast to
    the model's dtype, held there already under full fine-tuning, and the int64 ``pixel_attention_mask`` of the
    real tiles, both alive until the tower returns) and, with checkpointing, the working tensors of the layer that
    runs (its saved tensors are dropped by the checkpoint): at the attention, layer_norm1's output, q, k, v, SDPA's
    output and one adapter's output beside the input (6 × patches × E), at the MLP layer_norm2's output, the
    residual, fc1's output, the GELU's and one adapter's output (2 × patches × E + 3 × patches × the MLP width).
    Not made yet while the layers run: ``post_layernorm``'s tensors, the connector's and the tower's output, which
    the held bytes count."""
    from ._memory import param_dtype_bytes

    p, e, m, ad = f.patches, tower.embed_dim, tower.mlp_width, f.ad
    tiles = p // tower.patches_per_side**2
    copies = 8 * tiles * tower.image_size**2
    if plan.method != "full":
        copies += param_dtype_bytes(plan) * tiles * tower.in_channels * tower.image_size**2
    working = max(6 * p * e, 2 * p * e + 3 * p * m) * ad + 4 * p * tower.num_heads if plan.gradient_checkpointing else 0
    return max(0, copies + working - _after_layers(tower, adapters, f))
