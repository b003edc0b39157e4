"""tuneplan's estimator: config -> parameter inventory -> storage and training-memory breakdown.

Standard library only; every figure is an integer number of bytes derived from named parts. This module is the
public surface: code outside ``estimator/`` imports these names only (``tests/test_structure.py`` holds it to that).

    >>> from estimator import Plan, estimate
    >>> est = estimate(Plan(model="llama-3.1-8b", method="qlora", seq_len=2048))
    >>> est.to_dict()["memory"]["peak_allocated"]  # doctest: +SKIP
"""

from . import catalog
from ._arch import (
    SIZE_FIELDS,
    SUPPORTED_MODEL_TYPES,
    WORK_LIMITS,
    Architecture,
    attention_implementation,
    parse_config,
)
from ._compare import TENSOR_COMPONENTS, TIERS, compare, relative_error
from ._errors import ConfigError, EstimatorError, PlanError, UnknownModelError, UnsupportedModelError
from ._estimate import Estimate, estimate, plan_key
from ._inventory import Inventory, Tensor, build_inventory
from ._lora import AdapterPlan, adapter_plan
from ._memory import (
    ALLOCATOR_CACHE_FLOOR,
    COMPONENTS,
    CUBLAS_WORKSPACE_BYTES,
    CUDA_CONTEXT_BYTES,
    CUDA_RUNTIME_BYTES,
    HeadLoss,
    MemoryEstimate,
    Term,
    dtype_flow,
    head_loss,
    training_memory,
    weight_bytes,
)
from ._plan import METHODS, FieldSpec, Plan, PlanField, plan_field, plan_fields
from ._quant import (
    CUDA_ALLOC_ROUND,
    alloc,
    bits_per_weight,
    four_bit_bytes,
    four_bit_parts,
    int8_bytes,
    int8_parts,
)
from ._storage import WHY_EXACT_DIFFERS, RuleOfThumb, storage
from ._units import GB, GIB, MIB, count_text, gb_text, gib_text, size_text

__all__ = [
    "ALLOCATOR_CACHE_FLOOR",
    "COMPONENTS",
    "CUBLAS_WORKSPACE_BYTES",
    "CUDA_ALLOC_ROUND",
    "CUDA_CONTEXT_BYTES",
    "CUDA_RUNTIME_BYTES",
    "GB",
    "GIB",
    "METHODS",
    "MIB",
    "SIZE_FIELDS",
    "SUPPORTED_MODEL_TYPES",
    "TENSOR_COMPONENTS",
    "TIERS",
    "WHY_EXACT_DIFFERS",
    "WORK_LIMITS",
    "AdapterPlan",
    "Architecture",
    "ConfigError",
    "Estimate",
    "EstimatorError",
    "FieldSpec",
    "HeadLoss",
    "Inventory",
    "MemoryEstimate",
    "Plan",
    "PlanError",
    "PlanField",
    "RuleOfThumb",
    "Tensor",
    "Term",
    "UnknownModelError",
    "UnsupportedModelError",
    "adapter_plan",
    "alloc",
    "attention_implementation",
    "bits_per_weight",
    "build_inventory",
    "catalog",
    "compare",
    "count_text",
    "dtype_flow",
    "estimate",
    "four_bit_bytes",
    "four_bit_parts",
    "gb_text",
    "gib_text",
    "head_loss",
    "int8_bytes",
    "int8_parts",
    "parse_config",
    "plan_field",
    "plan_fields",
    "plan_key",
    "relative_error",
    "size_text",
    "storage",
    "training_memory",
    "weight_bytes",
]
