"""Resolve a model id to its ``config.json`` and exact parameter counts: from the catalog or the Hub.

A catalog id (or a catalog model's Hub id) resolves from the embedded catalog without touching the network.
Any other id goes to the Hugging Face Hub through ``huggingface_hub``:

1. ``HfApi.model_info`` (``GET /api/models/{repo}/revision/{rev}``): does the repo exist, is it gated, which
   files does it hold, which commit is ``rev``;
2. ``hf_hub_download`` of ``config.json`` at that commit (``HEAD``, then
   ``GET /{repo}/resolve/{commit}/config.json``) into a throw-away directory: only the cache below is kept;
3. the safetensors headers (``model.safetensors``, or every shard listed by ``model.safetensors.index.json``)
   over HTTP range requests, for exact per-dtype parameter counts. No weights are downloaded.

Step 3 is best effort: when it fails or runs out of time, the config alone is returned with a note.

Resolved configs of public repos are cached on disk under ``<data_dir>/hub-cache`` as one JSON file per
(endpoint, repo, revision), bounded in number, evicting the least recently used (file mtime, touched on
every hit). Gated and private repos are never cached, so a config behind a gate is served only to a caller
the Hub lets in.
Tokens are passed to the Hub and nowhere else: not logged, not cached, not part of any error message. The client
uses exactly the token it is given: which one serves a request (the caller's own, or the server's ``HF_TOKEN`` for
callers that carry the API token) is ``app.security``'s decision.

Every failure a user can act on is a ``HubError`` subclass carrying an HTTP status and a message saying
what to do.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import logging
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from app.errors import (
    FALLBACK_HINT,
    HubBadConfig,
    HubError,
    HubGated,
    HubInvalidId,
    HubRepoNotFound,
    HubTimeout,
    HubUnavailable,
)
from app.hub.cache import ConfigCache
from app.settings import Settings
from estimator import catalog

log = logging.getLogger(__name__)

SAFETENSORS_SINGLE_FILE = "model.safetensors"
SAFETENSORS_INDEX_FILE = "model.safetensors.index.json"
MAX_SHARDS = 4096
_TOKEN_RE = re.compile(r"[\x21-\x7e]{1,1024}")
_REVISION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/\-]{0,254}")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]{0,95}")
_TOKEN_HINT = (
    "pass a Hugging Face token with read access: send the header 'X-HF-Token: hf_...' "
    "(a server's own HF_TOKEN serves only requests that carry its API token)"
)
_FALLBACK_HINT = FALLBACK_HINT

T = TypeVar("T")


# ---------------------------------------------------------------------------------------------- result


@dataclass(frozen=True)
class ResolvedModel:
    """A model id resolved to its config."""

    repo_id: str
    config: dict[str, Any]
    source: str
    """``catalog`` or ``hub``."""
    safetensors_params: dict[str, int] | None = None
    """Exact parameter count per safetensors dtype (``BF16``, ``F32``, ...), from the Hub's file headers."""
    catalog_id: str | None = None
    revision: str | None = None
    commit: str | None = None
    gated: bool = False
    cached: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def params_source(self) -> str:
        """Where exact counts come from: ``catalog``, ``hub config`` or ``hub safetensors metadata``."""
        if self.source == "catalog":
            return "catalog"
        return "hub safetensors metadata" if self.safetensors_params else "hub config"


# ---------------------------------------------------------------------------------------------- helpers


def clean_token(token: str | None) -> str | None:
    """Normalise a user-supplied token; ``HubInvalidId`` (422) when it cannot be a token at all."""
    if token is None:
        return None
    token = token.strip()
    if token.lower().startswith("bearer "):
        token = token[7:].strip()
    if not token:
        return None
    if not _TOKEN_RE.fullmatch(token):
        raise HubInvalidId("the Hub token is malformed: send it as printable ASCII without spaces ('hf_...')")
    return token


def check_repo_id(repo_id: str) -> str:
    """Validate a Hub repo id (``name`` or ``org/name``); ``HubInvalidId`` with what a valid id looks like."""
    repo_id = repo_id.strip()
    parts = repo_id.split("/")
    ok = (
        0 < len(parts) <= 2
        and all(_NAME_RE.fullmatch(p) for p in parts)
        and ".." not in repo_id
        and "--" not in repo_id
        and not repo_id.endswith((".git", ".", "-"))
    )
    if not ok:
        shown = repo_id if len(repo_id) <= 80 else repo_id[:77] + "..."
        raise HubInvalidId(
            f"{shown!r} is not a Hugging Face model id: use 'org/name' (letters, digits, '.', '_', '-'; "
            "at most 96 characters each), e.g. 'Qwen/Qwen2.5-0.5B', or a catalog id from GET /api/models"
        )
    return repo_id


def check_revision(revision: str) -> str:
    if not _REVISION_RE.fullmatch(revision) or ".." in revision:
        raise HubInvalidId(f"{revision[:80]!r} is not a git revision: use a branch, tag or commit hash")
    return revision


def catalog_suggestions(query: str, limit: int = 5) -> tuple[str, ...]:
    """Catalog matches for an id that did not resolve: its shape family first (the instruct, chat or base variant of
    a catalog model, ``catalog.family_matches``), then a search on the id and on its name part, else the catalog's
    fuzzy matches."""
    seen: list[str] = [m.id for m in catalog.family_matches(query, n=limit)]
    if seen:
        return tuple(seen)
    for text in (query, query.rsplit("/", 1)[-1]):
        seen += [m.id for m in catalog.search_models(text, limit=limit) if m.id not in seen]
        if seen:
            break
    if not seen:
        seen = [m.id for m in catalog.close_model_matches(query, n=limit)]
    return tuple(seen[:limit])


def hub_timeout(repo_id: str, timeout_s: float, endpoint: str | None = None) -> HubTimeout:
    """The 504 of a lookup that ran past its deadline."""
    return HubTimeout(
        f"the Hugging Face Hub did not answer for {repo_id[:200]!r} within {timeout_s:g} s: retry later, or "
        + _FALLBACK_HINT,
        suggestions=list(catalog_suggestions(repo_id)),
        **({"endpoint": endpoint} if endpoint else {}),
    )


# ---------------------------------------------------------------------------------------------- client


class HubClient:
    """Resolves model ids; one per app (it owns a small thread pool that enforces the Hub deadline)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.endpoint = settings.hf_endpoint
        self.timeout = settings.hub_timeout_s
        self.cache = ConfigCache(settings.cache_dir, settings.cache_max_entries, settings.cache_ttl_s)
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="tuneplan-hub")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------------------------------------- public

    def resolve(
        self, repo_id: str, token: str | None = None, revision: str = "main", deadline: float | None = None
    ) -> ResolvedModel:
        """Resolve ``repo_id`` from the catalog, the cache, or the Hub (in that order), with ``token`` (None: public
        repos only) by ``deadline`` (``time.monotonic()``; default: ``hub_timeout_s`` from now)."""
        if not isinstance(repo_id, str) or not repo_id.strip():
            raise HubInvalidId("model is empty: give a Hub id like 'Qwen/Qwen2.5-0.5B' or a catalog id")
        entry = catalog.find_model(repo_id.strip())
        if entry is not None and revision == "main":
            return ResolvedModel(
                repo_id=entry.hf_id or entry.id,
                config=dict(entry.config),
                source="catalog",
                catalog_id=entry.id,
                gated=bool(entry.gated),
            )
        repo_id = check_repo_id(repo_id)
        revision = check_revision(revision)
        token = clean_token(token)

        key = ConfigCache.key(self.endpoint, repo_id, revision)
        cached = self.cache.get(key)
        if cached is not None:
            return ResolvedModel(
                repo_id=repo_id,
                config=cached["config"],
                source="hub",
                safetensors_params=cached.get("safetensors_params"),
                revision=revision,
                commit=cached.get("commit"),
                cached=True,
                notes=tuple(cached.get("notes") or ()),
            )

        deadline = deadline if deadline is not None else time.monotonic() + self.timeout
        info = self._with_deadline(lambda: self._model_info(repo_id, revision, token), deadline, repo_id)
        commit = info.get("sha") or revision
        config = self._with_deadline(lambda: self._download_config(repo_id, commit, token), deadline, repo_id)

        notes: list[str] = []
        params: dict[str, int] | None = None
        files = info.get("files")
        try:
            params = self._with_deadline(
                lambda: self._safetensors_params(repo_id, commit, token, files), deadline, repo_id
            )
            if params is None:
                notes.append("the repo has no safetensors weights: parameter counts come from config.json")
        except HubError as exc:
            notes.append(f"safetensors headers unavailable ({exc.message}): parameter counts come from config.json")

        gated = bool(info.get("gated")) or bool(info.get("private"))
        resolved = ResolvedModel(
            repo_id=repo_id,
            config=config,
            source="hub",
            safetensors_params=params,
            revision=revision,
            commit=info.get("sha"),
            gated=gated,
            notes=tuple(notes),
        )
        if not gated:
            self.cache.put(
                key,
                {
                    "repo_id": repo_id,
                    "revision": revision,
                    "commit": info.get("sha"),
                    "config": config,
                    "safetensors_params": params,
                    "notes": notes,
                    "fetched_at": time.time(),
                },
            )
        return resolved

    # ------------------------------------------------------------------------------------------------- steps

    def _with_deadline(self, fn: Callable[[], T], deadline: float, repo_id: str) -> T:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise self._timeout(repo_id)
        future = self._pool.submit(fn)
        try:
            return future.result(timeout=remaining)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise self._timeout(repo_id) from None

    def _timeout(self, repo_id: str) -> HubTimeout:
        return hub_timeout(repo_id, self.timeout, self.endpoint)

    def _api(self) -> Any:
        from huggingface_hub import HfApi

        return HfApi(endpoint=self.endpoint, library_name="tuneplan")

    def _model_info(self, repo_id: str, revision: str, token: str | None) -> dict[str, Any]:
        with self._hub_errors(repo_id, token, revision):
            info = self._api().model_info(repo_id, revision=revision, timeout=self.timeout, token=token or False)
        files = None if info.siblings is None else [s.rfilename for s in info.siblings]
        return {"sha": info.sha, "gated": info.gated, "private": info.private, "files": files}

    def _download_config(self, repo_id: str, revision: str, token: str | None) -> dict[str, Any]:
        from huggingface_hub import hf_hub_download

        with (
            tempfile.TemporaryDirectory(prefix="tuneplan-hub-") as tmp,
            self._hub_errors(repo_id, token, revision),
        ):
            path = hf_hub_download(
                repo_id,
                "config.json",
                revision=revision,
                cache_dir=tmp,
                token=token or False,
                endpoint=self.endpoint,
                etag_timeout=self.timeout,
            )
            return self._read_config(Path(str(path)), repo_id)

    def _read_config(self, path: Path, repo_id: str) -> dict[str, Any]:
        size = path.stat().st_size
        if size > self.settings.max_config_bytes:
            raise HubBadConfig(
                f"config.json of {repo_id!r} is {size} bytes, over the "
                f"{self.settings.max_config_bytes} byte limit: "
                "send a trimmed config inline as 'config'"
            )
        try:
            data = json.loads(path.read_bytes())
        except (ValueError, UnicodeDecodeError) as exc:
            raise HubBadConfig(f"config.json of {repo_id!r} is not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise HubBadConfig(f"config.json of {repo_id!r} is not a JSON object")
        return data

    def _safetensors_params(
        self, repo_id: str, revision: str, token: str | None, files: list[str] | None
    ) -> dict[str, int] | None:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import SafetensorsParsingError

        api = self._api()
        tok: str | bool = token or False
        if files is None:  # the listing was not given: ask for each candidate
            with self._hub_errors(repo_id, token, revision):
                files = [
                    name
                    for name in (SAFETENSORS_SINGLE_FILE, SAFETENSORS_INDEX_FILE)
                    if api.file_exists(repo_id, name, revision=revision, token=tok)
                ]
        try:
            with self._hub_errors(repo_id, token, revision):
                if SAFETENSORS_SINGLE_FILE in files:
                    shards = [SAFETENSORS_SINGLE_FILE]
                elif SAFETENSORS_INDEX_FILE in files:
                    with tempfile.TemporaryDirectory(prefix="tuneplan-hub-") as tmp:
                        index_path = hf_hub_download(
                            repo_id,
                            SAFETENSORS_INDEX_FILE,
                            revision=revision,
                            cache_dir=tmp,
                            token=tok,
                            endpoint=self.endpoint,
                            etag_timeout=self.timeout,
                        )
                        index = json.loads(Path(str(index_path)).read_bytes())
                    weight_map = index.get("weight_map") if isinstance(index, dict) else None
                    if not isinstance(weight_map, dict) or not weight_map:
                        raise HubBadConfig(f"{SAFETENSORS_INDEX_FILE} of {repo_id!r} has no weight_map")
                    shards = sorted({str(v) for v in weight_map.values()})
                    if len(shards) > MAX_SHARDS:
                        raise HubBadConfig(f"{SAFETENSORS_INDEX_FILE} of {repo_id!r} lists {len(shards)} shards")
                else:
                    return None

                def header(shard: str) -> dict[str, int]:
                    meta = api.parse_safetensors_file_metadata(
                        repo_id, shard, revision=revision, token=tok, timeout=self.timeout
                    )
                    return dict(meta.parameter_count)

                totals: dict[str, int] = {}
                with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, len(shards))) as pool:
                    for counts in pool.map(header, shards):
                        for dtype, n in counts.items():
                            totals[dtype] = totals.get(dtype, 0) + int(n)
                return dict(sorted(totals.items()))
        except (SafetensorsParsingError, ValueError, OSError) as exc:
            if isinstance(exc, HubError):
                raise
            raise HubBadConfig(f"the safetensors headers of {repo_id!r} could not be parsed ({exc})") from None

    # ------------------------------------------------------------------------------------------------- errors

    @contextlib.contextmanager
    def _hub_errors(self, repo_id: str, token: str | None, revision: str) -> Iterator[None]:
        """Translate ``huggingface_hub`` / ``httpx2`` exceptions into ``HubError`` subclasses."""
        import httpx2
        from huggingface_hub.errors import (
            DisabledRepoError,
            GatedRepoError,
            HfHubHTTPError,
            HFValidationError,
            LocalEntryNotFoundError,
            OfflineModeIsEnabled,
            RemoteEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        try:
            yield
        except HubError:
            raise
        except GatedRepoError:
            if token:
                raise HubGated(
                    f"{repo_id!r} is a gated model and this token has not been granted access: accept the "
                    f"license on its Hub page (https://huggingface.co/{repo_id}) with the token's account, "
                    "or use a catalog model",
                    status_code=403,
                ) from None
            raise HubGated(f"{repo_id!r} is a gated model: {_TOKEN_HINT}", status_code=401) from None
        except RevisionNotFoundError:
            raise HubRepoNotFound(
                f"{repo_id!r} has no revision {revision!r}: use a branch, tag or commit that exists"
            ) from None
        except RemoteEntryNotFoundError as exc:
            filename = str(exc.response.request.url).rsplit("/", 1)[-1] if exc.response is not None else "file"
            raise HubBadConfig(
                f"{repo_id!r} has no {filename}, so it is not a transformers model; "
                "send its config.json inline as 'config', or pick a catalog model"
            ) from None
        except RepositoryNotFoundError:
            hint = "check the spelling" if token else f"check the spelling; if it is a private repo, {_TOKEN_HINT}"
            raise HubRepoNotFound(
                f"no model {repo_id!r} on the Hugging Face Hub: {hint}",
                suggestions=catalog_suggestions(repo_id),
            ) from None
        except DisabledRepoError:
            raise HubGated(f"{repo_id!r} has been disabled on the Hub", status_code=403) from None
        except HFValidationError:
            raise HubInvalidId(
                f"{repo_id!r} is not a Hugging Face model id: use 'org/name', e.g. 'Qwen/Qwen2.5-0.5B'"
            ) from None
        except httpx2.TimeoutException:
            raise self._timeout(repo_id) from None
        except (httpx2.TransportError, OfflineModeIsEnabled, LocalEntryNotFoundError) as exc:
            cause = exc.__cause__
            if isinstance(cause, httpx2.TimeoutException):
                raise self._timeout(repo_id) from None
            if isinstance(cause, HfHubHTTPError):
                self._raise_http(cause, repo_id, token)
            raise HubUnavailable(
                f"the Hugging Face Hub at {self.endpoint} could not be reached: retry later, or {_FALLBACK_HINT}",
                endpoint=self.endpoint,
                suggestions=list(catalog_suggestions(repo_id)),
            ) from None
        except HfHubHTTPError as exc:
            self._raise_http(exc, repo_id, token)

    def _raise_http(self, exc: Any, repo_id: str, token: str | None) -> None:
        status = exc.response.status_code if getattr(exc, "response", None) is not None else 0
        if status == 401:
            raise HubGated(f"the Hub refused access to {repo_id!r}: {_TOKEN_HINT}", status_code=401) from None
        if status == 403:
            raise HubGated(
                f"the Hub refused this token access to {repo_id!r}: use a token with read access to the repo",
                status_code=403,
            ) from None
        if status == 404:
            raise HubRepoNotFound(
                f"no model {repo_id!r} on the Hugging Face Hub: check the spelling",
                suggestions=catalog_suggestions(repo_id),
            ) from None
        if status in (408, 504):
            raise self._timeout(repo_id) from None
        if status == 429:
            raise HubUnavailable(
                f"the Hugging Face Hub is rate-limiting requests: retry in a minute, or {_FALLBACK_HINT}",
                endpoint=self.endpoint,
            ) from None
        raise HubUnavailable(
            f"the Hugging Face Hub answered HTTP {status} for {repo_id!r}: retry later, or {_FALLBACK_HINT}",
            endpoint=self.endpoint,
        ) from None
