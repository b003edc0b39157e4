"""Is there an NVIDIA GPU? Asked of ``nvidia-smi``, so the web process and the CLI never import torch to know."""

from __future__ import annotations

import functools
import shutil
import subprocess


@functools.cache
def nvidia_gpu_present() -> bool:
    """Whether ``nvidia-smi`` is on PATH and lists a GPU (asked once per process)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return False
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and "GPU" in out.stdout
