"""The app behind a real uvicorn server on a free loopback port: in a thread, and through ``serve()``."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import uvicorn

from app.main import create_app
from app.settings import Settings
from estimator import catalog
from tests.app.hubserver import HubServer
from tests.app.support import GRANTED_TOKEN, TINY_PARAMS

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until_up(url: str, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not come up in {timeout} s")


@pytest.fixture
def server_url(settings: Settings) -> Iterator[str]:
    port = free_port()
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="info")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_real_server_answers_estimates_and_hub_lookups(server_url: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO), httpx.Client(base_url=server_url, timeout=30) as client:
        assert client.get("/healthz").json()["status"] == "ok"
        est = client.post("/api/estimate", json={"model": catalog.models()[0].id, "method": "qlora"})
        assert est.status_code == 200 and est.json()["memory"]["peak_allocated"] > 0
        model = client.get("/api/models/acme/gated-llama", headers={"X-HF-Token": GRANTED_TOKEN})
        assert model.status_code == 200, model.text
        assert model.json()["parameters"]["safetensors_total"] == TINY_PARAMS
        bad = client.post("/api/estimate", json={"model": catalog.models()[0].id, "batch_size": 0})
        assert bad.status_code == 422 and "batch_size" in bad.json()["detail"]
        assert client.get("/docs").status_code == 200
    assert "/api/models/acme/gated-llama" in caplog.text  # the access log ran...
    assert GRANTED_TOKEN not in caplog.text  # ...without the token


def test_real_server_handles_concurrent_requests(server_url: str) -> None:
    ids = [m.id for m in catalog.models()[:8]]

    def one(i: int) -> int:
        body = {"model": ids[i % len(ids)], "method": ("full", "lora", "qlora")[i % 3], "seq_len": 512}
        return httpx.post(f"{server_url}/api/estimate", json=body, timeout=60).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(one, range(48)))
    assert statuses == [200] * 48


def test_serve_entry_point(hub: HubServer, tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "HF_ENDPOINT": hub.url,
        "TUNEPLAN_DATA_DIR": str(tmp_path / "data"),
        "PYTHONPATH": str(ROOT),
    }
    env.pop("HF_TOKEN", None)
    cmd = [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, proc=proc)
        health = httpx.get(f"{url}/healthz").json()
        assert health["hf_endpoint"] == hub.url
        resolved = httpx.get(f"{url}/api/models/acme/tiny-llama", timeout=30)
        assert resolved.status_code == 200, resolved.text
        gated = httpx.get(f"{url}/api/models/acme/gated-llama", headers={"X-HF-Token": GRANTED_TOKEN}, timeout=30)
        assert gated.status_code == 200
        assert list((tmp_path / "data" / "hub-cache").glob("*.json"))  # the data dir came from the env
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=20)
    log = output.decode(errors="replace")
    assert "GET /api/models/acme/tiny-llama" in log
    assert GRANTED_TOKEN not in log
