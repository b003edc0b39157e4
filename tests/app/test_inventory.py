"""Model types with no hand-written family: transformers' own parameters, read in a subprocess, estimated."""

from __future__ import annotations

from math import prod

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
