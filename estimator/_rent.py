"""Which GPU to rent: every catalog GPU and count that fits the plan, with its time and cost, cheapest first.

For each count in ``COUNTS`` the plan's memory is estimated once (``num_gpus`` changes only what sharding splits);
each catalog GPU where the per-GPU figure fits (and the plan's dtype runs) becomes an option with the step time on
that card and the cost at its cheapest listed price. Options are sorted by the run's cost when the plan gives a
token budget (``train_tokens``, or ``dataset_tokens`` × ``epochs``), else by the cost per million tokens; options
without a price for their GPU follow, fastest first. The plan's own ``gpu`` and ``num_gpus`` are ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import catalog
from ._arch import parse_config
from ._errors import PlanError
from ._estimate import _dtype_reason, config_for, training_usable
from ._inventory import Inventory, build_inventory
from ._lora import AdapterPlan, adapter_plan
from ._memory import training_memory
from ._objective import objective_inventory
from ._plan import Plan
from ._prices import PriceTable, cost_rows, default_prices
from ._time import step_time

COUNTS = (1, 2, 4, 8)


def rent(plan: Plan, config: Mapping[str, Any] | None = None, prices: PriceTable | None = None) -> dict[str, Any]:
    """Every catalog GPU × count in ``COUNTS`` that fits ``plan``, with time and cost, cheapest first."""
    if plan.device != "cuda":
        raise PlanError("renting a GPU is for plans with device 'cuda'")
    table = default_prices() if prices is None else prices
    cfg, _, model_id = config_for(plan, config)
    inv = objective_inventory(build_inventory(parse_config(cfg)), plan)
    adapters = adapter_plan(inv, plan)
    options: list[dict[str, Any]] = []
    checked = 0
    for n in COUNTS:
        try:
            counted = plan.replace(num_gpus=n, gpu=None)
        except PlanError:  # a hybrid shard group that does not divide this count
            continue
        per_arch: dict[str, int | None] = {}  # the attention kernel and runtime constants follow the architecture
        for gpu in catalog.gpus():
            checked += 1
            if gpu.arch not in per_arch:
                try:
                    per_arch[gpu.arch] = training_memory(inv, adapters, counted.replace(gpu=gpu.id)).fit_bytes
                except PlanError:  # a pinned SDPA backend this architecture cannot run: the plan cannot run there
                    per_arch[gpu.arch] = None
            per_gpu = per_arch[gpu.arch]
            option = None if per_gpu is None else _option(inv, adapters, counted, gpu, per_gpu, table)
            if option is not None:
                options.append(option)
    by_budget = plan.run_tokens is not None
    options.sort(key=lambda o: _sort_key(o, by_budget))
    return {
        "model": model_id,
        "run_tokens": plan.run_tokens,
        "sorted_by": "run_usd" if by_budget else "usd_per_million_tokens",
        "counts": list(COUNTS),
        "checked": checked,
        "prices": table.origin,
        "options": options,
    }


def _option(
    inv: Inventory, adapters: AdapterPlan, plan: Plan, gpu: catalog.GPU, per_gpu: int, prices: PriceTable
) -> dict[str, Any] | None:
    """One GPU × count where the plan fits, with its time and every listed price (cheapest first); else None."""
    room = training_usable(plan, gpu)  # less vLLM's colocated share
    if per_gpu > room or _dtype_reason(plan, gpu) is not None:
        return None
    time = step_time(inv, adapters, plan, gpu)
    if time is None:
        return None
    costs = cost_rows(time, prices)
    t = time.to_dict()
    return {
        "gpu": gpu.id,
        "name": gpu.name,
        "num_gpus": plan.num_gpus,
        "per_gpu_bytes": per_gpu,
        "usable_bytes": room,
        "headroom_bytes": room - per_gpu,
        "step_s": t["step_s"],
        "tokens_per_s": t["tokens_per_s"],
        "bound": t["bound"],
        "mfu": t["mfu"],
        "run_s": t["run_s"],
        "run_hours": t["run_hours"],
        "cheapest": costs[0] if costs else None,
        "costs": costs,
    }


def _sort_key(option: Mapping[str, Any], by_budget: bool) -> tuple[int, float, float]:
    cheapest = option["cheapest"]
    time = float(option["run_s"] if by_budget else 1.0 / option["tokens_per_s"])
    if cheapest is None:
        return (1, time, 0.0)
    cost = cheapest["run_usd"] if by_budget else cheapest["usd_per_million_tokens"]
    return (0, float(cost), time)
