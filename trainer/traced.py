"""The traced dry run: the same training step as ``trainer.run``, on fake tensors, at real sizes, on a CPU.

Nothing is allocated: ``FakeTensorMode`` gives every tensor a shape, dtype and storage size but no data, and the
``MemoryTracker`` counts storages exactly as in a real run. An 8B QLoRA step takes seconds on a laptop CPU.

Recipe (each step works around something found by experiment on this stack):

1. Build on ``meta`` (``trainer.build.meta_model``: for QLoRA the bitsandbytes layers are already in place),
   enable gradient checkpointing, and apply PEFT on meta. Modules must not be *created* under fake mode: PEFT's
   ``.to()`` then fails to swap parameters that carry weakrefs.
2. ``materialize(..., fake=True)`` under ``FakeTensorMode(allow_non_fake_inputs=True)`` allocates every tensor as a
   fake CPU tensor, one per distinct meta tensor (ties survive). A 4-bit weight becomes a plain uint8 ``Parameter``
   with the ``quant_state`` that ``bnb.functional.quantize_4bit`` returns under fake mode (``Params4bit`` itself
   cannot wrap a fake tensor); the real ``bnb.nn.Linear4bit`` and PEFT's ``lora.Linear4bit`` modules run as they
   are, so their forward (clone included) is the real one. Non-4-bit 16-bit params are made fp32 when the plan
   runs ``prepare_model_for_kbit_training`` (the real run's prepare step happens before PEFT; here PEFT comes
   first, so the upcast is done at materialization).
3. ``bnb.functional.name2qmap["dynamic"]`` is computed outside fake mode (it calls ``.item()``), and transformers'
   ``find_packed_sequence_indices`` is patched to return None for fake input: its ``is_tracing`` check treats a
   fake tensor as a compile trace and would materialize a (B, 1, S, S) mask that the real run never builds.
4. Fake *cuda* cannot run autograd on a CPU-only build, so the step runs on fake ``cpu``. For a plan whose
   ``device`` is ``cuda`` the tracker rounds to 512 bytes (as the caching allocator does) and AdamW/SGD use
   ``foreach=True`` (torch's default on CUDA); attention uses the CPU SDPA kernel that allocates as the CUDA one
   does (``cuda_kernels``).

5. An objective (DPO, KTO, GRPO) runs TRL's own trainer around the fake model, as the real run does
   (``trainer.objectives``; ``traced_objective``). Its trainer is made outside fake mode with transformers'
   move-to-device skipped (the model is already on the fake CPU). Fake tensors hold no values, so the values the
   step reads are stood in for (``StandInValues``: a scalar read answers 1, a boolean mask selects every element;
   only logging and per-sequence statistics read them), transformers' mask skip reads "all ones" for an unpadded
   batch's attention mask (``fake_patches``), and GRPO's decoding loop stops after ``max_completion_length``
   tokens (``generation_to_length``), as the real run's does. Full fine-tuning with a reference copy is refused.
6. A vision-language model's batch is made with real tensors by its own processors, and the entries whose values
   the model reads (patch grids, image sizes, Idefics3's pixels: ``real_inputs``) stay real through the step
   (``RealIndex``); the index computations that read the batch's values run on the real batch
   (``_patch_vision_indexing``). A scalar read of a fake tensor answers 1, so a read missed here would shape the
   step from a stand-in value: ``TRACED_VS_REAL_CASES`` (``tests/trainer/test_accuracy.py``) holds every vision
   family's trace to its real run.

What it cannot see, like the tracker on a real run: the CUDA context, the caching allocator's reserve and
fragmentation, cuBLAS workspaces, and scratch memory inside fused kernels.

Command line::

    python -m trainer.traced --plan plan.json [--config config.json] [--steps N] [--extrapolate] --out result.json
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from estimator import (
    CUDA_ALLOC_ROUND,
    Plan,
    adapter_plan,
    build_inventory,
    cuda_sdpa_backend,
    dtype_flow,
    gpu_runtime,
    parse_config,
)

from . import depth
from .build import (
    BuildError,
    Built,
    add_chunked_loss,
    assemble,
    enable_gc,
    import_bitsandbytes,
    lora_config,
    make_config,
    materialize,
    meta_model,
    stack_module,
    text_vocab_size,
)
from .objectives import objective
from .run import (
    Batch,
    cli,
    plan_notes,
    resolve_config,
    sdpa_pin,
    shape_batch,
    tracked_figures,
    tracking,
    train_step,
    versions,
)
from .tracker import MemoryTracker
from .vision import vision_batch


@contextlib.contextmanager
def fake_patches(packed: bool = False, padded: bool = False, model_type: str | None = None) -> Iterator[None]:
    """The global patches the fake run needs; restored on exit. ``packed``: the batch packs sequences, so
    transformers' packed-sequence detection runs as it is (under fake tensors it then always builds the mask).
    ``padded``: the batch's attention mask has padding, so transformers builds the mask, as under fake tensors it
    always does; without padding (an objective's collator passes an all-ones mask) transformers reads the mask's
    values and skips it, and so does the trace (``is_tracing`` answers False for a fake mask, and the read of its
    values answers "all ones": ``StandInValues``). ``model_type``: the vision models' patches are made for that
    model's modules only (none for a text model; every one when None)."""
    bnbf = stack_module("bitsandbytes.functional")
    mu = stack_module("transformers.masking_utils")
    from torch._subclasses.fake_tensor import FakeTensor

    if "dynamic" not in bnbf.name2qmap:
        bnbf.name2qmap["dynamic"] = bnbf.create_dynamic_map()
    original, original_tracing = mu.find_packed_sequence_indices, mu.is_tracing

    def find_packed_sequence_indices(position_ids: torch.Tensor) -> Any:
        # Unpacked batches are one sequence per row (positions 0..S-1), for which the real function returns None.
        if isinstance(position_ids, FakeTensor) and not packed:
            return None
        return original(position_ids)

    def is_tracing(tensor: Any = None) -> bool:
        if isinstance(tensor, FakeTensor) and not padded:
            return False
        return bool(original_tracing(tensor))

    mu.find_packed_sequence_indices, mu.is_tracing = find_packed_sequence_indices, is_tracing
    restore_moe = _patch_grouped_mm(FakeTensor)
    restore_dora = _patch_dora_dequantize()
    restore_vision = _patch_vision_indexing(model_type)
    try:
        yield
    finally:
        mu.find_packed_sequence_indices, mu.is_tracing = original, original_tracing
        restore_moe()
        restore_dora()
        restore_vision()


class RealIndex(torch.Tensor):
    """A small index tensor (patch boundaries per image or window, an image's size) that stays real under the fake
    mode: the vision attention splits its batch by ``(cu_seqlens[1:] - cu_seqlens[:-1]).tolist()``, LLaVA-NeXT
    picks an image's tiles from its ``image_sizes`` row, values a fake tensor lacks (a scalar read of one answers 1,
    ``StandInValues``). Ops on indices alone run real; an op that also takes the step's fake tensors (a split of the
    image features by the tokens per image, a slice to an image's patch rows) gets the index's values: a Python
    number for a scalar, a plain tensor otherwise."""

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: Any = (), kwargs: Mapping[str, Any] | None = None) -> Any:
        from torch._subclasses.fake_tensor import FakeTensor, unset_fake_temporarily
        from torch.utils import _pytree as pytree

        kwargs = dict(kwargs or {})
        if any(isinstance(t, FakeTensor) for t in pytree.tree_leaves((args, kwargs))):
            args, kwargs = pytree.tree_map(_index_values, (args, kwargs))
            return func(*args, **kwargs)
        with unset_fake_temporarily():
            return super().__torch_function__(func, types, args, kwargs)  # type: ignore[no-untyped-call]


def real_inputs(model_type: str) -> tuple[str, ...]:
    """The entries of a vision-language model's batch whose values the model reads, kept real in the trace
    (``RealIndex``): Qwen-VL's patch grids (``image_grid_thw``, ``video_grid_thw``: the tower splits its patches by
    them), the images' sizes (LLaVA-NeXT picks an image's tiles and unpads its features by them, Pixtral cuts each
    image's patches and merges them by them), and for Idefics3 and SmolVLM the pixels themselves (the model drops
    the all-zero padding images and splits the features by the images left, per sample)."""
    names: tuple[str, ...] = ("image_grid_thw", "video_grid_thw", "image_sizes")
    if model_type in ("idefics3", "smolvlm"):
        names += ("pixel_values", "pixel_attention_mask")
    return names


def _index_values(x: Any) -> Any:
    """A ``RealIndex`` as plain values (a Python number for a scalar); anything else as it is."""
    if not isinstance(x, RealIndex):
        return x
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    with unset_fake_temporarily(), torch._C.DisableTorchFunctionSubclass():
        return x.item() if x.dim() == 0 else x.as_subclass(torch.Tensor)


VISION_INDEXING = {
    "transformers.models.qwen2_vl.modeling_qwen2_vl": (
        ("get_vision_attention_seqlens", "get_vision_position_ids"), "Qwen2VLModel"),
    "transformers.models.qwen2_5_vl.modeling_qwen2_5_vl": (
        ("get_vision_attention_seqlens", "get_vision_position_ids", "get_vision_window_index"), "Qwen2_5_VLModel"),
    "transformers.models.qwen3_vl.modeling_qwen3_vl": (
        ("get_vision_attention_seqlens", "get_vision_position_ids", "get_vision_interpolation_indices_and_weights"),
        "Qwen3VLModel"),
    "transformers.models.qwen3_vl_moe.modeling_qwen3_vl_moe": (
        ("get_vision_attention_seqlens", "get_vision_position_ids", "get_vision_interpolation_indices_and_weights"),
        "Qwen3VLMoeModel"),
}  # fmt: skip
"""Where a vision-language model computes indices from the batch's values (the patch grid, the image tokens'
places): the real run's values, computed outside the fake mode from the real batch the processor made."""


def _patch_vision_indexing(model_type: str | None = None) -> Callable[[], None]:
    """The vision models' index computations (cumulative patch lengths per image, rotary positions, window order,
    3-D rope positions, the image tokens' mask, Qwen3-VL's position-grid interpolation) read tensor values, which
    fake tensors do not have; they run on the real batch (made before the fake mode) with the fake mode suspended,
    and return the real run's indices. Qwen3-VL's DeepStack gathers the image tokens' hidden states by a boolean
    mask: ``_deepstack_process`` takes their places from the real placeholder masks. ``model_type``: only its
    modeling module is patched (and imported), every one when None."""
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    def wanted(module_name: str) -> bool:
        return model_type is None or module_name == f"transformers.models.{model_type}.modeling_{model_type}"

    def real(fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with unset_fake_temporarily():
                out = fn(*args, **kwargs)
            if fn.__name__ == "get_vision_attention_seqlens":
                return out[0].as_subclass(RealIndex), out[1]
            if fn.__name__ == "get_vision_window_index":
                return out[0], out[1].as_subclass(RealIndex)
            if fn.__name__ == "get_vision_interpolation_indices_and_weights":  # read by ops on fake tensors
                return tuple(t.as_subclass(torch.Tensor) for t in out)
            if fn.__name__ == "get_placeholder_mask":  # the image and video tokens' real places, for DeepStack
                with unset_fake_temporarily():
                    REAL_PLACEHOLDERS[:] = [m[..., 0] for m in out]
            return out

        return wrapper

    saved: list[tuple[Any, str, Any]] = []
    for name, (functions, model) in VISION_INDEXING.items():
        if not wanted(name):
            continue
        try:
            module = stack_module(name)
        except ImportError:  # pragma: no cover - an older transformers
            continue
        cls = getattr(module, model)
        targets = [(module, f) for f in functions] + [(cls, "get_rope_index"), (cls, "get_placeholder_mask")]
        for owner, attr in targets:
            original = owner.__dict__[attr] if isinstance(owner, type) else getattr(owner, attr)
            saved.append((owner, attr, original))
            setattr(owner, attr, real(original))

    for name, text in DEEPSTACK.items():  # the image tokens' hidden states gathered and scattered by the real mask
        if not wanted(name):
            continue
        try:
            text_model = getattr(stack_module(name), text)
        except (ImportError, AttributeError):  # pragma: no cover - an older transformers
            continue
        saved.append((text_model, "_deepstack_process", text_model.__dict__["_deepstack_process"]))
        text_model._deepstack_process = _deepstack_process

    def restore() -> None:
        for owner, attr, original in saved:
            setattr(owner, attr, original)

    return restore


DEEPSTACK = {
    "transformers.models.qwen3_vl.modeling_qwen3_vl": "Qwen3VLTextModel",
    "transformers.models.qwen3_vl_moe.modeling_qwen3_vl_moe": "Qwen3VLMoeTextModel",
}
"""Text models whose DeepStack step indexes the hidden states by the image tokens' boolean mask."""
REAL_PLACEHOLDERS: list[torch.Tensor] = []
"""The image and video tokens' masks (batch, seq) of the step's batch, real, as ``get_placeholder_mask`` made them."""


def _deepstack_process(self: Any, hidden_states: Any, visual_pos_masks: Any, visual_embeds: Any) -> Any:
    """``Qwen3VLTextModel._deepstack_process`` with the visual positions taken from the real placeholder masks (the
    mask it is given went through fake ops: its boolean index has no known count): the same clone, gather, addition
    and scatter, by the positions a boolean index resolves to (``nonzero``), as the real run's indexing does."""
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    del visual_pos_masks
    with unset_fake_temporarily():
        image, video = REAL_PLACEHOLDERS
        index = tuple((image | video).nonzero(as_tuple=True))
    visual_embeds = visual_embeds.to(hidden_states.device, hidden_states.dtype)
    hidden_states = hidden_states.clone()
    hidden_states[index] = hidden_states[index] + visual_embeds
    return hidden_states


def _patch_dora_dequantize() -> Callable[[], None]:
    """DoRA reads the base weight through PEFT's ``dequantize_module_weight``, which recognizes ``Params4bit`` by
    class name; the fake 4-bit weight is a plain ``Parameter`` with a ``quant_state``, so dequantize it with the
    same bitsandbytes op the real path uses."""
    try:
        dora = stack_module("peft.tuners.lora.dora")
    except ImportError:  # pragma: no cover
        return lambda: None
    original = dora.dequantize_module_weight
    bnbf = stack_module("bitsandbytes.functional")

    def dequantize_module_weight(module: torch.nn.Module) -> Any:
        weight = getattr(module, "weight", None)
        qs = getattr(weight, "quant_state", None)
        if isinstance(weight, torch.Tensor) and qs is not None and type(weight).__name__ != "Params4bit":
            return bnbf.dequantize_4bit(weight.data, qs)
        return original(module)

    dora.dequantize_module_weight = dequantize_module_weight

    def restore() -> None:
        dora.dequantize_module_weight = original

    return restore


def _patch_grouped_mm(fake_type: type) -> Callable[[], None]:
    """MoE experts: torch's meta kernel for ``_grouped_mm`` accepts only bf16, the real CPU kernel any float.

    With fp32 experts (QLoRA's upcast of non-quantized params) the fake run would stop where the real CPU run
    goes on, so for fake non-bf16 weights transformers' ``grouped_mm_fallback`` op (same output) is used.
    """
    try:
        moe = stack_module("transformers.integrations.moe")
    except ImportError:  # pragma: no cover - older transformers without fused experts
        return lambda: None
    original = getattr(moe, "_can_use_grouped_mm", None)
    if original is None:  # pragma: no cover
        return lambda: None

    def _can_use_grouped_mm(input: torch.Tensor, weight: torch.Tensor, offs: torch.Tensor) -> bool:
        if isinstance(weight, fake_type) and weight.dtype != torch.bfloat16:
            return False
        return bool(original(input, weight, offs))

    moe._can_use_grouped_mm = _can_use_grouped_mm

    def restore() -> None:
        moe._can_use_grouped_mm = original

    return restore


class StandInValues(TorchDispatchMode):  # type: ignore[no-untyped-call]
    """Values for the data-dependent reads of an objective's step, which fake tensors cannot answer.

    TRL's trainers log metrics with ``.item()`` (and branch on them: ``if total_tokens > 0``) and select tokens with
    boolean masks (``mean_logits[mask]``). Under fake tensors a scalar read raises and a mask selection has no
    size. Here a scalar read answers 1 (``True``, ``1.0``) and a mask selects every element (``nonzero`` of all
    positions: the largest the selection can be). Both only feed logging or per-sequence statistics (b·s elements
    at most); no tensor of the model's step takes its size from them. Enter it inside the ``FakeTensorMode``.

    Each stand-in is logged by where it was read (``reads``: the innermost frame outside torch's and this
    project's dispatch code, counted); ``unexplained`` names the sites not known to be harmless (``KNOWN_READS``).
    """

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.reads: dict[str, int] = {}

    def _log(self) -> None:
        frame = sys._getframe(2)
        while frame.f_back is not None and any(part in frame.f_code.co_filename for part in _DISPATCH_CODE):
            frame = frame.f_back
        name = frame.f_code.co_filename
        site = f"{name.split('site-packages/')[-1]}:{frame.f_lineno} ({frame.f_code.co_name})"
        self.reads[site] = self.reads.get(site, 0) + 1

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        from torch._subclasses.fake_tensor import FakeTensor

        kwargs = kwargs or {}
        aten = torch.ops.aten
        fake = bool(args) and isinstance(args[0], FakeTensor)  # a real tensor (an image batch's) has its values
        if func is aten._local_scalar_dense.default and fake:
            self._log()
            t = args[0]
            return True if t.dtype == torch.bool else 1.0 if t.dtype.is_floating_point else 1
        if func is aten.nonzero.default and fake:
            self._log()
            return _every_position(args[0])
        masks = [i for i in args[1] if i is not None and i.dtype == torch.bool] if func is aten.index.Tensor else []
        if any(isinstance(m, FakeTensor) for m in masks):
            self._log()
            indices: list[Any] = []
            for i in args[1]:
                if i is not None and i.dtype == torch.bool:
                    indices.extend(_every_position(i).unbind(1))
                else:
                    indices.append(i)
            return func(args[0], indices)
        return func(*args, **kwargs)


_DISPATCH_CODE = ("/torch/_", "/torch/utils/", "/torch/overrides", "/torch/autograd/", "trainer/traced.py",
                  "trainer/tracker.py")  # fmt: skip
"""Where a value read is not made but passed through: torch's dispatch and autograd, this module and the tracker."""

KNOWN_READS = ("torch/optim/", "trl/", "transformers/masking_utils.py", "transformers/generation/utils.py")
"""Sites whose reads feed no tensor's size: AdamW's step counter (its bias correction's scalars), TRL's logged
metrics and per-sequence statistics, transformers' check for an all-ones padding mask (``fake_patches``), and
``generate``'s checks of the special tokens and the padding side (GRPO: the trace decodes to the completion
length, ``generation_to_length``)."""


def unexplained(reads: Mapping[str, int]) -> dict[str, int]:
    """The value reads of a trace at sites not in ``KNOWN_READS``: a tensor shaped from one may differ in a real
    run."""
    return {site: n for site, n in reads.items() if not any(known in site for known in KNOWN_READS)}


def _every_position(mask: torch.Tensor) -> torch.Tensor:
    """``nonzero`` of a mask with every element set: (numel, dim) int64 positions."""
    return torch.empty((mask.numel(), mask.dim()), dtype=torch.long, device=mask.device)


def meta_trainable_model(cfg: Any, plan: Plan) -> Any:
    """Step 1: the model on meta, frozen where the plan freezes it, checkpointed, PEFT-wrapped."""
    model = meta_model(cfg, plan)
    model.config.use_cache = False
    if plan.adapters:
        for p in model.parameters():
            p.requires_grad_(False)
    if plan.gradient_checkpointing:
        enable_gc(model)
    if plan.method == "qlora" and plan.use_dora:
        _plain_4bit_weights(model)
    if plan.adapters:
        model = stack_module("peft").get_peft_model(model, lora_config(plan))
    add_chunked_loss(model, plan)
    return model


_QUANT_ATTRS = ("blocksize", "compress_statistics", "quant_type", "quant_storage")


def _plain_4bit_weights(model: Any) -> None:
    """DoRA + QLoRA: PEFT deep-copies each ``Linear4bit`` when it sets DoRA up, which a meta ``Params4bit`` does
    not survive. Give those layers a plain meta ``Parameter`` carrying the same quantization attributes (what
    PEFT's dispatcher and ``materialize`` read); the fake 4-bit weight replaces it at materialization anyway."""
    bnb = stack_module("bitsandbytes")
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit) and type(module.weight).__name__ == "Params4bit":
            old = module.weight
            plain: Any = torch.nn.Parameter(torch.empty(old.shape, dtype=old.dtype, device="meta"), False)
            for attr in _QUANT_ATTRS:
                setattr(plain, attr, getattr(old, attr))
            module.weight = plain


def build_traced(config: Mapping[str, Any], plan: Plan, fake_mode: Any) -> Built:
    """Model + optimizer on fake CPU tensors (inside ``fake_patches``); ``fake_mode`` is a FakeTensorMode."""
    if plan.method == "qlora" and plan.quant_type == "int8":
        # int8 quantizes through Int8Params, which cannot hold a fake tensor.
        raise BuildError("the traced dry run does not support int8 QLoRA; measure this plan with a real run")
    cfg = make_config(config, plan)
    model = meta_trainable_model(cfg, plan)
    with fake_mode:
        materialize(model, "cpu", fake=True, upcast=plan.upcast_non_quantized, init=False)
    model.train()
    foreach = True if plan.device == "cuda" and plan.optimizer in ("adamw_torch", "sgd") else None
    return assemble(model, plan, "cpu", text_vocab_size(cfg), foreach=foreach)


@contextlib.contextmanager
def _model_stays_put() -> Iterator[None]:
    """transformers' ``Trainer`` moves the model to its device when it is made: nothing to do for a model built on
    that device, but ``Module.to`` cannot swap fake parameters (they carry weakrefs), so the move is skipped."""
    trainer_class = stack_module("transformers").Trainer
    original = trainer_class._move_model_to_device
    trainer_class._move_model_to_device = lambda self, model, device: None
    try:
        yield
    finally:
        trainer_class._move_model_to_device = original


@contextlib.contextmanager
def generation_to_length(plan: Plan) -> Iterator[None]:
    """GRPO's generation decodes ``max_completion_length`` tokens per completion, as the real run does (it passes
    ``min_new_tokens = max_completion_length``, so no completion ends early). transformers' decoding loop stops
    when every row is finished, a read of the tokens' values that fake tensors cannot answer: here the stop check
    answers from the number of tokens decoded instead (the first call comes after the first token)."""
    if plan.objective != "grpo":
        yield
        return
    check = stack_module("transformers.generation.utils").StopCheck
    original = check.__call__
    start: dict[int, int] = {}

    def __call__(self: Any, unfinished_sequences: torch.Tensor, tokens: torch.Tensor, length: int) -> bool:
        first = start.setdefault(id(self), length - 1)
        return length - first >= plan.max_completion_length

    check.__call__ = __call__
    try:
        yield
    finally:
        check.__call__ = original


def traced_objective(built: Built, cfg: Mapping[str, Any], plan: Plan) -> Batch | None:
    """The objective's trainer around the fake model (``trainer.objectives``, as the real run makes it): its loss
    becomes the step's, its reference tensors are pre-registered; returns its batch (None for ``sft``)."""
    if plan.objective == "sft":
        return None
    if plan.method == "full" and plan.holds_reference:
        raise BuildError(
            "the traced dry run does not build a reference copy of the model (full fine-tuning with "
            f"{plan.objective}); measure this plan with a real run, or trace it with LoRA/QLoRA"
        )
    with _model_stays_put():
        obj = objective(built.model, cfg, plan, torch.device("cpu"), built.vocab_size, 0)
    assert obj is not None
    built.kept["objective_loss"] = obj.loss
    built.kept["reference"] = obj.reference
    return obj.batch


def traced_run(
    plan: Plan,
    config: Mapping[str, Any] | None = None,
    device: str = "cpu",
    steps: int = 1,
    *,
    seed: int = 0,
    round_to: int | None = None,
    extrapolate: bool = False,
) -> dict[str, Any]:
    """Optimizer state up front + ``steps`` traced steps; the shape of ``trainer.run.run``'s result, ``mode: traced``.

    ``extrapolate``: trace the step at ``trainer.depth.DEPTHS`` decoder layers and extend every figure to the
    model's depth, where ``trainer.depth`` shows that to be exact; otherwise (and by default) the whole stack is
    traced. ``result["depth"]`` says which was done and why. ``device`` is accepted for CLI symmetry and ignored:
    the trace always runs on fake CPU tensors.
    """
    del device, seed  # fake tensors hold no values: the seed changes nothing
    import_bitsandbytes()  # before PEFT or transformers import it: its kernels are never compiled in a trace
    if steps < 1:
        raise ValueError("steps must be >= 1")
    if round_to is None:
        round_to = CUDA_ALLOC_ROUND if plan.device == "cuda" else 0
    cfg = resolve_config(plan, config)
    result: dict[str, Any] = {
        "mode": "traced",
        "plan": plan.to_dict(),
        "config": cfg,
        "device": "cpu (fake)",
        "emulates": plan.device,
        "versions": versions(None),
        "steps": steps,
        "oom": False,
        "notes": plan_notes(plan),
    }
    t_all = time.perf_counter()
    found = depth.layer_count(cfg)
    layers = found[1] if found else None
    why = depth.shortcut_refused(cfg, plan) if extrapolate else "asked to trace every layer"
    if why is None:
        why = depth.uniform_layer_types(getattr(make_config(cfg, plan), "layer_types", None))
    if why is None:
        assert layers is not None
        runs = trace_each([depth.reduced_config(cfg, d) for d in depth.DEPTHS], plan, steps, round_to)
        try:
            result.update(_joined(runs, depth.extrapolate(runs, depth.DEPTHS, layers)))
            result["depth"] = {"layers": layers, "traced": list(depth.DEPTHS), "extrapolated": True, "why": None}
        except depth.NotAffine as exc:
            why = str(exc)
    if why is not None:
        once = _trace_once(cfg, plan, steps, round_to)
        once.pop("phase_ends")
        result.update(once)
        result["depth"] = {"layers": layers, "traced": [layers], "extrapolated": False, "why": why}
    strange = unexplained(result["value_reads"])
    if strange:
        sites = ", ".join(f"{site} ×{n}" for site, n in strange.items())
        result["notes"].append(
            f"the trace answered {sum(strange.values())} reads of a tensor's value with 1 ({sites}): fake tensors "
            "hold no values, so a shape the model takes from such a value may differ in a real run; check this plan "
            "with a real run (tuneplan verify)"
        )
    result["wall_time_s"] = time.perf_counter() - t_all
    return result


def _joined(runs: list[dict[str, Any]], extended: dict[str, Any]) -> dict[str, Any]:
    """The traced result of the extrapolated step: its figures from ``extended``, its times the traces' sums."""
    return {
        "load_time_s": sum(r["load_time_s"] for r in runs),
        "params": extended["params"],
        "first_step": None,
        "state_setup_s": sum(r["state_setup_s"] for r in runs),
        "measured": extended["measured"],
        "step_time_s": sum(r["step_time_s"] for r in runs),
        "step_times_s": [t for r in runs for t in r["step_times_s"]],
        "loss": None,
        "value_reads": {
            site: sum(r["value_reads"].get(site, 0) for r in runs) for r in runs for site in r["value_reads"]
        },
    }


def trace_each(
    configs: Sequence[Mapping[str, Any]], plan: Plan, steps: int, round_to: int, cores: int | None = None
) -> list[dict[str, Any]]:
    """``_trace_once`` of each config, in their order. The traces are independent and each runs on one core (the
    fake mode computes nothing), so on Linux with several cores they run side by side: the first
    here, which imports the training stack and warms what a process's first trace pays for (the fake mode's
    dispatch cache, lazily made kernels and patches); then the deepest ones each in a process forked from this
    one, which inherits all of that, while the rest run here (at 2, 3 and 4 layers on two cores: 2 here, then 4
    in a child beside 3 here). A child shares nothing it writes; its result comes back pickled. Intra-op threads
    are set to one meanwhile: the fake mode has nothing to spread over them, and a forked child must not inherit a
    thread pool. ``cores``: the processes to use (default: the cores this process may run on)."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    forked = min(cores, len(configs) - 1) - 1
    if forked < 1 or not sys.platform.startswith("linux"):  # fork after imports is safe on Linux, not on macOS
        return [_trace_once(c, plan, steps, round_to) for c in configs]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runs = [_trace_once(configs[0], plan, steps, round_to)]
        here, there = list(configs[1 : len(configs) - forked]), list(configs[len(configs) - forked :])
        context = multiprocessing.get_context("fork")
        with concurrent.futures.ProcessPoolExecutor(max_workers=forked, mp_context=context) as pool:
            futures = [pool.submit(_trace_once, c, plan, steps, round_to) for c in there]
            runs += [_trace_once(c, plan, steps, round_to) for c in here]
            return runs + [f.result() for f in futures]
    finally:
        torch.set_num_threads(threads)


def _trace_once(cfg: Mapping[str, Any], plan: Plan, steps: int, round_to: int) -> dict[str, Any]:
    """Build the fake model of ``cfg`` and trace ``steps`` steps of it (the times, params and figures)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    out: dict[str, Any] = {}
    fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
    with fake_patches(plan.padding == "packed", plan.padding == "padded", str(cfg.get("model_type"))):
        t0 = time.perf_counter()
        built = build_traced(cfg, plan, fake_mode)
        batch = traced_objective(built, cfg, plan)
        out["load_time_s"] = time.perf_counter() - t0
        out["params"] = {"total": built.params_total, "trainable": built.params_trainable}
        # an image or video batch is made with real tensors by the model's own processors, before the fake mode
        if batch is None and plan.vision_inputs:
            batch = vision_batch(cfg, plan, torch.device("cpu"), 0)
            for name in real_inputs(str(cfg.get("model_type"))):
                if name in batch:
                    batch[name] = batch[name].as_subclass(RealIndex)
        stand_in = StandInValues()
        with fake_mode, stand_in, cuda_kernels(plan, cfg), generation_to_length(plan):
            out.update(_traced_steps(built, plan, steps, round_to, batch))
    out["value_reads"] = stand_in.reads
    return out


def _softmax_backward_scratch(grad: torch.Tensor, output: torch.Tensor, *_: Any) -> int:
    """``softmax_backward_cuda_out`` computes ``Tensor tmp = grad * output`` before its kernel
    (aten/src/ATen/native/cuda/SoftMax.cu): a block of the gradient's size inside the op, which the CPU's kernel
    does not make (measured on an H200: 1 GiB at 2 × 32 heads × 2048² in fp32)."""
    return grad.numel() * torch.promote_types(grad.dtype, output.dtype).itemsize


CUDA_IN_OP: dict[Any, Callable[..., int]] = {torch.ops.aten._softmax_backward_data.default: _softmax_backward_scratch}
"""What CUDA's kernels allocate inside themselves, by operator (``MemoryTracker.in_op``): a trace of a CUDA plan
counts it while the op runs."""


def attention_backend(plan: Plan, cfg: Mapping[str, Any]) -> str:
    """The SDPA backend (or attention implementation) the estimator says the plan's step runs."""
    inv = build_inventory(parse_config(cfg))
    return dtype_flow(inv, adapter_plan(inv, plan), plan).path.backend


@contextlib.contextmanager
def cuda_kernels(plan: Plan, cfg: Mapping[str, Any]) -> Iterator[None]:
    """Make the CPU trace of a CUDA plan allocate what the CUDA kernels allocate (measured on an H200).

    * Dropout: CUDA's fused kernel keeps a bool mask (1 B per element); the CPU path keeps a float one. Route
      ``F.dropout`` through ``native_dropout``, whose mask is bool on the CPU too.
    * Attention: each SDPA call runs as torch's CUDA selection takes it (``estimator``'s kernel rules, per call:
      fp32 q/k/v with grouped KV heads and no mask, a pinned ``math``, a card without flash... land on the math
      path, which the CPU then runs too); a fused CUDA backend (flash, memory-efficient, cuDNN) is stood in for by
      the CPU's flash kernel, which keeps the same q, k, v, output and log-sum-exp (with a mask it also keeps the
      mask converted to the q/k/v dtype, per layer, as CUDA's memory-efficient and cuDNN kernels do), or by the
      memory-efficient kernel's own op where the CPU's flash kernel cannot run the call (``_as_cuda_selects``).
    * What CUDA's kernels make inside themselves is counted by the tracker (``CUDA_IN_OP``, in ``_traced_steps``).
    """
    if plan.device != "cuda":
        with sdpa_pin(plan):
            yield
        return
    import torch.nn.functional as F

    original = F.dropout

    def dropout(x: torch.Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> torch.Tensor:
        if not training or p == 0.0 or inplace:
            return original(x, p, training, inplace)
        out, _mask = torch.native_dropout(x, p, True)
        return out

    pinned = attention_backend(plan, cfg) if plan.sdpa_backend != "auto" else None
    sdpa = F.scaled_dot_product_attention
    F.dropout = dropout  # type: ignore[assignment]
    F.scaled_dot_product_attention = _as_cuda_selects(sdpa, plan, pinned)
    try:
        yield
    finally:
        F.dropout = original
        F.scaled_dot_product_attention = sdpa


def _as_cuda_selects(sdpa: Callable[..., torch.Tensor], plan: Plan, pinned: str | None) -> Callable[..., torch.Tensor]:
    """SDPA as CUDA runs each call: the backend torch's CUDA selection takes for the call's dtype, head dims, mask
    and grouped heads on the plan's GPU (``estimator.cuda_sdpa_backend``; ``pinned``: the plan's pinned backend,
    for every call, as ``sdpa_kernel`` pins it). The calls of one step can differ: under QLoRA a vision tower's
    fp32 attention takes the memory-efficient kernel where the decoder's fp32 grouped heads take the math path.

    * math: the CPU's math path, the same b·a·s² probabilities;
    * a fused backend (flash, memory-efficient, cuDNN): the CPU's flash kernel stands in (the same q, k, v, output
      and log-sum-exp), except where it cannot run the call (q/k and v of different head dims: DeepSeek's latent
      attention, which the CPU would run on its math path) and CUDA's choice is the memory-efficient kernel: that
      kernel's own op, ``_scaled_dot_product_efficient_attention``, whose meta kernel (what fake tensors run) gives
      the CUDA kernel's outputs, and autograd saves what its CUDA backward reads.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    gpu = gpu_runtime(plan)

    def attention(
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        dropout_p: float = 0.0,
        is_causal: bool = False,
        scale: float | None = None,
        enable_gqa: bool = False,
    ) -> torch.Tensor:
        d, v, mask = query.shape[-1], value.shape[-1], attn_mask is not None
        dtype = str(query.dtype).removeprefix("torch.")
        backend = pinned or cuda_sdpa_backend(gpu, dtype, d, v, mask, enable_gqa)
        if backend == "efficient" and d != v and not mask and not enable_gqa:
            grad = torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value))
            out = torch.ops.aten._scaled_dot_product_efficient_attention(
                query, key, value, None, grad, dropout_p, is_causal, scale=scale
            )
            result: torch.Tensor = out[0]
            return result
        with sdpa_kernel([SDPBackend.MATH]) if backend == "math" else contextlib.nullcontext():
            return sdpa(query, key, value, attn_mask, dropout_p, is_causal, scale=scale, enable_gqa=enable_gqa)

    return attention


def create_optimizer_state(built: Built) -> None:
    """The optimizer's state, made by the optimizer itself before the traced step: one ``step()`` over zero
    gradients (what a real warm-up step leaves behind, in size), then ``zero_grad``. A fake tensor holds no values,
    so the measured step that follows is the steady-state step of a real run, without tracing a warm-up step."""
    for p in built.trainable:
        p.grad = torch.zeros_like(p)
    built.optimizer.step()
    built.optimizer.zero_grad(set_to_none=True)


def _traced_steps(built: Built, plan: Plan, steps: int, round_to: int, batch: Batch | None = None) -> dict[str, Any]:
    """Optimizer state up front, then the measured steps under the tracker (call inside the fake mode) on ``batch``
    (an objective's or an image batch), else on ``batch_size × seq_len`` token ids shaped as the plan's padding
    says.

    A plain training loop keeps the previous step's output through the step: one forward without autograd makes
    it (the logits, in size) before the measured step.
    """
    if batch is None:
        batch = shape_batch(torch.zeros((plan.batch_size, plan.seq_len), dtype=torch.long), plan)
    step_plan = plan.replace(sdpa_backend="auto") if plan.device == "cuda" else plan  # cuda_kernels stands in
    t0 = time.perf_counter()
    create_optimizer_state(built)
    if plan.training_loop == "plain":
        with torch.no_grad():
            kwargs = {"fused_lm_head": True} if plan.loss == "chunked" else {}
            built.kept["out"] = built.model(**batch, **kwargs)
    setup = time.perf_counter() - t0
    unreached: set[torch.nn.Parameter] = set()

    def note_unreached() -> None:
        unreached.update(p for p in built.trainable if p.grad is None)

    while True:
        tracker = MemoryTracker(round_to=round_to, in_op=CUDA_IN_OP if plan.device == "cuda" else None)
        times: list[float] = []
        for _ in range(steps):
            t0 = time.perf_counter()
            with tracking(tracker, built, plan, batch):
                train_step(built, batch, tracker=tracker, plan=step_plan, after_backward=note_unreached)
            times.append(time.perf_counter() - t0)
        # a trainable parameter the step never reaches gets no gradient, and AdamW makes no state for it (LLaVA's
        # last tower layer, under feature layer -2): its state, made up front, goes, and the step is traced again
        dropped = [p for p in unreached if built.optimizer.state.pop(p, None) is not None]
        if not dropped:
            break
    measured = {"peak_reserved": None, "driver_used": None, "context": None, **tracked_figures(tracker)}
    return {
        "phase_ends": dict(tracker.phase_ends),
        "first_step": None,
        "state_setup_s": setup,
        "measured": measured,
        "step_time_s": sum(times) / len(times),
        "step_times_s": times,
        "loss": None,
    }


def main(argv: list[str] | None = None) -> int:
    extrapolate = "trace the step at a few decoder layers and extend it to the model's depth where that is exact"
    return cli(argv, traced_run, "Trace a training step of a plan on fake tensors (no memory used)",
               {"extrapolate": extrapolate})  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
