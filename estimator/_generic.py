"""Any model type transformers can build: the inventory read from transformers itself, the rest by generic rules.

A ``model_type`` with no hand-written family (``_arch._PARSERS``) is estimated from its parameters as transformers
builds them on the meta device (``trainer.inventory``, run in a subprocess by the app, no remote code): every
parameter's name, shape and module class. Storage, weights, adapters, gradients and optimizer state are then exact
(they follow from the parameters); the activations follow the generic decoder rules of a llama-style layer read
from the config's sizes (``hidden_size``, ``num_hidden_layers``, heads, ``intermediate_size``), and the estimate's
notes say so.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from ._arch import Architecture, _llama_like, _Reader, _with, config_dtype
from ._errors import ConfigError
from ._inventory import (
    ATTENTION_INPUT,
    ATTENTION_OUTPUT,
    EMBEDDING,
    HEAD_INPUT,
    INPUT_IDS,
    LINEAR,
    MLP_HIDDEN,
    MLP_INPUT,
    NO_INPUT,
    NORM,
    OPAQUE_LINEAR,
    PARAMETER,
    SUBCLASS_LINEAR,
    Inventory,
    Tensor,
)

GENERIC_NOTE = (
    "{t}: no hand-written family; the parameters are transformers' own (built on the meta device, no remote "
    "code), the activations follow the generic decoder rules (a llama-style layer of the config's sizes)"
)
_ATTENTION_IN = ("q_proj", "k_proj", "v_proj", "qkv_proj", "query_key_value", "c_attn", "Wqkv", "query", "key", "value")
_ATTENTION_OUT = ("o_proj", "out_proj", "c_proj", "dense", "wo")
_MLP_IN = ("gate_proj", "up_proj", "gate_up_proj", "fc1", "c_fc", "w1", "w3", "dense_h_to_4h", "in_proj")
_MLP_OUT = ("down_proj", "fc2", "w2", "dense_4h_to_h")


def generic_architecture(config: Mapping[str, Any]) -> Architecture:
    """The generic decoder's sizes from a config (``text_config`` for a multimodal wrapper): ``ConfigError`` names a
    missing size field."""
    text = config.get("text_config")
    source = config if not isinstance(text, Mapping) else dict(text, model_type=config.get("model_type"))
    model_type = str(config.get("model_type"))
    arch = _llama_like(_Reader(source, model_type), defaults={})
    return _with(arch, source_model_type=model_type, generic=True, notes=(GENERIC_NOTE.format(t=model_type),),
                 config_dtype=config_dtype(config))  # fmt: skip


VISION_PREFIXES = ("visual.", "vision_tower.", "vision_model.", "multi_modal_projector.", "vision_encoder.")
"""Where multimodal models keep the vision tower and its projector (``params.vision``)."""


def is_vision(name: str) -> bool:
    """Whether a parameter belongs to the vision tower or its projector (by its module path)."""
    return any(f".{p}" in f".{name}" for p in VISION_PREFIXES)


def _place(name: str, module: str, shape: tuple[int, ...], subclass: str = "") -> tuple[str, str, str]:
    """(role, kind, reads) of one parameter from its module's class and name. The vision tower's tensors are role
    ``vision`` and read nothing the memory model counts: a text batch never runs the tower. ``subclass``: the module
    is a subclass of ``nn.Linear``, placed as a linear layer of that kind (``SUBCLASS_LINEAR``: adapted, not
    quantized; ``OPAQUE_LINEAR``: its forward returns no tensor, so LoRA on it cannot run)."""
    if subclass and not is_vision(name):
        role, kind, reads = _place(name, "Linear", shape)
        return role, subclass if kind == LINEAR else kind, reads
    if is_vision(name):
        kind = EMBEDDING if "Embedding" in module else LINEAR if module in ("Linear", "Conv1D") else PARAMETER
        return "vision", NORM if "Norm" in module else kind, NO_INPUT
    leaf = name.rsplit(".", 2)[-2] if name.count(".") >= 1 else name
    if "Embedding" in module:
        return "embedding", EMBEDDING, INPUT_IDS
    if "Norm" in module or len(shape) == 1 and module not in ("Linear", "Conv1D"):
        return "norm", NORM, NO_INPUT
    if module in ("Linear", "Conv1D"):
        if leaf == "lm_head":
            return "lm_head", LINEAR, HEAD_INPUT
        attention = "attn" in name or "attention" in name
        if leaf in _ATTENTION_IN or attention and leaf not in _ATTENTION_OUT:
            return "attention", LINEAR, ATTENTION_INPUT
        if leaf in _ATTENTION_OUT and attention:
            return "attention", LINEAR, ATTENTION_OUTPUT
        if leaf in _MLP_OUT:
            return "mlp", LINEAR, MLP_HIDDEN
        return "mlp", LINEAR, MLP_INPUT
    return "mlp", PARAMETER, NO_INPUT


def generic_inventory(arch: Architecture, params: Sequence[Mapping[str, Any]]) -> Inventory:
    """The inventory of ``params`` (``{"name", "shape", "module"}`` each, ``linear_subclass`` and ``returns_tensor``
    where it is one, as ``trainer.inventory`` lists them): one
        tensor per parameter, its role and what its module reads from the module class and name (an ``nn.Linear`` named
        like an attention or MLP projection is adapted and quantized as PEFT and bitsandbytes do: by module class). The
    same parameter of every decoder layer (``.layers.{i}.``, one shape) is one tensor repeated over ``layers``, as the
    hand-written inventories hold them."""
    groups: dict[tuple[str, str, tuple[int, ...], str], list[int]] = {}
    for p in params:
        name, module, shape = p.get("name"), p.get("module"), p.get("shape")
        if not isinstance(name, str) or not isinstance(module, str) or not isinstance(shape, list | tuple):
            raise ConfigError("a parameter list entry needs 'name', 'shape' and 'module'")
        m = _LAYER.search(name)
        template = name if m is None else f"{name[: m.start()]}.layers.{{i}}.{name[m.end() :]}"
        subclass = "" if p.get("linear_subclass") is not True else (
            SUBCLASS_LINEAR if p.get("returns_tensor", True) is True else OPAQUE_LINEAR)  # fmt: skip
        key = (template, module, tuple(int(d) for d in shape), subclass)
        groups.setdefault(key, []).append(int(m.group(1)) if m else -1)
    tensors: list[Tensor] = []
    for (template, module, dims, subclass), indices in groups.items():
        role, kind, reads = _place(template, module, dims, subclass)
        tensors.append(
            Tensor(template, dims, role, template.rsplit(".", 1)[0], kind, template.endswith(".bias"), len(indices),
                   reads)
        )  # fmt: skip
    if not tensors:
        raise ConfigError("transformers built no parameters for this config")
    return Inventory(arch, tuple(tensors))


_LAYER = re.compile(r"\.layers\.(\d+)\.")
"""A decoder layer's index in a parameter name: tensors of every layer become one ``Tensor`` with ``layers``."""
