"""What each objective adds to the step: the reference model, the rows of pairs, GRPO's generation, vLLM's share."""

from __future__ import annotations

import math
from typing import Any

import pytest

from estimator import Plan, PlanError, catalog, estimate


def parameters(config: dict[str, Any]) -> list[dict[str, Any]]:
    """transformers' parameter list, as the app's subprocess gets it (in-process here)."""
    pytest.importorskip("transformers")
    from trainer.inventory import parameters as listed

    return listed(config)


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


def test_pairs_double_the_rows() -> None:
    sft = estimate(Plan(model=MODEL, method="qlora", seq_len=1024, batch_size=2))
    orpo = estimate(Plan(model=MODEL, method="qlora", seq_len=1024, batch_size=2, objective="orpo"))
    sft4 = estimate(Plan(model=MODEL, method="qlora", seq_len=1024, batch_size=4))

    def per_layer(e: Any) -> int:
        return next(t.bytes for t in e.memory.terms if t.name == "activations_per_layer")

    assert per_layer(orpo) == per_layer(sft4)
    assert orpo.memory.total > sft.memory.total


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


def test_images_are_refused_until_a_vision_path_is_modelled() -> None:
    with pytest.raises(PlanError, match="image and video inputs are not modelled yet"):
        estimate(Plan(model=MODEL, images_per_sample=1, image_size=(448, 448)))
    assert estimate(Plan(model=MODEL, image_size=(448, 448))).memory.total > 0  # no images: the size is unused


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


@pytest.mark.train
def test_qwen_vl_image_tokens_follow_the_processors_resize() -> None:
    import ast
    import importlib.util
    import math

    spec = importlib.util.find_spec("transformers")
    assert spec is not None and spec.submodule_search_locations
    # transformers' own smart_resize, read from its source (its module imports torchvision, not installed here)
    path = f"{spec.submodule_search_locations[0]}/models/qwen2_vl/image_processing_qwen2_vl.py"
    with open(path, encoding="utf-8") as fh:
        fn = next(n for n in ast.parse(fh.read()).body if isinstance(n, ast.FunctionDef) and n.name == "smart_resize")
    scope: dict[str, Any] = {"math": math}
    exec(compile(ast.Module([fn], []), path, "exec"), scope)
    params = parameters(QWEN2_VL)
    for h, w in [(448, 448), (1080, 1920), (100, 3000), (30, 40), (4000, 3000)]:
        for mp in (28 * 28 * 1280, 200_000):
            rh, rw = scope["smart_resize"](h, w, 28, 56 * 56, mp)
            tokens = (rh // 14) * (rw // 14) // 4 + 2  # merged 2x2 patches, between <|vision_start|> and <|vision_end|>
            plan = Plan(config=QWEN2_VL, images_per_sample=1, image_size=(h, w), max_pixels=mp)
            with pytest.raises(PlanError, match=f"makes {tokens} tokens per image"):
                estimate(plan, params=params)


QWEN2_VL = {
    "model_type": "qwen2_vl",
    "text_config": {"model_type": "qwen2_vl_text", "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2,
                    "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 2048, "bos_token_id": 1,
                    "eos_token_id": 2},
    "vision_config": {"depth": 2, "embed_dim": 64, "hidden_size": 256, "num_heads": 2, "mlp_ratio": 2, "patch_size": 14,
                      "spatial_merge_size": 2},
}  # fmt: skip


@pytest.mark.train
def test_qwen2_vl_vision_parameters_as_transformers_builds_them() -> None:
    pytest.importorskip("transformers")
    params = parameters(QWEN2_VL)
    est = estimate(Plan(config=QWEN2_VL, method="qlora", seq_len=128), params=params)
    vision = sum(math.prod(p["shape"]) for p in params if ".visual." in p["name"])
    assert est.params()["vision"] == vision > 0
    assert est.inventory.total == sum(math.prod(p["shape"]) for p in params)


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
