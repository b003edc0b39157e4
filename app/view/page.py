"""The planner page.

``GET /`` renders ``templates/index.html`` with the form filled from the query string (the query string holds
the whole plan, so a link reproduces the page) and, when the plan is valid, the results rendered on the
server: the page is useful before, and without, its JavaScript. ``static/app.js`` then enhances it: results
update in place through ``POST /api/charts`` and the URL follows the form (``history.replaceState``).

``POST /api/charts`` takes a plan like ``POST /api/estimate`` (``method`` may also be ``"compare"``) and
answers, by calling ``estimator.estimate`` directly::

    {"method", "plan", "estimates": {method: contract}, "errors": {method: message},
     "sweeps": {"seq_len": {method: [{"x", "peak", "fits"}]}, "batch_size": {...}},
     "capacity": {"label", "bytes"}, "charts": {"memory", "seq_len", "batch_size", "storage"},
     "html": {"summary", "notes", "storage", "fits"}}

``charts`` are Plotly figure dicts (``app.charts``) and ``html`` the result fragments the page swaps in, from
the same Jinja macros the server-side render uses.

``GET /static/vendor/plotly.min.js`` serves Plotly's JS bundle from the installed ``plotly`` package (no copy
in the repository, no CDN). Include this router before mounting ``/static`` so the route wins.
"""

from __future__ import annotations

import base64
import binascii
import functools
import gzip
import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Body, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.templating import Jinja2Templates

from app import charts
from app.config_guard import guard_config_call

router = APIRouter()

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TEMPLATES_DIR = PROJECT_ROOT / "templates"

VIEW_METHODS: tuple[str, ...] = ("full", "lora", "qlora", "compare")
SEQ_SWEEP_MIN = 256
SEQ_SWEEP_MAX = 1 << 20
BATCH_SWEEP: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
DEFAULT_CONTEXT = 32768
MAX_CONFIG_CHARS = 400_000
PREFERRED_DEFAULT_MODELS: tuple[str, ...] = (
    "llama-3.1-8b",
    "meta-llama/Llama-3.1-8B",
    "qwen2.5-7b",
    "mistral-7b",
)
REFERENCE_CAPACITY_GB = 80

# Form fields, in form order: name -> kind. Names are the plan's field names (``method`` also takes
# ``compare``; ``config`` is the inline config.json, base64url-encoded JSON in the query string).
FIELDS: dict[str, str] = {
    "model": "str",
    "config": "config",
    "method": "view_method",
    "dtype": "choice",
    "mixed_precision": "bool",
    "quant_type": "choice",
    "double_quant": "bool",
    "lora_r": "int",
    "lora_alpha": "number",
    "lora_dropout": "number",
    "target_modules": "targets",
    "use_dora": "bool",
    "optimizer": "choice",
    "batch_size": "int",
    "seq_len": "int",
    "gradient_checkpointing": "bool",
    "attn_implementation": "choice",
    "gpu": "gpu",
    "num_gpus": "int",
    "sharding": "choice",
}


class PageError(Exception):
    """A plan the page cannot estimate: carries the HTTP status, message and suggested ids."""

    def __init__(self, status: int, message: str, suggestions: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.suggestions = list(suggestions)


# --- estimator access (imported lazily: the page renders its form even if the estimator is broken) ------


def _estimator() -> Any:
    import estimator

    return estimator


def _plan_defaults() -> dict[str, Any]:
    plan_cls = _estimator().Plan
    return {f: getattr(plan_cls, f, None) for f in FIELDS if f not in ("model", "config")} | {
        "method": "qlora",
    }


def _choices() -> dict[str, tuple[str, ...]]:
    from estimator import _plan

    return {
        "method": VIEW_METHODS,
        "dtype": _plan.DTYPES,
        "quant_type": _plan.QUANT_TYPES,
        "optimizer": _plan.OPTIMIZERS,
        "attn_implementation": _plan.ATTN_IMPLEMENTATIONS,
        "sharding": _plan.SHARDINGS,
    }


def catalog_gpus() -> list[dict[str, Any]]:
    """Catalog GPUs as plain dicts (empty if the catalog does not load)."""
    try:
        from estimator import catalog
    except ImportError:  # pragma: no cover - only while the catalog is missing
        return []
    return [
        {
            "id": g.id,
            "name": g.name,
            "vendor": getattr(g, "vendor", ""),
            "memory_bytes": int(g.memory_bytes),
            "usable_bytes": int(getattr(g, "usable_bytes", None) or g.memory_bytes),
        }
        for g in catalog.gpus()
    ]


def catalog_models() -> list[dict[str, Any]]:
    """Catalog models as ``{"id", "hf_id", "name", "family", "gated"}`` (empty without a catalog)."""
    try:
        from estimator import catalog
    except ImportError:  # pragma: no cover
        return []
    return [
        {
            "id": m.id,
            "hf_id": getattr(m, "hf_id", m.id),
            "name": getattr(m, "name", m.id),
            "family": getattr(m, "family", ""),
            "gated": bool(getattr(m, "gated", False)),
        }
        for m in catalog.models()
    ]


def default_model() -> str:
    """The model the bare page shows: a well-known catalog model, else the first one."""
    models = catalog_models()
    ids = {m["id"] for m in models} | {m["hf_id"] for m in models}
    for name in PREFERRED_DEFAULT_MODELS:
        if name in ids:
            return name
    return models[0]["id"] if models else "meta-llama/Llama-3.1-8B"


# --- query string <-> form state ---------------------------------------------------------------------------


@dataclass
class FormState:
    """The form as the page shows it, and the plan it stands for."""

    values: dict[str, Any]
    """Field name -> value to show (strings, ints, bools; ``config`` the base64url text)."""
    method: str
    """``full``, ``lora``, ``qlora`` or ``compare``."""
    plan: dict[str, Any] | None
    """The plan as a JSON object (``method`` a real method: ``qlora`` when comparing), None on errors."""
    errors: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] | None = None


def encode_config(config: Mapping[str, Any]) -> str:
    """A config.json object as compact base64url JSON (no padding), the form the query string holds."""
    raw = json.dumps(config, separators=(",", ":"), ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_config(text: str) -> dict[str, Any]:
    """The inverse of ``encode_config``; ValueError with a readable message if it is not a JSON object."""
    if len(text) > MAX_CONFIG_CHARS:
        raise ValueError("the inline config.json is too large")
    try:
        raw = base64.urlsafe_b64decode(text.strip() + "=" * (-len(text.strip()) % 4))
        data = json.loads(raw.decode())
    except (binascii.Error, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"the inline config.json could not be read: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError("the inline config.json must be a JSON object")
    return data


_TRUE = {"1", "true", "on", "yes"}
_FALSE = {"0", "false", "off", "no", ""}


def parse_query(params: Mapping[str, Sequence[str]]) -> FormState:
    """Form state from a query string (``{name: [values]}``; the last value of a name wins).

    Missing fields take the plan's defaults (and the default model). Bad values are kept as typed, with a
    message in ``errors``, and ``plan`` is then None.
    """
    defaults = _plan_defaults()
    choices = _choices()
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}
    config: dict[str, Any] | None = None

    def last(name: str) -> str | None:
        got = params.get(name)
        if not got:
            return None
        return str(got[-1]).strip()

    for name, kind in FIELDS.items():
        raw = last(name)
        default = defaults.get(name)
        if kind == "str":
            values[name] = raw or ""
        elif kind == "config":
            values[name] = raw or ""
            if raw:
                try:
                    config = decode_config(raw)
                except ValueError as exc:
                    errors[name] = str(exc)
        elif kind == "view_method":
            values[name] = raw if raw in VIEW_METHODS else ("qlora" if raw is None else raw)
            if values[name] not in VIEW_METHODS:
                errors[name] = f"method must be one of {', '.join(VIEW_METHODS)}"
        elif kind == "choice":
            values[name] = raw if raw else default
            if values[name] not in choices[name]:
                errors[name] = f"{name} must be one of {', '.join(choices[name])}"
        elif kind == "bool":
            if raw is None:
                values[name] = bool(default)
            elif raw.lower() in _TRUE:
                values[name] = True
            elif raw.lower() in _FALSE:
                values[name] = False
            else:
                values[name] = bool(default)
                errors[name] = f"{name} must be true or false"
        elif kind in ("int", "number"):
            if raw is None or raw == "":
                values[name] = default
                continue
            try:
                number = float(raw)
                if not math.isfinite(number):
                    raise ValueError
                if kind == "int":
                    if not number.is_integer():
                        raise ValueError
                    values[name] = int(number)
                else:
                    values[name] = int(number) if number.is_integer() else number
            except ValueError:
                values[name] = raw
                errors[name] = f"{name.replace('_', ' ')} must be a{'n integer' if kind == 'int' else ' number'}"
        elif kind == "targets":
            text = raw if raw else "all-linear"
            parts = [p.strip() for p in text.replace(" ", ",").split(",") if p.strip()]
            values[name] = "all-linear" if parts in ([], ["all-linear"]) else ",".join(parts)
        elif kind == "gpu":
            values[name] = raw or ""
    if config is None and not values["model"] and "config" not in errors:
        values["model"] = default_model()
    method = values["method"]
    state = FormState(values=values, method=method, plan=None, errors=errors, config=config)
    if not errors:
        state.plan = plan_dict(values, config)
    return state


def plan_dict(values: Mapping[str, Any], config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The plan (a JSON object for ``Plan.from_dict``) that form values stand for."""
    plan: dict[str, Any] = {}
    for name in FIELDS:
        if name in ("model", "config", "gpu"):
            continue
        plan[name] = values[name]
    if plan["method"] == "compare":
        plan["method"] = "qlora"
    targets = values["target_modules"]
    plan["target_modules"] = "all-linear" if targets == "all-linear" else targets.split(",")
    if config is not None:
        plan["config"] = dict(config)
    else:
        plan["model"] = values["model"]
    plan["gpu"] = values["gpu"] or None
    if plan["method"] == "full":
        plan["use_dora"] = False
    return plan


def query_string(values: Mapping[str, Any]) -> str:
    """The query string of form values (the inverse of ``parse_query`` for valid values)."""
    from urllib.parse import urlencode

    pairs: list[tuple[str, str]] = []
    for name in FIELDS:
        value = values.get(name)
        if name == "config" and not value:
            continue
        if name == "model" and values.get("config"):
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        pairs.append((name, "" if value is None else str(value)))
    return urlencode(pairs)


# --- computing the results ----------------------------------------------------------------------------------

ConfigResolver = Callable[[Any], "Mapping[str, Any] | None"]


def resolve_config(plan: Any, request: Request | None = None) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """``(config to pass to estimate, the model's config.json)`` for a plan, like ``POST /api/estimate``.

    An inline config travels in the plan and a catalog model is looked up by the estimator, so for those the
    first item is None; any other id goes to the app's Hub client (``app.state.hub``) when there is one.
    Without one, the estimator raises ``UnknownModelError`` with suggestions.
    """
    if plan.config is not None:
        return None, dict(plan.config)
    try:
        from estimator import catalog

        model = catalog.find_model(plan.model)
    except ImportError:  # pragma: no cover
        model = None
    if model is not None:
        return None, dict(model.config)
    hub = getattr(getattr(getattr(request, "app", None), "state", None), "hub", None)
    if hub is None or not callable(getattr(hub, "resolve", None)):
        return None, None
    from app.hub import HubError

    try:
        resolved = hub.resolve(plan.model, _request_token(request))
    except HubError as exc:
        extra = getattr(exc, "extra", {}) or {}
        suggestions = getattr(exc, "suggestions", None) or extra.get("suggestions") or ()
        raise PageError(int(getattr(exc, "status_code", 502)), exc.message, tuple(suggestions)) from exc
    return dict(resolved.config), dict(resolved.config)


def _estimate(est: Any, plan: Any, config: Mapping[str, Any] | None) -> dict[str, Any]:
    """``estimate(plan, config=config).to_dict()``; a crash on an odd config becomes ``ConfigError``."""
    result: dict[str, Any] = guard_config_call(lambda: est.estimate(plan, config=config).to_dict(), "config")
    return result


def _request_token(request: Request | None) -> str | None:
    """A Hub token sent with the request (``X-HF-Token`` or ``Authorization: Bearer``), for the Hub only."""
    if request is None:
        return None
    token = request.headers.get("x-hf-token")
    auth = request.headers.get("authorization", "")
    if not token and auth.lower().startswith("bearer "):
        token = auth[7:]
    return token.strip() or None if token else None


def _context_length(config: Mapping[str, Any] | None, contract: Mapping[str, Any]) -> int:
    model = contract.get("model") or {}
    for source in (
        model.get("architecture") if isinstance(model, Mapping) else None,
        model,
        config or {},
        (config or {}).get("text_config") or {},
    ):
        if isinstance(source, Mapping):
            for key in ("max_position_embeddings", "context_length", "max_seq_len", "n_positions"):
                value = source.get(key)
                if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                    return value
    return DEFAULT_CONTEXT


def seq_sweep_values(context: int) -> list[int]:
    """Powers of two from 256 up to the model's context length (at least one point)."""
    values = []
    n = SEQ_SWEEP_MIN
    while n <= min(context, SEQ_SWEEP_MAX):
        values.append(n)
        n *= 2
    return values or [max(1, min(context, SEQ_SWEEP_MIN))]


def _gpu_capacity(gpus: Sequence[Mapping[str, Any]], gpu_id: str | None) -> dict[str, Any]:
    """The capacity line of the sweeps: the selected GPU's usable memory, else an 80 GB-class reference."""
    chosen = next((g for g in gpus if g["id"] == gpu_id), None) if gpu_id else None
    if chosen is not None:
        return {
            "label": f"{charts.short_gpu_name(chosen['name'])}: {charts.human_gib(chosen['usable_bytes'])} usable",
            "name": chosen["name"],
            "bytes": chosen["usable_bytes"],
            "gpu": chosen["id"],
        }
    ref = next((g for g in gpus if charts._nominal_gb(g["memory_bytes"]) == REFERENCE_CAPACITY_GB), None)
    if ref is not None:
        return {
            "label": f"{charts.short_gpu_name(ref['name'])}: {charts.human_gib(ref['usable_bytes'])} usable",
            "name": f"{ref['name']} (for reference)",
            "bytes": ref["usable_bytes"],
            "gpu": ref["id"],
        }
    return {
        "label": f"{REFERENCE_CAPACITY_GB} GiB",
        "name": f"{REFERENCE_CAPACITY_GB} GiB (for reference)",
        "bytes": REFERENCE_CAPACITY_GB * charts.GIB,
        "gpu": None,
    }


def compute(plan_data: Mapping[str, Any], request: Request | None = None) -> dict[str, Any]:
    """The payload of ``POST /api/charts`` for a plan JSON object (``method`` may be ``compare``).

    Raises ``PageError`` for a plan the estimator refuses.
    """
    est = _estimator()
    data = dict(plan_data)
    view = data.get("method", "qlora")
    if view not in VIEW_METHODS:
        raise PageError(422, f"method must be one of {', '.join(VIEW_METHODS)}; got {view!r}")
    if view == "compare":
        data["method"] = "qlora"
    try:
        plan = est.Plan.from_dict(data)
        config, model_config = resolve_config(plan, request)
    except est.EstimatorError as exc:  # PageError from the Hub client passes through
        raise _page_error(exc) from exc
    methods = list(charts.METHODS) if view == "compare" else [plan.method]
    estimates: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    variants: dict[str, Any] = {}
    first_error: Exception | None = None
    for method in charts.METHODS:
        variant = plan.replace(method=method, use_dora=plan.use_dora and method != "full")
        try:
            estimates[method] = _estimate(est, variant, config)
            variants[method] = variant
        except est.EstimatorError as exc:
            if view != "compare" and method == plan.method:
                raise _page_error(exc) from exc
            errors[method] = str(exc)
            first_error = first_error or exc
    if not estimates:
        assert first_error is not None
        raise _page_error(first_error)
    # comparing: the summary details QLoRA, else the first method the estimator accepts
    primary = plan.method if plan.method in estimates else next(m for m in ("lora", "full") if m in estimates)
    gpus = catalog_gpus()
    capacity = _gpu_capacity(gpus, plan.gpu)
    context = _context_length(model_config, estimates[primary])
    seq_values = seq_sweep_values(context if not plan.allow_long_context else max(context, plan.seq_len))
    sweeps: dict[str, dict[str, list[dict[str, Any]]]] = {"seq_len": {}, "batch_size": {}}
    for method in methods:
        if method not in variants:
            continue
        sweeps["seq_len"][method] = _sweep(est, variants[method], config, "seq_len", seq_values, capacity)
        sweeps["batch_size"][method] = _sweep(est, variants[method], config, "batch_size", BATCH_SWEEP, capacity)
    shown = {m: estimates[m] for m in charts.METHODS if m in estimates}
    figures = {
        "memory": charts.memory_bar_chart(
            shown,
            charts.capacity_lines(gpus, plan.gpu),
            selected_method=None if view == "compare" else primary,
        ),
        "seq_len": charts.sweep_line_chart(
            sweeps["seq_len"],
            capacity,
            x_title="Sequence length (tokens)",
            title=f"Peak memory vs sequence length (batch size {plan.batch_size})",
        ),
        "batch_size": charts.sweep_line_chart(
            sweeps["batch_size"],
            capacity,
            x_title="Batch size (per GPU)",
            title=f"Peak memory vs batch size (sequence length {plan.seq_len:,})",
        ),
        "storage": charts.storage_chart(estimates[primary].get("storage", {})),
    }
    plan_out = plan.to_dict()
    plan_out["method"] = view
    if plan_out.get("config") is not None:
        plan_out["config"] = None
        plan_out["model"] = None
    payload: dict[str, Any] = {
        "method": view,
        "primary": primary,
        "plan": plan_out,
        "model_label": _model_label(plan, model_config),
        "estimates": estimates,
        "errors": errors,
        "sweeps": sweeps,
        "capacity": capacity,
        "charts": figures,
    }
    return payload


def _sweep(
    est: Any,
    plan: Any,
    config: Mapping[str, Any] | None,
    name: str,
    values: Sequence[int],
    capacity: Mapping[str, Any],
) -> list[dict[str, Any]]:
    points = []
    for value in values:
        try:
            # the sweep's capacity line stands for the GPU, so each point skips the estimate's fit search
            peak: int | None = charts.peak_bytes(_estimate(est, plan.replace(**{name: value}, gpu=None), config))
        except est.EstimatorError:
            peak = None
        points.append({"x": value, "peak": peak, "fits": None if peak is None else peak <= capacity["bytes"]})
    return points


def _model_label(plan: Any, config: Mapping[str, Any] | None) -> str:
    if plan.model is not None:
        try:
            from estimator import catalog

            model = catalog.find_model(plan.model)
        except ImportError:  # pragma: no cover
            model = None
        return str(getattr(model, "name", None) or plan.model)
    cfg = config or {}
    name = cfg.get("_name_or_path") or cfg.get("model_type") or "model"
    return f"config.json ({name})"


def _page_error(exc: Exception) -> PageError:
    est = _estimator()
    if isinstance(exc, est.UnknownModelError):
        return PageError(404, str(exc), getattr(exc, "suggestions", ()))
    return PageError(422, str(exc))


# --- the results as the template shows them -------------------------------------------------------------


def results_view(payload: Mapping[str, Any]) -> dict[str, Any]:
    """What the result fragments show, from a ``compute`` payload: numbers pre-formatted for the template."""
    primary = payload["primary"]
    view = payload["method"]
    estimates = payload["estimates"]
    methods = list(charts.METHODS) if view == "compare" else [primary]
    contract = estimates[primary]
    capacity = payload["capacity"]
    rows = []
    for method in charts.METHODS:
        if method not in estimates:
            rows.append(
                {
                    "method": method,
                    "label": charts.METHOD_LABELS[method],
                    "error": payload["errors"].get(method),
                }
            )
            continue
        c = estimates[method]
        peak = charts.peak_bytes(c)
        params = c.get("params", {}) or {}
        rows.append(
            {
                "method": method,
                "label": charts.METHOD_LABELS[method],
                "peak": peak,
                "peak_text": charts.human_gib(peak),
                "trainable_text": charts.human_count(params.get("trainable")),
                "fits": peak <= capacity["bytes"],
                "selected": method in methods,
                "error": None,
            }
        )
    components = charts.components_of(contract)
    breakdown = [
        {"key": k, "label": charts.COMPONENT_LABELS[k], "bytes": v, "text": charts.human_gib(v)}
        for k, v in components.items()
        if v
    ]
    fitting = [r["label"] for r in rows if r.get("peak") is not None and r["fits"]]
    failing = [r["label"] for r in rows if r.get("peak") is not None and not r["fits"]]
    against = f"{capacity['name']}, {charts.human_gib(capacity['bytes'])} usable"
    if view == "compare":
        if not failing:
            verdict = f"{'All three' if len(fitting) == 3 else _join(fitting)} fit on {against}."
        elif not fitting:
            verdict = f"{_join(failing)} {'does' if len(failing) == 1 else 'do'} not fit on {against}."
        else:
            verb = "fits" if len(fitting) == 1 else "fit"
            verdict = f"{_join(fitting)} {verb} on {against}; {_join(failing)} not."
        fits_capacity = bool(fitting)
    else:
        peak = charts.peak_bytes(contract)
        fits_capacity = peak <= capacity["bytes"]
        margin = charts.human_gib(abs(capacity["bytes"] - peak))
        verdict = (
            f"Fits on {against}: {margin} headroom." if fits_capacity else f"Does not fit on {against}: {margin} short."
        )
    notes = {
        m: {"largest": largest_terms(estimates[m]), "notes": notes_of(estimates[m])} for m in methods if m in estimates
    }
    return {
        "method": view,
        "primary": primary,
        "primary_label": charts.METHOD_LABELS[primary],
        "model_label": payload["model_label"],
        "peak_text": charts.human_gib(charts.peak_bytes(contract)),
        "peak": charts.peak_bytes(contract),
        "rule": rule_of_thumb(contract, primary),
        "breakdown": breakdown,
        "rows": rows,
        "notes": notes,
        "storage": charts.storage_rows(contract.get("storage", {}) or {}),
        "fits": fits_rows(contract),
        "capacity": capacity,
        "verdict": verdict,
        "fits_capacity": fits_capacity,
        "num_gpus": (payload.get("plan") or {}).get("num_gpus", 1),
    }


def _join(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def largest_terms(contract: Mapping[str, Any], n: int = 3) -> list[dict[str, Any]]:
    """The ``n`` largest ``memory.terms``: ``{"name", "label", "bytes", "text", "share", "counts"}``."""
    memory = contract.get("memory", {}) or {}
    total = charts.peak_bytes(contract) or 1
    terms = [t for t in memory.get("terms") or () if isinstance(t, Mapping) and (t.get("bytes") or 0) > 0]
    terms.sort(key=lambda t: -int(t["bytes"]))
    return [
        {
            "name": t.get("name"),
            "label": str(t.get("name") or t.get("component") or "").replace("_", " ").capitalize(),
            "bytes": int(t["bytes"]),
            "text": charts.human_gib(int(t["bytes"])),
            "share": f"{100 * int(t['bytes']) / total:.0f}%",
            "counts": str(t.get("counts") or ""),
        }
        for t in terms[:n]
    ]


def notes_of(contract: Mapping[str, Any]) -> list[str]:
    """The plain-language notes of an estimate: ``memory.notes`` first, then the estimate's other notes."""
    out: list[str] = []
    sources = (
        (contract.get("memory", {}) or {}).get("notes"),
        contract.get("notes"),
        (contract.get("model", {}) or {}).get("notes") if isinstance(contract.get("model"), Mapping) else None,
    )
    for source in sources:
        for note in source or ():
            if isinstance(note, str) and note not in out:
                out.append(note)
    return out


def rule_of_thumb(contract: Mapping[str, Any], method: str = "full") -> dict[str, Any]:
    """The figure people quote, ``params × 2 bytes`` (``{"params", "bytes", "text", "extra", "why"}``).

    ``storage.rule_of_thumb`` holds ``params`` and the products (``fp16``, ``int4``, ``qlora_total``); for
    QLoRA ``extra`` gives the 4-bit version. ``why`` lists the reasons the exact figures differ.
    """
    storage = contract.get("storage", {}) or {}
    rule = storage.get("rule_of_thumb")
    params = (contract.get("params", {}) or {}).get("total")
    extra = None
    if isinstance(rule, Mapping):
        params = rule.get("params", params)
        size = rule.get("fp16", rule.get("bytes"))
        if method == "qlora" and rule.get("int4") is not None:
            extra = f"4-bit: {charts.human_count(params)} × 0.5 bytes = {charts.human_gb(rule['int4'])}"
            if rule.get("qlora_total") is not None:
                extra += f", {charts.human_gb(rule['qlora_total'])} with the adapter"
    else:
        size = rule
    if size is None and isinstance(params, int):
        size = params * 2
    text = f"{charts.human_count(params)} parameters × 2 bytes = {charts.human_gb(size)}"
    why = [w for w in storage.get("why_exact_differs") or () if isinstance(w, str)]
    return {"params": params, "bytes": size, "text": text, "extra": extra, "why": why}


def fits_rows(contract: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The contract's ``fits`` as rows ``{"id", "name", "fits", "headroom", "text"}``, fitting ones first."""
    raw = contract.get("fits") or []
    if isinstance(raw, Mapping):
        raw = [dict(v, id=k) if isinstance(v, Mapping) else {"id": k, "fits": bool(v)} for k, v in raw.items()]
    rows = []
    for item in raw:
        if not isinstance(item, Mapping):
            continue
        gpu = item.get("gpu")
        gpu_id = item.get("id") or (gpu.get("id") if isinstance(gpu, Mapping) else gpu)
        name = item.get("name") or (gpu.get("name") if isinstance(gpu, Mapping) else None) or gpu_id
        headroom = item.get("headroom", item.get("headroom_bytes"))
        fits = item.get("fits")
        if fits is None and isinstance(headroom, int | float):
            fits = headroom >= 0
        memory = item.get("usable_bytes") or item.get("memory_bytes")
        rows.append(
            {
                "id": gpu_id,
                "name": name,
                "fits": bool(fits),
                "headroom": headroom,
                "headroom_text": charts.human_gib(abs(headroom)) if isinstance(headroom, int | float) else "—",
                "memory_text": charts.human_gib(memory) if memory else "",
                "num_gpus": item.get("num_gpus"),
            }
        )
    rows.sort(key=lambda r: (not r["fits"], -(r["headroom"] or 0) if not r["fits"] else (r["headroom"] or 0)))
    return rows


# --- templates --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _templates(directory: str) -> Jinja2Templates:
    templates = Jinja2Templates(directory=directory)
    env = templates.env
    env.filters["gib"] = charts.human_gib
    env.filters["gb"] = charts.human_gb
    env.filters["count"] = charts.human_count
    env.globals["plotly_version"] = _plotly_version()
    return templates


def templates_for(request: Request | None) -> Jinja2Templates:
    """Templates from ``app.state.settings.templates_dir`` when the app has settings, else ``templates/``."""
    settings = getattr(getattr(getattr(request, "app", None), "state", None), "settings", None)
    directory = getattr(settings, "templates_dir", None) or TEMPLATES_DIR
    return _templates(str(directory))


def render_fragments(request: Request | None, view: Mapping[str, Any]) -> dict[str, str]:
    """The result fragments (``summary``, ``notes``, ``storage``, ``fits``) as HTML strings."""
    module = templates_for(request).env.get_template("_results.html").module
    return {name: str(getattr(module, name)(view)) for name in ("summary", "notes", "storage", "fits")}


# --- routes -------------------------------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def index(request: Request) -> Response:
    """The planner: the form filled from the query string, and the results when the plan is valid."""
    state = parse_query({k: request.query_params.getlist(k) for k in request.query_params})
    payload: dict[str, Any] | None = None
    view: dict[str, Any] | None = None
    error: PageError | None = None
    if state.plan is not None:
        try:
            payload = compute(state.plan | {"method": state.method}, request)
            view = results_view(payload)
        except PageError as exc:
            error = exc
    context = {
        "form": state.values,
        "method": state.method,
        "form_errors": state.errors,
        "choices": _choices(),
        "gpus": catalog_gpus(),
        "models": catalog_models(),
        "result": view,
        "error": error,
        "initial": {"charts": payload["charts"], "method": payload["method"]} if payload else None,
        "config_name": _model_label_from_config(state.config) if state.config else "",
        "query": query_string(state.values),
        "suggestions": [
            {"id": sid, "href": "?" + query_string(state.values | {"model": sid, "config": ""})}
            for sid in (error.suggestions if error else [])
        ],
    }
    status = 200 if error is None else error.status
    if state.errors:
        status = 422
    return templates_for(request).TemplateResponse(request, "index.html", context, status_code=status)


def _model_label_from_config(config: Mapping[str, Any]) -> str:
    name = config.get("_name_or_path") or config.get("model_type") or "model"
    return f"config.json ({name})"


@router.post("/api/charts", tags=["page"])
def api_charts(request: Request, plan: dict[str, Any] = Body(...)) -> Response:  # noqa: B008
    """Estimates for full, LoRA and QLoRA side by side, sequence-length and batch-size sweeps, and the page's
    Plotly figures, for a plan like ``POST /api/estimate`` (``method`` may be ``compare``)."""
    try:
        payload = compute(plan, request)
    except PageError as exc:
        body: dict[str, Any] = {"detail": exc.message}
        if exc.suggestions:
            body["suggestions"] = exc.suggestions
        return JSONResponse(body, status_code=exc.status)
    payload["html"] = render_fragments(request, results_view(payload))
    return JSONResponse(payload)


# --- plotly.js from the installed package ---------------------------------------------------------------


def _plotly_version() -> str:
    try:
        return metadata.version("plotly")
    except metadata.PackageNotFoundError:  # pragma: no cover
        return "0"


def plotly_js_path() -> Path:
    """``plotly/package_data/plotly.min.js`` of the installed plotly package."""
    import importlib.util

    spec = importlib.util.find_spec("plotly")
    if spec is None or spec.origin is None:  # pragma: no cover
        raise FileNotFoundError("the plotly package is not installed")
    return Path(spec.origin).parent / "package_data" / "plotly.min.js"


@functools.lru_cache(maxsize=1)
def _plotly_bundle() -> tuple[bytes, bytes, str]:
    raw = plotly_js_path().read_bytes()
    return raw, gzip.compress(raw, compresslevel=6, mtime=0), hashlib.sha256(raw).hexdigest()[:16]


@router.get("/static/vendor/plotly.min.js", include_in_schema=False)
def plotly_js(request: Request) -> Response:
    """Plotly's JS bundle, gzipped when the client accepts it, cacheable for a year (the URL carries the
    version)."""
    raw, packed, digest = _plotly_bundle()
    etag = f'"{digest}"'
    headers = {
        "Cache-Control": "public, max-age=31536000, immutable",
        "ETag": etag,
        "Vary": "Accept-Encoding",
    }
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    if "gzip" in request.headers.get("accept-encoding", ""):
        headers["Content-Encoding"] = "gzip"
        return Response(packed, media_type="text/javascript", headers=headers)
    return Response(raw, media_type="text/javascript", headers=headers)
