"""Parameters of a model type the estimator has no hand-written family for, read from transformers itself.

``python -m trainer.inventory`` builds the model on the meta device in a subprocess (the app never imports the
training stack; the config is data and no repo code runs) and lists every parameter. Results are cached by the
config's hash for the process's life (a config's parameters never change). Without the train extra (torch and
transformers) there is no list: the estimator's refusal then names the extra.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from estimator import UnsupportedModelError

INVENTORY_TIMEOUT_S = 120
CACHE_SIZE = 64
_cache: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
_lock = threading.Lock()


def train_extra_installed() -> bool:
    """Whether torch and transformers can be imported (the train extra)."""
    return all(importlib.util.find_spec(m) is not None for m in ("torch", "transformers"))


def config_hash(config: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def transformers_parameters(config: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """Every parameter transformers builds for ``config`` (``{"name", "shape", "module"}``), or None without the
    train extra. ``UnsupportedModelError`` when transformers cannot build it (its reason in the message)."""
    if not train_extra_installed():
        return None
    key = config_hash(config)
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "trainer.inventory"], input=json.dumps(dict(config)), capture_output=True,
            text=True, timeout=INVENTORY_TIMEOUT_S, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise UnsupportedModelError(
            f"building this model on the meta device took over {INVENTORY_TIMEOUT_S} s; it was not estimated"
        ) from None
    if proc.returncode != 0:
        reason = (proc.stderr.strip().splitlines() or ["no reason given"])[-1].removeprefix("error: ")
        raise UnsupportedModelError(f"model_type {config.get('model_type')!r}: {reason[:300]}")
    params: list[dict[str, Any]] = json.loads(proc.stdout)
    with _lock:
        _cache[key] = params
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return params
