"""The setup fields (sdpa_backend, padding, training_loop, loss, transformers_version, calibration) through the real
API and CLI: accepted, validated with a message that says what to fix, and reflected in the contract."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings

ROOT = Path(__file__).resolve().parents[3]
SETUP = {"sdpa_backend": "math", "padding": "packed", "training_loop": "plain", "loss": "chunked",
         "transformers_version": "4.x", "calibration": "none"}  # fmt: skip


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_the_api_takes_the_setup_fields_and_says_what_they_changed(client: TestClient) -> None:
    body = {"model": "llama-3.1-8b", "gpu": "h200"} | SETUP
    answer = client.post("/api/estimate", json=body)
    assert answer.status_code == 200, answer.text
    data = answer.json()
    assert {k: data["plan"][k] for k in SETUP} == SETUP
    memory = data["memory"]
    assert memory["attention"]["backend"] == "math" and memory["attention"]["pinned"] and memory["attention"]["mask"]
    assert memory["runtime"]["status"] == "measured" and memory["range"]["total"][1] >= memory["total"]
    assert any(t["name"] == "chunk_buffer" for t in memory["terms"])
    query = client.get("/api/estimate", params={"model": "llama-3.1-8b", "padding": "none", "loss": "standard"})
    assert query.status_code == 200 and query.json()["plan"]["padding"] == "none"
    schema = client.get("/openapi.json").text
    assert all(f'"{name}"' in schema for name in SETUP)


@pytest.mark.parametrize(
    "change,message",
    [
        ({"padding": "ragged"}, "padding must be one of 'padded', 'none' or 'packed'"),
        ({"sdpa_backend": "flash", "method": "qlora"}, "sdpa_backend 'flash' cannot run this attention"),
        ({"transformers_version": "6.x"}, "transformers_version must be one of '5.x' or '4.x'"),
    ],
)
def test_bad_setup_values_are_a_422_that_says_what_to_fix(
    client: TestClient, change: dict[str, str], message: str
) -> None:
    answer = client.post("/api/estimate", json={"model": "llama-3.1-8b"} | change)
    assert answer.status_code == 422, answer.text
    assert message in answer.json()["detail"]


def test_the_cli_takes_the_setup_fields() -> None:
    exe = Path(sys.executable).parent / "tuneplan"
    found = str(exe) if exe.exists() else shutil.which("tuneplan")
    if not found:
        pytest.skip("the tuneplan console script is not installed")
    env = os.environ | {"HF_ENDPOINT": "http://127.0.0.1:9", "NO_COLOR": "1"}
    args = [found, "estimate", "llama-3.1-8b", "--padding", "padded", "--batch-size", "2", "--loss", "chunked",
            "--training-loop", "plain", "--sdpa-backend", "auto", "--json"]  # fmt: skip
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["plan"]["padding"] == "padded" and data["memory"]["attention"]["backend"] == "efficient"
    bad = subprocess.run([*args[:3], "--sdpa-backend", "flashy"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert bad.returncode == 2 and "flashy" in bad.stderr
