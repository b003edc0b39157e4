"""The traced step at a few decoder layers, extended to the model's depth (``trainer.depth``).

The rules are checked on figures made up to break each one; the traces themselves on real fake-tensor runs of
small models, where the extended figures must equal the whole stack's traced figures byte for byte.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

from estimator import Plan, catalog
from trainer import depth

TRAIN = all(importlib.util.find_spec(m) for m in ("torch", "transformers", "peft", "bitsandbytes"))

LLAMA16: dict[str, Any] = {
    "model_type": "llama",
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 16,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 1024,
    "max_position_embeddings": 512,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}


def catalog_config(model: str) -> dict[str, Any]:
    entry = catalog.find_model(model)
    assert entry is not None
    return dict(entry.config)


def refused(config: dict[str, Any], **fields: Any) -> str | None:
    return depth.shortcut_refused(config, Plan(config=config, **fields))


# ------------------------------------------------------------------------------------------ which models


def test_a_plain_decoder_may_be_extended() -> None:
    for model in ("llama-3.1-8b", "qwen2.5-7b", "mixtral-8x7b", "qwen3-30b-a3b", "gpt2-xl", "falcon-7b", "phi-4"):
        assert refused(catalog_config(model)) is None, model


@pytest.mark.parametrize(
    ("model", "why"),
    [
        ("deepseek-v3", "dense and MoE layers mixed"),
        ("smollm3-3b", "no_rope_layers"),
        ("gemma-3-1b", "sliding"),
        ("gemma-2-2b", "sliding window"),
        ("gpt-oss-20b", "sliding"),
        ("qwen2.5-vl-7b-instruct", "not a text decoder"),
        ("llama-3.2-11b-vision-instruct", "not a text decoder"),
    ],
)
def test_layers_that_differ_are_traced_whole(model: str, why: str) -> None:
    reason = refused(catalog_config(model))
    assert reason is not None and why in reason


def test_a_per_layer_list_that_varies_refuses_and_a_constant_one_does_not() -> None:
    assert refused(LLAMA16 | {"layer_types": ["full_attention"] * 16}) is None
    mixed = ["full_attention", "sliding_attention"] * 8
    assert "layer_types" in (refused(LLAMA16 | {"layer_types": mixed}) or "")
    assert depth.uniform_layer_types(mixed) is not None
    assert depth.uniform_layer_types(["full_attention"] * 16) is None
    assert depth.uniform_layer_types(None) is None


def test_shallow_models_objectives_and_images_are_traced_whole() -> None:
    assert "layers" in (refused(LLAMA16 | {"num_hidden_layers": depth.MIN_LAYERS - 1}) or "")
    assert "dpo" in (refused(LLAMA16, objective="dpo", method="lora") or "")


def test_the_reduced_config_cuts_the_depth_and_every_per_layer_list() -> None:
    cfg = LLAMA16 | {"layer_types": ["full_attention"] * 16, "bad_words": [1, 2]}
    out = depth.reduced_config(cfg, 3)
    assert out["num_hidden_layers"] == 3 and out["layer_types"] == ["full_attention"] * 3
    assert out["bad_words"] == [1, 2] and cfg["num_hidden_layers"] == 16
    gpt2 = depth.reduced_config(catalog_config("gpt2"), 2)
    assert gpt2["n_layer"] == 2 and "num_hidden_layers" not in gpt2


# ------------------------------------------------------------------------------------------ the line


def made_up(phases: dict[int, dict[str, int]], ends: dict[int, dict[str, int]]) -> list[dict[str, Any]]:
    """Traced results at DEPTHS with these phase peaks and phase ends (each phase's peak all activations)."""
    return [
        {
            "measured": {
                "peak_allocated": max(phases[d].values()),
                "components": {},
                "phases": phases[d],
                "phase_components": {p: {"activations": v} for p, v in phases[d].items()},
                "peak_phase": None,
            },
            "phase_ends": ends[d],
            "params": {"total": 100 * d, "trainable": 10 * d},
        }
        for d in depth.DEPTHS
    ]


def test_collinear_traces_extend_to_the_depth() -> None:
    phases = {d: {"forward": 1000 + 100 * d, "backward": 1200 + 100 * d, "optimizer": 500 + 40 * d} for d in (2, 3, 4)}
    ends = {d: {"forward": 600 + 100 * d, "backward": 300 + 40 * d, "optimizer": 300 + 40 * d} for d in (2, 3, 4)}
    out = depth.extrapolate(made_up(phases, ends), depth.DEPTHS, 32)
    assert out["measured"]["phases"] == {"forward": 4200, "backward": 4400, "optimizer": 1780}
    assert out["measured"]["peak_allocated"] == 4400 and out["measured"]["peak_phase"] == "backward"
    assert out["measured"]["components"] == {"activations": 4400}
    assert out["params"] == {"total": 3200, "trainable": 320}


def test_a_bend_between_the_traces_is_refused() -> None:
    phases = {d: {"forward": 1000 + 100 * d, "backward": 1200 + 100 * d + (7 if d == 4 else 0)} for d in (2, 3, 4)}
    ends = {d: {"forward": 600 + 100 * d, "backward": 300} for d in (2, 3, 4)}
    with pytest.raises(depth.NotAffine, match="not affine"):
        depth.extrapolate(made_up(phases, ends), depth.DEPTHS, 32)


def test_a_backward_peak_that_a_steeper_moment_could_overtake_is_refused() -> None:
    # The backward's end (gradients piling up) grows by 150 a layer, its peak by 100: past the traced depths a
    # moment late in the backward could become the peak, which no extension of the three traces sees.
    phases = {d: {"forward": 1000 + 100 * d, "backward": 5000 + 100 * d} for d in (2, 3, 4)}
    ends = {d: {"forward": 600 + 100 * d, "backward": 300 + 150 * d} for d in (2, 3, 4)}
    with pytest.raises(depth.NotAffine, match="backward's peak grows slower"):
        depth.extrapolate(made_up(phases, ends), depth.DEPTHS, 32)


def test_a_forward_peak_below_the_forward_end_line_is_refused() -> None:
    phases = {d: {"forward": 9000 + 10 * d, "backward": 9100 + 100 * d} for d in (2, 3, 4)}
    ends = {d: {"forward": 600 + 100 * d, "backward": 300} for d in (2, 3, 4)}
    with pytest.raises(depth.NotAffine, match="forward's peak"):
        depth.extrapolate(made_up(phases, ends), depth.DEPTHS, 32)


# ------------------------------------------------------------------------------------------ real traces


@pytest.mark.train
@pytest.mark.skipif(not TRAIN, reason="needs the train extra")
@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize(
    "fields",
    [
        {"method": "qlora", "seq_len": 64, "device": "cuda"},
        {"method": "lora", "seq_len": 16, "gradient_checkpointing": False, "training_loop": "plain"},
        {"method": "full", "seq_len": 32, "padding": "none", "batch_size": 2, "device": "cuda"},
    ],
    ids=["qlora-gc-cuda", "lora-nogc-plain-short", "full-gc-unpadded"],
)
def test_the_extended_trace_equals_the_whole_stacks(fields: dict[str, Any]) -> None:
    from trainer.traced import traced_run

    plan = Plan(config=LLAMA16, **fields)
    short = traced_run(plan, extrapolate=True)
    whole = traced_run(plan)
    assert short["depth"] == {"layers": 16, "traced": list(depth.DEPTHS), "extrapolated": True, "why": None}
    assert whole["depth"]["traced"] == [16] and not whole["depth"]["extrapolated"]
    assert short["measured"] == whole["measured"]
    assert short["params"] == whole["params"]


@pytest.mark.train
@pytest.mark.skipif(not TRAIN, reason="needs the train extra")
@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_a_stack_whose_gradients_outgrow_its_checkpoints_is_traced_whole() -> None:
    """QLoRA with TRL's chunked loss on short rows: each layer's LoRA gradients outweigh its checkpoint, so the
    backward's end grows faster than its peak and the shortcut is refused."""
    from trainer.traced import traced_run

    result = traced_run(
        Plan(config=LLAMA16, method="qlora", seq_len=64, loss="chunked", device="cuda"), extrapolate=True
    )
    assert result["depth"]["traced"] == [16] and not result["depth"]["extrapolated"]
    assert "backward's peak grows slower" in result["depth"]["why"]


@pytest.mark.train
@pytest.mark.skipif(not TRAIN, reason="needs the train extra")
@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_traces_run_side_by_side_give_the_figures_of_traces_run_in_turn() -> None:
    """``trace_each`` forks a process per trace beyond the first where it has the cores: every figure (params,
    each phase's peak and components, the phase ends) is the one the same traces give one after another here."""
    from trainer.traced import trace_each

    plan = Plan(config=LLAMA16, method="qlora", seq_len=32)
    configs = [depth.reduced_config(LLAMA16, d) for d in depth.DEPTHS]
    timing = ("load_time_s", "state_setup_s", "step_time_s", "step_times_s")

    def figures(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in run.items() if k not in timing} for run in runs]

    in_turn = figures(trace_each(configs, plan, 1, 0, cores=1))
    assert [run["params"]["total"] for run in in_turn] == sorted({run["params"]["total"] for run in in_turn})
    assert figures(trace_each(configs, plan, 1, 0, cores=len(configs))) == in_turn
