"""The estimate: plan + config -> parameters, storage, training memory and where it fits."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import catalog
from ._arch import Architecture, parse_config
from ._errors import PlanError, UnknownModelError
from ._fit import fit_search
from ._inventory import Inventory, build_inventory
from ._lora import AdapterPlan, adapter_plan
from ._memory import MemoryEstimate, training_memory
from ._plan import Plan
from ._storage import storage
from ._units import gib_text

SCHEMA_VERSION = 1


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

    def params(self) -> dict[str, Any]:
        inv = self.inventory
        roles = inv.by_role()
        trainable = inv.total if self.plan.method == "full" else self.adapters.trainable
        return {
            "total": inv.total,
            "trainable": trainable,
            "trainable_percent": round(100.0 * trainable / inv.total, 4) if inv.total else 0.0,
            "quantized": inv.quantizable if self.plan.quantized else 0,
            "quantizable": inv.quantizable,
            "embedding": roles.get("embedding", 0) + roles.get("position_embedding", 0),
            "lm_head": roles.get("lm_head", 0),
            "lora": self.adapters.lora_params,
            "modules_to_save": self.adapters.saved_params,
            "adapted_modules": sum(a.layers for a in self.adapters.adapted),
            "by_role": roles,
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
            "storage": self.storage,
            "memory": self.memory.to_dict() | {"per_gpu": per_gpu, "num_gpus": self.plan.num_gpus},
            "fits": list(self.fits),
            "fit": self.fit,
            "notes": explain(self),
        }


def config_for(plan: Plan, config: Mapping[str, Any] | None = None) -> tuple[Mapping[str, Any], str, str | None]:
    """The config to use: an explicit one, the plan's inline one, or the catalog's (config, source, model id)."""
    if config is not None:
        return config, "given", plan.model
    if plan.config is not None:
        return plan.config, "inline", None
    assert plan.model is not None  # Plan guarantees one of the two
    entry = catalog.find_model(plan.model)
    if entry is None:
        close = tuple(m.hf_id for m in catalog.close_model_matches(plan.model))
        hint = f"; did you mean: {', '.join(close)}" if close else ""
        raise UnknownModelError(
            f"{plan.model!r} is not in the built-in catalog{hint}. Give a catalog id, upload its config.json, "
            "or use the web app/API, which looks Hub ids up on the Hugging Face Hub",
            close,
        )
    return entry.config, "catalog", entry.hf_id


def estimate(plan: Plan, config: Mapping[str, Any] | None = None) -> Estimate:
    """Estimate storage and training memory of ``plan``. Pure and fast (well under a millisecond)."""
    cfg, source, model_id = config_for(plan, config)
    arch = parse_config(cfg)
    if plan.seq_len > arch.max_position_embeddings and not plan.allow_long_context:
        raise PlanError(
            f"seq_len {plan.seq_len} exceeds the model's context of {arch.max_position_embeddings} tokens "
            "(max_position_embeddings); lower seq_len or set allow_long_context"
        )
    inv = build_inventory(arch)
    adapters = adapter_plan(inv, plan)
    mem = training_memory(inv, adapters, plan)
    fit = None
    gpu = catalog.find_gpu(plan.gpu) if plan.gpu is not None else None
    if plan.gpu is not None and gpu is None:
        close = catalog.close_gpu_matches(plan.gpu)
        hint = f"did you mean {', '.join(g.id for g in close)}? " if close else ""
        raise PlanError(
            f"gpu {plan.gpu[:100]!r} is not in the GPU catalog: {hint}'tuneplan gpus' or GET /api/gpus lists the ids"
        )
    if gpu is not None and plan.device == "cuda":
        fit = fit_search(inv, adapters, plan, gpu.usable_bytes, mem.fit_bytes) | {
            "gpu": gpu.id,
            "name": gpu.name,
            "fits": mem.fit_bytes <= gpu.usable_bytes and _dtype_reason(plan, gpu) is None,
            "headroom_bytes": gpu.usable_bytes - mem.fit_bytes,
            "reason": _dtype_reason(plan, gpu),
        }
    return Estimate(
        plan=plan,
        model_id=model_id,
        source=source,
        arch=arch,
        inventory=inv,
        adapters=adapters,
        storage=storage(inv, adapters, plan),
        memory=mem,
        fits=tuple(fits(mem.fit_bytes, plan)),
        fit=fit,
    )


def fits(per_gpu: int, plan: Plan) -> list[dict[str, Any]]:
    """Catalog GPUs, each with whether the per-GPU total fits in its usable memory and the headroom."""
    out = []
    for g in catalog.gpus():
        headroom = g.usable_bytes - per_gpu
        reason = _dtype_reason(plan, g)
        out.append({
            "id": g.id,
            "name": g.name,
            "usable_bytes": g.usable_bytes,
            "fits": headroom >= 0 and plan.device == "cuda" and reason is None,
            "headroom_bytes": headroom,
            "utilization": round(per_gpu / g.usable_bytes, 4) if g.usable_bytes else None,
            "reason": reason,
        })  # fmt: skip
    out.sort(key=lambda r: (not r["fits"], r["usable_bytes"]))
    return out


def _dtype_reason(plan: Plan, gpu: catalog.GPU) -> str | None:
    """Why the plan's dtype cannot run on ``gpu`` (bf16 needs compute capability 8.0+: the catalog lists no bf16
    rate for older cards such as the T4 and V100), or None."""
    if plan.dtype == "bfloat16" and gpu.bf16_tflops is None:
        return "no bfloat16 support: use dtype float16"
    return None


def explain(est: Estimate) -> list[str]:
    """Plain-language notes on the largest terms."""
    mem = est.memory
    plan = est.plan
    notes: list[str] = list(mem.notes)
    comps = mem.components
    V = est.arch.vocab_size
    if comps["logits"] and comps["logits"] >= 0.2 * mem.peak_allocated:
        notes.append(
            f"logits at a {V:,}-token vocabulary cost {gib_text(comps['logits'])} at the peak "
            f"({plan.batch_size}×{plan.seq_len}×{V:,} in fp32 copies); a chunked or fused cross-entropy "
            "(e.g. Liger) would remove most of it"
        )
    if comps["activations"] >= 0.3 * mem.peak_allocated and not plan.gradient_checkpointing:
        notes.append(
            f"activations take {gib_text(comps['activations'])}; gradient checkpointing keeps one tensor per layer "
            "and recomputes the rest"
        )
    if plan.method == "qlora" and plan.upcast_non_quantized:
        non_q = est.inventory.total - est.inventory.quantizable
        notes.append(
            f"prepare_model_for_kbit_training upcasts {non_q:,} non-quantized parameters (embeddings, lm_head, "
            f"norms) to fp32: {gib_text(4 * non_q)} instead of {gib_text(2 * non_q)}"
        )
    if plan.attn_implementation == "eager" and plan.seq_len >= 1024:
        notes.append("eager attention keeps b·a·s² attention probabilities per layer; sdpa or flash_attention_2 "
                     "keep O(s)")  # fmt: skip
    return notes


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
