"""LoRA targeting: trainable counts equal PEFT's on the real model, and targets LoRA cannot take are refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from estimator import Plan, PlanError, adapter_plan, build_inventory, legacy_config, parse_config

CONFIG_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "configs"
ALL_FIXTURES = sorted(p.stem for p in CONFIG_DIR.glob("*.json"))
MOE_REMAPPED = ("mixtral", "qwen3_moe", "deepseek_v2", "deepseek_v3", "glm4_moe", "olmoe")
ATTN_MLP = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((CONFIG_DIR / f"{name}.json").read_text())
    return data


def _plan(name: str, **kw: Any) -> tuple[Any, Plan]:
    cfg = _fixture(name)
    plan = Plan(config=cfg, method=kw.pop("method", "lora"), **kw)
    return build_inventory(parse_config(cfg)), plan


def _peft_trainable(name: str, plan: Plan) -> tuple[int, int]:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    from trainer.build import model_class

    cfg = _fixture(name)
    with torch.device("meta"):
        auto = transformers.AutoConfig.for_model(**legacy_config(cfg))
        model = model_class(auto).from_config(auto)  # a vision-language model: its tower's linears are adapted too
    tm = plan.target_modules if isinstance(plan.target_modules, str) else list(plan.target_modules)
    lc = peft.LoraConfig(
        r=plan.lora_r, lora_alpha=plan.lora_alpha, lora_dropout=plan.lora_dropout, target_modules=tm,
        use_dora=plan.use_dora, modules_to_save=list(plan.modules_to_save) or None,
    )  # fmt: skip
    pm = peft.get_peft_model(model, lc)
    trainable = pm.get_nb_trainable_parameters()[0]
    lora = sum(p.numel() for n, p in pm.named_parameters() if "lora_" in n)
    return trainable, lora


CASES: list[tuple[str, dict[str, Any]]] = [
    # PEFT's ParamWrapper (MoE router/experts of mixtral, qwen3_moe) refuses dropout
    *[
        (n, {"target_modules": "all-linear", "lora_dropout": 0.0 if n in MOE_REMAPPED else 0.05})
        for n in ALL_FIXTURES
        if n != "llama4_text"
    ],
    ("llama", {"target_modules": ("q_proj", "v_proj")}),
    ("llama", {"target_modules": ATTN_MLP}),
    ("llama", {"target_modules": ("q_proj",), "lora_r": 7}),
    ("llama", {"target_modules": ("self_attn.q_proj",)}),
    ("mistral", {"target_modules": ATTN_MLP, "lora_r": 64}),
    ("mixtral", {"target_modules": ("q_proj", "v_proj")}),
    ("mixtral", {"target_modules": ("gate",), "lora_dropout": 0.0}),
    ("mixtral", {"target_modules": ("w1", "w3", "w2", "o_proj"), "lora_dropout": 0.0}),
    ("qwen3_moe", {"target_modules": ATTN_MLP, "lora_dropout": 0.0}),
    ("qwen3_moe", {"target_modules": ("q_proj", "gate"), "lora_dropout": 0.0}),
    ("qwen2_moe", {"target_modules": ("gate_proj", "up_proj", "down_proj")}),
    ("qwen2_moe", {"target_modules": ("shared_expert_gate",)}),
    # DeepSeek / GLM-4 MoE: the v4 names are remapped to the experts, so the dense and shared MLPs are not adapted
    ("deepseek_v3", {"target_modules": ("gate_proj", "up_proj", "down_proj", "q_a_proj"), "lora_dropout": 0.0}),
    ("deepseek_v2", {"target_modules": ("kv_b_proj", "o_proj")}),
    ("glm4_moe", {"target_modules": ("q_proj", "gate"), "lora_dropout": 0.0}),
    ("llama4_text", {"target_modules": ("q_proj", "gate_proj", "down_proj")}),
    ("gpt_oss", {"target_modules": ("q_proj", "o_proj")}),
    ("gpt_bigcode", {"target_modules": ("c_attn",)}),
    ("cohere", {"target_modules": ("q_proj", "down_proj"), "modules_to_save": ("lm_head",)}),  # tied lm_head
    ("gpt2", {"target_modules": ("c_attn",)}),
    ("gpt2", {"target_modules": ("c_proj",)}),
    ("falcon", {"target_modules": ("query_key_value",)}),
    ("falcon_rw", {"target_modules": ("query_key_value", "dense_4h_to_h")}),
    ("phi3", {"target_modules": ("qkv_proj",)}),
    ("phi3", {"target_modules": ("qkv_proj", "gate_up_proj")}),
    ("llama", {"target_modules": "all-linear", "use_dora": True}),
    ("gpt2", {"target_modules": "all-linear", "use_dora": True}),
    ("llama", {"target_modules": ("q_proj", "v_proj"), "modules_to_save": ("lm_head",)}),
    ("qwen2", {"target_modules": ("q_proj", "v_proj"), "modules_to_save": ("lm_head",)}),  # tied lm_head
    ("llama", {"target_modules": ("q_proj",), "modules_to_save": ("embed_tokens", "norm")}),  # suffix: all norms
    ("gpt2", {"target_modules": ("c_attn",), "modules_to_save": ("wte",)}),
    ("llama", {"target_modules": ("embed_tokens", "q_proj")}),
    ("llama", {"target_modules": ("embed_tokens",), "use_dora": True}),
    ("gemma", {"target_modules": ("lm_head",)}),  # tied, still a module
    ("llama", {"target_modules": "all-linear", "method": "qlora"}),
    ("gemma3", {"target_modules": ("q_proj", "fc2")}),  # the text model's q_proj and the SigLIP tower's
    ("gemma3", {"target_modules": "all-linear", "method": "qlora"}),
]


@pytest.mark.train
@pytest.mark.parametrize(("name", "kw"), CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_trainable_matches_peft(name: str, kw: dict[str, Any]) -> None:
    inv, plan = _plan(name, **kw)
    ap = adapter_plan(inv, plan)
    trainable, lora = _peft_trainable(name, plan)
    assert (ap.trainable, ap.lora_params) == (trainable, lora)
    assert ap.trainable > 0


def test_llama4_router_lora_is_refused_with_what_to_target() -> None:
    for targets in ("all-linear", ("router",)):
        inv, plan = _plan("llama4_text", target_modules=targets)
        with pytest.raises(PlanError, match=r"LoRA on '.*feed_forward\.router' cannot run.*returns a tuple") as e:
            adapter_plan(inv, plan)
        runs = str(e.value).rsplit("from: ", 1)[1].split(",")
        assert "q_proj" in runs and "router" not in runs


def test_full_has_no_adapters() -> None:
    inv, plan = _plan("llama", method="full")
    ap = adapter_plan(inv, plan)
    assert (ap.trainable, ap.lora_params, ap.saved_params, ap.adapted) == (0, 0, 0, ())


def test_exact_counts_by_hand() -> None:
    # llama fixture: h 128, 4 heads of 32, 2 KV heads -> kv 64; r 16; 2 layers
    inv, plan = _plan("llama", target_modules=("q_proj", "v_proj"))
    ap = adapter_plan(inv, plan)
    assert ap.lora_params == 2 * 16 * ((128 + 128) + (128 + 64))
    assert ap.tensor_count(False) == 2 * 2 * 2
    inv, plan = _plan("llama", target_modules=("q_proj", "v_proj"), use_dora=True)
    ap = adapter_plan(inv, plan)
    assert ap.lora_params == 2 * 16 * ((128 + 128) + (128 + 64)) + 2 * (128 + 64)
    assert ap.tensor_count(True) == 2 * 2 * 3


def test_unmatched_target_names_the_linear_modules() -> None:
    inv, plan = _plan("llama", target_modules=("query", "value"))
    with pytest.raises(PlanError, match=r"match no module of this model; its linear modules are: .*down_proj.*q_proj"):
        adapter_plan(inv, plan)
    inv, plan = _plan("gpt2", target_modules=("q_proj",))
    with pytest.raises(PlanError, match=r"its linear modules are: c_attn, c_fc, c_proj"):
        adapter_plan(inv, plan)


@pytest.mark.parametrize(
    ("name", "target", "kind"),
    [
        ("mixtral", "experts", "experts"),
        ("qwen3_moe", "experts", "experts"),
        ("qwen2_moe", "experts", "experts"),
        ("qwen2_moe", "gate", "router"),  # not remapped by PEFT: a custom router module
        ("llama", "input_layernorm", "norm"),
        ("gpt2", "ln_1", "norm"),
        ("llama", "norm", "norm"),
    ],
)
def test_non_linear_target_is_refused(name: str, target: str, kind: str) -> None:
    inv, plan = _plan(name, target_modules=(target,))
    with pytest.raises(PlanError, match=rf"is a {kind} module, which LoRA cannot adapt"):
        adapter_plan(inv, plan)


def test_moe_fused_targets_must_come_together() -> None:
    inv, plan = _plan("mixtral", target_modules=("w1",), lora_dropout=0.0)
    with pytest.raises(PlanError, match="w1 and w3 together: they are fused into gate_up_proj"):
        adapter_plan(inv, plan)
    inv, plan = _plan("qwen3_moe", target_modules=("up_proj", "down_proj"), lora_dropout=0.0)
    with pytest.raises(PlanError, match="gate_proj and up_proj together"):
        adapter_plan(inv, plan)


def test_dora_or_dropout_on_moe_parameters_is_refused() -> None:
    inv, plan = _plan("mixtral", target_modules="all-linear", use_dora=True, lora_dropout=0.0)
    with pytest.raises(PlanError, match="use_dora is not supported on MoE router and expert parameters"):
        adapter_plan(inv, plan)
    inv, plan = _plan("qwen3_moe", target_modules="all-linear", lora_dropout=0.05)
    with pytest.raises(PlanError, match="needs lora_dropout 0"):
        adapter_plan(inv, plan)
    inv, plan = _plan("qwen3_moe", target_modules=("q_proj", "v_proj"), lora_dropout=0.05)
    assert adapter_plan(inv, plan).lora_params > 0  # attention only: no ParamWrapper


def test_modules_to_save_matching_nothing() -> None:
    inv, plan = _plan("llama", target_modules=("q_proj",), modules_to_save=("score",))
    with pytest.raises(PlanError, match=r"modules_to_save \['score'\] match no module of this model"):
        adapter_plan(inv, plan)
