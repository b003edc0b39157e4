"""tuneplan's estimator: config -> parameter inventory -> storage and training-memory breakdown.

Standard library only; every figure is an integer number of bytes derived from named parts. This module is the
public surface: code outside ``estimator/`` imports these names only (``tests/test_structure.py`` holds it to that).

    >>> from estimator import Plan, estimate
    >>> est = estimate(Plan(model="llama-3.1-8b", method="qlora", seq_len=2048))
    >>> est.to_dict()["memory"]["peak_allocated"]  # doctest: +SKIP
"""

from . import catalog
from ._arch import (
    LEGACY_MODEL_TYPES,
    SIZE_FIELDS,
    SUPPORTED_MODEL_TYPES,
    WORK_LIMITS,
    Architecture,
    attention_implementation,
    checkpoint_tie,
    legacy_config,
    parse_config,
)
from ._compare import TENSOR_COMPONENTS, TIERS, compare, relative_error
from ._errors import ConfigError, EstimatorError, PlanError, PriceError, UnknownModelError, UnsupportedModelError
from ._estimate import Estimate, estimate, plan_key
from ._generic import generic_architecture, generic_inventory
from ._inventory import Inventory, Tensor, build_inventory
from ._kernels import AttentionPath, attention_path, cuda_sdpa_backend, has_mask
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
    forward_activations,
    gpu_runtime,
    head_loss,
    layer_sizes,
    training_memory,
    weight_bytes,
)
from ._plan import METHODS, OBJECTIVES, FieldSpec, Plan, PlanField, parse_pair, plan_field, plan_fields
from ._prices import Price, PriceTable, cost_rows, default_prices, load_prices, parse_prices
from ._quant import (
    CUDA_ALLOC_ROUND,
    alloc,
    bits_per_weight,
    four_bit_bytes,
    four_bit_parts,
    int8_bytes,
    int8_parts,
)
from ._rent import COUNTS, rent
from ._runtime import CalibrationProfile, Runtime, calibration_from_run, runtime_for
from ._sharding import DEEPSPEED_REDUCE_BUCKET, deepspeed_config
from ._storage import WHY_EXACT_DIFFERS, RuleOfThumb, published_bytes, storage
from ._time import Mfu, StepFlops, Throughput, TimeEstimate, default_mfu, host_ops, step_flops, step_time, throughput
from ._units import GB, GIB, MIB, count_text, gb_text, gib_text, size_text

__all__ = [
    "ALLOCATOR_CACHE_FLOOR",
    "COMPONENTS",
    "COUNTS",
    "CUBLAS_WORKSPACE_BYTES",
    "CUDA_ALLOC_ROUND",
    "CUDA_CONTEXT_BYTES",
    "CUDA_RUNTIME_BYTES",
    "DEEPSPEED_REDUCE_BUCKET",
    "GB",
    "GIB",
    "LEGACY_MODEL_TYPES",
    "METHODS",
    "MIB",
    "OBJECTIVES",
    "SIZE_FIELDS",
    "SUPPORTED_MODEL_TYPES",
    "TENSOR_COMPONENTS",
    "TIERS",
    "WHY_EXACT_DIFFERS",
    "WORK_LIMITS",
    "AdapterPlan",
    "Architecture",
    "AttentionPath",
    "CalibrationProfile",
    "ConfigError",
    "Estimate",
    "EstimatorError",
    "FieldSpec",
    "HeadLoss",
    "Inventory",
    "MemoryEstimate",
    "Mfu",
    "Plan",
    "PlanError",
    "PlanField",
    "Price",
    "PriceError",
    "PriceTable",
    "RuleOfThumb",
    "Runtime",
    "StepFlops",
    "Tensor",
    "Term",
    "Throughput",
    "TimeEstimate",
    "UnknownModelError",
    "UnsupportedModelError",
    "adapter_plan",
    "alloc",
    "attention_implementation",
    "attention_path",
    "bits_per_weight",
    "build_inventory",
    "calibration_from_run",
    "catalog",
    "checkpoint_tie",
    "compare",
    "cost_rows",
    "count_text",
    "cuda_sdpa_backend",
    "deepspeed_config",
    "default_mfu",
    "default_prices",
    "dtype_flow",
    "estimate",
    "forward_activations",
    "four_bit_bytes",
    "four_bit_parts",
    "gb_text",
    "generic_architecture",
    "generic_inventory",
    "gib_text",
    "gpu_runtime",
    "has_mask",
    "head_loss",
    "host_ops",
    "int8_bytes",
    "int8_parts",
    "layer_sizes",
    "legacy_config",
    "load_prices",
    "parse_config",
    "parse_pair",
    "parse_prices",
    "plan_field",
    "plan_fields",
    "plan_key",
    "published_bytes",
    "relative_error",
    "rent",
    "runtime_for",
    "size_text",
    "step_flops",
    "step_time",
    "storage",
    "throughput",
    "training_memory",
    "weight_bytes",
]
