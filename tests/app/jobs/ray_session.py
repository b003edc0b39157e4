"""Run inside a fresh network and PID namespace (``unshare --net --pid --fork``) by ``test_ray_backend``: bring
loopback up, start a local Ray head on it (CPU resources only), submit one tiny verify job through the API to a
server whose runner uses the Ray backend and the same job to a server that runs it as a local process, and print
both jobs as one JSON line. Loopback is the namespace's only interface, so the head can be reached from nowhere
else; when this script exits the kernel ends every process of the PID namespace, the head's included."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from app.main import create_app
from app.settings import Settings
from tests.app.jobs.test_jobs import TINY_PLAN, _wait
from tests.app.support import local_client


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_head(tmp: Path, ray_tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start the head on loopback; its session directory is short (Ray's sockets must fit AF_UNIX's 107 bytes)."""
    port = free_port()
    ray = str(Path(sys.executable).parent / "ray")
    head = subprocess.Popen(
        [ray, "start", "--head", "--block", "--node-ip-address=127.0.0.1", "--port=0", "--dashboard-host=127.0.0.1",
         f"--dashboard-port={port}", "--num-cpus=2", "--num-gpus=0", f"--temp-dir={ray_tmp}",
         "--disable-usage-stats", "--include-dashboard=true"],
        stdout=open(tmp / "head.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    address = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and head.poll() is None:
        try:
            urllib.request.urlopen(address + "/api/version", timeout=2).read()
            return head, address
        except OSError:
            time.sleep(0.5)
    raise SystemExit("the Ray head did not come up: " + (tmp / "head.log").read_text()[-2000:])


def ray_status(address: str, job_id: str, until: str, timeout: float = 60) -> str:
    """The Ray job's status (``tuneplan-<job id>``), polled until it is ``until`` or ``timeout`` passed."""
    from ray.job_submission import JobSubmissionClient

    jobs = JobSubmissionClient(address)
    deadline = time.monotonic() + timeout
    while True:
        status = str(jobs.get_job_status(f"tuneplan-{job_id}")).rsplit(".", 1)[-1]
        if status == until or time.monotonic() > deadline:
            return status
        time.sleep(0.5)


def main() -> None:
    tmp = Path(sys.argv[1])
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    ray_tmp = Path(tempfile.mkdtemp(prefix="tpray", dir="/tmp"))
    began = time.monotonic()
    head, address = start_head(tmp, ray_tmp)
    out: dict[str, Any] = {"address": address, "head_s": round(time.monotonic() - began, 1)}
    base: dict[str, Any] = dict(hf_endpoint="http://127.0.0.1:9", hf_token=None,
                                allowed_hosts=["127.0.0.1", "testserver"])  # fmt: skip
    try:
        with (
            local_client(create_app(Settings(data_dir=tmp / "local", **base))) as local,
            local_client(create_app(Settings(data_dir=tmp / "ray", ray_address=address, **base))) as on_ray,
        ):
            urls = {}
            for name, client in (("local", local), ("ray", on_ray)):  # both run at once
                posted = client.post("/api/jobs", json=TINY_PLAN)
                assert posted.status_code == 202, posted.text
                urls[name] = posted.json()["url"]
            out["local"] = _wait(local, urls["local"], ("done", "failed"), timeout=240)
            out["ray"] = _wait(on_ray, urls["ray"], ("done", "failed"), timeout=240)
            out["jobs_s"] = round(time.monotonic() - began - out["head_s"], 1)
            # a cancel through the API stops the Ray job
            cancel = on_ray.post("/api/jobs", json={**TINY_PLAN, "steps": 5}).json()
            _wait(on_ray, cancel["url"], ("running",), timeout=60)
            out["cancel"] = on_ray.delete(cancel["url"]).json()["status"]
            out["cancel_ray"] = ray_status(address, cancel["id"], "STOPPED")
        # a run past the server's deadline is stopped on the cluster too
        settings = Settings(data_dir=tmp / "timeout", ray_address=address, job_timeout_s=2, **base)
        with local_client(create_app(settings)) as client:
            late = client.post("/api/jobs", json={**TINY_PLAN, "steps": 5}).json()
            out["timeout"] = _wait(client, late["url"], ("done", "failed"), timeout=90)
            out["timeout_ray"] = ray_status(address, late["id"], "STOPPED")
        out["listening"] = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True).stdout
        out["total_s"] = round(time.monotonic() - began, 1)
        print(json.dumps(out))
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            head.wait(timeout=5)  # the rest ends with the PID namespace
        shutil.rmtree(ray_tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
