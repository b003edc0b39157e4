"""The image batch the trainer builds with transformers' own image processor, against the estimate's inputs."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("PIL")

import torch

from estimator import Plan, estimate
from trainer.accuracy import GEMMA3, QWEN2_5_VL, QWEN2_VL
from trainer.vision import image_batch

pytestmark = pytest.mark.train


@pytest.mark.parametrize(
    ("config", "size", "max_pixels"),
    [(QWEN2_VL, (448, 448), 0), (QWEN2_VL, (300, 1000), 0), (QWEN2_5_VL, (1000, 700), 200_000),
     (QWEN2_VL, None, 100_000)],
)  # fmt: skip
def test_the_processors_tokens_and_patches_are_the_estimates(config: dict, size: tuple | None, max_pixels: int) -> None:
    plan = Plan.from_dict({"config": config, "method": "lora", "seq_len": 16, "batch_size": 2, "images_per_sample": 2,
                           "image_size": size, "max_pixels": max_pixels})  # fmt: skip
    batch = image_batch(config, plan, torch.device("cpu"), seed=0)
    inputs = estimate(plan).to_dict()["inputs"]
    assert tuple(batch["input_ids"].shape) == (2, inputs["tokens_per_row"])
    assert batch["pixel_values"].shape == (inputs["vision_patches"], 3 * 2 * 14 * 14)
    assert batch["pixel_values"].dtype == torch.float32  # what the estimate's pixel bytes count
    image_tokens = int((batch["input_ids"][0] == config["image_token_id"]).sum())
    assert image_tokens + 2 * 2 == inputs["image_tokens_per_row"]  # two delimiters per image
    assert int(batch["mm_token_type_ids"].sum()) == 2 * image_tokens
    assert int((batch["labels"] == -100).sum()) == 2 * image_tokens  # the image tokens carry no loss


@pytest.mark.parametrize("size", [None, (300, 1000)])
def test_gemma3s_processor_makes_the_estimates_tokens_and_pixels(size: tuple | None) -> None:
    """Gemma3ImageProcessorPil resizes any image to the tower's square; each image is its pooled tokens between
    "\n\n<start_of_image>" and "<end_of_image>\n\n"; only the image tokens are marked and carry no loss."""
    plan = Plan.from_dict({"config": GEMMA3, "method": "lora", "seq_len": 16, "batch_size": 2, "images_per_sample": 2,
                           "image_size": size})  # fmt: skip
    batch = image_batch(GEMMA3, plan, torch.device("cpu"), seed=0)
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


def test_a_text_model_gets_no_image_batch() -> None:
    plan = Plan.from_dict({"model": "llama-3.2-1b", "seq_len": 16})
    with pytest.raises(ValueError, match="image batches are built for qwen2_vl, qwen2_5_vl, gemma3 only"):
        image_batch({"model_type": "llama"}, plan, torch.device("cpu"), seed=0)
