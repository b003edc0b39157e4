"""The inventory against the models transformers builds: totals, and every parameter's name and shape."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from estimator import (
    SIZE_FIELDS,
    ConfigError,
    Inventory,
    UnsupportedModelError,
    build_inventory,
    catalog,
    legacy_config,
    parse_config,
)

pytestmark = pytest.mark.train

CONFIG_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "configs"
FIXTURES = sorted(CONFIG_DIR.glob("*.json"))
PUBLISHED = sorted((CONFIG_DIR.parent / "published").glob("*.json"))  # real configs: {catalog_id, source, config}


def _fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((CONFIG_DIR / f"{name}.json").read_text())
    return data


def _build_meta(config: dict[str, Any]) -> Any:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from trainer.build import model_class

    with torch.device("meta"):
        auto = transformers.AutoConfig.for_model(**legacy_config(config))
        return model_class(auto).from_config(auto)  # a vision-language model's tower included


def _expand(inv: Inventory) -> dict[str, tuple[int, ...]]:
    """{name: shape} with ``{i}`` expanded: MoE tensors over ``moe_layers``, dense MLP tensors over the others."""
    arch = inv.arch
    everywhere = list(range(arch.num_hidden_layers))
    dense = [i for i in everywhere if i not in arch.moe_layers]
    cross = list(arch.cross_attention_layers)  # Mllama's cross-attention layers
    self_attention = [i for i in everywhere if i not in cross]
    out: dict[str, tuple[int, ...]] = {}
    for t in inv:
        if "{i}" not in t.name:
            assert t.layers == 1, t.name
            out[t.name] = t.shape
            continue
        if t.role in ("expert", "router", "shared_expert"):
            layers = list(arch.moe_layers)
        elif t.role == "mlp":
            layers = dense
        elif t.role == "vision":  # the vision tower's blocks
            layers = list(range(t.layers))
        elif ".cross_attn" in t.name or "cross_attn_" in t.name:
            layers = cross
        elif ".self_attn." in t.name:
            layers = self_attention
        else:
            layers = everywhere
        assert len(layers) == t.layers, t.name
        for i in layers:
            name = t.name.format(i=i)
            assert name not in out, name
            out[name] = t.shape
    return out


def _check_exact(config: dict[str, Any]) -> Inventory:
    inv = build_inventory(parse_config(config))
    model = _build_meta(config)
    assert inv.total == sum(p.numel() for p in model.parameters())
    assert _expand(inv) == {n: tuple(p.shape) for n, p in model.named_parameters()}
    return inv


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_fixture_names_shapes_and_total(path: Path) -> None:
    _check_exact(json.loads(path.read_text()))


@pytest.mark.parametrize("entry", catalog.models(), ids=lambda m: m.id)
def test_catalog_model_total(entry: catalog.CatalogModel) -> None:
    model = _build_meta(entry.config)
    n = sum(p.numel() for p in model.parameters())
    assert build_inventory(parse_config(entry.config)).total == n == entry.params


@pytest.mark.parametrize("path", [p for p in PUBLISHED if "RefinedWeb" not in p.stem], ids=lambda p: p.stem)
def test_a_config_as_published_is_transformers_model_to_every_tensor(path: Path) -> None:
    """Public copies of published config.json files (``source`` says where each was found, at which commit): the
    hand-written inventory is transformers' meta build, every tensor's name and shape, fields it does not read
    (``auto_map``, a quantization_config) included as published. Llama 4's checkpoints are all the multimodal
    ``llama4`` wrapper: its ``text_config`` is the hand-written ``llama4_text``. A catalog entry made from a copy
    holds the same total."""
    data = json.loads(path.read_text())
    config = data["config"]
    if config["model_type"] == "llama4":
        config = config["text_config"]
    inv = _check_exact(config)
    if "catalog_id" in data:
        entry = catalog.find_model(data["catalog_id"])
        assert entry is not None and entry.params == inv.total


@pytest.mark.parametrize(("written_by", "own_lm_head"), [("4.57.1", True), ("5.24.0", False)])
def test_a_mistral3_checkpoint_is_counted_as_from_pretrained_loads_it(
    tmp_path: Path, written_by: str, own_lm_head: bool
) -> None:
    """Mistral Small 3.1 / 3.2's config.json (written by transformers 4) leaves ``tie_word_embeddings`` out, and its
    checkpoint holds its own ``lm_head.weight``. A tiny checkpoint saved like that and loaded by transformers 5's
    ``from_pretrained`` keeps both tensors, untied, although a model built from the same config ties them; the
    inventory counts the loaded model. A config transformers 5 wrote means its default, tied, and its checkpoint
    has no lm_head of its own."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = dict(_fixture("mistral3"), tie_word_embeddings=not own_lm_head)
    model = transformers.Mistral3ForConditionalGeneration(transformers.AutoConfig.for_model(**config))
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    saved.pop("tie_word_embeddings", None)  # as both versions write a config whose flag they do not state
    saved["transformers_version"] = written_by
    (tmp_path / "config.json").write_text(json.dumps(saved))

    loaded = transformers.Mistral3ForConditionalGeneration.from_pretrained(tmp_path, dtype=torch.float32)
    n = sum(p.numel() for p in loaded.parameters())
    vocab, hidden = saved["text_config"]["vocab_size"], saved["text_config"]["hidden_size"]
    built = _build_meta(saved)  # through legacy_config, as the trainer builds
    assert build_inventory(parse_config(saved)).total == n == sum(p.numel() for p in built.parameters())
    assert (loaded.lm_head.weight is loaded.get_input_embeddings().weight) is not own_lm_head
    bare = transformers.Mistral3ForConditionalGeneration(transformers.AutoConfig.for_model(**saved))
    assert sum(p.numel() for p in bare.parameters()) == n - own_lm_head * vocab * hidden  # the config alone ties


@pytest.mark.parametrize("path", [p for p in PUBLISHED if "RefinedWeb" in p.stem], ids=lambda p: p.stem)
def test_a_legacy_falcon_config_as_published_is_its_catalog_model(path: Path) -> None:
    """tiiuae's Falcon repos first published ``RefinedWebModel`` / ``RefinedWeb`` configs (``RWForCausalLM``, the
    repo's own code) and later the ``falcon`` config the catalog holds; a copy of the earlier file at a Hub commit
    (its ``source``) reads as transformers' conversion reads it: every tensor's name and shape, and the catalog
    model's total."""
    data = json.loads(path.read_text())
    assert data["config"]["model_type"] in ("RefinedWebModel", "RefinedWeb")
    entry = catalog.find_model(data["catalog_id"])
    assert entry is not None and _check_exact(data["config"]).total == entry.params


VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "llama_attention_and_mlp_bias": ("llama", {"attention_bias": True, "mlp_bias": True}),
    "llama_explicit_head_dim": ("llama", {"head_dim": 64}),
    "qwen2_moe_sparse_step_2_mlp_only": ("qwen2_moe", {"num_hidden_layers": 6, "decoder_sparse_step": 2,
                                                       "mlp_only_layers": [3]}),
    "qwen2_moe_no_shared_expert": ("qwen2_moe", {"shared_expert_intermediate_size": 0}),
    "qwen3_moe_sparse_step_2_mlp_only": ("qwen3_moe", {"num_hidden_layers": 5, "decoder_sparse_step": 2,
                                                       "mlp_only_layers": [1]}),
    "qwen3_attention_bias": ("qwen3", {"attention_bias": True}),
    "falcon_old_multi_query_parallel": ("falcon_rw", {"multi_query": True, "parallel_attn": True, "alibi": False}),
    "falcon_old_multi_query_sequential": ("falcon_rw", {"multi_query": True, "parallel_attn": False}),
    "falcon_old_mha_parallel": ("falcon_rw", {"multi_query": False, "parallel_attn": True}),
    "falcon_new_one_ln": ("falcon", {"num_ln_in_parallel_attn": 1}),
    "phi_qk_layernorm": ("phi", {"qk_layernorm": True}),
    "gpt2_untied": ("gpt2", {"tie_word_embeddings": False}),
    "gpt2_default_n_inner": ("gpt2", {"n_inner": None}),
    "gpt_neox_sequential_no_bias": ("gpt_neox", {"use_parallel_residual": False, "attention_bias": False}),
    "starcoder2_no_bias": ("starcoder2", {"use_bias": False}),
    "olmo2_attention_bias": ("olmo2", {"attention_bias": True}),
    "gemma_attention_bias": ("gemma", {"attention_bias": True}),
    "phi3_tied": ("phi3", {"tie_word_embeddings": True}),
    "qwen2_untied": ("qwen2", {"tie_word_embeddings": False}),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variant(name: str) -> None:
    base, changes = VARIANTS[name]
    inv = _check_exact(_fixture(base) | changes)
    if name.startswith("qwen2_moe_sparse"):
        assert inv.arch.moe_layers == (1, 5)  # (i + 1) % 2 == 0, layer 3 MLP-only
    if name.startswith("qwen3_moe_sparse"):
        assert inv.arch.moe_layers == (3,)


@pytest.mark.parametrize(
    "change",
    [{"vision_feature_layer": [-2, -5], "multimodal_projector_bias": False}, {"tie_word_embeddings": True},
     {"text_config": {"model_type": "qwen2", "vocab_size": 1024, "hidden_size": 128, "intermediate_size": 256,
                      "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}},
     {"text_config": {"model_type": "gemma", "vocab_size": 1024, "hidden_size": 128, "intermediate_size": 256,
                      "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 32}},
     {"vision_config": {"model_type": "clip_vision_model", "hidden_size": 64, "intermediate_size": 128,
                        "num_hidden_layers": 2, "num_attention_heads": 2}},
     {"model_type": "llava_next", "architectures": ["LlavaNextForConditionalGeneration"],
      "image_grid_pinpoints": [[56, 112], [112, 56], [112, 112]]}],
    ids=["two_feature_layers_no_bias", "tied", "qwen2_text", "gemma_text_tied_by_default", "clip_defaults_224_32",
         "llava_next"],
)  # fmt: skip
def test_llava_variants(change: dict[str, Any]) -> None:
    """LLaVA: the projector's input is E × the feature layers; the tie is the composite's flag or its text model's."""
    inv = _check_exact(_fixture("llava") | change)
    assert inv.arch.vision is not None and inv.arch.vision.kind == "clip"


def _qwen3_vl_text(fixture: str, drop: tuple[str, ...], **change: Any) -> dict[str, Any]:
    config = _fixture(fixture)
    text = {k: v for k, v in config["text_config"].items() if k not in drop} | change
    return config | {"text_config": text}


@pytest.mark.parametrize(
    "config",
    [_qwen3_vl_text("qwen3_vl", ("head_dim",)),
     _qwen3_vl_text("qwen3_vl_moe", ("num_experts", "num_experts_per_tok", "moe_intermediate_size",
                                     "num_key_value_heads", "mlp_only_layers"), num_attention_heads=16, head_dim=16),
     _fixture("qwen3_vl") | {"tie_word_embeddings": True},
     _fixture("qwen3_vl") | {"vision_config": {"depth": 3, "hidden_size": 64, "num_heads": 2,
                                               "out_hidden_size": 256}}],
    ids=["qwen3_vl_head_dim_default", "qwen3_vl_moe_text_defaults", "tied", "vision_defaults_but_size"],
)  # fmt: skip
def test_qwen3_vl_variants(config: dict[str, Any]) -> None:
    """Qwen3-VL(-MoE): the text config's own defaults (Qwen3VLTextConfig's head_dim 128, Qwen3VLMoeTextConfig's
    60 experts of 1408, 4 per token, 16 KV heads), the composite's tie flag, the vision config's defaults
    (position grid, DeepStack after blocks 8, 16 and 24: mergers built whether their blocks exist or not)."""
    inv = _check_exact(config)
    assert inv.arch.vision is not None and inv.arch.vision.kind == "qwen3"


def test_llava_with_another_language_model_is_refused() -> None:
    with pytest.raises(UnsupportedModelError, match="llava with a 'gpt2' language model is not supported"):
        parse_config(_fixture("llava") | {"text_config": {"model_type": "gpt2"}})


@pytest.mark.parametrize(
    "change",
    [{"vision_feature_layer": [-1, -3], "multimodal_projector_bias": True, "spatial_merge_size": 1},
     {"tie_word_embeddings": None},
     {"text_config": {"model_type": "llama", "vocab_size": 1024, "hidden_size": 128, "intermediate_size": 256,
                      "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}}],
    ids=["two_feature_layers_bias_no_merge", "tied_by_default", "llama_text"],
)  # fmt: skip
def test_mistral3_variants(change: dict[str, Any]) -> None:
    """Mistral 3: the merger's input is E × merge², linear_1's E × the feature layers; the composite's own tie flag
    (``Mistral3Config``'s default: tied) decides the tie."""
    cfg = {k: v for k, v in (_fixture("mistral3") | change).items() if v is not None}
    inv = _check_exact(cfg)
    assert inv.arch.vision is not None and inv.arch.vision.kind == "pixtral"
    assert inv.arch.tie_word_embeddings == cfg.get("tie_word_embeddings", True)


def test_mistral3_with_another_language_model_is_refused() -> None:
    with pytest.raises(UnsupportedModelError, match="mistral3 with a 'qwen2' language model is not supported"):
        parse_config(_fixture("mistral3") | {"text_config": {"model_type": "qwen2"}})


def test_gemma3_nested_text_config() -> None:
    cfg = _fixture("gemma3")
    inv = _check_exact(cfg)  # Gemma3ForConditionalGeneration: the text model, the SigLIP tower and the projector
    text = build_inventory(parse_config(cfg["text_config"] | {"model_type": "gemma3_text"})).total
    assert inv.total - text == sum(t.total for t in inv if t.role == "vision") > 0
    assert inv.arch.source_model_type == "gemma3" and inv.arch.model_type == "gemma3_text"
    with_head = _check_exact(cfg | {"vision_config": cfg["vision_config"] | {"vision_use_head": True}})
    assert with_head.total > inv.total  # SiglipMultiheadAttentionPoolingHead, off in every Gemma 3 config


@pytest.mark.parametrize("name", ["gemma", "gemma2", "gemma3_text", "qwen3"])
def test_family_head_dim_default_when_absent(name: str) -> None:
    """Gemma's head_dim is 256 and Qwen3's 128 unless given, whatever hidden_size / heads is."""
    cfg = {k: v for k, v in _fixture(name).items() if k != "head_dim"}
    inv = _check_exact(cfg)
    assert inv.arch.head_dim == (128 if name == "qwen3" else 256)


@pytest.mark.parametrize("name", ["mistral", "mixtral", "qwen2", "qwen3_moe", "gemma2"])
def test_family_kv_heads_default_when_absent(name: str) -> None:
    cfg = {k: v for k, v in _fixture(name).items() if k != "num_key_value_heads"}
    cfg["num_attention_heads"] = 32 if name in ("qwen2",) else 8
    if name == "qwen2":
        cfg["hidden_size"] = 2048
    _check_exact(cfg)


def _size_fields(model_type: str) -> dict[str, Any]:
    """The size fields (``SIZE_FIELDS`` and GPT-2's names for them) at the defaults of transformers' config class."""
    transformers = pytest.importorskip("transformers")
    defaults = transformers.AutoConfig.for_model(model_type).to_dict()
    names = (*SIZE_FIELDS, "n_embd", "n_layer", "n_head")
    return {k: v for k, v in defaults.items() if k in names and v is not None}


def test_size_fields_are_required_and_the_rest_uses_transformers_defaults() -> None:
    """A config with nothing but model_type is refused (its size is never guessed); with its size fields at
    transformers' defaults, every other field takes transformers' default: the model transformers builds."""
    for mt in ("mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma", "gemma2", "gemma3_text",
               "phi", "gpt2", "gpt_neox", "falcon", "olmo2"):  # fmt: skip
        with pytest.raises(ConfigError, match="it sets the model's size, so it is never guessed"):
            parse_config({"model_type": mt})
        cfg = {"model_type": mt} | _size_fields(mt)
        inv = build_inventory(parse_config(cfg))
        assert inv.total == sum(p.numel() for p in _build_meta(cfg).parameters()), mt


@pytest.mark.parametrize(
    ("composite", "text_type"),
    [("llava", "llama"), ("llava_next", "mistral"), ("mistral3", "mistral"), ("idefics3", "llama"),
     ("smolvlm", "llama"), ("gemma3", "gemma3_text")],
)  # fmt: skip
def test_a_composites_text_config_takes_its_class_defaults(composite: str, text_type: str) -> None:
    """``save_pretrained`` writes a composite's ``text_config`` as a diff against its class's defaults (LLaVA 1.5's
    published config leaves out Llama's sizes): with only its model_type left, the text model is the one
    transformers builds from those defaults, and the notes say which sizes were read so."""
    cfg = _fixture(composite)
    cfg["text_config"] = {"model_type": text_type}
    arch = parse_config(cfg)
    note = next(n for n in arch.notes if n.startswith("text_config leaves out"))
    assert all(f"{name} {getattr(arch, name)}" in note for name in SIZE_FIELDS), note
    _check_exact(cfg)
    with pytest.raises(ConfigError, match="it sets the model's size, so it is never guessed"):
        parse_config({"model_type": text_type})  # at the top level, never


def test_roles_and_quantizable_add_up() -> None:
    inv = build_inventory(parse_config(_fixture("qwen2_moe")))
    assert sum(inv.by_role().values()) == inv.total
    # bnb converts nn.Linear weights (shared experts, shared_expert_gate included) but not lm_head or experts
    linear = sum(t.total for t in inv if t.kind == "linear" and not t.is_bias and t.role != "lm_head")
    assert inv.quantizable == linear
    assert not any(t.bnb_quantized for t in inv if t.kind in ("experts", "router", "embedding", "norm"))


# What each module reads (``Tensor.reads``), by the last two parts of its name, over every family.
READS = {
    "self_attn.q_proj": "attention_input", "self_attn.k_proj": "attention_input", "self_attn.v_proj": "attention_input",
    "self_attn.qkv_proj": "attention_input", "attention.query_key_value": "attention_input",
    "self_attention.query_key_value": "attention_input", "attn.c_attn": "attention_input",
    "self_attn.o_proj": "attention_output", "self_attn.dense": "attention_output",
    "attention.dense": "attention_output", "self_attention.dense": "attention_output",
    "attn.c_proj": "attention_output",
    "mlp.gate_proj": "mlp_input", "mlp.up_proj": "mlp_input", "mlp.gate_up_proj": "mlp_input", "mlp.fc1": "mlp_input",
    "mlp.c_fc": "mlp_input", "mlp.dense_h_to_4h": "mlp_input",
    "mlp.down_proj": "mlp_hidden", "mlp.fc2": "mlp_hidden", "mlp.c_proj": "mlp_hidden",
    "mlp.dense_4h_to_h": "mlp_hidden",
    "mlp.gate": "router_input", "experts.gate_up_proj": "expert_input", "experts.down_proj": "expert_hidden",
    "shared_expert.gate_proj": "shared_expert_input", "shared_expert.up_proj": "shared_expert_input",
    "mlp.shared_expert_gate": "shared_expert_input", "shared_expert.down_proj": "shared_expert_hidden",
    "model.embed_tokens": "input_ids", "transformer.wte": "input_ids", "transformer.wpe": "input_ids",
    "gpt_neox.embed_in": "input_ids", "transformer.word_embeddings": "input_ids", "lm_head": "head_input",
    # MLA (DeepSeek), the MoE blocks' other names (Llama 4, Granite MoE, gpt-oss, DeepSeek / GLM-4 MoE), sinks
    "self_attn.q_a_proj": "attention_input", "self_attn.kv_a_proj_with_mqa": "attention_input",
    "self_attn.q_b_proj": "mla_q_latent", "self_attn.kv_b_proj": "mla_kv_latent",
    "feed_forward.gate_proj": "mlp_input", "feed_forward.up_proj": "mlp_input", "feed_forward.down_proj": "mlp_hidden",
    "feed_forward.router": "router_input", "block_sparse_moe.router": "router_input", "mlp.router": "router_input",
    "experts.gate_up_proj_bias": "expert_input", "experts.down_proj_bias": "expert_hidden",
    "shared_experts.gate_proj": "shared_expert_input", "shared_experts.up_proj": "shared_expert_input",
    "shared_experts.down_proj": "shared_expert_hidden", "self_attn.sinks": "",
    # Mllama's cross-attention layers: the text's query, the image features' keys and values, the gates
    "cross_attn.q_proj": "cross_query", "cross_attn.k_proj": "cross_states", "cross_attn.v_proj": "cross_states",
    "cross_attn.o_proj": "cross_output", "{i}.cross_attn_attn_gate": "", "{i}.cross_attn_mlp_gate": "",
}  # fmt: skip


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_every_module_says_which_activation_it_reads(path: Path) -> None:
    """``reads`` is set where the inventory builds each tensor; a linear's input width is that activation's width."""
    inv = build_inventory(parse_config(json.loads(path.read_text())))
    arch = inv.arch
    width = {"attention_input": arch.hidden_size, "attention_output": arch.o_in, "mlp_input": arch.hidden_size,
             "mla_q_latent": arch.q_lora_rank, "mla_kv_latent": arch.kv_lora_rank,
             "mlp_hidden": arch.intermediate_size, "router_input": arch.hidden_size,
             "expert_input": arch.hidden_size, "expert_hidden": arch.moe_intermediate_size,
             "shared_expert_input": arch.hidden_size, "shared_expert_hidden": arch.shared_expert_intermediate_size,
             "head_input": arch.hidden_size, "cross_query": arch.hidden_size, "cross_states": arch.hidden_size,
             "cross_output": arch.q_dim}  # fmt: skip
    for t in inv:
        if t.kind == "norm" or t.role == "vision":  # the tower's activations have their own rules
            assert t.reads == "", t.name
            continue
        name = (
            t.name.removesuffix(".weight")
            .removesuffix(".bias")
            .replace(".language_model.", ".")
            .replace(".text_model.", ".")
        )
        assert t.reads == READS[".".join(name.split(".")[-2:]) if "." in name else name], t.name
        if not t.is_bias and t.kind not in ("embedding", "parameter", "experts"):
            assert t.in_features == width[t.reads], t.name


@pytest.mark.parametrize(
    ("base", "change"),
    [("idefics3", {"tie_word_embeddings": True}), ("smolvlm", {"scale_factor": 4}),
     ("smolvlm", {"text_config": {"model_type": "llama", "vocab_size": 1024, "hidden_size": 64,
                                  "intermediate_size": 128, "num_hidden_layers": 1, "num_attention_heads": 2}})],
    ids=["idefics3_tied", "smolvlm_scale_4", "smolvlm_rms_eps_default"],
)  # fmt: skip
def test_idefics3_variants(base: str, change: dict[str, Any]) -> None:
    """Idefics3 / SmolVLM: the connector's input is E · scale_factor²; the tie is the composite's flag."""
    inv = _check_exact(_fixture(base) | change)
    assert inv.arch.vision is not None and inv.arch.vision.kind == "idefics3"
    assert inv.arch.vision.mm_tokens_per_image == 16 // inv.arch.vision.spatial_merge_size**2


def test_idefics3_with_another_language_model_is_refused() -> None:
    with pytest.raises(UnsupportedModelError, match="smolvlm with a 'qwen2' language model is not supported"):
        parse_config(_fixture("smolvlm") | {"text_config": {"model_type": "qwen2"}})


def _mllama(text: dict[str, Any] | None = None, vision: dict[str, Any] | None = None) -> dict[str, Any]:
    cfg = _fixture("mllama")
    text_config, vision_config = cfg["text_config"] | (text or {}), cfg["vision_config"] | (vision or {})
    return cfg | {"text_config": text_config, "vision_config": vision_config}


@pytest.mark.parametrize(
    "cfg",
    [_mllama({"tie_word_embeddings": True}),
     _mllama({"cross_attention_layers": [0, 4, 9]}),
     _mllama(vision={"max_num_tiles": 2, "supported_aspect_ratios": [[1, 1], [1, 2], [2, 1]],
                     "intermediate_layers_indices": [0], "vision_output_dim": 128, "num_global_layers": 1})],
    ids=["tie_flag_ignored", "cross_layers_past_the_last_make_none", "two_tiles_three_ratios"],
)  # fmt: skip
def test_mllama_variants(cfg: dict[str, Any]) -> None:
    """Llama 3.2 Vision: embed_tokens has vocab + 8 rows and lm_head vocab, never tied; the cross-attention layers are
    those of the list that exist; the tile embeddings have a row per aspect ratio and the padding id."""
    inv = _check_exact(cfg)
    assert inv.arch.vision is not None and inv.arch.vision.kind == "mllama"
    assert not inv.arch.tie_word_embeddings
    assert inv.arch.cross_attention_layers == tuple(
        i for i in cfg["text_config"]["cross_attention_layers"] if i < cfg["text_config"]["num_hidden_layers"]
    )


def test_mllama_quantizes_and_adapts_every_linear_but_the_head() -> None:
    """bitsandbytes converts the cross-attention projections and the one-Linear projector too (lm_head is the last
    parameter, kept); the Conv2d, the tile embeddings and the gates are not linears."""
    inv = build_inventory(parse_config(_fixture("mllama")))
    quantized = {t.module for t in inv if t.bnb_quantized}
    assert "model.multi_modal_projector" in quantized
    assert "model.language_model.layers.{i}.cross_attn.k_proj" in quantized
    assert "lm_head" not in quantized
    assert {m.rsplit(".", 1)[-1] for m in quantized} == {
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "fc1", "fc2",
        "multi_modal_projector",
    }  # fmt: skip


def test_mllama_with_another_language_model_is_refused() -> None:
    with pytest.raises(UnsupportedModelError, match="mllama with a 'llama' language model is not supported"):
        parse_config(_mllama({"model_type": "llama"}))
