"""tuneplan's measured truth: build a plan's model with random weights, run real (or traced) training steps and
measure exactly what they allocate.

This package's top level stays free of torch so that torch-free callers can import it; the modules that need
torch import it themselves:

- ``trainer.tracker``: the live-tensor ``MemoryTracker`` (per category, per phase)
- ``trainer.build``: model / adapters / optimizer from (config, Plan)
- ``trainer.run``: the real run, ``python -m trainer.run --plan plan.json --out result.json``
- ``trainer.traced``: the fake-tensor dry run at real sizes, ``python -m trainer.traced ...``
- ``trainer.depth``: a traced step at a few decoder layers, extended to the model's depth where that is exact
  (torch-free)
"""

from __future__ import annotations
