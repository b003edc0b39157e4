"""Every parameter of a model as transformers builds it, on the meta device: the inventory of model types the
estimator has no hand-written family for (``estimator._generic``).

    python -m trainer.inventory < config.json        # prints [{"name", "shape", "module"}, ...] as JSON

The config is data: ``AutoConfig.for_model`` with the config's ``model_type`` (never ``trust_remote_code``: a
``model_type`` only a repo's own code defines is refused); ``auto_map`` and other code pointers are dropped. The
model is built under ``torch.device("meta")`` (nothing is allocated) by the causal-LM auto class, else the
image-text-to-text one (vision-language models), else the bare ``AutoModel``. Exit code 2 with a message when
transformers cannot build it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any

from .build import BuildError, config_object, stack_module

AUTO_CLASSES = ("AutoModelForCausalLM", "AutoModelForImageTextToText", "AutoModel")


def parameters(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``[{"name", "shape", "module"}]`` of every parameter transformers builds for ``config`` (tied weights once);
    ``"linear_subclass": true`` where the module is a subclass of ``nn.Linear`` (Llama 4's ``Llama4Router``), which
    PEFT's all-linear adapts (``isinstance``) and transformers' bitsandbytes conversion leaves in 16 bits (it
    converts ``type(module) is nn.Linear`` only, ``integrations/bitsandbytes.py``), and ``"returns_tensor"``, whether
    its forward returns a tensor (LoRA on it runs only then)."""
    import torch

    transformers = stack_module("transformers")
    try:
        cfg = config_object(config)
    except BuildError as exc:
        raise ValueError(str(exc)) from exc
    errors = []
    for auto in AUTO_CLASSES:
        try:
            with torch.device("meta"):
                model = getattr(transformers, auto).from_config(cfg, trust_remote_code=False)
            break
        except (ValueError, KeyError, TypeError) as exc:
            errors.append(f"{auto}: {str(exc).splitlines()[0][:200]}")
    else:
        raise ValueError("transformers cannot build it: " + "; ".join(errors))
    modules = dict(model.named_modules())
    out = []
    for name, p in model.named_parameters():
        module = modules[name.rsplit(".", 1)[0]]
        entry = {"name": name, "shape": list(p.shape), "module": type(module).__name__}
        if isinstance(module, torch.nn.Linear) and type(module) is not torch.nn.Linear:
            entry["linear_subclass"] = True  # PEFT's all-linear adapts it (isinstance), bitsandbytes keeps it
            entry["returns_tensor"] = _returns_tensor(module)
        out.append(entry)
    return out


def _returns_tensor(module: Any) -> bool:
    """Whether a linear subclass's forward gives a tensor, run on a meta batch of one token, shaped as a decoder's
    hidden states (nothing is computed): PEFT's LoRA layer adds its update to what the base layer returns, so one
    that returns a tuple (``Llama4Router``: scores and logits) fails when adapted."""
    import torch

    try:
        with torch.no_grad():
            row = torch.empty(1, 1, module.in_features, device="meta", dtype=module.weight.dtype)
            return isinstance(module(row), torch.Tensor)
    except Exception:  # any failure means LoRA's wrapper cannot count on it either
        return False


def main() -> int:
    try:
        config = json.load(sys.stdin)
        if not isinstance(config, dict):
            raise ValueError("a config.json is a JSON object")
        out = parameters(config)
    except (ValueError, TypeError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
