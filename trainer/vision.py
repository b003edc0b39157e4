"""A vision-language batch as the model's own image processor makes it: pixels, patch grid and image tokens.

For a plan with ``images_per_sample`` on a Qwen2-VL / Qwen2.5-VL model, each sample's images are random RGB images of
``plan.image_size`` (unset: a square at ``max_pixels``) run through transformers' own ``Qwen2VLImageProcessorPil``
(its ``smart_resize``, patching and flattening: ``pixel_values`` of shape (patches, 3·2·14·14) and
``image_grid_thw``). Each row holds, per image, ``<|vision_start|>``, one image token per merged 2×2 patch group and
``<|vision_end|>``, then ``seq_len`` random text tokens; ``mm_token_type_ids`` marks the image tokens (the model
computes its 3-D rope positions from them, as it does from the processor's output). Labels are the ids with the
image tokens set to -100, as TRL's vision collator does. Needs Pillow (the train extra).

On Gemma 3 the images go through transformers' own ``Gemma3ImageProcessorPil`` at the tower's ``image_size``
(the size its published processor config sets; pan-and-scan off, as by default): ``pixel_values`` of shape
(images, 3, image_size, image_size). Each row holds, per image, what ``Gemma3Processor`` expands its placeholder to:
``"\n\n"``, ``<start_of_image>``, ``mm_tokens_per_image`` image tokens, ``<end_of_image>``, ``"\n\n"``, then
``seq_len`` random text tokens; ``token_type_ids`` marks the image tokens (the model makes its bidirectional mask
over them from it, as from the processor's output).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from estimator import Plan

from .build import stack_module

QWEN_VL = ("qwen2_vl", "qwen2_5_vl")
IMAGE_MODEL_TYPES = (*QWEN_VL, "gemma3")
DEFAULT_MAX_PIXELS = 28 * 28 * 1280  # the processor's default cap
GEMMA_NEWLINES = 108  # "\n\n" in Gemma's vocabulary (the processor's full_image_sequence starts and ends with it)


def takes_images(config: Mapping[str, Any]) -> bool:
    """Whether the trainer can build an image batch for this model type."""
    return config.get("model_type") in IMAGE_MODEL_TYPES


def _images(plan: Plan, gen: torch.Generator, square: int = 0) -> list[Any]:
    """Random RGB images of ``plan.image_size`` (unset: ``square``, else a square at the processor's cap)."""
    image = stack_module("PIL.Image")
    if plan.image_size is None and square:
        height, width = square, square
    elif plan.image_size is None:
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
        kinds = ", ".join(IMAGE_MODEL_TYPES)
        raise ValueError(f"image batches are built for {kinds} only, not {config.get('model_type')!r}")
    if config.get("model_type") == "gemma3":
        return _gemma3_batch(config, plan, device, seed)
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


def _gemma3_batch(config: Mapping[str, Any], plan: Plan, device: torch.device, seed: int) -> dict[str, torch.Tensor]:
    """Gemma 3's batch (see the module docstring); the defaults are ``Gemma3Config``'s and ``SiglipVisionConfig``'s."""
    proc = stack_module("transformers.models.gemma3.image_processing_pil_gemma3")
    vision = config.get("vision_config") or {}
    side = int(vision.get("image_size", 224))
    processor = proc.Gemma3ImageProcessorPil(size={"height": side, "width": side})
    gen = torch.Generator().manual_seed(seed)
    out = processor(images=_images(plan, gen, side), return_tensors="pt")
    tokens = int(config.get("mm_tokens_per_image", 256))
    image_id = int(config.get("image_token_index", config.get("image_token_id", 262144)))
    boi = int(config.get("boi_token_index", 255999))
    eoi = int(config.get("eoi_token_index", 256000))
    specials = (image_id, boi, eoi, GEMMA_NEWLINES)
    vocab = int((config.get("text_config") or {}).get("vocab_size", 262208))
    rows, types = [], []
    for _ in range(plan.batch_size):
        ids: list[int] = []
        kind: list[int] = []
        for _ in range(plan.images_per_sample):
            ids += [GEMMA_NEWLINES, boi] + [image_id] * tokens + [eoi, GEMMA_NEWLINES]
            kind += [0, 0] + [1] * tokens + [0, 0]
        words = torch.randint(0, vocab, (plan.seq_len,), generator=gen)
        for special in specials:
            words[words == special] = 0
        rows.append(ids + words.tolist())
        types.append(kind + [0] * plan.seq_len)
    input_ids = torch.tensor(rows)
    labels = input_ids.clone()
    labels[input_ids == image_id] = -100
    return {
        "input_ids": input_ids.to(device),
        "labels": labels.to(device),
        "token_type_ids": torch.tensor(types).to(device),
        "pixel_values": out["pixel_values"].to(device),
    }
