"""The REST API through FastAPI's TestClient, with Hub lookups going to the local Hub-shaped server."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from estimator import catalog
from tests.app.hubserver import HubServer
from tests.app.support import (
    GRANTED_TOKEN,
    NO_DTYPE,
    ROTARY_BUFFER,
    TINY,
    TINY_PARAMS,
    UNGRANTED_TOKEN,
    count,
    llama_tensors,
    tiny_llama_config,
)

ROOT = Path(__file__).resolve().parents[3]
CATALOG_ID = catalog.models()[0].id


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def _error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert isinstance(body["detail"], str) and body["detail"], body
    return body


def _ints(tree: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _ints(value, f"{path}.{key}")
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            yield from _ints(value, f"{path}[{i}]")
    else:
        yield path, tree


# ------------------------------------------------------------------------------------------------- basics


def test_healthz_docs_and_openapi(client: TestClient) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    for path in ("/api/estimate", "/api/models", "/api/models/{repo_id}", "/api/gpus", "/healthz"):
        assert path in spec["paths"], path
    post = spec["paths"]["/api/estimate"]["post"]
    assert "example" in post["responses"]["200"]["content"]["application/json"]
    fields = spec["components"]["schemas"]["PlanBody"]["properties"]
    assert fields["batch_size"]["minimum"] == 1 and fields["lora_r"]["minimum"] == 1
    assert fields["lora_dropout"]["exclusiveMaximum"] == 1.0


def test_unknown_route_is_json_404(client: TestClient) -> None:
    _error(client.get("/api/nope"), 404)


def test_a_bug_is_still_answered_in_json(settings: Settings) -> None:
    app = create_app(settings)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("kaboom")

    with TestClient(app, raise_server_exceptions=False) as client:
        body = _error(client.get("/boom"), 500)
    assert "bug" in body["detail"] and "kaboom" not in body["detail"]


def test_gpus(client: TestClient) -> None:
    gpus = client.get("/api/gpus").json()
    assert len(gpus) == len(catalog.gpus())
    assert all(isinstance(g["memory_bytes"], int) and g["memory_bytes"] > 0 for g in gpus)


def test_model_search(client: TestClient) -> None:
    everything = client.get("/api/models", params={"limit": 200}).json()
    assert len(everything) == len(catalog.models())
    hits = client.get("/api/models", params={"q": "llama"}).json()
    assert hits and all("llama" in json.dumps(h).lower() for h in hits[:3])
    assert {"id", "hf_id", "params", "model_type", "max_position_embeddings"} <= set(hits[0])
    body = _error(client.get("/api/models", params={"limit": 0}), 422)
    assert "limit must be ≥ 1" in body["detail"]


# ------------------------------------------------------------------------------------------------- models


def test_catalog_model_resolves_offline(client: TestClient) -> None:
    entry = catalog.models()[0]
    body = client.get(f"/api/models/{entry.id}").json()
    assert body["source"] == "catalog" and body["catalog_id"] == entry.id
    assert body["parameters"]["source"] == "catalog"
    assert body["parameters"]["catalog_total"] == entry.params
    assert body["parameters"]["total"] == entry.params
    by_hub_id = client.get(f"/api/models/{entry.hf_id}").json()
    assert by_hub_id["catalog_id"] == entry.id


def test_every_catalog_model_resolves_with_its_verified_count(client: TestClient) -> None:
    for entry in catalog.models():
        response = client.get(f"/api/models/{entry.id}")
        assert response.status_code == 200, (entry.id, response.text)
        assert response.json()["parameters"]["total"] == entry.params, entry.id


def test_hub_model_resolves_with_safetensors_counts(client: TestClient) -> None:
    response = client.get("/api/models/acme/tiny-llama")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["source"] == "hub" and body["model_type"] == "llama"
    assert body["parameters"]["source"] == "hub safetensors metadata"
    assert body["parameters"]["safetensors_by_dtype"] == {"BF16": TINY_PARAMS}
    assert body["parameters"]["safetensors_total"] == TINY_PARAMS
    assert body["parameters"]["total"] == TINY_PARAMS  # the estimator's count agrees with the checkpoint
    assert body["config"] == TINY
    assert body["architecture"]["hidden_size"] == 64


def test_a_hub_models_download_is_what_its_files_hold(client: TestClient) -> None:
    """The config names no dtype; the files are fp32 and hold a buffer: the download is read from their headers.
    Without the files (acme/no-weights) the config's 16-bit figure stands."""
    files = llama_tensors(NO_DTYPE, "F32") | ROTARY_BUFFER
    body = client.post("/api/estimate", json={"model": "acme/fp32-no-dtype"}).json()
    assert (body["storage"]["download"], body["storage"]["download_format"]) == (4 * count(files), "as published: F32")
    assert body["params"]["total"] == TINY_PARAMS == count(files) - 8
    mixed = client.post("/api/estimate", json={"model": "acme/mixed-dtypes"}).json()["storage"]
    assert (mixed["download"], mixed["download_format"]) == (4 * TINY_PARAMS + 2 * 8, "as published: F32, F16")
    alone = client.post("/api/estimate", json={"model": "acme/no-weights"}).json()["storage"]
    assert (alone["download"], alone["download_format"]) == (2 * TINY_PARAMS, "16-bit")


def test_hub_model_without_weights_counts_from_config(client: TestClient) -> None:
    body = client.get("/api/models/acme/no-weights").json()
    assert body["parameters"]["source"] == "hub config"
    assert body["parameters"]["total"] == TINY_PARAMS


def test_gated_model_needs_a_token(client: TestClient) -> None:
    body = _error(client.get("/api/models/acme/gated-llama"), 401)
    assert "X-HF-Token" in body["detail"]
    _error(client.get("/api/models/acme/gated-llama", headers={"X-HF-Token": UNGRANTED_TOKEN}), 403)
    ok = client.get("/api/models/acme/gated-llama", headers={"X-HF-Token": GRANTED_TOKEN})
    assert ok.status_code == 200 and ok.json()["gated"] is True
    # 'Authorization: Bearer' carries the server's API token, never a Hub token: the Hub still says no
    bearer = client.get("/api/models/acme/gated-llama", headers={"Authorization": f"Bearer {GRANTED_TOKEN}"})
    assert "X-HF-Token" in _error(bearer, 401)["detail"]


def test_token_is_never_logged(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        client.get("/api/models/acme/gated-llama", headers={"X-HF-Token": GRANTED_TOKEN})
        client.get("/api/models/acme/gated-llama", headers={"X-HF-Token": UNGRANTED_TOKEN})
    assert GRANTED_TOKEN not in caplog.text and UNGRANTED_TOKEN not in caplog.text


def test_unknown_model_is_404_with_catalog_suggestions(client: TestClient) -> None:
    entry = catalog.models()[0]
    body = _error(client.get(f"/api/models/nobody/{entry.id}-typo"), 404)
    assert entry.id in body["suggestions"]


@pytest.mark.parametrize(
    ("repo", "status", "fragment"),
    [
        ("acme/broken", 503, "HTTP 503"),
        ("acme/no-config", 422, "no config.json"),
        ("acme/bad-json", 422, "not valid JSON"),
        ("acme/tiny-bert", 422, "llama"),  # names the supported model types
        ("a/b/c", 422, "not a Hugging Face model id"),
    ],
)
def test_hub_failures_are_actionable(client: TestClient, repo: str, status: int, fragment: str) -> None:
    body = _error(client.get(f"/api/models/{repo}"), status)
    assert fragment in body["detail"]


def test_slow_hub_is_504(impatient: Settings) -> None:
    with TestClient(create_app(impatient)) as client:
        body = _error(client.get("/api/models/acme/slow-llama"), 504)
        assert "did not answer" in body["detail"] and "catalog" in body["detail"]
        _error(client.post("/api/estimate", json={"model": "acme/slow-llama"}), 504)


# ------------------------------------------------------------------------------------------------- estimate


def test_estimate_catalog_model(client: TestClient) -> None:
    response = client.post("/api/estimate", json={"model": CATALOG_ID, "method": "qlora"})
    assert response.status_code == 200, response.text
    assert response.headers["x-model-source"] == "catalog"
    body = response.json()
    for key in ("params", "storage", "memory", "fits"):
        assert key in body
    for key in ("base_fp32", "base_16bit", "base_quantized", "adapter", "checkpoint", "merged"):
        assert isinstance(body["storage"][key], int), key
    for path, value in _ints(body["memory"]["components"]):
        assert isinstance(value, int), path


def test_estimate_by_catalog_hub_id_needs_no_hub(client: TestClient, hub: HubServer) -> None:
    entry = catalog.models()[0]
    hub.clear_requests()
    by_id = client.post("/api/estimate", json={"model": entry.id})
    by_hub_id = client.post("/api/estimate", json={"model": entry.hf_id})
    assert by_hub_id.status_code == 200 and by_hub_id.headers["x-model-source"] == "catalog"
    assert by_hub_id.json()["memory"] == by_id.json()["memory"]
    assert hub.requests == []


def test_estimate_inline_config(client: TestClient) -> None:
    response = client.post("/api/estimate", json={"config": TINY, "method": "lora", "lora_r": 8})
    assert response.status_code == 200, response.text
    assert response.json()["params"]["total"] == TINY_PARAMS


def test_estimate_hub_model_matches_inline(client: TestClient) -> None:
    plan = {"method": "full", "seq_len": 512, "batch_size": 2}
    hub = client.post("/api/estimate", json={"model": "acme/tiny-llama", **plan})
    assert hub.status_code == 200, hub.text
    assert hub.headers["x-model-source"] == "hub-safetensors-metadata"
    inline = client.post("/api/estimate", json={"config": TINY, **plan})
    assert hub.json()["memory"] == inline.json()["memory"]


def test_estimate_gated_hub_model_with_the_callers_token(client: TestClient) -> None:
    _error(client.post("/api/estimate", json={"model": "acme/gated-llama"}), 401)
    ok = client.post("/api/estimate", json={"model": "acme/gated-llama"}, headers={"X-HF-Token": GRANTED_TOKEN})
    assert ok.status_code == 200, ok.text
    bearer = {"Authorization": f"Bearer {GRANTED_TOKEN}"}  # not a Hub token (the server's API token goes there)
    _error(client.post("/api/estimate", json={"model": "acme/gated-llama"}, headers=bearer), 401)


def test_get_estimate_equals_post(client: TestClient) -> None:
    query: dict[str, str | int] = {
        "model": CATALOG_ID,
        "method": "lora",
        "seq_len": 1024,
        "target_modules": "q_proj,v_proj",
    }
    got = client.get("/api/estimate", params=query)
    assert got.status_code == 200, got.text
    posted = client.post("/api/estimate", json={**query, "target_modules": ["q_proj", "v_proj"]})
    assert got.json() == posted.json()


def test_estimate_takes_a_video(client: TestClient) -> None:
    """video_frames reaches the estimate by POST and GET alike; a model without a vision tower refuses it."""
    body = {"model": "qwen2-vl-7b-instruct", "video_frames": 8, "image_size": [448, 448]}
    posted = client.post("/api/estimate", json=body)
    assert posted.status_code == 200, posted.text
    inputs = posted.json()["inputs"]
    assert inputs["patches_per_video"] == 4 * 32 * 32  # 8 frames: 4 temporal patches of 448² frames
    assert inputs["video_tokens_per_row"] == 4 * 32 * 32 // 4 + 2
    got = client.get("/api/estimate", params={"model": "qwen2-vl-7b-instruct", "video_frames": 8,
                                              "image_size": "448x448"})  # fmt: skip
    assert got.status_code == 200, got.text
    assert got.json() == posted.json()
    refused = _error(client.post("/api/estimate", json={"model": CATALOG_ID, "video_frames": 8}), 422)
    assert "video inputs of" in refused["detail"] and "not modelled yet" in refused["detail"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"model": CATALOG_ID, "batch_size": 0}, "batch_size must be ≥ 1"),
        ({"model": CATALOG_ID, "lora_r": 0}, "lora_r must be ≥ 1"),
        ({"model": CATALOG_ID, "seq_len": -5}, "seq_len must be ≥ 1"),
        ({"model": CATALOG_ID, "lora_dropout": 1.0}, "lora_dropout must be < 1"),
        ({"model": CATALOG_ID, "method": "dreambooth"}, "method must be one of"),
        ({"model": CATALOG_ID, "batch_size": "two"}, "batch_size must be an integer"),
        ({"model": CATALOG_ID, "learning_rate": 1e-4}, "learning_rate is not a known field"),
        ({"model": CATALOG_ID, "config": TINY}, "exactly one of 'model'"),
        ({}, "exactly one of 'model'"),
        ({"model": CATALOG_ID, "target_modules": []}, "target_modules is empty"),
        ({"model": CATALOG_ID, "target_modules": 5}, "target_modules must be one of 'all-linear', or must be a list"),
        ({"model": CATALOG_ID, "gpu": "h100"}, "matches 2 catalog GPUs: h100-pcie"),
        ({"model": CATALOG_ID, "gpu": "h100-sxn"}, "did you mean h100-sxm"),
        ({"model": CATALOG_ID, "method": "full", "use_dora": True}, "use_dora"),
        ({"config": TINY, "seq_len": 8192}, "allow_long_context"),
        ({"config": {"hidden_size": 64}}, "model_type"),
        ({"config": {"model_type": "llama", "hidden_size": "wide"}}, "hidden_size"),
        ({"config": {"model_type": "bert", "hidden_size": 8}}, "llama"),
    ],
)
def test_bad_plans_say_what_to_fix(client: TestClient, body: dict[str, Any], fragment: str) -> None:
    detail = _error(client.post("/api/estimate", json=body), 422)["detail"]
    assert fragment in detail


def test_module_lists_may_be_comma_separated(client: TestClient) -> None:
    as_list = client.post("/api/estimate", json={"model": CATALOG_ID, "target_modules": ["q_proj", "v_proj"]})
    as_text = client.post("/api/estimate", json={"model": CATALOG_ID, "target_modules": "q_proj, v_proj"})
    assert as_list.status_code == 200 and as_list.json() == as_text.json()


def test_bad_query_says_what_to_fix(client: TestClient) -> None:
    detail = _error(client.get("/api/estimate", params={"model": CATALOG_ID, "batch_size": 0}), 422)["detail"]
    assert "batch_size must be ≥ 1" in detail
    _error(client.get("/api/estimate", params={"model": CATALOG_ID, "nonsense": 1}), 422)
    _error(client.get("/api/estimate"), 422)


def test_long_context_can_be_allowed(client: TestClient) -> None:
    body = {"config": TINY, "seq_len": 8192, "allow_long_context": True, "method": "lora"}
    assert client.post("/api/estimate", json=body).status_code == 200


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b'"model"', b"null", b""])
def test_malformed_bodies_are_422(client: TestClient, raw: bytes) -> None:
    response = client.post("/api/estimate", content=raw, headers={"Content-Type": "application/json"})
    _error(response, 422)


def test_inline_config_size_is_capped(client: TestClient) -> None:
    huge = tiny_llama_config(padding="x" * 300_000)
    body = _error(client.post("/api/estimate", json={"config": huge}), 413)
    assert "config.json" in body["detail"]

    def chunks() -> Iterator[bytes]:
        yield b'{"config": {"model_type": "llama", "padding": "'
        for _ in range(40):
            yield b"x" * 10_000
        yield b'"}}'

    chunked = client.post("/api/estimate", content=chunks(), headers={"Content-Type": "application/json"})
    _error(chunked, 413)


def test_config_limit_is_a_setting(settings: Settings) -> None:
    small = settings.model_copy(update={"max_config_bytes": 1024})
    with TestClient(create_app(small)) as client:
        padded = tiny_llama_config(padding="x" * 3000)
        body = _error(client.post("/api/estimate", json={"config": padded}), 422)
        assert "limit is 1024 bytes" in body["detail"]
        assert client.post("/api/estimate", json={"config": TINY}).status_code == 200


def test_absurd_but_valid_inputs_are_answered(client: TestClient) -> None:
    trillion = tiny_llama_config(
        vocab_size=256_000,
        hidden_size=32_768,
        intermediate_size=131_072,
        num_hidden_layers=80,
        num_attention_heads=256,
        num_key_value_heads=16,
        head_dim=128,
        max_position_embeddings=1 << 20,
    )
    response = client.post("/api/estimate", json={"config": trillion, "method": "full"})
    assert response.status_code == 200, response.text
    assert response.json()["params"]["total"] > 1_000_000_000_000
    long = {"config": TINY, "seq_len": 1 << 20, "allow_long_context": True, "batch_size": 1 << 20}
    response = client.post("/api/estimate", json=long)
    assert response.status_code == 200, response.text
    assert response.json()["memory"]["peak_allocated"] > 0


# ------------------------------------------------------------------------------------------------- startup


def test_startup_does_not_import_torch(tmp_path: Path) -> None:
    code = (
        "import sys; from app.main import create_app; from app.settings import Settings; "
        f"create_app(Settings(data_dir={str(tmp_path)!r})); "
        "heavy = sorted(m for m in ('torch', 'transformers', 'peft', 'bitsandbytes') if m in sys.modules); "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_get_estimate_with_blank_target_modules_is_a_422(client) -> None:  # type: ignore[no-untyped-def]
    """Found by the fuzz run: a query whose target_modules splits to nothing must be a 422 that says why."""
    r = client.get("/api/estimate", params={"model": "llama-3.1-8b", "target_modules": "\x1f"})
    assert r.status_code == 422
    assert "target_modules" in r.text


def _nested(depth: int) -> str:
    return '{"model_type": "llama", "x": ' + '{"x": ' * depth + "{}" + "}" * depth + "}"


def test_a_body_too_deep_to_parse_is_a_422_that_says_so(client: TestClient) -> None:
    for depth in (1_000, 30_000):  # past the JSON parser's recursion limit, within the body limit
        raw = ('{"config": ' + _nested(depth) + "}").encode()
        body = _error(client.post("/api/estimate", content=raw, headers={"content-type": "application/json"}), 422)
        assert "nests objects or lists too deeply" in body["detail"] and body["errors"][0]["field"] == "body"
    body = _error(client.post("/api/estimate", content=b"", headers={"content-type": "application/json"}), 422)
    assert body["detail"] == "the body is required: send a JSON object with the plan fields"


def test_an_inline_config_nested_past_any_real_config_is_refused(client: TestClient) -> None:
    config = json.loads(_nested(40))
    detail = _error(client.post("/api/estimate", json={"config": config}), 422)["detail"]
    assert "more than 32 levels deep" in detail
    assert "more than 32 levels deep" in _error(client.post("/api/charts", json={"config": config}), 422)["detail"]
    assert (
        client.post("/api/estimate", json={"config": TINY | {"rope_scaling": {"a": {"b": [1, 2]}}}}).status_code == 200
    )


def test_a_config_without_its_size_is_refused_not_guessed(client: TestClient) -> None:
    config = {k: v for k, v in TINY.items() if k != "hidden_size"}
    detail = _error(client.post("/api/estimate", json={"config": config}), 422)["detail"]
    assert "has no 'hidden_size': it sets the model's size, so it is never guessed" in detail


def test_the_rule_of_thumb_for_any_parameter_count(client: TestClient) -> None:
    """The seed's example: 10B parameters -> 20 GB in 16-bit, 5 GB in 4-bit, a 0.2 GB adapter, 5.2 GB for QLoRA."""
    rule = client.get("/api/rule-of-thumb", params={"params": 1e10}).json()
    assert (rule["fp16"], rule["int4"], rule["adapter"], rule["qlora_total"]) == (20 * 10**9, 5 * 10**9, 2 * 10**8,
                                                                                   52 * 10**8)  # fmt: skip
    assert rule["params"] == 10**10 and rule["why_exact_differs"]
    response = client.get("/api/rule-of-thumb", params={"params": 0})
    assert response.status_code == 422 and "params" in response.text
