"""The "Verify with a real run" button in a real browser: headless Chromium (Debian's ``chromium``) through
Playwright, a real uvicorn server, its real worker thread and a real ``python -m trainer.run`` on CPU.

Skipped when ``/usr/bin/chromium``, Playwright or the train extra is missing.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from pydantic import SecretStr

from app.main import create_app
from app.settings import Settings
from app.view.form import encode_config
from bench.browser import CHROMIUM, load, serve, wait_for
from tests.app.support import API_TOKEN, TINY_RUN_CONFIG

RUN_TIMEOUT_MS = 120_000

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not importlib.util.find_spec("torch"), reason="needs the train extra: pip install -e '.[train]'"
    ),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing: apt-get install -y chromium"),
]

pytest.importorskip("playwright.sync_api", reason="playwright (Python) is not installed")


@pytest.fixture(scope="module")
def base_url(hub: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app under uvicorn in a thread (its lifespan starts the job worker); runs go to the CPU."""
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("data"), hf_endpoint=hub.url, hf_token=None, verify_device="cpu"
    )
    with serve(create_app(settings), stop_timeout_s=30) as url:
        yield url


def test_verify_button_runs_the_plan_and_shows_measured_vs_estimated(page: Any, base_url: str) -> None:
    query = {
        "config": encode_config(TINY_RUN_CONFIG),
        "method": "qlora",
        "batch_size": 1,
        "seq_len": 64,
        "lora_dropout": 0,
    }
    plan = {"config": TINY_RUN_CONFIG, "method": "qlora", "batch_size": 1, "seq_len": 64, "lora_dropout": 0}
    load(page, base_url + "/?" + urlencode(query))
    box = page.locator("#verify")
    assert box.is_visible()
    text = box.inner_text()
    assert "random weights" in text and "live tensors" in text
    assert page.get_attribute("#verify-status", "aria-live") == "polite"

    # before it starts: where it goes, its host memory and about how long it takes (POST /api/jobs/preflight)
    wait_for(page, "document.getElementById('verify-plan').dataset.device === 'cpu'")
    preview = httpx.post(f"{base_url}/api/jobs/preflight", json=plan, timeout=30)
    assert preview.status_code == 200, preview.text
    assert int(page.get_attribute("#verify-plan", "data-host-bytes")) == preview.json()["host_bytes"]
    assert "host memory" in page.inner_text("#verify-plan") and " in all" in page.inner_text("#verify-plan")

    # keyboard only: focus the button and press Enter
    button = page.locator("#verify-run")
    button.focus()
    page.keyboard.press("Enter")
    wait_for(page, "document.getElementById('verify-status').textContent.length > 0", timeout_ms=10_000)
    assert button.is_disabled()
    page.wait_for_selector("#verify-result table.verify-table", timeout=RUN_TIMEOUT_MS)
    assert "Done on cpu" in page.inner_text("#verify-status")
    assert not button.is_disabled()

    job_id = page.get_attribute("table.verify-table", "data-job")
    job = httpx.get(f"{base_url}/api/jobs/{job_id}", timeout=30).json()
    assert job["status"] == "done" and job["estimate"]["plan"]["device"] == "cpu"
    rows = {row.get_attribute("data-row"): row for row in page.locator("table.verify-table tr[data-row]").all()}
    names = ["weights", "adapters", "gradients", "optimizer", "reference", "activations", "logits"]
    # on the CPU there is no allocator cache and no driver: no reserved or nvidia-smi row
    assert list(rows) == [*names, "peak_allocated"] and "nvidia-smi" not in page.inner_text("#verify-result")
    assert "Estimated for the CPU" in page.inner_text("table.verify-table")
    peak = rows["peak_allocated"].locator("td")
    assert int(peak.nth(0).get_attribute("data-bytes")) == job["estimate"]["memory"]["peak_allocated"]
    assert int(peak.nth(1).get_attribute("data-bytes")) == job["result"]["measured"]["peak_allocated"]
    error = float(peak.nth(2).get_attribute("data-percent"))
    assert abs(error) <= 3.0
    assert peak.nth(2).inner_text().endswith("%") and peak.nth(2).inner_text()[0] in "+−±"
    assert page.locator("table.verify-table th[scope=col]").count() == 4


@pytest.fixture(scope="module")
def token_url(hub: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server with an API token whose jobs only queue (no run starts): the page must ask for the token."""
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("data"), hf_endpoint=hub.url, hf_token=None, verify_device="cpu",
        api_token=SecretStr(API_TOKEN), max_concurrent_jobs=0,
    )  # fmt: skip
    with serve(create_app(settings), stop_timeout_s=30) as url:
        yield url


def test_the_page_asks_for_the_api_token_when_the_server_has_one(page: Any, token_url: str) -> None:
    query = {"config": encode_config(TINY_RUN_CONFIG), "method": "qlora", "seq_len": 64, "lora_dropout": 0}
    load(page, token_url + "/?" + urlencode(query))
    status = "document.getElementById('verify-status').textContent"
    token = page.locator("#verify-token")
    assert token.is_visible() and token.get_attribute("type") == "password"

    wait_for(page, "!document.getElementById('verify-run').disabled")
    page.click("#verify-run")  # no token yet: the page asks for it, nothing is sent
    try:
        wait_for(page, f'{status}.includes("Enter this server\'s API token")')
    except TimeoutError as exc:  # say what the page said instead
        raise AssertionError(f"the page said {page.evaluate(status)!r}") from exc
    page.fill("#verify-token", "not-the-token-of-this-server")
    page.click("#verify-run")
    wait_for(page, f"{status}.includes('refused the API token')")
    page.fill("#verify-token", API_TOKEN)
    page.click("#verify-run")
    wait_for(page, f"{status}.startsWith('Queued (job ')")

    assert page.evaluate("sessionStorage.getItem('tuneplan.apiToken')") == API_TOKEN  # this tab only
    assert page.evaluate("localStorage.length") == 0
    authorized = {"Authorization": f"Bearer {API_TOKEN}"}
    jobs = httpx.get(f"{token_url}/api/jobs", headers=authorized, timeout=30).json()
    assert [j["status"] for j in jobs] == ["queued"]
    assert httpx.get(f"{token_url}/api/jobs", timeout=30).status_code == 401
