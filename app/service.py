"""Resolve a plan's model to its config and build the estimator's JSON contract: the one place that does it for the
REST API, the page, the verify jobs and the CLI.

A plan names its model in one of three ways, looked up in this order:

* an inline ``config`` (``source: inline``): used as given, after a size check;
* a catalog id or a catalog model's Hub id (``source: catalog``): the embedded catalog, no network;
* any other Hub id (``source: hub-config`` or ``hub-safetensors-metadata``): ``app.hub.HubClient`` (config.json and
  safetensors headers, no weights), with the caller's token or the server's.

The estimator is pure and typed; a crash on an odd user config (a field of the wrong type deep in a family parser)
is turned into ``ConfigError`` here, so the caller answers 422 instead of 500.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from app.errors import InvalidRequest
from estimator import (
    CalibrationProfile,
    ConfigError,
    EstimatorError,
    Plan,
    PriceError,
    PriceTable,
    catalog,
    estimate,
    load_prices,
    rent,
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


DEFAULT_MAX_CONFIG_BYTES = 256 * 1024
"""Largest inline or Hub config.json (``TUNEPLAN_MAX_CONFIG_BYTES``)."""


class HubModel(Protocol):
    """What the service reads of a Hub lookup (``app.hub.ResolvedModel``)."""

    @property
    def repo_id(self) -> str: ...
    @property
    def config(self) -> dict[str, Any]: ...
    @property
    def params_source(self) -> str: ...


class Hub(Protocol):
    """What the service needs of the Hub client (``app.hub.HubClient``; the CLI builds it only when needed)."""

    def resolve(self, repo_id: str, token: str | None = None, revision: str = "main") -> HubModel: ...


class EstimateService:
    """Resolves plans (the Hub client for ids outside the catalog) and estimates them."""

    def __init__(
        self,
        hub: Hub,
        max_config_bytes: int = DEFAULT_MAX_CONFIG_BYTES,
        prices: PriceTable | None = None,
        calibrations: Callable[[str], CalibrationProfile | None] | None = None,
    ) -> None:
        self.hub = hub
        self.max_config_bytes = max_config_bytes
        self.prices = prices
        """The price table costs are computed with (None: the estimator's built-in one)."""
        self.calibrations = calibrations
        """The latest calibration profile for a catalog GPU id (``JobRunner.latest_calibration``), if any."""

    def resolve(self, plan: Plan, token: str | None = None) -> Resolved:
        """The config a plan stands for; ``HubError`` / ``UnknownModelError`` when its model cannot be found."""
        if plan.config is not None:
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
        found = self.hub.resolve(plan.model, token)
        return Resolved(found.config, found.params_source.replace(" ", "-"), found.repo_id, found)

    def contract(self, plan: Plan, resolved: Resolved) -> dict[str, Any]:
        """``estimate(plan).to_dict()`` for a resolved plan (a crash on an odd config becomes ``ConfigError``)."""
        what = {"inline": "inline config", "catalog": "catalog config"}.get(resolved.source, "Hub config")
        calibration = self.calibration_for(plan)
        return guarded(
            lambda: estimate(
                plan, config=resolved.estimate_config, prices=self.prices, calibration=calibration
            ).to_dict(),
            what,
        )

    def calibration_for(self, plan: Plan) -> CalibrationProfile | None:
        """The profile for the plan's GPU when its ``calibration`` is ``auto`` and runs measured one."""
        if self.calibrations is None or plan.gpu is None or plan.calibration != "auto" or plan.device != "cuda":
            return None
        gpu = catalog.find_gpu(plan.gpu)
        return self.calibrations(gpu.id) if gpu is not None else None

    def rent(self, plan: Plan, token: str | None = None) -> dict[str, Any]:
        """Every catalog GPU and count that fits the plan, cheapest first (``estimator.rent``)."""
        resolved = self.resolve(plan, token)
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
