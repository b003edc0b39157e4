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
from ._inventory import EMBEDDING, LINEAR_KINDS, Inventory, Tensor
from ._plan import Plan


@dataclass(frozen=True)
class Adapted:
    """One adapted module (repeated over ``layers``)."""

    module: str
    in_features: int
    out_features: int
    layers: int
    embedding: bool = False

    def params(self, r: int, dora: bool) -> int:
        per = r * (self.in_features + self.out_features) + (self.out_features if dora and not self.embedding else 0)
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
        n = sum(a.layers * (3 if dora and not a.embedding else 2) for a in self.adapted)
        return n + sum(t.layers for t in self.saved_modules)


def _matches(module: str, targets: tuple[str, ...]) -> bool:
    name = module.replace("{i}", "0")
    return any(name == t or name.endswith("." + t) for t in targets)


def adapter_plan(inv: Inventory, plan: Plan) -> AdapterPlan:
    """The adapted modules and trainable parameter counts of a LoRA / QLoRA plan."""
    if not plan.adapters:
        return AdapterPlan((), (), 0, 0)
    weights = [t for t in inv if not t.is_bias]
    adapted: list[Adapted] = []
    if plan.target_modules == "all-linear":
        for t in weights:
            if t.kind in LINEAR_KINDS and t.role != "lm_head":
                adapted.append(Adapted(t.module, t.in_features, t.out_features, t.layers))
    else:
        targets = tuple(plan.target_modules)
        unmatched = set(targets)
        for t in weights:
            if not _matches(t.module, targets):
                continue
            unmatched -= {x for x in targets if _matches(t.module, (x,))}
            if t.kind in LINEAR_KINDS:
                adapted.append(Adapted(t.module, t.in_features, t.out_features, t.layers))
            elif t.kind == EMBEDDING:
                adapted.append(Adapted(t.module, t.shape[0], t.shape[1], t.layers, embedding=True))
            else:
                raise PlanError(
                    f"target module {t.module.replace('{i}', 'N')!r} is a {t.kind} module, which LoRA cannot "
                    "adapt; target linear layers (e.g. q_proj, v_proj) or use 'all-linear'"
                )
        if unmatched == set(targets):
            names = sorted({t.leaf for t in weights if t.kind in LINEAR_KINDS})
            raise PlanError(
                f"target_modules {sorted(targets)} match no module of this model; its linear modules are: "
                + ", ".join(names)
            )
    saved: list[Tensor] = []
    for t in inv:
        if plan.modules_to_save and _matches(t.module, plan.modules_to_save):
            saved.append(t)
    if plan.modules_to_save and not saved:
        raise PlanError(f"modules_to_save {list(plan.modules_to_save)} match no module of this model")
    lora = sum(a.params(plan.lora_r, plan.use_dora) for a in adapted)
    return AdapterPlan(tuple(adapted), tuple(saved), lora, sum(t.total for t in saved))
