"""About how long a verify run takes, said before it starts (``POST /api/jobs/preflight``): rough by design, it says
whether a run takes seconds, minutes or hours. Pure: no app state, no I/O.

Set from the trainer's runs on this project's 2-core CPU test machine and checked with ``python -m bench.run_duration``
(docs/performance.md has the runs): a CPU step runs at about CPU_FLOPS on the step's FLOPs (estimator.step_flops), a
QLoRA step also dequantizes its 4-bit weights at about CPU_DEQUANT_BYTES_PER_S, building takes BUILD_S_PER_PARAM per
parameter (random init; QLoRA also quantizes), and Python with torch, transformers, PEFT and bitsandbytes takes
RUN_STARTUP_S to import. A GPU run took 18-30 s in all on the H200 (bench/results/gpu_h200.json): GPU_RUN_BASE_S,
plus its steps at the time model's step time.
"""

from __future__ import annotations

RUN_STARTUP_S = 6.0
CPU_FLOPS = 1.0e10
CPU_DEQUANT_BYTES_PER_S = 1.0e8
BUILD_S_PER_PARAM = {"qlora": 2.0e-7, "lora": 5.0e-8, "full": 5.0e-8}
GPU_RUN_BASE_S = 30.0


def run_seconds(device: str, method: str, params: int, flops: int, dequant_bytes: int, steps: int,
                gpu_step_s: float | None) -> float | None:  # fmt: skip
    """About how long a verify run takes in all: startup, build, a warm-up step and ``steps`` measured ones (CPU);
    on a GPU the base seen on the H200 plus the steps at ``gpu_step_s`` (None when there is no step time)."""
    if device == "cuda":
        return None if gpu_step_s is None else GPU_RUN_BASE_S + (steps + 2) * gpu_step_s
    step = flops / CPU_FLOPS + dequant_bytes / CPU_DEQUANT_BYTES_PER_S
    return RUN_STARTUP_S + BUILD_S_PER_PARAM[method] * params + (steps + 1) * step
