"""The attention kernel a step runs: transformers' dispatch and torch 2.13's SDPA selection, one test per rule
(docs/accuracy.md lists each rule with its source lines)."""

from __future__ import annotations

from typing import Any

import pytest

from estimator import (
    AttentionPath,
    Plan,
    PlanError,
    attention_path,
    catalog,
    cuda_sdpa_backend,
    gpu_runtime,
    has_mask,
    parse_config,
)

LLAMA_8B = catalog.find_model("llama-3.1-8b").config  # type: ignore[union-attr]  # GQA: 32 heads, 8 KV heads, d=128


def _path(gpu: str | None = "h200", *, cfg: Any = LLAMA_8B, dtype_bytes: int = 2, **plan: Any) -> AttentionPath:
    p = Plan(model="llama-3.1-8b", gpu=gpu, **plan)
    arch = catalog.architecture(catalog.find_gpu(gpu)) if gpu is not None else None
    return attention_path(parse_config(cfg), p, dtype_bytes, arch)


def _cfg(**changes: Any) -> dict[str, Any]:
    return {**LLAMA_8B, **changes}


# ------------------------------------------------------------------ transformers: mask, enable_gqa, repeat_kv


def test_padding_makes_a_mask_only_where_a_row_is_padded_or_sequences_are_packed() -> None:
    assert not has_mask(Plan(model="gpt2", padding="padded", batch_size=1))  # one row is never padded
    assert has_mask(Plan(model="gpt2", padding="padded", batch_size=2))
    assert not has_mask(Plan(model="gpt2", padding="none", batch_size=8))
    assert has_mask(Plan(model="gpt2", padding="packed", batch_size=1))  # packed: a block-diagonal mask


def test_grouped_heads_go_to_sdpa_as_they_are_without_a_mask_and_repeated_with_one() -> None:
    free = _path(padding="none", batch_size=4)
    assert free.enable_gqa and not free.repeat_kv and not free.mask
    masked = _path(padding="padded", batch_size=4)
    assert masked.mask and masked.repeat_kv and not masked.enable_gqa
    wide = _path(cfg=_cfg(head_dim=320), padding="none")  # use_gqa_in_sdpa: head dim <= 256 only
    assert wide.repeat_kv and not wide.enable_gqa


def test_gemma2_runs_eager_whatever_is_asked() -> None:
    cfg = catalog.find_model("gemma-2-9b").config  # type: ignore[union-attr]
    p = attention_path(parse_config(cfg), Plan(model="gemma-2-9b"), 2, None)
    assert p.implementation == p.backend == "eager" and "Gemma 2" in p.reason


# ------------------------------------------------------------------ torch: each backend's constraints


def test_flash_needs_sm80_and_16_bit_and_no_mask() -> None:
    assert _path("a100-80gb").backend == "flash"  # bf16, no mask, sm80
    assert _path("t4", dtype="float16").backend != "flash"  # sm75
    assert _path("a100-80gb", dtype_bytes=4).backend != "flash"  # fp32 (QLoRA's stream)
    assert _path("a100-80gb", padding="padded", batch_size=2).backend != "flash"  # a mask


def test_flash_head_dim_limits() -> None:
    assert _path("a100-80gb", cfg=_cfg(head_dim=256)).backend == "flash"
    assert _path("a100-80gb", cfg=_cfg(head_dim=320)).backend == "efficient"  # > 256 (and repeated: no GQA)
    # training head dims in (192, 224] are refused on sm86/sm89/sm120
    assert _path("rtx-4090", cfg=_cfg(head_dim=208)).backend != "flash"
    assert _path("a100-80gb", cfg=_cfg(head_dim=208)).backend == "flash"


def test_memory_efficient_takes_fp32_and_masks_but_no_grouped_heads() -> None:
    assert _path("a100-80gb", dtype_bytes=4, padding="padded", batch_size=2).backend == "efficient"
    assert _path("a100-80gb", dtype_bytes=4, padding="none").backend == "math"  # fp32 + enable_gqa
    mha = _cfg(num_key_value_heads=32)
    assert _path("a100-80gb", cfg=mha, dtype_bytes=4, padding="none").backend == "efficient"


def test_memory_efficient_takes_bf16_from_sm80_only() -> None:
    # sm75 with bf16 (the fit check flags it too): no flash, no memory-efficient, math
    assert _path("t4", padding="padded", batch_size=2).backend == "math"
    assert _path("t4", dtype="float16", padding="padded", batch_size=2).backend == "efficient"


def test_memory_efficient_head_dim_alignment() -> None:
    odd = _cfg(head_dim=100, num_key_value_heads=32)  # 100 % 8 != 0 (16-bit needs 8)
    assert _path("a100-80gb", cfg=odd, padding="padded", batch_size=2).backend == "math"


def test_cudnn_first_on_sm90_and_sm100_within_its_head_dim() -> None:
    assert _path("h200").backend == "cudnn"
    assert _path("b200").backend == "cudnn"
    assert _path("h200", padding="padded", batch_size=2).backend == "cudnn"  # cuDNN takes masks
    assert _path("h200", cfg=_cfg(head_dim=256)).backend == "flash"  # cuDNN: head dim <= 128
    assert _path("h200", dtype_bytes=4).backend == "math"  # cuDNN and flash need 16-bit


def test_qlora_on_gqa_is_quadratic_unpadded_and_linear_padded() -> None:
    """The issue's example: fp32 attention after prepare_model_for_kbit_training with grouped KV heads."""
    unpadded = _path("h200", method="qlora", dtype_bytes=4, padding="none", batch_size=2)
    padded = _path("h200", method="qlora", dtype_bytes=4, padding="padded", batch_size=2)
    assert unpadded.backend == "math" and unpadded.quadratic
    assert padded.backend == "efficient" and padded.fused


def test_no_gpu_named_uses_the_default_architecture_rules() -> None:
    assert _path(None).backend == "cudnn" and "sm90" in _path(None).reason


def test_each_call_of_a_step_is_selected_on_its_own() -> None:
    """One QLoRA step of a vision-language model on an H200: the decoder's fp32 grouped heads take the math path,
    the vision tower's fp32 attention (one KV head per query head) the memory-efficient kernel."""
    h200 = gpu_runtime(Plan(model="llama-3.1-8b", gpu="h200"))
    assert cuda_sdpa_backend(h200, "float32", 128, gqa=True) == "math"
    assert cuda_sdpa_backend(h200, "float32", 64) == "efficient"
    assert cuda_sdpa_backend(h200, "float32", 64, mask=True) == "efficient"
    assert cuda_sdpa_backend(h200, "bfloat16", 64, mask=True) == "cudnn"  # sm90: cuDNN first, masks allowed
    assert cuda_sdpa_backend(h200, "bfloat16", 192, 128) == "efficient"  # MLA: cuDNN ≤ 128, flash one head dim
    on = {gpu: cuda_sdpa_backend(gpu_runtime(Plan(model="llama-3.1-8b", gpu=gpu)), "bfloat16", 64)
          for gpu in ("a100-80gb", "v100-32gb")}  # fmt: skip
    assert on == {"a100-80gb": "flash", "v100-32gb": "math"}  # sm70: no flash, no bf16 memory-efficient
    assert cuda_sdpa_backend(None, "bfloat16", 64) == "cudnn"  # no GPU named: the default architecture, sm90
    # the decoder's rule is the same rule with the architecture's head dims
    decoder = _path("h200", method="qlora", dtype_bytes=4)
    assert decoder.backend == cuda_sdpa_backend(h200, "float32", 128, gqa=decoder.enable_gqa)


# ------------------------------------------------------------------ pinning


@pytest.mark.parametrize("backend", ["flash", "efficient", "cudnn", "math"])
def test_a_pinned_backend_is_used_when_it_can_run(backend: str) -> None:
    p = _path("h200", sdpa_backend=backend, cfg=_cfg(num_key_value_heads=32))
    assert p.backend == backend and p.pinned


def test_a_pinned_backend_that_cannot_run_is_an_error_that_says_why() -> None:
    with pytest.raises(PlanError, match="sdpa_backend 'flash' cannot run this attention: flash attention needs fp16"):
        _path("h200", sdpa_backend="flash", dtype_bytes=4)
    with pytest.raises(PlanError, match="memory-efficient attention takes no grouped KV heads"):
        _path("h200", sdpa_backend="efficient")
    with pytest.raises(PlanError, match="flash attention needs sm80-sm121"):
        _path("v100-32gb", sdpa_backend="flash", dtype="float16")


def test_the_cpu_runs_its_flash_kernel_or_math() -> None:
    assert _path(None, device="cpu", padding="padded", batch_size=2).backend == "cpu_flash"
    assert _path(None, device="cpu", sdpa_backend="math").backend == "math"
    with pytest.raises(PlanError, match="no CPU kernel"):
        _path(None, device="cpu", sdpa_backend="cudnn")
