"""The estimate held to the GPU matrix measured on an NVIDIA H200 (``bench/results/gpu_h200.json``).

Pure Python, no torch: each measured case's plan + config is estimated again and compared with what the run
measured. This holds the calibrated CUDA constants in ``estimator/_memory.py`` (context, runtime, cuBLAS workspace,
allocator cache) and the live-tensor model to real GPU runs in every CI run. The full comparison is the GPU table
of docs/accuracy.md (``python -m bench.accuracy --from-json``).

    .venv/bin/pytest tests/estimator/test_gpu_results.py -q
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from estimator import Plan, estimate

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results" / "gpu_h200.json"

TENSOR_TOLERANCE = 0.01  # estimate's tensor_peak vs the tracker's tracked_peak
ALLOCATED_TOLERANCE = 0.015  # estimate's peak_allocated vs torch.cuda.max_memory_allocated()
TOTAL_TOLERANCE = 0.15  # estimate's total vs driver-used (total - free, what nvidia-smi shows)

DATA: dict[str, Any] = json.loads(RESULTS.read_text())
CASES: list[dict[str, Any]] = DATA["cases"]


def _memory(case: dict[str, Any]) -> dict[str, Any]:
    result = case["result"]
    plan = Plan.from_dict(result["plan"] | {"config": result["config"]})
    memory: dict[str, Any] = estimate(plan).to_dict()["memory"]
    return memory


def _tensor_peak(memory: dict[str, Any]) -> int:
    (term,) = [t for t in memory["terms"] if t["name"] == "tensor_peak"]
    return int(term["bytes"])


def _within(name: str, what: str, estimated: int, measured: int, tolerance: float) -> None:
    error = (estimated - measured) / measured
    assert abs(error) <= tolerance, (
        f"{name}: {what} off by {error:+.2%} (estimated {estimated:,} B, measured {measured:,} B; "
        f"tolerance {tolerance:.1%})"
    )


def test_the_file_names_the_card_and_the_versions() -> None:
    assert DATA["device"] == "cuda" and not DATA["dry"] and not DATA["traced"]
    assert "H200" in DATA["card"]["nvidia_smi"]
    versions = DATA["versions"]
    for key in ("torch", "cuda", "transformers", "peft", "bitsandbytes", "device_name", "driver"):
        assert versions.get(key), f"versions.{key} missing"
    assert "H200" in versions["device_name"]


def test_every_case_ran() -> None:
    assert len(CASES) >= 24
    assert {c["model"] for c in CASES} >= {"llama-3.2-1b", "llama-3.1-8b", "qwen2.5-1.5b"}
    for case in CASES:
        assert case["status"] == "ok" and case["returncode"] == 0, case["name"]
        assert not case["result"]["oom"], case["name"]
        assert case["result"]["device"] == "cuda", case["name"]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["name"])
def test_tensor_peak_matches_the_tracked_peak(case: dict[str, Any]) -> None:
    measured = case["result"]["measured"]
    _within(case["name"], "tensor_peak", _tensor_peak(_memory(case)), measured["tracked_peak"], TENSOR_TOLERANCE)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["name"])
def test_peak_allocated_matches_max_memory_allocated(case: dict[str, Any]) -> None:
    measured = case["result"]["measured"]
    memory = _memory(case)
    _within(case["name"], "peak_allocated", memory["peak_allocated"], measured["peak_allocated"], ALLOCATED_TOLERANCE)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["name"])
def test_total_matches_driver_used(case: dict[str, Any]) -> None:
    measured = case["result"]["measured"]
    _within(case["name"], "total", _memory(case)["total"], measured["driver_used"], TOTAL_TOLERANCE)
