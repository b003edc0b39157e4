"""Fit search: the largest batch size and the longest sequence that fit a GPU's usable memory.

The per-GPU total (``memory.total``: allocated peak + allocator cache + CUDA context) grows monotonically with the
batch size and with the sequence length, so each search is a binary search over integers on the same inventory
and adapter plan: about 12 memory evaluations of ~50 µs each.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._inventory import Inventory
from ._lora import AdapterPlan
from ._memory import training_memory
from ._plan import MAX_BATCH_SIZE, Plan

SEARCH_BATCH_LIMIT = 4096


def _largest(low: int, high: int, ok: Callable[[int], bool]) -> int:
    """The largest n in [low, high] with ok(n), given ok is monotone (true then false); low - 1 if none."""
    if not ok(low):
        return low - 1
    while low < high:
        mid = (low + high + 1) // 2
        if ok(mid):
            low = mid
        else:
            high = mid - 1
    return low


def fit_search(inv: Inventory, adapters: AdapterPlan, plan: Plan, usable_bytes: int) -> dict[str, Any]:
    """Largest ``batch_size`` at the plan's ``seq_len``, and longest ``seq_len`` at its ``batch_size``.

    0 means not even one sample / one token fits. The sequence search stops at the model's context
    (``max_position_embeddings``) unless the plan allows longer.
    """

    def total(**change: int) -> int:
        return training_memory(inv, adapters, plan.replace(**change)).fit_bytes

    context = inv.arch.max_position_embeddings
    seq_limit = max(context, plan.seq_len) if not plan.allow_long_context else max(4 * context, plan.seq_len)
    return {
        "usable_bytes": usable_bytes,
        "max_batch_size": _largest(
            1, min(SEARCH_BATCH_LIMIT, MAX_BATCH_SIZE), lambda b: total(batch_size=b) <= usable_bytes
        ),  # fmt: skip
        "max_seq_len": _largest(1, seq_limit, lambda s: total(seq_len=s) <= usable_bytes),
        "batch_limit": SEARCH_BATCH_LIMIT,
        "seq_limit": seq_limit,
    }
