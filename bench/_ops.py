"""Count the aten ops one forward + backward dispatches, on real CPU steps built with the trainer's recipe (torch).

``ops_table()`` is what ``python -m bench.time_model ops`` prints: ``host.ops_per_layer`` and ``host.ops_fixed`` of
``estimator/data/throughput.json`` (each as [without, with] gradient checkpointing; ``frozen``: a LoRA / QLoRA
model's base, ``full``: full fine-tuning).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from estimator import Plan
from trainer.build import build
from trainer.run import make_batch


class OpCounter(TorchDispatchMode):  # type: ignore[no-untyped-call]
    """Counts every aten op dispatched while it is active."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.ops = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.ops += 1
        return func(*args, **(kwargs or {}))


def llama(layers: int) -> dict[str, Any]:
    """A small Llama-shaped config (grouped KV heads, untied head), every size a multiple of 64."""
    return {"model_type": "llama", "vocab_size": 1024, "hidden_size": 256, "intermediate_size": 512,
            "num_hidden_layers": layers, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64,
            "max_position_embeddings": 4096, "tie_word_embeddings": False}  # fmt: skip


def step_ops(layers: int, **plan: Any) -> int:
    """Ops of one forward + backward (after a warm-up step) of a ``layers``-layer model under ``plan``."""
    # full rows, no attention mask: the shape of the H200 runs the host floor is calibrated on
    p = Plan.from_dict({"config": llama(layers), "batch_size": 1, "seq_len": 64, "device": "cpu", "padding": "none"}
                       | plan)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        built = build(llama(layers), p, "cpu")
        batch = make_batch(built.vocab_size, p, torch.device("cpu"), 0)
        counts = []
        for _ in range(2):
            counter = OpCounter()
            with counter:
                built.model(**batch).loss.backward()
            built.optimizer.zero_grad(set_to_none=True)
            counts.append(counter.ops)
    return counts[-1]


def per_layer(**plan: Any) -> tuple[int, int]:
    """(ops per decoder layer, ops outside the layers) from models of 2 and 4 layers."""
    two, four = step_ops(2, **plan), step_ops(4, **plan)
    layer = (four - two) // 2
    return layer, two - 2 * layer


def ops_table() -> dict[str, Any]:
    out: dict[str, Any] = {k: [0.0, 0.0] for k in ("full", "frozen", "lora_module", "lora_dropout", "dora_module")}
    fixed: dict[str, list[int]] = {"full": [0, 0], "frozen": [0, 0]}
    for gc in (0, 1):
        flag = {"gradient_checkpointing": bool(gc)}
        out["full"][gc], fixed["full"][gc] = per_layer(method="full", **flag)
        seven, fixed["frozen"][gc] = per_layer(method="lora", **flag)
        two = per_layer(method="lora", target_modules=["q_proj", "v_proj"], **flag)[0]
        module = (seven - two) / 5  # all-linear adapts 7 modules per layer, q_proj + v_proj 2
        frozen = two - 2 * module
        plain = (per_layer(method="lora", lora_dropout=0.0, **flag)[0] - frozen) / 7
        dora = (per_layer(method="lora", use_dora=True, **flag)[0] - frozen) / 7 - module
        out["frozen"][gc], out["lora_module"][gc] = round(frozen, 2), round(plain, 2)
        out["lora_dropout"][gc], out["dora_module"][gc] = round(module - plain, 2), round(dora, 2)
    return {"ops_per_layer": out, "ops_fixed": fixed}
