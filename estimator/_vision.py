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
``spatial_merge_size²`` (4) of them, between ``<|vision_start|>`` and ``<|vision_end|>``.

Video tokens (``Qwen2VLVideoProcessor``, Qwen2.5-VL's too): every frame of a video is resized by the same
``smart_resize`` under the video processor's own bounds (``size``: 128·28² to 28²·768 pixels by default, so a small
frame is enlarged), the frames are padded to a multiple of ``temporal_patch_size`` (2) by repeating the last one,
and each pair of frames makes one temporal patch: ``grid_t · (h/14)·(w/14)`` patches of the same 3·2·14² values as an
image's (``pixel_values_videos``, fp32), ``grid_t = ⌈frames / 2⌉``. The model runs them through the same tower and
merger (``get_video_features``, a second run of ``visual`` after the images'), and the language model gets one
``<|video_pad|>`` token per merged group, between the same two delimiters (``replace_video_token``). transformers
5.24's default keeps the per-frame cap alone (``cap_pixels_per_frame`` unset: no total-video budget) and samples no
frames (``do_sample_frames=False``): every frame given is a frame seen.

Qwen3-VL (``modeling_qwen3_vl.py``): its tower (16² patches, a learned position grid interpolated per image, GELU-tanh
blocks, the merger and the DeepStack mergers), its image tokens (the same ``smart_resize`` to multiples of 32), its
video tokens (``Qwen3VLVideoProcessor``'s own resize under a budget for the whole video, a textual timestamp per
temporal patch) and its activations: ``estimator._vision_qwen3``.

Gemma 3 (``modeling_gemma3.py`` and ``siglip/modeling_siglip.py``): a SigLIP vision model (``SiglipVisionModel``,
module ``model.vision_tower``): a Conv2d patch embedding with bias, a learned position embedding (one per patch of
the fixed ``image_size``), ``num_hidden_layers`` pre-norm blocks (LayerNorm with bias, separate ``q_proj``/
``k_proj``/``v_proj``/``out_proj`` and a ``fc1``/``fc2`` GELU-tanh MLP, every linear with bias), ``post_layernorm``
and, only with ``vision_use_head`` (off in every Gemma 3 config), an attention-pooling head; then
``Gemma3MultiModalProjector`` (``model.multi_modal_projector``): an average pool from ``(image_size/patch)²`` patches
to ``mm_tokens_per_image`` tokens, an RMSNorm (``mm_soft_emb_norm``) and a bare ``mm_input_projection_weight``
(vision width × text width, applied with ``torch.matmul``: no ``nn.Linear``). Image tokens (``Gemma3Processor``,
pan-and-scan off by default): every image is resized to ``image_size`` square; its placeholder becomes
``"\n\n<start_of_image>" + mm_tokens_per_image × <image_soft_token> + "<end_of_image>\n\n"``, 4 tokens more than the
pooled ones (each ``\n\n`` is one token of Gemma's vocabulary; one next to a newline of the text may merge with it
into one token, so the count is exact or one or two above).

LLaVA 1.5 (``modeling_llava.py`` and ``clip/modeling_clip.py``): a CLIP vision model (``CLIPVisionModel``, module
``model.vision_tower``): a bias-free Conv2d patch embedding, a class embedding prepended to the patches and a
learned position embedding over both, ``pre_layrnorm``, ``num_hidden_layers`` encoder layers (SigLIP's layer with a
``quick_gelu`` MLP) and ``post_layernorm`` (on the class token only, for the pooled output LLaVA discards); every
layer runs, ``vision_feature_layer`` (-2 by default) only picks the hidden state the projector reads
(``select_hidden_states``: the others are not kept). ``LlavaMultiModalProjector``: ``linear_1``, the GELU,
``linear_2``. Image tokens (``LlavaProcessor`` over ``CLIPImageProcessor``): every image is resized (shortest edge)
and center-cropped to the tower's ``image_size`` square; the tower sees ``(image_size/patch)² + 1`` positions (the
class token), and each ``<image>`` placeholder becomes ``(image_size/patch)² + num_additional_image_tokens (1)``
image tokens, less the class token with ``vision_feature_select_strategy`` "default" (LLaVA 1.5: 336/14 → 576),
with no delimiters.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from ._errors import ConfigError

QWEN_VL = ("qwen2_vl", "qwen2_5_vl")
QWEN3_VL = ("qwen3_vl", "qwen3_vl_moe")
SIGLIP_VL = ("gemma3",)
CLIP_VL = ("llava", "llava_next")
IDEFICS_VL = ("idefics3", "smolvlm")
PIXTRAL_VL = ("mistral3",)
MLLAMA_VL = ("mllama",)
VISION_MODEL_TYPES = (*QWEN_VL, *QWEN3_VL, *SIGLIP_VL, *CLIP_VL, *IDEFICS_VL, *PIXTRAL_VL, *MLLAMA_VL)
"""Model types whose image inputs are modelled."""
VIDEO_MODEL_TYPES = (*QWEN_VL, *QWEN3_VL)
"""Model types whose video inputs are modelled (those with a video processor)."""
GEMMA3_IMAGE_EXTRA_TOKENS = 4  # "\n\n", <start_of_image>, <end_of_image>, "\n\n" around the pooled tokens
MIN_PIXELS = 56 * 56
MAX_PIXELS = 28 * 28 * 1280
VIDEO_MIN_PIXELS = 128 * 28 * 28  # Qwen2VLVideoProcessor.size["shortest_edge"]
VIDEO_MAX_PIXELS = 28 * 28 * 768  # Qwen2VLVideoProcessor.size["longest_edge"]


@dataclass(frozen=True)
class VisionTower:
    """A vision encoder's sizes (``vision_config`` field names): Qwen2-VL / Qwen2.5-VL's, or Gemma 3's SigLIP
    (``kind``)."""

    model_type: str  # the model's: qwen2_vl | qwen2_5_vl | qwen3_vl | gemma3 | llava | ...
    depth: int  # blocks (SigLIP: num_hidden_layers)
    embed_dim: int  # the blocks' width (Qwen2.5-VL and SigLIP call it hidden_size)
    num_heads: int
    mlp_width: int  # Qwen2-VL: embed_dim · mlp_ratio; Qwen2.5-VL and SigLIP: intermediate_size
    out_hidden_size: int  # the merger's (projector's) output: the language model's hidden size
    patch_size: int = 14
    temporal_patch_size: int = 2  # SigLIP: 1 (a Conv2d)
    in_channels: int = 3
    spatial_merge_size: int = 2  # SigLIP: the projector's pooling kernel side
    image_size: int = 0  # SigLIP, CLIP: the fixed square input side (0: dynamic resolution, Qwen)
    mm_tokens_per_image: int = 0  # SigLIP: pooled tokens per image
    use_head: bool = False  # SigLIP: vision_use_head (an attention-pooling head Gemma 3 never runs)
    feature_layers: int = 1  # CLIP: hidden states LLaVA's projector concatenates (a list vision_feature_layer)
    projector_bias: bool = True  # CLIP: LLaVA's multimodal_projector_bias
    keep_class: bool = False  # CLIP: vision_feature_select_strategy "full" hands the class token on too
    refusal: str = ""  # CLIP: why its images cannot be counted ("" when they can)
    idle_tail: bool = False  # CLIP: vision_feature_layer picks a hidden state before the last layer's output
    global_depth: int = 0  # Mllama: the gated global transformer's layers (num_global_layers)
    max_tiles: int = 0  # Mllama: max_num_tiles
    aspect_ratios: int = 0  # Mllama: the supported tile grids (the tile embeddings have one row more)
    projector_in: int = 0  # Mllama: vision_output_dim, the projector's input width
    position_embeddings: int = 0  # Qwen3-VL: num_position_embeddings (the learned grid, interpolated per image)
    deepstack: tuple[int, ...] = ()  # Qwen3-VL: deepstack_visual_indexes (one merger each)
    grid_pinpoints: tuple[tuple[int, int], ...] = ()  # LLaVA-NeXT: image_grid_pinpoints, (height, width) each

    @property
    def kind(self) -> str:
        """``qwen`` (fused qkv, 2-D rope, merger), ``siglip`` (q/k/v/out_proj, position embeddings, pooling
        projector: Gemma 3) or ``clip`` (the same blocks, a class embedding and pre-norm, a two-linear projector:
        LLaVA)."""
        if self.model_type in SIGLIP_VL:
            return "siglip"
        if self.model_type in IDEFICS_VL:
            return "idefics3"
        if self.model_type in PIXTRAL_VL:
            return "pixtral"
        if self.model_type in MLLAMA_VL:
            return "mllama"
        if self.model_type in QWEN3_VL:
            return "qwen3"
        return "clip" if self.model_type in CLIP_VL else "qwen"

    @property
    def gated(self) -> bool:
        """Qwen2.5-VL's blocks have a gated MLP and RMSNorm; Qwen2-VL's and SigLIP's a GELU MLP and LayerNorm."""
        return self.model_type == "qwen2_5_vl"

    @property
    def module(self) -> str:
        """The tower's module path in the model."""
        if self.kind in ("idefics3", "mllama"):
            return "model.vision_model"
        return "model.visual" if self.kind in ("qwen", "qwen3") else "model.vision_tower"

    @property
    def text_module(self) -> str:
        """The language model's module path (Idefics3 / SmolVLM: ``model.text_model``)."""
        return "model.text_model" if self.kind == "idefics3" else "model.language_model"

    @property
    def prefixes(self) -> tuple[str, ...]:
        """Module-name prefixes of everything that runs only on images (the tower and its merger or projector)."""
        if self.kind == "idefics3":
            return ("model.vision_model.", "model.connector.")
        if self.kind == "mllama":  # its projector is one Linear, module model.multi_modal_projector itself
            return ("model.vision_model.", "model.multi_modal_projector")
        if self.kind in ("qwen", "qwen3"):
            return ("model.visual.",)
        return ("model.vision_tower.", "model.multi_modal_projector.")

    @property
    def patch_features(self) -> int:
        """Values per patch: Qwen's flattened ``pixel_values`` rows, 3·2·14·14 = 1176; SigLIP's 3·14·14."""
        return self.in_channels * self.temporal_patch_size * self.patch_size**2

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def patches_per_side(self) -> int:
        """SigLIP: patches along a side of the fixed input (the position embedding's grid)."""
        return self.image_size // self.patch_size


def _int(vc: Mapping[str, Any], name: str, default: int, where: str = "vision_config.") -> int:
    value = vc.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value > MAX_VISION_SIZE:
        raise ConfigError(f"{where}{name} must be a positive integer up to {MAX_VISION_SIZE}, got {value!r}")
    return value


MAX_VISION_SIZE = 1 << 20
"""Bound of any vision_config size (published towers are at most a few thousand wide, a few dozen deep)."""


def vision_tower(config: Mapping[str, Any]) -> VisionTower:
    """The tower of a Qwen2-VL / Qwen2.5-VL or Gemma 3 config (its ``vision_config``, transformers 5.24's defaults
    for absent fields). The merger's output width is the config's own (Qwen2-VL: ``vision_config.hidden_size``,
    Qwen2.5-VL: ``out_hidden_size``, Gemma 3: the text model's ``hidden_size``), equal to the language model's in
    every published model."""
    model_type = str(config.get("model_type"))
    raw = config.get("vision_config")
    vc: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    if model_type in SIGLIP_VL:
        return _siglip(config, vc, model_type)
    if model_type in CLIP_VL:
        return _clip(config, vc, model_type)
    if model_type in IDEFICS_VL:
        from ._vision_idefics import idefics_tower

        return idefics_tower(config, vc, model_type)
    if model_type in MLLAMA_VL:
        from ._vision_mllama import mllama_tower

        return mllama_tower(config)
    if model_type in QWEN3_VL:
        from ._vision_qwen3 import qwen3_tower

        return qwen3_tower(config, vc, model_type)
    if model_type == "qwen2_5_vl":
        embed = _int(vc, "hidden_size", 3584)
        mlp = _int(vc, "intermediate_size", 3420)
        out = _int(vc, "out_hidden_size", 3584)
    else:
        embed = _int(vc, "embed_dim", 1280)
        mlp = embed * _int(vc, "mlp_ratio", 4)
        out = _int(vc, "hidden_size", 3584)
    heads = _int(vc, "num_heads", 16)
    _check_heads(embed, heads)
    return VisionTower(
        model_type=model_type, depth=_int(vc, "depth", 32), embed_dim=embed, num_heads=heads, mlp_width=mlp,
        out_hidden_size=out, patch_size=_int(vc, "patch_size", 14),
        temporal_patch_size=_int(vc, "temporal_patch_size", 2),
        in_channels=_int(vc, "in_channels", _int(vc, "in_chans", 3)),
        spatial_merge_size=_int(vc, "spatial_merge_size", 2),
    )  # fmt: skip


def _check_heads(embed: int, heads: int) -> None:
    if embed % heads:
        raise ConfigError(f"the vision tower's width ({embed}) must be a multiple of vision_config.num_heads ({heads})")


def _width_and_heads(vc: Mapping[str, Any], width: int, heads: int) -> tuple[int, int]:
    """A transformers-style vision_config's ``hidden_size`` and ``num_attention_heads`` (``width`` and ``heads`` when
    absent: the config class's defaults), the width a multiple of the heads."""
    embed, n = _int(vc, "hidden_size", width), _int(vc, "num_attention_heads", heads)
    _check_heads(embed, n)
    return embed, n


def _text_width(config: Mapping[str, Any], default: int) -> int:
    """The language model's width (``text_config.hidden_size``; ``default`` when absent): the projector's output."""
    text = config.get("text_config")
    return _int(text if isinstance(text, Mapping) else {}, "hidden_size", default, "text_config.")


def _projector_inputs(config: Mapping[str, Any], layer_default: int, bias_default: bool) -> tuple[Any, int, bool]:
    """LLaVA-style projectors (LLaVA, Mistral 3): ``vision_feature_layer`` as given, how many hidden states it
    concatenates (a list: each of them), and ``multimodal_projector_bias`` (the config class's defaults when absent)."""
    layer = config.get("vision_feature_layer", layer_default)
    layers = len(layer) if isinstance(layer, list) and layer else 1
    bias = config.get("multimodal_projector_bias", bias_default)
    if not isinstance(bias, bool):
        raise ConfigError(f"multimodal_projector_bias must be true or false, got {bias!r}")
    return layer, layers, bias


def _siglip(config: Mapping[str, Any], vc: Mapping[str, Any], model_type: str) -> VisionTower:
    """Gemma 3's SigLIP tower (``SiglipVisionConfig``'s defaults for absent fields) and its projector's pooling
    (``Gemma3MultiModalProjector``: ``image_size // patch_size`` patches a side pooled by a kernel of that over
    ``isqrt(mm_tokens_per_image)``; a config whose pooling cannot make those tokens still builds, and is refused
    images: ``pooling_error``)."""
    embed, heads = _width_and_heads(vc, 768, 12)
    image, patch = _int(vc, "image_size", 224), _int(vc, "patch_size", 16)
    tokens = _int(config, "mm_tokens_per_image", 256, "")
    side, per_side = image // patch, math.isqrt(tokens)
    use_head = vc.get("vision_use_head", True)
    if not isinstance(use_head, bool):
        raise ConfigError(f"vision_config.vision_use_head must be true or false, got {use_head!r}")
    return VisionTower(
        model_type=model_type, depth=_int(vc, "num_hidden_layers", 12), embed_dim=embed, num_heads=heads,
        mlp_width=_int(vc, "intermediate_size", 3072), out_hidden_size=_text_width(config, 2304),
        patch_size=patch, temporal_patch_size=1, in_channels=_int(vc, "num_channels", 3),
        spatial_merge_size=side // per_side, image_size=image, mm_tokens_per_image=tokens, use_head=use_head,
    )  # fmt: skip


LLAVA_CLIP = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
              "image_size": 336, "patch_size": 14}  # fmt: skip
"""``LlavaConfig``'s vision_config when it has none (CLIP ViT-L/14 at 336²)."""
CLIP_DEFAULTS = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
                 "image_size": 224, "patch_size": 32}  # fmt: skip
"""``CLIPVisionConfig``'s defaults: the gaps of a vision_config given (ViT-B/32 at 224²), none from LlavaConfig's."""


def _clip(config: Mapping[str, Any], vc: Mapping[str, Any], model_type: str) -> VisionTower:
    """LLaVA's CLIP tower (without a vision_config ``LlavaConfig``'s, ``LLAVA_CLIP``; a given one's gaps
    ``CLIPVisionConfig``'s, ``CLIP_DEFAULTS``) and projector (``LlavaMultiModalProjector``: the text model's width
    out, ``vision_config.hidden_size`` times the feature layers in); LLaVA-NeXT's the same, and its
    ``image_grid_pinpoints``."""
    default = CLIP_DEFAULTS if isinstance(config.get("vision_config"), Mapping) else LLAVA_CLIP
    embed, heads = _width_and_heads(vc, default["hidden_size"], default["num_attention_heads"])
    layer, layers, bias = _projector_inputs(config, -2, True)
    depth = _int(vc, "num_hidden_layers", default["num_hidden_layers"])
    tower = VisionTower(
        model_type=model_type, depth=depth, embed_dim=embed, num_heads=heads,
        mlp_width=_int(vc, "intermediate_size", default["intermediate_size"]),
        out_hidden_size=_text_width(config, 4096),
        patch_size=_int(vc, "patch_size", default["patch_size"]), temporal_patch_size=1,
        in_channels=_int(vc, "num_channels", 3), spatial_merge_size=1,
        image_size=_int(vc, "image_size", default["image_size"]), feature_layers=layers, projector_bias=bias,
        keep_class=config.get("vision_feature_select_strategy", "default") != "default",
        refusal=_clip_refusal(config, vc, depth),
        idle_tail=isinstance(layer, int) and not isinstance(layer, bool) and layer % (depth + 1) != depth,
        grid_pinpoints=_pinpoints(config) if model_type == "llava_next" else (),
    )  # fmt: skip
    if model_type == "llava_next" and not tower.refusal:
        from ._vision_clip import next_refusal

        return replace(tower, refusal=next_refusal(tower))
    return tower


LLAVA_NEXT_PINPOINTS = ((336, 672), (672, 336), (672, 672), (1008, 336), (336, 1008))
"""``LlavaNextConfig``'s ``image_grid_pinpoints`` when it has none."""


def _pinpoints(config: Mapping[str, Any]) -> tuple[tuple[int, int], ...]:
    """LLaVA-NeXT's ``image_grid_pinpoints``: the (height, width) resolutions an image may be resized and padded to
    (``LlavaNextConfig``'s default when absent)."""
    raw = config.get("image_grid_pinpoints")
    if raw is None:
        return LLAVA_NEXT_PINPOINTS
    pairs: list[Any] = raw if isinstance(raw, list) and raw else [None]
    out = []
    for pair in pairs:
        ok = isinstance(pair, list) and len(pair) == 2
        if not ok or any(isinstance(v, bool) or not isinstance(v, int) or not 0 < v <= MAX_VISION_SIZE for v in pair):
            raise ConfigError(
                f"image_grid_pinpoints must be a non-empty list of [height, width] pairs of positive integers up to "
                f"{MAX_VISION_SIZE}, got {raw!r}"
            )
        out.append((pair[0], pair[1]))
    return tuple(out)


def _clip_refusal(config: Mapping[str, Any], vc: Mapping[str, Any], depth: int) -> str:
    """Why a LLaVA config's images cannot be counted ("" when they can): the tower's activations are derived for
    ``quick_gelu`` (CLIP's), the projector's for ``gelu`` (LLaVA's), one feature layer (a list is concatenated into
    a copy not counted) within the tower's hidden states."""
    act, projector_act = vc.get("hidden_act", "quick_gelu"), config.get("projector_hidden_act", "gelu")
    layer = config.get("vision_feature_layer", -2)
    if act != "quick_gelu":
        return f"the vision tower's hidden_act {act!r} is not modelled (CLIP's quick_gelu is)"
    if projector_act != "gelu":
        return f"the projector's projector_hidden_act {projector_act!r} is not modelled (gelu is)"
    if isinstance(layer, bool) or not isinstance(layer, int) or not -depth - 1 <= layer <= depth:
        return f"vision_feature_layer {layer!r} is not modelled (one hidden state of the tower's {depth + 1} is)"
    return ""


def stepped_layers(tower: VisionTower | None, module: str, layers: int) -> int:
    """Of a module's ``layers`` instances, those whose parameters get a gradient when the tower runs: all, but for
    a CLIP tower whose last layer's output reaches no loss (``idle_tail``, LLaVA's default feature layer -2): its
    last encoder layer and ``post_layernorm`` (on the discarded pooled output) never go backward, so AdamW gives
    them no state."""
    if tower is None or tower.kind != "clip" or not tower.idle_tail:
        return layers
    if module == f"{tower.module}.post_layernorm":
        return 0
    return layers - 1 if module.startswith(f"{tower.module}.encoder.layers.") else layers


def pooling_error(tower: VisionTower) -> str:
    """Why Gemma 3's projector cannot turn an image into ``mm_tokens_per_image`` tokens ("" when it can): its
    average pool needs the patches per side to be a multiple of ``sqrt(mm_tokens_per_image)``, else the forward
    fails (transformers' placeholder check)."""
    if tower.kind != "siglip":
        return ""
    per_side = math.isqrt(tower.mm_tokens_per_image)
    side = tower.patches_per_side
    if side and per_side * per_side == tower.mm_tokens_per_image and side % per_side == 0:
        return ""
    return (
        f"mm_tokens_per_image ({tower.mm_tokens_per_image}) must be a square whose side divides the patches per "
        f"side (vision_config.image_size // patch_size = {side}) for the projector to pool an image to it"
    )


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
    """Patches the vision encoder sees for one image of ``image_size``. Qwen (unset: a square at ``max_pixels``;
    0: the processor's default cap): ``(h/patch)·(w/patch)`` after ``smart_resize``. SigLIP: every image is resized
    to the fixed ``image_size`` square, ``(image_size/patch)²`` whatever its own size; CLIP: the same and the class
    token (LLaVA-NeXT: for each of its tiles and its base image, ``estimator._vision_clip.next_grid``). Pixtral:
    ``estimator._vision_pixtral``."""
    if tower.kind == "pixtral":
        from ._vision_pixtral import pixtral_patches

        return pixtral_patches(tower, image_size, max_pixels)
    if tower.kind == "mllama":  # every image as max_num_tiles tiles of padded positions, whatever its size
        return tower.max_tiles * (-(-(tower.patches_per_side**2 + 1) // 8) * 8)
    if tower.kind == "siglip":
        return tower.patches_per_side**2
    if tower.kind == "clip" and tower.grid_pinpoints:  # LLaVA-NeXT: every tile and the base image
        from ._vision_clip import next_grid

        rows, cols = next_grid(tower, image_size)
        return (rows * cols + 1) * (tower.patches_per_side**2 + 1)
    if tower.kind == "clip":  # the class token too
        return tower.patches_per_side**2 + 1
    if tower.kind == "idefics3":
        from ._vision_idefics import image_grid, image_tiles

        return image_tiles(image_grid(tower, image_size)) * tower.patches_per_side**2
    if tower.kind == "qwen3":
        from ._vision_qwen3 import QWEN3_MAX_PIXELS, QWEN3_MIN_PIXELS

        return _frame_patches(tower, image_size, QWEN3_MIN_PIXELS, max_pixels or QWEN3_MAX_PIXELS)
    return _frame_patches(tower, image_size, MIN_PIXELS, max_pixels or MAX_PIXELS)


def image_tokens(tower: VisionTower, image_size: tuple[int, int] | None, max_pixels: int) -> int:
    """Language-model tokens of one image. Qwen: one per merged group of patches, and the two vision delimiters.
    Gemma 3: ``mm_tokens_per_image`` pooled tokens and the 4 the processor puts around them (an upper bound by
    at most 2 where a newline of the text merges with them). LLaVA: one per patch (``LlavaProcessor``); LLaVA-NeXT:
    ``estimator._vision_clip.next_tokens``. Pixtral:
    ``estimator._vision_pixtral``."""
    if tower.kind == "pixtral":
        from ._vision_pixtral import pixtral_tokens

        return pixtral_tokens(tower, image_size, max_pixels)
    if tower.kind == "mllama":  # one <|image|> token: the features reach the text through cross-attention
        return 1
    if tower.kind == "siglip":
        return tower.mm_tokens_per_image + GEMMA3_IMAGE_EXTRA_TOKENS
    if tower.kind == "clip" and tower.grid_pinpoints:
        from ._vision_clip import next_tokens

        return next_tokens(tower, image_size)
    if tower.kind == "clip":  # LLaVA: one per patch (and the class token with the "full" strategy), no delimiters
        return tower.patches_per_side**2 + int(tower.keep_class)
    if tower.kind == "idefics3":
        from ._vision_idefics import idefics_image_tokens, image_grid

        return idefics_image_tokens(tower, image_grid(tower, image_size))
    return image_patches(tower, image_size, max_pixels) // (tower.spatial_merge_size**2) + 2


def video_patches(tower: VisionTower, frames: int, frame_size: tuple[int, int] | None, max_pixels: int) -> int:
    """Patches the vision encoder sees for one video of ``frames`` frames of ``frame_size`` (unset: a square at the
    cap; ``max_pixels`` 0: the video processor's default cap, 28²·768): ``⌈frames / temporal_patch_size⌉`` temporal
    patches of ``(h/patch)·(w/patch)`` each, the frames resized under the video processor's bounds
    (``Qwen2VLVideoProcessor.patchify`` / ``get_num_of_video_patches``). Qwen3-VL:
    ``estimator._vision_qwen3.qwen3_video_patches``."""
    if frames <= 0:
        return 0
    if tower.kind == "qwen3":
        from ._vision_qwen3 import qwen3_video_patches

        return qwen3_video_patches(tower, frames, frame_size, max_pixels)
    grid_t = -(-frames // tower.temporal_patch_size)
    return grid_t * _frame_patches(tower, frame_size, VIDEO_MIN_PIXELS, max_pixels or VIDEO_MAX_PIXELS)


def video_tokens(tower: VisionTower, frames: int, frame_size: tuple[int, int] | None, max_pixels: int) -> int:
    """Language-model tokens of one video: one ``<|video_pad|>`` per merged group of patches, and the two vision
    delimiters (0 without frames). Qwen3-VL (a timestamp and two delimiters per temporal patch too):
    ``estimator._vision_qwen3.qwen3_video_tokens``."""
    if frames <= 0:
        return 0
    if tower.kind == "qwen3":
        from ._vision_qwen3 import qwen3_video_tokens

        return qwen3_video_tokens(tower, frames, frame_size, max_pixels)
    return video_patches(tower, frames, frame_size, max_pixels) // (tower.spatial_merge_size**2) + 2


def pixel_values(tower: VisionTower, patches: int) -> int:
    """Values of the processor's ``pixel_values`` for ``patches`` patches: Qwen's flattened rows of
    ``patch_features``; SigLIP's and CLIP's (images, channels, image_size, image_size), the resized image whole (its
    sides need not be multiples of the patch); Idefics3's and SmolVLM's the same per tile."""
    if tower.kind == "mllama":  # (images, max_num_tiles, 3, image_size, image_size)
        images = patches // image_patches(tower, None, 0)
        return images * tower.max_tiles * tower.in_channels * tower.image_size**2
    if tower.kind in ("siglip", "clip", "idefics3"):  # CLIP: its patches count the class token
        images = patches // (tower.patches_per_side**2 + (1 if tower.kind == "clip" else 0))
        return images * tower.in_channels * tower.image_size**2
    return patches * tower.patch_features
