"""Step time and throughput: the FLOPs of one training step over the GPU's dense throughput at a utilisation (MFU).

One micro-batch step on one GPU is counted as the matmuls the stack runs, each in the dtype it runs in:

* **linear layers** — forward ``2·T·in·out`` per weight (``T`` = batch × sequence tokens; a fused MoE expert stack
  counts the ``k`` experts a token visits, ``2·T·k·numel/E``); backward ``2·T·in·out`` for the input's gradient
  and again for the weight's gradient where the weight trains (full fine-tuning, ``modules_to_save``). LoRA and
  QLoRA without checkpointing compute no input gradient in the first layer's q/k/v (PEFT makes the embeddings'
  output require a gradient only with checkpointing). Base linears run in the compute dtype (bitsandbytes casts
  the input to ``bnb_4bit_compute_dtype``); linears ``prepare_model_for_kbit_training`` upcast run in fp32.
* **LoRA** — ``2·T·r·(in+out)`` per adapted module forward, twice that backward (A's and B's gradients and the
  input's), in fp32 (PEFT's ``autocast_adapter_dtype``). DoRA adds ``B·A`` (``2·r·in·out``) per forward for the weight
  norm (PEFT detaches the norm, so no backward). A fused MoE expert adapter (PEFT's ParamWrapper) materializes
  ``W + B·A`` per forward: ``2·r·in·out`` per expert, nothing per token.
* **attention** — ``QKᵀ`` and ``PV``: ``4·b·s²·(heads·head_dim)`` forward per layer, halved where the kernel skips
  the causal mask's upper half (flash_attention_2, and SDPA's fused kernels on CUDA); backward twice the forward,
  2.5 times for the fused kernels, which recompute ``QKᵀ``. It runs in the residual stream's dtype (fp32 under
  QLoRA's upcast; then SDPA takes its math path for grouped KV heads, ``dtype_flow``).
* **lm_head** — ``2·T·h·V`` forward and for the input's gradient, plus the weight's when it trains; in fp32 when
  ``prepare_model_for_kbit_training`` upcast it, else in the compute dtype.
* **gradient checkpointing** — one more forward of every decoder layer (linears, LoRA, attention), not of lm_head,
  less each layer's last matmul (torch's non-reentrant checkpoint stops recomputing at the last saved tensor).

Held exactly to torch's ``FlopCounterMode`` on real CPU steps (full, LoRA, DoRA, partial targets, with and without
checkpointing; QLoRA's 4-bit forward is a custom op the counter cannot see), ``tests/trainer/test_time_flops.py``.

Not counted as FLOPs (memory-bound; they are in ``memory_s`` instead, at the card's peak bandwidth): QLoRA's
dequantization (bitsandbytes writes the 16-bit weight before each matmul: forward, backward, and the recompute,
``0.5 + 2`` bytes per weight for 4-bit, ``1 + 2`` for int8) and the optimizer's update (every trainable parameter's
value, gradient and state read and written once). Ignored: norms, activations, rotary, softmax and dropout
(elementwise, memory-bound, absorbed in the MFU), sliding windows (counted as full causal attention: the time errs
long), and communication between GPUs (DDP overlaps its all-reduce with the backward pass; sharding's collectives
are not modelled here).

GPU time = Σ FLOPs / (dtype's dense peak × MFU) + memory-bound bytes / peak bandwidth. Torch dispatches ops one
after another from Python, and at small batches the GPU waits for the host: the **host floor** is the dispatched
ops (counted per decoder layer on real CPU steps, ``bench/time_model.py ops``) times the host's seconds per op
(from the H200 runs). The step takes the longer of the two. On the H200 runs (``bench/results/gpu_h200.json``) the
model is within the error ``docs/performance.md`` states (held by ``tests/estimator/test_time.py``).

The MFU is an input: the plan's ``mfu`` when set, else the card's measured figure where a verify run measured it,
else public figures (``data/throughput.json`` says which, with its source). The public figures are model-FLOPs
utilisations without recompute; applied here to every FLOP the step runs (recompute included) they make the time
err long by the recompute's share.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from . import catalog
from ._arch import Architecture
from ._inventory import (
    ATTENTION_INPUT,
    EXPERT_HIDDEN,
    EXPERT_INPUT,
    EXPERTS,
    LINEAR_KINDS,
    MLP_HIDDEN,
    ROUTER,
    Inventory,
    Tensor,
)
from ._lora import Adapted, AdapterPlan
from ._memory import dtype_flow, param_dtype_bytes
from ._objective import lora_dropout_active
from ._plan import Plan

FP32 = "float32"
TERA = 1e12
GIGA = 1e9


@dataclass(frozen=True)
class Mfu:
    """The utilisation the time model applies, and where it comes from."""

    value: float
    kind: str  # "plan" (the user's), "measured" (a verify run on this card), "public" (published figures)
    text: str
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "kind": self.kind, "text": self.text, "source": self.source}


@dataclass(frozen=True)
class Throughput:
    """A card's dense peaks by dtype (TFLOPS) and its peak memory bandwidth (GB/s)."""

    gpu: str
    tflops: dict[str, float]
    bandwidth_gbs: float
    source: str


@cache
def _data() -> dict[str, Any]:
    text = (resources.files("estimator") / "data" / "throughput.json").read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def throughput(gpu: catalog.GPU) -> Throughput:
    """The dense peaks of ``gpu``: bf16 from the GPU catalog, fp16 and fp32 from ``data/throughput.json``."""
    row = _data()["gpus"].get(gpu.id, {})
    tflops = {"float16": float(row.get("fp16_tflops", gpu.bf16_tflops or 0.0))}
    tflops[FP32] = float(row.get("fp32_tflops", 0.0))
    if gpu.bf16_tflops is not None:
        tflops["bfloat16"] = gpu.bf16_tflops
    return Throughput(gpu.id, tflops, gpu.bandwidth_gbs, str(row.get("source", "")))


def default_mfu(gpu_id: str) -> Mfu:
    """The card's MFU: measured by a verify run where one did, else public figures (``data/throughput.json``)."""
    mfu = _data()["mfu"]
    row = mfu["by_gpu"].get(gpu_id, mfu["default"])
    return Mfu(float(row["mfu"]), str(row["kind"]), str(row["text"]), str(row["source"]))


def plan_mfu(plan: Plan, gpu_id: str) -> Mfu:
    """The plan's ``mfu`` when set (above 0), else the card's (``default_mfu``)."""
    if plan.mfu > 0:
        return Mfu(plan.mfu, "plan", "set in the plan (mfu)", "plan")
    return default_mfu(gpu_id)


# ---------------------------------------------------------------------------------------------- FLOPs


@dataclass(frozen=True)
class StepFlops:
    """FLOPs of one micro-batch step on one GPU by part and by dtype, and its memory-bound bytes."""

    parts: dict[str, int]
    by_dtype: dict[str, int]
    dequant_bytes: int
    optimizer_bytes: int

    @property
    def total(self) -> int:
        return sum(self.parts.values())


class _Tally:
    def __init__(self) -> None:
        self.parts: dict[str, int] = {}
        self.by_dtype: dict[str, int] = {}

    def add(self, part: str, dtype: str, flops: int) -> None:
        if flops:
            self.parts[part] = self.parts.get(part, 0) + flops
            self.by_dtype[dtype] = self.by_dtype.get(dtype, 0) + flops


def _compute_dtype(plan: Plan) -> str:
    """The dtype base matmuls run in: the plan's (autocast under mixed precision; bnb's compute dtype)."""
    return plan.dtype


def _per_token(t: Tensor, arch: Architecture) -> int:
    """Forward FLOPs per token of one instance of a weight tensor (0 for tensors that are no matmul)."""
    if t.is_bias:
        return 0
    if t.kind in LINEAR_KINDS or t.kind == ROUTER:
        return 2 * t.numel
    if t.kind == EXPERTS and arch.num_experts:
        return 2 * arch.num_experts_per_tok * t.numel // arch.num_experts
    return 0


def _no_input_grads(adapters: AdapterPlan, plan: Plan) -> bool:
    """Whether the embeddings' output needs no gradient, so the first layer's attention inputs need none either:
    LoRA / QLoRA without checkpointing (PEFT makes the embeddings' output require a gradient only with it), unless
    an embedding is adapted or trained. Seen in torch's FLOP counter on real CPU steps."""
    if not plan.adapters or plan.gradient_checkpointing:
        return False
    if any(a.embedding for a in adapters.adapted):
        return False
    return not any(t.role in ("embedding", "position_embedding") for t in adapters.saved_modules)


def _linears(inv: Inventory, adapters: AdapterPlan, plan: Plan, tally: _Tally, passes: int) -> None:
    """Base linears of the decoder (lm_head apart): forward (``passes``: 2 with recompute), input and weight grads.

    Without input gradients (``_no_input_grads``) the first layer's attention-input linears compute none. DoRA with
    dropout runs the base linear once more on the dropped-out input (PEFT passes no base result then), forward and
    input gradient. The recompute stops at the last saved tensor (torch's non-reentrant checkpoint stops early), so
    each layer's last matmul — down projection's base, or its LoRA B when adapted — is not recomputed."""
    T = plan.batch_size * plan.seq_len
    full, skip_first = plan.method == "full", _no_input_grads(adapters, plan)
    saved = {id(t) for t in adapters.saved_modules}
    adapted = {a.module for a in adapters.adapted}
    dora_twice = plan.use_dora and plan.lora_dropout > 0
    for t in inv:
        one = _per_token(t, inv.arch) * T
        if not one or t.role == "lm_head":
            continue
        fwd = one * t.layers
        dtype = _compute_dtype(plan)
        if plan.upcast_non_quantized and not t.bnb_quantized:
            dtype = FP32  # prepare_model_for_kbit_training upcast it (a router, an nn.Linear subclass)
        extra = fwd if dora_twice and t.module in adapted else 0
        tally.add("linear_forward", dtype, fwd + extra)
        last = t.reads == MLP_HIDDEN and (t.module not in adapted or dora_twice)
        if passes > 1:
            tally.add("recompute", dtype, (fwd + extra - (one * t.layers if last else 0)) * (passes - 1))
        first = one if skip_first and t.reads == ATTENTION_INPUT else 0
        tally.add("linear_backward", dtype, fwd + extra - first * (2 if extra else 1))
        if full or id(t) in saved:
            tally.add("linear_backward", dtype, fwd)


def _lora(arch: Architecture, adapters: AdapterPlan, plan: Plan, tally: _Tally, passes: int) -> None:
    """LoRA A/B matmuls in fp32 (forward, both weights' gradients, the input's); DoRA's ``B(A(I))`` for the weight
    norm per forward (PEFT detaches the norm: no backward); a fused MoE expert's ``W + B·A`` per forward."""
    T, r = plan.batch_size * plan.seq_len, plan.lora_r
    skip_first = _no_input_grads(adapters, plan)
    dora_twice = plan.use_dora and plan.lora_dropout > 0
    for a in adapters.adapted:
        fwd = _lora_forward(a, arch, T, r)
        per_pass = 2 * r * a.in_features * (a.in_features + a.out_features) * a.layers if plan.use_dora else 0
        tally.add("lora_forward", FP32, fwd + per_pass)
        expert = a.reads in (EXPERT_INPUT, EXPERT_HIDDEN)
        first = 2 * T * r * a.in_features if skip_first and a.reads == ATTENTION_INPUT else 0
        tally.add("lora_backward", FP32, fwd if expert else 2 * fwd - first)
        if passes > 1:
            last = 2 * T * r * a.out_features * a.layers if a.reads == MLP_HIDDEN and not dora_twice else 0
            tally.add("recompute", FP32, (fwd + per_pass - last) * (passes - 1))


def _lora_forward(a: Adapted, arch: Architecture, T: int, r: int) -> int:
    if a.reads in (EXPERT_INPUT, EXPERT_HIDDEN):  # ParamWrapper: W + B·A per expert, once per forward
        experts = max(arch.num_experts, 1)
        return 2 * r * a.in_features * a.out_features * a.layers // experts
    if a.embedding:
        return 2 * T * r * a.out_features * a.layers  # a lookup in A, then B
    return 2 * T * r * (a.in_features + a.out_features) * a.layers


def attention_flops(arch: Architecture, plan: Plan, fused: bool) -> tuple[int, int]:
    """(forward, backward) FLOPs of ``QKᵀ`` and ``PV`` over all layers; ``fused``: causal blocks skipped and
    ``QKᵀ`` recomputed in the backward (flash / memory-efficient kernels)."""
    b, s = plan.batch_size, plan.seq_len
    fwd = 4 * b * s * s * arch.q_dim * arch.num_hidden_layers
    if fused:
        fwd //= 2
        return fwd, fwd * 5 // 2
    return fwd, 2 * fwd


def _first_layer_attention_grads(adapters: AdapterPlan) -> int:
    """How many of the unfused attention backward's four matmuls (dV, dP, dQ, dK) the first layer skips when its
    input needs no gradient: those of q / k / v produced by no adapted module."""
    leaves = {a.module.rsplit(".", 1)[-1] for a in adapters.adapted if a.reads == ATTENTION_INPUT}
    fused = bool(leaves - {"q_proj", "k_proj", "v_proj"})
    need = {"q", "k", "v"} if fused else {x[0] for x in leaves}
    matmuls = int("v" in need) + int(bool(need & {"q", "k"})) + int("q" in need) + int("k" in need)
    return 4 - matmuls


def _attention(inv: Inventory, adapters: AdapterPlan, plan: Plan, tally: _Tally, passes: int) -> None:
    f = dtype_flow(inv, adapters, plan)
    fused = f.attn == "flash_attention_2" or (f.attn == "sdpa" and not f.sdpa_math)
    fwd, bwd = attention_flops(inv.arch, plan, fused)
    if not fused and _no_input_grads(adapters, plan):
        per_matmul = bwd // (4 * inv.arch.num_hidden_layers)
        bwd -= per_matmul * _first_layer_attention_grads(adapters)
    dtype = FP32 if f.ad == 4 else _compute_dtype(plan)
    tally.add("attention_forward", dtype, fwd)
    tally.add("attention_backward", dtype, bwd)
    if passes > 1:
        tally.add("recompute", dtype, fwd * (passes - 1))


def _head(arch: Architecture, adapters: AdapterPlan, plan: Plan, tally: _Tally) -> None:
    T = plan.batch_size * plan.seq_len
    fwd = 2 * T * arch.hidden_size * arch.vocab_size
    dtype = FP32 if plan.upcast_non_quantized else _compute_dtype(plan)
    trains = plan.method == "full" or any(t.role == "lm_head" for t in adapters.saved_modules)
    tally.add("head_forward", dtype, fwd)
    tally.add("head_backward", dtype, fwd * (2 if trains else 1))


def step_flops(inv: Inventory, adapters: AdapterPlan, plan: Plan) -> StepFlops:
    """FLOPs (by part and by dtype) and memory-bound bytes of one micro-batch step on one GPU."""
    passes = 2 if plan.gradient_checkpointing else 1
    tally = _Tally()
    _linears(inv, adapters, plan, tally, passes)
    _lora(inv.arch, adapters, plan, tally, passes)
    _attention(inv, adapters, plan, tally, passes)
    _head(inv.arch, adapters, plan, tally)
    return StepFlops(tally.parts, tally.by_dtype, dequant_bytes(inv, plan), optimizer_traffic(inv, adapters, plan))


def dequant_bytes(inv: Inventory, plan: Plan) -> int:
    """Bytes bitsandbytes moves to dequantize the quantized weights in one micro-batch step: each weight once per
    forward (and recompute) and once in the backward; 4-bit: read half a byte, write two; int8: read one, write two."""
    if not plan.quantized:
        return 0
    n = inv.quantizable
    per = (1.0 + 2.0) if plan.quant_type == "int8" else (0.5 + 2.0)
    dequants = 3 if plan.gradient_checkpointing else 2
    return int(n * per * dequants)


_STATE_BYTES = {"adamw_torch": None, "adamw_8bit": 2, "paged_adamw_8bit": 2, "paged_adamw_32bit": 8, "sgd": 0}


def optimizer_traffic(inv: Inventory, adapters: AdapterPlan, plan: Plan) -> int:
    """Bytes one optimizer step reads and writes: each trainable parameter's value (read + write) and gradient, and
    its state (read + write): AdamW's two moments like the parameter, 8-bit ones a byte each, none for SGD."""
    n = inv.total if plan.method == "full" else adapters.trainable
    pb = param_dtype_bytes(plan) if plan.method == "full" else 4
    state = _STATE_BYTES.get(plan.optimizer, 0)  # adafactor: factored, negligible
    sb = 2 * pb if state is None else state
    return n * (2 * pb + pb + 2 * sb)


# ---------------------------------------------------------------------------------------------- the host floor


def host_ops(inv: Inventory, adapters: AdapterPlan, plan: Plan) -> int:
    """Ops the host dispatches for one optimizer step: each micro-batch's forward + backward, and the update."""
    return plan.grad_accum_steps * micro_ops(inv, adapters, plan) + optimizer_ops(adapters, plan, inv)


def micro_ops(inv: Inventory, adapters: AdapterPlan, plan: Plan) -> int:
    """Ops the host dispatches for one micro-batch step (forward + backward), counted per decoder layer on real CPU
    steps of a Llama-shaped model (``bench/time_model.py ops``; other families differ by their extra ops)."""
    h = _data()["host"]
    gc = 1 if plan.gradient_checkpointing else 0
    per = h["ops_per_layer"]
    layers = inv.arch.num_hidden_layers
    base = per["full"][gc] if plan.method == "full" else per["frozen"][gc]
    modules = sum(a.layers for a in adapters.adapted)
    lora = per["lora_module"][gc] + (per["lora_dropout"][gc] if lora_dropout_active(plan) else 0)
    if plan.use_dora:
        lora += per["dora_module"][gc]
    fixed = h["ops_fixed"]["full" if plan.method == "full" else "frozen"][gc]
    return round(float(base * layers + lora * modules + fixed))


def host_op_seconds(plan: Plan) -> float:
    """Host seconds per dispatched op, from the H200 runs (QLoRA's bitsandbytes ops cost more Python than LoRA's)."""
    op_s = _data()["host"]["op_s"]
    return float(op_s["qlora"] if plan.quantized else op_s["lora"])


def optimizer_ops(adapters: AdapterPlan, plan: Plan, inv: Inventory) -> int:
    """Ops of one optimizer step: torch's foreach kernels (a fixed few), bitsandbytes' one per parameter tensor."""
    if plan.optimizer in ("adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit"):
        tensors = sum(t.layers for t in inv) if plan.method == "full" else adapters.tensor_count(plan.use_dora)
        return 2 * tensors
    return int(_data()["host"]["optimizer_ops"])


# ---------------------------------------------------------------------------------------------- the step


@dataclass(frozen=True)
class TimeEstimate:
    """Time of one optimizer step on ``num_gpus`` of ``gpu`` (data parallel), and of the run."""

    gpu: str
    num_gpus: int
    flops: StepFlops
    mfu: Mfu
    peak: Throughput
    accumulation: int
    compute_s: float  # matmuls of one optimizer step at the MFU
    memory_s: float  # dequantization and the optimizer update at peak bandwidth
    host_s: float  # the host floor: dispatched ops × seconds per op
    tokens_per_step: int  # all GPUs
    run_tokens: int | None

    @property
    def gpu_s(self) -> float:
        return self.compute_s + self.memory_s

    @property
    def step_s(self) -> float:
        """The optimizer step: the longer of the GPU's work and the host's dispatch."""
        return max(self.gpu_s, self.host_s)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens_per_step / self.step_s

    @property
    def steps(self) -> int | None:
        if self.run_tokens is None:
            return None
        return -(-self.run_tokens // self.tokens_per_step)

    @property
    def run_s(self) -> float | None:
        steps = self.steps
        return None if steps is None else steps * self.step_s

    def to_dict(self) -> dict[str, Any]:
        f = self.flops
        run_s = self.run_s
        return {
            "gpu": self.gpu,
            "num_gpus": self.num_gpus,
            "step_s": round(self.step_s, 6),
            "tokens_per_s": round(self.tokens_per_s, 3),
            "tokens_per_s_per_gpu": round(self.tokens_per_s / self.num_gpus, 3),
            "tokens_per_step": self.tokens_per_step,
            "grad_accum_steps": self.accumulation,
            "bound": "gpu" if self.gpu_s >= self.host_s else "host",
            "compute_s": round(self.compute_s, 6),
            "memory_s": round(self.memory_s, 6),
            "host_s": round(self.host_s, 6),
            "mfu": self.mfu.to_dict(),
            "achieved_tflops": round(self.accumulation * f.total / self.step_s / TERA, 3),
            "peak_tflops": dict(self.peak.tflops),
            "bandwidth_gbs": self.peak.bandwidth_gbs,
            "flops_per_step": self.accumulation * f.total,
            "flops": dict(f.parts),
            "flops_by_dtype": dict(f.by_dtype),
            "dequant_bytes": f.dequant_bytes,
            "optimizer_bytes": f.optimizer_bytes,
            "run_tokens": self.run_tokens,
            "steps": self.steps,
            "run_s": None if run_s is None else round(run_s, 3),
            "run_hours": None if run_s is None else round(run_s / 3600, 4),
        }


def step_time(inv: Inventory, adapters: AdapterPlan, plan: Plan, gpu: catalog.GPU) -> TimeEstimate | None:
    """Time of one optimizer step of ``plan`` on ``plan.num_gpus`` × ``gpu``; None where a dtype the step runs in
    has no dense peak on the card (bf16 on a card without bf16 tensor cores: the plan does not fit there)."""
    peak = throughput(gpu)
    flops = step_flops(inv, adapters, plan)
    mfu = plan_mfu(plan, gpu.id)
    if any(peak.tflops.get(d, 0.0) <= 0 for d in flops.by_dtype):
        return None
    ga = plan.grad_accum_steps
    micro = sum(n / (peak.tflops[d] * TERA * mfu.value) for d, n in flops.by_dtype.items())
    bandwidth = peak.bandwidth_gbs * GIGA
    memory = (ga * flops.dequant_bytes + flops.optimizer_bytes) / bandwidth
    host = host_ops(inv, adapters, plan) * host_op_seconds(plan)
    return TimeEstimate(
        gpu=gpu.id,
        num_gpus=plan.num_gpus,
        flops=flops,
        mfu=mfu,
        peak=peak,
        accumulation=ga,
        compute_s=ga * micro,
        memory_s=memory,
        host_s=host,
        tokens_per_step=plan.batch_size * plan.seq_len * ga * plan.num_gpus,
        run_tokens=plan.run_tokens,
    )
