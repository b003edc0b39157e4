"""Bounded on-disk cache of resolved Hub configs: one JSON file per (endpoint, repo, revision), LRU by mtime."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class ConfigCache:
    """Bounded on-disk cache: one JSON file per key, least recently used evicted (mtime, touched on hits)."""

    def __init__(self, directory: Path, max_entries: int, ttl_s: float) -> None:
        self.directory = directory
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._lock = threading.Lock()

    @staticmethod
    def key(endpoint: str, repo_id: str, revision: str) -> str:
        return hashlib.sha256(f"{endpoint}\n{repo_id}\n{revision}".encode()).hexdigest()[:40]

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        if self.max_entries <= 0:
            return None
        path = self._path(key)
        try:
            with path.open("rb") as fh:
                entry = json.load(fh)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        if not isinstance(entry, dict) or not isinstance(entry.get("config"), dict):
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        fetched = entry.get("fetched_at")
        if not isinstance(fetched, int | float) or time.time() - fetched > self.ttl_s:
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # mark as recently used
        return entry

    def put(self, key: str, entry: dict[str, Any]) -> None:
        if self.max_entries <= 0:
            return
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".json")
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(entry, fh)
            os.replace(tmp, self._path(key))
        except OSError as exc:  # a cache that cannot be written is not an error of the request
            log.warning("could not write the Hub config cache in %s: %s", self.directory, exc)
            return
        self._evict()

    def _evict(self) -> None:
        with self._lock:
            entries: list[tuple[float, Path]] = []
            try:
                for path in self.directory.glob("*.json"):
                    with contextlib.suppress(OSError):
                        entries.append((path.stat().st_mtime, path))
            except OSError:
                return
            excess = len(entries) - self.max_entries
            if excess <= 0:
                return
            entries.sort(key=lambda item: item[0])
            for _, path in entries[:excess]:
                with contextlib.suppress(OSError):
                    path.unlink()

    def __len__(self) -> int:
        try:
            return sum(1 for _ in self.directory.glob("*.json"))
        except OSError:
            return 0

    def clear(self) -> None:
        with contextlib.suppress(OSError):
            for path in self.directory.glob("*.json"):
                with contextlib.suppress(OSError):
                    path.unlink()
