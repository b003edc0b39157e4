"""Page load time of the planner in headless Chromium: navigation timing, first paint, charts drawn.

Starts the app on a free loopback port (or uses ``--url``), loads each page ``--runs`` times cold (a fresh
browser context each time: plotly.js fetched, parsed and compiled every time) and ``--runs`` times warm
(reloads in one context: plotly.js from the HTTP cache), and prints the medians of::

    ttfb     responseStart: the server rendered the page (form + results, server side)
    fcp      first-contentful-paint: the results are readable
    dcl      domContentLoadedEventEnd: the deferred scripts (plotly.js, app.js) have run
    charts   the page's "tuneplan:charts" mark: every Plotly chart is drawn
    load     loadEventEnd

    .venv/bin/python bench/page_load.py [--runs 15] [--url http://127.0.0.1:8000]

Needs Debian's ``chromium`` at ``/usr/bin/chromium``.
"""

from __future__ import annotations

import argparse
import json
import statistics
from typing import Any

from app.main import create_app
from bench.browser import CHROMIUM, CHROMIUM_ARGS, serve, wait_for

PAGES: dict[str, str] = {
    "default (QLoRA, Llama 3.1 8B)": "/",
    "compare all, A100 80GB": "/?model=llama-3.1-8b&method=compare&seq_len=4096&gpu=a100-80gb",
    "full, Qwen2.5 72B, 8 GPUs": "/?model=qwen2.5-72b&method=full&num_gpus=8&sharding=zero3&gpu=h100-sxm",
}
METRICS = ("ttfb", "fcp", "dcl", "charts", "load")

TIMING_JS = """() => {
    const nav = performance.getEntriesByType('navigation')[0];
    const fcp = performance.getEntriesByName('first-contentful-paint')[0];
    const charts = performance.getEntriesByName('tuneplan:charts')[0];
    return {ttfb: nav.responseStart, fcp: fcp ? fcp.startTime : null, dcl: nav.domContentLoadedEventEnd,
            charts: charts ? charts.startTime : null, load: nav.loadEventEnd,
            bytes: performance.getEntriesByType('resource').reduce((n, r) => n + (r.transferSize || 0),
                                                                   nav.transferSize || 0)};
}"""


def _load(page: Any, url: str) -> dict[str, Any]:
    page.goto(url)
    page.wait_for_selector("body[data-charts=ready]", timeout=30_000)
    wait_for(page, "performance.getEntriesByType('navigation')[0].loadEventEnd > 0")
    # the paint entry is queued when the frame is presented, which may come after the load event
    wait_for(page, "performance.getEntriesByName('first-contentful-paint').length > 0")
    timing: dict[str, Any] = page.evaluate(TIMING_JS)
    return timing


def _median(samples: list[dict[str, Any]]) -> dict[str, float]:
    return {
        key: round(statistics.median(s[key] for s in samples if s[key] is not None), 1) for key in (*METRICS, "bytes")
    }


def measure(base: str, runs: int, chromium: str = CHROMIUM) -> dict[str, dict[str, float]]:
    """``{"<page> (cold|warm)": {metric: median ms}}``: cold = a fresh browser context per load (nothing
    cached), warm = reloads in one context (plotly.js from the HTTP cache, its compiled code cached)."""
    from playwright.sync_api import sync_playwright

    results: dict[str, dict[str, float]] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            for label, path in PAGES.items():
                cold: list[dict[str, Any]] = []
                for i in range(runs + 1):
                    context = browser.new_context(viewport={"width": 1280, "height": 900})
                    timing = _load(context.new_page(), base + path)
                    context.close()
                    if i:  # the first load warms the server (imports, catalog)
                        cold.append(timing)
                context = browser.new_context(viewport={"width": 1280, "height": 900})
                page = context.new_page()
                warm = [_load(page, base + path) for _ in range(runs + 2)][2:]
                context.close()
                results[f"{label}, cold"] = _median(cold)
                results[f"{label}, warm"] = _median(warm)
        finally:
            browser.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", help="base URL of a running app (default: start one)")
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--chromium", default=CHROMIUM)
    args = parser.parse_args(argv)
    if args.url:
        results = measure(args.url.rstrip("/"), args.runs, args.chromium)
    else:
        with serve(create_app()) as base:
            results = measure(base, args.runs, args.chromium)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"median of {args.runs} loads, milliseconds from navigation start")
    print(f"{'page':40} " + " ".join(f"{m:>7}" for m in METRICS) + "  transferred")
    for label, row in results.items():
        print(f"{label:40} " + " ".join(f"{row[m]:7.0f}" for m in METRICS) + f"  {row['bytes'] / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
