"""What a verify run may take of this machine: the pre-flight check of its estimate against the device, the memory
cap of the run process, and what a run's exit status means.

* **Pre-flight.** On CUDA the estimate's ``memory.total`` (what nvidia-smi would show) is compared with the GPU's
  memory (``nvidia-smi --query-gpu``); on the CPU, the estimate's ``memory.peak_allocated`` plus the run process's
  own footprint (``RUN_PROCESS_BYTES``) with the host's available memory (``MemAvailable``) and the cap. A run that
  would not fit is refused (422) unless the client asks to see the OOM (``allow_oom``).
* **Cap.** ``TUNEPLAN_RUN_MEMORY_BYTES`` (default: ``DEFAULT_CAP_SHARE`` of the host's RAM) is the run's
  ``RLIMIT_DATA`` (``app.jobs.launch``), so an unexpected run fails its allocation instead of taking the host down.

No web framework here: refusals are ``app.errors.InvalidRequest``.
"""

from __future__ import annotations

import functools
import shutil
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from app.errors import InvalidRequest
from app.settings import Settings
from estimator import gib_text

MEMINFO = Path("/proc/meminfo")
DEFAULT_CAP_SHARE = 0.8
RUN_PROCESS_BYTES = 512 * 1024**2
"""The run process's own host memory before any tensor: Python, torch, transformers, PEFT and bitsandbytes loaded
(455 MB peak RSS for the tests' tiny QLoRA run on CPU, torch 2.13)."""
ALLOW_OOM_HINT = 'lower batch_size or seq_len, or send "allow_oom": true to run it anyway and see it fail'


def meminfo() -> dict[str, int]:
    """``/proc/meminfo`` in bytes (empty where there is none)."""
    out: dict[str, int] = {}
    try:
        lines = MEMINFO.read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            out[name.strip()] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return out


def run_memory_cap(settings: Settings) -> int:
    """The run process's memory cap in bytes (0: none): the setting, else a share of the host's RAM."""
    if settings.run_memory_bytes is not None:
        return settings.run_memory_bytes
    total = meminfo().get("MemTotal", 0)
    return int(total * DEFAULT_CAP_SHARE)


@functools.cache
def gpu_memory() -> tuple[str, int] | None:
    """The name and memory (bytes) of GPU 0 from ``nvidia-smi`` (asked once per process); None without one."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    cmd = [exe, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits", "--id=0"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
        name, _, mib = out.stdout.strip().splitlines()[0].rpartition(",")
        return name.strip(), int(float(mib)) * 1024**2
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def preflight(settings: Settings, device: str, estimate: Mapping[str, Any]) -> None:
    """``InvalidRequest`` (422) when the run's estimate exceeds what the device can hold; the message gives both."""
    memory = estimate["memory"]
    if device == "cuda":
        gpu = gpu_memory()
        need = int(memory["range"]["total"][1])  # the figure `fits` uses: the high edge of the total's range
        if gpu is not None and need > gpu[1]:
            raise InvalidRequest(
                f"this run is estimated at up to {gib_text(need)} of GPU memory (memory.range.total), more than the "
                f"{gib_text(gpu[1])} of this server's GPU ({gpu[0]}): it would run out of memory; {ALLOW_OOM_HINT}",
                estimate_bytes=need,
                device_bytes=gpu[1],
            )
        return
    need = int(memory["peak_allocated"]) + RUN_PROCESS_BYTES
    available = meminfo().get("MemAvailable")
    cap = run_memory_cap(settings)
    limits = [(b, what) for b, what in ((available, "available on this server"), (cap, "the run's memory cap"))
              if b]  # fmt: skip
    if not limits:
        return
    limit, what = min(limits)
    if need > limit:
        raise InvalidRequest(
            f"this run is estimated at {gib_text(need)} of host memory (its tensors' peak, "
            f"{gib_text(int(memory['peak_allocated']))}, plus {gib_text(RUN_PROCESS_BYTES)} for the process), more "
            f"than the {gib_text(limit)} {what}: {ALLOW_OOM_HINT}",
            estimate_bytes=need,
            device_bytes=limit,
        )


def run_preview(settings: Settings, device: str, estimate: Mapping[str, Any], seconds: float | None) -> dict[str, Any]:
    """What a run of ``estimate``'s plan would take on ``device`` before it starts: host memory, GPU memory, about how
    long, and whether the pre-flight lets it run (``runs``, else ``reason``)."""
    memory = estimate["memory"]
    gpu = gpu_memory() if device == "cuda" else None
    host = RUN_PROCESS_BYTES + (int(memory["peak_allocated"]) if device == "cpu" else 0)
    reason = None
    try:
        preflight(settings, device, estimate)
    except InvalidRequest as exc:
        reason = exc.message
    return {
        "device": device, "gpu": gpu[0] if gpu else None, "gpu_bytes": gpu[1] if gpu else None,
        "estimate_bytes": int(memory["range"]["total"][1]) if device == "cuda" else int(memory["peak_allocated"]),
        "host_bytes": host, "available_bytes": meminfo().get("MemAvailable"),
        "time_s": None if seconds is None else round(seconds, 1), "runs": reason is None, "reason": reason,
    }  # fmt: skip


OUT_OF_MEMORY_MARKS = ("MemoryError", "can't allocate memory", "Cannot allocate memory", "std::bad_alloc")


def exit_reason(rc: int, tail: str, cap: int) -> str:
    """What a failed run's exit status means, in words."""
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        if -rc == signal.SIGKILL:
            return (
                f"the run was killed by {name}: the kernel's out-of-memory killer does this when the host runs out of "
                "memory (see 'dmesg'), as does 'kill -9'"
            )
        return f"the run was stopped by {name}"
    if cap and any(mark in tail for mark in OUT_OF_MEMORY_MARKS):
        return (
            f"the run reached its memory cap of {gib_text(cap)} (TUNEPLAN_RUN_MEMORY_BYTES) and could not allocate "
            f"more (exit code {rc})"
        )
    return f"the run failed (exit code {rc})"
