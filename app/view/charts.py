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
from collections.abc import Mapping, Sequence
from typing import Any

from estimator import COMPONENTS, GB, GIB, catalog, gb_text, gib_text

METHODS: tuple[str, ...] = ("full", "lora", "qlora")
METHOD_LABELS: dict[str, str] = {"full": "Full", "lora": "LoRA", "qlora": "QLoRA"}
METHOD_COLORS: dict[str, str] = {"full": "#d55e00", "lora": "#0072b2", "qlora": "#009e73"}

COMPONENT_LABELS: dict[str, str] = {
    "weights": "Weights",
    "adapters": "Adapters",
    "gradients": "Gradients",
    "optimizer": "Optimizer state",
    "reference": "Reference model",
    "activations": "Activations",
    "logits": "Logits",
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

COMMON_CAPACITIES_GB: tuple[int, ...] = (24, 40, 48, 80, 141)
"""Common accelerator memory sizes, by their marketing figure (which counts GiB, give or take)."""

STORAGE_ROWS: tuple[tuple[str, str, str], ...] = (
    ("download", "Download (16-bit weights)", "base_16bit"),
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


def capacity_lines(selected: str | None = None, common: Sequence[int] = COMMON_CAPACITIES_GB) -> list[dict[str, Any]]:
    """Horizontal lines for the bar chart: one per common capacity, plus the selected catalog GPU.

    Lines sit at usable memory (what is left after the driver's reservation; what ``fits`` compares
    ``memory.total`` with), so a bar above a line does not fit that card. A common capacity takes its size from the
    first catalog GPU sold as that size, else ``capacity * 2**30``. Returns ``{"label", "bytes", "selected"}``
    dicts, smallest first.
    """
    lines: list[dict[str, Any]] = []
    chosen = catalog.find_gpu(selected) if selected else None
    chosen_cap = nominal_gb(chosen.memory_bytes) if chosen is not None else None
    for cap in common:
        if cap == chosen_cap:
            continue  # the selected GPU's line stands for its size
        match = next((g for g in catalog.gpus() if nominal_gb(g.memory_bytes) == cap), None)
        size = match.usable_bytes if match else cap * GIB
        lines.append({"label": f"{cap} GB", "bytes": size, "selected": False})
    if chosen is not None:
        label = f"{short_gpu_name(chosen.name)}: {gib_text(chosen.usable_bytes)} usable"
        lines.append({"label": label, "bytes": chosen.usable_bytes, "selected": True})
    lines.sort(key=lambda line: line["bytes"])
    return lines


def nominal_gb(memory_bytes: int) -> int:
    """The marketing size of a card: 80 for 80 GiB, 141 for an H200's 141 GB (143.8e9 bytes)."""
    if memory_bytes <= 0:
        return 0
    as_gib = memory_bytes / GIB
    as_gb = memory_bytes / GB
    for cap in COMMON_CAPACITIES_GB:
        if abs(as_gib - cap) / cap < 0.03 or abs(as_gb - cap) / cap < 0.03:
            return cap
    return round(as_gib)


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


def _component_traces(methods: list[str], labels: list[str], comps: Mapping[str, Mapping[str, int]]) -> list[Any]:
    """One stacked bar trace per component that is not zero for every method."""
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
            "marker": {"color": COMPONENT_COLORS[c]} | pattern,
            "hovertemplate": f"{COMPONENT_LABELS[c]}: %{{y:.2f}} GiB<extra>%{{x}}</extra>",
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
    labels = [METHOD_LABELS.get(m, m) for m in methods]
    ticks = [f"<b>{label} ◆</b>" if m == selected_method else label for m, label in zip(methods, labels, strict=True)]
    comps = {m: components_of(estimates[m]) for m in methods}
    peaks = {m: peak_bytes(estimates[m]) for m in methods}
    data = _component_traces(methods, labels, comps)
    stack_tops = {m: sum(comps[m].values()) for m in methods}
    tallest = max([*stack_tops.values(), *peaks.values(), 0])
    shown = _lines_in_view(gpu_lines, tallest)
    top = max([tallest, *(int(line["bytes"]) for line in shown), 1])
    shapes, annotations, legend = _capacity_overlays(shown, top)
    data += legend
    annotations += [
        {"x": label, "y": gib(max(stack_tops[m], peaks[m])), "xref": "x", "yref": "y", "yanchor": "bottom",
         "text": gib_text(peaks[m]), "showarrow": False, "font": {"size": 12}}
        for m, label in zip(methods, labels, strict=True)
    ]  # fmt: skip
    layout = _base_layout(
        barmode="stack",
        title={"text": "Peak GPU memory by component (per GPU)", "x": 0, "xanchor": "left", "font": {"size": 15}},
        yaxis={"title": {"text": "GiB"}, "rangemode": "tozero", "range": [0, gib(top * 1.12)], "automargin": True},
        xaxis={"type": "category", "automargin": True, "tickvals": labels, "ticktext": ticks},
        shapes=shapes,
        annotations=annotations,
        bargap=0.35,
        legend={"orientation": "h", "x": 0, "y": -0.14, "xanchor": "left", "yanchor": "top", "traceorder": "normal"},
        meta={"methods": methods, "peaks": [peaks[m] for m in methods]},
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


def _sweep_traces(method: str, points: Sequence[Mapping[str, Any]], cap_bytes: int | None, single: bool) -> tuple[
    list[dict[str, Any]], Any
]:  # fmt: skip
    """The line of one method, and a marker at its first point over the capacity (with where it stops fitting)."""
    pts = [p for p in points if p.get("peak") is not None]
    xs, ys = [p["x"] for p in pts], [int(p["peak"]) for p in pts]
    name = METHOD_LABELS.get(method, method) or "Peak memory"
    line: dict[str, Any] = {"type": "scatter", "mode": "lines+markers", "name": name, "x": xs,
                            "y": [gib(y) for y in ys], "customdata": ys,
                            "hovertemplate": f"{name}: %{{y:.2f}} GiB at %{{x}}<extra></extra>",
                            "meta": {"method": method}}  # fmt: skip
    if method in METHOD_COLORS:
        line["line"] = {"color": METHOD_COLORS[method]}
    if cap_bytes is None:
        return [line], None
    over = next((i for i, y in enumerate(ys) if y > cap_bytes), None)
    if over is None:
        return [line], None
    marker = {
        "type": "scatter", "mode": "markers+text", "name": f"{name}: stops fitting", "showlegend": False,
        "x": [xs[over]], "y": [gib(ys[over])], "text": [f"{xs[over]:,}"] if single else [""],
        "textposition": "top left", "textfont": {"color": CAPACITY_COLOR},
        "marker": {"symbol": "x", "size": 13, "color": CAPACITY_COLOR, "line": {"width": 2, "color": CAPACITY_COLOR}},
        "hovertemplate": f"{name} stops fitting at %{{x}}: %{{y:.2f}} GiB<extra></extra>",
        "meta": {"method": method, "stops_fitting": True},
    }  # fmt: skip
    return [line, marker], xs[over]


def sweep_line_chart(
    points: Mapping[str, Sequence[Mapping[str, Any]]] | Sequence[Mapping[str, Any]],
    capacity: Mapping[str, Any] | int | None,
    *,
    x_title: str = "Sequence length (tokens)",
    log_x: bool = True,
    title: str | None = None,
) -> dict[str, Any]:
    """Peak memory against a swept plan field (sequence length, batch size).

    ``points`` is a list of ``{"x": value, "peak": bytes}`` (one line) or a mapping from method to such lists
    (one line per method). Points whose ``peak`` is None (the plan was invalid there) are skipped.
    ``capacity`` is ``{"label", "bytes"}`` or a byte count: it is drawn as a horizontal line, and the first
    point of each line above it is marked as where the plan stops fitting.
    """
    series = _series(points)
    cap_bytes, cap_label = _capacity(capacity)
    data: list[dict[str, Any]] = []
    stops: dict[str, Any] = {}
    for method in method_order(series):
        traces, stop = _sweep_traces(method, series[method], cap_bytes, len(series) == 1)
        data += traces
        if cap_bytes is not None:
            stops[method] = stop
    all_x = [x for t in data if not t["meta"].get("stops_fitting") for x in t["x"]]
    tallest = max([0, *(y for t in data if not t["meta"].get("stops_fitting") for y in t["customdata"])])
    shapes: list[dict[str, Any]] = []
    if cap_bytes is not None:
        shapes.append(_hline(gib(cap_bytes), cap_label, color=CAPACITY_COLOR, dash="dash", width=1.8)[0])
        data.append(_legend_line(cap_label, dash="dash"))
    xaxis: dict[str, Any] = {"title": {"text": x_title}, "automargin": True}
    if log_x and all_x and min(all_x) > 0:
        ticks = sorted(set(all_x))
        xaxis.update({"type": "log", "tickvals": ticks, "ticktext": [_short(x) for x in ticks]})
    top = max(tallest, cap_bytes or 0, 1)
    layout = _base_layout(
        title={"text": title or f"Peak memory vs {x_title.split(' (')[0].lower()}", "x": 0, "xanchor": "left",
               "font": {"size": 15}},
        xaxis=xaxis,
        yaxis={"title": {"text": "GiB"}, "rangemode": "tozero", "range": [0, gib(top * 1.12)], "automargin": True},
        shapes=shapes,
        annotations=[],
        legend={"x": 0.01, "y": 0.99, "xanchor": "left", "yanchor": "top", "bgcolor": "rgba(0,0,0,0)"},
        showlegend=len(series) > 1 or cap_bytes is not None,
        meta={"stops_fitting": stops, "capacity": cap_bytes},
    )  # fmt: skip
    return {"data": data, "layout": layout}


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
