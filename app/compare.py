"""Measured vs estimated: the comparison rows of ``tuneplan verify`` and of the page's verify jobs.

Torch-free and Typer-free, so the web process can build the rows from a run's result JSON.
"""

from __future__ import annotations

from typing import Any

COMPONENTS: tuple[str, ...] = ("weights", "adapters", "gradients", "optimizer", "activations", "logits")


def compare(est: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """Measured vs estimated per component and per tier, with the signed error."""
    measured = result.get("measured", {})
    rows = []
    for name in COMPONENTS:
        e = est["memory"]["components"].get(name, 0)
        m = measured.get("components", {}).get(name)
        rows.append(_row(name, e, m))
    tiers = [_row("peak_allocated", est["memory"]["peak_allocated"], measured.get("peak_allocated"))]
    if measured.get("peak_reserved") is not None:
        tiers.append(_row("peak_reserved", est["memory"]["peak_reserved"], measured.get("peak_reserved")))
    if measured.get("driver_used") is not None:
        tiers.append(_row("total", est["memory"]["total"], measured.get("driver_used")))
    return {"plan": est["plan"], "components": rows, "tiers": tiers, "oom": result.get("oom", False),
            "device": result.get("device"), "versions": result.get("versions"), "estimate": est,
            "result": result}  # fmt: skip


def _row(name: str, e: int, m: int | None) -> dict[str, Any]:
    err = None if not m else round(100.0 * (e - m) / m, 2)
    return {"name": name, "estimated": e, "measured": m, "error_percent": err}
