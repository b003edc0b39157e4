"""The real run: build a plan's model with random weights, train a few steps, and measure what they allocate.

Recipe (one process, top to bottom):

1. CUDA: ``torch.cuda.init()``; context = total - free from ``mem_get_info()`` before anything is loaded.
2. Build model + adapters + optimizer (``trainer.build``); CUDA: ``memory_allocated()`` after loading.
3. A seeded synthetic batch of exactly ``batch_size x seq_len`` token ids, labels a copy of them, shaped by
   ``plan.padding`` as a collator shapes it (``make_batch``): ``padded`` passes an ``attention_mask`` with the last
   row one token short (so transformers builds the mask, as for any batch of uneven rows; a single row is never
   padded), ``packed`` passes ``position_ids`` that restart mid-row (two sequences per row, no mask, as TRL's
   padding-free collator does), ``none`` passes ids and labels only.
4. Warm-up step (reported as ``first_step``: the optimizer state is created in it), then ``steps`` measured steps.
   A step is forward, backward, ``optimizer.step()`` + ``zero_grad(set_to_none=True)``. The forward is the model's
   own loss (``model(**batch).loss``) or, for ``loss: chunked``, TRL's fused LM head (``fused_lm_head=True``).
   ``training_loop: trainer`` drops the output object before backward, as the Trainer does; ``plain`` keeps it
   (``out = model(**batch); out.loss.backward()``) until the next step's forward replaces it. A pinned
   ``sdpa_backend`` runs the step under ``torch.nn.attention.sdpa_kernel``. CUDA: the warm-up step records which
   SDPA backend torch picked for the attention (``sdpa_backends``, ``recording_sdpa``).
5. CPU: every step runs under the live-tensor ``MemoryTracker`` (exact bytes per category and per phase).
   CUDA: per phase ``reset_peak_memory_stats()`` then ``max_memory_allocated/reserved()`` and driver-level use
   (total - free); the measured steps run untracked (their time is the step time), then one more step runs under
   the tracker (512-byte rounding, as the caching allocator rounds) for the per-category breakdown.
   ``torch.cuda.OutOfMemoryError`` is caught and reported (``"oom": true`` with the peak so far).

Command line::

    python -m trainer.run --plan plan.json [--config config.json] [--device cpu|cuda] [--steps N] --out result.json

The plan is the estimator's ``Plan`` JSON; the config is a Hugging Face ``config.json`` (else ``plan.config``, else
the estimator's catalog entry for ``plan.model``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch

from estimator import CUDA_ALLOC_ROUND, Plan

from .build import BuildError, Built, build, optimizer_state_tensors, quant_state_tensors
from .objectives import objective
from .tracker import MemoryTracker, attach_logits_scope
from .vision import vision_batch

# ---------------------------------------------------------------------------------------------------- helpers


def versions(device: torch.device | None = None) -> dict[str, Any]:
    """Versions of everything that changes the numbers."""
    out: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("transformers", "peft", "bitsandbytes", "accelerate", "trl"):
        try:  # the installed distribution's version: importing the package (accelerate, trl) would take seconds
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    out["cuda"] = torch.version.cuda
    if device is not None and device.type == "cuda":
        out["device_name"] = torch.cuda.get_device_name(device)
        out["driver"] = _driver_version()
    else:
        out["device_name"] = platform.processor() or platform.machine()
    return out


def _driver_version() -> str | None:
    try:
        import pynvml  # type: ignore[import-not-found]

        pynvml.nvmlInit()
        value = pynvml.nvmlSystemGetDriverVersion()
        return value.decode() if isinstance(value, bytes) else str(value)
    except Exception:
        return None


def allocator_settings() -> dict[str, str | None]:
    return {k: os.environ.get(k) for k in ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF")}


def resolve_config(plan: Plan, config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The config.json to build: the one given, else the plan's, else the estimator catalog's."""
    if config is not None:
        return dict(config)
    if plan.config is not None:
        return dict(plan.config)
    try:
        from estimator import catalog
    except ImportError as exc:
        raise BuildError(f"no config for model {plan.model!r}: pass --config (no catalog available)") from exc
    entry = catalog.find_model(plan.model or "")
    if entry is None:
        raise BuildError(f"no config for model {plan.model!r}: not in the catalog; pass --config")
    return dict(entry.config)


def plan_notes(plan: Plan) -> list[str]:
    """What this single-process run does not reproduce of the plan."""
    notes = []
    if plan.num_gpus > 1 or plan.sharding != "ddp":
        notes.append(
            f"measured on one device without sharding; the plan asks for {plan.num_gpus} GPU(s) with {plan.sharding}"
        )
    return notes


Batch = dict[str, torch.Tensor]
"""The model's keyword inputs for one step (``input_ids``, ``labels``, maybe ``attention_mask``/``position_ids``)."""


def shape_batch(ids: torch.Tensor, plan: Plan) -> Batch:
    """Labels and the padding inputs for ``ids`` (b x s), as a collator makes them for ``plan.padding``."""
    b, s = ids.shape
    labels = ids.clone()
    batch: Batch = {"input_ids": ids, "labels": labels}
    if plan.padding == "padded" and b > 1:
        mask = torch.ones_like(ids)
        mask[-1, -1] = 0  # the last row one token short: the batch is padded to its longest row
        labels[-1, -1] = -100
        batch["attention_mask"] = mask
    elif plan.padding == "packed":
        half = s // 2
        one_row = torch.cat([torch.arange(half), torch.arange(s - half)]).to(ids.device)
        positions = one_row.expand(b, s).clone()
        labels[positions == 0] = -100  # TRL's padding-free collator: no loss across a sequence start
        batch["position_ids"] = positions
    return batch


def make_batch(vocab_size: int, plan: Plan, device: torch.device, seed: int) -> Batch:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size, (plan.batch_size, plan.seq_len), generator=gen).to(device)
    return shape_batch(ids, plan)


def kept_tensors(built: Built) -> list[torch.Tensor]:
    """Tensors a plain training loop keeps from the previous step (its output object's tensors)."""
    out = built.kept.get("out")
    if out is None:
        return []
    values = out.values() if hasattr(out, "values") else ()
    return [v for v in values if isinstance(v, torch.Tensor)]


def preregister(tracker: MemoryTracker, built: Built, plan: Plan, batch: Batch) -> None:
    """Count everything that exists before the step, each under its category."""
    model = built.model
    trained = "adapters" if plan.adapters else "weights"
    for p in model.parameters():
        tracker.register(p, trained if p.requires_grad else "weights")
    tracker.register_many(model.buffers(), "weights")
    tracker.register_many(quant_state_tensors(model), "weights")
    tracker.register_many(optimizer_state_tensors(built.optimizer), "optimizer")
    tracker.register_many((p.grad for p in model.parameters() if p.grad is not None), "gradients")
    tracker.register_many(batch.values(), "activations")
    tracker.register_many(kept_tensors(built), "logits")
    tracker.register_many(built.kept.get("reference", ()), "reference")


@contextlib.contextmanager
def tracking(tracker: MemoryTracker, built: Built, plan: Plan, batch: Batch) -> Iterator[None]:
    """Pre-register, hook the gradients and the logits scope, and run the block under the tracker."""
    preregister(tracker, built, plan, batch)
    handles = [
        p.register_post_accumulate_grad_hook(  # type: ignore[no-untyped-call]
            lambda q: tracker.register(q.grad, "gradients")
        )
        for p in built.trainable
    ]
    remove_logits = attach_logits_scope(tracker, built.lm_head) if built.lm_head is not None else None
    try:
        with tracker:
            yield
    finally:
        for h in handles:
            h.remove()
        if remove_logits is not None:
            remove_logits()


class CudaProbe:
    """Per-phase CUDA allocator peaks: reset before a phase, read after it."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.allocated: dict[str, int] = {}
        self.reserved: dict[str, int] = {}
        self.driver_used = 0
        self.current_phase: str | None = None

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        self.current_phase = name
        yield
        torch.cuda.synchronize(self.device)
        self.read(name)
        self.current_phase = None

    def read(self, name: str) -> None:
        self.allocated[name] = max(self.allocated.get(name, 0), torch.cuda.max_memory_allocated(self.device))
        self.reserved[name] = max(self.reserved.get(name, 0), torch.cuda.max_memory_reserved(self.device))
        free, total = torch.cuda.mem_get_info(self.device)
        self.driver_used = max(self.driver_used, total - free)

    def summary(self) -> dict[str, Any]:
        peak_phase = max(self.allocated, key=lambda k: self.allocated[k]) if self.allocated else None
        return {
            "peak_allocated": max(self.allocated.values(), default=0),
            "peak_reserved": max(self.reserved.values(), default=0),
            "driver_used": self.driver_used,
            "phases": dict(self.allocated),
            "phases_reserved": dict(self.reserved),
            "peak_phase": peak_phase,
        }


SDPA_BACKENDS = {"flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION", "cudnn": "CUDNN_ATTENTION",
                 "math": "MATH"}  # fmt: skip


def sdpa_pin(plan: Plan) -> contextlib.AbstractContextManager[Any]:
    """``torch.nn.attention.sdpa_kernel`` with the plan's pinned backend (nothing for ``auto``)."""
    if plan.sdpa_backend == "auto":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([getattr(SDPBackend, SDPA_BACKENDS[plan.sdpa_backend])])


def _pin(plan: Plan | None) -> contextlib.AbstractContextManager[Any]:
    return sdpa_pin(plan) if plan is not None else contextlib.nullcontext()


@contextlib.contextmanager
def recording_sdpa(chosen: set[str]) -> Iterator[None]:
    """Record which SDPA backend torch picks for each call in the block (``torch._fused_sdp_choice`` with the
    call's arguments: the selection ``scaled_dot_product_attention`` makes itself; it allocates nothing)."""
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend

    original = F.scaled_dot_product_attention

    def sdpa(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        try:
            names = ("attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
            call = dict(zip(names, args, strict=False)) | kwargs
            choice = torch._fused_sdp_choice(query, key, value, **call)
            chosen.add(SDPBackend(choice).name.lower())
        except Exception as exc:  # a probe must never change the run
            chosen.add(f"unknown ({type(exc).__name__})")
        return original(query, key, value, *args, **kwargs)

    F.scaled_dot_product_attention = sdpa
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original


def train_step(
    built: Built,
    batch: Batch,
    *,
    tracker: MemoryTracker | None = None,
    probe: CudaProbe | None = None,
    plan: Plan | None = None,
    after_backward: Callable[[], None] | None = None,
) -> torch.Tensor:
    """One optimizer step; returns the (detached) loss. ``plan`` chooses the loss, the loop and the SDPA pin
    (without one: the model's own loss, the Trainer's loop, torch's SDPA choice); ``after_backward`` runs once the
    backward is done."""
    model, optimizer = built.model, built.optimizer
    ids = batch["input_ids"]
    chunked = plan is not None and plan.loss == "chunked"
    plain = plan is not None and plan.training_loop == "plain"

    @contextlib.contextmanager
    def phase(name: str) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            if tracker is not None:
                stack.enter_context(tracker.phase(name))
            if probe is not None:
                stack.enter_context(probe.phase(name))
            yield

    autocast: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
    if built.autocast_dtype is not None:
        autocast = torch.autocast(device_type=ids.device.type, dtype=built.autocast_dtype)
    with phase("forward"):
        objective_loss = built.kept.get("objective_loss")
        with autocast, _pin(plan):
            if objective_loss is not None:  # TRL's trainer's compute_loss (trainer.objectives)
                out = {"loss": objective_loss(batch, phase)}  # it may mark a phase of its own (generation)
            else:
                out = model(**batch, fused_lm_head=True) if chunked else model(**batch)
        loss = out["loss"]
        if plain:
            built.kept["out"] = out  # a hand-written loop keeps `out` (its logits) until the next forward
        del out  # the Trainer keeps only the loss: the logits die here unless autograd saved them
        if tracker is not None:
            tracker.category_override = None
    with phase("backward"):
        if tracker is not None:
            tracker.category_override = "logits"  # closed by the hook on the logits' gradient
        with _pin(plan):
            backward = built.kept.get("backward")  # a wrapper's own (DeepSpeed's engine)
            backward(loss) if backward is not None else loss.backward()
        if tracker is not None:
            tracker.category_override = None
        if after_backward is not None:  # a wrapper that sets .grad itself (FSDP2): its gradients are counted here
            after_backward()
    with phase("optimizer"):
        optimizer.step()
        if tracker is not None:
            tracker.register_many(optimizer_state_tensors(optimizer), "optimizer")
        optimizer.zero_grad(set_to_none=True)
    detached: torch.Tensor = loss.detach()
    return detached


def tracked_figures(tracker: MemoryTracker) -> dict[str, Any]:
    r = tracker.result()
    return {
        "peak_allocated": r["peak"],
        "components": r["components"],
        "phases": r["phases"],
        "phase_components": r["phase_components"],
        "peak_phase": r["peak_phase"],
        "round_to": r["round_to"],
    }


def uses_cuda_counters(device: torch.device) -> bool:
    """Whether the run reads the CUDA allocator's counters (a seam: tests drive the CUDA branch with fakes)."""
    return device.type == "cuda"


def _sync(device: torch.device) -> None:
    if uses_cuda_counters(device):
        torch.cuda.synchronize(device)


def _is_oom(exc: BaseException) -> bool:
    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    return oom is not None and isinstance(exc, oom)


# ---------------------------------------------------------------------------------------------------- run


def run(
    plan: Plan,
    config: Mapping[str, Any] | None = None,
    device: str | torch.device = "cpu",
    steps: int = 1,
    *,
    seed: int = 0,
    loader: str = "direct",
    round_to: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Build, warm up, measure ``steps`` steps; returns the result dict (see the module docstring). ``progress`` is
    told each phase as it begins (``Progress.PHASES``)."""
    if steps < 1:
        raise ValueError("steps must be >= 1")
    phase = progress or (lambda name: None)
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", 0)
    cuda = uses_cuda_counters(device)
    if round_to is None:
        round_to = CUDA_ALLOC_ROUND if cuda else 0
    cfg = resolve_config(plan, config)
    result: dict[str, Any] = {
        "mode": "real",
        "plan": plan.to_dict(),
        "config": cfg,
        "device": device.type,
        "versions": versions(device),
        "allocator": allocator_settings() if cuda else None,
        "steps": steps,
        "seed": seed,
        "oom": False,
        "notes": plan_notes(plan),
    }
    measured: dict[str, Any] = {"peak_reserved": None, "driver_used": None, "context": None}
    result["measured"] = measured
    torch.manual_seed(seed)
    if cuda:
        torch.cuda.init()  # type: ignore[no-untyped-call]
        torch.cuda.synchronize(device)
        free0, total = torch.cuda.mem_get_info(device)
        measured["context"] = total - free0
        measured["device_total"] = total
    stage = "build"
    probe: CudaProbe | None = None
    try:
        phase("building")
        t0 = time.perf_counter()
        built = build(cfg, plan, device, loader=loader)
        _sync(device)
        result["load_time_s"] = time.perf_counter() - t0
        result["params"] = {"total": built.params_total, "trainable": built.params_trainable}
        if cuda:
            measured["after_load"] = torch.cuda.memory_allocated(device)
        batch = make_batch(built.vocab_size, plan, device, seed)
        if plan.vision_inputs:
            batch = vision_batch(cfg, plan, device, seed)
        obj = objective(built.model, cfg, plan, device, built.vocab_size, seed)
        if obj is not None:
            batch = obj.batch
            built.kept["objective_loss"] = obj.loss
            built.kept["reference"] = obj.reference
        losses: list[float] = []

        stage = "first_step"
        phase("warm-up")
        first_tracker = MemoryTracker(round_to=round_to)
        probe = CudaProbe(device) if cuda else None
        t0 = time.perf_counter()
        chosen: set[str] = set()
        with tracking(first_tracker, built, plan, batch), recording_sdpa(chosen) if cuda else contextlib.nullcontext():
            loss = train_step(built, batch, tracker=first_tracker, probe=probe, plan=plan)
        result["sdpa_backends"] = sorted(chosen) if cuda else None
        _sync(device)
        first = {"step_time_s": time.perf_counter() - t0, **tracked_figures(first_tracker)}
        if probe is not None:
            first["tracked_peak"] = first["peak_allocated"]
            first["tracked_phases"] = first["phases"]
            first.update(probe.summary())
        result["first_step"] = first
        losses.append(float(loss.item()))

        stage = "measured"
        phase("measuring")
        tracker = MemoryTracker(round_to=round_to)
        probe = CudaProbe(device) if cuda else None
        times: list[float] = []
        for _ in range(steps):
            t0 = time.perf_counter()
            if cuda:
                loss = train_step(built, batch, probe=probe, plan=plan)
            else:
                with tracking(tracker, built, plan, batch):
                    loss = train_step(built, batch, tracker=tracker, plan=plan)
            _sync(device)
            times.append(time.perf_counter() - t0)
            losses.append(float(loss.item()))
        result["step_time_s"] = sum(times) / len(times)
        result["step_times_s"] = times
        if cuda:
            assert probe is not None
            cuda_summary = probe.summary()
            stage = "tracked"
            phase("tracking")
            # One more step under the tracker, for the per-category breakdown (the tracker holds no tensor, so
            # it changes no allocation; it only slows the step down, which is why timing used the steps above).
            with tracking(tracker, built, plan, batch):
                loss = train_step(built, batch, tracker=tracker, plan=plan)
            _sync(device)
            losses.append(float(loss.item()))
            tracked = tracked_figures(tracker)
            measured.update(tracked)
            measured["tracked_peak"] = tracked["peak_allocated"]
            measured["tracked_phases"] = tracked["phases"]
            measured["tracked_peak_phase"] = tracked["peak_phase"]
            measured.update(cuda_summary)
        else:
            measured.update(tracked_figures(tracker))
        result["loss"] = losses
    except BaseException as exc:
        if not _is_oom(exc):
            raise
        result["oom"] = True
        result["oom_stage"] = stage
        result["error"] = str(exc).splitlines()[0][:500]
        if cuda:
            # The peak so far: the phase that failed (since its reset) and the phases completed before it.
            done = probe.allocated if probe is not None else {}
            done_reserved = probe.reserved if probe is not None else {}
            measured["peak_allocated"] = max(torch.cuda.max_memory_allocated(device), *done.values(), 0)
            measured["peak_reserved"] = max(torch.cuda.max_memory_reserved(device), *done_reserved.values(), 0)
            measured["phases"] = dict(done)
            if probe is not None and probe.current_phase is not None:
                measured["peak_phase"] = probe.current_phase
            free, total = torch.cuda.mem_get_info(device)
            measured["driver_used"] = total - free
    return result


# ---------------------------------------------------------------------------------------------------- CLI


def load_plan(path: str) -> Plan:
    with open(path, encoding="utf-8") as fh:
        return Plan.from_dict(json.load(fh))


def load_config(path: str | None) -> dict[str, Any] | None:
    if path is None:
        return None
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, dict):
        raise SystemExit(f"{path}: a config.json is a JSON object")
    return data


def write_json(path: str, data: Any) -> None:
    text = json.dumps(data, indent=2, default=str)
    if path == "-":
        sys.stdout.write(text + "\n")
        return
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text + "\n")


class Progress:
    """Where a run is, for the server that started it: the phase it is in and when each began (seconds after the
    first), written to a small JSON file as each begins (written whole, then renamed, so a reader never sees half)."""

    PHASES = ("building", "warm-up", "measuring", "tracking", "writing")

    def __init__(self, path: str) -> None:
        self.path = path
        self.started = time.time()
        self.phases: dict[str, float] = {}

    def __call__(self, phase: str) -> None:
        self.phases[phase] = round(time.time() - self.started, 3)
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump({"phase": phase, "started": self.started, "phases": self.phases}, fh)
        os.replace(tmp, self.path)


def cli(
    argv: list[str] | None,
    runner: Callable[..., dict[str, Any]],
    description: str,
    flags: Mapping[str, str] | None = None,
) -> int:
    """The recipes' command line; ``flags``: the runner's own on/off keyword arguments, with their help."""
    parser = argparse.ArgumentParser(description=description)
    for name, text in (flags or {}).items():
        parser.add_argument("--" + name.replace("_", "-"), action="store_true", help=text)
    parser.add_argument("--plan", required=True, help="plan JSON file")
    parser.add_argument("--config", help="config.json (default: the plan's config, else the catalog's)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--out", required=True, help="result JSON path ('-' for stdout)")
    parser.add_argument("--print-result", action="store_true", help="also print 'TUNEPLAN-RESULT <json>' (one line)")
    parser.add_argument("--progress", help="write the phase the run is in to this JSON file as it goes")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    plan = load_plan(args.plan)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    progress = Progress(args.progress) if args.progress else None
    extra: dict[str, Any] = {"progress": progress} if progress is not None else {}
    extra.update({name: getattr(args, name) for name in flags or {}})
    try:
        result = runner(plan, load_config(args.config), device=device, steps=args.steps, seed=args.seed, **extra)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if progress is not None:
        progress("writing")
    write_json(args.out, result)
    if args.print_result:  # a Ray job's result comes back in its logs
        print("TUNEPLAN-RESULT " + json.dumps(result, default=str), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli(argv, run, "Measure a real training step of a plan")


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = [
    "CudaProbe",
    "Progress",
    "tracked_figures",
    "main",
    "make_batch",
    "preregister",
    "shape_batch",
    "run",
    "tracking",
    "train_step",
    "versions",
]
