"""The rent, prices, export and import routes through FastAPI's TestClient (Hub ids go to the local Hub server)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from estimator import PriceError, rent

PLAN = {"model": "llama-3.1-8b", "method": "qlora", "batch_size": 2, "train_tokens": 20_000_000}


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def _detail(response: Any, status: int) -> str:
    assert response.status_code == status, response.text
    detail: str = response.json()["detail"]
    return detail


def test_rent_post_and_get_agree_with_the_estimator(client: TestClient) -> None:
    posted = client.post("/api/rent", json=PLAN)
    assert posted.status_code == 200
    body = posted.json()
    assert body == json.loads(json.dumps(rent(_plan(PLAN))))
    query = "&".join(f"{k}={v}" for k, v in PLAN.items())
    assert client.get(f"/api/rent?{query}").json() == body
    assert body["options"] and body["sorted_by"] == "run_usd"


def _plan(data: dict[str, Any]) -> Any:
    from estimator import Plan

    return Plan.from_dict(data)


def test_rent_resolves_hub_ids_and_rejects_bad_plans(client: TestClient) -> None:
    body = client.post("/api/rent", json={"model": "acme/tiny-llama", "method": "lora"}).json()
    assert body["model"] == "acme/tiny-llama" and body["sorted_by"] == "usd_per_million_tokens"
    assert "device 'cuda'" in _detail(client.post("/api/rent", json=PLAN | {"device": "cpu"}), 422)
    assert "mfu" in _detail(client.post("/api/rent", json=PLAN | {"mfu": 2}), 422)


def test_a_users_price_table(settings: Settings, tmp_path: Path) -> None:
    table = tmp_path / "prices.json"
    row = {"gpu": "a100-80gb", "provider": "Ours", "usd_per_gpu_hour": 0.5, "date": "2026-06-01", "source": "intranet"}
    table.write_text(json.dumps({"prices": [row]}))
    with TestClient(create_app(settings.model_copy(update={"prices": table}))) as c:
        prices = c.get("/api/prices").json()
        assert prices == {"origin": str(table), "prices": [row | {"offer": "on-demand", "note": ""}]}
        costed = c.post("/api/estimate", json=PLAN | {"gpu": "a100-80gb"}).json()
        assert [x["provider"] for x in costed["cost"]] == ["Ours"]
        assert c.post("/api/rent", json=PLAN).json()["options"][0]["gpu"] == "a100-80gb"
    table.write_text('{"prices": [{"gpu": "a100"}]}')
    with pytest.raises(PriceError, match="lacks provider"):
        create_app(settings.model_copy(update={"prices": table}))


@pytest.mark.parametrize("fmt", ["trl", "trl-python", "axolotl", "accelerate", "deepspeed"])
def test_export(client: TestClient, fmt: str) -> None:
    body = client.post(f"/api/export/{fmt}", json=PLAN).json()
    assert body["format"] == fmt and body["filename"] and body["text"]
    if fmt in ("trl", "axolotl"):
        data = yaml.safe_load(body["text"])
        assert "meta-llama/Llama-3.1-8B" in (data.get("model_name_or_path"), data.get("base_model"))
    query = "&".join(f"{k}={v}" for k, v in PLAN.items())
    assert client.get(f"/api/export/{fmt}?{query}").json() == body


def test_export_errors(client: TestClient) -> None:
    assert "format" in _detail(client.post("/api/export/keras", json=PLAN), 422)
    assert "seq_len" in _detail(client.post("/api/export/trl", json=PLAN | {"seq_len": 10**7}), 422)
    inline = client.post("/api/export/axolotl", json={"config": {"model_type": "llama", "vocab_size": 64,
                         "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1,
                         "num_attention_heads": 2}}).json()  # fmt: skip
    assert "path/or/hub-id-of-the-model" in inline["text"] and inline["notes"]


def test_import_round_trip(client: TestClient) -> None:
    text = client.post("/api/export/axolotl", json=PLAN).json()["text"]
    got = client.post("/api/import", json={"text": text}).json()
    assert got["format"] == "axolotl" and got["ignored"] == ["datasets", "learning_rate", "output_dir"]
    plan = got["plan"]
    assert (plan["method"], plan["batch_size"], plan["model"]) == ("qlora", 2, "meta-llama/Llama-3.1-8B")
    estimated = client.post("/api/estimate", json={k: v for k, v in plan.items() if v is not None}).json()
    assert estimated["plan"]["method"] == "qlora"


def test_an_objective_round_trips_through_export_and_import(client: TestClient) -> None:
    plan = PLAN | {"objective": "grpo", "num_generations": 2, "beta": 0.04}
    exported = client.post("/api/export/axolotl", json=plan).json()
    assert yaml.safe_load(exported["text"])["rl"] == "grpo"
    got = client.post("/api/import", json={"text": exported["text"]}).json()["plan"]
    assert (got["objective"], got["num_generations"], got["beta"]) == ("grpo", 2, 0.04)
    trl = client.post("/api/export/trl", json=plan | {"objective": "kto"}).json()
    assert trl["filename"] == "kto.yaml" and any("trl kto --config" in n for n in trl["notes"])
    named = client.post("/api/import", json={"text": trl["text"], "objective": "kto"}).json()
    assert named["plan"]["objective"] == "kto"
    assert "objective" in _detail(client.post("/api/import", json={"text": trl["text"], "objective": "ppo"}), 422)


def test_import_errors(client: TestClient) -> None:
    assert "not valid YAML" in _detail(client.post("/api/import", json={"text": "a: [1"}), 422)
    assert "neither an axolotl" in _detail(client.post("/api/import", json={"text": "x: 1"}), 422)
    assert "format" in _detail(client.post("/api/import", json={"text": "x: 1", "format": "keras"}), 422)
    assert "lora_r" in _detail(client.post("/api/import", json={"text": "base_model: a/b\nadapter: lora\n"
                                                                       "lora_r: 0\n"}), 422)  # fmt: skip
