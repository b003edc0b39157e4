"""Which GPU to rent: every catalog GPU × count that fits, agreeing with estimate() on each, cheapest first."""

from __future__ import annotations

import pytest

from estimator import COUNTS, Plan, PlanError, catalog, estimate, parse_prices, rent

PLAN = Plan(model="llama-3.1-8b", method="qlora", batch_size=2, seq_len=2048, train_tokens=50_000_000)


def test_options_are_exactly_the_gpus_and_counts_that_fit() -> None:
    out = rent(PLAN)
    assert out["checked"] == len(catalog.gpus()) * len(COUNTS)
    found = {(o["gpu"], o["num_gpus"]) for o in out["options"]}
    for gpu in catalog.gpus():
        for n in COUNTS:
            d = estimate(PLAN.replace(gpu=gpu.id, num_gpus=n)).to_dict()
            fits = d["fit"]["fits"] and d["time"] is not None
            assert ((gpu.id, n) in found) == fits, (gpu.id, n)
    for o in out["options"]:
        d = estimate(PLAN.replace(gpu=o["gpu"], num_gpus=o["num_gpus"])).to_dict()
        # the figure the fit compares: the high edge of the total's range on that GPU's architecture
        assert o["per_gpu_bytes"] == d["memory"]["range"]["total"][1] and o["step_s"] == d["time"]["step_s"]
        assert o["costs"] == d["cost"]


def test_cheapest_first_for_the_token_budget_then_the_unpriced() -> None:
    out = rent(PLAN)
    assert out["sorted_by"] == "run_usd" and out["run_tokens"] == 50_000_000
    priced = [o for o in out["options"] if o["cheapest"] is not None]
    unpriced = out["options"][len(priced) :]
    assert priced and unpriced and all(o["cheapest"] is None for o in unpriced)
    costs = [o["cheapest"]["run_usd"] for o in priced]
    assert costs == sorted(costs)
    assert [o["run_s"] for o in unpriced] == sorted(o["run_s"] for o in unpriced)
    for o in priced:
        c = o["cheapest"]
        assert c["usd_per_gpu_hour"] == min(p["usd_per_gpu_hour"] for p in o["costs"])
        assert c["run_usd"] == pytest.approx(c["usd_per_hour"] * o["run_s"] / 3600, abs=0.01)


def test_without_a_budget_it_sorts_by_cost_per_million_tokens() -> None:
    out = rent(PLAN.replace(train_tokens=0))
    assert out["sorted_by"] == "usd_per_million_tokens" and out["run_tokens"] is None
    priced = [o["cheapest"]["usd_per_million_tokens"] for o in out["options"] if o["cheapest"]]
    assert priced == sorted(priced) and all(o["run_s"] is None for o in out["options"])


def test_sharding_makes_more_gpus_fit() -> None:
    """A 70B full fine-tune fits no card alone; ZeRO-3 splits it over 8 of the largest, not 4: DeepSpeed's optimizer
    keeps an fp32 master copy and fp32 AdamW states (12 B an element, 105 GB a GPU over 8 for 70B)."""
    big = Plan(model="llama-3.1-70b", method="full", sharding="zero3", batch_size=1, seq_len=1024)
    options = rent(big)["options"]
    assert {o["num_gpus"] for o in options} == {8}
    assert {o["gpu"] for o in options} >= {"b200"}
    assert "h100-80gb" not in {o["gpu"] for o in options}


def test_a_price_table_of_ones_own() -> None:
    row = {"gpu": "l4", "provider": "Mine", "usd_per_gpu_hour": 0.01, "date": "2026-01-01", "source": "me"}
    out = rent(PLAN.replace(method="lora", model="llama-3.2-1b"), prices=parse_prices({"prices": [row]}, "mine"))
    assert out["prices"] == "mine" and out["options"][0]["gpu"] == "l4"
    assert all(o["cheapest"] is None for o in out["options"] if o["gpu"] != "l4")


def test_cpu_plans_rent_nothing() -> None:
    with pytest.raises(PlanError, match="device 'cuda'"):
        rent(PLAN.replace(device="cpu"))
