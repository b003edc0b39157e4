"""The page in a real browser: headless Chromium (Debian's ``chromium``) driven through Playwright.

A real uvicorn server runs the app on a free loopback port; every figure the page draws is compared with the
REST API's JSON for the same plan. Skipped when ``/usr/bin/chromium`` or Playwright is missing (install the
browser with ``apt-get install -y chromium``; never ``playwright install``).

``TUNEPLAN_SCREENSHOTS=1`` also writes the README screenshots (``docs/screenshots/``) from this server.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from app.main import create_app
from app.settings import Settings
from app.view import charts
from bench.browser import CHROMIUM, load, serve, wait_for

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "configs"
ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing: apt-get install -y chromium"),
]

pytest.importorskip("playwright.sync_api", reason="playwright (Python) is not installed")


# --- server ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base_url(hub: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app under uvicorn in a thread, with the local Hub of conftest.py."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("data"), hf_endpoint=hub.url, hf_token=None, hub_timeout_s=2.0)
    with serve(create_app(settings)) as url:
        yield url


def api_estimate(base_url: str, plan: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(base_url + "/api/estimate", json=plan, timeout=30)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def wait_updates(page: Any, n: int) -> None:
    wait_for(page, "n => Number(document.body.dataset.updates || 0) >= n", n)


def chart(page: Any, name: str) -> list[dict[str, Any]]:
    """The traces Plotly holds for a chart (the page's own data, after ``Plotly.react``)."""
    traces: list[dict[str, Any]] = page.evaluate(
        """name => document.getElementById('chart-' + name).data.map(t => ({
            name: t.name, meta: t.meta || {}, x: t.x, customdata: t.customdata || null}))""",
        name,
    )
    return traces


def components_on_page(page: Any) -> dict[str, list[int]]:
    return {t["meta"]["component"]: t["customdata"] for t in chart(page, "memory") if "component" in t["meta"]}


def sweep_lines(page: Any, name: str) -> dict[str, dict[str, Any]]:
    """Each method's line (not its over-capacity points, ``meta.over``, nor its fit answer, ``meta.fit``)."""
    return {t["meta"]["method"]: t for t in chart(page, name) if set(t["meta"]) == {"method"}}


def query(page: Any) -> dict[str, list[str]]:
    return parse_qs(urlparse(page.url).query, keep_blank_values=True)


# --- tests ----------------------------------------------------------------------------------------------------


def test_page_loads_and_changing_the_method_updates_the_charts(page: Any, base_url: str) -> None:
    plan = {"model": "llama-3.1-8b", "seq_len": 2048, "gpu": "rtx-4090"}
    load(page, base_url + "/?model=llama-3.1-8b&method=qlora&seq_len=2048&gpu=rtx-4090")
    expected = {m: api_estimate(base_url, {**plan, "method": m}) for m in ("full", "lora", "qlora")}

    # the bars: full, LoRA and QLoRA side by side, each component as the API computes it
    comps = components_on_page(page)
    for i, method in enumerate(("full", "lora", "qlora")):
        memory = expected[method]["memory"]
        for name, value in memory["components"].items():
            assert comps.get(name, [0, 0, 0])[i] == value, (method, name)
        assert sum(v[i] for v in comps.values()) == memory["total"]
    assert int(page.get_attribute("#peak-value", "data-peak-bytes")) == expected["qlora"]["memory"]["total"]
    assert list(sweep_lines(page, "seq_len")) == ["qlora"]

    page.click("label[for=method-full]")
    wait_updates(page, 1)
    assert query(page)["method"] == ["full"]
    full = expected["full"]["memory"]["total"]
    assert int(page.get_attribute("#peak-value", "data-peak-bytes")) == full
    lines = sweep_lines(page, "seq_len")
    assert list(lines) == ["full"]
    at_2048 = lines["full"]["customdata"][lines["full"]["x"].index(2048)]
    assert at_2048 == full
    at_4096 = api_estimate(base_url, {**plan, "method": "full", "seq_len": 4096})["memory"]["total"]
    assert lines["full"]["customdata"][lines["full"]["x"].index(4096)] == at_4096
    batch = sweep_lines(page, "batch_size")["full"]
    assert batch["x"] == [1, 2, 4, 8, 16, 32, 64] and batch["customdata"][0] == full
    assert "Does not fit" in page.inner_text("#summary")  # 8B full fine-tuning on a 24 GB card
    assert page.title().startswith("Full · ")

    page.click("label[for=method-compare]")
    wait_updates(page, 2)
    assert sorted(sweep_lines(page, "seq_len")) == ["full", "lora", "qlora"]
    assert "Full vs LoRA vs QLoRA" in page.inner_text("#summary")


def test_form_fields_update_the_url_and_the_numbers(page: Any, base_url: str) -> None:
    load(page, base_url + "/?model=qwen2.5-0.5b&method=lora")
    page.fill("#seq_len", "4096")
    wait_updates(page, 1)
    page.select_option("#gpu", "l4")
    wait_updates(page, 2)
    page.uncheck("#gradient_checkpointing")
    wait_updates(page, 3)
    q = query(page)
    assert q["seq_len"] == ["4096"] and q["gpu"] == ["l4"] and q["gradient_checkpointing"] == ["false"]
    expected = api_estimate(
        base_url,
        {"model": "qwen2.5-0.5b", "method": "lora", "seq_len": 4096, "gpu": "l4", "gradient_checkpointing": False},
    )
    assert int(page.get_attribute("#peak-value", "data-peak-bytes")) == expected["memory"]["total"]
    storage = {
        row.get_attribute("data-storage"): int(row.locator("td").get_attribute("data-bytes"))
        for row in page.locator("tr[data-storage]").all()
        if row.locator("td").get_attribute("data-bytes")
    }
    assert storage["download"] == expected["storage"]["download"]
    assert storage["adapter"] == expected["storage"]["adapter"]
    fits_on_page = page.locator("#fits li.fits").count()
    assert fits_on_page == sum(1 for f in expected["fits"] if f["fits"])


def test_upload_a_config_json(page: Any, base_url: str) -> None:
    load(page, base_url + "/?model=llama-3.1-8b&method=lora&seq_len=256")
    page.set_input_files("#config-file", str(FIXTURES / "llama.json"))
    wait_updates(page, 1)
    config = json.loads((FIXTURES / "llama.json").read_text())
    assert "config" in query(page) and "model" not in query(page)
    assert page.is_disabled("#model")
    assert "config.json (llama)" in page.inner_text("#summary")
    expected = api_estimate(base_url, {"config": config, "method": "lora", "seq_len": 256})
    assert int(page.get_attribute("#peak-value", "data-peak-bytes")) == expected["memory"]["total"]
    comps = components_on_page(page)
    assert comps["weights"][1] == expected["memory"]["components"]["weights"]
    # the sweep stops at the model's context (512 for this tiny llama)
    assert sweep_lines(page, "seq_len")["lora"]["x"] == [256, 512]

    # dropping a file works the same way
    qwen = json.loads((FIXTURES / "qwen2.json").read_text())
    page.evaluate(
        """text => {
            const data = new DataTransfer();
            data.items.add(new File([text], 'config.json', {type: 'application/json'}));
            const zone = document.getElementById('dropzone');
            zone.dispatchEvent(new DragEvent('dragover', {dataTransfer: data, bubbles: true, cancelable: true}));
            zone.dispatchEvent(new DragEvent('drop', {dataTransfer: data, bubbles: true, cancelable: true}));
        }""",
        json.dumps(qwen),
    )
    wait_updates(page, 2)
    assert "config.json (qwen2)" in page.inner_text("#summary")
    expected = api_estimate(base_url, {"config": qwen, "method": "lora", "seq_len": 256})
    assert int(page.get_attribute("#peak-value", "data-peak-bytes")) == expected["memory"]["total"]

    # and a file that is not JSON is refused with a message, the last good results stay
    page.set_input_files(
        "#config-file", files=[{"name": "config.json", "mimeType": "application/json", "buffer": b"{nope"}]
    )
    wait_for(page, "document.getElementById('error').textContent.includes('not valid JSON')")
    page.click("#config-clear")
    wait_updates(page, 3)
    assert not page.is_disabled("#model") and "config" not in query(page)


def test_a_shared_url_reproduces_the_page(page: Any, browser: Any, base_url: str) -> None:
    load(page, base_url + "/?model=qwen2.5-7b&method=qlora")
    page.click("label[for=method-lora]")
    wait_updates(page, 1)
    page.fill("#lora_r", "64")
    wait_updates(page, 2)
    page.fill("#batch_size", "2")
    wait_updates(page, 3)
    page.select_option("#optimizer", "adamw_8bit")
    wait_updates(page, 4)
    shared = page.url
    before = {name: chart(page, name) for name in ("memory", "seq_len", "batch_size", "storage", "objectives")}
    summary = page.inner_text("#summary")

    other = browser.new_context(viewport={"width": 1000, "height": 800}).new_page()
    load(other, shared)
    assert other.is_checked("#method-lora")
    assert other.input_value("#lora_r") == "64" and other.input_value("#batch_size") == "2"
    assert other.input_value("#optimizer") == "adamw_8bit"
    assert other.inner_text("#summary") == summary
    for name, traces in before.items():
        assert chart(other, name) == traces, name
    # the server rendered it: no request was needed for the first view
    assert other.evaluate("document.body.dataset.updates") == "0"
    other.context.close()


def test_unknown_model_is_explained_with_suggestions(page: Any, base_url: str) -> None:
    load(page, base_url + "/?model=llama-3.1-8b")
    page.fill("#model", "lama-3.1-8b")
    page.press("#model", "Enter")
    wait_for(page, "document.body.dataset.errors")
    error = page.locator("#error")
    assert error.get_attribute("role") == "alert"
    assert "lama-3.1-8b" in error.inner_text()
    error.locator("button").first.click()
    wait_updates(page, 1)
    assert error.inner_text() == ""


def test_model_type_ahead_searches_the_catalog(page: Any, base_url: str) -> None:
    load(page, base_url + "/")
    page.fill("#model", "qwen3")
    wait_for(
        page,
        """() => {
            const opts = [...document.querySelectorAll('#model-list option')].map(o => o.value);
            return opts.length > 0 && opts[0].startsWith('qwen3') && !opts.includes('llama-3.1-8b');
        }""",
    )
    # partial names are not estimated (nor sent to the Hub); a complete catalog id is
    assert page.evaluate("document.body.dataset.updates") == "0"
    page.fill("#model", "qwen3-0.6b")
    wait_updates(page, 1)
    assert "Qwen3 0.6B" in page.inner_text("#summary")


def test_keyboard_labels_and_live_region(page: Any, base_url: str) -> None:
    load(page, base_url + "/?model=llama-3.1-8b&method=qlora")
    unlabeled = page.evaluate(
        """() => [...document.querySelectorAll('input, select, button')]
            .filter(el => el.type !== 'hidden' && !el.closest('[hidden]'))
            .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label') && !el.textContent.trim())
            .map(el => el.id || el.name)"""
    )
    assert unlabeled == []
    assert page.get_attribute("#summary", "aria-live") == "polite"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip-link"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "brand"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "model"
    # radio group: arrows move the method, and the results follow
    page.focus("#method-qlora")
    page.keyboard.press("ArrowLeft")
    wait_updates(page, 1)
    assert page.is_checked("#method-lora") and query(page)["method"] == ["lora"]
    # fields that do not apply to the method are out of the tab order (QLoRA's quantization under LoRA)
    assert not page.is_visible("#quant_type")
    assert page.is_visible("#lora_r")


def test_phone_width_and_dark_mode(browser: Any, base_url: str) -> None:
    context = browser.new_context(
        viewport={"width": 390, "height": 844}, color_scheme="dark", is_mobile=True, has_touch=True
    )
    page = context.new_page()
    load(page, base_url + "/?model=llama-3.1-8b&method=compare&gpu=rtx-4090")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # nothing wider than the screen
    for name in ("memory", "seq_len", "batch_size", "storage", "objectives"):
        width = page.evaluate(f"document.getElementById('chart-{name}').getBoundingClientRect().width")
        assert 0 < width <= 390
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert sum(int(c) for c in background[background.index("(") + 1 : -1].split(",")[:3]) < 150
    font = page.evaluate("document.getElementById('chart-memory').layout.font.color")
    fg = page.evaluate("getComputedStyle(document.documentElement).getPropertyValue('--fg').trim()")
    assert font == fg
    assert page.evaluate("getComputedStyle(document.documentElement).fontSize") == "16px"
    context.close()


def test_the_page_works_without_javascript(browser: Any, base_url: str) -> None:
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    page.goto(base_url + "/?model=llama-3.1-8b&method=qlora&gpu=rtx-4090")
    expected = api_estimate(base_url, {"model": "llama-3.1-8b", "method": "qlora", "gpu": "rtx-4090"})
    assert int(page.get_attribute("#peak-value", "data-peak-bytes")) == expected["memory"]["total"]
    assert page.locator("#storage tr[data-storage]").count() == 5
    page.click("label[for=method-full]")
    page.fill("#seq_len", "1024")
    page.click("button[type=submit]")
    page.wait_for_url("**/?*method=full*")
    q = query(page)
    assert q["seq_len"] == ["1024"] and q["gradient_checkpointing"][-1] == "true"
    full = api_estimate(base_url, {"model": "llama-3.1-8b", "method": "full", "gpu": "rtx-4090", "seq_len": 1024})
    assert int(page.get_attribute("#peak-value", "data-peak-bytes")) == full["memory"]["total"]
    context.close()


def test_first_render_and_charts_are_marked(page: Any, base_url: str) -> None:
    """The page paints and marks when every chart is drawn (bench/page_load.py times them; tests do not)."""
    url = base_url + "/?model=llama-3.1-8b&method=compare&gpu=a100-80gb"
    load(page, url)  # warm
    load(page, url)
    # The paint entry is queued once the frame is presented, which can come after the load event
    # on a busy machine: wait for it rather than read it at once.
    wait_for(page, "performance.getEntriesByName('first-contentful-paint').length > 0")
    timing = page.evaluate(
        """() => {
            const nav = performance.getEntriesByType('navigation')[0];
            const fcp = performance.getEntriesByName('first-contentful-paint')[0];
            const charts = performance.getEntriesByName('tuneplan:charts')[0];
            return {dcl: nav.domContentLoadedEventEnd, fcp: fcp ? fcp.startTime : null,
                    charts: charts ? charts.startTime : null};
        }"""
    )
    assert timing["fcp"] is not None, timing
    assert timing["charts"] is not None, timing


@pytest.mark.skipif(not os.environ.get("TUNEPLAN_SCREENSHOTS"), reason="set TUNEPLAN_SCREENSHOTS=1 to write them")
def test_write_screenshots(base_url: str) -> None:
    from bench import screenshots

    paths = screenshots.take(base_url, ROOT / "docs" / "screenshots")
    assert all(p.stat().st_size < 600_000 for p in paths)


def test_peak_helper_agrees_with_fits(base_url: str) -> None:
    """The page shows ``memory.total`` as the peak; ``fits`` compares the high edge of its range with usable memory
    (on a GPU of the estimate's own architecture: sm90 when the plan names none)."""
    result = api_estimate(base_url, {"model": "llama-3.1-8b", "method": "qlora"})
    high = result["memory"]["range"]["total"][1]
    assert charts.peak_bytes(result) == result["memory"]["total"] <= high
    hopper = [r for r in result["fits"] if r["id"] in ("h100-sxm", "h100-pcie", "h200")]
    assert hopper and all(r["usable_bytes"] - r["headroom_bytes"] == high for r in hopper)


def test_the_page_and_the_api_docs_work_under_their_content_security_policy(page: Any, base_url: str) -> None:
    """The page's charts and Swagger UI at /docs run under the server's CSP (no inline script, no eval) with every
    file from this server: no violation is reported, no request leaves it."""
    violations: list[str] = []
    outside: list[str] = []
    page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
    page.on("request", lambda r: None if r.url.startswith((base_url, "data:", "blob:")) else outside.append(r.url))
    response = page.goto(base_url + "/?model=llama-3.1-8b&method=compare")
    assert response is not None
    policy = response.headers["content-security-policy"]
    assert "script-src 'self';" in policy and "unsafe-eval" not in policy and "frame-ancestors 'none'" in policy
    assert response.headers["x-content-type-options"] == "nosniff" and response.headers["x-frame-options"] == "DENY"
    page.wait_for_selector("body[data-charts=ready]", timeout=20_000)
    assert page.locator("#chart-memory .main-svg").count() > 0
    page.goto(base_url + "/docs")
    page.wait_for_selector(".swagger-ui .info .title", timeout=20_000)
    assert "tuneplan" in page.inner_text(".swagger-ui .info .title")
    assert page.locator(".swagger-ui .opblock").count() >= 8  # every operation is listed
    assert violations == [] and outside == []


# --- the three questions: does it fit, what is the most I can run, what do I change ------------------------


def layout(page: Any, name: str) -> dict[str, Any]:
    result: dict[str, Any] = page.evaluate(f"document.getElementById('chart-{name}').layout")
    return result


def test_fits_panel_answers_with_the_apis_fit_and_the_t4_gives_its_dtype_reason(page: Any, base_url: str) -> None:
    plan = {"model": "llama-3.1-8b", "method": "qlora", "seq_len": 4096, "gpu": "rtx-4090"}
    load(page, base_url + "/?model=llama-3.1-8b&method=qlora&seq_len=4096&gpu=rtx-4090")
    fit = api_estimate(base_url, plan)["fit"]
    verdict = page.locator("#summary .verdict")
    assert verdict.get_attribute("data-gpu") == "rtx-4090" and fit["fits"] and fit["max_batch_size"] >= 1
    assert int(verdict.get_attribute("data-max-batch")) == fit["max_batch_size"]
    assert int(verdict.get_attribute("data-max-seq")) == fit["max_seq_len"]
    assert int(verdict.get_attribute("data-headroom-bytes")) == fit["headroom_bytes"] > 0
    assert page.inner_text("[data-fit=max_seq_len]") == f"{fit['max_seq_len']:,} tokens"
    assert page.inner_text("[data-fit=max_batch_size]") == f"{fit['max_batch_size']:,}"
    # the same answers are drawn on the sweeps, labelled, where the capacity line is
    marks = {n: [t for t in chart(page, n) if "fit" in t["meta"]] for n in ("seq_len", "batch_size")}
    assert [(t["meta"]["fit"], t["name"]) for t in marks["seq_len"]] == [
        (fit["max_seq_len"], f"largest that fits: {fit['max_seq_len']:,}")
    ]
    assert [t["meta"]["fit"] for t in marks["batch_size"]] == [fit["max_batch_size"]]
    # readable at 256 tokens: QLoRA at 128k is thousands of GiB, so the axis is logarithmic and the 256-token
    # point sits well above the bottom of the plot instead of on a flat line at zero
    y = layout(page, "seq_len")["yaxis"]
    line = sweep_lines(page, "seq_len")["qlora"]
    at_256 = line["customdata"][line["x"].index(256)] / 2**30
    assert y["type"] == "log" and max(line["customdata"]) / min(line["customdata"]) > 100
    low, high = y["range"]

    def height(gib: float) -> float:  # where a value sits, as a share of the plot's height
        return (math.log10(gib) - low) / (high - low)

    at_16k = line["customdata"][line["x"].index(16384)] / 2**30
    assert 0 < height(at_256) and height(at_16k) - height(at_256) > 0.15  # 256 to 16k tokens: no flat line

    # the T4 has no bfloat16: the page says so (the API's reason), not a shortfall it does not have
    page.select_option("#gpu", "t4")
    wait_updates(page, 1)
    t4 = api_estimate(base_url, plan | {"gpu": "t4"})["fit"]
    assert t4["reason"] and "float16" in t4["reason"] and not t4["fits"]
    text = page.inner_text("#summary .verdict")
    assert t4["reason"] in text and "short" not in text.split(t4["reason"])[0]
    if t4["headroom_bytes"] >= 0:
        assert "short" not in text
    # and what to change: float16 first, the other levers saying they do not remove the reason
    assert page.inner_text("#advice h3") == "Make it run on NVIDIA T4"
    assert page.get_attribute("#advice li.lever >> nth=0", "data-lever") == "fp16"
    t4_row = page.inner_text("#fits li[data-gpu=t4]")
    assert t4["reason"] in t4_row and ("short" not in t4_row or t4["headroom_bytes"] < 0)

    # no GPU: how many catalog GPUs it fits, and the smallest of them
    page.select_option("#gpu", "")
    wait_updates(page, 2)
    rows = api_estimate(base_url, plan | {"gpu": None})["fits"]
    fitting = [g for g in rows if g["fits"]]
    smallest = min(fitting, key=lambda g: g["usable_bytes"])
    assert f"Fits on {len(fitting)} of {len(rows)} catalog GPUs; smallest: {smallest['name']}" in page.inner_text(
        "#summary"
    )


def test_an_advisor_lever_applied_changes_the_plan_and_the_peak_as_listed(page: Any, base_url: str) -> None:
    plan = {"model": "llama-3.1-8b", "method": "qlora", "batch_size": 4, "seq_len": 4096, "gpu": "rtx-4090"}
    load(page, base_url + "/?" + "&".join(f"{k}={v}" for k, v in plan.items()))
    advice = api_estimate(base_url, plan)["advice"]
    levers = page.locator("#advice li.lever")
    assert [levers.nth(i).get_attribute("data-lever") for i in range(levers.count())] == [
        a["lever"] for a in advice[: levers.count()]
    ]
    first = advice[0]
    assert int(levers.first.get_attribute("data-total-bytes")) == first["total"]
    assert not page.locator("#summary .verdict").get_attribute("class").endswith(" fits")  # it does not fit now
    levers.first.locator("button.apply").click()
    wait_updates(page, 1)
    q = query(page)
    for name, value in first["plan_changes"].items():
        shown = ",".join(value) if isinstance(value, list) else str(value).lower()
        assert q[name] == [shown], name
    assert int(page.get_attribute("#peak-value", "data-peak-bytes")) == first["total"]
    applied = api_estimate(base_url, plan | first["plan_changes"])
    assert applied["memory"]["total"] == first["total"] and applied["fit"]["fits"] == first["fits"]


def test_on_a_phone_the_result_stays_in_view_while_editing(browser: Any, base_url: str) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = context.new_page()
    load(page, base_url + "/?model=qwen2.5-7b&method=lora&seq_len=2048&gpu=l4")
    before = int(page.get_attribute("#peak-value", "data-peak-bytes"))
    page.locator("#seq_len").scroll_into_view_if_needed()
    page.evaluate("window.scrollBy(0, 200)")  # the field being edited, the summary far above
    summary = page.evaluate("(() => { const r = document.getElementById('summary').getBoundingClientRect(); "
                            "return [r.top, r.bottom]; })()")  # fmt: skip
    assert summary[1] <= 0 or summary[0] >= 844  # the summary card itself is out of view
    page.fill("#seq_len", "8192")
    wait_updates(page, 1)
    after = int(page.get_attribute("#peak-value", "data-peak-bytes"))
    expected = api_estimate(base_url, {"model": "qwen2.5-7b", "method": "lora", "seq_len": 8192, "gpu": "l4"})
    assert after == expected["memory"]["total"] != before
    box = page.evaluate("(() => { const r = document.getElementById('sticky').getBoundingClientRect(); "
                        "return {top: r.top, bottom: r.bottom, visible: getComputedStyle(document.getElementById("
                        "'sticky')).visibility}; })()")  # fmt: skip
    assert 0 <= box["top"] < box["bottom"] <= 844 and box["visible"] == "visible"
    sticky = page.inner_text("#sticky")
    assert page.inner_text("#peak-value") in sticky and ("Fits" in sticky or "Does not fit" in sticky)
    field = page.evaluate("document.getElementById('seq_len').getBoundingClientRect().top")
    assert box["bottom"] <= field  # the bar does not hide the field being edited
    context.close()


def test_form_errors_mark_the_field_with_its_range_and_offer_the_long_context_switch(page: Any, base_url: str) -> None:
    load(page, base_url + "/?model=llama-3.1-8b&method=qlora")
    page.fill("#lora_r", "0")
    wait_for(page, "document.getElementById('lora_r').getAttribute('aria-invalid') === 'true'")
    message = page.inner_text("#lora_r-live-error")
    assert message.startswith("Rank r: enter a whole number from 1 to ") and "(got 0)" in message
    assert page.get_attribute("#lora_r", "aria-describedby").endswith("lora_r-live-error")
    page.fill("#lora_r", "16")
    wait_updates(page, 1)
    assert page.get_attribute("#lora_r", "aria-invalid") is None

    # beyond the model's context: the message names the form's switch and a button turns it on
    page.fill("#seq_len", "200000")
    wait_for(page, "document.querySelector('#error [data-turn-on]') !== null")
    assert "Allow sequences beyond the model's context" in page.inner_text("#error")
    assert "allow_long_context" not in page.inner_text("#error")  # the API's name is for developers
    page.click("#error [data-turn-on]")
    wait_updates(page, 2)
    assert page.is_checked("#allow_long_context") and query(page)["allow_long_context"] == ["true"]
    assert query(page)["seq_len"] == ["200000"] and page.inner_text("#error") == ""


def test_time_rent_export_and_the_rule_of_thumb_card(page: Any, base_url: str) -> None:
    plan = {"model": "qwen2.5-0.5b", "method": "lora", "seq_len": 1024, "gpu": "l4", "train_tokens": 10**8}
    load(page, base_url + "/?" + "&".join(f"{k}={v}" for k, v in plan.items()))
    expected = api_estimate(base_url, plan)
    assert page.inner_text("[data-time=step]") == f"{expected['time']['step_s']:.3f} s"

    # which GPU to rent: the server's answer, cheapest first, named as the form names the cards
    page.click("#rent-show")
    page.wait_for_selector("#rent-result table.rent-table")
    rent = httpx.post(base_url + "/api/rent", json=plan, timeout=60).json()
    rows = page.locator("#rent-result tbody tr")
    assert rows.count() == min(10, len(rent["options"]))
    assert [rows.nth(i).get_attribute("data-gpu") for i in range(rows.count())] == [
        o["gpu"] for o in rent["options"][:10]
    ]
    first = rent["options"][0]["gpu"]
    assert rows.first.locator("th").inner_text() == page.inner_text(f"#gpu option[value='{first}']").split(" · ")[0]

    # an export button downloads the file the API writes for this plan
    with page.expect_download() as info:
        page.click("[data-export=axolotl]")
    exported = httpx.post(base_url + "/api/export/axolotl", json=plan, timeout=30).json()
    download = info.value
    assert download.suggested_filename == exported["filename"]
    assert Path(download.path()).read_text() == exported["text"]

    # the rule of thumb for any count: the seed's 10B example
    page.fill("#rule-params", "10B")
    wait_for(page, "document.getElementById('rule-figures').dataset.params === '10000000000'")
    figures = {k: page.inner_text(f"[data-rule={k}]") for k in ("fp16", "int4", "adapter", "qlora_total")}
    assert figures == {"fp16": "20.0 GB", "int4": "5.0 GB", "adapter": "200.0 MB", "qlora_total": "5.2 GB"}


def test_your_own_gpu_by_name_and_memory(page: Any, base_url: str) -> None:
    load(page, base_url + "/?model=qwen2.5-0.5b&method=lora")
    page.select_option("#gpu", "custom")
    assert page.is_visible("#gpu-custom-name")
    page.fill("#gpu-custom-name", "My card")
    page.fill("#gpu-custom-memory", "20")
    wait_for(page, "document.querySelector('#summary .verdict').dataset.kind === 'gpu'")
    assert query(page)["gpu"] == ["My card:20GiB"]
    fit = api_estimate(base_url, {"model": "qwen2.5-0.5b", "method": "lora", "gpu": "My card:20GiB"})["fit"]
    assert fit["name"] == "My card" and "My card" in page.inner_text("#summary .verdict")
    assert int(page.get_attribute("#summary .verdict", "data-max-seq")) == fit["max_seq_len"]
    # the link reproduces it: the custom card is an option of the GPU control
    load(page, page.url)
    assert page.input_value("#gpu") == "My card:20GiB" and "(your GPU)" in page.inner_text("#gpu option:checked")
