"""GPU check: measure a prepared matrix of real training steps on one CUDA device, each case in its own process.

Two matrices (``--matrix``):

* ``setups`` (the default): what changes the figure on a card and stack the estimate was not calibrated on —
  fp16 vs bf16, SDPA pinned to each backend (flash, memory-efficient, cuDNN, math), eager attention, padded vs
  unpadded batches, the Trainer's loop vs a plain loop, the chunked loss (TRL's fused LM head), for LoRA and QLoRA
  on Llama-3.2-1B (grouped KV heads) at batch 2 x 2048 tokens (four of them with the chunked loss, where the
  attention's backward sets the peak), plus two Llama-3.1-8B QLoRA cases. 25 cases, about 9 minutes on an H200
  (21 of them measured 443 s; ``--budget`` stops it in time). Each run also records which SDPA backend torch
  picked (``sdpa_backends``), which the estimate's kernel rules predict (``estimator.attention_path``).
* ``base``: the first H200 matrix (bench/results/gpu_h200.json): Llama-3.2-1B, Qwen2.5-1.5B, Llama-3.1-8B x QLoRA /
  LoRA x gradient checkpointing on / off x seq 512 / 2048, batch 1, AdamW, SDPA.

Configs come from ``estimator/data/models.json`` when present, else the copies embedded below. Each case runs
``python -m trainer.run`` in a subprocess with a timeout, so an OOM, a crash or a hang costs that case only. The
output is one JSON (``--out``): the card, the versions, and one entry per case (the run's result, or its error /
timeout / skip). It is rewritten after every case, so a run cut short still leaves what it measured.

    python bench/gpu_check.py --out gpu_setups.json --budget 560     # on a CUDA machine, < 10 minutes
    python bench/gpu_check.py --matrix base --out gpu_results.json   # the 24-case matrix, < 8 minutes
    python bench/gpu_check.py --dry --out dry.json --limit 2         # same matrix shape, tiny configs, on CPU

``--dry`` swaps in tiny configs (dims multiples of 64) and the CPU, so the harness itself is tested anywhere (a
case the CPU cannot run as such, a pinned CUDA-only backend, is run with torch's choice). ``--traced`` runs the
same real-size matrix through ``python -m trainer.traced`` on the CPU (fake tensors; the plans say cuda so 512-byte
rounding and foreach AdamW apply): the prediction to set beside a GPU run's measurements.

    python bench/gpu_check.py --traced --out traced.json --budget 1200
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MODELS_JSON = REPO / "estimator" / "data" / "models.json"
MODEL_IDS = ("llama-3.2-1b", "qwen2.5-1.5b", "llama-3.1-8b")

EMBEDDED: dict[str, dict[str, Any]] = {
    "llama-3.2-1b": {
        "model_type": "llama",
        "vocab_size": 128256,
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 64,
        "max_position_embeddings": 131072,
        "rms_norm_eps": 1e-05,
        "rope_theta": 500000.0,
        "rope_scaling": {
            "factor": 32.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
            "rope_type": "llama3",
        },
        "hidden_act": "silu",
        "tie_word_embeddings": True,
        "bos_token_id": 128000,
        "eos_token_id": 128001,
    },
    "qwen2.5-1.5b": {
        "model_type": "qwen2",
        "vocab_size": 151936,
        "hidden_size": 1536,
        "intermediate_size": 8960,
        "num_hidden_layers": 28,
        "num_attention_heads": 12,
        "num_key_value_heads": 2,
        "max_position_embeddings": 131072,
        "rms_norm_eps": 1e-06,
        "rope_theta": 1000000.0,
        "use_sliding_window": False,
        "hidden_act": "silu",
        "tie_word_embeddings": True,
        "bos_token_id": 151643,
        "eos_token_id": 151643,
    },
    "llama-3.1-8b": {
        "model_type": "llama",
        "vocab_size": 128256,
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "max_position_embeddings": 131072,
        "rms_norm_eps": 1e-05,
        "rope_theta": 500000.0,
        "rope_scaling": {
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
            "rope_type": "llama3",
        },
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "bos_token_id": 128000,
        "eos_token_id": 128001,
    },
}

# --dry: the same matrix shape on tiny models (one llama-like, one qwen2-like with tied embeddings, one larger).
DRY: dict[str, dict[str, Any]] = {
    "llama-3.2-1b": {
        "model_type": "llama",
        "vocab_size": 1024,
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        "tie_word_embeddings": True,
    },
    "qwen2.5-1.5b": {
        "model_type": "qwen2",
        "vocab_size": 1024,
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        "tie_word_embeddings": True,
    },
    "llama-3.1-8b": {
        "model_type": "llama",
        "vocab_size": 2048,
        "hidden_size": 256,
        "intermediate_size": 512,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        "tie_word_embeddings": False,
    },
}
DRY_SEQ = {512: 64, 2048: 128}


def model_configs(dry: bool) -> tuple[dict[str, dict[str, Any]], str]:
    """The three configs and where they came from."""
    if dry:
        return DRY, "embedded tiny (--dry)"
    try:
        data = json.loads(MODELS_JSON.read_text())
        entries = data["models"] if isinstance(data, dict) else data
        found = {e["id"]: dict(e["config"]) for e in entries if e.get("id") in MODEL_IDS}
        if set(found) == set(MODEL_IDS):
            return found, str(MODELS_JSON.relative_to(REPO))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return EMBEDDED, "embedded"


def base_matrix(dry: bool) -> list[dict[str, Any]]:
    """The first H200 matrix. Cases small models first: a broken harness fails fast and cheaply."""
    configs, source = model_configs(dry)
    cases = []
    # The 8B runs right after the first small model: if the budget runs out, the second small model is what goes.
    for model_id in ("llama-3.2-1b", "llama-3.1-8b", "qwen2.5-1.5b"):
        for method in ("qlora", "lora"):
            for gc in (True, False):
                for seq in (512, 2048):
                    plan = {
                        "config": configs[model_id],
                        "method": method,
                        "dtype": "bfloat16",
                        "batch_size": 1,
                        "seq_len": DRY_SEQ[seq] if dry else seq,
                        "gradient_checkpointing": gc,
                        "attn_implementation": "sdpa",
                        "optimizer": "adamw_torch",
                        "lora_r": 16,
                        "lora_alpha": 32,
                        "lora_dropout": 0.05,
                        "target_modules": "all-linear",
                        "device": "cpu" if dry else "cuda",
                    }
                    name = f"{model_id}/{method}/{'gc' if gc else 'nogc'}/s{seq}"
                    cases.append({"name": name, "model": model_id, "config_source": source, "plan": plan})
    return cases


# The setups matrix: (name, model, plan changes over SETUP_BASE). Unpadded, the 1B's grouped KV heads go to SDPA
# with enable_gqa (cuDNN/flash for 16-bit, math for QLoRA's fp32); padded, K/V are repeated and a mask is passed
# (memory-efficient or cuDNN). A pinned backend that cannot run the call is left out (torch would refuse it).
SETUPS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("lora/bf16", "llama-3.2-1b", {}),
    ("lora/fp16", "llama-3.2-1b", {"dtype": "float16"}),
    ("lora/bf16/padded", "llama-3.2-1b", {"padding": "padded"}),
    ("lora/bf16/plain", "llama-3.2-1b", {"training_loop": "plain"}),
    ("lora/bf16/chunked", "llama-3.2-1b", {"loss": "chunked"}),
    ("lora/bf16/flash", "llama-3.2-1b", {"sdpa_backend": "flash"}),
    ("lora/bf16/cudnn", "llama-3.2-1b", {"sdpa_backend": "cudnn"}),
    ("lora/bf16/math", "llama-3.2-1b", {"sdpa_backend": "math"}),
    ("lora/bf16/padded/efficient", "llama-3.2-1b", {"padding": "padded", "sdpa_backend": "efficient"}),
    ("lora/bf16/eager", "llama-3.2-1b", {"attn_implementation": "eager"}),
    ("lora/bf16/padded/nogc", "llama-3.2-1b", {"padding": "padded", "gradient_checkpointing": False}),
    ("qlora", "llama-3.2-1b", {"method": "qlora"}),
    ("qlora/fp16", "llama-3.2-1b", {"method": "qlora", "dtype": "float16"}),
    ("qlora/padded", "llama-3.2-1b", {"method": "qlora", "padding": "padded"}),
    ("qlora/plain", "llama-3.2-1b", {"method": "qlora", "training_loop": "plain"}),
    ("qlora/chunked", "llama-3.2-1b", {"method": "qlora", "loss": "chunked"}),
    ("qlora/eager", "llama-3.2-1b", {"method": "qlora", "attn_implementation": "eager"}),
    ("qlora/padded/nogc", "llama-3.2-1b", {"method": "qlora", "padding": "padded", "gradient_checkpointing": False}),
    # unpadded without checkpointing: every layer keeps the math path's tensors and o_proj's own input copy
    ("qlora/nogc", "llama-3.2-1b", {"method": "qlora", "gradient_checkpointing": False}),
    # the chunked loss lowers the head's peak below the attention backward's: CUDA's softmax backward makes
    # ``grad * output`` (one more b·a·s² block in the softmax's dtype) that the CPU kernel does not
    ("lora/bf16/math/chunked", "llama-3.2-1b", {"sdpa_backend": "math", "loss": "chunked"}),
    ("lora/bf16/eager/chunked", "llama-3.2-1b", {"attn_implementation": "eager", "loss": "chunked"}),
    (
        "lora/fp16/eager/chunked",
        "llama-3.2-1b",
        {"dtype": "float16", "attn_implementation": "eager", "loss": "chunked"},
    ),
    ("qlora/eager/chunked", "llama-3.2-1b", {"method": "qlora", "attn_implementation": "eager", "loss": "chunked"}),
    ("8b/qlora/padded", "llama-3.1-8b", {"method": "qlora", "padding": "padded"}),
    ("8b/qlora/chunked", "llama-3.1-8b", {"method": "qlora", "loss": "chunked"}),
)
SETUP_BASE: dict[str, Any] = {
    "method": "lora", "dtype": "bfloat16", "batch_size": 2, "seq_len": 2048, "gradient_checkpointing": True,
    "attn_implementation": "sdpa", "sdpa_backend": "auto", "padding": "none", "training_loop": "trainer",
    "loss": "standard", "optimizer": "adamw_torch", "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.0,
    "target_modules": "all-linear",
}  # fmt: skip
CUDA_ONLY_BACKENDS = ("efficient", "cudnn")
TORCH_SDPA = {
    "flash_attention": "flash",
    "efficient_attention": "efficient",
    "cudnn_attention": "cudnn",
    "math": "math",
}
"""torch's names for the SDPA backends a run records (``sdpa_backends``), in the estimator's names."""


def chosen_backend(result: dict[str, Any]) -> str:
    """The attention kernel a run's step took, in the estimator's names (``estimator.attention_path``): the SDPA
    backends it recorded, joined with "+" where there were several, or "eager" where it made no SDPA call."""
    return "+".join(TORCH_SDPA.get(b, b) for b in result.get("sdpa_backends") or []) or "eager"


def setups_matrix(dry: bool) -> list[dict[str, Any]]:
    """The setups matrix (module docstring); on ``--dry`` tiny configs on the CPU."""
    configs, source = model_configs(dry)
    cases = []
    for name, model_id, changes in SETUPS:
        plan = SETUP_BASE | changes | {"config": configs[model_id], "device": "cpu" if dry else "cuda"}
        if dry:
            plan["seq_len"] = DRY_SEQ[2048]
            if plan["sdpa_backend"] in CUDA_ONLY_BACKENDS:
                plan["sdpa_backend"] = "auto"
        cases.append({"name": name, "model": model_id, "config_source": source, "plan": plan})
    return cases


def matrix(dry: bool, which: str = "base") -> list[dict[str, Any]]:
    """The cases of matrix ``which`` ("setups" or "base")."""
    return setups_matrix(dry) if which == "setups" else base_matrix(dry)


def card() -> dict[str, Any]:
    """What the machine is: nvidia-smi's view when there is one."""
    info: dict[str, Any] = {"host": platform.node(), "python": platform.python_version()}
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        info["nvidia_smi"] = out.stdout.strip() or out.stderr.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        info["nvidia_smi"] = f"unavailable: {exc}"
    return info


def run_case(
    case: dict[str, Any],
    device: str,
    steps: int,
    timeout: float,
    tmp: Path,
    threads: int | None,
    module: str = "trainer.run",
) -> dict[str, Any]:
    plan_path = tmp / "plan.json"
    out_path = tmp / "result.json"
    out_path.unlink(missing_ok=True)
    plan_path.write_text(json.dumps(case["plan"]))
    cmd = [sys.executable, "-m", module, "--plan", str(plan_path), "--device", device]
    cmd += ["--steps", str(steps), "--out", str(out_path)]
    if threads:
        cmd += ["--threads", str(threads)]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), str(REPO)) if p)
    entry: dict[str, Any] = {"name": case["name"], "model": case["model"], "config_source": case["config_source"]}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        entry.update(status="timeout", wall_s=time.perf_counter() - t0)
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
        entry["stderr_tail"] = stderr[-3000:]
        return entry
    entry["wall_s"] = time.perf_counter() - t0
    entry["returncode"] = proc.returncode
    if proc.returncode == 0 and out_path.exists():
        result = json.loads(out_path.read_text())
        entry["status"] = "oom" if result.get("oom") else "ok"
        entry["result"] = result
    else:
        entry["status"] = "error"
        entry["stderr_tail"] = proc.stderr[-3000:]
    return entry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Measure the prepared GPU matrix (or --dry on CPU)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--matrix", choices=("setups", "base"), default="setups", help="which matrix (see above)")
    parser.add_argument("--dry", action="store_true", help="tiny configs on CPU: check the harness anywhere")
    parser.add_argument("--traced", action="store_true", help="real sizes through trainer.traced, on CPU")
    parser.add_argument("--limit", type=int, default=None, help="run only the first N cases")
    parser.add_argument("--only", action="append", default=[], help="run only cases whose name contains this")
    parser.add_argument("--steps", type=int, default=2, help="measured steps per case (after one warm-up)")
    parser.add_argument("--case-timeout", type=float, default=150.0)
    parser.add_argument("--budget", type=float, default=450.0, help="seconds for the whole matrix; the rest skip")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)

    device = "cpu" if args.dry or args.traced else "cuda"
    module = "trainer.traced" if args.traced else "trainer.run"
    cases = matrix(args.dry, args.matrix)
    if args.only:
        cases = [c for c in cases if any(o in c["name"] for o in args.only)]
    if args.limit is not None:
        cases = cases[: args.limit]
    report: dict[str, Any] = {
        "kind": "gpu_check",
        "matrix": args.matrix,
        "dry": args.dry,
        "traced": args.traced,
        "device": device,
        "card": card(),
        "env": {k: os.environ.get(k) for k in ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF")},
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cases": [],
    }
    out = Path(args.out)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        for case in cases:
            elapsed = time.perf_counter() - start
            if elapsed > args.budget:
                report["cases"].append({"name": case["name"], "status": "skipped", "reason": "budget"})
                continue
            timeout = min(args.case_timeout, max(10.0, args.budget - elapsed + 30.0))
            entry = run_case(case, device, args.steps, timeout, Path(tmp), args.threads, module)
            report["cases"].append(entry)
            if "versions" not in report and "result" in entry:
                report["versions"] = entry["result"].get("versions")
            report["elapsed_s"] = time.perf_counter() - start
            out.write_text(json.dumps(report, indent=1, default=str) + "\n")
            peak = entry.get("result", {}).get("measured", {}).get("peak_allocated")
            wall = entry.get("wall_s", 0.0)
            print(f"{entry['name']:40s} {entry['status']:8s} peak={peak} wall={wall:.1f}s", flush=True)
            if entry["status"] == "error" and len(report["cases"]) == 1 and len(cases) > 1:
                # The first case failing is most likely the harness or the stack, not the case: stop early and
                # keep the device time for a rerun.
                print(entry.get("stderr_tail", ""), flush=True)
                for rest in cases[1:]:
                    report["cases"].append({"name": rest["name"], "status": "skipped", "reason": "first case failed"})
                break
    report["elapsed_s"] = time.perf_counter() - start
    out.write_text(json.dumps(report, indent=1, default=str) + "\n")
    ok = sum(1 for c in report["cases"] if c["status"] in ("ok", "oom"))
    print(f"{ok}/{len(report['cases'])} cases measured in {report['elapsed_s']:.0f}s -> {out}")
    return 0 if ok == len(report["cases"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
