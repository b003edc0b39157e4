"""Errors as the page says them to a person: the API's ``detail`` is written for a developer ("send ... as 'config'",
"GET /api/models"); the page names its own controls instead, by their labels, and says what to do on the page.

``page_error`` returns the API's error body plus ``message`` (for the person) and ``fields`` (the plan fields the
message is about, which the page marks invalid).
"""

from __future__ import annotations

import re
from typing import Any

from app.errors import FALLBACK_HINT, AppError, HubGated, HubRepoNotFound, HubTimeout, HubUnavailable
from app.handlers import error_body
from estimator import EstimatorError, UnknownModelError, plan_fields

PAGE_FALLBACK = (
    "pick a catalog model (type to search, or one of the suggestions), or drop the model's config.json in the Model box"
)

_LABELS = {f.name: f.spec.label for f in plan_fields() if f.spec.kind not in ("model", "config")}
_MULTI_WORD = re.compile(r"\b(" + "|".join(sorted((n for n in _LABELS if "_" in n), key=len, reverse=True)) + r")\b")


def fields_in(message: str) -> list[str]:
    """The plan fields a message is about: multi-word field names anywhere in it, a one-word one (``gpu``,
    ``method``) only where the message starts with it."""
    found = list(dict.fromkeys(_MULTI_WORD.findall(message)))
    first = message.split(" ", 1)[0]
    if first in _LABELS and first not in found:
        found.insert(0, first)
    return found


def labelled(message: str) -> str:
    """Field names in a message as the form labels them (``allow_long_context`` -> “Allow sequences beyond the
    model's context”)."""
    text = _MULTI_WORD.sub(lambda m: f"“{_LABELS[m.group(1)]}”", message)
    first, _, rest = text.partition(" ")
    if first in _LABELS and rest:
        text = f"“{_LABELS[first]}” {rest}"
    return text


def _hub_message(exc: AppError, model: str | None) -> str | None:
    who = f"“{model}”" if model else "This model"
    if isinstance(exc, HubUnavailable | HubTimeout):
        return (f"{who} is not in tuneplan's catalog, and the Hugging Face Hub cannot be reached from this server "
                f"right now to look it up: {PAGE_FALLBACK}.")  # fmt: skip
    if isinstance(exc, HubRepoNotFound):
        return f"There is no model {who} on the Hugging Face Hub: check the spelling, or {PAGE_FALLBACK}."
    if isinstance(exc, HubGated):
        return f"{who} is gated on the Hugging Face Hub and this server may not read it: {PAGE_FALLBACK}."
    return None


def page_error(exc: AppError | EstimatorError, model: str | None = None) -> tuple[dict[str, Any], int]:
    """The error body for the page (``detail`` as the API says it, plus ``message`` and ``fields``) and its
    status."""
    body, status = error_body(exc)
    detail = str(body["detail"])
    message = _hub_message(exc, model) if isinstance(exc, AppError) else None
    if message is None and isinstance(exc, UnknownModelError):
        message = f"“{model}” is not in tuneplan's catalog: {PAGE_FALLBACK}."
    if message is None:
        message = labelled(detail.replace(FALLBACK_HINT, PAGE_FALLBACK))
    fields = fields_in(detail) if isinstance(exc, EstimatorError) else []
    return body | {"message": message[:1].upper() + message[1:], "fields": fields}, status
