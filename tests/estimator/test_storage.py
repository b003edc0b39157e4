"""Disk sizes: the rule of thumb, and the exact storage breakdown."""

from __future__ import annotations

import json
from pathlib import Path

from estimator import (
    WHY_EXACT_DIFFERS,
    AdapterPlan,
    Inventory,
    Plan,
    RuleOfThumb,
    adapter_plan,
    build_inventory,
    catalog,
    estimate,
    parse_config,
    published_bytes,
    storage,
)

CONFIG = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "configs" / "llama.json").read_text())
KEYS = {"download", "base_fp32", "base_16bit", "base_quantized", "adapter", "adapter_fp32", "adapter_bf16",
        "optimizer_state", "checkpoint", "merged"}  # fmt: skip


def test_rule_of_thumb_numbers() -> None:
    r = RuleOfThumb(10_000_000_000, 0.01)
    assert (r.fp16, r.int4, r.adapter, r.qlora_total) == (20_000_000_000, 5_000_000_000, 200_000_000, 5_200_000_000)
    assert r.to_dict() == {"params": 10_000_000_000, "trainable_fraction": 0.01, "fp16": 20_000_000_000,
                           "int4": 5_000_000_000, "adapter": 200_000_000, "qlora_total": 5_200_000_000}  # fmt: skip


def _storage(**kw: object) -> dict[str, object]:
    plan = Plan(config=CONFIG, **kw)  # type: ignore[arg-type]
    inv = build_inventory(parse_config(CONFIG))
    return storage(inv, adapter_plan(inv, plan), plan)


def test_keys_present_and_integers() -> None:
    for method in ("full", "lora", "qlora"):
        s = _storage(method=method)
        assert KEYS <= set(s)
        for k in KEYS:
            value = s[k]
            assert isinstance(value, int) and not isinstance(value, bool) and value >= 0, (method, k)
        assert s["why_exact_differs"] == list(WHY_EXACT_DIFFERS)
        assert abs(s["quantized_bits_per_weight"] - 4.127) < 1e-3  # type: ignore[operator]


def test_exact_sizes_by_hand() -> None:
    inv = build_inventory(parse_config(CONFIG))
    P = inv.total
    s = _storage(method="qlora")
    ap = adapter_plan(inv, Plan(config=CONFIG))
    assert s["download"] == s["base_16bit"] == s["merged"] == 2 * P and s["base_fp32"] == 4 * P
    assert s["download_format"] == "16-bit"
    assert s["adapter"] == s["adapter_fp32"] == 4 * ap.lora_params and s["adapter_bf16"] == 2 * ap.lora_params
    assert s["optimizer_state"] == 8 * ap.trainable
    assert s["checkpoint"] == 4 * ap.lora_params + 8 * ap.trainable
    # quantized copy: 4-bit linears (with quant state), everything else 16-bit
    from estimator import four_bit_bytes

    q = sum((four_bit_bytes(t.numel, True) if t.bnb_quantized else 2 * t.numel) * t.layers for t in inv)
    assert s["base_quantized"] == q < s["base_16bit"]
    full = _storage(method="full")
    assert full["adapter"] == 0 and full["checkpoint"] == 2 * P + 4 * P  # bf16 weights + AdamW in bf16 (2 × 2 B)
    mixed = _storage(method="full", mixed_precision=True)
    assert mixed["checkpoint"] == 4 * P + 8 * P
    eight = _storage(method="lora", optimizer="adamw_8bit")
    t = ap.trainable
    assert eight["optimizer_state"] == 2 * t + 8 * -(-t // 256)
    assert _storage(method="lora", optimizer="sgd")["optimizer_state"] == 0
    rot = s["rule_of_thumb"]
    assert isinstance(rot, dict) and rot["params"] == P and rot["fp16"] == 2 * P


def test_an_mxfp4_checkpoint_downloads_its_experts_at_4_25_bits() -> None:
    """gpt-oss's experts as published: per row of 32 inputs, 16 bytes of E2M1 blocks and one E8M0 scale byte; the
    rest bf16. gpt-oss-20b's published model.safetensors.index.json gives total_size 13,761,264,768."""
    s = estimate(Plan(model="gpt-oss-20b")).to_dict()["storage"]
    assert s["download_format"] == "mxfp4" and s["download"] == 13_761_264_768
    entry = catalog.find_model("gpt-oss-20b")
    assert entry is not None
    inv = build_inventory(parse_config(entry.config))
    experts = sum(t.total for t in inv if t.role == "expert" and not t.is_bias)
    assert s["download"] == 2 * (inv.total - experts) + experts * 17 // 32
    assert s["base_16bit"] == 2 * inv.total  # as loaded for training: the experts dequantized to bf16


def test_an_fp8_checkpoint_downloads_its_linears_in_one_byte_with_a_scale_per_block() -> None:
    """DeepSeek-V3's block-wise fp8: each decoder linear (experts too) one byte per weight and an fp32 scale per
    weight_block_size block; embeddings, lm_head, norms and the router bf16."""
    cfg = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "configs" / "deepseek_v3.json").read_text())
    plain = storage(*_inv_plan(cfg))
    cfg["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3", "weight_block_size": [64, 64]}
    inv, ap, plan = _inv_plan(cfg)
    s = storage(inv, ap, plan)
    assert plain["download"] == plain["base_16bit"] and s["download_format"] == "fp8"
    expected = 0
    for t in inv:
        fp8 = not t.is_bias and t.role in ("attention", "mlp", "shared_expert", "expert") and t.kind != "norm"
        if not fp8:
            expected += 2 * t.total
            continue
        e, rows, cols = (1, t.out_features, t.in_features) if len(t.shape) == 2 else t.shape
        halves = 2 if t.name.endswith("gate_up_proj") else 1
        expected += t.layers * e * (rows * cols + 4 * halves * -(-(rows // halves) // 64) * -(-cols // 64))
    assert s["download"] == expected
    assert plain["base_16bit"] == 2 * inv.total > expected


def _inv_plan(cfg: dict[str, object]) -> tuple[Inventory, AdapterPlan, Plan]:
    inv = build_inventory(parse_config(cfg))
    plan = Plan(config=cfg, lora_dropout=0.0)
    return inv, adapter_plan(inv, plan), plan


def test_a_float32_checkpoint_downloads_four_bytes_a_parameter() -> None:
    """A config whose ``torch_dtype`` (transformers 5: ``dtype``) is float32 is published in fp32 (StarCoderBase 7B);
    16-bit ones and configs without the field download at 2 bytes a parameter."""
    for key in ("torch_dtype", "dtype"):
        cfg = dict(CONFIG, **{key: "float32"})
        inv, ap, plan = _inv_plan(cfg)
        s = storage(inv, ap, plan)
        assert (s["download"], s["download_format"]) == (4 * inv.total, "float32")
        assert s["base_16bit"] == 2 * inv.total
    inv, ap, plan = _inv_plan(dict(CONFIG, torch_dtype="bfloat16"))
    assert storage(inv, ap, plan)["download"] == 2 * inv.total


def test_the_published_files_headers_give_the_download_where_the_config_cannot() -> None:
    """GPT-2's config names no dtype, and its files are fp32 with a causal-mask buffer per layer saved beside the
    weights (``h.N.attn.bias``, 1 × 1 × 1024 × 1024): the files' headers count 137,022,720 F32 elements,
    548,090,880 bytes. The config alone gives 16-bit, 248,879,616."""
    entry = catalog.find_model("gpt2")
    assert entry is not None and "torch_dtype" not in entry.config and "dtype" not in entry.config
    inv, ap, plan = _inv_plan(entry.config)
    files = {"F32": inv.total + 12 * 1024 * 1024}
    assert files["F32"] == 137_022_720
    s = storage(inv, ap, plan, files)
    assert (s["download"], s["download_format"]) == (548_090_880, "as published: F32")
    assert storage(inv, ap, plan)["download"] == 2 * inv.total  # the config alone
    assert estimate(plan, files=files).storage["download"] == 548_090_880

    def dtype_note(est: object) -> list[str]:
        return [n for n in est.to_dict()["notes"] if "names no dtype" in n]  # type: ignore[attr-defined]

    assert len(dtype_note(estimate(plan))) == 1  # the config alone: said to be a guess
    assert dtype_note(estimate(plan, files=files)) == []  # the files' own dtypes
    assert dtype_note(estimate(Plan(model="llama-3.1-8b"))) == []  # bfloat16, as its config says
    mixed = {"BF16": 1000, "F32": 10, "U8": 3, "F8_E4M3": 7}
    assert published_bytes(mixed) == 2000 + 40 + 3 + 7
    assert storage(inv, ap, plan, mixed)["download_format"] == "as published: BF16, F32, F8_E4M3, U8"
    for odd in ({"F4X": 10}, {"F32": -1}, {"F32": 1.5}, {"F32": True}, {}):
        assert published_bytes(odd) is None  # type: ignore[arg-type]
        assert storage(inv, ap, plan, odd)["download"] == 2 * inv.total, odd  # type: ignore[arg-type]
