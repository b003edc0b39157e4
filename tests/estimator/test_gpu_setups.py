"""The estimate held to the setups matrix measured on an NVIDIA H200 (``bench/results/gpu_setups_h200.json``).

What the first matrix did not vary (``bench/gpu_check.py``, default matrix): fp16 vs bf16, SDPA pinned to each
backend (standing in for older cards' choices), eager attention, padded vs unpadded batches, the Trainer's loop vs a
plain loop, TRL's chunked loss. Pure Python, no torch: each case's plan + config is estimated again and held to
the issue's target (peak allocated within 3 % on the median and 8 % in the worst case, never under by more than
5 %; here tighter) and to the SDPA backend torch reported choosing.

    .venv/bin/pytest tests/estimator/test_gpu_setups.py -q
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import pytest

from bench.gpu_check import chosen_backend
from estimator import Plan, estimate

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results" / "gpu_setups_h200.json"
ALLOCATED_HIGH = 0.02  # the estimate may be above max_memory_allocated by this much
ALLOCATED_LOW = 0.005  # and below it by this much

DATA: dict[str, Any] = json.loads(RESULTS.read_text())
CASES: list[dict[str, Any]] = DATA["cases"]


def _memory(case: dict[str, Any]) -> dict[str, Any]:
    result = case["result"]
    memory: dict[str, Any] = estimate(Plan.from_dict(result["plan"] | {"config": result["config"]})).to_dict()["memory"]
    return memory


def _error(case: dict[str, Any]) -> float:
    measured = case["result"]["measured"]["peak_allocated"]
    return float((_memory(case)["peak_allocated"] - measured) / measured)


def test_the_matrix_covers_the_setups_the_issue_names() -> None:
    assert DATA["device"] == "cuda" and not DATA["dry"] and "H200" in DATA["versions"]["device_name"]
    plans = [c["result"]["plan"] for c in CASES]
    assert all(c["status"] == "ok" and not c["result"]["oom"] for c in CASES)
    assert {p["dtype"] for p in plans} == {"bfloat16", "float16"}
    assert {p["sdpa_backend"] for p in plans} >= {"auto", "flash", "cudnn", "math", "efficient"}
    assert {p["attn_implementation"] for p in plans} == {"sdpa", "eager"}
    assert {p["padding"] for p in plans} >= {"none", "padded"}
    assert {p["training_loop"] for p in plans} == {"trainer", "plain"}
    assert {p["loss"] for p in plans} == {"standard", "chunked"}
    assert {p["method"] for p in plans} == {"lora", "qlora"}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["name"])
def test_peak_allocated_is_held_to_the_run(case: dict[str, Any]) -> None:
    error = _error(case)
    assert -ALLOCATED_LOW <= error <= ALLOCATED_HIGH, f"{case['name']}: peak_allocated off by {error:+.2%}"


def test_the_median_and_the_worst_case_meet_the_target() -> None:
    errors = [_error(c) for c in CASES]
    assert abs(statistics.median(errors)) <= 0.03
    assert max(abs(e) for e in errors) <= 0.08
    assert min(errors) >= -0.05


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["name"])
def test_the_range_holds_the_measured_peak(case: dict[str, Any]) -> None:
    """The high edge (what the fit verdict uses) is never below the run. The low edge is at most 1.5 % above it:
    LoRA bf16 with the chunked loss peaks in a layer's backward on cuDNN, where the estimate is 50 MB (1.3 %) above
    the run, just over the low edge of the band (the only case whose peak is a fused kernel's layer backward)."""
    low, high = _memory(case)["range"]["peak_allocated"]
    measured = case["result"]["measured"]["peak_allocated"]
    assert measured <= high, case["name"]
    assert low <= measured * 1.015, case["name"]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["name"])
def test_the_kernel_rules_name_the_backend_torch_chose(case: dict[str, Any]) -> None:
    assert chosen_backend(case["result"]) == _memory(case)["attention"]["backend"], case["name"]


def test_cudas_softmax_backward_block_is_what_the_attention_backward_adds_beyond_the_tracked_tensors() -> None:
    """Where the attention's backward sets the peak (the chunked loss keeps the head below it), the run allocates
    one fp32 b·a·s² block the live-tensor tracker cannot see (``tmp = grad * output`` inside CUDA's softmax
    backward): max_memory_allocated less the tracked peak is the cuBLAS workspace plus exactly that block."""
    for name in ("qlora/chunked", "lora/bf16/math/chunked", "lora/bf16/eager/chunked", "qlora/eager/chunked"):
        (case,) = [c for c in CASES if c["name"] == name]
        m, plan = case["result"]["measured"], case["result"]["plan"]
        block = 4 * plan["batch_size"] * case["result"]["config"]["num_attention_heads"] * plan["seq_len"] ** 2
        gap = m["peak_allocated"] - m["tracked_peak"]
        assert block <= gap <= block + 80 * 2**20, (name, gap)
