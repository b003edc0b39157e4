"""The built-in catalog: loader and search (pure), and every model's parameter count (train-marked)."""

from __future__ import annotations

import dataclasses
import json
from importlib import resources
from typing import Any

import pytest

from estimator import catalog, legacy_config

REQUIRED_MODEL_FIELDS = {"id", "hf_id", "name", "family", "gated", "params", "config"}
REQUIRED_GPU_FIELDS = {
    "id",
    "name",
    "vendor",
    "memory_bytes",
    "usable_bytes",
    "bf16_tflops",
    "bandwidth_gbs",
    "tdp_w",
    "hourly_usd",
}


def _raw(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((resources.files("estimator") / "data" / name).read_text(encoding="utf-8"))
    return data


# ---------------------------------------------------------------- data shape


def test_models_load() -> None:
    ms = catalog.models()
    assert len(ms) >= 34
    assert ms is catalog.models()  # loaded once
    assert len({m.id for m in ms}) == len(ms)
    assert len({m.hf_id.lower() for m in ms}) == len(ms)
    for m in ms:
        assert isinstance(m, catalog.CatalogModel)
        assert m.id == m.id.lower() and " " not in m.id
        assert "/" in m.hf_id
        assert m.params > 0 and isinstance(m.params, int)
        assert isinstance(m.gated, bool)
        assert "model_type" in m.config
        if m.config["model_type"] == "gemma3":
            assert "text_config" in m.config and "vision_config" in m.config


def test_raw_models_fields() -> None:
    for entry in _raw("models.json")["models"]:
        assert REQUIRED_MODEL_FIELDS <= set(entry), entry.get("id")


def test_models_frozen_and_hashable() -> None:
    m = catalog.models()[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.id = "x"  # type: ignore[misc]
    assert len(set(catalog.models())) == len(catalog.models())


def test_coverage() -> None:
    ids = {m.id for m in catalog.models()}
    for must in [
        "llama-2-7b", "llama-2-70b", "llama-3-8b", "llama-3.1-8b", "llama-3.1-405b", "llama-3.2-1b",
        "llama-3.3-70b", "mistral-7b-v0.1", "mistral-7b-v0.3", "mistral-nemo-12b", "mixtral-8x7b",
        "mixtral-8x22b", "qwen2.5-0.5b", "qwen2.5-72b", "qwen3-0.6b", "qwen3-32b", "qwen3-30b-a3b",
        "qwen1.5-moe-a2.7b", "gemma-2-2b", "gemma-2-27b", "gemma-3-1b", "gemma-3-27b", "phi-2",
        "phi-3-mini", "phi-3-medium", "phi-3.5-mini", "phi-4", "smollm2-135m", "smollm2-1.7b",
        "tinyllama-1.1b", "gpt2", "gpt2-xl", "pythia-160m", "pythia-12b", "falcon-7b", "falcon-40b",
        "olmo-2-7b", "olmo-2-13b", "starcoder2-3b", "starcoder2-15b", "smollm3-3b", "gpt-oss-20b", "llava-1.5-7b",
        "deepseek-v3", "glm-4.5", "c4ai-command-r-v01", "qwen3-vl-30b-a3b-instruct", "granite-3.1-1b-a400m-instruct",
        "starcoderbase-7b", "llama-3.2-11b-vision-instruct", "smolvlm-256m-instruct", "olmoe-1b-7b-0125-instruct",
        "llava-v1.6-mistral-7b", "mistral-small-3.2-24b-instruct", "smolvlm2-500m-video-instruct",
    ]:  # fmt: skip
        assert must in ids, must
    types = {m.config["model_type"] for m in catalog.models()}
    assert types >= {
        "llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma2", "gemma3_text",
        "gemma3", "phi", "phi3", "gpt2", "gpt_neox", "falcon", "starcoder2", "olmo2", "smollm3", "gpt_oss", "llava",
        "deepseek_v3", "glm4_moe", "cohere", "qwen3_vl_moe", "granitemoe", "gpt_bigcode", "mllama", "idefics3",
        "olmoe", "llava_next", "mistral3", "smolvlm",
    }  # fmt: skip


def test_gated_flags() -> None:
    for m in catalog.models():
        if m.hf_id.startswith(("meta-llama/", "google/gemma", "mistralai/")):
            assert m.gated, m.id
        if m.hf_id.startswith(("Qwen/", "EleutherAI/", "openai-community/", "HuggingFaceTB/")):
            assert not m.gated, m.id


def test_known_sizes() -> None:
    """Well-known totals (tied embeddings counted once)."""
    known = {
        "llama-2-7b": 6_738_415_616,
        "llama-3.1-8b": 8_030_261_248,
        "llama-3.1-405b": 405_853_388_800,
        "mistral-7b-v0.1": 7_241_732_096,
        "mixtral-8x7b": 46_702_792_704,
        "qwen2.5-0.5b": 494_032_768,
        "gpt2": 124_439_808,
        "llava-1.5-7b": 7_063_427_072,  # its model.safetensors.index.json: total_size 14,126,854,144 bytes of fp16
    }
    for mid, n in known.items():
        m = catalog.find_model(mid)
        assert m is not None and m.params == n, mid


def test_gpus_load() -> None:
    gs = catalog.gpus()
    assert len(gs) >= 22
    assert gs is catalog.gpus()
    assert len({g.id for g in gs}) == len(gs)
    for g in gs:
        assert isinstance(g, catalog.GPU)
        assert 0 < g.usable_bytes <= g.memory_bytes, g.id
        assert g.usable_bytes > 0.9 * g.memory_bytes, g.id
        assert g.vendor in {"nvidia", "amd"}
        assert g.bandwidth_gbs > 0 and g.tdp_w > 0
        assert g.bf16_tflops is None or g.bf16_tflops > 0
        assert g.hourly_usd is None or g.hourly_usd > 0
        assert g.memory_note
    for entry in _raw("gpus.json")["gpus"]:
        assert REQUIRED_GPU_FIELDS <= set(entry), entry.get("id")
    ids = {g.id for g in gs}
    for must in ["rtx-3090", "rtx-4090", "rtx-5090", "t4", "l4", "a10g", "a100-40gb", "a100-80gb",
                 "h100-sxm", "h100-pcie", "h200", "b200", "mi300x"]:  # fmt: skip
        assert must in ids, must


def test_h200_usable_is_measured() -> None:
    g = catalog.find_gpu("h200")
    assert g is not None
    assert g.usable_bytes == 150_109_880_320
    assert g.memory_bytes == 143_771 * 2**20


# ---------------------------------------------------------------- lookup and search


def test_find_model_by_id_and_hf_id_case_insensitive() -> None:
    m = catalog.find_model("llama-3.1-8b")
    assert m is not None and m.hf_id == "meta-llama/Llama-3.1-8B"
    assert catalog.find_model("LLAMA-3.1-8B") is m
    assert catalog.find_model("meta-llama/llama-3.1-8b") is m
    assert catalog.find_model("  Meta-Llama/Llama-3.1-8B ") is m
    assert catalog.find_model("nope/nothing") is None
    assert catalog.find_model("") is None


def test_find_gpu() -> None:
    g = catalog.find_gpu("RTX-4090")
    assert g is not None and g.id == "rtx-4090"
    assert catalog.find_gpu("nvidia geforce rtx 4090") is g
    assert catalog.find_gpu("tpu-v5") is None


def test_search_ranking() -> None:
    # exact id first, then prefix matches in catalog order
    res = catalog.search_models("qwen3-8b")
    assert res[0].id == "qwen3-8b"
    res = catalog.search_models("qwen3")
    prefixed = [m.id for m in catalog.models() if m.id.startswith("qwen3")]
    assert [m.id for m in res[: len(prefixed)]] == prefixed
    # exact family beats prefix/substring
    res = catalog.search_models("gpt2")
    assert res[0].id == "gpt2"
    # substring (hf_id / name)
    res = catalog.search_models("Nemo")
    assert res[0].id == "mistral-nemo-12b"
    res = catalog.search_models("Llama-3.1-8B")
    assert res[0].id == "llama-3.1-8b"
    # hf_id exact
    res = catalog.search_models("Qwen/Qwen2.5-7B")
    assert res[0].id == "qwen2.5-7b"


def test_search_fuzzy_and_limits() -> None:
    res = catalog.search_models("lama-3.1-8")  # substring
    assert res and res[0].id == "llama-3.1-8b"
    res = catalog.search_models("mistrl-7b-v0.3")  # typo: difflib
    assert res and res[0].id == "mistral-7b-v0.3"
    assert len(catalog.search_models("a", limit=3)) == 3
    assert catalog.search_models("qwen", limit=0) == []
    assert [m.id for m in catalog.search_models("", limit=5)] == [m.id for m in catalog.models()[:5]]
    assert catalog.search_models("zzzzqqqq") == []
    ids = [m.id for m in catalog.search_models("llama", limit=100)]
    assert len(ids) == len(set(ids))


def test_close_model_matches() -> None:
    res = catalog.close_model_matches("llama-3.1-8")
    assert res and res[0].id == "llama-3.1-8b"
    assert len(res) <= 5
    res = catalog.close_model_matches("Qwen/Qwen2.5-7B-Instruct", n=3)
    assert res and res[0].id == "qwen2.5-7b-instruct" and len(res) <= 3  # the variant itself is in the catalog
    assert catalog.close_model_matches("") == []
    assert catalog.close_model_matches("xyzzy-plugh") == []


# ---------------------------------------------------------------- instantiated parameter counts


def _build_on_meta(config: dict[str, Any]) -> Any:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from trainer.build import model_class

    with torch.device("meta"):  # the config as the trainer builds it: from_pretrained's model
        auto = transformers.AutoConfig.for_model(**legacy_config(config))
        return model_class(auto).from_config(auto)  # vision-language: the tower is counted


def test_variants_share_their_base_architecture() -> None:
    """An instruct/chat variant is its base's config with the changes it declares (its own config.json's values), so
    its parameters are the base's (built and checked below)."""
    raw = {e["id"]: e for e in _raw("models.json")["models"]}
    variants = [e for e in raw.values() if e.get("variant_of")]
    assert len(variants) >= 30
    for v in variants:
        base = raw[v["variant_of"]]
        assert not base.get("variant_of") and v["params"] == base["params"], v["id"]
        assert v["config"] == base["config"] | v["config_changes"], v["id"]
        assert v["family"] == base["family"] and v["gated"] == base["gated"], v["id"]
        assert v["source"].startswith(f"https://huggingface.co/{v['hf_id']}/"), v["id"]
    for hf_id in ("Qwen/Qwen2.5-7B-Instruct", "meta-llama/Llama-3.1-8B-Instruct", "mistralai/Mistral-7B-Instruct-v0.3",
                  "google/gemma-2-9b-it", "meta-llama/Llama-3.2-1B-Instruct"):  # fmt: skip
        m = catalog.find_model(hf_id)
        assert m is not None and m.variant_of, hf_id


def test_family_matches_suggest_the_variants_of_a_catalog_model() -> None:
    def ids(q: str) -> list[str]:
        return [m.id for m in catalog.family_matches(q)]

    assert ids("Qwen/Qwen2.5-7B-Instruct-1M") == ["qwen2.5-7b-instruct", "qwen2.5-7b"]
    assert ids("unsloth/Llama-3.2-1B-Instruct-bnb-4bit") == ["llama-3.2-1b-instruct", "llama-3.2-1b"]
    assert ids("unsloth/mistral-7b-v0.3-bnb-4bit") == ["mistral-7b-v0.3"]
    assert ids("Qwen/Qwen2.5-Coder-7B-Instruct") == []  # another model that only shares words
    assert ids("") == []


@pytest.mark.train
@pytest.mark.parametrize("entry", [e for e in _raw("models.json")["models"] if not e.get("variant_of")],
                         ids=lambda e: e["id"])  # fmt: skip
def test_params_match_instantiated_model(entry: dict[str, Any]) -> None:
    model = _build_on_meta(entry["config"])
    n = sum(p.numel() for p in model.parameters())
    assert n == entry["params"], f"{entry['id']}: built {n:,}, catalog says {entry['params']:,}"


# ---------------------------------------------------------------- GPUs as people name them


@pytest.mark.parametrize(
    ("text", "gpu"),
    [("RTX 4090", "rtx-4090"), ("4090", "rtx-4090"), ("nvidia geforce rtx 4090", "rtx-4090"), ("rtx_4090", "rtx-4090"),
     ("4070 Ti", "rtx-4070-ti"), ("4070 ti super", "rtx-4070-ti-super"), ("a6000", "rtx-a6000"), ("L40", "l40"),
     ("l40s", "l40s"), ("4060", "rtx-4060"), ("RTX PRO 6000", "rtx-pro-6000"), ("Tesla T4", "t4")],
)  # fmt: skip
def test_gpu_names_are_matched_loosely(text: str, gpu: str) -> None:
    assert catalog.canonical_gpu(text) == gpu


@pytest.mark.parametrize(("text", "ids"), [("A100", ("a100-40gb", "a100-80gb")), ("H100", ("h100-pcie", "h100-sxm")),
                                           ("3060", ("rtx-3060-8gb", "rtx-3060-ti", "rtx-3060-12gb"))])  # fmt: skip
def test_an_ambiguous_gpu_name_lists_the_cards_it_may_mean(text: str, ids: tuple[str, ...]) -> None:
    with pytest.raises(catalog.GpuLookupError, match=f"matches {len(ids)} catalog GPUs") as info:
        catalog.canonical_gpu(text)
    assert info.value.candidates == ids


def test_a_custom_gpu_from_text_or_an_object() -> None:
    assert catalog.canonical_gpu("My card:24GiB") == "My card:25769803776"
    assert catalog.canonical_gpu({"name": "My card", "memory_bytes": 24 << 30}) == "My card:25769803776"
    assert catalog.canonical_gpu("Box: 16 GB") == "Box:16000000000"
    g = catalog.find_gpu("My card:25769803776")
    assert g is not None and g.custom and g.name == "My card" and g.memory_bytes == 24 << 30
    assert g.usable_bytes == g.memory_bytes - catalog.CUSTOM_RESERVE_BYTES
    for bad, message in (
        ("card:12", "between"),
        ("card:lots", "not a memory size"),
        (":24GiB", "1 to 60 characters"),
        ({"name": "x"}, "is an object"),
        ({"name": "x", "memory_bytes": 1 << 31, "arch": 1}, "arch"),
    ):
        with pytest.raises(catalog.GpuLookupError, match=message):
            catalog.canonical_gpu(bad)


def test_new_cards_sit_on_an_architecture_with_its_runtime_constants() -> None:
    archs = catalog.architectures()
    for gid in ("rtx-3060-8gb", "rtx-3080", "rtx-4060", "rtx-4070", "rtx-4070-super", "a40", "l40", "rtx-pro-6000",
                "gh200"):  # fmt: skip
        g = catalog.find_gpu(gid)
        assert g is not None and g.arch in archs and archs[g.arch].source, gid
        assert g.memory_bytes - g.usable_bytes == catalog.CUSTOM_RESERVE_BYTES, gid  # derived, on the safe side
