"""The host-RAM estimate held to the loads recorded in ``bench/results/host_ram.json`` (``python -m bench.host_ram``).

Pure Python, no torch: each recorded case's plan is estimated again and held to what its fresh process measured on
the CPU (a 311 M-parameter Llama's bf16 checkpoint read as LoRA in bf16, QLoRA quantize-on-load and full in fp32):
the process with the stack imported (``memory.host.runtime``), the loading transient (``memory.host.loading``) and
the checkpoint pages read through the memory map (``memory.host.mapped``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from estimator import Plan, estimate

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results" / "host_ram.json"
CASES: list[dict[str, Any]] = json.loads(RESULTS.read_text())["cases"]
MIB = 1024 * 1024


def _host(case: dict[str, Any]) -> dict[str, Any]:
    memory: dict[str, Any] = estimate(Plan.from_dict(case["plan"])).to_dict()["memory"]
    return memory["host"] | {"weights": memory["components"]["weights"]}


def test_runtime_is_the_measured_process() -> None:
    """``HOST_RUNTIME_BYTES`` is the largest process measured with glibc's default allocator (within 1 %)."""
    measured = max(c["measured_glibc"]["runtime"] for c in CASES)
    runtime = _host(CASES[0])["runtime"]
    assert abs(runtime - measured) <= 0.01 * measured, (runtime, measured)


@pytest.mark.parametrize("case", CASES, ids=[c["method"] for c in CASES])
def test_loading_covers_the_measured_transient(case: dict[str, Any]) -> None:
    """Never under what loading held beyond the model; QLoRA's modelled transient within 10 % above; the others
    hold nothing beyond their tensors (bf16: views of the file; fp32: the converted weights themselves)."""
    host, measured = _host(case), case["measured"]
    assert host["loading"] == case["estimated"]["loading"]
    if case["method"] == "qlora":
        assert measured["transient"] <= host["loading"] <= 1.10 * measured["transient"]
    else:
        assert host["loading"] == 0 and measured["transient"] <= MIB
    if case["method"] == "full":  # the converted fp32 weights are all that stays
        assert abs(measured["kept"] - host["weights"]) <= 4 * MIB


@pytest.mark.parametrize("case", CASES, ids=[c["method"] for c in CASES])
def test_mapped_pages_are_what_the_load_reads(case: dict[str, Any]) -> None:
    """The checkpoint pages read, from below: the measured file-backed growth adds library code run for the first
    time (up to ~16 MiB)."""
    host, measured = _host(case), case["measured"]
    assert host["mapped"] <= measured["file_mapped"] + MIB
    assert measured["file_mapped"] - host["mapped"] <= 24 * MIB
