"""Model types with no hand-written family: transformers' own parameters, read in a subprocess, estimated."""

from __future__ import annotations

import json
import re
from math import prod
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers")

from app.inventory import config_hash, transformers_parameters
from estimator import Plan, UnsupportedModelError, estimate

pytestmark = pytest.mark.train

STABLELM = {
    "model_type": "stablelm", "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 2048,
}  # fmt: skip


def test_an_unmodelled_type_is_estimated_from_transformers_parameters() -> None:
    params = transformers_parameters(STABLELM)
    assert params is not None
    assert transformers_parameters(dict(STABLELM)) is params  # cached by the config's hash
    est = estimate(Plan(config=STABLELM, method="qlora", seq_len=128), params=params).to_dict()
    assert est["params"]["total"] == sum(prod(p["shape"]) for p in params)
    assert any("no hand-written family" in n for n in est["model"]["notes"])
    assert est["memory"]["total"] > 0


def test_the_inventory_holds_every_parameter_by_name_and_shape() -> None:
    params = transformers_parameters(STABLELM)
    assert params is not None
    inv = estimate(Plan(config=STABLELM, method="qlora", seq_len=128), params=params).inventory
    names = {(t.name.replace("{i}", str(i)), t.shape) for t in inv for i in range(t.layers)}
    assert names == {(p["name"], tuple(p["shape"])) for p in params}
    assert next(t for t in inv if t.name.endswith("q_proj.weight")).layers == STABLELM["num_hidden_layers"]
    q = next(t for t in inv if t.name.endswith("self_attn.q_proj.weight"))
    assert (q.role, q.reads, q.bnb_quantized) == ("attention", "attention_input", True)


def test_without_a_parameter_list_the_refusal_names_the_extra() -> None:
    with pytest.raises(UnsupportedModelError, match=r"pip install 'tuneplan\[train\]'"):
        estimate(Plan(config=STABLELM, method="qlora", seq_len=128))


def test_a_type_transformers_does_not_know_is_refused_with_its_reason() -> None:
    from trainer.inventory import parameters  # what the subprocess runs, in-process: no second interpreter start

    with pytest.raises(ValueError, match="not one transformers"):
        parameters({"model_type": "no_such_model", "hidden_size": 8})


def test_config_hash_ignores_key_order() -> None:
    assert config_hash({"a": 1, "b": 2}) == config_hash({"b": 2, "a": 1})


LLAMA4 = {
    "model_type": "llama4",
    "text_config": {"model_type": "llama4_text", "hidden_size": 64, "intermediate_size": 64,
                    "intermediate_size_mlp": 128, "num_local_experts": 2, "num_experts_per_tok": 1,
                    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
                    "vocab_size": 256, "interleave_moe_layer_step": 1},
    "vision_config": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
                      "image_size": 56, "patch_size": 14, "vision_output_dim": 64, "projector_input_dim": 64,
                      "projector_output_dim": 64, "pixel_shuffle_ratio": 0.5},
}  # fmt: skip
"""Llama 4 as published (``Llama4ForConditionalGeneration``, model_type ``llama4``), tiny: no hand-written family."""


def test_a_derived_inventorys_unquantized_parameters_are_named_for_what_they_are() -> None:
    """QLoRA of a derived inventory: prepare_model_for_kbit_training upcasts what bitsandbytes leaves alone, and the
    note says what that is. Llama 4's fused 3-D experts (``Llama4TextExperts``) are not nn.Linear: they stay 16-bit
    and are upcast, and the note counts them as such, not as embeddings, lm_head and norms."""
    params = transformers_parameters(LLAMA4)
    assert params is not None
    fused = sum(prod(p["shape"]) for p in params if len(p["shape"]) == 3)
    assert fused == 2 * (2 * 64 * 128 + 2 * 64 * 64)
    plan = Plan(config=LLAMA4, method="qlora", seq_len=128, target_modules=("q_proj", "k_proj", "v_proj", "o_proj"))
    est = estimate(plan, params=params)  # all-linear would take the router, which LoRA cannot wrap (below)
    note = next(n for n in est.to_dict()["notes"] if "prepare_model_for_kbit_training upcasts" in n)
    found = re.search(r"not nn\.Linear[^)]*\) ([\d,]+)", note)
    assert found is not None, note
    other = int(found.group(1).replace(",", ""))
    assert fused <= other  # the experts, and any other parameter that is not a linear layer (the routers)
    assert "embeddings" in note and "lm_head" in note


INTERNVL = {
    "model_type": "internvl",
    "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                      "image_size": [28, 28], "patch_size": [14, 14]},
    "text_config": {"model_type": "qwen2", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                    "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 256},
}  # fmt: skip


@pytest.mark.parametrize(("written_by", "own_lm_head"), [("4.52.0", True), ("5.24.0", False)])
def test_a_derived_inventory_counts_the_lm_head_from_pretrained_loads(
    tmp_path: Path, written_by: str, own_lm_head: bool
) -> None:
    """InternVL's composite config ties by default in transformers 5, its Qwen2 text config does not: a checkpoint
    written by transformers 4 (which tied by the text config's flag and left the composite's out) has its own
    lm_head, and transformers 5's ``from_pretrained`` keeps it untied; the derived inventory counts what loads."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from trainer.inventory import parameters

    auto = transformers.AutoConfig.for_model(**dict(INTERNVL, tie_word_embeddings=not own_lm_head))
    transformers.AutoModelForImageTextToText.from_config(auto).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    saved.pop("tie_word_embeddings", None)  # neither version writes a flag equal to its default
    saved["transformers_version"] = written_by
    (tmp_path / "config.json").write_text(json.dumps(saved))

    loaded = transformers.AutoModelForImageTextToText.from_pretrained(tmp_path, dtype=torch.float32)
    n = sum(p.numel() for p in loaded.parameters())
    assert sum(prod(p["shape"]) for p in parameters(saved)) == n
    lm_head = saved["text_config"]["vocab_size"] * saved["text_config"]["hidden_size"]
    bare = transformers.AutoModelForImageTextToText.from_config(transformers.AutoConfig.for_model(**saved))
    assert sum(p.numel() for p in bare.parameters()) == n - own_lm_head * lm_head  # the config alone ties


def test_a_linear_subclass_that_returns_a_tuple_is_refused_as_a_lora_target_and_left_unquantized() -> None:
    """Llama 4's router is ``Llama4Router(nn.Linear)``, whose forward returns scores and logits: PEFT's all-linear
    wraps it (``isinstance``) and the real step then fails, so the estimate refuses 'all-linear' and says which
    targets run. Named targets run, and the estimate's trainable and quantized parameters are the real QLoRA
    model's: transformers' bitsandbytes conversion keeps the router in 16 bits (``type(module) is nn.Linear``)."""
    torch = pytest.importorskip("torch")
    from estimator import PlanError
    from trainer.build import build

    params = transformers_parameters(LLAMA4)
    assert params is not None
    routers = [p for p in params if p["module"] == "Llama4Router"]
    assert routers and all(p["linear_subclass"] is True and p["returns_tensor"] is False for p in routers)
    assert not any("linear_subclass" in p for p in params if p["module"] == "Linear")

    every = Plan(config=LLAMA4, method="qlora", seq_len=16)
    with pytest.raises(PlanError, match=r"feed_forward\.router' cannot run.*q_proj"):
        estimate(every, params=params)
    model = build(LLAMA4, every, "cpu").model
    ids = torch.randint(0, 256, (1, 16))
    with pytest.raises(AttributeError, match="tuple"):  # the real step fails where the estimate refuses
        model(input_ids=ids, labels=ids)

    named = Plan(config=LLAMA4, method="qlora", seq_len=16, target_modules=("q_proj", "v_proj", "down_proj"))
    model = build(LLAMA4, named, "cpu").model
    model(input_ids=ids, labels=ids).loss.backward()
    quantized = [m for n, m in model.named_modules() if type(m).__name__ == "Linear4bit" and ".base_layer" not in n]
    assert not any("router" in n for n, m in model.named_modules() if type(m).__name__ == "Linear4bit")
    est = estimate(named, params=params).to_dict()["params"]
    assert est["trainable"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert est["quantized"] == sum(m.in_features * m.out_features for m in quantized)


def test_a_linear_subclass_that_returns_a_tensor_is_adapted_as_the_hand_written_inventory_adapts_it() -> None:
    """Falcon's ``FalconLinear(nn.Linear)`` returns a tensor: read from transformers' build, it is a linear layer
    LoRA adapts and bitsandbytes keeps, as the hand-written Falcon inventory has it."""
    from estimator import build_inventory, generic_inventory, parse_config
    from trainer.inventory import parameters

    falcon = {"model_type": "falcon", "hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2,
              "vocab_size": 256, "new_decoder_architecture": True, "num_kv_heads": 2}  # fmt: skip
    params = parameters(falcon)
    subclass = [p for p in params if p["module"] == "FalconLinear"]
    assert subclass and all(p["linear_subclass"] is True and p["returns_tensor"] is True for p in subclass)
    arch = parse_config(falcon)

    def linears(inv: Any) -> set[tuple[str, str]]:
        return {(t.name.format(i=i), t.kind) for t in inv if t.kind.startswith("linear") for i in range(t.layers)}

    assert linears(generic_inventory(arch, params)) == linears(build_inventory(arch))
