"""Estimator calls on a user's config: a crash on odd input becomes a 422 (``ConfigError``), not a 500.

Shared by the REST API (``app.api``), the verify jobs (``app.jobs``) and the page (``app.pages``). The estimator
is imported by the call, not with this module: the page renders its form even if the estimator is broken.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

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


def guard_config_call(fn: Callable[[], T], what: str) -> T:
    """Run estimator code on a user-supplied config (``what`` names it in the message: "inline config", ...)."""
    from estimator import ConfigError, EstimatorError

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
