"""Defaults that cannot apply to a model, changed with a note saying so; values a user chose are kept.

The plan's defaults are one recipe for every model, and two of them do not fit every catalog model: a 2,048-token
``seq_len`` is beyond the context of a model such as GPT-2 (1,024 positions), and LoRA dropout 0.05 cannot run on
the fused expert parameters of a transformers 5 MoE model (Mixtral, Qwen3-MoE), which ``all-linear`` targets: PEFT's
``ParamWrapper`` takes no dropout. A value still at its default is changed to the nearest one that runs, and the
estimate says what it changed (``Adjustment``); a value the user set is kept, and refused with a message that says
what to change when it cannot run. A value equal to the default counts as the default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._errors import PlanError
from ._inventory import Inventory
from ._lora import adapter_plan
from ._plan import Plan, plan_field


@dataclass(frozen=True)
class Adjustment:
    """A plan default changed for this model: the field, its value before and after, and why."""

    field: str
    before: Any
    after: Any
    why: str

    def to_dict(self) -> dict[str, Any]:
        return {"field": self.field, "from": self.before, "to": self.after, "why": self.why}

    @property
    def note(self) -> str:
        return f"{self.field} {self.before} → {self.after}: {self.why}"


def adjust_defaults(plan: Plan, inv: Inventory) -> tuple[Plan, tuple[Adjustment, ...]]:
    """The plan to estimate for this model, and the defaults it changed (``PlanError`` for a chosen value that
    cannot run: a sequence beyond the context without ``allow_long_context``)."""
    out: list[Adjustment] = []
    context = inv.arch.max_position_embeddings
    if plan.seq_len > context and not plan.allow_long_context:
        default = plan_field("seq_len").default
        if plan.seq_len != default:
            raise PlanError(
                f"seq_len {plan.seq_len:,} exceeds the model's context of {context:,} tokens "
                f"(max_position_embeddings): lower seq_len to at most {context:,}, or set allow_long_context to "
                "estimate sequences beyond it"
            )
        out.append(Adjustment("seq_len", plan.seq_len, context, f"the default {default:,} tokens is beyond this "
                              f"model's context of {context:,} (max_position_embeddings)"))  # fmt: skip
        plan = plan.replace(seq_len=context)
    if plan.adapters and plan.lora_dropout and plan.lora_dropout == plan_field("lora_dropout").default:
        try:
            adapter_plan(inv, plan)
        except PlanError as exc:
            if "lora_dropout" not in str(exc):
                raise
            out.append(Adjustment("lora_dropout", plan.lora_dropout, 0.0, "LoRA on this MoE model's fused expert "
                                  "parameters (which all-linear targets) runs in PEFT's ParamWrapper, which takes no "
                                  "dropout"))  # fmt: skip
            plan = plan.replace(lora_dropout=0.0)
    return plan, tuple(out)


__all__ = ["Adjustment", "adjust_defaults"]
