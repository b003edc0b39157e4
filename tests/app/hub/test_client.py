"""The Hub client against a local Hub-shaped server, through the real ``huggingface_hub`` client."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from app.errors import HubBadConfig, HubGated, HubInvalidId, HubRepoNotFound, HubTimeout, HubUnavailable
from app.hub import ConfigCache, HubClient, clean_token
from app.settings import Settings
from tests.app.hubserver import HubServer
from tests.app.support import GRANTED_TOKEN, TINY, TINY_PARAMS, UNGRANTED_TOKEN, count, llama_tensors


@pytest.fixture
def client(settings: Settings) -> HubClient:
    return HubClient(settings)


def test_single_file_repo_resolves_config_and_exact_params_over_range_requests(
    client: HubClient, hub: HubServer
) -> None:
    hub.clear_requests()
    resolved = client.resolve("acme/tiny-llama")
    assert resolved.source == "hub"
    assert resolved.config == TINY
    assert resolved.safetensors_params == {"BF16": TINY_PARAMS}
    assert resolved.params_source == "hub safetensors metadata"
    assert resolved.commit == hub.repos["acme/tiny-llama"].sha
    assert not resolved.cached
    info = hub.requests_for("/api/models/acme/tiny-llama/revision/main")
    assert [r.method for r in info] == ["GET"]
    weights = hub.requests_for("model.safetensors")
    assert any(r.path.startswith("/lfs/") for r in weights), "the safetensors header was not read"
    assert all(r.method == "GET" and r.headers.get("range", "").startswith("bytes=") for r in weights)
    config_calls = hub.requests_for("/resolve/")
    assert {r.method for r in config_calls if r.path.endswith("config.json")} == {"HEAD", "GET"}


def test_sharded_repo_sums_every_shard(client: HubClient, hub: HubServer) -> None:
    hub.clear_requests()
    resolved = client.resolve("acme/tiny-llama-sharded")
    assert resolved.safetensors_params == {"BF16": TINY_PARAMS}
    assert hub.requests_for("model.safetensors.index.json")
    shard_requests = hub.requests_for("-of-00003.safetensors")
    assert len({r.path.rsplit("/", 1)[-1] for r in shard_requests}) == 3
    assert len({r.path for r in shard_requests if r.path.startswith("/lfs/")}) == 3  # the CDN redirect
    assert all("range" in r.headers for r in shard_requests)


def test_mixed_dtypes_are_counted_per_dtype(client: HubClient) -> None:
    resolved = client.resolve("acme/mixed-dtypes")
    assert resolved.safetensors_params == {"F16": 8, "F32": count(llama_tensors(TINY, "F32"))}


def test_repo_without_weights_falls_back_to_config(client: HubClient) -> None:
    resolved = client.resolve("acme/no-weights")
    assert resolved.config == TINY
    assert resolved.safetensors_params is None
    assert resolved.params_source == "hub config"
    assert any("safetensors" in note for note in resolved.notes)


def test_unlisted_siblings_are_probed_with_head(client: HubClient) -> None:
    assert client.resolve("acme/unlisted").safetensors_params == {"BF16": TINY_PARAMS}


def test_gated_without_token_is_401_and_says_how_to_pass_one(client: HubClient) -> None:
    with pytest.raises(HubGated) as err:
        client.resolve("acme/gated-llama")
    assert err.value.status_code == 401
    assert "X-HF-Token" in err.value.message and "HF_TOKEN" in err.value.message


def test_gated_with_ungranted_token_is_403(client: HubClient) -> None:
    with pytest.raises(HubGated) as err:
        client.resolve("acme/gated-llama", token=UNGRANTED_TOKEN)
    assert err.value.status_code == 403
    assert UNGRANTED_TOKEN not in err.value.message
    assert "license" in err.value.message


def test_gated_with_granted_token_resolves_sends_bearer_and_is_not_cached(
    client: HubClient, hub: HubServer, settings: Settings
) -> None:
    hub.clear_requests()
    resolved = client.resolve("acme/gated-llama", token=f"Bearer {GRANTED_TOKEN}")
    assert resolved.config == TINY and resolved.gated
    assert resolved.safetensors_params == {"BF16": TINY_PARAMS}
    sent = hub.requests_for("acme/gated-llama")
    assert sent and all(r.headers.get("authorization") == f"Bearer {GRANTED_TOKEN}" for r in sent)
    assert len(client.cache) == 0
    _assert_token_not_on_disk(settings.data_dir, GRANTED_TOKEN)


def test_the_servers_token_is_a_setting_the_client_never_uses_on_its_own(
    hub: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HF_TOKEN is read into the settings, but the client uses only the token it is given: which caller the
    server's token may serve is app.security's decision."""
    monkeypatch.setenv("HF_TOKEN", GRANTED_TOKEN)
    settings = Settings(data_dir=tmp_path / "d", hf_endpoint=hub.url, hub_timeout_s=5)
    assert settings.token() == GRANTED_TOKEN
    assert GRANTED_TOKEN not in repr(settings)
    client = HubClient(settings)
    with pytest.raises(HubGated):
        client.resolve("acme/gated-llama")
    assert client.resolve("acme/gated-llama", token=settings.token()).config == TINY


def test_private_repo_looks_missing_without_token_and_resolves_with_one(client: HubClient) -> None:
    with pytest.raises(HubRepoNotFound) as err:
        client.resolve("acme/private-llama")
    assert err.value.status_code == 404
    assert "private" in err.value.message and "X-HF-Token" in err.value.message
    assert client.resolve("acme/private-llama", token=GRANTED_TOKEN).config == TINY


def test_missing_repo_is_404_with_suggestions_field(client: HubClient) -> None:
    with pytest.raises(HubRepoNotFound) as err:
        client.resolve("acme/does-not-exist")
    assert err.value.status_code == 404
    assert isinstance(err.value.extra["suggestions"], list)


def test_missing_revision_is_404(client: HubClient) -> None:
    with pytest.raises(HubRepoNotFound, match="no revision 'v9'"):
        client.resolve("acme/tiny-llama", revision="v9")


def test_slow_hub_times_out_within_the_deadline(impatient: Settings) -> None:
    start = time.monotonic()
    with pytest.raises(HubTimeout) as err:
        HubClient(impatient).resolve("acme/slow-llama")
    elapsed = time.monotonic() - start
    assert err.value.status_code == 504
    assert elapsed < impatient.hub_timeout_s + 1.0
    assert "catalog" in err.value.message and "config" in err.value.message


def test_slow_hub_resolves_with_a_longer_deadline(hub: HubServer, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "d", hf_endpoint=hub.url, hub_timeout_s=30)
    resolved = HubClient(settings).resolve("acme/sluggish-llama")
    assert resolved.config == TINY


def test_hub_server_error_is_503(client: HubClient) -> None:
    with pytest.raises(HubUnavailable) as err:
        client.resolve("acme/broken")
    assert err.value.status_code == 503


def test_unreachable_hub_is_503(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = Settings(data_dir=tmp_path / "d", hf_endpoint=f"http://127.0.0.1:{port}", hub_timeout_s=5)
    with pytest.raises(HubUnavailable) as err:
        HubClient(settings).resolve("acme/tiny-llama")
    assert "could not be reached" in err.value.message
    assert "catalog" in err.value.message


@pytest.mark.parametrize(
    ("repo", "fragment"),
    [
        ("acme/no-config", "has no config.json"),
        ("acme/bad-json", "not valid JSON"),
        ("acme/list-json", "not a JSON object"),
        ("acme/huge-config", "byte limit"),
    ],
)
def test_unusable_configs_are_422(client: HubClient, repo: str, fragment: str) -> None:
    with pytest.raises(HubBadConfig, match=fragment) as err:
        client.resolve(repo)
    assert err.value.status_code == 422


@pytest.mark.parametrize("bad", ["a/b/c", "../etc", "a b", "org/na--me", "ünï/code", "x" * 200, "-lead/x"])
def test_malformed_ids_are_rejected_before_any_request(client: HubClient, hub: HubServer, bad: str) -> None:
    hub.clear_requests()
    with pytest.raises(HubInvalidId) as err:
        client.resolve(bad)
    assert err.value.status_code == 422
    assert hub.requests == []


def test_malformed_tokens_are_rejected() -> None:
    assert clean_token("  ") is None
    assert clean_token("Bearer hf_abc") == "hf_abc"
    with pytest.raises(HubInvalidId):
        clean_token("hf abc def")


def test_public_configs_are_cached_on_disk(client: HubClient, hub: HubServer, settings: Settings) -> None:
    first = client.resolve("acme/tiny-llama")
    hub.clear_requests()
    again = HubClient(settings).resolve("acme/tiny-llama")  # a fresh client: the cache is on disk
    assert again.cached and not first.cached
    assert again.config == first.config
    assert again.safetensors_params == first.safetensors_params
    assert hub.requests == []
    assert list(settings.cache_dir.glob("*.json"))


def test_cache_is_bounded_and_evicts_least_recently_used(hub: HubServer, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "d", hf_endpoint=hub.url, cache_max_entries=2, hub_timeout_s=5)
    client = HubClient(settings)
    client.resolve("acme/tiny-llama")
    time.sleep(0.02)
    client.resolve("acme/no-weights")
    time.sleep(0.02)
    assert client.resolve("acme/tiny-llama").cached  # touch: now the most recently used
    time.sleep(0.02)
    client.resolve("acme/mixed-dtypes")
    assert len(client.cache) == 2
    hub.clear_requests()
    assert client.resolve("acme/tiny-llama").cached
    assert client.resolve("acme/mixed-dtypes").cached
    assert not client.resolve("acme/no-weights").cached  # evicted


def test_cache_expires_and_survives_corruption(tmp_path: Path) -> None:
    cache = ConfigCache(tmp_path, max_entries=4, ttl_s=60)
    cache.put("k", {"config": {"a": 1}, "fetched_at": time.time()})
    assert cache.get("k") is not None
    cache.put("old", {"config": {"a": 1}, "fetched_at": time.time() - 3600})
    assert cache.get("old") is None
    (tmp_path / "bad.json").write_text("{broken")
    assert cache.get("bad") is None
    assert not (tmp_path / "bad.json").exists()
    assert ConfigCache(tmp_path, max_entries=0, ttl_s=60).get("k") is None


def _assert_token_not_on_disk(root: Path, token: str) -> None:
    if not root.exists():
        return
    for dirpath, _, files in os.walk(root):
        for name in files:
            assert token.encode() not in (Path(dirpath) / name).read_bytes()


def test_endpoint_follows_hf_endpoint_unless_overridden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TUNEPLAN_HF_ENDPOINT", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    assert Settings().hf_endpoint == "https://huggingface.co"
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9/")
    assert Settings().hf_endpoint == "http://127.0.0.1:9"
    monkeypatch.setenv("TUNEPLAN_HF_ENDPOINT", "http://mirror.example:8080")
    assert Settings().hf_endpoint == "http://mirror.example:8080"
    monkeypatch.setenv("TUNEPLAN_HF_ENDPOINT", "ftp://nope")
    with pytest.raises(ValueError, match="http"):
        Settings()
