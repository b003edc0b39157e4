"""Serving the fine-tuned model: its weights, the KV cache of the sequences served at once, and what a forward pass
of the prompt and the CUDA runtime add — the memory to run ``model.generate`` on the result.

Three ways to serve it (``plan.serve_format``):

* ``merged_16bit`` — the adapters merged into the base (PEFT ``merge_and_unload``), every parameter in 16-bit (a full
  fine-tune's own weights);
* ``merged_4bit`` — the merged model loaded in 4-bit (or LLM.int8) by bitsandbytes with the plan's quantization:
  the linears transformers converts are packed, everything else stays 16-bit (no ``prepare_model_for_kbit_training``
  at inference, so nothing is upcast to fp32);
* ``base_adapter`` — the base as trained (4-bit for QLoRA, 16-bit for LoRA) plus the adapter, which PEFT loads in
  fp32 (``autocast_adapter_dtype``), and the trained copies of ``modules_to_save``.

The KV cache is transformers' cache: a key and a value tensor per decoder layer of ``(sequences, kv_heads, tokens,
head_dim)`` in the 16-bit compute dtype, for ``serve_context_len`` tokens (prompt and output) of
``serve_concurrency`` sequences. It ignores that sliding-window layers (Gemma 2/3, Mistral 7B v0.1) keep only their
window, so the figure is an upper bound there, and the allocator's rounding of the growing cache.

Activations: the prefill of the whole context runs one layer at a time; the largest live set is the MLP's (gate, up,
their product and the activation: four ``tokens × intermediate`` tensors, with two residual-stream tensors) in 16-bit,
plus the last position's logits in fp32 per sequence (``generate`` keeps one position). This term is modelled from
the modules' code, not measured. Overhead: the CUDA context, runtime and cuBLAS workspace of the plan's GPU
architecture (``estimator._runtime``), as in training.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._inventory import Inventory
from ._lora import AdapterPlan
from ._memory import weight_bytes
from ._plan import Plan
from ._quant import alloc
from ._runtime import Runtime

SERVE_FORMATS = ("merged_16bit", "merged_4bit", "base_adapter")


@dataclass(frozen=True)
class ServingEstimate:
    """GPU memory to serve the fine-tuned model (bytes); ``total`` is the sum of the parts."""

    format: str
    context_len: int
    concurrency: int
    weights: int
    kv_cache: int
    kv_cache_per_token: int
    activations: int
    overhead: int
    notes: tuple[str, ...]

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.activations + self.overhead

    def to_dict(self) -> dict[str, object]:
        return {
            "format": self.format,
            "context_len": self.context_len,
            "concurrency": self.concurrency,
            "weights": self.weights,
            "kv_cache": self.kv_cache,
            "kv_cache_per_token": self.kv_cache_per_token,
            "activations": self.activations,
            "overhead": self.overhead,
            "total": self.total,
            "notes": list(self.notes),
        }


def _sixteen(plan: Plan) -> Plan:
    """The plan's weights as served in 16-bit (an fp32 plan serves in bf16)."""
    return plan.replace(dtype="bfloat16") if plan.dtype == "float32" else plan


def serving_weights(inv: Inventory, adapters: AdapterPlan, plan: Plan, cuda: bool) -> tuple[int, str]:
    """The served weights (bytes) and what they are, for ``plan.serve_format``."""
    sixteen = _sixteen(plan).replace(method="full", mixed_precision=False, use_dora=False)
    fmt = plan.serve_format
    if fmt == "merged_16bit" or (fmt == "base_adapter" and plan.method == "full"):
        note = "merged into 16-bit weights" if plan.adapters else "the fine-tuned 16-bit weights (no adapter)"
        return weight_bytes(inv, sixteen, cuda), note
    quantized = _sixteen(plan).replace(method="qlora", prepare_kbit=False, use_dora=False)
    if fmt == "merged_4bit":
        what = (
            "LLM.int8"
            if plan.quant_type == "int8"
            else f"{plan.quant_type}{' + double quant' if plan.double_quant else ''}"
        )
        return weight_bytes(inv, quantized, cuda), f"merged, then loaded by bitsandbytes in {what}"
    base = weight_bytes(inv, quantized if plan.method == "qlora" else sixteen, cuda)
    adapter = alloc(4 * adapters.lora_params, cuda) + sum(
        alloc(2 * t.numel, cuda) * t.layers for t in adapters.saved_modules
    )
    kind = "4-bit base" if plan.method == "qlora" else "16-bit base"
    return base + adapter, f"{kind} as trained plus the adapter in fp32 (PEFT's autocast_adapter_dtype)"


def serving_memory(inv: Inventory, adapters: AdapterPlan, plan: Plan, runtime: Runtime | None) -> ServingEstimate:
    """GPU memory to serve the result of ``plan`` (see the module docstring for each term)."""
    arch = inv.arch
    cuda = plan.device == "cuda"
    context = plan.serve_context_len or plan.seq_len
    n = plan.serve_concurrency
    per_token = 2 * arch.num_hidden_layers * arch.kv_dim * 2
    weights, what = serving_weights(inv, adapters, plan, cuda)
    inter = max(arch.intermediate_size, arch.moe_intermediate_size * max(arch.num_experts_per_tok, 1))
    tokens = n * context
    activations = tokens * (4 * inter + 2 * arch.hidden_size) * 2 + n * arch.vocab_size * 4
    overhead = runtime.context_bytes + runtime.cublas_workspace_bytes if runtime is not None and cuda else 0
    notes = [
        f"weights: {what}",
        f"KV cache: 2 × {arch.num_hidden_layers} layers × {arch.num_key_value_heads} KV heads × {arch.head_dim} × 2 "
        f"bytes = {per_token:,} bytes per token, × {context:,} tokens × {n} sequence{'s' if n > 1 else ''}",
        "prefill activations are modelled from the modules' code (not measured); sliding-window layers are counted "
        "at the full context (an upper bound)",
    ]
    return ServingEstimate(plan.serve_format, context, n, weights, per_token * tokens, per_token, activations,
                           overhead, tuple(notes))  # fmt: skip


__all__ = ["SERVE_FORMATS", "ServingEstimate", "serving_memory", "serving_weights"]
