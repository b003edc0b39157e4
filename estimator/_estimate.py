"""The estimate: plan + config -> parameters, storage, training memory and where it fits."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import catalog
from ._adjust import Adjustment, adjust_defaults
from ._advice import Lever, advise
from ._arch import Architecture, parse_config
from ._errors import PlanError, UnknownModelError, UnsupportedModelError
from ._fit import fit_search
from ._generic import generic_architecture, generic_inventory
from ._inventory import EMBEDDING, EXPERTS, NORM, PARAMETER, Inventory, build_inventory
from ._kernels import AttentionPath
from ._lora import AdapterPlan, adapter_plan
from ._memory import MemoryEstimate, dtype_flow, experts_quantized, fit_bytes_with, training_memory
from ._objective import objective_inventory, vllm_reserved
from ._plan import Plan
from ._prices import PriceTable, cost_rows, default_prices
from ._runtime import CalibrationProfile, runtime_for
from ._serving import ServingEstimate, serving_memory
from ._shape import step_shape
from ._storage import storage
from ._time import TimeEstimate, step_time
from ._units import GIB, gib_text
from ._vision import VIDEO_MODEL_TYPES, VISION_MODEL_TYPES, pooling_error

SCHEMA_VERSION = 1

WEIGHTS_WHY = {
    "qlora": "only the linear layers are 4-bit (about 4.127 bits each with double quantization); embeddings, lm_head "
    "and norms stay 16-bit, and prepare_model_for_kbit_training makes them fp32",
    "lora": "the frozen base in its 16-bit dtype, each tensor a separate allocation",
    "full": "the trained weights as held (fp32 masters under mixed precision)",
}
STEP_WHY = {
    "reference": "the objective's frozen reference model (a copy of the weights, or PEFT's 'ref' adapter copy)",
    "gradients": "one gradient per trainable parameter, live at the peak",
    "optimizer": "the optimizer's state (AdamW: two moments per trainable parameter)",
    "activations": "what the forward keeps for the backward, or the step's temporaries at the peak",
    "logits": "the lm_head's b·s·V logits and their fp32 copies in the cross-entropy",
    "overhead": "the CUDA context, kernels and cuBLAS workspace: outside the model's tensors",
    "allocator_cache": "freed blocks torch's caching allocator keeps reserved",
    "optimizer_paged": "paged optimizer state in CUDA managed memory",
}


@dataclass(frozen=True)
class Estimate:
    plan: Plan
    model_id: str | None
    source: str
    arch: Architecture
    inventory: Inventory
    adapters: AdapterPlan
    storage: dict[str, Any]
    memory: MemoryEstimate
    fits: tuple[dict[str, Any], ...]
    fit: dict[str, Any] | None = None
    time: TimeEstimate | None = None
    prices: PriceTable | None = None
    serving: ServingEstimate | None = None
    advice: tuple[Lever, ...] = ()
    """The make-it-fit advisor's levers, best first (``estimator._advice``)."""
    adjusted: tuple[Adjustment, ...] = ()
    """Plan defaults changed for this model (``estimator._adjust``): ``plan`` is the plan after them."""

    def cost(self) -> list[dict[str, Any]]:
        """The plan's cost at every listed price of its GPU (empty without a GPU or a price for it)."""
        if self.time is None or self.prices is None:
            return []
        return cost_rows(self.time, self.prices)

    def params(self) -> dict[str, Any]:
        inv = self.inventory
        roles = inv.by_role()
        trainable = inv.total if self.plan.method == "full" else self.adapters.trainable
        return {
            "total": inv.total,
            "trainable": trainable,
            "trainable_percent": round(100.0 * trainable / inv.total, 4) if inv.total else 0.0,
            "quantized": (
                inv.quantizable
                + (sum(t.total for t in inv.tensors if t.kind == EXPERTS) if experts_quantized(self.plan) else 0)
            )
            if self.plan.quantized
            else 0,
            "quantizable": inv.quantizable,
            "embedding": roles.get("embedding", 0) + roles.get("position_embedding", 0),
            "lm_head": roles.get("lm_head", 0),
            "vision": sum(t.total for t in inv.tensors if t.role == "vision"),  # the tower and its projector
            "lora": self.adapters.lora_params,
            "modules_to_save": self.adapters.saved_params,
            "adapted_modules": sum(a.layers for a in self.adapters.adapted),
            "by_role": roles,
        }

    def inputs(self) -> dict[str, int]:
        """What one step's forward runs on: rows, tokens per row (text and, for a vision-language model, the image
        and video tokens its processors insert) and the patches the vision encoder sees (images' and videos')."""
        shape = step_shape(self.arch, self.plan)
        return {
            "rows": shape.rows,
            "tokens_per_row": shape.length,
            "text_tokens_per_row": shape.text,
            "image_tokens_per_row": shape.image_tokens,
            "video_tokens_per_row": shape.video_tokens,
            "vision_patches": shape.patches,
            "patches_per_image": shape.patches_per_image,
            "patches_per_video": shape.patches_per_video,
        }

    def to_dict(self) -> dict[str, Any]:
        arch = self.arch
        per_gpu = self.memory.total
        return {
            "schema_version": SCHEMA_VERSION,
            "model": {
                "id": self.model_id,
                "source": self.source,
                "model_type": arch.source_model_type or arch.model_type,
                "architecture": {
                    "vocab_size": arch.vocab_size,
                    "hidden_size": arch.hidden_size,
                    "intermediate_size": arch.intermediate_size,
                    "num_hidden_layers": arch.num_hidden_layers,
                    "num_attention_heads": arch.num_attention_heads,
                    "num_key_value_heads": arch.num_key_value_heads,
                    "head_dim": arch.head_dim,
                    "max_position_embeddings": arch.max_position_embeddings,
                    "tie_word_embeddings": arch.tie_word_embeddings,
                    "num_experts": arch.num_experts,
                    "num_experts_per_tok": arch.num_experts_per_tok,
                },
                "notes": list(arch.notes),
            },
            "plan": self.plan.to_dict() | {"config": None},
            "params": self.params(),
            "inputs": self.inputs(),
            "storage": self.storage,
            "memory": self.memory.to_dict() | {"per_gpu": per_gpu, "num_gpus": self.plan.num_gpus},
            "fits": list(self.fits),
            "fit": self.fit,
            "time": None if self.time is None else self.time.to_dict(),
            "cost": self.cost(),
            "serving": self.serving_dict(),
            "rule_to_peak": self.rule_to_peak(),
            "adjusted": [a.to_dict() for a in self.adjusted],
            "advice": [lever.to_dict() for lever in self.advice],
            "notes": explain(self),
        }

    def rule_to_peak(self) -> dict[str, Any]:
        """From the rule of thumb to the estimate's total, one named step per component (bytes added, with why):
        ``{"method", "rule", "rule_text", "steps": [{"key", "label", "bytes", "why"}], "total"}``. The rule is
        params × 0.5 B plus a 16-bit adapter for QLoRA (what "4-bit fits" quotes), params × 2 B otherwise; the
        steps add up from it to ``memory.total`` exactly (the seed's "a 4.1 GB rule becomes 13.5 GiB of peak")."""
        rule = self.storage["rule_of_thumb"]
        mem, plan = self.memory, self.plan
        labels = mem.component_labels
        if plan.method == "qlora":
            start, weights_rule = rule["qlora_total"], rule["int4"]
            text = f"parameters × 0.5 bytes (4-bit) + a 16-bit adapter ({rule['trainable_fraction']:.2%} of them)"
        else:
            start, weights_rule = rule["fp16"], rule["fp16"]
            text = "parameters × 2 bytes (16-bit)"
        comps = dict(mem.components)
        steps = [{"key": "weights", "label": "Weights as held", "bytes": comps["weights"] - weights_rule,
                  "why": WEIGHTS_WHY[plan.method]}]  # fmt: skip
        if plan.method == "qlora":
            steps.append(
                {
                    "key": "adapters",
                    "label": "Adapters as held",
                    "bytes": comps["adapters"] - rule["adapter"],
                    "why": "the rule counts the adapter at 2 bytes per parameter; PEFT keeps it in fp32",
                }
            )
        elif comps["adapters"]:
            steps.append({"key": "adapters", "label": labels["adapters"], "bytes": comps["adapters"],
                          "why": "LoRA A/B in fp32 (PEFT's autocast_adapter_dtype)"})  # fmt: skip
        for key in ("gradients", "optimizer", "reference", "activations", "logits", "overhead", "allocator_cache",
                    "optimizer_paged"):  # fmt: skip
            if comps[key]:
                steps.append({"key": key, "label": labels[key], "bytes": comps[key], "why": STEP_WHY[key]})
        assert start + sum(st["bytes"] for st in steps) == mem.total
        return {"method": plan.method, "rule": start, "rule_text": text, "steps": steps, "total": mem.total}

    def serving_dict(self) -> dict[str, Any] | None:
        """``serving``: the memory to serve the result, and whether it fits the plan's GPU (when one is named)."""
        if self.serving is None:
            return None
        out = self.serving.to_dict()
        if self.fit is not None:
            out |= {"usable_bytes": self.fit["usable_bytes"], "fits": self.serving.total <= self.fit["usable_bytes"]}
        return out


def config_for(plan: Plan, config: Mapping[str, Any] | None = None) -> tuple[Mapping[str, Any], str, str | None]:
    """The config to use: an explicit one, the plan's inline one, or the catalog's (config, source, model id)."""
    if config is not None:
        return config, "given", plan.model
    if plan.config is not None:
        return plan.config, "inline", None
    assert plan.model is not None  # Plan guarantees one of the two
    entry = catalog.find_model(plan.model)
    if entry is None:
        family = [m.hf_id for m in catalog.family_matches(plan.model)]
        close = tuple(dict.fromkeys([*family, *(m.hf_id for m in catalog.close_model_matches(plan.model))]))[:5]
        hint = f"; did you mean: {', '.join(close)}" if close else ""
        raise UnknownModelError(
            f"{plan.model!r} is not in the built-in catalog{hint}. Give a catalog id, upload its config.json, "
            "or use the web app/API, which looks Hub ids up on the Hugging Face Hub",
            close,
        )
    return entry.config, "catalog", entry.hf_id


EAGER_TOWERS = {
    "clip": "LLaVA's CLIP tower: its images × heads × positions² scores (577² per head of a 336² image)",
    "siglip": "Gemma 3's SigLIP tower: its images × heads × patches² scores (4096² per head of an 896² image)",
    "pixtral": "Mistral 3's Pixtral tower: its heads × patches² scores over all of the step's images (one sequence)",
    "mllama": "Llama 3.2 Vision's tower and cross-attention layers: each image's heads × (4 tiles × 1032 positions)² "
    "scores, and the text × image-feature scores of every cross-attention layer",
    "qwen3": "Qwen3-VL's tower: each image's heads × patches² scores (4096² per head of a 1024² image)",
}
"""Vision towers whose eager attention is not modelled (their SDPA path is), and the scores eager would keep.
Idefics3's and SmolVLM's tower says so with its other refusals (``images_error``)."""


def _check_images(plan: Plan, arch: Architecture) -> None:
    """``PlanError`` for inputs the estimate cannot count: images on a model without a modelled tower, video on one
    without a video processor (Qwen2-VL, Qwen2.5-VL, Qwen3-VL and Qwen3-VL-MoE have one), a Qwen3-VL video shorter
    than a temporal patch (its processor's resize raises), images Gemma 3's projector cannot pool, configs whose
    tower or projector is not modelled (``VisionTower.refusal``, for images and video alike), and the towers of
    ``EAGER_TOWERS`` under eager attention."""
    images_ok = arch.vision is not None and arch.vision.model_type in VISION_MODEL_TYPES
    video_ok = arch.vision is not None and arch.vision.model_type in VIDEO_MODEL_TYPES
    bad = [(n, w) for n, w, ok in ((plan.images_per_sample, "image", images_ok), (plan.video_frames, "video", video_ok))
           if n and not ok]  # fmt: skip
    if bad:
        what = " and ".join(w for _, w in bad)
        raise PlanError(
            f"{what} inputs of {arch.source_model_type or arch.model_type} are not modelled yet (images are for "
            f"{', '.join(VISION_MODEL_TYPES)}, video for {', '.join(VIDEO_MODEL_TYPES)}): the vision encoder's "
            "activations and the tokens it hands the language model would not be counted, so an estimate would be "
            "low; set images_per_sample and video_frames to 0 and add the tokens the processor makes to seq_len"
        )
    short = arch.vision.temporal_patch_size if arch.vision is not None and arch.vision.kind == "qwen3" else 0
    if 0 < plan.video_frames < short:
        raise PlanError(
            f"a video of {plan.video_frames} frame cannot be processed: Qwen3VLVideoProcessor's resize needs at least "
            f"temporal_patch_size ({short}) frames; give video_frames {short} or more, or a still as an image"
        )
    if plan.images_per_sample and arch.vision is not None and pooling_error(arch.vision):
        raise PlanError(f"this model cannot take images: {pooling_error(arch.vision)}")
    if plan.images_per_sample and arch.vision is not None and arch.vision.kind == "idefics3":
        from ._vision_idefics import images_error

        if images_error(arch.vision, plan):
            raise PlanError(f"this plan's images cannot be counted: {images_error(arch.vision, plan)}")
    if plan.images_per_sample and arch.vision is not None and arch.vision.grid_pinpoints:
        from ._vision_clip import next_plan_error

        if next_plan_error(plan):
            raise PlanError(f"this plan's images cannot be counted: {next_plan_error(plan)}")
    what = " and ".join(w for w, n in (("images", plan.images_per_sample), ("video", plan.video_frames)) if n)
    if what and arch.vision is not None and arch.vision.refusal:
        raise PlanError(
            f"{what} of this model are not modelled yet: {arch.vision.refusal}, so an estimate could be low"
        )
    eager = EAGER_TOWERS.get(arch.vision.kind) if arch.vision is not None else None
    if what and eager is not None and plan.attn_implementation == "eager":
        raise PlanError(
            f"{what} with eager attention are not modelled yet for {eager}, and their backward would not be "
            "counted right, so an estimate could be low; use attn_implementation 'sdpa'"
        )


def estimate(
    plan: Plan,
    config: Mapping[str, Any] | None = None,
    prices: PriceTable | None = None,
    *,
    calibration: CalibrationProfile | None = None,
    with_advice: bool = True,
    params: Sequence[Mapping[str, Any]] | None = None,
    files: Mapping[str, int] | None = None,
) -> Estimate:
    """Estimate storage, training memory and (with a GPU) time and cost of ``plan``. Pure and fast.

    ``prices``: the price table (default: the built-in one). ``calibration``: runtime constants a verify run measured
    on the plan's GPU (the app looks them up); used when ``plan.calibration`` is ``auto`` and the profile is for
    ``plan.gpu``, else the GPU catalog's constants. ``with_advice``: also re-estimate the plan with each lever of
    the make-it-fit advisor (``estimator._advice``; the page's sweeps, which need only the memory, skip it).
    ``params``: the parameters transformers builds for a model type with no hand-written family
    (``trainer.inventory``'s list; the app gets it in a subprocess), used only then. ``files``: the elements
    of each dtype in the model's published safetensors files (the Hub client reads their headers): the download is
    then what the files hold (``estimator._storage.published_bytes``), not what the config implies.
    """
    cfg, source, model_id = config_for(plan, config)
    try:
        arch = parse_config(cfg)
        inv = build_inventory(arch)
    except UnsupportedModelError as exc:
        if params is None:
            raise UnsupportedModelError(
                f"{exc}. With the train extra installed (pip install 'tuneplan[train]'), any other model type "
                "transformers can build is estimated from its own parameter list"
            ) from None
        arch = generic_architecture(cfg)
        inv = generic_inventory(arch, params)
    plan, adjusted = adjust_defaults(plan, inv)
    _check_images(plan, arch)
    gpu = catalog.find_gpu(plan.gpu) if plan.gpu is not None else None  # Plan holds a catalog id or NAME:BYTES
    inv = objective_inventory(inv, plan)
    adapters = adapter_plan(inv, plan)
    usable = calibration if calibration_applies(plan, gpu, calibration) else None
    runtime = runtime_for(plan.gpu, usable)
    mem = training_memory(inv, adapters, plan, runtime=runtime)
    fit = time = None
    if gpu is not None and plan.device == "cuda":
        # The fit search evaluates the catalog's constants; a calibration shifts the usable memory by what it
        # changes at the plan's own point (its context, runtime and workspace are constants).
        shift = 0 if usable is None else mem.fit_bytes - training_memory(inv, adapters, plan).fit_bytes
        room = training_usable(plan, gpu)
        fit = _search(inv, adapters, plan, room - shift, mem.fit_bytes - shift) | {
            "usable_bytes": room,
            "gpu": gpu.id,
            "name": gpu.name,
            "fits": mem.fit_bytes <= room and _reason(plan, gpu, mem) is None,
            "headroom_bytes": room - mem.fit_bytes,
            "reason": _reason(plan, gpu, mem),
            "host": host_check(plan, mem),
        }
        time = None if gpu.custom else step_time(inv, adapters, plan, gpu)
    return Estimate(
        plan=plan,
        model_id=model_id,
        source=source,
        arch=arch,
        inventory=inv,
        adapters=adapters,
        storage=storage(inv, adapters, plan, files),
        memory=mem,
        fits=tuple(fits(mem.fit_bytes, plan, _per_architecture(inv, adapters, plan, mem), host_check(plan, mem))),
        fit=fit,
        time=time,
        prices=default_prices() if prices is None else prices,
        serving=serving_memory(inv, adapters, plan, mem.runtime),
        adjusted=adjusted,
        advice=advise(inv, plan, mem, runtime, None if gpu is None else training_usable(plan, gpu))
        if with_advice
        else (),
    )


def _search(inv: Inventory, adapters: AdapterPlan, plan: Plan, usable: int, fit_bytes: int) -> dict[str, Any]:
    """The fit search (``fit_bytes``: the plan's own figure, as the search evaluates it); where a pinned SDPA backend
    cannot run at some batch size or length it searches (a single row has no padding mask, so grouped KV heads go
    to SDPA as they are), torch's own choice stands in there."""
    try:
        return fit_search(inv, adapters, plan, usable, fit_bytes) | {"note": None}
    except PlanError as exc:
        note = f"the search used torch's own SDPA choice where the pinned one cannot run ({exc})"
        return fit_search(inv, adapters, plan.replace(sdpa_backend="auto"), usable) | {"note": note}


def calibration_applies(plan: Plan, gpu: catalog.GPU | None, calibration: CalibrationProfile | None) -> bool:
    """Whether a calibration profile is used: ``plan.calibration`` is ``auto`` and it is for the plan's GPU."""
    return calibration is not None and plan.calibration == "auto" and gpu is not None and calibration.gpu == gpu.id


def _per_architecture(inv: Inventory, adapters: AdapterPlan, plan: Plan, mem: MemoryEstimate) -> dict[str, int]:
    """The fit figure on each catalog GPU architecture, for the GPU list: the tensors of the attention kernel torch
    picks there (one estimate per distinct kernel; flash and cuDNN keep the same tensors without a mask) with that
    architecture's runtime constants. The plan's own GPU keeps the estimate's (maybe calibrated) figure; a backend
    the plan pins that some architecture cannot run is replaced there by torch's own choice."""
    if plan.device != "cuda" or mem.attention is None:
        return {}
    own = catalog.find_gpu(plan.gpu) if plan.gpu is not None else None
    out: dict[str, int] = {own.arch: mem.fit_bytes} if own is not None and not own.custom else {}
    by_kernel: dict[str, MemoryEstimate] = {_kernel_key(mem.attention): mem}
    for g in catalog.gpus():
        if g.arch in out:
            continue
        there = plan.replace(gpu=g.id)
        try:
            key = _kernel_key(dtype_flow(inv, adapters, there).path)
        except PlanError:
            there = there.replace(sdpa_backend="auto")
            key = _kernel_key(dtype_flow(inv, adapters, there).path)
        if key not in by_kernel:
            by_kernel[key] = training_memory(inv, adapters, there)
        out[g.arch] = fit_bytes_with(by_kernel[key], runtime_for(g.id))
    return out


def _kernel_key(path: AttentionPath) -> str:
    backend = "flash" if path.backend == "cudnn" and not path.mask else path.backend
    return f"{path.implementation}/{backend}/{path.mask}"


def training_usable(plan: Plan, gpu: catalog.GPU) -> int:
    """What the training step may use of ``gpu``: its usable memory, less vLLM's reservation when GRPO generates
    with vLLM in the same process (``vllm_mode: colocate``: ``vllm_gpu_memory_utilization`` of the device)."""
    return gpu.usable_bytes - vllm_reserved(plan, gpu.memory_bytes)


def ranks_per_machine(plan: Plan) -> int:
    """Ranks (GPUs) that share one machine's host RAM: the hybrid shard group (a machine's GPUs), else up to 8."""
    if plan.sharding == "fsdp" and plan.fsdp_strategy == "hybrid_shard" and plan.shard_group_size:
        return plan.shard_group_size
    return min(plan.num_gpus, 8)


def host_check(plan: Plan, mem: MemoryEstimate) -> dict[str, Any]:
    """Host RAM against ``plan.host_memory_gib``: every rank of a machine holds ``memory.host_peak`` (FSDP's rank 0
    holds the whole state dict while loading: counted once above the others). ``reason`` says what to change when
    it does not fit; ``checked`` is False without a host size."""
    ranks = ranks_per_machine(plan)
    loading_once = int(mem.host.get("loading", 0)) if mem.host.get("loading_mode") == "full" else 0
    need = ranks * mem.host_peak - (ranks - 1) * loading_once
    have = int(plan.host_memory_gib * GIB)
    out: dict[str, Any] = {"checked": have > 0, "need_bytes": need, "have_bytes": have, "ranks": ranks,
                           "reason": None}  # fmt: skip
    if have and need > have:
        out["reason"] = (
            f"host RAM: {ranks} rank(s) on a machine need {gib_text(need)} of CPU RAM (loading, offload, the "
            f"process) and the plan gives {gib_text(have)} (host_memory_gib): offload less, load on rank 0 only, "
            "or use a machine with more RAM"
        )
    return out


def _reason(plan: Plan, gpu: catalog.GPU, mem: MemoryEstimate) -> str | None:
    return _dtype_reason(plan, gpu) or host_check(plan, mem)["reason"]


def fits(
    per_gpu: int, plan: Plan, per_arch: Mapping[str, int] | None = None, host: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Catalog GPUs, each with whether the plan fits in its usable memory and the headroom: ``per_arch`` gives the
    fit figure on each GPU architecture (else ``per_gpu`` everywhere); ``host``: the host-RAM check
    (``host_check``), whose reason rules every GPU out."""
    out = []
    for g in catalog.gpus():
        need = (per_arch or {}).get(g.arch, per_gpu)
        room = training_usable(plan, g)
        headroom = room - need
        reason = _dtype_reason(plan, g) or (host or {}).get("reason")
        out.append({
            "id": g.id,
            "name": g.name,
            "usable_bytes": room,
            "fits": headroom >= 0 and plan.device == "cuda" and reason is None,
            "headroom_bytes": headroom,
            "utilization": round(need / room, 4) if room > 0 else None,
            "reason": reason,
        })  # fmt: skip
    out.sort(key=lambda r: (not r["fits"], r["usable_bytes"]))
    return out


def _dtype_reason(plan: Plan, gpu: catalog.GPU) -> str | None:
    """Why the plan's dtype cannot run on ``gpu`` (bf16 needs compute capability 8.0+: the catalog lists no bf16
    rate for older cards such as the T4 and V100), or None."""
    if plan.dtype == "bfloat16" and gpu.bf16_tflops is None and not gpu.custom:
        return "no bfloat16 support: use dtype float16"
    return None


def explain(est: Estimate) -> list[str]:
    """Plain-language notes on the largest terms."""
    mem = est.memory
    plan = est.plan
    notes: list[str] = [a.note for a in est.adjusted] + list(mem.notes)
    comps = mem.components
    V = est.arch.vocab_size
    if plan.loss == "standard" and comps["logits"] and comps["logits"] >= 0.2 * mem.peak_allocated:
        notes.append(
            f"logits at a {V:,}-token vocabulary cost {gib_text(comps['logits'])} at the peak "
            f"({plan.batch_size}×{plan.seq_len}×{V:,} in fp32 copies); a chunked loss (loss: chunked, TRL's fused "
            "LM head, what SFTTrainer runs) would remove most of it"
        )
    if comps["activations"] >= 0.3 * mem.peak_allocated and not plan.gradient_checkpointing:
        notes.append(
            f"activations take {gib_text(comps['activations'])}; gradient checkpointing keeps one tensor per layer "
            "and recomputes the rest"
        )
    notes += _qlora_notes(est)
    if not est.arch.config_dtype and est.storage["download_format"] == "16-bit":
        notes.append(
            "the config names no dtype (torch_dtype), so the download is counted at 2 bytes a parameter; files saved "
            "before transformers wrote it are often fp32 (GPT-2's: twice that), and a Hub model's safetensors headers, "
            "where they can be read, give the exact figure"
        )
    if plan.transformers_version == "4.x" and any(t.kind == EXPERTS for t in est.inventory.tensors):
        notes.append(
            "transformers 4.x: the experts' weights are counted as nn.Linear layers (quantized under QLoRA); LoRA on "
            "the experts and the MoE activations are still modelled as transformers 5.x runs them (not measured)"
        )
    if plan.attn_implementation == "eager" and plan.seq_len >= 1024:
        notes.append("eager attention keeps b·a·s² attention probabilities per layer; sdpa or flash_attention_2 "
                     "keep O(s)")  # fmt: skip
    return notes


def _qlora_notes(est: Estimate) -> list[str]:
    """QLoRA: what stays unquantized and what prepare_model_for_kbit_training makes of it, MoE experts apart."""
    plan, inv = est.plan, est.inventory
    if plan.method != "qlora":
        return []
    experts = sum(t.total for t in inv.tensors if t.kind == EXPERTS)
    quantized = inv.quantizable + (experts if experts_quantized(plan) else 0)
    notes: list[str] = []
    if experts and not experts_quantized(plan):
        per = 4 if plan.upcast_non_quantized else 2
        upcast = " and prepare_model_for_kbit_training makes them fp32" if per == 4 else ""
        notes.append(
            f"transformers 5.x keeps the {experts:,} MoE expert parameters as fused 3-D tensors that bitsandbytes "
            f"does NOT quantize: they stay 16-bit{upcast}, {gib_text(per * experts)} of experts; under transformers "
            "4.x (transformers_version 4.x) they are nn.Linear layers that are quantized"
        )
    other = inv.total - quantized - (0 if experts_quantized(plan) else experts)
    if plan.upcast_non_quantized:
        parts = ", ".join(f"{label} {n:,}" for label, n in unquantized_parts(inv).items())
        notes.append(
            f"prepare_model_for_kbit_training upcasts {other:,} non-quantized parameters ({parts}) to fp32: "
            f"{gib_text(4 * other)} instead of {gib_text(2 * other)}"
        )
    return notes


def unquantized_parts(inv: Inventory) -> dict[str, int]:
    """The parameters bitsandbytes leaves unquantized, by what they are (MoE experts apart: their own note): the
    labels say what a derived inventory holds too (a fused 3-D tensor that is not an ``nn.Linear``, a vision
    tower), not only embeddings, lm_head and norms."""
    parts: dict[str, int] = {}
    for t in inv.tensors:
        if t.bnb_quantized or t.kind == EXPERTS:
            continue
        if t.role == "vision":
            label = "vision tower"
        elif t.role == "lm_head":
            label = "lm_head"
        elif t.kind == EMBEDDING or t.role in ("embedding", "position_embedding"):
            label = "embeddings"
        elif t.kind == NORM:
            label = "norms"
        elif t.is_bias:
            label = "biases"
        elif t.kind == PARAMETER:
            label = "other parameters (not nn.Linear: fused experts, routers, scales)"
        else:
            label = "linear layers bitsandbytes skips"
        parts[label] = parts.get(label, 0) + t.total
    return parts


def plan_key(plan: Plan, config: Mapping[str, Any] | None = None) -> str:
    """The SHA-256 (hex) of a plan and the config it is estimated with, as canonical JSON (keys sorted): equal plans
    have equal keys in every process, and two different plans cannot be made to collide (caches, job records)."""
    body = json.dumps(
        {"plan": plan.to_dict(), "config": dict(config) if config is not None else None},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(body.encode()).hexdigest()
