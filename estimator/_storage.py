"""Disk: what a download, a quantized copy, an adapter, a training checkpoint and a merged model take.

Sizes are tensor bytes (safetensors adds a JSON header of a few KiB per file, ignored). "GB" is 10⁹ bytes,
"GiB" 2³⁰; both are shown, labelled.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ._inventory import EXPERTS, LINEAR, Inventory, Tensor
from ._lora import AdapterPlan
from ._plan import Plan
from ._quant import DTYPE_BYTES, bits_per_weight, four_bit_bytes, int8_bytes


@dataclass(frozen=True)
class RuleOfThumb:
    """The back-of-the-envelope figures: parameters × bytes per parameter."""

    params: int
    trainable_fraction: float

    @property
    def fp16(self) -> int:
        return self.params * 2

    @property
    def int4(self) -> int:
        return self.params // 2

    @property
    def adapter(self) -> int:
        return round(self.params * self.trainable_fraction) * 2

    @property
    def qlora_total(self) -> int:
        return self.int4 + self.adapter

    def to_dict(self) -> dict[str, int | float]:
        return {
            "params": self.params,
            "trainable_fraction": self.trainable_fraction,
            "fp16": self.fp16,
            "int4": self.int4,
            "adapter": self.adapter,
            "qlora_total": self.qlora_total,
        }


WHY_EXACT_DIFFERS = (
    "NF4 with double quantization costs ~4.127 bits per weight (absmax per 64 weights, itself 8-bit per 256), "
    "4.5 bits without it",
    "only the linear layers are quantized: embeddings, lm_head, norms and biases stay 16-bit on disk "
    "(and fp32 in memory after prepare_model_for_kbit_training)",
    "PEFT keeps adapters in fp32 by default, so an adapter file is 4 bytes per parameter unless saved in bf16",
    "a training checkpoint carries the optimizer state (AdamW: 8 bytes per trainable parameter)",
)


def quantized_bytes(inv: Inventory, plan: Plan) -> int:
    """A bitsandbytes-quantized copy of the model: converted linears in 4/8-bit, everything else 16-bit."""
    dt = DTYPE_BYTES[plan.dtype] if plan.dtype != "float32" else 2
    total = 0
    for t in inv:
        if t.bnb_quantized:
            one = (
                int8_bytes(t.out_features, t.in_features)
                if plan.quant_type == "int8"
                else four_bit_bytes(t.numel, plan.double_quant)
            )
        else:
            one = t.numel * dt
        total += one * t.layers
    return total


MXFP4_BLOCK = 32
"""Values per MXFP4 block: 32 E2M1 values in 16 bytes (``*_blocks``) and one E8M0 scale byte (``*_scales``)."""


def download_bytes(inv: Inventory) -> int:
    """The tensor bytes of the model's files as its config says they are published (what a download takes).

    16-bit unless the config says otherwise: ``torch_dtype`` (``dtype``) ``float32``, 4 bytes a parameter; or its
    ``quantization_config``:

    * ``mxfp4`` (gpt-oss): each expert weight row is stored as ``⌈in/32⌉`` blocks of 16 bytes plus one scale byte
      (``gate_up_proj_blocks`` / ``_scales``, transformers' ``integrations/mxfp4.py``), 4.25 bits per weight; the
      experts' biases, attention, router, embeddings and lm_head stay bf16 (``modules_to_not_convert``).
      gpt-oss-20b: 13,761,264,768 bytes, equal to its published ``model.safetensors.index.json`` total_size.
    * ``fp8`` (DeepSeek-V3): every decoder linear's weight (experts and shared experts too) in float8 e4m3, one
      byte each, with an fp32 ``weight_scale_inv`` per ``weight_block_size`` block (``finegrained_fp8.py``); the
      embeddings, lm_head, norms and the router stay bf16. The multi-token-prediction layer the files also hold
      (``num_nextn_predict_layers``), which transformers does not load, is not counted (the note says so).

    Safetensors headers (a few KiB per file) are ignored."""
    arch = inv.arch
    total = 0
    for t in inv:
        one = (4 if arch.checkpoint_format == "float32" else 2) * t.numel
        if arch.checkpoint_format == "mxfp4" and t.role == "expert" and not t.is_bias:
            e, a, b = t.shape
            rows, inp = (b, a) if arch.experts_in_out else (a, b)
            one = e * rows * -(-inp // MXFP4_BLOCK) * (MXFP4_BLOCK // 2 + 1)
        elif arch.checkpoint_format == "fp8" and not t.is_bias and _fp8_stored(t):
            r0, c0 = arch.checkpoint_block
            e, rows, inp = (1, t.out_features, t.in_features) if len(t.shape) == 2 else t.shape
            halves = 2 if t.name.endswith("gate_up_proj") else 1  # stored as two linears, gate and up, per expert
            scales = halves * -(-(rows // halves) // r0) * -(-inp // c0)
            one = e * (rows * inp + 4 * scales)
        total += one * t.layers
    return total


SAFETENSORS_BYTES = {
    "F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2, "U16": 2,
    "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "I8": 1, "U8": 1, "BOOL": 1,
}  # fmt: skip
"""Bytes per element of each safetensors dtype (the format's ``Dtype``; packed 4-bit formats are stored as U8)."""


def published_bytes(files: Mapping[str, int]) -> int | None:
    """The tensor bytes of a model's published safetensors files: the elements of each dtype, as the files' headers
    count them (``files``: ``{"F32": 137022720}``, what the Hub client reads), times that dtype's size. Exact:
    it counts what the files hold, buffers saved beside the weights included (GPT-2's ``attn.bias`` masks, 48 MiB),
    in the dtype they were saved in, which a config without ``torch_dtype`` does not say (GPT-2's files are fp32).
    None when a dtype is not one safetensors defines or a count is not a non-negative integer."""
    total = 0
    for dtype, n in files.items():
        size = SAFETENSORS_BYTES.get(dtype)
        if size is None or not isinstance(n, int) or isinstance(n, bool) or n < 0:
            return None
        total += size * n
    return total if files else None


def published_format(files: Mapping[str, int]) -> str:
    """``as published: F32`` (the dtypes, most elements first)."""
    return "as published: " + ", ".join(sorted(files, key=lambda d: (-files[d], d)))


def _fp8_stored(t: Tensor) -> bool:
    """A weight DeepSeek-V3's files store in fp8: the decoder layers' linears and experts, not the router."""
    return t.role in ("attention", "mlp", "shared_expert", "expert") and t.kind in (LINEAR, EXPERTS)


def _download(inv: Inventory, files: Mapping[str, int]) -> dict[str, object]:
    """``download`` and ``download_format``: what the published files hold where ``files`` counts them, else what
    the config says they hold."""
    published = published_bytes(files)
    if published is None:
        return {"download": download_bytes(inv), "download_format": inv.arch.checkpoint_format or "16-bit"}
    return {"download": published, "download_format": published_format(files)}


def storage(
    inv: Inventory, adapters: AdapterPlan, plan: Plan, files: Mapping[str, int] | None = None
) -> dict[str, object]:
    """What each copy of the model takes on disk. ``download``: the published files' tensor bytes, from their
    safetensors headers where ``files`` gives them (``published_bytes``), else from the config
    (``download_bytes``); ``download_format`` says which."""
    P = inv.total
    T = adapters.trainable if plan.adapters else P
    base16 = 2 * P
    adapter_fp32 = 4 * adapters.lora_params + _saved_bytes(adapters, 4)
    adapter_bf16 = 2 * adapters.lora_params + _saved_bytes(adapters, 2)
    optimizer = _optimizer_state_bytes(T, plan)
    if plan.adapters:
        checkpoint = adapter_fp32 + optimizer
    else:
        checkpoint = (4 if plan.mixed_precision or plan.dtype == "float32" else 2) * P + optimizer
    fraction = (adapters.trainable / P) if plan.adapters and P else 0.01
    return {
        "base_fp32": 4 * P,
        **_download(inv, files or {}),
        "base_16bit": base16,
        "base_quantized": quantized_bytes(inv, plan),
        "quantized_bits_per_weight": bits_per_weight(plan.quant_type, plan.double_quant),
        "adapter": adapter_fp32 if plan.adapters else 0,
        "adapter_fp32": adapter_fp32,
        "adapter_bf16": adapter_bf16,
        "optimizer_state": optimizer,
        "checkpoint": checkpoint,
        "merged": base16,
        "rule_of_thumb": RuleOfThumb(P, fraction).to_dict(),
        "why_exact_differs": list(WHY_EXACT_DIFFERS),
    }


def _saved_bytes(adapters: AdapterPlan, per: int) -> int:
    return sum(t.total for t in adapters.saved_modules) * per


def _optimizer_state_bytes(trainable: int, plan: Plan) -> int:
    """``optimizer.pt`` in a Trainer checkpoint: AdamW 8 B per trainable param (fp32 states), 8-bit ≈ 2 B."""
    if plan.optimizer in ("adamw_torch", "paged_adamw_32bit"):
        per_param_bytes = 8 if plan.adapters or plan.mixed_precision else 2 * DTYPE_BYTES[plan.dtype]
        return trainable * per_param_bytes
    if plan.optimizer in ("adamw_8bit", "paged_adamw_8bit"):
        return 2 * trainable + 8 * (-(-trainable // 256))
    return 0
