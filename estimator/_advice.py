"""The make-it-fit advisor: the levers that lower this plan's memory, each one re-estimated with it applied.

No rule of thumb: every lever is the plan with a few fields changed (``plan_changes``) and estimated again by
``training_memory`` with the same runtime constants, so its ``peak_allocated``, ``total`` and ``fit_bytes`` are the
estimator's own figures for that plan, and ``saves_bytes`` is what the total drops by. A lever that does not change
the plan's memory, or that the estimator refuses for this model (PEFT, torch or transformers would), is left out.
The levers that take a size (micro-batch, sequence length, GPU count) take, with a GPU, the least change that fits
it (the largest change when none does), without one the least change (half the micro-batch or sequence, 2 GPUs);
with a GPU each lever also says whether the plan then fits and how long an optimizer step takes (``step_s``, the
time model's, for the same tokens per optimizer step).

The levers, in the issue's words: gradient checkpointing; a chunked (fused) loss; a smaller micro-batch or a
shorter sequence with gradient accumulation keeping the tokens per optimizer step; a smaller LoRA rank or fewer
target modules; an 8-bit optimizer; a fused attention kernel; QLoRA instead of LoRA (LoRA instead of full
fine-tuning); ZeRO-3 sharding over N GPUs; and fp16 on a card without bfloat16, which is not about memory but is why
such a card cannot run the plan. Offloading to host memory is not modelled, so it is not offered.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from . import catalog
from ._errors import PlanError
from ._inventory import ATTENTION_INPUT, ATTENTION_OUTPUT, Inventory
from ._lora import AdapterPlan, adapter_plan
from ._memory import MemoryEstimate, training_memory
from ._plan import Plan
from ._runtime import Runtime
from ._time import step_time

SHARD_COUNTS = (2, 4, 8)
MIN_SEQ = 256
MIN_RANK = 4


@dataclass(frozen=True)
class Lever:
    """One way to lower the plan's memory, and the plan's figures with it."""

    lever: str
    label: str
    plan_changes: dict[str, Any]
    peak_allocated: int
    total: int
    fit_bytes: int
    saves_bytes: int
    fits: bool | None
    tradeoff: str
    step_s: float | None
    required: bool = False  # the plan cannot run on its GPU without it (fp16 on a card without bf16)

    def to_dict(self) -> dict[str, Any]:
        return {
            "lever": self.lever,
            "label": self.label,
            "plan_changes": dict(self.plan_changes),
            "peak_allocated": self.peak_allocated,
            "total": self.total,
            "fit_bytes": self.fit_bytes,
            "saves_bytes": self.saves_bytes,
            "fits": self.fits,
            "tradeoff": self.tradeoff,
            "step_s": None if self.step_s is None else round(self.step_s, 6),
            "required": self.required,
        }


@dataclass(frozen=True)
class _Context:
    inv: Inventory
    plan: Plan
    base: MemoryEstimate
    runtime: Runtime
    gpu: catalog.GPU | None
    usable: int | None  # the usable memory the fit is checked against (shifted by a calibration)

    def memory(self, changes: Mapping[str, Any]) -> tuple[Plan, AdapterPlan, MemoryEstimate] | None:
        """The plan with ``changes`` estimated again, or None where the estimator refuses it."""
        try:
            plan = self.plan.replace(**changes)
            adapters = adapter_plan(self.inv, plan)
            return plan, adapters, training_memory(self.inv, adapters, plan, runtime=self.runtime)
        except PlanError:
            return None

    def fits(self, changes: Mapping[str, Any]) -> bool:
        found = self.memory(changes)
        return found is not None and self.usable is not None and found[2].fit_bytes <= self.usable


def _largest_fitting(ctx: _Context, options: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The first of ``options`` (least change first) that fits the GPU, else the last (the one that saves the most);
    without a GPU the first: the least change."""
    if not options:
        return None
    if ctx.usable is None:
        return options[0]
    for changes in options:
        if ctx.fits(changes):
            return changes
    return options[-1]


def _micro_batch(ctx: _Context) -> dict[str, Any] | None:
    b, ga = ctx.plan.batch_size, ctx.plan.grad_accum_steps
    smaller = [d for d in range(b - 1, 0, -1) if b % d == 0]
    return _largest_fitting(ctx, [{"batch_size": d, "grad_accum_steps": ga * (b // d)} for d in smaller])


def _shorter_sequence(ctx: _Context) -> dict[str, Any] | None:
    s, ga = ctx.plan.seq_len, ctx.plan.grad_accum_steps
    options = []
    k = 2
    while s // k >= MIN_SEQ and s % k == 0:
        options.append({"seq_len": s // k, "grad_accum_steps": ga * k})
        k *= 2
    return _largest_fitting(ctx, options)


def _attention_targets(ctx: _Context, adapters: AdapterPlan) -> dict[str, Any] | None:
    """The attention projections only, named so PEFT matches no other module (``attn.c_proj``, not ``c_proj``)."""
    attention = [a for a in adapters.adapted if a.reads in (ATTENTION_INPUT, ATTENTION_OUTPUT)]
    if not attention or len(attention) == len(adapters.adapted):
        return None
    others = {a.module.rsplit(".", 1)[-1] for a in adapters.adapted if a not in attention}
    names = []
    for a in attention:
        parts = a.module.split(".")
        names.append(parts[-1] if parts[-1] not in others else ".".join(parts[-2:]))
    return {"target_modules": names}


def _shards(ctx: _Context) -> dict[str, Any] | None:
    plan = ctx.plan
    if plan.sharding == "zero3" and plan.num_gpus > 1:
        return None
    counts = [n for n in SHARD_COUNTS if n > plan.num_gpus] if plan.num_gpus == 1 else [plan.num_gpus]
    return _largest_fitting(ctx, [{"sharding": "zero3", "num_gpus": n} for n in counts])


def _attention(ctx: _Context) -> dict[str, Any] | None:
    path = ctx.base.attention
    if path is None or not path.quadratic:
        return None
    options: list[dict[str, Any]] = [{"attn_implementation": "sdpa", "sdpa_backend": "auto"},
                                     {"attn_implementation": "sdpa", "sdpa_backend": "efficient"},
                                     {"attn_implementation": "flash_attention_2"}]  # fmt: skip
    scored = [(m[2].total, o) for o in options if (m := ctx.memory(o)) is not None and m[2].attention is not None
              and not m[2].attention.quadratic]  # fmt: skip
    return min(scored, key=lambda t: t[0])[1] if scored else None


Candidate = tuple[str, str, Callable[[_Context], dict[str, Any] | None], str]

CANDIDATES: tuple[Candidate, ...] = (
    ("gradient_checkpointing", "Gradient checkpointing",
     lambda c: None if c.plan.gradient_checkpointing else {"gradient_checkpointing": True},
     "keeps one tensor per layer and recomputes the rest in the backward pass: about a third more compute"),
    ("chunked_loss", "Chunked loss (fused LM head)",
     lambda c: {"loss": "chunked"} if c.plan.loss == "standard" else None,
     "TRL's fused LM head computes the log-probabilities in chunks, so the b·s·V logits never exist whole; the "
     "same loss"),
    ("micro_batch", "Smaller micro-batch, more accumulation", _micro_batch,
     "the same tokens per optimizer step in smaller micro-batches (gradient accumulation): more, shorter passes"),
    ("shorter_sequence", "Shorter sequences, more accumulation", _shorter_sequence,
     "sequences cut (or packed) to fewer tokens, with accumulation keeping the tokens per optimizer step; each "
     "sample sees less context"),
    ("optimizer_8bit", "8-bit AdamW",
     lambda c: {"optimizer": "adamw_8bit"} if c.plan.optimizer in ("adamw_torch", "paged_adamw_32bit") else None,
     "bitsandbytes keeps AdamW's two moments in 8 bits (block-wise scaled): a quarter of the state"),
    ("attention", "Fused attention kernel", _attention,
     "a fused kernel keeps O(s) per layer instead of the b·a·s² attention probabilities (flash_attention_2 needs "
     "the flash-attn package)"),
    ("lora_rank", "Smaller LoRA rank",
     lambda c: {"lora_r": max(MIN_RANK, c.plan.lora_r // 2)} if c.plan.adapters and c.plan.lora_r > MIN_RANK
     else None,
     "half the adapter parameters, gradients and optimizer state: less capacity to learn"),
    ("fewer_targets", "LoRA on the attention only",
     lambda c: _attention_targets(c, adapter_plan(c.inv, c.plan)) if c.plan.adapters else None,
     "adapters on the attention projections only (the original LoRA recipe); the MLP stays frozen"),
    ("qlora", "QLoRA (4-bit base)", lambda c: {"method": "qlora"} if c.plan.method == "lora" else None,
     "the frozen base in 4-bit NF4, dequantized on the fly: about a quarter of the weights, somewhat slower"),
    ("lora", "LoRA instead of full fine-tuning", lambda c: {"method": "lora"} if c.plan.method == "full" else None,
     "trains low-rank adapters on a frozen base: no gradients or optimizer state for the base weights"),
    ("sharding", "ZeRO-3 over more GPUs", _shards,
     "DeepSpeed ZeRO-3 (or FSDP) shards weights, gradients and optimizer state: each GPU holds its share plus the "
     "layer it is computing"),
)  # fmt: skip


def _lever(ctx: _Context, key: str, label: str, changes: dict[str, Any], tradeoff: str) -> Lever | None:
    found = ctx.memory(changes)
    if found is None:
        return None
    plan, adapters, mem = found
    saves = ctx.base.total - mem.total
    if saves <= 0 and key != "fp16":
        return None
    fits = None if ctx.usable is None else mem.fit_bytes <= ctx.usable and _runs_on(plan, ctx.gpu)
    step = None
    if ctx.gpu is not None and not ctx.gpu.custom and plan.device == "cuda":
        timed = step_time(ctx.inv, adapters, plan, ctx.gpu)
        step = None if timed is None else timed.step_s
    return Lever(key, label, changes, mem.peak_allocated, mem.total, mem.fit_bytes, saves, fits, tradeoff, step,
                 required=key == "fp16")  # fmt: skip


def _runs_on(plan: Plan, gpu: catalog.GPU | None) -> bool:
    return gpu is None or gpu.custom or plan.dtype != "bfloat16" or gpu.bf16_tflops is not None


def advise(
    inv: Inventory, plan: Plan, base: MemoryEstimate, runtime: Runtime, usable: int | None = None
) -> tuple[Lever, ...]:
    """Levers that lower ``plan``'s memory, best first: those it cannot run without first, then by what they save.

    ``base``: the plan's own estimate; ``runtime``: the runtime constants it was made with; ``usable``: the memory
    the plan's GPU offers (shifted by a calibration as the fit search is), None without a GPU.
    """
    gpu = catalog.find_gpu(plan.gpu) if plan.gpu is not None else None
    ctx = _Context(inv, plan, base, runtime, gpu, usable if plan.device == "cuda" else None)
    levers: list[Lever] = []
    if gpu is not None and not _runs_on(plan, gpu):
        fp16 = _lever(ctx, "fp16", "float16 instead of bfloat16", {"dtype": "float16"},
                      f"{gpu.name} has no bfloat16 tensor cores: fp16 runs there (with a loss scaler)")  # fmt: skip
        levers += [fp16] if fp16 is not None else []
    for key, label, changes_of, tradeoff in CANDIDATES:
        try:
            changes = changes_of(ctx)
        except PlanError:
            continue
        lever = None if changes is None else _lever(ctx, key, label, changes, tradeoff)
        if lever is not None:
            levers.append(lever)
    levers.sort(key=lambda lv: (not lv.required, -lv.saves_bytes))
    return tuple(levers)


__all__ = ["CANDIDATES", "Lever", "advise"]
