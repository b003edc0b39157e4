"""Host RAM of loading, measured: a random checkpoint read back with ``from_pretrained`` in a fresh process.

For each case a randomly initialised model of a real architecture (a cut-down Llama, untied head) is written with
``save_pretrained`` (bf16 safetensors), then a fresh interpreter imports the training stack, records its own memory
(the baseline) and loads the checkpoint as the trainer's ordinary route does (``trainer.build``: ``from_pretrained``
with the plan's dtype, ``device_map={"": "cpu"}``, and for QLoRA the plan's ``BitsAndBytesConfig``: bitsandbytes'
quantize-on-load). What the child reports, all from ``/proc/self``, in bytes:

* ``runtime``: the process's resident memory (``VmRSS``) with torch, transformers, peft and bitsandbytes imported,
  before anything is loaded: what ``HOST_RUNTIME_BYTES`` stands for.
* ``hwm``: ``VmHWM`` over the load (reset with ``/proc/self/clear_refs`` just before), minus the baseline: the exact
  peak of everything resident, the checkpoint's memory-mapped pages included (transformers 5 opens every
  safetensors file with ``safe_open(..., backend="mmap")`` and closes them only after the last tensor; each page
  read stays mapped, counted in ``RssFile``, until then).
* ``anon_peak``: the largest anonymous memory (``statm``'s resident minus shared) a sampling thread saw during the
  load, minus the baseline; ``kept``: anonymous memory after the load, minus the baseline (the model's tensors that
  are not views of the file); ``transient`` = ``anon_peak - kept``: what loading held beyond the model at its worst
  moment, the figure ``memory.host.loading`` estimates.
* ``file_mapped``: file-backed resident memory at its largest during the load, minus the baseline (the checkpoint
  pages read, and library code run for the first time): what ``memory.host.mapped`` estimates.
* ``model_tensors``: bytes of the loaded model's parameters and buffers.

The sampler is a thread reading ``/proc/self/statm`` every ~50 µs (``sys.setswitchinterval`` lowered; torch's ops
release the GIL), so a moment shorter than that can be missed; ``hwm`` is exact and bounds ``anon_peak +
file_mapped`` from above. Each load runs twice: with ``MALLOC_MMAP_THRESHOLD_`` fixed (every tensor its own
mapping, returned to the kernel when freed: ``kept`` is exactly what is live) and with glibc's default (the
threshold grows to the largest block freed and freed heap stays in the process: what a plain process shows).

    python -m bench.host_ram            # writes bench/results/host_ram.json (about 2 minutes on 2 cores)

``tests/trainer/test_host_ram.py`` runs two small loads in CI and holds them to the estimate.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as ``python bench/host_ram.py``
    sys.path.insert(0, str(REPO))

from estimator import Plan, estimate  # noqa: E402

HOST_JSON = REPO / "bench" / "results" / "host_ram.json"
PAGE = os.sysconf("SC_PAGE_SIZE")
MIB = 1024 * 1024


def llama(hidden: int, intermediate: int, layers: int, vocab: int) -> dict[str, Any]:
    """A cut-down Llama config (untied head, grouped K/V heads), every dimension a multiple of 64."""
    return {"model_type": "llama", "hidden_size": hidden, "intermediate_size": intermediate,
            "num_hidden_layers": layers, "num_attention_heads": hidden // 64, "num_key_value_heads": hidden // 256,
            "vocab_size": vocab, "max_position_embeddings": 2048, "tie_word_embeddings": False}  # fmt: skip


BENCH_CONFIG = llama(2048, 5632, 4, 32000)  # 311 M parameters, 623 MB of bf16 safetensors
SMALL_CONFIG = llama(512, 2048, 2, 8192)  # 15 M parameters: the CI test's loads (a few seconds each)
METHODS = ("lora", "qlora", "full")


def plan_for(config: Mapping[str, Any], method: str) -> Plan:
    """The plan whose load is measured: LoRA in bf16, QLoRA (NF4, double quant, bf16 compute), full in fp32 with
    mixed precision (the bf16 checkpoint read into fp32 weights), all on the CPU device."""
    return Plan(config=dict(config), method=method, device="cpu", dtype="bfloat16",  # type: ignore[arg-type]
                mixed_precision=method == "full", batch_size=1, seq_len=64)  # fmt: skip


# ------------------------------------------------------------------------------------------- the child process


def _status() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
                out[key] = int(value.split()[0]) * 1024
    return out


class _Sampler(threading.Thread):
    """Largest anonymous and file-backed resident memory seen while it runs (``/proc/self/statm``)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.anon = 0
        self.file = 0
        self.stop = threading.Event()

    def run(self) -> None:
        fd = os.open("/proc/self/statm", os.O_RDONLY)
        try:
            while not self.stop.is_set():
                fields = os.pread(fd, 128, 0).split()
                resident, shared = int(fields[1]) * PAGE, int(fields[2]) * PAGE
                self.anon = max(self.anon, resident - shared)
                self.file = max(self.file, shared)
                time.sleep(0.00005)
        finally:
            os.close(fd)


def child(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Import the stack, take the baseline, load the checkpoint under the sampler; the figures in bytes."""
    import bitsandbytes  # noqa: F401
    import peft  # noqa: F401
    import transformers

    from trainer.build import base_dtype, bnb_config

    plan = Plan.from_dict(spec["plan"])
    kwargs: dict[str, Any] = {"quantization_config": bnb_config(plan)} if plan.method == "qlora" else {}
    auto = transformers.AutoModelForCausalLM
    base = _status()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current resident size
    sys.setswitchinterval(0.00005)
    sampler = _Sampler()
    sampler.start()
    model = auto.from_pretrained(spec["path"], dtype=base_dtype(plan), device_map={"": "cpu"},
                                 use_safetensors=True, **kwargs)  # fmt: skip
    sampler.stop.set()
    sampler.join()
    after = _status()
    held = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    shared0 = base["RssFile"] + base["RssShmem"]
    anon0 = base["VmRSS"] - shared0
    anon1 = after["VmRSS"] - after["RssFile"] - after["RssShmem"]
    return {"runtime": base["VmRSS"], "hwm": after["VmHWM"] - base["VmRSS"], "anon_peak": sampler.anon - anon0,
            "kept": anon1 - anon0, "transient": max(sampler.anon - anon1, 0), "file_mapped": sampler.file - shared0,
            "model_tensors": held}  # fmt: skip


# ------------------------------------------------------------------------------------------------ the harness


def save_checkpoint(config: Mapping[str, Any], path: str) -> int:
    """A random bf16 checkpoint of ``config`` written with ``save_pretrained``; its safetensors bytes."""
    import torch
    import transformers

    from trainer.build import make_config

    torch.manual_seed(0)
    cfg = make_config(config, plan_for(config, "lora"))
    auto: Any = transformers.AutoModelForCausalLM
    auto.from_config(cfg, dtype=torch.bfloat16).save_pretrained(path)
    return sum(p.stat().st_size for p in Path(path).glob("*.safetensors"))


def measure(config: Mapping[str, Any], method: str, path: str, *, glibc: bool = False) -> dict[str, Any]:
    """One load in a fresh interpreter (``python -m bench.host_ram --child``). Unless ``glibc``, the child runs with
    ``MALLOC_MMAP_THRESHOLD_`` fixed at 128 KiB (see the module's docstring)."""
    spec = {"plan": plan_for(config, method).to_dict(), "path": path}
    env = os.environ | {"PYTHONPATH": str(REPO), "TRANSFORMERS_VERBOSITY": "error", "TQDM_DISABLE": "1"}
    env.pop("MALLOC_MMAP_THRESHOLD_", None)
    if not glibc:
        env["MALLOC_MMAP_THRESHOLD_"] = str(128 * 1024)
    done = subprocess.run([sys.executable, "-m", "bench.host_ram", "--child", json.dumps(spec)], cwd=REPO,
                          env=env, capture_output=True, text=True, check=True)  # fmt: skip
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def case(config: Mapping[str, Any], method: str, path: str, file_bytes: int, *, glibc: bool = True) -> dict[str, Any]:
    """The measured figures beside the estimate's for the same plan (``glibc``: measure the default allocator too)."""
    plan = plan_for(config, method)
    mem = estimate(plan).to_dict()["memory"]
    host = mem["host"]
    keys = ("loading", "runtime", "host_peak", "loading_mode", "mapped")
    out = {"method": method, "plan": plan.to_dict(), "checkpoint_bytes": file_bytes,
           "measured": measure(config, method, path),
           "estimated": {"weights": mem["components"]["weights"], **{k: host[k] for k in keys}}}  # fmt: skip
    if glibc:
        out["measured_glibc"] = measure(config, method, path, glibc=True)
    return out


def run(config: Mapping[str, Any] = BENCH_CONFIG, log: Any = print) -> dict[str, Any]:
    from trainer.run import versions

    rows = []
    with tempfile.TemporaryDirectory(prefix="tuneplan-host-") as tmp:
        file_bytes = save_checkpoint(config, tmp)
        for method in METHODS:
            rows.append(case(config, method, tmp, file_bytes))
            m, e = rows[-1]["measured"], rows[-1]["estimated"]
            log(
                f"{method:6s} runtime {m['runtime'] / MIB:6.1f}  transient {m['transient'] / MIB:6.1f} "
                f"(est. {e['loading'] / MIB:6.1f})  kept {m['kept'] / MIB:7.1f} (weights {e['weights'] / MIB:7.1f})"
                f"  mapped {m['file_mapped'] / MIB:6.1f} (est. {e['mapped'] / MIB:6.1f})  hwm {m['hwm'] / MIB:7.1f}"
                f"  glibc: anon peak {rows[-1]['measured_glibc']['anon_peak'] / MIB:7.1f} MiB"
            )
    return {"generated": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"), "versions": versions(),
            "config": dict(config), "cases": rows}  # fmt: skip


def load() -> dict[str, Any] | None:
    return json.loads(HOST_JSON.read_text()) if HOST_JSON.exists() else None


def section(data: Mapping[str, Any] | None) -> list[str]:
    """docs/accuracy.md's table of the measured loads (nothing when they were never run)."""
    if data is None:
        return []
    cfg = data["config"]
    lines = [
        "## Host RAM: loading and the process (CPU)",
        "",
        f"`python -m bench.host_ram` (`bench/results/host_ram.json`, {data.get('generated', '?')}) writes a random "
        f"Llama ({cfg['hidden_size']} hidden, {cfg['intermediate_size']} MLP, {cfg['num_hidden_layers']} layers, "
        f"{cfg['vocab_size']:,} vocab, untied: {data['cases'][0]['checkpoint_bytes'] / MIB:,.0f} MiB of bf16 "
        "safetensors) with `save_pretrained`, then each load runs in a fresh process that imports the stack, "
        "takes its baseline and calls `from_pretrained` as the trainer does (`device_map` cpu; QLoRA with the "
        "plan's `BitsAndBytesConfig`). From `/proc/self`: `runtime` the process's RSS before loading; `transient` "
        "the anonymous memory loading held beyond what stayed (sampled every ~50 µs, glibc's mmap threshold fixed "
        "so freed memory leaves at once); `kept` what stayed; `mapped` the file-backed pages read (the checkpoint "
        "through transformers' mmap, and library code run for the first time); `VmHWM` the exact peak of all of "
        "it; `glibc` the anonymous peak with the default allocator. MiB above the baseline (`runtime`: MiB). "
        "`est. runtime` is `HOST_RUNTIME_BYTES`, the largest process measured with the default allocator; `est. "
        "weights` is `memory.components.weights`, the weights as training holds them (QLoRA's 16-bit ones upcast "
        "to fp32 by `prepare_model_for_kbit_training` after loading).",
        "",
        "| load | runtime | est. `runtime` | transient | est. `loading` | kept | est. weights | mapped | est. `mapped` "
        "| VmHWM | glibc anon peak |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in data["cases"]:
        m, e, g = c["measured"], c["estimated"], c.get("measured_glibc", c["measured"])
        lines.append(
            f"| {c['method']} | {m['runtime'] / MIB:,.1f} | {e['runtime'] / MIB:,.1f} | {m['transient'] / MIB:,.1f} | "
            f"{e['loading'] / MIB:,.1f} "
            f"| {m['kept'] / MIB:,.1f} | {e['weights'] / MIB:,.1f} | {m['file_mapped'] / MIB:,.1f} | "
            f"{e['mapped'] / MIB:,.1f} | {m['hwm'] / MIB:,.1f} | {g['anon_peak'] / MIB:,.1f} |"
        )
    lines += [
        "",
        "What the loader does (transformers 5.24 `core_model_loading.convert_and_load_state_dict_in_model`, "
        "safetensors 0.8's mmap backend): `tensor[...]` is a zero-copy view of the mapped file, so a bf16 weight "
        "loaded as bf16 adds no anonymous memory at all (LoRA: 1.9 MiB kept for 594 MiB of weights; they stay "
        "file-backed until training touches them), a converted weight is the weight itself (full, fp32: kept = "
        "the fp32 weights, nothing transient), and bitsandbytes' CPU `quantize_4bit` holds an fp32 copy, the "
        "scaled copy, int32 and uint8 codes and the packed halves of one linear at a time: 14 bytes per element "
        "modelled, 13.0 measured (the estimate 7 % above). The mapped pages are clean page cache (the kernel "
        "reclaims them under pressure; "
        "`memory.host.mapped` reports them, `host_peak` does not count them). glibc's default allocator keeps "
        "freed heap in the process: QLoRA's quantize-on-load on the CPU then peaks ~55 MiB higher than the "
        "fixed-threshold figure. On a GPU the loader copies each view straight to the device (bitsandbytes "
        "quantizes there), so the host holds no tensor copy unless the dtype changes: torch's blocking "
        "host-to-device copy converts on the host, one fp32 copy per loading thread (4): "
        "`estimator/_sharding.py` `loading_host_bytes`, from the code, not measured here (no GPU). "
        "`tests/trainer/test_host_ram.py` repeats two small loads in CI; `tests/estimator/test_host_results.py` "
        "holds this table to the estimate.",
        "",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    data = run()
    HOST_JSON.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {HOST_JSON.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
