"""bitsandbytes byte sizes against the tensors bitsandbytes creates for a real (tiny) model on CPU."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from estimator import (
    Plan,
    alloc,
    bits_per_weight,
    build_inventory,
    four_bit_bytes,
    four_bit_parts,
    int8_bytes,
    int8_parts,
    parse_config,
)

CONFIG = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "configs" / "llama.json").read_text())


def test_four_bit_parts_by_hand() -> None:
    assert four_bit_parts(128 * 256, False) == (16384, 4 * 512, 64)
    assert four_bit_parts(128 * 256, True) == (16384, 512, 4 * 2, 4, 64)
    assert four_bit_parts(65, True) == (33, 2, 4, 4, 64)  # partial blocks round up
    assert four_bit_bytes(128 * 256, True) == sum(four_bit_parts(128 * 256, True))
    assert four_bit_bytes(128 * 256, True, cuda=True) == 16384 + 512 + 512 + 512 + 512
    assert int8_parts(64, 128) == (8192, 256)
    assert int8_bytes(64, 128, cuda=True) == 8192 + 512
    assert alloc(0, True) == 0 and alloc(1, True) == 512 and alloc(513, False) == 513


def test_bits_per_weight() -> None:
    assert bits_per_weight("nf4", True) == pytest.approx(4.127, abs=5e-4)
    assert bits_per_weight("fp4", False) == 4.5
    assert bits_per_weight("int8", True) == 8.0


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("bitsandbytes")
    transformers = pytest.importorskip("transformers")
    path = tmp_path_factory.mktemp("llama")
    transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(**CONFIG)).save_pretrained(path)
    return path


def _load(path: Path, **bnb_kwargs: Any) -> Any:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    q = transformers.BitsAndBytesConfig(bnb_4bit_compute_dtype=torch.bfloat16, **bnb_kwargs)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        path, quantization_config=q, dtype=torch.bfloat16, device_map="cpu"
    )
    return peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


def _nbytes(t: Any) -> int:
    return int(t.numel() * t.element_size())


@pytest.mark.train
@pytest.mark.parametrize(("quant_type", "double_quant"), [("nf4", True), ("nf4", False), ("fp4", True), ("fp4", False)])
def test_four_bit_matches_bitsandbytes(checkpoint: Path, quant_type: str, double_quant: bool) -> None:
    bnb = pytest.importorskip("bitsandbytes")
    torch = pytest.importorskip("torch")
    from estimator import weight_bytes

    model = _load(checkpoint, load_in_4bit=True, bnb_4bit_quant_type=quant_type, bnb_4bit_use_double_quant=double_quant)
    linears = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(linears) == 2 * 7  # every decoder linear, not lm_head
    total = 0
    for name, p in model.named_parameters():
        if isinstance(p, bnb.nn.Params4bit):
            qs = p.quant_state
            parts = [_nbytes(p), _nbytes(qs.absmax)]
            if double_quant:
                assert qs.nested
                parts += [_nbytes(qs.state2.absmax), _nbytes(qs.offset)]
            parts.append(_nbytes(qs.code))
            numel = qs.shape.numel()
            assert tuple(parts) == four_bit_parts(numel, double_quant), name
            assert sum(parts) == four_bit_bytes(numel, double_quant)
            total += sum(parts)
        else:
            assert p.dtype == torch.float32, name  # upcast by prepare_model_for_kbit_training
            total += _nbytes(p)
    inv = build_inventory(parse_config(CONFIG))
    plan = Plan.from_dict({"config": CONFIG, "method": "qlora", "quant_type": quant_type, "double_quant": double_quant})
    assert weight_bytes(inv, plan, cuda=False) == total


@pytest.mark.train
def test_int8_matches_bitsandbytes(checkpoint: Path) -> None:
    """LLM.int8 loads on CPU here: int8 weights plus an fp32 SCB per output row."""
    bnb = pytest.importorskip("bitsandbytes")
    torch = pytest.importorskip("torch")
    from estimator import weight_bytes

    model = _load(checkpoint, load_in_8bit=True)
    total = 0
    seen = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear8bitLt):
            w = module.weight
            assert w.dtype == torch.int8 and w.SCB.dtype == torch.float32
            assert (_nbytes(w), _nbytes(w.SCB)) == int8_parts(module.out_features, module.in_features)
            seen += 1
    assert seen == 2 * 7
    for _, p in model.named_parameters():
        total += _nbytes(p) + (_nbytes(p.SCB) if getattr(p, "SCB", None) is not None else 0)
    inv = build_inventory(parse_config(CONFIG))
    assert weight_bytes(inv, Plan(config=CONFIG, method="qlora", quant_type="int8"), cuda=False) == total
