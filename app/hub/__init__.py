"""Model ids → ``config.json`` and exact parameter counts: from the catalog, an on-disk cache, or the Hugging Face
Hub through ``huggingface_hub`` (``client.py``); the cache is ``cache.py``; errors are ``app.errors.HubError``."""

from app.hub.cache import ConfigCache
from app.hub.client import HubClient, ResolvedModel, catalog_suggestions, check_repo_id, clean_token

__all__ = ["ConfigCache", "HubClient", "ResolvedModel", "catalog_suggestions", "check_repo_id", "clean_token"]
