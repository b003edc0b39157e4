"""The setup a plan runs changes its memory: the training loop, the loss kernel, padding, eager attention on CUDA,
the GPU's runtime constants, transformers' version; and each estimate says how sure it is (its ranges)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from estimator import (
    CalibrationProfile,
    Plan,
    calibration_from_run,
    catalog,
    estimate,
    runtime_for,
)

ROOT = Path(__file__).resolve().parents[2]
H200 = json.loads((ROOT / "bench" / "results" / "gpu_h200.json").read_text())


def _mem(**plan: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"model": "llama-3.1-8b", "lora_dropout": 0.0}
    return estimate(Plan(**(base | plan))).to_dict()["memory"]


def test_a_plain_loop_keeps_one_logits_block_through_every_phase() -> None:
    for method, per in (("lora", 2), ("qlora", 4)):
        trainer, plain = _mem(method=method), _mem(method=method, training_loop="plain")
        block = per * 2048 * 128256
        assert {k: plain["phases"][k] - trainer["phases"][k] for k in trainer["phases"]} == dict.fromkeys(
            trainer["phases"], block
        )


def test_a_chunked_loss_never_holds_the_logits_whole() -> None:
    standard, chunked = _mem(method="qlora"), _mem(method="qlora", loss="chunked")
    loss = "loss_backward"
    assert chunked["phases"][loss] < standard["phases"][loss] - 2 * 2**30  # 8B at 2k tokens: ~2.7 GiB less
    names = {t["name"] for t in chunked["terms"] if t["component"] == "logits"}
    assert "chunk_buffer" in names and "log_softmax" not in names
    buffer = next(t for t in chunked["terms"] if t["name"] == "chunk_buffer")["bytes"]
    assert buffer == 2047 * 32768 * 4  # min(N, 4096) x 32768 in the fp32 stream


def test_padding_costs_the_mask_and_the_repeated_kv() -> None:
    free = _mem(method="lora", batch_size=2, padding="none", gradient_checkpointing=False, device="cpu")
    padded = _mem(method="lora", batch_size=2, padding="padded", gradient_checkpointing=False, device="cpu")
    s, L, h_kv = 2048, 32, 8 * 128
    per_layer = 2 * 2 * s * s + 2 * 2 * (2 * s) * (4096 - h_kv)  # CPU: bf16 mask copy + K/V at 32 heads, per layer
    assert padded["phases"]["loss_backward"] - free["phases"]["loss_backward"] == L * per_layer


def test_cudas_softmax_backward_holds_one_more_fp32_attention_block() -> None:
    """``softmax_backward_cuda_out`` makes ``tmp = grad * output`` (fp32: eager's softmax and the math path run in
    fp32) inside the op; fp16 eager's ``half_to_float`` softmax keeps its input's gradient in fp16, 2 B less."""
    block = 32 * 4096 * 4096  # b·a·s² at batch 1
    for kw, per in (
        ({"attn_implementation": "eager"}, 4),
        ({"attn_implementation": "eager", "dtype": "float16"}, 2),
        ({"sdpa_backend": "math"}, 4),
    ):
        plan = {"method": "lora", "seq_len": 4096} | kw
        cpu, cuda = _mem(device="cpu", **plan), _mem(**plan)
        assert abs(cuda["phases"]["backward"] - cpu["phases"]["backward"] - per * block) < 2**20, kw


def test_the_in_op_block_is_named_only_where_the_attentions_backward_sets_the_peak() -> None:
    kw: dict[str, Any] = {
        "model": "llama-3.2-1b",
        "method": "qlora",
        "batch_size": 2,
        "seq_len": 2048,
        "padding": "none",
    }
    chunked = estimate(Plan(**kw, loss="chunked", lora_dropout=0.0))
    assert chunked.memory.peak_phase == "backward" and chunked.memory.in_op_block == 4 * 2 * 32 * 2048 * 2048
    standard = estimate(Plan(**kw, lora_dropout=0.0))
    assert standard.memory.peak_phase == "loss_backward" and standard.memory.in_op_block == 0
    cpu = estimate(Plan(**kw, loss="chunked", device="cpu"))
    assert cpu.memory.in_op_block == 0


def test_the_memory_efficient_kernel_keeps_a_padded_mask_per_layer() -> None:
    """Padded, no checkpointing: each of the 16 layers keeps SDPA's converted mask, as cuDNN's kernel does, its rows
    padded to a multiple of 8 for the memory-efficient kernel (``preprocess_mask``: ``pad_bias<8>``)."""
    for s, width in ((2048, 2048), (2044, 2048)):
        kw = {"model": "llama-3.2-1b", "method": "lora", "batch_size": 2, "seq_len": s, "padding": "padded",
              "gradient_checkpointing": False, "lora_dropout": 0.0}  # fmt: skip
        efficient, cudnn = _mem(sdpa_backend="efficient", **kw), _mem(sdpa_backend="cudnn", **kw)
        assert efficient["attention"]["backend"] == "efficient" and cudnn["attention"]["backend"] == "cudnn"
        assert efficient["phases"]["forward"] - cudnn["phases"]["forward"] == 16 * 2 * 2 * s * (width - s), s


def test_ranges_hold_the_point_and_the_fit_uses_the_high_edge() -> None:
    for plan in ({"method": "qlora"}, {"method": "lora", "gpu": "rtx-4090"}, {"method": "full", "device": "cpu"}):
        est = estimate(Plan(model="llama-3.2-1b", **plan))  # type: ignore[arg-type]
        m = est.to_dict()["memory"]
        for tier in ("peak_allocated", "peak_reserved", "total"):
            low, high = m["range"][tier]
            assert low <= m[tier] <= high
        assert est.memory.fit_bytes == m["range"]["total"][1]
    fit = estimate(Plan(model="llama-3.1-8b", gpu="rtx-4090")).to_dict()["fit"]
    usable = catalog.find_gpu("rtx-4090").usable_bytes  # type: ignore[union-attr]
    assert fit["headroom_bytes"] == usable - _mem(gpu="rtx-4090", lora_dropout=0.05)["range"]["total"][1]


def test_each_architecture_has_its_runtime_constants_with_a_source() -> None:
    for g in catalog.gpus():
        arch = catalog.architecture(g)
        assert arch.source and arch.cublas_workspace_bytes > 0 and arch.cuda_context_bytes > 0
    h200, ada = runtime_for("h200"), runtime_for("rtx-4090")
    assert h200.status == "measured" and ada.status == "uncalibrated"
    assert h200.cublas_workspace_bytes == 64 * 2**20  # 2 x 32 MiB on sm90, measured on the H200
    assert ada.cublas_workspace_bytes == 2 * (8 * 2**20 + 128 * 1024)  # 2 x ':4096:2:16:8' before Hopper
    h, a = _mem(gpu="h200"), _mem(gpu="rtx-4090")
    assert h["runtime"]["status"] == "measured" and a["runtime"]["status"] == "uncalibrated"
    width = {k: m["range"]["total"][1] - m["range"]["total"][0] for k, m in (("h", h), ("a", a))}
    assert width["a"] > width["h"]  # an uncalibrated card is less sure
    assert any("uncalibrated" in n for n in a["notes"])


def _h200_case(name: str) -> dict[str, Any]:
    return next(c for c in H200["cases"] if c["name"] == name)["result"]


def test_a_cuda_run_calibrates_its_card() -> None:
    result = _h200_case("llama-3.1-8b/qlora/gc/s2048")
    m = result["measured"]
    profile = calibration_from_run(result, "job42", "2026-11-28T20:53:30Z", 4 * 2048 * 128256)
    assert profile is not None and profile.gpu == "h200" and profile.driver == "580.159.04"
    assert profile.cuda_context_bytes == m["context"]
    assert profile.cuda_runtime_bytes == m["driver_used"] - m["peak_reserved"] - m["context"]
    assert profile.cublas_workspace_bytes == m["peak_allocated"] - m["tracked_peak"]
    assert CalibrationProfile.from_dict(profile.to_dict()) == profile
    assert calibration_from_run({**result, "device": "cpu"}, "x", "t", 1) is None
    assert calibration_from_run({**result, "oom": True}, "x", "t", 1) is None


def test_a_calibration_is_used_for_its_gpu_only_and_says_so() -> None:
    result = _h200_case("llama-3.1-8b/qlora/gc/s2048")
    profile = calibration_from_run(result, "job42", "2026-11-28T20:53:30Z", 4 * 2048 * 128256)
    plan = Plan(model="llama-3.1-8b", gpu="h200", lora_dropout=0.05)
    cal = estimate(plan, calibration=profile).to_dict()["memory"]
    assert cal["runtime"]["status"] == "calibrated" and "calibrated from run job42 on 2026-11-28" in " ".join(
        cal["notes"]
    )
    # the run measured this very plan: calibrated, the total is the driver's figure within 1 %
    assert abs(cal["total"] - result["measured"]["driver_used"]) <= 0.01 * result["measured"]["driver_used"]
    off = estimate(plan.replace(calibration="none"), calibration=profile).to_dict()["memory"]
    other = estimate(plan.replace(gpu="a100-80gb"), calibration=profile).to_dict()["memory"]
    assert off["runtime"]["status"] == "measured" and other["runtime"]["status"] == "uncalibrated"


@pytest.mark.parametrize("version,quantized", [("5.x", False), ("4.x", True)])
def test_transformers_version_decides_whether_moe_experts_are_quantized(version: str, quantized: bool) -> None:
    plan = Plan(model="mixtral-8x7b", transformers_version=version, lora_dropout=0.0)  # type: ignore[arg-type]
    est = estimate(plan).to_dict()
    weights = est["memory"]["components"]["weights"]
    assert (weights < 30 * 2**30) is quantized  # 4.x: ~23 GiB of 4-bit experts; 5.x: ~170 GiB of fp32 experts
    loud = [n for n in est["notes"] if "does NOT quantize" in n]
    assert bool(loud) is not quantized
    assert not any("(embeddings, lm_head, norms)" in n and "45," in n for n in est["notes"])
