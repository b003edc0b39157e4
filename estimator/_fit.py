"""Fit search: the largest batch size and the longest sequence that fit a GPU's usable memory.

The figure a GPU is compared with (``MemoryEstimate.fit_bytes``) grows monotonically with the batch size and with
the sequence length, so each answer is the one last ``n`` whose figure fits. The search keeps a bracket (the largest
``n`` known to fit, the smallest known not to) and closes it by interpolation between the figures at its ends, as
false position does on the reals: the figure is linear in the batch size but for allocation rounding (every
activation and the logits scale with it) and a low-degree polynomial in the sequence length (b·a·s² attention
probabilities on the eager/math path), so an interpolated guess lands on or next to the answer. A search takes about
3 memory evaluations where a binary search takes 12 to 17; a bisection step whenever the bracket did not halve bounds
the worst case at about twice the binary search's count. A monotone figure has exactly one last fitting ``n``, so the
answer is the binary search's (``tests/estimator/test_fit.py`` holds the two to the same answers over the catalog).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._inventory import Inventory
from ._lora import AdapterPlan
from ._memory import training_memory
from ._plan import MAX_BATCH_SIZE, MAX_SEQ_LEN, Plan

SEARCH_BATCH_LIMIT = 4096


class _Figures:
    """``fit_bytes(n)``, each ``n`` evaluated once, in the order evaluated."""

    def __init__(self, fit_bytes: Callable[[int], int], known: tuple[int, int] | None) -> None:
        self.fn = fit_bytes
        self.seen: dict[int, int] = dict([known]) if known is not None else {}

    def __call__(self, n: int) -> int:
        if n not in self.seen:
            self.seen[n] = self.fn(n)
        return self.seen[n]


def _crossing(points: list[tuple[int, int]], limit: int) -> float | None:
    """Where the polynomial through ``points`` (two or three ``(n, figure)``, degree one less) reaches ``limit``, on
    its rising side; None when it does not."""
    (x0, f0), (x1, f1) = points[0], points[1]
    d1 = (f1 - f0) / (x1 - x0)
    d2 = 0.0
    if len(points) == 3:
        x2, f2 = points[2]
        d2 = ((f2 - f1) / (x2 - x1) - d1) / (x2 - x0)
    # P(x) = f0 + d1 (x - x0) + d2 (x - x0)(x - x1) = a x² + b x + c
    a, b, c = d2, d1 - d2 * (x0 + x1), f0 - d1 * x0 + d2 * x0 * x1 - limit
    if abs(a) * max(abs(x0), abs(x1), 1) ** 2 < 1e-9 * max(abs(b) * max(abs(x0), 1), 1.0):
        return -c / b if b > 0 else None
    disc = b * b - 4 * a * c
    if disc < 0:
        return None
    rising = [x for x in ((-b + disc**0.5) / (2 * a), (-b - disc**0.5) / (2 * a)) if 2 * a * x + b > 0]
    return min(rising) if rising else None


def _guess(f: _Figures, good: int, bad: int, high: int, limit: int) -> int:
    """The next ``n`` to try inside the bracket ``(good, bad)``: where the polynomial through the bracket's ends and
    the latest other point reaches ``limit`` (else the line through the two points nearest the bracket); with a
    single point, twice ``good``; with no crossing, the bracket's middle."""
    ends = [good, bad] if bad <= high else [good]
    others = [m for m in reversed(f.seen) if m not in ends]
    chosen = sorted(ends + others[: 3 - len(ends)])
    if len(chosen) < 2:
        return min(2 * good, bad - 1)
    x = _crossing([(m, f.seen[m]) for m in chosen], limit)
    if (x is None or x != x) and len(chosen) == 3:  # no crossing (or NaN): the line through the nearest two
        nearest = [good, bad] if bad <= high else [chosen[-2], chosen[-1]]
        x = _crossing([(m, f.seen[m]) for m in nearest], limit)
    if x is None or x != x:
        return (good + bad) // 2 if bad <= high else min(2 * good, bad - 1)
    return int(min(max(x, good + 1), bad - 1))


def _largest(low: int, high: int, fit_bytes: Callable[[int], int], limit: int, known: tuple[int, int] | None) -> int:
    """The largest n in [low, high] with ``fit_bytes(n) <= limit``, given ``fit_bytes`` never decreases; low - 1 if
    none. ``known``: a point ``(n, fit_bytes(n))`` already computed (the plan's own estimate)."""
    f = _Figures(fit_bytes, known)
    good, bad = low - 1, high + 1  # fit_bytes(good) <= limit < fit_bytes(bad); the ends outside [low, high] are virtual
    if known is not None and low <= known[0] <= high:
        good, bad = (known[0], bad) if known[1] <= limit else (good, known[0])
    if good < low:
        if f(low) > limit:
            return low - 1
        good = low
    slow = 0  # steps in a row that did not halve a bracket whose both ends were evaluated
    while bad - good > 1:
        width, bounded = bad - good, bad <= high
        n = _guess(f, good, bad, high, limit) if slow < 2 else (good + bad) // 2
        if f(n) <= limit:
            good = n
        else:
            bad = n
        slow = slow + 1 if bounded and 2 * (bad - good) > width else 0
    return good


def fit_search(
    inv: Inventory, adapters: AdapterPlan, plan: Plan, usable_bytes: int, fit_bytes: int | None = None
) -> dict[str, Any]:
    """Largest ``batch_size`` at the plan's ``seq_len``, and longest ``seq_len`` at its ``batch_size``.

    0 means not even one sample / one token fits. The sequence search stops at the model's context
    (``max_position_embeddings``) unless the plan allows longer (then at 4x the context, at most ``MAX_SEQ_LEN``).
    ``fit_bytes``: the plan's own figure when the caller has it (one evaluation fewer per search).
    """

    def total(**change: int) -> int:
        return training_memory(inv, adapters, plan.replace(**change)).fit_bytes

    context = inv.arch.max_position_embeddings
    seq_limit = max(context, plan.seq_len) if not plan.allow_long_context else max(4 * context, plan.seq_len)
    seq_limit = min(seq_limit, MAX_SEQ_LEN)
    batch_limit = min(SEARCH_BATCH_LIMIT, MAX_BATCH_SIZE)
    return {
        "usable_bytes": usable_bytes,
        "max_batch_size": _largest(
            1,
            batch_limit,
            lambda b: total(batch_size=b),
            usable_bytes,
            (plan.batch_size, fit_bytes) if fit_bytes is not None else None,
        ),
        "max_seq_len": _largest(
            1,
            seq_limit,
            lambda s: total(seq_len=s),
            usable_bytes,
            (plan.seq_len, fit_bytes) if fit_bytes is not None else None,
        ),
        "batch_limit": SEARCH_BATCH_LIMIT,
        "seq_limit": seq_limit,
    }
