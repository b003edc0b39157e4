"""How long the page's ``POST /api/charts`` work takes in-process (``app.view.page.compute``: full, LoRA and QLoRA,
both sweeps, the fit search and the advisor's levers), median of 5 after one warm-up call::

    .venv/bin/python -m bench.page_compute
"""

from __future__ import annotations

import statistics
import time

from app.main import create_app
from app.settings import Settings
from app.view.page import compute

PLANS = (
    {"model": "llama-3.1-8b", "method": "qlora"},
    {"model": "llama-3.1-8b", "method": "qlora", "gpu": "rtx-4090"},
    {"model": "llama-3.1-8b", "method": "compare", "gpu": "rtx-4090"},
)


def main() -> int:
    service = create_app(Settings()).state.tuneplan.service
    for plan in PLANS:
        compute(service, plan, None)
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            compute(service, plan, None)
            times.append(time.perf_counter() - t0)
        print(f"{plan}: median {statistics.median(times) * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
