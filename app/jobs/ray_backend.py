"""The Ray backend of the job runner: a verify run becomes a Ray job on the cluster at ``TUNEPLAN_RAY_ADDRESS``.

The runner stays the same (one worker thread, the job store, one runner per data directory by ``flock``); only how a
run is started, watched and stopped changes. ``RayRun`` stands in for the local run's ``subprocess.Popen``:

- **start**: ``JobSubmissionClient.submit_job`` (Ray's Jobs API, through the dashboard's HTTP address) with the
  entrypoint ``python -m trainer.run ... --print-result`` (``python -m trainer.dist`` under ``torchrun`` for a
  multi-GPU plan on CUDA), ``entrypoint_num_gpus`` = the GPUs the run needs (one per rank; none for a CPU run), and a
  runtime environment that ships the plan, the config and the ``trainer`` and ``estimator`` packages
  (``working_dir`` and ``py_modules``), so the cluster needs only the train extra installed;
- **poll**: the job's status; once it ends, its logs are fetched, the result line (``TUNEPLAN-RESULT <json>``) is
  written to ``result.json`` and the logs to ``output.txt`` in the run's work directory, exactly where a local run
  leaves them, and the runner stores them the same way;
- **cancel, timeout, server stop**: ``stop_job`` (Ray stops the entrypoint's process group);
- **recovery**: the job's submission id is recorded with the job (``pid_start`` = ``ray:<id>``); a runner that
  takes the lock stops the Ray jobs a dead one left running.

``ray`` is imported only when the backend is used (``pip install -e '.[ray]'``); nothing changes for a
single-machine server.
"""

from __future__ import annotations

import json
import logging
import shlex
import signal
import time
from pathlib import Path
from typing import Any

from app.errors import NotAvailable
from app.settings import PROJECT_ROOT

log = logging.getLogger(__name__)

RESULT_PREFIX = "TUNEPLAN-RESULT "
RAY_PREFIX = "ray:"
TERMINAL = {"SUCCEEDED": 0, "FAILED": 1, "STOPPED": -int(signal.SIGKILL)}
RAY_EXTRA_MISSING = "the Ray backend needs ray: pip install -e '.[ray]'"


def client(address: str) -> Any:
    """A Jobs API client for ``address`` (the dashboard's ``http://host:port``)."""
    try:
        from ray.job_submission import JobSubmissionClient
    except ImportError as exc:
        raise NotAvailable(RAY_EXTRA_MISSING) from exc
    return JobSubmissionClient(address)


def entrypoint(device: str, steps: int, num_gpus: int, sharding: str) -> tuple[str, int]:
    """The job's shell command and the GPUs it asks Ray for."""
    common = f"--plan plan.json --config config.json --steps {int(steps)} --out result.json --print-result"
    if device == "cuda" and num_gpus > 1 and sharding in ("ddp", "fsdp"):
        return f"torchrun --nproc-per-node {int(num_gpus)} -m trainer.dist {common}", num_gpus
    return f"python -m trainer.run --device {shlex.quote(device)} {common}", 1 if device == "cuda" else 0


class RayRun:
    """One verify run as a Ray job, with the part of ``subprocess.Popen``'s interface the runner uses."""

    def __init__(self, jobs: Any, submission_id: str, workdir: Path) -> None:
        self.jobs = jobs
        self.submission_id = submission_id
        self.workdir = workdir
        self.returncode: int | None = None
        self.pid = 0  # no local process: the run's identity is its submission id

    @classmethod
    def submit(cls, address: str, workdir: Path, job_id: str, device: str, steps: int, plan: dict[str, Any]) -> RayRun:
        """Submit the run in ``workdir`` (its ``plan.json`` and ``config.json`` written already)."""
        jobs = client(address)
        command, gpus = entrypoint(device, steps, int(plan.get("num_gpus", 1)), str(plan.get("sharding", "ddp")))
        runtime_env = {
            "working_dir": str(workdir),
            "py_modules": [str(PROJECT_ROOT / "trainer"), str(PROJECT_ROOT / "estimator")],
        }
        sid = jobs.submit_job(
            entrypoint=command,
            submission_id=f"tuneplan-{job_id}",
            runtime_env=runtime_env,
            entrypoint_num_gpus=gpus,
            entrypoint_num_cpus=1,
            metadata={"tuneplan_job": job_id},
        )
        return cls(jobs, str(sid), workdir)

    @property
    def identity(self) -> str:
        return RAY_PREFIX + self.submission_id

    def poll(self) -> int | None:
        """None while the job runs; once it ended, its exit status (0, 1, or -9 when stopped), with its logs and
        result written to the work directory."""
        if self.returncode is not None:
            return self.returncode
        try:
            status = str(self.jobs.get_job_status(self.submission_id)).rsplit(".", 1)[-1]
            if status not in TERMINAL:
                return None
            logs = str(self.jobs.get_job_logs(self.submission_id))
        except Exception as exc:  # the cluster is out of reach: still running, as far as we know (the deadline holds)
            log.warning("Ray job %s: no status (%s)", self.submission_id, exc)
            return None
        (self.workdir / "output.txt").write_text(logs)
        result = extract_result(logs)
        if result is not None and status == "SUCCEEDED":
            (self.workdir / "result.json").write_text(json.dumps(result))
        self.returncode = TERMINAL[status]
        return self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                break
            time.sleep(0.25)
        return self.returncode

    def stop(self) -> None:
        """Stop the job (Ray kills its entrypoint's processes); nothing when it has ended."""
        stop(self.jobs, self.submission_id)


def stop(jobs: Any, submission_id: str) -> None:
    try:
        jobs.stop_job(submission_id)
    except Exception:  # an ended or unknown job: nothing to stop
        pass


def extract_result(logs: str) -> dict[str, Any] | None:
    """The result line a run printed (the last one), or None."""
    for line in reversed(logs.splitlines()):
        if line.startswith(RESULT_PREFIX):
            try:
                value = json.loads(line[len(RESULT_PREFIX) :])
            except ValueError:
                return None
            return value if isinstance(value, dict) else None
    return None


def stop_left_over(address: str, identity: str) -> None:
    """Stop the Ray job a dead runner recorded (``ray:<submission id>``)."""
    if identity.startswith(RAY_PREFIX):
        stop(client(address), identity[len(RAY_PREFIX) :])
