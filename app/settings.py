"""Settings of the web app, from the environment (prefix ``TUNEPLAN_``) with embedded defaults.

``tuneplan serve`` runs with no configuration at all: every field has a default. The Hub endpoint follows
``HF_ENDPOINT`` like the ``huggingface_hub`` client does, and the Hub token is read from ``HF_TOKEN`` (or
``TUNEPLAN_HF_TOKEN``); a token sent with a request wins over both and is never logged or stored.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.service import DEFAULT_MAX_CONFIG_BYTES

PROJECT_ROOT = Path(__file__).resolve().parent.parent
"""The checkout (or install) root: ``templates/`` and ``static/`` live here."""

DEFAULT_HF_ENDPOINT = "https://huggingface.co"


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

    @property
    def jobs_db(self) -> Path:
        """The SQLite file of the verify jobs."""
        return self.data_dir / "jobs.sqlite3"

    @property
    def cache_dir(self) -> Path:
        """Directory of the on-disk cache of resolved Hub configs."""
        return self.data_dir / "hub-cache"

    def token(self) -> str | None:
        """The default Hub token, if any."""
        if self.hf_token is None:
            return None
        value = self.hf_token.get_secret_value().strip()
        return value or None
