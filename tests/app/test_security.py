"""Who may do what: the jobs API's token, loopback-only jobs without one, the server's Hub token, private jobs,
trusted hosts, security headers and the documented error bodies. Real SQLite, the local Hub-shaped server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from app.main import create_app
from app.settings import Settings
from tests.app.support import API_TOKEN, GRANTED_TOKEN, TINY_RUN_CONFIG, local_client

PLAN: dict[str, Any] = {"config": TINY_RUN_CONFIG, "method": "qlora", "seq_len": 64, "lora_dropout": 0.0,
                        "device": "cpu"}  # fmt: skip
BEARER = {"Authorization": f"Bearer {API_TOKEN}"}


@pytest.fixture
def queued(settings: Settings) -> Settings:
    """Jobs are accepted and stored, none runs."""
    return settings.model_copy(update={"max_concurrent_jobs": 0})


@pytest.fixture
def with_token(queued: Settings) -> Iterator[TestClient]:
    """A server with an API token (and the server's own Hub token), reached from another machine."""
    settings = queued.model_copy(update={"api_token": SecretStr(API_TOKEN), "hf_token": SecretStr(GRANTED_TOKEN)})
    with TestClient(create_app(settings), client=("203.0.113.7", 40000)) as client:
        yield client


def _detail(response: Any, status: int) -> str:
    assert response.status_code == status, response.text
    detail: str = response.json()["detail"]
    assert detail
    return detail


# ------------------------------------------------------------------------------------------------- the jobs API


def test_the_jobs_api_needs_the_servers_token(with_token: TestClient) -> None:
    for method, path in (("POST", "/api/jobs"), ("GET", "/api/jobs"), ("GET", "/api/jobs/abc"),
                         ("DELETE", "/api/jobs/abc")):  # fmt: skip
        response = with_token.request(method, path, json=PLAN if method == "POST" else None)
        assert "Authorization: Bearer" in _detail(response, 401), (method, path)
        assert response.headers["www-authenticate"].startswith("Bearer")
    wrong = with_token.post("/api/jobs", json=PLAN, headers={"Authorization": "Bearer not-the-server-token-at-all"})
    assert "the API token is wrong" in _detail(wrong, 401)
    assert with_token.get("/api/jobs").status_code == 401
    posted = with_token.post("/api/jobs", json=PLAN, headers=BEARER)
    assert posted.status_code == 202, posted.text
    assert with_token.get(posted.json()["url"], headers=BEARER).json()["status"] == "queued"
    # estimates stay open to anyone
    assert with_token.post("/api/estimate", json=PLAN).status_code == 200


def test_without_a_token_the_jobs_api_answers_loopback_only(queued: Settings) -> None:
    with TestClient(create_app(queued), client=("203.0.113.7", 40000)) as remote:
        assert "answers only on loopback" in _detail(remote.post("/api/jobs", json=PLAN), 403)
        assert remote.post("/api/estimate", json=PLAN).status_code == 200
    with local_client(create_app(queued)) as local:
        assert local.post("/api/jobs", json=PLAN).status_code == 202
        # a bearer token means nothing to a server that has none
        assert local.get("/api/jobs", headers={"Authorization": "Bearer whatever"}).status_code == 200
    disabled = queued.model_copy(update={"jobs_enabled": False})
    with local_client(create_app(disabled)) as local:
        assert "disabled on this server" in _detail(local.post("/api/jobs", json=PLAN), 403)


def test_a_weak_api_token_is_refused_by_the_settings() -> None:
    with pytest.raises(ValueError, match="at least 16 printable characters"):
        Settings(api_token=SecretStr("short"))


# ------------------------------------------------------------------------------------------------- Hub tokens


def test_the_servers_hub_token_serves_only_callers_with_the_api_token(with_token: TestClient) -> None:
    assert _detail(with_token.get("/api/models/acme/private-llama"), 404)  # anonymous: public repos only
    assert with_token.get("/api/models/acme/private-llama", headers=BEARER).status_code == 200
    assert with_token.get("/api/models/acme/private-llama", headers={"X-HF-Token": GRANTED_TOKEN}).status_code == 200
    _detail(with_token.post("/api/estimate", json={"model": "acme/gated-llama"}), 401)
    assert with_token.post("/api/estimate", json={"model": "acme/gated-llama"}, headers=BEARER).status_code == 200


def test_a_job_on_a_private_repo_is_visible_only_with_the_token_that_opened_it(queued: Settings) -> None:
    mine = {"X-HF-Token": GRANTED_TOKEN}
    with local_client(create_app(queued)) as client:
        public = client.post("/api/jobs", json={"model": "acme/tiny-llama", "seq_len": 64, "device": "cpu"})
        private = client.post("/api/jobs", json={"model": "acme/private-llama", "seq_len": 64, "device": "cpu"},
                              headers=mine)  # fmt: skip
        assert public.status_code == 202 and private.status_code == 202, private.text
        url = private.json()["url"]
        assert "no job" in _detail(client.get(url), 404)
        assert "no job" in _detail(client.get(url, headers={"X-HF-Token": "hf_someone_else_entirely"}), 404)
        assert client.get(url, headers=mine).json()["model"] == "acme/private-llama"
        assert [j["model"] for j in client.get("/api/jobs").json()] == ["acme/tiny-llama"]
        assert len(client.get("/api/jobs", headers=mine).json()) == 2
        _detail(client.delete(url), 404)
        assert client.delete(url, headers=mine).json()["status"] == "cancelled"


# ------------------------------------------------------------------------------------------------- hosts, headers


def test_a_host_the_server_does_not_answer_to_is_refused(settings: Settings) -> None:
    with TestClient(create_app(settings)) as client:
        for host in ("evil.example", "127.0.0.1.evil.example", "localhost.", "[::2]:80", "a b"):
            response = client.get("/healthz", headers={"Host": host})
            assert "TUNEPLAN_ALLOWED_HOSTS" in _detail(response, 400), host
        for host in ("127.0.0.1:8000", "localhost", "[::1]:8000", "testserver"):
            assert client.get("/healthz", headers={"Host": host}).status_code == 200, host
    wildcard = settings.model_copy(update={"allowed_hosts": ["*.example.org"]})
    with TestClient(create_app(wildcard)) as client:
        assert client.get("/healthz", headers={"Host": "tuneplan.example.org"}).status_code == 200
        assert client.get("/healthz", headers={"Host": "example.org.evil"}).status_code == 400


def test_every_answer_carries_the_security_headers(settings: Settings) -> None:
    with TestClient(create_app(settings)) as client:
        for response in (client.get("/"), client.get("/healthz"), client.post("/api/estimate", json={}),
                         client.get("/docs"), client.get("/static/app.js"), client.get("/nope")):  # fmt: skip
            headers = response.headers
            assert "default-src 'none'" in headers["content-security-policy"], response.url
            assert "'unsafe-eval'" not in headers["content-security-policy"]
            assert headers["x-content-type-options"] == "nosniff"
            assert headers["x-frame-options"] == "DENY" and headers["referrer-policy"] == "no-referrer"
        docs = client.get("/docs").text
        assert "/static/swagger-ui/swagger-ui-bundle.js" in docs and "cdn" not in docs.lower()
        assert "<script>" not in docs  # no inline script: the policy forbids it
        assert client.get("/static/swagger-ui/swagger-ui-bundle.js").status_code == 200
        assert client.get("/redoc").status_code == 404


def test_the_openapi_document_describes_the_422_bodies_the_api_sends(settings: Settings) -> None:
    with TestClient(create_app(settings)) as client:
        spec = client.get("/openapi.json").json()
        assert "HTTPValidationError" not in spec["components"]["schemas"]
        for path, operations in spec["paths"].items():
            for method, op in operations.items():
                if op.get("parameters") or op.get("requestBody"):
                    schema = op["responses"]["422"]["content"]["application/json"]["schema"]
                    assert schema["$ref"].endswith("/ErrorBody"), (method, path)
        assert spec["components"]["securitySchemes"]["api_token"]["scheme"] == "bearer"
        # and the bodies match it: detail, the field list under errors
        body = client.get("/api/models?limit=0").json()
        assert isinstance(body["detail"], str) and body["errors"][0]["field"] == "limit"
        body = client.post("/api/charts", json=[1]).json()
        assert isinstance(body["detail"], str) and isinstance(body["errors"], list)
