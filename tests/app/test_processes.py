"""Real ``tuneplan serve`` processes, real signals, real verify runs (``python -m trainer.run`` on CPU): runs die with
their server, one runner per data directory whatever the number of servers or workers, leftovers are reaped by
their recorded pids, and ``serve`` takes its settings from the environment and refuses to expose the jobs API."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.jobs.runner import JobRunner, process_identity
from app.jobs.store import INTERRUPTED, JobRow, JobStore
from app.settings import Settings
from tests.app.hubserver import HubServer
from tests.app.support import TINY_RUN_CONFIG
from tests.app.test_server import free_port, wait_until_up

ROOT = Path(__file__).resolve().parents[2]
PLAN: dict[str, Any] = {"config": TINY_RUN_CONFIG, "method": "qlora", "seq_len": 64, "lora_dropout": 0.0,
                        "device": "cpu"}  # fmt: skip

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="signals and /proc are Linux")
needs_train = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs the train extra")


def _until(check: Callable[[], Any], timeout: float = 30, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"waited {timeout} s for {what or check}"
        time.sleep(0.1)
    return value


def alive(pid: int) -> bool:
    """A live process (a zombie is dead)."""
    return process_identity(pid) is not None


def parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rfind(")") + 2 :].split()[1])


class Server:
    """``python -m app.cli serve`` on a free port, with its environment."""

    def __init__(self, data_dir: Path, hub: HubServer, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        base = {k: v for k, v in os.environ.items() if not k.startswith("TUNEPLAN_") and k != "HF_TOKEN"}
        self.env = base | {
            "PYTHONPATH": str(ROOT), "HF_ENDPOINT": hub.url, "TUNEPLAN_DATA_DIR": str(data_dir),
            "TUNEPLAN_MAX_CONCURRENT_JOBS": "1", "TUNEPLAN_VERIFY_DEVICE": "cpu",
        } | (env or {})  # fmt: skip
        self.args = ["serve", "--host", "127.0.0.1", "--port", str(self.port), *args]
        self.proc = subprocess.Popen([sys.executable, "-m", "app.cli", *self.args], cwd=ROOT, env=self.env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        wait_until_up(self.url, proc=self.proc)

    def post(self, plan: dict[str, Any]) -> str:
        response = httpx.post(f"{self.url}/api/jobs", json=plan, timeout=30)
        assert response.status_code == 202, response.text
        job_id: str = response.json()["id"]
        return job_id

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


@pytest.fixture
def servers(tmp_path: Path, hub: HubServer) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Server:
        server = Server(tmp_path / "data", hub, *args, env=env)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def row(data_dir: Path, job_id: str) -> JobRow:
    store = JobStore(data_dir / "jobs.sqlite3")
    try:
        found = store.get(job_id)
        assert found is not None
        return found
    finally:
        store.close()


def running_pid(data_dir: Path, job_id: str) -> int:
    """The pid of a job's run, once it is the run (the launcher has exec'd ``trainer.run``)."""

    def run() -> int | None:
        job = row(data_dir, job_id)
        if job.status != "running" or job.pid is None:
            return None
        cmdline = Path(f"/proc/{job.pid}/cmdline").read_bytes() if alive(job.pid) else b""
        return job.pid if b"trainer.run" in cmdline and b"app.jobs.launch" not in cmdline else None

    pid: int = _until(run, what=f"job {job_id} to run")
    return pid


@needs_train
def test_a_run_dies_with_its_server_and_the_next_server_cleans_up(tmp_path: Path, servers: Any) -> None:
    data = tmp_path / "data"
    first = servers()
    job = first.post(PLAN)
    pid = running_pid(data, job)
    assert parent_of(pid) == first.proc.pid
    workdir = Path(str(row(data, job).workdir))
    assert workdir.is_dir() and workdir.parent == data / "runs"

    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(timeout=10)
    _until(lambda: not alive(pid), timeout=10, what="the run to die with its server")

    servers()  # a new server on the same data directory: the dead one's job is failed, its work directory removed
    failed = _until(lambda: (r := row(data, job)).status == "failed" and r, what="the job to be failed")
    assert failed.error == INTERRUPTED
    _until(lambda: not workdir.exists(), timeout=10, what="the work directory to go")


@needs_train
def test_two_servers_on_one_data_directory_share_one_runner(tmp_path: Path, servers: Any) -> None:
    data = tmp_path / "data"
    first = servers()
    one = first.post(PLAN)
    pid = running_pid(data, one)

    second = servers()  # starting it fails nothing of the first's
    two = second.post(PLAN)  # queued in the shared file; the first server's runner has the lock
    time.sleep(1.5)
    assert row(data, one).status == "running" and alive(pid) and row(data, two).status == "queued"

    # cancelled through the second server: the first, which runs it, kills it
    cancelled = httpx.delete(f"{second.url}/api/jobs/{one}", timeout=30)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    _until(lambda: not alive(pid), timeout=10, what="the cancelled run to be killed")
    again = httpx.delete(f"{first.url}/api/jobs/{one}", timeout=30)
    assert again.status_code == 409 and "already cancelled" in again.json()["detail"]

    next_pid = running_pid(data, two)  # one at a time: the queued job starts now, in the first server
    assert parent_of(next_pid) == first.proc.pid
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(timeout=10)
    _until(lambda: not alive(next_pid), timeout=10, what="the run to die with its server")
    # the second server takes the runner lock and fails what the first left
    _until(lambda: row(data, two).status == "failed", timeout=15, what="the second server to take over")
    assert row(data, two).error == INTERRUPTED


@needs_train
def test_web_workers_run_jobs_one_at_a_time_and_die_with_their_supervisor(tmp_path: Path, servers: Any) -> None:
    data = tmp_path / "data"
    server = servers("--workers", "2")
    jobs = [server.post(PLAN) for _ in range(3)]  # answered by either worker
    pid = running_pid(data, jobs[0])
    children = _children(server.proc.pid)  # the two workers, and multiprocessing's resource tracker
    workers = {p for p in children if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()}
    assert len(workers) == 2 and parent_of(pid) in workers
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        assert [row(data, j).status for j in jobs].count("running") <= 1
        time.sleep(0.1)

    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(timeout=10)
    _until(lambda: not any(alive(p) for p in (*children, pid)), timeout=15, what="every process of the server to die")


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        if int(text[text.rfind(")") + 2 :].split()[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def test_a_run_left_behind_is_reaped_by_its_recorded_pid(tmp_path: Path) -> None:
    """A run its server could not take along (another OS, a process that escaped): the next runner kills it by the
    pid and start time recorded with its job, and leaves a process whose pid was reused alone."""
    settings = Settings(data_dir=tmp_path / "data")
    left = subprocess.Popen(["sleep", "300"], start_new_session=True)
    other = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        store = JobStore(settings.jobs_db)
        jobs = []
        for proc, identity in ((left, process_identity(left.pid)), (other, "another-boot:123")):
            job = store.create(device="cpu", steps=1, plan={}, config={}, estimate={}, status="running")
            assert job is not None and identity is not None
            store.record_process(job.id, proc.pid, identity, str(settings.runs_dir / job.id))
            jobs.append(job.id)
        (settings.runs_dir / jobs[0]).mkdir(parents=True)
        store.close()

        runner = JobRunner(settings)
        runner.start()
        try:
            assert left.wait(timeout=10) == -signal.SIGKILL
            assert other.poll() is None  # its recorded identity is not this process's: not touched
            _until(lambda: [row(settings.data_dir, j).status for j in jobs] == ["failed", "failed"])
            assert not (settings.runs_dir / jobs[0]).exists()
        finally:
            runner.stop()
    finally:
        for proc in (left, other):
            proc.kill()
            proc.wait()


def test_serve_takes_its_settings_from_the_environment_and_guards_the_jobs_api(tmp_path: Path, hub: HubServer) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUNEPLAN_") and k != "HF_TOKEN"}
    env |= {"PYTHONPATH": str(ROOT), "HF_ENDPOINT": hub.url, "TUNEPLAN_DATA_DIR": str(tmp_path / "data"),
            "TUNEPLAN_HOST": "0.0.0.0", "TUNEPLAN_PORT": str(port)}  # fmt: skip
    refused = subprocess.run([sys.executable, "-m", "app.cli", "serve"], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=60)  # fmt: skip
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "TUNEPLAN_API_TOKEN" in refused.stderr and "--no-jobs" in refused.stderr
    assert "Traceback" not in refused.stderr

    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--no-jobs"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"  # TUNEPLAN_PORT, on every interface (TUNEPLAN_HOST)
    try:
        wait_until_up(url, proc=proc)
        jobs = httpx.post(f"{url}/api/jobs", json=PLAN, timeout=30)
        assert jobs.status_code == 403 and "disabled" in jobs.json()["detail"]
        rebound = httpx.get(f"{url}/healthz", headers={"Host": "attacker.example"}, timeout=30)
        assert rebound.status_code == 400 and "TUNEPLAN_ALLOWED_HOSTS" in rebound.json()["detail"]
        assert httpx.post(f"{url}/api/estimate", json={"model": "gpt2", "seq_len": 512}, timeout=30).status_code == 200
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)
    assert "answering only requests addressed to 127.0.0.1, localhost, ::1" in stderr
