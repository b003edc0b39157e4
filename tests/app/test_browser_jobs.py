"""The "Verify with a real run" button in a real browser: headless Chromium (Debian's ``chromium``) through
Playwright, a real uvicorn server, its real worker thread and a real ``python -m trainer.run`` on CPU.

Skipped when ``/usr/bin/chromium``, Playwright or the train extra is missing.
"""

from __future__ import annotations

import importlib.util
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from app.main import create_app
from app.pages import encode_config
from app.settings import Settings

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
TINY_RUN_CONFIG: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 1024,
    "max_position_embeddings": 512,
}
RUN_TIMEOUT_MS = 120_000

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not importlib.util.find_spec("torch"), reason="needs the train extra: pip install -e '.[train]'"
    ),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing: apt-get install -y chromium"),
]

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (Python) is not installed")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def base_url(hub: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app under uvicorn in a thread (its lifespan starts the job worker); runs go to the CPU."""
    import uvicorn

    settings = Settings(
        data_dir=tmp_path_factory.mktemp("data"), hf_endpoint=hub.url, hf_token=None, verify_device="cpu"
    )
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the app did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=30)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def test_verify_button_runs_the_plan_and_shows_measured_vs_estimated(page: Any, base_url: str) -> None:
    query = {
        "config": encode_config(TINY_RUN_CONFIG),
        "method": "qlora",
        "batch_size": 1,
        "seq_len": 64,
        "lora_dropout": 0,
    }
    page.goto(base_url + "/?" + urlencode(query))
    page.wait_for_selector("body[data-charts=ready]", timeout=20_000)
    box = page.locator("#verify")
    assert box.is_visible()
    text = box.inner_text()
    assert "random weights" in text and "live tensors" in text
    assert page.get_attribute("#verify-status", "aria-live") == "polite"

    # keyboard only: focus the button and press Enter
    button = page.locator("#verify-run")
    button.focus()
    page.keyboard.press("Enter")
    page.wait_for_function("document.getElementById('verify-status').textContent.length > 0", timeout=10_000)
    assert button.is_disabled()
    page.wait_for_selector("#verify-result table.verify-table", timeout=RUN_TIMEOUT_MS)
    assert "Done on cpu" in page.inner_text("#verify-status")
    assert not button.is_disabled()

    job_id = page.get_attribute("table.verify-table", "data-job")
    job = httpx.get(f"{base_url}/api/jobs/{job_id}", timeout=30).json()
    assert job["status"] == "done" and job["estimate"]["plan"]["device"] == "cpu"
    rows = {row.get_attribute("data-row"): row for row in page.locator("table.verify-table tr[data-row]").all()}
    names = ["weights", "adapters", "gradients", "optimizer", "activations", "logits"]
    assert list(rows) == [*names, "peak_allocated", "peak_reserved", "total"]
    peak = rows["peak_allocated"].locator("td")
    assert int(peak.nth(0).get_attribute("data-bytes")) == job["estimate"]["memory"]["peak_allocated"]
    assert int(peak.nth(1).get_attribute("data-bytes")) == job["result"]["measured"]["peak_allocated"]
    error = float(peak.nth(2).get_attribute("data-percent"))
    assert abs(error) <= 3.0
    assert peak.nth(2).inner_text().endswith("%") and peak.nth(2).inner_text()[0] in "+−±"
    assert rows["peak_reserved"].locator("td").nth(1).inner_text() == "—"  # not measured on CPU
    assert page.locator("table.verify-table th[scope=col]").count() == 4
