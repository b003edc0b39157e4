"""The Ray backend of the job runner against a real local Ray head (CPU resources, a tiny config).

The head runs in a network and PID namespace of its own (``unshare``; in a user namespace too when not root):
loopback is its only interface, so it binds nothing reachable from outside, and it is stopped with the namespace
when the session script ends. A job submitted through the API with ``TUNEPLAN_RAY_ADDRESS`` runs as a Ray job and
stores the same figures as the same job run as a local process; cancel and the server's deadline stop the Ray job.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
# a cluster node has the train extra installed and its ``python`` first on PATH: here, this interpreter's venv
PATH = os.pathsep.join((str(Path(sys.executable).parent), os.environ.get("PATH", "")))

# a private network and PID namespace (with a user namespace that maps this user to root when not root)
UNSHARE = ["unshare", *(["--user", "--map-root-user"] if os.geteuid() != 0 else []),
           "--net", "--pid", "--fork", "--mount-proc", "--kill-child"]  # fmt: skip


def _can_unshare() -> bool:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    probe = subprocess.run([*UNSHARE, "ip", "link", "set", "lo", "up"], capture_output=True, timeout=30)
    return probe.returncode == 0


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs the ray extra: pip install -e '.[ray]'"),
    pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs the train extra"),
]


def test_a_verify_job_runs_on_a_local_ray_head_like_a_local_run(tmp_path: Path) -> None:
    if not _can_unshare():  # checked here, not at collection, so collecting the suite starts no process
        pytest.skip("the head must run in a private network namespace: unshare (util-linux) and ip (iproute2) with "
                    "root or unprivileged user namespaces")  # fmt: skip
    proc = subprocess.run(
        [*UNSHARE, sys.executable, "-m", "tests.app.jobs.ray_session", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=540,
        env=dict(os.environ, PYTHONPATH=str(ROOT), RAY_USAGE_STATS_ENABLED="0", PATH=PATH),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    on_ray, local = out["ray"], out["local"]
    assert on_ray["status"] == "done", on_ray.get("error")
    assert local["status"] == "done", local.get("error")
    measured_ray, measured_local = on_ray["result"]["measured"], local["result"]["measured"]
    assert measured_ray["peak_allocated"] == measured_local["peak_allocated"] > 0
    assert measured_ray["components"] == measured_local["components"]
    for part in ("components", "tiers"):
        assert on_ray["comparison"][part] == local["comparison"][part]
    # cancel and the server's deadline reach the cluster: the Ray job is stopped
    assert (out["cancel"], out["cancel_ray"]) == ("cancelled", "STOPPED")
    assert out["timeout"]["status"] == "failed" and "took longer than 2 s" in out["timeout"]["error"]
    assert out["timeout_ray"] == "STOPPED"
    # only loopback existed in the head's namespace: nothing it bound is reachable from another interface
    for line in out["listening"].splitlines():
        local_address = line.split()[3]
        assert local_address.startswith(("127.", "[::1]", "*:", "0.0.0.0:", "[::]:", "[::ffff:127.")), line
