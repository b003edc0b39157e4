"""Calibration from runs: a finished CUDA verify run stores its card's runtime constants in the job database, and
later estimates for that GPU use them (a real SQLite file, a real runner finishing a job, the real app).

No GPU runs here, so the run is a recorded one: the H200 matrix's result JSON (bench/results/gpu_h200.json), written
where a run writes its result and finished by the runner as it finishes any run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from app.jobs.calibration import CalibrationStore, profile_from_result
from app.jobs.runner import JobRunner, _Running
from app.main import create_app
from app.settings import Settings
from estimator import Plan, estimate

ROOT = Path(__file__).resolve().parents[3]
H200 = json.loads((ROOT / "bench" / "results" / "gpu_h200.json").read_text())
CASE = next(c for c in H200["cases"] if c["name"] == "llama-3.1-8b/qlora/gc/s2048")["result"]


def _finish_recorded_run(runner: JobRunner, result: dict[str, Any]) -> str:
    """Queue a job for the run's plan, then let the runner finish it with ``result`` as the run's output."""
    plan = {k: v for k, v in result["plan"].items() if k != "config"}
    est = estimate(Plan.from_dict({**plan, "config": result["config"]})).to_dict()
    row = runner.store.create(device="cuda", steps=1, plan=plan, config=result["config"], estimate=est)
    assert row is not None
    runner.store.set_status(row.id, "running")
    workdir = Path(tempfile.mkdtemp(prefix="calibration-test-"))
    (workdir / "result.json").write_text(json.dumps(result))
    log = open(workdir / "output.txt", "wb")
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    running = _Running(row.id, proc, workdir, log, time.monotonic(), est)
    try:
        runner._finish(running, 0)
    finally:
        runner._cleanup(running)
    return row.id


def test_a_finished_cuda_run_calibrates_later_estimates_for_its_gpu(settings: Settings) -> None:
    runner = JobRunner(settings)
    assert runner.latest_calibration("h200") is None and not settings.jobs_db.exists()  # no file made to look
    job_id = _finish_recorded_run(runner, CASE)
    assert runner.get(job_id).status == "done"
    profile = runner.latest_calibration("h200")
    assert profile is not None and profile.run_id == job_id and profile.device_name == "NVIDIA H200"
    assert profile.cuda_context_bytes == CASE["measured"]["context"]
    runner.stop()

    with TestClient(create_app(settings)) as client:
        body = {"model": "llama-3.1-8b", "gpu": "h200", "lora_dropout": 0.05}
        memory = client.post("/api/estimate", json=body).json()["memory"]
        assert memory["runtime"]["status"] == "calibrated"
        assert any(f"calibrated from run {job_id} on " in n for n in memory["notes"])
        driver_used = CASE["measured"]["driver_used"]
        assert abs(memory["total"] - driver_used) <= 0.01 * driver_used  # the run measured this very plan
        off = client.post("/api/estimate", json=body | {"calibration": "none"}).json()["memory"]
        assert off["runtime"]["status"] == "measured"
        other = client.post("/api/estimate", json=body | {"gpu": "a100-80gb"}).json()["memory"]
        assert other["runtime"]["status"] == "uncalibrated"


def test_cpu_runs_and_out_of_memory_runs_calibrate_nothing(tmp_path: Path) -> None:
    from sqlalchemy import create_engine

    store = CalibrationStore(create_engine(f"sqlite:///{tmp_path / 'jobs.sqlite'}"))
    assert store.record_run("a", {**CASE, "device": "cpu"}) is None
    assert store.record_run("b", {**CASE, "oom": True}) is None
    assert profile_from_result({"plan": {}}, "c") is None
    assert store.latest("h200") is None
    assert store.record_run("d", CASE) is not None
    assert store.record_run("e", CASE) is not None
    latest = store.latest("h200")
    assert latest is not None and latest.run_id == "e"


def test_a_run_whose_peak_is_the_attentions_backward_reads_the_workspace_without_the_softmax_block() -> None:
    """QLoRA with the chunked loss peaks in the math path's backward, where CUDA's softmax backward allocates an
    fp32 b·a·s² block inside the op (1 GiB here): the calibration takes it out of the untracked gap it reads as
    cuBLAS's workspace, so later estimates are not charged 1 GiB of workspace."""
    setups = json.loads((ROOT / "bench" / "results" / "gpu_setups_h200.json").read_text())
    for name in ("qlora/chunked", "qlora/eager/chunked", "qlora"):
        result = next(c for c in setups["cases"] if c["name"] == name)["result"]
        profile = profile_from_result(result, name)
        assert profile is not None and profile.gpu == "h200"
        assert 63 * 2**20 <= profile.cublas_workspace_bytes <= 66 * 2**20, (name, profile.cublas_workspace_bytes)
