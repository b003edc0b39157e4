"""Where a CUDA peak comes from: run cases of the setups matrix (``bench/gpu_check.py``) under the CUDA caching
allocator's history and list the blocks live at the peak by the Python line that allocated them.

The live-tensor tracker (``trainer.tracker``) sees every tensor an ATen op returns; it cannot see what an op
allocates inside itself and frees before it returns. When ``max_memory_allocated`` and the tracked peak differ by
more than cuBLAS's workspace, this names the op: the allocator's history holds every block, with its Python stack.

    python bench/gpu_snapshot.py --only qlora/chunked --out snap.json     # on a CUDA machine

Each case runs in its own process (``--child``): ``trainer.run.run`` (warm-up + one measured step) with
``torch.cuda.memory._record_memory_history`` on from before the model is built, then the history is replayed
(``alloc`` adds a block, ``free_completed`` removes it) to the largest total, and the blocks live there are grouped by
their innermost Python frames.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.gpu_check import setups_matrix  # noqa: E402

FRAMES = 4  # innermost Python frames that name a site


def _site(frames: Iterable[Mapping[str, Any]]) -> str:
    """The innermost Python frames, short paths, innermost first."""
    parts = []
    for f in frames:
        name = str(f.get("filename", "?"))
        if not name.endswith(".py"):
            continue
        for marker in ("site-packages/", "/work/", "/root/"):
            if marker in name:
                name = name.split(marker, 1)[1]
        parts.append(f"{name}:{f.get('line')} {f.get('name')}")
        if len(parts) == FRAMES:
            break
    return " < ".join(parts) or "?"


def replay(trace: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The largest total of live blocks over a device trace, and the blocks live then, grouped by site."""
    events = list(trace)
    free = "free_completed" if any(e.get("action") == "free_completed" for e in events) else "free_requested"
    live: dict[int, int] = {}
    total = peak = peak_at = 0
    for i, e in enumerate(events):
        action = e.get("action")
        if action == "alloc":
            live[int(e["addr"])] = int(e["size"])
            total += int(e["size"])
            if total > peak:
                peak, peak_at = total, i
        elif action == free and int(e["addr"]) in live:
            total -= live.pop(int(e["addr"]))
    blocks: dict[int, Mapping[str, Any]] = {}
    for e in events[: peak_at + 1]:
        if e.get("action") == "alloc":
            blocks[int(e["addr"])] = e
        elif e.get("action") == free:
            blocks.pop(int(e["addr"]), None)
    sites: dict[str, list[int]] = {}
    for e in blocks.values():
        sites.setdefault(_site(e.get("frames") or ()), []).append(int(e["size"]))
    ranked = sorted(sites.items(), key=lambda kv: -sum(kv[1]))
    return {
        "events": len(events),
        "peak": peak,
        "peak_event": {"size": int(events[peak_at]["size"]), "site": _site(events[peak_at].get("frames") or ())}
        if events
        else None,
        "sites": [{"site": s, "bytes": sum(v), "blocks": len(v), "largest": max(v)} for s, v in ranked],
    }


def child(plan_path: str, out_path: str) -> int:
    import torch

    from trainer.run import load_plan, run

    torch.cuda.memory._record_memory_history(enabled="all", context="all", stacks="python", max_entries=3_000_000)
    result = run(load_plan(plan_path), device="cuda", steps=1)
    snapshot = torch.cuda.memory._snapshot()
    torch.cuda.memory._record_memory_history(enabled=None)
    measured = result.get("measured", {})
    report = {
        "peak_allocated": measured.get("peak_allocated"),
        "tracked_peak": measured.get("tracked_peak"),
        "peak_phase": measured.get("peak_phase"),
        "replay": replay(snapshot["device_traces"][0]),
    }
    Path(out_path).write_text(json.dumps(report, indent=1) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="List the CUDA blocks live at a case's peak, by Python site")
    parser.add_argument("--out", help="JSON with one entry per case")
    parser.add_argument("--only", action="append", default=[], help="case names containing this (repeatable)")
    parser.add_argument("--top", type=int, default=25, help="sites printed per case")
    parser.add_argument("--case-timeout", type=float, default=120.0)
    parser.add_argument("--child", nargs=2, metavar=("PLAN", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(*args.child)
    if not args.out:
        parser.error("--out is required")
    cases = [c for c in setups_matrix(dry=False) if not args.only or any(o in c["name"] for o in args.only)]
    results: list[dict[str, Any]] = []
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), str(REPO)) if p)
    with tempfile.TemporaryDirectory(prefix="gpu-snapshot-") as tmp:
        for case in cases:
            plan, out = Path(tmp) / "plan.json", Path(tmp) / "out.json"
            plan.write_text(json.dumps(case["plan"]))
            out.unlink(missing_ok=True)
            t0 = time.perf_counter()
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(plan), str(out)]
            try:
                proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                                      timeout=args.case_timeout)  # fmt: skip
            except subprocess.TimeoutExpired:
                results.append({"name": case["name"], "status": "timeout"})
                continue
            if proc.returncode or not out.exists():
                results.append({"name": case["name"], "status": "error", "stderr_tail": proc.stderr[-3000:]})
                print(case["name"], "error", proc.stderr[-3000:], flush=True)
                continue
            entry = {"name": case["name"], "status": "ok", "wall_s": time.perf_counter() - t0}
            entry |= json.loads(out.read_text())
            results.append(entry)
            rep = entry["replay"]
            head = f"max_memory_allocated {entry['peak_allocated']}, tracked {entry['tracked_peak']}"
            print(f"== {case['name']}: {head}, replayed {rep['peak']} ({rep['events']} events); "
                  f"set by {rep['peak_event']}", flush=True)  # fmt: skip
            for s in rep["sites"][: args.top]:
                print(f"  {s['bytes'] / 2**20:10.1f} MiB {s['blocks']:5d} blocks (largest {s['largest'] / 2**20:.1f}) "
                      f"{s['site']}", flush=True)  # fmt: skip
            Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    return 0 if all(r["status"] == "ok" for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
