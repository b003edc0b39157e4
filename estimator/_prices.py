"""Prices: an editable table of hourly GPU prices (data, each with its date and source) and the cost of a plan.

The built-in table is ``data/prices.json``; a user's copy is parsed by ``parse_prices`` (the web app reads
``TUNEPLAN_PRICES``, the CLI ``--prices``). A price is per GPU-hour: ``num_gpus`` GPUs cost ``num_gpus`` times it.
Cost = hours × price: billing granularity, storage, egress and start-up time are not counted.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from . import catalog
from ._errors import PriceError
from ._time import TimeEstimate

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_FIELDS = {"gpu", "provider", "offer", "usd_per_gpu_hour", "date", "source", "note"}
_REQUIRED = ("gpu", "provider", "usd_per_gpu_hour", "date", "source")
MAX_PRICES = 10_000


@dataclass(frozen=True)
class Price:
    """One listed hourly price of one GPU."""

    gpu: str
    provider: str
    offer: str
    usd_per_gpu_hour: float
    date: str
    source: str
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "gpu": self.gpu,
            "provider": self.provider,
            "offer": self.offer,
            "usd_per_gpu_hour": self.usd_per_gpu_hour,
            "date": self.date,
            "source": self.source,
            "note": self.note,
        }


@dataclass(frozen=True)
class PriceTable:
    """Prices, and where the table came from (``built-in`` or the user's file)."""

    prices: tuple[Price, ...]
    origin: str = "built-in"

    def for_gpu(self, gpu_id: str) -> list[Price]:
        """The GPU's prices, cheapest first."""
        return sorted((p for p in self.prices if p.gpu == gpu_id), key=lambda p: (p.usd_per_gpu_hour, p.provider))


def parse_prices(data: Any, origin: str = "built-in") -> PriceTable:
    """A price table from its JSON object; ``PriceError`` says which entry and field to fix."""
    if not isinstance(data, Mapping) or not isinstance(data.get("prices"), list):
        raise PriceError(f"{origin}: a price table is a JSON object with a 'prices' list")
    rows = data["prices"]
    if len(rows) > MAX_PRICES:
        raise PriceError(f"{origin}: {len(rows)} prices; at most {MAX_PRICES}")
    return PriceTable(tuple(_price(row, i, origin) for i, row in enumerate(rows)), origin)


def _price(row: Any, i: int, origin: str) -> Price:
    where = f"{origin}: prices[{i}]"
    if not isinstance(row, Mapping):
        raise PriceError(f"{where} must be an object with {', '.join(_REQUIRED)}")
    unknown = sorted(set(row) - _FIELDS)
    if unknown:
        raise PriceError(f"{where} has unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(_FIELDS))}")
    missing = [k for k in _REQUIRED if k not in row]
    if missing:
        raise PriceError(f"{where} lacks {', '.join(missing)}")
    for key in ("gpu", "provider", "date", "source", "offer", "note"):
        if key in row and not isinstance(row[key], str):
            raise PriceError(f"{where}.{key} must be text")
    gpu = catalog.find_gpu(row["gpu"]) if row["gpu"].strip() else None
    if gpu is None:
        close = ", ".join(g.id for g in catalog.close_gpu_matches(row["gpu"]))
        raise PriceError(f"{where}.gpu {row['gpu'][:100]!r} is not a catalog GPU id" + (f" (did you mean {close}?)"
                         if close else "") + "; 'tuneplan gpus' lists them")  # fmt: skip
    usd = row["usd_per_gpu_hour"]
    if isinstance(usd, bool) or not isinstance(usd, int | float) or not math.isfinite(usd) or usd <= 0:
        raise PriceError(f"{where}.usd_per_gpu_hour must be a positive number of US dollars; got {usd!r}")
    if not _DATE.match(row["date"]):
        raise PriceError(f"{where}.date must be the date the price was listed, as YYYY-MM-DD; got {row['date']!r}")
    if not row["provider"].strip() or not row["source"].strip():
        raise PriceError(f"{where}: provider and source must not be empty (say who lists the price, and where)")
    return Price(gpu.id, row["provider"], row.get("offer", "on-demand"), float(usd), row["date"], row["source"],
                 row.get("note", ""))  # fmt: skip


def load_prices(text: str, origin: str) -> PriceTable:
    """A price table from JSON text (a file's contents)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PriceError(f"{origin} is not valid JSON: {exc}") from exc
    return parse_prices(data, origin)


@cache
def default_prices() -> PriceTable:
    """The built-in table, ``data/prices.json``."""
    text = (resources.files("estimator") / "data" / "prices.json").read_text(encoding="utf-8")
    return load_prices(text, "built-in")


def cost_rows(time: TimeEstimate, prices: PriceTable) -> list[dict[str, Any]]:
    """The plan's cost at every price of its GPU, cheapest first: per hour, per million tokens, and for the run."""
    out = []
    for p in prices.for_gpu(time.gpu):
        per_hour = p.usd_per_gpu_hour * time.num_gpus
        run_s = time.run_s
        out.append(p.to_dict() | {
            "num_gpus": time.num_gpus,
            "usd_per_hour": round(per_hour, 4),
            "usd_per_million_tokens": round(per_hour / 3600 / time.tokens_per_s * 1e6, 4),
            "run_usd": None if run_s is None else round(per_hour * run_s / 3600, 2),
        })  # fmt: skip
    return out
