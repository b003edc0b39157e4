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

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from . import catalog
from ._arch import Architecture
from ._inventory import (
    ATTENTION_INPUT,
    ATTENTION_OUTPUT,
    EMBEDDING,
    EXPERT_HIDDEN,
    EXPERT_INPUT,
    EXPERTS,
    MLA_KV_LATENT,
    MLA_Q_LATENT,
    MLP_HIDDEN,
    MLP_INPUT,
    ROUTER,
    ROUTER_INPUT,
    SHARED_EXPERT_HIDDEN,
    SHARED_EXPERT_INPUT,
    Inventory,
    Tensor,
)
from ._kernels import AttentionPath, attention_path
from ._lora import Adapted, AdapterPlan
from ._objective import (
    fused_head,
    generation,
    lora_dropout_active,
    objective_notes,
    reference_copy,
    reference_forward,
)
from ._plan import Plan
from ._quant import DTYPE_BYTES, alloc, four_bit_bytes, int8_bytes
from ._runtime import (
    CACHE,
    CONTEXT,
    UNVERIFIED,
    VERIFIED,
    WORKSPACE_SCRATCH,
    Band,
    Runtime,
    runtime_for,
)
from ._shape import step_shape
from ._sharding import (
    DEEPSPEED_PERSISTENCE,
    DEEPSPEED_REDUCE_BUCKET,
    DEEPSPEED_REUSE_DISTANCE,
    DEEPSPEED_SUB_GROUP,
    LOAD_TENSOR,
    NVME_OPTIMIZER_BUFFERS,
    NVME_PARAM_BUFFERS,
    NVME_PARAM_MAX_IN_CPU,
    Fsdp,
    Held,
    adapter_held,
    base_tensor_dim0,
    deepspeed_config,
    fsdp_terms,
    is_root_tensor,
    loading_host_bytes,
    mapped_bytes,
    shard_bytes,
    shard_ranks,
    sharded_alloc,
)
from ._units import gib_text
from ._vision import QWEN3_VL, VisionTower, pixel_values, stepped_layers
from ._vision_mllama import layers_run, stepped_text_layers

MiB = 1024 * 1024
# The estimate by component; on CUDA they add up to ``total`` (what nvidia-smi shows), on the CPU to the tensor peak.
COMPONENTS = (
    "weights", "adapters", "gradients", "optimizer", "reference", "activations", "logits",  # live tensors at the peak
    "overhead",  # CUDA context and runtime (outside torch's allocator) + cuBLAS workspace (inside it)
    "allocator_cache",  # peak_reserved - peak_allocated: freed blocks the caching allocator keeps
    "optimizer_paged",  # paged optimizer state in CUDA managed memory (outside torch's allocator)
)  # fmt: skip

COMPONENT_LABELS = {
    "weights": "Weights",
    "adapters": "Adapters",
    "gradients": "Gradients",
    "optimizer": "Optimizer state",
    "reference": "Reference model",
    "activations": "Activations",
    "logits": "Logits and loss",
    "overhead": "CUDA context + cuBLAS",
    "allocator_cache": "Allocator cache",
    "optimizer_paged": "Paged optimizer (managed)",
}
"""Each component's name for people (``MemoryEstimate.component_labels`` names some by the peak's phase)."""
PHASE_LABELS = {
    ("optimizer", "activations"): "Optimizer-step temporaries",
    ("optimizer", "logits"): "Logits kept by the loop",
    ("backward", "activations"): "Activations and backward temporaries",
    ("backward", "gradients"): "Gradients made so far",
    ("backward", "logits"): "Logits kept by the loop",
    ("forward", "activations"): "Saved activations",
    ("loss_backward", "activations"): "Saved activations",
}
"""(peak phase, component) -> what the component holds at a peak in that phase (``peak_components``)."""

# The runtime constants measured on an H200 (torch 2.11 + CUDA 13.0, driver 580.159; bench/results/gpu_h200.json):
# the GPU catalog's sm90 entry, where every architecture's constants live (estimator/data/gpus.json, catalog.py).
_SM90 = catalog.architectures()["sm90"]
CUDA_CONTEXT_BYTES = _SM90.cuda_context_bytes  # total - free from mem_get_info() before anything is loaded
CUDA_RUNTIME_BYTES = _SM90.cuda_runtime_bytes  # kernels and library handles loaded in the first step
CUBLAS_WORKSPACE_BYTES = _SM90.cublas_workspace_bytes  # cuBLAS workspaces: inside torch's allocator
ALLOCATOR_CACHE_FLOOR = _SM90.allocator_cache_floor_bytes  # blocks the caching allocator keeps reserved


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
    basis: str = "exact"  # "exact", "modelled", or the runtime constants' status ("measured", "calibrated", ...)


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
    range: dict[str, tuple[int, int]] = field(default_factory=dict)
    runtime: Runtime | None = None
    attention: AttentionPath | None = None
    tensor_range: tuple[int, int] = (0, 0)  # the live-tensor peak's range (without the workspace)
    head_block: int = 0  # the head's largest transient block (what the allocator's cache is modelled on)
    in_op_block: int = 0  # bytes the peak holds inside one op, seen by no tracker of tensors (``in_op_block``)
    per_rank: dict[str, object] = field(default_factory=dict)  # per-GPU figures and the parts sharding splits
    host: dict[str, int | str] = field(default_factory=dict)  # host RAM per rank, by part

    @property
    def host_peak(self) -> int:
        """Bytes of CPU RAM one rank's process holds at its peak (``host_ram``)."""
        return int(self.host.get("host_peak", 0))

    @property
    def component_labels(self) -> dict[str, str]:
        """What each live-tensor component holds at the peak, in words: the same component key holds different
        tensors in different phases (at the optimizer step "activations" are the step's temporaries)."""
        return {c: PHASE_LABELS.get((self.peak_phase, c), COMPONENT_LABELS[c]) for c in COMPONENTS}

    @property
    def fit_bytes(self) -> int:
        """The figure a GPU's usable memory is compared with (whether the plan fits, and the fit search): the high
        edge of the total's range, so an estimate says "fits" only where its least favourable reading fits."""
        return self.range["total"][1] if "total" in self.range else self.total

    def to_dict(self) -> dict[str, object]:
        att = self.attention
        return {
            "components": dict(self.components),
            "peak_allocated": self.peak_allocated,
            "peak_reserved": self.peak_reserved,
            "total": self.total,
            "range": {k: list(v) for k, v in self.range.items()},
            "peak_phase": self.peak_phase,
            "component_labels": self.component_labels,
            "phases": dict(self.phases),
            "activation_dtype": self.activation_dtype,
            "attention": None if att is None else {
                "implementation": att.implementation, "backend": att.backend, "mask": att.mask,
                "repeat_kv": att.repeat_kv, "enable_gqa": att.enable_gqa, "pinned": att.pinned, "reason": att.reason,
            },
            "runtime": None if self.runtime is None else self.runtime.to_dict(),
            "per_rank": dict(self.per_rank),
            "host_peak": self.host_peak,
            "host": dict(self.host),
            "terms": [
                {"name": t.name, "component": t.component, "bytes": t.bytes, "counts": t.counts, "basis": t.basis}
                for t in self.terms
            ],
            "notes": list(self.notes),
        }  # fmt: skip


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
    embeddings, norms and biases are not converted. MoE experts: under transformers 5.x they are fused 3-D
    parameters that bitsandbytes does not convert (16-bit, fp32 after ``prepare_model_for_kbit_training``); under
    4.x each expert's gate, up and down projections are ``nn.Linear`` layers it quantizes (``experts_quantized``).
    Buffers: ``buffer_bytes``.
    """
    return sum(tensor_weight_bytes(inv, t, plan, cuda) * t.layers for t in inv) + buffer_bytes(inv.arch, cuda)


def tensor_weight_bytes(inv: Inventory, t: Tensor, plan: Plan, cuda: bool) -> int:
    """One instance of ``t`` as held (see ``weight_bytes``)."""
    quantized, int8 = plan.quantized, plan.quant_type == "int8"
    if quantized and t.kind == EXPERTS and experts_quantized(plan):
        e, out, inp = t.shape
        n = 2 if out == 2 * (inv.arch.moe_intermediate_size or 0) and inp == inv.arch.hidden_size else 1
        linear = out // n * inp  # gate_up_proj holds the v4 gate (w1) and up (w3) linears of each expert
        return e * n * (int8_bytes(out // n, inp, cuda) if int8 else four_bit_bytes(linear, plan.double_quant, cuda))
    if quantized and t.bnb_quantized:
        if int8:
            return int8_bytes(t.out_features, t.in_features, cuda)
        return four_bit_bytes(t.numel, plan.double_quant, cuda)
    return alloc(t.numel * tensor_dtype_bytes(inv, t, plan), cuda)


FP32_ROUTERS = ("deepseek_v2", "deepseek_v3", "glm4_moe")
"""Model types whose router weight transformers keeps in fp32 whatever the load dtype (``gate.weight`` in the
model's ``_keep_in_fp32_modules_strict``; traced at real size: DeepSeek-V2-Lite's 26 routers)."""


def tensor_dtype_bytes(inv: Inventory, t: Tensor, plan: Plan) -> int:
    """Bytes per element of a non-quantized parameter ``t`` as held: the plan's (``param_dtype_bytes``), or fp32
    for a router transformers keeps in fp32 (``FP32_ROUTERS``)."""
    if t.kind == ROUTER and not t.is_bias and inv.arch.model_type in FP32_ROUTERS:
        return 4
    return param_dtype_bytes(plan)


def buffer_bytes(arch: Architecture, cuda: bool) -> int:
    """Buffers large enough to count: GPT-BigCode's bool causal mask of n_positions² (``GPTBigCodeModel.bias``,
    64 MiB at StarCoder's 8192 positions; measured on the CPU grid). Rotary ``inv_freq`` buffers (< 1 KiB) are
    ignored."""
    if arch.model_type == "gpt_bigcode":
        return alloc(arch.max_position_embeddings**2, cuda)
    return 0


def experts_quantized(plan: Plan) -> bool:
    """Whether bitsandbytes quantizes MoE experts: transformers 4.x (experts are ``nn.Linear``), QLoRA."""
    return plan.quantized and plan.transformers_version == "4.x"


def trl_casts_adapters(plan: Plan) -> bool:
    """TRL's trainers (DPO, KTO, GRPO, reward; not the plain SFT step) cast a quantized model's trainable
    parameters to bf16 after wrapping it, the DoRA magnitude excepted (``param.data.to(torch.bfloat16)`` for
    ``_is_quantized_model``): QLoRA adapters, their gradients and AdamW state are then 2 bytes an element. The
    experimental ORPO and CPO (SimPO) trainers do not (``peft_module_casting_to_bf16`` casts only lm_head, the
    embeddings and the norms; measured on the CPU grid: fp32 adapters)."""
    return plan.method == "qlora" and plan.objective not in ("sft", "orpo", "simpo")


def _trainable_tensors(
    inv: Inventory, adapters: AdapterPlan, plan: Plan, *, as_made: bool = False, stepped: bool = False
) -> list[tuple[int, int, int]]:
    """(elements, bytes per element, count) of every trainable parameter tensor (``as_made``: in the dtype PEFT
    makes them, before TRL's bf16 cast; ``stepped``: only those that get a gradient and optimizer state: a
    vision-language model's tower runs only on images and video, so without them its parameters get neither: AdamW
    skips a parameter whose ``grad`` is None)."""
    per = param_dtype_bytes(plan)
    tower = inv.arch.vision
    tower_idle = stepped and tower is not None and not plan.vision_inputs
    steps = tower if stepped else None  # a CLIP tower's idle last layer (``stepped_layers``)

    def n_stepped(module: str, layers: int) -> int:  # and Mllama's cross-attention layers without images
        if stepped:
            layers = stepped_text_layers(inv.arch, plan.vision_inputs, module, layers)
        return stepped_layers(steps, module, layers)

    if plan.method == "full":
        return [(t.numel, tensor_dtype_bytes(inv, t, plan), n_stepped(t.module, t.layers)) for t in inv
                if not (tower_idle and t.role == "vision")]  # fmt: skip
    out: list[tuple[int, int, int]] = []
    r = plan.lora_r
    lo = 2 if trl_casts_adapters(plan) and not as_made else 4
    for a in adapters.adapted:
        if tower_idle and tower is not None and a.module.startswith(tower.prefixes):
            continue
        n = n_stepped(a.module, a.layers)
        out += [(r * a.in_features, lo, n), (a.out_features * r, lo, n)]
        if plan.use_dora:  # the magnitude vector, on embeddings too (as Adapted.params counts it)
            out.append((a.out_features, 4, a.layers))
    for t in adapters.saved_modules:
        out.append((t.numel, 2 if lo == 2 else per, t.layers))
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
    path: AttentionPath  # the attention kernel the step runs (estimator._kernels)
    cuda: bool = True
    rocm: bool = False  # the plan's GPU is an AMD one (ROCm)
    expert_lora_bytes: int = 0  # one MoE layer's expert stack as PEFT's ParamWrapper materializes it (W + ΔW)
    expert_lora_factors: int = 0  # one MoE layer's expert LoRA factors cast to the experts' dtype (0: same dtype)
    router_lora: bool = False
    model_type: str = ""
    generic: bool = False  # a model type with no hand-written family (transformers' own parameter list)
    patches: int = 0  # patches the vision tower sees in the step (0: no images or video)
    tower_run: int = 0  # patches of the tower's largest single run (the step's images, or its videos)
    masks: int = 1  # attention masks the forward builds (Gemma 3 with images: the full and the sliding one)

    @property
    def vision(self) -> bool:
        """The step runs a vision tower on images or video."""
        return self.patches > 0

    @property
    def sdpa_math(self) -> bool:
        """SDPA runs its math path (b·a·s² probabilities per layer)."""
        return self.path.backend == "math"


def gpu_runtime(plan: Plan) -> catalog.ArchRuntime | None:
    """The runtime constants of the plan's GPU architecture (None when the plan names no GPU)."""
    gpu = catalog.find_gpu(plan.gpu) if plan.gpu is not None else None
    return catalog.architecture(gpu) if gpu is not None else None


def dtype_flow(inv: Inventory, adapters: AdapterPlan, plan: Plan) -> _Flow:
    """The dtypes every phase sees, what the adapters read, and the attention kernel.

    Residual stream and attention: fp32 under QLoRA (``prepare_model_for_kbit_training`` makes the embeddings fp32,
    so everything after them is fp32), 16-bit under mixed precision, else the plan's dtype. Adapter compute: fp32
    (PEFT's ``autocast_adapter_dtype``), or bf16 where TRL casts QLoRA's adapters (``trl_casts_adapters``: PEFT's
    LoRA layer casts its input to lora_A's dtype; measured on the CPU grid with reward QLoRA, where the layers'
    backward sets the peak: fp32 counted there was 52 % high). Dropout masks: float tensors on the CPU, bool on
    CUDA. The attention kernel is transformers' dispatch and torch's SDPA selection for the plan's GPU
    (``estimator._kernels``): for example CUDA's SDPA has no fused kernel for fp32 with grouped KV heads and no mask
    and takes its math path (measured on the H200 runs, bench/results/gpu_h200.json).
    """
    arch = inv.arch
    cuda = plan.device == "cuda"
    if plan.method == "qlora" and plan.upcast_non_quantized:
        ad = 4
    elif plan.method == "full" and plan.mixed_precision:
        ad = 2
    else:
        ad = DTYPE_BYTES[plan.dtype]
    ab = 2 if trl_casts_adapters(plan) else 4  # TRL's bf16 adapters: PEFT casts their input to bf16
    gpu = gpu_runtime(plan)
    shape = step_shape(arch, plan)
    image_blocks = arch.vision is not None and arch.vision.kind == "siglip" and shape.image_tokens > 0
    path = attention_path(arch, plan, ad, gpu, shape.length, image_blocks)
    lora = tuple(a.reads for a in adapters.adapted)
    experts_adapted = EXPERT_INPUT in lora or EXPERT_HIDDEN in lora
    expert_numel = sum(t.numel for t in inv if t.kind == EXPERTS) if experts_adapted else 0
    # _LoraFactorsProxy folds W + scaling·lhs@rhs into one baddbmm after ``lhs.to(W.dtype)``, ``rhs.to(W.dtype)``
    # (peft ParamWrapper.get_delta_factors): copies, saved by the baddbmm, unless the factors are in W's dtype already
    factor_numel = sum(
        a.params(plan.lora_r, False) // a.layers for a in adapters.adapted if a.reads in (EXPERT_INPUT, EXPERT_HIDDEN)
    )
    expert_factors = factor_numel * param_dtype_bytes(plan) if param_dtype_bytes(plan) != ab else 0
    return _Flow(
        T=shape.tokens, b=shape.rows, s=shape.length, ad=ad, ab=ab, mask=1 if cuda else ab,
        frozen_base=plan.method != "full", lora=lora, dropout=lora_dropout_active(plan),
        r=plan.lora_r, attn=path.implementation, path=path, cuda=cuda,
        rocm=gpu is not None and gpu.compute_capability is None,
        expert_lora_bytes=expert_numel * param_dtype_bytes(plan) if experts_adapted else 0,
        expert_lora_factors=expert_factors,
        router_lora=ROUTER_INPUT in lora, model_type=arch.model_type, generic=arch.generic,
        patches=shape.patches, tower_run=shape.tower_run, masks=2 if image_blocks else 1,
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
    if arch.norm == "cohere":  # CohereLayerNorm in Python: fp32 centred input and normalized output, rsqrt
        return 8 * T * width + 4 * T
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
    total = 0 if arch.model_type in ("olmo2", "olmo3") else norm  # OLMo 2/3 normalize the blocks' outputs
    if arch.parallel_block and arch.norms_per_layer == 1:
        total += _linear_inputs(f, (ATTENTION_INPUT, MLP_INPUT), h)  # attention and MLP read one normalized input
    else:
        total += _linear_inputs(f, (ATTENTION_INPUT,), h)
    return total + _attention_saved(arch, f) + _mlp_saved(arch, f, norm, moe)


def _mla_saved(arch: Architecture, f: _Flow) -> int:
    """DeepSeek's multi-head latent attention after its input projections: the latents' RMSNorms and what reads
    them (q_b_proj, kv_b_proj), the attention core over q/k of nope + rope dims and v of v_head_dim, o_proj's input.

    v's head dim differs from q/k's, so flash attention (CUDA, and the CPU's flash kernel) cannot run it: the CPU
    takes SDPA's math path (fp32 q, kᵀ, v and the b·a·s² probabilities; measured on the CPU grid), CUDA the
    memory-efficient kernel (O(s), from torch's selection rules). Ignores the rotary halves and the expanded shared
    rotary key (views or unsaved copies).

    v is a view of kv_b_proj's output (``expand_kv`` splits it into the keys' nope part and v), so wherever the
    attention saves v as given (eager's matmul, a fused SDPA kernel) the whole k_nope|v storage stays alive: the
    nope part is counted with it (traced at real size on DeepSeek-V2-Lite). SDPA's math path saves fp32 copies.
    """
    T, ad, a = f.T, f.ad, arch.num_attention_heads
    qk, v = arch.attn_head_dim, arch.v_head_dim
    trainable = not f.frozen_base
    total = 0 if f.sdpa_math or f.attn == "flash_attention_2" else ad * T * a * arch.qk_nope_head_dim
    if arch.q_lora_rank:
        total += _norm_saved(arch, f, arch.q_lora_rank, trainable)
        total += _linear_inputs(f, (MLA_Q_LATENT,), arch.q_lora_rank)
    total += _norm_saved(arch, f, arch.kv_lora_rank, trainable)
    total += _linear_inputs(f, (MLA_KV_LATENT,), arch.kv_lora_rank)
    if f.attn == "eager" or f.sdpa_math:
        pd = 4 if f.sdpa_math else ad
        total += pd * T * a * (2 * qk + v) + 4 * f.b * a * f.s * f.s
        if f.attn == "eager" and ad != 4:
            total += ad * f.b * a * f.s * f.s
    else:
        qb = 2 if f.attn == "flash_attention_2" else ad
        total += qb * T * a * (2 * qk + 2 * v) + 4 * T * a + mask_saved_per_layer(f)
    o_shared = f.attn != "eager" and not f.sdpa_math and (f.attn != "flash_attention_2" or ad == 2)
    return total + _linear_inputs(f, (ATTENTION_OUTPUT,), a * v, shared=o_shared)


ROTARY_CAT = frozenset({
    "bamba", "glm", "glm4", "glm4_moe", "gpt_neox", "laguna", "mimo_v2_flash", "minimax_m2", "nemotron", "phi3",
    "qwen3_5", "qwen3_5_moe", "qwen3_next", "recurrent_gemma",
})  # fmt: skip
"""Families whose ``apply_rotary_pos_emb`` ends in ``torch.cat([rotated, passed_through])`` even when the whole
head rotates (the passed-through part is then empty), so that q comes out contiguous in (b, heads, s, d): read from
transformers 5.24's modeling files (the text models of the list made by searching them for that ``cat``)."""


def _attention_saved(arch: Architecture, f: _Flow) -> int:
    """The attention's saved tensors after its input projections: q/k norms, the attention core, o_proj's input."""
    if arch.mla:
        return _mla_saved(arch, f)
    T, ad = f.T, f.ad
    a, kv, d = arch.num_attention_heads, arch.num_key_value_heads, arch.head_dim
    qd, kd = a * d, kv * d
    total = 0
    if arch.qk_norm in ("head", "l2"):  # per-head norms (Llama 4's L2 norm has no weight)
        total += 4 * T * (qd + kd) + 4 * T * (a + kv)
        trained_rms = not f.frozen_base and arch.norm != "layernorm" and not arch.model_type.startswith("gemma")
        if arch.qk_norm == "head" and trained_rms:  # Llama-style RMSNorm: its weight's gradient needs the input
            total += ad * T * (qd + kd)  # normalized and cast (Qwen3's q_norm / k_norm; measured, full fine-tuning)
    elif arch.qk_norm == "head_per_head":  # Cohere's per-head LayerNorms, as its input norm saves
        total += 8 * T * (qd + kd) + 4 * T * (a + kv)
    elif arch.qk_norm == "full":
        total += 4 * T * (qd + kd) + 8 * T
    if f.attn == "eager" and arch.attention_sinks:
        # gpt-oss: the sink logit joins each row (s + 1 columns), softmax in the attention dtype, the max's indices
        total += 3 * ad * T * qd + ad * f.b * a * f.s * (f.s + 1) + 8 * f.b * a * f.s
    elif f.attn == "eager":
        total += 3 * ad * T * qd  # q, and k and v repeated to the query heads
        total += 4 * f.b * a * f.s * f.s  # fp32 softmax output
        if ad != 4:
            total += ad * f.b * a * f.s * f.s  # its 16-bit copy, saved by the matmul with v
    elif f.sdpa_math:
        # SDPA's math path (no fused kernel for this call: fp32 with grouped KV heads, a pinned math, a card
        # without flash): scaled q, repeated-and-scaled k, repeated v, and the attention probabilities, b·a·s², per
        # layer, all in fp32 (torch's math path upcasts 16-bit q/k/v: measured on the CPU; fp32 QLoRA measured on
        # the H200 without GC)
        total += 3 * 4 * T * qd + 4 * f.b * a * f.s * f.s
    else:
        qb = 2 if f.attn == "flash_attention_2" else ad
        kv = qd if f.path.repeat_kv else kd  # transformers' repeat_kv (a mask with grouped heads): K/V per q head
        total += qb * T * (2 * qd + 2 * kv)  # q, k, v, output
        total += 4 * T * a  # log-sum-exp
        total += mask_saved_per_layer(f)
    if arch.fused_qkv and arch.model_type != "gpt2" and not f.sdpa_math:
        # q and k go through rotary embeddings (new tensors) while v stays a view of the fused projection's
        # output, so SDPA's saved v keeps the whole q|k|v storage alive
        total += ad * T * (qd + kd)
    if f.attn == "eager" and arch.attn_logit_softcapping:
        total += ad * f.b * a * f.s * f.s  # tanh output of the attention-logit soft-capping
    # SDPA/flash return their output in (b, s, heads, d) layout, so o_proj's input is the saved output itself.
    # Except on the CPU where the rotary embedding ends in ``torch.cat`` of the rotated and the passed-through
    # halves (a partial one, or a family whose code always cats: ``ROTARY_CAT``): that makes q contiguous in
    # (b, heads, s, d), the CPU kernel's output follows q's layout, and ``transpose(1, 2).contiguous()`` copies it
    # (GLM-4 MoE and Phi-3 on the CPU grid: the copy is o_proj's saved input).
    # SDPA's math path saves no output at all: its ``matmul(probs, v)`` comes out in (b, heads, s, d) and the copy
    # is o_proj's own (Llama QLoRA on the math path without dropout, CPU grid: one b·s·h fp32 per layer; with
    # LoRA dropout, as in the H200 matrix, the adapter saves its dropped-out copy and the base nothing)
    o_shared = (
        f.attn != "eager"
        and not f.sdpa_math
        and (f.attn != "flash_attention_2" or ad == 2)
        and (f.cuda or not (arch.rotary_dim or arch.model_type in ROTARY_CAT))
    )
    return total + _linear_inputs(f, (ATTENTION_OUTPUT,), qd, shared=o_shared)


def mask_saved_per_layer(f: _Flow) -> int:
    """The attention mask as a fused SDPA kernel keeps it for backward, per layer (bytes).

    torch converts a bool mask to the q/k/v dtype before every fused kernel (``convert_boolean_attn_mask`` in
    ``scaled_dot_product_attention``) and the kernel keeps that copy for its backward: ad·b·s² per layer. The
    memory-efficient kernel's copy is padded first where its rows are not 8-aligned (``preprocess_mask``:
    ``pad_bias<8>``, the padding sliced off but kept in the storage). Measured on the CPU (flash: exact) and on an
    H200 (memory-efficient: 16 layers × 32 MiB in QLoRA's fp32 at 2 × 2048, the allocator's history naming the
    SDPA call; bench/gpu_snapshot.py). Without a mask, nothing.
    """
    if not f.path.mask or f.path.backend not in ("cpu_flash", "cudnn", "efficient"):
        return 0
    width = f.s + (-f.s) % 8 if f.path.backend == "efficient" else f.s
    return f.ad * f.b * f.s * width


def attention_mask_bytes(f: _Flow) -> int:
    """The mask transformers builds once per forward and every layer reads: eager's additive float mask
    (b·s² in the stream's dtype, always), SDPA's bool mask (b·s², only with padding or packing). Gemma 3 with
    images builds two (``create_masks_for_vision_model``: the full-attention and the sliding-window layers' own)."""
    if f.attn == "eager":
        return f.masks * f.ad * f.b * f.s * f.s
    if f.attn == "sdpa" and f.path.mask:
        return f.masks * f.b * f.s * f.s
    return 0


def _mlp_saved(arch: Architecture, f: _Flow, norm: int, moe: bool) -> int:
    """The feed-forward block's saved tensors, its norms included (``norm``: one norm's saved bytes)."""
    T, h, ad = f.T, arch.hidden_size, f.ad
    total = 0
    if not (arch.parallel_block and arch.norms_per_layer == 1):  # else its input is counted with the attention's
        if arch.model_type in ("olmo2", "olmo3"):
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
    if arch.norms_per_layer == 4 or arch.model_type in ("olmo2", "olmo3"):
        total += norm  # post-feedforward norm
    return total


FP32_ROUTERS = ("deepseek_v2", "deepseek_v3", "glm4_moe")
"""MoE routers that cast their input to fp32 before the linear (transformers 5.24: ``DeepseekV2Moe`` /
``DeepseekV3TopkRouter`` / ``Glm4MoeTopkRouter``); measured on the CPU grid (DeepSeek-V3 bf16 LoRA: the router's
saved input is fp32)."""


def _moe_saved(arch: Architecture, f: _Flow) -> int:
    T, h, ad = f.T, arch.hidden_size, f.ad
    e, k, mi = arch.num_experts, arch.num_experts_per_tok, arch.moe_intermediate_size
    # DeepSeek's and GLM-4 MoE's routers run in fp32 (``F.linear(hidden_states.type(torch.float32), ...)``): the
    # input they keep for their weight's gradient is an fp32 copy unless the stream is fp32 already
    fp32_router = arch.model_type in FP32_ROUTERS
    router_in = (4 if fp32_router else ad) * T * h
    saved = 0
    if not f.frozen_base:
        saved = _linear_inputs(f, (ROUTER_INPUT,), h) + (router_in if fp32_router and ad != 4 else 0)
    saved += T * e * (ad + 4) + T * k * 12  # router logits, fp32 softmax, top-k weights and indices
    pairs = T * (e if arch.dense_experts else k)  # Llama 4 runs every expert on every token (scores 0 elsewhere)
    saved += pairs * ad * (3 * mi + h) + pairs * ad  # per routed token: gate_up output, act, down output, weight
    if arch.model_type == "gpt_oss":
        saved += 3 * pairs * ad * mi  # its clamped SwiGLU: both clamps, the sigmoid and the gated product
    if not f.frozen_base:
        saved += pairs * ad * (h + mi)  # expert linears save their inputs
    if f.expert_lora_bytes:
        # LoRA on the fused experts (PEFT ParamWrapper): the parametrization materializes W + ΔW for the whole
        # stack, which then needs a gradient, so the expert matmuls keep it and their inputs (the gathered tokens,
        # the gated product); the fold keeps the factors' cast copies (measured on the CPU grid: Mixtral bf16 LoRA)
        saved += f.expert_lora_bytes + pairs * ad * (h + mi) + f.expert_lora_factors
    if f.router_lora:
        saved += router_in  # the router's input, kept for the gradient of its W + ΔW
    if arch.shared_expert_intermediate_size:
        si = arch.shared_expert_intermediate_size
        saved += _linear_inputs(f, (SHARED_EXPERT_INPUT,), h)
        saved += 3 * ad * T * si + _linear_inputs(f, (SHARED_EXPERT_HIDDEN,), si)
        if arch.shared_expert_gate:
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
    """What one GPU (one rank) holds through the whole step, and its gradients by where the backward makes them."""

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
    grads_layers: int  # every decoder layer's (this rank's share)
    grads_layer: int  # one decoder layer's, as the backward makes it (unsharded)
    tied_pending: int  # the tied weight's gradient from lm_head, not yet a .grad
    fsdp: Fsdp | None = None  # FSDP2's gathered working set
    zero_buckets: int = 0  # DeepSpeed ZeRO's reduce buckets (``zero_state``)
    zero_partition: int = 0  # DeepSpeed ZeRO: the fp32 partition of the trained parameters its step works on at once
    zero_backward: int = 0  # DeepSpeed ZeRO 1/2: the buffers each backward makes (buckets, the gradient partition)
    zero_at_loss: int = 0  # those of them made in the loss's backward already (a trained lm_head's gradient)
    gathered_layers: int = 0  # ZeRO-3: the two decoder layers gathered (the one running, the next prefetched)
    host_offload: int = 0  # state offloaded to host RAM (optimizer, or parameters + gradients + optimizer)
    zero_window: int = 0  # ZeRO-3: the most its reuse window may keep gathered (``zero3_window``)
    zero_reused: int = 0  # ZeRO-3, a model within the reuse distance: gathered beyond the two layers (``zero3_reused``)
    nvme: int = 0  # bytes ZeRO-Infinity keeps on the NVMe path (``zero_offload``, ``zero_offload_params``)
    layers: int = 1
    reference: int = 0  # a frozen reference copy of the model (full fine-tuning with DPO, KTO, GRPO with beta > 0)

    @property
    def static(self) -> int:
        """Allocated from before the forward to after the optimizer step."""
        return self.weights + self.adapters + self.optimizer + self.ddp_buckets + self.zero_buckets + self.reference

    @property
    def step_grads(self) -> int:
        """The gradients alive at the optimizer step (DeepSpeed ZeRO's are its fp32 partition: ``optimizer_step``)."""
        return 0 if self.zero_partition else self.grads

    @property
    def other_layers_grads(self) -> int:
        """Every other decoder layer's gradients (this rank's share) when the first layer's backward runs."""
        return self.grads_layers - self.grads_layers // self.layers

    def gathered(self, moment: str) -> int:
        """FSDP's gathered parameters at ``moment`` (``Fsdp.gathered``); under ZeRO-3 what its reuse window keeps
        gathered beyond the two layers through the forward and the backward (``zero3_reused``); else 0."""
        if self.fsdp is not None:
            return self.fsdp.gathered(moment)
        return 0 if moment == "optimizer" else self.zero_reused


def _held(tensors: Iterable[Tensor], plan: Plan, cuda: bool) -> int:
    """One instance of each parameter tensor (or its gradient), in the dtype it is held in."""
    per = param_dtype_bytes(plan)
    return sum(alloc(t.numel * per, cuda) for t in tensors)


def _lora_grads(modules: Iterable[Adapted], r: int, cuda: bool) -> int:
    """fp32 gradients of lora_A and lora_B of ``modules``, one layer."""
    return sum(alloc(4 * r * a.in_features, cuda) + alloc(4 * r * a.out_features, cuda) for a in modules)


def _head_trained(arch: Architecture, plan: Plan) -> bool:
    """Whether the lm_head's weight gets its own gradient in the loss's backward (so that DeepSpeed's buckets, made
    at the first trained parameter's gradient hook, ``process_gradients`` → ``setup_buckets``, exist there): full
    fine-tuning of an untied head, or a head in ``modules_to_save``. A tied one is ready only after the embedding's
    backward, and LoRA's first gradient comes in the last layer's backward."""
    return (plan.method == "full" and not arch.tie_word_embeddings) or "lm_head" in plan.modules_to_save


ZERO_SCALARS = 1024
"""DeepSpeed's step scalars beside the modelled tensors (the gradient norm, the overflow flag, the loss scale...):
404 B on the gloo runs; the range's high edge carries a KiB of them."""


def zero_backward_end(state: _State, head: HeadLoss, fwd: _Forward, plan: Plan, cuda: bool) -> int:
    """DeepSpeed ZeRO-1/2: the backward's end, every gradient made (the embeddings' last) beside the buckets, with
    the batch's input ids and labels (int64); the optimizer step that follows holds neither (``zero_state``)."""
    ids = 2 * alloc(8 * plan.batch_size * plan.seq_len, cuda)
    return state.static + state.grads + state.zero_backward + head.kept + fwd.pixels + ids


def zero_high(state: _State, plan: Plan) -> int:
    """What DeepSpeed ZeRO may hold beyond the model, for the range's high edge: its step scalars
    (``ZERO_SCALARS``), and under ZeRO-3 the all-gather's own buffers beside the two gathered layers (as FSDP2's
    flat all-gather output; on the gloo runs 0.56 MB above the estimate of a tiny LoRA run), counted as that many
    bytes again; and what ZeRO-3's reuse window may keep gathered beside them (``zero3_window``), twice (the
    parameters and their all-gather buffers: the gloo runs' backward held that much over the partitions)."""
    if not state.zero_partition:
        return 0
    if plan.sharding != "zero3":
        return ZERO_SCALARS
    if state.zero_reused:  # the window is in the estimate itself
        return ZERO_SCALARS + state.gathered_layers
    return ZERO_SCALARS + state.gathered_layers + 2 * state.zero_window


def zero3_window(inv: Inventory, plan: Plan) -> int:
    """The most DeepSpeed ZeRO-3 may keep gathered at once (bytes of 16-bit parameters). A module's parameters are
    released after it runs unless they are used again within ``stage3_max_reuse_distance`` elements of the module
    trace (``partitioned_param_coordinator.py``, ``__params_to_release``; default 1e9), so what stays gathered at
    any moment is used within that many elements ahead: at most that many, with the module running, and never more
    than every partitioned parameter (those under ``stage3_param_persistence_threshold`` are whole anyway). A
    model under it stays gathered whole from the second step on: measured on the gloo run of a 115M-parameter
    Llama, whose backward held every parameter gathered, and as much again (docs/accuracy.md). Such a model's
    estimate holds it (``zero3_reused``); a larger one's keeps two decoder layers (``persistent_state``), and this
    bound is the range's high edge (``zero_high``)."""
    per = param_dtype_bytes(plan)
    layer = sum(t.total for t in inv if t.layers > 1) // max(inv.arch.num_hidden_layers, 1)
    return min(zero3_partitioned(inv), DEEPSPEED_REUSE_DISTANCE + layer) * per


def zero3_partitioned(inv: Inventory) -> int:
    """Elements ZeRO-3 partitions: every parameter but those under ``stage3_param_persistence_threshold``."""
    return sum(t.total for t in inv if t.numel >= DEEPSPEED_PERSISTENCE)


def zero3_reused(inv: Inventory, plan: Plan, gathered_layers: int) -> int:
    """DeepSpeed ZeRO-3 on a model whose partitioned parameters are within ``stage3_max_reuse_distance`` elements
    (1e9): every module's next use in the step's trace is nearer than that, so ``__params_to_release`` releases
    nothing after the first step, and from the second step's forward to its optimizer step every parameter is
    gathered, beside as many bytes of all-gather buffers (the gloo run of a 115M-parameter Llama with parameter
    offload: -13.79 % with two layers held, exact with this). Bytes beyond the two layers ``persistent_state``
    holds; 0 for a larger model (its window is the range's high edge, ``zero3_window``)."""
    partitioned = zero3_partitioned(inv)
    if partitioned > DEEPSPEED_REUSE_DISTANCE:
        return 0
    return 2 * partitioned * param_dtype_bytes(plan) - gathered_layers


def zero_partition(trainable: Sequence[tuple[int, int, int]], plan: Plan) -> int:
    """Elements of one rank's flat partition of the trained parameters under DeepSpeed ZeRO (``E / n``, rounded up)."""
    return -(-sum(e * c for e, _, c in trainable) // plan.num_gpus)


def zero_half(plan: Plan) -> int:
    """Bytes an element of DeepSpeed's 16-bit mode takes (2 with ``bf16``/``fp16`` enabled, else fp32: 4): the
    engine's parameters, gradients, buckets and the 16-bit buffers of its offload."""
    return 2 if plan.dtype in ("bfloat16", "float16") else 4


def zero_step_elements(trainable: Sequence[tuple[int, int, int]], plan: Plan) -> int:
    """The elements of the fp32 partition DeepSpeed's optimizer step works on at once: the rank's whole partition
    (stages 1/2: one flat group), or a ``sub_group_size`` sub-group of it (stage 3, stepped one at a time)."""
    part = zero_partition(trainable, plan)
    return min(part, DEEPSPEED_SUB_GROUP) if plan.sharding == "zero3" else part


def zero_state(trainable: Sequence[tuple[int, int, int]], plan: Plan, cuda: bool) -> tuple[int, int, int, int, int]:
    """DeepSpeed ZeRO's state on one of ``plan.num_gpus`` ranks, as (optimizer, optimizer paged, buffers kept,
    buffers each backward makes, trained parameters), with the config ``deepspeed_config`` writes (DeepSpeed 0.19,
    ``runtime/zero/stage_1_and_2.py`` and ``stage3.py``):

    * the engine casts the module to the 16-bit mode's dtype (``bf16``/``fp16`` enabled), so LoRA's adapters are
      held in 16 bits, not PEFT's fp32; stage 3 partitions them and keeps those under
      ``stage3_param_persistence_threshold`` whole beside their partitions (``ds_persist``: LoRA's factors);
    * the client optimizer steps one flat fp32 partition of the trained parameters per rank (their master copy,
      ``single_partition_of_fp32_groups`` / ``fp32_partitioned_groups_flat``: 4 B an element over ``E / n``
      elements), so AdamW's two states are fp32 partitions too;
    * stages 1 and 2 make ``reduce_bucket_size`` 16-bit elements of contiguous gradient buffer at each backward
      (``setup_buckets``), twice with ``overlap_comm``; the 16-bit gradients autograd makes are held whole until
      the backward's end, as on one GPU (measured: every trained parameter's, not this rank's share); buckets and
      gradients are gone by the optimizer step, which reads an fp32 copy of the rank's partition
      (``optimizer_step``). Stage 3 makes one bucket at build and keeps it, with the flat 16-bit partition of
      every gradient (``grad_partitions_flat_buffer``), into which each gradient is copied as autograd makes it.

    Held to gloo runs of DeepSpeed's engine on the CPU (``trainer.dist``, 2 ranks; docs/accuracy.md).
    """
    n = plan.num_gpus
    part = zero_partition(trainable, plan)
    opt_visible, opt_managed = optimizer_bytes([(part, 4, 1)], plan, cuda)
    zero = deepspeed_config(plan)["zero_optimization"]
    half = zero_half(plan)
    bucket, grads = alloc(DEEPSPEED_REDUCE_BUCKET * half, cuda), alloc(part * half, cuda)
    kept = bucket + grads if zero["stage"] == 3 else 0
    backward = 0 if zero["stage"] == 3 else (2 if zero["overlap_comm"] else 1) * bucket
    trained = sum(alloc(e * min(b, half), cuda) * c for e, b, c in trainable)
    if zero["stage"] == 3 and n > 1:
        persist = sum(alloc(e * min(b, half), cuda) * c for e, b, c in trainable if e < DEEPSPEED_PERSISTENCE)
        trained = -(-trained // n) + persist
    return alloc(4 * part, cuda) + opt_visible, opt_managed, kept, backward, trained


def pinned(nbytes: int, cuda: bool) -> int:
    """Host memory one pinned tensor of ``nbytes`` takes: torch's ``CachingHostAllocator`` rounds every pinned block
    up to a power of two (``aten/src/ATen/core/CachingHostAllocator.h``, ``allocate``: ``PowerOf2Ceil`` below
    ``pinned_max_round_threshold``, unlimited by default; torch 2.13), and keeps a freed block cached. Derived from
    torch's code, not measured: a CPU-only run pins nothing (``cuda`` False: the bytes themselves)."""
    if not cuda or nbytes <= 0:
        return max(nbytes, 0)
    return 1 << (nbytes - 1).bit_length()


@dataclass(frozen=True)
class ZeroOffload:
    """What DeepSpeed's optimizer offload places where, on one rank (bytes)."""

    host: int  # host RAM, held through training
    gpu_kept: int  # GPU buffers it adds, held through training
    gpu_moved: int  # GPU buffers of ``zero_state`` it moves to the host
    gpu_backward: int  # what each backward adds on the GPU
    nvme: int  # on the NVMe path (``offload_device`` nvme)


def zero_offload(trainable: Sequence[tuple[int, int, int]], plan: Plan, cuda: bool) -> ZeroOffload:
    """DeepSpeed's ``offload_optimizer`` (device cpu, ``pin_memory``), with DeepSpeed's CPU Adam stepping on the
    host (DeepSpeed 0.19):

    * stages 1/2 (``stage_1_and_2.py``): the fp32 master partition (``single_partition_of_fp32_groups``, pinned),
      its fp32 gradient (pinned), a 16-bit buffer the stepped partition is copied back through
      (``param_buffer_of_bit16_for_cpu_offload_groups``, pinned), a 16-bit buffer as large as the largest trained
      parameter on each side (``temp_grad_buffer_for_cpu_offload``, pinned, and ``temp_grad_buffer_for_gpu_offload``
      on the GPU); with gradient accumulation, each trained parameter's whole 16-bit gradient on the host
      (``accumulated_grads_in_cpu``, pinned; the rank's share counted);
    * stage 3 (``stage3.py``): the fp32 master partition (not pinned), its fp32 gradient one pinned buffer per
      ``sub_group_size`` sub-group, and the 16-bit gradient partition (``grad_partitions_flat_buffer``) moved to
      the host, pinned;
    * stages 1/2, each backward: each reduced gradient's slice in the rank's partition is cast to fp32 on the GPU,
      for its norm and for the copy to the host (``set_norm_for_param_grad_in_gpu``,
      ``async_inplace_copy_grad_to_fp32_buffer_from_gpu``), one parameter at a time: counted as the largest such
      slice, an upper bound (on the gloo run of a 115M-parameter Llama the backward held 40.9 MB more than without
      offload, where this gives 131 MB; not traced to its tensors);
    * both: CPU Adam's two fp32 states over the partition (``DeepSpeedCPUAdam``; its step count is a Python int);
    * ZeRO-3 with ``offload_device`` nvme (ZeRO-Infinity): the fp32 master, its gradient and the states live on the
      NVMe path; the host keeps ``NVME_OPTIMIZER_BUFFERS`` page-locked swap buffers of the largest
      sub-group (``swap_tensor/optimizer_utils.py``, DeepSpeed's own locked allocation, not rounded), the fp32
      gradient buffer of one sub-group (``initialize_optimizer_states``' ``gradient_buffer``, kept as the swapped
      partitions' ``.grad``) and the 16-bit gradient partition; the NVMe path holds the master, its gradient and
      the two states, 16 B an element of the partition. Read from the code only: DeepSpeed's async I/O op needs
      libaio, which this machine lacks.

    Pinned blocks are taken as torch's allocator takes them (``pinned``). Measured on gloo runs of the engine on
    the CPU, where host and device are one memory (docs/accuracy.md): every byte of the host and device terms
    together; the split between them and the pinned rounding are read from the code."""
    part, half = zero_partition(trainable, plan), zero_half(plan)
    largest = max((e for e, _, _ in trainable), default=0)
    adam = 2 * 4 * part
    moved = alloc(half * part, cuda)  # stage 3's 16-bit gradient partition
    if plan.sharding == "zero3":
        subs = [min(DEEPSPEED_SUB_GROUP, part - i) for i in range(0, part, DEEPSPEED_SUB_GROUP)]
        if plan.offload_device == "nvme":
            largest_sub = max(subs, default=0)
            swap = NVME_OPTIMIZER_BUFFERS * 4 * largest_sub + 4 * largest_sub
            return ZeroOffload(swap + pinned(half * part, cuda), 0, moved, 0, 16 * part)
        grads32 = sum(pinned(4 * s, cuda) for s in subs)
        return ZeroOffload(4 * part + grads32 + pinned(half * part, cuda) + adam, 0, moved, 0, 0)
    host = 2 * pinned(4 * part, cuda) + pinned(half * part, cuda) + pinned(half * largest, cuda) + adam
    if plan.grad_accum_steps > 1:
        host += -(-sum(pinned(half * e, cuda) * c for e, _, c in trainable) // plan.num_gpus)
    return ZeroOffload(host, alloc(half * largest, cuda), 0, alloc(4 * min(largest, part), cuda), 0)


def zero_offload_params(inv: Inventory, plan: Plan, cuda: bool) -> tuple[int, int, int]:
    """DeepSpeed ZeRO-3's ``offload_param`` (device cpu, ``pin_memory``), as (host bytes, GPU bytes of the
    parameters left whole there, bytes on the NVMe path): every parameter's 16-bit partition is made on the host,
    pinned one by one (``partition_parameters.py``, ``_partition_param``), and the trained ones are then copied
    into one flat pinned buffer per parameter group (``stage3.py``, ``_create_param_groups_fp16_flat_cpu_memory``;
    the blocks they leave stay in torch's pinned cache). Parameters under ``stage3_param_persistence_threshold``
    stay whole on the GPU (``ds_persist``). The GPU keeps the gathered layers. Derived from DeepSpeed's code; on the
    gloo runs (one memory) the parameters move, not copy: measured as the same total as ``offload`` ``optimizer``.
    On NVMe (``offload_device``): ``NVME_PARAM_BUFFERS`` page-locked swap buffers and the trained parameters' flat
    partition up to ``max_in_cpu`` stay on the host, and every partition is on the NVMe path
    (``partitioned_param_swapper.py``)."""
    n, per = plan.num_gpus, param_dtype_bytes(plan)
    host = persistent = trained = partitions = 0
    for t in inv:
        if t.numel < DEEPSPEED_PERSISTENCE:
            persistent += alloc(t.numel * per, cuda) * t.layers
            continue
        host += pinned(-(-t.numel // n) * per, cuda) * t.layers
        partitions += -(-t.numel // n) * per * t.layers
        if plan.method == "full":
            trained += -(-t.numel // n) * t.layers
    if plan.offload_device == "nvme":  # the partitions on NVMe, swapped through DeepSpeed's locked buffers
        count, size = NVME_PARAM_BUFFERS
        return count * size * per + pinned(min(trained, NVME_PARAM_MAX_IN_CPU) * per, cuda), persistent, partitions
    return host + (pinned(trained * per, cuda) if cuda else 0), persistent, 0


def persistent_state(inv: Inventory, adapters: AdapterPlan, plan: Plan, cuda: bool) -> _State:
    """Weights, adapters, optimizer state and gradients, as each GPU (rank) holds them.

    One GPU, and DDP: everything, plus DDP's bucket copy of every gradient (measured on gloo runs: exact). FSDP:
    ``fsdp_state``. ZeRO: ``zero_state`` (the fp32 partitions the optimizer steps, the reduce buckets, 16-bit
    adapters); stage 2 also shards the gradients, 3 also the parameters, which it gathers one decoder layer at a
    time (the gathered layer and the prefetched next one are held; a model within the reuse distance stays
    gathered whole through the forward and backward, ``zero3_reused``). Against the CPU grid's live-tensor tracker
    (docs/accuracy.md): adapters and optimizer state exact, weights within 0.7 %.
    Offload (``offload_state``) then moves state to host RAM.
    The reference copy (``reference_copy``) is held like the weights (ZeRO-3 and FSDP shard it too); with adapters,
    TRL's trainers handed a PEFT model add a frozen copy of the adapter named "ref" for the reference forward (exact
    on the CPU grid; none when the trainer wraps the model itself from ``peft_config``: an upper bound by the
    adapter's size).
    """
    if plan.sharding == "fsdp" and plan.num_gpus > 1:
        return offload_state(fsdp_state(inv, adapters, plan, cuda), plan)
    arch = inv.arch
    weights = weight_bytes(inv, plan, cuda)
    reference = weights if reference_copy(plan) else 0
    adapter_b = 0 if plan.method == "full" else _sum_alloc(_trainable_tensors(inv, adapters, plan), cuda)
    trainable = _trainable_tensors(inv, adapters, plan, stepped=True)
    trainable_bytes = _sum_alloc(trainable, cuda)
    if plan.adapters and plan.holds_reference:  # TRL's frozen "ref" copy of the adapter, made before its bf16 cast
        reference = _sum_alloc(_trainable_tensors(inv, adapters, plan, as_made=True), cuda)
    grads = trainable_bytes
    opt_visible, opt_managed = optimizer_bytes(trainable, plan, cuda)
    n_gpu = plan.num_gpus
    shard_opt = n_gpu if plan.sharding in ("zero1", "zero2", "zero3") else 1
    shard_grad = n_gpu if plan.sharding in ("zero2", "zero3") else 1
    shard_w = n_gpu if plan.sharding == "zero3" else 1
    opt_visible, opt_managed = -(-opt_visible // shard_opt), -(-opt_managed // shard_opt)
    zero_buckets = zero_backward = 0
    zero = plan.sharding.startswith("zero")
    host_offload = nvme = 0
    if zero:
        opt_visible, opt_managed, zero_buckets, zero_backward, trained = zero_state(trainable, plan, cuda)
        if plan.adapters:
            adapter_b = trained
        if plan.offload != "none":
            off = zero_offload(trainable, plan, cuda)
            opt_visible = opt_managed = 0
            zero_buckets += off.gpu_kept - off.gpu_moved
            zero_backward += off.gpu_backward
            host_offload, nvme = off.host, off.nvme
    gathered = 0
    if shard_w > 1:
        # one decoder layer's parameters (``numel`` is one instance's, ``total`` every layer's)
        per_layer_w = sum(t.total * param_dtype_bytes(plan) for t in inv if t.layers > 1) // arch.num_hidden_layers
        gathered = 2 * per_layer_w  # the gathered layer and the prefetched next one
        weights = -(-weights // shard_w) + gathered  # the adapters: ``zero_state``
        reference = -(-reference // shard_w) + (gathered if reference else 0)
    window = zero3_window(inv, plan) if plan.sharding == "zero3" else 0
    reused = zero3_reused(inv, plan, gathered) if plan.sharding == "zero3" else 0
    if zero and plan.offload == "params":
        params_host, persistent, params_nvme = zero_offload_params(inv, plan, cuda)
        host_offload, nvme = host_offload + params_host, nvme + params_nvme
        weights = gathered + persistent  # LoRA's factors, under the threshold, stay whole (``zero_state``)
    ddp_buckets = grads if n_gpu > 1 and plan.sharding == "ddp" else 0
    head, embed, layers, tied = _gradients_by_place(inv, adapters, plan, cuda, grads)
    run = layers_run(arch, plan.vision_inputs)
    layer_grads = layers // run
    if plan.sharding == "zero3":  # copied into the kept flat partition as autograd makes them (``zero_state``)
        head = embed = layers = tied = grads = 0
    elif shard_grad > 1 and not zero:
        head, embed, layers, tied = (-(-x // shard_grad) for x in (head, embed, layers, tied))
        grads, layer_grads = head + embed + layers, layers // run
    return offload_state(_State(
        weights=weights, adapters=adapter_b, optimizer=opt_visible, optimizer_paged=opt_managed,
        ddp_buckets=ddp_buckets, trainable=trainable, trainable_bytes=trainable_bytes, shard_opt=shard_opt,
        grads=grads, grads_head=head, grads_layers=layers, grads_layer=layer_grads,
        tied_pending=tied, zero_buckets=zero_buckets, layers=run, reference=reference, zero_backward=zero_backward,
        zero_partition=alloc(4 * zero_step_elements(trainable, plan), cuda) if zero else 0,
        zero_at_loss=zero_backward if _head_trained(arch, plan) else 0, gathered_layers=gathered,
        host_offload=host_offload, zero_window=window, zero_reused=reused, nvme=nvme,
    ), plan)  # fmt: skip


def fsdp_state(inv: Inventory, adapters: AdapterPlan, plan: Plan, cuda: bool) -> _State:
    """One rank's state under FSDP2 (``estimator._sharding``): every parameter, gradient and optimizer state sharded
    on dim 0 over the shard group (padded), and the gathered working set (``Fsdp``) added per phase. The gradients
    a layer's backward makes are unsharded until its reduce-scatter, the root group's (lm_head, final norm, a tied
    weight's pending one: ``Fsdp.head_grads`` beyond ``grads_head``'s share) until the backward's end; the
    optimizer (torch AdamW over the sharded DTensors) keeps its state like each shard. Measured on gloo CPU runs (2
    and 4 ranks, LoRA and full; see docs/accuracy.md)."""
    n, L = shard_ranks(plan), inv.arch.num_hidden_layers
    per = param_dtype_bytes(plan)
    base = [
        Held(tensor_weight_bytes(inv, t, plan, False), base_tensor_dim0(t), t.layers, plan.method == "full",
             t.numel, per if not (plan.quantized and t.bnb_quantized) else 0)
        for t in inv
    ]  # fmt: skip
    extra = adapter_held(adapters, plan, per) if plan.adapters else []
    trainable = [(shard_bytes(h.nbytes, h.dim0, n) // h.per, h.per, h.layers) for h in base + extra if h.trainable]
    opt_visible, opt_managed = optimizer_bytes(trainable, plan, cuda)
    grads = _sum_alloc(trainable, cuda)
    unsharded = _trainable_tensors(inv, adapters, plan)
    head, embed, layers, tied = _gradients_by_place(inv, adapters, plan, cuda, _sum_alloc(unsharded, cuda))
    root = [h for t, h in zip(inv, base, strict=True) if is_root_tensor(t)] + [h for h in extra if h.layers == 1]
    host = 0
    if plan.offload == "params":  # CPUOffloadPolicy: each shard and each gradient shard pinned on its own
        host = sum(pinned(shard_bytes(h.nbytes, h.dim0, n), cuda) * h.layers for h in base + extra)
        host += sum(pinned(e * b, cuda) * c for e, b, c in trainable) + opt_visible + opt_managed
    return _State(
        host_offload=host,
        weights=sharded_alloc(base, n, cuda), adapters=sharded_alloc(extra, n, cuda), optimizer=opt_visible,
        optimizer_paged=opt_managed, ddp_buckets=0, trainable=trainable, trainable_bytes=grads, shard_opt=1,
        grads=grads, grads_head=-(-head // n), grads_layers=grads - -(-(head + embed) // n),
        grads_layer=layers // L, tied_pending=tied, layers=L,
        fsdp=fsdp_terms(base + extra, root, n, L, plan, head_grads=head),
        reference=sharded_alloc(base, n, cuda) if reference_copy(plan) else 0,
    )  # fmt: skip


def offload_state(state: _State, plan: Plan) -> _State:
    """FSDP2's ``CPUOffloadPolicy`` (``plan.offload`` ``params``): the sharded parameters, their gradients and the
    optimizer state in host RAM (``fsdp_state`` sizes them there: each parameter shard pinned on its own by
    ``FSDPParam._init_sharded_param``, each gradient shard by ``foreach_reduce``'s non-blocking copy to the CPU,
    torch's allocator rounding each block up to a power of two: ``pinned``; AdamW's state unpinned), the gathered
    working set and the gradients a layer's backward makes staying on the GPU. Modelled, not measured (on the CPU
    it moves nothing: a gloo run bounds it). DeepSpeed's offload: ``zero_offload`` (measured)."""
    if plan.offload == "none" or plan.sharding != "fsdp" or plan.num_gpus == 1:
        return state
    return dataclasses.replace(state, optimizer=0, optimizer_paged=0, weights=0, adapters=0,
                               grads=0, grads_head=0, grads_layers=0, tied_pending=0)  # fmt: skip


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
        elif t.kind == EMBEDDING and t.role != "vision":  # a tower's position embedding: with the tower's
            one = alloc(t.numel * per, cuda)
            embed += one
            if tie and t.role == "embedding":
                tied += one
    head, embed = head + tied, embed - tied
    embed += _vision_grads(inv, adapters, plan, cuda)
    return head, embed, max(grads - head - embed, 0), tied


def tower_backward_grads(inv: Inventory, adapters: AdapterPlan, plan: Plan, state: _State) -> int:
    """Gradients that exist in the vision tower's backward: every one but the token embeddings' (autograd runs the
    tower's backward first: it was recorded after the embedding lookup)."""
    cuda = plan.device == "cuda"
    embeddings = state.grads - state.grads_head - state.grads_layers - _vision_grads(inv, adapters, plan, cuda)
    return state.grads - max(embeddings, 0)


def _vision_grads(inv: Inventory, adapters: AdapterPlan, plan: Plan, cuda: bool) -> int:
    """Gradients of the vision tower (its parameters, or the adapters on its linears): its backward runs after
    every decoder layer's, so they are made at the end, with the embeddings'."""
    tower = inv.arch.vision
    if tower is None or not plan.vision_inputs:
        return 0  # no tower, or it never runs: no gradient
    if plan.method == "full":
        per = param_dtype_bytes(plan)
        return sum(alloc(t.numel * per, cuda) * stepped_layers(tower, t.module, t.layers)
                   for t in inv if t.role == "vision")  # fmt: skip
    adapted = [a for a in adapters.adapted if a.module.startswith(tower.prefixes)]
    return sum(_lora_grads((a,), plan.lora_r, cuda) * stepped_layers(tower, a.module, a.layers) for a in adapted)


# ---------------------------------------------------------------------------------------------- forward


@dataclass(frozen=True)
class _Forward:
    """What the forward pass leaves saved for the backward."""

    layer: int  # one decoder layer's saved tensors (the larger of a dense and an MoE layer)
    stream: int  # one residual-stream tensor, b·s·h
    rope: int  # rotary cos and sin, shared by the layers
    mask: int  # the attention mask (eager's float one, or SDPA's bool one with padding), shared by the layers
    stored: int  # kept until each layer's backward: checkpointed inputs, or every layer's saved tensors
    head_saved: int  # the final norm's saved tensors and a trainable lm_head's input
    vision: int = 0  # the vision tower's saved tensors and pixels, held until the tower's backward (the step's end)
    vision_backward: int = 0  # the tower's backward at its peak (one block's tensors and working gradients)
    pixels: int = 0  # the batch's pixel_values (part of ``vision``), alive through the optimizer step too
    vision_forward: int = (
        0  # the tower's forward at its peak (SigLIP: one checkpointed layer's tensors), over ``vision``
    )
    vision_output: int = 0  # what the model's output keeps of the tower until the loop drops it (LLaVA)
    last_largest: int = -1  # the last layer whose saved tensors are ``layer`` (-1: the last layer)
    cross_forward: int = 0  # Mllama, checkpointed: a cross-attention layer's tensors as its forward makes them
    cross_layer: int = 0  # Mllama with images: a cross-attention layer's saved tensors and its attention's backward
    cross_work: int = 0  # the latter alone: SDPA's gradients of the query and of the repeated keys and values
    cross_features: int = 0  # the image features' gradient, summed over the cross-attention layers gone back

    @property
    def saved(self) -> int:
        return self.stored + self.head_saved + self.vision


EMBEDDING_SCALED_AFTER = ("granite", "granitemoe")
"""Families whose model scales the embedding output outside the embedding module (``inputs_embeds *
embedding_multiplier`` in ``GraniteModel.forward``): with checkpointing, PEFT's ``enable_input_require_grads``
makes the embedding output a leaf that requires grad, the first layer reads the scaled copy, and the leaf stays
alive until the backward reaches it (autograd's AccumulateGrad node holds it). Seen on the CPU grid's live tensors
(Granite and Granite MoE QLoRA with checkpointing: one b·s·h beside the stored layer inputs through the step).
Gemma's scale is inside its embedding module, so the hook's output is the scaled tensor itself."""


def nope_flow(arch: Architecture, plan: Plan, f: _Flow) -> tuple[Architecture, _Flow] | None:
    """Llama 4's layers without rope (``nope_layers``), as their own architecture and dtype flow: no qk-norm (it
    runs on rope layers only) and full causal attention instead of the chunked window, so without padding no mask
    reaches SDPA, which then takes grouped K/V as they are (``enable_gqa``) or, where no fused kernel does (fp32 on
    CUDA), its math path. ``modeling_llama4.py``: ``use_rope = config.no_rope_layers[layer_idx]``; measured on the
    CPU grid (the NoPE layer saves no mask, no repeated K/V and no norm copies). None without such layers."""
    if not arch.nope_layers:
        return None
    nope = replace(arch, qk_norm="none", sliding_window=0, nope_layers=())
    path = attention_path(nope, plan, f.ad, gpu_runtime(plan), f.s)
    return nope, replace(f, path=path, attn=path.implementation)


def layer_sizes(arch: Architecture, plan: Plan, f: _Flow) -> list[int]:
    """``layer_activations`` of every decoder layer, in order: dense or MoE, with or without rope."""
    moe = set(arch.moe_layers)
    nope = nope_flow(arch, plan, f)
    kinds: dict[tuple[bool, bool], int] = {}
    sizes = []
    for i in range(arch.num_hidden_layers):
        key = (i in moe, i in arch.nope_layers)
        if key not in kinds:
            a, g = nope if key[1] and nope is not None else (arch, f)
            kinds[key] = layer_activations(a, g, moe=key[0]) + (4 * f.s if key[1] else 0)  # NoPE: attn_scales
        sizes.append(kinds[key])
    return sizes


def forward_activations(inv: Inventory, adapters: AdapterPlan, plan: Plan, f: _Flow) -> _Forward:
    """Activations the forward pass saves: per layer, and in all.

    Without checkpointing every layer keeps ``layer_activations`` (the first one less, ``first_layer_delta``); with
    transformers' per-layer (non-reentrant) gradient checkpointing each layer keeps only its input, one
    residual-stream tensor. The rotary cos/sin (one row, or one per row with packed position ids) and the attention
    mask are made once and shared by all layers; without checkpointing the mask dies with the forward.
    After the last layer: the final norm's saved tensors, and lm_head's input when lm_head is trained. Exact on the
    CPU grid's live-tensor tracker for llama-style layers (docs/accuracy.md).
    """
    arch = inv.arch
    L = layers_run(arch, plan.vision_inputs)  # Mllama: its cross-attention layers are skipped without images
    crossing = set(arch.cross_attention_layers)
    own = {i: size for i, size in enumerate(layer_sizes(arch, plan, f)) if i not in crossing}
    cross, per_cross, cross_grad, features = 0, 0, 0, 0
    if arch.cross_attention_layers and f.patches:  # Mllama with images: its cross-attention layers run
        from ._memory_mllama import cross_layer_saved, feature_rows

        cross = len(arch.cross_attention_layers)
        per_cross = cross_layer_saved(arch, adapters, plan, f)
        assert arch.vision is not None
        rows = feature_rows(arch.vision, f.patches)
        features = f.ad * rows * arch.hidden_size  # the features' gradient, summed over the cross layers
        # SDPA's backward: the query's gradient and the keys' and values', repeated to the query heads
        cross_grad = f.ad * (f.T + 2 * rows) * arch.num_attention_heads * arch.head_dim
    stream = f.ad * f.T * arch.hidden_size
    # given position ids make cos/sin per row (packed rows; Qwen3-VL's 3-D positions, one set per sample)
    rows = f.b if plan.padding == "packed" or arch.model_type in QWEN3_VL else 1
    rope = 0 if arch.position_embeddings else 2 * rows * f.s * (arch.rotary_dim or arch.head_dim) * f.ad  # cos, sin
    mask = attention_mask_bytes(f)
    if plan.gradient_checkpointing:
        stored = L * stream + rope + mask  # checkpointed layer inputs (+ the shared cos/sin and attention mask)
        if f.frozen_base and arch.model_type in EMBEDDING_SCALED_AFTER:
            stored += stream  # the raw embedding output, a leaf that requires grad, held by its AccumulateGrad
    else:
        stored = sum(own.values()) + cross * per_cross + rope + first_layer_delta(arch, f)
    head_trainable = plan.method == "full" or any(t.role == "lm_head" for t in adapters.saved_modules)
    final_norm = _norm_saved(arch, f, arch.hidden_size, not f.frozen_base)
    held, tower_backward = vision_activations(arch, adapters, plan, f)
    tower_forward = siglip_forward(arch, adapters, plan, f)
    layer = max(own.values())
    return _Forward(
        layer=layer, stream=stream, cross_layer=per_cross + cross_grad if cross else 0,
        cross_work=cross_grad if cross else 0, cross_features=features,
        cross_forward=per_cross if plan.gradient_checkpointing else 0, rope=rope, mask=mask, stored=stored,
        last_largest=max(i for i, size in own.items() if size == layer),
        head_saved=final_norm + (stream if head_trainable else 0), vision=held, vision_backward=tower_backward,
        pixels=pixel_bytes(arch, f.patches), vision_forward=tower_forward,
        vision_output=vision_output(arch, adapters, plan, f),
    )  # fmt: skip


def _tower_input(
    tower: VisionTower,
    f: _Flow,
    adapters: AdapterPlan,
    modules: tuple[str, ...],
    rows: int,
    width: int,
    shared: bool = False,
) -> int:
    """Bytes the tower's linears ``modules`` (e.g. ``blocks.{i}.mlp.gate_proj``), which read one input of ``rows ×
    width``, keep of it, by the decoder's rules (``_linear_inputs``): each adapter's fp32 or dropped-out copy and
    mask, or the input itself once, lora_A's outputs; the input when the base is trained."""
    names = {a.module for a in adapters.adapted}
    adapted = tuple(m for m in modules if f"{tower.module}.{m}" in names)
    return _linear_inputs(replace(f, T=rows, lora=adapted), modules, width, shared)


def vision_block(tower: VisionTower, adapters: AdapterPlan, f: _Flow, patches: int) -> int:
    """One vision block's saved tensors over ``patches`` patches (``Qwen2VLVisionBlock`` /
    ``Qwen2_5_VLVisionBlock``, SDPA per image or frame pair), from the code: the norms' saved tensors (LayerNorm:
    input and statistics; RMSNorm: its fp32 input copy and rsqrt), the linears' inputs as their adapters keep them
    (``_tower_input``), the fused qkv output (3E, kept whole: v is a view of it), the rotated q and k and SDPA's
    output (E each; the rotation's fp32 copies are not saved: its products' backward needs only cos and sin), and
    the MLP's intermediates (Qwen2-VL: fc1's output and quick_gelu's sigmoid; Qwen2.5-VL: gate, up and SiLU's
    output). Without checkpointing, on the CPU grid's tracker: 4.7 % above the two blocks' measured tensors (448²,
    LoRA); the checkpointed (default) path recomputes it in the tower's backward only.
    """
    e, m, n, ad = tower.embed_dim, tower.mlp_width, patches, f.ad
    norm = 2 * ((ad * e + 8) if not tower.gated else (4 * e + 4)) * n
    b = "blocks.{i}."
    linears = _tower_input(tower, f, adapters, (b + "attn.qkv",), n, e)
    linears += _tower_input(tower, f, adapters, (b + "attn.proj",), n, e, shared=True)
    if tower.gated:
        linears += _tower_input(tower, f, adapters, (b + "mlp.gate_proj", b + "mlp.up_proj"), n, e)
        linears += _tower_input(tower, f, adapters, (b + "mlp.down_proj",), n, m)
    else:
        linears += _tower_input(tower, f, adapters, (b + "mlp.fc1",), n, e)
        linears += _tower_input(tower, f, adapters, (b + "mlp.fc2",), n, m)
    attention = (3 + 2 + 1) * n * e * ad
    return norm + linears + attention + (3 if tower.gated else 2) * n * m * ad


def pixel_bytes(arch: Architecture, patches: int) -> int:
    """The processors' fp32 ``pixel_values`` and ``pixel_values_videos`` of the step's ``patches`` (Qwen: × 3·2·14²
    each; SigLIP: each image's 3 × image_size² values), in the batch from before the forward to after the optimizer
    step."""
    tower = arch.vision
    if tower is not None and tower.kind == "idefics3":
        from ._vision_idefics import idefics_pixel_bytes

        return idefics_pixel_bytes(tower, patches)
    return 4 * pixel_values(tower, patches) if tower is not None else 0


def vision_activations(arch: Architecture, adapters: AdapterPlan, plan: Plan, f: _Flow) -> tuple[int, int]:
    """(held, backward) bytes of the vision tower of a step with images or video (0, 0 without).

    Held from the tower's forward to its backward at the very end of the step, so at every phase's peak: the
    processors' fp32 ``pixel_values`` and ``pixel_values_videos`` (``pixel_bytes``; full fine-tuning in 16 bits: also
    the Conv3d patch embedding's 16-bit copy of them, kept for its weight's gradient), the rotary cos and sin (fp32,
    patches × head_dim each), the blocks' saved tensors (with checkpointing each block's input, patches × E;
    without, ``vision_block``; Qwen2.5-VL: also the patch embeddings before their window reordering, a leaf autograd
    keeps), and the merger's: ``ln_q``'s saved input (the last block's output) and statistics, each merger linear's
    input as its adapter keeps it (``_tower_input``, over patches / merge² rows of merge²·E), the GELU's input, and
    the features it hands the language model (rows × its width). Every term is a number of patches times a width, so
    the images' run of the tower and the videos' run (``get_image_features``, then ``get_video_features``: a video's
    patches are an image's, its frame pairs attended one at a time as images are) add up. The tower runs in the
    decoder's activation dtype (fp32 under QLoRA's upcast norms). Its backward comes after the decoder's, the
    merger's tensors freed by then: one block's saved tensors (recomputed under checkpointing) and the block's
    working gradients (``tower_backward_work``), over the largest run's patches; the videos' run (recorded last)
    goes back first, while the images' run is all held: with both, exact when the videos' run is the larger, an
    upper bound otherwise (the images' backward comes when the videos' tensors are freed). transformers'
    ``enable_input_require_grads`` hooks the tower's patch embedding too, so the blocks keep their inputs whether the
    tower is adapted or not. Measured on the CPU grid (Qwen2-VL and Qwen2.5-VL, LoRA, QLoRA and full, 224² to 448²
    images, a Qwen2-VL video: docs/accuracy.md).
    """
    tower, p = arch.vision, f.patches
    if tower is None or not p:
        return 0, 0
    if tower.kind == "siglip":
        return siglip_activations(arch, tower, adapters, plan, f)
    if tower.kind == "idefics3":
        from ._vision_idefics import idefics_activations

        return idefics_activations(arch, tower, adapters, plan, f)
    if tower.kind == "pixtral":
        from ._memory_pixtral import pixtral_activations

        return pixtral_activations(tower, adapters, plan, f)
    if tower.kind == "mllama":
        from ._memory_mllama import mllama_activations

        return mllama_activations(arch, tower, adapters, plan, f)
    if tower.kind == "clip":
        from ._vision_clip import clip_activations  # its terms build on this module's

        return clip_activations(arch, tower, adapters, plan, f)
    if tower.kind == "qwen3":
        from ._vision_qwen3 import qwen3_activations  # its terms build on this module's

        return qwen3_activations(arch, tower, adapters, plan, f)
    ad, e = f.ad, tower.embed_dim
    pixels = pixel_bytes(arch, p)
    if plan.method == "full" and param_dtype_bytes(plan) != 4:  # a trained Conv3d keeps its cast input
        pixels += param_dtype_bytes(plan) * p * tower.patch_features
    rope = 2 * 4 * p * tower.head_dim
    block = vision_block(tower, adapters, f, p)
    blocks = tower.depth * p * e * ad if plan.gradient_checkpointing else tower.depth * block
    merger = _merger_saved(tower, adapters, f, p)
    window = p * e * ad if tower.gated else 0  # Qwen2.5-VL's window-ordered copy of the patch embeddings
    # in the tower's backward the merger's tensors are freed before the blocks': the last block's recomputed
    # tensors and working gradients replace them
    run = f.tower_run or p
    work = vision_block(tower, adapters, f, run) + tower_backward_work(tower, plan, f, run)
    return pixels + rope + blocks + merger + window, work - _merger_saved(tower, adapters, f, run)


def _merger_saved(tower: VisionTower, adapters: AdapterPlan, f: _Flow, patches: int) -> int:
    """The merger's saved tensors over ``patches`` patches (see ``vision_activations``)."""
    ad, e = f.ad, tower.embed_dim
    rows, wide = patches // tower.spatial_merge_size**2, e * tower.spatial_merge_size**2
    ln = patches * e * ad + (8 * patches if not tower.gated else 4 * patches * e + 4 * patches)
    linears = _tower_input(tower, f, adapters, ("merger.mlp.0",), rows, wide)
    linears += _tower_input(tower, f, adapters, ("merger.mlp.2",), rows, wide)
    return ln + linears + rows * wide * ad + rows * tower.out_hidden_size * ad


def siglip_block(tower: VisionTower, adapters: AdapterPlan, f: _Flow, patches: int) -> int:
    """One SigLIP encoder layer's saved tensors over ``patches`` patches (``SiglipEncoderLayer``, the images as one
    batch, SDPA: eager is refused), from the code: two LayerNorms (input and fp32 mean and rstd each), the linears'
    inputs as their adapters keep them (``_tower_input``: q/k/v_proj share layer_norm1's output, out_proj reads
    SDPA's output, which SDPA keeps, fc1 layer_norm2's, fc2 the GELU's output), SDPA's q, k, v, output and fp32
    log-sum-exp, and fc1's output, which the tanh GELU saves. The tower runs no mask (every patch attends to every
    patch of its image)."""
    e, m, n, ad, heads = tower.embed_dim, tower.mlp_width, patches, f.ad, tower.num_heads
    norm = 2 * (ad * e + 8) * n
    b = "encoder.layers.{i}."
    qkv = tuple(b + f"self_attn.{x}" for x in ("q_proj", "k_proj", "v_proj"))
    linears = _tower_input(tower, f, adapters, qkv, n, e)
    linears += _tower_input(tower, f, adapters, (b + "self_attn.out_proj",), n, e, shared=True)
    linears += _tower_input(tower, f, adapters, (b + "mlp.fc1",), n, e)
    linears += _tower_input(tower, f, adapters, (b + "mlp.fc2",), n, m)
    attention = 4 * n * e * ad + 4 * n * heads
    return norm + linears + attention + n * m * ad


def siglip_activations(
    arch: Architecture, tower: VisionTower, adapters: AdapterPlan, plan: Plan, f: _Flow
) -> tuple[int, int]:
    """(held, backward) bytes of Gemma 3's SigLIP tower and projector on the step's images (``vision_activations``
    for Qwen's).

    Held from the tower's forward to its backward: the processor's fp32 ``pixel_values`` (full fine-tuning in 16
    bits: also the Conv2d's 16-bit copy of them, kept for its weight's gradient), the encoder layers' saved tensors
    (with checkpointing each layer's input, patches × E; without, ``siglip_block``), ``post_layernorm``'s input and
    statistics, the projector's: the (images, E, side, side) copy the average pool keeps (the transposed output
    reshaped), the RMSNorm's fp32 input and rsqrt over the pooled tokens (and its fp32 output for the trained
    weight), the projection's input when its weight is trained, and the image features it hands the language model
    (tokens × the text width); and the tower's output (``last_hidden_state``, patches × E), which the model's
    output keeps through its forward (an upper bound for the phases after it). The tower runs in the decoder's
    activation dtype. Its backward, after the decoder's, frees the projector's tensors: one layer's saved tensors
    (recomputed under checkpointing) and the layer's working gradients (``tower_backward_work``).
    """
    p, ad, e = f.patches, f.ad, tower.embed_dim
    tokens = p // tower.spatial_merge_size**2
    pixels = pixel_bytes(arch, p)
    if plan.method == "full" and param_dtype_bytes(plan) != 4:  # a trained Conv2d keeps its cast input
        pixels += param_dtype_bytes(plan) * pixel_values(tower, p)
    block = siglip_block(tower, adapters, f, p)
    layers = tower.depth * p * e * ad if plan.gradient_checkpointing else tower.depth * block
    post_norm = p * e * ad + 8 * p
    trained = plan.method == "full"
    rms = tokens * (4 * e + 4) + (4 * tokens * e if trained else 0)
    projector = p * e * ad + rms + (tokens * e * ad if trained else 0) + tokens * tower.out_hidden_size * ad
    output = p * e * ad
    work = siglip_backward_work(tower, plan, f, p)
    recomputed = block if plan.gradient_checkpointing else 0  # without, the layer's tensors are in ``layers``
    return pixels + layers + post_norm + projector + output, recomputed + work - post_norm - projector - output


def vision_output(arch: Architecture, adapters: AdapterPlan, plan: Plan, f: _Flow) -> int:
    """What the model's output keeps of the tower through the forward's end, freed when the loop drops the output
    before the backward (LLaVA's ``image_outputs``: ``clip_output``; 0 for the other towers, counted in ``vision``)."""
    tower = arch.vision
    if tower is not None and tower.kind == "mllama" and f.patches:
        from ._memory_mllama import mllama_output

        return mllama_output(tower, plan, f)
    if tower is not None and tower.kind == "qwen3" and f.patches:
        from ._vision_qwen3 import qwen3_output

        return qwen3_output(tower, f)
    if tower is None or tower.kind != "clip" or not f.patches:
        return 0
    from ._vision_clip import clip_output  # its terms build on this module's

    return clip_output(tower, adapters, plan, f)


def siglip_forward(arch: Architecture, adapters: AdapterPlan, plan: Plan, f: _Flow) -> int:
    """A SigLIP tower's forward at its peak, above what it holds for the backward: with checkpointing, the layer
    that runs makes the tensors ``siglip_block`` counts and frees them as it goes (an upper bound: all of them at
    once); without, they are held already. Runs before the decoder, so nothing of the decoder's is live (0 for
    Qwen's towers, whose forward never peaked on the CPU grid)."""
    tower = arch.vision
    if tower is not None and tower.kind == "idefics3" and f.patches:
        from ._vision_idefics import idefics_forward

        return idefics_forward(tower, adapters, plan, f)
    if tower is not None and tower.kind == "pixtral":
        from ._memory_pixtral import pixtral_forward

        return pixtral_forward(tower, adapters, plan, f)
    if tower is not None and tower.kind == "clip":
        from ._vision_clip import clip_forward  # its terms build on this module's

        return clip_forward(tower, adapters, plan, f)
    if tower is None or tower.kind != "siglip" or not f.patches or not plan.gradient_checkpointing:
        return 0
    return siglip_block(tower, adapters, f, f.patches)


def siglip_backward_work(tower: VisionTower, plan: Plan, f: _Flow, patches: int) -> int:
    """A SigLIP layer's backward working tensors at the MLP's backward: the stream's gradient (E wide) and,
    full fine-tuning, the intermediate's; LoRA/QLoRA, the intermediate's gradient from the frozen fc2 (activation
    dtype) and from its adapter (adapter dtype), plus the adapter's gradient cast back when the dtypes differ
    (autograd sums them into the first buffer; with one dtype there is no cast: two, not ``tower_backward_work``'s
    three), and dropout's fp32 transient."""
    n, m = patches, tower.mlp_width
    stream = f.ad * n * tower.embed_dim
    if plan.method == "full":
        return stream + f.ad * n * m
    work = stream + (f.ad + f.ab + (f.ad if f.ad != f.ab else 0)) * n * m
    if f.dropout:
        work += f.ab * n * m
    return work


def tower_backward_work(tower: VisionTower, plan: Plan, f: _Flow, patches: int) -> int:
    """A vision block's backward working tensors, as the CPU grid's tracker sees them in the MLP's backward (the
    tower's peak): the gradient of the block's output (the stream, E wide) and, full fine-tuning, of its
    intermediate; LoRA/QLoRA, three gradients of the MLP's intermediate (the frozen base's in the activation dtype,
    the adapter's in its own, their sum) and dropout's fp32 transient. (The decoder's rule, ``_backward_work``,
    counts less: its peak comes at another moment of the layer's backward.)"""
    n, m = patches, tower.mlp_width
    stream = f.ad * n * tower.embed_dim
    if plan.method == "full":
        return stream + f.ad * n * m
    work = stream + (2 * f.ad + f.ab) * n * m
    if f.dropout:
        work += f.ab * n * m
    return work


# ---------------------------------------------------------------------------------------------- logits and loss


@dataclass(frozen=True)
class HeadLoss:
    """The head's and the loss's tensors at their largest moment in the forward and in the loss's backward.

    ``kept``: what the training loop keeps from the step's output through every phase (a plain loop's logits).
    """

    elements: int  # b·s·V
    forward: dict[str, int]  # name -> bytes (names: _HEAD_PARTS)
    loss_backward: dict[str, int]
    kept: int = 0
    block: int = 0  # the largest single transient block of the head (the caching allocator keeps one such)

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
        """The head's largest transient block: one fp32 b·s·V tensor, or the chunked loss's tile buffer."""
        return self.block or 4 * self.elements


_HEAD_PARTS = {  # what each part of HeadLoss counts, for the terms
    "lm_head_input": "the final norm's output, live while lm_head runs (b·s·h)",
    "logits": "lm_head output (b·s·V)",
    "logits_fp32": "transformers' logits.float() copy (b·s·V fp32; none when the logits are fp32 already)",
    "log_softmax": "the log-softmax cross-entropy saves for its backward (b·s·V fp32)",
    "grad_log_softmax": "the nll_loss backward's gradient (b·s·V fp32)",
    "grad_logits": "the log_softmax backward's gradient of the logits (b·s·V fp32)",
    "softcap_output": "the final-logit soft-capping's tanh output (b·s·V)",
    "scaled_logits": "the scaled logits (Cohere's logit_scale, Granite's logits_scaling), made next to the output",
    "logits_kept": "a plain loop's previous output, kept until the next forward replaces it",
    "chosen_copy": "ORPO's NLL term: the chosen half's shifted contiguous() copy of the logits (b·s·V / 2 rows)",
    "nll_log_softmax": "ORPO's NLL term: the log-softmax CrossEntropyLoss saves of the chosen half",
    "row_log_softmax": "selective_log_softmax on 16-bit logits: each row's log-softmax, saved for backward",
    "chunk_buffer": "TRL's chunked loss: the projection tile buffer (min(N, 4096) × 32768 in the compute dtype)",
    "chunk_tiles": "TRL's chunked loss: one tile's temporaries (the CPU fallback's torch ops; none in CUDA's Triton)",
    "chunk_saved": "TRL's chunked loss: the flattened hidden states, targets and per-token statistics it keeps",
    "chunk_grad_hidden": "TRL's chunked loss: the fp32 gradient of the hidden states it accumulates",
    "score": "a reward model's score output (b·s·1)",
    "norm_input": "a reward model: the final norm's input (the last residual sum, b·s·h)",
    "norm_fp32": "a reward model: the final norm's normalized fp32 tensor (b·s·h)",
    "norm_cast": "a reward model: the final norm's cast back to the stream's dtype (b·s·h; saved when it is trained)",
    "embedding_output": "a reward model: the embedding output the base model keeps until it returns (b·s·h)",
    "chunk_grad_weight": "TRL's chunked loss: the fp32 gradient of a trained lm_head it accumulates",
}

CHUNK_TOKENS = 4096  # trl.kernels.chunked_logprob.TOKEN_CHUNK_SIZE
CHUNK_VOCAB = 32768  # trl.trainer.utils._CHUNKED_LOGPROB_CHUNK_SIZE


def head_dtype_bytes(plan: Plan) -> int:
    """Bytes per element of lm_head's output: fp32 after ``prepare_model_for_kbit_training`` or in an fp32 model."""
    return 4 if plan.upcast_non_quantized or plan.dtype == "float32" and not plan.mixed_precision else 2


def reference_work(fwd: _Forward) -> int:
    """The reference forward's own tensors while the policy's saved activations wait for the backward: under
    ``torch.no_grad`` nothing is saved, so about two residual-stream tensors (a layer's input and output) live at
    once; its fused head's tile buffer and temporaries are counted with the head's forward. Measured on the CPU
    grid (DPO cases, docs/accuracy.md)."""
    return 2 * fwd.stream


def head_loss(arch: Architecture, plan: Plan, f: _Flow) -> HeadLoss:
    """The logits and cross-entropy transient: the one figure behind the ``logits`` component, its terms and notes.

    Forward: lm_head's output (in fp32 after ``prepare_model_for_kbit_training`` or in an fp32 model, else 16-bit)
    while its input is live, then transformers' ``ForCausalLMLoss`` upcasts it (``logits.float()``, a copy unless
    the logits are fp32 already) and calls ``cross_entropy``, which saves its fp32 log-softmax. Loss backward: the
    forward's logits are dropped, and the nll_loss and log_softmax backwards make two more fp32 b·s·V tensors (12 B
    × b·s·V in all: the head's peak). Gemma 2's final-logit soft-capping keeps its tanh output in both. A plain
    training loop keeps the output's logits through the whole step (``kept``; measured on the CPU: exact). Measured
    on the CPU grid's live-tensor tracker and the H200 runs; ignores the 16-bit cast of the logits' gradient back
    (made after the fp32 ones are freed). ``loss: chunked`` and TRL's DPO, KTO and GRPO: ``chunked_head``; ORPO,
    SimPO: ``pair_logits_head``; reward: ``score_head``.
    """
    ld = head_dtype_bytes(plan)
    n = f.T * arch.vocab_size
    if fused_head(plan):
        return chunked_head(arch, plan, f, ld)
    if plan.objective in ("orpo", "simpo"):
        return pair_logits_head(arch, plan, f, ld)
    if plan.objective == "reward":
        return score_head(arch, plan, f)
    softcap = ld * n if arch.final_logit_softcapping else 0
    kept = ld * n if plan.training_loop == "plain" else 0
    matmul = {"lm_head_input": f.ad * f.T * arch.hidden_size, "logits": ld * n}
    if arch.logits_scaled:  # Cohere's logit_scale, Granite's logits_scaling: the scaled copy next to the output
        matmul["scaled_logits"] = ld * n
    loss = {"logits": ld * n, "logits_fp32": 0 if ld == 4 else 4 * n, "log_softmax": 4 * n, "softcap_output": softcap}
    backward = {"log_softmax": 4 * n, "grad_log_softmax": 4 * n, "grad_logits": 4 * n, "softcap_output": softcap}
    forward = matmul if sum(matmul.values()) > sum(loss.values()) else loss
    if kept:
        forward, backward = forward | {"logits_kept": kept}, backward | {"logits_kept": kept}
    return HeadLoss(elements=n, forward=forward, loss_backward=backward, kept=kept)


def chunked_head(arch: Architecture, plan: Plan, f: _Flow, ld: int) -> HeadLoss:
    """TRL's fused LM head (``trl.trainer.utils.add_fused_lm_head`` + ``trl.kernels.ChunkedLogProbFunction``, as
    ``SFTTrainer`` runs it): the logits are made one tile of ``min(N, 4096)`` tokens × 32,768 vocabulary entries at
    a time into one buffer and folded into per-token statistics, so the b·s·V logits never exist whole.

    N = b·(s−1) shifted positions. Kept for backward: the flattened hidden states (a copy: CUDA's Triton path
    indexes the valid positions, the CPU fallback reshapes a strided slice when b > 1), int64 targets, log-Z and
    entropy. Forward: the tile buffer, seven fp32 statistics per token and, on the CPU fallback, one tile's torch
    temporaries (3 fp32 + 1 bool per element at most). Backward: the buffer again, an fp32 gradient of the hidden
    states (and of a trained lm_head), and on the CPU one tile's temporaries (7 fp32 + 1 bool per element:
    ``_backward_tile``). Triton folds each tile in place. CPU: exact on the CPU grid (docs/accuracy.md); CUDA:
    measured on an H200 (Llama-3.2-1B LoRA and QLoRA, Llama-3.1-8B QLoRA at 2 × 2048: +0.4 … +1.3 %).
    """
    h, V = arch.hidden_size, arch.vocab_size
    N = f.b * (f.s - 1)
    tile = min(N, CHUNK_TOKENS) * min(V, CHUNK_VOCAB)
    cd = 2 if plan.method == "full" and plan.mixed_precision else f.ad
    buffer = min(N, CHUNK_TOKENS) * CHUNK_VOCAB * cd
    copy = f.ad * N * h if f.cuda or f.b > 1 else 0
    saved = copy + (8 + 4 + 4) * N + 10 * N  # hidden copy, targets, log-Z, entropy; the outputs (fp32, fp32, bool x2)
    head_trained = plan.method == "full" or "lm_head" in plan.modules_to_save
    fwd_tiles = 0 if f.cuda else 13 * tile
    bwd_tiles = 0 if f.cuda else max(29 * tile, _fp32_addmm(arch, plan, f, ld, cd, head_trained))
    forward = {"chunk_buffer": buffer, "chunk_tiles": fwd_tiles, "chunk_saved": saved + 7 * 4 * N}
    backward = {
        "chunk_buffer": buffer, "chunk_tiles": bwd_tiles, "chunk_saved": saved + 4 * N,
        "chunk_grad_hidden": 4 * N * h, "chunk_grad_weight": 4 * V * h if head_trained else 0,
    }  # fmt: skip
    kept = 10 * N if plan.training_loop == "plain" else 0  # the output's per-token fields
    if kept:
        forward, backward = forward | {"logits_kept": kept}, backward | {"logits_kept": kept}
    return HeadLoss(elements=f.T * V, forward=forward, loss_backward=backward, kept=kept, block=buffer)


def _fp32_addmm(arch: Architecture, plan: Plan, f: _Flow, ld: int, cd: int, head_trained: bool) -> int:
    """The CPU fallback's fp32 accumulation in the chunked head's backward (``_addmm_fp32``: ``acc.addmm_(a.float(),
    b.float())``, after the tile's temporaries are freed): fp32 copies of the tile's gradient and of lm_head's
    vocabulary chunk (``min(V, 32768) × h``) for the hidden states' gradient, of the tile and the hidden chunk for
    a trained lm_head's. ``.float()`` copies only what is not fp32 already. CUDA adds in fp32 without copies
    (``torch.addmm(..., out_dtype=torch.float32)``). Read from trl's ``kernels/chunked_logprob.py``; traced at real
    size (GRPO with LoRA on Llama-3.1-8B: the 512 MiB weight chunk's copy sets the step's peak)."""
    h, n = arch.hidden_size, min(f.b * (f.s - 1), CHUNK_TOKENS)
    tile = 0 if cd == 4 else 4 * n * min(arch.vocab_size, CHUNK_VOCAB)
    hidden_grad = tile + (0 if ld == 4 else 4 * min(arch.vocab_size, CHUNK_VOCAB) * h)
    weight_grad = tile + (0 if cd == 4 else 4 * n * h) if head_trained else 0
    return max(hidden_grad, weight_grad)


def pair_logits_head(arch: Architecture, plan: Plan, f: _Flow, ld: int) -> HeadLoss:
    """ORPO and SimPO as TRL's experimental ORPO/CPO trainers run them (``concatenated_forward``): the model's full
    logits over the 2·b rows; ORPO's NLL term on the chosen half: its shifted ``contiguous()`` copy and the
    log-softmax ``CrossEntropyLoss`` saves of it (SimPO, CPO with ``cpo_alpha=0``, has none); ``selective_log_softmax``
    over every row (16-bit logits: a per-row log-softmax each saved for backward, b·s·V in all; fp32: a per-row
    logsumexp, nothing large). Loss backward: 16-bit, the gradient of the logits once the rows' log-softmaxes are
    freed; fp32, three logits-sized gradients
    at once (the gather's and the logsumexp's branches, each scattered into a zero tensor of the shifted logits, and
    their sum) while ORPO's chosen copy is still held. Measured on the CPU grid (Llama tiny, LoRA and QLoRA, with and
    without checkpointing, trl 1.16's experimental trainers).
    """
    n = f.T * arch.vocab_size
    nll = plan.objective == "orpo"
    copy = ld * n // 2 if nll else 0
    forward = {"lm_head_input": f.ad * f.T * arch.hidden_size, "logits": ld * n, "chosen_copy": copy,
               "nll_log_softmax": copy, "row_log_softmax": 0 if ld == 4 else ld * n}  # fmt: skip
    if ld == 4:
        backward = {"lm_head_input": forward["lm_head_input"], "logits": ld * n, "chosen_copy": copy,
                    "grad_logits": 3 * ld * n}  # fmt: skip
    else:  # each row's saved log-softmax is freed by its own backward, before the logits' gradient is whole
        backward = forward | {"row_log_softmax": 0, "grad_logits": ld * n}
    kept = ld * n if plan.training_loop == "plain" else 0
    if kept:
        forward, backward = forward | {"logits_kept": kept}, backward | {"logits_kept": kept}
    return HeadLoss(elements=n, forward=forward, loss_backward=backward, kept=kept)


def score_head(arch: Architecture, plan: Plan, f: _Flow) -> HeadLoss:
    """A reward model (``AutoModelForSequenceClassification``, as TRL's ``RewardTrainer`` loads it): the ``score``
    linear maps every position's hidden state to one logit (b·s·1: tiny), the last non-pad token's is pooled and
    ``-logsigmoid(chosen - rejected)`` is the loss; no b·s·V logits. With the head this small, the step's largest
    moments around it are the final norm's (``LlamaRMSNorm`` in Python), counted here beyond the saved tensors:

    Forward, the norm's last op (``weight * x.to(input_dtype)``) inside the base model's forward: its input (the
    last residual sum, b·s·h), the normalized fp32 tensor, the cast back (unless the norm's weight is trained, when
    it is saved anyway) and the output; without checkpointing also the embedding output, which the base model's
    ``inputs_embeds`` keeps until it returns (with checkpointing it is the first layer's stored input already).
    The score's input (the norm's output) is counted with the saved tensors when the score is trained (full, or
    PEFT's trainable copy). Loss backward: the score's gradient (b·s·1). The final norm's backward that follows is
    the same as under an LM head and is counted once, as the layers' backward's first moment
    (``final_norm_backward``: six fp32 b·s·h beyond the layers' stored tensors, the score's saved input and the
    norm's saved cast freed by then). Measured on the CPU grid (Llama tiny: LoRA, QLoRA and full, with and without
    checkpointing: full without checkpointing peaks in the norm's backward, -0.03 %).
    """
    T, h = f.T, arch.hidden_size
    stream = f.ad * T * h
    norm_trained = not f.frozen_base
    embeds = 0 if plan.gradient_checkpointing else stream
    forward = {"norm_input": stream, "norm_fp32": 4 * T * h, "norm_cast": 0 if norm_trained else stream,
               "embedding_output": embeds, "score": f.ad * T}  # fmt: skip
    backward = {"score": f.ad * T}
    return HeadLoss(elements=T, forward=forward, loss_backward=backward)


# ---------------------------------------------------------------------------------------------- layer backward


@dataclass(frozen=True)
class _Backward:
    """The backward below the head: the final norm's, then the decoder layers', at their two ends."""

    last: int  # in the last layer's backward: every layer's activations still saved
    first: int  # in the first layer's: every other layer's gradients made
    attention: bool  # the peak is in the attention's backward (b·a·s² probabilities), not the MLP's
    gathered: tuple[int, int] = (0, 0)  # FSDP's gathered parameters at the last and the first end
    held: tuple[int, int] = (0, 0)  # FSDP's gradient buffers there beyond the gradients a single GPU holds
    norm: int = 0  # in the final norm's backward (``final_norm_backward``), before any layer's
    cross: int = 0  # Mllama with images: in the lowest cross-attention layer's attention backward
    cross_grads: int = 0  # the gradients of the layers above it, made by then

    @property
    def peak(self) -> int:
        return max(self.last, self.first, self.norm, self.cross)

    @property
    def moment(self) -> str:
        """Where the peak is: ``norm`` (the final norm's backward), ``last`` or ``first`` (a layer's), ``cross``
        (Mllama's lowest cross-attention layer's)."""
        if self.norm > max(self.last, self.first, self.cross):
            return "norm"
        if self.cross > max(self.last, self.first):
            return "cross"
        return "first" if self.first >= self.last else "last"


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
    if state.fsdp is not None:
        return fsdp_layer_backward(inv, plan, f, state, fwd, state.fsdp, i_eff)
    work, attention = _backward_work(inv, plan, f, state, i_eff)
    nope = nope_flow(arch, plan, f)
    if nope is not None:  # Llama 4's NoPE layers: their own attention kernel (on CUDA, fp32: SDPA's math path)
        nope_work, nope_attention = _backward_work(inv, plan, nope[1], state, i_eff)
        if nope_work > work:
            work, attention = nope_work, nope_attention
    before = state.static + state.grads_head + fwd.stream + fwd.vision  # the stream's gradient, the tower's tensors
    other_layers = state.other_layers_grads
    last_g, first_g = state.gathered("backward_last"), state.gathered("backward_first")
    cross, cross_grads = arch.cross_attention_layers if fwd.cross_layer else (), 0
    last_cross = arch.num_hidden_layers - 1 in cross  # Mllama's last layer may be a cross-attention layer
    last_layer = fwd.cross_layer if last_cross else fwd.layer
    if plan.gradient_checkpointing:
        last = before + fwd.stored + last_layer + work
        L = arch.num_hidden_layers
        after = sum(1 for i in range(fwd.last_largest + 1, L) if i not in arch.cross_attention_layers)
        if after and not last_cross:
            # the largest layers end before the last (Llama 4: an MoE layer with rope; its last layer has no rope,
            # no qk-norm and no chunked mask): their backward comes once the later layers' inputs are freed and
            # their gradients made (CPU grid: the tiny Llama 4 peaks in layer 1 of 4)
            last += after * (other_layers // (L - 1) - fwd.stream)
        first = before + other_layers + fwd.stream + fwd.rope + fwd.mask + fwd.layer + work
    else:
        work += fwd.stream
        last = before + fwd.stored + work + (fwd.cross_work if last_cross else 0)
        first = before + other_layers + fwd.layer + fwd.rope + work
    in_cross = 0
    if cross:  # the lowest cross-attention layer's backward, the layers above it done, those below it still kept
        low = cross[0]
        cross_grads = (arch.num_hidden_layers - 1 - low) * state.grads_layer
        below = (low + 1) * fwd.stream + fwd.rope + fwd.mask if plan.gradient_checkpointing else (
            low * fwd.layer + first_layer_delta(arch, f) + fwd.rope
        )  # fmt: skip
        above = fwd.cross_features if len(cross) > 1 else 0  # made by the cross-attention layers above it
        in_cross = before + cross_grads + below + fwd.cross_layer + above + work + first_g
    norm = state.static + state.grads_head + fwd.vision + fwd.stored + final_norm_backward(inv.arch, f) + last_g
    return _Backward(
        last=last + last_g, first=first + first_g, attention=attention, gathered=(last_g, first_g), norm=norm,
        cross=in_cross, cross_grads=cross_grads,
    )  # fmt: skip


def fsdp_layer_backward(
    inv: Inventory, plan: Plan, f: _Flow, state: _State, fwd: _Forward, fs: Fsdp, i_eff: int
) -> _Backward:
    """The decoder layers' backward on one FSDP2 rank: the single-GPU ends (``layer_backward``) with what FSDP2
    holds there, derived from torch's ``_fully_shard`` (``_fsdp_param_group.py``, ``_fsdp_collectives.py``) and
    the live storages of the gloo ranks at their peaks (full fine-tuning, 2 and 4 ranks, both strategies):

    * the root group's gradients (lm_head, the final norm, a tied weight's pending one) unsharded: the root reduces
      only in its own ``post_backward``, at the end of the backward (``Fsdp.head_grads``);
    * the layer's gathered parameters and the next one's prefetched all-gather output (``Fsdp.gathered_at``);
    * the reduce-scatter input of the layer reduced last, one layer's gradients flat (``Fsdp.reduce_pending``),
      beside every layer's reduced gradient shard (``other_layers_grads``);
    * full fine-tuning of a dense layer: the layer's own backward at its two moments, the MLP's (the down
      projection's weight gradient and the intermediate's gradients, ``_mlp_backward_work``, over the layer's
      saved tensors) and the end of the layer's (every gradient of the layer, unsharded until its
      ``post_backward``, and its input norm's backward, counted as the final norm's ``final_norm_backward``, with
      the layer's saved tensors freed by then). The single-GPU term adds the layer's gradients over its saved
      tensors (they are not live together: 4 % over on the gloo ranks);
    * under checkpointing with an fp32 stream, RMSNorm's fp32 copy of the recomputed layer's input is that input
      (``to(float32)`` returns it), already stored as the checkpoint's input: counted once (a LayerNorm's saved
      input is the stored one too, in any dtype: still counted twice, not measured here; OLMo 2/3 normalize the
      blocks' outputs, no input copy to share).

    The per-layer terms are linear in the layer's index (one more stored input, one fewer reduced shard per layer
    down), so beyond the two ends the peak of the layers in between is at the second (``index`` 1) or the
    next-to-last (``L - 2``), which hold both the prefetched all-gather output and a pending reduce-scatter input.
    Measured on the gloo runs (docs/accuracy.md)."""
    arch, L, T, h = inv.arch, state.layers, f.T, inv.arch.hidden_size
    recomputed = fwd.layer
    if plan.gradient_checkpointing and rms_keeps_input(arch, f):
        recomputed -= fwd.stream  # the input norm's fp32 copy is the stored input itself
    layer_end = None
    if plan.method == "full" and not (arch.is_moe and not arch.dense_layers):
        layer_end = state.grads_layer + max(final_norm_backward(arch, f), f.ad * T * h) - recomputed
    work, attention = _backward_work(inv, plan, f, state, i_eff, layer_end=layer_end)
    head = state.grads_head + fs.head_grads
    before = state.static + head + fwd.stream + fwd.vision  # the stream's gradient, the tower's tensors
    if plan.gradient_checkpointing:
        last = before + fwd.stored + recomputed + work
        first = before + state.other_layers_grads + fwd.stream + fwd.rope + fwd.mask + recomputed + work
        stored_one = fwd.stream  # one layer's checkpointed input
    else:
        work += fwd.stream
        last = before + fwd.stored + work
        first = before + state.other_layers_grads + fwd.layer + fwd.rope + work
        stored_one = fwd.layer
    shard_one = state.grads_layers // L  # one layer's reduced gradient shard
    ends = {  # (bytes, gathered, gradient buffers beyond the single-GPU count) at the last and the first layer
        "last": (last + fs.gathered_at(L - 1), fs.gathered_at(L - 1), fs.head_grads),
        "first": (first + fs.gathered_at(0) + fs.reduce_pending(0), fs.gathered_at(0),
                  fs.head_grads + fs.reduce_pending(0)),
    }  # fmt: skip
    if L >= 3:  # the layers in between, at their two ends
        held = fs.head_grads + fs.reduce_pending(L - 2) + shard_one
        inner_last = last - stored_one + shard_one + fs.gathered_at(L - 2) + fs.reduce_pending(L - 2)
        if inner_last > ends["last"][0]:
            ends["last"] = (inner_last, fs.gathered_at(L - 2), held)
        held = fs.head_grads + fs.reduce_pending(1) - shard_one
        inner_first = first + stored_one - shard_one + fs.gathered_at(1) + fs.reduce_pending(1)
        if inner_first > ends["first"][0]:
            ends["first"] = (inner_first, fs.gathered_at(1), held)
    # the final norm's backward: lm_head's gradient made, the last layer's all-gather prefetched by the root's hook
    norm = state.static + head + fwd.vision + fwd.stored + final_norm_backward(arch, f) + fs.gathered("loss_backward")
    return _Backward(
        last=ends["last"][0], first=ends["first"][0], attention=attention,
        gathered=(ends["last"][1], ends["first"][1]), norm=norm, held=(ends["last"][2], ends["first"][2]),
    )  # fmt: skip


def fsdp_copy_out(plan: Plan, state: _State, fwd: _Forward) -> tuple[int, int]:
    """FSDP2's forward at a layer's copy-out (bytes, and of them gathered), the larger of the first layer's (the
    root's flat all-gather output still held: ``Fsdp.copy_out_at``; the embedding output and the rotary tensors
    made) and the last layer's (every earlier layer's stored tensors); (0, 0) without FSDP. Measured: the
    forward's peak of the gloo full fine-tunes, exact less the batch's ids."""
    fs = state.fsdp
    if fs is None:
        return 0, 0
    L = state.layers
    first = (state.static + fwd.stream + fwd.rope + fwd.mask + fwd.vision + fs.copy_out_at(0), fs.copy_out_at(0))
    before = fwd.stored if plan.gradient_checkpointing else fwd.stored - fwd.layer
    last = (state.static + before + fwd.vision + fs.copy_out_at(L - 1), fs.copy_out_at(L - 1))
    return max(first, last)


def final_norm_backward(arch: Architecture, f: _Flow) -> int:
    """The final RMSNorm's backward, the first below lm_head's (bytes beyond the layers' stored tensors).

    transformers' RMSNorms in Python (``x32 = x.float(); x32 * rsqrt(x32.pow(2).mean(-1) + eps)``, then the weight)
    go back through ``pow``'s backward last: it computes ``grad · 2 · x32¹`` (``pow``, ``mul``, ``mul``: three fp32
    b·s·h tensors) while the mean's expanded gradient (``div``) and the other branch's gradient of x32 (``g · r``)
    are held, and x32 itself (saved by ``pow``; with an fp32 stream it is the last layer's output): six fp32 b·s·h
    tensors. lm_head's input, the norm's 16-bit output and the incoming gradient are freed by then. Read from
    autograd's backward of ``LlamaRMSNorm`` and held on the CPU grid's live-tensor tracker (Llama full fine-tuning
    without checkpointing, a 256-token vocabulary: the step peaks here, -0.03 %; a reward model's one-logit head,
    full without checkpointing, -0.03 %). It sets the peak only where the logits are small beside the hidden states
    (a chunked loss, a small vocabulary, a reward model's score) and the layers are not recomputed. LayerNorm (one
    fused kernel) and Cohere's norm: not counted (0)."""
    if arch.norm in ("layernorm", "cohere"):
        return 0
    return 6 * 4 * f.T * arch.hidden_size


def _backward_work(
    inv: Inventory, plan: Plan, f: _Flow, state: _State, i_eff: int, layer_end: int | None = None
) -> tuple[int, bool]:
    """A layer's backward working tensors (bytes), and whether the attention's (not the MLP's) are the larger.

    Full fine-tuning: the layer's own weight gradients and a gradient of the stream (under FSDP2 ``layer_end``, the
    end of the layer's backward as ``fsdp_layer_backward`` derives it), or, when larger, a dense gated
    MLP's backward once the down projection's is done (its weight gradient and three b·s·i gradients, its saved
    input freed; measured on the CPU grid: reward and ORPO full with checkpointing). LoRA/QLoRA: the gradients of
    the MLP's intermediate (in the adapter's and the compute dtype), bitsandbytes' dequantized weight in a 4-bit
    backward (2 B × the largest quantized linear; with bf16 adapters on a bf16 stream freed before the adapter's
    gradient is made), dropout's backward transient (calibrated on the CPU grid); with
    LoRA on fused experts the larger of those and the experts' weight gradient (``_expert_lora_work``: a moment of
    its own in the layer's backward); gpt-oss's clamped SwiGLU adds four routed-token
    temporaries of the expert width. Attention that keeps b·a·s² probabilities (eager, CUDA's SDPA math path) makes
    their gradient and the softmax's fp32 gradient at once, after the MLP's saved tensors are freed (calibrated on a
    CUDA trace of Mistral 7B QLoRA with GC); on CUDA the softmax's backward adds a block of its own
    (``cuda_softmax_backward_extra``).
    """
    arch, T = inv.arch, f.T
    if plan.method == "full":
        work = state.grads_layer + f.ad * T * arch.hidden_size if layer_end is None else layer_end
        if not (arch.is_moe and not arch.dense_layers):
            work = max(work, _mlp_backward_work(inv, plan, f, i_eff))
    else:
        cd = DTYPE_BYTES[plan.dtype]
        work = f.ab * T * i_eff + (2 * cd if f.ad != f.ab else cd) * (T * i_eff)
        if plan.quantized:
            dequantized = 2 * max((t.numel for t in inv if t.bnb_quantized), default=0)  # the weight in backward
            if f.ab == f.ad == 2:
                # bf16 adapters on a bf16 stream (TRL's cast without kbit preparation): no fp32 copies, and the
                # dequantized weight is freed with its matmul, before the adapter's gradient of the intermediate
                # is made (measured on the CPU grid, reward QLoRA, and traced at real size: Llama-3.1-8B)
                work = max(work, dequantized + cd * T * i_eff)
            else:
                work += dequantized
        if f.dropout:
            work += f.ab * T * i_eff // 2  # dropout's backward transient (calibrated on the CPU grid)
        if f.expert_lora_bytes:
            work = max(work, _expert_lora_work(inv, plan, f))
    if arch.is_moe and not arch.dense_experts and arch.model_type != "gpt_oss":
        # (gpt-oss: its SwiGLU term below, calibrated before the combine was read, stands for both)
        work = max(work, _combine_backward(arch, f, plan.gradient_checkpointing))
    if arch.dense_experts:
        routed = f.ad * T * arch.num_experts * arch.hidden_size  # one E·T-row block of the stream's width
        # Llama 4 runs every expert on every token: the backward of ``routed_out.reshape(E, T, h).sum(0)`` makes
        # the gradient of the routed output, a contiguous E·T-row copy of the expanded gradient
        work += routed
        if plan.gradient_checkpointing:
            work = max(work, _routed_recompute(arch, f, routed))
    if arch.model_type == "gpt_oss":
        # the clamped SwiGLU's backward: four temporaries per routed token of the expert width (calibrated on the
        # CPU grid: the gap grew with moe_intermediate_size, not with the number of experts)
        work += 8 * f.ad * T * arch.num_experts_per_tok * arch.moe_intermediate_size
    attn_work = 0
    if f.sdpa_math or f.attn == "eager":
        probs = 4 if f.sdpa_math else f.ad
        if f.cuda:
            probs += cuda_softmax_backward_extra(plan, f)
        mlp_freed = (3 * f.ad + f.ab) * T * i_eff + 2 * 4 * T * arch.hidden_size
        if f.sdpa_math and not arch.mla:  # o_proj's own input copy (``_attention_saved``), freed by its backward
            qd = arch.num_attention_heads * arch.head_dim
            mlp_freed += _linear_inputs(f, (ATTENTION_OUTPUT,), qd) - _linear_inputs(f, (ATTENTION_OUTPUT,), qd, True)
        attn_work = (probs + 4) * f.b * arch.num_attention_heads * f.s * f.s - mlp_freed
    return max(work, attn_work), attn_work > work


CUDA_SOFTMAX_TMP = 4
"""Bytes per b·a·s² element of CUDA's softmax backward's ``tmp = grad * output``: fp32 on eager and the math path."""


def cuda_softmax_backward_extra(plan: Plan, f: _Flow) -> int:
    """Bytes per b·a·s² element that CUDA's softmax backward adds to the attention's backward beyond the CPU's.

    ``softmax_backward_cuda_out`` (aten/src/ATen/native/cuda/SoftMax.cu) computes ``Tensor tmp = grad * output``
    before its kernel: one more b·a·s² block in the softmax's dtype, made inside the op (no tracker of dispatched
    tensors sees it; the CPU kernel makes none). Eager attention's softmax runs in fp32 (``softmax(...,
    dtype=torch.float32)``) and SDPA's math path upcasts 16-bit inputs to fp32, so the block is fp32. In fp16, eager
    attention's softmax takes CUDA's ``half_to_float`` path: no fp32 copy of its input, and its input's gradient in
    fp16 (2 bytes less than the CPU's fp32). Measured on an H200 (bench/gpu_check.py, Llama-3.2-1B at 2 × 2048 with
    the chunked loss, where the attention's backward sets the peak: 1 GiB beyond the tracked tensors in the math
    path's bf16 and fp32 and in eager's bf16, fp16 and fp32; the allocator's history names the block).
    """
    extra = CUDA_SOFTMAX_TMP
    if f.attn == "eager" and f.ad == 2 and plan.dtype == "float16":
        extra -= 2
    return extra


def in_op_block(arch: Architecture, f: _Flow) -> int:
    """The block CUDA's softmax backward makes inside the op (``tmp = grad * output``, fp32 b·a·s²), when the
    attention keeps its probabilities (eager, SDPA's math path): part of the attention's backward moment that
    ``max_memory_allocated`` sees and a tracker of dispatched tensors does not. A verify run's calibration takes
    it out of the gap it reads as cuBLAS's workspace (``calibration_from_run``)."""
    if not f.cuda or not (f.sdpa_math or f.attn == "eager"):
        return 0
    return CUDA_SOFTMAX_TMP * f.b * arch.num_attention_heads * f.s * f.s


def _combine_backward(arch: Architecture, f: _Flow, checkpointed: bool) -> int:
    """The fused experts' combine, the first of an MoE layer's backward (bytes beyond the layer's saved tensors).

    transformers' ``grouped_mm_experts_forward`` (``integrations/moe.py``, every fused-experts MoE but Llama 4) ends
    with ``weighted_out = proj_out * sample_weights_g`` in expert order, ``weighted_out[inv_perm]`` back in token
    order, then the sum over the top-k. Going back: the sum's expanded gradient made contiguous (``clone``), the
    gather's backward (``new_zeros`` and ``index_put``), each T·k × h in the stream's dtype, all alive when the
    weighting's ``mul`` backward runs, before any expert gradient exists. Read from that code and seen on the CPU
    grid's live tensors (OLMoE and GLM-4 MoE QLoRA with checkpointing: the step's peak, in an MoE layer's backward,
    after its recompute; -0.14 % and -0.19 % with the terms below).

    A shared expert runs after the routed ones (``experts(...) + shared_experts(residuals)``), so autograd runs its
    backward first: by the combine its saved tensors are freed, and the gradient of its input waits, b·s·h, for the
    router's and the experts' to be summed with it (GLM-4 MoE on the CPU grid).

    Under checkpointing the layer's recomputed saved tensors count its input once more where its first norm saves
    the input itself (a LayerNorm; an RMSNorm on an fp32 stream): that input is the stored checkpoint, so the
    moment holds it once (OLMoE, GLM-4 MoE QLoRA on the CPU grid)."""
    T, h, ad = f.T, arch.hidden_size, f.ad
    combine = 3 * ad * T * arch.num_experts_per_tok * h
    si = arch.shared_expert_intermediate_size
    if si:
        shared = 3 * ad * T * si + _linear_inputs(f, (SHARED_EXPERT_HIDDEN,), si)
        if arch.shared_expert_gate:
            shared += ad * T * h + 2 * ad * T
        combine += ad * T * h - shared
    if checkpointed and (arch.norm == "layernorm" or rms_keeps_input(arch, f)):
        combine -= ad * T * h
    return combine


def _routed_recompute(arch: Architecture, f: _Flow, routed: int) -> int:
    """Llama 4's MoE layer recomputed under checkpointing, at its shared expert's end (bytes beyond the layer's saved
    tensors). The gradient of the routed output exists already (its reshape's backward runs before any saved tensor
    is unpacked, and the unpacking starts the recompute); the recomputed forward holds, as Python locals of
    ``Llama4TextMoe.forward`` and the decoder layer, the scaled routed input and the routed output (E·T rows each),
    the residual, the attention output and the normalized input (b·s·h each), the shared expert's gated product and
    its down projection's base output. Read from ``modeling_llama4.py`` and the live tensors of the CPU grid's tiny
    Llama 4 (the layer's recompute sets the step's peak there, not its backward).

    The recompute starts in the backward of the layer's last adapted module, the shared expert's down projection:
    its LoRA branch's gradient is there (fp32, and its cast from the stream's dtype when that differs). Where the
    layer's norms save their input itself (an RMSNorm on an fp32 stream) the layer's input is the stored checkpoint
    and the residual is a saved tensor, and where the adapter reads the gated product without a cast it is saved
    too: none of them is counted again (tiny Llama 4 on the CPU grid, LoRA bf16 and QLoRA fp32)."""
    T, h, ad = f.T, arch.hidden_size, f.ad
    si = arch.shared_expert_intermediate_size
    moment = 3 * routed + ad * T * (4 * h + si)
    if SHARED_EXPERT_HIDDEN in f.lora:
        moment += f.ab * T * h + (ad * T * h if f.ab != ad else 0)
        if f.ab == ad and not f.dropout:
            moment -= ad * T * si
    if rms_keeps_input(arch, f):
        moment -= 2 * ad * T * h
    return moment


def rms_keeps_input(arch: Architecture, f: _Flow) -> bool:
    """Whether a layer's input RMSNorm saves the layer's input itself: on an fp32 stream its ``to(float32)`` returns
    the input, so under checkpointing that saved tensor is the stored checkpoint (and the residual its post-attention
    norm reads is the saved one). Not Cohere's or a LayerNorm (their own rules), not OLMo 2/3 (they normalize the
    blocks' outputs)."""
    return f.ad == 4 and arch.norm not in ("layernorm", "cohere") and arch.model_type not in ("olmo2", "olmo3")


def _mlp_backward_work(inv: Inventory, plan: Plan, f: _Flow, i_eff: int) -> int:
    """Full fine-tuning, the moment inside a dense MLP's backward: the down projection's weight gradient (and
    bias), the gradient of its input (the activated intermediate), and what the activation's backward makes from
    it while it is still held: for a gated MLP the gradients of both factors of the product at once
    (``MulBackward0``), for a plain one the gradient of the activation's input. The down projection's saved input
    is freed by then (it is counted with the layer's saved tensors), so the moment holds two (gated) or one
    (plain) intermediate-sized tensors beyond them. Read from autograd's backward of ``down(act(gate(x)) · up(x))``
    and held on the CPU grid's live-tensor tracker (Llama full fine-tuning with 1024 tokens: the layer's backward,
    not the loss's, sets the peak; docs/accuracy.md).

    GPT-2's Python tanh-GELU (``gelu_new``) ends in a product too, ``0.5·x · (1 + tanh(·))``: its two factors'
    gradients come at once, as a gated MLP's (GPT-2 full fine-tuning with checkpointing on the CPU grid, whose
    first layer's MLP backward sets the peak: -1.57 % with one, +0.77 % now, a LayerNorm's input that is also
    the stored checkpoint being counted twice)."""
    arch = inv.arch
    down = _held((t for t in inv if t.reads == MLP_HIDDEN), plan, plan.device == "cuda")
    product = arch.mlp_gated or arch.hidden_act == "gelu_new"  # Python tanh-GELU ends in ``0.5·x · (1 + tanh)``
    return down + (2 if product else 1) * f.ad * f.T * i_eff


def _expert_lora_work(inv: Inventory, plan: Plan, f: _Flow) -> int:
    """LoRA on fused experts (PEFT's ``ParamWrapper``: a ``baddbmm`` parametrization makes W + ΔW of the whole
    stack, which the grouped matmuls save): the backward of the down projection's grouped matmul makes the gradient
    of its W + ΔW (the down stack's size) and of its routed input (routed tokens × expert width), while the gate_up
    stack's W + ΔW is still saved. Then the down's W + ΔW and its gradient are freed before the gate_up's gradient
    (twice the size) is made, so that moment holds no more. Read from the code (transformers'
    ``grouped_mm_experts_forward``, peft's ``_LoraFactorsProxy``) and traced at real size: DeepSeek-V2-Lite's step
    peaks there, in its first MoE layer's backward (docs/accuracy.md). Replaces a term calibrated on the CPU grid
    (two thirds of the stack less the routed intermediate, added to the MLP's working tensors), which over-counted
    DeepSeek-V2-Lite's by 0.45 GiB."""
    arch = inv.arch
    down = sum(t.numel for t in inv if t.kind == EXPERTS and t.reads == EXPERT_HIDDEN) * param_dtype_bytes(plan)
    pairs = f.T * arch.num_experts_per_tok
    return down + pairs * arch.moe_intermediate_size * f.ad


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
    if bwd.moment == "norm":
        return 0
    if bwd.attention or bwd.moment == "cross":  # Mllama's peak is in the cross-attention's backward
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

    DeepSpeed ZeRO: the step first makes the fp32 gradient of this rank's flat partition (``single_grad_partition``;
    stage 3 a sub-group of it at a time, ``_prepare_fp32_grad_for_sub_group``: ``zero_step_elements``), then AdamW
    steps that one flat tensor: on the CPU two temporaries of it, on CUDA one (measured on the gloo runs: three
    partitions on the CPU, docs/accuracy.md).
    """
    if state.host_offload:
        return 0  # an offloaded optimizer steps on the CPU
    if state.zero_partition:
        adam = (1 if cuda else 2) * state.zero_partition if plan.optimizer == "adamw_torch" else 0
        return state.zero_partition + adam
    if plan.optimizer != "adamw_torch":
        return 0
    if cuda:
        return -(-state.trainable_bytes // state.shard_opt)
    return 2 * max((n * b for n, b, _ in state.trainable), default=0)


# ---------------------------------------------------------------------------------------------- the peak


def peak_components(
    phase: str,
    peak: int,
    state: _State,
    fwd: _Forward,
    head: HeadLoss,
    bwd: _Backward,
    layer_grads: int,
    opt_tmp: int,
    tower_grads: int = 0,
    copy_out_gathered: int = 0,
) -> dict[str, int]:
    """The live tensors at the peak (``peak`` bytes, in ``phase``), by component; they add up to ``peak``.

    In the forward or the loss's backward: every saved activation and the head/loss transient (``logits``). In the
    layers' backward: the gradients made so far (the head's, every other layer's when the peak is at the first
    layer, the layer in progress's own: ``layer_grads``); all else live there is activations and the backward's
    working tensors. At the optimizer step: every gradient, and the step's temporaries as activations. A plain
    loop's kept logits are ``logits`` in every phase. In the reference forward (``reference_work``) the policy's
    saved activations with the reference's working tensors; in GRPO's generation its KV cache and transient, as
    activations. The reference copy is ``reference`` in every phase. DDP's
    gradient buckets count as gradients. ``overhead``, ``allocator_cache`` and ``optimizer_paged`` come from
    ``runtime_tiers``.
    """
    comp = dict.fromkeys(COMPONENTS, 0)
    comp["weights"] = state.weights
    comp["adapters"] = state.adapters
    comp["optimizer"] = state.optimizer
    comp["reference"] = state.reference
    head_forward = max(head.bytes("forward"), fwd.cross_forward)  # a cross-attention layer's forward comes first
    decoder_forward = state.static + fwd.saved + fwd.vision_output + head_forward + state.gathered("forward")
    tower_forward = state.static + fwd.vision + fwd.vision_forward
    if phase == "forward" and peak > max(decoder_forward, tower_forward):  # FSDP2: a layer's copy-out
        comp["weights"] += copy_out_gathered
        comp["activations"] = peak - state.static - copy_out_gathered
    elif phase == "forward" and peak > decoder_forward:  # the vision tower's own forward peaks, before the decoder's
        comp["activations"] = fwd.vision + fwd.vision_forward
    elif phase in ("forward", "loss_backward", "reference"):
        comp["weights"] += state.gathered("forward" if phase == "reference" else phase)
        comp["activations"] = fwd.saved + (reference_work(fwd) if phase == "reference" else 0)
        comp["activations"] += fwd.vision_output if phase == "forward" else 0
        comp["logits"] = head.bytes("forward" if phase == "reference" else phase)
        if phase == "forward" and fwd.cross_forward > head.bytes("forward"):  # the peak is in a cross layer's
            comp["activations"] += fwd.cross_forward
            comp["logits"] = 0
    elif phase == "vision_backward":
        comp["gradients"] = tower_grads
        comp["logits"] = head.kept
        comp["activations"] = peak - state.static - tower_grads - head.kept - state.zero_backward
    elif phase == "backward_end":
        comp["gradients"] = state.grads
        comp["logits"] = head.kept
        comp["activations"] = peak - state.static - state.grads - head.kept - state.zero_backward
    elif phase == "generation":
        comp["activations"] = peak - state.static
    elif phase == "backward":
        grads = state.grads_head - state.tied_pending + layer_grads
        gathered = bwd.gathered[1] if bwd.moment == "first" else bwd.gathered[0]
        grads += bwd.held[1] if bwd.moment == "first" else bwd.held[0]
        if bwd.moment == "norm":  # the final norm's backward: the root's gradients, the last layer prefetched
            gathered = state.gathered("loss_backward")
            grads += state.fsdp.head_grads - bwd.held[0] if state.fsdp is not None else 0
        if bwd.moment == "first":
            grads += state.other_layers_grads
        if bwd.moment == "cross":
            grads += bwd.cross_grads
        comp["gradients"] = grads
        comp["logits"] = head.kept
        comp["weights"] += gathered
        comp["activations"] = peak - state.static - grads - head.kept - gathered - state.zero_backward
    else:
        comp["gradients"] = state.step_grads
        comp["logits"] = head.kept
        comp["activations"] = opt_tmp + fwd.pixels
    comp["gradients"] += state.ddp_buckets + state.zero_buckets
    if phase in ("backward", "vision_backward", "backward_end"):
        comp["gradients"] += state.zero_backward
    elif phase == "loss_backward":
        comp["gradients"] += state.zero_at_loss
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


def runtime_tiers(tensor_peak: int, head: HeadLoss, state: _State, cuda: bool, runtime: Runtime) -> _Tiers:
    """The tiers above the live-tensor peak on CUDA (none on the CPU: every tier is the tensor peak).

    torch counts the cuBLAS workspace as allocated; the caching allocator then keeps freed blocks reserved: after
    the loss about one fp32 logits-sized block (measured 0.6-1.7x of it on the H200 runs), at least the
    architecture's floor (times a calibration's ratio). The CUDA context, the runtime's kernels and library
    handles, and a paged optimizer's state in CUDA managed memory are outside torch's allocator, in the driver's
    figure. The constants are the plan's GPU architecture's (``Runtime``: measured, calibrated or uncalibrated).
    """
    if not cuda:
        return _Tiers(tensor_peak, tensor_peak, tensor_peak, 0, 0, 0)
    allocated = tensor_peak + runtime.cublas_workspace_bytes
    cache = int(runtime.allocator_cache_ratio * max(head.fp32_block, runtime.allocator_cache_floor_bytes))
    reserved = allocated + cache
    return _Tiers(
        allocated=allocated, reserved=reserved, total=reserved + runtime.context_bytes + state.optimizer_paged,
        overhead=runtime.cublas_workspace_bytes + runtime.context_bytes, allocator_cache=cache,
        optimizer_paged=state.optimizer_paged,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------- how sure


UNVERIFIED_OBJECTIVES = ("grpo",)
"""Objectives whose step is derived from TRL's code and not yet held against a real run in every setup (GRPO: its
generation phase is measured on the CPU grid, vLLM's modes and the reference forward inside generation are from
the code), so their activations keep the wider band. ORPO and SimPO are held like DPO and KTO: real
CPU runs with LoRA, QLoRA and full fine-tuning (within 2.4 %) and traced at real size (Llama-3.1-8B ORPO QLoRA
+0.18 %, SimPO LoRA +0.05 %). Reward modelling is held by the CPU grid (LoRA, QLoRA as TRL's reward script loads it,
full with and without checkpointing: -0.2 … +1.7 %) and traced at real size (Llama-3.1-8B LoRA and QLoRA: within
0.4 %); only its QLoRA after ``prepare_model_for_kbit_training``, which needs bf16 autocast to run (not modelled),
keeps the wider band (``modelled_band``)."""


def modelled_band(plan: Plan, f: _Flow) -> Band:
    """The band of the modelled tensors (activations and logits): verified by real runs (every CPU path: the CPU
    grid; CUDA's flash, cuDNN, memory-efficient and math kernels, with and without a padding mask, eager attention,
    bf16 and fp16, TRL's chunked loss: the H200 runs of bench/gpu_check.py and traces), or derived from the code
    only (ROCm, a vision tower on images)."""
    if plan.objective in UNVERIFIED_OBJECTIVES or plan.objective == "reward" and plan.upcast_non_quantized:
        return UNVERIFIED
    if f.generic:
        return UNVERIFIED
    if not f.cuda:
        return VERIFIED
    if f.rocm or f.vision:  # the vision tower: CPU runs only
        return UNVERIFIED
    return VERIFIED


def memory_range(f: _Flow, tensor: tuple[int, int], tiers: _Tiers, runtime: Runtime) -> dict[str, tuple[int, int]]:
    """``[low, high]`` of the peak allocated, reserved and total: exact terms exact, modelled terms within their
    band (``tensor_range``), the cuBLAS workspace up to
    ``WORKSPACE_SCRATCH`` of other in-kernel scratch above it, the allocator's cache within ``CACHE``, the context
    and runtime within the band of their status (``CONTEXT``). ``tensor``: the live-tensor peak's range."""
    if not f.cuda:
        return {"peak_allocated": tensor, "peak_reserved": tensor, "total": tensor}
    ws = runtime.cublas_workspace_bytes
    allocated = (tensor[0] + ws, tensor[1] + ws + WORKSPACE_SCRATCH)
    cache = CACHE.apply(tiers.allocator_cache)
    reserved = (allocated[0] + cache[0], allocated[1] + cache[1])
    ctx = CONTEXT[runtime.status].apply(runtime.context_bytes)
    paged = tiers.optimizer_paged
    return {"peak_allocated": allocated, "peak_reserved": reserved,
            "total": (reserved[0] + ctx[0] + paged, reserved[1] + ctx[1] + paged)}  # fmt: skip


def tensor_range(plan: Plan, f: _Flow, comp: dict[str, int], extra_high: int, extra_low: int = 0) -> tuple[int, int]:
    """The live-tensor peak's range: exact components exact, the modelled ones (activations, logits) in their band
    (``modelled_band``), plus ``extra_high`` that a path may hold beyond the model (``unmodelled_high``, FSDP2's
    ``late_free``), less ``extra_low`` that it may not hold yet (``zero_timing``)."""
    exact = comp["weights"] + comp["adapters"] + comp["gradients"] + comp["optimizer"] + comp["reference"]
    modelled = comp["activations"] + comp["logits"]
    lo, hi = modelled_band(plan, f).apply(modelled)
    return exact + lo - extra_low, exact + hi + extra_high


def zero_timing(state: _State, comp: dict[str, int]) -> int:
    """DeepSpeed ZeRO: what the peak counts that the step may not hold together, for the range's low edge. The
    buckets appear at the first trained parameter's gradient hook, a moment the model does not place against the
    backward's activation peak (on the gloo runs the peak came with fewer of them), so the low edge keeps only the
    exact state and the buckets: the activations and the loss's tensors, and the 16-bit gradient partition (filled
    as the buckets are reduced)."""
    return state.zero_partition // 2 + comp["activations"] + comp["logits"] if state.zero_partition else 0


def late_free(state: _State, phases: dict[str, int], peak: int) -> int:
    """FSDP2: how far the step can rise above the peak when a re-gathered flat all-gather output is freed late
    (gloo's worker thread): the root's in the loss's backward (``Fsdp.late_root``; seen on 2 of 56 gloo rank-runs
    of a 4-rank full fine-tune, docs/accuracy.md), or a decoder layer's in the layers' backward (``Fsdp.late_layer``;
    5 of 40 rank-runs of a 2-rank one). The high edge carries the larger; 0 where neither moment rises above the peak
    even then, and without FSDP."""
    if state.fsdp is None:
        return 0
    late = max(phases["loss_backward"] + state.fsdp.late_root, phases["backward"] + state.fsdp.late_layer)
    return max(0, late - peak)


def fit_bytes_with(mem: MemoryEstimate, runtime: Runtime) -> int:
    """``mem.fit_bytes`` with another GPU's runtime constants (same tensors): the high edge of the total."""
    cache = int(runtime.allocator_cache_ratio * max(mem.head_block, runtime.allocator_cache_floor_bytes))
    allocated = mem.tensor_range[1] + runtime.cublas_workspace_bytes + WORKSPACE_SCRATCH
    context = CONTEXT[runtime.status].apply(runtime.context_bytes)[1]
    return allocated + CACHE.apply(cache)[1] + context + mem.components["optimizer_paged"]


def unmodelled_high(inv: Inventory, plan: Plan, f: _Flow) -> int:
    """What a path may hold that the model does not count, added to the high edge: CUDA's memory-efficient kernel
    with a mask, should it keep the mask converted to the q/k/v dtype per layer as the CPU and cuDNN kernels do
    (ad·b·s² per layer kept: every layer without checkpointing, one with it)."""
    if f.cuda and f.path.mask and f.path.backend == "efficient":
        layers = 1 if plan.gradient_checkpointing else layers_run(inv.arch, plan.vision_inputs)
        return layers * f.ad * f.b * f.s * f.s
    return 0


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
    runtime: Runtime,
    weights_at_peak: int,
) -> tuple[Term, ...]:
    """The named quantities behind the estimate, each with its basis (exact, modelled, or the runtime constants'
    status). ``weights_at_peak``: the weights component (under ZeRO-3 with the reuse window held at the peak, more
    than ``state.weights``).

    The head/loss tensors are those of the peak when it is in the forward or the loss's backward (they add up to the
    ``logits`` component), else of the head's own largest moment (the loss's backward, in practice).
    """
    cuda = plan.device == "cuda"
    run = layers_run(inv.arch, plan.vision_inputs)
    checkpointed = run * fwd.stream if plan.gradient_checkpointing else 0
    phase = peak_phase if peak_phase in ("forward", "loss_backward") else head.peak_phase
    where = "in the forward" if phase == "forward" else "in the loss's backward"
    logits = [Term(k, "logits", v, f"{_HEAD_PARTS[k]}, {where}", "modelled") for k, v in head.parts(phase).items()
              if v]  # fmt: skip
    st, arch = runtime.status, runtime.arch
    return (
        Term("weights", "weights", state.weights, "base parameters as held (4-bit/int8 linears + quant state, "
             "others as loaded or fp32 after prepare_model_for_kbit_training)"),
        Term("zero3_reused", "weights", weights_at_peak - state.weights if state.fsdp is None else 0,
             "DeepSpeed ZeRO-3 with every partitioned parameter within stage3_max_reuse_distance: all of them "
             "gathered through the step, and as many bytes of all-gather buffers, beyond the two decoder layers "
             "counted with the weights", "modelled"),
        Term("adapters", "adapters", state.adapters, "LoRA A/B (+DoRA magnitude) in fp32 and modules_to_save copies"),
        Term("gradients", "gradients", state.grads, ".grad of every trainable parameter, same dtype"),
        Term("gradient_buckets", "gradients", state.ddp_buckets, "DDP's bucket copy of every gradient (multi-GPU)"),
        Term("optimizer", "optimizer", state.optimizer, f"{plan.optimizer} state in the allocator"),
        Term("reference", "reference", state.reference, "the frozen reference copy of the model (full fine-tuning "
             "with DPO, KTO, or GRPO with beta > 0), held like the weights"),
        Term("optimizer_paged", "optimizer_paged", tiers.optimizer_paged,
             "paged optimizer state in CUDA managed memory"),
        Term("activations_per_layer", "activations", fwd.layer,
             "what one decoder layer keeps for its backward, recomputed one layer at a time in the backward "
             "(checkpointing keeps only each layer's input)" if plan.gradient_checkpointing else
             f"what one decoder layer keeps for its backward, kept for all {run} layers "
             "(no checkpointing)", "modelled"),
        Term("checkpointed_inputs", "activations", checkpointed,
             "one residual-stream tensor per layer kept by non-reentrant checkpointing", "modelled"),
        Term("attention_mask", "activations", fwd.mask,
             "the attention mask transformers builds once per forward (b·s²)", "modelled"),
        *logits,
        Term("cuda_context", "overhead", runtime.context_bytes if cuda else 0,
             f"CUDA context, kernels and library handles, outside torch's allocator ({arch}, {st})", st),
        Term("cublas_workspace", "overhead", runtime.cublas_workspace_bytes if cuda else 0,
             f"cuBLAS workspaces, one per thread that runs matmuls (inside torch's allocator; {arch})", st),
        Term("allocator_cache", "allocator_cache", tiers.allocator_cache,
             "freed blocks the caching allocator keeps reserved", st if cuda else "exact"),
        Term("tensor_peak", "", tensor_peak, "live tensors at the peak, without the cuBLAS workspace", "modelled"),
    )  # fmt: skip


def _vision_notes(plan: Plan, arch: Architecture, f: _Flow) -> list[str]:
    """What the step's images or video become: tokens per row, patches, how the processor makes them."""
    notes: list[str] = []
    shape = step_shape(arch, plan)
    merge = arch.vision.spatial_merge_size if arch.vision else 2
    seen = []
    if shape.image_tokens:
        seen.append(f"{shape.image_tokens} image tokens per row ({shape.patches_per_image} patches per image)")
    if shape.video_tokens:
        seen.append(f"{shape.video_tokens} video tokens per row ({shape.patches_per_video} patches per video)")
    around = "four tokens around each image" if f.masks > 1 else "two delimiters each"
    how = f"one token per {'pooled' if f.masks > 1 else 'merged'} {merge}² patches and {around}"
    if arch.vision is not None and arch.vision.kind == "qwen3" and plan.video_frames:
        from ._vision_qwen3 import timestamp_tokens

        how += (
            f"; a video's frames resized within one pixel budget for all of them and, per temporal patch, its "
            f"timestamp as text and two delimiters more ({timestamp_tokens(arch.vision, plan.video_frames)} "
            "timestamp tokens, as Qwen's tokenizer splits them at 2 frames per second)"
        )
    if arch.vision is not None and arch.vision.kind == "clip":
        how = "one token per patch (the class token is a position of the tower's too), no delimiters"
    if arch.vision is not None and arch.vision.kind == "mllama":
        how = (
            f"one <|image|> token per image; every image runs as {arch.vision.max_tiles} tiles through the tower "
            "whatever its size (the unused ones masked; the tower's layers are not checkpointed) and each "
            "cross-attention layer attends over all of their features"
        )
    if arch.vision is not None and arch.vision.kind == "pixtral":
        from ._memory_pixtral import pixtral_note

        how = (
            f"one token per merged {merge}² patches and an [IMG_BREAK] after each row of them ([IMG_END] after "
            "the last)"
        )
        notes.append(pixtral_note(plan, f))
    notes.append(
        f"{' and '.join(w for w, n in (('images', plan.images_per_sample), ('video', plan.video_frames)) if n)}: "
        f"{' and '.join(seen)}, {how}, and the vision tower's "
        "activations are counted (its backward runs last, after the decoder's)"
        + ("; measured on CPU runs only: the range's high edge is wider on a GPU" if f.cuda else "")
    )
    if arch.vision is not None and arch.vision.kind == "idefics3":  # its tiles and tokens, said its own way
        from ._vision_idefics import tiles_note

        notes[-1] = tiles_note(arch.vision, plan, shape.image_tokens, shape.patches_per_image)
    if arch.vision is not None and arch.vision.grid_pinpoints:  # LLaVA-NeXT's tiles, said its own way
        from ._vision_clip import next_note

        notes[-1] = next_note(arch.vision, plan, shape.image_tokens, shape.patches_per_image)
    return notes


def _notes(plan: Plan, arch: Architecture, f: _Flow, tensor_peak: int, runtime: Runtime, nvme: int = 0) -> list[str]:
    """What the user should know that the numbers do not say: the attention path taken, the runtime constants
    used, approximations."""
    notes: list[str] = []
    if f.attn != plan.attn_implementation:
        notes.append(
            f"{arch.model_type} has no SDPA path in transformers: it runs with eager attention (b·a·s² per layer)"
        )
    s2_layer = 4 * f.b * arch.num_attention_heads * f.s * f.s
    s2_kept = s2_layer * (1 if plan.gradient_checkpointing else layers_run(arch, plan.vision_inputs))
    if f.sdpa_math and s2_kept >= 0.05 * tensor_peak:
        notes.append(
            f"SDPA runs its math path here ({f.path.reason}), which keeps {gib_text(s2_kept)} of fp32 attention "
            f"probabilities (b·a·s² per layer{'' if plan.gradient_checkpointing else ', every layer'}); "
            "gradient checkpointing, padded batches (the memory-efficient kernel) or flash_attention_2 avoid most of it"
        )
    elif f.attn == "sdpa":
        notes.append(f"attention: SDPA's {f.path.backend} kernel ({f.path.reason})")
    if f.path.mask and f.attn == "sdpa":
        why = (
            "Gemma 3's image tokens make transformers build its two b·s² attention masks (full and sliding window: "
            "the image tokens attend both ways)"
            if f.masks > 1
            else "a padded or packed batch makes transformers build a b·s² attention mask"
        )
        notes.append(
            f"{why} and expand K/V to every query head (repeat_kv) before SDPA"
            + (", which also rules out flash attention" if f.cuda else "")
        )
    if f.vision:
        notes += _vision_notes(plan, arch, f)
    if f.cuda:
        notes.append(f"runtime constants: {runtime.status}, {runtime.source.split(':')[0]}")
    if plan.use_dora:
        notes.append("DoRA: the per-module weight-norm transient is not modelled; treat the peak as a lower bound")
    if plan.method == "full" and plan.mixed_precision:
        notes.append("mixed precision: autocast cast caches are approximated")
    if plan.sharding == "fsdp" and plan.num_gpus > 1:
        notes.append(
            "FSDP2: per-rank terms derived from torch's fully_shard and held to gloo runs on the CPU (full "
            "fine-tuning within 0.1 %, LoRA up to 1.0 % above this estimate; docs/accuracy.md; not yet run with "
            "NCCL on GPUs); with full_shard the range's high edge, which the fit uses, also holds the root's "
            "re-gathered all-gather output in the loss's backward, which a collective backend may free late"
        )
    elif plan.sharding.startswith("zero"):
        notes.append(
            f"DeepSpeed ZeRO-{plan.sharding[-1]} with the exported config: the optimizer steps fp32 partitions of the "
            "trained parameters (master copy + AdamW states, 12 B an element over the GPUs), the engine holds LoRA "
            "adapters in 16 bits, and the reduce buckets are DeepSpeed's default reduce_bucket_size (5e8 elements: "
            f"{gib_text(max(zero_state([], plan, False)[2:4]))} per GPU; set reduce_bucket_size lower to shrink them). "
            "Held to gloo runs of DeepSpeed's engine on the CPU (docs/accuracy.md), not yet on GPUs"
            + (
                "; offload: DeepSpeed's CPU Adam steps on the host, which holds the fp32 master partition, its fp32 "
                "gradient and the states, and pinned 16-bit buffers (torch rounds each pinned block up to a power of "
                "two): memory.host.offload, measured with the device's tensors on the gloo runs"
                + (", ZeRO-3's parameter partitions read from DeepSpeed's code" if plan.offload == "params" else "")
                if plan.offload != "none"
                else ""
            )
        )
        if plan.offload_device == "nvme":
            notes.append(
                f"ZeRO-Infinity (NVMe): {gib_text(nvme)} per GPU of state on the NVMe path "
                "(memory.host.nvme); the host keeps pinned swap buffers sized by sub_group_size (1e9 elements by "
                "default: 4 buffers of the largest sub-group in fp32, and its fp32 gradient), often more than the "
                "state they page: lower sub_group_size to shrink them. Read from DeepSpeed's code, not run here"
            )
    elif plan.offload != "none":  # FSDP on one GPU
        notes.append(
            "FSDP on one GPU is estimated as one GPU without sharding: its CPU offload is not counted (nothing is "
            "moved to host RAM here); set num_gpus to 2 or more to plan FSDP2's offload per rank"
        )
    return notes + objective_notes(plan)


# ---------------------------------------------------------------------------------------------- the step


def training_memory(
    inv: Inventory, adapters: AdapterPlan, plan: Plan, *, runtime: Runtime | None = None
) -> MemoryEstimate:
    """Peak memory of one steady-state training step (optimizer state already allocated).

    Each phase is a function above: what persists through the step, the forward, the loss, the layers' backward,
    the optimizer step. The peak is the largest phase (not a sum of each part's maximum), broken down by component
    at that moment, with the runtime tiers above it on CUDA (``runtime``: the plan's GPU architecture's constants
    from the catalog unless a calibration's are given) and the range of each tier.
    """
    cuda = plan.device == "cuda"
    runtime = runtime or runtime_for(plan.gpu)
    f = dtype_flow(inv, adapters, plan)
    state = persistent_state(inv, adapters, plan, cuda)
    fwd = forward_activations(inv, adapters, plan, f)
    head = head_loss(inv.arch, plan, f)
    bwd = layer_backward(inv, adapters, plan, f, state, fwd)
    opt_tmp = optimizer_step(state, plan, cuda)
    copy_out = fsdp_copy_out(plan, state, fwd)
    phases = {
        "forward": max(
            state.static
            + fwd.saved
            + fwd.vision_output
            + max(head.bytes("forward"), fwd.cross_forward)
            + state.gathered("forward"),
            state.static + fwd.vision + fwd.vision_forward,
            copy_out[0],
        ),
        "loss_backward": state.static
        + fwd.saved
        + head.bytes("loss_backward")
        + state.gathered("loss_backward")
        + state.zero_at_loss,
        "backward": bwd.peak + head.kept + state.zero_backward,
        "optimizer": state.static + state.step_grads + opt_tmp + head.kept + fwd.pixels,
    }
    tower_grads = tower_backward_grads(inv, adapters, plan, state)
    if fwd.vision:  # the vision tower's backward, after the decoder's
        phases["vision_backward"] = (
            state.static + tower_grads + fwd.vision + fwd.vision_backward + head.kept + state.zero_backward
        )
    if reference_forward(plan):
        phases["reference"] = state.static + fwd.saved + reference_work(fwd) + head.bytes("forward")
    if state.zero_backward:
        phases["backward_end"] = zero_backward_end(state, head, fwd, plan, cuda)
    gen = generation(inv.arch, plan, f.ad, head_dtype_bytes(plan), f.ab)
    if gen is not None:
        phases["generation"] = state.static + gen.bytes
    peak_phase = max(phases, key=phases.__getitem__)
    tensor_peak = phases[peak_phase]
    layer_grads = layer_grads_at_peak(inv, adapters, plan, f, bwd) if peak_phase == "backward" else 0
    comp = peak_components(
        peak_phase, tensor_peak, state, fwd, head, bwd, layer_grads, opt_tmp, tower_grads, copy_out[1]
    )
    tiers = runtime_tiers(tensor_peak, head, state, cuda, runtime)
    comp.update(overhead=tiers.overhead, allocator_cache=tiers.allocator_cache, optimizer_paged=tiers.optimizer_paged)
    extra_high = unmodelled_high(inv, plan, f) + late_free(state, phases, tensor_peak) + zero_high(state, plan)
    return MemoryEstimate(
        components=comp,
        peak_allocated=tiers.allocated,
        peak_reserved=tiers.reserved,
        total=tiers.total,
        peak_phase=peak_phase,
        phases=phases,
        terms=_terms(inv, plan, state, fwd, head, tiers, peak_phase, tensor_peak, runtime, comp["weights"]),
        activation_dtype={4: "float32", 2: "bfloat16" if plan.dtype != "float16" else "float16"}[f.ad],
        notes=tuple(_notes(plan, inv.arch, f, tensor_peak, runtime, state.nvme)),
        range=memory_range(
            f, tensors := tensor_range(plan, f, comp, extra_high, zero_timing(state, comp)), tiers, runtime
        ),
        runtime=runtime if cuda else None,
        attention=f.path,
        tensor_range=tensors,
        head_block=head.fp32_block,
        in_op_block=in_op_block(inv.arch, f) if peak_phase == "backward" and bwd.attention else 0,
        per_rank=per_rank_figures(plan, state, tiers, comp, peak_phase),
        host=host_ram(inv, plan, state),
    )


# ---------------------------------------------------------------------------------------------- per rank, host


def per_rank_figures(plan: Plan, state: _State, tiers: _Tiers, comp: dict[str, int], phase: str) -> dict[str, object]:
    """The per-GPU (per-rank) figures and the parts sharding splits, labelled against the all-GPU total: every
    other memory figure of the estimate is per GPU too. ``basis``: measured (one GPU, DDP and FSDP2 on gloo CPU
    runs; DeepSpeed ZeRO on gloo runs of its engine, its optimizer offload included) or modelled (FSDP2's CPU
    offload, ZeRO-3's parameter offload)."""
    modelled = plan.offload == "params" or plan.offload_device == "nvme"
    return {
        "num_gpus": plan.num_gpus,
        "sharding": plan.sharding,
        "fsdp_strategy": plan.fsdp_strategy if plan.sharding == "fsdp" else None,
        "shard_ranks": shard_ranks(plan),
        "peak_allocated": tiers.allocated,
        "peak_reserved": tiers.reserved,
        "total": tiers.total,
        "all_gpus_total": tiers.total * plan.num_gpus,
        "peak_phase": phase,
        "parts": {
            "weights_shard": state.weights, "adapters_shard": state.adapters, "optimizer_shard": state.optimizer,
            "gradients_shard": state.grads, "gathered_at_peak": comp["weights"] - state.weights,
            "ddp_buckets": state.ddp_buckets, "zero_buckets": state.zero_buckets + state.zero_backward,
        },
        "basis": "modelled" if modelled else "measured",
    }  # fmt: skip


# A trainer process's own resident memory (VmRSS) with torch, transformers, peft and bitsandbytes imported, before
# loading: the largest of the fresh processes of ``python -m bench.host_ram`` with glibc's default allocator
# (bench/results/host_ram.json; CPU build of torch 2.13, transformers 5.24; they agree within 0.1 %; a process that
# first compiles the stack's bytecode holds ~10 MB more). A CUDA build's libraries add more, not counted. The
# resident library pages vary between environments: 410-475 MB measured on one machine (same packages, three venvs
# and runs), so the figure is good to about ±15 %.
HOST_RUNTIME_BYTES = 445_784_064


def host_ram(inv: Inventory, plan: Plan, state: _State) -> dict[str, int | str]:
    """CPU RAM of one rank's process at its peak, by part: the process itself (Python and the training stack's
    libraries: ``HOST_RUNTIME_BYTES``, measured), loading (``estimator._sharding.loading_host_bytes``: the anonymous
    memory ``from_pretrained`` holds beyond the model's tensors; FSDP's rank 0: the whole state dict) and offloaded
    state (pinned, held through training). Loading ends before the offloaded state is created, so the peak is the
    larger of the two above the process. On the CPU device every tensor is host memory: the training peak is
    added by the caller. ``mapped``: the checkpoint pages the load reads through the memory map, resident while
    loading but reclaimable page cache, not in the peak (``estimator._sharding.mapped_bytes``).

    Measured on the CPU (``python -m bench.host_ram``, docs/accuracy.md; ``tests/trainer/test_host_ram.py``): the
    process, and loading on the CPU device (bf16, fp32 from bf16, QLoRA quantize-on-load). The GPU loading terms,
    FSDP's rank-0 state dict and the offloaded state are modelled from the code (a CPU-only run cannot load to a
    GPU): ``basis`` says which."""
    loading, mode = loading_host_bytes(inv, plan)
    train = state.host_offload
    if plan.device == "cpu":
        train = 0  # the CPU run's tensors are the estimate's own peak (peak_allocated), added by the caller
    peak = HOST_RUNTIME_BYTES + max(loading, train)
    measured = plan.device == "cpu" and mode == LOAD_TENSOR and plan.offload == "none"
    return {"host_peak": peak, "runtime": HOST_RUNTIME_BYTES, "loading": loading, "loading_mode": mode,
            "offload": state.host_offload, "nvme": state.nvme, "mapped": mapped_bytes(inv, plan),
            "basis": "measured" if measured else "modelled"}  # fmt: skip


__all__ = ["COMPONENTS", "MemoryEstimate", "Term", "experts_quantized", "fit_bytes_with", "training_memory"]
