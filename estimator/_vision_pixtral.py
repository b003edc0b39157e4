"""Mistral 3 (``Mistral3ForConditionalGeneration``, e.g. Mistral-Small-3.1-24B-Instruct-2503): the Pixtral vision
tower, its projector, and the image tokens ``PixtralProcessor`` makes (transformers 5.24, ``modeling_pixtral.py``,
``modeling_mistral3.py``, ``image_processing_pixtral.py``, ``processing_pixtral.py``).

The tower (``PixtralVisionModel``, module ``model.vision_tower``): a Conv2d patch embedding without bias
(``patch_conv``), ``ln_pre`` (RMSNorm), ``num_hidden_layers`` pre-norm layers (``attention_norm`` and ``ffn_norm``
RMSNorms; ``attention.q_proj``/``k_proj``/``v_proj``/``o_proj`` and a gated ``feed_forward.gate_proj``/``up_proj``/
``down_proj``, all ``nn.Linear`` without bias) and a 2-D rotary embedding (no parameters). The projector
(``Mistral3MultiModalProjector``, module ``model.multi_modal_projector``): an RMSNorm (``norm``), the patch merger
(``patch_merger.merging_layer``: spatial_merge_size² concatenated patches back to the tower's width, no bias), then
``linear_1`` (the tower's width × the feature layers to the text width) and ``linear_2``, with
``multimodal_projector_bias``. bitsandbytes converts every one of these linears, the merger's too, and PEFT's
all-linear adapts them; the Conv2d is neither.

Images (``PixtralProcessor`` with ``PixtralImageProcessor``): each image is scaled down, keeping its aspect ratio,
until it fits a ``longest_edge`` square (floored; never enlarged), then each side is rounded UP to a multiple of
``patch_size × spatial_merge_size`` (28: the processor passes that product as the image processor's patch size).
An image of ``H × W`` after that makes ``(H/14)·(W/14)`` patches in the tower and ``(H/28)·(W/28)`` merged
features; its placeholder becomes, per row of merged patches, ``W/28`` ``[IMG]`` tokens and one ``[IMG_BREAK]``,
the last ``[IMG_BREAK]`` replaced by ``[IMG_END]``: ``(H/28)·(W/28 + 1)`` tokens. The published processor config
sets ``longest_edge`` to the tower's ``image_size`` (1540 = 55·28 for Mistral Small 3.1), the default taken here.
The images of a batch are zero-padded to the batch's largest height and width (``pixel_values``: fp32, (images, 3,
H_max, W_max)); the tower crops each image's patches back to its own ``image_sizes`` and runs all images as one
sequence, each attending only to itself (eager and SDPA through a block-diagonal float mask, (patches, patches) in
the activation dtype; flash attention through ``cu_seqlens``, no mask).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ._vision import VisionTower, _int, _projector_inputs, _text_width, _width_and_heads


def pixtral_tower(config: Mapping[str, Any]) -> VisionTower:
    """Mistral 3's tower and projector (``Mistral3Config``'s defaults for its vision_config, Mistral Small 3.1's:
    24 layers of 1024, patch 14, image_size 1540; spatial_merge_size 2). ``image_size`` stands for the processor's
    ``longest_edge``."""
    raw = config.get("vision_config")
    vc: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    embed, heads = _width_and_heads(vc, 1024, 16)
    _, layers, bias = _projector_inputs(config, -1, False)
    return VisionTower(
        model_type=str(config.get("model_type")), depth=_int(vc, "num_hidden_layers", 24), embed_dim=embed,
        num_heads=heads, mlp_width=_int(vc, "intermediate_size", 4096),
        out_hidden_size=_text_width(config, 5120), patch_size=_int(vc, "patch_size", 14),
        temporal_patch_size=1, in_channels=_int(vc, "num_channels", 3),
        spatial_merge_size=_int(config, "spatial_merge_size", 2, ""), image_size=_int(vc, "image_size", 1540),
        feature_layers=layers, projector_bias=bias,
    )  # fmt: skip


def resized(tower: VisionTower, image_size: tuple[int, int] | None, max_pixels: int) -> tuple[int, int]:
    """The processor's size for an image of ``image_size`` (unset: a square at the longest edge): scaled down to fit
    the ``longest_edge`` square (``max_pixels`` given: ``⌊√max_pixels⌋``; 0: the tower's ``image_size``, the
    published processor's), sides rounded up to multiples of ``patch_size × spatial_merge_size``
    (``get_resize_output_image_size``)."""
    edge = math.isqrt(max_pixels) if max_pixels else tower.image_size
    height, width = image_size if image_size is not None else (edge, edge)
    ratio = max(height / edge, width / edge)
    if ratio > 1:
        height, width = int(math.floor(height / ratio)), int(math.floor(width / ratio))
    step = tower.patch_size * tower.spatial_merge_size
    return ((height - 1) // step + 1) * step, ((width - 1) // step + 1) * step


def pixtral_patches(tower: VisionTower, image_size: tuple[int, int] | None, max_pixels: int) -> int:
    """Patches the tower sees for one image: ``(H/patch)·(W/patch)`` of its resized size."""
    h, w = resized(tower, image_size, max_pixels)
    return (h // tower.patch_size) * (w // tower.patch_size)


def pixtral_tokens(tower: VisionTower, image_size: tuple[int, int] | None, max_pixels: int) -> int:
    """Language-model tokens of one image: per merged row, its ``[IMG]`` tokens and an ``[IMG_BREAK]`` (the last
    one ``[IMG_END]``)."""
    h, w = resized(tower, image_size, max_pixels)
    step = tower.patch_size * tower.spatial_merge_size
    return (h // step) * (w // step + 1)
