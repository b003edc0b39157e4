"""The ``Plan`` type, taken from the estimator (stdlib only, so importing it never pulls in torch)."""

from __future__ import annotations

try:
    from estimator import Plan
except ImportError:  # the package's public __init__ may not re-export it yet; the module is the source
    from estimator._plan import Plan

__all__ = ["Plan"]
