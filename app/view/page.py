"""The page's view model: a plan → the payload of ``POST /api/charts`` and the values the result fragments show.

``compute`` estimates full, LoRA and QLoRA side by side (or the one method asked for), sweeps sequence length and
batch size, and builds the Plotly figures (``app.view.charts``); ``results_view`` turns that payload into the
pre-formatted values of the Jinja macros in ``templates/_results.html``. Every number comes from the estimator's
contract; nothing here computes memory.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from app.service import EstimateService, Resolved
from app.view import charts
from app.view.form import METHOD_LABELS, VIEW_METHODS
from estimator import GIB, METHODS, EstimatorError, Plan, PlanError, catalog, count_text, gb_text, gib_text

SEQ_SWEEP_MIN = 256
SEQ_SWEEP_MAX = 1 << 20
BATCH_SWEEP: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
REFERENCE_CAPACITY_GB = 80


def seq_sweep_values(context: int) -> list[int]:
    """Powers of two from 256 up to the model's context length (at least one point)."""
    values = []
    n = SEQ_SWEEP_MIN
    while n <= min(context, SEQ_SWEEP_MAX):
        values.append(n)
        n *= 2
    return values or [max(1, min(context, SEQ_SWEEP_MIN))]


def gpu_capacity(gpu_id: str | None) -> dict[str, Any]:
    """The capacity line of the sweeps: the selected GPU's usable memory, else an 80 GB-class reference."""
    chosen = catalog.find_gpu(gpu_id) if gpu_id else None
    reference = chosen is None
    if chosen is None:
        chosen = next((g for g in catalog.gpus() if charts.nominal_gb(g.memory_bytes) == REFERENCE_CAPACITY_GB), None)
    if chosen is None:
        return {"label": f"{REFERENCE_CAPACITY_GB} GiB", "name": f"{REFERENCE_CAPACITY_GB} GiB (for reference)",
                "bytes": REFERENCE_CAPACITY_GB * GIB, "gpu": None}  # fmt: skip
    return {
        "label": f"{charts.short_gpu_name(chosen.name)}: {gib_text(chosen.usable_bytes)} usable",
        "name": chosen.name + (" (for reference)" if reference else ""),
        "bytes": chosen.usable_bytes,
        "gpu": chosen.id,
    }


def _sweep(service: EstimateService, plan: Plan, resolved: Resolved, name: str, values: Sequence[int],
           capacity: Mapping[str, Any]) -> list[dict[str, Any]]:  # fmt: skip
    points = []
    for value in values:
        try:
            # each point with the plan's GPU: its kernels and runtime constants; fits as the verdict says (the
            # high edge of the total's range)
            contract = service.contract(plan.replace(**{name: value}), resolved)
            peak: int | None = charts.peak_bytes(contract)
            high = contract["memory"]["range"]["total"][1]
        except EstimatorError:
            peak = high = None
        points.append({"x": value, "peak": peak, "fits": None if high is None else high <= capacity["bytes"]})
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
            estimates[method] = service.contract(variant, resolved)
            variants[method] = variant
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
     "capacity": {"label", "name", "bytes", "gpu"}, "charts": {"memory", "seq_len", "batch_size", "storage"}}
    """
    plan, view = page_plan(plan_data)
    return compute_resolved(service, plan, view, service.resolve(plan, token))


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
    figures = {
        "memory": charts.memory_bar_chart(estimates, charts.capacity_lines(plan.gpu),
                                          selected_method=None if view == "compare" else primary),
        "seq_len": charts.sweep_line_chart(sweeps["seq_len"], capacity, x_title="Sequence length (tokens)",
                                           title=f"Peak memory vs sequence length (batch size {plan.batch_size})"),
        "batch_size": charts.sweep_line_chart(sweeps["batch_size"], capacity, x_title="Batch size (per GPU)",
                                              title=f"Peak memory vs batch size (sequence length {plan.seq_len:,})"),
        "storage": charts.storage_chart(estimates[primary]["storage"]),
    }  # fmt: skip
    plan_out = plan.to_dict() | {"method": view}
    if plan_out["config"] is not None:
        plan_out["config"] = plan_out["model"] = None
    return {"method": view, "primary": primary, "plan": plan_out, "model_label": resolved.label,
            "estimates": estimates, "errors": errors, "sweeps": sweeps, "capacity": capacity,
            "charts": figures}  # fmt: skip


def _method_rows(payload: Mapping[str, Any], selected: Sequence[str]) -> list[dict[str, Any]]:
    """One row per method: its peak and trainable count, or why the estimator refused it."""
    rows: list[dict[str, Any]] = []
    for method in METHODS:
        contract = payload["estimates"].get(method)
        if contract is None:
            rows.append({"method": method, "label": METHOD_LABELS[method], "error": payload["errors"].get(method)})
            continue
        peak = charts.peak_bytes(contract)
        rows.append({"method": method, "label": METHOD_LABELS[method], "peak": peak, "peak_text": gib_text(peak),
                     "trainable_text": count_text(contract["params"]["trainable"]),
                     "fits": peak <= payload["capacity"]["bytes"], "selected": method in selected,
                     "error": None})  # fmt: skip
    return rows


def _verdict(view: str, rows: list[dict[str, Any]], peak: int, capacity: Mapping[str, Any]) -> tuple[str, bool]:
    """The headline sentence against the capacity line, and whether the plan fits it."""
    against = f"{capacity['name']}, {gib_text(capacity['bytes'])} usable"
    if view != "compare":
        fits = peak <= capacity["bytes"]
        margin = gib_text(abs(capacity["bytes"] - peak))
        return (
            f"Fits on {against}: {margin} headroom." if fits else f"Does not fit on {against}: {margin} short."
        ), fits
    fitting = [r["label"] for r in rows if r["error"] is None and r["fits"]]
    failing = [r["label"] for r in rows if r["error"] is None and not r["fits"]]
    if not failing:
        return f"{'All three' if len(fitting) == 3 else _join(fitting)} fit on {against}.", True
    if not fitting:
        return f"{_join(failing)} {'does' if len(failing) == 1 else 'do'} not fit on {against}.", False
    verb = "fits" if len(fitting) == 1 else "fit"
    return f"{_join(fitting)} {verb} on {against}; {_join(failing)} not.", True


def results_view(payload: Mapping[str, Any]) -> dict[str, Any]:
    """What the result fragments show, from a ``compute`` payload: numbers pre-formatted for the template."""
    primary, view, estimates = payload["primary"], payload["method"], payload["estimates"]
    methods = list(METHODS) if view == "compare" else [primary]
    contract = estimates[primary]
    peak = charts.peak_bytes(contract)
    rows = _method_rows(payload, methods)
    verdict, fits_capacity = _verdict(view, rows, peak, payload["capacity"])
    breakdown = [{"key": k, "label": charts.COMPONENT_LABELS[k], "bytes": v, "text": gib_text(v)}
                 for k, v in charts.components_of(contract).items() if v]  # fmt: skip
    notes = {m: {"largest": largest_terms(estimates[m]), "notes": notes_of(estimates[m])}
             for m in methods if m in estimates}  # fmt: skip
    return {
        "method": view,
        "primary": primary,
        "primary_label": METHOD_LABELS[primary],
        "model_label": payload["model_label"],
        "peak_text": gib_text(peak),
        "peak": peak,
        "rule": rule_of_thumb(contract, primary),
        "breakdown": breakdown,
        "rows": rows,
        "notes": notes,
        "storage": charts.storage_rows(contract["storage"]),
        "fits": fits_rows(contract),
        "capacity": payload["capacity"],
        "verdict": verdict,
        "fits_capacity": fits_capacity,
        "num_gpus": payload["plan"]["num_gpus"],
        "scale": scale_view(contract),
    }


def scale_view(contract: Mapping[str, Any]) -> dict[str, Any]:
    """Per GPU vs all GPUs together, and the host RAM per rank, labelled for the summary fragment."""
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
    }


def _join(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def largest_terms(contract: Mapping[str, Any], n: int = 3) -> list[dict[str, Any]]:
    """The ``n`` largest ``memory.terms``: ``{"name", "label", "bytes", "text", "share", "counts"}``."""
    total = charts.peak_bytes(contract) or 1
    terms = sorted((t for t in contract["memory"]["terms"] if t["bytes"] > 0), key=lambda t: -int(t["bytes"]))
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
    """The contract's ``fits`` as rows ``{"id", "name", "fits", "headroom", "headroom_text", "memory_text"}``:
    fitting GPUs first (tightest first), then the others (closest first)."""
    rows = [{"id": g["id"], "name": g["name"], "fits": g["fits"], "headroom": g["headroom_bytes"],
             "headroom_text": gib_text(abs(g["headroom_bytes"])), "memory_text": gib_text(g["usable_bytes"]),
             "reason": g["reason"], "num_gpus": None}
            for g in contract["fits"]]  # fmt: skip
    rows.sort(key=lambda r: (not r["fits"], -r["headroom"] if not r["fits"] else r["headroom"]))
    return rows
