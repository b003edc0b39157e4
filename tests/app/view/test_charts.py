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


def _label(gpu_id: str) -> str:
    return f"{charts.chart_gpu_name(catalog.find_gpu(gpu_id).name)}: {gib_text(_usable(gpu_id))} usable"  # type: ignore[union-attr]


def test_capacity_lines_sit_at_usable_memory_labelled_in_gib() -> None:
    """One reference card per common size, at its usable memory (where a bar stops fitting), labelled by the card and
    that figure in GiB: no GB next to a GiB axis."""
    lines = charts.capacity_lines()
    assert [line["label"] for line in lines] == [_label(g) for g in charts.REFERENCE_GPUS]
    assert [line["label"] for line in lines][:2] == ["RTX 4090: 23.64 GiB usable", "A100 (SXM4): 39.50 GiB usable"]
    assert [line["bytes"] for line in lines] == [_usable(g) for g in charts.REFERENCE_GPUS]
    assert not any(line["selected"] for line in lines) and not any(" GB" in line["label"] for line in lines)
    assert charts.chart_gpu_name("NVIDIA H200 SXM 141GB") == "H200 SXM"

    # the selected GPU replaces the reference card of its size; another size joins them
    chosen = charts.capacity_lines(selected="l4")
    assert [line["label"] for line in chosen][0] == _label("l4") and chosen[0]["selected"] is True
    assert _label("rtx-4090") not in [line["label"] for line in chosen]
    t4 = charts.capacity_lines(selected="t4")
    assert [line["label"] for line in t4][:2] == [_label("t4"), _label("rtx-4090")]


def _line_labels(fig: dict[str, Any]) -> list[str]:
    return [a["text"] for a in fig["layout"]["annotations"] if a.get("xref") == "paper"]


def test_memory_bars_draw_capacity_lines_up_to_the_next_size_above_the_tallest_bar() -> None:
    small = {"qlora": ESTIMATES["qlora"]}  # ~13.5 GiB
    assert charts.peak_bytes(small["qlora"]) < _usable("rtx-4090")
    fig = charts.memory_bar_chart(small, charts.capacity_lines())
    assert _line_labels(fig) == [_label("rtx-4090")]
    assert [s["y0"] for s in fig["layout"]["shapes"]] == [round(_usable("rtx-4090") / GIB, 3)]
    assert fig["layout"]["yaxis"]["range"][1] >= fig["layout"]["shapes"][0]["y0"]

    # the selected GPU is drawn wherever it is, in the capacity colour, solid
    fig = charts.memory_bar_chart(small, charts.capacity_lines(selected="h200"))
    assert _line_labels(fig) == [_label("rtx-4090")]  # the selected GPU is named in the legend
    legend = [t for t in fig["data"] if (t.get("meta") or {}).get("capacity")]
    assert [t["name"] for t in legend] == [f"H200 SXM: {gib_text(_usable('h200'))} usable"]
    selected = fig["layout"]["shapes"][-1]
    assert selected["line"]["color"] == charts.CAPACITY_COLOR and selected["line"]["dash"] == "solid"
    assert fig["layout"]["yaxis"]["range"][1] >= _usable("h200") / GIB

    big = estimate(Plan(model="llama-3.1-8b", method="full", seq_len=8192)).to_dict()
    fig = charts.memory_bar_chart(ESTIMATES | {"full": big}, charts.capacity_lines())  # over 80 GB
    assert charts.peak_bytes(big) > _usable("a100-80gb")
    assert _line_labels(fig) == [_label(g) for g in charts.REFERENCE_GPUS]


def test_each_bar_says_what_its_components_hold_at_its_peak() -> None:
    """Full fine-tuning peaks at the optimizer step: its "activations" are the step's temporaries, and its bar says
    so; LoRA's are saved activations."""
    fig = charts.memory_bar_chart(ESTIMATES)
    acts = by_name(fig)["Activations and temporaries"]
    assert acts["hovertext"] == [ESTIMATES[m]["memory"]["component_labels"]["activations"] for m in ESTIMATES]
    assert acts["hovertext"][0] == "Optimizer-step temporaries"


def test_memory_bars_label_each_bar_with_its_peak() -> None:
    fig = charts.memory_bar_chart(ESTIMATES)
    totals = [a["text"] for a in fig["layout"]["annotations"] if a.get("xref") == "x"]
    assert totals == [gib_text(charts.peak_bytes(ESTIMATES[m])) for m in ("full", "lora", "qlora")]


def points(peaks: dict[int, int | None]) -> list[dict[str, Any]]:
    return [{"x": x, "peak": p} for x, p in peaks.items()]


def test_sweep_marks_the_points_over_capacity_and_the_fit_answer() -> None:
    series = points({256: 6 * GIB, 512: 7 * GIB, 1024: 9 * GIB, 2048: 13 * GIB, 4096: 21 * GIB, 8192: 37 * GIB})
    fig = charts.sweep_line_chart(series, {"label": "RTX 4090: 23.6 GiB usable", "bytes": 24 * GIB}, fits={"": 5078})
    line, over, legend, mark = fig["data"]
    assert legend["name"] == "RTX 4090: 23.6 GiB usable" and legend["meta"]["capacity"]
    assert line["x"] == [256, 512, 1024, 2048, 4096, 8192]
    assert line["customdata"] == [p["peak"] for p in series]
    assert line["y"] == [6.0, 7.0, 9.0, 13.0, 21.0, 37.0]
    assert over["x"] == [8192] and over["meta"]["over"] and "text" not in over  # no number that reads as an answer
    # the fit search's answer, labelled, on the capacity line, with a drop line to the axis
    assert mark["x"] == [5078] and mark["y"] == [24.0] and mark["text"] == ["largest that fits: 5,078"]
    assert mark["meta"] == {"method": "", "fit": 5078} and mark["mode"] == "markers+text"
    assert [s["x0"] for s in fig["layout"]["shapes"] if s.get("xref") == "x"] == [5078]
    assert fig["layout"]["meta"]["fits"] == {"": 5078}
    assert fig["layout"]["shapes"][0]["y0"] == 24.0
    assert fig["layout"]["xaxis"]["type"] == "log"
    assert fig["layout"]["xaxis"]["ticktext"] == ["256", "512", "1k", "2k", "4k", "8k"]
    assert fig["layout"]["yaxis"].get("type") != "log"  # 6 to 37 GiB: a linear axis reads fine


def test_sweeps_spanning_decades_get_a_log_axis_readable_at_the_small_end() -> None:
    """QLoRA at 128k tokens is thousands of GiB, at 256 a few: on a log axis the small end is not a flat line."""
    series = points({256: 10 * GIB, 4096: 40 * GIB, 131072: 6000 * GIB})
    fig = charts.sweep_line_chart(series, 80 * GIB)
    y = fig["layout"]["yaxis"]
    assert y["type"] == "log" and y["title"]["text"] == "GiB (log scale)"
    assert 10 ** y["range"][0] < 10 and 10 ** y["range"][1] > 6000
    assert y["ticktext"][:3] == ["10", "20", "50"] and "1k" in y["ticktext"]
    assert fig["layout"]["meta"]["log_y"] is True


def test_sweep_with_one_line_per_method_labels_each_fit_in_the_legend() -> None:
    fig = charts.sweep_line_chart(
        {"qlora": points({1: 5 * GIB, 2: 6 * GIB, 4: None}), "full": points({1: 90 * GIB, 2: 95 * GIB, 4: None})},
        80 * GIB,
        fits={"qlora": 37, "full": 0},
        x_title="Batch size",
        log_x=False,
    )
    lines = [t for t in fig["data"] if (t.get("meta") or {}).get("method") and set(t["meta"]) == {"method"}]
    assert [t["name"] for t in lines] == ["Full", "QLoRA"] and lines[0]["x"] == [1, 2]
    marks = {t["meta"]["method"]: t for t in fig["data"] if "fit" in (t.get("meta") or {})}
    assert marks["qlora"]["name"] == "QLoRA: fits up to 37" and marks["qlora"]["showlegend"] is True
    assert marks["full"]["name"] == "Full: nothing fits" and marks["full"]["marker"]["symbol"] == "x"
    over = [t for t in fig["data"] if (t.get("meta") or {}).get("over")]
    assert [t["meta"]["method"] for t in over] == ["full"]
    assert "type" not in fig["layout"]["xaxis"] and fig["layout"]["showlegend"] is True


def test_sweep_without_capacity_draws_reference_cards_for_scale() -> None:
    fig = charts.sweep_line_chart(points({256: GIB}), None)
    assert fig["layout"]["shapes"] == [] and len(fig["data"]) == 1 and fig["layout"]["showlegend"] is False
    refs = charts.capacity_lines()
    fig = charts.sweep_line_chart(points({256: 10 * GIB, 512: 15 * GIB}), None, references=refs, fits={"": 3})
    assert [a["text"] for a in fig["layout"]["annotations"]] == [_label("rtx-4090")]  # those up to 2x the tallest
    assert not any("fit" in (t.get("meta") or {}) for t in fig["data"])  # no GPU: no fit answer


def test_storage_rows_and_chart() -> None:
    storage = ESTIMATES["qlora"]["storage"]
    rows = charts.storage_rows(storage)
    assert [r["key"] for r in rows] == ["download", "base_4bit", "adapter", "checkpoint", "merged"]
    fields = ("download", "base_quantized", "adapter", "checkpoint", "merged")
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
            "download": 16 * GB,
            "base_quantized": None,
            "adapter": None,
            "checkpoint": 48 * GB,
            "merged": 16 * GB,
        }
    )
    assert fig["data"][0]["y"] == ["Download (weights as published)", "Training checkpoint", "Merged model"]
    assert "type" not in fig["layout"]["xaxis"]
    assert charts.storage_rows({})[0]["text"] == "—"
    rows = {r["key"]: r for r in charts.storage_rows({"adapter": 0, "download": 2 * GB})}
    assert rows["adapter"]["text"] == "—" and rows["adapter"]["bytes"] == 0
    rows = {r["key"]: r for r in charts.storage_rows({"adapter": 168 * 10**6, "adapter_bf16": 84 * 10**6})}
    assert rows["adapter"]["text"] == "168.0 MB (84.0 MB in bf16)"


def test_objective_bars_follow_the_plan_fields_order_and_show_the_reference() -> None:
    plans = {o: estimate(Plan(model="llama-3.1-8b", method="full", objective=o, seq_len=1024)).to_dict()
             for o in ("grpo", "dpo", "sft")}  # fmt: skip
    fig = charts.objective_bar_chart(plans, selected="dpo", method="full")
    assert fig["layout"]["meta"]["objectives"] == ["sft", "dpo", "grpo"]
    assert fig["layout"]["xaxis"]["ticktext"] == ["SFT", "<b>DPO ◆</b>", "GRPO"]
    assert "Full" in fig["layout"]["title"]["text"]
    reference = by_name(fig)["Reference model"]
    assert reference["customdata"][0] == 0  # SFT holds no reference model
    assert reference["customdata"][1] == plans["dpo"]["memory"]["components"]["reference"] > 0  # full DPO: a copy
    assert fig["layout"]["meta"]["peaks"] == [charts.peak_bytes(plans[o]) for o in ("sft", "dpo", "grpo")]
    json.dumps(fig)  # plain data, as the page's JSON carries it
