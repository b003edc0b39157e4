"""Fixtures of the app tests: a local Hub-shaped server with a few repos, settings pointing at it, and the
headless browser of the browser tests (``browser_support.py``)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:  # the project is run from its checkout, not installed
    sys.path.insert(0, _ROOT)

from browser_support import launch_chromium  # noqa: E402
from hubserver import HubServer  # noqa: E402

from app.settings import Settings  # noqa: E402
from tests.trainer.trainer_cases import LLAMA  # noqa: E402

GRANTED_TOKEN = "hf_granted_test_token"
UNGRANTED_TOKEN = "hf_not_granted_token"


def tiny_llama_config(**overrides: Any) -> dict[str, Any]:
    """A complete, small Llama config.json (hidden 64, 2 layers, vocab 256)."""
    config: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": 256,
        "hidden_size": 64,
        "intermediate_size": 172,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": False,
        "hidden_act": "silu",
        "torch_dtype": "bfloat16",
    }
    config.update(overrides)
    return config


# The tiny Llama the verify runs train (tests/app/test_jobs.py, test_browser_jobs.py): the trainer tests' own
# (every dimension a multiple of 64, as bitsandbytes' CPU kernels need), with its architecture named.
TINY_RUN_CONFIG: dict[str, Any] = {"architectures": ["LlamaForCausalLM"], **LLAMA}


def llama_tensors(config: dict[str, Any], dtype: str = "BF16") -> dict[str, tuple[str, list[int]]]:
    """The tensors of a Llama checkpoint with this config (names and shapes as transformers saves them)."""
    h = config["hidden_size"]
    i = config["intermediate_size"]
    v = config["vocab_size"]
    heads = config["num_attention_heads"]
    kv = config["num_key_value_heads"]
    d = config.get("head_dim", h // heads)
    out: dict[str, tuple[str, list[int]]] = {"model.embed_tokens.weight": (dtype, [v, h])}
    for layer in range(config["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        out[p + "self_attn.q_proj.weight"] = (dtype, [heads * d, h])
        out[p + "self_attn.k_proj.weight"] = (dtype, [kv * d, h])
        out[p + "self_attn.v_proj.weight"] = (dtype, [kv * d, h])
        out[p + "self_attn.o_proj.weight"] = (dtype, [h, heads * d])
        out[p + "mlp.gate_proj.weight"] = (dtype, [i, h])
        out[p + "mlp.up_proj.weight"] = (dtype, [i, h])
        out[p + "mlp.down_proj.weight"] = (dtype, [h, i])
        out[p + "input_layernorm.weight"] = (dtype, [h])
        out[p + "post_attention_layernorm.weight"] = (dtype, [h])
    out["model.norm.weight"] = (dtype, [h])
    if not config.get("tie_word_embeddings", False):
        out["lm_head.weight"] = (dtype, [v, h])
    return out


def count(tensors: dict[str, tuple[str, list[int]]]) -> int:
    total = 0
    for _, shape in tensors.values():
        n = 1
        for dim in shape:
            n *= dim
        total += n
    return total


TINY = tiny_llama_config()
TINY_TENSORS = llama_tensors(TINY)
TINY_PARAMS = count(TINY_TENSORS)


def _split(tensors: dict[str, tuple[str, list[int]]], parts: int) -> list[dict[str, tuple[str, list[int]]]]:
    items = list(tensors.items())
    size = -(-len(items) // parts)
    return [dict(items[k : k + size]) for k in range(0, len(items), size)]


@pytest.fixture(scope="session")
def hub() -> Iterator[HubServer]:
    """The local Hub, with the repos the tests use."""
    server = HubServer(granted_tokens=(GRANTED_TOKEN,))
    server.add_repo("acme/tiny-llama", TINY, tensors=TINY_TENSORS)
    server.add_repo("acme/tiny-llama-sharded", TINY, shards=_split(TINY_TENSORS, 3))
    server.add_repo("acme/no-weights", TINY)
    server.add_repo("acme/unlisted", TINY, tensors=TINY_TENSORS, list_siblings=False)
    server.add_repo("acme/gated-llama", TINY, tensors=TINY_TENSORS, gated=True)
    server.add_repo("acme/private-llama", TINY, tensors=TINY_TENSORS, private=True)
    server.add_repo("acme/slow-llama", TINY, tensors=TINY_TENSORS, delay_s=3.0)
    server.add_repo("acme/sluggish-llama", TINY, tensors=TINY_TENSORS, delay_s=0.3)
    server.add_repo("acme/broken", TINY, fail_status=503)
    server.add_repo("acme/no-config", None, tensors=TINY_TENSORS)
    server.add_repo("acme/bad-json", b"{not json")
    server.add_repo("acme/list-json", b"[1, 2, 3]")
    server.add_repo("acme/huge-config", tiny_llama_config(padding="x" * 300_000))
    server.add_repo(
        "acme/tiny-bert",
        {"architectures": ["BertForMaskedLM"], "model_type": "bert", "vocab_size": 100, "hidden_size": 32},
    )
    server.add_repo("acme/mixed-dtypes", TINY, tensors=llama_tensors(TINY, "F32") | {"extra.scale": ("F16", [8])})
    server.start()
    yield server
    server.stop()


@pytest.fixture
def settings(hub: HubServer, tmp_path: Path) -> Settings:
    """Settings for one test: its own data dir, the local Hub, no default token.

    The Hub deadline is generous so a busy machine does not turn a slow answer into a 504; the timeout tests
    shorten it (``impatient``).
    """
    return Settings(
        data_dir=tmp_path / "data",
        hf_endpoint=hub.url,
        hf_token=None,
        hub_timeout_s=15.0,
        cache_max_entries=16,
    )


@pytest.fixture
def impatient(settings: Settings) -> Settings:
    """The same settings with a 1 s Hub deadline (the ``acme/slow-llama`` repo answers after 3 s)."""
    return settings.model_copy(update={"hub_timeout_s": 1.0})


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium for one browser test module (a module skips itself when Chromium or Playwright is missing)."""
    with launch_chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh 1280x900 page; the test fails if the page raised a JavaScript error."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
