"""The accuracy report: the analytic estimate against real CPU runs, traced real-size runs and the H200 GPU matrix.

Runs every case of ``trainer.accuracy`` (``CPU_CASES`` as real CPU training runs, ``traced_cases()`` traced at real
size under FakeTensorMode) through ``trainer.accuracy.check_case``, writes the raw results to
``bench/results/accuracy_cpu.json`` and regenerates ``docs/accuracy.md`` from that JSON and from the measured GPU
matrix in ``bench/results/gpu_h200.json`` (each GPU case's plan + config estimated again with ``estimator.estimate``).

    python -m bench.accuracy                    # every case (a few minutes on 2 cores), JSON + doc
    python -m bench.accuracy --only qwen2       # rerun the cases whose id contains "qwen2", merged into the JSON
    python -m bench.accuracy --from-json        # regenerate the doc from the saved JSON only (about a second)
    python bench/accuracy.py --threads 2        # the same, as a script

Real and traced runs need the train extra (torch, transformers, peft, bitsandbytes); ``--from-json`` needs only the
estimator.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as ``python bench/accuracy.py``
    sys.path.insert(0, str(REPO))

from bench.dist_accuracy import load as load_dist  # noqa: E402
from bench.dist_accuracy import section as dist_section  # noqa: E402
from bench.gpu_check import chosen_backend  # noqa: E402
from bench.host_ram import load as load_host  # noqa: E402
from bench.host_ram import section as host_section  # noqa: E402
from estimator import (  # noqa: E402
    ALLOCATOR_CACHE_FLOOR,
    CUBLAS_WORKSPACE_BYTES,
    CUDA_CONTEXT_BYTES,
    CUDA_RUNTIME_BYTES,
    Plan,
    estimate,
)
from trainer.accuracy import (  # noqa: E402
    COMPARED,
    COMPONENT_SLACK,
    COMPONENT_TOLERANCE,
    CPU_CASES,
    PEAK_TOLERANCE,
    TRACED_VS_REAL,
    Case,
    check_case,
    traced_cases,
)

CPU_JSON = REPO / "bench" / "results" / "accuracy_cpu.json"
GPU_JSON = REPO / "bench" / "results" / "gpu_h200.json"
SETUPS_JSON = REPO / "bench" / "results" / "gpu_setups_h200.json"  # the setups matrix, once a GPU has run it
DOC = REPO / "docs" / "accuracy.md"

MiB = 1024 * 1024
GiB = 1024 * MiB

# What tests/estimator/test_gpu_results.py holds the estimate to on the measured GPU matrix.
GPU_TENSOR_TOLERANCE = 0.01
GPU_ALLOCATED_TOLERANCE = 0.015
GPU_TOTAL_TOLERANCE = 0.15

COMPONENT_LABELS = {
    "weights": "weights",
    "adapters": "adapters",
    "gradients": "grads",
    "optimizer": "optim",
    "reference": "ref",
    "activations+logits": "act+logits",
}


# ---------------------------------------------------------------------------------------------------- running


def _slim(report: Mapping[str, Any], seconds: float) -> dict[str, Any]:
    """One case's report without the bulky parts (the config, the warm-up step's breakdown)."""
    result = report["result"]
    plan = {k: v for k, v in result["plan"].items() if k != "config"}
    config = result.get("config") or {}
    measured = result["measured"]
    return {
        "id": report["id"],
        "mode": report["mode"],
        "case_plan": report["plan"],
        "plan": plan,
        "model_type": config.get("model_type"),
        "hidden_size": config.get("hidden_size", config.get("n_embd")),
        "comparison": report["comparison"],
        "measured": {
            k: measured.get(k) for k in ("peak_allocated", "peak_phase", "components", "phases") if k in measured
        },
        "params": result.get("params"),
        "oom": result.get("oom", False),
        "notes": result.get("notes", []),
        "versions": result.get("versions"),
        "seconds": round(seconds, 2),
    }


def _selected(only: str | None) -> list[tuple[Case, str]]:
    cases = [(c, "real") for c in CPU_CASES] + [(c, "traced") for c in traced_cases()]
    return [(c, m) for c, m in cases if only is None or only in c.id]


def run_cases(only: str | None = None, log: Any = print) -> list[dict[str, Any]]:
    """Run the selected cases one after the other (real CPU cases first, then the traced ones)."""
    out: list[dict[str, Any]] = []
    selected = _selected(only)
    for i, (case, mode) in enumerate(selected, 1):
        t0 = time.perf_counter()
        try:
            entry = _slim(check_case(case, mode), time.perf_counter() - t0)
        except Exception as exc:  # a broken case is recorded, the others still run
            entry = {
                "id": case.id,
                "mode": mode,
                "case_plan": case.plan,
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(limit=8),
                "seconds": round(time.perf_counter() - t0, 2),
            }
        out.append(entry)
        if "error" in entry:
            log(f"[{i}/{len(selected)}] {mode:6s} {case.id}: ERROR {entry['error']}")
        else:
            peak = entry["comparison"]["peak"]
            ok = peak["ok"] and all(v["ok"] for v in entry["comparison"]["components"].values())
            log(f"[{i}/{len(selected)}] {mode:6s} {case.id}: peak {peak['error']:+.3%} "
                f"{'ok' if ok else 'OUT OF TOLERANCE'} ({entry['seconds']:.1f} s)")  # fmt: skip
    return out


def merge(previous: Sequence[Mapping[str, Any]], fresh: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Replace ``previous`` entries by the ``fresh`` ones with the same (mode, id), in suite order."""
    by_key = {(e["mode"], e["id"]): dict(e) for e in previous}
    by_key.update({(e["mode"], e["id"]): dict(e) for e in fresh})
    order = [(m, c.id) for c, m in _selected(None)]
    known = [by_key.pop(k) for k in order if k in by_key]
    return known + list(by_key.values())


def save(
    cases: list[dict[str, Any]], path: Path = CPU_JSON, command: str = "python -m bench.accuracy"
) -> dict[str, Any]:
    versions = next((c["versions"] for c in cases if c.get("versions")), None)
    data = {
        "kind": "accuracy",
        "generated": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": command,
        "host": {"python": platform.python_version(), "machine": platform.machine(), "system": platform.system()},
        "versions": versions,
        "tolerances": {
            "peak": PEAK_TOLERANCE,
            "component": COMPONENT_TOLERANCE,
            "component_slack_bytes": COMPONENT_SLACK,
            "traced_vs_real": TRACED_VS_REAL,
        },
        "cases": cases,
    }
    for c in cases:  # the versions are the same for every case: keep them once
        if c.get("versions") == versions:
            c.pop("versions", None)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
    return data


# ---------------------------------------------------------------------------------------------------- GPU


def _term(mem: Mapping[str, Any], name: str) -> int:
    for t in mem["terms"]:
        if t["name"] == name:
            return int(t["bytes"])
    raise KeyError(f"the estimate has no term {name!r}")


def gpu_rows(gpu: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every measured GPU case beside the estimate of its plan + config (bytes and signed errors)."""
    rows: list[dict[str, Any]] = []
    for case in gpu["cases"]:
        result = case.get("result")
        if case.get("status") != "ok" or not result or result.get("oom"):
            rows.append({"name": case["name"], "status": case.get("status"), "oom": bool(result and result.get("oom"))})
            continue
        plan = Plan.from_dict(result["plan"] | {"config": result["config"]})
        est = estimate(plan).to_dict()
        mem = est["memory"]
        m = result["measured"]
        pairs = {
            "tensor": (_term(mem, "tensor_peak"), m["tracked_peak"]),
            "allocated": (mem["peak_allocated"], m["peak_allocated"]),
            "reserved": (mem["peak_reserved"], m["peak_reserved"]),
            "total": (mem["total"], m["driver_used"]),
        }
        row: dict[str, Any] = {"name": case["name"], "status": "ok", "plan": plan, "measured": m, "estimate": mem,
                               "vocab_size": est["model"]["architecture"]["vocab_size"]}  # fmt: skip
        for key, (e, mm) in pairs.items():
            row[key] = {"estimated": e, "measured": mm, "error": (e - mm) / mm}
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------------- the doc


def _gib(n: float) -> str:
    return f"{n / GiB:.3f}"


def _mib(n: float) -> str:
    return f"{n / MiB:.3f}"


def _pct(e: float | None) -> str:
    return "–" if e is None else f"{e * 100:+.2f} %"


def _tol(x: float) -> str:
    return f"{x * 100:g} %"


def _max_abs(errors: Iterable[float | None]) -> float:
    vals = [abs(e) for e in errors if e is not None]
    return max(vals) if vals else 0.0


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


SDP = "pytorch/pytorch `aten/src/ATen/native/transformers/cuda/sdp_utils.cpp` (stored snapshot, commit 001f694)"
HDR = "`torch/include/ATen/native/transformers/sdp_utils_cpp.h` (torch 2.13.0 wheel)"
TF = "transformers 5.24.0"
KERNEL_RULES: tuple[tuple[str, str, str], ...] = (
    ("transformers builds a bool (b, 1, s, s) mask only when a token is masked: an all-ones padding mask is "
     "skipped and SDPA runs with `is_causal`", "`padding: padded` with batch 1 or `none`: no mask; padded with "
     "batch > 1: a mask", f"{TF} `masking_utils.py` `_ignore_causal_mask_sdpa` 252-329 (`padding_mask.all()` at "
     "329), `sdpa_mask` 395-549 (the skip at 517)"),
    ("packed sequences (position ids that restart) always get a block-diagonal mask", "`padding: packed`: a mask, "
     "cos/sin per row", f"{TF} `masking_utils.py` `find_packed_sequence_indices` 735-764, `create_causal_mask` "
     "991-1001 (`allow_is_causal_skip = False`)"),
    ("grouped KV heads go to SDPA with `enable_gqa=True` only without a mask and with head dim ≤ 256 (CUDA, CPU); "
     "otherwise K/V are expanded to the query heads first (`repeat_kv`, a copy per layer)",
     "`repeat_kv`: K/V saved at a·d per layer; `enable_gqa` else",
     f"{TF} `integrations/sdpa_attention.py` `use_gqa_in_sdpa` 42-51, `repeat_kv` 19-28, the dispatch 118-127"),
    ("a backend without grouped-query support refuses K/V heads ≠ query heads", "memory-efficient with "
     "`enable_gqa`: refused", f"{HDR} `check_batch_size_and_num_heads_dense<supports_gqa>` 397-452 (the GQA "
     "branch 431-433), `check_grouped_query_attention` 357-395"),
    ("flash takes no attention mask", "padded/packed: no flash", f"{HDR} `check_for_attn_mask` 260-268; {SDP} "
     "`can_use_flash_attention` (its constraint list)"),
    ("flash: sm80-sm121, fp16/bf16, head dim ≤ 256, no training head dim in (192, 224] on sm86/89/120",
     "fp32 (QLoRA) or a T4/V100: no flash", f"{SDP} `check_flash_attention_hardware_support`, "
     "`check_dtypes_flash_attention` / `check_dtypes_low_precision`, `check_head_dim_size_flash`, "
     "`check_requires_grad_and_head_dim_gt192_constraints_on_sm86_89_or_120`"),
    ("memory-efficient: sm50-sm121, fp16/fp32 (bf16 from sm80), head dim a multiple of 8 (16-bit) or 4 (fp32 on "
     "sm80+), masks allowed, no grouped heads in torch 2.13 (`check_batch_size_and_num_heads_dense<false>`; "
     "the newer snapshot admits them)", "QLoRA padded: memory-efficient (O(s)); unpadded: not",
     f"{SDP} `can_use_mem_efficient_attention`, `check_mem_efficient_hardware_support`, "
     "`check_head_dim_size_mem_efficient`, `minimum_gemm_alignment`; the H200 runs (torch 2.11, QLoRA on grouped "
     "heads took the math path)"),
    ("cuDNN: sm80-sm121, fp16/bf16, head dim ≤ 128 and a multiple of 8, masks and grouped heads allowed",
     "16-bit on sm90 with or without a mask", f"{SDP} `can_use_cudnn_attention`, `check_cudnn_tensor_shapes`, "
     "`check_cudnn_hardware_support`"),
    ("priority: cuDNN first on sm90/sm100 when the bundled cuDNN prefers it, else flash, memory-efficient, math; "
     "the first that passes runs (cuDNN and flash keep the same tensors)", "`auto`",
     f"{SDP} `check_prefer_cudnn_attention`, `priority_order`, `select_sdp_backend`"),
    ("math runs anything; it keeps fp32 q, k, v and the b·a·s² probabilities (16-bit inputs upcast)",
     "O(s²) per layer", "measured: the H200 runs (fp32) and the CPU grid (`llama-lora-math-nogc`, bf16)"),
    ("`sdpa_kernel([backend])` enables only that backend: if it cannot run the call, torch raises",
     "a pinned backend that cannot run: `PlanError` saying why", f"{SDP} `select_sdp_backend` (the error branch); "
     "`torch/nn/attention/__init__.py` `sdpa_kernel`"),
    ("CPU: the CPU flash kernel for every float dtype, masks and grouped heads; it keeps the mask converted to the "
     "q/k/v dtype per layer", "`device: cpu`", "measured on the CPU grid (padded and packed cases, exact)"),
)  # fmt: skip


def _kernel_rules() -> list[str]:
    lines = [
        "## The attention kernel: selection rules and their sources",
        "",
        "The estimate follows the attention kernel the step actually runs (`estimator/_kernels.py`, "
        "`memory.attention` in the contract): transformers' dispatch first, then torch's SDPA backend selection "
        "for the plan's GPU architecture. Each rule is tested (`tests/estimator/test_kernels.py`). Line numbers are "
        "those of the installed torch 2.13.0 and transformers 5.24.0; torch's CUDA selection file ships compiled, "
        "so it is cited by function at the stored snapshot it was read in.",
        "",
    ]
    lines += _table(["rule", "what it decides here", "source"], KERNEL_RULES)
    return lines + [""]


def _plan_cells(p: Mapping[str, Any]) -> list[str]:
    return [
        str(p.get("method")),
        "on" if p.get("gradient_checkpointing") else "off",
        str(p.get("attn_implementation")),
        f"{p.get('lora_dropout', 0):g}" if p.get("method") != "full" else "–",
        f"{p.get('batch_size')}×{p.get('seq_len')}",
        _setup(p),
    ]


def _setup(p: Mapping[str, Any]) -> str:
    """The setup around the model, where it is not the default of the grid (unpadded, Trainer loop, standard loss,
    torch's SDPA choice)."""
    parts = [p.get("padding", "none"), p.get("training_loop", "trainer"), p.get("loss", "standard")]
    parts = [x for x in parts if x not in ("none", "trainer", "standard")]
    if p.get("sdpa_backend", "auto") != "auto":
        parts.append(f"sdpa {p['sdpa_backend']}")
    if p.get("objective", "sft") != "sft":
        parts.append(f"{p['objective']} (TRL)")
    return ", ".join(parts) or "–"


def _tensor_peak_error(c: Mapping[str, Any]) -> str:
    """A traced case's error against the estimate's ``tensor_peak`` term (no cuBLAS workspace), from the estimator."""
    case = next((t for t in traced_cases() if t.id == c["id"]), None)
    if case is None:
        return "–"
    mem = estimate(case.make_plan()).to_dict()["memory"]
    measured = c["comparison"]["peak"]["measured"]
    e = _term(mem, "tensor_peak")
    return f"{_gib(e)} ({_pct((e - measured) / measured)})"


def _case_table(cases: Sequence[Mapping[str, Any]], fmt: Any, unit: str, tensor_peak: bool = False) -> list[str]:
    header = ["case", "method", "GC", "attn", "dropout", "batch×seq", "setup", f"est. peak ({unit})",
              f"measured ({unit})",
              "error", "phase est. / meas."] + [f"{COMPONENT_LABELS[c]} err" for c in COMPARED]  # fmt: skip
    if tensor_peak:
        header.insert(10, "est. tensor_peak (err)")
    rows: list[list[str]] = []
    for c in cases:
        if "error" in c:
            rows.append([f"`{c['id']}`", "**failed**", c["error"].replace("|", "\\|")[:120]] + [""] * (len(header) - 3))
            continue
        cmp = c["comparison"]
        peak = cmp["peak"]
        comps = []
        for name in COMPARED:
            v = cmp["components"].get(name, {"measured": 0, "estimated": 0, "error": None})  # earlier runs: no "ref"
            if not v["measured"] and not v["estimated"]:
                comps.append("0 = 0")
            elif v["error"] is None:
                comps.append(f"{fmt(v['estimated'])} vs 0")
            else:
                comps.append(_pct(v["error"]) + ("" if v["ok"] else " ✗"))
        row = [f"`{c['id']}`", *_plan_cells(c["plan"]), fmt(peak["estimated"]), fmt(peak["measured"]),
               _pct(peak["error"]) + ("" if peak["ok"] else " ✗"),
               f"{cmp['estimated_phase']} / {cmp['measured_phase']}", *comps]  # fmt: skip
        if tensor_peak:
            row.insert(10, _tensor_peak_error(c))
        rows.append(row)
    return _table(header, rows)


def _summary(cases: Sequence[Mapping[str, Any]]) -> str:
    good = [c for c in cases if "error" not in c]
    peak = _max_abs(c["comparison"]["peak"]["error"] for c in good)
    comp = _max_abs(
        v["error"] for c in good for v in c["comparison"]["components"].values() if v["measured"] >= COMPONENT_SLACK
    )
    ok = sum(
        1
        for c in good
        if c["comparison"]["peak"]["ok"] and all(v["ok"] for v in c["comparison"]["components"].values())
    )
    failed = len(cases) - len(good)
    return (
        f"**Summary: {ok}/{len(cases)} cases within tolerance; max |peak error| {peak * 100:.2f} %; max |component "
        f"error| {comp * 100:.2f} % (components of at least 1 MiB)" + (f"; {failed} failed to run" if failed else "")
        + ".**"
    )  # fmt: skip


def _gpu_section(gpu: Mapping[str, Any]) -> list[str]:
    rows = gpu_rows(gpu)
    ok = [r for r in rows if r["status"] == "ok"]
    v = gpu.get("versions", {})
    card = gpu.get("card", {})
    lines = [
        "## GPU: the H200 matrix",
        "",
        f"Measured with `bench/gpu_check.py` on **{card.get('nvidia_smi', v.get('device_name'))}** (driver "
        f"{v.get('driver')}), {gpu.get('started', '?')}: torch {v.get('torch')} (CUDA {v.get('cuda')}), transformers "
        f"{v.get('transformers')}, peft {v.get('peft')}, bitsandbytes {v.get('bitsandbytes')}, accelerate "
        f"{v.get('accelerate')}, Python {v.get('python')}; allocator settings "
        f"{', '.join(f'{k}={val}' for k, val in (gpu.get('env') or {}).items()) or 'default'}. "
        f"{len(ok)}/{len(rows)} cases ran ({gpu.get('elapsed_s', 0):.0f} s). Batch 1, r=16, alpha 32, all-linear, "
        "dropout 0.05, AdamW (torch), SDPA, bf16; nf4 + double quant for QLoRA.",
        "",
        "Each case's `plan` and `config` from the file are estimated again with `estimator.estimate` when this page is "
        "generated, so the table shows the estimator as it is now. GiB, signed error = (estimate − measured) / "
        "measured.",
        "",
    ]
    header = ["case", "tracked", "est. tensor_peak", "err", "max_memory_allocated", "est. peak_allocated", "err",
              "reserved", "est. peak_reserved", "err", "driver used", "est. total", "err"]  # fmt: skip
    body: list[list[str]] = []
    for r in rows:
        if r["status"] != "ok":
            body.append([f"`{r['name']}`", "OOM" if r["oom"] else str(r["status"])] + [""] * (len(header) - 2))
            continue
        cells = [f"`{r['name']}`"]
        for key in ("tensor", "allocated", "reserved", "total"):
            cells += [_gib(r[key]["measured"]), _gib(r[key]["estimated"]), _pct(r[key]["error"])]
        body.append(cells)
    lines += _table(header, body)
    maxes = {k: _max_abs(r[k]["error"] for r in ok) for k in ("tensor", "allocated", "reserved", "total")}
    spans = {k: (min(r[k]["error"] for r in ok), max(r[k]["error"] for r in ok)) for k in maxes} if ok else {}
    lines += [
        "",
        f"**Summary: {len(ok)} cases; max |error| tensor peak {maxes['tensor'] * 100:.2f} %, "
        f"max_memory_allocated {maxes['allocated'] * 100:.2f} %, reserved {maxes['reserved'] * 100:.2f} % "
        f"({_pct(spans['reserved'][0])} … {_pct(spans['reserved'][1])}), driver-used {maxes['total'] * 100:.2f} % "
        f"({_pct(spans['total'][0])} … {_pct(spans['total'][1])}).** "
        f"`tests/estimator/test_gpu_results.py` holds every case to {_tol(GPU_TENSOR_TOLERANCE)} (tensor peak), "
        f"{_tol(GPU_ALLOCATED_TOLERANCE)} (allocated) and {_tol(GPU_TOTAL_TOLERANCE)} (total vs driver-used).",
        "",
    ]
    lines += _calibration(ok)
    return lines


def _span(values: Sequence[float], fmt: str = "{:.0f}") -> str:
    lo, hi = min(values), max(values)
    return fmt.format(lo) if fmt.format(lo) == fmt.format(hi) else f"{fmt.format(lo)}–{fmt.format(hi)}"


def _calibration(ok: Sequence[Mapping[str, Any]]) -> list[str]:
    if not ok:
        return []
    ms = [r["measured"] for r in ok]
    context = [m["context"] / MiB for m in ms]
    runtime = [(m["driver_used"] - m["peak_reserved"]) / MiB for m in ms]
    workspace = [(m["peak_allocated"] - m["tracked_peak"]) / MiB for m in ms]
    cache = [(m["peak_reserved"] - m["peak_allocated"]) / MiB for m in ms]
    ratio_long = [
        (r["measured"]["peak_reserved"] - r["measured"]["peak_allocated"])
        / (4 * r["plan"].batch_size * r["plan"].seq_len * r["vocab_size"])
        for r in ok
        if r["plan"].seq_len >= 2048
    ]
    cache_short = [c for c, r in zip(cache, ok, strict=True) if r["plan"].seq_len < 2048]
    by_method = ", ".join(
        f"{method} {_span([x for x, r in zip(runtime, ok, strict=True) if r['plan'].method == method])}"
        for method in sorted({r["plan"].method for r in ok})
    )
    n_ws = sum(1 for w in workspace if abs(w - 64) < 1.5)
    ctx = CUDA_CONTEXT_BYTES // MiB
    return [
        "### What was calibrated on the GPU",
        "",
        "The live-tensor model was built on the CPU and was not fitted to these runs. The four GPU-only constants "
        "of the GPU catalog's sm90 entry (`estimator/data/gpus.json`, `architectures`; exported as the names below) "
        "were read off them; other architectures have their own entries (docs/architecture.md), and a verify run "
        "on any card calibrates that card's (`app/jobs/calibration.py`):",
        "",
        "| constant | value | measured source |",
        "|---|---|---|",
        f"| `CUDA_CONTEXT_BYTES` | {ctx} MiB | total − free from `mem_get_info()` before anything is loaded: "
        f"{_span(context)} MiB in every case |",
        f"| `CUDA_RUNTIME_BYTES` | {CUDA_RUNTIME_BYTES // MiB} MiB | driver-used − peak reserved = "
        f"{_span(runtime)} MiB ({by_method}), of which {ctx} MiB is the context; "
        f"the rest ({_span([x - ctx for x in runtime])} MiB) is kernels and library handles loaded during the "
        "first step, outside torch's allocator |",
        f"| `CUBLAS_WORKSPACE_BYTES` | {CUBLAS_WORKSPACE_BYTES // MiB} MiB | max_memory_allocated − tracked peak "
        f"= {_span(workspace, '{:.1f}')} MiB; {n_ws}/{len(workspace)} cases within 1.5 MiB of 64 MiB (the cuBLAS / "
        "cuBLASLt workspaces, inside torch's allocator but invisible to a tensor tracker); the larger gaps are "
        "other in-kernel scratch |",
        f"| `ALLOCATOR_CACHE_FLOOR` | {ALLOCATOR_CACHE_FLOOR // MiB} MiB | peak reserved − max_memory_allocated = "
        f"{_span(cache)} MiB: at 2048 tokens {_span(ratio_long, '{:.2f}')} × one fp32 logits tensor (4·b·s·V), at "
        f"512 tokens {_span(cache_short)} MiB, so the estimate adds max(4·b·s·V, "
        f"{ALLOCATOR_CACHE_FLOOR // MiB} MiB) |",
        "",
        "So `peak_allocated` = tensor peak + cuBLAS workspace, `peak_reserved` = peak_allocated + "
        "max(4·b·s·V, 512 MiB), and `total` = peak_reserved + context + runtime (+ paged optimizer state).",
        "",
    ]


def _find(rows: Sequence[Mapping[str, Any]], name: str) -> Mapping[str, Any] | None:
    return next((r for r in rows if r.get("name") == name and r.get("status") == "ok"), None)


def render(cpu: Mapping[str, Any], gpu: Mapping[str, Any] | None) -> str:
    """docs/accuracy.md from the CPU/traced results and the GPU matrix."""
    cases = cpu["cases"]
    real = [c for c in cases if c["mode"] == "real"]
    traced = [c for c in cases if c["mode"] == "traced"]
    v = cpu.get("versions") or {}
    tol = cpu.get("tolerances", {})
    lines = [
        "# Accuracy: the estimate against measured runs",
        "",
        "*Generated by `python -m bench.accuracy` from `bench/results/accuracy_cpu.json` "
        f"({cpu.get('generated', '?')}) and `bench/results/gpu_h200.json`. Do not edit by hand; "
        "`python -m bench.accuracy --from-json` regenerates it from the saved results in about a second.*",
        "",
        "## What is compared, and why",
        "",
        "The estimator's core is the **live-tensor peak**: the largest sum of bytes held by live tensors during one "
        "steady-state training step (weights, adapters, gradients, optimizer state, activations, logits). That is "
        "what a tensor tracker measures exactly (`trainer.tracker`: every storage counted once, from allocation to "
        "free), on the CPU and on CUDA alike, so it is held tightest. Each further figure adds one thing the tracker "
        "cannot see, and is compared on the GPU only:",
        "",
        "| figure | measured as | adds to the live-tensor peak |",
        "|---|---|---|",
        "| tensor peak | the tracker's peak (`tracked_peak` on CUDA, 512-B rounded) | — |",
        "| allocated | `torch.cuda.max_memory_allocated()` | the cuBLAS workspace (and other in-kernel scratch) |",
        "| reserved | `torch.cuda.max_memory_reserved()` | the caching allocator's cache of freed blocks |",
        "| total | driver-used = total − free (`mem_get_info`, what nvidia-smi shows) | the CUDA context and "
        "runtime (kernels, library handles) |",
        "",
        "On the CPU the estimate's `peak_allocated` is the tensor peak itself (no workspace, no cache). Components "
        "are compared at the moment of the peak; activations and logits together, since the loss's backward "
        "temporaries cannot be told apart from layer activations by a tracker.",
        "",
        "## Tolerances",
        "",
        "- CPU real runs and traced real-size runs: the peak within "
        f"**{_tol(tol.get('peak', PEAK_TOLERANCE))}** of the measured live-tensor peak in every case; every "
        "component within "
        f"**{_tol(tol.get('component', COMPONENT_TOLERANCE))} or "
        f"{tol.get('component_slack_bytes', COMPONENT_SLACK) // MiB} MiB** (`trainer/accuracy.py`, asserted by "
        "`tests/trainer/test_accuracy.py`, except the few cases of `BENCH_ONLY_REAL` and `BENCH_ONLY_TRACED` that "
        "repeat a family and method the suite holds and are run here only); a traced run equals the real CPU run "
        "within "
        f"{_tol(tol.get('traced_vs_real', TRACED_VS_REAL))} on the tiny configs.",
        f"- GPU matrix: tensor peak within **{_tol(GPU_TENSOR_TOLERANCE)}** of `tracked_peak`, `peak_allocated` "
        f"within **{_tol(GPU_ALLOCATED_TOLERANCE)}** of `max_memory_allocated`, `total` within "
        f"**{_tol(GPU_TOTAL_TOLERANCE)}** of driver-used (`tests/estimator/test_gpu_results.py`, pure Python, "
        "in every CI run). Reserved is reported, "
        "not asserted.",
        "",
        "A ✗ marks a figure outside its tolerance. `0 = 0`: the component is empty in both (for example no gradient "
        "exists yet at a forward-time peak).",
        "",
        "## CPU: real training runs on tiny configs",
        "",
        "Each case builds a tiny model (hidden 256, 3 layers, 4 heads / 2 KV heads, vocabulary 2048 unless its config "
        "says otherwise; random weights), runs a warm-up and one measured training step on the CPU under the tracker, "
        "and compares its exact live-tensor peak with the estimate (`device: cpu`). MiB; errors are signed, (estimate "
        "− measured) / measured.",
        "",
        f"Run: {v.get('device_name') or cpu.get('host', {}).get('machine')}, Python {v.get('python')}, torch "
        f"{v.get('torch')}, transformers {v.get('transformers')}, peft {v.get('peft')}, bitsandbytes "
        f"{v.get('bitsandbytes')}, accelerate {v.get('accelerate')}; {len(real)} cases in "
        f"{sum(c.get('seconds', 0) for c in real):.0f} s.",
        "",
    ]
    lines += _case_table(real, _mib, "MiB")
    lines += ["", _summary(real), ""]
    lines += _kernel_rules()
    lines += [
        "## Traced: real sizes under FakeTensorMode",
        "",
        "The same training step at real size, run on fake tensors (`trainer.traced`: nothing is allocated, the "
        "tracker sees every tensor's size), with `device: cuda` plans (512-byte rounding, foreach AdamW), and "
        "CUDA's kernels where they allocate differently from the CPU's (`trainer.traced.cuda_kernels`: bool "
        "dropout masks; each SDPA call as torch's CUDA selection takes it, `estimator.cuda_sdpa_backend`: SDPA's "
        "math path for fp32 attention with grouped KV heads, CUDA's memory-efficient kernel where q/k and v differ "
        "in head dim, as in DeepSeek's latent attention, and for a vision tower's fp32 attention beside a QLoRA "
        "decoder's math path) — traced so, the GPU matrix's "
        "tensor peaks are reproduced to within 16 bytes (`tests/trainer/test_traced_vs_gpu.py`). Batch 1, "
        "r=16 all-linear, dropout 0, GC unless named. GiB.",
        "",
        "Objectives (`dpo (TRL)`, `grpo (TRL)`) trace TRL's own trainers as the real CPU runs drive them "
        "(`trainer.objectives`: the collator's batch, `compute_loss`, GRPO's `_prepare_inputs` with transformers' "
        "`generate`). Two things fake tensors cannot answer are stood in for (`trainer.traced`): a read of a "
        "tensor's value (the trainers' logged metrics, `if total_tokens > 0`) answers 1 and a boolean-mask "
        "selection selects every element (`StandInValues`), and GRPO's decoding loop stops after "
        "`max_completion_length` tokens, as the real run's does (`generation_to_length`). On the tiny configs the "
        "trace equals the real CPU run (DPO QLoRA to the byte, GRPO LoRA within 4 bytes). Their plans are "
        "`device: cpu`: the fused log-prob head traces its CPU fallback (CUDA's Triton kernel is not traced).",
        "",
        "Vision-language models read values from their batch: Qwen-VL its patch grids, LLaVA-NeXT and Pixtral the "
        "images' sizes (which tiles an image is cut into, how many patches each image keeps), Idefics3 and SmolVLM "
        "the pixels (which images are padding). A stood-in 1 there would shape the step wrongly, so those entries "
        "stay real through the trace (`trainer.traced.real_inputs`, `RealIndex`). A trainable parameter the step "
        "never reaches (LLaVA's last tower layer, under feature layer -2) gets no gradient and no AdamW state; the "
        "trace drops the state it made up front for it and traces the step again. On the tiny configs the trace of "
        "every vision family equals its real CPU run to the byte (`TRACED_VS_REAL_CASES` in "
        "`tests/trainer/test_accuracy.py`); LLaVA-NeXT with LlavaNextConfig's CLIP ViT-L/14-336 tower, a tiny text "
        "model and one 672² image (LoRA, 4 tiles and the base image), traced: 1,098,757,868 bytes, the real CPU "
        "run's figure (before, it traced 3 tiles of a 1 × 1 image: 944,606,596).",
        "",
        "Repeat a case: `python -m bench.accuracy --only <case>` (merged into the saved JSON, the page regenerated).",
        "",
        "`est. peak` is what `trainer.accuracy.check_case` compares: the estimate's live-tensor term "
        "(`tensor_peak`, without the 64 MiB cuBLAS workspace that a trace cannot see); `est. tensor_peak` is the "
        "same term recomputed from the estimator when this page is generated.",
        "",
    ]
    lines += _case_table(traced, _gib, "GiB", tensor_peak=True)
    lines += ["", _summary(traced), ""]
    if gpu is not None:
        lines += _gpu_section(gpu)
        lines += _findings(gpu_rows(gpu))
    lines += _setups_section(_load_setups())
    lines += dist_section(load_dist())
    lines += host_section(load_host())
    lines += _gaps(real, traced, gpu_rows(gpu) if gpu is not None else [])
    lines += _reproduce()
    return "\n".join(lines).rstrip() + "\n"


def _findings(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    big = _find(rows, "llama-3.1-8b/qlora/nogc/s2048")
    lora = _find(rows, "llama-3.1-8b/lora/nogc/s2048")
    measured = f"**{big['measured']['tracked_peak'] / GiB:.1f} GiB**" if big else "54 GiB"
    extra = ""
    if big and lora:
        extra = (
            f" (the bf16 LoRA run of the same model and length, whose SDPA takes a fused kernel, peaks at "
            f"{lora['measured']['tracked_peak'] / GiB:.1f} GiB)"
        )
    return [
        "### Finding: QLoRA attention on CUDA takes SDPA's math path",
        "",
        "`prepare_model_for_kbit_training` upcasts every non-4-bit parameter to fp32, so in QLoRA the embeddings, the "
        "residual stream and q/k/v are fp32. On CUDA, `scaled_dot_product_attention` then has no fused kernel for "
        "models with grouped KV heads (GQA): flash attention needs 16-bit inputs, and the memory-efficient kernel "
        "takes no GQA (`enable_gqa`). It falls back to the math path, which materializes and saves the fp32 "
        "attention probabilities, **b·a·s² fp32 per layer** (plus scaled q and repeated k/v), where a fused kernel "
        "saves only a b·a·s log-sum-exp. With gradient checkpointing only one layer's worth is live; without it "
        f"every layer keeps its own: Llama-3.1-8B QLoRA without GC at 2048 tokens measured {measured}{extra}, "
        "against the 44.6 GiB a CPU trace of the same plan predicts (docs/trainer.md). The estimator models the "
        "fallback (`sdpa_math`: CUDA, SDPA, fp32 stream, GQA) and says so in its notes; gradient checkpointing or "
        "`flash_attention_2` avoid most of it. The math path saves no output of its own: its result comes out in "
        "(b, heads, s, d), transformers copies it to (b, s, heads, d), and o_proj keeps that copy where its LoRA "
        "has no dropout (the adapter saves its input itself), one more b·s·h fp32 per layer that a fused kernel's "
        "saved output stands for. The H200 matrix ran with dropout 0.05, which hides it; the CPU grid found it "
        "(`llama-qlora-math-gc` -1.76 % before), and at real size without dropout it was -1.36 % "
        "(`llama-3.2-1b-qlora-nogc-s512`, traced: now +0.09 %; Llama-3.1-8B QLoRA without GC at 2,048 tokens, "
        "1.07 GB more in the estimate).",
        "",
    ]


def _units(c: Mapping[str, Any], width: int = 4) -> float | None:
    """A case's peak error in units of one b·s·h tensor of ``width`` bytes per element."""
    h = c.get("hidden_size")
    if not h:
        return None
    p = c["plan"]
    peak = c["comparison"]["peak"]
    return float((peak["estimated"] - peak["measured"]) / (width * p["batch_size"] * p["seq_len"] * h))


def _traced_on_cpu_kernel(c: Mapping[str, Any]) -> float | None:
    """The estimate of a traced case with the attention kernel the trace runs (the CPU's), as a signed error."""
    case = next((t for t in traced_cases() if t.id == c["id"]), None)
    if case is None:
        return None
    est = estimate(case.make_plan().replace(device="cpu")).to_dict()["memory"]["peak_allocated"]
    measured = c["comparison"]["peak"]["measured"]
    return float((est - measured) / measured)


def _gaps(
    real: Sequence[Mapping[str, Any]], traced: Sequence[Mapping[str, Any]], gpu: Sequence[Mapping[str, Any]]
) -> list[str]:
    good = [c for c in real if "error" not in c]
    lines = ["## Known gaps", ""]
    nogc = [
        c for c in good if c["plan"].get("method") in ("lora", "qlora") and not c["plan"].get("gradient_checkpointing")
    ]
    if nogc:
        q = [u for c in nogc if c["plan"]["method"] == "qlora" and (u := _units(c, 4)) is not None]
        lo = [u for c in nogc if c["plan"]["method"] == "lora" and (u := _units(c, 2)) is not None]
        errs = [c["comparison"]["peak"]["error"] for c in nogc]
        with_dropout = sum(1 for c in nogc if c["plan"].get("lora_dropout", 0) > 0)
        lines.append(
            f"- **LoRA / QLoRA without gradient checkpointing** (CPU, {len(nogc)} cases, {with_dropout} with dropout): "
            f"the estimate is conservative by {_pct(min(errs))} … {_pct(max(errs))}, up to about one b·s·h tensor of "
            "the residual stream in all (not per layer): "
            + (f"{_span(q, '{:.2f}')} × b·s·h fp32 in QLoRA" if q else "")
            + (", " if q and lo else "")
            + (f"{_span(lo, '{:.2f}')} × b·s·h bf16 in LoRA" if lo else "")
            + ". At the loss-backward peak the real step holds one stream-sized tensor fewer than the estimate "
            "counts; dropout makes no difference."
        )
    under = sorted(
        (c for c in good if c["comparison"]["peak"]["error"] < -0.01), key=lambda c: c["comparison"]["peak"]["error"]
    )
    if under:
        parts = []
        for c in under:
            u = _units(c, 4)
            parts.append(
                f"`{c['id']}` {_pct(c['comparison']['peak']['error'])}"
                + (f" ({u:+.2f} × b·s·h fp32)" if u is not None else "")
            )
        lines.append(
            "- **Under-estimates beyond 1 %** (CPU, within the 3 % tolerance, but on the unsafe side): "
            + ", ".join(parts)
            + ". Tiny configs make one stream-sized tensor 1–2 % of the peak; at real sizes it is far less."
        )
    bad_traced = [c for c in traced if "error" not in c and not c["comparison"]["peak"]["ok"]]
    for c in bad_traced:
        cpu_kernel = _traced_on_cpu_kernel(c)
        lines.append(
            f"- **`{c['id']}` (traced) is outside the tolerance: {_pct(c['comparison']['peak']['error'])}.** The plan "
            "says cuda, so the estimate includes the CUDA SDPA math fallback (the finding above: one layer's "
            "b·a·s² fp32 probabilities during the checkpointed layer's recompute), while the trace runs the CPU's "
            "SDPA kernel, which has no such fallback; with a small vocabulary the layer backward, not the loss, is "
            "the peak, so it shows"
            + (
                f". Estimated with the CPU's kernel (`device: cpu`) the error is {_pct(cpu_kernel)}"
                if cpu_kernel is not None
                else ""
            )
            + ". The traced comparison cannot tell which is right on a GPU; a CUDA run of this plan can."
        )
    ok = [r for r in gpu if r.get("status") == "ok"]
    if ok:
        res = [r["reserved"]["error"] for r in ok]
        tot = [r["total"]["error"] for r in ok]
        alloc = [r["allocated"]["error"] for r in ok]
        gap = max(ok, key=lambda r: r["measured"]["peak_allocated"] - r["measured"]["tracked_peak"])
        scratch = (gap["measured"]["peak_allocated"] - gap["measured"]["tracked_peak"]) / MiB
        lines += [
            "- **Reserved and total** carry the caching allocator's behaviour, which depends on the order and sizes "
            f"of frees, not only on the peak: reserved {_pct(min(res))} … {_pct(max(res))}, total vs driver-used "
            f"{_pct(min(tot))} … {_pct(max(tot))} on the H200 matrix, largest at 512 tokens on the 1B models, where "
            "the cache is a large share of a small total.",
            f"- **In-kernel scratch** beyond the {CUBLAS_WORKSPACE_BYTES // MiB} MiB cuBLAS workspace "
            f"(up to {scratch:.0f} MiB in all, "
            f"in `{gap['name']}`; larger without GC) is not modelled: `peak_allocated` is "
            f"{_pct(min(alloc))} … {_pct(max(alloc))} against `max_memory_allocated`.",
        ]
    lines += [
        "- **Other GPUs and stacks**: the context and runtime were measured on one H200 (sm90) with one driver and "
        "CUDA version. Every other architecture in the GPU catalog (`estimator/data/gpus.json`, `architectures`) "
        "has its cuBLAS workspace derived from torch's code but the H200's context and runtime standing in, "
        "reported as `uncalibrated` with a wide range (0.2–1.5×) until a verify run on such a card calibrates it "
        "(`app/jobs/calibration.py`).",
        "- **Not run on a GPU**: ROCm, and the kernels of cards older than the H200 themselves (the setups "
        "matrix pins each SDPA backend on the H200 to stand in for their choices). ROCm's activations, and a "
        "vision tower's on a GPU, carry the wider `UNVERIFIED` band (−5 % … +15 %) in the estimate's range.",
        "- **transformers 4.x**: the MoE experts' weights are counted as 4.x holds them (quantized `nn.Linear` "
        "layers under QLoRA); LoRA on the experts and the MoE activations are still modelled as 5.x runs them.",
        "- **Traced runs use the CPU kernels**: the CUDA math path is forced on each SDPA call the kernel rules "
        "say CUDA runs on it; a fused CUDA backend is stood in for by the CPU's flash kernel (with a mask it keeps "
        "a per-layer converted mask, as CUDA's memory-efficient and cuDNN kernels do), or by the memory-efficient "
        "kernel's own op "
        "where the CPU's flash kernel cannot run the call (MLA); the chunked loss and the objectives' fused head "
        "trace their CPU fallback. A traced full fine-tuning run with a reference copy (DPO, KTO, GRPO with beta "
        "> 0) is refused: the trace does not build the copy. "
        "DoRA's per-module weight-norm transient and autocast cast caches are approximated (the estimate says so in "
        "its notes).",
        "- **MoE layers, how they are held**: the CPU grid runs Llama 4 (LoRA and QLoRA, with and without "
        "checkpointing), OLMoE, Granite MoE, GLM-4 MoE, DeepSeek-V2/V3, gpt-oss, Mixtral and Qwen3-MoE. What the "
        "live tensors showed, each now a term of its own: the fused experts' combine "
        "(`grouped_mm_experts_forward`: the top-k sum's expanded gradient, the gather's `new_zeros` and "
        "`index_put`, T·k × h each) is the first moment of an MoE layer's backward and sets the peak of the tiny "
        "OLMoE and GLM-4 MoE runs; a shared expert runs last, so its backward comes first and its saved tensors "
        "are gone by then; DeepSeek's and GLM-4 MoE's routers keep an fp32 copy of their input; PEFT's fold of "
        "expert LoRA keeps its factors cast to the experts' dtype; GLM-4 MoE's partial rotary makes q contiguous "
        "(`torch.cat`), so on the CPU o_proj reads a copy of the attention output; Granite's embedding multiplier "
        "leaves the raw embedding output alive (a leaf that requires grad, held by autograd until the backward "
        "reaches it). Llama 4: its last layer has no rope (no qk-norm, no chunked mask, K/V not repeated), so "
        "with checkpointing the step peaks in the last MoE layer with rope (layer 1 of 4 on the tiny config), "
        "during its recompute, with the shared expert's LoRA gradient beside it; only Qwen2-MoE has a gated "
        "shared expert (the gate's product was counted for every family before). gpt-oss keeps its SwiGLU term "
        "calibrated on the grid, which stands for the combine too. DeepSeek-V3 QLoRA with GC, Granite MoE and "
        "GLM-4 MoE are not traced at real size (DeepSeek-V2-Lite is).",
        "- **Objectives**: DPO (QLoRA, full), KTO (QLoRA) and GRPO (LoRA) run with TRL 1.16's own trainers; DPO "
        "(QLoRA) and GRPO (LoRA) are traced at real size on their CPU fallback head (Llama-3.1-8B). GRPO's "
        "generation is a phase of its own in the real runs (`test_grpo_generation_phase_is_held_from_above`): "
        "its prefill transient is exact, and with the whole KV cache beside it the estimated phase is +2.2 % "
        "(`llama-grpo-lora-gc`) and +17 % (QLoRA, 64 + 192 tokens, by hand) above the run. Until 2026-12-02 "
        "the trainer generated without a KV cache (its config had `use_cache` false, which `generate` follows; "
        "a checkpoint's config.json has it true), 16-46 % above the estimate. The reference forward inside GRPO's "
        "generation (beta > 0) and vLLM's modes are from the code (GRPO keeps the wider band). The objectives "
        "are not run on a GPU; the CUDA head they share with SFT's chunked loss (TRL's Triton kernel, its compact "
        "hidden-state copy) is (GPU: the setups matrix). "
        "ORPO and SimPO run with TRL's experimental ORPO and CPO trainers (`llama-orpo-qlora-gc`, "
        "`llama-simpo-lora-nogc`, `llama-orpo-full-gc` above) and are traced at real size (Llama-3.1-8B ORPO "
        "QLoRA at 512 tokens here; SimPO LoRA +0.05 % in `python -m bench.accuracy`). Their first runs found the "
        "estimate 16–28 % low with QLoRA: those trainers keep QLoRA adapters in fp32 (no bf16 cast), and with "
        "fp32 logits the loss's backward holds three logits-sized gradients at once; both are modelled now. Full "
        "fine-tuning with ORPO and checkpointing then measured 3.6 % low: its 2·b rows make the first layer's "
        "MLP backward the peak, and that moment (the gradients of both factors of the gated product while the "
        "intermediate's gradient is held) was not counted for full fine-tuning; the same gap showed in SFT with a "
        "small vocabulary (`llama-v256-full-gc-b4`, was -4.2 %) and in reward modelling (3.9 % low), and without "
        "checkpointing the final RMSNorm's backward (six fp32 b·s·h tensors; `llama-v256-full-nogc-b4`, was "
        "-2.1 %). Both are modelled now, and ORPO and SimPO have the verified band. Reward "
        "modelling runs with TRL's `RewardTrainer` on `AutoModelForSequenceClassification` (`llama-reward-*` "
        "above: LoRA, QLoRA loaded as TRL's reward script loads it, without prepare_model_for_kbit_training, full "
        "with and without checkpointing) and is traced at real size (`llama-3.1-8b-reward-*`): PEFT's trainable "
        "copy of the score head, the final norm's forward and backward around the one-logit head, bf16 adapter "
        "compute where TRL casts QLoRA's adapters (the dequantized weight freed before the adapter's gradient) and "
        "the gated MLP's backward in full fine-tuning are modelled, and LoRA's dropout is not counted where "
        "the trainer disables dropout (DPO, KTO, ORPO, SimPO, reward: `disable_dropout=True`; with `padded` and "
        "dropout 0.05, tuneplan's defaults, the reward QLoRA step was 35 % over before), so reward has the verified "
        "band. QLoRA "
        "after prepare_model_for_kbit_training cannot run without bf16 autocast (the fp32 final norm feeds TRL's "
        "bf16 copy of the score head): the run refuses it, the estimate says so and keeps the wider band.",
        "- **Model types with no hand-written family** (read from transformers' own parameters): storage and "
        "parameters exact by construction, activations by the generic llama-style rules, not held by a run. A "
        "subclass of nn.Linear is adapted by all-linear and kept in 16 bits by bitsandbytes (PEFT matches by "
        "`isinstance`, transformers converts `type(module) is nn.Linear` only), and refused as a LoRA target when "
        "its forward returns no tensor (Llama 4's router: the real step fails there); a composite config "
        "transformers 4 wrote without `tie_word_embeddings` over a text config that does not tie is counted with "
        "the lm_head its checkpoint carries (`estimator.checkpoint_tie`: transformers 5 defaults InternVL's, "
        "Janus', Mistral 3's ... composite to tied, and `from_pretrained` keeps the two tensors apart; tested by "
        "saving and loading tiny checkpoints).",
        "- **Vision-language models**: Qwen2-VL, Qwen2.5-VL and Gemma 3 are read by hand (parameters, names and "
        "shapes equal to transformers' model on the meta device: Gemma 3's SigLIP tower and projector included, as "
        "`AutoModelForCausalLM` builds `Gemma3ForConditionalGeneration`) and their images are counted, and Qwen's "
        "videos: the image and video tokens the processors make (`inputs`; a video's frames under the video "
        "processor's own bounds, in pairs), the tower's saved tensors (one run for the images, one for the videos, "
        "both held), the fp32 pixel values and the tower's backward, which runs last (over the larger run; run by "
        "hand, Qwen2.5-VL QLoRA with a 4-frame 448² video measured within 4 KB of the same step with two 448² "
        "images, 2,048 patches each); for Gemma 3 also the two attention masks its bidirectional image tokens make "
        "transformers build; for LLaVA 1.5 the CLIP tower's every layer (its last one's tensors only until the "
        "model's output is dropped, with the default feature layer -2) and the two leaves `enable_input_require_grads` "
        "makes; with that feature layer the tower's last layer and post_layernorm never go backward (no gradient, "
        "no AdamW state). Mistral 3 (Pixtral tower) is read by hand too and its images counted (a config "
        "transformers 4 wrote without `tie_word_embeddings`, as Mistral Small 3.1 / 3.2's, is counted with its own "
        "lm_head, as transformers 5's `from_pretrained` loads its checkpoint: 24,011,361,280 parameters, where the "
        "config built alone ties the two and has 23,340,272,640; `estimator.mistral3_tie`, tested by saving and "
        "loading a tiny checkpoint): PixtralProcessor's "
        "tokens (each image scaled into the longest_edge square, sides rounded up to multiples of 28, an [IMG] per "
        "merged 2 × 2 patches and an [IMG_BREAK]/[IMG_END] per merged row), and the tower's attention over all of "
        "the step's images as one sequence through a block-diagonal float mask (patches² in the activation dtype, "
        "held to the tower's backward; on CUDA a 16-aligned padded copy per layer from torch's code, an upper bound "
        "not measured on a GPU). LLaVA-NeXT's images are counted as LlavaNextProcessor and the model make them: each "
        "image resized into the image_grid_pinpoints resolution select_best_resolution picks, every tile of the "
        "tower's image_size and the base image through LLaVA 1.5's CLIP terms, the <image> tokens of "
        "_get_number_of_features (the unpadded patches, an image_newline per row, the base image's), the packed "
        "features and the fp32 copy of the tiles get_image_features makes; run by hand on the CPU with "
        "LlavaNextConfig's CLIP ViT-L/14-336 tower and a tiny text model (LoRA, one 672² image: 4 tiles and the base "
        "image, 2,885 positions through the tower), the estimate is 6.6 % above the run, as LLaVA 1.5's with the same "
        "tower and five images traced (+6.4 %): where that tower dominates, its terms are an upper bound "
        "(the same step traced with `trainer.traced` equals the run to the byte). Real CPU runs "
        "(`qwen2*-vl-*`, `gemma3-*`, `llava-*`, `llava-next-*`, `mistral3-*`, above) and "
        "traced real-size runs "
        "(Qwen2-VL-2B with two images at the processor's cap and Gemma 3 4B with two 896² images here; run by hand "
        "with `trainer.traced`: LLaVA 1.5 at LlavaConfig's defaults (CLIP ViT-L/14-336, a Llama 7B) LoRA with two "
        "images at 128 tokens -0.02 %, Qwen2-VL-7B QLoRA "
        "with a 448² image at 512 tokens -0.06 %, Qwen2.5-VL-7B QLoRA "
        "at the cap +0.17 %, Gemma 3 4B QLoRA with one image at 512 tokens -0.09 %, Qwen2-VL-2B LoRA with an 8-frame "
        "video at the video cap at 128 tokens -0.01 %, Qwen2.5-VL-3B QLoRA with a 448² image and a 16-frame 448² "
        "video at 256 tokens +0.42 %) hold the peak. The tower's backward is an upper bound at one moment of a "
        "block's "
        "backward: with QLoRA and dropout on Qwen2-VL's tiny tower it was 5.3 % above the run (its peak came before "
        "the MLP's gradients exist), with full fine-tuning and checkpointing on Gemma 3's tiny tower (two images, 16 "
        "text tokens, run by hand) 3.7 % (every tower gradient counted at the tower's first layer). Not modelled: "
        "the video processor's total-pixel budget (`cap_pixels_per_frame`, off by default in transformers 5.24; "
        "`video_frames` are the frames the model sees, after any sampling), Gemma 3's tower with eager attention "
        "(refused), Pixtral's tower with eager attention (refused), LLaVA's tower with eager attention, a list of "
        "feature layers or another activation (refused), the other VLM families (their parameters come from "
        "transformers with the train extra, images and video are refused), the tower on a GPU (its attention "
        "kernel is not measured: the `UNVERIFIED` band).",
        "- **Idefics3 / SmolVLM**: read by hand (the Llama under `model.text_model`, the SigLIP-like tower, the "
        "pixel-shuffle connector; equal to the meta build); each image is cut as the image processor cuts it "
        "(splitting on: the longest edge resized to 4 tiles of the vision `image_size`, rows × cols tiles and the "
        "global image) and every tile runs through the tower; the tokens are `Idefics3Processor`'s expansion "
        "(`image_seq_len` a tile and the row/col, global and fake-image tokens; a `\\n\\n` counted as two tokens, "
        "one above a tokenizer that merges it). Real CPU runs (`idefics3-*`, `smolvlm-*`, above) hold the peak. "
        "Run by hand with `trainer.traced` at real size, two images at the longest edge (17 tiles each, 34,816 "
        "patches through the tower): SmolVLM2 500M QLoRA +2.1 % (every tower gradient counted at the tower's "
        "backward peak, 46.2 MB where the trace holds 35.8 MB: the lower layers' come later, but on "
        "`gemma3-lora-gc-224` they are there, so all are kept), SmolVLM 256M LoRA +7.6 % (its bf16 tower's "
        "backward, counted at one moment of a layer's backward, is an upper bound). "
        "Not modelled: splitting off (`do_image_splitting=False`, not a plan setting), a processor whose "
        "`size['longest_edge']` is not 4 tiles, `max_pixels` and the tower under eager attention (refused), video.",
        "- **Llama 3.2 Vision (mllama)**: read by hand (`MllamaForConditionalGeneration`, what the image-text-to-text "
        "class builds: embed_tokens of vocab + 8 rows, an untied lm_head, the cross-attention layers, the local and "
        "gated global tower, the one-Linear projector; equal to the meta build). Without images `MllamaTextModel` "
        "skips the cross-attention layers: no activations, gradients or AdamW state for them (`mllama-*-text`, "
        "optimizer exact). With images (`MllamaImageProcessor`'s tiles, one `<|image|>` token each): every image "
        "runs as `max_num_tiles` tiles of (image_size/patch)² + 1 positions padded to 8, whatever its size; the "
        "tower's layers (not checkpointed) keep their tensors to its backward under one tiles² float mask per "
        "image; the projector's features (images · tiles · positions rows) are every cross-attention layer's keys "
        "and values, with SDPA's repeated keys and values and their gradients in a cross-attention layer's "
        "backward (the lowest one's, with the features' gradient from those above it and the layers above it "
        "done, is a moment of its own), and a checkpointed cross-attention layer's forward can peak above the "
        "head's (`mllama-*-img`, `mllama-*-2img` above: -0.26 % to +1.31 %; traced at real size, MllamaConfig's "
        "defaults (11B) with 560² tiles, LoRA and QLoRA with one image at 128 tokens: `mllama-11b-lora-gc-img`, "
        "`mllama-11b-qlora-gc-img`, where the trace runs each SDPA call as CUDA selects it: the decoder's fp32 "
        "grouped heads on the math path, the tower's fp32 attention with its mask on the memory-efficient "
        "kernel). Not modelled: the tower and the masks on a GPU (CUDA's memory-efficient kernel pads a mask "
        "whose rows are not a multiple of 16, counted from torch's code as Pixtral's, unmeasured), eager "
        "attention (refused).",
        "- **Qwen3-VL and Qwen3-VL-MoE**: read by hand (Qwen3's or Qwen3-MoE's language model under "
        "`model.language_model` (the MoE's fused experts are Parameters: all-linear adapts none of them, as PEFT "
        "does for a model type transformers' conversion mapping does not remap), the tower with its "
        "learned position grid, the merger and the DeepStack mergers; equal to the meta build); images are resized "
        "as `Qwen2VLImageProcessor` does with Qwen3-VL's published processor config (16² patches merged 2 × 2: sides "
        "in multiples of 32, 65,536 to 16,777,216 pixels); a video as `Qwen3VLVideoProcessor` makes it with the "
        "published video config (the frames that reach the model after its 2-per-second sampling, resized within "
        "25,165,824 pixels for all of them, pairs of frames one temporal patch) and `Qwen3VLProcessor` expands it "
        "(per temporal patch its timestamp `<t seconds>` as text, counted as Qwen's tokenizer splits it: a token per "
        "digit and for `<`, `.`, ` seconds` and `>`, at 2 frames per second; its two delimiters; the template's two "
        "around the video), through a second run of the same tower; the tower's saved tensors, the mergers', "
        "DeepStack's "
        "features (in the model's output through the forward, their gradients waiting through the tower's backward), "
        "the text embeddings' leaf and gradient, and the decoder's per-row M-RoPE cos/sin are counted. Real CPU runs "
        "(`qwen3-vl-*`, `qwen3-vl-moe-*`, above: LoRA, QLoRA and full, with and without checkpointing and dropout, "
        "images, videos and both) and traced "
        "real-size runs (Qwen3-VL 8B LoRA with two 1024² images, and with a video of 16 frames of 448²) hold the "
        "peak; the tower's backward counts every "
        "adapter's gradient at its first block (QLoRA +1.05 %, 0.6 MB of it the tower's adapters' gradients not yet "
        "made). Not modelled: a one-frame video (the processor's resize refuses it: refused), timestamps of another "
        "sampling rate or tokenizer (their text tokens are the 2-per-second clip's), another block "
        "activation than GELU-tanh, repeated DeepStack indexes and the tower under eager attention (refused), the "
        "tower on a GPU.",
        "",
    ]
    return lines


def _setups_section(setups: Mapping[str, Any] | None) -> list[str]:
    """The setups matrix on a GPU: measured figures when recorded, else what it will measure."""
    lines = ["## GPU: the setups matrix", ""]
    what = (
        "fp16 vs bf16, SDPA pinned to each backend (flash, memory-efficient, cuDNN, math: on one H200 these stand "
        "for older cards' choices), eager attention, padded vs unpadded batches, the Trainer's loop vs a plain loop, "
        "and TRL's chunked loss, for LoRA and QLoRA on Llama-3.2-1B at 2 × 2048 tokens and two Llama-3.1-8B QLoRA "
        "cases; every run also records which SDPA backend torch picked"
    )
    if setups is None:
        return lines + [
            f"`python bench/gpu_check.py --out bench/results/gpu_setups_h200.json` measures what the estimate was "
            f"not calibrated on: {what}. **Its GPU figures are still to be recorded.**",
            "",
        ]
    v, card = setups.get("versions", {}), setups.get("card", {})
    second = setups.get("second_run") or {}
    lines += [
        f"`python bench/gpu_check.py --out bench/results/gpu_setups_h200.json` on **{card.get('nvidia_smi')}**, "
        f"{setups.get('started', '?')}: torch {v.get('torch')} (CUDA {v.get('cuda')}), transformers "
        f"{v.get('transformers')}, peft {v.get('peft')}, bitsandbytes {v.get('bitsandbytes')}, trl {v.get('trl')}, "
        f"Python {v.get('python')}; default allocator settings. It measures what the estimate was not calibrated "
        f"on: {what}. Batch 2, r=16, alpha 32, all-linear, dropout 0, AdamW (torch), gradient checkpointing unless "
        "the name says nogc; a warm-up step, then two measured steps (the peak is their max)."
        + (
            f" The cases {', '.join(f'`{n}`' for n in second.get('cases', []))} ran after the others "
            f"({second.get('started')}, one measured step: `{second.get('command')}`): with the chunked loss the "
            "head's peak falls below the attention's backward, which then sets the step's peak."
            if second
            else ""
        ),
        "",
        "GiB; err = (estimate − measured) / measured; *in range*: the measured peak inside the estimate's "
        "`range.peak_allocated`.",
        "",
    ]
    rows, errors, agree = [], [], 0
    for c in setups.get("cases", []):
        res = c.get("result") or {}
        m = res.get("measured") or {}
        if c.get("status") != "ok" or not res:
            rows.append([f"`{c['name']}`", c.get("status", "?"), "", "", "", "", ""])
            continue
        est = estimate(Plan.from_dict({**res["plan"], "model": None, "config": res["config"]})).to_dict()["memory"]
        err = (est["peak_allocated"] - m["peak_allocated"]) / m["peak_allocated"]
        errors.append(err)
        agree += chosen_backend(res) == est["attention"]["backend"]
        low, high = est["range"]["peak_allocated"]
        rows.append([
            f"`{c['name']}`", ", ".join(res.get("sdpa_backends") or []) or "–", str(est["attention"]["backend"]),
            _gib(m["peak_allocated"]), _gib(est["peak_allocated"]), _pct(err),
            "yes" if low <= m["peak_allocated"] <= high else "no",
        ])  # fmt: skip
    lines += _table(["case", "SDPA (torch)", "SDPA (estimate)", "max_memory_allocated", "est. peak_allocated",
                     "err", "in range"], rows)  # fmt: skip
    if errors:
        lines += _setups_findings(errors, agree)
    return lines + [""]


def _setups_findings(errors: Sequence[float], agree: int) -> list[str]:
    """The setups matrix's summary line and what its runs showed."""
    return [
        "",
        f"**Summary: {len(errors)} cases; peak allocated median {_pct(statistics.median(errors))}, "
        f"{_pct(min(errors))} … {_pct(max(errors))}; the kernel rules named the backend torch chose in "
        f"{agree}/{len(errors)}.** The target (within 3 % on the median, 8 % in the worst case, never under by "
        "more than 5 %) is held by `tests/estimator/test_gpu_setups.py`, tighter: −0.5 % … +2 %.",
        "",
        "What these runs showed, now in the model (`python bench/gpu_snapshot.py --only <case> --out s.json` "
        "lists the blocks live at a case's peak by the Python line that made them, from the CUDA allocator's "
        "history):",
        "",
        "- **CUDA's softmax backward makes one more b·a·s² block.** `softmax_backward_cuda_out` "
        "(aten/src/ATen/native/cuda/SoftMax.cu) computes `Tensor tmp = grad * output` inside the op, so no "
        "tracker of dispatched tensors sees it and the CPU's kernel has none. Eager attention's softmax runs in "
        "fp32 and the math path upcasts 16-bit inputs, so it is fp32: 1 GiB at 2 × 32 heads × 2048², the whole "
        "gap between `max_memory_allocated` and the tracked peak beyond the 64 MiB workspace in every case whose "
        "peak is the attention's backward (`estimator.cuda_softmax_backward_extra`; fp16 eager's `half_to_float` "
        "softmax keeps its input's gradient in fp16, 2 bytes less). Before: QLoRA with the chunked loss -15.4 % "
        "(1B) and -6.7 % (8B).",
        "- **The memory-efficient kernel keeps the converted mask per layer.** With padding, SDPA converts the "
        "bool mask to the q dtype for every call and the kernel saves that copy for backward (fp32 under QLoRA: "
        "32 MiB a layer at 2 × 2048²), as the cuDNN and the CPU's flash kernels do; without checkpointing every "
        "layer keeps one. Before: QLoRA padded without checkpointing -2.3 %.",
        "- **Held as modelled**: fp16 and bf16 alike (the same bytes), TRL's chunked loss on CUDA (its Triton "
        "kernel folds each tile in place: no tile temporaries), the plain loop's logits kept through the "
        "backward, every pinned backend, and torch's choice of backend in each case.",
        "",
    ]


def _load_setups() -> dict[str, Any] | None:
    path = SETUPS_JSON
    return json.loads(path.read_text()) if path.exists() else None


def _reproduce() -> list[str]:
    return [
        "## Reproduce",
        "",
        "```bash",
        "python -m bench.accuracy                  # CPU + traced cases (a few minutes on 2 cores), JSON + this page",
        "python -m bench.accuracy --only llama     # rerun a subset, merged into bench/results/accuracy_cpu.json",
        "python -m bench.accuracy --from-json      # this page from the saved results (and gpu_h200.json)",
        "python -m bench.dist_accuracy             # the per-rank gloo matrix (14 cases, ~4 min), then --from-json",
        "python -m bench.host_ram                  # host RAM of loading and the process (~2 min), then --from-json",
        "python -m bench.gloo_release              # how late gloo frees a collective's output (~1 min)",
        "python -m bench.gloo_release --fsdp 20    # FSDP2 ranks whose peak holds a late output (~4 min)",
        ".venv/bin/pytest -m 'slow or not slow' tests/trainer/test_accuracy.py tests/estimator/test_gpu_results.py -q",
        "python bench/gpu_check.py --out bench/results/gpu_setups_h200.json --budget 540  # CUDA: the setups, < 10 min",
        "python bench/gpu_check.py --matrix base --out gpu.json               # the first 24-case matrix, < 8 min",
        "```",
        "",
        "On the GPU machine the train stack has to match (torch with CUDA, transformers 5.24.0, peft 0.21.2, "
        "bitsandbytes 0.50.2). Where its image lacks bitsandbytes or carries another transformers, bring the wheels "
        "(`pip download --no-deps --python-version 3.12 bitsandbytes==0.50.2 transformers==5.24.0 peft==0.21.2`), "
        "install them beside the image's torch (`pip install --no-index --no-deps --target /tmp/site *.whl && export "
        "PYTHONPATH=/tmp/site:$PWD`), then run `bench/gpu_check.py` (docs/trainer.md). Copy its JSON to "
        "`bench/results/` and run `python -m bench.accuracy --from-json --gpu-json bench/results/<file>.json`.",
        "",
    ]


# ---------------------------------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--from-json", action="store_true", help="regenerate the doc from the saved JSON only")
    parser.add_argument("--only", metavar="SUBSTR", help="run only the cases whose id contains SUBSTR (merged)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads")
    parser.add_argument("--json", type=Path, default=CPU_JSON, help=f"results file (default {CPU_JSON.name})")
    parser.add_argument("--gpu-json", type=Path, default=GPU_JSON, help=f"GPU matrix (default {GPU_JSON.name})")
    parser.add_argument("--doc", type=Path, default=DOC, help="the page to write (default docs/accuracy.md)")
    args = parser.parse_args(argv)

    if args.from_json:
        if not args.json.exists():
            parser.error(f"{args.json} does not exist: run without --from-json first")
        cpu = json.loads(args.json.read_text())
    else:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        if args.only and not _selected(args.only):
            parser.error(f"no case id contains {args.only!r}")
        t0 = time.perf_counter()
        fresh = run_cases(args.only)
        cases = fresh
        if args.only and args.json.exists():
            previous = json.loads(args.json.read_text())["cases"]
            cases = merge(previous, fresh)
        command = "python -m bench.accuracy" + (f" --only {args.only}" if args.only else "")
        cpu = save(cases, args.json, command)
        print(f"{len(fresh)} cases in {time.perf_counter() - t0:.0f} s -> {args.json}")
    gpu = json.loads(args.gpu_json.read_text()) if args.gpu_json.exists() else None
    args.doc.write_text(render(cpu, gpu))
    real = [c for c in cpu["cases"] if c["mode"] == "real"]
    traced = [c for c in cpu["cases"] if c["mode"] == "traced"]
    print("CPU:   " + _summary(real).strip("*"))
    print("traced: " + _summary(traced).strip("*"))
    if gpu is not None:
        ok = [r for r in gpu_rows(gpu) if r["status"] == "ok"]
        print("GPU:   " + ", ".join(f"{k} max |err| {_max_abs(r[k]['error'] for r in ok) * 100:.2f} %"
                                    for k in ("tensor", "allocated", "reserved", "total")))  # fmt: skip
    print(f"wrote {args.doc}")
    bad = [c for c in cpu["cases"] if "error" in c or not c["comparison"]["peak"]["ok"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
