"""Where the time model's measured figures come from, and how it compares with measured step times.

    python -m bench.time_model ops                   # aten ops per decoder layer, counted on real CPU steps (torch)
    python -m bench.time_model calibrate             # host seconds per op and the H200's MFU, from its runs
    python -m bench.time_model table                 # every H200 run: measured vs estimated step time (markdown)

``ops`` builds Llama-shaped models of 2 and 4 layers with the trainer's own recipe (``trainer.build``) and counts,
with a ``TorchDispatchMode``, the aten ops one forward + backward dispatches; the difference per layer and the rest
are ``host.ops_per_layer`` and ``host.ops_fixed`` of ``estimator/data/throughput.json``.

``calibrate`` reads ``bench/results/gpu_h200.json`` (each run's plan, config and mean step time) and derives:

1. **seconds per op** (``host.op_s``), per LoRA and QLoRA: the median of step time / dispatched ops over the runs
   the GPU cannot be the bottleneck of (their FLOPs and bytes at 100 % of the peaks take under a tenth of the step);
2. **the H200's MFU** (``mfu.by_gpu.h200``): the median of FLOPs-time at 100 % / (step time - memory-bound time)
   over the runs whose step time exceeds their host floor by more than a fifth and that are not host-bound by the
   rule above (the GPU's work sets their pace).

``tests/estimator/test_time.py`` runs ``calibrate`` again and holds the data file to it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from estimator import Plan, adapter_plan, build_inventory, catalog, host_ops, parse_config, step_time

ROOT = Path(__file__).resolve().parents[1]
H200_RESULTS = ROOT / "bench" / "results" / "gpu_h200.json"
HOST_BOUND = 0.1  # GPU work at 100 % of the peaks under this share of the step: the host sets the pace
GPU_BOUND = 1.2  # step time over this multiple of the host floor: the GPU sets the pace


def _case(case: dict[str, Any]) -> dict[str, Any]:
    """One measured run with what the time model needs: FLOPs-time at 100 %, memory time, dispatched ops."""
    result = case["result"]
    plan = Plan.from_dict(result["plan"] | {"config": result["config"]})
    inv = build_inventory(parse_config(result["config"]))
    adapters = adapter_plan(inv, plan)
    gpu = catalog.find_gpu("h200")
    assert gpu is not None
    at_peak = step_time(inv, adapters, plan.replace(mfu=1.0), gpu)
    estimated = step_time(inv, adapters, plan, gpu)
    assert at_peak is not None and estimated is not None
    return {
        "name": case["name"],
        "method": plan.method,
        "measured_s": float(result["step_time_s"]),
        "compute_at_peak_s": at_peak.compute_s,
        "memory_s": at_peak.memory_s,
        "ops": host_ops(inv, adapters, plan),
        "estimated_s": estimated.step_s,
        "bound": "gpu" if estimated.gpu_s >= estimated.host_s else "host",
    }


def cases(path: Path = H200_RESULTS) -> list[dict[str, Any]]:
    data = json.loads(path.read_text())
    return [_case(c) for c in data["cases"] if c.get("status") == "ok"]


def calibrate(path: Path = H200_RESULTS) -> dict[str, Any]:
    """Seconds per dispatched op (LoRA, QLoRA) and the card's MFU, by the rules of the module docstring."""
    runs = cases(path)
    op_s: dict[str, float] = {}
    for group in ("lora", "qlora"):
        host_bound = [r["measured_s"] / r["ops"] for r in runs if r["method"] == group and _host_bound(r)]
        op_s[group] = round(statistics.median(host_bound), 8)
    gpu_bound = []
    for r in runs:
        floor = r["ops"] * op_s["qlora" if r["method"] == "qlora" else "lora"]
        if r["measured_s"] > GPU_BOUND * floor and not _host_bound(r):
            gpu_bound.append((r["name"], r["compute_at_peak_s"] / (r["measured_s"] - r["memory_s"])))
    mfu = round(statistics.median(u for _, u in gpu_bound), 3)
    return {"op_s": op_s, "mfu": mfu, "mfu_runs": [name for name, _ in gpu_bound]}


def _host_bound(r: dict[str, Any]) -> bool:
    return bool(r["compute_at_peak_s"] + r["memory_s"] < HOST_BOUND * r["measured_s"])


def table(path: Path = H200_RESULTS) -> str:
    """Markdown: every H200 run, measured vs estimated step time."""
    lines = ["| run | measured s | estimated s | error | bound |", "|---|---:|---:|---:|---|"]
    for r in cases(path):
        err = (r["estimated_s"] - r["measured_s"]) / r["measured_s"]
        lines.append(f"| {r['name']} | {r['measured_s']:.3f} | {r['estimated_s']:.3f} | {err:+.1%} | {r['bound']} |")
    return "\n".join(lines)


def count_ops() -> dict[str, Any]:  # pragma: no cover - needs torch; tests/trainer/test_time_ops.py runs it
    from bench._ops import ops_table

    return ops_table()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("ops", "calibrate", "table"))
    args = parser.parse_args(argv)
    if args.command == "ops":
        print(json.dumps(count_ops(), indent=1))
    elif args.command == "calibrate":
        print(json.dumps(calibrate(), indent=1))
    else:
        print(table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
