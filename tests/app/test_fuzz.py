"""Property-based fuzzing of the API from its own OpenAPI document: no input may produce a 5xx.

Schemathesis generates valid (positive) and invalid (negative) requests for every operation: bodies, query
strings, path parameters and the ``X-HF-Token`` header. Hub lookups go to the local Hub-shaped server, so
unknown ids are answered quickly. The examples per operation and mode are bounded for the default suite: at 300
they took 306 s of a 26-minute run on this 2-core machine (``--durations``), at 100 about a third of that. Each
run draws new examples (no example database, not derandomized), so runs add up; ``TUNEPLAN_FUZZ_EXAMPLES=1000``
fuzzes deeper.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from app.main import create_app
from app.settings import Settings

EXAMPLES = int(os.environ.get("TUNEPLAN_FUZZ_EXAMPLES", "100"))


def _labels() -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        spec = create_app(Settings(data_dir=Path(tmp))).openapi()
    return [f"{method.upper()} {path}" for path, ops in spec["paths"].items() for method in ops]


LABELS = _labels()
MODELS = ["llama-3.1-8b", "qwen3-30b-a3b", "gpt2", "gemma-3-4b", "acme/tiny-llama"]


def _aim_at_the_estimator(case: schemathesis.Case, model: str | None) -> None:
    """Valid requests name a real model, so they reach the estimator instead of stopping at a 404/422.

    The schema cannot say "exactly one of model and config"; keep one: the sampled model, or the generated
    inline config when ``model`` is None (random configs exercise the config parser).
    """
    # change copies, never the generated objects: schemathesis may hold on to them (examples, dictionaries), and a
    # value changed in place makes a later draw differ from its replay (hypothesis's FlakyStrategyDefinition)
    if isinstance(case.body, dict):
        case.body = dict(case.body)
        if model is None and isinstance(case.body.get("config"), dict):
            case.body.pop("model", None)
        else:
            case.body.pop("config", None)
            case.body["model"] = model or MODELS[0]
    if isinstance(case.query, dict) and "model" in case.query:
        case.query = {**case.query, "model": model or MODELS[0]}


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
@pytest.mark.parametrize("label", LABELS)
def test_no_input_makes_a_server_error(settings: Settings, label: str, mode: GenerationMode) -> None:
    # a generous Hub deadline: on a busy machine a 1.5 s deadline can turn into a (correct) 504
    patient = settings.model_copy(update={"hub_timeout_s": 60.0})
    api = schemathesis.openapi.from_asgi("/openapi.json", create_app(patient))
    operations = [result.ok() for result in api.get_all_operations()]  # type: ignore[union-attr]
    operation = next(op for op in operations if op.label == label)
    strategy = operation.as_strategy(generation_mode=mode)

    @given(case=strategy, model=st.sampled_from([*MODELS, None]))
    @hypothesis_settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def run(case: schemathesis.Case, model: str | None) -> None:
        if mode is GenerationMode.POSITIVE:
            _aim_at_the_estimator(case, model)
        response = case.call(timeout=30)
        case.validate_response(response, checks=[not_a_server_error])
        content_type = (response.headers.get("content-type") or [""])[0]
        assert content_type.startswith("application/json"), (content_type, response.text[:200])
        if response.status_code >= 400:
            body = response.json()
            assert isinstance(body, dict) and isinstance(body.get("detail"), str) and body["detail"], body

    try:
        run()
    except Unsatisfiable:
        pytest.skip(f"{label} takes no input that could be made invalid")
