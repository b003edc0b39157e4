"""Which modules PEFT adapts, and how many trainable parameters that makes.

Matching follows PEFT 0.2x: ``all-linear`` takes every ``nn.Linear`` (subclasses included) and ``Conv1D`` except
the output embedding (``lm_head``); a list matches a module whose full name equals an entry or ends with
``"." + entry``. LoRA on a linear adds ``lora_A`` (r × in) and ``lora_B`` (out × r); on an embedding
``lora_embedding_A`` (r × V) and ``lora_embedding_B`` (h × r); DoRA adds a magnitude vector of ``out``.
``modules_to_save`` adds a full trainable copy of each named module. Tests hold the counts equal to
``PeftModel.get_nb_trainable_parameters()``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._errors import PlanError
from ._inventory import (
    EMBEDDING,
    EXPERTS,
    HEAD_INPUT,
    LINEAR,
    LINEAR_KINDS,
    OPAQUE_LINEAR,
    ROUTER,
    Inventory,
    Tensor,
)
from ._plan import Plan


@dataclass(frozen=True)
class Adapted:
    """One adapted module (repeated over ``layers``)."""

    module: str
    in_features: int
    out_features: int
    layers: int
    embedding: bool = False
    reads: str = ""  # the activation the module reads (``Tensor.reads`` of the inventory tensor it adapts)

    def params(self, r: int, dora: bool) -> int:
        per = r * (self.in_features + self.out_features) + (self.out_features if dora else 0)
        return per * self.layers


@dataclass(frozen=True)
class AdapterPlan:
    adapted: tuple[Adapted, ...]
    saved_modules: tuple[Tensor, ...]  # tensors of modules_to_save (their trainable copies)
    lora_params: int
    saved_params: int

    @property
    def trainable(self) -> int:
        return self.lora_params + self.saved_params

    def tensor_count(self, dora: bool) -> int:
        """Number of trainable parameter tensors (AdamW keeps one ``step`` scalar each)."""
        n = sum(a.layers * (3 if dora else 2) for a in self.adapted)
        return n + sum(t.layers for t in self.saved_modules)


SEQ_CLS_SAVED: tuple[str, ...] = ("classifier", "score")
"""What PEFT adds to ``modules_to_save`` for a ``SEQ_CLS`` task (a reward model): ``PeftModelForSequenceClassification``
names the usual classification heads, so the one-logit ``score`` gets a trainable copy (``ModulesToSaveWrapper``:
the original stays, frozen, next to it; the copy is what the forward runs)."""


def _matches(module: str, targets: tuple[str, ...]) -> bool:
    name = module.replace("{i}", "0")
    return any(name == t or name.endswith("." + t) for t in targets)


# PEFT 0.21 on transformers 5 maps the v4 names of MoE routers and experts onto their v5 parameters
# (``target_parameters``) for the model types transformers' conversion mapping files under mixtral or qwen2_moe
# (``transformers.conversion_mapping._MODEL_TO_CONVERSION_PATTERN``; qwen2_moe itself is not remapped);
# ``all-linear`` takes them all. The router weight (E × h) gets LoRA like a linear; each fused expert parameter
# (E × out × in) a ParamWrapper with lora_A (k·r·E × in) and lora_B (out × k·r·E), k the number of v4 linears fused
# into it (gate_up_proj: 2). It is recorded as an ``Adapted`` of k·E·in → k·E·out so that r·in and out·r are the
# sizes of its two tensors. The v4 names are consumed by the remap: a dense or shared-expert linear with the same
# name (DeepSeek's first layers, GLM-4 MoE's shared experts) is then not adapted, by name or by ``all-linear``.
_MIXTRAL_V4 = {"gate": "gate", "w1": "gate_up_proj", "w3": "gate_up_proj", "w2": "down_proj"}
_QWEN2_MOE_V4 = {"gate": "gate", "gate_proj": "gate_up_proj", "up_proj": "gate_up_proj", "down_proj": "down_proj"}
_MOE_V4_NAMES = {
    "mixtral": _MIXTRAL_V4,
    **dict.fromkeys(("qwen3_moe", "deepseek_v2", "deepseek_v3", "glm4_moe", "olmoe"), _QWEN2_MOE_V4),
}


def _moe_parameter_targets(
    inv: Inventory, plan: Plan, targets: tuple[str, ...] | None
) -> tuple[list[Adapted], set[str]]:
    """Adapted router/expert parameters and the target names they consume (``targets`` None: all-linear)."""
    names = _MOE_V4_NAMES.get(inv.arch.model_type)
    if not names:
        return [], set()
    used = {t: o for t in (names if targets is None else targets) for o in names if t == o or t.endswith("." + o)}
    params = {names[o] for o in used.values()}
    fused = {o for o, new in names.items() if new == "gate_up_proj"}
    if "gate_up_proj" in params and not fused <= set(used.values()):
        raise PlanError(f"target {' and '.join(sorted(fused))} together: they are fused into gate_up_proj")
    adapted: list[Adapted] = []
    for t in inv:
        leaf = t.name.rsplit(".", 2)[-2] if t.kind == ROUTER else t.name.rsplit(".", 1)[-1]
        if t.kind == ROUTER and leaf in params:
            adapted.append(Adapted(t.module, t.shape[1], t.shape[0], t.layers, reads=t.reads))
        elif t.kind == EXPERTS and leaf in params:
            k, (e, out_f, in_f) = (2 if leaf == "gate_up_proj" else 1), t.shape
            adapted.append(Adapted(t.name, k * e * in_f, k * e * out_f, t.layers, reads=t.reads))
    if adapted and plan.use_dora:
        raise PlanError("use_dora is not supported on MoE router and expert parameters (PEFT's ParamWrapper)")
    if adapted and plan.lora_dropout:
        raise PlanError(
            "LoRA on MoE router and expert parameters needs lora_dropout 0 (PEFT's ParamWrapper); set it to 0 "
            "or target the attention projections only"
        )
    return adapted, set(used)


def adapter_plan(inv: Inventory, plan: Plan) -> AdapterPlan:
    """The adapted modules and trainable parameter counts of a LoRA / QLoRA plan."""
    if not plan.adapters:
        return AdapterPlan((), (), 0, 0)
    candidates = list(inv)
    if not any(t.name == "lm_head.weight" for t in inv):  # tied: still a module PEFT can adapt or copy
        arch = inv.arch
        shape = (arch.vocab_size, arch.hidden_size)
        candidates.append(Tensor("lm_head.weight", shape, "lm_head", "lm_head", LINEAR, reads=HEAD_INPUT))
    weights = [t for t in candidates if not t.is_bias]
    adapted: list[Adapted] = []
    if plan.target_modules == "all-linear":
        adapted += _moe_parameter_targets(inv, plan, None)[0]
        consumed_v4 = set(_MOE_V4_NAMES.get(inv.arch.model_type, {}))
        for t in weights:
            if t.kind in LINEAR_KINDS and t.role != "lm_head" and t.leaf not in consumed_v4:
                adapted.append(Adapted(t.module, t.in_features, t.out_features, t.layers, reads=t.reads))
    else:
        moe, consumed = _moe_parameter_targets(inv, plan, tuple(plan.target_modules))
        adapted += moe
        targets = tuple(x for x in plan.target_modules if x not in consumed)
        unmatched = set(targets)
        for t in weights:
            if not _matches(t.module, targets):
                continue
            unmatched -= {x for x in targets if _matches(t.module, (x,))}
            if t.kind in LINEAR_KINDS:
                adapted.append(Adapted(t.module, t.in_features, t.out_features, t.layers, reads=t.reads))
            elif t.kind == EMBEDDING:
                adapted.append(Adapted(t.module, t.shape[0], t.shape[1], t.layers, embedding=True, reads=t.reads))
            else:
                raise PlanError(
                    f"target module {t.module.replace('{i}', 'N')!r} is a {t.kind} module, which LoRA cannot "
                    "adapt; target linear layers (e.g. q_proj, v_proj) or use 'all-linear'"
                )
        if unmatched == set(plan.target_modules):
            names = sorted({t.leaf for t in weights if t.kind in LINEAR_KINDS})
            raise PlanError(
                f"target_modules {sorted(targets)} match no module of this model; its linear modules are: "
                + ", ".join(names)
            )
    opaque = sorted({t.module for t in weights if t.kind == OPAQUE_LINEAR} & {a.module for a in adapted})
    if opaque:
        runs = sorted({t.leaf for t in weights if t.kind in LINEAR_KINDS and t.kind != OPAQUE_LINEAR})
        raise PlanError(
            f"LoRA on {opaque[0].replace('{i}', 'N')!r} cannot run: it is an nn.Linear subclass whose forward does "
            "not return a tensor (Llama 4's router returns a tuple), which PEFT's LoRA layer cannot wrap (its forward "
            "fails); 'all-linear' takes it too. "
            "Name the targets instead, from: " + ",".join(n for n in runs if n != "lm_head")
        )
    saved: list[Tensor] = []
    to_save = (*plan.modules_to_save, *SEQ_CLS_SAVED) if plan.objective == "reward" else plan.modules_to_save
    for t in candidates:
        # PEFT matches modules_to_save by a plain suffix ("norm" takes input_layernorm too)
        if any(t.module.replace("{i}", "0").endswith(x) for x in to_save):
            saved.append(t)
    if plan.modules_to_save and not saved:
        raise PlanError(f"modules_to_save {list(plan.modules_to_save)} match no module of this model")
    lora = sum(a.params(plan.lora_r, plan.use_dora) for a in adapted)
    return AdapterPlan(tuple(adapted), tuple(saved), lora, sum(t.total for t in saved))
