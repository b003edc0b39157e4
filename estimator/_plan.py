"""The plan: what a user wants to fine-tune, and how — declared once.

Each field of ``Plan`` carries its kind, bounds, choices, label, form group and help text in its dataclass metadata
(a ``FieldSpec``). Everything else is derived from that one declaration: the plan's own validation below, the REST
API's request models (``app.schemas``), the CLI options (``app.cli``), the page form and the field list the page
script reads (``app.view.form``). Adding a field here adds it everywhere.

Field names are the ones the training stack uses (transformers ``TrainingArguments``, PEFT ``LoraConfig``,
``BitsAndBytesConfig``), so a plan reads like the script it stands for.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal, get_args

from . import catalog
from ._errors import PlanError

Method = Literal["full", "lora", "qlora"]
DType = Literal["bfloat16", "float16", "float32"]
QuantType = Literal["nf4", "fp4", "int8"]
Optimizer = Literal["adamw_torch", "adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit", "sgd", "adafactor"]
AttnImplementation = Literal["eager", "sdpa", "flash_attention_2"]
Device = Literal["cuda", "cpu"]
Sharding = Literal["ddp", "fsdp", "zero1", "zero2", "zero3"]
FsdpStrategy = Literal["full_shard", "shard_grad_op", "hybrid_shard"]
Offload = Literal["none", "optimizer", "params"]
OffloadDevice = Literal["cpu", "nvme"]
QuantStorage = Literal["uint8", "bfloat16", "float16", "float32"]
SdpaBackend = Literal["auto", "flash", "efficient", "cudnn", "math"]
Padding = Literal["padded", "none", "packed"]
TrainingLoop = Literal["trainer", "plain"]
Loss = Literal["standard", "chunked"]
TransformersVersion = Literal["5.x", "4.x"]
Calibration = Literal["auto", "none"]
ServeFormat = Literal["merged_16bit", "merged_4bit", "base_adapter"]
Objective = Literal["sft", "dpo", "orpo", "simpo", "kto", "reward", "grpo"]
VllmMode = Literal["none", "colocate", "server"]

METHODS: tuple[str, ...] = get_args(Method)
ADAPTER_METHODS: tuple[str, ...] = ("lora", "qlora")
OBJECTIVES: tuple[str, ...] = get_args(Objective)
PAIR_OBJECTIVES: tuple[str, ...] = ("dpo", "orpo", "simpo", "reward")
"""Objectives whose batch holds chosen/rejected pairs, run as one concatenated forward of 2 × batch_size rows."""
REFERENCE_OBJECTIVES: tuple[str, ...] = ("dpo", "kto", "grpo")
"""Objectives whose loss compares with a frozen reference model (GRPO only when ``beta > 0``)."""
MAX_IMAGES = 256
MAX_IMAGE_SIDE = 65536
MAX_FRAMES = 4096
MAX_GENERATIONS = 4096

MAX_SEQ_LEN = 4 * 1024 * 1024
MAX_BATCH_SIZE = 1 << 20
MAX_MODEL_ID = 200
MAX_MODULES = 256
MAX_MODULE_NAME = 128
MAX_ACCUMULATION = 1 << 16
MAX_TOKENS = 10**15
MAX_CONCURRENCY = 4096

Kind = Literal["model", "config", "choice", "bool", "tristate", "int", "number", "modules", "targets", "gpu", "pair"]
"""How a field's value is typed and shown:

- ``model``: a Hub or catalog id (text); ``config``: an inline config.json object;
- ``choice``: one of ``choices``; ``bool``; ``tristate``: true, false or None (None: the plan decides);
- ``int`` / ``number``: bounded by ``low`` / ``high`` (``low_open`` / ``high_open`` exclude the bound);
- ``modules``: a list of module names; ``targets``: ``"all-linear"`` or a non-empty list of module names;
- ``gpu``: a GPU, or None: a catalog id, a catalog name or a loose one (``RTX 4090``, ``4090``), or a custom card
  (``NAME:MEMORY`` text, or a ``{"name", "memory_bytes"}`` object); held as a catalog id or ``NAME:BYTES``.
- ``pair``: two integers (``[height, width]``), each bounded by ``low`` / ``high``, or None.
"""


@dataclass(frozen=True)
class FieldSpec:
    """What the rest of tuneplan needs to know about one plan field (its dataclass metadata)."""

    kind: Kind
    label: str
    help: str
    group: str
    choices: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    methods: tuple[str, ...] = ()
    """The methods the field applies to (the page hides it for the others); empty: every method."""
    max_length: int | None = None


@dataclass(frozen=True)
class PlanField:
    """One field of ``Plan``: its name and default with its ``FieldSpec``."""

    name: str
    default: Any
    spec: FieldSpec

    @property
    def flag(self) -> str:
        """The CLI option (``--seq-len``)."""
        return "--" + self.name.replace("_", "-")

    def bounds_text(self) -> str:
        """The allowed values in words, for messages and help (``between 1 and 65536``)."""
        s = self.spec
        if s.kind == "choice":
            return "one of " + ", ".join(s.choices)
        if s.kind == "pair" and s.low is not None and s.high is not None:
            return f"two integers [height, width], each between {_num(s.low)} and {_num(s.high)}"
        if s.kind in ("int", "number") and s.low is not None and s.high is not None:
            if s.low_open or s.high_open:
                return f"in {'(' if s.low_open else '['}{_num(s.low)}, {_num(s.high)}{')' if s.high_open else ']'}"
            return f"between {_num(s.low)} and {_num(s.high)}"
        return ""


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _spec(default: Any, kind: Kind, label: str, help: str, group: str, **more: Any) -> Any:
    """A dataclass field whose metadata is its ``FieldSpec`` (``compare=False`` for the inline config)."""
    compare = kind != "config"
    return field(default=default, metadata={"spec": FieldSpec(kind, label, help, group, **more)}, compare=compare,
                 hash=compare)  # fmt: skip


@dataclass(frozen=True)
class Plan:
    """A fine-tuning plan. Defaults follow the QLoRA recipe (PEFT + bitsandbytes + transformers)."""

    model: str | None = _spec(
        None,
        "model",
        "Catalog or Hub model",
        "Hub repo id ('org/name') or catalog id; give this or 'config'.",
        "Model",
        max_length=MAX_MODEL_ID,
    )
    config: Mapping[str, Any] | None = _spec(
        None, "config", "config.json", "An inline Hugging Face config.json object; give this or 'model'.", "Model"
    )
    method: Method = _spec(
        "qlora", "choice", "Method", "full fine-tuning, LoRA, or QLoRA (4-bit base + LoRA).", "Method", choices=METHODS
    )
    objective: Objective = _spec(
        "sft",
        "choice",
        "Objective",
        "What the step trains, as TRL 1.16's trainer runs it: sft (next-token loss), dpo (chosen and rejected in "
        "one forward of 2 × batch_size rows, a reference model), orpo and simpo (pairs, no reference), kto "
        "(unpaired, a reference and a KL batch), reward (a sequence-classification head on pairs), grpo "
        "(generation of num_generations completions per prompt, then a log-prob pass over prompt + completion).",
        "Objective",
        choices=OBJECTIVES,
    )
    beta: int | float = _spec(
        0.0,
        "number",
        "beta (GRPO KL)",
        "GRPO: the KL coefficient; above 0 the step compares with a reference model (TRL's default 0.0 holds "
        "none). DPO and KTO always hold a reference unless precomputed; their beta does not change memory.",
        "Objective",
        low=0,
        high=1e6,
    )
    precompute_ref_log_probs: bool = _spec(
        False,
        "bool",
        "Precompute reference log-probs",
        "DPO/KTO: the reference log-probs are computed once before training (precompute_ref_log_probs), so no "
        "reference model is held or run during the step.",
        "Objective",
    )
    num_generations: int = _spec(
        8,
        "int",
        "Generations per prompt",
        "GRPO: completions sampled per prompt (num_generations); the generation batch is batch_size × "
        "grad_accum_steps completions, so it must be a multiple of it.",
        "Objective",
        low=1,
        high=MAX_GENERATIONS,
    )
    max_completion_length: int = _spec(
        512,
        "int",
        "Max completion length",
        "GRPO: tokens generated per completion (max_completion_length); each row is seq_len prompt tokens plus these.",
        "Objective",
        low=1,
        high=MAX_SEQ_LEN,
    )
    vllm_mode: VllmMode = _spec(
        "none",
        "choice",
        "Generation engine",
        "GRPO: none generates with transformers' generate on the training GPU (a KV cache); colocate runs vLLM in "
        "the training process on a share of the GPU (vllm_gpu_memory_utilization); server generates on other GPUs.",
        "Objective",
        choices=get_args(VllmMode),
    )
    vllm_gpu_memory_utilization: int | float = _spec(
        0.3,
        "number",
        "vLLM GPU share",
        "GRPO with vllm_mode colocate: the fraction of the GPU's memory vLLM reserves (TRL's default 0.3).",
        "Objective",
        low=0,
        high=1,
        low_open=True,
    )
    dtype: DType = _spec(
        "bfloat16",
        "choice",
        "Weights and compute",
        "dtype of the frozen base weights and of the compute (bnb_4bit_compute_dtype for QLoRA).",
        "Precision",
        choices=get_args(DType),
    )
    quant_type: QuantType = _spec(
        "nf4",
        "choice",
        "Quantization",
        "QLoRA: bitsandbytes quantization (bnb_4bit_quant_type, or LLM.int8).",
        "Precision",
        choices=get_args(QuantType),
        methods=("qlora",),
    )
    double_quant: bool = _spec(
        True,
        "bool",
        "Double quantization",
        "QLoRA: quantize the quantization constants too (bnb_4bit_use_double_quant).",
        "Precision",
        methods=("qlora",),
    )
    prepare_kbit: bool | None = _spec(
        None,
        "tristate",
        "prepare_model_for_kbit_training",
        "QLoRA: run prepare_model_for_kbit_training, which upcasts non-quantized parameters to fp32 "
        "(unset: on, as PEFT's QLoRA recipe does).",
        "Precision",
        methods=("qlora",),
    )
    mixed_precision: bool = _spec(
        False,
        "bool",
        "Mixed precision (fp32 master weights)",
        "Full fine-tuning: fp32 master weights with 16-bit autocast (Trainer bf16=True on an fp32 load).",
        "Precision",
        methods=("full",),
    )
    lora_r: int = _spec(16, "int", "Rank r", "LoRA rank r.", "LoRA", low=1, high=65536, methods=ADAPTER_METHODS)
    lora_alpha: int | float = _spec(
        32,
        "number",
        "Alpha",
        "LoRA alpha (scaling = alpha / r); memory does not depend on it.",
        "LoRA",
        low=0,
        high=1e9,
        low_open=True,
        methods=ADAPTER_METHODS,
    )
    lora_dropout: float = _spec(
        0.05,
        "number",
        "Dropout",
        "LoRA dropout; above 0 each adapted module keeps a dropped-out copy of its input.",
        "LoRA",
        low=0,
        high=1,
        high_open=True,
        methods=ADAPTER_METHODS,
    )
    target_modules: tuple[str, ...] | Literal["all-linear"] = _spec(
        "all-linear",
        "targets",
        "Target modules",
        "'all-linear', or module names separated by commas (e.g. q_proj,v_proj).",
        "LoRA",
        methods=ADAPTER_METHODS,
    )
    modules_to_save: tuple[str, ...] = _spec(
        (),
        "modules",
        "Modules to save",
        "Modules trained in full next to the adapters (e.g. lm_head), separated by commas.",
        "LoRA",
        methods=ADAPTER_METHODS,
    )
    use_dora: bool = _spec(False, "bool", "DoRA", "Weight-decomposed LoRA (use_dora).", "LoRA", methods=ADAPTER_METHODS)
    batch_size: int = _spec(
        1, "int", "Batch size per GPU", "Per-device micro-batch size.", "Training", low=1, high=MAX_BATCH_SIZE
    )
    seq_len: int = _spec(
        2048,
        "int",
        "Sequence length",
        "Tokens per sequence, within the model's context unless allow_long_context is set.",
        "Training",
        low=1,
        high=MAX_SEQ_LEN,
    )
    gradient_checkpointing: bool = _spec(
        True, "bool", "Gradient checkpointing", "Recompute each layer's activations in the backward pass.", "Training"
    )
    optimizer: Optimizer = _spec(
        "adamw_torch",
        "choice",
        "Optimizer",
        "Optimizer (transformers TrainingArguments.optim).",
        "Training",
        choices=get_args(Optimizer),
    )
    attn_implementation: AttnImplementation = _spec(
        "sdpa",
        "choice",
        "Attention",
        "Attention kernel (attn_implementation).",
        "Training",
        choices=get_args(AttnImplementation),
    )
    sdpa_backend: SdpaBackend = _spec(
        "auto",
        "choice",
        "SDPA backend",
        "auto: the kernel torch picks for this GPU, dtype, mask and head layout; or pin one, as "
        "torch.nn.attention.sdpa_kernel does (an error if it cannot run this attention).",
        "Training",
        choices=get_args(SdpaBackend),
    )
    padding: Padding = _spec(
        "padded",
        "choice",
        "Padding",
        "padded: dynamic padding, an attention mask is passed (TRL SFTTrainer's default); none: every row full "
        "length (or batch 1), no mask; packed: several sequences per row with position ids (padding-free).",
        "Training",
        choices=get_args(Padding),
    )
    training_loop: TrainingLoop = _spec(
        "trainer",
        "choice",
        "Training loop",
        "trainer: transformers Trainer / TRL drop the model outputs before backward; plain: a hand-written "
        "loop (out = model(**batch); out.loss.backward()) keeps the logits alive through the step.",
        "Training",
        choices=get_args(TrainingLoop),
    )
    loss: Loss = _spec(
        "standard",
        "choice",
        "Loss kernel",
        "standard: transformers' cross-entropy over the whole b·s·V logits; chunked: TRL's fused LM head "
        "(chunked log-probabilities, the logits never exist whole).",
        "Training",
        choices=get_args(Loss),
    )
    transformers_version: TransformersVersion = _spec(
        "5.x",
        "choice",
        "transformers version",
        "5.x (the version tuneplan pins): MoE experts are fused 3-D parameters that stay 16-bit under QLoRA; "
        "4.x: experts are nn.Linear layers that bitsandbytes quantizes.",
        "Training",
        choices=get_args(TransformersVersion),
    )
    allow_long_context: bool = _spec(
        False,
        "bool",
        "Allow sequences beyond the model's context",
        "Allow seq_len beyond the model's max_position_embeddings.",
        "Training",
    )
    images_per_sample: int = _spec(
        0,
        "int",
        "Images per sample",
        "Vision-language models: images in each sample (each row of a pair holds them again). Their tokens are "
        "added to seq_len's text tokens.",
        "Images",
        low=0,
        high=MAX_IMAGES,
    )
    image_size: tuple[int, int] | None = _spec(
        None,
        "pair",
        "Image size",
        "[height, width] of each image and video frame in pixels (e.g. 448x448); unset: the processor's largest "
        "(max_pixels for dynamic-resolution models, a square at the longest edge for Pixtral, the image_grid_pinpoints "
        "resolution of most pixels for LLaVA-NeXT, the fixed input size otherwise).",
        "Images",
        low=1,
        high=MAX_IMAGE_SIDE,
    )
    max_pixels: int = _spec(
        0,
        "int",
        "Max pixels",
        "Dynamic-resolution models (Qwen-VL, Pixtral): the processor's max_pixels cap an image or a video frame is "
        "resized under (0: the processor's default; Qwen2-VL / Qwen2.5-VL: 28²·1280 for images, 28²·768 for video "
        "frames; Qwen3-VL: 4096² for images and, for a video, 25,165,824 for all of its frames' pixels together, as "
        "its published processor configs set). "
        "Pixtral (Mistral 3) caps a side instead: its longest_edge is ⌊√max_pixels⌋ (0: the tower's image_size, "
        "1540 for Mistral Small 3.1). Models whose processor has no pixel cap (LLaVA-NeXT, which resizes into an "
        "image_grid_pinpoints resolution; Idefics3, SmolVLM) refuse it: give image_size.",
        "Images",
        low=0,
        high=MAX_IMAGE_SIDE * MAX_IMAGE_SIDE,
    )
    video_frames: int = _spec(
        0,
        "int",
        "Video frames",
        "Models that take video (Qwen2-VL, Qwen2.5-VL, Qwen3-VL): frames of one video per sample (each row of a pair "
        "holds it again), each of image_size, resized by the video processor (Qwen2-VL: each frame to at least "
        "128·28² pixels; Qwen3-VL: all of them within one pixel budget, unset image_size a square at each frame's "
        "share of it); pairs of frames make one temporal patch (an odd count gets its last frame repeated). Qwen3-VL: "
        "the frames that reach the model after its processor samples 2 per second (at least 2), each pair with its "
        "timestamp as text, counted as Qwen's tokenizer splits it at that rate. Its tokens are added to seq_len's.",
        "Images",
        low=0,
        high=MAX_FRAMES,
    )
    gpu: str | None = _spec(
        None,
        "gpu",
        "GPU",
        "The GPU to check the fit against and search the largest batch and sequence for: a catalog id or name "
        "(tuneplan gpus, GET /api/gpus; loosely matched: 'RTX 4090', '4090'), or your own card as 'NAME:MEMORY' "
        '(e.g. \'My card:24GiB\'; in JSON also {"name": ..., "memory_bytes": ...}).',
        "Hardware",
        max_length=100,
    )
    num_gpus: int = _spec(1, "int", "Number of GPUs", "GPUs in data parallel.", "Hardware", low=1, high=4096)
    sharding: Sharding = _spec(
        "ddp",
        "choice",
        "Sharding",
        "How state is split across GPUs: DDP replicates it; FSDP (FSDP2 fully_shard, per decoder layer) shards "
        "parameters, gradients and optimizer state; DeepSpeed's ZeRO stages shard optimizer state (1), gradients "
        "(2) and parameters (3).",
        "Hardware",
        choices=get_args(Sharding),
    )
    fsdp_strategy: FsdpStrategy = _spec(
        "full_shard",
        "choice",
        "FSDP strategy",
        "FSDP: full_shard frees each layer's gathered parameters after its forward (reshard_after_forward=True); "
        "shard_grad_op keeps them until its backward; hybrid_shard shards within groups of shard_group_size GPUs "
        "and replicates across groups.",
        "Hardware",
        choices=get_args(FsdpStrategy),
    )
    shard_group_size: int = _spec(
        0,
        "int",
        "Shard group size",
        "FSDP hybrid_shard: GPUs each group shards over (a divisor of num_gpus; 0: all of them, e.g. the GPUs of "
        "one machine).",
        "Hardware",
        low=0,
        high=4096,
    )
    offload: Offload = _spec(
        "none",
        "choice",
        "CPU offload",
        "none; optimizer: optimizer state and step in host RAM (ZeRO offload_optimizer, DeepSpeed's CPU AdamW: "
        "optimizer adamw_torch); params: parameters, gradients and optimizer state in host RAM (FSDP "
        "CPUOffloadPolicy, ZeRO-3 offload_param).",
        "Hardware",
        choices=get_args(Offload),
    )
    offload_device: OffloadDevice = _spec(
        "cpu",
        "choice",
        "Offload device",
        "Where offload puts the state: cpu (host RAM) or nvme (DeepSpeed ZeRO-3's ZeRO-Infinity: the optimizer "
        "state, and with offload params the parameters, swapped to an NVMe path through pinned host buffers).",
        "Hardware",
        choices=get_args(OffloadDevice),
    )
    quant_storage: QuantStorage = _spec(
        "uint8",
        "choice",
        "4-bit storage dtype",
        "QLoRA: bnb_4bit_quant_storage, the dtype packed 4-bit weights are stored in (same bytes); FSDP-QLoRA "
        "needs it equal to the other parameters' dtype so each layer shards as one buffer.",
        "Precision",
        choices=get_args(QuantStorage),
        methods=("qlora",),
    )
    host_memory_gib: int | float = _spec(
        0,
        "number",
        "Host RAM per machine (GiB)",
        "CPU RAM of each machine, checked against the host-RAM estimate (memory.host_peak times the GPUs per "
        "machine); 0: not checked.",
        "Hardware",
        low=0,
        high=1e6,
    )
    calibration: Calibration = _spec(
        "auto",
        "choice",
        "Calibration",
        "auto: use the runtime constants measured by this server's own verify runs on the plan's GPU, when "
        "there are any; none: the GPU catalog's constants only.",
        "Hardware",
        choices=get_args(Calibration),
    )
    device: Device = _spec(
        "cuda", "choice", "Device", "Where training runs: cuda counts the allocator's rounding, cache and "
        "context; cpu counts live tensors.", "Hardware", choices=get_args(Device))  # fmt: skip
    grad_accum_steps: int = _spec(
        1,
        "int",
        "Gradient accumulation steps",
        "Micro-batches per optimizer step (gradient_accumulation_steps): memory does not depend on it; the tokens "
        "and time of a step do.",
        "Time and cost",
        low=1,
        high=MAX_ACCUMULATION,
    )
    train_tokens: int = _spec(
        0,
        "int",
        "Tokens to train on",
        "The token budget of the run (all GPUs together); 0: dataset_tokens × epochs.",
        "Time and cost",
        low=0,
        high=MAX_TOKENS,
    )
    dataset_tokens: int = _spec(
        0,
        "int",
        "Dataset tokens",
        "Tokens in the training set, counted at seq_len per sequence; with epochs, the run's length when "
        "train_tokens is 0 (0: no run time, only per-step figures).",
        "Time and cost",
        low=0,
        high=MAX_TOKENS,
    )
    epochs: int | float = _spec(
        1, "number", "Epochs", "Passes over the dataset (num_train_epochs).", "Time and cost", low=0, high=1e6,
        low_open=True)  # fmt: skip
    mfu: int | float = _spec(
        0,
        "number",
        "MFU",
        "Model-FLOPs utilisation the step time assumes, as a fraction of the GPU's dense peak (0: the card's "
        "figure: measured by a verify run where one did, else public figures).",
        "Time and cost",
        low=0,
        high=1,
    )

    serve_format: ServeFormat = _spec(
        "merged_16bit",
        "choice",
        "Serve as",
        "How the fine-tuned model is served: merged_16bit (adapters merged into 16-bit weights), merged_4bit (merged, "
        "then loaded in 4-bit by bitsandbytes), base_adapter (the base as trained, 4-bit for QLoRA, plus the adapter).",
        "Serving",
        choices=get_args(ServeFormat),
    )
    serve_context_len: int = _spec(
        0,
        "int",
        "Serving context (tokens)",
        "Tokens of prompt plus output each served sequence holds in the KV cache (0: the training seq_len).",
        "Serving",
        low=0,
        high=MAX_SEQ_LEN,
    )
    serve_concurrency: int = _spec(
        1,
        "int",
        "Concurrent sequences",
        "Sequences served at once, each with its own KV cache.",
        "Serving",
        low=1,
        high=MAX_CONCURRENCY,
    )

    def __post_init__(self) -> None:
        for f in plan_fields():
            value = _checked(f, getattr(self, f.name))
            if value is not getattr(self, f.name):
                object.__setattr__(self, f.name, value)
        self._check_together()

    def _check_together(self) -> None:
        """The checks that involve more than one field."""
        if (self.model is None) == (self.config is None):
            raise PlanError("give exactly one of 'model' (a Hub or catalog id) and 'config' (a config.json object)")
        if self.method == "full" and self.use_dora:
            raise PlanError("use_dora applies to lora and qlora, not to full fine-tuning")
        if self.mixed_precision and self.dtype == "float32":
            raise PlanError("mixed_precision needs a 16-bit dtype (bfloat16 or float16) for the compute")
        self._check_sharding()

    def _check_sharding(self) -> None:
        """Sharding, offload and the hybrid group agree with each other and with num_gpus."""
        if self.offload == "params" and self.sharding not in ("fsdp", "zero3"):
            raise PlanError(f"offload 'params' needs sharding fsdp or zero3 (got {self.sharding})")
        if self.offload == "optimizer" and self.sharding in ("ddp", "fsdp"):
            raise PlanError(
                f"offload 'optimizer' is DeepSpeed ZeRO's offload_optimizer: choose sharding zero1, zero2 or zero3 "
                f"(FSDP offloads parameters, gradients and optimizer state together: offload 'params'; got "
                f"{self.sharding})"
            )
        if self.offload_device == "nvme" and (self.sharding != "zero3" or self.offload == "none"):
            raise PlanError(
                f"offload_device 'nvme' is DeepSpeed ZeRO-3's (ZeRO-Infinity): set sharding zero3 and offload "
                f"optimizer or params (got sharding {self.sharding}, offload {self.offload})"
            )
        if self.offload != "none" and self.sharding.startswith("zero") and self.optimizer != "adamw_torch":
            raise PlanError(
                f"DeepSpeed's offload steps its own CPU AdamW (DeepSpeedCPUAdam); optimizer {self.optimizer} is not "
                f"offloaded: choose optimizer adamw_torch, or offload 'none'"
            )
        if self.sharding == "fsdp" and self.fsdp_strategy == "hybrid_shard":
            group = self.shard_group_size or self.num_gpus
            if self.num_gpus % group:
                raise PlanError(
                    f"shard_group_size ({self.shard_group_size}) must divide num_gpus ({self.num_gpus}) for "
                    "hybrid_shard"
                )

    @property
    def quantized(self) -> bool:
        return self.method == "qlora"

    @property
    def adapters(self) -> bool:
        return self.method in ADAPTER_METHODS

    @property
    def upcast_non_quantized(self) -> bool:
        """Whether ``prepare_model_for_kbit_training`` runs (QLoRA only)."""
        if self.method != "qlora":
            return False
        return True if self.prepare_kbit is None else self.prepare_kbit

    @property
    def pairs(self) -> bool:
        """Whether each sample is a chosen/rejected pair, run as two rows of one concatenated forward."""
        return self.objective in PAIR_OBJECTIVES

    @property
    def rows(self) -> int:
        """Rows of the training forward: 2 × batch_size for pairs (TRL concatenates chosen and rejected)."""
        return 2 * self.batch_size if self.pairs else self.batch_size

    @property
    def row_text_tokens(self) -> int:
        """Text tokens of one row: seq_len, plus the completion for GRPO (seq_len is then the prompt)."""
        return self.seq_len + (self.max_completion_length if self.objective == "grpo" else 0)

    @property
    def vision_inputs(self) -> bool:
        """Whether a sample holds images or a video (a vision-language model's tower then runs)."""
        return self.images_per_sample > 0 or self.video_frames > 0

    @property
    def holds_reference(self) -> bool:
        """Whether the step runs a reference forward (DPO/KTO unless precomputed; GRPO with beta > 0)."""
        if self.objective == "grpo":
            return self.beta > 0
        return self.objective in REFERENCE_OBJECTIVES and not self.precompute_ref_log_probs

    @property
    def run_tokens(self) -> int | None:
        """The run's token budget: ``train_tokens``, else ``dataset_tokens × epochs``, else None (not given)."""
        if self.train_tokens:
            return self.train_tokens
        if self.dataset_tokens:
            return math.ceil(self.dataset_tokens * self.epochs)
        return None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with the same field names (config included when given)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = list(value)
            if f.name == "config" and value is not None:
                value = dict(value)
            if f.name == "gpu" and value is not None:
                gpu = catalog.find_gpu(value)
                if gpu is not None and gpu.custom:
                    value = {"name": gpu.name, "memory_bytes": gpu.memory_bytes}
            out[f.name] = value
        return out

    def replace(self, **changes: Any) -> Plan:
        """A copy with ``changes``, validated as a new plan is (only the changed fields are checked again: the fit
        search and the sweeps make thousands of these)."""
        new = copy.copy(self)
        for name, value in changes.items():
            spec = _FIELDS.get(name)
            if spec is None:
                raise TypeError(f"Plan has no field {name!r}")
            object.__setattr__(new, name, _checked(spec, value))
        new._check_together()
        return new

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Plan:
        """Build a plan from a JSON object; unknown keys are an error that names them."""
        if not isinstance(data, Mapping):
            raise PlanError("a plan is a JSON object")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise PlanError(f"unknown plan field(s): {', '.join(unknown)}; known fields: {', '.join(sorted(names))}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> Plan:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PlanError(f"the plan is not valid JSON: {exc}") from exc
        return cls.from_dict(data)


@cache
def plan_fields() -> tuple[PlanField, ...]:
    """Every field of ``Plan`` in declaration order, with its default and ``FieldSpec``."""
    return tuple(PlanField(f.name, f.default, f.metadata["spec"]) for f in dataclasses.fields(Plan))


def plan_field(name: str) -> PlanField:
    """The field called ``name`` (KeyError if there is none)."""
    return _FIELDS[name]


_FIELDS: dict[str, PlanField] = {f.name: f for f in plan_fields()}


def _checked(f: PlanField, value: Any) -> Any:
    """``value`` if valid for ``f`` (lists become tuples), else ``PlanError`` naming the field and what it takes."""
    s, name = f.spec, f.name
    if s.kind == "choice":
        if value not in s.choices:
            raise PlanError(f"{name} must be {f.bounds_text()}; got {value!r}")
    elif s.kind == "bool":
        if not isinstance(value, bool):
            raise PlanError(f"{name} must be true or false; got {value!r}")
    elif s.kind == "tristate":
        if value is not None and not isinstance(value, bool):
            raise PlanError(f"{name} must be true, false or null; got {value!r}")
    elif s.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise PlanError(f"{name} must be an integer; got {value!r}")
        _check_range(f, value)
    elif s.kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise PlanError(f"{name} must be a number {f.bounds_text()}; got {value!r}")
        _check_range(f, value)
    elif s.kind in ("modules", "targets"):
        return _modules(f, value)
    elif s.kind == "model":
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise PlanError(f"{name} must be a non-empty Hub id like 'meta-llama/Llama-3.1-8B' or a catalog id")
        if value is not None and s.max_length and len(value) > s.max_length:
            raise PlanError(f"{name} must have at most {s.max_length} characters")
    elif s.kind == "gpu" and value is not None:
        if isinstance(value, str) and s.max_length and len(value) > s.max_length:
            raise PlanError(f"{name} must have at most {s.max_length} characters")
        try:
            return catalog.canonical_gpu(value)
        except catalog.GpuLookupError as exc:
            raise PlanError(exc.message) from None
    elif s.kind == "pair":
        return _pair(f, value)
    elif s.kind == "config" and value is not None and not isinstance(value, Mapping):
        raise PlanError(f"{name} must be a JSON object (the contents of config.json)")
    return value


def _check_range(f: PlanField, value: float) -> None:
    s = f.spec
    low_bad = s.low is not None and (value <= s.low if s.low_open else value < s.low)
    high_bad = s.high is not None and (value >= s.high if s.high_open else value > s.high)
    if low_bad or high_bad:
        raise PlanError(f"{f.name} must be {f.bounds_text()}; got {value}")


def parse_pair(value: Any) -> Any:
    """``"448x448"``, ``"448,448"`` or ``"448 448"`` as ``[448, 448]``, an empty text as None; anything else as given
    (the plan then says what a pair must be). How the CLI and query strings write a ``pair`` field."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if not text:
        return None
    parts = [p for p in text.lower().replace("×", "x").replace(",", "x").replace(" ", "x").split("x") if p]
    if len(parts) == 2 and all(p.isdigit() and len(p) <= 9 for p in parts):
        return [int(parts[0]), int(parts[1])]
    return value


def _pair(f: PlanField, value: Any) -> tuple[int, int] | None:
    """A ``pair`` value: None, or two integers within the bounds (a list becomes a tuple)."""
    if value is None:
        return None
    ok = isinstance(value, list | tuple) and len(value) == 2
    if not ok or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise PlanError(f"{f.name} must be {f.bounds_text()} or null; got {value!r}")
    for v in value:
        _check_range(f, v)
    return (value[0], value[1])


def _modules(f: PlanField, value: Any) -> Any:
    if f.spec.kind == "targets" and value == "all-linear":
        return value
    what = "'all-linear' or a list of module names" if f.spec.kind == "targets" else "a list of module names"
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise PlanError(f"{f.name} must be {what}; got {value!r}")
    if not all(isinstance(t, str) and 0 < len(t) <= MAX_MODULE_NAME for t in value):
        raise PlanError(f"{f.name} must be {what} of 1 to {MAX_MODULE_NAME} characters each")
    if len(value) > MAX_MODULES:
        raise PlanError(f"{f.name} lists {len(value)} modules; at most {MAX_MODULES}")
    if f.spec.kind == "targets" and not value:
        raise PlanError(f"{f.name} is empty: name at least one module, or use 'all-linear'")
    return tuple(value)
