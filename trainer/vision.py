"""A vision-language batch as the model's own image processor makes it: pixels, patch grid and image tokens.

For a plan with ``images_per_sample`` on a Qwen2-VL / Qwen2.5-VL model, each sample's images are random RGB images of
``plan.image_size`` (unset: a square at ``max_pixels``) run through transformers' own ``Qwen2VLImageProcessorPil``
(its ``smart_resize``, patching and flattening: ``pixel_values`` of shape (patches, 3·2·14·14) and
``image_grid_thw``). Each row holds, per image, ``<|vision_start|>``, one image token per merged 2×2 patch group and
``<|vision_end|>``, then ``seq_len`` random text tokens; ``mm_token_type_ids`` marks the image tokens (the model
computes its 3-D rope positions from them, as it does from the processor's output). Labels are the ids with the
image tokens set to -100, as TRL's vision collator does. Needs Pillow (the train extra).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from estimator import Plan

from .build import stack_module

QWEN_VL = ("qwen2_vl", "qwen2_5_vl")
DEFAULT_MAX_PIXELS = 28 * 28 * 1280  # the processor's default cap


def takes_images(config: Mapping[str, Any]) -> bool:
    """Whether the trainer can build an image batch for this model type."""
    return config.get("model_type") in QWEN_VL


def _images(plan: Plan, gen: torch.Generator) -> list[Any]:
    image = stack_module("PIL.Image")
    if plan.image_size is None:
        side = math.isqrt(plan.max_pixels or DEFAULT_MAX_PIXELS)
        height, width = side, side
    else:
        height, width = plan.image_size
    n = plan.batch_size * plan.images_per_sample
    pixels = torch.randint(0, 256, (n, height, width, 3), generator=gen, dtype=torch.uint8).numpy()
    return [image.fromarray(p) for p in pixels]


def image_batch(config: Mapping[str, Any], plan: Plan, device: torch.device, seed: int) -> dict[str, torch.Tensor]:
    """The batch of ``plan`` with its images (see the module docstring)."""
    if not takes_images(config):
        raise ValueError(f"image batches are built for {', '.join(QWEN_VL)} only, not {config.get('model_type')!r}")
    proc = stack_module("transformers.models.qwen2_vl.image_processing_pil_qwen2_vl")
    vision = config.get("vision_config") or {}
    text = config.get("text_config") or config
    merge = int(vision.get("spatial_merge_size", 2))
    kwargs: dict[str, Any] = {"patch_size": int(vision.get("patch_size", 14)), "merge_size": merge}
    if plan.max_pixels:
        kwargs["max_pixels"] = plan.max_pixels
        kwargs["size"] = {"shortest_edge": 56 * 56, "longest_edge": plan.max_pixels}
    processor = proc.Qwen2VLImageProcessorPil(**kwargs)
    gen = torch.Generator().manual_seed(seed)
    out = processor(images=_images(plan, gen), return_tensors="pt")
    grid: torch.Tensor = out["image_grid_thw"]
    image_id = int(config.get("image_token_id", 151655))
    start_id = int(config.get("vision_start_token_id", 151652))
    end_id = int(config.get("vision_end_token_id", 151653))
    vocab = int(text.get("vocab_size", config.get("vocab_size", 0)))
    rows, types = [], []
    for b in range(plan.batch_size):
        ids: list[int] = []
        kind: list[int] = []
        for i in range(plan.images_per_sample):
            t, h, w = (int(x) for x in grid[b * plan.images_per_sample + i])
            n = t * h * w // (merge * merge)
            ids += [start_id] + [image_id] * n + [end_id]
            kind += [0] + [1] * n + [0]
        words = torch.randint(0, vocab, (plan.seq_len,), generator=gen)
        words[(words == image_id) | (words == start_id) | (words == end_id)] = 0
        rows.append(ids + words.tolist())
        types.append(kind + [0] * plan.seq_len)
    input_ids = torch.tensor(rows)
    labels = input_ids.clone()
    labels[input_ids == image_id] = -100
    return {
        "input_ids": input_ids.to(device),
        "labels": labels.to(device),
        "mm_token_type_ids": torch.tensor(types).to(device),
        "pixel_values": out["pixel_values"].to(device),
        "image_grid_thw": grid.to(device),
    }
