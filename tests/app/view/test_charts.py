"""The page's Plotly figures (``app.charts``): pure functions over contracts, tested with synthetic ones."""

from __future__ import annotations

import json
from typing import Any

import pytest

from app import charts
from app.charts import GB, GIB

GPUS = [
    {"id": "rtx-3090", "name": "NVIDIA GeForce RTX 3090", "memory_bytes": 24 * GIB, "usable_bytes": 23 * GIB},
    {
        "id": "rtx-4090",
        "name": "NVIDIA GeForce RTX 4090",
        "memory_bytes": 24 * GIB - 12 * 2**20,
        "usable_bytes": 23 * GIB,
    },
    {"id": "l4", "name": "NVIDIA L4", "memory_bytes": int(22.49 * GIB), "usable_bytes": 22 * GIB},
    {"id": "a100-40gb", "name": "NVIDIA A100 40GB", "memory_bytes": 40 * GIB, "usable_bytes": 39 * GIB},
    {
        "id": "rtx-a6000",
        "name": "NVIDIA RTX A6000",
        "memory_bytes": 48 * GIB - 12 * 2**20,
        "usable_bytes": 47 * GIB,
    },
    {"id": "a100-80gb", "name": "NVIDIA A100 80GB", "memory_bytes": 80 * GIB, "usable_bytes": 79 * GIB},
    {
        "id": "h200",
        "name": "NVIDIA H200 SXM 141GB",
        "memory_bytes": 143_771 * 2**20,
        "usable_bytes": 139 * GIB,
    },
]


def contract(
    weights: int,
    adapters: int = 0,
    gradients: int = 0,
    optimizer: int = 0,
    activations: int = 0,
    logits: int = 0,
    overhead: int = 512 * 2**20,
    **storage: int,
) -> dict[str, Any]:
    """A contract shaped like docs/interfaces.md: peak = the sum of the components."""
    comps = {
        "weights": weights,
        "adapters": adapters,
        "gradients": gradients,
        "optimizer": optimizer,
        "activations": activations,
        "logits": logits,
        "overhead": overhead,
    }
    peak = sum(comps.values())
    return {
        "params": {"total": 8_030_261_248, "trainable": 41_943_040},
        "storage": {
            "base_16bit": 16 * GB,
            "base_quantized": 5 * GB,
            "adapter": 84 * 10**6,
            "checkpoint": 500 * 10**6,
            "merged": 16 * GB,
            "rule_of_thumb": 16_060_522_496,
            **storage,
        },
        "memory": {
            "components": comps,
            "peak_allocated": peak,
            "peak_reserved": peak,
            "total": peak,
            "notes": ["weights dominate"],
        },
        "fits": [],
    }


ESTIMATES = {
    "qlora": contract(5 * GIB, adapters=GIB // 4, gradients=GIB // 4, optimizer=GIB // 2, activations=2 * GIB),
    "full": contract(16 * GIB, gradients=16 * GIB, optimizer=64 * GIB, activations=2 * GIB, logits=GIB),
    "lora": contract(15 * GIB, adapters=GIB // 4, gradients=GIB // 4, optimizer=GIB // 2, activations=2 * GIB),
}


def by_name(fig: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {trace["name"]: trace for trace in fig["data"]}


def test_memory_bars_stack_components_per_method_in_canonical_order() -> None:
    fig = charts.memory_bar_chart(ESTIMATES)
    assert fig["layout"]["barmode"] == "stack"
    traces = by_name(fig)
    # logits are zero for two methods but not all: the trace stays; an all-zero component would be dropped
    assert list(traces) == [
        "Weights",
        "Adapters",
        "Gradients",
        "Optimizer state",
        "Activations",
        "Logits",
        "Overhead",
    ]
    for trace in fig["data"]:
        assert trace["type"] == "bar"
        assert trace["x"] == ["Full", "LoRA", "QLoRA"]
    assert traces["Weights"]["customdata"] == [16 * GIB, 15 * GIB, 5 * GIB]
    assert traces["Weights"]["y"] == [16.0, 15.0, 5.0]
    assert traces["Optimizer state"]["y"] == [64.0, 0.5, 0.5]
    # the stack of each bar is the method's peak
    for i, method in enumerate(("full", "lora", "qlora")):
        assert sum(t["customdata"][i] for t in fig["data"]) == ESTIMATES[method]["memory"]["peak_reserved"]
    assert fig["layout"]["meta"]["peaks"] == [charts.peak_bytes(ESTIMATES[m]) for m in ("full", "lora", "qlora")]
    json.dumps(fig)  # plain JSON all the way


def test_memory_bars_drop_all_zero_components_and_mark_the_selected_method() -> None:
    fig = charts.memory_bar_chart({"qlora": ESTIMATES["qlora"], "lora": ESTIMATES["lora"]}, selected_method="lora")
    assert "Logits" not in by_name(fig)
    assert fig["data"][0]["x"] == ["LoRA", "QLoRA"]
    ticks = fig["layout"]["xaxis"]["ticktext"]
    assert ticks[0].startswith("<b>LoRA") and ticks[1] == "QLoRA"


def test_capacity_lines_sit_at_usable_memory_and_the_selected_gpu_replaces_its_class() -> None:
    lines = charts.capacity_lines(GPUS)
    assert [line["label"] for line in lines] == ["24 GB", "40 GB", "48 GB", "80 GB", "141 GB"]
    # usable memory of the first catalog card of each size: where a bar stops fitting
    assert [line["bytes"] for line in lines] == [23 * GIB, 39 * GIB, 47 * GIB, 79 * GIB, 139 * GIB]
    assert not any(line["selected"] for line in lines)

    chosen = charts.capacity_lines(GPUS, selected="rtx-4090")
    assert [line["label"] for line in chosen] == [
        "RTX 4090: 23.00 GiB usable", "40 GB", "48 GB", "80 GB", "141 GB",
    ]  # fmt: skip
    assert chosen[0]["bytes"] == 23 * GIB and chosen[0]["selected"] is True

    # an L4 has 22.5 GiB, sold as 24 GB (decimal): it stands for the 24 GB class
    odd = charts.capacity_lines(GPUS, selected="l4")
    assert [line["label"].split(":")[0] for line in odd] == ["L4", "40 GB", "48 GB", "80 GB", "141 GB"]
    t4 = {"id": "t4", "name": "NVIDIA T4", "memory_bytes": 15 * GIB, "usable_bytes": 14 * GIB}
    labels = [line["label"] for line in charts.capacity_lines([*GPUS, t4], selected="t4")]
    assert labels[:2] == ["T4: 14.00 GiB usable", "24 GB"]
    # without a catalog the marketing size is taken as GiB
    assert charts.capacity_lines([])[0] == {"label": "24 GB", "bytes": 24 * GIB, "selected": False}


def _line_labels(fig: dict[str, Any]) -> list[str]:
    return [a["text"] for a in fig["layout"]["annotations"] if a.get("xref") == "paper"]


def test_memory_bars_draw_capacity_lines_up_to_the_next_size_above_the_tallest_bar() -> None:
    small = {"qlora": ESTIMATES["qlora"]}  # ~8.5 GiB
    fig = charts.memory_bar_chart(small, charts.capacity_lines(GPUS))
    assert _line_labels(fig) == ["24 GB"]
    shapes = fig["layout"]["shapes"]
    assert [s["y0"] for s in shapes] == [23.0]
    assert fig["layout"]["yaxis"]["range"][1] >= 23.0

    # the selected GPU is drawn wherever it is, in the capacity colour, solid
    fig = charts.memory_bar_chart(small, charts.capacity_lines(GPUS, selected="h200"))
    assert _line_labels(fig) == ["24 GB"]  # the selected GPU is named in the legend
    legend = [t for t in fig["data"] if (t.get("meta") or {}).get("capacity")]
    assert [t["name"] for t in legend] == ["H200 SXM 141GB: 139.00 GiB usable"]
    selected = fig["layout"]["shapes"][-1]
    assert selected["line"]["color"] == charts.CAPACITY_COLOR and selected["line"]["dash"] == "solid"
    assert fig["layout"]["yaxis"]["range"][1] >= 139

    fig = charts.memory_bar_chart(ESTIMATES, charts.capacity_lines(GPUS))  # full: ~99.5 GiB
    assert _line_labels(fig) == ["24 GB", "40 GB", "48 GB", "80 GB", "141 GB"]


def test_memory_bars_label_each_bar_with_its_peak() -> None:
    fig = charts.memory_bar_chart(ESTIMATES)
    totals = [a["text"] for a in fig["layout"]["annotations"] if a.get("xref") == "x"]
    assert totals == [charts.human_gib(charts.peak_bytes(ESTIMATES[m])) for m in ("full", "lora", "qlora")]


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
    assert [r["bytes"] for r in rows] == [16 * GB, 5 * GB, 84 * 10**6, 500 * 10**6, 16 * GB]
    assert [r["text"] for r in rows] == ["16.0 GB", "5.0 GB", "84.0 MB", "500.0 MB", "16.0 GB"]

    fig = charts.storage_chart(storage)
    (bars,) = fig["data"]
    assert bars["orientation"] == "h"
    assert bars["x"] == [16.0, 5.0, 0.084, 0.5, 16.0]
    assert bars["customdata"] == [r["bytes"] for r in rows]
    assert fig["layout"]["xaxis"]["type"] == "log"  # 84 MB next to 16 GB


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


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0.0 MiB"),
        (512 * 2**20, "512.0 MiB"),
        (GIB, "1.00 GiB"),
        (int(9.31 * GIB), "9.31 GiB"),
        (None, "—"),
    ],
)
def test_human_gib(n: int | None, text: str) -> None:
    assert charts.human_gib(n) == text


@pytest.mark.parametrize(("n", "text"), [(8_030_261_248, "8.03B"), (41_943_040, "41.9M"), (1_500, "1.5K"), (12, "12")])
def test_human_count(n: int, text: str) -> None:
    assert charts.human_count(n) == text


def test_peak_prefers_total_then_reserved_then_allocated_then_the_component_sum() -> None:
    assert charts.peak_bytes({"memory": {"peak_reserved": 10, "peak_allocated": 8, "total": 12}}) == 12
    assert charts.peak_bytes({"memory": {"peak_reserved": 10, "peak_allocated": 8}}) == 10
    assert charts.peak_bytes({"memory": {"peak_allocated": 8}}) == 8
    assert charts.peak_bytes({"memory": {"components": {"weights": 3, "optimizer": 4}}}) == 7


def test_the_allocator_cache_tops_the_stack_up_to_the_total() -> None:
    """Components hold the live tensors and the CUDA context; ``total`` adds what the caching allocator keeps
    reserved. The bars show it as its own segment, so each stack reaches the figure ``fits`` uses."""
    c = contract(10 * GIB, optimizer=GIB, overhead=GIB // 2)
    c["memory"]["peak_allocated"] = 11 * GIB
    c["memory"]["peak_reserved"] = 12 * GIB
    c["memory"]["total"] = 12 * GIB + GIB // 2
    assert charts.components_of(c)["reserve"] == GIB
    fig = charts.memory_bar_chart({"full": c})
    traces = by_name(fig)
    assert traces["Allocator cache"]["customdata"] == [GIB]
    assert "pattern" in traces["Allocator cache"]["marker"]
    assert sum(t["customdata"][0] for t in fig["data"]) == c["memory"]["total"]
