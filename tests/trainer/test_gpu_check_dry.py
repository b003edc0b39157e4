"""bench/gpu_check.py --dry: the GPU matrix harness, run on CPU with tiny configs (2 cases, each its own process)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("bitsandbytes")

pytestmark = pytest.mark.train

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_dry_matrix_runs_two_cases(tmp_path: Path) -> None:
    out = tmp_path / "dry.json"
    cmd = [sys.executable, "bench/gpu_check.py", "--matrix", "base", "--dry", "--limit", "2", "--threads", "2"]
    cmd += ["--out", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["dry"] is True and report["device"] == "cpu"
    assert [c["status"] for c in report["cases"]] == ["ok", "ok"]
    first, second = (c["result"] for c in report["cases"])
    assert first["plan"]["seq_len"] < second["plan"]["seq_len"]  # the s512 / s2048 pair, scaled down
    assert second["measured"]["peak_allocated"] > first["measured"]["peak_allocated"] > 0
    assert report["versions"]["torch"]
    for result in (first, second):
        components = result["measured"]["components"]
        assert sum(components.values()) == result["measured"]["peak_allocated"]


def test_full_matrix_shape() -> None:
    from bench import gpu_check

    for dry in (True, False):
        cases = gpu_check.matrix(dry, "base")
        assert len(cases) == 3 * 2 * 2 * 2
        assert len({c["name"] for c in cases}) == len(cases)
        assert {c["plan"]["device"] for c in cases} == {"cpu" if dry else "cuda"}


def test_setups_matrix_covers_what_the_issue_asks_and_every_plan_is_valid() -> None:
    from bench import gpu_check
    from estimator import Plan, estimate

    cases = gpu_check.matrix(False, "setups")
    assert len({c["name"] for c in cases}) == len(cases) <= 25  # about 9 minutes on an H200: one 10-minute command
    plans = [Plan.from_dict(c["plan"]) for c in cases]
    assert {p.dtype for p in plans} >= {"bfloat16", "float16"}
    assert {p.sdpa_backend for p in plans} == {"auto", "flash", "efficient", "cudnn", "math"}
    assert {p.attn_implementation for p in plans} == {"sdpa", "eager"}
    assert {p.padding for p in plans} == {"none", "padded"} and {p.training_loop for p in plans} == {"trainer", "plain"}
    assert {p.loss for p in plans} == {"standard", "chunked"} and {p.method for p in plans} == {"lora", "qlora"}
    for p in plans:  # each estimates (a pinned backend the H200 could not run would be a PlanError here)
        estimate(p.replace(gpu="h200"))
    dry = [Plan.from_dict(c["plan"]) for c in gpu_check.matrix(True, "setups")]
    assert {p.device for p in dry} == {"cpu"} and all(p.sdpa_backend in ("auto", "flash", "math") for p in dry)


@pytest.mark.slow
def test_dry_setups_matrix_runs_its_first_cases(tmp_path: Path) -> None:
    out = tmp_path / "dry.json"
    cmd = [sys.executable, "bench/gpu_check.py", "--dry", "--only", "lora/bf16/p", "--limit", "2", "--threads", "2"]
    cmd += ["--out", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    names = [c["name"] for c in report["cases"]]
    assert report["matrix"] == "setups" and names == ["lora/bf16/padded", "lora/bf16/plain"]
    assert all(c["status"] == "ok" for c in report["cases"])
