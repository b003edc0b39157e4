"""The ``tuneplan`` command line: estimate, storage, verify, serve, models, gpus.

Typer + Rich. ``estimate`` and ``storage`` import neither torch nor the web stack, so they answer in well under
half a second. Bad input exits with code 2 and a message that says what to fix.

    tuneplan estimate meta-llama/Llama-3.1-8B --method qlora --seq-len 2048 --batch-size 1
    tuneplan estimate --config config.json --method lora --json
    tuneplan storage --params 10e9 --trainable-fraction 0.01
    tuneplan verify llama-3.2-1b --method qlora --device cpu
    tuneplan serve --port 8000
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from app.compare import compare
from app.gpu import nvidia_gpu_present
from estimator import EstimatorError, Plan, estimate
from estimator._plan import ATTN_IMPLEMENTATIONS, DEVICES, DTYPES, METHODS, OPTIMIZERS, QUANT_TYPES
from estimator._storage import WHY_EXACT_DIFFERS, RuleOfThumb

cli = typer.Typer(add_completion=False, no_args_is_help=True, help="Plan the disk and GPU memory of a fine-tune.")

GB = 10**9
GiB = 2**30


class UsageError(Exception):
    """Bad input from the command line (exit code 2)."""


def _fmt(n: int | float) -> str:
    return f"{n / GB:,.2f} GB ({n / GiB:,.2f} GiB)"


def _choice(name: str, value: str | None, choices: tuple[str, ...]) -> None:
    if value is not None and value not in choices:
        raise UsageError(f"--{name.replace('_', '-')} must be one of {', '.join(choices)}; got {value!r}")


Opt = typer.Option


def _plan_from(model: str | None, config: Path | None, plan_file: Path | None, fields: dict[str, Any]) -> Plan:
    data: dict[str, Any] = {}
    if plan_file is not None:
        try:
            data = json.loads(plan_file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise UsageError(f"cannot read the plan file {plan_file}: {exc}") from exc
        if not isinstance(data, dict):
            raise UsageError("the plan file must hold a JSON object")
    if config is not None:
        try:
            data["config"] = json.loads(config.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise UsageError(f"cannot read the config file {config}: {exc}") from exc
        data.pop("model", None)
    elif model is not None:
        data["model"] = model
        data.pop("config", None)
    for key, value in fields.items():
        if value is not None:
            data[key] = value
    if "target_modules" in data and isinstance(data["target_modules"], str) and data["target_modules"] != "all-linear":
        data["target_modules"] = [t.strip() for t in data["target_modules"].split(",") if t.strip()]
    if isinstance(data.get("modules_to_save"), str):
        data["modules_to_save"] = [t.strip() for t in data["modules_to_save"].split(",") if t.strip()]
    if "model" not in data and "config" not in data:
        raise UsageError("name a model (catalog id or Hub id), or give --config config.json or --plan plan.json")
    return Plan.from_dict(data)


def _resolve_config(plan: Plan) -> dict[str, Any] | None:
    """A Hub id that the catalog does not know is looked up on the Hub (config.json only)."""
    from estimator import catalog

    if plan.model is None or catalog.find_model(plan.model) is not None:
        return None
    from app.hub import HubClient, HubError
    from app.settings import Settings

    client = HubClient(Settings())
    try:
        return dict(client.resolve(plan.model, token=os.environ.get("HF_TOKEN")).config)
    except HubError as exc:
        raise UsageError(str(exc)) from exc
    finally:
        client.close()


def _estimate_dict(plan: Plan) -> dict[str, Any]:
    return estimate(plan, config=_resolve_config(plan)).to_dict()


def _print_estimate(d: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console()
    m, p, s, mem = d["model"], d["params"], d["storage"], d["memory"]
    plan = d["plan"]
    con.print(
        f"[bold]{m['id'] or 'config'}[/bold] ({m['model_type']}) — {plan['method']}, {plan['dtype']}, "
        f"batch {plan['batch_size']} × seq {plan['seq_len']}, "
        f"{'GC on' if plan['gradient_checkpointing'] else 'GC off'}, {plan['attn_implementation']}, "
        f"{plan['optimizer']}, device {plan['device']}"
    )
    con.print(f"parameters: {p['total']:,} total, {p['trainable']:,} trainable ({p['trainable_percent']}%)"
              + (f", {p['quantized']:,} quantized" if p["quantized"] else ""))  # fmt: skip
    st = Table(title="Storage (disk)", show_header=True)
    st.add_column("item")
    st.add_column("size", justify="right")
    for key, label in (("base_16bit", "base model, 16-bit (download)"), ("base_fp32", "base model, fp32"),
                       ("base_quantized", f"quantized ({s['quantized_bits_per_weight']:.3f} bits/weight on linears)"),
                       ("adapter_fp32", "LoRA adapter, fp32"), ("adapter_bf16", "LoRA adapter, bf16"),
                       ("checkpoint", "training checkpoint (+ optimizer state)"),
                       ("merged", "merged model, 16-bit")):  # fmt: skip
        st.add_row(label, _fmt(s[key]))
    con.print(st)
    mt = Table(title=f"GPU memory (peak in phase: {mem['peak_phase']})", show_header=True)
    mt.add_column("component")
    mt.add_column("bytes", justify="right")
    mt.add_column("size", justify="right")
    for name, value in mem["components"].items():
        mt.add_row(name, f"{value:,}", _fmt(value))
    mt.add_row("[bold]peak allocated[/bold]", f"{mem['peak_allocated']:,}", _fmt(mem["peak_allocated"]))
    mt.add_row("peak reserved", f"{mem['peak_reserved']:,}", _fmt(mem["peak_reserved"]))
    mt.add_row("[bold]total (nvidia-smi)[/bold]", f"{mem['total']:,}", _fmt(mem["total"]))
    con.print(mt)
    fits = [g["name"] for g in d["fits"] if g["fits"]]
    if plan["device"] == "cuda":
        con.print("fits on: " + (", ".join(fits[:8]) + (" …" if len(fits) > 8 else "") if fits else "no catalog GPU"))
    fit = d.get("fit")
    if fit:
        verdict = "fits" if fit["fits"] else f"does not fit ({fit['reason']})" if fit["reason"] else "does not fit"
        con.print(
            f"on {fit['name']} ({_fmt(fit['usable_bytes'])} usable): {verdict}, "
            f"headroom {_fmt(fit['headroom_bytes'])}; "
            f"largest batch at {plan['seq_len']} tokens: {fit['max_batch_size']}; "
            f"longest sequence at batch {plan['batch_size']}: {fit['max_seq_len']:,} tokens"
        )
    for note in d["notes"]:
        con.print(f"• {note}")


def _run(fn: Any) -> None:
    try:
        fn()
    except (EstimatorError, UsageError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@cli.command("estimate")
def estimate_cmd(
    model: Annotated[str | None, typer.Argument(help="catalog id or Hugging Face Hub id")] = None,
    config: Annotated[Path | None, Opt(help="a config.json file instead of a model id")] = None,
    plan: Annotated[Path | None, Opt("--plan", help="read the whole plan from a JSON file")] = None,
    method: Annotated[str | None, Opt(help="full | lora | qlora")] = None,
    dtype: Annotated[str | None, Opt(help="bfloat16 | float16 | float32")] = None,
    mixed_precision: Annotated[bool | None, Opt(help="full FT: fp32 master weights + autocast")] = None,
    quant_type: Annotated[str | None, Opt(help="nf4 | fp4 | int8")] = None,
    double_quant: Annotated[bool | None, Opt()] = None,
    prepare_kbit: Annotated[bool | None, Opt(help="prepare_model_for_kbit_training (default on for qlora)")] = None,
    lora_r: Annotated[int | None, Opt()] = None,
    lora_alpha: Annotated[int | None, Opt()] = None,
    lora_dropout: Annotated[float | None, Opt()] = None,
    target_modules: Annotated[str | None, Opt(help="'all-linear' or a comma-separated list")] = None,
    modules_to_save: Annotated[str | None, Opt(help="comma-separated module names")] = None,
    use_dora: Annotated[bool | None, Opt()] = None,
    optimizer: Annotated[str | None, Opt(help=" | ".join(OPTIMIZERS))] = None,
    batch_size: Annotated[int | None, Opt()] = None,
    seq_len: Annotated[int | None, Opt()] = None,
    gradient_checkpointing: Annotated[bool | None, Opt()] = None,
    attn_implementation: Annotated[str | None, Opt(help="eager | sdpa | flash_attention_2")] = None,
    gpu: Annotated[str | None, Opt(help="catalog GPU id, e.g. h100-sxm")] = None,
    num_gpus: Annotated[int | None, Opt()] = None,
    device: Annotated[str | None, Opt(help="cuda | cpu")] = None,
    allow_long_context: Annotated[bool | None, Opt(help="allow seq_len beyond max_position_embeddings")] = None,
    traced: Annotated[bool, Opt(help="trace a real step under FakeTensorMode (needs the train extra)")] = False,
    as_json: Annotated[bool, Opt("--json", help="print the JSON contract")] = False,
) -> None:
    """Storage and GPU memory of a fine-tune, by component."""
    fields = {k: v for k, v in locals().items() if k not in ("model", "config", "plan", "traced", "as_json")}

    def go() -> None:
        for name, choices in (("method", METHODS), ("dtype", DTYPES), ("quant_type", QUANT_TYPES),
                              ("optimizer", OPTIMIZERS), ("attn_implementation", ATTN_IMPLEMENTATIONS),
                              ("device", DEVICES)):  # fmt: skip
            _choice(name, fields[name], choices)
        p = _plan_from(model, config, plan, fields)
        d = _estimate_dict(p)
        if traced:
            d["traced"] = _traced(p)
        if as_json:
            typer.echo(json.dumps(d, indent=2))
        else:
            _print_estimate(d)
            if traced:
                typer.echo(f"traced peak (FakeTensorMode): {_fmt(d['traced']['measured']['peak_allocated'])}")

    _run(go)


def _traced(plan: Plan) -> dict[str, Any]:
    return _subprocess_run("trainer.traced", plan, [])


def _subprocess_run(module: str, plan: Plan, extra: list[str], timeout: float | None = None) -> dict[str, Any]:
    """Run a trainer recipe in its own process (never in this one) and read its result JSON."""
    if importlib.util.find_spec("torch") is None:
        raise UsageError("this needs the train extra: pip install -e '.[train]'")
    if "cuda" in extra and not nvidia_gpu_present():
        raise UsageError("--device cuda needs an NVIDIA GPU and its driver (nvidia-smi finds none); use --device cpu")
    cfg = _resolve_config(plan)
    with tempfile.TemporaryDirectory() as tmp:
        plan_path = Path(tmp, "plan.json")
        body = plan.to_dict()
        if cfg is not None:
            body["config"], body["model"] = cfg, None
        plan_path.write_text(json.dumps(body))
        out = Path(tmp, "result.json")
        cmd = [sys.executable, "-m", module, "--plan", str(plan_path), "--out", str(out), *extra]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if not out.exists():
            lines = [line for line in proc.stderr.splitlines() if line.strip()]
            raise UsageError(f"the run failed (exit {proc.returncode}): {lines[-1] if lines else 'no output'}")
        result: dict[str, Any] = json.loads(out.read_text())
        return result


@cli.command("verify")
def verify_cmd(
    model: Annotated[str | None, typer.Argument(help="catalog id or Hub id")] = None,
    config: Annotated[Path | None, Opt()] = None,
    plan: Annotated[Path | None, Opt("--plan")] = None,
    method: Annotated[str | None, Opt()] = None,
    lora_r: Annotated[int | None, Opt()] = None,
    lora_dropout: Annotated[float | None, Opt()] = None,
    target_modules: Annotated[str | None, Opt()] = None,
    optimizer: Annotated[str | None, Opt()] = None,
    batch_size: Annotated[int | None, Opt()] = None,
    seq_len: Annotated[int | None, Opt()] = None,
    gradient_checkpointing: Annotated[bool | None, Opt()] = None,
    attn_implementation: Annotated[str | None, Opt()] = None,
    device: Annotated[str, Opt(help="cpu | cuda: where the real run executes")] = "cpu",
    steps: Annotated[int, Opt(help="measured steps after one warm-up step")] = 1,
    as_json: Annotated[bool, Opt("--json")] = False,
) -> None:
    """Run a real training step and print measured next to estimated, per component."""
    fields = {k: v for k, v in locals().items() if k not in ("model", "config", "plan", "steps", "as_json")}

    def go() -> None:
        _choice("device", device, DEVICES)
        p = _plan_from(model, config, plan, fields)
        est = _estimate_dict(p)
        result = _subprocess_run("trainer.run", p, ["--device", device, "--steps", str(steps)])
        report = compare(est, result)
        if as_json:
            typer.echo(json.dumps(report, indent=2))
        else:
            _print_comparison(report)

    _run(go)


def _print_comparison(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"measured vs estimated ({report.get('device')})")
    for col in ("", "estimated", "measured", "error"):
        t.add_column(col, justify="right" if col else "left")
    for r in report["components"] + report["tiers"]:
        m = r["measured"]
        err = "" if r["error_percent"] is None else f"{r['error_percent']:+.2f}%"
        t.add_row(r["name"], _fmt(r["estimated"]), "—" if m is None else _fmt(m), err)
    Console().print(t)
    if report["oom"]:
        Console().print("[red]the run ran out of memory[/red]")


@cli.command("storage")
def storage_cmd(
    params: Annotated[float, Opt(help="number of parameters, e.g. 10e9")],
    trainable_fraction: Annotated[float, Opt(help="share of parameters in the adapter")] = 0.01,
    as_json: Annotated[bool, Opt("--json")] = False,
) -> None:
    """The rule of thumb: parameters × bytes per parameter."""

    def go() -> None:
        if not params >= 1 or params != int(params):
            raise UsageError("--params must be a whole number of parameters ≥ 1, e.g. 10e9")
        if not 0 <= trainable_fraction <= 1:
            raise UsageError("--trainable-fraction must be between 0 and 1")
        r = RuleOfThumb(int(params), trainable_fraction)
        if as_json:
            typer.echo(json.dumps(r.to_dict() | {"why_exact_differs": list(WHY_EXACT_DIFFERS)}, indent=2))
            return
        typer.echo(f"{int(params):,} parameters")
        rows = (
            ("FP16 / BF16 (2 B each)", r.fp16),
            ("4-bit (0.5 B each)", r.int4),
            (f"adapter, {trainable_fraction:.2%} in FP16", r.adapter),
            ("QLoRA total (4-bit + adapter)", r.qlora_total),
        )
        for label, value in rows:
            typer.echo(f"  {label + ':':31s} {_fmt(value)}")
        typer.echo("Why the exact figure for a real model differs (tuneplan estimate shows it):")
        for why in WHY_EXACT_DIFFERS:
            typer.echo(f"  - {why}")

    _run(go)


@cli.command("models")
def models_cmd(q: Annotated[str, typer.Argument()] = "", as_json: Annotated[bool, Opt("--json")] = False) -> None:
    """Search the built-in model catalog."""
    from estimator import catalog

    found = catalog.search_models(q, limit=100) if q else list(catalog.models())
    if as_json:
        typer.echo(json.dumps([{"id": m.id, "hf_id": m.hf_id, "params": m.params} for m in found], indent=2))
        return
    for m in found:
        typer.echo(f"{m.id:28s} {m.hf_id:45s} {m.params / 1e9:8.2f} B")


@cli.command("gpus")
def gpus_cmd(as_json: Annotated[bool, Opt("--json")] = False) -> None:
    """List the built-in GPU catalog."""
    from estimator import catalog

    gs = catalog.gpus()
    if as_json:
        typer.echo(json.dumps([{"id": g.id, "name": g.name, "usable_bytes": g.usable_bytes} for g in gs], indent=2))
        return
    for g in gs:
        typer.echo(f"{g.id:18s} {g.name:32s} {g.usable_bytes / GiB:7.2f} GiB usable")


@cli.command("serve")
def serve_cmd(
    host: Annotated[str, Opt(help="interface to bind")] = "127.0.0.1",
    port: Annotated[int, Opt(help="port")] = 8000,
) -> None:
    """Start the web app and REST API (http://127.0.0.1:8000, API docs at /docs)."""
    from app.main import serve

    serve(host, port)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
