"""Plotly figures for the page, built as plain dicts.

Every function here is pure: it takes estimate contracts (``Estimate.to_dict()``, see docs/schema.md) or
points derived from them and returns a Plotly figure dict (``{"data": [...], "layout": {...}}``) that the page
hands to ``Plotly.react``. Nothing imports plotly; the figures are JSON all the way.

Units: GPU memory is shown in GiB (2**30 bytes, what ``torch.cuda`` and ``nvidia-smi`` count in), disk in GB
(10**9 bytes, what the Hub and ``du -h --si`` show). The figures are theme-neutral (transparent backgrounds,
no fixed font colour); the page applies light or dark colours on top.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from estimator import COMPONENTS, GB, GIB, OBJECTIVES, catalog, gb_text, gib_text

METHODS: tuple[str, ...] = ("full", "lora", "qlora")
METHOD_LABELS: dict[str, str] = {"full": "Full", "lora": "LoRA", "qlora": "QLoRA"}
OBJECTIVE_ORDER: tuple[str, ...] = OBJECTIVES  # the plan field's order: sft first
OBJECTIVE_LABELS: dict[str, str] = {"sft": "SFT", "dpo": "DPO", "orpo": "ORPO", "simpo": "SimPO", "kto": "KTO",
                                    "reward": "Reward", "grpo": "GRPO"}  # fmt: skip
METHOD_COLORS: dict[str, str] = {"full": "#d55e00", "lora": "#0072b2", "qlora": "#009e73"}

COMPONENT_LABELS: dict[str, str] = {
    "weights": "Weights",
    "adapters": "Adapters",
    "gradients": "Gradients",
    "optimizer": "Optimizer state",
    "reference": "Reference model",
    "activations": "Activations and temporaries",
    "logits": "Logits and loss",
    "overhead": "CUDA context + cuBLAS",
    "allocator_cache": "Allocator cache",
    "optimizer_paged": "Paged optimizer (managed)",
}
# Okabe-Ito palette: distinguishable with the common colour-vision deficiencies, readable on light and dark.
COMPONENT_COLORS: dict[str, str] = {
    "weights": "#0072b2",
    "adapters": "#cc79a7",
    "gradients": "#e69f00",
    "optimizer": "#d55e00",
    "reference": "#00466e",  # a darker weights blue: a frozen copy of the weights (or of the adapter)
    "activations": "#009e73",
    "logits": "#56b4e9",
    "overhead": "#999999",
    "allocator_cache": "#c7c7c7",
    "optimizer_paged": "#f0e442",
}
PATTERNED = frozenset({"allocator_cache", "optimizer_paged"})
"""Components outside the live tensors, drawn hatched."""

REFERENCE_GPUS: tuple[str, ...] = ("rtx-4090", "a100-40gb", "rtx-a6000", "a100-80gb", "h200")
"""The cards whose usable memory the bar chart draws for scale (one of each common size: 24, 40, 48, 80, 141 GB)."""

STORAGE_ROWS: tuple[tuple[str, str, str], ...] = (
    ("download", "Download (weights as published)", "download"),
    ("base_4bit", "4-bit base in memory", "base_quantized"),
    ("adapter", "Adapter file", "adapter"),
    ("checkpoint", "Training checkpoint", "checkpoint"),
    ("merged", "Merged model", "merged"),
)
"""(row key, label, field of the contract's ``storage``) for the storage table and chart."""

CAPACITY_COLOR = "#cc3311"
LINE_COLOR = "rgba(128,128,128,0.75)"


# --- helpers ------------------------------------------------------------------------------------------


def gib(n: float) -> float:
    """Bytes to GiB, rounded for display (3 decimals keeps sub-MiB detail without float noise)."""
    return round(n / GIB, 3)


def gb(n: float) -> float:
    """Bytes to GB (10**9), rounded for display."""
    return round(n / GB, 3)


def method_order(methods: Sequence[str] | Mapping[str, Any]) -> list[str]:
    """Methods in the canonical order (full, lora, qlora), unknown ones after, in their given order."""
    given = list(methods)
    known = [m for m in METHODS if m in given]
    return known + [m for m in given if m not in METHODS]


def components_of(contract: Mapping[str, Any]) -> dict[str, int]:
    """``memory.components`` of a contract in the estimator's order; they add up to ``memory.total``, the figure
    ``fits`` compares with a GPU's usable memory."""
    comps = contract["memory"]["components"]
    return {c: int(comps.get(c, 0)) for c in COMPONENTS}


def peak_bytes(contract: Mapping[str, Any]) -> int:
    """The figure a GPU must hold: ``memory.total`` (what ``fits`` compares with a GPU's usable memory)."""
    return int(contract["memory"]["total"])


def short_gpu_name(name: str) -> str:
    """``NVIDIA GeForce RTX 4090`` -> ``RTX 4090``: the vendor prefixes the chart labels can do without."""
    for prefix in ("NVIDIA ", "AMD ", "GeForce ", "Tesla "):
        if name.startswith(prefix):
            name = name[len(prefix) :]
    return name


def chart_gpu_name(name: str) -> str:
    """``NVIDIA A100 80GB (SXM4)`` -> ``A100 (SXM4)``: the vendor and the marketed size left out, so a memory chart's
    labels carry one unit only (the GiB figure next to them)."""
    short = re.sub(r"\s*\b\d+\s*GB\b", "", short_gpu_name(name))
    return re.sub(r"\s{2,}", " ", short).strip()


def gpu_line_label(gpu: catalog.GPU) -> str:
    """A capacity line's label: the card and its usable memory in GiB (``RTX 4090: 23.64 GiB usable``)."""
    return f"{chart_gpu_name(gpu.name)}: {gib_text(gpu.usable_bytes)} usable"


def capacity_lines(selected: str | None = None, reference: Sequence[str] = REFERENCE_GPUS) -> list[dict[str, Any]]:
    """Horizontal lines for the bar chart: the reference cards' usable memory, plus the selected GPU's.

    Lines sit at usable memory (what ``fits`` compares ``memory.total`` with), labelled in GiB, so a bar above a line
    does not fit that card. The selected GPU replaces the reference card of its size. Returns ``{"label", "bytes",
    "selected"}`` dicts, smallest first.
    """
    chosen = catalog.find_gpu(selected) if selected else None
    lines: list[dict[str, Any]] = []
    for gid in reference:
        g = catalog.find_gpu(gid)
        if g is None or (chosen is not None and abs(g.usable_bytes - chosen.usable_bytes) < 0.1 * g.usable_bytes):
            continue
        lines.append({"label": gpu_line_label(g), "bytes": g.usable_bytes, "selected": False})
    if chosen is not None:
        lines.append({"label": gpu_line_label(chosen), "bytes": chosen.usable_bytes, "selected": True})
    lines.sort(key=lambda line: line["bytes"])
    return lines


def _base_layout(**extra: Any) -> dict[str, Any]:
    layout: dict[str, Any] = {
        "paper_bgcolor": "rgba(0,0,0,0)",
        "plot_bgcolor": "rgba(0,0,0,0)",
        "margin": {"l": 56, "r": 16, "t": 40, "b": 48},
        "font": {"family": "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif", "size": 13},
        "hoverlabel": {"namelength": -1},
        "legend": {"orientation": "h", "x": 0, "y": -0.18, "xanchor": "left", "yanchor": "top"},
    }
    layout.update(extra)
    return layout


def _hline(
    y: float, label: str, *, color: str, dash: str, width: float = 1.5, left: bool = False
) -> tuple[dict[str, Any], dict[str, Any]]:
    shape = {
        "type": "line",
        "xref": "paper",
        "x0": 0,
        "x1": 1,
        "yref": "y",
        "y0": y,
        "y1": y,
        "line": {"color": color, "width": width, "dash": dash},
        "layer": "above",
    }
    annotation = {
        "xref": "paper",
        "x": 0 if left else 1,
        "xanchor": "left" if left else "right",
        "yref": "y",
        "y": y,
        "yanchor": "bottom",
        "text": label,
        "showarrow": False,
        "font": {"size": 11, "color": color},
    }
    return shape, annotation


def _legend_line(label: str, *, dash: str) -> dict[str, Any]:
    """A legend entry for a capacity line drawn as a shape (the trace itself draws nothing)."""
    return {
        "type": "scatter",
        "mode": "lines",
        "name": label,
        "x": [None],
        "y": [None],
        "line": {"color": CAPACITY_COLOR, "dash": dash, "width": 2},
        "hoverinfo": "skip",
        "showlegend": True,
        "meta": {"capacity": True},
    }


# --- figures ------------------------------------------------------------------------------------------


def _component_traces(methods: list[str], labels: list[str], comps: Mapping[str, Mapping[str, int]],
                      names: Mapping[str, Mapping[str, str]]) -> list[Any]:  # fmt: skip
    """One stacked bar trace per component that is not zero for every method; each bar's hover names what the
    component holds at that method's peak (``names``: the contracts' ``memory.component_labels``)."""
    data: list[dict[str, Any]] = []
    for c in COMPONENTS:
        values = [comps[m][c] for m in methods]
        if not any(values):
            continue
        pattern = {"pattern": {"shape": "/", "fgcolor": "#888888", "size": 6}} if c in PATTERNED else {}
        data.append({
            "type": "bar",
            "name": COMPONENT_LABELS[c],
            "x": labels,
            "y": [gib(v) for v in values],
            "customdata": values,
            "hovertext": [names.get(m, {}).get(c, COMPONENT_LABELS[c]) for m in methods],
            "marker": {"color": COMPONENT_COLORS[c]} | pattern,
            "hovertemplate": "%{hovertext}: %{y:.2f} GiB<extra>%{x}</extra>",
            "meta": {"component": c},
        })  # fmt: skip
    return data


def _capacity_overlays(shown: Sequence[Mapping[str, Any]], top: int) -> tuple[list[Any], list[Any], list[Any]]:
    """(shapes, annotations, legend traces) of the capacity lines: dotted grey common sizes, the selected GPU solid
    in the capacity colour and named in the legend."""
    shapes: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    legend: list[dict[str, Any]] = []
    last_right: int | None = None
    for line in shown:
        selected = bool(line.get("selected"))
        size = int(line["bytes"])
        # Labels go on the right (the first bar, usually the tallest, is on the left), unless one would sit
        # on the previous right-hand label (lines closer than 6% of the axis): then on the left.
        left = last_right is not None and (size - last_right) < 0.06 * top * 1.12
        if not left and not selected:
            last_right = size
        shape, note = _hline(gib(size), str(line["label"]), color=CAPACITY_COLOR if selected else LINE_COLOR,
                             dash="solid" if selected else "dot", width=2 if selected else 1.2, left=left)  # fmt: skip
        shapes.append(shape)
        if selected:  # named in the legend, where it cannot sit on a bar's label
            legend.append(_legend_line(str(line["label"]), dash="solid"))
        else:
            annotations.append(note)
    return shapes, annotations, legend


def memory_bar_chart(
    estimates: Mapping[str, Mapping[str, Any]],
    gpu_lines: Sequence[Mapping[str, Any]] = (),
    *,
    selected_method: str | None = None,
) -> dict[str, Any]:
    """Stacked bars of peak GPU memory by component, one bar per method, side by side.

    ``estimates`` maps a method (``full``/``lora``/``qlora``) to its contract. ``gpu_lines`` are
    ``{"label", "bytes", "selected"}`` dicts (see ``capacity_lines``); lines far above the tallest bar
    are left out so the bars stay readable, but the selected GPU's line is always drawn.
    ``selected_method`` gets its axis label in bold with a marker.
    """
    methods = method_order(estimates)
    labels = {m: METHOD_LABELS.get(m, m) for m in methods}
    title = "Peak GPU memory by component (per GPU)"
    return _stacked_bars(estimates, methods, labels, gpu_lines, selected_method, title, "methods")


def objective_bar_chart(
    estimates: Mapping[str, Mapping[str, Any]],
    gpu_lines: Sequence[Mapping[str, Any]] = (),
    *,
    selected: str | None = None,
    method: str = "qlora",
) -> dict[str, Any]:
    """Stacked bars of peak GPU memory by component, one bar per training objective (``sft``, ``dpo``, …, in the
    plan field's order) of the same plan: what the reference model, the pairs' doubled rows and GRPO's generation
    add. ``estimates`` maps an objective to its contract; ``selected`` is the plan's own objective."""
    order = [o for o in OBJECTIVE_ORDER if o in estimates] + [o for o in estimates if o not in OBJECTIVE_ORDER]
    labels = {o: OBJECTIVE_LABELS.get(o, o) for o in order}
    title = f"Peak GPU memory by training objective ({METHOD_LABELS.get(method, method)}, per GPU)"
    return _stacked_bars(estimates, order, labels, gpu_lines, selected, title, "objectives")


def _stacked_bars(
    estimates: Mapping[str, Mapping[str, Any]],
    keys: list[str],
    label_of: Mapping[str, str],
    gpu_lines: Sequence[Mapping[str, Any]],
    selected: str | None,
    title: str,
    meta_key: str,
) -> dict[str, Any]:
    labels = [label_of[k] for k in keys]
    ticks = [f"<b>{label} ◆</b>" if k == selected else label for k, label in zip(keys, labels, strict=True)]
    comps = {k: components_of(estimates[k]) for k in keys}
    peaks = {k: peak_bytes(estimates[k]) for k in keys}
    names = {k: estimates[k]["memory"].get("component_labels", {}) for k in keys}
    data = _component_traces(keys, labels, comps, names)
    stack_tops = {k: sum(comps[k].values()) for k in keys}
    tallest = max([*stack_tops.values(), *peaks.values(), 0])
    shown = _lines_in_view(gpu_lines, tallest)
    top = max([tallest, *(int(line["bytes"]) for line in shown), 1])
    shapes, annotations, legend = _capacity_overlays(shown, top)
    data += legend
    annotations += [
        {"x": label, "y": gib(max(stack_tops[k], peaks[k])), "xref": "x", "yref": "y", "yanchor": "bottom",
         "text": gib_text(peaks[k]), "showarrow": False, "font": {"size": 12}}
        for k, label in zip(keys, labels, strict=True)
    ]  # fmt: skip
    layout = _base_layout(
        barmode="stack",
        title={"text": title, "x": 0, "xanchor": "left", "font": {"size": 15}},
        yaxis={"title": {"text": "GiB"}, "rangemode": "tozero", "range": [0, gib(top * 1.12)], "automargin": True},
        xaxis={"type": "category", "automargin": True, "tickvals": labels, "ticktext": ticks},
        shapes=shapes,
        annotations=annotations,
        bargap=0.35,
        legend={"orientation": "h", "x": 0, "y": -0.14, "xanchor": "left", "yanchor": "top", "traceorder": "normal"},
        meta={meta_key: keys, "peaks": [peaks[k] for k in keys]},
    )
    return {"data": data, "layout": layout}


def _lines_in_view(lines: Sequence[Mapping[str, Any]], tallest: int) -> list[Mapping[str, Any]]:
    """Capacity lines up to the first one above ``tallest`` (so the reader sees the next size up), and the
    selected line wherever it is."""
    ordered = sorted(lines, key=lambda line: int(line["bytes"]))
    out: list[Mapping[str, Any]] = []
    above = False
    for line in ordered:
        if int(line["bytes"]) <= tallest:
            out.append(line)
        elif not above:
            out.append(line)
            above = True
        elif line.get("selected"):
            out.append(line)
    return out


def _series(
    points: Mapping[str, Sequence[Mapping[str, Any]]] | Sequence[Mapping[str, Any]],
) -> dict[str, list[Mapping[str, Any]]]:
    if isinstance(points, Mapping):
        return {str(k): list(v) for k, v in points.items()}
    return {"": list(points)}


def _capacity(capacity: Mapping[str, Any] | int | None) -> tuple[int | None, str]:
    if capacity is None:
        return None, ""
    if isinstance(capacity, Mapping):
        return int(capacity["bytes"]), str(capacity.get("label") or "GPU memory")
    return int(capacity), "GPU memory"


def _sweep_traces(method: str, points: Sequence[Mapping[str, Any]], cap_bytes: int | None) -> list[dict[str, Any]]:
    """The line of one method and, with a capacity, its points above it (open red circles)."""
    pts = [p for p in points if p.get("peak") is not None]
    xs, ys = [p["x"] for p in pts], [int(p["peak"]) for p in pts]
    name = METHOD_LABELS.get(method, method) or "Peak memory"
    line: dict[str, Any] = {"type": "scatter", "mode": "lines+markers", "name": name, "x": xs,
                            "y": [gib(y) for y in ys], "customdata": ys,
                            "hovertemplate": f"{name}: %{{y:.2f}} GiB at %{{x:,}}<extra></extra>",
                            "meta": {"method": method}}  # fmt: skip
    if method in METHOD_COLORS:
        line["line"] = {"color": METHOD_COLORS[method]}
    over = [(x, y) for x, y in zip(xs, ys, strict=True) if cap_bytes is not None and y > cap_bytes]
    if not over:
        return [line]
    return [line, {
        "type": "scatter", "mode": "markers", "name": f"{name}: over the GPU's memory", "showlegend": False,
        "x": [x for x, _ in over], "y": [gib(y) for _, y in over], "customdata": [y for _, y in over],
        "marker": {"symbol": "circle-open", "size": 11, "color": CAPACITY_COLOR, "line": {"width": 2}},
        "hovertemplate": f"{name} at %{{x:,}}: %{{y:.2f}} GiB, over the GPU's memory<extra></extra>",
        "meta": {"method": method, "over": True},
    }]  # fmt: skip


def _fit_marks(fits: Mapping[str, int | None], cap_bytes: int, single: bool, low: float,
               xs: Sequence[float] = ()) -> tuple[list[Any], list[Any]]:  # fmt: skip
    """(traces, shapes) marking each method's answer of the fit search (the largest value that fits): a labelled
    point on the capacity line and a dashed drop line to the axis; 0 (nothing fits) is said in words. The label
    sits on the side of the point with more room (``xs``: the swept values), so it is not cut at the plot's edge."""
    positive = [x for x in xs if x > 0]
    middle = math.sqrt(min(positive) * max(positive)) if positive else 0.0
    traces: list[dict[str, Any]] = []
    shapes: list[dict[str, Any]] = []
    for method, value in ((m, v) for m, v in fits.items() if v is not None):
        name = METHOD_LABELS.get(method, method) or "Plan"
        color = METHOD_COLORS.get(method, CAPACITY_COLOR)
        text = (f"largest that fits: {value:,}" if single else f"{name}: fits up to {value:,}") if value else (
            "nothing fits" if single else f"{name}: nothing fits")  # fmt: skip
        # one method: the point carries its label; several: the legend does (labels next to each other collide)
        traces.append({
            "type": "scatter", "mode": "markers+text" if single else "markers", "name": text,
            "showlegend": not single, "x": [max(value, 1)], "y": [gib(cap_bytes)], "text": [text],
            "textposition": "top left" if value and value > middle else "top right",
            "textfont": {"color": color}, "cliponaxis": False,
            "marker": {"symbol": "diamond" if value else "x", "size": 12, "color": color,
                       "line": {"width": 1.5, "color": "#ffffff"}},
            "hovertemplate": f"{text}<extra></extra>", "meta": {"method": method, "fit": value},
        })  # fmt: skip
        if value:
            shapes.append({"type": "line", "xref": "x", "yref": "y", "x0": value, "x1": value, "y0": low,
                           "y1": gib(cap_bytes), "line": {"color": color, "width": 1.5, "dash": "dot"},
                           "layer": "below"})  # fmt: skip
    return traces, shapes


def _y_axis(values: Sequence[float]) -> dict[str, Any]:
    """GiB, on a log scale when the values span more than a factor of 20 (a sweep from 256 to 128k tokens), so the
    small values stay readable; else linear from zero."""
    positive = [v for v in values if v > 0]
    if positive and max(positive) / min(positive) >= 20:
        low, high = min(positive) * 0.7, max(positive) * 1.6
        ticks = [m * 10**e for e in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
                 for m in (1, 2, 5) if low <= m * 10**e <= high]  # fmt: skip
        return {"title": {"text": "GiB (log scale)"}, "type": "log", "range": [math.log10(low), math.log10(high)],
                "tickvals": ticks, "ticktext": [_short_gib(t) for t in ticks], "automargin": True}  # fmt: skip
    top = max([*positive, 1 / 1024])
    return {"title": {"text": "GiB"}, "rangemode": "tozero", "range": [0, round(top * 1.12, 3)], "automargin": True}


def sweep_line_chart(
    points: Mapping[str, Sequence[Mapping[str, Any]]] | Sequence[Mapping[str, Any]],
    capacity: Mapping[str, Any] | int | None,
    *,
    fits: Mapping[str, int | None] | None = None,
    x_title: str = "Sequence length (tokens)",
    log_x: bool = True,
    title: str | None = None,
    references: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """Peak memory against a swept plan field (sequence length, batch size), in GiB.

    ``points`` is a list of ``{"x": value, "peak": bytes}`` (one line) or a mapping from method to such lists (one
    line per method); points whose ``peak`` is None (the plan was invalid there) are skipped. ``capacity``
    (``{"label", "bytes"}`` or a byte count) is drawn as a horizontal line and the points above it as open red
    circles; ``fits`` gives each method's answer of the fit search (the contract's ``fit.max_seq_len`` /
    ``max_batch_size``), drawn as a labelled point on that line. Without a capacity, ``references`` (``{"label",
    "bytes"}``) are drawn as dotted lines for scale. The y axis is logarithmic when the values span decades.
    """
    series = _series(points)
    cap_bytes, cap_label = _capacity(capacity)
    data: list[dict[str, Any]] = []
    for method in method_order(series):
        data += _sweep_traces(method, series[method], cap_bytes)
    lines = [t for t in data if "over" not in t["meta"]]
    all_x = [x for t in lines for x in t["x"]]
    values = [y for t in lines for y in t["y"]]
    shown_refs = [r for r in references if cap_bytes is None and values and gib(r["bytes"]) <= 2 * max(values)]
    yaxis = _y_axis([*values, *([gib(cap_bytes)] if cap_bytes else []), *(gib(r["bytes"]) for r in shown_refs)])
    low = 10 ** yaxis["range"][0] if yaxis.get("type") == "log" else 0
    shapes: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    if cap_bytes is not None:
        shapes.append(_hline(gib(cap_bytes), cap_label, color=CAPACITY_COLOR, dash="dash", width=1.8)[0])
        data.append(_legend_line(cap_label, dash="dash"))
        marks, drops = _fit_marks(fits or {}, cap_bytes, len(series) == 1, low, all_x)
        data += marks
        shapes += drops
    for ref in shown_refs:
        shape, note = _hline(gib(ref["bytes"]), str(ref["label"]), color=LINE_COLOR, dash="dot", width=1.2)
        shapes.append(shape)
        annotations.append(note)
    xaxis: dict[str, Any] = {"title": {"text": x_title}, "automargin": True}
    if log_x and all_x and min(all_x) > 0:
        ticks = sorted(set(all_x))
        xaxis.update({"type": "log", "tickvals": ticks, "ticktext": [_short(x) for x in ticks]})
    layout = _base_layout(
        title={"text": title or f"Peak memory vs {x_title.split(' (')[0].lower()}", "x": 0, "xanchor": "left",
               "font": {"size": 15}},
        xaxis=xaxis, yaxis=yaxis, shapes=shapes, annotations=annotations,
        legend={"orientation": "h", "x": 0, "y": -0.3, "xanchor": "left", "yanchor": "top", "traceorder": "normal"},
        showlegend=len(series) > 1 or cap_bytes is not None,
        meta={"fits": dict(fits or {}) if cap_bytes is not None else {}, "capacity": cap_bytes,
              "log_y": yaxis.get("type") == "log"},
    )  # fmt: skip
    return {"data": data, "layout": layout}


def _short_gib(x: float) -> str:
    """A log axis tick in GiB: 0.5, 2, 50, 1k, 20k."""
    if x >= 1000:
        return f"{x / 1000:g}k"
    return f"{x:g}"


def _short(x: float) -> str:
    """Tick text: 256, 4k, 128k."""
    if x >= 1024 and x % 1024 == 0:
        return f"{int(x) // 1024}k"
    return f"{int(x)}" if float(x).is_integer() else f"{x}"


def storage_rows(storage: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The storage table: ``{"key", "label", "bytes", "text"}`` per row.

    Absent sizes have ``bytes`` None and zero sizes (no adapter in a full fine-tune) read "—". The adapter
    row also gives its bf16 size when the contract has it (PEFT saves fp32 adapters unless told otherwise).
    """
    rows = []
    for key, label, field in STORAGE_ROWS:
        value = storage.get(field)
        size = int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
        text = gb_text(size) if size else "—"
        bf16 = storage.get("adapter_bf16")
        if key == "adapter" and size and isinstance(bf16, int) and 0 < bf16 != size:
            text += f" ({gb_text(bf16)} in bf16)"
        rows.append({"key": key, "label": label, "field": field, "bytes": size, "text": text})
    return rows


def storage_chart(storage: Mapping[str, Any]) -> dict[str, Any]:
    """Horizontal bars of the disk (and 4-bit in-memory) sizes in ``storage``, in GB, with their size.

    The axis is logarithmic when the sizes span more than two orders of magnitude (an adapter is a few MB
    next to a base model of tens of GB), so every bar stays visible.
    """
    rows = [r for r in storage_rows(storage) if r["bytes"]]
    sizes = [r["bytes"] for r in rows]
    log = bool(sizes) and max(sizes) / max(min(sizes), 1) > 100
    data = [
        {
            "type": "bar",
            "orientation": "h",
            "name": "Size",
            "y": [r["label"] for r in rows],
            "x": [gb(r["bytes"]) for r in rows],
            "customdata": sizes,
            "text": [gb_text(r["bytes"]) for r in rows],
            "textposition": "outside",
            "cliponaxis": False,
            "marker": {"color": ["#0072b2", "#009e73", "#cc79a7", "#e69f00", "#56b4e9"][: len(rows)]},
            "hovertemplate": "%{y}: %{text}<extra></extra>",
        }
    ]
    xaxis: dict[str, Any] = {"title": {"text": "GB (10⁹ bytes)"}, "automargin": True}
    if log:
        low = math.floor(math.log10(min(gb(s) for s in sizes) or 0.001))
        high = math.ceil(math.log10(max(gb(s) for s in sizes) * 4))
        xaxis.update({"type": "log", "range": [low, high]})
    elif sizes:
        xaxis.update({"range": [0, gb(max(sizes)) * 1.3]})
    layout = _base_layout(
        title={"text": "Storage", "x": 0, "xanchor": "left", "font": {"size": 15}},
        xaxis=xaxis,
        yaxis={"autorange": "reversed", "automargin": True},
        showlegend=False,
        margin={"l": 8, "r": 16, "t": 40, "b": 48},
        meta={"log": log},
    )
    return {"data": data, "layout": layout}
