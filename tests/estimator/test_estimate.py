"""The estimate's JSON contract, totals from named parts, monotonicity, and bad or absurd input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from estimator import COMPONENTS, Plan, PlanError, UnknownModelError, catalog, estimate

LLAMA = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "configs" / "llama.json").read_text())


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _mem(**kw: Any) -> dict[str, Any]:
    d: dict[str, Any] = estimate(Plan(**({"model": "llama-3.1-8b"} | kw))).to_dict()["memory"]
    return d


@pytest.mark.parametrize("method", ["full", "lora", "qlora"])
@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_contract(method: str, device: str) -> None:
    d = estimate(Plan(model="llama-3.1-8b", method=method, device=device)).to_dict()  # type: ignore[arg-type]
    json.dumps(d)
    for k in ("total", "trainable", "quantized"):
        assert _is_int(d["params"][k]), k
    for k in ("base_16bit", "base_quantized", "adapter", "checkpoint"):
        assert _is_int(d["storage"][k]), k
    mem = d["memory"]
    assert set(mem["components"]) == set(COMPONENTS)
    assert all(_is_int(v) and v >= 0 for v in mem["components"].values())
    for k in ("peak_allocated", "peak_reserved", "total"):
        assert _is_int(mem[k]), k
    # on CUDA torch also counts the cuBLAS workspace as allocated; the phases are live tensors only
    workspace = next(t["bytes"] for t in mem["terms"] if t["name"] == "cublas_workspace")
    assert mem["peak_phase"] in mem["phases"]
    assert mem["phases"][mem["peak_phase"]] + workspace == mem["peak_allocated"]
    tiers = ("overhead", "allocator_cache", "optimizer_paged")
    assert sum(v for k, v in mem["components"].items() if k not in tiers) + workspace == mem["peak_allocated"]
    assert sum(mem["components"].values()) == mem["total"]
    if device == "cuda":
        assert mem["peak_allocated"] <= mem["peak_reserved"] <= mem["total"]
        assert mem["components"]["overhead"] > 0
    else:
        assert mem["components"]["overhead"] == 0
        assert mem["total"] == mem["peak_reserved"] == mem["peak_allocated"]
    p = d["params"]
    assert p["total"] == 8_030_261_248
    assert p["trainable"] == (p["total"] if method == "full" else p["lora"])
    assert p["quantized"] == (p["quantizable"] if method == "qlora" else 0)


def test_monotonic() -> None:
    assert _mem(seq_len=4096)["peak_allocated"] > _mem(seq_len=2048)["peak_allocated"]
    assert _mem(batch_size=4)["peak_allocated"] > _mem(batch_size=1)["peak_allocated"]
    gc_on = _mem(seq_len=8192, gradient_checkpointing=True)["peak_allocated"]
    gc_off = _mem(seq_len=8192, gradient_checkpointing=False)["peak_allocated"]
    assert gc_on < gc_off
    totals = [_mem(method=m)["total"] for m in ("qlora", "lora", "full")]
    assert totals == sorted(totals) and len(set(totals)) == 3
    assert _mem(lora_r=64)["components"]["adapters"] > _mem(lora_r=8)["components"]["adapters"]


def test_unknown_catalog_id_suggests() -> None:
    with pytest.raises(UnknownModelError, match=r"'llama-3.1-8' is not in the built-in catalog; did you mean: "
                       r"meta-llama/Llama-3.1-8B") as exc:  # fmt: skip
        estimate(Plan(model="llama-3.1-8"))
    assert exc.value.suggestions and exc.value.suggestions[0] == "meta-llama/Llama-3.1-8B"
    with pytest.raises(UnknownModelError, match="not in the built-in catalog") as exc2:
        estimate(Plan(model="xyzzy/plugh"))
    assert exc2.value.suggestions == ()


def test_seq_len_beyond_context() -> None:
    with pytest.raises(PlanError, match=r"seq_len 1,024 exceeds the model's context of 512 tokens .*at most 512, or "
                       "set allow_long_context"):  # fmt: skip
        estimate(Plan(config=LLAMA, seq_len=1024))
    assert estimate(Plan(config=LLAMA, seq_len=1024, allow_long_context=True)).memory.peak_allocated > 0


def test_the_default_seq_len_is_clamped_to_the_context_with_a_note() -> None:
    """GPT-2 has 1,024 positions: the default 2,048 becomes 1,024 and the estimate says so; the figures are those
    of the plan at 1,024."""
    est = estimate(Plan(model="gpt2"))
    d = est.to_dict()
    assert d["plan"]["seq_len"] == 1024 and est.plan.seq_len == 1024
    assert d["adjusted"] == [{"field": "seq_len", "from": 2048, "to": 1024, "why": "the default 2,048 tokens is "
                              "beyond this model's context of 1,024 (max_position_embeddings)"}]  # fmt: skip
    assert d["notes"][0].startswith("seq_len 2048 → 1024: the default")
    assert d["memory"] == estimate(Plan(model="gpt2", seq_len=1024)).to_dict()["memory"]
    assert estimate(Plan(model="gpt2", seq_len=1024)).adjusted == ()


def test_the_default_dropout_becomes_0_on_moe_experts_with_a_note() -> None:
    """all-linear targets a transformers 5 MoE model's fused expert parameters, which PEFT's ParamWrapper adapts
    without dropout: every catalog model estimates with the default plan."""
    for mid in ("mixtral-8x7b", "qwen3-30b-a3b"):
        d = estimate(Plan(model=mid)).to_dict()
        assert d["plan"]["lora_dropout"] == 0.0 and [a["field"] for a in d["adjusted"]] == ["lora_dropout"], mid
        assert d["memory"] == estimate(Plan(model=mid, lora_dropout=0.0)).to_dict()["memory"]
    with pytest.raises(PlanError, match="needs lora_dropout 0"):  # a dropout the user chose is not changed
        estimate(Plan(model="mixtral-8x7b", lora_dropout=0.1))
    assert estimate(Plan(model="mixtral-8x7b", target_modules=("q_proj",))).plan.lora_dropout == 0.05


def test_every_catalog_model_estimates_with_the_default_plan() -> None:
    for m in catalog.models():
        assert estimate(Plan(model=m.id)).memory.total > 0, m.id


def test_absurd_but_valid_input_returns_numbers() -> None:
    d = estimate(Plan(config=LLAMA, seq_len=1 << 20, allow_long_context=True, attn_implementation="eager")).to_dict()
    assert d["memory"]["total"] > 2**40  # eager attention at a million tokens: terabytes, not a crash
    huge = {"model_type": "llama", "vocab_size": 256000, "hidden_size": 32768, "intermediate_size": 131072,
            "num_hidden_layers": 80, "num_attention_heads": 256, "num_key_value_heads": 16}  # fmt: skip
    d = estimate(Plan(config=huge, method="full", num_gpus=1024)).to_dict()
    assert d["params"]["total"] > 10**12
    assert _is_int(d["memory"]["total"]) and not any(f["fits"] for f in d["fits"])


def test_inline_config_source() -> None:
    d = estimate(Plan(config=LLAMA, method="lora", device="cpu", seq_len=256)).to_dict()
    assert d["model"]["source"] == "inline" and d["model"]["id"] is None and d["plan"]["config"] is None
    assert d["model"]["architecture"]["hidden_size"] == 128


def test_from_the_rule_of_thumb_to_the_peak_step_by_step() -> None:
    """The seed's example: Llama 3.1 8B QLoRA's rule (4-bit weights + a 16-bit adapter: 4.1 GB) becomes a 13.49 GiB
    peak; each step is one component of the estimate, and the steps add up to the total exactly."""
    d = estimate(Plan(model="llama-3.1-8b")).to_dict()
    bridge, mem, rule = d["rule_to_peak"], d["memory"], d["storage"]["rule_of_thumb"]
    assert bridge["rule"] == rule["qlora_total"] == rule["int4"] + rule["adapter"]
    assert bridge["rule"] + sum(s["bytes"] for s in bridge["steps"]) == bridge["total"] == mem["total"]
    steps = {s["key"]: s["bytes"] for s in bridge["steps"]}
    assert steps["weights"] == mem["components"]["weights"] - rule["int4"]
    assert steps["logits"] == mem["components"]["logits"] and "gradients" not in steps  # none live at this peak
    full = estimate(Plan(model="llama-3.1-8b", method="full")).to_dict()
    assert full["rule_to_peak"]["rule"] == full["storage"]["rule_of_thumb"]["fp16"]


def test_components_are_named_by_what_they_hold_at_the_peak() -> None:
    full = estimate(Plan(model="llama-3.1-8b", method="full")).to_dict()["memory"]
    assert full["peak_phase"] == "optimizer"
    assert full["component_labels"]["activations"] == "Optimizer-step temporaries"
    qlora = estimate(Plan(model="llama-3.1-8b")).to_dict()["memory"]
    assert qlora["component_labels"]["activations"] == "Saved activations"
    per_layer = next(t for t in qlora["terms"] if t["name"] == "activations_per_layer")
    assert "no checkpointing" not in per_layer["counts"] and "recomputed" in per_layer["counts"]
    off = estimate(Plan(model="llama-3.1-8b", gradient_checkpointing=False)).to_dict()["memory"]
    assert "all 32 layers (no checkpointing)" in next(
        t["counts"] for t in off["terms"] if t["name"] == "activations_per_layer"
    )
