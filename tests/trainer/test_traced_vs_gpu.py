"""The CPU trace of a CUDA plan against live tensors measured on an NVIDIA H200 (bench/results/gpu_h200.json).

The trace follows CUDA's kernels where they allocate differently from the CPU's (bool dropout masks, SDPA's math
path for fp32 attention with grouped KV heads: ``trainer.traced.cuda_kernels``), so it must reproduce the tracker's
peak measured on the GPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

from estimator import Plan
from trainer.traced import traced_run

pytestmark = [pytest.mark.train, pytest.mark.slow]

RESULTS = json.loads((Path(__file__).resolve().parents[2] / "bench" / "results" / "gpu_h200.json").read_text())
CASES = {c["name"]: c for c in RESULTS["cases"]}


@pytest.mark.parametrize(
    "name",
    [
        "llama-3.2-1b/qlora/nogc/s512",  # QLoRA: fp32 GQA attention on the math path, dropout masks
        "llama-3.2-1b/lora/nogc/s512",  # LoRA dropout masks without checkpointing
        "qwen2.5-1.5b/qlora/gc/s512",
    ],
)
def test_trace_reproduces_the_gpu_tensor_peak(name: str) -> None:
    result = CASES[name]["result"]
    plan = Plan.from_dict(dict(result["plan"]) | {"config": result["config"]})
    traced = traced_run(plan, result["config"])["measured"]["peak_allocated"]
    measured = result["measured"]["tracked_peak"]
    assert abs(traced - measured) <= 0.001 * measured, f"traced {traced:,} vs H200 {measured:,}"
