"""The verify-job runner: one worker thread that runs queued jobs, each as its own process::

    python -m app.jobs.launch --parent <server pid> --memory-bytes <cap> -- \\
        -m trainer.run --plan plan.json --config config.json --device cpu|cuda --steps N --out result.json

with a deadline (``settings.job_timeout_s``), at most ``settings.max_concurrent_jobs`` at once. The result JSON and
the measured-vs-estimated rows (``estimator.compare``) are stored with the job (``app.jobs.store``); a failed run
keeps the tail of its output in ``error``, after a sentence saying what its exit status means.

**One runner per data directory.** Any number of web processes may serve one data directory (``--workers``, or two
servers): each accepts and lists jobs in the shared SQLite file, but only the process holding the lock on
``<data_dir>/runner.lock`` (``flock``, released by the kernel when the process dies, ``kill -9`` included) runs them.
The others retry the lock every ``LOCK_RETRY_S``. A cancel that reaches another process is seen by the runner in the
database within ``POLL_S``, and the run killed.

**No orphans.** A run dies with its server (``app.jobs.launch``: parent-death signal, memory cap). Its pid, the
kernel's start time of that pid, and its work directory (``<data_dir>/runs/<job id>``) are recorded with the job;
a runner that takes the lock kills any run a dead one left behind (only a process whose start time still matches),
marks those jobs failed, and removes leftover work directories.

No web framework here: bad requests raise ``app.errors`` types. The web process never imports torch: whether the
train extra is installed is asked of ``importlib.util.find_spec`` (``settings.train_module``), the GPU of
``nvidia-smi`` (``app.gpu``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from app.errors import Conflict, NoGpu, NotAvailable, NotFound, TooManyJobs
from app.gpu import nvidia_gpu_present
from app.jobs.calibration import CalibrationStore
from app.jobs.limits import exit_reason, run_memory_cap
from app.jobs.ray_backend import RayRun, stop_left_over
from app.jobs.store import INTERRUPTED, JobRow, JobStore
from app.settings import PROJECT_ROOT, Settings
from estimator import CalibrationProfile, compare

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: one runner per process only
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

MAX_STEPS = 5
ERROR_TAIL_CHARS = 4000
POLL_S = 0.25
LOCK_RETRY_S = 1.0
TRAIN_EXTRA_MISSING = "install the train extra: pip install -e '.[train]'"
PROGRESS_FILE = "progress.json"
RUN_PHASES = ("building", "warm-up", "measuring", "tracking", "writing")
"""The phases ``trainer.run`` reports (``trainer.run.Progress``), in order; a CPU run has no ``tracking``."""
STOPPED = "interrupted: the server stopped during the run"


@dataclass
class _Running:
    job_id: str
    proc: subprocess.Popen[bytes] | RayRun
    workdir: Path
    log: IO[bytes]
    started: float
    estimate: dict[str, Any]
    killed: str | None = None


def _epoch(iso: str) -> float:
    """An ISO 8601 time of the job store as seconds since the epoch (now when it cannot be read)."""
    try:
        return datetime.fromisoformat(iso).timestamp()
    except ValueError:
        return time.time()


def _tail(path: Path, chars: int = ERROR_TAIL_CHARS) -> str:
    try:
        text = path.read_bytes()[-4 * chars :].decode("utf-8", errors="replace")
    except OSError:
        return ""
    return text[-chars:].strip()


def _kill(proc: subprocess.Popen[bytes] | RayRun) -> None:
    """Kill the run and anything it started (its own process group; a Ray job: stopped on the cluster)."""
    if isinstance(proc, RayRun):
        proc.stop()
        return
    if proc.poll() is not None:
        return
    try:
        if hasattr(os, "killpg"):
            os.killpg(proc.pid, signal.SIGKILL)
        else:  # pragma: no cover - not POSIX
            proc.kill()
    except ProcessLookupError:
        pass


def process_identity(pid: int) -> str | None:
    """``<boot id>:<start time>`` of a live process (Linux ``/proc``): a pid recycled after a reboot or by another
    process has another identity. None when there is no such process (or no ``/proc``)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    if len(fields) < 20 or fields[0] == "Z":  # field 3 is the state, field 22 the start time
        return None
    return f"{boot}:{fields[19]}"


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
        self._lock_file: IO[bytes] | None = None
        self._next_lock_try = 0.0

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

    def is_runner(self) -> bool:
        """Whether this process holds the data directory's runner lock (and so runs its jobs)."""
        return self._lock_file is not None

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
        if device == "cuda" and not self.has_gpu() and not self.settings.ray_address:  # a cluster has its own
            raise NoGpu(
                "device 'cuda' needs an NVIDIA GPU and this server has none (nvidia-smi is missing or fails): "
                "ask for device 'cpu', which measures the live tensors of the same step",
            )
        return device

    # ------------------------------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the worker thread: it takes the runner lock when it can, then runs queued jobs. The first try
        happens here, so a restarted server has failed its dead predecessor's runs before it answers a request."""
        if self._thread is None:
            self._stop.clear()
            try:
                self._take_lock()
            except Exception:  # the worker retries; a bug must not stop the app from starting
                log.exception("verify worker error")
            self._thread = threading.Thread(target=self._loop, name="tuneplan-jobs", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the worker, kill the runs in progress (marked failed), release the lock, close the store."""
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
            self._release_lock()
            if self._store is not None:
                self._store.close()
                self._store = None
                self._calibrations = None

    def submit(self, **job: Any) -> JobRow:
        """Queue a job (``TooManyJobs`` when ``max_queued_jobs`` are waiting already); old finished jobs are pruned."""
        limit = self.settings.max_queued_jobs
        row = self.store.create(**job, max_queued=limit)
        if row is None:
            raise TooManyJobs(
                f"{limit} verify jobs are already waiting on this server (TUNEPLAN_MAX_QUEUED_JOBS): retry when one "
                "has run, or cancel one (DELETE /api/jobs/{id})"
            )
        self.store.prune(self.settings.job_history)
        self._wake.set()
        return row

    def get(self, job_id: str) -> JobRow:
        """The job ``job_id``; ``NotFound`` if there is none."""
        row = self.store.get(job_id)
        if row is None:
            raise NotFound(f"no job {job_id[:64]!r}: GET /api/jobs lists the recent ones")
        return row

    def progress(self, row: JobRow) -> dict[str, Any] | None:
        """Where a running job is: the phase its run reported last (``trainer.run.Progress``, a file in the run's
        work directory, so any process serving this data directory can read it), that phase's number among the
        run's phases, and the seconds since the job started running. None for a job that is not running."""
        if row.status != "running":
            return None
        elapsed = max(time.time() - _epoch(row.updated_at), 0.0)
        out: dict[str, Any] = {"phase": "starting", "index": 0, "count": 0, "elapsed_s": round(elapsed, 1)}
        if not row.workdir:
            return out
        try:
            data = json.loads((Path(row.workdir) / PROGRESS_FILE).read_text())
        except (OSError, ValueError):
            return out
        phases = [p for p in RUN_PHASES if p != "tracking" or row.device == "cuda"]
        phase = str(data.get("phase", "starting"))
        if phase in phases:
            out.update(phase=phase, index=phases.index(phase) + 1, count=len(phases))
        return out

    def cancel(self, job_id: str) -> JobRow:
        """Cancel a queued or running job (its process is killed, by whichever process runs it); ``NotFound`` /
        ``Conflict`` otherwise, also when another request cancelled it first."""
        with self._lock:
            if not self.store.cancel(job_id):
                row = self.get(job_id)
                raise Conflict(f"job {job_id} is already {row.status}; only queued or running jobs can be cancelled")
            running = self._running.get(job_id)
            if running is not None:
                running.killed = "cancelled"
                _kill(running.proc)
            self._wake.set()
            return self.get(job_id)

    # ------------------------------------------------------------------------------------------ the lock

    def _take_lock(self) -> bool:
        """Take the data directory's runner lock if it is free (never blocks); whether this process holds it."""
        if self._lock_file is not None:
            return True
        if time.monotonic() < self._next_lock_try:
            return False
        self._next_lock_try = time.monotonic() + LOCK_RETRY_S
        path = self.settings.runner_lock
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "ab")
        try:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        self._lock_file = handle
        log.info("this process runs the verify jobs of %s", self.settings.data_dir)
        self._recover()
        return True

    def _release_lock(self) -> None:
        if self._lock_file is not None:
            if fcntl is not None:
                with contextlib.suppress(OSError):
                    fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    def _recover(self) -> None:
        """What a runner that died left: its runs are killed (by their recorded pids), its jobs failed, its work
        directories removed. Only the lock holder does this, so no live runner's job is touched."""
        store = self.store
        for row in store.running():
            if row.pid_start is not None and self.settings.ray_address:
                with contextlib.suppress(Exception):  # a cluster that is gone has nothing left to stop
                    stop_left_over(self.settings.ray_address, row.pid_start)
            if row.pid is not None and row.pid_start is not None and process_identity(row.pid) == row.pid_start:
                log.warning("verify job %s: killing its run (pid %d) left by a stopped server", row.id, row.pid)
                with contextlib.suppress(OSError):
                    os.killpg(row.pid, signal.SIGKILL)
            store.set_status(row.id, "failed", only_from=("running",), error=INTERRUPTED)
        runs = self.settings.runs_dir
        if runs.is_dir():
            for leftover in runs.iterdir():
                shutil.rmtree(leftover, ignore_errors=True)

    # ------------------------------------------------------------------------------------------ worker

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                if self._take_lock():
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

    def _command(self, row: JobRow, workdir: Path) -> list[str]:
        return [
            sys.executable, "-m", "app.jobs.launch",
            "--parent", str(os.getpid()),
            "--memory-bytes", str(run_memory_cap(self.settings)),
            "--",
            "-m", "trainer.run",
            "--plan", str(workdir / "plan.json"),
            "--config", str(workdir / "config.json"),
            "--device", row.device,
            "--steps", str(row.steps),
            "--out", str(workdir / "result.json"),
            "--progress", str(workdir / PROGRESS_FILE),
        ]  # fmt: skip

    def _start(self, row: JobRow) -> _Running:
        """Start a job's run in its own session (process group), in ``<data_dir>/runs/<id>``, and record it (a
        Ray job on the cluster at ``settings.ray_address`` when one is set: ``app.jobs.ray_backend``)."""
        workdir = self.settings.runs_dir / row.id
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        (workdir / "plan.json").write_text(json.dumps({**row.plan, "model": None, "config": row.config}))
        (workdir / "config.json").write_text(json.dumps(row.config))
        if self.settings.ray_address:
            return self._start_ray(row, workdir)
        cmd = self._command(row, workdir)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH")) if p)
        output = open(workdir / "output.txt", "wb")
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
        self.store.record_process(row.id, proc.pid, process_identity(proc.pid), str(workdir))
        log.info("verify job %s started (pid %d): %s", row.id, proc.pid, " ".join(cmd[1:]))
        return _Running(row.id, proc, workdir, output, time.monotonic(), row.estimate)

    def _start_ray(self, row: JobRow, workdir: Path) -> _Running:
        assert self.settings.ray_address is not None
        try:
            run = RayRun.submit(self.settings.ray_address, workdir, row.id, row.device, row.steps, row.plan)
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        self.store.record_process(row.id, run.pid, run.identity, str(workdir))
        log.info("verify job %s submitted to Ray as %s", row.id, run.submission_id)
        return _Running(row.id, run, workdir, open(workdir / "ray.log", "wb"), time.monotonic(), row.estimate)

    def _reap(self) -> None:
        with self._lock:
            cancelled = [j for j, s in self.store.statuses(list(self._running)).items() if s == "cancelled"]
            for job_id in cancelled:  # cancelled through another process
                running = self._running[job_id]
                if running.killed is None:
                    running.killed = "cancelled"
                    _kill(running.proc)
            for job_id, running in list(self._running.items()):
                rc = running.proc.poll()
                if rc is None:
                    if time.monotonic() - running.started > self.settings.job_timeout_s:
                        running.killed = "timeout"
                        _kill(running.proc)
                        running.proc.wait(timeout=30)
                        rc = running.proc.returncode
                        rc = -int(signal.SIGKILL) if rc is None else rc  # a Ray job that did not stop in time
                    else:
                        continue
                del self._running[job_id]
                try:
                    self._finish(running, rc)
                finally:
                    self._cleanup(running)

    def _finish(self, running: _Running, rc: int) -> None:
        """Store what a run that ended left: its result and comparison rows, or why it failed."""
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
            store.set_status(running.job_id, "done", only_from=("running",), result=result, comparison=rows)
            self.calibrations.record_run(running.job_id, result)  # a CUDA run calibrates its GPU
            log.info("verify job %s done", running.job_id)
            return
        tail = _tail(running.workdir / "output.txt")
        error = exit_reason(rc, tail, run_memory_cap(self.settings)) + (f":\n{tail}" if tail else "")
        store.set_status(running.job_id, "failed", only_from=("running",), error=error)
        log.warning("verify job %s failed (exit code %s)", running.job_id, rc)

    def _cleanup(self, running: _Running) -> None:
        running.log.close()
        shutil.rmtree(running.workdir, ignore_errors=True)
        store = self._store
        if store is not None:
            store.prune(self.settings.job_history)
