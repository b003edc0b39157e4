"""Resolve a plan's model to its config and build the estimator's JSON contract: the one place that does it for the
REST API, the page, the verify jobs and the CLI.

A plan names its model in one of three ways, looked up in this order:

* an inline ``config`` (``source: inline``): used as given, after a size check;
* a catalog id or a catalog model's Hub id (``source: catalog``): the embedded catalog, no network;
* any other Hub id (``source: hub-config`` or ``hub-safetensors-metadata``): ``app.hub.HubClient`` (config.json and
  safetensors headers, no weights), with the caller's token or the server's.

The estimator is pure and typed; a crash on an odd user config (a field of the wrong type deep in a family parser)
is turned into ``ConfigError`` here, so the caller answers 422 instead of 500. An inline config is checked for
size and depth before anything walks it.

``response`` answers an estimate as JSON bytes, from an in-memory LRU cache keyed by ``estimator.plan_key`` (the
plan and the config it is estimated with): a repeated plan costs a dictionary lookup, not an estimate.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol, TypeVar

from app.errors import InvalidRequest
from app.inventory import transformers_parameters
from app.jobs.duration import run_seconds
from estimator import (
    CalibrationProfile,
    ConfigError,
    EstimatorError,
    Plan,
    PriceError,
    PriceTable,
    UnsupportedModelError,
    catalog,
    estimate,
    load_prices,
    plan_key,
    rent,
    step_flops,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

# What estimator code may raise on a config with odd fields (``EstimatorError`` itself passes through).
CONFIG_CRASHES: tuple[type[Exception], ...] = (
    TypeError,
    ValueError,
    KeyError,
    IndexError,
    AttributeError,
    ArithmeticError,
    RecursionError,
)


@dataclass(frozen=True)
class Resolved:
    """Where a plan's config comes from."""

    config: Mapping[str, Any]
    """The model's config.json."""
    source: str
    """``inline``, ``catalog``, ``hub-config`` or ``hub-safetensors-metadata`` (the ``X-Model-Source`` header)."""
    label: str
    """A name for people: the catalog name, the Hub id, or ``config.json (<model_type>)``."""
    hub: HubModel | None = None

    @property
    def estimate_config(self) -> Mapping[str, Any] | None:
        """What to pass to ``estimate(plan, config=...)``: None where the plan itself names the config."""
        return self.config if self.hub is not None else None


def guarded(fn: Callable[[], T], what: str) -> T:
    """Run estimator code on a user-supplied config (``what`` names it: "inline config", "Hub config", ...)."""
    try:
        return fn()
    except EstimatorError:
        raise
    except CONFIG_CRASHES as exc:
        log.warning("estimator failed on a %s: %r", what, exc, exc_info=True)
        raise ConfigError(
            f"the {what} could not be interpreted ({type(exc).__name__}: {exc}); "
            "check its fields against the model's Hugging Face config.json"
        ) from None


def config_label(config: Mapping[str, Any]) -> str:
    name = config.get("_name_or_path") or config.get("model_type") or "model"
    return f"config.json ({name})"


def price_table(path: Path | None) -> PriceTable | None:
    """The user's price table (``TUNEPLAN_PRICES``, ``--prices``), or None for the built-in one."""
    if path is None:
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PriceError(f"cannot read the price table {path}: {exc}") from None
    return load_prices(text, str(path))


CALIBRATION_TTL_S = 5.0
"""How long a GPU's latest calibration profile is reused before the job database is asked again."""

DEFAULT_MAX_CONFIG_BYTES = 256 * 1024
"""Largest inline or Hub config.json (``TUNEPLAN_MAX_CONFIG_BYTES``)."""

MAX_CONFIG_DEPTH = 32
"""Deepest nesting of objects and lists in an inline config (published configs nest 3 or 4 levels)."""

DEFAULT_CACHE_ENTRIES = 4096


def config_depth(value: Any, limit: int = MAX_CONFIG_DEPTH) -> int:
    """How deeply objects and lists nest in ``value`` (walked without recursion; stops counting past ``limit``)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping | list | tuple):
            deepest = max(deepest, depth)
            if depth > limit:
                return depth
            children = item.values() if isinstance(item, Mapping) else item
            stack.extend((child, depth + 1) for child in children)
    return deepest


def check_config_depth(config: Any, what: str = "inline config") -> None:
    """``InvalidRequest`` (422) when a config nests deeper than ``MAX_CONFIG_DEPTH``."""
    if config_depth(config) > MAX_CONFIG_DEPTH:
        raise InvalidRequest(
            f"the {what} nests objects or lists more than {MAX_CONFIG_DEPTH} levels deep; a config.json nests 3 or 4: "
            "send the model's config.json as published"
        )


class HubModel(Protocol):
    """What the service reads of a Hub lookup (``app.hub.ResolvedModel``)."""

    @property
    def repo_id(self) -> str: ...
    @property
    def config(self) -> dict[str, Any]: ...
    @property
    def params_source(self) -> str: ...
    @property
    def gated(self) -> bool: ...
    @property
    def safetensors_params(self) -> dict[str, int] | None: ...


class Hub(Protocol):
    """What the service needs of the Hub client (``app.hub.HubClient``; the CLI builds it only when needed)."""

    def resolve(
        self, repo_id: str, token: str | None = None, revision: str = "main", deadline: float | None = None
    ) -> HubModel: ...


class EstimateService:
    """Resolves plans (the Hub client for ids outside the catalog) and estimates them."""

    def __init__(
        self,
        hub: Hub,
        max_config_bytes: int = DEFAULT_MAX_CONFIG_BYTES,
        cache_entries: int = DEFAULT_CACHE_ENTRIES,
        *,
        prices: PriceTable | None = None,
        calibrations: Callable[[str], CalibrationProfile | None] | None = None,
    ) -> None:
        self.hub = hub
        self.max_config_bytes = max_config_bytes
        self.cache_entries = cache_entries
        self._cache: OrderedDict[str, tuple[bytes, str]] = OrderedDict()
        self._cache_lock = threading.Lock()
        self.prices = prices
        """The price table costs are computed with (None: the estimator's built-in one); fixed for the service's
        life, so the answer cache need not key on it."""
        self.calibrations = calibrations
        """The latest calibration profile for a catalog GPU id (``JobRunner.latest_calibration``), if any."""
        self._profiles: dict[str, tuple[float, CalibrationProfile | None]] = {}

    @staticmethod
    def needs_hub(plan: Plan) -> bool:
        """Whether resolving ``plan`` asks the Hub (a model id outside the catalog)."""
        return plan.config is None and catalog.find_model(plan.model or "") is None

    def resolve(self, plan: Plan, token: str | None = None, deadline: float | None = None) -> Resolved:
        """The config a plan stands for; ``HubError`` / ``UnknownModelError`` when its model cannot be found.

        ``deadline`` (``time.monotonic()``) bounds a Hub lookup; the client's own timeout applies without one."""
        if plan.config is not None:
            check_config_depth(plan.config)
            size = len(json.dumps(plan.config, separators=(",", ":")))
            if size > self.max_config_bytes:
                raise InvalidRequest(
                    f"the inline config is {size} bytes; the limit is {self.max_config_bytes} bytes: "
                    "send config.json itself, not a checkpoint or an index"
                )
            return Resolved(plan.config, "inline", config_label(plan.config))
        assert plan.model is not None  # Plan guarantees one of the two
        entry = catalog.find_model(plan.model)
        if entry is not None:
            return Resolved(entry.config, "catalog", entry.name)
        found = self.hub.resolve(plan.model, token, deadline=deadline)
        return Resolved(found.config, found.params_source.replace(" ", "-"), found.repo_id, found)

    def contract(self, plan: Plan, resolved: Resolved, *, advice: bool = True) -> dict[str, Any]:
        """``estimate(plan).to_dict()`` for a resolved plan (a crash on an odd config becomes ``ConfigError``);
        ``advice=False`` leaves out the advisor's levers (the page's sweeps need the memory only)."""
        what = {"inline": "inline config", "catalog": "catalog config"}.get(resolved.source, "Hub config")
        calibration = self.calibration_for(plan)

        files = resolved.hub.safetensors_params if resolved.hub is not None else None
        one = partial(
            estimate, plan, config=resolved.estimate_config, prices=self.prices, calibration=calibration,
            with_advice=advice, files=files,
        )  # fmt: skip

        def run() -> dict[str, Any]:
            try:
                return one().to_dict()
            except UnsupportedModelError as refused:
                try:  # any other model type transformers can build
                    params = transformers_parameters(resolved.config)
                except UnsupportedModelError as exc:
                    raise UnsupportedModelError(f"{refused}; transformers could not build it either: {exc}") from None
                if params is None:
                    raise  # its message names the train extra
                return one(params=params).to_dict()

        return guarded(run, what)

    def run_seconds(self, plan: Plan, resolved: Resolved, steps: int, gpu_name: str | None) -> float | None:
        """About how long a verify run of ``plan`` takes on its device (``app.jobs.duration``): the step's FLOPs and
        dequantized bytes (``estimator.step_flops``); on a GPU the time model's step time on ``gpu_name`` (what
        nvidia-smi calls the server's card) when it is a catalog card."""
        est = guarded(lambda: estimate(plan, config=resolved.estimate_config, with_advice=False), "config")
        work = step_flops(est.inventory, est.adapters, est.plan)
        gpu = catalog.gpu_for_device(gpu_name) if plan.device == "cuda" and gpu_name else None
        timed = None
        if gpu is not None:
            timed = estimate(est.plan.replace(gpu=gpu.id), config=resolved.estimate_config, with_advice=False).time
        step = None if timed is None else timed.step_s
        return run_seconds(plan.device, plan.method, est.inventory.total, work.total, work.dequant_bytes, steps, step)

    def calibration_for(self, plan: Plan) -> CalibrationProfile | None:
        """The profile for the plan's GPU when its ``calibration`` is ``auto`` and runs measured one. The latest
        profile of a GPU is read from the job database at most every ``CALIBRATION_TTL_S`` (a run recorded by this
        or another worker is used from then on)."""
        if self.calibrations is None or plan.gpu is None or plan.calibration != "auto" or plan.device != "cuda":
            return None
        gpu = catalog.find_gpu(plan.gpu)
        if gpu is None or gpu.custom:
            return None
        now = time.monotonic()
        known = self._profiles.get(gpu.id)
        if known is None or known[0] < now:
            known = (now + CALIBRATION_TTL_S, self.calibrations(gpu.id))
            self._profiles[gpu.id] = known
        return known[1]

    def rent(self, plan: Plan, token: str | None = None) -> dict[str, Any]:
        """Every catalog GPU and count that fits the plan, cheapest first (``estimator.rent``)."""
        return self.rent_resolved(plan, self.resolve(plan, token))

    def rent_resolved(self, plan: Plan, resolved: Resolved) -> dict[str, Any]:
        """``rent`` for a resolved plan."""
        what = {"inline": "inline config", "catalog": "catalog config"}.get(resolved.source, "Hub config")
        return guarded(lambda: rent(plan, config=resolved.estimate_config, prices=self.prices), what)

    def model_id(self, plan: Plan, resolved: Resolved) -> str | None:
        """The Hub id a training script loads: a catalog entry's Hub id, a Hub id as given; None for inline configs."""
        if resolved.source == "inline" or plan.model is None:
            return None
        entry = catalog.find_model(plan.model)
        return entry.hf_id if entry is not None else resolved.label

    def estimate(self, plan: Plan, token: str | None = None) -> tuple[dict[str, Any], Resolved]:
        """Resolve and estimate in one call."""
        resolved = self.resolve(plan, token)
        return self.contract(plan, resolved), resolved

    # ------------------------------------------------------------------------------------------ cached answers

    def _key(self, plan: Plan, resolved: Resolved | None) -> str:
        """The plan, its config and the calibration run it would use: a newly recorded run changes the answer."""
        profile = self.calibration_for(plan)
        key = plan_key(plan, resolved.estimate_config if resolved is not None else None)
        return key if profile is None else f"{key}:{profile.run_id}"

    def cached(self, plan: Plan) -> tuple[bytes, str] | None:
        """The cached answer of a catalog plan (JSON, ``X-Model-Source``), without resolving anything; None on a miss
        or for other plans (their key needs the resolved config, or hashing an inline one)."""
        if plan.config is not None or self.cache_entries <= 0 or catalog.find_model(plan.model or "") is None:
            return None
        return self._get(self._key(plan, None))

    def response(self, plan: Plan, resolved: Resolved) -> tuple[bytes, str]:
        """``estimate(plan).to_dict()`` as compact JSON bytes and the config's source, cached by plan key."""
        key = self._key(plan, resolved)
        hit = self._get(key)
        if hit is not None:
            return hit
        body = json.dumps(self.contract(plan, resolved), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        answer = (body.encode(), resolved.source)
        if self.cache_entries > 0:
            with self._cache_lock:
                self._cache[key] = answer
                while len(self._cache) > self.cache_entries:
                    self._cache.popitem(last=False)
        return answer

    def _get(self, key: str) -> tuple[bytes, str] | None:
        with self._cache_lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
            return hit
