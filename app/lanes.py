"""Where blocking work runs, off the event loop: two bounded sets of threads, so a flood of one kind of work never
queues the other, and the event loop (``/healthz``, cached answers) never waits for either.

* ``cpu``: the estimator, the page's charts and templates, the job store (a few threads: the work is short and
  holds the GIL);
* ``hub``: Hugging Face Hub lookups, which mostly wait on the network, each bounded by its deadline: the wait for a
  free thread counts against it, and a lookup still running at its deadline is abandoned (its own calls stop at
  the same deadline), so the answer is a 504 at the deadline, never later.

No web framework here; ``anyio`` is the event loop's own library.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.to_thread

from app.hub.client import hub_timeout
from app.service import EstimateService, Resolved
from estimator import Plan

T = TypeVar("T")

CPU_THREADS = 4
HUB_THREADS = 16


class Lanes:
    """The two thread lanes of one app (their limiters are made on first use, inside the event loop)."""

    def __init__(self, cpu_threads: int = CPU_THREADS, hub_threads: int = HUB_THREADS) -> None:
        self.cpu_threads = cpu_threads
        self.hub_threads = hub_threads
        self._cpu: anyio.CapacityLimiter | None = None
        self._hub: anyio.CapacityLimiter | None = None

    async def cpu(self, fn: Callable[[], T]) -> T:
        """``fn()`` on a CPU-lane thread."""
        if self._cpu is None:
            self._cpu = anyio.CapacityLimiter(self.cpu_threads)
        return await anyio.to_thread.run_sync(fn, limiter=self._cpu)

    async def hub(self, fn: Callable[[], T], deadline: float, timeout: Callable[[], Exception]) -> T:
        """``fn()`` on a Hub-lane thread, answered by ``deadline`` (``time.monotonic()``) or ``timeout()`` raised."""
        if self._hub is None:
            self._hub = anyio.CapacityLimiter(self.hub_threads)
        remaining = deadline - time.monotonic()
        if remaining > 0:
            with anyio.move_on_after(remaining):
                return await anyio.to_thread.run_sync(fn, limiter=self._hub, abandon_on_cancel=True)
        raise timeout()


# ---------------------------------------------------------------------------------------------- plans


async def resolve_plan(
    service: EstimateService, lanes: Lanes, plan: Plan, token: str | None, timeout_s: float
) -> Resolved:
    """The config of ``plan``: a Hub lookup on the Hub lane, answered within ``timeout_s`` of now (504 after), else
    the inline or catalog config on the CPU lane (an inline config's size and depth checks)."""
    if not service.needs_hub(plan):
        return await lanes.cpu(lambda: service.resolve(plan, token))
    deadline = time.monotonic() + timeout_s
    return await lanes.hub(
        lambda: service.resolve(plan, token, deadline), deadline, lambda: hub_timeout(plan.model or "", timeout_s)
    )


async def estimate_answer(
    service: EstimateService, lanes: Lanes, plan: Plan, token: str | None, timeout_s: float
) -> tuple[bytes, str]:
    """The JSON answer of an estimate and where its config came from: a cached catalog plan on the event loop (a
    dictionary lookup), anything else resolved and estimated on the lanes."""
    hit = service.cached(plan)
    if hit is not None:
        return hit
    if service.needs_hub(plan):
        resolved = await resolve_plan(service, lanes, plan, token, timeout_s)
        return await lanes.cpu(lambda: service.response(plan, resolved))
    return await lanes.cpu(lambda: service.response(plan, service.resolve(plan, token)))
