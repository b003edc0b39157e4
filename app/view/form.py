"""The page form, derived from ``estimator.Plan``'s field declarations.

``form_groups`` lists the plan's fields by group with what the template needs to draw each one (kind, label, help,
bounds, choices, the methods it applies to); ``parse_query`` reads the page's query string with a request model
derived from the plan like the API's (``app.schemas.plan_model``), so the page accepts exactly what the API accepts;
``script_fields`` is the field list ``static/app.js`` reads. A field added to ``Plan`` appears in all three.

The query string holds the whole plan, so a link reproduces the page. Two things are the page's own: ``method`` may
also be ``compare`` (full, LoRA and QLoRA side by side), and an inline config travels as base64url JSON.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlencode

from pydantic import Field, ValidationError

from app.handlers import describe_errors
from app.schemas import PlanModel, plan_model
from estimator import METHODS, PlanField, catalog, plan_fields

VIEW_METHODS: tuple[str, ...] = (*METHODS, "compare")
MAX_CONFIG_CHARS = 400_000
PREFERRED_DEFAULT_MODELS: tuple[str, ...] = ("llama-3.1-8b", "qwen2.5-7b", "mistral-7b")
METHOD_LABELS: dict[str, str] = {"full": "Full", "lora": "LoRA", "qlora": "QLoRA", "compare": "Compare all"}

PageQuery: type[PlanModel] = plan_model(
    "PageQuery",
    query=True,
    overrides={
        "method": (Literal[VIEW_METHODS], Field("qlora")),
        "config": (str | None, Field(None, max_length=MAX_CONFIG_CHARS)),
    },
)


@dataclass(frozen=True)
class FormField:
    """One form control: the plan field and the value the form shows."""

    field: PlanField
    value: Any
    error: str | None = None

    @property
    def name(self) -> str:
        return self.field.name

    @property
    def spec(self) -> Any:
        return self.field.spec

    @property
    def scope(self) -> str:
        """CSS classes that hide the control for methods it does not apply to (``applies-qlora ...``)."""
        methods = self.field.spec.methods
        return " ".join(["scoped", *(f"applies-{m}" for m in methods)]) if methods else ""


@dataclass
class FormState:
    """The form as the page shows it, and the plan it stands for."""

    values: dict[str, Any]
    """Field name -> value to show (as typed when invalid); ``config`` is the base64url text."""
    method: str
    """``full``, ``lora``, ``qlora`` or ``compare``."""
    plan: dict[str, Any] | None
    """The plan as a JSON object (``method`` a real method: ``qlora`` when comparing), None on errors."""
    errors: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] | None = None


def default_model() -> str:
    """The model the bare page shows: a well-known catalog model, else the first one."""
    for name in PREFERRED_DEFAULT_MODELS:
        if catalog.find_model(name) is not None:
            return name
    return catalog.models()[0].id


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
    except (binascii.Error, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"the inline config.json could not be read: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError("the inline config.json must be a JSON object")
    return data


def display(f: PlanField, value: Any) -> Any:
    """A plan value as the form shows it (module lists comma-separated, None as empty text)."""
    if f.spec.kind in ("modules", "targets") and not isinstance(value, str):
        return ",".join(value)
    if f.spec.kind == "pair" and isinstance(value, list | tuple):
        return "x".join(str(v) for v in value)
    return "" if value is None else value


def parse_query(params: Mapping[str, Sequence[str]]) -> FormState:
    """Form state from a query string (``{name: [values]}``; the last value of a name wins; empty means default).

    Bad values are kept as typed, with a message per field in ``errors``, and ``plan`` is then None.
    """
    fields = plan_fields()
    raw = {f.name: str(params[f.name][-1]).strip() for f in fields if params.get(f.name)}
    given = {k: v for k, v in raw.items() if v != ""}
    values = {f.name: display(f, f.default) for f in fields} | {"method": "qlora"} | raw
    errors: dict[str, str] = {}
    config: dict[str, Any] | None = None
    if given.get("config"):
        try:
            config = decode_config(given["config"])
        except ValueError as exc:
            errors["config"] = str(exc)
    if config is None and not given.get("model") and "config" not in errors:
        given["model"] = values["model"] = default_model()
    try:
        query = PageQuery.model_validate(given)
    except ValidationError as exc:
        for item in describe_errors([dict(e) for e in exc.errors(include_url=False)]):
            errors.setdefault(str(item["field"] or "plan").split(".")[0], item["message"])
        query = None
    method = str(values["method"]) if values["method"] in VIEW_METHODS else "qlora"
    state = FormState(values=values, method=method, plan=None, errors=errors, config=config)
    if query is not None and not errors:
        plan = query.plan_data()
        state.values |= {f.name: display(f, plan[f.name]) for f in fields if f.name != "config"}
        plan["method"] = "qlora" if method == "compare" else method
        plan["config"], plan["model"] = (config, None) if config is not None else (None, plan["model"])
        state.plan = plan
    return state


def query_string(values: Mapping[str, Any]) -> str:
    """The query string of form values (the inverse of ``parse_query`` for valid values)."""
    pairs: list[tuple[str, str]] = []
    for f in plan_fields():
        value = values.get(f.name)
        if f.name == "config" and not value or f.name == "model" and values.get("config"):
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        pairs.append((f.name, "" if value is None else str(value)))
    return urlencode(pairs)


def form_groups(state: FormState) -> list[tuple[str, list[FormField]]]:
    """The plan's fields by group, in declaration order, with the values and errors to show."""
    groups: dict[str, list[FormField]] = {}
    for f in plan_fields():
        groups.setdefault(f.spec.group, []).append(FormField(f, state.values.get(f.name), state.errors.get(f.name)))
    return list(groups.items())


def script_fields() -> list[dict[str, Any]]:
    """What ``static/app.js`` needs of each field: name, kind, default, label, and the bounds its messages state."""
    return [{"name": f.name, "kind": f.spec.kind, "default": display(f, f.default), "label": f.spec.label,
             "low": f.spec.low, "high": f.spec.high, "low_open": f.spec.low_open, "high_open": f.spec.high_open,
             "allowed": f.bounds_text()} for f in plan_fields()]  # fmt: skip
