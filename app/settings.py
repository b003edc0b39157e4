"""Settings of the web app, from the environment (prefix ``TUNEPLAN_``) with embedded defaults.

``tuneplan serve`` runs with no configuration at all: every field has a default, and the defaults keep the server
to loopback (``host``, ``allowed_hosts``). The Hub endpoint follows ``HF_ENDPOINT`` like the ``huggingface_hub``
client does, and the server's Hub token is read from ``HF_TOKEN`` (or ``TUNEPLAN_HF_TOKEN``): it is used only for
requests that carry the server's API token (``api_token``); a caller's own ``X-HF-Token`` wins over it. Neither
token is logged or stored. docs/security.md says what each setting protects.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.service import DEFAULT_MAX_CONFIG_BYTES

PROJECT_ROOT = Path(__file__).resolve().parent.parent
"""The checkout (or install) root: ``templates/`` and ``static/`` live here."""

DEFAULT_HF_ENDPOINT = "https://huggingface.co"
LOOPBACK_HOSTS: tuple[str, ...] = ("127.0.0.1", "localhost", "::1")
"""The host names a loopback server answers to by default (``TUNEPLAN_ALLOWED_HOSTS``)."""
MIN_API_TOKEN_CHARS = 16


def _default_hf_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT") or DEFAULT_HF_ENDPOINT


class Settings(BaseSettings):
    """Everything the app reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="TUNEPLAN_", extra="ignore", populate_by_name=True)

    host: str = Field(default="127.0.0.1", description="Interface that `tuneplan serve` binds.")
    port: int = Field(default=8000, ge=0, le=65535, description="Port that `tuneplan serve` binds.")
    data_dir: Path = Field(default=Path("data"), description="Where the app keeps its cache (gitignored).")
    hf_endpoint: str = Field(
        default_factory=_default_hf_endpoint,
        description="Hugging Face Hub endpoint; defaults to HF_ENDPOINT, else https://huggingface.co.",
    )
    hf_token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("TUNEPLAN_HF_TOKEN", "HF_TOKEN", "hf_token"),
        description="Default Hub token (HF_TOKEN); a token sent with a request wins.",
    )
    api_token: SecretStr | None = Field(
        default=None,
        description="Token of the jobs API, sent as 'Authorization: Bearer <token>'. Unset: the jobs API answers "
        "loopback clients only, and tuneplan serve refuses to expose it on another interface.",
    )
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(LOOPBACK_HOSTS),
        description="Host names requests may name in their Host header (comma-separated; '*.example.com' "
        "matches subdomains, '*' any host). Anything else is refused (DNS rebinding).",
    )
    jobs_enabled: bool = Field(default=True, description="Whether this server accepts verify runs at all.")
    workers: int = Field(default=1, ge=1, le=64, description="Web worker processes of `tuneplan serve`.")
    hub_timeout_s: float = Field(default=10.0, gt=0, le=600, description="Deadline of one Hub resolution.")
    cache_max_entries: int = Field(default=512, ge=0, description="Resolved configs kept on disk (LRU).")
    cache_ttl_s: float = Field(
        default=7 * 24 * 3600.0, ge=0, description="Age after which a cached Hub config is fetched again."
    )
    max_config_bytes: int = Field(
        default=DEFAULT_MAX_CONFIG_BYTES, ge=1024, description="Largest inline or Hub config.json."
    )
    max_concurrent_jobs: int = Field(
        default=1, ge=0, le=64, description="Verify runs at once (0: jobs are accepted and queued, none runs)."
    )
    job_timeout_s: float = Field(default=1800.0, gt=0, description="A verify run is killed after this long.")
    max_queued_jobs: int = Field(
        default=8, ge=0, le=10_000, description="Verify jobs waiting to run; past it POST /api/jobs answers 429."
    )
    job_history: int = Field(
        default=200, ge=1, le=1_000_000, description="Finished verify jobs kept (the oldest are deleted)."
    )
    run_memory_bytes: int | None = Field(
        default=None,
        ge=0,
        description="Cap on a verify run's host memory (its data segment); unset: 80% of the host's RAM; 0: none.",
    )
    estimate_cache_entries: int = Field(
        default=4096, ge=0, le=1_000_000, description="Estimate answers kept in memory, by plan key (LRU)."
    )
    ray_address: str | None = Field(
        default=None,
        description="A Ray cluster's dashboard address (http://host:8265): verify runs become Ray jobs there "
        "instead of local processes (pip install -e '.[ray]').",
    )
    verify_device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="Where verify runs go: auto is cuda when nvidia-smi runs, else cpu."
    )
    train_module: str = Field(
        default="torch",
        min_length=1,
        description="Module whose presence (found, never imported) means the train extra is installed.",
    )
    prices: Path | None = Field(
        default=None,
        description="A price table (JSON, like estimator/data/prices.json) that replaces the built-in one.",
    )
    templates_dir: Path = Field(default=PROJECT_ROOT / "templates")
    static_dir: Path = Field(default=PROJECT_ROOT / "static")

    @field_validator("hf_endpoint")
    @classmethod
    def _strip_endpoint(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError("hf_endpoint must be an http(s) URL, like https://huggingface.co")
        return value

    @field_validator("api_token")
    @classmethod
    def _strong_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        token = value.get_secret_value().strip()
        if len(token) < MIN_API_TOKEN_CHARS or not token.isprintable() or " " in token:
            raise ValueError(
                f"TUNEPLAN_API_TOKEN must be at least {MIN_API_TOKEN_CHARS} printable characters without spaces; "
                "make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        return SecretStr(token)

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _host_list(cls, value: Any) -> Any:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            return value
        hosts = [str(h).strip().lower() for h in items if str(h).strip()]
        for host in hosts:
            if "*" in host[1:] or (host.startswith("*") and host != "*" and not host.startswith("*.")):
                raise ValueError(f"allowed host {host!r}: a wildcard may only start a name, as in '*.example.com'")
        if not hosts:
            raise ValueError("TUNEPLAN_ALLOWED_HOSTS is empty: list the host names the server is reached by")
        return hosts

    def api_token_value(self) -> str | None:
        """The jobs API token, if the server has one."""
        return None if self.api_token is None else self.api_token.get_secret_value()

    @property
    def jobs_db(self) -> Path:
        """The SQLite file of the verify jobs."""
        return self.data_dir / "jobs.sqlite3"

    @property
    def runs_dir(self) -> Path:
        """Work directories of the verify runs in progress (one per job, removed when it ends)."""
        return self.data_dir / "runs"

    @property
    def runner_lock(self) -> Path:
        """The lock file the one job runner of a data directory holds."""
        return self.data_dir / "runner.lock"

    @property
    def cache_dir(self) -> Path:
        """Directory of the on-disk cache of resolved Hub configs."""
        return self.data_dir / "hub-cache"

    def token(self) -> str | None:
        """The server's Hub token, if any (used only for callers that carry the API token)."""
        if self.hf_token is None:
            return None
        value = self.hf_token.get_secret_value().strip()
        return value or None
