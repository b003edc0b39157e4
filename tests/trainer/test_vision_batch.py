"""The image and video batch the trainer builds with transformers' own processors, against the estimate's inputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("PIL")

import PIL.Image
import torch

from estimator import Plan, estimate
from trainer.accuracy import (
    GEMMA3,
    IDEFICS3,
    LLAVA,
    MISTRAL3,
    MLLAMA,
    QWEN2_5_VL,
    QWEN2_VL,
    QWEN3_VL,
    QWEN3_VL_MOE,
    SMOLVLM,
)
from trainer.vision import (
    PIXTRAL_TOKENS,
    llava_image_tokens,
    llava_next_image_tokens,
    video_processor_code,
    vision_batch,
)

pytestmark = pytest.mark.train


@pytest.mark.parametrize(
    ("config", "size", "max_pixels"),
    [(QWEN2_VL, (448, 448), 0), (QWEN2_VL, (300, 1000), 0), (QWEN2_5_VL, (1000, 700), 200_000),
     (QWEN2_VL, None, 100_000)],
)  # fmt: skip
def test_the_processors_tokens_and_patches_are_the_estimates(config: dict, size: tuple | None, max_pixels: int) -> None:
    plan = Plan.from_dict({"config": config, "method": "lora", "seq_len": 16, "batch_size": 2, "images_per_sample": 2,
                           "image_size": size, "max_pixels": max_pixels})  # fmt: skip
    batch = vision_batch(config, plan, torch.device("cpu"), seed=0)
    inputs = estimate(plan).to_dict()["inputs"]
    assert tuple(batch["input_ids"].shape) == (2, inputs["tokens_per_row"])
    assert batch["pixel_values"].shape == (inputs["vision_patches"], 3 * 2 * 14 * 14)
    assert batch["pixel_values"].dtype == torch.float32  # what the estimate's pixel bytes count
    image_tokens = int((batch["input_ids"][0] == config["image_token_id"]).sum())
    assert image_tokens + 2 * 2 == inputs["image_tokens_per_row"]  # two delimiters per image
    assert int(batch["mm_token_type_ids"].sum()) == 2 * image_tokens
    assert int((batch["labels"] == -100).sum()) == 2 * image_tokens  # the image tokens carry no loss
    assert "pixel_values_videos" not in batch


def _video_batch(
    config: dict, frames: int, size: tuple | None, max_pixels: int, images: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Two rows, each with a video of ``frames`` frames (and ``images`` images), as the trainer builds them, and the
    estimate's ``inputs``; the rows are as long as the estimate says."""
    plan = Plan.from_dict({"config": config, "method": "lora", "seq_len": 16, "batch_size": 2, "video_frames": frames,
                           "image_size": size, "max_pixels": max_pixels, "images_per_sample": images})  # fmt: skip
    batch = vision_batch(config, plan, torch.device("cpu"), seed=0)
    inputs = estimate(plan).to_dict()["inputs"]
    assert tuple(batch["input_ids"].shape) == (2, inputs["tokens_per_row"])
    return batch, inputs


@pytest.mark.parametrize(
    ("config", "frames", "size", "max_pixels", "images"),
    [(QWEN2_VL, 4, (224, 224), 0, 0), (QWEN2_VL, 3, (448, 640), 0, 0), (QWEN2_5_VL, 5, (1080, 1920), 0, 1),
     (QWEN2_VL, 2, None, 150_000, 1), (QWEN2_5_VL, 1, (100, 90), 0, 0)],
)  # fmt: skip
def test_the_video_processors_tokens_and_patches_are_the_estimates(
    config: dict, frames: int, size: tuple | None, max_pixels: int, images: int
) -> None:
    batch, inputs = _video_batch(config, frames, size, max_pixels, images)
    videos, grid = batch["pixel_values_videos"], batch["video_grid_thw"]
    assert videos.shape == (2 * inputs["patches_per_video"], 3 * 2 * 14 * 14)
    assert videos.dtype == torch.float32  # what the estimate's pixel bytes count
    assert int(grid[0].prod()) == inputs["patches_per_video"] and tuple(grid[0]) == tuple(grid[1])
    assert int(grid[0][0]) == (frames + 1) // 2  # frame pairs, the last frame repeated for an odd count
    image_patches = batch["pixel_values"].shape[0] if images else 0
    assert image_patches + videos.shape[0] == inputs["vision_patches"]
    video_tokens = int((batch["input_ids"][0] == config["video_token_id"]).sum())
    assert video_tokens + 2 == inputs["video_tokens_per_row"]  # two delimiters
    assert int((batch["mm_token_type_ids"] == 2).sum()) == 2 * video_tokens
    image_tokens = int((batch["input_ids"] == config["image_token_id"]).sum())
    assert int((batch["labels"] == -100).sum()) == 2 * video_tokens + image_tokens


@pytest.mark.parametrize(("size", "max_pixels"), [((448, 448), 0), ((300, 1000), 0), ((1000, 700), 200_000),
                                                  ((100, 90), 0), (None, 100_000)])  # fmt: skip
def test_qwen3_vl_processors_tokens_and_patches_are_the_estimates(size: tuple | None, max_pixels: int) -> None:
    """Qwen2VLImageProcessorPil with Qwen3-VL's processor config (16² patches, 65,536 to 16,777,216 pixels: a small
    image grows): the estimate's patches and tokens, pixel rows of 3·2·16² values."""
    plan = Plan.from_dict({"config": QWEN3_VL, "method": "lora", "seq_len": 16, "batch_size": 2,
                           "images_per_sample": 2, "image_size": size, "max_pixels": max_pixels})  # fmt: skip
    batch = vision_batch(QWEN3_VL, plan, torch.device("cpu"), seed=0)
    inputs = estimate(plan).to_dict()["inputs"]
    assert tuple(batch["input_ids"].shape) == (2, inputs["tokens_per_row"])
    assert batch["pixel_values"].shape == (inputs["vision_patches"], 3 * 2 * 16 * 16)
    assert int(batch["image_grid_thw"][0].prod()) == inputs["patches_per_image"]
    image_tokens = int((batch["input_ids"][0] == QWEN3_VL["image_token_id"]).sum())
    assert image_tokens + 2 * 2 == inputs["image_tokens_per_row"]
    assert int((batch["labels"] == -100).sum()) == 2 * image_tokens  # the image tokens carry no loss
    if size == (100, 90):  # below 65,536 pixels: enlarged to 288 × 256 (multiples of 32)
        assert inputs["patches_per_image"] == 18 * 16


@pytest.mark.parametrize(
    ("config", "frames", "size", "max_pixels", "images"),
    [(QWEN3_VL, 4, (320, 320), 0, 0), (QWEN3_VL_MOE, 3, (256, 384), 0, 1), (QWEN3_VL, 21, (1080, 1920), 0, 0),
     (QWEN3_VL, 2, None, 300_000, 1), (QWEN3_VL, 5, (30, 40), 0, 0)],
)  # fmt: skip
def test_qwen3_vl_video_processors_tokens_and_patches_are_the_estimates(
    config: dict, frames: int, size: tuple | None, max_pixels: int, images: int
) -> None:
    """Qwen3VLVideoProcessor's resize and patching with the published video config, Qwen3VLProcessor's expansion:
    the estimate's patches and row length; per temporal patch one <|vision_start|>, its <|video_pad|> tokens (type
    2, no loss) and a timestamp, with the template's two delimiters around the video."""
    batch, inputs = _video_batch(config, frames, size, max_pixels, images)
    videos, grid = batch["pixel_values_videos"], batch["video_grid_thw"]
    assert videos.shape == (2 * inputs["patches_per_video"], 3 * 2 * 16 * 16) and videos.dtype == torch.float32
    assert int(grid[0].prod()) == inputs["patches_per_video"] and int(grid[0][0]) == (frames + 1) // 2
    image_patches = batch["pixel_values"].shape[0] if images else 0
    assert image_patches + videos.shape[0] == inputs["vision_patches"]
    row = batch["input_ids"][0]
    starts = int((row == config["vision_start_token_id"]).sum())
    assert starts == images + 1 + int(grid[0][0])  # each image's, the template's and one per temporal patch
    video_tokens = int((row == config["video_token_id"]).sum())
    assert video_tokens == int(grid[0].prod()) // 4
    assert int((batch["mm_token_type_ids"] == 2).sum()) == 2 * video_tokens
    image_tokens = int((batch["input_ids"] == config["image_token_id"]).sum())
    assert int((batch["labels"] == -100).sum()) == 2 * video_tokens + image_tokens


def test_the_video_processors_code_and_defaults_are_read_from_transformers() -> None:
    code, defaults = video_processor_code()
    assert defaults["size"] == {"shortest_edge": 128 * 28 * 28, "longest_edge": 28 * 28 * 768}
    video = torch.arange(1 * 3 * 3 * 28 * 56, dtype=torch.float32).view(1, 3, 3, 28, 56)
    patches, t, h, w = code["patchify"](None, video, patch_size=14, merge_size=2, temporal_patch_size=2)
    assert (t, h, w) == (2, 2, 4) and patches.shape == (1, 2 * 2 * 4, 3 * 2 * 14 * 14)
    last = patches[0, 8:].view(8, 3, 2, 14, 14)  # the second temporal patch: frame 3 and its repeat
    assert torch.equal(last[:, :, 0], last[:, :, 1])
    assert code["smart_resize"](224, 224, 28, 128 * 28 * 28, 28 * 28 * 768) == (336, 336)  # a small frame grows


def test_a_text_model_gets_no_vision_batch() -> None:
    plan = Plan.from_dict({"model": "llama-3.2-1b", "seq_len": 16})
    with pytest.raises(ValueError, match="image batches are built for qwen2_vl, .*, mllama only"):
        vision_batch({"model_type": "llama"}, plan, torch.device("cpu"), seed=0)


@pytest.mark.parametrize("size", [None, (300, 1000)])
def test_gemma3s_processor_makes_the_estimates_tokens_and_pixels(size: tuple | None) -> None:
    """Gemma3ImageProcessorPil resizes any image to the tower's square; each image is its pooled tokens between
    "\n\n<start_of_image>" and "<end_of_image>\n\n"; only the image tokens are marked and carry no loss."""
    plan = Plan.from_dict({"config": GEMMA3, "method": "lora", "seq_len": 16, "batch_size": 2, "images_per_sample": 2,
                           "image_size": size})  # fmt: skip
    batch = vision_batch(GEMMA3, plan, torch.device("cpu"), seed=0)
    inputs = estimate(plan).to_dict()["inputs"]
    side = GEMMA3["vision_config"]["image_size"]
    assert tuple(batch["input_ids"].shape) == (2, inputs["tokens_per_row"])
    assert tuple(batch["pixel_values"].shape) == (2 * 2, 3, side, side)
    assert batch["pixel_values"].dtype == torch.float32
    assert inputs["patches_per_image"] == (side // GEMMA3["vision_config"]["patch_size"]) ** 2
    row = batch["input_ids"][0].tolist()
    image_tokens = row.count(GEMMA3["image_token_index"])
    assert image_tokens == 2 * GEMMA3["mm_tokens_per_image"] and image_tokens + 2 * 4 == inputs["image_tokens_per_row"]
    assert row.count(GEMMA3["boi_token_index"]) == row.count(GEMMA3["eoi_token_index"]) == 2
    assert int(batch["token_type_ids"].sum()) == 2 * image_tokens
    assert int((batch["labels"] == -100).sum()) == 2 * image_tokens


def _idefics3_processor(config: dict, merge_newlines: bool) -> Any:
    """transformers' own Idefics3Processor (SmolVLMProcessor expands an image the same way: ``get_image_prompt_string``)
    over a character-level tokenizer holding the processor's special tokens, with or without a ``\n\n`` token."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import AddedToken, PreTrainedTokenizerFast
    from transformers.models.idefics3 import Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    tok = Tokenizer(models.WordLevel({c: i for i, c in enumerate(["[UNK]", "a", "b", "\n"])}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), "isolated")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")  # type: ignore[no-untyped-call]
    special = ["<fake_token_around_image>", "<image>", "<global-img>", "<end_of_utterance>"]
    special += [f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)]
    fast.add_special_tokens({"additional_special_tokens": special})
    if merge_newlines:
        fast.add_tokens([AddedToken("\n\n", normalized=False)])
    tile = config["vision_config"]["image_size"]
    images = Idefics3ImageProcessorPil(size={"longest_edge": 4 * tile}, max_image_size={"longest_edge": tile})
    seq = (tile // config["vision_config"]["patch_size"]) ** 2 // config["scale_factor"] ** 2
    return Idefics3Processor(image_processor=images, tokenizer=fast, image_seq_len=seq)


@pytest.mark.parametrize("config", [IDEFICS3, SMOLVLM], ids=["idefics3", "smolvlm"])
@pytest.mark.parametrize("size", [None, (300, 500), (200, 800), (900, 120), (128, 128), (40, 30)])
def test_idefics3s_processor_makes_the_estimates_tokens_and_tiles(config: dict, size: tuple | None) -> None:
    """Idefics3Processor's own expansion of ``<image>`` (rows, columns, global image; splitting on) is the estimate's
    tokens: exact with a tokenizer that keeps ``\n\n`` as two tokens, one above where it merges them (only a split
    image has the pair); the trainer's batch has the same rows, tiles and pixel arrays."""
    plan = Plan.from_dict({"config": config, "method": "lora", "seq_len": 16, "batch_size": 2, "images_per_sample": 2,
                           "image_size": size})  # fmt: skip
    inputs = estimate(plan).to_dict()["inputs"]
    batch = vision_batch(config, plan, torch.device("cpu"), seed=0)
    tile = config["vision_config"]["image_size"]
    tiles = inputs["vision_patches"] // (tile // config["vision_config"]["patch_size"]) ** 2
    assert tuple(batch["input_ids"].shape) == (2, inputs["tokens_per_row"])
    assert tuple(batch["pixel_values"].shape) == (2, tiles // 2, 3, tile, tile)
    assert batch["pixel_values"].dtype == torch.float32
    assert tuple(batch["pixel_attention_mask"].shape) == (2, tiles // 2, tile, tile)
    assert bool(batch["pixel_attention_mask"].all())  # every tile a full square: the tower runs no mask
    image = PIL.Image.new("RGB", (size[1], size[0]) if size else (tile, tile), (7, 9, 11))
    for merge in (False, True):
        processor = _idefics3_processor(config, merge)
        out = processor(text=["<image>ab<image>"], images=[[image, image]], return_tensors="pt")
        split = inputs["patches_per_image"] > (tile // config["vision_config"]["patch_size"]) ** 2
        made = out["input_ids"].shape[1] - 2
        assert made == inputs["image_tokens_per_row"] - (2 if merge and split else 0), (merge, made)
        assert tuple(out["pixel_values"].shape) == (1, tiles // 2, 3, tile, tile)
    seq = int((batch["input_ids"][0] == config["image_token_id"]).sum())
    assert int((batch["labels"] == -100).sum()) == 2 * seq


@pytest.mark.parametrize(("size", "max_pixels"), [(None, 0), ((300, 200), 0), ((50, 60), 0), ((1000, 700), 448 * 448)])
def test_mistral3s_processor_makes_the_estimates_tokens_and_pixels(size: tuple | None, max_pixels: int) -> None:
    """PixtralImageProcessorPil at the longest edge (the tower's image_size, or ⌊√max_pixels⌋) with the patch size
    PixtralProcessor passes it (14 × 2), and PixtralProcessor.replace_image_token's placeholder: per merged row
    its [IMG] tokens and an [IMG_BREAK], the last one [IMG_END]; only the [IMG] tokens carry no loss."""
    plan = Plan.from_dict({"config": MISTRAL3, "method": "lora", "seq_len": 16, "batch_size": 2,
                           "images_per_sample": 2, "image_size": size, "max_pixels": max_pixels})  # fmt: skip
    batch = vision_batch(MISTRAL3, plan, torch.device("cpu"), seed=0)
    inputs = estimate(plan).to_dict()["inputs"]
    height, width = (int(x) for x in batch["image_sizes"][0])
    assert batch["image_sizes"].tolist() == [[height, width]] * 4
    assert tuple(batch["pixel_values"].shape) == (4, 3, height, width)
    assert batch["pixel_values"].dtype == torch.float32  # what the estimate's pixel bytes count
    assert (height // 14) * (width // 14) == inputs["patches_per_image"] and 4 * inputs["patches_per_image"] == (
        inputs["vision_patches"]
    )
    assert tuple(batch["input_ids"].shape) == (2, inputs["tokens_per_row"])
    row = batch["input_ids"][0].tolist()
    rows, cols = height // 28, width // 28
    image = ([MISTRAL3["image_token_index"]] * cols + [PIXTRAL_TOKENS["[IMG_BREAK]"]]) * rows
    image[-1] = PIXTRAL_TOKENS["[IMG_END]"]
    assert row[: 2 * len(image)] == image + image and 2 * len(image) == inputs["image_tokens_per_row"]
    assert int((batch["labels"] == -100).sum()) == 2 * 2 * rows * cols


@pytest.mark.parametrize(
    ("config", "inputs"),
    [(MISTRAL3, {"images_per_sample": 2}), (MLLAMA, {"images_per_sample": 2}),
     (QWEN3_VL, {"images_per_sample": 1, "video_frames": 3})],
    ids=["mistral3", "mllama", "qwen3-vl-video"],
)  # fmt: skip
def test_the_batch_runs_through_the_model(config: dict[str, Any], inputs: dict[str, int]) -> None:
    """The model takes the batch: its placeholder check (Mistral 3: image tokens = merged features; Llama 3.2
    Vision: the cross-attention mask over the tiles; Qwen3-VL: one video feature per <|video_pad|>, the video's grid
    split per temporal patch at its timestamps for the rope index) passes, a loss comes out."""
    transformers = pytest.importorskip("transformers")
    plan = Plan.from_dict({"config": config, "method": "lora", "seq_len": 8, "batch_size": 1,
                           "image_size": (100, 180)} | inputs)  # fmt: skip
    cfg = transformers.AutoConfig.for_model(**config)
    model = transformers.AutoModelForImageTextToText.from_config(cfg).eval()
    batch = vision_batch(config, plan, torch.device("cpu"), seed=0)
    with torch.no_grad():
        out = model(**batch)
    assert out.logits.shape[1] == batch["input_ids"].shape[1] and torch.isfinite(out.loss)


LLAVA_CLIP_L = {k: v for k, v in LLAVA.items() if k != "vision_config"}  # CLIPVisionConfig's defaults: 336², 14²


@pytest.mark.parametrize(
    ("config", "size"),
    [(LLAVA, None), (LLAVA, (300, 1000)), (LLAVA_CLIP_L, (480, 640)),
     (LLAVA_CLIP_L | {"vision_feature_select_strategy": "full"}, None)],
)  # fmt: skip
def test_llavas_processor_makes_the_estimates_tokens_and_pixels(config: dict, size: tuple | None) -> None:
    """CLIPImageProcessorPil crops any image to the tower's square; LlavaProcessor's own expansion gives each image
    (image_size/patch)² <image> tokens (LlavaConfig's defaults: 336/14 → 576; 577 with the "full" strategy), the
    estimate's count; the tower sees them and the class token."""
    plan = Plan.from_dict({"config": config, "method": "lora", "seq_len": 16, "batch_size": 2, "images_per_sample": 2,
                           "image_size": size})  # fmt: skip
    batch = vision_batch(config, plan, torch.device("cpu"), seed=0)
    inputs = estimate(plan).to_dict()["inputs"]
    side = (config.get("vision_config") or {}).get("image_size", 336)
    assert tuple(batch["pixel_values"].shape) == (2 * 2, 3, side, side)
    assert batch["pixel_values"].dtype == torch.float32
    assert tuple(batch["input_ids"].shape) == (2, inputs["tokens_per_row"])
    per_image = llava_image_tokens(config, batch["pixel_values"], 0)
    assert 2 * per_image == inputs["image_tokens_per_row"]
    assert per_image == (side // 14) ** 2 + (config.get("vision_feature_select_strategy") == "full")
    assert inputs["patches_per_image"] == (side // 14) ** 2 + 1
    image_id = config.get("image_token_index", 32000)
    assert int((batch["input_ids"] == image_id).sum()) == 2 * 2 * per_image
    assert int((batch["labels"] == -100).sum()) == 2 * 2 * per_image


def test_llavas_model_makes_one_feature_per_image_token() -> None:
    """The tiny LLaVA's own get_image_features hands the language model one row per <image> token of the batch."""
    transformers = pytest.importorskip("transformers")
    plan = Plan.from_dict({"config": LLAVA, "method": "lora", "seq_len": 8, "images_per_sample": 1})
    batch = vision_batch(LLAVA, plan, torch.device("cpu"), seed=0)
    model = transformers.LlavaForConditionalGeneration(transformers.LlavaConfig(**LLAVA))
    with torch.no_grad():
        features = model.get_image_features(pixel_values=batch["pixel_values"]).pooler_output
    assert sum(f.shape[0] for f in features) == int((batch["input_ids"] == LLAVA["image_token_index"]).sum())


@pytest.mark.parametrize(
    ("size", "grid"),
    [(None, (1, 1)), ((112, 336), (1, 3)), ((500, 120), (4, 1)), ((1000, 1000), (2, 2)), ((60, 70), (1, 1)),
     ((300, 200), (2, 2))],
)  # fmt: skip
def test_mllamas_processor_makes_the_estimates_tiles(size: tuple | None, grid: tuple[int, int]) -> None:
    """MllamaImageProcessorPil at the tower's tile size: pixel values of every max_num_tiles tile (the unused ones
    zero), the tiles each image uses as the estimate's grid says, one <|image|> token per image (no loss) and
    MllamaProcessor's cross-attention mask: each image's used tiles from its token to the row's end. The grid is
    the processor's canvas (the one that enlarges the image least, else shrinks it least; ties to the smallest)."""
    plan = Plan.from_dict({"config": MLLAMA, "method": "lora", "seq_len": 8, "batch_size": 2,
                           "images_per_sample": 2, "image_size": size})  # fmt: skip
    batch = vision_batch(MLLAMA, plan, torch.device("cpu"), seed=0)
    rows, cols = grid
    inputs = estimate(plan).to_dict()["inputs"]
    assert inputs["image_tokens_per_row"] == 2 and inputs["patches_per_image"] == 4 * 72  # every tile, any size
    assert tuple(batch["pixel_values"].shape) == (2, 2, 4, 3, 112, 112)
    assert batch["pixel_values"].dtype == torch.float32
    assert batch["aspect_ratio_mask"].sum(-1).tolist() == [[rows * cols] * 2] * 2
    assert bool((batch["pixel_values"][:, :, rows * cols :] == 0).all())
    image_id = MLLAMA["image_token_index"]
    assert batch["input_ids"][:, :2].tolist() == [[image_id] * 2] * 2 and batch["input_ids"].shape == (2, 10)
    assert int((batch["labels"] == -100).sum()) == 4
    assert tuple(batch["cross_attention_mask"].shape) == (2, 10, 2, 4)
    assert batch["cross_attention_mask"][0].sum() == (10 + 9) * rows * cols  # from each image's own token on


def test_mllamas_qlora_build_quantizes_and_adapts_what_the_inventory_says() -> None:
    """The QLoRA model the trainer builds: bitsandbytes' Linear4bit where the inventory says bnb_quantized (the
    cross-attention projections and the one-Linear projector too, lm_head not), LoRA on the modules all-linear
    matches in the adapter plan."""
    import re

    from estimator import adapter_plan, build_inventory, parse_config
    from trainer.build import build_model

    plan = Plan(config=MLLAMA, method="qlora", seq_len=16)
    model = build_model(dict(MLLAMA), plan, "cpu")
    quantized, adapted = set(), set()
    for n, m in model.named_modules():
        name = re.sub(r"\.\d+(?=\.|$)", ".{i}", n.replace("base_model.model.", ""))
        if type(m).__name__ == "Linear4bit":
            quantized.add(name.removesuffix(".base_layer"))
        if hasattr(m, "lora_A") and not name.endswith(("lora_A", "lora_B")):
            adapted.add(name)
    inv = build_inventory(parse_config(MLLAMA))
    assert quantized == {t.module for t in inv if t.bnb_quantized}
    assert adapted == {a.module for a in adapter_plan(inv, plan).adapted}
    assert "model.multi_modal_projector" in quantized and "lm_head" not in quantized


@pytest.mark.parametrize("size", [None, (56, 56), (100, 40), (33, 200), (113, 57)])
def test_llava_nexts_processor_makes_the_estimates_tiles_and_tokens(size: tuple | None) -> None:
    """LlavaNextImageProcessorPil cuts each image into its best pinpoint's tiles and the base image, and
    LlavaNextProcessor's own expansion gives it the estimate's <image> tokens; the tiny model's get_image_features
    packs one feature per token (its placeholder check passes on the batch)."""
    transformers = pytest.importorskip("transformers")
    config = json.loads((Path(__file__).parents[1] / "fixtures/configs/llava_next.json").read_text())
    plan = Plan.from_dict({"config": config, "method": "lora", "seq_len": 8, "batch_size": 2, "images_per_sample": 2,
                           "image_size": size})  # fmt: skip
    batch = vision_batch(config, plan, torch.device("cpu"), seed=0)
    inputs = estimate(plan).to_dict()["inputs"]
    tiles = inputs["patches_per_image"] // (4 * 4 + 1)  # tiles and the base image, a class token each
    assert tuple(batch["pixel_values"].shape) == (2 * 2, tiles, 3, 56, 56)
    assert batch["pixel_values"].dtype == torch.float32
    assert tuple(batch["input_ids"].shape) == (2, inputs["tokens_per_row"])
    per_image = llava_next_image_tokens(config, batch, 0)
    assert 2 * per_image == inputs["image_tokens_per_row"]
    image_id = config["image_token_index"]
    assert int((batch["input_ids"] == image_id).sum()) == int((batch["labels"] == -100).sum()) == 2 * 2 * per_image
    model = transformers.LlavaNextForConditionalGeneration(transformers.LlavaNextConfig(**config))
    with torch.no_grad():
        features = model.get_image_features(pixel_values=batch["pixel_values"], image_sizes=batch["image_sizes"])
    assert [f.shape[0] for f in features.pooler_output] == [per_image] * 4
