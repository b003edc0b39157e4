"""What a CUDA training process holds beyond its live tensors, per GPU, and how sure the estimate is.

* ``Runtime``: the constants one estimate uses — CUDA context, runtime (kernels and library handles loaded in the
  first step), cuBLAS workspace, the caching allocator's cache — and where they come from: the GPU catalog's
  architecture entry (``measured`` on a card of that architecture, or ``uncalibrated``: another architecture's
  figures stand in), or a ``CalibrationProfile`` taken from a verify run on that very card (``calibrated``).
* ``CalibrationProfile``: the same constants read off one CUDA verify run (``trainer.run`` result JSON). The app
  stores one per run in its job database and passes the latest for the plan's GPU to ``estimate`` (the estimator
  stays pure: a profile is data, never looked up here).
* ``Band``: the range of each figure, from which terms are exact (parameters, adapters, gradients, optimizer
  state: byte-exact against the tracker) and which are modelled (activations and logits: per attention path, with
  the accuracy seen against real runs) or uncalibrated (runtime constants no run on this architecture measured).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

from . import catalog

MiB = 1024 * 1024

STATUSES = ("measured", "calibrated", "uncalibrated")


@dataclass(frozen=True)
class Runtime:
    """The runtime constants of one estimate (bytes) and where they come from."""

    arch: str
    cuda_context_bytes: int
    cuda_runtime_bytes: int
    cublas_workspace_bytes: int
    allocator_cache_floor_bytes: int
    status: str  # one of STATUSES
    source: str
    allocator_cache_ratio: float = 1.0  # the cache as a multiple of max(the head's largest block, the floor)

    @property
    def context_bytes(self) -> int:
        """Outside torch's allocator: the CUDA context and the runtime loaded in the first step."""
        return self.cuda_context_bytes + self.cuda_runtime_bytes

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CalibrationProfile:
    """Runtime constants measured by one CUDA verify run on one card + driver + torch."""

    gpu: str | None  # the catalog GPU id the card is (None: not in the catalog)
    device_name: str
    driver: str | None
    torch: str | None
    run_id: str
    measured_at: str  # ISO 8601
    cuda_context_bytes: int
    cuda_runtime_bytes: int
    cublas_workspace_bytes: int
    allocator_cache_ratio: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CalibrationProfile:
        return cls(
            gpu=None if data.get("gpu") is None else str(data["gpu"]),
            device_name=str(data["device_name"]),
            driver=None if data.get("driver") is None else str(data["driver"]),
            torch=None if data.get("torch") is None else str(data["torch"]),
            run_id=str(data["run_id"]),
            measured_at=str(data["measured_at"]),
            cuda_context_bytes=int(data["cuda_context_bytes"]),
            cuda_runtime_bytes=int(data["cuda_runtime_bytes"]),
            cublas_workspace_bytes=int(data["cublas_workspace_bytes"]),
            allocator_cache_ratio=float(data["allocator_cache_ratio"]),
        )

    def label(self) -> str:
        """ "calibrated from run <id> on <date>" with the card, driver and torch."""
        stack = ", ".join(x for x in (self.device_name, self.driver and f"driver {self.driver}", self.torch) if x)
        return f"calibrated from run {self.run_id} on {self.measured_at[:10]} ({stack})"


def calibration_from_run(
    result: Mapping[str, Any], run_id: str, measured_at: str, head_block: int, in_op_block: int = 0
) -> CalibrationProfile | None:
    """The profile a finished CUDA run measured (None for a CPU run, an OOM, or a result without the figures).

    context = total − free before anything is loaded; runtime = driver-used − peak reserved − context (what the
    first step loads outside the allocator); cuBLAS workspace = max_memory_allocated − the tracker's peak − the
    block an op makes inside itself at the peak that the estimate already counts (``in_op_block``: CUDA's
    softmax backward's, where the attention's backward sets the peak); allocator cache ratio = (peak reserved −
    peak allocated) over max(``head_block``, the H200's floor), ``head_block`` being the run's plan's largest head
    block (``HeadLoss.fp32_block`` of its estimate).
    """
    m = result.get("measured") or {}
    versions = result.get("versions") or {}
    needed = ("context", "driver_used", "peak_reserved", "peak_allocated", "tracked_peak")
    if result.get("device") != "cuda" or result.get("oom") or any(not isinstance(m.get(k), int) for k in needed):
        return None
    name = str(versions.get("device_name") or "")
    gpu = catalog.gpu_for_device(name) if name else None
    floor = catalog.architecture(gpu).allocator_cache_floor_bytes
    cache = max(m["peak_reserved"] - m["peak_allocated"], 0)
    ratio = min(max(cache / max(head_block, floor), 0.25), 4.0)
    return CalibrationProfile(
        gpu=gpu.id if gpu is not None else None, device_name=name, driver=versions.get("driver"),
        torch=versions.get("torch"), run_id=run_id, measured_at=measured_at,
        cuda_context_bytes=m["context"],
        cuda_runtime_bytes=max(m["driver_used"] - m["peak_reserved"] - m["context"], 0),
        cublas_workspace_bytes=max(m["peak_allocated"] - m["tracked_peak"] - in_op_block, 0),
        allocator_cache_ratio=round(ratio, 4),
    )  # fmt: skip


@lru_cache(maxsize=512)
def runtime_for(gpu_id: str | None, calibration: CalibrationProfile | None = None) -> Runtime:
    """The runtime constants for a plan's GPU: a calibration profile for that GPU when given, else the catalog's
    architecture entry (the default architecture when the plan names no GPU)."""
    gpu = catalog.find_gpu(gpu_id) if gpu_id is not None else None
    arch = catalog.architecture(gpu)
    if calibration is not None:
        return Runtime(
            arch=arch.key, cuda_context_bytes=calibration.cuda_context_bytes,
            cuda_runtime_bytes=calibration.cuda_runtime_bytes,
            cublas_workspace_bytes=calibration.cublas_workspace_bytes,
            allocator_cache_floor_bytes=arch.allocator_cache_floor_bytes, status="calibrated",
            source=calibration.label(), allocator_cache_ratio=calibration.allocator_cache_ratio,
        )  # fmt: skip
    where = f"{arch.key} ({arch.name})" + ("" if gpu is not None else ", the default when no GPU is named")
    if gpu is not None and gpu.custom:
        where = f"{arch.key} ({arch.name}) standing in for the custom GPU {gpu.name!r}"
    status = "measured" if arch.measured and not (gpu is not None and gpu.custom) else "uncalibrated"
    return Runtime(
        arch=arch.key, cuda_context_bytes=arch.cuda_context_bytes, cuda_runtime_bytes=arch.cuda_runtime_bytes,
        cublas_workspace_bytes=arch.cublas_workspace_bytes,
        allocator_cache_floor_bytes=arch.allocator_cache_floor_bytes, status=status,
        source=f"GPU catalog, {where}: {arch.source}",
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------- ranges


@dataclass(frozen=True)
class Band:
    """A figure's range as fractions of it: [value × (1 + low), value × (1 + high)] (low ≤ 0 ≤ high)."""

    low: float
    high: float
    why: str

    def apply(self, value: int) -> tuple[int, int]:
        return math.floor(value * (1 + self.low)), math.ceil(value * (1 + self.high))


EXACT = Band(0.0, 0.0, "byte-exact against the live-tensor tracker (parameters, adapters, gradients, optimizer)")
VERIFIED = Band(-0.03, 0.03, "activations and logits on a path verified by real runs (CPU grid, traces, the H200)")
UNVERIFIED = Band(-0.05, 0.15, "activations and logits on a CUDA path derived from the code, not yet run on a GPU")
WORKSPACE_SCRATCH = 64 * MiB  # in-kernel scratch beyond the workspaces, up to 53 MiB seen on the H200 (rounded up)
CACHE = Band(-0.7, 0.7, "the caching allocator's cache: 0.3-1.7x the modelled block on the H200 runs")
CONTEXT = {
    "measured": Band(-0.02, 0.05, "context and runtime measured on this architecture (runtime 224-240 MiB)"),
    "calibrated": Band(-0.02, 0.02, "context and runtime measured by a verify run on this card"),
    "uncalibrated": Band(-0.8, 0.5, "context and runtime not measured on this architecture: from 0.2x (a small "
                     "card's context) to 1.5x (stacks without lazy module loading)"),
}  # fmt: skip


__all__ = [
    "CACHE",
    "CONTEXT",
    "EXACT",
    "STATUSES",
    "UNVERIFIED",
    "VERIFIED",
    "WORKSPACE_SCRATCH",
    "Band",
    "CalibrationProfile",
    "Runtime",
    "calibration_from_run",
    "runtime_for",
]
