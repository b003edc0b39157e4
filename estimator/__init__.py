"""tuneplan's estimator: config -> parameter inventory -> storage and training-memory breakdown.

Standard library only; every figure is an integer number of bytes derived from named parts.

    >>> from estimator import Plan, estimate
    >>> est = estimate(Plan(model="llama-3.1-8b", method="qlora", seq_len=2048))
    >>> est.to_dict()["memory"]["peak_allocated"]  # doctest: +SKIP
"""

from . import catalog
from ._arch import SUPPORTED_MODEL_TYPES, Architecture, parse_config
from ._errors import ConfigError, EstimatorError, PlanError, UnknownModelError, UnsupportedModelError
from ._estimate import Estimate, estimate, plan_key
from ._inventory import Inventory, Tensor, build_inventory
from ._lora import AdapterPlan, adapter_plan
from ._memory import COMPONENTS, MemoryEstimate, Term, training_memory
from ._plan import Plan
from ._storage import RuleOfThumb, storage

__all__ = [
    "COMPONENTS",
    "SUPPORTED_MODEL_TYPES",
    "AdapterPlan",
    "Architecture",
    "ConfigError",
    "Estimate",
    "EstimatorError",
    "Inventory",
    "MemoryEstimate",
    "Plan",
    "PlanError",
    "RuleOfThumb",
    "Tensor",
    "Term",
    "UnknownModelError",
    "UnsupportedModelError",
    "adapter_plan",
    "build_inventory",
    "catalog",
    "estimate",
    "parse_config",
    "plan_key",
    "storage",
    "training_memory",
]
