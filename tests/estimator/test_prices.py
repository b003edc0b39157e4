"""The price table: the built-in one (a date and a source per price), a user's copy, and what a bad one says."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import pytest

from estimator import Plan, PriceError, PriceTable, catalog, default_prices, estimate, load_prices, parse_prices

GOOD = {"gpu": "h100-sxm", "provider": "Acme", "usd_per_gpu_hour": 2.0, "date": "2026-01-31", "source": "acme.test"}


def test_built_in_prices_each_have_a_date_and_a_source() -> None:
    raw = json.loads((resources.files("estimator") / "data" / "prices.json").read_text())
    table = default_prices()
    assert len(table.prices) == len(raw["prices"]) > 10
    for p in table.prices:
        assert catalog.find_gpu(p.gpu) is not None
        assert p.usd_per_gpu_hour > 0 and p.date[:2] == "20" and p.source.startswith("https://") and p.provider


def test_a_users_table_replaces_the_built_in_one() -> None:
    table = parse_prices({"prices": [GOOD, GOOD | {"provider": "Cheap", "usd_per_gpu_hour": 1.25}]}, "mine.json")
    plan = Plan(model="llama-3.2-1b", method="lora", gpu="h100-sxm", num_gpus=2, train_tokens=10**7)
    d = estimate(plan, prices=table).to_dict()
    assert [c["provider"] for c in d["cost"]] == ["Cheap", "Acme"]  # cheapest first
    cheap = d["cost"][0]
    assert cheap["usd_per_hour"] == 2.5  # two GPUs
    assert cheap["run_usd"] == pytest.approx(2.5 * d["time"]["run_s"] / 3600, abs=0.01)
    assert cheap["usd_per_million_tokens"] == pytest.approx(2.5 / 3600 / d["time"]["tokens_per_s"] * 1e6, rel=1e-3)
    assert estimate(plan.replace(gpu="a100-80gb"), prices=table).to_dict()["cost"] == []  # no price for it


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "a JSON object with a 'prices' list"),
        ({"prices": [GOOD | {"gpu": "h100-sxn"}]}, r"prices\[0\].gpu 'h100-sxn' is not a catalog GPU id \(did you"),
        ({"prices": [GOOD | {"date": "May 2026"}]}, r"prices\[0\].date must be .* YYYY-MM-DD"),
        ({"prices": [GOOD, GOOD | {"usd_per_gpu_hour": -1}]}, r"prices\[1\].usd_per_gpu_hour must be a positive"),
        ({"prices": [GOOD | {"usd_per_gpu_hour": "2"}]}, "must be a positive number"),
        ({"prices": [{k: v for k, v in GOOD.items() if k != "source"}]}, r"prices\[0\] lacks source"),
        ({"prices": [GOOD | {"price": 3}]}, "unknown field.s. price"),
        ({"prices": [GOOD | {"provider": " "}]}, "must not be empty"),
        ({"prices": ["h100"]}, r"prices\[0\] must be an object"),
    ],
)
def test_a_bad_table_says_what_to_fix(data: Any, message: str) -> None:
    with pytest.raises(PriceError, match=message):
        parse_prices(data, "mine.json")


def test_text_that_is_not_json() -> None:
    with pytest.raises(PriceError, match="mine.json is not valid JSON"):
        load_prices("{prices: ", "mine.json")
    assert isinstance(load_prices(json.dumps({"prices": [GOOD]}), "mine.json"), PriceTable)
