"""The tiny fixture configs (tests/fixtures/configs) build with transformers, on meta and on CPU."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from estimator import legacy_config

pytestmark = pytest.mark.train

CONFIG_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "configs"
FIXTURES = sorted(CONFIG_DIR.glob("*.json"))
EXPECTED = {
    "llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma", "gemma2",
    "gemma3_text", "gemma3", "phi", "phi3", "gpt2", "gpt_neox", "falcon", "falcon_rw", "starcoder2", "olmo2",
    "smollm3", "granite", "cohere", "cohere2", "olmo3", "gpt_bigcode", "olmoe", "granitemoe", "glm4_moe",
    "deepseek_v2", "deepseek_v3", "gpt_oss", "llama4_text", "RefinedWebModel", "RefinedWeb", "qwen2_vl", "qwen2_5_vl",
    "llava", "llava_next", "idefics3", "smolvlm", "mistral3", "mllama", "qwen3_vl",
    "qwen3_vl_moe",
}  # fmt: skip


def _build(config: dict[str, Any]) -> Any:
    transformers = pytest.importorskip("transformers")
    from trainer.build import model_class

    # a legacy Falcon config is read as transformers' falcon (its conversion's field names), as the estimator reads it
    auto = transformers.AutoConfig.for_model(**legacy_config(config))
    return model_class(auto).from_config(auto)  # vision-language: the image-text-to-text model


def test_every_model_type_has_a_fixture() -> None:
    assert {p.stem for p in FIXTURES} == EXPECTED


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_fixture_builds(path: Path) -> None:
    torch = pytest.importorskip("torch")
    config = json.loads(path.read_text())
    assert config["model_type"] == path.stem.removesuffix("_rw")
    vocab = config.get("text_config", config)["vocab_size"]
    for key in ("pad_token_id", "bos_token_id", "eos_token_id"):
        assert 0 <= config[key] < vocab

    with torch.device("meta"):
        meta = _build(config)
    n_meta = sum(p.numel() for p in meta.parameters())

    start = time.perf_counter()
    model = _build(config).float()
    assert time.perf_counter() - start < 1.0
    assert sum(p.numel() for p in model.parameters()) == n_meta
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in model.parameters())
    # bitsandbytes CPU kernels want multiples of 64; the only exceptions are MoE router outputs (experts)
    for name, p in model.named_parameters():
        extra_rows = config["model_type"] == "mllama" and "embed_tokens" in name  # vocab + 8 rows, not quantized
        if p.ndim in (2, 3) and "vision" not in name and not extra_rows:
            assert all(d % 64 == 0 or d <= 4 for d in p.shape), (name, tuple(p.shape))

    model.eval()
    with torch.no_grad():
        ids = torch.randint(3, 1000, (1, 16))
        logits = model(input_ids=ids).logits
    assert logits.shape == (1, 16, vocab)
