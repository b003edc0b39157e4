"""Per-rank peaks of real data-parallel runs (gloo on the CPU) against the estimate's per-rank figures.

Runs the matrix DDP, FSDP2 full shard and FSDP2 shard-grad-op x 2 and 4 ranks x LoRA and full fine-tuning on the
tiny Llama config of the trainer tests (``tests/trainer/trainer_cases.py``), each rank a spawned process tracked
like a single run (``trainer.dist.dist_runs``), and writes ``bench/results/dist_gloo.json``; ``python -m
bench.accuracy --from-json`` puts its table in docs/accuracy.md. The CI suite runs a few of these cases
(``tests/trainer/test_dist_runs.py``); this is the whole matrix.

    python -m bench.dist_accuracy              # 12 cases, about 3 minutes on 2 cores
    python -m bench.dist_accuracy --check      # and exit 1 when a rank's peak is off by more than 3 %
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as ``python bench/dist_accuracy.py``
    sys.path.insert(0, str(REPO))

from estimator import Plan, estimate  # noqa: E402

DIST_JSON = REPO / "bench" / "results" / "dist_gloo.json"
TOLERANCE = 0.03
SETUPS: list[tuple[str, str]] = [("ddp", "full_shard"), ("fsdp", "full_shard"), ("fsdp", "shard_grad_op")]


def matrix() -> list[Plan]:
    """Every case, grouped by rank count (one spawned group of ranks per count)."""
    from tests.trainer.trainer_cases import BATCH, LLAMA, SEQ

    return [
        Plan(config=LLAMA, batch_size=BATCH, seq_len=SEQ, device="cpu", method=method, sharding=sharding,  # type: ignore[arg-type]
             num_gpus=n, fsdp_strategy=strategy, dtype="float32" if method == "full" else "bfloat16",  # type: ignore[arg-type]
             lora_dropout=0.0, padding="none")
        for n in (2, 4) for sharding, strategy in SETUPS for method in ("lora", "full")
    ]  # fmt: skip


def case_id(p: Plan) -> str:
    setup = "ddp" if p.sharding == "ddp" else f"fsdp-{p.fsdp_strategy}"
    return f"{setup}/{p.method}/{p.num_gpus}"


def row(p: Plan, result: Mapping[str, Any], seconds: float) -> dict[str, Any]:
    """One case: the estimate's per-rank figures and every rank's measured peak and components."""
    mem = estimate(p).to_dict()["memory"]
    ranks = [
        {"rank": r["rank"], "peak_allocated": r["measured"]["peak_allocated"],
         "peak_phase": r["measured"]["peak_phase"], "components": r["measured"]["components"]}
        for r in result["per_rank"]
    ]  # fmt: skip
    peak = mem["per_rank"]["peak_allocated"]
    errors = [(peak - r["peak_allocated"]) / r["peak_allocated"] for r in ranks]
    return {"id": case_id(p), "plan": p.to_dict(), "estimated": {"peak_allocated": peak,
            "peak_phase": mem["per_rank"]["peak_phase"], "parts": mem["per_rank"]["parts"],
            "all_gpus_total": mem["per_rank"]["all_gpus_total"]},
            "ranks": ranks, "errors": errors, "seconds": round(seconds, 1)}  # fmt: skip


def run(log: Any = print) -> dict[str, Any]:
    from trainer.dist import dist_runs
    from trainer.run import versions

    plans = matrix()
    rows: list[dict[str, Any]] = []
    for n in (2, 4):
        group = [p for p in plans if p.num_gpus == n]
        began = time.monotonic()
        results = dist_runs(group)
        seconds = (time.monotonic() - began) / len(group)
        for p, r in zip(group, results, strict=True):
            rows.append(row(p, r, seconds))
            log(f"{rows[-1]['id']:32s} " + " ".join(f"{e:+.2%}" for e in rows[-1]["errors"]))
    return {"generated": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"), "versions": versions(),
            "tolerance": TOLERANCE, "cases": rows}  # fmt: skip


def section(data: Mapping[str, Any] | None) -> list[str]:
    """docs/accuracy.md's table of the gloo runs (nothing when they were never run)."""
    if data is None:
        return []
    cases: Sequence[Mapping[str, Any]] = data["cases"]
    worst = max(abs(e) for c in cases for e in c["errors"])
    lines = [
        "## Data-parallel runs: per-rank peaks (gloo, CPU)",
        "",
        "`python -m bench.dist_accuracy` (`bench/results/dist_gloo.json`, "
        f"{data.get('generated', '?')}) runs the same recipe under `torch.distributed` with the gloo backend, each "
        "rank a spawned process tracked like a single run (FSDP2's sharded `DTensor`s and its `resize_` of the "
        "gathered parameters included; DDP's gradient buckets counted), on the tiny Llama config of the trainer "
        "tests (batch 2 × 64 tokens per rank, LoRA in bf16, full in fp32). The estimate's `memory.per_rank."
        "peak_allocated` (per GPU, equal to `memory.peak_allocated`) against every rank's measured peak; KiB, "
        "errors signed. `tests/trainer/test_dist_runs.py` holds a few of these cases in CI.",
        "",
        "| case | ranks | est. per rank | measured per rank | error | est. peak phase |",
        "|---|---|---|---|---|---|",
    ]
    for c in cases:
        measured = sorted({r["peak_allocated"] for r in c["ranks"]})
        mark = "" if max(abs(e) for e in c["errors"]) <= data.get("tolerance", TOLERANCE) else " ✗"
        lines.append(
            f"| `{c['id']}` | {len(c['ranks'])} | {c['estimated']['peak_allocated'] / 1024:,.1f} | "
            + " / ".join(f"{m / 1024:,.1f}" for m in measured)
            + f" | {' / '.join(sorted({f'{e:+.2%}' for e in c['errors']}))}{mark} | {c['estimated']['peak_phase']} |"
        )
    lines += ["", f"{len(cases)} cases, largest per-rank error {worst:.2%} (tolerance {TOLERANCE:.0%}).", ""]
    under = [c for c in cases if min(c["errors"]) < -0.005]
    if under:
        lows = [min(c["errors"]) for c in under]
        setups = ", ".join(sorted({c["id"].split("/")[0] for c in under}))
        lines += [
            f"**Under-estimates of the figure, covered by its range**: {len(under)} cases ({setups}) are under the "
            f"measured per-rank peak by {max(lows):.2%} … {min(lows):.2%}. What a rank holds at its peak in the "
            "full fine-tune (live storages listed at the peak, 2 ranks): the first decoder layer's backward, with "
            "the lm_head's gradient still unsharded (the root group reduce-scatters only at the end of the "
            "backward) and the layer's flat all-gather output still held beside its copied-out parameters; the "
            "estimate counts the head's gradient sharded and no all-gather output there, while its single-GPU "
            "activation and layer-gradient terms come out larger than what the rank holds, so adding the two "
            "missing tensors alone would over-shoot by about 4 %: the backward's per-layer terms under FSDP2 need "
            "their own derivation. At 4 ranks "
            "one rank of the full fine-tune now and then peaks in the loss's backward instead, higher by exactly "
            "the root group's flat all-gather output (n × the root shard: embeddings, final norm and lm_head, "
            "1,049,088 B here; with h = b·s = 128 it looks like two b·s·V logits). Why (per-rank live sets at the "
            "peak, 14 runs × 4 ranks × 3 steps): `fully_shard(model, reshard_after_forward=True)`, as the trainer "
            "and accelerate call it, reshards the root after every forward, so its pre-backward hook "
            "all-gathers it again at the start of every backward (`FSDPParamGroup.pre_backward` → `unshard` → "
            "`foreach_all_gather`); FSDP2 drops that buffer right after its copy-out, but gloo's worker thread "
            "holds the collective's work, and with it the buffer, until it has finished its own bookkeeping "
            "(`ProcessGroupGloo::runLoop` resets `workInProgress_` after `execute`). When that thread is not "
            "scheduled at once the buffer is still alive while the loss's backward allocates its b·s·V tensors: "
            "in 2 of 56 rank-runs the rank's peak (+4.3 %); in 8 more it outlived the copy-out only briefly. "
            "`python -m bench.gloo_release` measures the effect alone: 2-28 % of synchronous all-gathers' outputs "
            "are freed after the caller dropped them, 0.1-5 ms later, depending on the load. It is timing, not "
            "a tensor the step keeps: the estimate does not count it, and the range's high edge covers it. DDP is "
            "within 0.1 %. Until the FSDP terms are derived, the high edge of an FSDP plan's per-rank range (what "
            "the fit, the GPU list and the rent view compare) carries 5 % of the whole peak (`FSDP_PER_RANK` in "
            "estimator/_runtime.py), and `tests/estimator/test_dist_results.py` holds every measured rank under it.",
            "",
        ]
    return lines


def load() -> dict[str, Any] | None:
    return json.loads(DIST_JSON.read_text()) if DIST_JSON.exists() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 when a rank is off by more than 3 %%")
    args = parser.parse_args(argv)
    data = run()
    DIST_JSON.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {DIST_JSON.relative_to(REPO)}")
    bad = [c["id"] for c in data["cases"] if max(abs(e) for e in c["errors"]) > TOLERANCE]
    if bad:
        print("outside 3 %: " + ", ".join(bad))
    return 1 if args.check and bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
