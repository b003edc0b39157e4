"""Live-tensor memory tracker: the exact bytes a training step holds, by category and by phase.

``MemoryTracker`` is a ``TorchDispatchMode``. Every tensor an operator returns has its ``UntypedStorage``
registered once (views share the storage, so they count once) with a weakref callback that fires when the
storage dies; ``live`` is the sum of registered storages, ``peak`` its maximum. It sees every allocation that
goes through the dispatcher, on real CPU/CUDA tensors and on fake tensors alike, and nothing else: scratch
buffers inside one kernel (cuBLAS workspaces, the dequantized weight inside bitsandbytes' fused ``gemm_4bit``)
and the allocator's caching are invisible, which is what the CUDA counters add on a GPU.

Tensors that exist before tracking starts (parameters, buffers, bitsandbytes quant state, optimizer state,
the batch) are pre-registered with ``register``. Categories::

    weights      frozen params + buffers + quant state (and, for full fine-tuning, the trained params)
    adapters     trainable params of a LoRA/QLoRA run
    gradients    .grad tensors (reclassified from the moment autograd accumulates them)
    optimizer    optimizer state
    logits       tensors made inside the lm_head forward and the loss, and the loss backward up to the
                 gradient of the logits (marked with ``logits_scope`` via module / tensor hooks)
    activations  everything else: saved activations, temporaries, the batch

A storage can change category after it was created (an op output that autograd stores as ``.grad``, optimizer
state created inside ``step``); ``register`` then moves its bytes, and also fixes every recorded peak snapshot
the storage was alive in, so the breakdown *at the moment of the peak* stays exact.

Use::

    tracker = MemoryTracker(round_to=512)          # 512: mimic the CUDA caching allocator's block rounding
    tracker.register_many(model.parameters(), "weights")
    with tracker:
        with tracker.phase("forward"):
            loss = model(...).loss
    tracker.peak.total, tracker.peak.components, tracker.phases["forward"].total
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode, is_traceable_wrapper_subclass
from torch.utils._pytree import tree_leaves

from estimator import TENSOR_COMPONENTS

CATEGORIES: tuple[str, ...] = TENSOR_COMPONENTS
DEFAULT_CATEGORY = "activations"


@dataclass
class Snapshot:
    """Live bytes in total and per category at one moment (``seq`` orders it against registrations)."""

    total: int = 0
    components: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CATEGORIES, 0))
    seq: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "components": dict(self.components)}


class _Entry:
    __slots__ = ("category", "nbytes", "ref", "seq")

    def __init__(self, nbytes: int, category: str, seq: int, ref: weakref.ref[Any]) -> None:
        self.nbytes = nbytes
        self.category = category
        self.seq = seq
        self.ref = ref


class MemoryTracker(TorchDispatchMode):  # type: ignore[no-untyped-call]
    """Counts live storage bytes per category; records the peak and each phase's peak with breakdowns."""

    def __init__(self, round_to: int = 0, in_op: Mapping[Any, Callable[..., int]] | None = None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        if round_to < 0:
            raise ValueError("round_to must be >= 0")
        self.round_to = round_to
        self.in_op = dict(in_op or {})
        """Per operator, the bytes it allocates inside itself while it runs (from its arguments): counted from
        before the op until its outputs are registered (a trace of a CUDA plan: CUDA's softmax backward)."""
        self._entries: dict[int, _Entry] = {}
        self._seq = 0
        self.live: dict[str, int] = dict.fromkeys(CATEGORIES, 0)
        self.live_total = 0
        self.peak = Snapshot()
        self.peak_phase: str | None = None
        self.phases: dict[str, Snapshot] = {}
        self.phase_ends: dict[str, int] = {}
        """Live bytes when each phase last ended (its peak is in ``phases``)."""
        self._phase: str | None = None
        self._phase_snapshot: Snapshot | None = None
        self.category_override: str | None = None
        """When set, new storages go to this category (used for ``logits``)."""
        self.ops = 0

    # ------------------------------------------------------------------ bookkeeping
    def _size(self, nbytes: int) -> int:
        if self.round_to and nbytes:
            return -(-nbytes // self.round_to) * self.round_to
        return nbytes

    def _snapshot(self) -> Snapshot:
        return Snapshot(self.live_total, dict(self.live), self._seq)

    def _finalizer(self, key: int) -> Callable[[Any], None]:
        def free(_ref: Any) -> None:
            self._on_free(key)

        return free

    def _on_free(self, key: int) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.live[entry.category] -= entry.nbytes
            self.live_total -= entry.nbytes

    def _track_storage(self, storage: Any, category: str, *, force: bool) -> None:
        key = id(storage)
        entry = self._entries.get(key)
        if entry is not None:
            nbytes = self._size(storage.nbytes())
            if nbytes != entry.nbytes:  # resized in place (resize_, set_): keep the count true
                self.live[entry.category] += nbytes - entry.nbytes
                self.live_total += nbytes - entry.nbytes
                entry.nbytes = nbytes
            if force and entry.category != category:
                self._move(entry, category)
            return
        nbytes = self._size(storage.nbytes())
        self._seq += 1
        # The storage's Python object lives exactly as long as the C++ storage (PyObject preservation), so
        # the callback fires when the memory is released and an id is never reused while registered.
        ref: weakref.ref[Any] = weakref.ref(storage, self._finalizer(key))
        self._entries[key] = _Entry(nbytes, category, self._seq, ref)
        self.live[category] += nbytes
        self.live_total += nbytes

    def _move(self, entry: _Entry, category: str) -> None:
        old = entry.category
        self.live[old] -= entry.nbytes
        self.live[category] += entry.nbytes
        entry.category = category
        # The storage is alive now and was created at entry.seq, so it was alive in every snapshot taken
        # since: move its bytes there too.
        snaps = [self.peak, *self.phases.values()]
        if self._phase_snapshot is not None and all(s is not self._phase_snapshot for s in snaps):
            snaps.append(self._phase_snapshot)
        for snap in snaps:
            if snap.seq >= entry.seq and snap.total:
                snap.components[old] -= entry.nbytes
                snap.components[category] += entry.nbytes

    def _update_peaks(self) -> None:
        if self.live_total > self.peak.total:
            self.peak = self._snapshot()
            self.peak_phase = self._phase
        snap = self._phase_snapshot
        if snap is not None and self.live_total > snap.total:
            new = self._snapshot()
            self._phase_snapshot = new
            assert self._phase is not None
            self.phases[self._phase] = new

    def storage_resized(self, storage: Any) -> None:
        """A storage changed size in place (``UntypedStorage.resize_``, which bypasses the dispatcher: FSDP2 frees
        and re-allocates its unsharded parameters so): count its new size, or count it now if it is new here."""
        self._track_storage(storage, self.category_override or DEFAULT_CATEGORY, force=False)
        self._update_peaks()

    def __enter__(self) -> MemoryTracker:
        _RESIZE_WATCHERS.append(self)
        if len(_RESIZE_WATCHERS) == 1:
            torch.UntypedStorage.resize_ = _watched_resize  # type: ignore[method-assign,assignment]
        try:
            super().__enter__()  # type: ignore[no-untyped-call]
        except BaseException:
            self._unwatch()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            super().__exit__(*exc)  # type: ignore[no-untyped-call]
        finally:
            self._unwatch()

    def _unwatch(self) -> None:
        if self in _RESIZE_WATCHERS:
            _RESIZE_WATCHERS.remove(self)
        if not _RESIZE_WATCHERS:
            del torch.UntypedStorage.resize_  # back to torch's own (StorageBase.resize_)

    # ------------------------------------------------------------------ public API
    def register(self, tensor: torch.Tensor | None, category: str) -> None:
        """Count ``tensor``'s storage under ``category`` (moving it there if it is already counted)."""
        if category not in CATEGORIES:
            raise ValueError(f"unknown category {category!r}; one of {', '.join(CATEGORIES)}")
        if tensor is None or not isinstance(tensor, torch.Tensor) or tensor.device.type == "meta":
            return
        for t in local_tensors(tensor):
            self._track_storage(t.untyped_storage(), category, force=True)
        self._update_peaks()

    def register_uncounted(self, tensors: Iterable[torch.Tensor], category: str) -> None:
        """Count under ``category`` the storages of ``tensors`` not counted yet (the others keep their category)."""
        for tensor in tensors:
            for t in local_tensors(tensor):
                with contextlib.suppress(RuntimeError, NotImplementedError):  # storage-less tensors hold no block
                    self._track_storage(t.untyped_storage(), category, force=False)
        self._update_peaks()

    def register_many(self, tensors: Iterable[torch.Tensor | None], category: str) -> None:
        for t in tensors:
            self.register(t, category)

    def bytes_of(self, tensors: Iterable[torch.Tensor]) -> int:
        """Bytes the tracker would count for these tensors (distinct storages, rounded)."""
        seen: dict[int, int] = {}
        for t in tensors:
            if t.device.type == "meta":
                continue
            s = t.untyped_storage()
            seen[id(s)] = self._size(s.nbytes())
        return sum(seen.values())

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Record the peak inside this block as ``phases[name]`` (the max over repeated blocks of one name)."""
        prev_phase, prev_snap = self._phase, self._phase_snapshot
        start = self._snapshot()
        existing = self.phases.get(name)
        self._phase = name
        self._phase_snapshot = existing if existing is not None and existing.total >= start.total else start
        self.phases[name] = self._phase_snapshot
        try:
            yield
        finally:
            self.phase_ends[name] = self.live_total
            self._phase, self._phase_snapshot = prev_phase, prev_snap

    @contextlib.contextmanager
    def scope(self, category: str | None) -> Iterator[None]:
        """New storages made inside the block go to ``category`` (None: back to the default)."""
        prev = self.category_override
        self.category_override = category
        try:
            yield
        finally:
            self.category_override = prev

    def result(self) -> dict[str, Any]:
        """JSON-ready: peak total, its per-category breakdown, per-phase peaks and where the peak fell."""
        return {
            "peak": self.peak.total,
            "components": dict(self.peak.components),
            "phases": {k: v.total for k, v in self.phases.items()},
            "phase_components": {k: dict(v.components) for k, v in self.phases.items()},
            "peak_phase": self.peak_phase,
            "live_end": self.live_total,
            "ops": self.ops,
            "round_to": self.round_to,
        }

    # ------------------------------------------------------------------ dispatch
    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        inside = self.in_op.get(func)
        scratch = self._size(inside(*args)) if inside is not None else 0
        held = self.category_override or DEFAULT_CATEGORY
        self.live[held] += scratch
        self.live_total += scratch
        try:
            out = func(*args, **(kwargs or {}))
            self.ops += 1
            # the category as the op ends: an op can run Python that changes it (an FSDP2 offload run on gloo did)
            self._track_outputs(out, self.category_override or DEFAULT_CATEGORY)
            self._update_peaks()
        finally:
            self.live[held] -= scratch
            self.live_total -= scratch
        return out

    def _track_outputs(self, out: Any, category: str) -> None:
        for leaf in tree_leaves(out):
            if not isinstance(leaf, torch.Tensor):
                continue
            for t in local_tensors(leaf):  # a DTensor's local shard (the wrapper itself holds no memory)
                # Meta tensors hold no memory (a fake tensor reports its fake device, so it is still counted).
                if t.device.type == "meta":
                    continue
                try:
                    storage = t.untyped_storage()
                except (RuntimeError, NotImplementedError):  # sparse / storage-less tensors hold no plain block
                    continue
                self._track_storage(storage, category, force=False)


_RESIZE_WATCHERS: list[MemoryTracker] = []
_STORAGE_RESIZE = torch._C.StorageBase.resize_  # type: ignore[attr-defined]


def _watched_resize(storage: Any, size: int) -> Any:
    """``UntypedStorage.resize_`` while a tracker is active: torch's own, then every active tracker is told."""
    out = _STORAGE_RESIZE(storage, size)
    for tracker in _RESIZE_WATCHERS:
        tracker.storage_resized(storage)
    return out


def local_tensors(t: torch.Tensor) -> list[torch.Tensor]:
    """The plain tensors that hold ``t``'s memory: ``t`` itself, or the inner tensors of a traceable wrapper
    subclass (FSDP2's ``DTensor`` parameters, gradients and optimizer state: their local shards), recursively.
    A fake tensor is not a wrapper subclass: it is its own storage."""
    if not is_traceable_wrapper_subclass(t) or type(t).__name__ == "FakeTensor":
        return [t]
    names, _ = t.__tensor_flatten__()
    inner = (getattr(t, name) for name in names)
    return [leaf for x in inner if isinstance(x, torch.Tensor) for leaf in local_tensors(x)]


def attach_logits_scope(tracker: MemoryTracker, lm_head: torch.nn.Module) -> Callable[[], None]:
    """Mark the lm_head forward and everything after it (the loss) as ``logits``; in backward, mark the
    loss backward up to the gradient of the logits. Returns a function that removes the hooks.

    The forward scope opens in a forward pre-hook on ``lm_head`` and is closed by the caller when the model's
    forward returns (``tracker.category_override = None``). The backward scope is opened by the caller when
    backward starts and closed by a hook on the logits tensor, which fires once their gradient exists.
    """

    def _close(_grad: torch.Tensor) -> None:
        tracker.category_override = None

    def pre_hook(_module: torch.nn.Module, _inputs: Any) -> None:
        tracker.category_override = "logits"

    def post_hook(_module: torch.nn.Module, _inputs: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor) and output.requires_grad:
            output.register_hook(_close)  # type: ignore[no-untyped-call]

    h1 = lm_head.register_forward_pre_hook(pre_hook)
    h2 = lm_head.register_forward_hook(post_hook)

    def remove() -> None:
        h1.remove()
        h2.remove()

    return remove
