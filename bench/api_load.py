"""Loopback load test of ``POST /api/estimate``: latency percentiles and throughput.

Starts the app with uvicorn in a subprocess (``app.main:create_app``, a fresh data directory, access log off),
then drives a bounded number of requests from a lean asyncio HTTP/1.1 client with keep-alive connections,
``--concurrency`` requests in flight (closed loop). Plans rotate over catalog models and methods, and no
two requests are the same (``seq_len`` steps by one; up to 36,864 requests), so every request runs the
estimator and no cache could answer it. Two phases: one request at a time (unloaded latency), then the
loaded run.

    .venv/bin/python bench/api_load.py                      # 4000 requests, concurrency 4
    .venv/bin/python bench/api_load.py --requests 20000 --concurrency 16 --json

Prints p50/p95/p99 latency and requests/s per phase; ``--json`` prints them as one JSON object instead.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

PLANS: list[dict[str, Any]] = [
    {"model": model, "method": method, "seq_len": seq_len, "batch_size": batch}
    | ({"lora_dropout": 0.0} if model == "qwen3-30b-a3b" else {})  # PEFT: LoRA on MoE experts needs dropout 0
    for model in ("llama-3.1-8b", "qwen2.5-7b", "mistral-7b-v0.3", "gemma-2-9b", "qwen3-30b-a3b", "phi-3-mini")
    for method, seq_len, batch in (("qlora", 4096, 1), ("lora", 4000, 2), ("full", 3900, 4))
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(port: int, data_dir: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "TUNEPLAN_DATA_DIR": data_dir, "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "app.main:create_app",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
                if response.status == 200:
                    return proc
        except OSError:
            time.sleep(0.1)
    proc.terminate()
    raise SystemExit("the server did not come up in 60 s")


def request_bytes(port: int, body: dict[str, Any]) -> bytes:
    payload = json.dumps(body).encode()
    head = (
        f"POST /api/estimate HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\nConnection: keep-alive\r\n\r\n"
    )
    return head.encode() + payload


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    body = await reader.readexactly(length)
    return status, body


async def run_phase(port: int, total: int, concurrency: int, requests: list[bytes]) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    first_error = ""
    counter = iter(range(total))

    async def worker() -> None:
        nonlocal errors, first_error
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for i in counter:
                start = time.perf_counter()
                writer.write(requests[i % len(requests)])
                status, body = await read_response(reader)
                latencies.append(time.perf_counter() - start)
                if status != 200:
                    errors += 1
                    first_error = first_error or f"HTTP {status}: {body[:300].decode(errors='replace')}"
        finally:
            writer.close()
            await writer.wait_closed()

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - began
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

    return {
        "requests": len(latencies),
        "concurrency": concurrency,
        "errors": errors,
        "first_error": first_error,
        "wall_s": round(wall, 3),
        "req_per_s": round(len(latencies) / wall, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p95_ms": round(pct(0.95), 2),
        "p99_ms": round(pct(0.99), 2),
        "max_ms": round(latencies[-1] * 1000, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000, help="requests in the loaded phase")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight in the loaded phase")
    parser.add_argument("--sequential", type=int, default=500, help="requests in the one-at-a-time phase")
    parser.add_argument("--warmup", type=int, default=300, help="requests before measuring")
    parser.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)

    port = args.port or free_port()
    with tempfile.TemporaryDirectory(prefix="tuneplan-bench-") as data_dir:
        proc = start_server(port, data_dir)
        try:
            count = args.warmup + args.sequential + args.requests
            requests = [
                request_bytes(port, {**plan, "seq_len": plan["seq_len"] - (i // len(PLANS)) % 2048})
                for i, plan in zip(range(count), itertools.cycle(PLANS), strict=False)
            ]
            warm, rest = requests[: args.warmup], requests[args.warmup :]
            asyncio.run(run_phase(port, len(warm), 4, warm))
            sequential = asyncio.run(run_phase(port, args.sequential, 1, rest[: args.sequential]))
            loaded = asyncio.run(run_phase(port, args.requests, args.concurrency, rest[args.sequential :]))
        finally:
            proc.terminate()
            proc.wait(timeout=20)

    results = {"endpoint": "POST /api/estimate", "cpus": os.cpu_count(), "sequential": sequential, "loaded": loaded}
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"POST /api/estimate on 127.0.0.1:{port} ({os.cpu_count()} CPUs, {len(PLANS)} rotating plans)")
        for name, r in (("sequential", sequential), ("loaded", loaded)):
            print(
                f"  {name:<10} {r['requests']:>6} req  c={r['concurrency']:<3} "
                f"p50 {r['p50_ms']:.2f} ms  p95 {r['p95_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  "
                f"{r['req_per_s']:.0f} req/s  errors {r['errors']}"
            )
    for r in (sequential, loaded):
        if r["errors"]:
            print(f"error: {r['errors']} requests failed, first: {r['first_error']}", file=sys.stderr)
    return 1 if sequential["errors"] or loaded["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
