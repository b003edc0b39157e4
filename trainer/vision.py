"""A vision-language batch as the model's own processors make it: pixels, patch grids and image and video tokens.

For a plan with ``images_per_sample`` on a Qwen2-VL / Qwen2.5-VL model, each sample's images are random RGB images of
``plan.image_size`` (unset: a square at ``max_pixels``) run through transformers' own ``Qwen2VLImageProcessorPil``
(its ``smart_resize``, patching and flattening: ``pixel_values`` of shape (patches, 3·2·14·14) and
``image_grid_thw``). With ``video_frames``, each sample also holds one video of that many random frames of
``image_size`` (unset: a square at the video processor's cap), made as ``Qwen2VLVideoProcessor`` (Qwen2.5-VL's too)
makes it: the frames resized by its ``smart_resize`` under its own bounds (``size``: 128·28² to 28²·768 pixels, or
``max_pixels``), rescaled and normalized to fp32, then its own ``patchify`` (the last frame repeated to a multiple of
``temporal_patch_size``): ``pixel_values_videos`` of (patches, 3·2·14·14) and ``video_grid_thw``. That processor's
module imports torchvision, which the train extra does not install: its ``smart_resize``, ``patchify`` and class
defaults are compiled from the installed module's source, and the resize is ``torch.nn.functional.interpolate``'s
antialiased bicubic, the one torchvision's ``resize`` calls on tensors (the pixel values differ from a PIL resize by
rounding, the shapes and dtypes not at all).

Each row holds, per image, ``<|vision_start|>``, one image token per merged 2×2 patch group and ``<|vision_end|>``,
then the video the same way with ``<|video_pad|>`` tokens, then ``seq_len`` random text tokens;
``mm_token_type_ids`` marks the image (1) and video (2) tokens (the model computes its 3-D rope positions from them,
as it does from the processor's output; Qwen2.5-VL's ``second_per_grid_ts`` is left to its default, one second per
temporal patch: it moves positions only). Labels are the ids with the image and video tokens set to -100, as TRL's
vision collator does. Needs Pillow (the train extra).

On Qwen3-VL (and Qwen3-VL-MoE) the images go through the same ``Qwen2VLImageProcessorPil`` (transformers' auto
image processor for ``qwen3_vl``) with the values of Qwen3-VL's published ``preprocessor_config.json``: 16² patches
merged 2 × 2, ``size`` 65,536 to 16,777,216 pixels (an unset ``image_size`` is a square at the cap, 4096²), mean and
std 0.5; ``pixel_values`` of (patches, 3·2·16·16). The rows are built as Qwen2-VL's (Qwen3VLProcessor's
``replace_image_token`` expands each placeholder to one ``<|image_pad|>`` per merged group, between the same
delimiters). Its video (``video_frames``: the frames that reach the model after the processor's sampling, 2 per
second) is made as ``Qwen3VLVideoProcessor`` makes it, with the published ``video_preprocessor_config.json``'s
values (``size`` 4,096 to 25,165,824 pixels for the whole video, mean and std 0.5; unset ``image_size``: a square at
each frame's share of that budget): its own ``smart_resize`` and ``patchify`` (that module imports without
torchvision), the resize as for Qwen2-VL; ``pixel_values_videos`` of (patches, 3·2·16·16). Its tokens are
``Qwen3VLProcessor.replace_video_token``'s own expansion of the chat template's
``<|vision_start|><|video_pad|><|vision_end|>`` (run on a processor built without its tokenizer, with video metadata
of a clip at 2 frames per second, every frame sampled): per temporal patch ``<{t:.1f} seconds>``, the delimiters and
its ``<|video_pad|>`` tokens; the timestamp text becomes one random text token per piece transformers' Qwen2
pre-tokenizer pattern splits it into (``<``, each digit, ``.``, `` seconds``, ``>``: each a token of Qwen's
vocabulary).

On Gemma 3 the images go through transformers' own ``Gemma3ImageProcessorPil`` at the tower's ``image_size``
(the size its published processor config sets; pan-and-scan off, as by default): ``pixel_values`` of shape
(images, 3, image_size, image_size). Each row holds, per image, what ``Gemma3Processor`` expands its placeholder to:
``"\n\n"``, ``<start_of_image>``, ``mm_tokens_per_image`` image tokens, ``<end_of_image>``, ``"\n\n"``, then
``seq_len`` random text tokens; ``token_type_ids`` marks the image tokens (the model makes its bidirectional mask
over them from it, as from the processor's output).

On Idefics3 and SmolVLM the images go through transformers' own ``Idefics3ImageProcessorPil`` /
``SmolVLMImageProcessorPil`` with splitting on (their default), tiles of the vision ``image_size`` and the longest
edge resized to four tiles (the sizes of every published processor config): ``pixel_values`` of (samples, tiles, 3,
image_size, image_size) and ``pixel_attention_mask``. Each row holds, per image, the text ``Idefics3Processor`` /
``SmolVLMProcessor`` expand its ``<image>`` to (``replace_image_token``), as token ids: per tile
``<fake_token_around_image><row_r_col_c>`` and ``image_seq_len`` image tokens, ``\n`` after each row, then
``\n<fake_token_around_image><global-img>``, the global image's tokens and ``<fake_token_around_image>`` (the two
``\n`` as two tokens, as a tokenizer without a ``\n\n`` merge makes them), then ``seq_len`` random text tokens;
the special tokens get the last ids of the vocabulary other than the image token's.

On Mistral 3 the images go through transformers' own ``PixtralImageProcessorPil`` with ``longest_edge`` the
tower's ``image_size`` (the published processor config's; ``max_pixels`` given: ``⌊√max_pixels⌋``) and the patch
size ``PixtralProcessor`` passes it (``patch_size × spatial_merge_size``): ``pixel_values`` (images, 3, H, W) and
``image_sizes``. Each row holds, per image, what ``PixtralProcessor.replace_image_token`` expands its placeholder
to (that method compiled from the installed module's source: the module imports torchvision): per merged row its
``[IMG]`` tokens and an ``[IMG_BREAK]``, the last one ``[IMG_END]``, then ``seq_len`` random text tokens; the
``[IMG]`` tokens carry no loss.

On LLaVA the images go through transformers' own ``CLIPImageProcessorPil`` at the tower's ``image_size`` (shortest
edge resized to it, then center-cropped to the square, as llava-1.5's published processor config sets):
``pixel_values`` of shape (images, 3, image_size, image_size). Each row holds, per image, the ``<image>`` tokens
``LlavaProcessor.replace_image_token`` expands its placeholder to (its own code, with the published processor's
``patch_size``, ``num_additional_image_tokens`` 1 and the config's ``vision_feature_select_strategy``), then
``seq_len`` random text tokens.

On Llama 3.2 Vision (mllama) the images go through transformers' own ``MllamaImageProcessorPil`` with tiles of the
tower's ``image_size`` (560 in the published processor config) and ``max_image_tiles`` the tower's
``max_num_tiles``: each image resized into its best canvas of at most that many tiles, padded and cut into tiles,
``pixel_values`` of (samples, images, max_num_tiles, 3, tile, tile) with the unused tiles zero, ``aspect_ratio_ids``
and ``aspect_ratio_mask``. Each row holds one ``<|image|>`` token per image (the processor adds no placeholders;
consecutive image tokens before the text, as ``build_string_from_input`` puts them), then ``seq_len`` random text
tokens; ``cross_attention_mask`` is ``MllamaProcessor``'s own (``get_cross_attention_token_mask`` and
``convert_sparse_cross_attention_mask_to_dense``: every image's tiles seen from its token to the row's end).

On LLaVA-NeXT the images (unset ``image_size``: the size of the largest of the config's ``image_grid_pinpoints``)
go through transformers' own ``LlavaNextImageProcessorPil`` with the config's ``image_grid_pinpoints`` and tiles of
the tower's ``image_size`` (``size`` shortest edge and ``crop_size`` that square, as llava-v1.6's published processor
configs set): ``pixel_values`` of (images, tiles + 1, 3, image_size, image_size) and ``image_sizes``. Each row holds,
per image, the ``<image>`` tokens ``LlavaNextProcessor.replace_image_token`` expands its placeholder to (its own code
and ``_get_number_of_features``, with the published processor's ``patch_size``, ``num_additional_image_tokens`` 1
and the config's ``vision_feature_select_strategy``), then ``seq_len`` random text tokens.
"""

from __future__ import annotations

import ast
import dataclasses
import math
import re
import types
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from estimator import Plan

from .build import stack_module

QWEN_VL = ("qwen2_vl", "qwen2_5_vl")
QWEN3_VL = ("qwen3_vl", "qwen3_vl_moe")
IMAGE_MODEL_TYPES = (*QWEN_VL, *QWEN3_VL, "gemma3", "llava", "llava_next", "idefics3", "smolvlm", "mistral3", "mllama")
QWEN3_SIZE = {"shortest_edge": 65536, "longest_edge": 16777216}  # Qwen3-VL's preprocessor_config.json
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


def _image_inputs(config: Mapping[str, Any], plan: Plan, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """``pixel_values`` and ``image_grid_thw`` of the step's images, from ``Qwen2VLImageProcessorPil`` (Qwen3-VL:
    with its published processor config's patch size, bounds and mean/std)."""
    proc = stack_module("transformers.models.qwen2_vl.image_processing_pil_qwen2_vl")
    vision = config.get("vision_config") or {}
    qwen3 = config.get("model_type") in QWEN3_VL
    kwargs: dict[str, Any] = {"patch_size": int(vision.get("patch_size", 16 if qwen3 else 14)),
                              "merge_size": int(vision.get("spatial_merge_size", 2))}  # fmt: skip
    low = QWEN3_SIZE["shortest_edge"] if qwen3 else 56 * 56
    if qwen3:
        kwargs |= {"size": dict(QWEN3_SIZE), "image_mean": [0.5] * 3, "image_std": [0.5] * 3}
    if plan.max_pixels:
        kwargs["max_pixels"] = plan.max_pixels
        kwargs["size"] = {"shortest_edge": low, "longest_edge": plan.max_pixels}
    processor = proc.Qwen2VLImageProcessorPil(**kwargs)
    side = math.isqrt(plan.max_pixels or QWEN3_SIZE["longest_edge"]) if qwen3 else 0
    out = processor(images=_images(plan, gen, side), return_tensors="pt")
    return {"pixel_values": out["pixel_values"], "image_grid_thw": out["image_grid_thw"]}


VIDEO_PROCESSOR = "Qwen2VLVideoProcessor"
VIDEO_DEFAULTS = ("size", "image_mean", "image_std")


@cache
def video_processor_code() -> tuple[dict[str, Callable[..., Any]], dict[str, Any]]:
    """``smart_resize`` and ``Qwen2VLVideoProcessor.patchify`` (by name), and the class's ``size``, ``image_mean``
    and ``image_std``, compiled from the installed transformers' ``video_processing_qwen2_vl.py`` (the module itself
    imports torchvision at its top)."""
    transformers = stack_module("transformers")
    path = Path(transformers.__file__).parent / "models" / "qwen2_vl" / "video_processing_qwen2_vl.py"
    body = ast.parse(path.read_text(encoding="utf-8")).body
    cls = next(n for n in body if isinstance(n, ast.ClassDef) and n.name == VIDEO_PROCESSOR)
    fns: list[ast.stmt] = [n for n in body if isinstance(n, ast.FunctionDef) and n.name == "smart_resize"]
    fns += [n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "patchify"]
    scope: dict[str, Any] = {"math": math, "torch": torch}
    exec(compile(ast.Module(fns, []), str(path), "exec"), scope)
    names = vars(stack_module("transformers.image_utils"))  # OPENAI_CLIP_MEAN / _STD
    defaults = {t.id: eval(compile(ast.Expression(n.value), str(path), "eval"), dict(names))
                for n in cls.body if isinstance(n, ast.Assign) for t in n.targets
                if isinstance(t, ast.Name) and t.id in VIDEO_DEFAULTS}  # fmt: skip
    missing = {"smart_resize", "patchify"} - scope.keys() | set(VIDEO_DEFAULTS) - defaults.keys()
    if missing:
        raise RuntimeError(f"{path} no longer defines {sorted(missing)}: the video batch cannot be built")
    return {k: scope[k] for k in ("smart_resize", "patchify")}, defaults


def _video_inputs(config: Mapping[str, Any], plan: Plan, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """``pixel_values_videos`` and ``video_grid_thw`` of the step's videos (one per sample), made as
    ``Qwen2VLVideoProcessor`` makes them (see the module docstring)."""
    code, defaults = video_processor_code()
    vision = config.get("vision_config") or {}
    patch, merge = int(vision.get("patch_size", 14)), int(vision.get("spatial_merge_size", 2))
    temporal = int(vision.get("temporal_patch_size", 2))
    low, cap = int(defaults["size"]["shortest_edge"]), plan.max_pixels or int(defaults["size"]["longest_edge"])
    if plan.image_size is None:
        height = width = math.isqrt(cap)
    else:
        height, width = plan.image_size
    frames = torch.randint(0, 256, (plan.batch_size, plan.video_frames, 3, height, width), generator=gen,
                           dtype=torch.uint8)  # fmt: skip
    h, w = code["smart_resize"](height, width, factor=patch * merge, min_pixels=low, max_pixels=cap)
    flat = frames.flatten(0, 1).float()
    resized = torch.nn.functional.interpolate(flat, size=(h, w), mode="bicubic", antialias=True, align_corners=False)
    resized = resized.round_().clamp_(0, 255).to(torch.uint8)  # torchvision's resize keeps a uint8 video uint8
    mean = torch.tensor(defaults["image_mean"]).view(1, 3, 1, 1) * 255.0  # rescale fused into normalize
    std = torch.tensor(defaults["image_std"]).view(1, 3, 1, 1) * 255.0
    videos = ((resized.float() - mean) / std).view(plan.batch_size, plan.video_frames, 3, h, w)
    patches, grid_t, grid_h, grid_w = code["patchify"](
        None, videos, patch_size=patch, merge_size=merge, temporal_patch_size=temporal
    )
    return {
        "pixel_values_videos": torch.cat(list(patches), dim=0),
        "video_grid_thw": torch.tensor([[grid_t, grid_h, grid_w]] * plan.batch_size),
    }


QWEN3_VIDEO_SIZE = {"shortest_edge": 4096, "longest_edge": 25165824}  # Qwen3-VL's video_preprocessor_config.json
QWEN3_VIDEO_FPS = 2.0  # the processor's sampling rate: the frames' metadata, which the timestamps follow


def _qwen3_video_inputs(config: Mapping[str, Any], plan: Plan, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """``pixel_values_videos`` and ``video_grid_thw`` of the step's videos (one per sample), made as
    ``Qwen3VLVideoProcessor`` makes them with Qwen3-VL's published video processor config (see the module
    docstring)."""
    proc = stack_module("transformers.models.qwen3_vl.video_processing_qwen3_vl")
    vision = config.get("vision_config") or {}
    patch, merge = int(vision.get("patch_size", 16)), int(vision.get("spatial_merge_size", 2))
    temporal, n = int(vision.get("temporal_patch_size", 2)), plan.video_frames
    low, cap = QWEN3_VIDEO_SIZE["shortest_edge"], plan.max_pixels or QWEN3_VIDEO_SIZE["longest_edge"]
    if plan.image_size is None:  # the frames' even share of the budget
        height = width = math.isqrt(cap // n)
    else:
        height, width = plan.image_size
    frames = torch.randint(0, 256, (plan.batch_size, n, 3, height, width), generator=gen, dtype=torch.uint8)
    h, w = proc.smart_resize(n, height, width, temporal_factor=temporal, factor=patch * merge, min_pixels=low,
                             max_pixels=cap)  # fmt: skip
    flat = frames.flatten(0, 1).float()
    resized = torch.nn.functional.interpolate(flat, size=(h, w), mode="bicubic", antialias=True, align_corners=False)
    resized = resized.round_().clamp_(0, 255).to(torch.uint8)
    videos = ((resized.float() / 255.0 - 0.5) / 0.5).view(plan.batch_size, n, 3, h, w)  # mean and std 0.5
    patches, grid_t, grid_h, grid_w = proc.Qwen3VLVideoProcessor.patchify(
        None, videos, patch_size=patch, merge_size=merge, temporal_patch_size=temporal
    )
    return {
        "pixel_values_videos": torch.cat(list(patches), dim=0),
        "video_grid_thw": torch.tensor([[grid_t, grid_h, grid_w]] * plan.batch_size),
    }


def qwen3_video_text(config: Mapping[str, Any], grid: torch.Tensor, frames: int) -> str:
    """What ``Qwen3VLProcessor`` makes of the chat template's ``<|vision_start|><|video_pad|><|vision_end|>`` for
    one video of ``grid`` (``video_grid_thw``'s row): its ``replace_video_token`` on a processor built without its
    tokenizer, the frames' metadata a clip's at 2 frames per second, every one sampled."""
    processing = stack_module("transformers.models.qwen3_vl.processing_qwen3_vl")
    video_utils = stack_module("transformers.video_utils")
    vision = config.get("vision_config") or {}
    owner = processing.Qwen3VLProcessor.__new__(processing.Qwen3VLProcessor)
    owner.__dict__.update(
        video_token="<|video_pad|>", vision_start_token="<|vision_start|>", vision_end_token="<|vision_end|>",
        video_processor=SimpleNamespace(merge_size=int(vision.get("spatial_merge_size", 2)),
                                        temporal_patch_size=int(vision.get("temporal_patch_size", 2))),
    )  # fmt: skip
    metadata = video_utils.VideoMetadata(
        total_num_frames=frames, fps=QWEN3_VIDEO_FPS, frames_indices=list(range(frames))
    )
    inputs = {"video_grid_thw": grid.view(1, 3), "video_metadata": [metadata]}
    return "<|vision_start|>" + str(owner.replace_video_token(inputs, 0)) + "<|vision_end|>"


def qwen3_video_ids(text: str, ids: Mapping[str, int], words: Callable[[int], list[int]]) -> list[int]:
    """The ids of a video's expanded text: each special token of ``ids`` its id, the timestamp text one token of
    ``words`` per piece of transformers' Qwen2 pre-tokenizer pattern."""
    pattern = stack_module("regex").compile(
        stack_module("transformers.models.qwen2.tokenization_qwen2").PRETOKENIZE_REGEX
    )
    out: list[int] = []
    for piece in re.split("(" + "|".join(re.escape(t) for t in ids) + ")", text):
        if piece in ids:
            out.append(ids[piece])
        elif piece:
            out += words(len(pattern.findall(piece)))
    return out


def vision_batch(config: Mapping[str, Any], plan: Plan, device: torch.device, seed: int) -> dict[str, torch.Tensor]:
    """The batch of ``plan`` with its images and video (see the module docstring)."""
    model_type = config.get("model_type")
    if not takes_images(config) or (plan.video_frames and model_type not in (*QWEN_VL, *QWEN3_VL)):
        raise ValueError(
            f"image batches are built for {', '.join(IMAGE_MODEL_TYPES)} only, video batches for "
            f"{', '.join((*QWEN_VL, *QWEN3_VL))}, not {model_type!r}"
        )
    if model_type == "gemma3":
        return _gemma3_batch(config, plan, device, seed)
    if model_type in ("idefics3", "smolvlm"):
        return _idefics3_batch(config, plan, device, seed)
    if model_type == "mistral3":
        return _mistral3_batch(config, plan, device, seed)
    if model_type == "llava":
        return _llava_batch(config, plan, device, seed)
    if model_type == "mllama":
        return _mllama_batch(config, plan, device, seed)
    if model_type == "llava_next":
        return _llava_next_batch(config, plan, device, seed)
    text = config.get("text_config") or config
    merge = int((config.get("vision_config") or {}).get("spatial_merge_size", 2))
    gen = torch.Generator().manual_seed(seed)
    pixels = _image_inputs(config, plan, gen) if plan.images_per_sample else {}
    qwen3 = model_type in QWEN3_VL
    if plan.video_frames:
        pixels |= _qwen3_video_inputs(config, plan, gen) if qwen3 else _video_inputs(config, plan, gen)
    image_id = int(config.get("image_token_id", 151655))
    video_id = int(config.get("video_token_id", 151656))
    start_id = int(config.get("vision_start_token_id", 151652))
    end_id = int(config.get("vision_end_token_id", 151653))
    special = (image_id, video_id, start_id, end_id)
    vocab = int(text.get("vocab_size", config.get("vocab_size", 0)))

    def words(n: int) -> list[int]:
        drawn = torch.randint(0, vocab, (n,), generator=gen)
        drawn[torch.isin(drawn, torch.tensor(special))] = 0
        return list(drawn.tolist())

    names = {"<|vision_start|>": start_id, "<|vision_end|>": end_id, "<|video_pad|>": video_id}
    rows, types = [], []
    for b in range(plan.batch_size):
        ids: list[int] = []
        spans = [(image_id, pixels["image_grid_thw"][b * plan.images_per_sample + i])
                 for i in range(plan.images_per_sample)]  # fmt: skip
        if plan.video_frames:
            spans.append((video_id, pixels["video_grid_thw"][b]))
        for token, grid in spans:
            if token == video_id and qwen3:
                ids += qwen3_video_ids(qwen3_video_text(config, grid, plan.video_frames), names, words)
                continue
            t, h, w = (int(x) for x in grid)
            ids += [start_id] + [token] * (t * h * w // (merge * merge)) + [end_id]
        rows.append(ids + words(plan.seq_len))
        types.append([1 if i == image_id else 2 if i == video_id else 0 for i in rows[-1]])
    return _batch(rows, (image_id, video_id), device, mm_token_type_ids=torch.tensor(types), **pixels)


def _batch(
    rows: list[list[int]], no_loss: tuple[int, ...], device: torch.device, **inputs: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The step's batch on ``device``: the rows' ids, their labels (the ids with the image and video tokens of
    ``no_loss`` set to -100, as TRL's vision collator does) and the model's other ``inputs``."""
    input_ids = torch.tensor(rows)
    labels = input_ids.clone()
    labels[torch.isin(input_ids, torch.tensor(no_loss))] = -100
    return {k: v.to(device) for k, v in ({"input_ids": input_ids, "labels": labels} | inputs).items()}


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
    return _batch(rows, (image_id,), device, token_type_ids=torch.tensor(types), pixel_values=out["pixel_values"])


def _idefics3_batch(config: Mapping[str, Any], plan: Plan, device: torch.device, seed: int) -> dict[str, torch.Tensor]:
    """Idefics3's and SmolVLM's batch (see the module docstring); the defaults are their configs'."""
    name = "smolvlm" if config.get("model_type") == "smolvlm" else "idefics3"
    proc = stack_module(f"transformers.models.{name}.image_processing_pil_{name}")
    cls = proc.SmolVLMImageProcessorPil if name == "smolvlm" else proc.Idefics3ImageProcessorPil
    vision = config.get("vision_config") or {}
    tile, patch = int(vision.get("image_size", 224)), int(vision.get("patch_size", 32))
    scale = int(config.get("scale_factor", 2))
    processor = cls(size={"longest_edge": 4 * tile}, max_image_size={"longest_edge": tile}, do_image_splitting=True)
    gen = torch.Generator().manual_seed(seed)
    images = _images(plan, gen, tile)
    per = plan.images_per_sample
    nested = [images[b * per : (b + 1) * per] for b in range(plan.batch_size)]
    out = processor(images=nested, return_tensors="pt", return_row_col_info=True)
    seq = (tile // patch) ** 2 // scale**2
    image_id = int(config.get("image_token_id", 128257))
    vocab = int((config.get("text_config") or {}).get("vocab_size", 128259))
    free = [i for i in range(vocab - 1, -1, -1) if i != image_id][:39]
    row_col, fake, glob, newline = free[:36], free[36], free[37], free[38]
    rows = []
    for b in range(plan.batch_size):
        ids: list[int] = []
        for i in range(per):
            n_rows, n_cols = int(out["rows"][b][i]), int(out["cols"][b][i])
            for r in range(n_rows):
                for c in range(n_cols):
                    ids += [fake, row_col[r * 6 + c]] + [image_id] * seq
                ids.append(newline)
            ids += ([newline] if n_rows else []) + [fake, glob] + [image_id] * seq + [fake]
        words = torch.randint(0, vocab, (plan.seq_len,), generator=gen)
        words[words == image_id] = 0
        rows.append(ids + words.tolist())
    return _batch(rows, (image_id,), device, pixel_values=out["pixel_values"],
                  pixel_attention_mask=out["pixel_attention_mask"])  # fmt: skip


PIXTRAL_TOKENS = {"[IMG]": 10, "[IMG_BREAK]": 12, "[IMG_END]": 13}
"""The image tokens' ids in the published Mistral 3 / Pixtral tokenizers (``image_token_index`` overrides [IMG])."""


@cache
def pixtral_replace_image_token() -> Callable[..., str]:
    """``PixtralProcessor.replace_image_token``, compiled from the installed ``processing_pixtral.py`` (the module
    imports torchvision at its top, through its image processor)."""
    transformers = stack_module("transformers")
    path = Path(transformers.__file__).parent / "models" / "pixtral" / "processing_pixtral.py"
    body = ast.parse(path.read_text(encoding="utf-8")).body
    cls = next(n for n in body if isinstance(n, ast.ClassDef) and n.name == "PixtralProcessor")
    fns: list[ast.stmt] = [n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "replace_image_token"]
    if not fns:
        raise RuntimeError(f"{path} no longer defines PixtralProcessor.replace_image_token")
    scope: dict[str, Any] = {}
    exec(compile(ast.Module(fns, []), str(path), "exec"), scope)
    fn: Callable[..., str] = scope["replace_image_token"]
    return fn


def pixtral_image_ids(text: str, image_id: int) -> list[int]:
    """The ids of an expanded image placeholder: each special token is one token of the tokenizer."""
    ids = dict(PIXTRAL_TOKENS, **{"[IMG]": image_id})
    pieces = re.findall(r"\[[A-Z_]+\]", text)
    return [ids[p] for p in pieces]


def _mistral3_batch(config: Mapping[str, Any], plan: Plan, device: torch.device, seed: int) -> dict[str, torch.Tensor]:
    """Mistral 3's batch (see the module docstring); the defaults are ``Mistral3Config``'s."""
    proc = stack_module("transformers.models.pixtral.image_processing_pil_pixtral")
    vision = config.get("vision_config") or {}
    patch, merge = int(vision.get("patch_size", 14)), int(config.get("spatial_merge_size", 2))
    edge = math.isqrt(plan.max_pixels) if plan.max_pixels else int(vision.get("image_size", 1540))
    processor = proc.PixtralImageProcessorPil(size={"longest_edge": edge})
    gen = torch.Generator().manual_seed(seed)
    step = {"height": patch * merge, "width": patch * merge}
    out = processor(images=_images(plan, gen, edge), patch_size=step, return_tensors="pt")
    expand = pixtral_replace_image_token()
    fields = {"patch_size": patch, "spatial_merge_size": merge, "image_token": "[IMG]",
              "image_break_token": "[IMG_BREAK]", "image_end_token": "[IMG_END]"}  # fmt: skip
    owner = SimpleNamespace(**fields)  # the processor's attributes the method reads
    image_id = int(config.get("image_token_index", config.get("image_token_id", 10)))
    vocab = int((config.get("text_config") or {}).get("vocab_size", 131072))
    specials = torch.tensor([image_id, *PIXTRAL_TOKENS.values()])
    rows = []
    for b in range(plan.batch_size):
        ids: list[int] = []
        for i in range(plan.images_per_sample):
            ids += pixtral_image_ids(expand(owner, out, b * plan.images_per_sample + i), image_id)
        words = torch.randint(0, vocab, (plan.seq_len,), generator=gen)
        words[torch.isin(words, specials)] = 0
        rows.append(ids + words.tolist())
    return _batch(rows, (image_id,), device, pixel_values=out["pixel_values"], image_sizes=out["image_sizes"])


def llava_image_tokens(config: Mapping[str, Any], pixel_values: torch.Tensor, index: int) -> int:
    """``<image>`` tokens ``LlavaProcessor`` expands the placeholder of image ``index`` of ``pixel_values`` to (its
    ``replace_image_token``, run with llava-1.5's processor settings)."""
    processing = stack_module("transformers.models.llava.processing_llava")
    vision = config.get("vision_config")
    patch = int(vision.get("patch_size", 32)) if isinstance(vision, Mapping) else 14  # as the image side's default
    settings = types.SimpleNamespace(
        patch_size=patch, num_additional_image_tokens=1, image_token="<image>",
        vision_feature_select_strategy=config.get("vision_feature_select_strategy", "default"),
    )  # fmt: skip
    text = processing.LlavaProcessor.replace_image_token(settings, {"pixel_values": pixel_values}, index)
    return int(text.count("<image>"))


def _llava_batch(config: Mapping[str, Any], plan: Plan, device: torch.device, seed: int) -> dict[str, torch.Tensor]:
    """LLaVA's batch (see the module docstring); the defaults are ``LlavaConfig``'s and ``CLIPVisionConfig``'s."""
    proc = stack_module("transformers.models.clip.image_processing_pil_clip")
    vision = config.get("vision_config")
    side = int(vision.get("image_size", 224)) if isinstance(vision, Mapping) else 336  # LlavaConfig's CLIP-L/14-336
    processor = proc.CLIPImageProcessorPil(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
    gen = torch.Generator().manual_seed(seed)
    pixels = processor(images=_images(plan, gen, side), return_tensors="pt")["pixel_values"]
    rows, image_id = _llava_rows(config, plan, gen, lambda i: llava_image_tokens(config, pixels, i))
    return _batch(rows, (image_id,), device, pixel_values=pixels)


def _llava_rows(
    config: Mapping[str, Any], plan: Plan, gen: torch.Generator, tokens: Callable[[int], int]
) -> tuple[list[list[int]], int]:
    """LLaVA's and LLaVA-NeXT's rows: per image its ``tokens(index)`` ``<image>`` tokens, then ``seq_len`` random
    text tokens (no image or pad id among them); and the image token's id."""
    image_id = int(config.get("image_token_index", config.get("image_token_id", 32000)))
    text = config.get("text_config") or {}
    vocab = int(text.get("vocab_size", 32000))
    pad = int(text.get("pad_token_id", config.get("pad_token_id", 0)) or 0)
    rows = []
    for b in range(plan.batch_size):
        ids: list[int] = []
        for i in range(plan.images_per_sample):
            ids += [image_id] * tokens(b * plan.images_per_sample + i)
        words = torch.randint(0, vocab, (plan.seq_len,), generator=gen)
        words[(words == image_id) | (words == pad)] = 0
        rows.append(ids + words.tolist())
    return rows, image_id


def _mllama_batch(config: Mapping[str, Any], plan: Plan, device: torch.device, seed: int) -> dict[str, torch.Tensor]:
    """Llama 3.2 Vision's batch (see the module docstring); the defaults are ``MllamaConfig``'s."""
    proc = stack_module("transformers.models.mllama.image_processing_pil_mllama")
    processing = stack_module("transformers.models.mllama.processing_mllama")
    vision = config.get("vision_config") or {}
    tile, tiles = int(vision.get("image_size", 448)), int(vision.get("max_num_tiles", 4))
    processor = proc.MllamaImageProcessorPil(size={"height": tile, "width": tile}, max_image_tiles=tiles)
    gen = torch.Generator().manual_seed(seed)
    images = _images(plan, gen, tile)
    per = plan.images_per_sample
    out = processor(images=[images[b * per : (b + 1) * per] for b in range(plan.batch_size)], return_tensors="pt")
    image_id = int(config.get("image_token_index", config.get("image_token_id", 128256)))
    vocab = int((config.get("text_config") or {}).get("vocab_size", 128256))
    rows = []
    for _ in range(plan.batch_size):
        words = torch.randint(0, vocab, (plan.seq_len,), generator=gen)
        words[words == image_id] = 0
        rows.append([image_id] * per + words.tolist())
    token_masks = [processing.get_cross_attention_token_mask(row, image_id) for row in rows]
    mask = processing.convert_sparse_cross_attention_mask_to_dense(
        token_masks, num_tiles=out["num_tiles"], max_num_tiles=tiles, length=len(rows[0])
    )
    return _batch(rows, (image_id,), device, pixel_values=out["pixel_values"], aspect_ratio_ids=out["aspect_ratio_ids"],
                  aspect_ratio_mask=out["aspect_ratio_mask"], cross_attention_mask=torch.from_numpy(mask))  # fmt: skip


LLAVA_NEXT_PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
"""``LlavaNextConfig``'s ``image_grid_pinpoints`` when the config has none."""


def llava_next_image_tokens(config: Mapping[str, Any], out: Mapping[str, Any], index: int) -> int:
    """``<image>`` tokens ``LlavaNextProcessor`` expands the placeholder of image ``index`` of the image processor's
    ``out`` to (its ``replace_image_token`` and ``_get_number_of_features``, run with llava-v1.6's processor
    settings on a processor built without its tokenizer)."""
    processing = stack_module("transformers.models.llava_next.processing_llava_next")
    vision = config.get("vision_config")
    patch = int(vision.get("patch_size", 32)) if isinstance(vision, Mapping) else 14  # as the image side's default
    owner = processing.LlavaNextProcessor.__new__(processing.LlavaNextProcessor)
    owner.__dict__.update(
        patch_size=patch, num_additional_image_tokens=1, image_token="<image>",
        vision_feature_select_strategy=config.get("vision_feature_select_strategy", "default"),
        image_processor=SimpleNamespace(image_grid_pinpoints=config.get("image_grid_pinpoints", LLAVA_NEXT_PINPOINTS)),
    )  # fmt: skip
    return int(owner.replace_image_token(out, index).count("<image>"))


def _llava_next_batch(
    config: Mapping[str, Any], plan: Plan, device: torch.device, seed: int
) -> dict[str, torch.Tensor]:
    """LLaVA-NeXT's batch (see the module docstring); the defaults are ``LlavaNextConfig``'s and
    ``CLIPVisionConfig``'s."""
    proc = stack_module("transformers.models.llava_next.image_processing_pil_llava_next")
    vision = config.get("vision_config")
    side = int(vision.get("image_size", 224)) if isinstance(vision, Mapping) else 336  # LlavaConfig's CLIP-L/14-336
    pinpoints = config.get("image_grid_pinpoints", LLAVA_NEXT_PINPOINTS)
    processor = proc.LlavaNextImageProcessorPil(
        size={"shortest_edge": side}, crop_size={"height": side, "width": side}, image_grid_pinpoints=pinpoints
    )
    gen = torch.Generator().manual_seed(seed)
    if plan.image_size is None:  # the processor's largest: the pinpoint of most pixels
        height, width = max(pinpoints, key=lambda p: p[0] * p[1])
        plan = dataclasses.replace(plan, image_size=(height, width))
    out = processor(images=_images(plan, gen), return_tensors="pt")
    rows, image_id = _llava_rows(config, plan, gen, lambda i: llava_next_image_tokens(config, out, i))
    return _batch(rows, (image_id,), device, pixel_values=out["pixel_values"], image_sizes=out["image_sizes"])
