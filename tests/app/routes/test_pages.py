"""The page (``app.routes.pages`` over ``app.view``): server-rendered form and results, ``POST /api/charts``,
plotly.js served from the installed package."""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app, plotly_dir
from app.routes import pages as page_routes
from app.settings import PROJECT_ROOT, Settings
from app.view import charts
from app.view import form as pages
from app.view import page as view
from estimator import gib_text

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "configs"


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def estimate(client: TestClient, plan: dict[str, Any]) -> dict[str, Any]:
    """The REST API's estimate for a plan: what the page must agree with."""
    response = client.post("/api/estimate", json=plan)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


# --- GET / -------------------------------------------------------------------------------------------------


def test_bare_page_shows_the_default_plan_and_its_results(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.template.name == "index.html"  # type: ignore[attr-defined]
    context = response.context  # type: ignore[attr-defined]
    assert context["form"]["model"] == "llama-3.1-8b"
    assert context["method"] == "qlora"
    assert context["form"]["seq_len"] == 2048 and context["form"]["gradient_checkpointing"] is True
    assert context["result"]["primary"] == "qlora"
    assert set(context["initial"]["charts"]) == {"memory", "seq_len", "batch_size", "storage", "objectives"}
    assert any(g.id == "h100-sxm" for g in context["gpus"])
    assert any(m.id == "llama-3.1-8b" for m in context["models"])
    html = response.text
    assert '<script src="/static/vendor/plotly.min.js?v=' in html and "cdn" not in html.lower()
    assert 'aria-live="polite"' in html
    assert 'id="initial-data"' in html


def test_page_form_is_filled_from_the_query_string_and_results_match_the_api(client: TestClient) -> None:
    query = (
        "model=qwen2.5-7b&method=lora&dtype=float16&lora_r=64&lora_alpha=128&target_modules=q_proj,v_proj"
        "&batch_size=4&seq_len=4096&gradient_checkpointing=false&gradient_checkpointing=true"
        "&optimizer=adamw_8bit&attn_implementation=eager&gpu=a100-40gb&num_gpus=2&sharding=zero2"
    )
    response = client.get("/?" + query)
    assert response.status_code == 200, response.text
    context = response.context  # type: ignore[attr-defined]
    form = context["form"]
    assert form["model"] == "qwen2.5-7b" and form["dtype"] == "float16"
    assert (form["lora_r"], form["lora_alpha"], form["batch_size"], form["seq_len"]) == (64, 128, 4, 4096)
    assert form["target_modules"] == "q_proj,v_proj"
    assert form["gradient_checkpointing"] is True  # the checkbox's value follows the hidden "false"
    assert (form["gpu"], form["num_gpus"], form["sharding"]) == ("a100-40gb", 2, "zero2")
    html = response.text
    assert '<option value="a100-40gb" selected>' in html
    assert 'id="method-lora" name="method" value="lora" checked' in html
    assert 'name="seq_len" type="number"' in html and 'value="4096"' in html

    plan = {
        "model": "qwen2.5-7b", "method": "lora", "dtype": "float16", "lora_r": 64, "lora_alpha": 128,
        "target_modules": ["q_proj", "v_proj"], "batch_size": 4, "seq_len": 4096,
        "gradient_checkpointing": True, "optimizer": "adamw_8bit", "attn_implementation": "eager",
        "gpu": "a100-40gb", "num_gpus": 2, "sharding": "zero2",
    }  # fmt: skip
    expected = estimate(client, plan)
    result = context["result"]
    assert result["peak"] == charts.peak_bytes(expected)
    breakdown = {b["key"]: b["bytes"] for b in result["breakdown"]}
    assert breakdown == {k: v for k, v in expected["memory"]["components"].items() if v}
    # per GPU vs all GPUs together, and host RAM per rank, labelled as such (the API's memory.per_rank / host_peak)
    per_rank, host = expected["memory"]["per_rank"], expected["memory"]["host_peak"]
    assert per_rank["num_gpus"] == 2 and per_rank["all_gpus_total"] == 2 * per_rank["total"] and host > 0
    scale = result["scale"]
    assert (scale["per_gpu_text"], scale["all_gpus_text"]) == (gib_text(per_rank["total"]),
                                                               gib_text(per_rank["all_gpus_total"]))  # fmt: skip
    assert f'Per GPU (each of 2, zero2): <strong class="num" data-scale="per-gpu">{scale["per_gpu_text"]}' in html
    assert f'all 2 GPUs together: <strong class="num" data-scale="all-gpus">{scale["all_gpus_text"]}' in html
    assert f'Host RAM (CPU) per rank: <strong class="num" data-scale="host">{gib_text(host)}' in html
    assert f'data-peak-bytes="{charts.peak_bytes(expected)}"' in html
    for note in expected["memory"]["notes"]:
        assert note.replace("'", "&#39;").replace('"', "&#34;")[:40] in html
    assert result["fit"]["gpu"] == "a100-40gb" and result["fit"]["kind"] == "gpu"
    # the query string the page writes back reads the same
    again = pages.parse_query({k: [v] for k, v in _pairs(pages.query_string(form))})
    assert again.values == form and again.plan == pages.parse_query(_multi(query)).plan


def _pairs(query: str) -> list[tuple[str, str]]:
    from urllib.parse import parse_qsl

    return parse_qsl(query, keep_blank_values=True)


def _multi(query: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key, value in _pairs(query):
        out.setdefault(key, []).append(value)
    return out


def test_bad_query_values_are_kept_and_explained(client: TestClient) -> None:
    response = client.get("/?model=llama-3.1-8b&seq_len=lots&method=sideways")
    assert response.status_code == 422
    context = response.context  # type: ignore[attr-defined]
    assert context["form"]["seq_len"] == "lots"
    assert "seq_len must be an integer" in context["form_errors"]["seq_len"]
    assert "method" in context["form_errors"]
    assert context["result"] is None
    assert 'aria-invalid="true"' in response.text and 'value="lots"' in response.text


def test_plan_errors_from_the_estimator_show_on_the_page(client: TestClient) -> None:
    response = client.get("/?model=gpt2&method=qlora&seq_len=4096")
    assert response.status_code == 422
    assert response.context["result"] is None  # type: ignore[attr-defined]
    assert "allow_long_context" in response.context["error"]["detail"]  # type: ignore[attr-defined]
    # a value out of a field's bounds is the form's own error, on the field
    response = client.get("/?model=llama-3.1-8b&method=qlora&lora_r=0")
    assert response.status_code == 422
    assert "lora_r must be ≥ 1" in response.context["form_errors"]["lora_r"]  # type: ignore[attr-defined]


def test_unknown_model_suggests_catalog_ids_as_links(client: TestClient) -> None:
    response = client.get("/?model=lama-3.1-8b")
    assert response.status_code == 404
    suggestions = response.context["suggestions"]  # type: ignore[attr-defined]
    assert suggestions and all(s["href"].startswith("?model=") for s in suggestions)
    assert any("llama" in s["id"] for s in suggestions)


def test_inline_config_travels_in_the_query_string(client: TestClient) -> None:
    config = json.loads((FIXTURES / "llama.json").read_text())
    encoded = pages.encode_config(config)
    assert pages.decode_config(encoded) == config
    response = client.get(f"/?config={encoded}&method=full&seq_len=256")
    assert response.status_code == 200, response.text
    context = response.context  # type: ignore[attr-defined]
    assert context["config_name"] == "config.json (llama)"
    assert context["result"]["model_label"] == "config.json (llama)"
    expected = estimate(client, {"config": config, "method": "full", "seq_len": 256})
    assert context["result"]["peak"] == charts.peak_bytes(expected)
    assert 'id="model"' in response.text and " disabled" in response.text


def test_a_broken_inline_config_is_explained() -> None:
    with pytest.raises(ValueError, match="could not be read"):
        pages.decode_config("!!!")
    with pytest.raises(ValueError, match="JSON object"):
        pages.decode_config(pages.encode_config([1, 2]))  # type: ignore[arg-type]
    state = pages.parse_query({"config": ["bm90IGpzb24"]})
    assert state.plan is None and "config" in state.errors


# --- POST /api/charts ------------------------------------------------------------------------------------


def test_charts_compare_all_three_methods_and_agree_with_the_api(client: TestClient) -> None:
    plan = {"model": "llama-3.1-8b", "method": "compare", "seq_len": 2048, "gpu": "rtx-4090"}
    response = client.post("/api/charts", json=plan)
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["method"] == "compare" and set(data["estimates"]) == {"full", "lora", "qlora"}
    for method in ("full", "lora", "qlora"):
        expected = estimate(client, {**plan, "method": method})
        assert data["estimates"][method] == expected

    memory = data["charts"]["memory"]
    traces = {t["meta"]["component"]: t for t in memory["data"] if "component" in t["meta"]}
    for i, method in enumerate(("full", "lora", "qlora")):
        memory_json = data["estimates"][method]["memory"]
        comps = memory_json["components"]
        for component, trace in traces.items():
            assert trace["customdata"][i] == comps[component]
        assert sum(t["customdata"][i] for t in traces.values()) == memory_json["total"]
    labels = [a["text"] for a in memory["layout"]["annotations"] if a.get("xref") == "paper"]
    assert "RTX 4090: 23.64 GiB usable" not in labels and "A100 (SXM4): 39.50 GiB usable" in labels
    assert not any(" GB" in label for label in labels)  # GiB only on a memory chart
    (selected,) = [t["name"] for t in memory["data"] if t["meta"].get("capacity")]
    assert selected == data["capacity"]["label"] == "RTX 4090: 23.64 GiB usable"

    # sweeps: powers of two from 256 to the model's context (128k), batch 1..64, for each method
    seq = data["sweeps"]["seq_len"]
    assert set(seq) == {"full", "lora", "qlora"}
    assert [p["x"] for p in seq["qlora"]] == [256 * 2**k for k in range(10)]
    assert [p["x"] for p in data["sweeps"]["batch_size"]["lora"]] == [1, 2, 4, 8, 16, 32, 64]
    point = next(p for p in seq["qlora"] if p["x"] == 2048)
    assert point["peak"] == charts.peak_bytes(data["estimates"]["qlora"])
    at_8k = estimate(client, {**plan, "method": "qlora", "seq_len": 8192})
    assert next(p for p in seq["qlora"] if p["x"] == 8192)["peak"] == charts.peak_bytes(at_8k)
    capacity = data["capacity"]
    assert capacity["gpu"] == "rtx-4090"
    assert all(p["fits"] == (p["peak"] <= capacity["bytes"]) for p in seq["full"])
    seq_chart = data["charts"]["seq_len"]
    lines = {t["meta"]["method"]: t for t in seq_chart["data"] if set(t["meta"]) == {"method"}}
    assert lines["qlora"]["customdata"] == [p["peak"] for p in seq["qlora"]]
    assert seq_chart["layout"]["meta"]["capacity"] == capacity["bytes"]
    # the fit search's answers are drawn, not the first swept point over the line
    fits = {m: data["estimates"][m]["fit"]["max_seq_len"] for m in ("full", "lora", "qlora")}
    assert seq_chart["layout"]["meta"]["fits"] == fits and not fits["full"] and fits["qlora"]

    assert data["charts"]["storage"]["data"][0]["customdata"][0] == data["estimates"]["qlora"]["storage"]["download"]
    assert set(data["html"]) == set(page_routes.FRAGMENTS)
    assert "Full vs LoRA vs QLoRA" in data["html"]["summary"]


def test_charts_for_one_method_sweep_that_method_only(client: TestClient) -> None:
    plan = {"model": "qwen2.5-0.5b", "method": "full", "seq_len": 1024, "batch_size": 2}
    data = client.post("/api/charts", json=plan).json()
    assert data["method"] == "full" and data["primary"] == "full"
    assert set(data["sweeps"]["seq_len"]) == {"full"}
    assert set(data["estimates"]) == {"full", "lora", "qlora"}  # the bar chart still compares all three
    expected = estimate(client, plan)
    assert data["estimates"]["full"] == expected
    summary = data["html"]["summary"]
    assert f'data-peak-bytes="{charts.peak_bytes(expected)}"' in summary
    assert str(expected["storage"]["rule_of_thumb"]) in summary or "parameters" in summary
    fitting = [g for g in expected["fits"] if g["fits"]]
    assert f"Fits on {len(fitting)} of {len(expected['fits'])} catalog GPUs; smallest: " in summary  # no GPU chosen
    assert "(for reference)" not in summary
    for note in expected["memory"]["notes"]:
        assert note[:30].replace("'", "&#39;") in data["html"]["notes"]


def test_charts_resolve_hub_ids_like_the_api(client: TestClient) -> None:
    plan = {"model": "acme/tiny-llama", "method": "lora", "seq_len": 512}
    data = client.post("/api/charts", json=plan).json()
    assert data["estimates"]["lora"] == estimate(client, plan)
    assert [p["x"] for p in data["sweeps"]["seq_len"]["lora"]] == [256, 512, 1024, 2048, 4096]


def test_charts_inline_config(client: TestClient) -> None:
    config = json.loads((FIXTURES / "qwen2.json").read_text())
    plan = {"config": config, "method": "qlora", "seq_len": 128}
    data = client.post("/api/charts", json=plan).json()
    assert data["estimates"]["qlora"] == estimate(client, plan)
    assert data["plan"]["config"] is None  # not echoed back
    assert data["model_label"].startswith("config.json")


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"model": "llama-3.1-8b", "method": "sideways"}, 422, "method must be one of"),
        ({"model": "llama-3.1-8b", "seq_len": 0}, 422, "seq_len"),
        ({"model": "llama-3.1-8b", "colour": "red"}, 422, "colour"),
        ({"config": {"model_type": "bert", "hidden_size": 8}}, 422, ""),
        ({"model": "acme/does-not-exist"}, 404, ""),
    ],
)
def test_charts_errors_say_what_to_fix(client: TestClient, body: dict[str, Any], status: int, fragment: str) -> None:
    response = client.post("/api/charts", json=body)
    assert response.status_code == status, response.text
    assert fragment in response.json()["detail"]


# --- plotly.js, static files ----------------------------------------------------------------------------


def test_plotly_js_is_served_from_the_installed_package(client: TestClient) -> None:
    raw = (plotly_dir() / "plotly.min.js").read_bytes()
    response = client.get("/static/vendor/plotly.min.js", headers={"Accept-Encoding": "identity"})
    assert response.status_code == 200
    assert "javascript" in response.headers["content-type"]
    assert response.content == raw
    assert "immutable" in response.headers["cache-control"]
    packed = client.get("/static/vendor/plotly.min.js", headers={"Accept-Encoding": "gzip"})
    assert packed.headers["content-encoding"] == "gzip"
    assert len(packed.headers.get("content-length", "0")) and packed.content == raw  # the client inflates
    assert len(gzip.compress(raw)) < len(raw) / 2
    etag = response.headers["etag"]
    assert client.get("/static/vendor/plotly.min.js", headers={"If-None-Match": etag}).status_code == 304
    assert not (PROJECT_ROOT / "static" / "vendor" / "plotly.min.js").exists()


def test_static_assets_are_served(client: TestClient) -> None:
    for path, kind in (("/static/app.js", "javascript"), ("/static/app.css", "css")):
        response = client.get(path)
        assert response.status_code == 200 and kind in response.headers["content-type"]


def test_seq_sweep_values() -> None:
    assert view.seq_sweep_values(2048) == [256, 512, 1024, 2048]
    assert view.seq_sweep_values(3000) == [256, 512, 1024, 2048]
    assert view.seq_sweep_values(128) == [128]
    assert view.seq_sweep_values(1 << 24)[-1] == view.SEQ_SWEEP_MAX


def test_comparing_shows_the_methods_the_estimator_accepts_and_why_the_others_fail(client: TestClient) -> None:
    # LoRA on MoE experts needs lora_dropout 0: a dropout the user chose (0.1) leaves only full fine-tuning
    body = {"model": "qwen3-30b-a3b", "method": "compare", "lora_dropout": 0.1}
    data = client.post("/api/charts", json=body).json()
    assert set(data["estimates"]) == {"full"} and set(data["errors"]) == {"lora", "qlora"}
    assert data["primary"] == "full"
    assert "lora_dropout" in data["html"]["summary"]
    assert client.post("/api/charts", json=body | {"method": "qlora"}).status_code == 422

    # the default dropout is set to 0 for it, and the page says so
    response = client.get("/?model=qwen3-30b-a3b&method=compare")
    assert response.status_code == 200
    assert set(response.context["result"]["notes"]) == {"full", "lora", "qlora"}  # type: ignore[attr-defined]
    assert "lora_dropout 0.05 → 0.0" in response.text


def test_a_deeply_nested_config_in_the_url_is_explained_not_a_crash(client: TestClient) -> None:
    for depth in (40, 900, 5_000):
        raw = '{"model_type": "llama", "x": ' + '{"x": ' * depth + "{}" + "}" * depth + "}"
        page = client.get("/?config=" + base64.urlsafe_b64encode(raw.encode()).decode().rstrip("="))
        assert page.status_code == 422, depth
        assert "levels deep" in page.text or "could not be read" in page.text


def test_errors_on_the_page_are_written_for_a_person_and_the_api_keeps_its_own(client: TestClient) -> None:
    """The API tells a developer what to send; the page names its own controls and says what to do there."""
    plan = {"model": "acme/no-such-model-7b-instruct", "method": "lora"}
    api = client.post("/api/estimate", json=plan)
    page = client.post("/api/charts", json=plan)
    assert api.status_code == page.status_code == 404
    assert "X-HF-Token" in api.json()["detail"]  # a developer's next step
    message = page.json()["message"]
    assert message.startswith("There is no model “acme/no-such-model-7b-instruct” on the Hugging Face Hub")
    assert "X-HF-Token" not in message and "drop the model's config.json in the Model box" in message
    html = client.get("/?model=acme/no-such-model-7b-instruct&method=lora").text
    assert "check the spelling, or pick a catalog model" in html and "X-HF-Token" not in html

    long = client.post("/api/charts", json={"model": "gpt2", "method": "lora", "seq_len": 200_000}).json()
    assert long["fields"] == ["seq_len", "allow_long_context"]  # the fields the page marks and offers to turn on
    assert "“Allow sequences beyond the model's context”" in long["message"] and "allow_long_context" in long["detail"]


def test_the_page_shows_zero_infinitys_nvme_bytes_per_rank(client: TestClient) -> None:
    """ZeRO-3 with its state on NVMe: the summary shows the bytes on the NVMe path per rank (memory.host.nvme) beside
    the host RAM; a plan without it shows no NVMe figure."""
    query = "model=llama-3.1-8b&method=full&num_gpus=8&sharding=zero3&offload=optimizer&offload_device=nvme"
    response = client.get("/?" + query)
    assert response.status_code == 200, response.text
    plan = {"model": "llama-3.1-8b", "method": "full", "num_gpus": 8, "sharding": "zero3", "offload": "optimizer",
            "offload_device": "nvme"}  # fmt: skip
    nvme = estimate(client, plan)["memory"]["host"]["nvme"]
    assert nvme > 0
    assert f'NVMe (ZeRO-Infinity) per rank: <strong class="num" data-scale="nvme">{gib_text(nvme)}' in response.text
    assert 'data-scale="nvme"' not in client.get("/?model=llama-3.1-8b&method=full&num_gpus=8&sharding=zero3").text
