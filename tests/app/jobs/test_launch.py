"""``app.jobs.launch``, the way every verify run starts: real child processes, real limits, real signals."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from app.jobs.launch import EXIT_ORPHANED
from app.jobs.limits import exit_reason

ROOT = Path(__file__).resolve().parents[3]
linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl and /proc are Linux")


def _launch(*python: str, memory: int = 0, parent: int | None = None) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "app.jobs.launch", "--parent", str(parent or os.getpid()),
           "--memory-bytes", str(memory), "--", *python]  # fmt: skip
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@linux
def test_a_run_cannot_take_more_than_its_memory_cap() -> None:
    cap = 256 * 2**20
    proc = _launch(
        "-c", "b = bytearray(16 * 2**20); print('small ok', flush=True); bytearray(1024 * 2**20)", memory=cap
    )
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "small ok" in output and "MemoryError" in output, output
    assert exit_reason(proc.returncode, output, cap).startswith("the run reached its memory cap of 256.0 MiB")


@linux
def test_a_run_dies_with_the_thread_that_started_it() -> None:
    """PR_SET_PDEATHSIG: the runner's worker thread ends (its server died) and the run is killed with it."""
    started: list[subprocess.Popen[str]] = []

    def worker() -> None:  # starts the run, and ends once the run is going (its signal armed before exec)
        proc = _launch("-c", "import time; print('running', flush=True); time.sleep(120)")
        started.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "running"

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert started[0].wait(timeout=20) == -9  # SIGKILL, from the kernel, when the thread ended
    assert started[0].stdout is not None
    started[0].stdout.close()


def test_a_run_whose_server_is_already_gone_does_not_start() -> None:
    proc = _launch("-c", "print('ran')", parent=1)  # pid 1 is not its parent: its server died before it armed
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_ORPHANED and "ran" not in output


def test_exit_statuses_in_words() -> None:
    assert exit_reason(-9, "", 0).startswith("the run was killed by SIGKILL: the kernel's out-of-memory killer")
    assert exit_reason(-11, "", 0) == "the run was stopped by SIGSEGV"
    assert exit_reason(1, "RuntimeError: DefaultCPUAllocator: can't allocate memory", 2**30).startswith(
        "the run reached its memory cap of 1.00 GiB"
    )
    assert exit_reason(1, "ValueError: nope", 2**30) == "the run failed (exit code 1)"
