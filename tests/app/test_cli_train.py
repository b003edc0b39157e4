"""`tuneplan verify` and `tuneplan estimate --traced`: real runs from the CLI, each in its own process (train extra)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

pytestmark = [pytest.mark.train, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "tests" / "fixtures" / "configs" / "llama.json"
PLAN = ["--config", str(CONFIG), "--method", "qlora", "--batch-size", "2", "--seq-len", "64", "--lora-dropout", "0"]


def tuneplan(*args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "tuneplan"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=300, cwd=ROOT)


def test_verify_on_cpu_puts_measured_next_to_estimated() -> None:
    proc = tuneplan("verify", *PLAN, "--device", "cpu", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["device"] == "cpu" and not report["oom"]
    peak = next(r for r in report["tiers"] if r["name"] == "peak_allocated")
    assert peak["measured"] > 0 and abs(peak["error_percent"]) <= 3.0, peak
    weights = next(r for r in report["components"] if r["name"] == "weights")
    assert abs(weights["error_percent"]) <= 5.0, weights
    assert report["versions"]["torch"].startswith("2.")


def test_verify_table_output() -> None:
    proc = tuneplan("verify", *PLAN, "--device", "cpu")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "measured vs estimated" in proc.stdout and "peak_allocated" in proc.stdout


def test_estimate_traced_adds_the_fake_tensor_peak() -> None:
    proc = tuneplan("estimate", *PLAN, "--device", "cpu", "--traced", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    d = json.loads(proc.stdout)
    traced = d["traced"]["measured"]["peak_allocated"]
    assert d["traced"]["mode"] == "traced"
    assert abs(traced - d["memory"]["peak_allocated"]) <= 0.03 * traced


def test_verify_cuda_without_a_gpu_is_a_clear_error() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    proc = tuneplan("verify", *PLAN, "--device", "cuda")
    assert proc.returncode == 2
    assert "cuda" in proc.stderr.lower() and "Traceback" not in proc.stderr


def test_estimate_traced_extends_a_few_layers_to_the_models_depth(tmp_path: Path) -> None:
    config = json.loads(CONFIG.read_text()) | {"num_hidden_layers": 16}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    plan = [arg if arg != str(CONFIG) else str(path) for arg in PLAN]
    proc = tuneplan("estimate", *plan, "--no-gradient-checkpointing", "--device", "cpu", "--traced")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "traced at 2, 3, 4 decoder layers and extended to 16" in proc.stdout, proc.stdout[-1500:]


def test_the_depth_line_says_why_every_layer_was_traced() -> None:
    from app.cli import _depth_text

    assert _depth_text({"layers": 2, "traced": [2], "extrapolated": False, "why": "2 layers"}) == (
        "  traced all 2 decoder layers (2 layers)"
    )
    assert "extended to 32" in _depth_text({"layers": 32, "traced": [2, 3, 4], "extrapolated": True, "why": None})
