"""Vision-language models: the vision tower's structure and the image tokens its processor makes.

Qwen2-VL and Qwen2.5-VL (transformers 5.24, ``modeling_qwen2_vl.py`` / ``modeling_qwen2_5_vl.py``): a Conv3d patch
embedding (``in_channels × temporal_patch_size × patch_size²`` per patch, no bias), ``depth`` pre-norm blocks
(Qwen2-VL: LayerNorm, fused ``qkv`` and ``proj`` with biases, ``fc1``/``fc2`` MLP of ``embed_dim · mlp_ratio``;
Qwen2.5-VL: RMSNorm, the same attention, a gated ``gate_proj``/``up_proj``/``down_proj`` MLP of
``intermediate_size``, all with biases) and a merger (``ln_q`` then two linears over ``spatial_merge_size²``
concatenated patches, to the language model's width).

Image tokens (``Qwen2VLImageProcessor``): an image is resized by ``smart_resize`` so both sides are multiples of
``patch_size × spatial_merge_size`` (28) and its area lies in ``[min_pixels, max_pixels]`` (56², 28²·1280 by
default); the vision encoder sees ``(h/14)·(w/14)`` patches, and the merger hands the language model one token per
``spatial_merge_size²`` (4) of them, between ``<|vision_start|>`` and ``<|vision_end|>``. Other families: not yet.

Video tokens (``Qwen2VLVideoProcessor``, Qwen2.5-VL's too): every frame of a video is resized by the same
``smart_resize`` under the video processor's own bounds (``size``: 128·28² to 28²·768 pixels by default, so a small
frame is enlarged), the frames are padded to a multiple of ``temporal_patch_size`` (2) by repeating the last one,
and each pair of frames makes one temporal patch: ``grid_t · (h/14)·(w/14)`` patches of the same 3·2·14² values as an
image's (``pixel_values_videos``, fp32), ``grid_t = ⌈frames / 2⌉``. The model runs them through the same tower and
merger (``get_video_features``, a second run of ``visual`` after the images'), and the language model gets one
``<|video_pad|>`` token per merged group, between the same two delimiters (``replace_video_token``). transformers
5.24's default keeps the per-frame cap alone (``cap_pixels_per_frame`` unset: no total-video budget) and samples no
frames (``do_sample_frames=False``): every frame given is a frame seen.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._errors import ConfigError

QWEN_VL = ("qwen2_vl", "qwen2_5_vl")
MIN_PIXELS = 56 * 56
MAX_PIXELS = 28 * 28 * 1280
VIDEO_MIN_PIXELS = 128 * 28 * 28  # Qwen2VLVideoProcessor.size["shortest_edge"]
VIDEO_MAX_PIXELS = 28 * 28 * 768  # Qwen2VLVideoProcessor.size["longest_edge"]


@dataclass(frozen=True)
class VisionTower:
    """A Qwen2-VL / Qwen2.5-VL vision encoder's sizes (``vision_config`` field names)."""

    model_type: str  # qwen2_vl | qwen2_5_vl
    depth: int
    embed_dim: int  # the blocks' width (Qwen2.5-VL calls it hidden_size)
    num_heads: int
    mlp_width: int  # Qwen2-VL: embed_dim · mlp_ratio; Qwen2.5-VL: intermediate_size
    out_hidden_size: int  # the merger's output: the language model's hidden size
    patch_size: int = 14
    temporal_patch_size: int = 2
    in_channels: int = 3
    spatial_merge_size: int = 2

    @property
    def gated(self) -> bool:
        """Qwen2.5-VL's blocks have a gated MLP and RMSNorm; Qwen2-VL's a GELU MLP and LayerNorm."""
        return self.model_type == "qwen2_5_vl"

    @property
    def patch_features(self) -> int:
        """Values per flattened patch (``pixel_values``' second dimension): 3·2·14·14 = 1176."""
        return self.in_channels * self.temporal_patch_size * self.patch_size**2

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads


def _int(vc: Mapping[str, Any], name: str, default: int) -> int:
    value = vc.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value > MAX_VISION_SIZE:
        raise ConfigError(f"vision_config.{name} must be a positive integer up to {MAX_VISION_SIZE}, got {value!r}")
    return value


MAX_VISION_SIZE = 1 << 20
"""Bound of any vision_config size (published towers are at most a few thousand wide, a few dozen deep)."""


def vision_tower(config: Mapping[str, Any]) -> VisionTower:
    """The tower of a Qwen2-VL / Qwen2.5-VL config (its ``vision_config``, transformers 5.24's defaults for absent
    fields). The merger's output width is the config's own (Qwen2-VL: ``vision_config.hidden_size``, Qwen2.5-VL:
    ``out_hidden_size``), equal to the language model's in every published model."""
    model_type = str(config.get("model_type"))
    raw = config.get("vision_config")
    vc: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    if model_type == "qwen2_5_vl":
        embed = _int(vc, "hidden_size", 3584)
        mlp = _int(vc, "intermediate_size", 3420)
        out = _int(vc, "out_hidden_size", 3584)
    else:
        embed = _int(vc, "embed_dim", 1280)
        mlp = embed * _int(vc, "mlp_ratio", 4)
        out = _int(vc, "hidden_size", 3584)
    heads = _int(vc, "num_heads", 16)
    if embed % heads:
        raise ConfigError(f"the vision tower's width ({embed}) must be a multiple of vision_config.num_heads ({heads})")
    return VisionTower(
        model_type=model_type, depth=_int(vc, "depth", 32), embed_dim=embed, num_heads=heads, mlp_width=mlp,
        out_hidden_size=out, patch_size=_int(vc, "patch_size", 14),
        temporal_patch_size=_int(vc, "temporal_patch_size", 2),
        in_channels=_int(vc, "in_channels", _int(vc, "in_chans", 3)),
        spatial_merge_size=_int(vc, "spatial_merge_size", 2),
    )  # fmt: skip


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


def _frame_patches(tower: VisionTower, size: tuple[int, int] | None, min_pixels: int, cap: int) -> int:
    """Patches of one picture of ``size`` (unset: a square at ``cap``) after ``smart_resize`` into
    ``[min_pixels, cap]``: ``(h/patch)·(w/patch)``."""
    patch, merge = tower.patch_size, tower.spatial_merge_size
    if size is None:
        side = math.isqrt(cap)
        size = (side, side)
    h, w = smart_resize(size[0], size[1], patch * merge, min_pixels, cap)
    return (h // patch) * (w // patch)


def image_patches(tower: VisionTower, image_size: tuple[int, int] | None, max_pixels: int) -> int:
    """Patches the vision encoder sees for one image of ``image_size`` (unset: a square at ``max_pixels``; 0:
    the processor's default cap): ``(h/patch)·(w/patch)`` after ``smart_resize``."""
    return _frame_patches(tower, image_size, MIN_PIXELS, max_pixels or MAX_PIXELS)


def image_tokens(tower: VisionTower, image_size: tuple[int, int] | None, max_pixels: int) -> int:
    """Language-model tokens of one image: one per merged group of patches, and the two vision delimiters."""
    return image_patches(tower, image_size, max_pixels) // (tower.spatial_merge_size**2) + 2


def video_patches(tower: VisionTower, frames: int, frame_size: tuple[int, int] | None, max_pixels: int) -> int:
    """Patches the vision encoder sees for one video of ``frames`` frames of ``frame_size`` (unset: a square at the
    cap; ``max_pixels`` 0: the video processor's default cap, 28²·768): ``⌈frames / temporal_patch_size⌉`` temporal
    patches of ``(h/patch)·(w/patch)`` each, the frames resized under the video processor's bounds
    (``Qwen2VLVideoProcessor.patchify`` / ``get_num_of_video_patches``)."""
    if frames <= 0:
        return 0
    grid_t = -(-frames // tower.temporal_patch_size)
    return grid_t * _frame_patches(tower, frame_size, VIDEO_MIN_PIXELS, max_pixels or VIDEO_MAX_PIXELS)


def video_tokens(tower: VisionTower, frames: int, frame_size: tuple[int, int] | None, max_pixels: int) -> int:
    """Language-model tokens of one video: one ``<|video_pad|>`` per merged group of patches, and the two vision
    delimiters (0 without frames)."""
    if frames <= 0:
        return 0
    return video_patches(tower, frames, frame_size, max_pixels) // (tower.spatial_merge_size**2) + 2
