"""The page's view model: a plan → the payload of ``POST /api/charts`` and the values the result fragments show.

``compute`` estimates full, LoRA and QLoRA side by side (or the one method asked for), sweeps sequence length and
batch size, and builds the Plotly figures (``app.view.charts``); ``results_view`` turns that payload into the
pre-formatted values of the Jinja macros in ``templates/_results.html``: the fit panel (the contract's ``fit`` and
``fits``), the advisor's levers (``advice``), serving (``serving``), time and cost (``time``, ``cost``), the way from
the rule of thumb to the peak (``rule_to_peak``). Every number comes from the estimator's contract; nothing here
computes memory.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from app.service import EstimateService, Resolved
from app.view import charts
from app.view.form import METHOD_LABELS, VIEW_METHODS
from estimator import (
    METHODS,
    OBJECTIVES,
    EstimatorError,
    Plan,
    PlanError,
    catalog,
    count_text,
    gb_text,
    gib_text,
    plan_field,
)

SEQ_SWEEP_MIN = 256
SEQ_SWEEP_MAX = 1 << 20
BATCH_SWEEP: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
ADVICE_SHOWN = 6


def seq_sweep_values(context: int) -> list[int]:
    """Powers of two from 256 up to the model's context length (at least one point)."""
    values = []
    n = SEQ_SWEEP_MIN
    while n <= min(context, SEQ_SWEEP_MAX):
        values.append(n)
        n *= 2
    return values or [max(1, min(context, SEQ_SWEEP_MIN))]


def gpu_capacity(gpu_id: str | None) -> dict[str, Any] | None:
    """The capacity line of the sweeps: the chosen GPU's usable memory; None when the plan names no GPU."""
    chosen = catalog.find_gpu(gpu_id) if gpu_id else None
    if chosen is None:
        return None
    return {"label": charts.gpu_line_label(chosen), "name": chosen.name, "bytes": chosen.usable_bytes,
            "gpu": chosen.id}  # fmt: skip


def _sweep(service: EstimateService, plan: Plan, resolved: Resolved, name: str, values: Sequence[int],
           capacity: Mapping[str, Any] | None) -> list[dict[str, Any]]:  # fmt: skip
    points = []
    for value in values:
        try:
            # each point with the plan's GPU: its kernels and runtime constants; fits as the verdict says (the
            # high edge of the total's range)
            contract = service.contract(plan.replace(**{name: value}), resolved, advice=False)
            peak: int | None = charts.peak_bytes(contract)
            high = contract["memory"]["range"]["total"][1]
        except EstimatorError:
            peak = high = None
        fits = None if high is None or capacity is None else high <= capacity["bytes"]
        points.append({"x": value, "peak": peak, "fits": fits})
    return points


def _estimates(
    service: EstimateService, plan: Plan, resolved: Resolved, view: str
) -> tuple[dict[str, dict[str, Any]], dict[str, str], dict[str, Plan]]:
    """Contracts of every method (the one asked for must succeed unless comparing), their errors, their plans."""
    estimates: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    variants: dict[str, Plan] = {}
    first_error: EstimatorError | None = None
    for method in METHODS:
        variant = plan.replace(method=method, use_dora=plan.use_dora and method != "full")
        try:
            estimates[method] = service.contract(variant, resolved, advice=view == "compare" or method == plan.method)
            variants[method] = Plan.from_dict(estimates[method]["plan"] | {"model": variant.model,
                                                                            "config": variant.config})  # fmt: skip
        except EstimatorError as exc:
            if view != "compare" and method == plan.method:
                raise
            errors[method] = str(exc)
            first_error = first_error or exc
    if not estimates:
        assert first_error is not None
        raise first_error
    return estimates, errors, variants


def page_plan(plan_data: Mapping[str, Any]) -> tuple[Plan, str]:
    """The plan of a page request (``method`` may be ``compare``: the plan then holds QLoRA) and the view asked for."""
    data = dict(plan_data)
    view = data.get("method", "qlora")
    if view not in VIEW_METHODS:
        raise PlanError(f"method must be one of {', '.join(VIEW_METHODS)}; got {view!r}")
    data["method"] = "qlora" if view == "compare" else view
    return Plan.from_dict(data), view


def compute(service: EstimateService, plan_data: Mapping[str, Any], token: str | None = None) -> dict[str, Any]:
    """The payload of ``POST /api/charts`` for a plan JSON object (``method`` may be ``compare``)::

    {"method", "primary", "plan", "model_label", "estimates": {method: contract}, "errors": {method: message},
     "sweeps": {"seq_len": {method: [{"x", "peak", "fits"}]}, "batch_size": {...}},
     "capacity": {"label", "name", "bytes", "gpu"} | None,
     "charts": {"memory", "seq_len", "batch_size", "storage", "objectives"}}
    """
    plan, view = page_plan(plan_data)
    return compute_resolved(service, plan, view, service.resolve(plan, token))


def _fit_answers(estimates: Mapping[str, Mapping[str, Any]], methods: Sequence[str], key: str) -> dict[str, Any]:
    """Each method's answer of the fit search (the contract's ``fit``), for the sweep charts."""
    return {m: (estimates[m].get("fit") or {}).get(key) for m in methods if m in estimates}


def _figures(plan: Plan, view: str, primary: str, estimates: Mapping[str, Any], sweeps: Mapping[str, Any],
             capacity: Mapping[str, Any] | None, objectives: Mapping[str, Any]) -> dict[str, Any]:  # fmt: skip
    methods = list(sweeps["seq_len"])
    refs = [] if capacity else charts.capacity_lines()
    return {
        "memory": charts.memory_bar_chart(estimates, charts.capacity_lines(plan.gpu),
                                          selected_method=None if view == "compare" else primary),
        "seq_len": charts.sweep_line_chart(sweeps["seq_len"], capacity, x_title="Sequence length (tokens)",
                                           fits=_fit_answers(estimates, methods, "max_seq_len"), references=refs,
                                           title=f"Peak memory vs sequence length (batch size {plan.batch_size})"),
        "batch_size": charts.sweep_line_chart(sweeps["batch_size"], capacity, x_title="Batch size (per GPU)",
                                              fits=_fit_answers(estimates, methods, "max_batch_size"), references=refs,
                                              title=f"Peak memory vs batch size (sequence length "
                                              f"{estimates[primary]['plan']['seq_len']:,})"),
        "storage": charts.storage_chart(estimates[primary]["storage"]),
        "objectives": charts.objective_bar_chart(objectives, charts.capacity_lines(plan.gpu),
                                                 selected=plan.objective, method=primary),
    }  # fmt: skip


def objective_estimates(service: EstimateService, plan: Plan, resolved: Resolved) -> dict[str, dict[str, Any]]:
    """The plan's contract under every training objective (the objective chart); one the estimator refuses for
    this plan is left out."""
    out: dict[str, dict[str, Any]] = {}
    for objective in OBJECTIVES:
        try:
            out[objective] = service.contract(plan.replace(objective=objective), resolved, advice=False)
        except EstimatorError:
            continue
    return out


def compute_resolved(service: EstimateService, plan: Plan, view: str, resolved: Resolved) -> dict[str, Any]:
    """``compute`` for a plan whose config is already resolved (the routes resolve on the Hub lane first)."""
    estimates, errors, variants = _estimates(service, plan, resolved, view)
    # comparing: the summary details QLoRA, else the first method the estimator accepts
    primary = plan.method if plan.method in estimates else next(m for m in ("lora", "full") if m in estimates)
    capacity = gpu_capacity(plan.gpu)
    context = estimates[primary]["model"]["architecture"]["max_position_embeddings"]
    seq_values = seq_sweep_values(context if not plan.allow_long_context else max(context, plan.seq_len))
    methods = list(METHODS) if view == "compare" else [plan.method]
    sweeps: dict[str, dict[str, list[dict[str, Any]]]] = {"seq_len": {}, "batch_size": {}}
    for method in (m for m in methods if m in variants):
        sweeps["seq_len"][method] = _sweep(service, variants[method], resolved, "seq_len", seq_values, capacity)
        sweeps["batch_size"][method] = _sweep(service, variants[method], resolved, "batch_size", BATCH_SWEEP,
                                              capacity)  # fmt: skip
    plan_out = estimates[primary]["plan"] | {"method": view, "model": plan.model, "config": None}
    if plan.config is not None:
        plan_out["model"] = None
    return {"method": view, "primary": primary, "plan": plan_out, "model_label": resolved.label,
            "estimates": estimates, "errors": errors, "sweeps": sweeps, "capacity": capacity,
            "adjusted": estimates[primary].get("adjusted", []),
            "charts": _figures(plan, view, primary, estimates, sweeps, capacity,
                               objective_estimates(service, variants.get(primary, plan), resolved))}  # fmt: skip


# ---------------------------------------------------------------------------------------------- the fit panel


def _gpu_verdict(fit: Mapping[str, Any], plan: Mapping[str, Any]) -> dict[str, Any]:
    """The chosen GPU's answer (the contract's ``fit``), with the headroom's sign and the reason where there is one."""
    headroom = int(fit["headroom_bytes"])
    usable = f"{fit['name']} ({gib_text(fit['usable_bytes'])} usable)"
    if fit["reason"]:
        text = f"Cannot run on {usable}: {fit['reason']}."
        memory = (f"Its memory would hold it, with {gib_text(headroom)} to spare." if headroom >= 0
                  else f"It would also be {gib_text(-headroom)} short.")  # fmt: skip
    elif fit["fits"]:
        text, memory = f"Fits on {usable}: {gib_text(headroom)} headroom.", ""
    else:
        text, memory = f"Does not fit on {usable}: {gib_text(-headroom)} short.", ""
    seq, batch = fit["max_seq_len"], fit["max_batch_size"]
    return {
        "kind": "gpu", "fits": bool(fit["fits"]), "text": text, "memory": memory, "headroom": headroom,
        "reason": fit["reason"], "max_batch": batch, "max_seq": seq,
        "max_batch_text": f"{batch:,}" if batch else "none",
        "max_seq_text": f"{seq:,} tokens" if seq else "none",
        "batch_at": f"{plan['seq_len']:,} tokens", "seq_at": f"batch size {plan['batch_size']}",
        "gpu": fit["gpu"], "name": fit["name"],
    }  # fmt: skip


def _any_verdict(contract: Mapping[str, Any]) -> dict[str, Any]:
    """Without a GPU: how many catalog GPUs the plan fits, and the smallest of them (the contract's ``fits``)."""
    rows = contract["fits"]
    fitting = [g for g in rows if g["fits"]]
    smallest = min(fitting, key=lambda g: g["usable_bytes"]) if fitting else None
    if smallest is None:
        text = f"Fits on none of the {len(rows)} catalog GPUs on its own."
    else:
        room = f"{gib_text(smallest['usable_bytes'])} usable, {gib_text(smallest['headroom_bytes'])} headroom"
        text = f"Fits on {len(fitting)} of {len(rows)} catalog GPUs; smallest: {smallest['name']} ({room})."
    return {"kind": "any", "fits": smallest is not None, "text": text, "count": len(fitting), "of": len(rows),
            "smallest": smallest["id"] if smallest else None}  # fmt: skip


def fit_panel(contract: Mapping[str, Any]) -> dict[str, Any]:
    """Does it fit: on the chosen GPU (with the largest batch and longest sequence that fit), else across the
    catalog."""
    if contract.get("fit"):
        return _gpu_verdict(contract["fit"], contract["plan"])
    if contract["plan"]["device"] != "cuda":
        return {"kind": "cpu", "fits": True, "text": "Estimated for the CPU: live tensors only, no GPU to fit."}
    return _any_verdict(contract)


def effective_batch(contract: Mapping[str, Any]) -> str:
    """The optimizer step's batch in words: micro-batch × accumulation × GPUs (sequences and tokens)."""
    p = contract["plan"]
    seqs = p["batch_size"] * p["grad_accum_steps"] * p["num_gpus"]
    parts = [f"micro-batch {p['batch_size']}"]
    if p["grad_accum_steps"] > 1:
        parts.append(f"{p['grad_accum_steps']} accumulation steps")
    if p["num_gpus"] > 1:
        parts.append(f"{p['num_gpus']} GPUs")
    return f"{' × '.join(parts)} = {seqs:,} sequence{'s' if seqs != 1 else ''} ({seqs * p['seq_len']:,} tokens)"


# ---------------------------------------------------------------------------------------------- the other panels


def change_text(changes: Mapping[str, Any]) -> str:
    """A lever's plan changes in words: ``Sequence length 1,024, Gradient accumulation steps 4``."""
    parts = []
    for name, value in changes.items():
        label = plan_field(name).spec.label
        shown = ", ".join(value) if isinstance(value, list | tuple) else (
            ("on" if value else "off") if isinstance(value, bool) else f"{value:,}" if isinstance(value, int)
            else str(value))  # fmt: skip
        parts.append(f"{label}: {shown}")
    return "; ".join(parts)


def _lever_fit(lever: Mapping[str, Any], fit: Mapping[str, Any] | None) -> str:
    """Whether the plan fits the chosen GPU with the lever applied; where the GPU rules the plan out for another
    reason than memory (no bfloat16), a lever that does not remove that reason says so instead of "over"."""
    if lever["fits"]:
        return "✔ fits"
    if fit is not None and fit["reason"]:
        return "✖ still cannot run here"
    return "✖ still over"


def advice_view(contract: Mapping[str, Any], n: int = ADVICE_SHOWN) -> dict[str, Any]:
    """The advisor's levers (the contract's ``advice``) as the page lists them, best first."""
    fit = contract.get("fit")
    levers = [{
        "lever": lv["lever"], "label": lv["label"], "changes": lv["plan_changes"], "change_text":
        change_text(lv["plan_changes"]), "total": lv["total"], "total_text": gib_text(lv["total"]),
        "saves": lv["saves_bytes"], "saves_text": gib_text(lv["saves_bytes"]), "fits": lv["fits"],
        "tradeoff": lv["tradeoff"], "step_text": None if lv["step_s"] is None else f"{lv['step_s']:.2f} s",
        "required": lv["required"], "fit_text": _lever_fit(lv, fit),
    } for lv in contract.get("advice", [])[:n]]  # fmt: skip
    needed = fit is not None and not fit["fits"]
    verb = "run" if fit is not None and fit["reason"] else "fit"
    title = f"Make it {verb} on {fit['name']}" if needed and fit else "Levers that lower the memory"
    return {"title": title, "needed": needed, "levers": levers, "gpu": fit is not None,
            "peak_text": gib_text(charts.peak_bytes(contract))}  # fmt: skip


def serving_view(contract: Mapping[str, Any]) -> dict[str, Any] | None:
    """Serving the result (the contract's ``serving``)."""
    s = contract.get("serving")
    if not s:
        return None
    rows = [(key, label, s[key]) for key, label in (("weights", "Weights"), ("kv_cache", "KV cache"),
            ("activations", "Prefill activations"), ("overhead", "CUDA context + cuBLAS")) if s[key]]  # fmt: skip
    return {"format": s["format"], "context": f"{s['context_len']:,}", "concurrency": s["concurrency"],
            "rows": [{"key": k, "label": lb, "bytes": v, "text": gib_text(v)} for k, lb, v in rows],
            "total": s["total"], "total_text": gib_text(s["total"]), "fits": s.get("fits"),
            "per_token": gib_text(s["kv_cache_per_token"]) if s["kv_cache_per_token"] >= 2**20
            else f"{s['kv_cache_per_token'] / 1024:.1f} KiB", "notes": s["notes"]}  # fmt: skip


def time_view(contract: Mapping[str, Any]) -> dict[str, Any] | None:
    """Time and cost on the chosen GPU (the contract's ``time`` and ``cost``)."""
    t = contract.get("time")
    if not t:
        return None
    run = None
    if t["run_s"]:
        hours = t["run_s"] / 3600
        run = f"{hours:,.1f} h" if hours >= 1 else f"{t['run_s'] / 60:,.1f} min"
    costs = [{"provider": c["provider"], "offer": c["offer"], "date": c["date"],
              "hour": f"${c['usd_per_hour']:,.2f}", "per_million": f"${c['usd_per_million_tokens']:,.3f}",
              "run": None if c["run_usd"] is None else f"${c['run_usd']:,.2f}"}
             for c in contract["cost"][:4]]  # fmt: skip
    card = catalog.find_gpu(t["gpu"])
    name = charts.short_gpu_name(card.name) if card else t["gpu"]
    return {"gpus": f"{t['num_gpus']} × {name}", "step": f"{t['step_s']:.3f} s", "tokens_step":
            f"{t['tokens_per_step']:,}", "tokens_s": f"{t['tokens_per_s']:,.0f}", "bound": t["bound"],
            "mfu": f"{t['mfu']['value']:.0%}", "mfu_kind": t["mfu"]["kind"], "run": run,
            "steps": None if t["steps"] is None else f"{t['steps']:,}",
            "run_tokens": None if t["run_tokens"] is None else f"{t['run_tokens']:,}", "costs": costs}  # fmt: skip


def _time_missing(contract: Mapping[str, Any]) -> str:
    """Why there is no step time: no catalog GPU chosen, or the chosen one cannot run the plan."""
    fit = contract.get("fit")
    if fit is not None and fit["reason"]:
        return f"No step time: the plan cannot run on {fit['name']} ({fit['reason']})."
    return "Pick a catalog GPU in the form for the step time and the cost at listed prices."


def bridge_view(contract: Mapping[str, Any]) -> dict[str, Any] | None:
    """From the rule of thumb to the peak, step by step (the contract's ``rule_to_peak``)."""
    b = contract.get("rule_to_peak")
    if not b:
        return None
    steps = [{"label": st["label"], "text": ("+" if st["bytes"] >= 0 else "−") + gib_text(abs(st["bytes"])),
              "why": st["why"], "key": st["key"]} for st in b["steps"] if st["bytes"]]  # fmt: skip
    return {"rule_text": b["rule_text"], "rule": f"{gb_text(b['rule'])} = {gib_text(b['rule'])}", "steps": steps,
            "total": gib_text(b["total"])}  # fmt: skip


# ---------------------------------------------------------------------------------------------- the whole view


def _method_rows(payload: Mapping[str, Any], selected: Sequence[str]) -> list[dict[str, Any]]:
    """One row per method: its peak, trainable count and fit panel, or why the estimator refused it."""
    rows: list[dict[str, Any]] = []
    for method in METHODS:
        contract = payload["estimates"].get(method)
        if contract is None:
            rows.append({"method": method, "label": METHOD_LABELS[method], "error": payload["errors"].get(method)})
            continue
        peak = charts.peak_bytes(contract)
        rows.append({"method": method, "label": METHOD_LABELS[method], "peak": peak, "peak_text": gib_text(peak),
                     "trainable_text": count_text(contract["params"]["trainable"]), "fit": fit_panel(contract),
                     "selected": method in selected, "error": None})  # fmt: skip
    return rows


def results_view(payload: Mapping[str, Any]) -> dict[str, Any]:
    """What the result fragments show, from a ``compute`` payload: numbers pre-formatted for the template."""
    primary, view, estimates = payload["primary"], payload["method"], payload["estimates"]
    methods = list(METHODS) if view == "compare" else [primary]
    contract = estimates[primary]
    peak = charts.peak_bytes(contract)
    labels = contract["memory"]["component_labels"]
    breakdown = [{"key": k, "label": labels[k], "bytes": v, "text": gib_text(v)}
                 for k, v in charts.components_of(contract).items() if v]  # fmt: skip
    notes = {m: {"largest": largest_terms(estimates[m]), "notes": notes_of(estimates[m])}
             for m in methods if m in estimates}  # fmt: skip
    low, high = contract["memory"]["range"]["total"]
    return {
        "method": view, "primary": primary, "primary_label": METHOD_LABELS[primary],
        "model_label": payload["model_label"], "peak_text": gib_text(peak), "peak": peak,
        "range_text": f"{gib_text(low)} – {gib_text(high)}" if high > low else "",
        "rule": rule_of_thumb(contract, primary), "bridge": bridge_view(contract), "breakdown": breakdown,
        "rows": _method_rows(payload, methods), "notes": notes, "storage": charts.storage_rows(contract["storage"]),
        "fits": fits_rows(contract), "fit": fit_panel(contract), "effective": effective_batch(contract),
        "advice": advice_view(contract), "serving": serving_view(contract), "time": time_view(contract),
        "time_missing": _time_missing(contract),
        "params": contract["params"]["total"], "adjusted": _adjusted(payload),
        "num_gpus": payload["plan"]["num_gpus"], "scale": scale_view(contract),
    }  # fmt: skip


def scale_view(contract: Mapping[str, Any]) -> dict[str, Any]:
    """Per GPU vs all GPUs together, and the host RAM (and ZeRO-Infinity's NVMe bytes) per rank, labelled for the
    summary fragment."""
    mem = contract["memory"]
    rank = mem.get("per_rank") or {}
    n = int(rank.get("num_gpus") or 1)
    setup = str(rank.get("sharding") or "")
    if setup == "fsdp" and rank.get("fsdp_strategy"):
        setup += f" {rank['fsdp_strategy']}"
    host = int(mem.get("host_peak") or 0)
    return {
        "num_gpus": n,
        "setup": setup,
        "per_gpu_text": gib_text(int(rank.get("total") or mem["total"])),
        "all_gpus_text": gib_text(int(rank.get("all_gpus_total") or mem["total"] * n)),
        "host_text": gib_text(host) if host else None,
        "nvme_text": gib_text(nvme) if (nvme := int((mem.get("host") or {}).get("nvme") or 0)) else None,
    }


def _adjusted(payload: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The defaults the estimator changed for this model, each with its field's label."""
    return [a | {"label": plan_field(a["field"]).spec.label} for a in payload.get("adjusted", [])]


def largest_terms(contract: Mapping[str, Any], n: int = 3) -> list[dict[str, Any]]:
    """The ``n`` largest ``memory.terms`` that are parts of a component: ``{"name", "label", "bytes", "text",
    "share", "counts"}``."""
    total = charts.peak_bytes(contract) or 1
    terms = sorted((t for t in contract["memory"]["terms"] if t["bytes"] > 0 and t["component"]),
                   key=lambda t: -int(t["bytes"]))  # fmt: skip
    return [{"name": t["name"], "label": t["name"].replace("_", " ").capitalize(), "bytes": t["bytes"],
             "text": gib_text(t["bytes"]), "share": f"{100 * t['bytes'] / total:.0f}%", "counts": t["counts"]}
            for t in terms[:n]]  # fmt: skip


def notes_of(contract: Mapping[str, Any]) -> list[str]:
    """The plain-language notes of an estimate: ``memory.notes``, the estimate's notes, the model's notes."""
    out: list[str] = []
    for note in (*contract["memory"]["notes"], *contract["notes"], *contract["model"]["notes"]):
        if note not in out:
            out.append(note)
    return out


def rule_of_thumb(contract: Mapping[str, Any], method: str = "full") -> dict[str, Any]:
    """The figure people quote, ``params × 2 bytes`` (``{"params", "bytes", "text", "extra", "why"}``): from
    ``storage.rule_of_thumb``; for QLoRA ``extra`` gives the 4-bit version; ``why`` lists why the exact figures
    differ."""
    storage = contract["storage"]
    rule = storage["rule_of_thumb"]
    params = rule["params"]
    extra = None
    if method == "qlora":
        extra = (f"4-bit: {count_text(params)} × 0.5 bytes = {gb_text(rule['int4'])}, "
                 f"{gb_text(rule['qlora_total'])} with the adapter")  # fmt: skip
    text = f"{count_text(params)} parameters × 2 bytes = {gb_text(rule['fp16'])}"
    return {"params": params, "bytes": rule["fp16"], "text": text, "extra": extra,
            "why": list(storage["why_exact_differs"])}  # fmt: skip


def fits_rows(contract: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The contract's ``fits`` as rows: fitting GPUs first (tightest first), then the others (closest first). A GPU
    that cannot run the plan for another reason than memory (no bfloat16) says that reason, not a shortfall."""
    rows = []
    for g in contract["fits"]:
        headroom = int(g["headroom_bytes"])
        if g["fits"]:
            status = f"{gib_text(headroom)} headroom"
        elif g["reason"]:
            status = g["reason"] + ("" if headroom >= 0 else f"; also {gib_text(-headroom)} short")
        else:
            status = f"{gib_text(-headroom)} short"
        rows.append({"id": g["id"], "name": g["name"], "fits": g["fits"], "headroom": headroom, "status": status,
                     "memory_text": gib_text(g["usable_bytes"]), "reason": g["reason"], "num_gpus": None})  # fmt: skip
    rows.sort(
        key=lambda r: (not r["fits"], r["reason"] is not None, -r["headroom"] if not r["fits"] else r["headroom"])
    )
    return rows
