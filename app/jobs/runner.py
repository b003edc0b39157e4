"""The verify-job runner: one worker thread that runs queued jobs, each as its own process::

    python -m trainer.run --plan plan.json --config config.json --device cpu|cuda --steps N --out result.json

with a deadline (``settings.job_timeout_s``), at most ``settings.max_concurrent_jobs`` at once. The result JSON and
the measured-vs-estimated rows (``estimator.compare``) are stored with the job (``app.jobs.store``); a failed run
keeps the tail of its output in ``error``. Cancelling kills the run's whole process group.

No web framework here: bad requests raise ``app.errors`` types. The web process never imports torch: whether the
train extra is installed is asked of ``importlib.util.find_spec`` (``settings.train_module``), the GPU of
``nvidia-smi`` (``app.gpu``).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from app.errors import Conflict, NoGpu, NotAvailable, NotFound
from app.gpu import nvidia_gpu_present
from app.jobs.calibration import CalibrationStore
from app.jobs.store import ACTIVE, JobRow, JobStore
from app.settings import PROJECT_ROOT, Settings
from estimator import CalibrationProfile, compare

log = logging.getLogger(__name__)

MAX_STEPS = 5
ERROR_TAIL_CHARS = 4000
POLL_S = 0.25
TRAIN_EXTRA_MISSING = "install the train extra: pip install -e '.[train]'"
STOPPED = "interrupted: the server stopped during the run"


@dataclass
class _Running:
    job_id: str
    proc: subprocess.Popen[bytes]
    workdir: Path
    log: IO[bytes]
    started: float
    estimate: dict[str, Any]
    killed: str | None = None


def _tail(path: Path, chars: int = ERROR_TAIL_CHARS) -> str:
    try:
        text = path.read_bytes()[-4 * chars :].decode("utf-8", errors="replace")
    except OSError:
        return ""
    return text[-chars:].strip()


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """Kill the run and anything it started (its own process group)."""
    if proc.poll() is not None:
        return
    try:
        if hasattr(os, "killpg"):
            os.killpg(proc.pid, signal.SIGKILL)
        else:  # pragma: no cover - not POSIX
            proc.kill()
    except ProcessLookupError:
        pass


class JobRunner:
    """The job store plus one worker thread that runs queued jobs as ``python -m trainer.run`` processes."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._store: JobStore | None = None
        self._calibrations: CalibrationStore | None = None
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._running: dict[str, _Running] = {}

    # ------------------------------------------------------------------------------------------ checks

    @property
    def store(self) -> JobStore:
        """The store, opened on first use (creating the app touches no file)."""
        with self._lock:
            if self._store is None:
                self._store = JobStore(self.settings.jobs_db)
            return self._store

    @property
    def calibrations(self) -> CalibrationStore:
        """The calibration profiles, in the job store's database."""
        with self._lock:
            if self._calibrations is None:
                self._calibrations = CalibrationStore(self.store.engine)
            return self._calibrations

    def latest_calibration(self, gpu: str) -> CalibrationProfile | None:
        """The latest profile a verify run measured on ``gpu`` (None without one; no database: none)."""
        if self._store is None and not self.settings.jobs_db.exists():
            return None  # nothing was ever recorded, and an estimate creates no file
        return self.calibrations.latest(gpu)

    def check_ready(self) -> None:
        """``NotAvailable`` when this server cannot run jobs (the train extra is missing)."""
        if not self.train_extra_installed():
            raise NotAvailable(f"verify runs need torch, transformers, peft and bitsandbytes: {TRAIN_EXTRA_MISSING}")

    def train_extra_installed(self) -> bool:
        """Whether the train extra is installed: found on the path, never imported here."""
        try:
            return importlib.util.find_spec(self.settings.train_module) is not None
        except (ImportError, ValueError):
            return False

    def has_gpu(self) -> bool:
        """Whether ``nvidia-smi`` is on PATH and lists a GPU (asked once per process)."""
        return nvidia_gpu_present()

    def run_device(self, asked: str | None) -> str:
        """The device of a job: the one asked for, else ``settings.verify_device`` (``auto``: cuda if a GPU)."""
        device = asked or self.settings.verify_device
        if device == "auto":
            return "cuda" if self.has_gpu() else "cpu"
        if device == "cuda" and not self.has_gpu():
            raise NoGpu(
                "device 'cuda' needs an NVIDIA GPU and this server has none (nvidia-smi is missing or fails): "
                "ask for device 'cpu', which measures the live tensors of the same step",
            )
        return device

    # ------------------------------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Mark jobs a previous server left running as failed, then start the worker thread."""
        moved = self.store.fail_interrupted()
        if moved:
            log.warning("%d verify job(s) were running when the server stopped: marked failed", moved)
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="tuneplan-jobs", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the worker, kill the runs in progress (marked failed), close the store."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        with self._lock:
            for running in list(self._running.values()):
                _kill(running.proc)
                running.proc.wait(timeout=30)
                self._cleanup(running)
                if self._store is not None:
                    self._store.set_status(running.job_id, "failed", only_from=("running",), error=STOPPED)
            self._running.clear()
            if self._store is not None:
                self._store.close()
                self._store = None
                self._calibrations = None

    def submit(self, **job: Any) -> JobRow:
        row = self.store.create(**job)
        self._wake.set()
        return row

    def get(self, job_id: str) -> JobRow:
        """The job ``job_id``; ``NotFound`` if there is none."""
        row = self.store.get(job_id)
        if row is None:
            raise NotFound(f"no job {job_id[:64]!r}: GET /api/jobs lists the recent ones")
        return row

    def cancel(self, job_id: str) -> JobRow:
        """Cancel a queued or running job (its process is killed); ``NotFound`` / ``Conflict`` otherwise."""
        with self._lock:
            row = self.get(job_id)
            if row.status not in ACTIVE:
                raise Conflict(f"job {job_id} is already {row.status}; only queued or running jobs can be cancelled")
            if self.store.set_status(job_id, "cancelled", only_from=ACTIVE, error="cancelled"):
                running = self._running.get(job_id)
                if running is not None:
                    running.killed = "cancelled"
                    _kill(running.proc)
            self._wake.set()
            row = self.get(job_id)
        if row.status != "cancelled":
            raise Conflict(f"job {job_id} is already {row.status}; only queued or running jobs can be cancelled")
        return row

    # ------------------------------------------------------------------------------------------ worker

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._reap()
                self._launch()
            except Exception:  # a bug must not stop the worker; the job keeps its state
                log.exception("verify worker error")
            self._wake.wait(POLL_S)
            self._wake.clear()

    def _launch(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                if len(self._running) >= self.settings.max_concurrent_jobs:
                    return
                row = self.store.claim_next()
                if row is None:
                    return
                try:
                    self._running[row.id] = self._start(row)
                except Exception as exc:
                    log.exception("could not start verify job %s", row.id)
                    self.store.set_status(
                        row.id, "failed", only_from=("running",), error=f"could not start the run: {exc}"
                    )

    def _start(self, row: JobRow) -> _Running:
        workdir = Path(tempfile.mkdtemp(prefix=f"tuneplan-job-{row.id}-"))
        plan, config = row.plan, row.config
        (workdir / "plan.json").write_text(json.dumps({**plan, "model": None, "config": config}))
        (workdir / "config.json").write_text(json.dumps(config))
        cmd = [
            sys.executable, "-m", "trainer.run",
            "--plan", str(workdir / "plan.json"),
            "--config", str(workdir / "config.json"),
            "--device", row.device,
            "--steps", str(row.steps),
            "--out", str(workdir / "result.json"),
        ]  # fmt: skip
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH")) if p)
        output = open(workdir / "output.txt", "wb")  # closed when the run is reaped
        try:
            proc = subprocess.Popen(
                cmd,
                cwd=PROJECT_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except BaseException:
            output.close()
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        log.info("verify job %s started: %s", row.id, " ".join(cmd[1:]))
        return _Running(row.id, proc, workdir, output, time.monotonic(), row.estimate)

    def _reap(self) -> None:
        with self._lock:
            for job_id, running in list(self._running.items()):
                rc = running.proc.poll()
                if rc is None:
                    if time.monotonic() - running.started > self.settings.job_timeout_s:
                        running.killed = "timeout"
                        _kill(running.proc)
                        running.proc.wait(timeout=30)
                        rc = running.proc.returncode
                    else:
                        continue
                del self._running[job_id]
                try:
                    self._finish(running, rc)
                finally:
                    self._cleanup(running)

    def _finish(self, running: _Running, rc: int) -> None:
        store = self.store
        out = running.workdir / "result.json"
        if running.killed == "cancelled":
            return  # already marked cancelled
        if running.killed == "timeout":
            tail = _tail(running.workdir / "output.txt")
            error = f"the run took longer than {self.settings.job_timeout_s:g} s and was stopped" + (
                f":\n{tail}" if tail else ""
            )
            store.set_status(running.job_id, "failed", only_from=("running",), error=error)
            return
        if rc == 0 and out.exists():
            try:
                result = json.loads(out.read_text())
                rows = compare(running.estimate, result)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                store.set_status(
                    running.job_id, "failed", only_from=("running",), error=f"unreadable result JSON: {exc}"
                )
                return
            store.set_status(
                running.job_id,
                "done",
                only_from=("running",),
                result=result,
                comparison=rows,
            )
            self.calibrations.record_run(running.job_id, result)  # a CUDA run calibrates its GPU
            log.info("verify job %s done", running.job_id)
            return
        tail = _tail(running.workdir / "output.txt")
        error = f"the run failed (exit code {rc})" + (f":\n{tail}" if tail else "")
        store.set_status(running.job_id, "failed", only_from=("running",), error=error)
        log.warning("verify job %s failed (exit code %s)", running.job_id, rc)

    @staticmethod
    def _cleanup(running: _Running) -> None:
        running.log.close()
        shutil.rmtree(running.workdir, ignore_errors=True)
