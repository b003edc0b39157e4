"""Measured next to estimated: the rows ``tuneplan verify``, the page's verify jobs and the accuracy suite share.

A run's result (``trainer.run`` / ``trainer.traced``) holds ``measured``: ``components`` (bytes per category at the
peak, as the live-tensor tracker attributes them), ``peak_allocated``, and on CUDA ``peak_reserved`` and
``driver_used``. The error of a row is ``(estimated - measured) / measured``: positive means the estimate is high.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

TENSOR_COMPONENTS: tuple[str, ...] = (
    "weights",
    "adapters",
    "gradients",
    "optimizer",
    "reference",
    "activations",
    "logits",
)
"""The components a live-tensor tracker can attribute (the runtime tiers are measured as totals only)."""
TIERS: tuple[tuple[str, str], ...] = (
    ("peak_allocated", "peak_allocated"),
    ("peak_reserved", "peak_reserved"),
    ("total", "driver_used"),
)
"""(estimate field, measured field): torch's allocated peak, its reserved peak, and the driver's figure."""


def relative_error(estimated: int, measured: int | None) -> float | None:
    """``(estimated - measured) / measured``; None when nothing (or zero) was measured."""
    return None if not measured else (estimated - measured) / measured


def _row(name: str, estimated: int, measured: int | None) -> dict[str, Any]:
    err = relative_error(estimated, measured)
    return {"name": name, "estimated": estimated, "measured": measured,
            "error_percent": None if err is None else round(100.0 * err, 2)}  # fmt: skip


def compare(estimate: Mapping[str, Any], result: Mapping[str, Any]) -> dict[str, Any]:
    """Rows per tensor component and per tier (``measured`` None where the device does not measure it: a CPU run
    has no allocator cache and no driver figure)."""
    memory = estimate["memory"]
    measured = result.get("measured") or {}
    parts = measured.get("components") or {}
    components = [_row(c, memory["components"].get(c, 0), parts.get(c)) for c in TENSOR_COMPONENTS]
    tiers = [_row(name, memory[name], measured.get(key)) for name, key in TIERS]
    return {"components": components, "tiers": tiers, "oom": bool(result.get("oom", False)),
            "device": result.get("device")}  # fmt: skip
