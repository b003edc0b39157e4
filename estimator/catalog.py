"""The built-in catalog: popular base models and GPUs.

Where the numbers come from
---------------------------
``data/models.json``
    ``config`` is each model's Hugging Face Hub ``config.json`` trimmed to the fields that shape the
    architecture (same field names and values as published; gemma3 multimodal checkpoints keep their nested
    ``text_config`` and ``vision_config``). ``params`` is the number of parameters of
    ``AutoModelForCausalLM.from_config(config)`` (tied embeddings counted once): for gemma3 multimodal
    checkpoints ``Gemma3ForConditionalGeneration``, its SigLIP vision tower and projector included (what
    transformers loads for them, images or not); for qwen2_vl / qwen2_5_vl / qwen3_vl and llava, which have no
    causal-LM class, the image-text-to-text model. ``source`` names where an entry's config was read (the Hub page, or
    a public copy of its config.json at a commit). ``tests/estimator/test_catalog.py`` rebuilds every model on the
    meta device and checks it.
``data/gpus.json``
    ``memory_bytes`` is the driver-reported total where known, else the marketed capacity taken as GiB;
    ``usable_bytes`` is what ``torch.cuda.mem_get_info()`` reports as total, measured (H200), as PyTorch is
    commonly seen to report it (rounded), or derived; each entry's ``memory_note`` says which.
    ``bf16_tflops`` is the dense tensor-core peak without sparsity (``None`` where the card has no bf16
    tensor cores), ``bandwidth_gbs`` the peak memory bandwidth, ``hourly_usd`` an indicative on-demand
    cloud price per GPU (``None`` where there is no typical one). ``arch`` names the GPU's architecture in
    ``architectures``: the runtime constants a CUDA training process holds beyond its tensors (context, runtime,
    cuBLAS workspace, allocator cache floor), each architecture with its ``source`` (measured here, or derived from
    torch's code) and whether its context and runtime were ``measured`` on such a card. ``device_names`` are the
    names ``torch.cuda.get_device_name()`` reports for the card, where known: verify runs are matched to it by them.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

__all__ = [
    "GPU",
    "DEFAULT_ARCH",
    "ArchRuntime",
    "CatalogModel",
    "architecture",
    "architectures",
    "CUSTOM_RESERVE_BYTES",
    "MAX_CUSTOM_BYTES",
    "MAX_CUSTOM_NAME",
    "MIN_CUSTOM_BYTES",
    "GpuLookupError",
    "canonical_gpu",
    "custom_gpu_text",
    "gpu_for_device",
    "close_gpu_matches",
    "close_model_matches",
    "family_matches",
    "find_gpu",
    "find_model",
    "gpus",
    "models",
    "search_models",
]


@dataclass(frozen=True)
class CatalogModel:
    """A base model: short slug, Hub id, and its architecture config (Hub field names)."""

    id: str
    hf_id: str
    name: str
    family: str
    gated: bool
    params: int
    config: dict[str, Any]
    params_note: str = ""
    variant_of: str = ""
    """The catalog id of the base model whose architecture an instruct/chat variant shares ("" for a base)."""

    def __hash__(self) -> int:  # config is a dict; the id is unique in the catalog
        return hash(self.id)


@dataclass(frozen=True)
class GPU:
    """An accelerator: memory as sold and as usable by one process, and peak throughput."""

    id: str
    name: str
    vendor: str
    memory_bytes: int
    usable_bytes: int
    bf16_tflops: float | None
    bandwidth_gbs: float
    tdp_w: int
    hourly_usd: float | None
    memory_note: str = ""
    arch: str = "sm90"
    device_names: tuple[str, ...] = ()
    custom: bool = False
    """A card the user described (name and memory), not a catalog entry: no throughput, price or dtype limits are
    known; it is estimated with the default architecture's kernels and runtime constants, as uncalibrated."""


@dataclass(frozen=True)
class ArchRuntime:
    """What a CUDA training process on one GPU architecture holds beyond its live tensors (bytes), and the source.

    ``measured``: the context and runtime were measured on a card of this architecture; otherwise another
    architecture's figures stand in and the estimate reports them as uncalibrated.
    """

    key: str
    name: str
    compute_capability: tuple[int, int] | None
    cuda_context_bytes: int
    cuda_runtime_bytes: int
    cublas_workspace_bytes: int
    allocator_cache_floor_bytes: int
    measured: bool
    source: str


def _load(name: str) -> dict[str, Any]:
    text = (resources.files("estimator") / "data" / name).read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


@cache
def models() -> tuple[CatalogModel, ...]:
    """Every catalog model, in catalog order."""
    out = []
    for m in _load("models.json")["models"]:
        out.append(
            CatalogModel(
                id=str(m["id"]),
                hf_id=str(m["hf_id"]),
                name=str(m["name"]),
                family=str(m["family"]),
                gated=bool(m["gated"]),
                params=int(m["params"]),
                config=dict(m["config"]),
                params_note=str(m.get("params_note", "")),
                variant_of=str(m.get("variant_of", "")),
            )
        )
    return tuple(out)


@cache
def gpus() -> tuple[GPU, ...]:
    """Every catalog GPU, from consumer to datacenter cards."""
    out = []
    for g in _load("gpus.json")["gpus"]:
        bf16 = g["bf16_tflops"]
        price = g["hourly_usd"]
        out.append(
            GPU(
                id=str(g["id"]),
                name=str(g["name"]),
                vendor=str(g["vendor"]),
                memory_bytes=int(g["memory_bytes"]),
                usable_bytes=int(g["usable_bytes"]),
                bf16_tflops=None if bf16 is None else float(bf16),
                bandwidth_gbs=float(g["bandwidth_gbs"]),
                tdp_w=int(g["tdp_w"]),
                hourly_usd=None if price is None else float(price),
                memory_note=str(g.get("memory_note", "")),
                arch=str(g["arch"]),
                device_names=tuple(str(n) for n in g.get("device_names", ())),
            )
        )
    return tuple(out)


@cache
def architectures() -> dict[str, ArchRuntime]:
    """Every GPU architecture's runtime constants, by key (``sm90``, ``gfx942``, ...)."""
    out: dict[str, ArchRuntime] = {}
    for key, a in _load("gpus.json")["architectures"].items():
        cc = a["compute_capability"]
        out[key] = ArchRuntime(
            key=key,
            name=str(a["name"]),
            compute_capability=None if cc is None else (int(cc[0]), int(cc[1])),
            cuda_context_bytes=int(a["cuda_context_bytes"]),
            cuda_runtime_bytes=int(a["cuda_runtime_bytes"]),
            cublas_workspace_bytes=int(a["cublas_workspace_bytes"]),
            allocator_cache_floor_bytes=int(a["allocator_cache_floor_bytes"]),
            measured=bool(a["measured"]),
            source=str(a["source"]),
        )
    return out


DEFAULT_ARCH = "sm90"
"""The architecture assumed when a plan names no GPU: the one the runtime constants were measured on (H200)."""


def architecture(gpu: GPU | None) -> ArchRuntime:
    """The runtime constants of ``gpu``'s architecture (of ``DEFAULT_ARCH`` when no GPU is named)."""
    return architectures()[gpu.arch if gpu is not None else DEFAULT_ARCH]


def gpu_for_device(device_name: str) -> GPU | None:
    """The catalog GPU a ``torch.cuda.get_device_name()`` string stands for (its device names, id or name)."""
    key = device_name.strip().lower()
    for g in gpus():
        if key in (n.lower() for n in g.device_names):
            return g
    return find_gpu(device_name)


@cache
def _model_index() -> dict[str, CatalogModel]:
    index: dict[str, CatalogModel] = {}
    for m in models():
        index.setdefault(m.hf_id.lower(), m)
    for m in models():  # ids win over hf_ids
        index[m.id.lower()] = m
    return index


def find_model(id_or_hf_id: str) -> CatalogModel | None:
    """The model whose id or Hub id matches, ignoring case; ``None`` if there is none."""
    return _model_index().get(id_or_hf_id.strip().lower())


def _fields(m: CatalogModel) -> tuple[str, ...]:
    return (m.id.lower(), m.hf_id.lower(), m.name.lower(), m.family.lower())


def search_models(q: str, limit: int = 20) -> list[CatalogModel]:
    """Models matching ``q``, best first.

    Rank: exact match of id, Hub id, name or family, then prefix, then substring (also of the Hub id's name
    part after the ``/``), then difflib close matches. Ties keep catalog order. An empty query lists the
    catalog.
    """
    query = q.strip().lower()
    if limit <= 0:
        return []
    if not query:
        return list(models()[:limit])
    ranked: list[tuple[int, int, CatalogModel]] = []
    seen: set[str] = set()
    for pos, m in enumerate(models()):
        fields = (*_fields(m), m.hf_id.lower().rsplit("/", 1)[-1])
        if query in fields:
            rank = 0
        elif any(f.startswith(query) for f in fields):
            rank = 1
        elif any(query in f for f in fields):
            rank = 2
        else:
            continue
        ranked.append((rank, pos, m))
        seen.add(m.id)
    ranked.sort(key=lambda t: (t[0], t[1]))
    out = [m for _, _, m in ranked]
    if len(out) < limit:
        for m in close_model_matches(query, n=limit):
            if m.id not in seen:
                out.append(m)
                seen.add(m.id)
    return out[:limit]


def close_model_matches(q: str, n: int = 5) -> list[CatalogModel]:
    """Up to ``n`` models whose id or Hub id is close to ``q`` (for "did you mean"), best first."""
    query = q.strip().lower()
    if not query or n <= 0:
        return []
    index = _model_index()
    out: list[CatalogModel] = []
    for key in difflib.get_close_matches(query, list(index), n=2 * n, cutoff=0.6):
        m = index[key]
        if m not in out:
            out.append(m)
    return out[:n]


_NAME_BREAKS = re.compile(r"[-_/ ]+")


def _tokens(text: str) -> list[str]:
    return [t for t in _NAME_BREAKS.split(text.strip().lower()) if t]


def family_matches(q: str, n: int = 3) -> list[CatalogModel]:
    """Catalog models of the same shape family as a Hub id that is not in the catalog, best first: those whose id or
    Hub name appears in its name as whole words (``unsloth/Llama-3.2-1B-Instruct-bnb-4bit`` -> the Llama 3.2 1B
    Instruct entry, then Llama 3.2 1B; ``Qwen/Qwen2.5-7B-Instruct-1M`` -> Qwen2.5 7B Instruct, Qwen2.5 7B). Instruct,
    chat and base variants of one model share its architecture, but a repo that only borrows a name may not: these
    are suggestions, never substitutes."""
    words = _tokens(q.rsplit("/", 1)[-1])
    if not words:
        return []
    text = "-" + "-".join(words) + "-"
    scored: list[tuple[int, int, CatalogModel]] = []
    for pos, m in enumerate(models()):
        names = {"-".join(_tokens(m.id)), "-".join(_tokens(m.hf_id.rsplit("/", 1)[-1]))}
        best = max((len(name) for name in names if name and f"-{name}-" in text), default=0)
        if best:
            scored.append((-best, pos, m))
    scored.sort(key=lambda t: (t[0], t[1]))
    return [m for _, _, m in scored[:n]]


def close_gpu_matches(q: str, n: int = 3) -> list[GPU]:
    """Up to ``n`` GPUs whose id or name is close to ``q`` (for "did you mean"), best first."""
    query = q.strip().lower()
    index = {g.id.lower(): g for g in gpus()} | {g.name.lower(): g for g in gpus()}
    out: list[GPU] = []
    for key in difflib.get_close_matches(query, list(index), n=2 * n, cutoff=0.5):
        if index[key] not in out:
            out.append(index[key])
    return out[:n]


def find_gpu(id: str) -> GPU | None:
    """The GPU whose id or name matches, ignoring case, or the custom GPU a canonical ``NAME:BYTES`` text stands for
    (``canonical_gpu``); ``None`` if there is none."""
    found = _gpu_index().get(id.strip().lower())
    if found is None and ":" in id:
        try:
            return _custom_from_text(id)
        except GpuLookupError:
            return None
    return found


@cache
def _gpu_index() -> dict[str, GPU]:
    index: dict[str, GPU] = {}
    for g in gpus():
        index.setdefault(g.id.lower(), g)
        index.setdefault(g.name.lower(), g)
    return index


# ------------------------------------------------------------------------------------------ GPUs as people name them

CUSTOM_RESERVE_BYTES = 616 * 1024 * 1024
"""What a custom GPU's driver is taken to keep from its memory: the reservation measured on the H200 (nvidia-smi's FB
total minus ``torch.cuda.mem_get_info()``'s total), the largest in the catalog, so a fit on a custom card errs on the
safe side."""
MIN_CUSTOM_BYTES = 1 << 30
MAX_CUSTOM_BYTES = 1 << 44
MAX_CUSTOM_NAME = 60
_UNITS = {"": 1, "b": 1, "kb": 10**3, "kib": 1 << 10, "mb": 10**6, "mib": 1 << 20, "gb": 10**9, "gib": 1 << 30,
          "tb": 10**12, "tib": 1 << 40}  # fmt: skip
_VENDOR_WORDS = ("nvidia", "geforce", "tesla", "amd", "instinct")


class GpuLookupError(LookupError):
    """A GPU text that names no catalog GPU, several of them, or an invalid custom card; ``candidates`` are ids."""

    def __init__(self, message: str, candidates: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.candidates = candidates


def _key(text: str) -> str:
    """``NVIDIA GeForce RTX 4090`` and ``rtx-4090`` -> ``rtx4090``: lower case, vendor words dropped, letters and
    digits only."""
    words = [w for w in re.split(r"[^0-9a-z]+", text.lower()) if w and w not in _VENDOR_WORDS]
    return "".join(words)


@cache
def _loose_index() -> tuple[tuple[GPU, frozenset[str]], ...]:
    """Each GPU with its keys: of its id, its name, its device names, and the id without a leading ``rtx``."""
    out = []
    for g in gpus():
        keys = {_key(g.id), _key(g.name), *(_key(n) for n in g.device_names)}
        keys |= {k.removeprefix("rtx") for k in keys if k.startswith("rtx") and len(k) > 3}
        out.append((g, frozenset(k for k in keys if k)))
    return tuple(out)


def _loose(text: str) -> GPU:
    """The one catalog GPU a loose name stands for (``RTX 4090``, ``4090``, ``a6000``): an exact key first, else the
    GPUs whose keys contain it; ``GpuLookupError`` when none or several match."""
    q = _key(text)
    if not q:
        raise GpuLookupError(f"gpu {text[:100]!r} names no GPU")
    index = _loose_index()
    exact = [g for g, keys in index if q in keys]
    found = exact or [g for g, keys in index if any(q in k for k in keys)]
    if len(found) == 1:
        return found[0]
    if found:
        listed = ", ".join(f"{g.id} ({g.name})" for g in found[:8])
        raise GpuLookupError(f"gpu {text[:100]!r} matches {len(found)} catalog GPUs: {listed}; name one of them",
                             tuple(g.id for g in found))  # fmt: skip
    close = tuple(g.id for g in close_gpu_matches(text))
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise GpuLookupError(
        f"gpu {text[:100]!r} is not in the GPU catalog: {hint}'tuneplan gpus' or GET /api/gpus lists them; or "
        "describe your card as 'NAME:MEMORY' (e.g. 'My card:24GiB'; in JSON {\"name\": ..., \"memory_bytes\": ...})",
        close,
    )


def _size(text: str) -> int:
    """``24GiB``, ``24 GB``, ``24576 MiB`` or a byte count -> bytes (GiB/MiB binary, GB/MB decimal, as written)."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", text)
    unit = m.group(2).lower() if m else ""
    if m is None or unit not in _UNITS:
        raise GpuLookupError(f"{text.strip()[:40]!r} is not a memory size: write it like 24GiB, 24GB or 24576MiB")
    return int(float(m.group(1)) * _UNITS[unit])


def _custom(name: Any, memory: Any) -> GPU:
    if not isinstance(name, str) or not name.strip() or len(name.strip()) > MAX_CUSTOM_NAME:
        raise GpuLookupError(f"a custom GPU's name must be 1 to {MAX_CUSTOM_NAME} characters")
    if not name.isprintable():
        raise GpuLookupError("a custom GPU's name must be printable text")
    if isinstance(memory, bool) or not isinstance(memory, int) or not MIN_CUSTOM_BYTES <= memory <= MAX_CUSTOM_BYTES:
        raise GpuLookupError(
            f"a custom GPU's memory_bytes must be an integer between {MIN_CUSTOM_BYTES:,} (1 GiB) and "
            f"{MAX_CUSTOM_BYTES:,} (16 TiB); got {memory!r}"
        )
    name = name.strip()
    note = (f"custom: {memory:,} bytes as given, minus {CUSTOM_RESERVE_BYTES >> 20} MiB for the driver (the H200's "
            "measured reservation, the largest in the catalog)")  # fmt: skip
    return GPU(id=custom_gpu_text(name, memory), name=name, vendor="custom", memory_bytes=memory,
               usable_bytes=memory - CUSTOM_RESERVE_BYTES, bf16_tflops=None, bandwidth_gbs=0.0, tdp_w=0,
               hourly_usd=None, memory_note=note, arch=DEFAULT_ARCH, custom=True)  # fmt: skip


def custom_gpu_text(name: str, memory_bytes: int) -> str:
    """A custom GPU as the plan holds it: ``NAME:BYTES`` (what a query string or the CLI can carry)."""
    return f"{name}:{memory_bytes}"


def _custom_from_text(text: str) -> GPU:
    name, _, size = text.rpartition(":")
    return _custom(name, _size(size))


def canonical_gpu(value: Any) -> str:
    """The plan's form of a GPU: a catalog id for a catalog id, name or loose name (``RTX 4090``, ``4090``), or
    ``NAME:BYTES`` for a custom card given as ``NAME:MEMORY`` text (``My card:24GiB``) or as a ``{"name",
    "memory_bytes"}`` object. ``GpuLookupError`` saying what to fix otherwise (unknown, ambiguous, bad size)."""
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - {"name", "memory_bytes"})
        if unknown or "name" not in value or "memory_bytes" not in value:
            extra = f"; unknown field(s): {', '.join(map(str, unknown))}" if unknown else ""
            raise GpuLookupError('a custom GPU is an object {"name": ..., "memory_bytes": ...}' + extra)
        return _custom(value["name"], value["memory_bytes"]).id
    if not isinstance(value, str) or not value.strip():
        raise GpuLookupError("gpu must be a catalog GPU id, a GPU name, or a custom card")
    exact = _gpu_index().get(value.strip().lower())
    if exact is not None:
        return exact.id
    if ":" in value:
        return _custom_from_text(value).id
    return _loose(value).id
