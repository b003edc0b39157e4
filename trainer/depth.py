"""A traced step at a few decoder layers, extrapolated to the model's depth.

A decoder whose layers are all alike adds the same tensors per layer: its weights, adapters and optimizer state
(alive all step), what the forward keeps per layer for the backward (``c``: the checkpointed input, or every saved
activation without checkpointing; alive from the layer's forward to its backward) and the gradients it leaves
(``g``: alive from its backward on). Every moment of the step then holds an amount affine in the depth ``L``, and
the same moment exists at every depth past the few layers it is anchored to (the top layer's recompute, the last
layer's backward, the loss). So the step is traced at ``DEPTHS`` layers, and every figure (each phase's peak and
its components, the parameter counts) is extended along the line those traces draw.

It is taken only where that argument holds, and checked where it could fail:

* Static (``shortcut_refused``): a text decoder whose layers the config makes identical (no MoE/dense mix, no
  layer without rope, no sliding-window pattern, no cross-attention layer, every per-layer list constant), the
  next-token objective, no image batch, and more than ``MIN_LAYERS`` layers (fewer are traced whole).
* Affine (``extrapolate``): the three traces must lie on one line in every figure, exactly.
* Which moment peaks: a moment anchored at the bottom of the stack (late in the backward, with ``L - 1`` layers'
  gradients alive) grows by ``always + g`` per layer, one anchored at the top (the forward's end, the first
  recompute) by ``always + c``; a moment between grows by no more than the larger of the two. The forward's end
  and the backward's end measure both slopes. The backward's peak must grow by the larger one, and the forward's
  by the forward end's: otherwise another moment could overtake it past the traced depths (LoRA on short
  sequences, where ``g > c``), and the whole stack is traced instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from estimator import ConfigError, Plan, UnsupportedModelError, parse_config

DEPTHS: tuple[int, ...] = (2, 3, 4)
"""The depths traced: three points, so that a bend shows."""
MIN_LAYERS = 16
"""Models with fewer layers are traced whole: three shallow traces cost about as much as the whole stack there
(GPT-2, 12 layers: 2.5 s against 1.6 s; Llama 3.2 1B, 16 layers: 2.8 s against 3.6 s; `bench.traced_depth`)."""
LAYER_KEYS: tuple[str, ...] = ("num_hidden_layers", "n_layer")
"""Where a text config says its depth (``n_layer``: GPT-2, GPT-BigCode)."""


class NotAffine(ValueError):
    """The traces at ``DEPTHS`` do not extend to the model's depth; the message says why."""


def layer_count(config: Mapping[str, Any]) -> tuple[str, int] | None:
    """The config's depth field and value, or None where it has none at the top level."""
    for key in LAYER_KEYS:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return key, value
    return None


def _varies(values: Sequence[Any]) -> bool:
    """Whether a per-layer list holds more than one kind of value."""
    return len({repr(v) for v in values}) > 1


def shortcut_refused(config: Mapping[str, Any], plan: Plan) -> str | None:
    """Why this plan's step must be traced whole; None when it may be traced at ``DEPTHS`` and extrapolated."""
    if plan.objective != "sft":
        return f"the {plan.objective} objective runs TRL's trainer, traced whole"
    if plan.vision_inputs:
        return "an image or video batch"
    try:
        arch = parse_config(config)
    except (ConfigError, UnsupportedModelError) as exc:
        return f"the config is not read by a hand-written family ({exc})"
    found = layer_count(config)
    if found is None or arch.generic or arch.vision is not None:
        return "not a text decoder whose depth the config gives at its top level"
    key, layers = found
    if layers < MIN_LAYERS:
        return f"{layers} layers (the whole stack is traced under {MIN_LAYERS})"
    if arch.moe_layers and len(arch.moe_layers) != layers:
        return "dense and MoE layers mixed"
    for what, present in (
        ("layers without rotary embeddings", arch.nope_layers),
        ("cross-attention layers", arch.cross_attention_layers),
        ("a sliding-window pattern", arch.sliding_window),
    ):
        if present:
            return f"the layers differ ({what})"
    if config.get("sliding_window") and config.get("use_sliding_window", True):
        return "the layers may differ (a sliding window)"
    for field, value in config.items():
        if field != key and isinstance(value, list) and len(value) == layers and _varies(value):
            return f"the layers differ ({field})"
    return None


def uniform_layer_types(layer_types: Sequence[Any] | None) -> str | None:
    """Why the layers differ by the per-layer kinds transformers' config derives (``layer_types``, which a config
    class may fill from its defaults when config.json leaves it out); None when they are all alike."""
    if layer_types and _varies(layer_types):
        return f"the layers differ (layer_types: {', '.join(sorted({str(t) for t in layer_types}))})"
    return None


def reduced_config(config: Mapping[str, Any], depth: int) -> dict[str, Any]:
    """The config at ``depth`` layers: its depth field set, every per-layer list cut to its first ``depth``."""
    found = layer_count(config)
    if found is None:
        raise ValueError("the config gives no depth (num_hidden_layers / n_layer)")
    key, layers = found
    out = {k: (v[:depth] if isinstance(v, list) and len(v) == layers else v) for k, v in config.items()}
    out[key] = depth
    return out


def _line(values: Sequence[int], depths: Sequence[int], what: str) -> tuple[int, int]:
    """The (value at the last depth, slope per layer) of three exactly collinear figures."""
    (d0, d1, d2), (v0, v1, v2) = depths, values
    slope = (v2 - v1) // (d2 - d1)
    if (v2 - v1) != slope * (d2 - d1) or (v1 - v0) != slope * (d1 - d0):
        raise NotAffine(
            f"{what} is not affine in depth ({', '.join(f'{v} at {d}' for d, v in zip(depths, values, strict=True))})"
        )
    return v2, slope


def extrapolate(runs: Sequence[Mapping[str, Any]], depths: Sequence[int], layers: int) -> dict[str, Any]:
    """The traced result at ``layers`` layers from the results at ``depths`` (``trainer.traced``'s shape, each
    with ``phase_ends``: live bytes when each phase ended). Raises ``NotAffine`` where the argument above fails."""
    if len(runs) != len(depths) or len(depths) != 3:
        raise ValueError("three traced runs, one per depth")
    last = depths[-1]

    def at(path: str, pick: Any) -> int:
        value, slope = _line([pick(r) for r in runs], depths, path)
        return value + slope * (layers - last)

    def slope(path: str, pick: Any) -> int:
        return _line([pick(r) for r in runs], depths, path)[1]

    phases = list(runs[-1]["measured"]["phases"])
    for r in runs:
        m = r["measured"]
        if list(m["phases"]) != phases or m["peak_allocated"] != max(m["phases"].values()):
            raise NotAffine("the traces' phases differ, or the peak lies outside them")
    ends = {p: slope(f"live bytes at the end of {p}", lambda r, p=p: r["phase_ends"][p]) for p in phases}
    growth = {p: slope(f"the {p} peak", lambda r, p=p: r["measured"]["phases"][p]) for p in phases}
    if "forward" in growth and growth["forward"] != ends["forward"]:
        raise NotAffine("the forward's peak grows slower than its end: a deeper stack could peak elsewhere")
    if "backward" in growth and "forward" in ends and growth["backward"] != max(ends["forward"], ends["backward"]):
        raise NotAffine(
            "the backward's peak grows slower than the forward's or the backward's end: a deeper stack could "
            "peak at another moment of the backward"
        )
    phase_totals = {p: at(f"the {p} peak", lambda r, p=p: r["measured"]["phases"][p]) for p in phases}
    phase_components = {
        p: {
            c: at(f"{c} at the {p} peak", lambda r, p=p, c=c: r["measured"]["phase_components"][p][c])
            for c in runs[-1]["measured"]["phase_components"][p]
        }
        for p in phases
    }
    peak_phase = max(phases, key=lambda p: phase_totals[p])
    measured = dict(runs[-1]["measured"])
    measured.update(
        peak_allocated=phase_totals[peak_phase],
        components=dict(phase_components[peak_phase]),
        phases=phase_totals,
        phase_components=phase_components,
        peak_phase=peak_phase,
    )
    params = {k: at(f"{k} parameters", lambda r, k=k: r["params"][k]) for k in runs[-1]["params"]}
    return {"measured": measured, "params": params}
