"""Training memory: what transformers + PEFT + bitsandbytes + torch keep live during one training step.

The model follows the tensors the real stack allocates (found with saved-tensor hooks and a live-storage tracker on
real CPU runs, see docs/accuracy.md), not a rule of thumb:

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

The peak is taken over the step's phases (forward, loss backward, layer backward, optimizer step), not summed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ._arch import Architecture, attention_implementation
from ._inventory import (
    ATTENTION_INPUT,
    ATTENTION_OUTPUT,
    EMBEDDING,
    EXPERT_HIDDEN,
    EXPERT_INPUT,
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

MiB = 1024 * 1024
COMPONENTS = ("weights", "adapters", "gradients", "optimizer", "activations", "logits", "overhead")

# GPU runtime overheads, calibrated on an H200 (torch 2.11 + CUDA 13.0, driver 580.159; bench/results/gpu_h200.json,
# docs/accuracy.md). Other GPUs and stacks differ by tens of MiB.
CUDA_CONTEXT_BYTES = 527 * MiB  # total - free from mem_get_info() before anything is loaded
CUDA_RUNTIME_BYTES = 233 * MiB  # kernels and library handles loaded during the first step, outside the allocator
CUBLAS_WORKSPACE_BYTES = 64 * MiB  # cuBLAS/cuBLASLt workspaces: in torch's allocator, so in max_memory_allocated
ALLOCATOR_CACHE_FLOOR = 512 * MiB  # blocks the caching allocator keeps reserved beyond the allocated peak


@dataclass(frozen=True)
class Term:
    """One named quantity of the estimate."""

    name: str
    component: str
    bytes: int
    counts: str


@dataclass(frozen=True)
class MemoryEstimate:
    components: dict[str, int]
    peak_allocated: int
    peak_reserved: int
    total: int
    peak_phase: str
    phases: dict[str, int]
    terms: tuple[Term, ...]
    activation_dtype: str
    notes: tuple[str, ...] = field(default=())

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


def param_dtype_bytes(t: Tensor, plan: Plan) -> int:
    """Bytes per element of a non-quantized parameter as held during training."""
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
    for t in inv:
        if plan.quantized and t.bnb_quantized:
            if plan.quant_type == "int8":
                one = int8_bytes(t.out_features, t.in_features, cuda)
            else:
                one = four_bit_bytes(t.numel, plan.double_quant, cuda)
        else:
            one = alloc(t.numel * param_dtype_bytes(t, plan), cuda)
        total += one * t.layers
    return total


def _trainable_tensors(inv: Inventory, adapters: AdapterPlan, plan: Plan) -> list[tuple[int, int, int]]:
    """(elements, bytes per element, count) of every trainable parameter tensor."""
    if plan.method == "full":
        return [(t.numel, param_dtype_bytes(t, plan), t.layers) for t in inv]
    out: list[tuple[int, int, int]] = []
    r = plan.lora_r
    for a in adapters.adapted:
        out += [(r * a.in_features, 4, a.layers), (a.out_features * r, 4, a.layers)]
        if plan.use_dora:  # the magnitude vector, on embeddings too (as Adapted.params counts it)
            out.append((a.out_features, 4, a.layers))
    for t in adapters.saved_modules:
        out.append((t.numel, param_dtype_bytes(t, plan), t.layers))
    return out


def _sum_alloc(tensors: list[tuple[int, int, int]], cuda: bool) -> int:
    return sum(alloc(n * b, cuda) * c for n, b, c in tensors)


def optimizer_bytes(tensors: list[tuple[int, int, int]], plan: Plan, cuda: bool) -> tuple[int, int]:
    """Optimizer state as (allocator-visible bytes, managed/paged bytes).

    adamw_torch: ``exp_avg`` and ``exp_avg_sq`` like each parameter (same dtype) and a ``step`` scalar (fp32,
    on the CPU unless capturable: 4 B each in a CPU run, none on the GPU). adamw_8bit: bitsandbytes keeps
    tensors of ≥ 4096 elements in uint8 with an fp32 absmax per 256, smaller ones in fp32. Paged variants put
    states of ≥ 1e5 elements in CUDA managed memory (not in torch's allocator). sgd: HF Trainer's ``sgd`` has no
    momentum, so no state. adafactor (Trainer defaults): factored row + column second moments for matrices,
    a full one for vectors, in the gradient's dtype.
    """
    opt = plan.optimizer
    visible = managed = 0
    for n, b, c in tensors:
        if opt == "adamw_torch":
            visible += (2 * alloc(n * b, cuda) + (0 if cuda else 4)) * c
        elif opt in ("adamw_8bit", "paged_adamw_8bit"):
            one = 2 * (alloc(n, cuda) + alloc(4 * -(-n // 256), cuda)) if n >= 4096 else 2 * alloc(4 * n, cuda)
            if opt.startswith("paged") and n >= 100_000:
                managed += one * c
            else:
                visible += one * c
        elif opt == "paged_adamw_32bit":
            one = 2 * alloc(4 * n, cuda)
            if n >= 100_000:
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


# ---------------------------------------------------------------------------------------------- activations


@dataclass(frozen=True)
class _Flow:
    """Dtype flow of one training step."""

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


def _linear_inputs(f: _Flow, reads: tuple[str, ...], width: int, shared: bool = False) -> int:
    """Saved bytes for one distinct linear input, read by the modules whose ``Tensor.reads`` is in ``reads``.

    ``shared``: the input tensor is already saved by another op (SDPA keeps its output, which o_proj reads), so
    keeping it costs nothing more.
    """
    T = f.T
    lora = sum(f.lora.count(r) for r in reads)  # adapted modules reading it
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
    T, h, ad = f.T, arch.hidden_size, f.ad
    a, kv, d = arch.num_attention_heads, arch.num_key_value_heads, arch.head_dim
    trainable_norms = not f.frozen_base
    mt = arch.model_type
    total = 0
    norm = _norm_saved(arch, f, h, trainable_norms)
    if mt != "olmo2":  # OLMo 2 normalizes the blocks' outputs, not their inputs
        total += norm
    # attention input linears
    if arch.parallel_block and arch.norms_per_layer == 1:
        total += _linear_inputs(f, (ATTENTION_INPUT, MLP_INPUT), h)  # attention and MLP read one normalized input
    else:
        total += _linear_inputs(f, (ATTENTION_INPUT,), h)
    # q/k norms
    qd, kd = a * d, kv * d
    if arch.qk_norm == "head":
        total += 4 * T * (qd + kd) + 4 * T * (a + kv)
    elif arch.qk_norm == "full":
        total += 4 * T * (qd + kd) + 8 * T
    # attention core
    if f.attn == "eager":
        groups_copy = a if kv != a else kv
        total += ad * T * qd + 2 * ad * T * groups_copy * d  # q, repeated k and v
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
    if arch.fused_qkv and mt != "gpt2":
        # q and k go through rotary embeddings (new tensors) while v stays a view of the fused projection's
        # output, so SDPA's saved v keeps the whole q|k|v storage alive
        total += ad * T * (qd + kd)
    if f.attn == "eager" and arch.attn_logit_softcapping:
        total += ad * f.b * a * f.s * f.s  # tanh output of the attention-logit soft-capping
    # SDPA/flash return their output in (b, s, heads, d) layout, so o_proj's input is the saved output itself
    o_shared = f.attn != "eager" and (f.attn != "flash_attention_2" or ad == 2)
    total += _linear_inputs(f, (ATTENTION_OUTPUT,), qd, shared=o_shared)
    # MLP (a single-norm parallel block already counted its input with the attention's)
    if not (arch.parallel_block and arch.norms_per_layer == 1):
        if mt == "olmo2":
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
    if arch.norms_per_layer == 4 or mt == "olmo2":
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


# ---------------------------------------------------------------------------------------------- the step


def training_memory(
    inv: Inventory,
    adapters: AdapterPlan,
    plan: Plan,
    *,
    context_bytes: int = CUDA_CONTEXT_BYTES + CUDA_RUNTIME_BYTES,
) -> MemoryEstimate:
    """Peak memory of one steady-state training step (optimizer state already allocated)."""
    arch = inv.arch
    cuda = plan.device == "cuda"
    b, s = plan.batch_size, plan.seq_len
    T = b * s
    V = arch.vocab_size
    h = arch.hidden_size
    notes: list[str] = []

    frozen_base = plan.method != "full"
    attn = attention_implementation(arch.model_type, plan.attn_implementation)
    if attn != plan.attn_implementation:
        notes.append("Gemma 2 has no SDPA path in transformers: it runs with eager attention (b·a·s² per layer)")
    if plan.method == "qlora" and plan.upcast_non_quantized:
        ad = 4
    elif plan.method == "full" and plan.mixed_precision:
        ad = 2
    else:
        ad = DTYPE_BYTES[plan.dtype]
    ab = 4
    lora = tuple(a.reads for a in adapters.adapted)
    experts_adapted = EXPERT_INPUT in lora or EXPERT_HIDDEN in lora
    expert_numel = sum(t.numel for t in inv if t.kind == "experts")
    expert_lora_bytes = expert_numel * param_dtype_bytes(inv.tensors[0], plan) if experts_adapted else 0
    router_lora = ROUTER_INPUT in lora
    flow = _Flow(
        T=T, b=b, s=s, ad=ad, ab=ab, mask=1 if cuda else ab, frozen_base=frozen_base, lora=lora,
        dropout=plan.lora_dropout > 0 and plan.adapters, r=plan.lora_r, attn=attn,
        expert_lora_bytes=expert_lora_bytes, router_lora=router_lora,
        sdpa_math=cuda and attn == "sdpa" and ad == 4 and arch.num_key_value_heads != arch.num_attention_heads,
    )  # fmt: skip

    # persistent through the step
    weights = weight_bytes(inv, plan, cuda)
    trainable = _trainable_tensors(inv, adapters, plan)
    adapter_b = 0 if plan.method == "full" else _sum_alloc(trainable, cuda)
    grads_all = _sum_alloc(trainable, cuda)
    opt_visible, opt_managed = optimizer_bytes(trainable, plan, cuda)
    # multi-GPU data parallelism: what each GPU holds (ZeRO stage 1 shards optimizer state, 2 also gradients,
    # 3 also parameters, which it gathers one decoder layer at a time)
    n_gpu = plan.num_gpus
    shard_opt = n_gpu if plan.sharding in ("zero1", "zero2", "zero3") else 1
    shard_grad = n_gpu if plan.sharding in ("zero2", "zero3") else 1
    shard_w = n_gpu if plan.sharding == "zero3" else 1
    opt_visible, opt_managed = -(-opt_visible // shard_opt), -(-opt_managed // shard_opt)
    gathered = 0
    if shard_w > 1:
        per_layer_w = sum(t.numel * param_dtype_bytes(t, plan) for t in inv if t.layers > 1) // arch.num_hidden_layers
        gathered = 2 * per_layer_w  # the gathered layer and the prefetched next one
        weights, adapter_b = -(-weights // shard_w) + gathered, -(-adapter_b // shard_w)
    ddp_buckets = grads_all if n_gpu > 1 and plan.sharding == "ddp" else 0  # DDP's gradient buckets
    static = weights + adapter_b + opt_visible

    # gradients by place: head (lm_head + final norm), embeddings (allocated last), one decoder layer
    L = arch.num_hidden_layers

    def held(tensors: Iterable[Tensor]) -> int:  # one instance of each, as its gradient is held
        return sum(alloc(t.numel * param_dtype_bytes(t, plan), cuda) for t in tensors)

    def lora_grads(modules: Iterable[Adapted]) -> int:  # fp32 gradients of lora_A and lora_B, one layer
        return sum(alloc(4 * plan.lora_r * a.in_features, cuda) + alloc(4 * plan.lora_r * a.out_features, cuda)
                   for a in modules)  # fmt: skip

    tied = 0
    if plan.method == "full":
        g_head = held(t for t in inv if t.role == "lm_head" or (t.layers == 1 and t.role == "norm"))
        g_embed = held(t for t in inv if t.kind == EMBEDDING)
        if arch.tie_word_embeddings:
            # the tied weight's gradient from lm_head's backward waits in autograd's input buffer (a live tensor,
            # not yet a .grad) until the embedding's contribution is added at the very end
            tied = held(t for t in inv if t.role == "embedding")
            g_head, g_embed = g_head + tied, g_embed - tied
    else:
        g_head = held(t for t in adapters.saved_modules if t.role == "lm_head")
        g_embed = held(t for t in adapters.saved_modules if t.kind == EMBEDDING)
    tied_buffer = tied if plan.method == "full" and arch.tie_word_embeddings else 0
    g_layers = max(grads_all - g_head - g_embed, 0)
    if shard_grad > 1:
        g_head, g_embed, g_layers, tied_buffer = (-(-x // shard_grad) for x in (g_head, g_embed, g_layers, tied_buffer))
        grads_all = g_head + g_embed + g_layers
    g_layer = g_layers // L
    static += ddp_buckets

    # activations
    moe_layers = len(arch.moe_layers)
    dense_layers = L - moe_layers
    per_dense = layer_activations(arch, flow, moe=False) if dense_layers else 0
    per_moe = layer_activations(arch, flow, moe=True) if moe_layers else 0
    a_layer = max(per_dense, per_moe)
    stream = ad * T * h
    rope = 0 if arch.position_embeddings else 2 * s * arch.head_dim * ad  # cos and sin, shared by the layers
    eager_mask = ad * b * s * s if attn == "eager" else 0
    if plan.gradient_checkpointing:
        stored = L * stream + rope + eager_mask  # checkpointed layer inputs (+ the shared cos/sin and eager mask)
    else:
        stored = dense_layers * per_dense + moe_layers * per_moe + rope + first_layer_delta(arch, flow)

    # head: final norm + lm_head + cross-entropy (transformers' ForCausalLMLoss)
    head_trainable = plan.method == "full" or any(t.role == "lm_head" for t in adapters.saved_modules)
    if plan.upcast_non_quantized or plan.dtype == "float32" and not plan.mixed_precision:
        ld = 4  # lm_head in fp32 (prepare_model_for_kbit_training, or an fp32 model)
    else:
        ld = 2
    n = T * V
    final_norm = _norm_saved(arch, flow, h, not frozen_base)
    head_in = stream if head_trainable else 0
    softcap = ld * n if arch.final_logit_softcapping else 0  # tanh output of the final-logit soft-capping
    # forward: logits, their fp32 upcast (a copy unless already fp32), the saved log-softmax
    fwd_head = max(stream + ld * n, ld * n + (0 if ld == 4 else 4 * n) + 4 * n + softcap)
    # backward of the loss: saved log-softmax + grad of nll + grad of log-softmax (outputs already dropped)
    bwd_head = 12 * n + softcap

    fwd = static + stored + final_norm + head_in + fwd_head
    loss_bwd = static + stored + final_norm + head_in + bwd_head

    # backward through the decoder layers, from the last (j = L-1) to the first (j = 0): activations are freed
    # layer by layer while gradients accumulate, so the peak is at one of the two ends.
    grad_stream = ad * T * h
    i_eff = arch.moe_intermediate_size if arch.is_moe and not dense_layers else arch.intermediate_size
    if plan.method == "full":
        work = g_layer + stream  # the layer's own weight gradients and a gradient of the stream
    else:
        work = flow.ab * T * i_eff + (2 * DTYPE_BYTES[plan.dtype] if ad != flow.ab else DTYPE_BYTES[plan.dtype]) * (
            T * i_eff
        )
        if plan.quantized:
            work += 2 * max((t.numel for t in inv if t.bnb_quantized), default=0)  # dequantized weight in backward
        if flow.dropout:
            work += flow.ab * T * i_eff // 2  # dropout's backward transient (calibrated on the CPU grid)
        if expert_lora_bytes:
            # the gradient of the gate_up half of W + ΔW (2/3 of the stack), once the down projection's saved
            # inputs are freed
            pairs_mi = T * arch.num_experts_per_tok * ad * arch.moe_intermediate_size
            work += max(2 * expert_lora_bytes // 3 - pairs_mi, 0)
    attn_work = 0
    if flow.sdpa_math or attn == "eager":
        # attention that keeps b·a·s² probabilities: its backward makes their gradient (in the probabilities'
        # dtype) and the softmax's fp32 gradient at once, after the MLP's saved tensors are freed (calibrated on
        # a CUDA trace of Mistral 7B QLoRA with GC)
        probs = 4 if flow.sdpa_math else ad
        mlp_freed = (3 * ad + flow.ab) * T * i_eff + 2 * 4 * T * h
        attn_work = (probs + 4) * b * arch.num_attention_heads * s * s - mlp_freed
    attn_peak = attn_work > work
    work = max(work, attn_work)
    if plan.gradient_checkpointing:
        last = static + g_head + L * stream + rope + eager_mask + grad_stream + a_layer + work
        first = static + g_head + (g_layers - g_layer) + stream + rope + eager_mask + grad_stream + a_layer + work
    else:
        work += stream
        last = static + g_head + stored + grad_stream + work
        first = static + g_head + (g_layers - g_layer) + a_layer + rope + grad_stream + work
    bwd_layers = max(last, first)
    # optimizer step: torch AdamW is single-tensor on the CPU (two temporaries of the largest parameter) and
    # multi-tensor on CUDA (one temporary list as large as all exp_avg_sq)
    if plan.optimizer == "adamw_torch":
        biggest = max((n_ * b_ for n_, b_, _ in trainable), default=0)
        opt_tmp = -(-sum(alloc(n_ * b_, cuda) * c for n_, b_, c in trainable) // shard_opt) if cuda else 2 * biggest
    else:
        opt_tmp = 0
    opt_phase = static + grads_all + opt_tmp

    phases = {"forward": fwd, "loss_backward": loss_bwd, "backward": bwd_layers, "optimizer": opt_phase}
    peak_phase = max(phases, key=lambda k: phases[k])
    peak = phases[peak_phase]

    # component breakdown at the peak
    comp = dict.fromkeys(COMPONENTS, 0)
    comp["weights"] = weights
    comp["adapters"] = adapter_b
    comp["optimizer"] = opt_visible
    if peak_phase in ("forward", "loss_backward"):
        comp["activations"] = stored + final_norm + head_in
        comp["logits"] = peak - static - comp["activations"]
    elif peak_phase == "backward":
        if attn_peak:  # in the attention's backward: the MLP's gradients of this layer exist
            mlp = [a for a in adapters.adapted if i_eff in (a.in_features, a.out_features) and not a.embedding]
            in_layer = lora_grads(mlp)
            if plan.method == "full":
                in_layer = held(t for t in inv if t.layers > 1 and t.role in ("mlp", "expert"))
        elif plan.method == "full":  # the MLP's output projection is the first to get its gradient
            in_layer = held(t for t in inv if t.layers > 1 and t.role in ("mlp", "expert") and t.in_features == i_eff)
        elif ad == 2:  # 16-bit stream: the peak comes as the MLP's backward starts, before any LoRA grad
            in_layer = 0
        else:  # fp32 stream: the peak comes once the down projection's LoRA grads exist
            in_layer = lora_grads(a for a in adapters.adapted if a.in_features == i_eff and not a.embedding)
        grads_then = g_head - tied_buffer + (g_layers - g_layer + in_layer if first >= last else in_layer)
        comp["gradients"] = grads_then
        comp["activations"] = peak - static - grads_then
    else:
        comp["gradients"] = grads_all
        comp["activations"] = opt_tmp

    comp["gradients"] += ddp_buckets  # DDP's bucket copies of the gradients (in static, not in the parts above)
    s2_layer = 4 * b * arch.num_attention_heads * s * s
    s2_kept = s2_layer * (1 if plan.gradient_checkpointing else L)
    if flow.sdpa_math and s2_kept >= 0.05 * peak:
        notes.append(
            f"SDPA on CUDA has no fused kernel for fp32 attention with grouped KV heads (the QLoRA stream is fp32 "
            f"after prepare_model_for_kbit_training), so it uses the math path: {s2_kept / 2**30:.2f} GiB of fp32 "
            f"attention probabilities (b·a·s² per layer{'' if plan.gradient_checkpointing else ', every layer'}); "
            "gradient checkpointing or flash_attention_2 avoid most of it"
        )
    tensor_peak = peak
    if cuda:
        # torch counts the cuBLAS workspace as allocated; the caching allocator then keeps freed blocks reserved:
        # after the loss about one fp32 logits-sized block (measured 0.6-1.7x of it on the H200 runs), at least
        # ALLOCATOR_CACHE_FLOOR
        peak += CUBLAS_WORKSPACE_BYTES
        reserved = peak + max(4 * n, ALLOCATOR_CACHE_FLOOR)
        comp["overhead"] = CUBLAS_WORKSPACE_BYTES + context_bytes
        total = reserved + context_bytes + opt_managed
    else:
        reserved = peak
        total = peak

    terms = [
        Term("weights", "weights", weights, "base parameters as held (4-bit/int8 linears + quant state, others as "
             "loaded or fp32 after prepare_model_for_kbit_training)"),
        Term("adapters", "adapters", adapter_b, "LoRA A/B (+DoRA magnitude) in fp32 and modules_to_save copies"),
        Term("gradients", "gradients", grads_all, ".grad of every trainable parameter, same dtype"),
        Term("optimizer", "optimizer", opt_visible, f"{plan.optimizer} state in the allocator"),
        Term("optimizer_paged", "optimizer", opt_managed, "paged optimizer state in CUDA managed memory"),
        Term("activations_per_layer", "activations", a_layer,
             "tensors autograd saves in one decoder layer (no checkpointing)"),
        Term("checkpointed_inputs", "activations", L * stream if plan.gradient_checkpointing
             else 0, "one residual-stream tensor per layer kept by non-reentrant checkpointing"),
        Term("logits", "logits", ld * n, f"lm_head output, b·s·V in {'fp32' if ld == 4 else '16-bit'}"),
        Term("logits_fp32_copies", "logits", 4 * n, "one fp32 b·s·V tensor (upcast, log-softmax or its gradient)"),
        Term("cuda_context", "overhead", context_bytes if cuda else 0,
             "CUDA context, kernels and library handles, outside torch's allocator"),
        Term("cublas_workspace", "overhead", CUBLAS_WORKSPACE_BYTES if cuda else 0,
             "cuBLAS workspaces (inside torch's allocator)"),
        Term("allocator_cache", "overhead", reserved - peak, "freed blocks the caching allocator keeps reserved"),
        Term("tensor_peak", "activations", tensor_peak, "live tensors at the peak, without the cuBLAS workspace"),
    ]  # fmt: skip
    if plan.use_dora:
        notes.append("DoRA: the per-module weight-norm transient is not modelled; treat the peak as a lower bound")
    if plan.method == "full" and plan.mixed_precision:
        notes.append("mixed precision: autocast cast caches are approximated")
    return MemoryEstimate(
        components=comp,
        peak_allocated=peak,
        peak_reserved=reserved,
        total=total,
        peak_phase=peak_phase,
        phases=phases,
        terms=tuple(terms),
        activation_dtype={4: "float32", 2: "bfloat16" if plan.dtype != "float16" else "float16"}[ad],
        notes=tuple(notes),
    )


__all__ = ["COMPONENTS", "MemoryEstimate", "Term", "training_memory"]
