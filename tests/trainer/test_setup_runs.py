"""The trainer runs the setup a plan names: padded and packed batches, a plain loop, TRL's chunked loss, a pinned
SDPA backend (real CPU runs on a tiny model)."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

import torch

from estimator import Plan
from tests.trainer.trainer_cases import LLAMA
from trainer.run import run, shape_batch

pytestmark = pytest.mark.train


def _plan(**changes: Any) -> Plan:
    base: dict[str, Any] = {"config": LLAMA, "method": "lora", "device": "cpu", "batch_size": 2, "seq_len": 64,
                            "lora_dropout": 0.0, "padding": "none"}  # fmt: skip
    return Plan.from_dict(base | changes)


def _run(**changes: Any) -> dict[str, Any]:
    return run(_plan(**changes), LLAMA, device="cpu", steps=1)


def test_batches_are_shaped_as_a_collator_shapes_them() -> None:
    ids = torch.arange(2 * 8).reshape(2, 8)
    assert set(shape_batch(ids, _plan(padding="none"))) == {"input_ids", "labels"}
    padded = shape_batch(ids, _plan(padding="padded"))
    assert padded["attention_mask"].sum().item() == 15 and padded["labels"][-1, -1].item() == -100
    assert "attention_mask" not in shape_batch(ids[:1], _plan(padding="padded", batch_size=1))  # one row: no padding
    packed = shape_batch(ids, _plan(padding="packed"))
    assert packed["position_ids"][0].tolist() == [0, 1, 2, 3, 0, 1, 2, 3] and "attention_mask" not in packed
    assert (packed["labels"][:, [0, 4]] == -100).all()


def test_a_plain_loop_keeps_its_logits_through_the_step() -> None:
    trainer, plain = _run(), _run(training_loop="plain")
    logits = 2 * 2 * 64 * LLAMA["vocab_size"]  # bf16 b·s·V
    for phase in ("forward", "backward", "optimizer"):
        extra = plain["measured"]["phases"][phase] - trainer["measured"]["phases"][phase]
        assert logits <= extra <= logits + 64, (phase, extra)
    assert plain["loss"][0] == pytest.approx(trainer["loss"][0])


def test_the_chunked_loss_is_trls_and_computes_the_same_loss() -> None:
    standard, chunked = _run(), _run(loss="chunked")
    assert chunked["loss"][0] == pytest.approx(standard["loss"][0], rel=1e-4)  # the first step: same weights
    assert chunked["measured"]["peak_allocated"] != standard["measured"]["peak_allocated"]


def test_a_pinned_sdpa_backend_is_the_one_that_runs() -> None:
    flash, math = _run(), _run(sdpa_backend="math")
    assert math["measured"]["peak_allocated"] > flash["measured"]["peak_allocated"]  # math keeps b·a·s² per layer
    assert math["loss"][0] == pytest.approx(flash["loss"][0], rel=1e-3)


def test_the_sdpa_backend_torch_picks_is_recorded() -> None:
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from trainer.run import recording_sdpa

    q, k = torch.randn(1, 4, 16, 8), torch.randn(1, 2, 16, 8)
    chosen: set[str] = set()
    with recording_sdpa(chosen):
        F.scaled_dot_product_attention(q, k, k, is_causal=True, enable_gqa=True)
        with sdpa_kernel([SDPBackend.MATH]):
            F.scaled_dot_product_attention(q, k, k, is_causal=True, enable_gqa=True)
    assert chosen == {"flash_attention", "math"}  # the CPU's flash kernel, then the pinned math path
    assert F.scaled_dot_product_attention.__module__ != "trainer.run"  # the probe is removed afterwards
