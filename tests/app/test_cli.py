"""The real ``tuneplan`` console script, run in subprocesses."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from estimator import COMPONENTS

ROOT = Path(__file__).resolve().parents[2]
LLAMA = ROOT / "tests" / "fixtures" / "configs" / "llama.json"


def _exe() -> str:
    local = Path(sys.executable).parent / "tuneplan"
    found = str(local) if local.exists() else shutil.which("tuneplan")
    if not found:
        pytest.skip("the tuneplan console script is not installed")
    return found


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "0", "NO_COLOR": "1"}
    return subprocess.run([_exe(), *args], capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)


def _contract(d: dict[str, object]) -> None:
    assert {"params", "storage", "memory", "plan", "model", "fits"} <= set(d)
    mem = d["memory"]
    assert isinstance(mem, dict)
    for k in ("peak_allocated", "peak_reserved", "total", "components", "peak_phase"):
        assert k in mem
    assert set(mem["components"]) == set(COMPONENTS)


def test_estimate_catalog_json() -> None:
    r = _run("estimate", "llama-3.1-8b", "--method", "qlora", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    _contract(d)
    assert d["params"]["total"] == 8_030_261_248 and d["plan"]["method"] == "qlora"


def test_estimate_config_file() -> None:
    r = _run("estimate", "--config", str(LLAMA), "--method", "lora", "--seq-len", "256", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    _contract(d)
    assert d["model"]["source"] == "inline" and d["plan"]["method"] == "lora"


def test_estimate_plan_file(tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"model": "gpt2", "method": "full", "seq_len": 512, "device": "cpu"}))
    r = _run("estimate", "--plan", str(plan), "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["params"]["total"] == 124_439_808 and d["memory"]["components"]["overhead"] == 0


def test_estimate_table() -> None:
    r = _run("estimate", "llama-3.1-8b")
    assert r.returncode == 0, r.stderr
    assert "peak allocated" in r.stdout and "Storage" in r.stdout
    assert "all 1 GPUs" not in r.stdout and "per rank" not in r.stdout and "host RAM (CPU)" in r.stdout


def test_estimate_table_says_the_images_and_their_tokens() -> None:
    r = _run("estimate", "qwen2-vl-7b-instruct", "--images-per-sample", "2", "--image-size", "448x448", "--json")
    assert r.returncode == 0, r.stderr
    tokens = json.loads(r.stdout)["inputs"]["image_tokens_per_row"]
    assert tokens == 2 * (32 * 32 // 4 + 2)  # 448² -> 32 x 32 patches, merged 2x2, two delimiters each
    table = _run("estimate", "qwen2-vl-7b-instruct", "--images-per-sample", "2", "--image-size", "448x448")
    assert f"+ 2 images ({tokens:,} image tokens per row)" in " ".join(table.stdout.split())
    refused = _run("estimate", "llama-3.1-8b", "--images-per-sample", "1")
    assert refused.returncode == 2 and "image inputs of llama are not modelled yet" in refused.stderr


def test_estimate_table_says_the_video_and_its_tokens() -> None:
    args = ("estimate", "qwen2-vl-7b-instruct", "--video-frames", "3", "--image-size", "224x224")
    r = _run(*args, "--json")
    assert r.returncode == 0, r.stderr
    inputs = json.loads(r.stdout)["inputs"]
    assert inputs["video_tokens_per_row"] == 2 * 24 * 24 // 4 + 2  # 224² frames grow to 336², 3 frames pad to 4
    table = _run(*args)
    assert f"+ a video of 3 frames ({inputs['video_tokens_per_row']:,} video tokens per row)" in " ".join(
        table.stdout.split()
    )
    refused = _run("estimate", "llama-3.1-8b", "--video-frames", "4")
    assert refused.returncode == 2 and "video inputs of llama are not modelled yet" in refused.stderr


def test_estimate_table_labels_per_gpu_and_all_gpus() -> None:
    r = _run("estimate", "llama-3.1-8b", "--method", "lora", "--num-gpus", "4", "--sharding", "fsdp", "--json")
    assert r.returncode == 0, r.stderr
    mem = json.loads(r.stdout)["memory"]
    rank = mem["per_rank"]
    assert rank["num_gpus"] == 4 and rank["peak_allocated"] == mem["peak_allocated"]  # per GPU, not summed
    assert rank["all_gpus_total"] == 4 * mem["total"]
    r = _run("estimate", "llama-3.1-8b", "--method", "lora", "--num-gpus", "4", "--sharding", "fsdp")
    assert r.returncode == 0, r.stderr
    out = " ".join(r.stdout.split())  # the table may wrap its title
    assert "GPU memory (per GPU, each of 4 (fsdp)" in out
    assert f"all 4 GPUs (total) │ {rank['all_gpus_total']:,}" in out
    assert f"host RAM (CPU) per rank │ {mem['host_peak']:,}" in out


def test_zero_infinity_shows_the_nvme_bytes_beside_host_ram() -> None:
    """ZeRO-3 with its state on NVMe: the table adds the bytes on the NVMe path per rank, from memory.host.nvme."""
    args = ("estimate", "llama-3.1-8b", "--method", "full", "--num-gpus", "8", "--sharding", "zero3", "--offload",
            "optimizer", "--offload-device", "nvme")  # fmt: skip
    r = _run(*args, "--json")
    assert r.returncode == 0, r.stderr
    nvme = json.loads(r.stdout)["memory"]["host"]["nvme"]
    assert nvme > 0
    out = " ".join(_run(*args).stdout.split())
    assert f"{nvme:,}" in out and "NVMe (ZeRO-Infinity)" in out
    bad = _run("estimate", "llama-3.1-8b", "--sharding", "zero2", "--num-gpus", "2", "--offload-device", "nvme")
    assert bad.returncode == 2 and "--offload-device 'nvme' is DeepSpeed ZeRO-3's" in bad.stderr


def test_storage_rule_of_thumb() -> None:
    r = _run("storage", "--params", "10e9", "--trainable-fraction", "0.01", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert (d["fp16"], d["int4"], d["adapter"], d["qlora_total"]) == (
        20_000_000_000, 5_000_000_000, 200_000_000, 5_200_000_000,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("estimate", "llama-3.1-8b", "--batch-size", "0"), "--batch-size must be between 1"),
        (("estimate", "llama-3.1-8b", "--method", "bogus"), "invalid choice: 'bogus'"),
        (("estimate", "llama-3.1-8b", "--seq-len", "many"), "invalid int value: 'many'"),
        (("estimate", "acme/no-such-model"), "error:"),
        (("estimate", "--config", "no/such/config.json"), "cannot read the config file"),
        (("estimate", "--plan", "no/such/plan.json"), "cannot read the plan file"),
        (("estimate",), "name a model"),
        (("storage", "--params", "0"), "--params must be a whole number"),
        (("storage", "--params", "1e9", "--trainable-fraction", "2"), "--trainable-fraction must be between 0 and 1"),
    ],
)
def test_bad_input_exits_2(args: tuple[str, ...], message: str) -> None:
    r = _run(*args)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert message in r.stderr
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout


def test_a_catalog_estimate_imports_neither_torch_nor_the_web_stack() -> None:
    """``estimate`` and ``storage`` load only what they need: no training stack, no web framework, no pydantic (the
    command answers in well under a quarter of a second; docs/performance.md has the figures)."""
    heavy = ("torch", "transformers", "peft", "bitsandbytes", "fastapi", "starlette", "uvicorn", "pydantic",
             "pydantic_settings", "huggingface_hub", "sqlalchemy", "importlib.metadata")  # fmt: skip
    code = (
        "import contextlib, io, sys\nfrom app.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert main(['estimate', 'llama-3.1-8b', '--json']) == 0\n"
        "    assert main(['estimate', 'llama-3.1-8b', '--gpu', 'rtx-4090']) == 0\n"
        "    assert main(['storage', '--params', '1e9']) == 0\n"
        f"print(' '.join(m for m in {heavy!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == []


def test_every_option_says_what_it_does_and_its_default() -> None:
    import argparse

    from app.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    missing = [
        f"{name} {a.option_strings or a.dest}"
        for name, parser in sub.choices.items()
        for a in parser._actions
        if not isinstance(a, argparse._HelpAction) and "default" not in (a.help or "").lower()
    ]
    assert missing == []
    shown = " ".join(_run("estimate", "--help").stdout.split())
    assert "--allow-long-context" in shown and "unless --allow-long-context is set" in shown
    assert "--sharding {ddp,fsdp,zero1,zero2,zero3}" in shown and "--advise" in shown


def test_advise_prints_the_levers_with_the_options_that_apply_them() -> None:
    r = _run("estimate", "llama-3.1-8b", "--gpu", "RTX 4090", "--batch-size", "4", "--seq-len", "4096", "--advise")
    assert r.returncode == 0, r.stderr
    assert "Make it fit on NVIDIA GeForce RTX 4090" in r.stdout and "--seq-len 1024" in r.stdout
    d = json.loads(_run("estimate", "llama-3.1-8b", "--gpu", "4090", "--batch-size", "4", "--seq-len", "4096",
                        "--json").stdout)  # fmt: skip
    assert d["plan"]["gpu"] == "rtx-4090" and d["advice"][0]["plan_changes"] == {"seq_len": 1024, "grad_accum_steps": 4}


def test_messages_name_the_options() -> None:
    r = _run("estimate", "gpt2", "--seq-len", "4096")
    assert r.returncode == 2 and "set --allow-long-context" in r.stderr and "lower --seq-len" in r.stderr
    r = _run("estimate", "llama-3.1-8b", "--gpu", "A100")
    assert r.returncode == 2 and "matches 2 catalog GPUs: a100-40gb" in r.stderr
    ok = _run("estimate", "llama-3.1-8b", "--gpu", "My card:12GiB", "--json")
    assert ok.returncode == 0 and json.loads(ok.stdout)["fit"]["name"] == "My card"
