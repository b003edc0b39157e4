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
from typing import Any

from ._vision import VisionTower, _check_heads, _int

IMAGE_EXTRA_TOKENS = 3  # <fake_token_around_image><global-img> … <fake_token_around_image> around a global image
TILE_EXTRA_TOKENS = 2  # <fake_token_around_image><row_r_col_c> before each tile's tokens


def idefics_tower(config: Mapping[str, Any], vc: Mapping[str, Any], model_type: str) -> VisionTower:
    """The tower of an Idefics3 / SmolVLM config (``Idefics3VisionConfig`` / ``SmolVLMVisionConfig``'s defaults for
    absent fields: 12 layers of 1152, 16 heads, 3072 wide MLP, image 224, patch 32; ``scale_factor`` 2; the text
    model's ``hidden_size``, Llama's 4096 by default). ``spatial_merge_size`` holds ``scale_factor`` and
    ``mm_tokens_per_image`` the tokens of one tile, ``image_seq_len``."""
    text = config.get("text_config")
    tc: Mapping[str, Any] = text if isinstance(text, Mapping) else {}
    embed = _int(vc, "hidden_size", 1152)
    heads = _int(vc, "num_attention_heads", 16)
    _check_heads(embed, heads)
    image, patch = _int(vc, "image_size", 224), _int(vc, "patch_size", 32)
    scale = _int(config, "scale_factor", 2, "")
    return VisionTower(
        model_type=model_type, depth=_int(vc, "num_hidden_layers", 12), embed_dim=embed, num_heads=heads,
        mlp_width=_int(vc, "intermediate_size", 3072), out_hidden_size=_int(tc, "hidden_size", 4096, "text_config."),
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
    """Rows and columns of tiles an image of ``image_size`` (height, width) is cut into with splitting on
    (``get_number_of_image_patches``): resized to ``longest_edge``, both sides rounded up to multiples of ``tile``
    (``max_image_size["longest_edge"]``); ``(0, 0)`` when the result is a single tile (no split)."""
    height, width = _rescale_to_max_len(image_size[0], image_size[1], longest_edge)
    height, width = _below_upper_bound(height, width, MAX_IMAGE_SIZE)
    rows, cols = math.ceil(height / tile), math.ceil(width / tile)
    if rows * tile > tile or cols * tile > tile:
        return rows, cols
    return 0, 0


def image_tiles(grid: tuple[int, int]) -> int:
    """Tiles the vision tower sees for one image: ``rows · cols`` and the global image, or the global image alone."""
    rows, cols = grid
    return rows * cols + 1 if rows or cols else 1


def image_tokens(tower: VisionTower, grid: tuple[int, int]) -> int:
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


def idefics_tensors(tower: VisionTower) -> list[Any]:
    """``Idefics3VisionTransformer`` (module ``model.vision_model``) and ``Idefics3Connector``
    (``model.connector``). The Conv2d patch embedding (with bias) and the position embedding (an ``nn.Embedding``)
    are neither converted by bitsandbytes nor matched by all-linear; the layers' q/k/v/out_proj and fc1/fc2 are
    ``nn.Linear`` with biases and ``modality_projection.proj`` an ``nn.Linear`` without (converted and matched)."""
    from ._inventory import EMBEDDING, NO_INPUT, PARAMETER, Tensor, _encoder_layers, _linear, _vision_norm

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
    out += _vision_norm(f"{v}.post_layernorm", e, True, 1)
    p = "model.connector.modality_projection.proj"
    out += _linear(p, tower.out_hidden_size, e * tower.spatial_merge_size**2, "vision", NO_INPUT, False, 1)
    return out
