"""What each objective adds to the step: the reference model, the rows of pairs, GRPO's generation, vLLM's share."""

from __future__ import annotations

from typing import Any

import pytest

from estimator import Plan, catalog, estimate

MODEL = "llama-3.1-8b"


def _mem(**kw: Any) -> Any:
    return estimate(Plan.from_dict({"model": MODEL, "gpu": "h100-sxm", "seq_len": 1024} | kw)).memory


def test_full_dpo_holds_a_reference_copy_of_the_weights() -> None:
    mem = _mem(method="full", objective="dpo")
    assert mem.components["reference"] == mem.components["weights"] > 0
    assert "reference" in mem.phases


@pytest.mark.parametrize(
    "kw",
    [
        {"method": "full", "objective": "dpo", "precompute_ref_log_probs": True},
        {"method": "full", "objective": "orpo"},
        {"method": "full", "objective": "simpo"},
        {"method": "full", "objective": "grpo", "beta": 0.0},
        {"method": "full", "objective": "sft"},
    ],
)
def test_no_reference_where_trl_holds_none(kw: dict[str, Any]) -> None:
    mem = _mem(**kw)
    assert mem.components["reference"] == 0
    assert "reference" not in mem.phases


def test_lora_reference_is_the_frozen_adapter_copy_not_the_model() -> None:
    lora = _mem(method="lora", objective="dpo")
    assert 0 < lora.components["reference"] == lora.components["adapters"]
    qlora = _mem(method="qlora", objective="dpo")
    # TRL casts the trainable adapter to bf16 after copying it (fp32) as the reference
    assert qlora.components["reference"] == 2 * qlora.components["adapters"]


def _per_layer(e: Any) -> int:
    return int(next(t.bytes for t in e.memory.terms if t.name == "activations_per_layer"))


def test_pairs_double_the_rows() -> None:
    sft = estimate(Plan(model=MODEL, method="qlora", seq_len=1024, batch_size=2, lora_dropout=0.0))
    orpo = estimate(Plan(model=MODEL, method="qlora", seq_len=1024, batch_size=2, objective="orpo"))
    sft4 = estimate(Plan(model=MODEL, method="qlora", seq_len=1024, batch_size=4, lora_dropout=0.0))

    assert _per_layer(orpo) == _per_layer(sft4)
    assert orpo.memory.total > sft.memory.total


@pytest.mark.parametrize("objective", ["dpo", "kto", "orpo", "simpo", "reward"])
def test_trainers_that_disable_dropout_run_lora_without_it(objective: str) -> None:
    """TRL's DPO, KTO, reward and experimental ORPO/CPO configs default to ``disable_dropout=True``: LoRA's dropout
    then allocates nothing, whatever ``lora_dropout`` says; GRPO keeps it."""

    def plan(obj: str, dropout: float) -> Plan:
        return Plan.from_dict({"model": MODEL, "method": "qlora", "seq_len": 1024, "objective": obj,
                               "lora_dropout": dropout, "prepare_kbit": obj != "reward"})  # fmt: skip

    assert _per_layer(estimate(plan(objective, 0.1))) == _per_layer(estimate(plan(objective, 0.0)))
    assert _per_layer(estimate(plan("grpo", 0.1))) > _per_layer(estimate(plan("grpo", 0.0)))


def test_grpo_generation_grows_with_completions() -> None:
    short = _mem(method="qlora", objective="grpo", max_completion_length=256)
    long = _mem(method="qlora", objective="grpo", max_completion_length=4096)
    assert short.phases["generation"] < long.phases["generation"]
    assert "generation" not in _mem(method="qlora", objective="grpo", vllm_mode="server").phases


def test_vllm_colocate_takes_its_share_of_each_gpu() -> None:
    plain = estimate(Plan(model=MODEL, method="qlora", objective="grpo", vllm_mode="server", gpu="h100-sxm"))
    colo = estimate(
        Plan(model=MODEL, method="qlora", objective="grpo", vllm_mode="colocate", gpu="h100-sxm",
             vllm_gpu_memory_utilization=0.3)
    )  # fmt: skip
    gpu = catalog.find_gpu("h100-sxm")
    assert gpu is not None and colo.fit is not None and plain.fit is not None
    assert colo.fit["usable_bytes"] == gpu.usable_bytes - int(0.3 * gpu.memory_bytes)
    row = next(r for r in colo.fits if r["id"] == gpu.id)
    assert row["usable_bytes"] == colo.fit["usable_bytes"]


@pytest.mark.train
@pytest.mark.parametrize("name", ["LLAMA", "QWEN2", "GPT2"])
def test_reward_model_parameters_equal_transformers_sequence_classification(name: str) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from trainer import accuracy

    cfg = getattr(accuracy, name)
    with torch.device("meta"):
        model = transformers.AutoModelForSequenceClassification.from_config(
            transformers.AutoConfig.for_model(**{**cfg, "num_labels": 1})
        )
    inv = estimate(Plan(config=cfg, objective="reward", method="full", seq_len=128)).inventory
    assert inv.total == sum(p.numel() for p in model.parameters())
    assert next(t for t in inv if t.name == "score.weight").shape == tuple(model.score.weight.shape)


def test_rent_takes_vllm_colocate_share_too() -> None:
    from estimator import rent

    colo = rent(Plan(model=MODEL, method="qlora", objective="grpo", vllm_mode="colocate", device="cuda"))
    apart = rent(Plan(model=MODEL, method="qlora", objective="grpo", vllm_mode="server", device="cuda"))
    for option in colo["options"]:
        gpu = catalog.find_gpu(option["gpu"])
        assert gpu is not None and option["usable_bytes"] == gpu.usable_bytes - int(0.3 * gpu.memory_bytes)
    assert len(colo["options"]) < len(apart["options"])


@pytest.mark.parametrize("objective", ["sft", "dpo", "orpo", "simpo", "kto", "reward", "grpo"])
@pytest.mark.parametrize("method", ["full", "lora", "qlora"])
def test_the_range_holds_the_figure_and_the_reference_copy(objective: str, method: str) -> None:
    """The reference model is an exact component: the range's edges move with it, never below the figure."""
    mem = estimate(Plan.from_dict({"model": "llama-3.2-1b", "method": method, "objective": objective})).memory
    for key in ("peak_allocated", "total"):
        low, high = mem.range[key]
        figure = getattr(mem, key)
        assert low <= figure <= high, (key, low, figure, high)
