"""Headless Chromium and a live app server: shared by the browser tests and ``bench/screenshots.py``.

Debian's ``chromium`` (``apt-get install -y chromium``; never ``playwright install``) driven through Playwright,
and the app under uvicorn in a thread on a free loopback port. Playwright and uvicorn are imported when used,
so importing this module needs neither.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
START_TIMEOUT_S = 30


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serve(app: Any, stop_timeout_s: float = 10) -> Iterator[str]:
    """Run ``app`` under uvicorn in a thread on a free loopback port; yields the base URL.

    Raises ``RuntimeError("the app did not start")`` when the server is not up within 30 s or its thread dies.
    """
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the app did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=stop_timeout_s)


@contextlib.contextmanager
def launch_chromium(executable: str = CHROMIUM) -> Iterator[Any]:
    """Headless Chromium launched through Playwright with ``CHROMIUM_ARGS``; closed on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def wait_for(page: Any, predicate: str, arg: Any = None, timeout_ms: float = 20_000) -> None:
    """Poll ``page.evaluate(predicate, arg)`` until it is truthy. Playwright's own ``wait_for_function`` evaluates its
    predicate with ``eval`` inside the page, which the page's Content-Security-Policy (no 'unsafe-eval') forbids;
    ``evaluate`` goes through the DevTools protocol, which it does not."""
    deadline = time.monotonic() + timeout_ms / 1000
    while not page.evaluate(predicate, arg):
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout_ms:g} ms for {predicate!r}")
        page.wait_for_timeout(50)


def load(page: Any, url: str) -> None:
    """Open ``url`` and wait until the planner page has drawn its charts."""
    page.goto(url)
    page.wait_for_selector("body[data-charts=ready]", timeout=20_000)
