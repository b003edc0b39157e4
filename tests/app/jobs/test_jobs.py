"""Verify jobs: a real SQLite store, a real worker thread and real ``python -m trainer.run`` processes on CPU."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.jobs.store import INTERRUPTED, JobStore
from app.main import create_app
from app.settings import Settings
from tests.app.support import TINY_RUN_CONFIG, local_client

ROOT = Path(__file__).resolve().parents[3]
TRAIN_STACK = ("torch", "transformers", "peft", "bitsandbytes")

TINY_PLAN: dict[str, Any] = {
    "config": TINY_RUN_CONFIG,
    "method": "qlora",
    "batch_size": 1,
    "seq_len": 64,
    "lora_dropout": 0.0,
    "device": "cpu",
}
RUN_TIMEOUT_S = 120

needs_train = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in TRAIN_STACK),
    reason="needs the train extra: pip install -e '.[train]'",
)


def _gpu_here() -> bool:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return False
    try:
        return subprocess.run([exe, "-L"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.fixture
def queue_only(settings: Settings) -> Settings:
    """Jobs are accepted and stored, none runs (``max_concurrent_jobs=0``)."""
    return settings.model_copy(update={"max_concurrent_jobs": 0})


@pytest.fixture
def client(queue_only: Settings) -> Iterator[TestClient]:
    with local_client(create_app(queue_only)) as test_client:
        yield test_client


def _error(response: Any, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail
    return detail


def _wait(client: TestClient, url: str, until: tuple[str, ...], timeout: float = RUN_TIMEOUT_S) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = client.get(url).json()
        if job["status"] in until:
            return job
        assert time.monotonic() < deadline, f"job still {job['status']} after {timeout} s: {job.get('error')}"
        time.sleep(0.2)


# ------------------------------------------------------------------------------------------------- real runs


@needs_train
def test_a_real_cpu_run_end_to_end_and_cancelling(settings: Settings) -> None:
    with local_client(create_app(settings)) as client:
        posted = client.post("/api/jobs", json=TINY_PLAN)
        assert posted.status_code == 202, posted.text
        first = posted.json()
        assert first["status"] == "queued" and first["url"] == f"/api/jobs/{first['id']}"
        assert posted.headers["location"] == first["url"]

        # one run at a time: a second job waits in the queue, and can be cancelled there
        second = client.post("/api/jobs", json=TINY_PLAN).json()
        assert client.get(second["url"]).json()["status"] == "queued"
        cancelled = client.delete(second["url"])
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"

        job = _wait(client, first["url"], ("done", "failed", "cancelled"))
        assert job["status"] == "done", job["error"]
        assert job["device"] == "cpu" and job["estimate"]["plan"]["device"] == "cpu"
        measured = job["result"]["measured"]
        assert measured["peak_allocated"] > 0
        rows = {r["name"]: r for r in job["comparison"]["components"] + job["comparison"]["tiers"]}
        peak = rows["peak_allocated"]
        assert peak["measured"] == measured["peak_allocated"]
        assert peak["estimated"] == job["estimate"]["memory"]["peak_allocated"]
        assert abs(peak["error_percent"]) <= 3.0, peak
        assert rows["adapters"]["measured"] == rows["adapters"]["estimated"]  # LoRA tensors are exact
        assert rows["peak_reserved"]["measured"] is None and rows["total"]["measured"] is None  # CPU: live tensors
        assert job["comparison"]["oom"] is False

        # a running job is killed by DELETE
        third = client.post("/api/jobs", json=TINY_PLAN).json()
        running = _wait(client, third["url"], ("running",), timeout=30)
        # while it runs: the phase it reported last (a file in its work directory) and the time since it started
        assert running["progress"]["phase"] in ("starting", "building", "warm-up", "measuring", "writing")
        assert running["progress"]["elapsed_s"] >= 0
        assert job["progress"] is None  # a finished job has none
        runner = client.app.state.tuneplan.runner  # type: ignore[attr-defined]
        proc = runner._running[third["id"]].proc
        assert client.delete(third["url"]).json()["status"] == "cancelled"
        assert proc.wait(timeout=10) != 0
        assert _wait(client, third["url"], ("cancelled",), timeout=5)["status"] == "cancelled"
        assert _error(client.delete(first["url"]), 409).startswith(f"job {first['id']} is already done")

        listed = client.get("/api/jobs").json()
        assert [j["id"] for j in listed] == [third["id"], second["id"], first["id"]]
        assert [j["status"] for j in listed] == ["cancelled", "cancelled", "done"]
        assert client.get("/api/jobs?limit=1").json()[0]["id"] == third["id"]


@needs_train
def test_a_run_past_its_deadline_is_killed_and_failed(settings: Settings) -> None:
    with local_client(create_app(settings.model_copy(update={"job_timeout_s": 0.5}))) as client:
        job = client.post("/api/jobs", json=TINY_PLAN).json()
        failed = _wait(client, job["url"], ("done", "failed"), timeout=30)
        assert failed["status"] == "failed"
        assert failed["error"].startswith("the run took longer than 0.5 s and was stopped")
        assert failed["result"] is None and failed["comparison"] is None


@needs_train
def test_the_web_process_imports_no_torch_creating_and_running_a_job(tmp_path: Path) -> None:
    probe = f"""
import json, sys, time
from pathlib import Path
from fastapi.testclient import TestClient
from app.main import create_app
from app.settings import Settings

settings = Settings(data_dir=Path({str(tmp_path)!r}), max_concurrent_jobs=1)
with TestClient(create_app(settings), base_url="http://127.0.0.1", client=("127.0.0.1", 50000)) as client:
    url = client.post("/api/jobs", json=json.loads({json.dumps(TINY_PLAN)!r})).json()["url"]
    deadline = time.monotonic() + {RUN_TIMEOUT_S}
    while (job := client.get(url).json())["status"] in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.2)
print(json.dumps({{"status": job["status"], "error": job["error"],
                  "loaded": [m for m in {TRAIN_STACK!r} if m in sys.modules]}}))
"""
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT_S + 60
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["status"] == "done", report["error"]
    assert report["loaded"] == []


# ------------------------------------------------------------------------------------------------- persistence


def test_jobs_survive_restarts_and_running_ones_become_failed(queue_only: Settings) -> None:
    with local_client(create_app(queue_only)) as client:
        job = client.post("/api/jobs", json=TINY_PLAN)
        assert job.status_code == 202, job.text
        queued = job.json()
        stored = client.get(queued["url"]).json()
    assert queue_only.jobs_db.is_file()

    # a job the previous server was running when it died
    store = JobStore(queue_only.jobs_db)
    running = store.create(
        device="cpu", steps=1, plan={"model": None, "method": "qlora"}, config=TINY_RUN_CONFIG,
        estimate=stored["estimate"], status="running",
    )  # fmt: skip
    store.close()
    assert running is not None

    with local_client(create_app(queue_only)) as client:
        listed = {j["id"]: j for j in client.get("/api/jobs").json()}
        assert set(listed) == {queued["id"], running.id}
        assert listed[queued["id"]]["status"] == "queued"
        assert listed[running.id]["status"] == "failed" and listed[running.id]["error"] == INTERRUPTED
        again = client.get(queued["url"]).json()
        assert again["estimate"] == stored["estimate"] and again["plan"] == stored["plan"]
        assert client.delete(queued["url"]).json()["status"] == "cancelled"

    with local_client(create_app(queue_only)) as client:
        statuses = {j["id"]: j["status"] for j in client.get("/api/jobs").json()}
        assert statuses == {queued["id"]: "cancelled", running.id: "failed"}


def test_a_job_stores_its_plan_estimate_and_config(client: TestClient) -> None:
    posted = client.post("/api/jobs", json=TINY_PLAN | {"steps": 2})
    assert posted.status_code == 202, posted.text
    job = client.get(posted.json()["url"]).json()
    assert job["status"] == "queued" and job["steps"] == 2 and job["device"] == "cpu"
    assert job["model"] == "inline config" and job["method"] == "qlora"
    assert "config" not in job["plan"] and "steps" not in job["plan"]
    expected = client.post("/api/estimate", json=TINY_PLAN).json()
    assert job["estimate"]["memory"] == expected["memory"]
    assert job["result"] is None and job["comparison"] is None and job["error"] is None


def test_a_hub_id_is_resolved_through_the_hub_client(client: TestClient) -> None:
    posted = client.post("/api/jobs", json={"model": "acme/tiny-llama", "seq_len": 64, "device": "cpu"})
    assert posted.status_code == 202, posted.text
    job = client.get(posted.json()["url"]).json()
    assert job["model"] == "acme/tiny-llama"
    assert job["estimate"]["params"]["total"] > 0
    _error(client.post("/api/jobs", json={"model": "acme/does-not-exist", "device": "cpu"}), 404)


# ------------------------------------------------------------------------------------------------- errors


def test_unknown_jobs_are_404(client: TestClient) -> None:
    assert "no job 'nope'" in _error(client.get("/api/jobs/nope"), 404)
    _error(client.delete("/api/jobs/nope"), 404)


@pytest.mark.parametrize(
    "change, field",
    [
        ({"steps": 0}, "steps"),
        ({"steps": 6}, "steps"),
        ({"device": "tpu"}, "device"),
        ({"learning_rate": 3e-4}, "learning_rate"),  # not a plan field (memory does not depend on it)
        ({"seq_len": 100_000}, "seq_len"),
        ({"lora_r": 0}, "lora_r"),
        ({"model": "llama-3.1-8b"}, "model"),
        ({"gpu": "no-such-card"}, "gpu"),
    ],
)
def test_bad_input_is_a_422_that_says_what_to_fix(client: TestClient, change: dict[str, Any], field: str) -> None:
    assert field in _error(client.post("/api/jobs", json=TINY_PLAN | change), 422)
    assert client.get("/api/jobs").json() == []


def test_bad_bodies_and_limits(client: TestClient) -> None:
    _error(client.post("/api/jobs", content=b"{not json", headers={"content-type": "application/json"}), 422)
    _error(client.post("/api/jobs", json=[1, 2]), 422)
    _error(client.post("/api/jobs", json={"method": "qlora"}), 422)
    _error(client.get("/api/jobs?limit=0"), 422)
    _error(client.get("/api/jobs?limit=abc"), 422)


@pytest.mark.skipif(_gpu_here(), reason="this server has a GPU")
def test_cuda_without_a_gpu_is_a_422(queue_only: Settings) -> None:
    with local_client(create_app(queue_only)) as client:
        detail = _error(client.post("/api/jobs", json=TINY_PLAN | {"device": "cuda"}), 422)
        assert "needs an NVIDIA GPU" in detail and "'cpu'" in detail
        # auto picks the CPU here
        job = client.post("/api/jobs", json={k: v for k, v in TINY_PLAN.items() if k != "device"}).json()
        assert client.get(job["url"]).json()["device"] == "cpu"
    forced = queue_only.model_copy(update={"verify_device": "cuda"})
    with local_client(create_app(forced)) as client:
        _error(client.post("/api/jobs", json={k: v for k, v in TINY_PLAN.items() if k != "device"}), 422)


def test_without_the_train_extra_job_creation_is_a_503(queue_only: Settings) -> None:
    missing = queue_only.model_copy(update={"train_module": "tuneplan_no_such_training_module"})
    with local_client(create_app(missing)) as client:
        detail = _error(client.post("/api/jobs", json=TINY_PLAN), 503)
        assert "install the train extra: pip install -e '.[train]'" in detail
        assert client.get("/api/jobs").json() == []
        assert client.post("/api/estimate", json=TINY_PLAN).status_code == 200  # estimates still work


def test_the_routes_are_in_the_openapi_document(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {"post", "get"} <= set(paths["/api/jobs"])
    assert {"get", "delete"} <= set(paths["/api/jobs/{job_id}"])
    body = paths["/api/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["$ref"].endswith("/JobBody")


# ------------------------------------------------------------------------------------------------- limits


def test_the_queue_is_bounded_and_old_jobs_are_deleted(queue_only: Settings) -> None:
    limited = queue_only.model_copy(update={"max_queued_jobs": 3, "job_history": 2})
    with local_client(create_app(limited)) as client:
        urls = [client.post("/api/jobs", json=TINY_PLAN).json()["url"] for _ in range(3)]
        full = client.post("/api/jobs", json=TINY_PLAN)
        assert "3 verify jobs are already waiting" in _error(full, 429)
        assert full.headers["retry-after"] == "60"
        for url in urls:  # cancelled jobs are finished jobs: only the 2 newest are kept
            assert client.delete(url).status_code == 200
        assert client.post("/api/jobs", json=TINY_PLAN).status_code == 202  # room again
        listed = client.get("/api/jobs").json()
        assert [j["status"] for j in listed] == ["queued", "cancelled", "cancelled"]
        assert _error(client.get(urls[0]), 404)  # the oldest finished job is gone


def test_a_run_over_the_hosts_memory_is_refused_unless_asked_for(queue_only: Settings) -> None:
    huge = {"model": "llama-3.1-70b", "method": "full", "seq_len": 2048, "device": "cpu"}
    with local_client(create_app(queue_only)) as client:
        refused = client.post("/api/jobs", json=huge)
        body = refused.json()
        assert "of host memory" in _error(refused, 422) and "allow_oom" in body["detail"]
        assert body["estimate_bytes"] > body["device_bytes"] > 0
        assert client.get("/api/jobs").json() == []
        assert client.post("/api/jobs", json=huge | {"allow_oom": True}).status_code == 202
    capped = queue_only.model_copy(update={"run_memory_bytes": 2**30})
    with local_client(create_app(capped)) as client:
        detail = _error(client.post("/api/jobs", json=TINY_PLAN | {"batch_size": 256, "seq_len": 512}), 422)
        assert "the run's memory cap" in detail


def test_a_job_is_cancelled_once(client: TestClient) -> None:
    url = client.post("/api/jobs", json=TINY_PLAN).json()["url"]
    assert client.delete(url).json()["status"] == "cancelled"
    assert "already cancelled" in _error(client.delete(url), 409)


@needs_train
def test_a_run_killed_by_a_signal_says_so(settings: Settings) -> None:
    """A real run, capped (its RLIMIT_DATA is the setting), killed as the out-of-memory killer kills."""
    capped = settings.model_copy(update={"run_memory_bytes": 3 * 2**30})
    with local_client(create_app(capped)) as client:
        job = client.post("/api/jobs", json=TINY_PLAN).json()
        _wait(client, job["url"], ("running",), timeout=30)
        store = JobStore(settings.jobs_db)
        deadline = time.monotonic() + 30
        while (pid := store.get(job["id"]).pid) is None and time.monotonic() < deadline:  # type: ignore[union-attr]
            time.sleep(0.05)
        store.close()
        assert pid is not None
        while b"app.jobs.launch" in Path(f"/proc/{pid}/cmdline").read_bytes():  # until the launcher exec's the run
            assert time.monotonic() < deadline
            time.sleep(0.05)
        limits = Path(f"/proc/{pid}/limits").read_text()
        assert re.search(rf"Max data size\s+{3 * 2**30}\s", limits), limits
        os.kill(pid, signal.SIGKILL)  # as the kernel's out-of-memory killer would
        failed = _wait(client, job["url"], ("failed",), timeout=30)
        assert failed["error"].startswith("the run was killed by SIGKILL: the kernel's out-of-memory killer")


@needs_train
def test_preflight_says_what_a_run_would_take_and_queues_nothing(client: TestClient) -> None:
    """POST /api/jobs/preflight: the device, the host memory (the CPU estimate's tensors plus the process), about
    how long, and whether it may start, with the 422's reason when not."""
    from app.jobs.limits import RUN_PROCESS_BYTES

    preview = client.post("/api/jobs/preflight", json=TINY_PLAN)
    assert preview.status_code == 200, preview.text
    body = preview.json()
    estimate = client.post("/api/estimate", json=TINY_PLAN).json()
    assert body["device"] == "cpu" and body["runs"] is True and body["reason"] is None
    assert body["host_bytes"] == RUN_PROCESS_BYTES + estimate["memory"]["peak_allocated"]
    assert body["estimate_bytes"] == estimate["memory"]["peak_allocated"] and 0 < body["time_s"] < 600
    huge = client.post("/api/jobs/preflight", json={"model": "llama-3.1-70b", "method": "full", "device": "cpu"})
    assert huge.status_code == 200 and huge.json()["runs"] is False and "of host memory" in huge.json()["reason"]
    assert huge.json()["time_s"] > body["time_s"]
    assert client.get("/api/jobs").json() == []


def test_the_page_disables_verify_with_the_reason_when_it_cannot_run(queue_only: Settings) -> None:
    """Said before any click: the button is disabled and the reason is next to it."""
    page = "/?model=qwen2.5-0.5b&method=lora"
    missing = queue_only.model_copy(update={"train_module": "tuneplan_no_such_training_module"})
    with local_client(create_app(missing)) as client:
        html = client.get(page).text
        assert 'data-enabled="false"' in html and "the train extra is not installed" in html
        assert re.search(r'<button type="button" id="verify-run"[^>]* disabled>', html)
    if not _gpu_here():
        forced = queue_only.model_copy(update={"verify_device": "cuda"})
        with local_client(create_app(forced)) as client:
            html = client.get(page).text
            assert 'data-enabled="false"' in html and "TUNEPLAN_VERIFY_DEVICE=cuda) and has none" in html
    with local_client(create_app(queue_only)) as client:
        html = client.get(page).text
        ready = importlib.util.find_spec(queue_only.train_module) is not None
        assert ('data-enabled="true"' in html) == ready
