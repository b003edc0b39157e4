"""How long a verify run takes on this machine against what ``POST /api/jobs/preflight`` says beforehand
(``app.jobs.duration``): each case runs ``python -m trainer.run`` on the CPU as the job runner starts it, timed from
the outside, with the phases its progress file records.

    .venv/bin/python -m bench.run_duration [--steps 1]

Prints one row per case: the estimate, the measured wall time, and when each phase began.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from app.jobs.duration import run_seconds
from estimator import Plan, estimate, step_flops

CASES = (
    {"model": "qwen2.5-0.5b", "method": "lora", "seq_len": 256, "batch_size": 1},
    {"model": "qwen2.5-0.5b", "method": "qlora", "seq_len": 256, "batch_size": 1},
    {"model": "qwen2.5-0.5b", "method": "full", "seq_len": 256, "batch_size": 1},
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1)
    args = parser.parse_args()
    for case in CASES:
        plan = Plan.from_dict(case | {"device": "cpu", "lora_dropout": 0.0})
        est = estimate(plan, with_advice=False)
        work = step_flops(est.inventory, est.adapters, est.plan)  # as EstimateService.run_seconds calls it
        estimated = run_seconds(
            "cpu", plan.method, est.inventory.total, work.total, work.dequant_bytes, args.steps, None
        )
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "plan.json").write_text(json.dumps(plan.to_dict()))
            cmd = [sys.executable, "-m", "trainer.run", "--plan", f"{tmp}/plan.json", "--device", "cpu", "--steps",
                   str(args.steps), "--out", f"{tmp}/result.json", "--progress", f"{tmp}/progress.json"]  # fmt: skip
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            wall = time.perf_counter() - t0
            phases = json.loads((Path(tmp) / "progress.json").read_text())["phases"]
        print(json.dumps({"plan": case, "estimated_s": round(estimated or 0, 1), "measured_s": round(wall, 1),
                          "phases_s": phases}), flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
