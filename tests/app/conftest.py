"""Fixtures of the app tests: a local Hub-shaped server with a few repos, settings pointing at it, and the
headless browser of the browser tests (``bench/browser.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.settings import Settings
from bench.browser import launch_chromium
from tests.app.hubserver import HubServer
from tests.app.support import (
    GRANTED_TOKEN,
    NO_DTYPE,
    ROTARY_BUFFER,
    TINY,
    TINY_TENSORS,
    llama_tensors,
    split_tensors,
    tiny_llama_config,
)


@pytest.fixture(scope="session")
def hub() -> Iterator[HubServer]:
    """The local Hub, with the repos the tests use."""
    server = HubServer(granted_tokens=(GRANTED_TOKEN,))
    server.add_repo("acme/tiny-llama", TINY, tensors=TINY_TENSORS)
    server.add_repo("acme/tiny-llama-sharded", TINY, shards=split_tensors(TINY_TENSORS, 3))
    server.add_repo("acme/no-weights", TINY)
    server.add_repo("acme/unlisted", TINY, tensors=TINY_TENSORS, list_siblings=False)
    server.add_repo("acme/gated-llama", TINY, tensors=TINY_TENSORS, gated=True)
    server.add_repo("acme/private-llama", TINY, tensors=TINY_TENSORS, private=True)
    server.add_repo("acme/slow-llama", TINY, tensors=TINY_TENSORS, delay_s=3.0)
    server.add_repo("acme/sluggish-llama", TINY, tensors=TINY_TENSORS, delay_s=0.3)
    server.add_repo("acme/lagging-llama", TINY, tensors=TINY_TENSORS, delay_s=1.0)
    server.add_repo("acme/broken", TINY, fail_status=503)
    server.add_repo("acme/no-config", None, tensors=TINY_TENSORS)
    server.add_repo("acme/bad-json", b"{not json")
    server.add_repo("acme/list-json", b"[1, 2, 3]")
    server.add_repo("acme/huge-config", tiny_llama_config(padding="x" * 300_000))
    server.add_repo(
        "acme/tiny-bert",
        {"architectures": ["BertForMaskedLM"], "model_type": "bert", "vocab_size": 100, "hidden_size": 32},
    )
    server.add_repo("acme/mixed-dtypes", TINY, tensors=llama_tensors(TINY, "F32") | {"extra.scale": ("F16", [8])})
    server.add_repo("acme/fp32-no-dtype", NO_DTYPE, tensors=llama_tensors(NO_DTYPE, "F32") | ROTARY_BUFFER)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def settings(hub: HubServer, tmp_path: Path) -> Settings:
    """Settings for one test: its own data dir, the local Hub, no default token.

    The Hub deadline is generous so a busy machine does not turn a slow answer into a 504; the timeout tests
    shorten it (``impatient``). TestClient's requests name the host ``testserver``: allowed here, with loopback.
    """
    return Settings(
        data_dir=tmp_path / "data",
        hf_endpoint=hub.url,
        hf_token=None,
        hub_timeout_s=15.0,
        cache_max_entries=16,
        allowed_hosts=["127.0.0.1", "localhost", "::1", "testserver"],
    )


@pytest.fixture
def impatient(settings: Settings) -> Settings:
    """The same settings with a 1 s Hub deadline (the ``acme/slow-llama`` repo answers after 3 s)."""
    return settings.model_copy(update={"hub_timeout_s": 1.0})


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium for one browser test module (a module skips itself when Chromium or Playwright is missing)."""
    with launch_chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh 1280x900 page; the test fails if the page raised a JavaScript error."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
