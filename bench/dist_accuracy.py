"""Per-rank peaks of real data-parallel runs (gloo on the CPU) against the estimate's per-rank figures.

Runs the matrix DDP, FSDP2 full shard and FSDP2 shard-grad-op x 2 and 4 ranks x LoRA and full fine-tuning on the
tiny Llama config of the trainer tests (``tests/trainer/trainer_cases.py``), two FSDP2 full fine-tunes of it with
4 layers, and DeepSpeed ZeRO-1/2/3 on 2 ranks (LoRA and bf16 full fine-tuning, on the tiny Llama and on a
115M-parameter one, each plan in a group of ranks of its own), each rank a spawned process tracked like a single
run (``trainer.dist.dist_runs``), and writes
``bench/results/dist_gloo.json``; ``python -m bench.accuracy --from-json`` puts its table in docs/accuracy.md. The CI
suite runs a few of these cases (``tests/trainer/test_dist_runs.py``); this is the whole matrix.

    python -m bench.dist_accuracy              # 35 cases, about 13 minutes on 2 cores
    python -m bench.dist_accuracy --check      # and exit 1 when a rank's peak is off by more than 3 %
    python -m bench.dist_accuracy --zero       # only the 18 ZeRO cases (8 with offload), merged into the saved results
    python -m bench.dist_accuracy --qlora      # only the 3 FSDP-QLoRA cases, merged likewise
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
    """Every case, grouped by rank count (one spawned group of ranks per count): the setups x LoRA and full, and
    two deeper FSDP2 full fine-tunes (4 layers: the layers between the first and the last hold both a prefetched
    all-gather and a pending reduce-scatter; shard-grad-op also without checkpointing)."""
    from tests.trainer.trainer_cases import BATCH, LLAMA, SEQ

    def plan(n: int, sharding: str, strategy: str, method: str, layers: int = 2, gc: bool = True) -> Plan:
        return Plan(config=LLAMA | {"num_hidden_layers": layers}, batch_size=BATCH, seq_len=SEQ, device="cpu",
                    method=method, sharding=sharding, num_gpus=n, fsdp_strategy=strategy,  # type: ignore[arg-type]
                    dtype="float32" if method == "full" else "bfloat16", lora_dropout=0.0, padding="none",
                    gradient_checkpointing=gc)  # fmt: skip

    deeper = [plan(2, "fsdp", "full_shard", "full", 4), plan(2, "fsdp", "shard_grad_op", "full", 4, gc=False)]
    return [
        one
        for n in (2, 4)
        for one in [plan(n, sh, st, m) for sh, st in SETUPS for m in ("lora", "full")] + (deeper if n == 2 else [])
    ] + fsdp_qlora_cases()


def fsdp_qlora_cases() -> list[Plan]:
    """FSDP-QLoRA as transformers and PEFT document it (``bnb_4bit_quant_storage`` bf16, so that FSDP2 shards the
    packed 4-bit weights like the bf16 ones): full shard and shard-grad-op on 2 ranks, and full shard at 4 layers."""
    from tests.trainer.trainer_cases import BATCH, LLAMA, SEQ

    def plan(strategy: str, layers: int) -> Plan:
        return Plan(config=LLAMA | {"num_hidden_layers": layers}, batch_size=BATCH, seq_len=SEQ, device="cpu",
                    method="qlora", sharding="fsdp", num_gpus=2, fsdp_strategy=strategy,  # type: ignore[arg-type]
                    dtype="bfloat16", quant_storage="bfloat16", lora_dropout=0.0, padding="none")  # fmt: skip

    return [plan("full_shard", 2), plan("shard_grad_op", 2), plan("full_shard", 4)]


MEDIUM: dict[str, Any] = {
    "model_type": "llama", "vocab_size": 32000, "hidden_size": 1024, "intermediate_size": 2816,
    "num_hidden_layers": 4, "num_attention_heads": 16, "num_key_value_heads": 4, "max_position_embeddings": 2048,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16",
}  # fmt: skip
"""A Llama of 115M parameters: large enough that DeepSpeed's 1-2 GB reduce buckets do not hide the rest."""


def zero_cases() -> list[Plan]:
    """DeepSpeed ZeRO-1/2/3 x LoRA and bf16 full fine-tuning on the tiny Llama (and ZeRO-2 full on 4 ranks), and
    ZeRO-2/3 full and ZeRO-2 LoRA on ``MEDIUM`` (batch 1 x 256 tokens), 2 ranks each."""
    from tests.trainer.trainer_cases import BATCH, LLAMA, SEQ

    def plan(sharding: str, method: str, config: dict[str, Any], batch: int, seq: int, n: int = 2,
             offload: str = "none") -> Plan:  # fmt: skip
        return Plan(config=config, batch_size=batch, seq_len=seq, device="cpu", method=method,  # type: ignore[arg-type]
                    sharding=sharding, num_gpus=n, dtype="bfloat16", lora_dropout=0.0,  # type: ignore[arg-type]
                    padding="none", offload=offload)  # type: ignore[arg-type]  # fmt: skip

    tiny = [plan(z, m, LLAMA, BATCH, SEQ) for z in ("zero1", "zero2", "zero3") for m in ("lora", "full")]
    tiny.append(plan("zero2", "full", LLAMA, BATCH, SEQ, 4))  # the whole gradients, not the rank's share
    medium = [plan(z, m, MEDIUM, 1, 256) for z, m in (("zero2", "full"), ("zero3", "full"), ("zero2", "lora"))]
    offload = [plan(z, m, LLAMA, BATCH, SEQ, offload=o)
               for z, m, o in (("zero1", "full", "optimizer"), ("zero2", "full", "optimizer"),
                               ("zero2", "lora", "optimizer"), ("zero3", "full", "optimizer"),
                               ("zero3", "lora", "optimizer"), ("zero3", "full", "params"))]  # fmt: skip
    offload += [plan("zero2", "full", MEDIUM, 1, 256, offload="optimizer"),
                plan("zero3", "full", MEDIUM, 1, 256, offload="params")]  # fmt: skip
    return tiny + medium + offload


def cpu_peak(memory: Mapping[str, Any]) -> int:
    """The estimate's per-rank peak as a CPU run holds it: on the CPU host and device are one memory, so the state
    offload moves to host RAM (``memory.host.offload``) is there beside the device's tensors."""
    return int(memory["per_rank"]["peak_allocated"]) + int(memory["host"]["offload"])


def case_id(p: Plan) -> str:
    if p.sharding.startswith("zero"):
        size = "/115M" if p.config and p.config.get("hidden_size") == MEDIUM["hidden_size"] else ""
        off = f"/offload-{p.offload}" if p.offload != "none" else ""
        return f"{p.sharding}/{p.method}/{p.num_gpus}{size}{off}"
    setup = "ddp" if p.sharding == "ddp" else f"fsdp-{p.fsdp_strategy}"
    if p.method == "qlora":
        setup += f"/storage-{p.quant_storage}"
    layers = p.config["num_hidden_layers"] if p.config else 2
    extra = (f"/{layers}-layers" if layers != 2 else "") + ("" if p.gradient_checkpointing else "/no-gc")
    return f"{setup}/{p.method}/{p.num_gpus}{extra}"


def row(p: Plan, result: Mapping[str, Any], seconds: float) -> dict[str, Any]:
    """One case: the estimate's per-rank figures and every rank's measured peak and components."""
    mem = estimate(p).to_dict()["memory"]
    ranks = [
        {"rank": r["rank"], "peak_allocated": r["measured"]["peak_allocated"],
         "peak_phase": r["measured"]["peak_phase"], "components": r["measured"]["components"]}
        for r in result["per_rank"]
    ]  # fmt: skip
    peak = cpu_peak(mem)
    errors = [(peak - r["peak_allocated"]) / r["peak_allocated"] for r in ranks]
    return {"id": case_id(p), "plan": p.to_dict(), "estimated": {"peak_allocated": peak,
            "peak_phase": mem["per_rank"]["peak_phase"], "parts": mem["per_rank"]["parts"],
            "all_gpus_total": mem["per_rank"]["all_gpus_total"]},
            "ranks": ranks, "errors": errors, "seconds": round(seconds, 1)}  # fmt: skip


def run(log: Any = print, zero_only: bool = False, qlora_only: bool = False) -> dict[str, Any]:
    """Every case (``zero_only``: the ZeRO cases, ``qlora_only``: the FSDP-QLoRA ones; the others kept from the
    saved JSON)."""
    from trainer.dist import dist_runs
    from trainer.run import versions

    plans = fsdp_qlora_cases() if qlora_only else matrix()
    rows: list[dict[str, Any]] = []
    saved = json.loads(DIST_JSON.read_text())["cases"] if DIST_JSON.exists() else []
    if zero_only:
        rows += [c for c in saved if not c["plan"]["sharding"].startswith("zero")]
    if qlora_only:
        rows += [c for c in saved if c["id"] not in {case_id(p) for p in plans}]
    for n in () if zero_only else (2, 4):
        group = [p for p in plans if p.num_gpus == n]
        if not group:
            continue
        began = time.monotonic()
        results = dist_runs(group)
        seconds = (time.monotonic() - began) / len(group)
        for p, r in zip(group, results, strict=True):
            rows.append(row(p, r, seconds))
            log(f"{rows[-1]['id']:32s} " + " ".join(f"{e:+.2%}" for e in rows[-1]["errors"]))
    for p in () if qlora_only else zero_cases():  # a group of its own each: an engine leaves buffers behind it
        began = time.monotonic()
        (r,) = dist_runs([p])
        rows.append(row(p, r, time.monotonic() - began))
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
    lines += zero_prose(cases)
    lines += fsdp_prose(cases)
    lines += qlora_prose([c for c in cases if c["plan"]["method"] == "qlora"])
    return lines


def qlora_prose(cases: Sequence[Mapping[str, Any]]) -> list[str]:
    """What the FSDP-QLoRA rows show."""
    return _cases_paragraph(
        cases,
        "**FSDP-QLoRA** (`bnb_4bit_quant_storage` bf16, as transformers and PEFT document it: the packed 4-bit "
        "weights are stored as bf16 elements, so FSDP2 shards and gathers them like the bf16 ones; bitsandbytes' "
        "CPU kernels under gloo)",
        "The gathered working set is the packed weights, their quantization state stays whole on every rank, and "
        "the LoRA terms are the single-GPU ones sharded.",
    )


def _cases_paragraph(cases: Sequence[Mapping[str, Any]], lead: str, body: str) -> list[str]:
    """One paragraph of docs/accuracy.md: ``lead``, each case's id and error, then ``body`` (none without cases)."""
    if not cases:
        return []
    rows = ", ".join(f"`{c['id']}` {_span(c['errors'])}" for c in cases)
    return [f"{lead}: {rows}. {body}", ""]


def zero_prose(cases: Sequence[Mapping[str, Any]]) -> list[str]:
    """What the ZeRO rows show (the tensors from DeepSpeed 0.19's ``stage_1_and_2.py`` and ``stage3.py``)."""
    zero = [c for c in cases if c["plan"]["sharding"].startswith("zero")]
    if not zero:
        return []
    tiny = [e for c in zero if "115M" not in c["id"] for e in c["errors"]]
    medium = [e for c in zero if "115M" in c["id"] for e in c["errors"]]
    return [
        f"**DeepSpeed ZeRO** (`zero_state` in estimator/_memory.py; the config `tuneplan export --format deepspeed` "
        f"writes, run by DeepSpeed's engine on its CPU accelerator over a gloo group): tiny Llama "
        f"{_span(tiny)}, the 115M-parameter one {_span(medium) if medium else '–'}. What the ranks hold, read from "
        "DeepSpeed's code and found in their live tensors: the engine casts the module to bf16 (LoRA's adapters "
        "included); the client AdamW steps one flat fp32 partition of the trained parameters per rank (the master "
        "copy, and its two states in fp32: 12 B an element over the ranks, where a bf16 AdamW alone keeps 4 B); "
        "stages 1 and 2 make two buckets of `reduce_bucket_size` (DeepSpeed's default 5e8 elements, 1 GB each in "
        "bf16) at the first trained gradient of each backward (`process_gradients` → `setup_buckets`), and the "
        "bf16 gradients autograd makes stay whole until the backward's end (every trained parameter's, not the "
        "rank's share: 1.12 MB on 2 ranks and on 4 of the tiny full fine-tune, `zero2/full/4`), all gone by the "
        "step, which "
        "reads an fp32 copy of the rank's gradient partition and runs AdamW's temporaries over it (three "
        "partitions in all on the CPU); stage 3 keeps one bucket and the flat bf16 gradient partition from its "
        "build, and keeps LoRA's small factors whole beside their partitions (`stage3_param_persistence_threshold`)."
        " The buckets outweigh the tiny model: the 115M rows are the check of everything else. Before "
        "these runs the estimate counted a bf16 AdamW's state sharded, fp32 adapters and at most one bucket capped "
        "at the model's size: -99 % on the tiny runs; for a full fine-tune of Llama-3.1-8B on 8 GPUs it said "
        "25.2 GB a GPU under ZeRO-2 and 12.0 GB under ZeRO-3, where this model says 46.2 GB and 26.0 GB.",
        "",
    ] + offload_prose([c for c in zero if "offload" in c["id"]])


def offload_prose(cases: Sequence[Mapping[str, Any]]) -> list[str]:
    """What the offload rows show: the device's tensors and the host offload together (one memory on the CPU)."""
    return _cases_paragraph(
        cases,
        "**ZeRO offload** (`zero_offload`, `zero_offload_params`; the estimate is the per-rank peak plus "
        "`memory.host.offload`, since on the CPU host and device are one memory)",
        "DeepSpeed's CPU Adam "
        "(built from the config's optimizer section) steps on the host: its two fp32 states and the fp32 master "
        "partition are exact, the step makes no temporaries. Stages 1/2 add the partition's fp32 gradient, a 16-bit "
        "copy-back buffer and a 16-bit buffer of the largest parameter on each side; stage 3 moves its 16-bit "
        "gradient partition to the host beside the fp32 gradient. Read from the code, not measurable here: which of "
        "these are pinned, and torch's rounding of each pinned block to a power of two. The 115M ZeRO-2 row's "
        "backward holds 40.9 MB more than without offload; the estimate bounds it by the largest parameter's fp32 "
        "slice (131 MB). The 115M ZeRO-3 row shows what ZeRO-3's reuse window does to a model under 1e9 elements: "
        "from the second step every parameter stays gathered, with as much again in all-gather buffers, through the "
        "forward and backward (the run without offload holds it too, under its optimizer-step peak): nothing is "
        "released within a step when every module's next use is nearer than `stage3_max_reuse_distance` "
        "(`__params_to_release`). The estimate holds that for such a model (`zero3_reused`: -13.79 % with two "
        "layers, before); for a larger model it keeps two decoder layers and the range's high edge carries the "
        "window (`zero3_window`).",
    )


def _span(errors: Sequence[float]) -> str:
    lo, hi = min(errors), max(errors)
    return f"{lo:+.2%}" if f"{lo:+.2%}" == f"{hi:+.2%}" else f"{lo:+.2%} … {hi:+.2%}"


def fsdp_prose(cases: Sequence[Mapping[str, Any]]) -> list[str]:
    """What the FSDP2 rows show and why (figures from the cases; the tensors from the live sets at the ranks'
    peaks and torch's ``_fully_shard``)."""
    fsdp = [c for c in cases if c["plan"]["sharding"] == "fsdp"]
    if not fsdp:
        return []
    # a rank whose peak is above its case's lowest by 1 % or more held a collective's output freed late
    rows = [(c, r, e) for c in fsdp for r, e in zip(c["ranks"], c["errors"], strict=True)]
    late = [e for c, r, e in rows if r["peak_allocated"] >= 1.01 * min(x["peak_allocated"] for x in c["ranks"])]
    timely = [(c, e) for c, r, e in rows if r["peak_allocated"] < 1.01 * min(x["peak_allocated"] for x in c["ranks"])]
    full = [e for c, e in timely if c["plan"]["method"] == "full"]
    lora = [e for c, e in timely if c["plan"]["method"] == "lora"]
    ddp = [e for c in cases if c["plan"]["sharding"] == "ddp" for e in c["errors"]]
    lines = [
        f"**FSDP2, derived per moment** (`Fsdp` in estimator/_sharding.py; `fsdp_layer_backward` and "
        f"`fsdp_copy_out` in estimator/_memory.py): full fine-tuning {_span(full)} on every rank"
        + (" but the late-freeing ones below" if late else "")
        + f", LoRA {_span(lora)}, DDP {_span(ddp)}. Each term is a tensor read from torch's `_fully_shard` "
        "(`_fsdp_param_group.py`, `_fsdp_collectives.py`) and found in the live storages of the ranks at their "
        "peaks. In a decoder layer's backward a rank holds its shards and optimizer state; the root group "
        "(embeddings, final norm, lm_head) gathered, its pre-backward hook having gathered it again at the loss; "
        "the lm_head's and the final norm's gradients unsharded (the root reduce-scatters only in its own "
        "`post_backward`, at the end of the backward); the layer's copied-out parameters and the next layer's flat "
        "all-gather output, prefetched (`_backward_prefetch`; none at the first layer); the reduce-scatter input of "
        "the layer reduced last, one layer's gradients flat (kept in `reduce_scatter_states` until the next "
        "group's `post_backward`; none at the last layer), beside every reduced gradient shard; and the layer's "
        "own backward, at the MLP's (the down projection's weight gradient and the intermediate's gradients over "
        "the layer's recomputed tensors: the full fine-tunes' peak) or at the layer's end (all its gradients, "
        "unsharded until its `post_backward`, its saved tensors freed). The single-GPU term of the layer's "
        "backward adds the layer's gradients over its saved tensors, which are not live together (about 4 % over "
        "here), and under checkpointing with an fp32 stream counts RMSNorm's fp32 copy of the recomputed layer's "
        "input beside the stored input, which it is (`to(float32)` returns it); both are counted as held under "
        "FSDP2 (single-GPU estimates are unchanged). The per-layer terms change linearly with the layer's index, "
        "so with three layers or more the second and the next-to-last layers, which hold both a prefetched "
        "all-gather and a pending reduce-scatter, can set the peak: the 4-layer cases. In the forward a layer's "
        "copy-out holds the group before it still gathered, flat (`wait_for_unshard` drops "
        "`comm_ctx.all_gather_state` first, but its walrus-bound `prev_all_gather_state` local keeps the output "
        "until the call returns): at the first layer the root's, the full_shard forward's peak. LoRA's peaks are "
        "at moments whose terms are the single-GPU ones: shard_grad_op's at the head's forward, where the last "
        "hidden state is still alive as a local of `LlamaForCausalLM.forward` while the loss runs (b·s·h, not "
        "counted), full_shard's in the last layer's recompute, at the MLP's LoRA forward (24 KiB above the "
        "layer's saved tensors and backward work here).",
        "",
    ]
    seen = f"{len(late)} rank{'s' if len(late) != 1 else ''} here, {_span(late)}" if late else "none in this run"
    lines += [
        f"**A collective's output freed late** ({seen}): now and then one rank of a full_shard run peaks in the "
        "loss's backward instead, higher by exactly the root group's flat all-gather output (n × the root shard: "
        "embeddings, final norm and lm_head, 1,049,088 B in the full fine-tunes; with h = b·s = 128 it looks like "
        "two b·s·V logits; such a rank of `fsdp-full_shard/full/4`, -4.15 % before the terms were derived, is -1.81 "
        "% against them, inside the range). A decoder layer's flat all-gather output, re-gathered in the layers' "
        "backward, is freed late the same way: in the 2-rank full fine-tune of `tests/trainer/test_dist_runs.py`, "
        "with and without FSDP2's `CPUOffloadPolicy`, a rank's backward peak is now and then higher by exactly one "
        "layer's fp32 parameters, 590,848 B over 7,992,284 B, or by part of it where the output outlives a "
        "moment other than the peak (+197,632 B, +328,704 B): 5 of 40 rank-runs with offload and 5 of 40 without "
        "(`python -m bench.gloo_release --fsdp 20`; another 20 runs, both plans in one group as there, gave 14 and "
        "8), both ranks of one run at once now and then, which is why the tests run such a plan once more and "
        "keep each rank's lower peak (`timely_runs`). "
        "Why (per-rank live sets at the peak, 14 runs × 4 ranks × 3 steps): `fully_shard(model, "
        "reshard_after_forward=True)`, as the trainer and accelerate call it, reshards the root after every "
        "forward, so its pre-backward hook all-gathers it again at the start of every backward "
        "(`FSDPParamGroup.pre_backward` → `unshard` → `foreach_all_gather`); FSDP2 drops that buffer right after "
        "its copy-out, but gloo's worker thread holds the collective's work, and with it the buffer, until it has "
        "finished its own bookkeeping (`ProcessGroupGloo::runLoop` resets `workInProgress_` after `execute`). When "
        "that thread is not scheduled at once the buffer is still alive while the loss's backward allocates its "
        "b·s·V tensors: in 2 of 56 rank-runs the rank's peak; in 8 more it outlived "
        "the copy-out only briefly. `python -m bench.gloo_release` measures the effect alone: 2-28 % of "
        "synchronous all-gathers' outputs are freed after the caller dropped them, 0.1-5 ms later, depending on "
        "the load. It is timing, not a tensor the step keeps: the estimate does not count it, and the range's high "
        "edge (what the fit, the GPU list and the rent view compare) carries exactly it, the loss's backward with "
        "the root's flat output beside it where that is above the peak (`Fsdp.late_root`, `late_free` in "
        "estimator/_memory.py), or the layers' backward with a layer's (`Fsdp.late_layer`), whichever is higher "
        "(shard_grad_op keeps the root and the layers gathered and re-gathers nothing), in place of the flat "
        "5 % of the whole peak it carried before the terms were derived. `tests/estimator/test_dist_results.py` "
        f"holds every measured rank under the high edge. Without the late frees every FSDP2 rank is within "
        f"{max(abs(e) for _, e in timely):.2%}.",
        "",
    ]
    return lines


def load() -> dict[str, Any] | None:
    return json.loads(DIST_JSON.read_text()) if DIST_JSON.exists() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 when a rank is off by more than 3 %%")
    parser.add_argument("--zero", action="store_true", help="run only the ZeRO cases, keeping the others' results")
    parser.add_argument("--qlora", action="store_true", help="run only the FSDP-QLoRA cases, keeping the others'")
    args = parser.parse_args(argv)
    data = run(zero_only=args.zero, qlora_only=args.qlora)
    DIST_JSON.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {DIST_JSON.relative_to(REPO)}")
    bad = [c["id"] for c in data["cases"] if max(abs(e) for e in c["errors"]) > TOLERANCE]
    if bad:
        print("outside 3 %: " + ", ".join(bad))
    return 1 if args.check and bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
