"""Image tokens as a vision-language model's processor makes them (the language model's share of an image).

Qwen2-VL and Qwen2.5-VL (``Qwen2VLImageProcessor``, transformers 5.24): an image is resized by ``smart_resize`` so
both sides are multiples of ``patch_size × spatial_merge_size`` (28) and its area lies in ``[min_pixels,
max_pixels]`` (56², 28²·1280 by default); the vision encoder sees ``(h/14)·(w/14)`` patches, and the merger hands the
language model one token per ``spatial_merge_size²`` (4) of them, between ``<|vision_start|>`` and
``<|vision_end|>``. Other families: not yet.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ._plan import Plan

QWEN_VL = ("qwen2_vl", "qwen2_5_vl")
MIN_PIXELS = 56 * 56
MAX_PIXELS = 28 * 28 * 1280


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """The processor's resize (``transformers.models.qwen2_vl.image_processing_qwen2_vl.smart_resize``)."""
    h_bar, w_bar = round(height / factor) * factor, round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar, w_bar = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def image_tokens(config: Mapping[str, Any], plan: Plan) -> int:
    """Language-model tokens of one image of ``plan.image_size`` (unset: an image at ``max_pixels``), the two
    vision delimiters included; 0 for a model type whose processor is not modelled."""
    if config.get("model_type") not in QWEN_VL:
        return 0
    vision = config.get("vision_config")
    vc: Mapping[str, Any] = vision if isinstance(vision, Mapping) else {}
    patch, merge = int(vc.get("patch_size", 14)), int(vc.get("spatial_merge_size", 2))
    max_pixels = plan.max_pixels or MAX_PIXELS
    if plan.image_size is None:
        side = math.isqrt(max_pixels)
        h, w = smart_resize(side, side, patch * merge, MIN_PIXELS, max_pixels)
    else:
        h, w = smart_resize(plan.image_size[0], plan.image_size[1], patch * merge, MIN_PIXELS, max_pixels)
    return (h // patch) * (w // patch) // (merge * merge) + 2
