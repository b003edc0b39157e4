"""Typed errors of the estimator.

Every error a user can cause is an ``EstimatorError``; the web app maps them to 4xx responses and the CLI to exit
code 2, with the message as it stands, so each message says what to fix::

    EstimatorError
    ├── PlanError               a plan field is out of range or inconsistent        -> 422
    ├── ConfigError             a config.json is malformed or not a causal LM       -> 422
    │   └── UnsupportedModelError   its model_type is not one we model exactly      -> 422
    ├── UnknownModelError       no catalog entry (and no Hub lookup) for an id      -> 404
    └── PriceError              a price table (JSON) is malformed                   -> 422
"""

from __future__ import annotations


class EstimatorError(ValueError):
    """Base class: bad input that the user can fix."""


class PlanError(EstimatorError):
    """A plan field is out of range, or fields contradict each other."""


class ConfigError(EstimatorError):
    """A config.json is malformed, or describes something that is not a causal language model."""


class UnsupportedModelError(ConfigError):
    """The config's model_type is not one whose architecture is modelled exactly."""


class UnknownModelError(EstimatorError):
    """An id names no catalog model."""

    def __init__(self, message: str, suggestions: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.suggestions = suggestions


class PriceError(EstimatorError):
    """A price table is malformed: what to fix is in the message."""
