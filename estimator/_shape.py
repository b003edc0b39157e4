"""The shape of one training step: how many rows the forward runs and how long each row is.

The plan says what a sample holds (``batch_size`` samples of ``seq_len`` text tokens, images, an objective); the
model sees rows: chosen and rejected of a pair are two rows of one concatenated forward (TRL's preference and reward
trainers), GRPO's rows are prompt + completion, and a vision-language model's rows hold the image and video tokens
its processors insert next to the text. Every phase of the memory model, the attention kernel and the time model read
the step's shape from here.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._arch import Architecture
from ._plan import Plan
from ._vision import image_patches, image_tokens, video_patches, video_tokens


@dataclass(frozen=True)
class StepShape:
    """Rows and row length of the training forward, and what the length is made of."""

    rows: int  # rows of the training forward (2 × batch_size for pairs)
    length: int  # tokens per row the language model sees (text + image and video tokens)
    text: int  # text tokens per row (seq_len, plus the completion for GRPO)
    image_tokens: int = 0  # image tokens per row in the language model (delimiters included)
    patches: int = 0  # patches the vision encoder sees in the step (all rows' images and videos)
    patches_per_image: int = 0
    video_tokens: int = 0  # video tokens per row (one video per sample, delimiters included)
    patches_per_video: int = 0

    @property
    def tokens(self) -> int:
        """Tokens of the forward: rows × length."""
        return self.rows * self.length

    @property
    def tower_run(self) -> int:
        """Patches of the tower's largest single run: the model runs it once on all the step's images and once on
        all its videos (``get_image_features``, then ``get_video_features``)."""
        videos = self.rows * self.patches_per_video
        return max(videos, self.patches - videos)


def step_shape(arch: Architecture, plan: Plan) -> StepShape:
    """The rows and row length ``plan`` runs on ``arch``."""
    text = plan.row_text_tokens
    tower = arch.vision
    if tower is None or not (plan.images_per_sample or plan.video_frames):
        return StepShape(rows=plan.rows, length=text, text=text)
    per_image = image_patches(tower, plan.image_size, plan.max_pixels) if plan.images_per_sample else 0
    images = plan.images_per_sample * image_tokens(tower, plan.image_size, plan.max_pixels)
    per_video = video_patches(tower, plan.video_frames, plan.image_size, plan.max_pixels)
    video = video_tokens(tower, plan.video_frames, plan.image_size, plan.max_pixels)
    return StepShape(
        rows=plan.rows, length=text + images + video, text=text, image_tokens=images,
        patches=plan.rows * (plan.images_per_sample * per_image + per_video), patches_per_image=per_image,
        video_tokens=video, patches_per_video=per_video,
    )  # fmt: skip


def local_mask(arch: Architecture, length: int) -> bool:
    """Whether layers with a local window (sliding window, Llama 4's chunked attention) get a materialized mask:
    transformers skips it only while the row is shorter than the window (``_ignore_causal_mask_sdpa``:
    ``kv_length >= local_attention_size`` keeps it)."""
    return arch.sliding_window > 0 and length >= arch.sliding_window
