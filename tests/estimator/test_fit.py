"""Fit search: the largest batch and the longest sequence that fit a GPU, checked against the estimate itself."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from estimator import Estimate, Plan, PlanError, catalog, estimate, training_memory


def _total(**kw: object) -> int:
    """The figure the fit search compares: the high edge of the total's range (``MemoryEstimate.fit_bytes``)."""
    return estimate(Plan(**kw)).to_dict()["memory"]["range"]["total"][1]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "model,method,gpu",
    [("llama-3.1-8b", "qlora", "rtx-4090"), ("qwen2.5-7b", "lora", "a100-80gb"), ("llama-3.2-1b", "full", "l4")],
)
def test_limits_are_the_last_that_fit(model: str, method: str, gpu: str) -> None:
    base = {"model": model, "method": method, "gpu": gpu, "seq_len": 1024, "lora_dropout": 0.0}
    fit = estimate(Plan(**base)).to_dict()["fit"]  # type: ignore[arg-type]
    usable = catalog.find_gpu(gpu).usable_bytes  # type: ignore[union-attr]
    assert fit["gpu"] == gpu and fit["usable_bytes"] == usable
    b = fit["max_batch_size"]
    assert b >= 1
    assert _total(**base | {"batch_size": b}) <= usable < _total(**base | {"batch_size": b + 1})
    s = fit["max_seq_len"]
    assert 1024 <= s <= fit["seq_limit"]
    if s < fit["seq_limit"]:
        extended = base | {"allow_long_context": True}
        assert _total(**base | {"seq_len": s}) <= usable < _total(**extended | {"seq_len": s + 1})


def test_nothing_fits_is_zero() -> None:
    fit = estimate(Plan(model="llama-3.1-70b", method="full", gpu="rtx-3060-12gb", seq_len=512)).to_dict()["fit"]
    assert fit["max_batch_size"] == 0 and fit["max_seq_len"] == 0 and fit["fits"] is False


def test_no_gpu_no_search_and_unknown_gpu_is_refused() -> None:
    assert estimate(Plan(model="gpt2", seq_len=512)).to_dict()["fit"] is None
    with pytest.raises(PlanError, match="not in the GPU catalog: 'tuneplan gpus' or GET /api/gpus lists them"):
        Plan(model="gpt2", seq_len=512, gpu="tpu-v9")
    with pytest.raises(PlanError, match="not in the GPU catalog: did you mean h100-sxm"):
        Plan(model="gpt2", seq_len=512, gpu="h100-sxn", device="cpu")  # checked on any device
    assert Plan(model="gpt2", gpu="h100sxm").gpu == "h100-sxm"  # loosely matched


def test_bf16_on_a_card_without_it_does_not_fit() -> None:
    fit = estimate(Plan(model="gpt2", seq_len=512, gpu="t4")).to_dict()["fit"]
    assert fit["fits"] is False and "bfloat16" in fit["reason"]
    assert estimate(Plan(model="gpt2", seq_len=512, gpu="t4", dtype="float16")).to_dict()["fit"]["fits"] is True


def _binary_search(low: int, high: int, ok: Callable[[int], bool]) -> int:
    """The search the fit search replaced: the largest n in [low, high] with ok(n), low - 1 if none."""
    if not ok(low):
        return low - 1
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if ok(mid) else (low, mid - 1)
    return low


def _reference(est: Estimate) -> tuple[int, int]:
    """The binary search's answers for an estimate's plan and GPU."""
    assert est.fit is not None
    usable = est.fit["usable_bytes"]

    def fits(**change: int) -> bool:
        return training_memory(est.inventory, est.adapters, est.plan.replace(**change)).fit_bytes <= usable

    return (
        _binary_search(1, est.fit["batch_limit"], lambda b: fits(batch_size=b)),
        _binary_search(1, est.fit["seq_limit"], lambda s: fits(seq_len=s)),
    )


@pytest.mark.parametrize("method", ["full", "lora", "qlora"])
def test_the_interpolating_search_answers_what_a_binary_search_answers(method: str) -> None:
    """Every catalog model x method x two plan shapes x three GPUs: the same largest batch and longest sequence as a
    binary search over the same memory figure (``fit_bytes``), in about a third of the evaluations."""
    compared = 0
    for model in catalog.models():
        for batch, seq, long_context in ((1, 512, False), (4, 2048, True)):
            for gpu in ("rtx-4090", "a100-80gb", "h200"):
                plan = Plan(model=model.id, method=method, gpu=gpu, batch_size=batch, seq_len=seq,  # type: ignore[arg-type]
                            lora_dropout=0.0, allow_long_context=long_context)  # fmt: skip
                est = estimate(plan)
                assert est.fit is not None
                assert (est.fit["max_batch_size"], est.fit["max_seq_len"]) == _reference(est), (model.id, plan)
                compared += 1
    assert compared == 6 * len(catalog.models())
