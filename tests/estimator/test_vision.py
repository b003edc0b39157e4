"""Vision-language models: the image tokens a processor makes, the rows they lengthen and the tower's memory."""

from __future__ import annotations

import ast
import importlib.util
import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from estimator import ConfigError, Plan, PlanError, build_inventory, catalog, estimate, parse_config
from trainer.accuracy import GEMMA3, MISTRAL3, QWEN2_5_VL, QWEN2_VL, QWEN3_VL

QWEN2_VL_7B = "qwen2-vl-7b-instruct"


def _est(config: Any = None, **kw: Any) -> Any:
    base = {"model": QWEN2_VL_7B} if config is None else {"config": config}
    return estimate(Plan.from_dict(base | {"method": "qlora", "seq_len": 256} | kw))


def _source(module: str) -> tuple[str, list[ast.stmt]]:
    """The path and parsed body of transformers' ``models/qwen2_vl/{module}.py`` (read from its source: the modules
    import torchvision, not installed here)."""
    spec = importlib.util.find_spec("transformers")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("transformers is not installed")
    path = f"{spec.submodule_search_locations[0]}/models/qwen2_vl/{module}.py"
    with open(path, encoding="utf-8") as fh:
        return path, ast.parse(fh.read()).body


def _from_source(module: str, names: tuple[str, ...], cls: str | None = None) -> dict[str, Any]:
    """Functions of the module (or methods of its class ``cls``), compiled from its source into one scope."""
    path, body = _source(module)
    methods = next(n for n in body if isinstance(n, ast.ClassDef) and n.name == cls).body if cls else body
    fns: list[ast.stmt] = [n for n in methods if isinstance(n, ast.FunctionDef) and n.name in names]
    if cls:  # the module-level helpers the methods call
        fns += [n for n in body if isinstance(n, ast.FunctionDef) and n.name == "smart_resize"]
    scope: dict[str, Any] = {"math": math}
    exec(compile(ast.Module(fns, []), path, "exec"), scope)
    return scope


def _smart_resize() -> Any:
    return _from_source("image_processing_qwen2_vl", ("smart_resize",))["smart_resize"]


def _video_patch_count() -> Any:
    """``Qwen2VLVideoProcessor.get_num_of_video_patches`` bound to the class's own defaults (its ``size``, patch,
    temporal patch and merge sizes, evaluated from their declarations)."""
    cls = "Qwen2VLVideoProcessor"
    path, body = _source("video_processing_qwen2_vl")
    decl = next(n for n in body if isinstance(n, ast.ClassDef) and n.name == cls).body
    names = ("size", "patch_size", "temporal_patch_size", "merge_size")
    defaults = {t.id: eval(compile(ast.Expression(n.value), path, "eval"), {"__builtins__": {}})
                for n in decl if isinstance(n, ast.Assign) for t in n.targets
                if isinstance(t, ast.Name) and t.id in names}  # fmt: skip
    count = _from_source("video_processing_qwen2_vl", ("get_num_of_video_patches",), cls)["get_num_of_video_patches"]
    return lambda *args: count(SimpleNamespace(**defaults), *args)


@pytest.mark.train
def test_image_tokens_follow_the_processors_resize() -> None:
    resize = _smart_resize()
    for h, w in [(448, 448), (1080, 1920), (100, 3000), (30, 40), (4000, 3000)]:
        for mp in (28 * 28 * 1280, 200_000):
            rh, rw = resize(h, w, 28, 56 * 56, mp)
            patches = (rh // 14) * (rw // 14)
            tokens = patches // 4 + 2  # merged 2x2 patches, between <|vision_start|> and <|vision_end|>
            inputs = _est(images_per_sample=2, image_size=(h, w), max_pixels=mp, batch_size=3).to_dict()["inputs"]
            assert inputs["image_tokens_per_row"] == 2 * tokens
            assert inputs["tokens_per_row"] == 256 + 2 * tokens
            assert inputs["patches_per_image"] == patches
            assert inputs["vision_patches"] == 3 * 2 * patches


@pytest.mark.train
def test_unset_image_size_is_a_square_at_the_processors_cap() -> None:
    rh, rw = _smart_resize()(1001, 1001, 28, 56 * 56, 28 * 28 * 1280)  # isqrt(28²·1280) = 1001
    inputs = _est(images_per_sample=1).to_dict()["inputs"]
    assert inputs["patches_per_image"] == (rh // 14) * (rw // 14) == 70 * 70
    assert inputs["image_tokens_per_row"] == 70 * 70 // 4 + 2


@pytest.mark.train
def test_video_tokens_follow_the_video_processors_count() -> None:
    """Frames are resized under the video processor's own bounds (128·28² to 28²·768 pixels: a 224² frame grows to
    336²), padded to pairs, one temporal patch per pair; one token per merged 2×2 patches and two delimiters."""
    count = _video_patch_count()
    for frames in (1, 2, 3, 8, 33):
        for h, w in [(224, 224), (448, 448), (1080, 1920), (30, 40), (360, 640)]:
            for mp in (0, 200_000):
                kwargs = {"size": {"shortest_edge": 128 * 28 * 28, "longest_edge": mp}} if mp else {}
                patches = count(frames, h, w, kwargs)
                inputs = _est(video_frames=frames, image_size=(h, w), max_pixels=mp, batch_size=3).to_dict()
                inputs = inputs["inputs"]
                assert inputs["patches_per_video"] == patches
                assert inputs["video_tokens_per_row"] == patches // 4 + 2
                assert inputs["tokens_per_row"] == 256 + patches // 4 + 2
                assert inputs["vision_patches"] == 3 * patches
                assert inputs["image_tokens_per_row"] == inputs["patches_per_image"] == 0
    assert count(3, 224, 224, {}) == 2 * 24 * 24  # 336² frames, 3 padded to 4
    unset = _est(video_frames=4).to_dict()["inputs"]  # a square at the video cap: isqrt(28²·768) = 775
    assert unset["patches_per_video"] == count(4, 775, 775, {}) == 2 * 54 * 54


def test_a_two_frame_video_is_an_image_to_the_tower() -> None:
    """Two 448² frames make one temporal patch: an image's patches, tokens and bytes (same tower, same merger)."""
    base = {"config": QWEN2_VL, "method": "lora", "device": "cpu", "seq_len": 64, "image_size": (448, 448)}
    image = estimate(Plan.from_dict(base | {"images_per_sample": 1}))
    video = estimate(Plan.from_dict(base | {"video_frames": 2}))
    assert video.memory.phases == image.memory.phases
    assert video.memory.components == image.memory.components
    odd = estimate(Plan.from_dict(base | {"video_frames": 3}))  # the last frame repeated: as four
    assert odd.memory.phases == estimate(Plan.from_dict(base | {"video_frames": 4})).memory.phases
    assert odd.memory.phases["vision_backward"] > video.memory.phases["vision_backward"]


def test_images_and_a_video_run_the_tower_twice() -> None:
    """Both runs' tensors are held to the tower's backward (they add up); the backward's working set is the larger
    run's, not the two together."""
    base = {"config": QWEN2_VL, "method": "lora", "device": "cpu", "seq_len": 64, "image_size": (448, 448)}
    both = estimate(Plan.from_dict(base | {"images_per_sample": 1, "video_frames": 4}))
    inputs = both.to_dict()["inputs"]
    assert inputs["tokens_per_row"] == 64 + (1024 // 4 + 2) + (2048 // 4 + 2)
    assert inputs["vision_patches"] == 1024 + 2048
    as_one_video = estimate(Plan.from_dict(base | {"video_frames": 6}))  # 3,072 patches in a single run
    assert as_one_video.to_dict()["inputs"]["vision_patches"] == 3072
    assert both.memory.phases["vision_backward"] < as_one_video.memory.phases["vision_backward"]
    assert both.memory.phases["optimizer"] == as_one_video.memory.phases["optimizer"]  # the pixels: same bytes


def test_a_video_alone_runs_the_tower() -> None:
    """The tower's adapters get gradients and AdamW state from a video as from an image."""
    plan = {"config": QWEN2_VL, "method": "lora", "device": "cpu", "seq_len": 64, "image_size": (448, 448)}
    image = estimate(Plan.from_dict(plan | {"images_per_sample": 1}))
    video = estimate(Plan.from_dict(plan | {"video_frames": 8}))
    assert video.memory.components["optimizer"] == image.memory.components["optimizer"]
    assert any(n.startswith("video: ") for n in video.memory.notes)


def test_pairs_hold_their_images_twice() -> None:
    dpo = _est(objective="dpo", images_per_sample=1, image_size=(448, 448), batch_size=2).to_dict()["inputs"]
    assert dpo["rows"] == 4 and dpo["vision_patches"] == 4 * 1024


def test_pixel_values_stay_in_the_batch_through_the_optimizer_step() -> None:
    """The processor's fp32 pixel_values (patches × 3·2·14²) live from before the forward to after the step."""
    plan = {"config": QWEN2_VL, "method": "lora", "device": "cpu", "seq_len": 64, "images_per_sample": 1}
    large = estimate(Plan.from_dict(plan | {"image_size": (448, 448)}))  # 32 x 32 patches
    small = estimate(Plan.from_dict(plan | {"image_size": (224, 224)}))  # 16 x 16
    pixels = 4 * (1024 - 256) * 3 * 2 * 14 * 14
    assert large.memory.phases["optimizer"] - small.memory.phases["optimizer"] == pixels


def test_a_tower_that_never_runs_gets_no_gradient_or_optimizer_state() -> None:
    """Text-only batches never run the tower: AdamW makes no state for parameters whose grad is None."""
    text = dict(QWEN2_VL["text_config"], model_type="qwen2")
    text.pop("rope_scaling")
    plan = {"method": "lora", "device": "cpu", "seq_len": 64}
    vl = estimate(Plan.from_dict(plan | {"config": QWEN2_VL}))
    llm = estimate(Plan.from_dict(plan | {"config": text}))
    assert vl.memory.components["optimizer"] == llm.memory.components["optimizer"]
    assert vl.memory.components["adapters"] > llm.memory.components["adapters"]  # the tower's adapters exist
    with_images = estimate(Plan.from_dict(plan | {"config": QWEN2_VL, "images_per_sample": 1}))
    tower_adapters = vl.memory.components["adapters"] - llm.memory.components["adapters"]
    tower_state = with_images.memory.components["optimizer"] - vl.memory.components["optimizer"]
    assert 0 <= tower_state - 2 * tower_adapters < 1024  # AdamW's two moments (and a step counter per tensor)


@pytest.mark.parametrize("config", [QWEN2_VL, QWEN2_5_VL], ids=["qwen2_vl", "qwen2_5_vl"])
def test_images_add_the_tower_beyond_their_tokens(config: Any) -> None:
    """An image costs more than its tokens as text: the tower's saved tensors and its backward come on top."""
    base = {"config": config, "method": "lora", "device": "cpu", "batch_size": 1}
    small = estimate(Plan.from_dict(base | {"seq_len": 64, "images_per_sample": 1, "image_size": (224, 224)}))
    large = estimate(Plan.from_dict(base | {"seq_len": 64, "images_per_sample": 1, "image_size": (448, 448)}))
    tokens = large.to_dict()["inputs"]["tokens_per_row"]
    as_text = estimate(Plan.from_dict(base | {"seq_len": tokens}))
    assert large.memory.peak_allocated > as_text.memory.peak_allocated
    assert large.memory.peak_allocated > small.memory.peak_allocated
    no_gc = estimate(Plan.from_dict(base | {"seq_len": 64, "images_per_sample": 1, "image_size": (448, 448),
                                            "gradient_checkpointing": False}))  # fmt: skip
    assert no_gc.memory.peak_allocated > large.memory.peak_allocated


def test_a_large_image_makes_the_towers_backward_the_peak() -> None:
    # as on the CPU grid: 2 images of 448² with 8 text tokens peak in the tower's backward (tracker, trainer.vision)
    est = _est(QWEN2_VL, images_per_sample=2, image_size=(448, 448), seq_len=8, method="lora", device="cpu",
               batch_size=1)  # fmt: skip
    assert est.memory.peak_phase == "vision_backward"
    assert sum(v for k, v in est.memory.components.items()) == est.memory.total
    assert any("images:" in n for n in est.memory.notes)


def test_images_on_a_gpu_widen_the_range() -> None:
    text = _est(gpu="h100-sxm")
    images = _est(gpu="h100-sxm", images_per_sample=1, image_size=(448, 448))
    lo_t, hi_t = text.memory.range["total"]
    lo_i, hi_i = images.memory.range["total"]
    assert (hi_i - images.memory.total) / images.memory.total > (hi_t - text.memory.total) / text.memory.total


def test_inputs_the_estimate_cannot_count_are_refused() -> None:
    with pytest.raises(PlanError, match="image inputs of llama are not modelled yet .*qwen2_vl, qwen2_5_vl"):
        estimate(Plan(model="llama-3.1-8b", images_per_sample=1, image_size=(448, 448)))
    with pytest.raises(PlanError, match="video inputs of llama are not modelled yet .*qwen2_vl, qwen2_5_vl, qwen3_vl"):
        estimate(Plan(model="llama-3.1-8b", video_frames=8))
    with pytest.raises(PlanError, match="image and video inputs of gemma2 are not modelled yet"):
        estimate(Plan(model="gemma-2-9b", images_per_sample=1, video_frames=8))
    assert _est(video_frames=8).to_dict()["inputs"]["video_tokens_per_row"] > 0  # Qwen-VL: accepted
    assert estimate(Plan(model="llama-3.1-8b", image_size=(448, 448))).memory.total > 0  # no images: size unused


def test_gemma3_reads_its_siglip_tower_and_projector() -> None:
    """Gemma 3's tower: SiglipVisionConfig's defaults for absent fields (the text model's width for the projector's
    output); the projector pools the patches per side to sqrt(mm_tokens_per_image) a side."""
    from estimator import parse_config

    text = json.loads((Path(__file__).parents[1] / "fixtures/configs/gemma3.json").read_text())["text_config"]
    tower = parse_config({"model_type": "gemma3", "text_config": text}).vision
    assert tower is not None and tower.kind == "siglip" and tower.module == "model.vision_tower"
    assert (tower.depth, tower.embed_dim, tower.num_heads, tower.mlp_width) == (12, 768, 12, 3072)
    assert (tower.image_size, tower.patch_size, tower.use_head, tower.out_hidden_size) == (224, 16, True, 128)
    published = parse_config(next(m.config for m in catalog.models() if m.id == "gemma-3-4b-it")).vision
    assert published is not None
    assert (published.patches_per_side, published.spatial_merge_size, published.mm_tokens_per_image) == (64, 4, 256)
    assert published.prefixes == ("model.vision_tower.", "model.multi_modal_projector.")


def test_gemma3_images_are_fixed_size_pooled_tokens() -> None:
    """Gemma 3's processor resizes every image to the tower's 896² (64² = 4,096 patches of 14²), pooled 4 × 4 to
    256 tokens, which it puts between "\\n\\n<start_of_image>" and "<end_of_image>\\n\\n" (4 more)."""
    for size in (None, (448, 448), (1080, 1920)):
        inputs = estimate(Plan(model="gemma-3-4b-it", method="qlora", seq_len=256, images_per_sample=2,
                               image_size=size, batch_size=3)).to_dict()["inputs"]  # fmt: skip
        assert inputs["patches_per_image"] == 64 * 64
        assert inputs["image_tokens_per_row"] == 2 * (256 + 4)
        assert inputs["tokens_per_row"] == 256 + 2 * 260
        assert inputs["vision_patches"] == 3 * 2 * 4096


def test_gemma3_pixel_values_are_whole_images() -> None:
    """Gemma 3's pixel_values are (images, 3, image_size, image_size) fp32, alive through the optimizer step."""
    plan = {"config": GEMMA3, "method": "lora", "device": "cpu", "seq_len": 64, "batch_size": 2}
    one = estimate(Plan.from_dict(plan | {"images_per_sample": 1}))
    two = estimate(Plan.from_dict(plan | {"images_per_sample": 2}))
    grads = two.memory.components["gradients"] - one.memory.components["gradients"]
    assert two.memory.phases["optimizer"] - one.memory.phases["optimizer"] - grads == 4 * 2 * 3 * 224 * 224


def test_gemma3_images_make_the_bidirectional_masks() -> None:
    """With images transformers builds Gemma 3's masks whatever the row (the image tokens attend both ways): a
    full-attention and a sliding-window one, b·s² bool each under SDPA, where a text row of the same length builds
    none (shorter than the window, no padding)."""
    plan = {"config": GEMMA3, "method": "lora", "device": "cpu", "seq_len": 64, "batch_size": 2, "padding": "none"}
    images = estimate(Plan.from_dict(plan | {"images_per_sample": 1})).to_dict()
    assert any("image tokens make transformers build" in n for n in images["memory"]["notes"])
    text = estimate(Plan.from_dict(plan | {"seq_len": images["inputs"]["tokens_per_row"]})).to_dict()
    assert not any("attention mask" in n for n in text["memory"]["notes"])


def test_gemma3_eager_tower_and_unpoolable_configs_are_refused() -> None:
    with pytest.raises(PlanError, match="eager attention are not modelled yet for Gemma 3"):
        estimate(Plan(config=GEMMA3, method="lora", images_per_sample=1, attn_implementation="eager"))
    estimate(Plan(config=GEMMA3, method="lora", attn_implementation="eager"))  # text only: the tower never runs
    bad = GEMMA3 | {"mm_tokens_per_image": 9}  # 16 patches a side cannot pool to 3 × 3
    with pytest.raises(PlanError, match="mm_tokens_per_image"):
        estimate(Plan(config=bad, method="lora", images_per_sample=1))
    assert estimate(Plan(config=bad, method="lora")).memory.total > 0


def test_gemma3_tower_terms_follow_gradient_checkpointing() -> None:
    """Checkpointed, the tower keeps each layer's input; without, every layer's tensors (more); the tower's backward
    is the peak with two images and few text tokens, as on the CPU grid."""
    plan = {"config": GEMMA3, "method": "lora", "device": "cpu", "seq_len": 16, "images_per_sample": 2}
    gc = estimate(Plan.from_dict(plan))
    no_gc = estimate(Plan.from_dict(plan | {"gradient_checkpointing": False}))
    assert gc.memory.peak_phase == "vision_backward"
    assert no_gc.memory.phases["forward"] > gc.memory.phases["forward"]
    assert any("images:" in n and "pooled" in n for n in gc.memory.notes)


def _llava() -> dict[str, Any]:
    return dict(json.loads((Path(__file__).parents[1] / "fixtures/configs/llava.json").read_text()))


def test_llava_images_are_one_token_per_patch() -> None:
    """LLaVA 1.5 (LlavaConfig's defaults: CLIP ViT-L/14 at 336²): every image is cropped to 336², 24² = 576 patches
    and the class token in the tower, 576 <image> tokens with the "default" strategy (577 with "full"), no
    delimiters; pixel values are the cropped images, fp32, whatever the image's own size."""
    default = {"model_type": "llava", "text_config": _llava()["text_config"]}  # the vision_config's defaults
    for size in (None, (224, 224), (1080, 1920)):
        inputs = estimate(Plan(config=default, method="qlora", seq_len=256, images_per_sample=2,
                               image_size=size, batch_size=3)).to_dict()["inputs"]  # fmt: skip
        assert inputs["patches_per_image"] == 577 and inputs["vision_patches"] == 3 * 2 * 577
        assert inputs["image_tokens_per_row"] == 2 * 576 and inputs["tokens_per_row"] == 256 + 1152
    full = default | {"vision_feature_select_strategy": "full"}
    assert (
        estimate(Plan(config=full, method="qlora", images_per_sample=1)).to_dict()["inputs"]["image_tokens_per_row"]
        == 577
    )
    plan = {"config": _llava(), "method": "lora", "device": "cpu", "seq_len": 64, "batch_size": 2}
    one = estimate(Plan.from_dict(plan | {"images_per_sample": 1}))
    two = estimate(Plan.from_dict(plan | {"images_per_sample": 2}))
    grads = two.memory.components["gradients"] - one.memory.components["gradients"]
    assert two.memory.phases["optimizer"] - one.memory.phases["optimizer"] - grads == 4 * 2 * 3 * 56 * 56


def test_llava_tower_terms_follow_gradient_checkpointing() -> None:
    """Checkpointed, the tower keeps each layer's input; without, every layer's tensors (more); images add the
    tower beyond their tokens' text cost."""
    plan = {"config": _llava(), "method": "lora", "device": "cpu", "seq_len": 16, "images_per_sample": 2}
    gc = estimate(Plan.from_dict(plan))
    no_gc = estimate(Plan.from_dict(plan | {"gradient_checkpointing": False}))
    assert no_gc.memory.phases["forward"] > gc.memory.phases["forward"]
    tokens = gc.to_dict()["inputs"]["tokens_per_row"]
    text = estimate(Plan.from_dict(plan | {"images_per_sample": 0, "seq_len": tokens}))
    assert gc.memory.total > text.memory.total
    assert any("images:" in n and "one token per patch" in n for n in gc.memory.notes)


def test_llava_images_it_cannot_count_are_refused() -> None:
    """Eager attention on the tower, a list of feature layers (concatenated), another activation: refused with
    images, estimated without (the tower never runs)."""
    llava = _llava()
    with pytest.raises(PlanError, match="eager attention are not modelled yet for LLaVA"):
        estimate(Plan(config=llava, method="lora", images_per_sample=1, attn_implementation="eager"))
    vision = dict(llava["vision_config"], hidden_act="gelu")
    for bad, what in (({"vision_feature_layer": [-2, -5]}, "vision_feature_layer"),
                      ({"vision_feature_layer": -4}, "vision_feature_layer"),
                      ({"projector_hidden_act": "relu"}, "projector_hidden_act"),
                      ({"vision_config": vision}, "hidden_act")):  # fmt: skip
        with pytest.raises(PlanError, match=what):
            estimate(Plan(config=llava | bad, method="lora", images_per_sample=1))
        assert estimate(Plan(config=llava | bad, method="lora")).memory.total > 0


def test_llava_idle_last_layer_gets_no_optimizer_state() -> None:
    """With vision_feature_layer -2 the tower's last layer and post_layernorm never go backward: AdamW makes no
    state for them (the CPU grid's full and LoRA runs measure it); with -1 every layer does."""
    llava = _llava()
    plan = {"method": "full", "device": "cpu", "seq_len": 16, "images_per_sample": 1, "dtype": "float32"}
    idle = estimate(Plan.from_dict(plan | {"config": llava}))
    used = estimate(Plan.from_dict(plan | {"config": llava | {"vision_feature_layer": -1}}))
    e, m = llava["vision_config"]["hidden_size"], llava["vision_config"]["intermediate_size"]
    layer = 4 * (e * e + e) + 2 * e * m + m + e + 2 * 2 * e  # q/k/v/out_proj, fc1/fc2, two LayerNorms
    state = used.memory.components["optimizer"] - idle.memory.components["optimizer"]
    assert state == 2 * 4 * (layer + 2 * e) + 4 * (16 + 2)  # two fp32 moments, a step counter per tensor


def _llava_next() -> dict[str, Any]:
    return dict(json.loads((Path(__file__).parents[1] / "fixtures/configs/llava_next.json").read_text()))


def test_llava_next_counts_its_tower_and_image_newline() -> None:
    """LLaVA-NeXT: the CLIP tower, projector and image_newline are counted (LLaVA 1.5's and one text-width row)."""
    config = _llava() | {"model_type": "llava_next", "image_grid_pinpoints": [[56, 112], [112, 56], [112, 112]]}
    text = estimate(Plan(config=config, method="lora", seq_len=64)).to_dict()
    plain = estimate(Plan(config=_llava(), method="lora", seq_len=64)).to_dict()
    assert text["params"]["vision"] == plain["params"]["vision"] + config["text_config"]["hidden_size"]


@pytest.mark.parametrize(
    ("size", "tiles", "tokens"),
    [(None, 4, 8 * 8 + 8 + 16), ((56, 56), 2, 4 * 4 + 4 + 16), ((100, 40), 2, 8 * 4 + 8 + 16),
     ((33, 200), 2, 2 * 8 + 2 + 16)],
)  # fmt: skip
def test_llava_next_cuts_an_image_into_the_best_pinpoints_tiles(size: tuple | None, tiles: int, tokens: int) -> None:
    """The fixture's 56² tiles of 4 × 4 patches and pinpoints 56×112, 112×56, 112²: an unset size is the largest
    pinpoint (2 × 2 tiles, nothing padded: 8 × 8 patches, 8 newlines, the base image's 16); a 56² image fits 56×112
    and 112×56 alike (the first is kept): 1 × 2 tiles, the padding's (8 - 4) / 2 columns a side cut off; 100×40
    goes to 112×56 as 2 × 1 tiles, round(40 · 8/100) = 3 of its 4 columns are the image and (4 - 3) // 2 = 0 are
    cut a side; 33×200 to 56×112, round(33 · 8/200) = 1 of 4 rows, one cut a side. The tower sees every tile and
    the base image, each with its class token. (The trainer's test holds these against LlavaNextProcessor.)"""
    plan = {"config": _llava_next(), "method": "lora", "device": "cpu", "seq_len": 8, "images_per_sample": 2}
    inputs = estimate(Plan.from_dict(plan | {"image_size": size})).to_dict()["inputs"]
    assert inputs["patches_per_image"] == (tiles + 1) * (4 * 4 + 1)
    assert inputs["image_tokens_per_row"] == 2 * tokens
    assert inputs["tokens_per_row"] == 8 + 2 * tokens


def test_llava_next_images_it_cannot_count_are_refused() -> None:
    """A max_pixels (its processor has no pixel cap), the "full" strategy (the class token cannot be tiled), pinpoints
    not cut into whole tiles and bad pinpoints are refused, each saying what to change."""
    config = _llava_next()
    plan = {"config": config, "method": "lora", "images_per_sample": 1}
    with pytest.raises(PlanError, match="max_pixels does not apply to llava_next"):
        estimate(Plan.from_dict(plan | {"max_pixels": 100_000}))
    with pytest.raises(PlanError, match="vision_feature_select_strategy 'full' cannot be tiled"):
        estimate(Plan.from_dict(plan | {"config": config | {"vision_feature_select_strategy": "full"}}))
    with pytest.raises(PlanError, match=r"image_grid_pinpoints \[\[56, 100\]\] are not multiples"):
        estimate(Plan.from_dict(plan | {"config": config | {"image_grid_pinpoints": [[56, 112], [56, 100]]}}))
    for bad in ([], [[56]], [[56, True]], "56x112"):
        with pytest.raises(ConfigError, match="image_grid_pinpoints must be a non-empty list"):
            estimate(Plan.from_dict(plan | {"config": config | {"image_grid_pinpoints": bad}}))


IDEFICS3_FIXTURE = json.loads((Path(__file__).parents[1] / "fixtures/configs/idefics3.json").read_text())


@pytest.mark.parametrize(
    ("size", "grid", "tokens"),
    [(None, (4, 4), 108), ((64, 64), (4, 4), 108), ((100, 300), (2, 4), 58), ((1000, 64), (4, 1), 36),
     ((300, 100), (4, 2), 60)],
)  # fmt: skip
def test_idefics3_tiles_and_tokens(size: tuple[int, int] | None, grid: tuple[int, int], tokens: int) -> None:
    """A 64² tile of 16² patches shuffled by 2: 4 tokens a tile; a square image is 4 × 4 tiles and the global one
    (17 tiles, 272 patches): 7 + 4 · (4 · 6 + 1) + 1 = 108 tokens."""
    plan = Plan.from_dict({"config": IDEFICS3_FIXTURE, "method": "lora", "seq_len": 16, "images_per_sample": 2,
                           "image_size": size})  # fmt: skip
    est = estimate(plan)
    inputs = est.to_dict()["inputs"]
    assert inputs["image_tokens_per_row"] == 2 * tokens and inputs["tokens_per_row"] == 16 + 2 * tokens
    assert inputs["patches_per_image"] == (grid[0] * grid[1] + 1) * 16
    assert any(f"{grid[0]} × {grid[1]} tiles" in n and "pixel shuffle by 2" in n for n in est.memory.notes)


def test_idefics3_refuses_what_it_cannot_count() -> None:
    plan = {"config": IDEFICS3_FIXTURE, "method": "lora", "seq_len": 16, "images_per_sample": 1}
    estimate(Plan.from_dict(plan))
    with pytest.raises(PlanError, match="max_pixels does not apply to idefics3"):
        estimate(Plan.from_dict(plan | {"max_pixels": 100_000}))
    with pytest.raises(PlanError, match="eager attention is not modelled for idefics3's vision tower"):
        estimate(Plan.from_dict(plan | {"attn_implementation": "eager"}))
    with pytest.raises(PlanError, match="scale_factor \\(3\\) must divide the patches per side"):
        estimate(Plan.from_dict(plan | {"config": IDEFICS3_FIXTURE | {"scale_factor": 3}}))
    text = estimate(Plan.from_dict(plan | {"images_per_sample": 0, "config": IDEFICS3_FIXTURE | {"scale_factor": 3}}))
    assert text.to_dict()["params"]["vision"] > 0  # the tower's weights load either way


def test_idefics3_tower_memory_grows_with_tiles() -> None:
    """More tiles, more patches through the tower: the held activations grow; without checkpointing, more."""
    plan = {"config": IDEFICS3_FIXTURE, "method": "lora", "device": "cpu", "seq_len": 16, "images_per_sample": 1}
    one = estimate(Plan.from_dict(plan | {"image_size": (1000, 64)}))  # 4 × 1 tiles
    many = estimate(Plan.from_dict(plan | {"image_size": (64, 64)}))
    assert many.memory.phases["vision_backward"] > one.memory.phases["vision_backward"]
    no_gc = estimate(Plan.from_dict(plan | {"image_size": (64, 64), "gradient_checkpointing": False}))
    assert no_gc.memory.phases["vision_backward"] > many.memory.phases["vision_backward"]


def test_mistral3_counts_its_tower() -> None:
    """Mistral 3: the Pixtral tower and projector are counted whatever the plan (the weights load either way)."""
    mistral3 = json.loads((Path(__file__).parents[1] / "fixtures/configs/mistral3.json").read_text())
    text = estimate(Plan(config=mistral3, method="lora", seq_len=64))
    assert text.to_dict()["params"]["vision"] > 0


MISTRAL_SMALL_3_1 = {
    "model_type": "mistral3",  # the vision_config is Mistral3Config's default, Mistral Small 3.1's (patch 14, 1540)
    "text_config": {"model_type": "mistral", "vocab_size": 131072, "hidden_size": 5120, "intermediate_size": 32768,
                    "num_hidden_layers": 40, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128},
}  # fmt: skip


@pytest.mark.parametrize(
    ("size", "max_pixels", "patches", "tokens"),
    [(None, 0, 110 * 110, 55 * 56),  # a square at the longest edge, 1540 = 55 · 28
     ((1080, 1920), 0, 62 * 110, 31 * 56),  # scaled to 866 × 1540 (floored), 866 rounded up to 868 = 31 · 28
     ((300, 200), 0, 22 * 16, 11 * 9),  # never enlarged: 308 × 224
     ((50, 60), 0, 4 * 6, 2 * 4),  # 56 × 84
     ((1000, 700), 448 * 448 + 5, 32 * 24, 16 * 13),  # longest edge ⌊√max_pixels⌋ = 448: 448 × 313 -> 448 × 336
     ((1024, 1024), 1024 * 1024, 74 * 74, 37 * 38)],  # 1024 rounded up to 1036 = 37 · 28
)  # fmt: skip
def test_mistral3_image_tokens_follow_pixtrals_resize(
    size: tuple[int, int] | None, max_pixels: int, patches: int, tokens: int
) -> None:
    """PixtralProcessor: scaled down into the longest_edge square, sides rounded up to multiples of 28; one [IMG]
    per merged 2 × 2 patches and one [IMG_BREAK] or [IMG_END] per merged row."""
    inputs = _est(MISTRAL_SMALL_3_1, images_per_sample=1, image_size=size, max_pixels=max_pixels).to_dict()["inputs"]
    assert inputs["patches_per_image"] == patches
    assert inputs["image_tokens_per_row"] == tokens


def test_mistral3_block_mask_grows_with_the_square_of_the_steps_patches() -> None:
    """The tower attends over all of the step's images as one sequence through a (patches, patches) mask in the
    activation dtype, held to the tower's backward: doubling the images adds more than twice the tower's terms."""
    one, two = (_est(MISTRAL3, method="lora", seq_len=16, images_per_sample=n, image_size=(448, 448),
                     max_pixels=448 * 448, batch_size=1) for n in (1, 2))  # fmt: skip
    assert one.to_dict()["inputs"]["vision_patches"] == 1024
    assert any("1024² block-diagonal mask (2.0 MiB" in n for n in one.memory.notes)
    assert any("2048² block-diagonal mask (8.0 MiB" in n for n in two.memory.notes)
    assert one.memory.peak_phase == two.memory.peak_phase == "vision_backward"


def test_mistral3_eager_tower_is_refused() -> None:
    with pytest.raises(PlanError, match="eager attention are not modelled yet for Mistral 3's Pixtral tower"):
        _est(MISTRAL3, images_per_sample=1, attn_implementation="eager")
    assert _est(MISTRAL3, attn_implementation="eager").to_dict()["inputs"]["vision_patches"] == 0  # text only


def test_mistral3_mask_on_cuda_counts_a_padded_copy_per_layer() -> None:
    """12,100 patches (one 1540² image) are not a multiple of 16: CUDA's memory-efficient kernel pads the mask at
    each layer's call; without checkpointing every layer keeps its copy (24 × 12,100 × 12,112 × 4 bytes)."""
    kw: dict[str, Any] = {"images_per_sample": 1, "gradient_checkpointing": False}
    cuda, cpu = _est(MISTRAL_SMALL_3_1, device="cuda", **kw), _est(MISTRAL_SMALL_3_1, device="cpu", **kw)
    assert any("pads it to rows of 16" in n and "559.1 MiB a copy" in n for n in cuda.memory.notes)
    assert not any("pads it" in n for n in cpu.memory.notes)
    copies = 24 * 12_100 * 12_112 * 4  # QLoRA: the tower runs in fp32
    assert cuda.memory.phases["forward"] - cpu.memory.phases["forward"] >= copies


@pytest.mark.parametrize(
    "model_type",
    [
        "qwen2_vl",
        "qwen2_5_vl",
        "qwen3_vl",
        "qwen3_vl_moe",
        "gemma3",
        "llava",
        "llava_next",
        "idefics3",
        "smolvlm",
        "mistral3",
        "mllama",
    ],
)
@pytest.mark.parametrize(("method", "gc"), [("lora", True), ("qlora", True), ("full", False), ("full", True)])
def test_image_plans_add_up_in_every_phase(model_type: str, method: Any, gc: bool) -> None:
    """Each vision family's fixture with two images: the components at the peak add up to it and the rule-of-thumb
    steps to the total, whichever phase (the tower's forward, the decoder's, the tower's backward) peaks."""
    config = json.loads((Path(__file__).parents[1] / f"fixtures/configs/{model_type}.json").read_text())
    est = estimate(Plan(config=config, method=method, gradient_checkpointing=gc, images_per_sample=2, seq_len=32,
                        device="cpu"))  # fmt: skip
    mem = est.to_dict()["memory"]
    assert sum(mem["components"].values()) == mem["total"] == mem["phases"][mem["peak_phase"]]
    assert est.to_dict()["rule_to_peak"]["total"] == mem["total"]


def _mllama_text(layers: int, cross: list[int]) -> dict[str, Any]:
    cfg = json.loads((Path(__file__).parents[1] / "fixtures/configs/mllama.json").read_text())
    text = cfg["text_config"] | {"num_hidden_layers": layers, "cross_attention_layers": cross}
    return dict(cfg, text_config=text)


@pytest.mark.parametrize(("method", "gc"), [("lora", True), ("qlora", True), ("full", False)])
def test_mllama_without_images_skips_its_cross_attention_layers(method: Any, gc: bool) -> None:
    """Llama 3.2 Vision without images: ``MllamaTextModel`` skips every cross-attention layer, so 5 layers with 2 of
    them cross-attention keep the activations, gradients and optimizer state of 3 self-attention layers (their
    weights and adapters are held all the same)."""
    with_cross, without = (
        estimate(
            Plan(config=_mllama_text(layers, cross), method=method, gradient_checkpointing=gc, seq_len=64)
        ).to_dict()["memory"]["components"]
        for layers, cross in ((5, [1, 3]), (3, []))
    )
    for name in ("activations", "optimizer", "gradients"):
        assert with_cross[name] == without[name], name
    assert with_cross["weights"] > without["weights"]


def test_mllama_images_are_one_token_and_every_tile() -> None:
    """An image is one <|image|> token and max_num_tiles tiles of padded positions in the tower whatever its size
    (4 × 24: 4² patches and the class token, padded to 24), so its memory does not depend on its size; its tiles²
    mask and the features the cross-attention layers read grow with the images."""
    cfg = _mllama_text(5, [1, 3])
    one, wide, two = (
        estimate(Plan(config=cfg, method="lora", seq_len=64, images_per_sample=n, image_size=size)).to_dict()
        for n, size in ((1, (100, 100)), (1, (300, 1200)), (2, (100, 100)))
    )
    assert one["inputs"]["image_tokens_per_row"] == 1 and two["inputs"]["image_tokens_per_row"] == 2
    assert one["inputs"]["patches_per_image"] == 4 * 24
    assert one["memory"]["phases"] == wide["memory"]["phases"]
    assert two["memory"]["total"] > one["memory"]["total"]


@pytest.mark.parametrize("gc", [True, False])
def test_mllama_images_run_the_cross_attention_layers(gc: bool) -> None:
    """With images the cross-attention layers run: more activations than the same plan without images by more than
    the tower's (its layers' tensors are held either way), the features' keys and values included."""
    cfg = _mllama_text(5, [1, 3])
    text, image = (
        estimate(Plan(config=cfg, method="lora", seq_len=64, gradient_checkpointing=gc, images_per_sample=n))
        for n in (0, 1)
    )
    assert image.memory.phases["backward"] > text.memory.phases["backward"]
    if not gc:  # every cross-attention layer's saved tensors over the text and the image features
        assert image.memory.components["activations"] > text.memory.components["activations"]


def test_mllama_eager_images_are_refused() -> None:
    with pytest.raises(PlanError, match="Llama 3.2 Vision's tower and cross-attention layers"):
        estimate(Plan(config=_mllama_text(5, [1, 3]), method="lora", images_per_sample=1, attn_implementation="eager"))


@pytest.mark.train
@pytest.mark.parametrize("size", [(448, 448), (1080, 1920), (100, 3000), (30, 40), (5000, 4000), None])
@pytest.mark.parametrize("max_pixels", [0, 200_000])
def test_qwen3_vl_image_tokens_follow_the_processors_resize(size: tuple[int, int] | None, max_pixels: int) -> None:
    """Qwen3-VL's processor: Qwen2VLImageProcessor's smart_resize with the published processor config (16² patches,
    merged 2 × 2: multiples of 32, 65,536 to 16,777,216 pixels); one token per merged group and two delimiters.
    Unset, an image is a square at the cap (4096² by default)."""
    cap = max_pixels or 16_777_216
    h, w = size or (math.isqrt(cap), math.isqrt(cap))
    rh, rw = _smart_resize()(h, w, 32, 65_536, cap)
    patches = (rh // 16) * (rw // 16)
    plan = {"config": QWEN3_VL, "images_per_sample": 2, "image_size": size, "max_pixels": max_pixels, "batch_size": 3}
    inputs = _est(**plan).to_dict()["inputs"]
    assert inputs["patches_per_image"] == patches
    assert inputs["image_tokens_per_row"] == 2 * (patches // 4 + 2)
    assert inputs["vision_patches"] == 3 * 2 * patches
    if size is None and not max_pixels:
        assert patches == 256 * 256


def _qwen3_video(frames: int, size: tuple[int, int] | None, max_pixels: int = 0, **kw: Any) -> dict[str, Any]:
    plan = {"config": QWEN3_VL, "video_frames": frames, "image_size": size, "max_pixels": max_pixels, "batch_size": 3}
    inputs: dict[str, Any] = _est(**plan | kw).to_dict()["inputs"]
    return inputs


@pytest.mark.parametrize(
    ("frames", "size", "max_pixels", "grid", "tokens"),
    [
        (4, (320, 320), 0, (2, 20, 20), 2 + 2 * (100 + 2) + 2 * 6),  # within the budget: sides rounded to 32
        (3, (256, 384), 0, (2, 16, 24), 2 + 2 * (96 + 2) + 2 * 6),  # the last frame repeated
        (21, (224, 320), 0, (11, 14, 20), 2 + 11 * (70 + 2) + 10 * 6 + 7),  # "<10.0 seconds>": seven tokens
        (2, (30, 40), 0, (1, 4, 4), 2 + 1 * (4 + 2) + 6),  # a side below 32 scaled up to it, then rounded
        (64, (1080, 1920), 0, (32, 28, 52), 2 + 32 * (364 + 2) + 10 * 6 + 22 * 7),  # 64 frames share the budget
        (8, None, 0, (4, 110, 110), 2 + 4 * (3025 + 2) + 4 * 6),  # unset: a square of isqrt(25,165,824 / 8) = 1773
        (6, (1000, 700), 200_000, (3, 12, 8), 2 + 3 * (24 + 2) + 3 * 6),  # max_pixels: the whole video's budget
    ],
)  # fmt: skip
def test_qwen3_vl_video_patches_and_tokens(
    frames: int, size: tuple[int, int] | None, max_pixels: int, grid: tuple[int, int, int], tokens: int
) -> None:
    """Qwen3VLVideoProcessor with Qwen3-VL's published video processor config (16² patches merged 2 × 2, 4,096 to
    25,165,824 pixels for the whole video: frames rounded to pairs times each frame's pixels), and
    Qwen3VLProcessor's expansion: the template's two delimiters and, per temporal patch, its timestamp (at 2 frames
    per second: ``<k.2 seconds>``, 4 tokens and a digit per digit of k), two delimiters and its merged groups."""
    inputs = _qwen3_video(frames, size, max_pixels)
    assert inputs["patches_per_video"] == math.prod(grid)
    assert inputs["video_tokens_per_row"] == tokens
    assert inputs["tokens_per_row"] == 256 + tokens
    assert inputs["vision_patches"] == 3 * math.prod(grid)


def _qwen3_video_module() -> Any:
    pytest.importorskip("transformers")
    import importlib

    return importlib.import_module("transformers.models.qwen3_vl.video_processing_qwen3_vl")


@pytest.mark.train
@pytest.mark.parametrize("frames", [2, 3, 4, 9, 32, 100])
@pytest.mark.parametrize("size", [(448, 448), (1080, 1920), (100, 3000), (20, 700), None])
@pytest.mark.parametrize("max_pixels", [0, 1_000_000])
def test_qwen3_vl_video_patches_follow_the_video_processors_count(
    frames: int, size: tuple[int, int] | None, max_pixels: int
) -> None:
    """The estimate's patches per video are ``Qwen3VLVideoProcessor.get_num_of_video_patches`` with the published
    config's size (transformers' own method; no per-frame cap: ``cap_pixels_per_frame`` unset)."""
    module = _qwen3_video_module()
    cls = module.Qwen3VLVideoProcessor
    cap = max_pixels or 25_165_824
    owner = SimpleNamespace(size={"shortest_edge": 4096, "longest_edge": cap}, patch_size=16, merge_size=2,
                            temporal_patch_size=2, cap_pixels_per_frame=cls.cap_pixels_per_frame,
                            max_video_tokens=cls.max_video_tokens)  # fmt: skip
    h, w = size or (math.isqrt(cap // frames),) * 2
    expected = cls.get_num_of_video_patches(owner, frames, h, w)
    assert _qwen3_video(frames, size, max_pixels)["patches_per_video"] == expected


@pytest.mark.train
@pytest.mark.parametrize("frames", [2, 3, 20, 21, 199, 201])
def test_qwen3_vl_video_tokens_follow_the_processors_expansion(frames: int) -> None:
    """The estimate's tokens per video are Qwen3VLProcessor.replace_video_token's expansion of the template's
    ``<|vision_start|><|video_pad|><|vision_end|>`` (metadata of a 2 fps clip), its special tokens one each and its
    timestamp text as many as transformers' Qwen2 pre-tokenizer pattern splits it into."""
    import regex  # type: ignore[import-untyped]
    import torch
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    from trainer.vision import qwen3_video_text

    t = -(-frames // 2)
    text = qwen3_video_text(QWEN3_VL, torch.tensor([t, 8, 12]), frames)
    specials = ("<|vision_start|>", "<|vision_end|>", "<|video_pad|>")
    counted = sum(text.count(x) for x in specials)
    for x in specials:
        text = text.replace(x, "|")
    counted += sum(len(regex.findall(PRETOKENIZE_REGEX, piece)) for piece in text.split("|") if piece)
    assert counted == 2 + t * (24 + 2) + _timestamps(frames)
    assert _qwen3_video(frames, (128, 192))["video_tokens_per_row"] == counted


def _timestamps(frames: int) -> int:
    """Timestamp tokens at 2 fps: temporal patch k at k + 0.25 s (the last of an odd count at k.0), ``<``,
    `` seconds``, ``>``, the point and each digit."""
    return sum(3 + 1 + len(str(k)) + 1 for k in range(-(-frames // 2)))


def test_qwen3_vl_video_runs_the_tower_as_an_image() -> None:
    """A two-frame video is one temporal patch: the tower's patches and activations of an image of its size; the
    row is longer by the timestamp and the two delimiters the template keeps around the video."""
    base = {"method": "lora", "device": "cpu", "seq_len": 32, "image_size": (448, 448), "config": QWEN3_VL}
    image = estimate(Plan.from_dict(base | {"images_per_sample": 1}))
    video = estimate(Plan.from_dict(base | {"video_frames": 2}))
    assert video.to_dict()["inputs"]["vision_patches"] == image.to_dict()["inputs"]["vision_patches"] == 28 * 28
    assert video.to_dict()["inputs"]["tokens_per_row"] == image.to_dict()["inputs"]["tokens_per_row"] + 2 + 6
    assert video.memory.components["optimizer"] == image.memory.components["optimizer"]
    extra = video.memory.phases["vision_backward"] - image.memory.phases["vision_backward"]
    assert extra == 8 * 256 * 4  # the text embeddings' gradient (fp32) over the 8 tokens more
    assert any(n.startswith("video: ") and "6 timestamp tokens" in n for n in video.memory.notes)


def _qwen3(**vision: Any) -> dict[str, Any]:
    return QWEN3_VL | {"vision_config": QWEN3_VL["vision_config"] | vision}


def test_qwen3_vl_inputs_it_cannot_count_are_refused() -> None:
    base = {"method": "lora", "device": "cpu", "seq_len": 32, "image_size": (448, 448)}
    assert estimate(Plan.from_dict(base | {"config": QWEN3_VL, "video_frames": 2})).memory.total > 0
    with pytest.raises(PlanError, match="a video of 1 frame cannot be processed: .*temporal_patch_size \\(2\\)"):
        estimate(Plan.from_dict(base | {"config": QWEN3_VL, "video_frames": 1}))
    refused = (
        ({"hidden_act": "silu"}, "hidden_act 'silu'"),
        ({"deepstack_visual_indexes": [1, 1]}, "must be distinct blocks"),
        ({"deepstack_visual_indexes": [4]}, "must be distinct blocks"),
        ({"num_position_embeddings": 60}, "not a square"),
        ({"deepstack_visual_indexes": [0, 1, 2, 3]}, "4 DeepStack feature sets for 3 decoder layers"),
    )
    for vision, match in refused:
        config = _qwen3(**vision)
        assert estimate(Plan.from_dict(base | {"config": config})).memory.total > 0  # text alone: counted
        with pytest.raises(PlanError, match=match):
            estimate(Plan.from_dict(base | {"config": config, "images_per_sample": 1}))
        with pytest.raises(PlanError, match=f"video of this model are not modelled yet: .*{match}"):
            estimate(Plan.from_dict(base | {"config": config, "video_frames": 4}))
    with pytest.raises(PlanError, match="images with eager attention are not modelled yet for Qwen3-VL's tower"):
        estimate(Plan.from_dict(base | {"config": QWEN3_VL, "images_per_sample": 1, "attn_implementation": "eager"}))
    with pytest.raises(PlanError, match="video with eager attention are not modelled yet for Qwen3-VL's tower"):
        estimate(Plan.from_dict(base | {"config": QWEN3_VL, "video_frames": 4, "attn_implementation": "eager"}))
    with pytest.raises(ConfigError, match="deepstack_visual_indexes must be a list of integers"):
        estimate(Plan.from_dict(base | {"config": _qwen3(deepstack_visual_indexes=8)}))


def test_qwen3_vl_deepstack_mergers_hold_their_tensors_to_the_towers_backward() -> None:
    """One DeepStack merger more: its parameters (a LayerNorm over merge²·E and two linears with biases), and, with
    images, its saved tensors held to the tower's backward and its features' gradient in that backward."""
    wide, out = 4 * 128, 256  # merge² · E, the text width
    base = {"method": "lora", "device": "cpu", "seq_len": 32, "image_size": (448, 448), "images_per_sample": 1}
    one, two = (estimate(Plan.from_dict(base | {"config": _qwen3(deepstack_visual_indexes=d)})) for d in ([1], [1, 2]))
    assert two.to_dict()["params"]["total"] - one.to_dict()["params"]["total"] == (
        2 * wide + wide * wide + wide + out * wide + out
    )
    for phase in ("forward", "loss_backward", "vision_backward"):
        assert two.memory.phases[phase] > one.memory.phases[phase]


def test_qwen3_vl_reads_qwen3s_language_model() -> None:
    """Qwen3's q/k norms and head_dim, under model.language_model; the composite's tie flag decides the tie."""
    inv = build_inventory(parse_config(QWEN3_VL))
    names = {t.name for t in inv}
    assert "model.language_model.layers.{i}.self_attn.q_norm.weight" in names
    assert "lm_head.weight" in names and "model.visual.pos_embed.weight" in names
    tied = build_inventory(parse_config(QWEN3_VL | {"tie_word_embeddings": True}))
    assert inv.total - tied.total == 2048 * 256
