"""``tuneplan rent``, ``export`` and ``import``, and time and cost in ``estimate``: the real console script."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.app.test_cli import _run


def test_estimate_with_a_gpu_shows_time_and_cost(tmp_path: Path) -> None:
    r = _run("estimate", "llama-3.2-1b", "--method", "lora", "--gpu", "h100-sxm", "--train-tokens", "10000000")
    assert r.returncode == 0, r.stderr
    text = " ".join(r.stdout.split())  # Rich wraps at the terminal's width
    assert "time on 1 × h100-sxm" in text and "tokens/s" in text and "for the run" in text
    d = json.loads(_run("estimate", "llama-3.2-1b", "--gpu", "h100-sxm", "--mfu", "0.5", "--json").stdout)
    assert d["time"]["mfu"]["kind"] == "plan" and d["cost"]


def test_rent_and_a_price_file(tmp_path: Path) -> None:
    out = json.loads(_run("rent", "llama-3.2-1b", "--method", "lora", "--train-tokens", "5000000", "--json").stdout)
    assert out["options"] and out["sorted_by"] == "run_usd"
    table = tmp_path / "prices.json"
    row = {"gpu": "t4", "provider": "Cheap", "usd_per_gpu_hour": 0.01, "date": "2026-01-01", "source": "x"}
    table.write_text(json.dumps({"prices": [row]}))
    r = _run("rent", "llama-3.2-1b", "--method", "lora", "--dtype", "float16", "--prices", str(table))
    assert r.returncode == 0, r.stderr
    assert "t4" in r.stdout.split("\n", 5)[4] and "Cheap" in r.stdout  # the cheapest row first
    table.write_text("{}")
    bad = _run("rent", "llama-3.2-1b", "--prices", str(table))
    assert bad.returncode == 2 and "a 'prices' list" in bad.stderr


def test_export_then_import_round_trip(tmp_path: Path) -> None:
    r = _run("export", "llama-3.1-8b", "--method", "qlora", "--batch-size", "2", "--format", "axolotl")
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load(r.stdout)["base_model"] == "meta-llama/Llama-3.1-8B"
    path = tmp_path / "axolotl.yaml"
    path.write_text(r.stdout)
    back = _run("import", str(path))
    assert back.returncode == 0, back.stderr
    plan = json.loads(back.stdout)
    assert (plan["method"], plan["batch_size"]) == ("qlora", 2) and "ignored" in back.stderr
    (tmp_path / "plan.json").write_text(back.stdout)
    assert _run("estimate", "--plan", str(tmp_path / "plan.json"), "--json").returncode == 0
    out = tmp_path / "ds.json"
    assert _run("export", "llama-3.1-8b", "--format", "deepspeed", "--out", str(out)).returncode == 0
    assert json.loads(out.read_text())["zero_optimization"]["stage"] == 0


def test_an_objective_exports_and_imports_through_the_cli(tmp_path: Path) -> None:
    path = tmp_path / "dpo.yaml"
    r = _run("export", "llama-3.1-8b", "--objective", "dpo", "--format", "trl", "--out", str(path))
    assert r.returncode == 0, r.stderr
    assert "trl dpo --config dpo.yaml" in r.stderr and "precompute_ref_log_probs" in path.read_text()
    back = _run("import", str(path))  # the file's name says dpo
    assert back.returncode == 0, back.stderr
    assert json.loads(back.stdout)["objective"] == "dpo"
    path.rename(tmp_path / "run.yaml")
    named = _run("import", str(tmp_path / "run.yaml"), "--objective", "kto")
    assert named.returncode == 0, named.stderr
    assert json.loads(named.stdout)["objective"] == "kto"


def test_bad_input_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("base_model: x/y\nadapter: ia3\n")
    r = _run("import", str(bad))
    assert r.returncode == 2 and "adapter 'ia3' is not planned" in r.stderr
    assert _run("import", str(tmp_path / "missing.yaml")).returncode == 2
    r = _run("export", "llama-3.1-8b", "--format", "keras")
    assert r.returncode == 2
