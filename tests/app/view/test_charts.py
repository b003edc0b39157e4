"""The page's Plotly figures (``app.charts``): pure functions over contracts, tested with synthetic ones."""

from __future__ import annotations

import json
from typing import Any

from app.view import charts
from estimator import COMPONENTS, GB, GIB, Plan, catalog, estimate, gib_text

ESTIMATES = {
    m: estimate(Plan(model="llama-3.1-8b", method=m, seq_len=2048)).to_dict() for m in ("full", "lora", "qlora")
}


def _usable(gpu_id: str) -> int:
    gpu = catalog.find_gpu(gpu_id)
    assert gpu is not None
    return gpu.usable_bytes


def by_name(fig: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {trace["name"]: trace for trace in fig["data"]}


def test_memory_bars_stack_components_per_method_in_canonical_order() -> None:
    fig = charts.memory_bar_chart(ESTIMATES)
    assert fig["layout"]["barmode"] == "stack"
    traces = by_name(fig)
    # the estimator's components, in its order, leaving out those zero for every method
    shown = [c for c in COMPONENTS if any(ESTIMATES[m]["memory"]["components"][c] for m in ESTIMATES)]
    assert list(traces) == [charts.COMPONENT_LABELS[c] for c in shown]
    assert "Paged optimizer (managed)" not in traces  # adamw_torch: nothing in managed memory
    for trace in fig["data"]:
        assert trace["type"] == "bar" and trace["x"] == ["Full", "LoRA", "QLoRA"]
    weights = [ESTIMATES[m]["memory"]["components"]["weights"] for m in ("full", "lora", "qlora")]
    assert traces["Weights"]["customdata"] == weights
    assert traces["Weights"]["y"] == [round(w / GIB, 3) for w in weights]
    # each bar stacks up to the figure `fits` compares with a GPU: the estimate's total
    for i, method in enumerate(("full", "lora", "qlora")):
        assert sum(t["customdata"][i] for t in fig["data"]) == ESTIMATES[method]["memory"]["total"]
    assert fig["layout"]["meta"]["peaks"] == [charts.peak_bytes(ESTIMATES[m]) for m in ("full", "lora", "qlora")]
    assert "pattern" in traces["Allocator cache"]["marker"]
    json.dumps(fig)  # plain JSON all the way


def test_memory_bars_drop_all_zero_components_and_mark_the_selected_method() -> None:
    fig = charts.memory_bar_chart({"qlora": ESTIMATES["qlora"], "lora": ESTIMATES["lora"]}, selected_method="lora")
    assert "Optimizer state" in by_name(fig) and fig["data"][0]["x"] == ["LoRA", "QLoRA"]
    cpu = estimate(Plan(model="llama-3.1-8b", device="cpu")).to_dict()
    assert "Allocator cache" not in by_name(charts.memory_bar_chart({"qlora": cpu}))  # no allocator on the CPU
    ticks = fig["layout"]["xaxis"]["ticktext"]
    assert ticks[0].startswith("<b>LoRA") and ticks[1] == "QLoRA"


def test_capacity_lines_sit_at_usable_memory_and_the_selected_gpu_replaces_its_class() -> None:
    lines = charts.capacity_lines()
    assert [line["label"] for line in lines] == ["24 GB", "40 GB", "48 GB", "80 GB", "141 GB"]
    # usable memory of the first catalog card of each size: where a bar stops fitting
    first = ("rtx-3090", "a100-40gb", "rtx-a6000", "a100-80gb", "h200")
    assert [line["bytes"] for line in lines] == [_usable(g) for g in first]
    assert not any(line["selected"] for line in lines)

    chosen = charts.capacity_lines(selected="rtx-4090")
    label = f"RTX 4090: {gib_text(_usable('rtx-4090'))} usable"
    assert [line["label"] for line in chosen] == [label, "40 GB", "48 GB", "80 GB", "141 GB"]
    assert chosen[0]["bytes"] == _usable("rtx-4090") and chosen[0]["selected"] is True

    # an L4 has 22.5 GiB, sold as 24 GB (decimal): it stands for the 24 GB class
    odd = charts.capacity_lines(selected="l4")
    assert [line["label"].split(":")[0] for line in odd] == ["L4", "40 GB", "48 GB", "80 GB", "141 GB"]
    labels = [line["label"] for line in charts.capacity_lines(selected="t4")]
    assert labels[:2] == [f"T4: {gib_text(_usable('t4'))} usable", "24 GB"]
    # a size no catalog card is sold as is taken as GiB
    assert charts.capacity_lines(common=(7,)) == [{"label": "7 GB", "bytes": 7 * GIB, "selected": False}]


def _line_labels(fig: dict[str, Any]) -> list[str]:
    return [a["text"] for a in fig["layout"]["annotations"] if a.get("xref") == "paper"]


def test_memory_bars_draw_capacity_lines_up_to_the_next_size_above_the_tallest_bar() -> None:
    small = {"qlora": ESTIMATES["qlora"]}  # ~13.5 GiB
    assert charts.peak_bytes(small["qlora"]) < _usable("rtx-3090")
    fig = charts.memory_bar_chart(small, charts.capacity_lines())
    assert _line_labels(fig) == ["24 GB"]
    assert [s["y0"] for s in fig["layout"]["shapes"]] == [round(_usable("rtx-3090") / GIB, 3)]
    assert fig["layout"]["yaxis"]["range"][1] >= fig["layout"]["shapes"][0]["y0"]

    # the selected GPU is drawn wherever it is, in the capacity colour, solid
    fig = charts.memory_bar_chart(small, charts.capacity_lines(selected="h200"))
    assert _line_labels(fig) == ["24 GB"]  # the selected GPU is named in the legend
    legend = [t for t in fig["data"] if (t.get("meta") or {}).get("capacity")]
    assert [t["name"] for t in legend] == [f"H200 SXM 141GB: {gib_text(_usable('h200'))} usable"]
    selected = fig["layout"]["shapes"][-1]
    assert selected["line"]["color"] == charts.CAPACITY_COLOR and selected["line"]["dash"] == "solid"
    assert fig["layout"]["yaxis"]["range"][1] >= _usable("h200") / GIB

    big = estimate(Plan(model="llama-3.1-8b", method="full", seq_len=8192)).to_dict()
    fig = charts.memory_bar_chart(ESTIMATES | {"full": big}, charts.capacity_lines())  # over 80 GB
    assert charts.peak_bytes(big) > _usable("a100-80gb")
    assert _line_labels(fig) == ["24 GB", "40 GB", "48 GB", "80 GB", "141 GB"]


def test_memory_bars_label_each_bar_with_its_peak() -> None:
    fig = charts.memory_bar_chart(ESTIMATES)
    totals = [a["text"] for a in fig["layout"]["annotations"] if a.get("xref") == "x"]
    assert totals == [gib_text(charts.peak_bytes(ESTIMATES[m])) for m in ("full", "lora", "qlora")]


def points(peaks: dict[int, int | None]) -> list[dict[str, Any]]:
    return [{"x": x, "peak": p} for x, p in peaks.items()]


def test_sweep_marks_the_first_point_over_capacity() -> None:
    series = points({256: 6 * GIB, 512: 7 * GIB, 1024: 9 * GIB, 2048: 13 * GIB, 4096: 21 * GIB, 8192: 37 * GIB})
    fig = charts.sweep_line_chart(series, {"label": "RTX 4090: 23.6 GiB usable", "bytes": 24 * GIB})
    line, stop, legend = fig["data"]
    assert legend["name"] == "RTX 4090: 23.6 GiB usable" and legend["meta"]["capacity"]
    assert line["x"] == [256, 512, 1024, 2048, 4096, 8192]
    assert line["customdata"] == [p["peak"] for p in series]
    assert line["y"] == [6.0, 7.0, 9.0, 13.0, 21.0, 37.0]
    assert stop["x"] == [8192] and stop["y"] == [37.0] and stop["meta"]["stops_fitting"]
    assert stop["text"] == ["8,192"]
    assert fig["layout"]["meta"]["stops_fitting"] == {"": 8192}
    assert fig["layout"]["shapes"][0]["y0"] == 24.0
    assert fig["layout"]["xaxis"]["type"] == "log"
    assert fig["layout"]["xaxis"]["ticktext"] == ["256", "512", "1k", "2k", "4k", "8k"]


def test_sweep_with_one_line_per_method_skips_invalid_points_and_never_fitting_is_none() -> None:
    fig = charts.sweep_line_chart(
        {
            "qlora": points({1: 5 * GIB, 2: 6 * GIB, 4: None}),
            "full": points({1: 90 * GIB, 2: 95 * GIB, 4: None}),
        },
        80 * GIB,
        x_title="Batch size",
        log_x=False,
    )
    lines = [t for t in fig["data"] if (t.get("meta") or {}).get("method") and not t["meta"].get("stops_fitting")]
    assert [t["name"] for t in lines] == ["Full", "QLoRA"]
    assert lines[0]["x"] == [1, 2]
    assert fig["layout"]["meta"]["stops_fitting"] == {"full": 1, "qlora": None}
    stops = [t for t in fig["data"] if (t.get("meta") or {}).get("stops_fitting")]
    assert [t["meta"]["method"] for t in stops] == ["full"]
    assert "type" not in fig["layout"]["xaxis"]
    assert fig["layout"]["showlegend"] is True


def test_sweep_without_capacity_has_no_line() -> None:
    fig = charts.sweep_line_chart(points({256: GIB}), None)
    assert fig["layout"]["shapes"] == []
    assert len(fig["data"]) == 1
    assert fig["layout"]["showlegend"] is False


def test_storage_rows_and_chart() -> None:
    storage = ESTIMATES["qlora"]["storage"]
    rows = charts.storage_rows(storage)
    assert [r["key"] for r in rows] == ["download", "base_4bit", "adapter", "checkpoint", "merged"]
    fields = ("base_16bit", "base_quantized", "adapter", "checkpoint", "merged")
    assert [r["bytes"] for r in rows] == [storage[f] for f in fields]
    assert rows[0]["text"] == "16.1 GB" and rows[2]["text"].endswith("in bf16)")

    fig = charts.storage_chart(storage)
    (bars,) = fig["data"]
    assert bars["orientation"] == "h"
    assert bars["x"] == [round(storage[f] / GB, 3) for f in fields]
    assert bars["customdata"] == [r["bytes"] for r in rows]
    sizes = [storage[f] for f in fields]
    assert (fig["layout"]["xaxis"].get("type") == "log") == (max(sizes) / min(sizes) > 100)
    lora = estimate(Plan(model="llama-3.1-8b", method="lora", lora_r=4, target_modules=("q_proj",))).to_dict()
    assert charts.storage_chart(lora["storage"])["layout"]["xaxis"]["type"] == "log"  # MBs next to GBs


def test_storage_chart_leaves_out_absent_sizes_and_stays_linear_when_sizes_are_close() -> None:
    fig = charts.storage_chart(
        {
            "base_16bit": 16 * GB,
            "base_quantized": None,
            "adapter": None,
            "checkpoint": 48 * GB,
            "merged": 16 * GB,
        }
    )
    assert fig["data"][0]["y"] == ["Download (16-bit weights)", "Training checkpoint", "Merged model"]
    assert "type" not in fig["layout"]["xaxis"]
    assert charts.storage_rows({})[0]["text"] == "—"
    rows = {r["key"]: r for r in charts.storage_rows({"adapter": 0, "base_16bit": 2 * GB})}
    assert rows["adapter"]["text"] == "—" and rows["adapter"]["bytes"] == 0
    rows = {r["key"]: r for r in charts.storage_rows({"adapter": 168 * 10**6, "adapter_bf16": 84 * 10**6})}
    assert rows["adapter"]["text"] == "168.0 MB (84.0 MB in bf16)"
