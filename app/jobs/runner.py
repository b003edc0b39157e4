"""Verify jobs: a real training run of a plan, launched from the web app, next to its estimate.

``POST /api/jobs`` takes the plan body of ``POST /api/estimate`` (plus ``device`` and ``steps``), estimates it
for the run's device, stores a *queued* job and answers 202. One worker thread in the web process takes queued
jobs in order (at most ``settings.max_concurrent_jobs`` at once) and runs each as its own process::

    python -m trainer.run --plan plan.json --config config.json --device cpu|cuda --steps N --out result.json

with a deadline (``settings.job_timeout_s``). The result JSON and the measured-vs-estimated rows
(``app.compare``) are stored with the job; a failed run keeps the tail of its output in ``error``.

The web process never imports torch: whether the train extra is installed is checked with
``importlib.util.find_spec`` (``settings.train_module``), and the GPU with ``nvidia-smi``.

Jobs live in SQLite (``<data_dir>/jobs.sqlite3``) through SQLAlchemy 2. Nothing is deleted: a cancelled job is
marked ``cancelled``; a job that was running when the server stopped is marked ``failed`` ("interrupted by a
restart") when it starts again, and queued jobs are run by the next server.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from pydantic import ConfigDict, Field
from sqlalchemy import Integer, String, Text, create_engine, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from starlette.concurrency import run_in_threadpool

from app.api import TokenHeader, check_config_size, check_gpu, request_token, resolve_model
from app.compare import compare
from app.config_guard import guard_config_call
from app.gpu import nvidia_gpu_present
from app.schemas import ErrorBody, PlanBody
from app.settings import PROJECT_ROOT, Settings

log = logging.getLogger(__name__)

STATUSES: tuple[str, ...] = ("queued", "running", "done", "failed", "cancelled")
ACTIVE: tuple[str, ...] = ("queued", "running")
MAX_STEPS = 5
ERROR_TAIL_CHARS = 4000
POLL_S = 0.25
TRAIN_EXTRA_MISSING = "install the train extra: pip install -e '.[train]'"
INTERRUPTED = "interrupted by a restart"
STOPPED = "interrupted: the server stopped during the run"

router = APIRouter()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


# ---------------------------------------------------------------------------------------------- store


class _Base(DeclarativeBase):
    pass


class JobRow(_Base):
    """One verify job. JSON columns hold text; ``created_at``/``updated_at`` are ISO 8601 UTC."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[str] = mapped_column(String(40), index=True)
    updated_at: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(16), index=True)
    device: Mapped[str] = mapped_column(String(8))
    steps: Mapped[int] = mapped_column(Integer, default=1)
    plan_json: Mapped[str] = mapped_column(Text)
    config_json: Mapped[str] = mapped_column(Text)
    estimate_json: Mapped[str] = mapped_column(Text)
    result_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    comparison_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


class JobStore:
    """The ``jobs`` table of one SQLite file. Every method is one short transaction (thread-safe)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.engine: Engine = create_engine(
            f"sqlite:///{path}", connect_args={"check_same_thread": False, "timeout": 30}
        )
        _Base.metadata.create_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    @contextlib.contextmanager
    def _session(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            yield session

    def create(
        self,
        *,
        device: str,
        steps: int,
        plan: dict[str, Any],
        config: dict[str, Any],
        estimate: dict[str, Any],
        status: str = "queued",
    ) -> JobRow:
        now = _now()
        row = JobRow(
            id=secrets.token_hex(8),
            created_at=now,
            updated_at=now,
            status=status,
            device=device,
            steps=steps,
            plan_json=json.dumps(plan),
            config_json=json.dumps(config),
            estimate_json=json.dumps(estimate),
        )
        with self._session() as session:
            session.add(row)
        return row

    def get(self, job_id: str) -> JobRow | None:
        with self._session() as session:
            return session.get(JobRow, job_id)

    def recent(self, limit: int = 20) -> list[JobRow]:
        with self._session() as session:
            query = select(JobRow).order_by(JobRow.created_at.desc(), JobRow.id.desc()).limit(limit)
            return list(session.scalars(query))

    def set_status(self, job_id: str, status: str, *, only_from: tuple[str, ...] = (), **fields: Any) -> bool:
        """Move a job to ``status`` (only from one of ``only_from`` when given); whether it moved."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        query = update(JobRow).where(JobRow.id == job_id)
        if only_from:
            query = query.where(JobRow.status.in_(only_from))
        with self._session() as session:
            moved = session.execute(query.values(status=status, updated_at=_now(), **fields))
            return bool(getattr(moved, "rowcount", 0))

    def claim_next(self) -> JobRow | None:
        """The oldest queued job, moved to ``running`` (None when nothing is queued)."""
        while True:
            with self._session() as session:
                query = select(JobRow.id).where(JobRow.status == "queued").order_by(JobRow.created_at, JobRow.id)
                job_id = session.scalars(query.limit(1)).first()
            if job_id is None:
                return None
            if self.set_status(job_id, "running", only_from=("queued",)):
                return self.get(job_id)

    def fail_interrupted(self, message: str = INTERRUPTED) -> int:
        """Jobs left ``running`` by a previous server → ``failed`` with ``message``; how many."""
        with self._session() as session:
            moved = session.execute(
                update(JobRow)
                .where(JobRow.status == "running")
                .values(status="failed", error=message, updated_at=_now())
            )
            return int(getattr(moved, "rowcount", 0))


# ---------------------------------------------------------------------------------------------- JSON views


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def comparison(estimate: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """``app.compare.compare`` rows, with peak allocated, reserved and total always listed (``measured``
    None where the device does not measure them: the CPU has no allocator cache and no driver figure)."""
    full = compare(estimate, result)
    tiers = {row["name"]: row for row in full["tiers"]}
    memory = estimate["memory"]
    rows = [
        tiers.get(name) or {"name": name, "estimated": memory[name], "measured": None, "error_percent": None}
        for name in ("peak_allocated", "peak_reserved", "total")
    ]
    return {"components": full["components"], "tiers": rows, "oom": bool(full["oom"]), "device": full["device"]}


def summary(row: JobRow) -> dict[str, Any]:
    """A job without its estimate and result (``GET /api/jobs``)."""
    plan = json.loads(row.plan_json)
    return {
        "id": row.id,
        "status": row.status,
        "url": f"/api/jobs/{row.id}",
        "device": row.device,
        "steps": row.steps,
        "model": plan.get("model") or "inline config",
        "method": plan.get("method"),
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "error": row.error,
    }


def detail(row: JobRow) -> dict[str, Any]:
    """A job with its plan, estimate, result (``measured``) and comparison rows (``GET /api/jobs/{id}``)."""
    return summary(row) | {
        "plan": json.loads(row.plan_json),
        "estimate": json.loads(row.estimate_json),
        "result": _loads(row.result_json),
        "comparison": _loads(row.comparison_json),
    }


# ---------------------------------------------------------------------------------------------- runner


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
            raise HTTPException(
                422,
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

    def submit(self, **job: Any) -> JobRow:
        row = self.store.create(**job)
        self._wake.set()
        return row

    def cancel(self, job_id: str) -> JobRow | None:
        """Cancel a queued or running job (its process is killed); None if it is unknown."""
        with self._lock:
            row = self.store.get(job_id)
            if row is None:
                return None
            if row.status not in ACTIVE:
                return row
            if self.store.set_status(job_id, "cancelled", only_from=ACTIVE, error="cancelled"):
                running = self._running.get(job_id)
                if running is not None:
                    running.killed = "cancelled"
                    _kill(running.proc)
            self._wake.set()
            return self.store.get(job_id)

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
        plan = json.loads(row.plan_json)
        config = json.loads(row.config_json)
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
        return _Running(row.id, proc, workdir, output, time.monotonic(), json.loads(row.estimate_json))

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
                rows = comparison(running.estimate, result)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                store.set_status(
                    running.job_id, "failed", only_from=("running",), error=f"unreadable result JSON: {exc}"
                )
                return
            store.set_status(
                running.job_id,
                "done",
                only_from=("running",),
                result_json=json.dumps(result),
                comparison_json=json.dumps(rows),
            )
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


# ---------------------------------------------------------------------------------------------- routes


class JobBody(PlanBody):
    """``POST /api/jobs``: the plan body of ``POST /api/estimate``, plus where and how long to run it."""

    model_config = ConfigDict(
        extra="forbid",
        str_strip_whitespace=True,
        json_schema_extra={
            "examples": [
                {"model": "llama-3.2-1b", "method": "qlora", "seq_len": 512, "batch_size": 1, "device": "cuda"},
                {
                    "config": {
                        "model_type": "llama",
                        "vocab_size": 1024,
                        "hidden_size": 128,
                        "intermediate_size": 256,
                        "num_hidden_layers": 2,
                        "num_attention_heads": 4,
                        "num_key_value_heads": 2,
                        "max_position_embeddings": 512,
                    },
                    "method": "qlora",
                    "seq_len": 64,
                    "lora_dropout": 0.0,
                    "device": "cpu",
                },
            ]
        },
    )

    device: Literal["cpu", "cuda"] | None = Field(  # type: ignore[assignment]
        None, description="where the run executes; default: the server's verify_device (auto: cuda if a GPU)."
    )
    steps: int = Field(1, ge=1, le=MAX_STEPS, description=f"measured steps after one warm-up step: 1 to {MAX_STEPS}.")

    def plan_body(self, device: str) -> PlanBody:
        """The plan to estimate and run: this body for ``device``."""
        data = self.model_dump(exclude={"steps", "device"})
        return PlanBody.model_validate(data | {"device": device})


_JOB_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "unknown job id (or unknown model)"},
    409: {"model": ErrorBody, "description": "the job has already finished"},
    422: {"model": ErrorBody, "description": "invalid plan, or cuda asked for on a server without a GPU"},
    503: {"model": ErrorBody, "description": "the train extra is not installed on the server (or the Hub is down)"},
}

JobId = Annotated[str, PathParam(min_length=1, max_length=64, description="a job id from POST /api/jobs")]


def _runner(request: Request) -> JobRunner:
    runner: JobRunner = request.app.state.jobs
    return runner


def _not_found(job_id: str) -> HTTPException:
    return HTTPException(404, f"no job {job_id[:64]!r}: GET /api/jobs lists the recent ones")


@router.post(
    "/api/jobs",
    tags=["verify"],
    summary="Verify a plan with a real run",
    status_code=202,
    response_model=None,
    responses=_JOB_ERRORS,
)
async def create_job(body: JobBody, request: Request, x_hf_token: TokenHeader = None) -> JSONResponse:
    """Estimate the plan for the run's device and queue a real run of it (``python -m trainer.run``).

    The run builds the model from its config with random weights (nothing is downloaded) and trains one
    warm-up step plus ``steps`` measured steps on a synthetic batch. On CUDA it reads the allocator's peaks and
    the driver's use; on CPU it measures the live tensors. A plan over the device's memory is run anyway: the
    result then says ``"oom": true``. Poll ``GET /api/jobs/{id}`` (the ``url`` of the answer).
    """
    from estimator import estimate

    runner = _runner(request)
    if not runner.train_extra_installed():
        raise HTTPException(503, f"verify runs need torch, transformers, peft and bitsandbytes: {TRAIN_EXTRA_MISSING}")
    device = await run_in_threadpool(runner.run_device, body.device)
    plan_body = body.plan_body(device)
    check_gpu(plan_body.gpu)
    plan = plan_body.to_plan()
    config: dict[str, Any]
    if plan_body.config is not None:
        check_config_size(plan_body.config, runner.settings, request)
        config = dict(plan_body.config)
        est = guard_config_call(lambda: estimate(plan).to_dict(), "inline config")
    else:
        assert plan_body.model is not None
        resolved = await resolve_model(request, plan_body.model, request_token(request, x_hf_token))
        config = dict(resolved.config)
        est = guard_config_call(lambda: estimate(plan, config=config).to_dict(), "Hub config")
    stored_plan = {k: v for k, v in plan.to_dict().items() if k != "config"}
    row = await run_in_threadpool(
        lambda: runner.submit(device=device, steps=body.steps, plan=stored_plan, config=config, estimate=est)
    )
    url = f"/api/jobs/{row.id}"
    return JSONResponse({"id": row.id, "status": row.status, "url": url}, status_code=202, headers={"Location": url})


@router.get("/api/jobs", tags=["verify"], summary="Recent verify jobs, newest first")
def list_jobs(
    request: Request, limit: Annotated[int, Query(ge=1, le=200, description="at most this many jobs")] = 20
) -> list[dict[str, Any]]:
    """Each job's id, status, device, model, method, times and error (no estimate or result: see the job)."""
    return [summary(row) for row in _runner(request).store.recent(limit)]


@router.get("/api/jobs/{job_id}", tags=["verify"], summary="A verify job", responses=_JOB_ERRORS)
def get_job(job_id: JobId, request: Request) -> dict[str, Any]:
    """The job: ``status`` (queued, running, done, failed, cancelled), the plan, the ``estimate`` (for the run's
    device), the trainer's ``result`` (``result.measured``) and ``comparison`` rows (``name``, ``estimated``,
    ``measured``, ``error_percent`` = (estimated - measured) / measured) per component and for the peaks."""
    row = _runner(request).store.get(job_id)
    if row is None:
        raise _not_found(job_id)
    return detail(row)


@router.delete("/api/jobs/{job_id}", tags=["verify"], summary="Cancel a verify job", responses=_JOB_ERRORS)
def cancel_job(job_id: JobId, request: Request) -> dict[str, Any]:
    """Cancel a queued job, or kill a running one; the job stays listed as ``cancelled``."""
    row = _runner(request).cancel(job_id)
    if row is None:
        raise _not_found(job_id)
    if row.status != "cancelled":
        raise HTTPException(409, f"job {job_id} is already {row.status}; only queued or running jobs can be cancelled")
    return detail(row)
