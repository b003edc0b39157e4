"""The traced step at a few layers, extended to the model's depth, against the whole stack traced, at real sizes.

For each case the step is traced twice under FakeTensorMode (``trainer.traced.traced_run``): at
``trainer.depth.DEPTHS`` decoder layers extended to the model's depth (``extrapolate=True``, what
``tuneplan estimate --traced`` does), and with every layer. It records whether the shortcut was taken (and why
not), whether every figure is equal (peak, per-phase peaks and their components, parameter counts), and the wall
time of each, into ``bench/results/traced_depth.json``.

    python -m bench.traced_depth                 # every case (about 10 minutes on 2 cores)
    python -m bench.traced_depth --only llama    # the cases whose id contains "llama"

Needs the train extra.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as ``python bench/traced_depth.py``
    sys.path.insert(0, str(REPO))

from estimator import Plan, catalog  # noqa: E402

OUT = REPO / "bench" / "results" / "traced_depth.json"

CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "llama-3.1-8b-qlora-gc-s2048": ("llama-3.1-8b", {"method": "qlora", "seq_len": 2048}),
    "llama-3.1-8b-qlora-gc-s256-chunked": ("llama-3.1-8b", {"method": "qlora", "seq_len": 256, "loss": "chunked"}),
    "qwen2.5-7b-lora-nogc-s512": ("qwen2.5-7b", {"method": "lora", "seq_len": 512, "gradient_checkpointing": False}),
    "llama-3.2-1b-full-gc-s1024-plain": (
        "llama-3.2-1b", {"method": "full", "seq_len": 1024, "training_loop": "plain"}),
    "qwen3-30b-a3b-qlora-gc-s1024": ("qwen3-30b-a3b", {"method": "qlora", "seq_len": 1024, "lora_dropout": 0.0}),
    "phi-4-qlora-gc-s1024-unpadded-b2": (
        "phi-4", {"method": "qlora", "seq_len": 1024, "batch_size": 2, "padding": "none"}),
    "gpt2-full-nogc-s1024": ("gpt2", {"method": "full", "seq_len": 1024, "gradient_checkpointing": False}),
    "gpt2-xl-full-nogc-s1024": ("gpt2-xl", {"method": "full", "seq_len": 1024, "gradient_checkpointing": False}),
    "falcon-7b-lora-gc-s2048": ("falcon-7b", {"method": "lora", "seq_len": 2048}),
}  # fmt: skip
"""Case id: (catalog model, plan fields); every plan emulates CUDA (``device: cuda``: 512-byte rounding, foreach
AdamW, torch's CUDA attention choice)."""


def check(model: str, fields: dict[str, Any]) -> dict[str, Any]:
    from trainer.traced import traced_run

    entry = catalog.find_model(model)
    assert entry is not None, model
    plan = Plan(model=None, config=dict(entry.config), **({"device": "cuda"} | fields))
    t0 = time.perf_counter()
    short = traced_run(plan, extrapolate=True)
    t1 = time.perf_counter()
    whole = traced_run(plan)
    t2 = time.perf_counter()
    return {
        "model": model,
        "plan": fields,
        "depth": short["depth"],
        "equal": short["measured"] == whole["measured"] and short["params"] == whole["params"],
        "peak_extended": short["measured"]["peak_allocated"],
        "peak_whole": whole["measured"]["peak_allocated"],
        "seconds_extended": round(t1 - t0, 1),
        "seconds_whole": round(t2 - t1, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="run the cases whose id contains this")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(2)
    out = Path(args.out)
    saved: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    results: dict[str, Any] = saved.get("cases", {})
    for case, (model, fields) in CASES.items():
        if args.only not in case:
            continue
        results[case] = check(model, fields)
        r = results[case]
        taken = "extended" if r["depth"]["extrapolated"] else f"whole ({r['depth']['why']})"
        print(f"{case}: {taken}; equal {r['equal']}; {r['seconds_extended']} s vs {r['seconds_whole']} s", flush=True)
    from trainer.run import versions

    saved = {
        "date": _dt.date.today().isoformat(),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
        "versions": versions(None),
        "command": "python -m bench.traced_depth",
        "cases": dict(sorted(results.items())),
    }
    out.write_text(json.dumps(saved, indent=1) + "\n")
    return 0 if all(r["equal"] for r in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
