"""The time model's counts held to real CPU steps: FLOPs to torch's own FLOP counter, dispatched ops to a count.

Each plan is built with the trainer's recipe on a small Llama-shaped model (2 or 3 layers) with eager attention
(its matmuls are plain ``bmm``s the counter sees); one warm-up step, then one forward + backward is counted.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from bench._ops import llama, step_ops  # noqa: E402
from estimator import Plan, adapter_plan, build_inventory, host_ops, parse_config, step_flops  # noqa: E402
from trainer.build import build  # noqa: E402
from trainer.run import make_batch  # noqa: E402

pytestmark = pytest.mark.train


def _counted(plan: Plan) -> int:
    assert plan.config is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        built = build(plan.config, plan, "cpu")
    batch = make_batch(built.vocab_size, plan, torch.device("cpu"), 0)
    built.model(**batch).loss.backward()
    built.optimizer.zero_grad(set_to_none=True)
    counter = FlopCounterMode(display=False)
    with counter:
        built.model(**batch).loss.backward()
    return int(counter.get_total_flops())


def _plan(**changes: Any) -> Plan:
    return Plan(config=llama(2), batch_size=2, seq_len=64, device="cpu", attn_implementation="eager", **changes)


def _modelled(plan: Plan) -> Any:
    inv = build_inventory(parse_config(dict(plan.config or {})))
    return step_flops(inv, adapter_plan(inv, plan), plan)


@pytest.mark.parametrize(
    "changes",
    [
        {"method": "full"},
        {"method": "full", "gradient_checkpointing": False},
        {"method": "lora"},
        {"method": "lora", "gradient_checkpointing": False},
        {"method": "lora", "use_dora": True, "gradient_checkpointing": False},
        {"method": "lora", "modules_to_save": ["lm_head"]},
        {"method": "lora", "target_modules": ["q_proj", "v_proj"], "gradient_checkpointing": False},
    ],
    ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()),
)
def test_flops_equal_torchs_counter(changes: dict[str, Any]) -> None:
    plan = _plan(**changes)
    assert _modelled(plan).total == _counted(plan)


def test_qlora_flops_are_loras_and_bitsandbytes_forward_is_invisible_to_the_counter() -> None:
    """bitsandbytes' 4-bit forward is a custom op torch's counter does not see (its backward is a plain matmul):
    the counter misses exactly the base linears' forward, and the recompute of it."""
    qlora, lora = _plan(method="qlora"), _plan(method="lora")
    modelled = _modelled(qlora)
    assert modelled.total == _modelled(lora).total
    assert _counted(qlora) == modelled.total - 2 * modelled.parts["linear_forward"]


@pytest.mark.parametrize("changes", [{"method": "lora"}, {"method": "full", "gradient_checkpointing": False}])
def test_dispatched_ops_of_a_three_layer_model(changes: dict[str, Any]) -> None:
    """The ops table (counted on 2 and 4 layers) predicts a 3-layer model's forward + backward exactly."""
    plan = Plan.from_dict({"config": llama(3), "batch_size": 1, "seq_len": 64, "device": "cpu", "padding": "none"}
                          | changes)  # fmt: skip
    inv = build_inventory(parse_config(llama(3)))
    optimizer_ops = 20  # throughput.json host.optimizer_ops: torch's foreach kernels, not counted here
    assert host_ops(inv, adapter_plan(inv, plan), plan) - optimizer_ops == step_ops(3, **changes)
