"""Training memory: what transformers + PEFT + bitsandbytes + torch keep live during one training step.

The model follows the tensors the real stack allocates (found with saved-tensor hooks and a live-storage tracker on
real CPU runs, traced at real sizes, and measured on an H200; see docs/accuracy.md), not a rule of thumb:

* **weights** — every parameter in the dtype it is held in: 16-bit for LoRA; for QLoRA packed 4-bit linears plus
  quant state, and every other parameter upcast to fp32 by ``prepare_model_for_kbit_training``; fp32 masters under
  mixed precision.
* **adapters** — LoRA A/B (fp32: PEFT's ``autocast_adapter_dtype``) and ``modules_to_save`` copies.
* **gradients** — one per trainable parameter, in its dtype, from the backward pass until ``zero_grad``.
* **optimizer** — state created at the first ``step`` (AdamW: ``exp_avg`` + ``exp_avg_sq`` like the parameter).
* **activations** — tensors autograd saves in the forward pass, per decoder layer, from the dtype flow: with
  ``prepare_model_for_kbit_training`` the embeddings are fp32, so the whole residual stream and attention run in
  fp32; PEFT casts each adapted module's input to fp32 (one copy per module when the stream is 16-bit).
* **logits** — lm_head output, transformers' ``logits.float()`` copy, the saved log-softmax and the two fp32
  gradients of the cross-entropy backward: often the peak.
* **overhead** — CUDA context and cuBLAS workspace (GPU only), reported apart from the allocator's figures.
* **allocator_cache** — what torch's caching allocator keeps reserved beyond the allocated peak (GPU only).
* **optimizer_paged** — a paged optimizer's state in CUDA managed memory, outside torch's allocator (GPU only).

On CUDA the components add up to ``total``; on the CPU to ``peak_allocated`` (which is the total there).

The peak is taken over the step's phases (forward, loss backward, layer backward, optimizer step), not summed. Read
top to bottom, the module follows the step: parameters (``weight_bytes``, ``optimizer_bytes``), the dtype flow
(``dtype_flow``), one decoder layer's saved tensors (``layer_activations``), then one function per phase —
``persistent_state``, ``forward_activations``, ``head_loss``, ``layer_backward``, ``optimizer_step`` — and the
breakdown at the peak (``peak_components``) with the tiers above it (``runtime_tiers``), put together by
``training_memory``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ._arch import Architecture, attention_implementation
from ._inventory import (
    ATTENTION_INPUT,
    ATTENTION_OUTPUT,
    EMBEDDING,
    EXPERT_HIDDEN,
    EXPERT_INPUT,
    EXPERTS,
    MLP_HIDDEN,
    MLP_INPUT,
    ROUTER_INPUT,
    SHARED_EXPERT_HIDDEN,
    SHARED_EXPERT_INPUT,
    Inventory,
    Tensor,
)
from ._lora import Adapted, AdapterPlan
from ._plan import Plan
from ._quant import DTYPE_BYTES, alloc, four_bit_bytes, int8_bytes
from ._units import gib_text

MiB = 1024 * 1024
# The estimate by component; on CUDA they add up to ``total`` (what nvidia-smi shows), on the CPU to the tensor peak.
COMPONENTS = (
    "weights", "adapters", "gradients", "optimizer", "activations", "logits",  # live tensors at the peak
    "overhead",  # CUDA context and runtime (outside torch's allocator) + cuBLAS workspace (inside it)
    "allocator_cache",  # peak_reserved - peak_allocated: freed blocks the caching allocator keeps
    "optimizer_paged",  # paged optimizer state in CUDA managed memory (outside torch's allocator)
)  # fmt: skip

# GPU runtime overheads, calibrated on an H200 (torch 2.11 + CUDA 13.0, driver 580.159; bench/results/gpu_h200.json,
# docs/accuracy.md). Other GPUs and stacks differ by tens of MiB.
CUDA_CONTEXT_BYTES = 527 * MiB  # total - free from mem_get_info() before anything is loaded
CUDA_RUNTIME_BYTES = 233 * MiB  # kernels and library handles loaded during the first step, outside the allocator
CUBLAS_WORKSPACE_BYTES = 64 * MiB  # cuBLAS/cuBLASLt workspaces: in torch's allocator, so in max_memory_allocated
ALLOCATOR_CACHE_FLOOR = 512 * MiB  # blocks the caching allocator keeps reserved beyond the allocated peak


@dataclass(frozen=True)
class Term:
    """One named quantity of the estimate, in the component it is part of.

    Terms of one component that are parts of one figure add up to it (the head/loss tensors to ``logits``, the
    CUDA context and the cuBLAS workspace to ``overhead``); ``tensor_peak`` is the sum of the live-tensor
    components, part of none (component ``""``).
    """

    name: str
    component: str
    bytes: int
    counts: str


@dataclass(frozen=True)
class MemoryEstimate:
    """One training step's memory: tiers, phases, the breakdown at the peak and the terms behind it.

    ``components`` (keys ``COMPONENTS``, in order) add up to ``total``; on the CPU ``total == peak_allocated``.
    """

    components: dict[str, int]
    peak_allocated: int
    peak_reserved: int
    total: int
    peak_phase: str
    phases: dict[str, int]
    terms: tuple[Term, ...]
    activation_dtype: str
    notes: tuple[str, ...] = field(default=())

    @property
    def fit_bytes(self) -> int:
        """The figure a GPU's usable memory is compared with: whether the plan fits, and the fit search."""
        return self.total

    def to_dict(self) -> dict[str, object]:
        return {
            "components": dict(self.components),
            "peak_allocated": self.peak_allocated,
            "peak_reserved": self.peak_reserved,
            "total": self.total,
            "peak_phase": self.peak_phase,
            "phases": dict(self.phases),
            "activation_dtype": self.activation_dtype,
            "terms": [
                {"name": t.name, "component": t.component, "bytes": t.bytes, "counts": t.counts} for t in self.terms
            ],
            "notes": list(self.notes),
        }


# ---------------------------------------------------------------------------------------------- parameters


def param_dtype_bytes(plan: Plan) -> int:
    """Bytes per element of a non-quantized parameter as held during training (every one alike)."""
    if plan.method == "full":
        return 4 if plan.mixed_precision else DTYPE_BYTES[plan.dtype]
    if plan.upcast_non_quantized:
        return 4
    return DTYPE_BYTES[plan.dtype]


def weight_bytes(inv: Inventory, plan: Plan, cuda: bool) -> int:
    """Base model parameters in memory (frozen for LoRA/QLoRA; the trained weights for full fine-tuning).

    Counts each parameter tensor once (tied embeddings share one), each a separate allocation. QLoRA: linears that
    transformers' ``replace_with_bnb_linear`` converts are packed 4-bit (or int8) with their quant state; lm_head,
    embeddings, norms and biases are not converted. Ignores buffers (rotary ``inv_freq``: < 1 KiB).
    """
    total = 0
    quantized, int8, per = plan.quantized, plan.quant_type == "int8", param_dtype_bytes(plan)
    for t in inv:
        if quantized and t.bnb_quantized:
            if int8:
                one = int8_bytes(t.out_features, t.in_features, cuda)
            else:
                one = four_bit_bytes(t.numel, plan.double_quant, cuda)
        else:
            one = alloc(t.numel * per, cuda)
        total += one * t.layers
    return total


def _trainable_tensors(inv: Inventory, adapters: AdapterPlan, plan: Plan) -> list[tuple[int, int, int]]:
    """(elements, bytes per element, count) of every trainable parameter tensor."""
    per = param_dtype_bytes(plan)
    if plan.method == "full":
        return [(t.numel, per, t.layers) for t in inv]
    out: list[tuple[int, int, int]] = []
    r = plan.lora_r
    for a in adapters.adapted:
        out += [(r * a.in_features, 4, a.layers), (a.out_features * r, 4, a.layers)]
        if plan.use_dora:  # the magnitude vector, on embeddings too (as Adapted.params counts it)
            out.append((a.out_features, 4, a.layers))
    for t in adapters.saved_modules:
        out.append((t.numel, per, t.layers))
    return out


def _sum_alloc(tensors: list[tuple[int, int, int]], cuda: bool) -> int:
    return sum(alloc(n * b, cuda) * c for n, b, c in tensors)


def optimizer_bytes(tensors: list[tuple[int, int, int]], plan: Plan, cuda: bool) -> tuple[int, int]:
    """Optimizer state as (allocator-visible bytes, managed/paged bytes).

    adamw_torch: ``exp_avg`` and ``exp_avg_sq`` like each parameter (same dtype) and a ``step`` scalar (fp32,
    on the CPU unless capturable: 4 B each in a CPU run, none on the GPU). adamw_8bit: bitsandbytes keeps
    tensors of ≥ 4096 elements in uint8 with an fp32 absmax per 256, smaller ones in fp32. Paged variants put
    states of ≥ 1e5 elements in CUDA managed memory (not in torch's allocator) on CUDA; on the CPU bitsandbytes
    (0.50) warns and allocates them as ordinary tensors (``get_state_buffer``). sgd: HF Trainer's ``sgd`` has no
    momentum, so no state. adafactor (Trainer defaults): factored row + column second moments for matrices,
    a full one for vectors, in the gradient's dtype.
    """
    opt = plan.optimizer
    paged = opt.startswith("paged") and cuda
    visible = managed = 0
    for n, b, c in tensors:
        if opt == "adamw_torch":
            visible += (2 * alloc(n * b, cuda) + (0 if cuda else 4)) * c
        elif opt in ("adamw_8bit", "paged_adamw_8bit"):
            one = 2 * (alloc(n, cuda) + alloc(4 * -(-n // 256), cuda)) if n >= 4096 else 2 * alloc(4 * n, cuda)
            if paged and n >= 100_000:
                managed += one * c
            else:
                visible += one * c
        elif opt == "paged_adamw_32bit":
            one = 2 * alloc(4 * n, cuda)
            if paged and n >= 100_000:
                managed += one * c
            else:
                visible += one * c
        elif opt == "adafactor":
            visible += alloc(b * _factored(n), cuda) * c
    return visible, managed


def _factored(n: int) -> int:
    # Without the shapes here, treat a tensor as a square-ish matrix: rows + cols ≈ 2·sqrt(n) (exact for LoRA's
    # r × in / out × r it is r + in or out + r; the error is < 1 KiB per tensor at real sizes).
    if n < 4096:
        return n
    root = int(n**0.5)
    return 2 * root


# ---------------------------------------------------------------------------------------------- the dtype flow


@dataclass(frozen=True)
class _Flow:
    """Dtype flow and shapes of one training step, shared by every phase."""

    T: int  # tokens in the micro-batch
    b: int
    s: int
    ad: int  # bytes per element of the residual stream / attention (fp32 when embeddings are fp32)
    ab: int  # bytes per element of adapter compute (PEFT casts inputs to the adapter dtype)
    mask: int  # bytes per element of a dropout mask (float on CPU, bool on CUDA)
    frozen_base: bool
    lora: tuple[str, ...]  # what each adapted module reads (Tensor.reads), one entry per module of a layer
    dropout: bool
    r: int
    attn: str
    sdpa_math: bool = False  # CUDA SDPA falls back to the math kernel (fp32 q/k/v with grouped KV heads)
    expert_lora_bytes: int = 0  # one MoE layer's expert stack as PEFT's ParamWrapper materializes it (W + ΔW)
    router_lora: bool = False


def dtype_flow(inv: Inventory, adapters: AdapterPlan, plan: Plan) -> _Flow:
    """The dtypes every phase sees, and what the adapters read.

    Residual stream and attention: fp32 under QLoRA (``prepare_model_for_kbit_training`` makes the embeddings fp32,
    so everything after them is fp32), 16-bit under mixed precision, else the plan's dtype. Adapter compute: fp32
    (PEFT's ``autocast_adapter_dtype``). Dropout masks: float tensors on the CPU, bool on CUDA. Gemma 2 runs eager
    attention whatever is asked (no SDPA path in transformers). CUDA's SDPA has no fused kernel for fp32 with grouped
    KV heads and takes its math path (measured on the H200 runs, bench/results/gpu_h200.json).
    """
    arch = inv.arch
    cuda = plan.device == "cuda"
    attn = attention_implementation(arch.model_type, plan.attn_implementation)
    if plan.method == "qlora" and plan.upcast_non_quantized:
        ad = 4
    elif plan.method == "full" and plan.mixed_precision:
        ad = 2
    else:
        ad = DTYPE_BYTES[plan.dtype]
    ab = 4
    lora = tuple(a.reads for a in adapters.adapted)
    experts_adapted = EXPERT_INPUT in lora or EXPERT_HIDDEN in lora
    expert_numel = sum(t.numel for t in inv if t.kind == EXPERTS) if experts_adapted else 0
    return _Flow(
        T=plan.batch_size * plan.seq_len, b=plan.batch_size, s=plan.seq_len, ad=ad, ab=ab, mask=1 if cuda else ab,
        frozen_base=plan.method != "full", lora=lora, dropout=plan.lora_dropout > 0 and plan.adapters,
        r=plan.lora_r, attn=attn,
        expert_lora_bytes=expert_numel * param_dtype_bytes(plan) if experts_adapted else 0,
        router_lora=ROUTER_INPUT in lora,
        sdpa_math=cuda and attn == "sdpa" and ad == 4 and arch.num_key_value_heads != arch.num_attention_heads,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------- one decoder layer


def _linear_inputs(f: _Flow, reads: tuple[str, ...], width: int, shared: bool = False) -> int:
    """Saved bytes for one distinct linear input, read by the modules whose ``Tensor.reads`` is in ``reads``.

    ``shared``: the input tensor is already saved by another op (SDPA keeps its output, which o_proj reads), so
    keeping it costs nothing more.
    """
    T = f.T
    lora = sum(map(f.lora.count, reads))  # adapted modules reading it
    saved = 0
    own = 0 if shared else f.ad * T * width
    if not f.frozen_base:
        saved += own  # the base linear saves its input for the weight gradient
    if lora:
        if f.dropout:
            saved += lora * (f.ab * T * width + f.mask * T * width)  # dropped-out copy + mask per module
        elif f.ad != f.ab:
            saved += lora * f.ab * T * width  # one fp32 cast copy per adapted module
        elif f.frozen_base:
            saved += own  # the input itself, shared by the modules reading it
        saved += lora * f.ab * T * f.r  # lora_A output, saved by lora_B
    return saved


def _norm_saved(arch: Architecture, f: _Flow, width: int, trainable: bool) -> int:
    T = f.T
    if arch.norm == "layernorm":
        return f.ad * T * width + 8 * T  # input, mean, rstd
    saved = 4 * T * width + 4 * T  # fp32 copy of the input, rsqrt
    if trainable:
        saved += (4 if arch.model_type.startswith("gemma") else f.ad) * T * width  # Gemma keeps the fp32 output
    return saved


def _act_saved(arch: Architecture, width: int, f: _Flow) -> int:
    if arch.hidden_act == "gelu_new":
        return 4 * f.ad * f.T * width  # python tanh-GELU: input, 0.5·x, tanh(·), 1 + tanh(·)
    return f.ad * f.T * width


def layer_activations(arch: Architecture, f: _Flow, moe: bool) -> int:
    """Bytes autograd saves for one decoder layer's backward (no checkpointing).

    Counts: norms' fp32 input copies (RMSNorm) or inputs (LayerNorm); each distinct linear input as the adapters and
    the base layers keep it; q/k/v, the attention output and the log-sum-exp for SDPA/flash (plus the fp32 softmax
    and its 16-bit copy, b·a·s² each, for eager); the MLP activation input and the two operands of the gate product.
    Ignores: rotary cos/sin (shared by all layers) and the index tensors of MoE routing. Error: 0 on the CPU
    reference configs for llama/qwen2/mistral; see docs/accuracy.md.
    """
    h = arch.hidden_size
    norm = _norm_saved(arch, f, h, not f.frozen_base)
    total = 0 if arch.model_type == "olmo2" else norm  # OLMo 2 normalizes the blocks' outputs, not their inputs
    if arch.parallel_block and arch.norms_per_layer == 1:
        total += _linear_inputs(f, (ATTENTION_INPUT, MLP_INPUT), h)  # attention and MLP read one normalized input
    else:
        total += _linear_inputs(f, (ATTENTION_INPUT,), h)
    return total + _attention_saved(arch, f) + _mlp_saved(arch, f, norm, moe)


def _attention_saved(arch: Architecture, f: _Flow) -> int:
    """The attention's saved tensors after its input projections: q/k norms, the attention core, o_proj's input."""
    T, ad = f.T, f.ad
    a, kv, d = arch.num_attention_heads, arch.num_key_value_heads, arch.head_dim
    qd, kd = a * d, kv * d
    total = 0
    if arch.qk_norm == "head":
        total += 4 * T * (qd + kd) + 4 * T * (a + kv)
    elif arch.qk_norm == "full":
        total += 4 * T * (qd + kd) + 8 * T
    if f.attn == "eager":
        total += 3 * ad * T * qd  # q, and k and v repeated to the query heads
        total += 4 * f.b * a * f.s * f.s  # fp32 softmax output
        if ad != 4:
            total += ad * f.b * a * f.s * f.s  # its 16-bit copy, saved by the matmul with v
    elif f.sdpa_math:
        # CUDA SDPA has no fused kernel for fp32 with grouped KV heads (flash needs 16-bit, memory-efficient has
        # no GQA), so it falls back to the math path: scaled q, repeated-and-scaled k, repeated v, and the fp32
        # attention probabilities, b·a·s², per layer (measured on the H200: QLoRA without GC)
        total += 3 * ad * T * qd + 4 * f.b * a * f.s * f.s
    else:
        qb = 2 if f.attn == "flash_attention_2" else ad
        total += qb * T * (2 * qd + 2 * kd)  # q, k, v, output
        total += 4 * T * a  # log-sum-exp
    if arch.fused_qkv and arch.model_type != "gpt2":
        # q and k go through rotary embeddings (new tensors) while v stays a view of the fused projection's
        # output, so SDPA's saved v keeps the whole q|k|v storage alive
        total += ad * T * (qd + kd)
    if f.attn == "eager" and arch.attn_logit_softcapping:
        total += ad * f.b * a * f.s * f.s  # tanh output of the attention-logit soft-capping
    # SDPA/flash return their output in (b, s, heads, d) layout, so o_proj's input is the saved output itself
    o_shared = f.attn != "eager" and (f.attn != "flash_attention_2" or ad == 2)
    return total + _linear_inputs(f, (ATTENTION_OUTPUT,), qd, shared=o_shared)


def _mlp_saved(arch: Architecture, f: _Flow, norm: int, moe: bool) -> int:
    """The feed-forward block's saved tensors, its norms included (``norm``: one norm's saved bytes)."""
    T, h, ad = f.T, arch.hidden_size, f.ad
    total = 0
    if not (arch.parallel_block and arch.norms_per_layer == 1):  # else its input is counted with the attention's
        if arch.model_type == "olmo2":
            total += norm  # post-attention norm on the o_proj output
            total += _linear_inputs(f, (MLP_INPUT,), h)  # the MLP reads the raw stream
        else:
            if arch.norms_per_layer == 4:
                total += norm  # Gemma 2/3: post-attention norm on the attention output
            total += norm  # the MLP's input norm (post_attention_layernorm, ln_2, ln_mlp, ...)
            if not moe:
                total += _linear_inputs(f, (MLP_INPUT,), h)
    if moe:
        total += _moe_saved(arch, f)
    else:
        i = arch.intermediate_size
        if arch.mlp_gated:
            total += 3 * ad * T * i  # activation input, activation output, up output (operands of the product)
        else:
            total += _act_saved(arch, i, f)
        total += _linear_inputs(f, (MLP_HIDDEN,), i)
    if arch.norms_per_layer == 4 or arch.model_type == "olmo2":
        total += norm  # post-feedforward norm
    return total


def _moe_saved(arch: Architecture, f: _Flow) -> int:
    T, h, ad = f.T, arch.hidden_size, f.ad
    e, k, mi = arch.num_experts, arch.num_experts_per_tok, arch.moe_intermediate_size
    saved = _linear_inputs(f, (ROUTER_INPUT,), h) if not f.frozen_base else 0
    saved += T * e * (ad + 4) + T * k * 12  # router logits, fp32 softmax, top-k weights and indices
    pairs = T * k
    saved += pairs * ad * (3 * mi + h) + pairs * ad  # per routed token: gate_up output, act, down output, weight
    if not f.frozen_base:
        saved += pairs * ad * (h + mi)  # expert linears save their inputs
    if f.expert_lora_bytes:
        # LoRA on the fused experts (PEFT ParamWrapper): the parametrization materializes W + ΔW for the whole
        # stack, which then needs a gradient, so the expert matmuls keep it and their inputs
        saved += f.expert_lora_bytes + pairs * ad * (h + mi) + ad * T * h
    if f.router_lora:
        saved += ad * T * h  # the router's input, kept for the gradient of its W + ΔW
    if arch.shared_expert_intermediate_size:
        si = arch.shared_expert_intermediate_size
        saved += _linear_inputs(f, (SHARED_EXPERT_INPUT,), h)
        saved += 3 * ad * T * si + _linear_inputs(f, (SHARED_EXPERT_HIDDEN,), si)
        saved += ad * T * h + 2 * ad * T  # shared output and its sigmoid gate, operands of the product
    return saved


def first_layer_delta(arch: Architecture, f: _Flow) -> int:
    """What the first decoder layer saves less when its input does not require grad (bytes, ≤ 0).

    Without gradient checkpointing PEFT does not call ``enable_input_require_grads``, so for LoRA/QLoRA the
    embedding output needs no gradient: the first norm saves nothing, and a dropout on an input that needs no
    gradient keeps no mask. Measured on the CPU grid (exact for llama-style layers).
    """
    if not f.frozen_base:
        return 0
    T, h = f.T, arch.hidden_size
    delta = 4 * T  # the first norm's rsqrt
    if f.ad == 2:
        delta += 2 * T * h  # the 16-bit embedding output is not kept
    if f.dropout:
        delta += f.lora.count(ATTENTION_INPUT) * f.mask * T * h  # the attention's inputs are the first read
    return -delta


# ---------------------------------------------------------------------------------------------- persistent state


@dataclass(frozen=True)
class _State:
    """What one GPU holds through the whole step, and its gradients by where the backward makes them."""

    weights: int
    adapters: int
    optimizer: int  # in torch's allocator
    optimizer_paged: int  # in CUDA managed memory (paged optimizers)
    ddp_buckets: int  # DDP's bucket copy of every gradient
    trainable: Sequence[tuple[int, int, int]]  # (elements, bytes per element, count) of each trainable tensor
    trainable_bytes: int  # one allocation like each trainable tensor (the adapters, every gradient), unsharded
    shard_opt: int  # GPUs the optimizer state is sharded over
    grads: int  # every gradient, from the backward until zero_grad
    grads_head: int  # lm_head + final norm (+ the tied weight's pending gradient)
    grads_layers: int  # every decoder layer's
    grads_layer: int  # one decoder layer's
    tied_pending: int  # the tied weight's gradient from lm_head, not yet a .grad

    @property
    def static(self) -> int:
        """Allocated from before the forward to after the optimizer step."""
        return self.weights + self.adapters + self.optimizer + self.ddp_buckets


def _held(tensors: Iterable[Tensor], plan: Plan, cuda: bool) -> int:
    """One instance of each parameter tensor (or its gradient), in the dtype it is held in."""
    per = param_dtype_bytes(plan)
    return sum(alloc(t.numel * per, cuda) for t in tensors)


def _lora_grads(modules: Iterable[Adapted], r: int, cuda: bool) -> int:
    """fp32 gradients of lora_A and lora_B of ``modules``, one layer."""
    return sum(alloc(4 * r * a.in_features, cuda) + alloc(4 * r * a.out_features, cuda) for a in modules)


def persistent_state(inv: Inventory, adapters: AdapterPlan, plan: Plan, cuda: bool) -> _State:
    """Weights, adapters, optimizer state and gradients, as each GPU holds them.

    Multi-GPU data parallelism: ZeRO stage 1 shards the optimizer state, 2 also the gradients, 3 also the
    parameters, which it gathers one decoder layer at a time (the gathered layer and the prefetched next one are
    held); DDP keeps a bucket copy of every gradient. Against the CPU grid's live-tensor tracker (docs/accuracy.md):
    adapters and optimizer state exact, weights within 0.7 %; the sharding is not measured.
    """
    arch = inv.arch
    weights = weight_bytes(inv, plan, cuda)
    trainable = _trainable_tensors(inv, adapters, plan)
    trainable_bytes = _sum_alloc(trainable, cuda)
    adapter_b = 0 if plan.method == "full" else trainable_bytes
    grads = trainable_bytes
    opt_visible, opt_managed = optimizer_bytes(trainable, plan, cuda)
    n_gpu = plan.num_gpus
    shard_opt = n_gpu if plan.sharding in ("zero1", "zero2", "zero3") else 1
    shard_grad = n_gpu if plan.sharding in ("zero2", "zero3") else 1
    shard_w = n_gpu if plan.sharding == "zero3" else 1
    opt_visible, opt_managed = -(-opt_visible // shard_opt), -(-opt_managed // shard_opt)
    if shard_w > 1:
        per_layer_w = sum(t.numel * param_dtype_bytes(plan) for t in inv if t.layers > 1) // arch.num_hidden_layers
        gathered = 2 * per_layer_w  # the gathered layer and the prefetched next one
        weights, adapter_b = -(-weights // shard_w) + gathered, -(-adapter_b // shard_w)
    ddp_buckets = grads if n_gpu > 1 and plan.sharding == "ddp" else 0
    head, embed, layers, tied = _gradients_by_place(inv, adapters, plan, cuda, grads)
    if shard_grad > 1:
        head, embed, layers, tied = (-(-x // shard_grad) for x in (head, embed, layers, tied))
        grads = head + embed + layers
    return _State(
        weights=weights, adapters=adapter_b, optimizer=opt_visible, optimizer_paged=opt_managed,
        ddp_buckets=ddp_buckets, trainable=trainable, trainable_bytes=trainable_bytes, shard_opt=shard_opt,
        grads=grads, grads_head=head, grads_layers=layers, grads_layer=layers // arch.num_hidden_layers,
        tied_pending=tied,
    )  # fmt: skip


def _gradients_by_place(
    inv: Inventory, adapters: AdapterPlan, plan: Plan, cuda: bool, grads: int
) -> tuple[int, int, int, int]:
    """Gradients as (head, embeddings, decoder layers, tied weight pending), in the order the backward makes them.

    The head (lm_head and the final norm) gets its gradients first, the decoder layers from the last to the first,
    the embeddings (allocated last) at the very end. Full fine-tuning with tied embeddings: the tied weight's gradient
    from lm_head's backward waits in autograd's input buffer (a live tensor, not yet a ``.grad``) until the
    embedding's contribution is added; it is counted with the head. LoRA/QLoRA: ``modules_to_save`` copies of
    lm_head or the embeddings.
    """
    full = plan.method == "full"
    tie, per = full and inv.arch.tie_word_embeddings, param_dtype_bytes(plan)
    head = embed = tied = 0
    for t in inv.tensors if full else adapters.saved_modules:  # one instance each, as its gradient is held
        if t.role == "lm_head" or (full and t.layers == 1 and t.role == "norm"):  # the final norm
            head += alloc(t.numel * per, cuda)
        elif t.kind == EMBEDDING:
            one = alloc(t.numel * per, cuda)
            embed += one
            if tie and t.role == "embedding":
                tied += one
    head, embed = head + tied, embed - tied
    return head, embed, max(grads - head - embed, 0), tied


# ---------------------------------------------------------------------------------------------- forward


@dataclass(frozen=True)
class _Forward:
    """What the forward pass leaves saved for the backward."""

    layer: int  # one decoder layer's saved tensors (the larger of a dense and an MoE layer)
    stream: int  # one residual-stream tensor, b·s·h
    rope: int  # rotary cos and sin, shared by the layers
    eager_mask: int  # the eager attention's b·s² mask, shared by the layers
    stored: int  # kept until each layer's backward: checkpointed inputs, or every layer's saved tensors
    head_saved: int  # the final norm's saved tensors and a trainable lm_head's input

    @property
    def saved(self) -> int:
        return self.stored + self.head_saved


def forward_activations(inv: Inventory, adapters: AdapterPlan, plan: Plan, f: _Flow) -> _Forward:
    """Activations the forward pass saves: per layer, and in all.

    Without checkpointing every layer keeps ``layer_activations`` (the first one less, ``first_layer_delta``); with
    transformers' per-layer (non-reentrant) gradient checkpointing each layer keeps only its input, one
    residual-stream tensor. The rotary cos/sin and eager attention's mask are made once and shared by all layers.
    After the last layer: the final norm's saved tensors, and lm_head's input when lm_head is trained. Exact on the
    CPU grid's live-tensor tracker for llama-style layers (docs/accuracy.md).
    """
    arch = inv.arch
    L, moe_layers = arch.num_hidden_layers, len(arch.moe_layers)
    dense_layers = L - moe_layers
    per_dense = layer_activations(arch, f, moe=False) if dense_layers else 0
    per_moe = layer_activations(arch, f, moe=True) if moe_layers else 0
    stream = f.ad * f.T * arch.hidden_size
    rope = 0 if arch.position_embeddings else 2 * f.s * arch.head_dim * f.ad  # cos and sin
    eager_mask = f.ad * f.b * f.s * f.s if f.attn == "eager" else 0
    if plan.gradient_checkpointing:
        stored = L * stream + rope + eager_mask  # checkpointed layer inputs (+ the shared cos/sin and eager mask)
    else:
        stored = dense_layers * per_dense + moe_layers * per_moe + rope + first_layer_delta(arch, f)
    head_trainable = plan.method == "full" or any(t.role == "lm_head" for t in adapters.saved_modules)
    final_norm = _norm_saved(arch, f, arch.hidden_size, not f.frozen_base)
    return _Forward(
        layer=max(per_dense, per_moe), stream=stream, rope=rope, eager_mask=eager_mask, stored=stored,
        head_saved=final_norm + (stream if head_trainable else 0),
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------- logits and loss


@dataclass(frozen=True)
class HeadLoss:
    """The head's and the loss's tensors at their largest moment in the forward and in the loss's backward."""

    elements: int  # b·s·V
    forward: dict[str, int]  # name -> bytes (names: _HEAD_PARTS)
    loss_backward: dict[str, int]

    def parts(self, phase: str) -> dict[str, int]:
        """The tensors live at the head's largest moment in ``phase`` ("forward" or "loss_backward")."""
        return self.forward if phase == "forward" else self.loss_backward

    def bytes(self, phase: str) -> int:
        return sum(self.parts(phase).values())

    @property
    def peak_phase(self) -> str:
        """The phase where the head and loss hold the most."""
        return "forward" if self.bytes("forward") > self.bytes("loss_backward") else "loss_backward"

    @property
    def fp32_block(self) -> int:
        """One fp32 b·s·V tensor."""
        return 4 * self.elements


_HEAD_PARTS = {  # what each part of HeadLoss counts, for the terms
    "lm_head_input": "the final norm's output, live while lm_head runs (b·s·h)",
    "logits": "lm_head output (b·s·V)",
    "logits_fp32": "transformers' logits.float() copy (b·s·V fp32; none when the logits are fp32 already)",
    "log_softmax": "the log-softmax cross-entropy saves for its backward (b·s·V fp32)",
    "grad_log_softmax": "the nll_loss backward's gradient (b·s·V fp32)",
    "grad_logits": "the log_softmax backward's gradient of the logits (b·s·V fp32)",
    "softcap_output": "the final-logit soft-capping's tanh output (b·s·V)",
}


def head_loss(arch: Architecture, plan: Plan, f: _Flow) -> HeadLoss:
    """The logits and cross-entropy transient: the one figure behind the ``logits`` component, its terms and notes.

    Forward: lm_head's output (in fp32 after ``prepare_model_for_kbit_training`` or in an fp32 model, else 16-bit)
    while its input is live, then transformers' ``ForCausalLMLoss`` upcasts it (``logits.float()``, a copy unless
    the logits are fp32 already) and calls ``cross_entropy``, which saves its fp32 log-softmax. Loss backward: the
    forward's logits are dropped, and the nll_loss and log_softmax backwards make two more fp32 b·s·V tensors (12 B
    × b·s·V in all: the head's peak). Gemma 2's final-logit soft-capping keeps its tanh output in both. Measured on
    the CPU grid's live-tensor tracker and the H200 runs; ignores the 16-bit cast of the logits' gradient back (made
    after the fp32 ones are freed) and chunked or fused losses (not modelled).
    """
    ld = 4 if plan.upcast_non_quantized or plan.dtype == "float32" and not plan.mixed_precision else 2
    n = f.T * arch.vocab_size
    softcap = ld * n if arch.final_logit_softcapping else 0
    matmul = {"lm_head_input": f.ad * f.T * arch.hidden_size, "logits": ld * n}
    loss = {"logits": ld * n, "logits_fp32": 0 if ld == 4 else 4 * n, "log_softmax": 4 * n, "softcap_output": softcap}
    backward = {"log_softmax": 4 * n, "grad_log_softmax": 4 * n, "grad_logits": 4 * n, "softcap_output": softcap}
    forward = matmul if sum(matmul.values()) > sum(loss.values()) else loss
    return HeadLoss(elements=n, forward=forward, loss_backward=backward)


# ---------------------------------------------------------------------------------------------- layer backward


@dataclass(frozen=True)
class _Backward:
    """The decoder layers' backward, at its two ends."""

    last: int  # in the last layer's backward: every layer's activations still saved
    first: int  # in the first layer's: every other layer's gradients made
    attention: bool  # the peak is in the attention's backward (b·a·s² probabilities), not the MLP's

    @property
    def peak(self) -> int:
        return max(self.last, self.first)


def layer_backward(
    inv: Inventory, adapters: AdapterPlan, plan: Plan, f: _Flow, state: _State, fwd: _Forward
) -> _Backward:
    """The backward through the decoder layers, from the last to the first.

    Activations are freed layer by layer while gradients accumulate, so the peak is at one of the two ends. Each
    end holds the head's gradients, a gradient of the residual stream, one layer's saved tensors (recomputed under
    checkpointing) and the layer's backward working tensors (``_backward_work``); the last end all stored
    activations, the first all other layers' gradients. Calibrated on the CPU grid's live-tensor tracker and CUDA
    traces (docs/accuracy.md).
    """
    arch = inv.arch
    i_eff = arch.moe_intermediate_size if arch.is_moe and not arch.dense_layers else arch.intermediate_size
    work, attention = _backward_work(inv, plan, f, state, i_eff)
    before = state.static + state.grads_head + fwd.stream  # the stream's gradient
    other_layers = state.grads_layers - state.grads_layer
    if plan.gradient_checkpointing:
        last = before + fwd.stored + fwd.layer + work
        first = before + other_layers + fwd.stream + fwd.rope + fwd.eager_mask + fwd.layer + work
    else:
        work += fwd.stream
        last = before + fwd.stored + work
        first = before + other_layers + fwd.layer + fwd.rope + work
    return _Backward(last=last, first=first, attention=attention)


def _backward_work(inv: Inventory, plan: Plan, f: _Flow, state: _State, i_eff: int) -> tuple[int, bool]:
    """A layer's backward working tensors (bytes), and whether the attention's (not the MLP's) are the larger.

    Full fine-tuning: the layer's own weight gradients and a gradient of the stream. LoRA/QLoRA: the gradients of
    the MLP's intermediate (in the adapter's and the compute dtype), bitsandbytes' dequantized weight in a 4-bit
    backward (2 B × the largest quantized linear), dropout's backward transient and, with LoRA on fused experts, the
    gradient of the gate_up half of W + ΔW once the down projection's saved inputs are freed (calibrated on the CPU
    grid). Attention that keeps b·a·s² probabilities (eager, CUDA's SDPA math path) makes their gradient and the
    softmax's fp32 gradient at once, after the MLP's saved tensors are freed (calibrated on a CUDA trace of Mistral
    7B QLoRA with GC).
    """
    arch, T = inv.arch, f.T
    if plan.method == "full":
        work = state.grads_layer + f.ad * T * arch.hidden_size
    else:
        cd = DTYPE_BYTES[plan.dtype]
        work = f.ab * T * i_eff + (2 * cd if f.ad != f.ab else cd) * (T * i_eff)
        if plan.quantized:
            work += 2 * max((t.numel for t in inv if t.bnb_quantized), default=0)  # dequantized weight in backward
        if f.dropout:
            work += f.ab * T * i_eff // 2  # dropout's backward transient (calibrated on the CPU grid)
        if f.expert_lora_bytes:
            pairs_mi = T * arch.num_experts_per_tok * f.ad * arch.moe_intermediate_size
            work += max(2 * f.expert_lora_bytes // 3 - pairs_mi, 0)
    attn_work = 0
    if f.sdpa_math or f.attn == "eager":
        probs = 4 if f.sdpa_math else f.ad
        mlp_freed = (3 * f.ad + f.ab) * T * i_eff + 2 * 4 * T * arch.hidden_size
        attn_work = (probs + 4) * f.b * arch.num_attention_heads * f.s * f.s - mlp_freed
    return max(work, attn_work), attn_work > work


def layer_grads_at_peak(inv: Inventory, adapters: AdapterPlan, plan: Plan, f: _Flow, bwd: _Backward) -> int:
    """Gradients of the layer in progress that exist at its backward's peak (traced on the CPU grid and CUDA).

    In the attention's backward the MLP's gradients of the layer exist. Otherwise: full fine-tuning, the MLP's
    output projection (weight and bias), the first to get its gradient; LoRA with a 16-bit stream, none (the peak
    comes as the MLP's backward starts); with an fp32 stream, the down projection's LoRA gradients. The layer is an
    MoE layer when every layer is (its experts then stand for the MLP in full fine-tuning); LoRA on experts, router
    and shared expert is not counted here.
    """
    cuda = plan.device == "cuda"
    moe = inv.arch.is_moe and not inv.arch.dense_layers
    mlp_in, mlp_out = (EXPERT_INPUT, EXPERT_HIDDEN) if moe else (MLP_INPUT, MLP_HIDDEN)
    if bwd.attention:
        if plan.method == "full":
            return _held((t for t in inv if t.reads in (mlp_in, mlp_out)), plan, cuda)
        mlp = [a for a in adapters.adapted if a.reads in (MLP_INPUT, MLP_HIDDEN)]
        return _lora_grads(mlp, plan.lora_r, cuda)
    if plan.method == "full":
        return _held((t for t in inv if t.reads == mlp_out), plan, cuda)
    if f.ad == 2:
        return 0
    return _lora_grads((a for a in adapters.adapted if a.reads == MLP_HIDDEN), plan.lora_r, cuda)


# ---------------------------------------------------------------------------------------------- optimizer step


def optimizer_step(state: _State, plan: Plan, cuda: bool) -> int:
    """Temporaries of ``optimizer.step()`` beyond the state (bytes).

    torch AdamW is single-tensor on the CPU (two temporaries of the largest parameter) and multi-tensor on CUDA (one
    temporary list as large as all ``exp_avg_sq``, sharded like the state). Ignores the step temporaries of the
    bitsandbytes optimizers, SGD and Adafactor (none counted; every recorded run uses adamw_torch).
    """
    if plan.optimizer != "adamw_torch":
        return 0
    if cuda:
        return -(-state.trainable_bytes // state.shard_opt)
    return 2 * max((n * b for n, b, _ in state.trainable), default=0)


# ---------------------------------------------------------------------------------------------- the peak


def peak_components(
    phase: str, peak: int, state: _State, fwd: _Forward, head: HeadLoss, bwd: _Backward, layer_grads: int, opt_tmp: int
) -> dict[str, int]:
    """The live tensors at the peak (``peak`` bytes, in ``phase``), by component; they add up to ``peak``.

    In the forward or the loss's backward: every saved activation and the head/loss transient (``logits``). In the
    layers' backward: the gradients made so far (the head's, every other layer's when the peak is at the first
    layer, the layer in progress's own: ``layer_grads``); all else live there is activations and the backward's
    working tensors. At the optimizer step: every gradient, and the step's temporaries as activations. DDP's
    gradient buckets count as gradients. ``overhead``, ``allocator_cache`` and ``optimizer_paged`` come from
    ``runtime_tiers``.
    """
    comp = dict.fromkeys(COMPONENTS, 0)
    comp["weights"] = state.weights
    comp["adapters"] = state.adapters
    comp["optimizer"] = state.optimizer
    if phase in ("forward", "loss_backward"):
        comp["activations"] = fwd.saved
        comp["logits"] = head.bytes(phase)
    elif phase == "backward":
        grads = state.grads_head - state.tied_pending + layer_grads
        if bwd.first >= bwd.last:
            grads += state.grads_layers - state.grads_layer
        comp["gradients"] = grads
        comp["activations"] = peak - state.static - grads
    else:
        comp["gradients"] = state.grads
        comp["activations"] = opt_tmp
    comp["gradients"] += state.ddp_buckets
    return comp


@dataclass(frozen=True)
class _Tiers:
    """What the device holds beyond the live tensors: torch's allocated and reserved peaks, the driver's total."""

    allocated: int  # the live-tensor peak + the cuBLAS workspace
    reserved: int  # + the caching allocator's cache of freed blocks
    total: int  # + the CUDA context and runtime + paged optimizer state (what nvidia-smi shows)
    overhead: int  # the CUDA context and runtime + the cuBLAS workspace
    allocator_cache: int
    optimizer_paged: int


def runtime_tiers(tensor_peak: int, head: HeadLoss, state: _State, cuda: bool, context_bytes: int) -> _Tiers:
    """The tiers above the live-tensor peak on CUDA (none on the CPU: every tier is the tensor peak).

    torch counts the cuBLAS workspace as allocated; the caching allocator then keeps freed blocks reserved: after
    the loss about one fp32 logits-sized block (measured 0.6-1.7x of it on the H200 runs), at least
    ``ALLOCATOR_CACHE_FLOOR``. The CUDA context, the runtime's kernels and library handles, and a paged optimizer's
    state in CUDA managed memory are outside torch's allocator, in the driver's figure. Calibrated on an H200
    (bench/results/gpu_h200.json); other GPUs and stacks differ by tens of MiB.
    """
    if not cuda:
        return _Tiers(tensor_peak, tensor_peak, tensor_peak, 0, 0, 0)
    allocated = tensor_peak + CUBLAS_WORKSPACE_BYTES
    cache = max(head.fp32_block, ALLOCATOR_CACHE_FLOOR)
    reserved = allocated + cache
    return _Tiers(
        allocated=allocated, reserved=reserved, total=reserved + context_bytes + state.optimizer_paged,
        overhead=CUBLAS_WORKSPACE_BYTES + context_bytes, allocator_cache=cache, optimizer_paged=state.optimizer_paged,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------- terms and notes


def _terms(
    inv: Inventory,
    plan: Plan,
    state: _State,
    fwd: _Forward,
    head: HeadLoss,
    tiers: _Tiers,
    peak_phase: str,
    tensor_peak: int,
    context_bytes: int,
) -> tuple[Term, ...]:
    """The named quantities behind the estimate.

    The head/loss tensors are those of the peak when it is in the forward or the loss's backward (they add up to the
    ``logits`` component), else of the head's own largest moment (the loss's backward, in practice).
    """
    cuda = plan.device == "cuda"
    checkpointed = inv.arch.num_hidden_layers * fwd.stream if plan.gradient_checkpointing else 0
    phase = peak_phase if peak_phase in ("forward", "loss_backward") else head.peak_phase
    where = "in the forward" if phase == "forward" else "in the loss's backward"
    logits = [Term(k, "logits", v, f"{_HEAD_PARTS[k]}, {where}") for k, v in head.parts(phase).items() if v]
    return (
        Term("weights", "weights", state.weights, "base parameters as held (4-bit/int8 linears + quant state, "
             "others as loaded or fp32 after prepare_model_for_kbit_training)"),
        Term("adapters", "adapters", state.adapters, "LoRA A/B (+DoRA magnitude) in fp32 and modules_to_save copies"),
        Term("gradients", "gradients", state.grads, ".grad of every trainable parameter, same dtype"),
        Term("gradient_buckets", "gradients", state.ddp_buckets, "DDP's bucket copy of every gradient (multi-GPU)"),
        Term("optimizer", "optimizer", state.optimizer, f"{plan.optimizer} state in the allocator"),
        Term("optimizer_paged", "optimizer_paged", tiers.optimizer_paged,
             "paged optimizer state in CUDA managed memory"),
        Term("activations_per_layer", "activations", fwd.layer,
             "tensors autograd saves in one decoder layer (no checkpointing)"),
        Term("checkpointed_inputs", "activations", checkpointed,
             "one residual-stream tensor per layer kept by non-reentrant checkpointing"),
        *logits,
        Term("cuda_context", "overhead", context_bytes if cuda else 0,
             "CUDA context, kernels and library handles, outside torch's allocator"),
        Term("cublas_workspace", "overhead", CUBLAS_WORKSPACE_BYTES if cuda else 0,
             "cuBLAS workspaces (inside torch's allocator)"),
        Term("allocator_cache", "allocator_cache", tiers.allocator_cache,
             "freed blocks the caching allocator keeps reserved"),
        Term("tensor_peak", "", tensor_peak, "live tensors at the peak, without the cuBLAS workspace"),
    )  # fmt: skip


def _notes(plan: Plan, arch: Architecture, f: _Flow, tensor_peak: int) -> list[str]:
    """What the user should know that the numbers do not say: a changed attention path, approximations."""
    notes: list[str] = []
    if f.attn != plan.attn_implementation:
        notes.append("Gemma 2 has no SDPA path in transformers: it runs with eager attention (b·a·s² per layer)")
    s2_layer = 4 * f.b * arch.num_attention_heads * f.s * f.s
    s2_kept = s2_layer * (1 if plan.gradient_checkpointing else arch.num_hidden_layers)
    if f.sdpa_math and s2_kept >= 0.05 * tensor_peak:
        notes.append(
            f"SDPA on CUDA has no fused kernel for fp32 attention with grouped KV heads (the QLoRA stream is fp32 "
            f"after prepare_model_for_kbit_training), so it uses the math path: {gib_text(s2_kept)} of fp32 "
            f"attention probabilities (b·a·s² per layer{'' if plan.gradient_checkpointing else ', every layer'}); "
            "gradient checkpointing or flash_attention_2 avoid most of it"
        )
    if plan.use_dora:
        notes.append("DoRA: the per-module weight-norm transient is not modelled; treat the peak as a lower bound")
    if plan.method == "full" and plan.mixed_precision:
        notes.append("mixed precision: autocast cast caches are approximated")
    return notes


# ---------------------------------------------------------------------------------------------- the step


def training_memory(
    inv: Inventory,
    adapters: AdapterPlan,
    plan: Plan,
    *,
    context_bytes: int = CUDA_CONTEXT_BYTES + CUDA_RUNTIME_BYTES,
) -> MemoryEstimate:
    """Peak memory of one steady-state training step (optimizer state already allocated).

    Each phase is a function above: what persists through the step, the forward, the loss, the layers' backward,
    the optimizer step. The peak is the largest phase (not a sum of each part's maximum), broken down by component
    at that moment, with the runtime tiers above it on CUDA.
    """
    cuda = plan.device == "cuda"
    f = dtype_flow(inv, adapters, plan)
    state = persistent_state(inv, adapters, plan, cuda)
    fwd = forward_activations(inv, adapters, plan, f)
    head = head_loss(inv.arch, plan, f)
    bwd = layer_backward(inv, adapters, plan, f, state, fwd)
    opt_tmp = optimizer_step(state, plan, cuda)
    phases = {
        "forward": state.static + fwd.saved + head.bytes("forward"),
        "loss_backward": state.static + fwd.saved + head.bytes("loss_backward"),
        "backward": bwd.peak,
        "optimizer": state.static + state.grads + opt_tmp,
    }
    peak_phase = max(phases, key=phases.__getitem__)
    tensor_peak = phases[peak_phase]
    layer_grads = layer_grads_at_peak(inv, adapters, plan, f, bwd) if peak_phase == "backward" else 0
    comp = peak_components(peak_phase, tensor_peak, state, fwd, head, bwd, layer_grads, opt_tmp)
    tiers = runtime_tiers(tensor_peak, head, state, cuda, context_bytes)
    comp["overhead"] = tiers.overhead
    comp["allocator_cache"] = tiers.allocator_cache
    comp["optimizer_paged"] = tiers.optimizer_paged
    return MemoryEstimate(
        components=comp,
        peak_allocated=tiers.allocated,
        peak_reserved=tiers.reserved,
        total=tiers.total,
        peak_phase=peak_phase,
        phases=phases,
        terms=_terms(inv, plan, state, fwd, head, tiers, peak_phase, tensor_peak, context_bytes),
        activation_dtype={4: "float32", 2: "bfloat16" if plan.dtype != "float16" else "float16"}[f.ad],
        notes=tuple(_notes(plan, inv.arch, f, tensor_peak)),
    )


__all__ = ["COMPONENTS", "MemoryEstimate", "Term", "training_memory"]
