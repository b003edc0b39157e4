"""Speed of the analytic estimate (in-process) and of the CLI (wall clock, a fresh process each time).

    python bench/estimator_speed.py            # prints a table; targets: < 1 ms per estimate, <= 0.25 s per CLI call
    python bench/estimator_speed.py --runs 20

Measures ``estimate(plan).to_dict()`` for several catalog models and methods (median of many calls after a warm-up),
also with a GPU in the plan (the fit search), and ``tuneplan estimate <model> --json`` / ``tuneplan storage`` as
separate processes (median wall time). The CLI figure includes Python start-up and imports; it imports neither
torch, nor the web stack, nor pydantic.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from estimator import Plan, estimate

CASES = (
    ("llama-3.1-8b", "qlora", None),
    ("llama-3.1-70b", "lora", None),
    ("mixtral-8x7b", "full", None),
    ("qwen2.5-7b", "qlora", None),
    ("gpt2", "full", None),
    ("llama-3.1-8b", "qlora", "rtx-4090"),
    ("qwen2.5-7b", "lora", "a100-80gb"),
    ("llama-3.2-1b", "full", "h200"),
)


def in_process(n: int) -> list[tuple[str, float]]:
    out = []
    for model, method, gpu in CASES:
        plan = Plan.from_dict({"model": model, "method": method, "lora_dropout": 0.0, "seq_len": 1024, "gpu": gpu})
        estimate(plan).to_dict()
        times = []
        for _ in range(n):
            t = time.perf_counter()
            estimate(plan).to_dict()
            times.append(time.perf_counter() - t)
        out.append((f"{model} {method}" + (f" on {gpu} (fit search)" if gpu else ""), statistics.median(times) * 1e3))
    return out


def cli(runs: int) -> list[tuple[str, float]]:
    exe = shutil.which("tuneplan") or str(Path(sys.executable).parent / "tuneplan")
    commands = {
        "tuneplan estimate llama-3.1-8b --json": [exe, "estimate", "llama-3.1-8b", "--json"],
        "tuneplan estimate (table)": [exe, "estimate", "llama-3.1-8b", "--method", "qlora"],
        "tuneplan estimate llama-3.1-8b --gpu rtx-4090 --json": [
            exe,
            "estimate",
            "llama-3.1-8b",
            "--gpu",
            "rtx-4090",
            "--json",
        ],
        "tuneplan storage --params 10e9": [exe, "storage", "--params", "10e9"],
    }
    out = []
    for name, cmd in commands.items():
        subprocess.run(cmd, capture_output=True, check=True)
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            subprocess.run(cmd, capture_output=True, check=True)
            times.append(time.perf_counter() - t)
        out.append((name, statistics.median(times)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="CLI runs per command")
    parser.add_argument("--calls", type=int, default=2000, help="in-process calls per case")
    args = parser.parse_args()
    print("| estimate (in-process) | median ms |\n|---|---|")
    for name, ms in in_process(args.calls):
        print(f"| {name} | {ms:.3f} |")
    print("\n| CLI (fresh process) | median s |\n|---|---|")
    for name, s in cli(args.runs):
        print(f"| `{name}` | {s:.3f} |")


if __name__ == "__main__":
    main()
