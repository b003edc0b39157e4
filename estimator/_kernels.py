"""The attention kernel a training step actually runs: transformers' dispatch, then torch's SDPA backend selection.

Two libraries decide, and each is modelled as its code is written (docs/accuracy.md has the rules with their source
lines):

* **transformers** (``integrations/sdpa_attention.py``, ``masking_utils.py``, 5.24): a padding mask is built as a
  bool ``(b, 1, s, s)`` tensor only when some token is masked (``sdpa_mask`` skips an all-ones mask and relies on
  ``is_causal``); packed sequences (position ids that restart) always get one. With grouped KV heads it passes
  ``enable_gqa=True`` only when there is no mask (``use_gqa_in_sdpa``: no mask and head dim ≤ 256 on CUDA and the
  CPU); otherwise it expands K/V to the query heads first (``repeat_kv``), a copy per layer.
* **torch** (``aten/src/ATen/native/transformers/cuda/sdp_utils.cpp``, ``sdp_utils_cpp.h``, 2.13): tries the
  backends in its priority order (cuDNN first on sm90/sm100 when the bundled cuDNN prefers it, else flash,
  memory-efficient, math) and takes the first whose constraints pass: flash needs sm80-sm121, fp16/bf16, no mask,
  head dim ≤ 256; memory-efficient sm50-sm121, fp16/fp32 (bf16 from sm80), head dim aligned, no grouped heads
  (``check_batch_size_and_num_heads_dense<false>``); cuDNN sm80-sm121, fp16/bf16, head dim ≤ 128 and a multiple
  of 8, masks allowed, grouped heads allowed; math always. On the CPU: the CPU flash kernel for every float dtype,
  masks and grouped heads allowed. ``sdpa_backend`` pins one backend as ``torch.nn.attention.sdpa_kernel`` does:
  if it cannot run the call, torch raises, and so does the estimate (``PlanError`` saying why).

The chosen path decides what the attention keeps for backward (``estimator._memory``): O(s) for the fused kernels
(q, k, v, output, a log-sum-exp), O(s²) for math and eager (the b·a·s² probabilities).
"""

from __future__ import annotations

from dataclasses import dataclass

from ._arch import Architecture, attention_implementation
from ._errors import PlanError
from ._plan import Plan
from .catalog import ArchRuntime

FUSED = ("flash", "efficient", "cudnn", "cpu_flash")
"""Backends that keep O(s) per layer (q, k, v, output, log-sum-exp)."""

PREFERS_CUDNN = ((9, 0), (10, 0))
"""Compute capabilities where torch puts cuDNN first (``check_prefer_cudnn_attention``: sm90/sm100 with cuDNN >
9.15). cuDNN and flash keep the same tensors for backward, so the memory does not depend on which of them wins."""


@dataclass(frozen=True)
class AttentionPath:
    """How one decoder layer's attention runs, and why."""

    implementation: str  # "sdpa", "eager" or "flash_attention_2" (what transformers runs)
    backend: str  # sdpa: "flash", "efficient", "cudnn", "math" or "cpu_flash"; else the implementation
    mask: bool  # an attention mask is materialized (padded batch of more than one row, or packed sequences)
    repeat_kv: bool  # K/V expanded to the query heads before the kernel (grouped heads with a mask)
    enable_gqa: bool  # grouped KV heads passed to SDPA as they are
    dtype_bytes: int  # bytes per element of q, k, v
    pinned: bool  # the plan pinned the SDPA backend
    reason: str  # why this kernel, in words

    @property
    def fused(self) -> bool:
        """Keeps O(s) per layer (a fused SDPA kernel or flash_attention_2)."""
        return self.backend in FUSED or self.implementation == "flash_attention_2"

    @property
    def quadratic(self) -> bool:
        """Keeps the b·a·s² attention probabilities (math, eager)."""
        return self.backend in ("math", "eager")


def has_mask(plan: Plan, rows: int | None = None) -> bool:
    """Whether transformers builds an attention mask for padding: some row padded (``padded`` with more than one row:
    a single row is never padded, and an all-ones mask is skipped), or packed sequences (always a block-diagonal
    mask). ``rows``: the forward's rows (default the plan's: pairs run chosen and rejected as two rows)."""
    rows = plan.rows if rows is None else rows
    return plan.padding == "packed" or (plan.padding == "padded" and rows > 1)


def _cuda_checks(arch: Architecture, cc: tuple[int, int], dtype: str, mask: bool, gqa: bool) -> dict[str, str]:
    """Why each CUDA backend cannot run the decoder's attention (an empty string: it can): ``call_checks`` with the
    architecture's head dims."""
    v = arch.v_head_dim if arch.v_head_dim_differs else arch.attn_head_dim
    return call_checks(cc, dtype, arch.attn_head_dim, v, mask, gqa)


def call_checks(cc: tuple[int, int], dtype: str, d: int, v: int, mask: bool, gqa: bool) -> dict[str, str]:
    """Why each CUDA backend cannot run one SDPA call (an empty string: it can), as torch 2.13's constraints say.

    ``dtype``: "float32", "float16" or "bfloat16" (q/k/v); ``d``, ``v``: the head dims of q/k and of v; ``mask``: an
    attention mask is passed; ``gqa``: grouped KV heads passed with ``enable_gqa``.
    """
    sm = f"sm{cc[0]}{cc[1]}"
    half = dtype != "float32"
    flash = ""
    if not (8, 0) <= cc <= (12, 1):
        flash = f"flash attention needs sm80-sm121 (this GPU is {sm})"
    elif not half:
        flash = "flash attention needs fp16/bf16 q/k/v"
    elif v != d:
        flash = f"flash attention needs one head dim for q, k and v (MLA: {d} and {v})"
    elif mask:
        flash = "flash attention takes no attention mask"
    elif d > 256:
        flash = f"flash attention needs head dim ≤ 256 (it is {d})"
    elif cc in ((8, 6), (8, 9), (12, 0), (12, 1)) and 192 < d <= 224:
        flash = f"flash attention cannot train head dim {d} on {sm}"
    efficient = ""
    align = 8 if half else (4 if cc >= (8, 0) else 1)
    if not (5, 0) <= cc <= (12, 1):
        efficient = f"memory-efficient attention needs sm50-sm121 (this GPU is {sm})"
    elif dtype == "bfloat16" and cc < (8, 0):
        efficient = "memory-efficient attention takes bf16 from sm80 only"
    elif d % align:
        efficient = f"memory-efficient attention needs the head dim a multiple of {align}"
    elif gqa:
        efficient = "memory-efficient attention takes no grouped KV heads in torch 2.13"
    cudnn = ""
    if not (8, 0) <= cc <= (12, 1):
        cudnn = f"cuDNN attention needs sm80-sm121 (this GPU is {sm})"
    elif not half:
        cudnn = "cuDNN attention needs fp16/bf16 q/k/v"
    elif d > 128 or d % 8 or v != d and (v > 128 or v % 8):
        cudnn = f"cuDNN attention needs head dim ≤ 128 and a multiple of 8 (it is {d})"
    return {"flash": flash, "efficient": efficient, "cudnn": cudnn, "math": ""}


def cuda_sdpa_backend(
    gpu: ArchRuntime | None, dtype: str, d: int, v: int | None = None, mask: bool = False, gqa: bool = False
) -> str:
    """The backend torch's CUDA selection takes for one SDPA call (``call_checks`` in ``_order``) on ``gpu``, the
    plan's GPU architecture (None: the default architecture's rules). A step's calls can differ: under QLoRA a
    vision tower's fp32 attention (no grouped heads) runs the memory-efficient kernel where the decoder's fp32
    grouped heads take the math path. The trace runs each call as this says (``trainer.traced.cuda_kernels``)."""
    cc = _compute_capability(gpu)
    why_not = call_checks(cc, dtype, d, d if v is None else v, mask, gqa)
    return next(backend for backend in _order(cc) if not why_not[backend])


def _compute_capability(gpu: ArchRuntime | None) -> tuple[int, int]:
    """The architecture's compute capability; the default architecture's (sm90) where none is known."""
    return gpu.compute_capability if gpu is not None and gpu.compute_capability is not None else (9, 0)


def _order(cc: tuple[int, int]) -> tuple[str, ...]:
    if cc in PREFERS_CUDNN:
        return ("cudnn", "flash", "efficient", "math")
    return ("flash", "efficient", "math", "cudnn")


def attention_dtype(plan: Plan, dtype_bytes: int) -> str:
    """The dtype of q/k/v: fp32 when the stream is fp32 (QLoRA after the kbit upcast), else the plan's 16-bit one."""
    if dtype_bytes == 4:
        return "float32"
    return "float16" if plan.dtype == "float16" else "bfloat16"


def attention_path(
    arch: Architecture,
    plan: Plan,
    dtype_bytes: int,
    gpu: ArchRuntime | None,
    length: int | None = None,
    image_blocks: bool = False,
) -> AttentionPath:
    """The attention kernel the plan's training step runs (``gpu``: the plan's GPU architecture, None for the
    default architecture's rules; ignored on the CPU; ``length``: the row length, default the plan's text tokens).
    ``PlanError`` when a pinned backend cannot run it. A padding mask, or a local window (sliding window, chunked
    attention) no longer than the row, gives a mask; the window's layers are then counted as all the layers.
    ``image_blocks``: Gemma 3's rows hold images, whose tokens attend to each other both ways: transformers builds
    its masks whatever the row (``create_masks_for_vision_model``: ``block_sequence_ids`` and the sliding window's
    overlay turn off ``allow_is_causal_skip``)."""
    impl = attention_implementation(arch.model_type, plan.attn_implementation)
    length = plan.row_text_tokens if length is None else length
    mask = has_mask(plan) or (arch.sliding_window > 0 and length >= arch.sliding_window) or image_blocks
    grouped = arch.num_key_value_heads != arch.num_attention_heads
    enable_gqa = grouped and not mask and arch.attn_head_dim <= 256
    repeat = grouped and not enable_gqa
    pinned = plan.sdpa_backend != "auto"
    if impl != "sdpa":
        who = {"gemma2": "Gemma 2", "gpt_oss": "gpt-oss"}.get(arch.model_type, arch.model_type)
        why = f"{who} has no SDPA path in transformers" if impl != plan.attn_implementation else "as asked"
        return AttentionPath(impl, impl, mask, impl == "eager" and grouped, False, dtype_bytes, pinned, why)
    if arch.kv_broadcast:  # SDPA broadcasts the single K/V head: no fused kernel takes heads that differ
        why = "one K/V head broadcast to every query head (Falcon's multi-query): SDPA's math path"
        return AttentionPath(impl, "math", mask, False, False, dtype_bytes, pinned, why)
    if plan.device == "cpu":
        auto = "math" if arch.v_head_dim_differs else "cpu_flash"  # the CPU flash kernel needs one head dim
        backend = {"auto": auto, "flash": "cpu_flash", "math": "math"}.get(plan.sdpa_backend)
        if backend is None:
            raise PlanError(
                f"sdpa_backend {plan.sdpa_backend!r} has no CPU kernel (the CPU runs flash or math); "
                "use 'auto', 'flash' or 'math' with device cpu"
            )
        why = "pinned with sdpa_kernel" if pinned else "the CPU's flash kernel (any float dtype, masks, grouped heads)"
        if backend == "math" and not pinned:
            why = "the CPU's flash kernel needs one head dim for q, k and v (MLA): SDPA's math path"
        return AttentionPath("sdpa", backend, mask, repeat, enable_gqa, dtype_bytes, pinned, why)
    cc = _compute_capability(gpu)
    why_not = _cuda_checks(arch, cc, attention_dtype(plan, dtype_bytes), mask, enable_gqa)
    if pinned:
        backend = plan.sdpa_backend
        if why_not[backend]:
            raise PlanError(
                f"sdpa_backend {backend!r} cannot run this attention: {why_not[backend]}; "
                "use sdpa_backend 'auto' (or 'math', which runs everything)"
            )
        return AttentionPath(impl, backend, mask, repeat, enable_gqa, dtype_bytes, pinned,
                             f"pinned with sdpa_kernel on sm{cc[0]}{cc[1]}")  # fmt: skip
    skipped: list[str] = []
    for backend in _order(cc):
        if not why_not[backend]:
            why = f"torch's choice on sm{cc[0]}{cc[1]}" + (": " + "; ".join(skipped) if skipped else "")
            return AttentionPath(impl, backend, mask, repeat, enable_gqa, dtype_bytes, pinned, why)
        skipped.append(why_not[backend])
    raise AssertionError("math always runs")  # pragma: no cover


__all__ = ["FUSED", "AttentionPath", "attention_dtype", "attention_path", "cuda_sdpa_backend", "has_mask"]
