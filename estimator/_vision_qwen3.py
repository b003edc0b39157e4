"""Qwen3-VL (transformers 5.24, ``models/qwen3_vl/modeling_qwen3_vl.py``): its vision tower's structure, parameters
and activations on a step's images and videos.

The tower (``Qwen3VLVisionModel``, module ``model.visual``): a Conv3d patch embedding with bias (``in_channels ×
temporal_patch_size × patch_size²`` per patch, 16² patches), a learned position embedding (``pos_embed``: an
``nn.Embedding`` of ``num_position_embeddings`` rows, a square grid bilinearly interpolated to each image's patch
grid: four rows gathered per patch and summed with fp32 weights), a 2-D rotary embedding, ``depth`` pre-norm blocks
(LayerNorm with bias, the fused ``qkv`` and ``proj`` with biases, SDPA per image, a ``linear_fc1``/``linear_fc2``
MLP of ``intermediate_size`` with ``gelu_pytorch_tanh``), the merger (``norm`` over each patch, then
``linear_fc1``/GELU/``linear_fc2`` over ``spatial_merge_size²`` concatenated patches, to ``out_hidden_size``) and
one DeepStack merger per ``deepstack_visual_indexes`` entry (the same, its ``norm`` over the concatenated patches):
the hidden states after those blocks, merged, are ADDED to the image tokens' hidden states after the first decoder
layers (``Qwen3VLTextModel._deepstack_process``: one feature set per decoder layer, in order).

The language model is Qwen3's (q/k norms on the head dim, ``head_dim`` given; Qwen3-VL-MoE, ``qwen3_vl_moe``:
Qwen3-MoE's, its experts fused Parameters) under ``model.language_model``; its rotary embedding is interleaved
M-RoPE: cos and sin of (batch, seq, head_dim), one row per sample (the 3-D positions differ per row). Qwen3-VL-MoE's
tower is Qwen3-VL's, module for module.

Image tokens: ``Qwen3VLProcessor`` over ``Qwen2VLImageProcessor`` (transformers' auto image processor for
``qwen3_vl``), with the published processor config's values (Qwen3-VL's ``preprocessor_config.json``: patch_size 16,
merge_size 2, ``size`` shortest_edge 65,536 and longest_edge 16,777,216 pixels): an image is resized by
``smart_resize`` to multiples of 32 within those bounds, the tower sees ``(h/16)·(w/16)`` patches and the language
model one ``<|image_pad|>`` per merged 2×2 group between ``<|vision_start|>`` and ``<|vision_end|>``.

Video tokens: ``Qwen3VLVideoProcessor`` with the published ``video_preprocessor_config.json``'s values (patch 16,
temporal patch 2, merge 2, ``size`` shortest_edge 4,096 and longest_edge 25,165,824 pixels, frames sampled at 2 per
second: ``do_sample_frames``, ``fps`` 2; ``cap_pixels_per_frame`` unset: no per-frame cap). Its ``smart_resize`` is
its own: the bounds are a budget for the whole video (the frames, rounded to a multiple of the temporal patch, times
the pixels of each), so a frame of a longer video is resized smaller; the frames are then padded to a multiple of
``temporal_patch_size`` by repeating the last one and patched as Qwen2-VL's: ``⌈frames / 2⌉ · (h/16)·(w/16)``
patches. A plan's ``video_frames`` are the frames that reach the model, after that sampling. The model runs them
through the same tower (``get_video_features`` is ``get_image_features``: a second run, its own DeepStack feature
sets, added at the video tokens). ``Qwen3VLProcessor.replace_video_token`` expands the chat template's
``<|video_pad|>`` (the template's ``<|vision_start|>`` and ``<|vision_end|>`` around it stay: transformers 5.24
replaces the pad token alone) to, per temporal patch, its timestamp as text, ``<{t:.1f} seconds>`` (the mean of its
frames' times, ``_calculate_timestamps``), then ``<|vision_start|>``, one ``<|video_pad|>`` per merged 2×2 group
and ``<|vision_end|>``. The timestamps' tokens depend on the tokenizer: they are counted as Qwen's tokenizer splits
them (its pre-tokenizer puts every digit in a token of its own: ``<``, each digit, ``.``, `` seconds`` and ``>``,
each one token of its vocabulary) at the times of a clip sampled at the processor's 2 frames per second (temporal
patch k at k + 0.25 seconds), so a video of 20 to 200 frames has 6 to 7 text tokens per temporal patch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._errors import ConfigError
from ._vision import VisionTower, _check_heads, _int, pixel_values

if TYPE_CHECKING:
    from ._arch import Architecture
    from ._inventory import Tensor
    from ._lora import AdapterPlan
    from ._memory import _Flow
    from ._plan import Plan

QWEN3_MIN_PIXELS = 65536  # Qwen3-VL's preprocessor_config.json: size.shortest_edge (256²)
QWEN3_MAX_PIXELS = 16777216  # size.longest_edge (4096²)
QWEN3_VIDEO_MIN_PIXELS = 4096  # video_preprocessor_config.json: size.shortest_edge (the whole video's)
QWEN3_VIDEO_MAX_PIXELS = 25165824  # size.longest_edge: the whole video's pixel budget (32 frames at 768 · 32²)
QWEN3_VIDEO_FPS = 2  # the processor's fps: the sampled frames' rate, which the timestamps follow
TIMESTAMP_EXTRA_TOKENS = 3  # "<", " seconds" and ">" around a timestamp's digits and point (one token each)
TOWER_ACTS = ("gelu_pytorch_tanh", "gelu")
"""Block activations whose saved tensors are derived (both save only their input: ``F.gelu``)."""


def qwen3_tower(config: Mapping[str, Any], vc: Mapping[str, Any], model_type: str) -> VisionTower:
    """The tower of a Qwen3-VL config (``Qwen3VLVisionConfig``'s defaults for absent fields: depth 27, width 1152,
    MLP 4304, 16 heads, 2304 positions, DeepStack after blocks 8, 16 and 24)."""
    embed, heads = _int(vc, "hidden_size", 1152), _int(vc, "num_heads", 16)
    _check_heads(embed, heads)
    depth = _int(vc, "depth", 27)
    raw = vc.get("deepstack_visual_indexes", (8, 16, 24))
    if not isinstance(raw, list | tuple) or any(isinstance(i, bool) or not isinstance(i, int) for i in raw):
        raise ConfigError(f"vision_config.deepstack_visual_indexes must be a list of integers, got {raw!r}")
    positions = _int(vc, "num_position_embeddings", 2304)
    return VisionTower(
        model_type=model_type, depth=depth, embed_dim=embed, num_heads=heads,
        mlp_width=_int(vc, "intermediate_size", 4304), out_hidden_size=_int(vc, "out_hidden_size", 3584),
        patch_size=_int(vc, "patch_size", 16), temporal_patch_size=_int(vc, "temporal_patch_size", 2),
        in_channels=_int(vc, "in_channels", 3), spatial_merge_size=_int(vc, "spatial_merge_size", 2),
        position_embeddings=positions, deepstack=tuple(raw), refusal=_refusal(vc, depth, tuple(raw), positions),
    )  # fmt: skip


def _refusal(vc: Mapping[str, Any], depth: int, deepstack: tuple[int, ...], positions: int) -> str:
    """Why a Qwen3-VL config's images cannot be counted ("" when they can)."""
    act = vc.get("hidden_act", "gelu_pytorch_tanh")
    if act not in TOWER_ACTS:
        return f"the vision tower's hidden_act {act!r} is not modelled ({' and '.join(TOWER_ACTS)} are)"
    if len(set(deepstack)) != len(deepstack) or any(not 0 <= i < depth for i in deepstack):
        return (
            f"deepstack_visual_indexes {list(deepstack)} must be distinct blocks of the tower's {depth} for its "
            "features to be counted"
        )
    side = int(positions**0.5)
    if side * side != positions:
        return f"num_position_embeddings ({positions}) is not a square: the position grid is not modelled"
    return ""


def qwen3_tensors(tower: VisionTower) -> list[Tensor]:
    """``Qwen3VLVisionModel``'s parameters (module ``model.visual``), role ``vision``. The Conv3d patch embedding
    (with bias) and the ``pos_embed`` ``nn.Embedding`` are neither converted by bitsandbytes nor matched by
    all-linear; every other linear is an ``nn.Linear`` with bias (converted and matched)."""
    from ._inventory import EMBEDDING, NO_INPUT, PARAMETER, Tensor, _linear, _vision_norm

    v, e, d, w = tower.module, tower.embed_dim, tower.depth, tower.mlp_width
    conv = (e, tower.in_channels, tower.temporal_patch_size, tower.patch_size, tower.patch_size)
    out = [
        Tensor(f"{v}.patch_embed.proj.weight", conv, "vision", f"{v}.patch_embed.proj", PARAMETER),
        Tensor(f"{v}.patch_embed.proj.bias", (e,), "vision", f"{v}.patch_embed.proj", PARAMETER, True),
        Tensor(f"{v}.pos_embed.weight", (tower.position_embeddings, e), "vision", f"{v}.pos_embed", EMBEDDING),
    ]
    b = f"{v}.blocks.{{i}}"
    out += _vision_norm(f"{b}.norm1", e, True, d) + _vision_norm(f"{b}.norm2", e, True, d)
    out += _linear(f"{b}.attn.qkv", 3 * e, e, "vision", NO_INPUT, True, d)
    out += _linear(f"{b}.attn.proj", e, e, "vision", NO_INPUT, True, d)
    out += _linear(f"{b}.mlp.linear_fc1", w, e, "vision", NO_INPUT, True, d)
    out += _linear(f"{b}.mlp.linear_fc2", e, w, "vision", NO_INPUT, True, d)
    merged = e * tower.spatial_merge_size**2
    for name, norm, layers in (("merger", e, 1), ("deepstack_merger_list.{i}", merged, len(tower.deepstack))):
        if not layers:
            continue
        out += _vision_norm(f"{v}.{name}.norm", norm, True, layers)
        out += _linear(f"{v}.{name}.linear_fc1", merged, merged, "vision", NO_INPUT, True, layers)
        out += _linear(f"{v}.{name}.linear_fc2", tower.out_hidden_size, merged, "vision", NO_INPUT, True, layers)
    return out


def qwen3_block(tower: VisionTower, adapters: AdapterPlan, f: _Flow, patches: int) -> int:
    """One ``Qwen3VLVisionBlock``'s saved tensors over ``patches`` patches (SDPA per image), from the code: two
    LayerNorms (input, fp32 mean and rstd), the linears' inputs as their adapters keep them (``_tower_input``), the
    fused qkv output (3E, kept whole: v is a view of it), the rotated q and k and SDPA's output (E each: the
    rotation's fp32 copies are not saved, its products' backward needs only cos and sin) and ``linear_fc1``'s output
    (the tanh GELU saves its input alone). Qwen2-VL's block (``estimator._memory.vision_block``) with one MLP
    intermediate fewer (its quick_gelu also saves a sigmoid)."""
    from ._memory import _tower_input

    e, m, n, ad = tower.embed_dim, tower.mlp_width, patches, f.ad
    b = "blocks.{i}."
    linears = _tower_input(tower, f, adapters, (b + "attn.qkv",), n, e)
    linears += _tower_input(tower, f, adapters, (b + "attn.proj",), n, e)
    linears += _tower_input(tower, f, adapters, (b + "mlp.linear_fc1",), n, e)
    linears += _tower_input(tower, f, adapters, (b + "mlp.linear_fc2",), n, m)
    return 2 * (ad * e + 8) * n + linears + (3 + 2 + 1) * n * e * ad + n * m * ad


def _merger(tower: VisionTower, adapters: AdapterPlan, f: _Flow, patches: int, name: str) -> int:
    """A merger's saved tensors over ``patches`` patches (``Qwen3VLVisionPatchMerger``): the LayerNorm's fp32 mean
    and rstd (the main merger's per patch, over E; a DeepStack merger's per merged row, over merge²·E) and its input
    (the main merger's: the last block's output, which nothing else keeps; a DeepStack merger's: a view of its
    block's output, which the next block keeps already), the two linears' inputs as their adapters keep them
    (``_tower_input``) and the GELU's input (``linear_fc1``'s output). The merged features (the output) are not
    saved: ``masked_scatter`` and DeepStack's addition keep no operand."""
    from ._memory import _tower_input

    ad, e = f.ad, tower.embed_dim
    rows, wide = patches // tower.spatial_merge_size**2, e * tower.spatial_merge_size**2
    norm = patches * e * ad + 8 * patches if name == "merger" else 8 * rows
    linears = _tower_input(tower, f, adapters, (f"{name}.linear_fc1",), rows, wide)
    linears += _tower_input(tower, f, adapters, (f"{name}.linear_fc2",), rows, wide)
    return norm + linears + rows * wide * ad


def qwen3_activations(
    arch: Architecture, tower: VisionTower, adapters: AdapterPlan, plan: Plan, f: _Flow
) -> tuple[int, int]:
    """(held, backward) bytes of Qwen3-VL's tower on the step's images and videos
    (``estimator._memory.vision_activations`` for the reasoning the Qwen towers share: a run for the images, one for
    the videos, every term a count of patches or tokens times a width, so the two runs add up; with both, the
    DeepStack features are joined per level into one tensor over the image and video tokens, which lives only
    through the decoder's layers).

    Held from the tower's forward to its backward: the processor's fp32 ``pixel_values`` (full fine-tuning in 16
    bits: also the Conv3d's 16-bit copy of them, kept for its weight's gradient), with a trained ``pos_embed`` (full
    fine-tuning) the interpolation's int64 indices and fp32 weights (four per patch; a frozen one records no graph),
    the rotary cos and sin (fp32, patches × head_dim each), the blocks' saved tensors (with checkpointing each
    block's input, patches × E; without, ``qwen3_block``), the merger's and each DeepStack merger's saved tensors
    (``_merger``), the index tensors DeepStack's gather and scatter keep (int64, one per image token, for each
    decoder layer it feeds) and, with adapters (a frozen base), the text embeddings' output, a leaf
    ``enable_input_require_grads`` makes that autograd keeps to the end (``masked_scatter``'s copy is the decoder's
    input; the tower's own patch embedding is not hooked: ``Qwen3VLVisionModel`` exposes no input embeddings). The
    tower runs in the decoder's activation dtype. Its backward comes after the decoder's and frees the merger's
    tensors first; then live: one block's saved tensors (recomputed under checkpointing, its input being the
    checkpoint's), the block's working gradients at its MLP's backward (``siglip_backward_work``: the tanh GELU's
    backward is SigLIP's), the gradients of the DeepStack features (image tokens × the text width each, waiting for
    their mergers' backward below the last blocks) and the text embeddings' gradient (waiting for the embedding's
    backward, which runs last). Measured on the CPU grid's tracker (docs/accuracy.md)."""
    from ._memory import param_dtype_bytes, siglip_backward_work

    p, ad, e = f.patches, f.ad, tower.embed_dim
    rows = p // tower.spatial_merge_size**2
    pixels = 4 * pixel_values(tower, p)
    if plan.method == "full" and param_dtype_bytes(plan) != 4:  # a trained Conv3d keeps its cast input
        pixels += param_dtype_bytes(plan) * p * tower.patch_features
    positions = (8 + 4) * 4 * p if plan.method == "full" else 0
    rope = 2 * 4 * p * tower.head_dim
    block = qwen3_block(tower, adapters, f, p)
    blocks = tower.depth * (p * e * ad if plan.gradient_checkpointing else block)
    levels = len(tower.deepstack)
    mergers = _merger(tower, adapters, f, p, "merger")
    mergers += levels * _merger(tower, adapters, f, p, "deepstack_merger_list.{i}")
    indices = 2 * 2 * 8 * rows * levels  # (row, position) indices of the image tokens, for the gather and the scatter
    text = f.T * arch.hidden_size * ad
    leaf = text if f.frozen_base else 0
    run = f.tower_run or p
    recomputed = qwen3_block(tower, adapters, f, run) - run * e * ad if plan.gradient_checkpointing else 0
    work = recomputed + siglip_backward_work(tower, plan, f, run) + text
    work += levels * (run // tower.spatial_merge_size**2) * tower.out_hidden_size * ad
    held = pixels + positions + rope + blocks + mergers + indices + leaf
    return held, work - _merger(tower, adapters, f, run, "merger")


def qwen3_output(tower: VisionTower, f: _Flow) -> int:
    """What the model's output (``image_outputs``) keeps of the tower through the forward's end, freed when the
    training loop drops the output before the backward: the merged features (``pooler_output``) and each DeepStack
    feature set (image tokens × the text width each; ``last_hidden_state`` is the merger's saved input, counted
    with the tower). ``Qwen3VLModel.forward``'s concatenated copies of them live only through the decoder's
    layers, freed before the head."""
    rows = f.patches // tower.spatial_merge_size**2
    return (1 + len(tower.deepstack)) * rows * tower.out_hidden_size * f.ad


def video_resize(
    frames: int, height: int, width: int, factor: int, temporal: int, low: int, cap: int
) -> tuple[int, int]:
    """``Qwen3VLVideoProcessor``'s resize (``transformers.models.qwen3_vl.video_processing_qwen3_vl.smart_resize``):
    sides rounded to multiples of ``factor`` (a side below it scaled up first) and, where the video's pixels (its
    frames rounded to a multiple of ``temporal``, times each frame's) leave ``[low, cap]``, scaled into them."""
    if height < factor or width < factor:
        scale = max(factor / height, factor / width)
        height, width = int(height * scale), int(width * scale)
    h_bar, w_bar = round(height / factor) * factor, round(width / factor) * factor
    t_bar = round(frames / temporal) * temporal
    if t_bar * h_bar * w_bar > cap:
        beta = math.sqrt((frames * height * width) / cap)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif t_bar * h_bar * w_bar < low:
        beta = math.sqrt(low / (frames * height * width))
        h_bar, w_bar = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def video_frame_size(frames: int, frame_size: tuple[int, int] | None, max_pixels: int) -> tuple[int, int]:
    """A video frame's size before the resize: ``frame_size``, or unset a square at the frames' even share of the
    budget (``max_pixels``, 0: the published 25,165,824), the largest frames the processor keeps at that count."""
    if frame_size is not None:
        return frame_size
    side = math.isqrt((max_pixels or QWEN3_VIDEO_MAX_PIXELS) // frames)
    return side, side


def video_grid(
    tower: VisionTower, frames: int, frame_size: tuple[int, int] | None, max_pixels: int
) -> tuple[int, int, int]:
    """``video_grid_thw`` of one video of ``frames`` frames (at least ``temporal_patch_size``: the processor's
    resize raises on fewer)."""
    h, w = video_frame_size(frames, frame_size, max_pixels)
    factor, t = tower.patch_size * tower.spatial_merge_size, tower.temporal_patch_size
    rh, rw = video_resize(frames, h, w, factor, t, QWEN3_VIDEO_MIN_PIXELS, max_pixels or QWEN3_VIDEO_MAX_PIXELS)
    return -(-frames // t), rh // tower.patch_size, rw // tower.patch_size


def qwen3_video_patches(tower: VisionTower, frames: int, frame_size: tuple[int, int] | None, max_pixels: int) -> int:
    """Patches the tower sees for one video (``Qwen3VLVideoProcessor.get_num_of_video_patches``; 0 with fewer frames
    than a temporal patch, which the processor refuses)."""
    if frames < tower.temporal_patch_size:
        return 0
    t, h, w = video_grid(tower, frames, frame_size, max_pixels)
    return t * h * w


def timestamp_tokens(tower: VisionTower, frames: int) -> int:
    """Text tokens of one video's timestamps: per temporal patch ``<{t:.1f} seconds>`` at the mean time of its
    frames (``Qwen3VLProcessor._calculate_timestamps``, the frames of a clip sampled at 2 per second, the last one
    repeated to fill a temporal patch), as Qwen's tokenizer splits it: each digit and the point a token, and
    ``<``, `` seconds`` and ``>``."""
    t = tower.temporal_patch_size
    times = [i / QWEN3_VIDEO_FPS for i in range(frames)] + [(frames - 1) / QWEN3_VIDEO_FPS] * (-frames % t)
    return sum(
        len(f"{(times[i] + times[i + t - 1]) / 2:.1f}") + TIMESTAMP_EXTRA_TOKENS for i in range(0, len(times), t)
    )


def qwen3_video_tokens(tower: VisionTower, frames: int, frame_size: tuple[int, int] | None, max_pixels: int) -> int:
    """Language-model tokens of one video: the chat template's ``<|vision_start|>`` and ``<|vision_end|>`` and,
    per temporal patch, its timestamp (``timestamp_tokens``), ``<|vision_start|>``, one ``<|video_pad|>`` per
    merged group and ``<|vision_end|>`` (see the module docstring)."""
    if frames < tower.temporal_patch_size:
        return 0
    t, h, w = video_grid(tower, frames, frame_size, max_pixels)
    return 2 + t * (h * w // tower.spatial_merge_size**2 + 2) + timestamp_tokens(tower, frames)
