"""Benchmarks and measurement harnesses (``python -m bench.accuracy``, ``python bench/gpu_check.py``, ...)."""
