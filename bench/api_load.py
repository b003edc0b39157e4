"""Loopback load test of the REST API with a real load generator (``wrk``): throughput and latency percentiles.

Starts ``tuneplan serve --workers N`` in a subprocess (a fresh data directory, loopback only), then drives it with
``wrk`` (Debian's ``apt-get install -y wrk``) for a bounded time at a fixed number of keep-alive connections, one
scenario after another:

* ``estimate-gpu``: ``POST /api/estimate`` with a GPU in the plan (so the fit search runs), rotating over 45 plans
  (5 catalog models x full/LoRA/QLoRA x 3 GPUs): after the first round every answer comes from the estimate cache,
  as repeated plans do on a shared server;
* ``estimate-gpu-unique``: the same plans with ``seq_len`` stepping per request, so no two requests are the same
  and every one runs the estimator and the fit search (the cache never answers);
* ``healthz``: ``GET /healthz``.

    .venv/bin/python bench/api_load.py                                 # 2 workers, 50 connections, 10 s each
    .venv/bin/python bench/api_load.py --workers 1 --duration 5 --json

Prints requests/s and p50/p90/p99/max latency per scenario (``--json``: one JSON object), with the load average,
since the figures need the cores: the server's workers and wrk share them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("llama-3.1-8b", "qwen2.5-7b", "mistral-7b-v0.3", "gemma-2-9b", "phi-3-mini")
METHODS = ("qlora", "lora", "full")
GPUS = ("rtx-4090", "a100-80gb", "l4")

LUA = """
local bodies = {%(bodies)s}
local unique = %(unique)s
local i = 0
wrk.method = "%(method)s"
wrk.path = "%(path)s"
wrk.headers["Content-Type"] = "application/json"
request = function()
  i = i + 1
  if #bodies == 0 then return wrk.format() end
  local body = bodies[(i %% #bodies) + 1]
  if unique then body = string.gsub(body, "SEQ", tostring(4096 - math.floor(i / #bodies) %% 3000)) end
  return wrk.format(nil, nil, nil, body)
end
done = function(summary, latency, requests)
  local s = summary
  io.write(string.format('RESULT {"requests": %%d, "duration_us": %%d, "connect_errors": %%d, "read_errors": %%d, '
    .. '"write_errors": %%d, "status_errors": %%d, "timeouts": %%d, "p50_us": %%d, "p90_us": %%d, "p99_us": %%d, '
    .. '"max_us": %%d, "mean_us": %%.1f}\\n',
    s.requests, s.duration, s.errors.connect, s.errors.read, s.errors.write, s.errors.status, s.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(port: int, workers: int, data_dir: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "TUNEPLAN_DATA_DIR": data_dir, "PYTHONPATH": str(ROOT)}
    env.pop("TUNEPLAN_API_TOKEN", None)
    cmd = [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--workers", str(workers), "--no-jobs"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
                if response.status == 200:
                    time.sleep(1.0 if workers > 1 else 0.2)  # let every worker finish its start-up
                    return proc
        except OSError:
            time.sleep(0.1)
    proc.terminate()
    raise SystemExit("the server did not come up in 60 s")


def plan_bodies(unique: bool) -> list[str]:
    """The JSON bodies; ``SEQ`` in a unique body is replaced per request by the Lua script."""
    seq = "SEQ" if unique else "2048"
    return [
        f'{{"model": "{m}", "method": "{me}", "gpu": "{g}", "batch_size": 1, "seq_len": {seq}}}'
        for m in MODELS
        for me in METHODS
        for g in GPUS
    ]


def run_wrk(
    port: int, method: str, path: str, bodies: list[str], unique: bool, args: argparse.Namespace
) -> dict[str, Any]:
    lua = LUA % {
        "bodies": ", ".join("[[" + b + "]]" for b in bodies),
        "unique": "true" if unique else "false",
        "method": method,
        "path": path,
    }
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(lua)
    try:
        cmd = ["wrk", "-t", str(args.threads), "-c", str(args.connections), "-d", f"{args.duration}s",
               "--timeout", "10s", "-s", script.name, f"http://127.0.0.1:{port}"]  # fmt: skip
        load_before = os.getloadavg()[0]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.duration + 60, check=True).stdout
    finally:
        os.unlink(script.name)
    line = next(line for line in out.splitlines() if line.startswith("RESULT "))
    raw = json.loads(line.removeprefix("RESULT "))
    errors = sum(raw[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts"))
    return {
        "requests": raw["requests"],
        "req_per_s": round(raw["requests"] / (raw["duration_us"] / 1e6), 1),
        "p50_ms": round(raw["p50_us"] / 1000, 2),
        "p90_ms": round(raw["p90_us"] / 1000, 2),
        "p99_ms": round(raw["p99_us"] / 1000, 2),
        "max_ms": round(raw["max_us"] / 1000, 2),
        "errors": errors,
        "load_average": round(load_before, 2),
    }


SCENARIOS: dict[str, tuple[str, str, bool]] = {
    "estimate-gpu": ("POST", "/api/estimate", False),
    "estimate-gpu-unique": ("POST", "/api/estimate", True),
    "healthz": ("GET", "/healthz", False),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--workers", type=int, default=2, help="tuneplan serve --workers")
    parser.add_argument("--connections", type=int, default=50, help="keep-alive connections (wrk -c)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (wrk -t)")
    parser.add_argument("--duration", type=int, default=10, help="seconds per scenario (wrk -d)")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of load before each scenario")
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS), help="run only these")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: apt-get install -y wrk")

    results: dict[str, Any] = {"workers": args.workers, "connections": args.connections, "cpus": os.cpu_count(),
                               "duration_s": args.duration, "scenarios": {}}  # fmt: skip
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="tuneplan-bench-") as data_dir:
        proc = start_server(port, args.workers, data_dir)
        try:
            for name in args.scenario or list(SCENARIOS):
                method, path, unique = SCENARIOS[name]
                bodies = plan_bodies(unique) if method == "POST" else []
                warm = argparse.Namespace(**{**vars(args), "duration": args.warmup})
                if args.warmup:
                    run_wrk(port, method, path, bodies, unique, warm)
                results["scenarios"][name] = run_wrk(port, method, path, bodies, unique, args)
        finally:
            proc.terminate()
            proc.wait(timeout=30)

    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"tuneplan serve --workers {args.workers}, wrk -t{args.threads} -c{args.connections} "
              f"-d{args.duration}s on 127.0.0.1 ({os.cpu_count()} CPUs)")  # fmt: skip
        for name, r in results["scenarios"].items():
            print(f"  {name:<20} {r['req_per_s']:>8.0f} req/s  p50 {r['p50_ms']:6.2f} ms  p90 {r['p90_ms']:6.2f} ms  "
                  f"p99 {r['p99_ms']:6.2f} ms  max {r['max_ms']:7.2f} ms  errors {r['errors']}  "
                  f"(load average {r['load_average']})")  # fmt: skip
    return 1 if any(r["errors"] for r in results["scenarios"].values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
