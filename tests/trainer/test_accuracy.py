"""The accuracy suite: the analytic estimate against real CPU training runs and traced runs at real sizes.

Tolerances (trainer/accuracy.py): analytic peak within 3 % of the measured live-tensor peak in every case; every
component within 5 % or 1 MiB; traced peak equal to the real CPU peak within 0.1 % on the tiny configs.
Regenerate docs/accuracy.md with ``python -m bench.accuracy``.
"""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

from estimator import LEGACY_MODEL_TYPES, SUPPORTED_MODEL_TYPES
from trainer.accuracy import (
    BENCH_ONLY_REAL,
    BENCH_ONLY_TRACED,
    CPU_CASES,
    PEAK_TOLERANCE,
    TRACED_VS_REAL,
    Case,
    check_case,
    traced_cases,
)

pytestmark = [pytest.mark.train, pytest.mark.slow]


def _assert_within(report: dict) -> None:
    cmp = report["comparison"]
    peak = cmp["peak"]
    assert peak["ok"], (
        f"{report['id']}: peak off by {peak['error']:+.2%} (estimated {peak['estimated']:,}, "
        f"measured {peak['measured']:,}; tolerance {PEAK_TOLERANCE:.0%})"
    )
    bad = {k: v for k, v in cmp["components"].items() if not v["ok"]}
    assert not bad, f"{report['id']}: components out of tolerance: {bad}"


@pytest.mark.parametrize("case", [c for c in CPU_CASES if c.id not in BENCH_ONLY_REAL], ids=lambda c: c.id)
def test_estimate_matches_real_cpu_run(case: Case) -> None:
    _assert_within(check_case(case, "real"))


def test_every_modelled_model_type_has_a_real_run_in_the_suite() -> None:
    """Each model type the estimator reads (legacy Falcon spellings included) is held to a real CPU step by the
    default suite, not only by ``python -m bench.accuracy``."""
    run = {c.config["model_type"] for c in CPU_CASES if c.id not in BENCH_ONLY_REAL}
    missing = (set(SUPPORTED_MODEL_TYPES) | set(LEGACY_MODEL_TYPES)) - run
    assert not missing, f"model types with no real CPU case in the suite: {sorted(missing)}"


def test_grid_covers_the_required_dimensions() -> None:
    types = {c.config["model_type"] for c in CPU_CASES}
    assert {"llama", "qwen2", "mistral", "gemma2", "phi3", "gpt2", "mixtral"} <= types
    plans = [c.make_plan() for c in CPU_CASES]
    assert {p.method for p in plans} == {"full", "lora", "qlora"}
    assert {p.gradient_checkpointing for p in plans} == {True, False}
    assert {p.attn_implementation for p in plans} >= {"eager", "sdpa"}
    assert any(p.lora_dropout > 0 for p in plans) and any(p.lora_dropout == 0 for p in plans)
    assert len({(p.batch_size, p.seq_len) for p in plans}) >= 3
    assert len(CPU_CASES) >= 24
    assert any(c.config.get("tie_word_embeddings") and c.config["model_type"] == "qwen2" for c in CPU_CASES)
    assert {p.padding for p in plans} == {"none", "padded", "packed"}
    assert {p.training_loop for p in plans} == {"trainer", "plain"}
    assert {p.loss for p in plans} == {"standard", "chunked"}
    assert {p.sdpa_backend for p in plans} >= {"auto", "math"}


@pytest.mark.parametrize("case", [c for c in traced_cases() if c.id not in BENCH_ONLY_TRACED], ids=lambda c: c.id)
def test_estimate_matches_traced_run_at_real_size(case: Case) -> None:
    _assert_within(check_case(case, "traced"))


TRACED_VS_REAL_CASES = [c for c in CPU_CASES if c.id in (
    "llama-qlora-gc", "llama-lora-nogc", "llama-full-gc", "qwen2-qlora-gc", "gpt2-lora-nogc", "mixtral-lora-nogc",
    "phi3-qlora-gc", "qwen2-vl-lora-gc-448", "qwen2-vl-lora-gc-video-3x224", "llama-reward-qlora-gc",
    "qwen3-vl-lora-gc-448", "qwen3-vl-moe-qlora-gc-2img", "gemma3-qlora-gc-2img", "idefics3-lora-gc-square",
    "smolvlm-qlora-gc-2img", "mistral3-qlora-gc-2img", "llava-lora-gc-224", "mllama-qlora-gc-2img",
    "llava-next-full-nogc-2img",
)]  # fmt: skip
"""Text models of each kind, and every vision-language family: the entries of a batch the model reads values from
stay real in the trace (``trainer.traced.real_inputs``); one missed would shape the traced step from a stood-in 1."""


@pytest.mark.parametrize("case", TRACED_VS_REAL_CASES, ids=lambda c: c.id)
def test_traced_equals_real_on_tiny_configs(case: Case) -> None:
    real = check_case(case, "real")["result"]["measured"]["peak_allocated"]
    traced = check_case(case, "traced")["result"]["measured"]["peak_allocated"]
    assert abs(traced - real) <= TRACED_VS_REAL * real, f"traced {traced:,} vs real {real:,}"


@pytest.mark.parametrize("case", [c for c in CPU_CASES if c.id == "llama-grpo-lora-gc"], ids=lambda c: c.id)
def test_traced_grpo_step_matches_estimate_on_tiny_config(case: Case) -> None:
    """GRPO traced: generation under fake tensors (the decoding loop stopped at max_completion_length, the logged
    values stood in), then TRL's loss; held to the estimate that the real CPU run of the same case holds (the real
    GRPO case above). The real-size GRPO trace runs in ``python -m bench.accuracy`` (about a minute)."""
    _assert_within(check_case(case, "traced"))


def test_grpo_generation_phase_is_held_from_above() -> None:
    """GRPO's generation (``trainer.objectives.grpo`` times it as a phase of its own, generating with a KV cache as a
    loaded checkpoint does): the estimate's generation phase is at or above the measured one, by at most 5 %."""
    case = next(c for c in CPU_CASES if c.id == "llama-grpo-lora-gc")
    report = check_case(case, "real")
    measured = report["result"]["measured"]["phases"]["generation"]
    measured = measured["total"] if isinstance(measured, dict) else measured
    from estimator import estimate

    estimated = estimate(case.make_plan()).memory.phases["generation"]
    assert measured <= estimated <= 1.05 * measured, (estimated, measured)
