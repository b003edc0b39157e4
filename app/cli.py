"""The ``tuneplan`` command line: estimate, rent, export, import, storage, verify, serve, models, gpus.

Typer + Rich. The plan options of ``estimate`` and ``verify`` are derived from ``estimator.Plan``'s field
declarations (one ``--kebab-case`` option per field, with its help, default and choices), so a field added to the
plan is an option here without another edit. ``estimate`` and ``storage`` import neither torch nor the web stack.
Bad input exits with code 2 and a message that says what to fix.

    tuneplan estimate meta-llama/Llama-3.1-8B --method qlora --seq-len 2048 --batch-size 1
    tuneplan estimate --config config.json --method lora --json
    tuneplan rent llama-3.1-8b --method qlora --train-tokens 100000000 [--prices prices.json]
    tuneplan export llama-3.1-8b --method qlora --format axolotl > axolotl.yaml
    tuneplan import axolotl.yaml > plan.json
    tuneplan storage --params 10e9 --trainable-fraction 0.01
    tuneplan verify llama-3.2-1b --method qlora --device cpu
    tuneplan serve --port 8000
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from app.errors import AppError
from app.service import EstimateService, Resolved, price_table
from estimator import (
    WHY_EXACT_DIFFERS,
    CalibrationProfile,
    EstimatorError,
    Plan,
    PlanField,
    RuleOfThumb,
    catalog,
    compare,
    gib_text,
    plan_fields,
    size_text,
)

if TYPE_CHECKING:
    from app.hub import HubClient, ResolvedModel

cli = typer.Typer(add_completion=False, no_args_is_help=True, help="Plan the disk and GPU memory of a fine-tune.")

Opt = typer.Option


class UsageError(Exception):
    """Bad input from the command line (exit code 2)."""


# ---------------------------------------------------------------------------------------------- plan options


def _option(f: PlanField) -> inspect.Parameter:
    """The Typer option of one plan field: ``--seq-len``; choices as a Literal; booleans as ``--x/--no-x``."""
    s = f.spec
    annotation: Any
    if s.kind == "choice":
        annotation = Literal[s.choices]
    elif s.kind in ("bool", "tristate"):
        annotation = bool
    elif s.kind == "int":
        annotation = int
    elif s.kind == "number":
        annotation = float
    else:
        annotation = str
    shown = ",".join(f.default) if isinstance(f.default, tuple) else f.default
    shown = str(shown).lower() if isinstance(shown, bool) else shown
    default = "" if shown in (None, "") else f" Default: {shown}."
    bounds = f.bounds_text()
    help_text = s.help + (f" Allowed: {bounds}." if bounds and s.kind != "choice" else "") + default
    decls = (f"{f.flag}/--no-{f.flag[2:]}",) if annotation is bool else (f.flag,)
    option = Opt(None, *decls, help=help_text, show_default=False, rich_help_panel=f"Plan: {s.group}")
    return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation | None)


PLAN_OPTIONS = tuple(f for f in plan_fields() if f.spec.kind not in ("model", "config"))


def with_plan_options(fn: Callable[..., None]) -> Callable[..., None]:
    """``fn`` with one option per plan field added to its signature; they reach it as ``fields`` (a dict)."""
    own = [p for p in inspect.signature(fn, eval_str=True).parameters.values() if p.name != "fields"]
    options = [_option(f) for f in PLAN_OPTIONS if f.name not in {p.name for p in own}]
    names = {p.name for p in own}

    def command(**kwargs: Any) -> None:
        fn(
            **{k: v for k, v in kwargs.items() if k in names},
            fields={k: v for k, v in kwargs.items() if k not in names},
        )

    command.__signature__ = inspect.Signature([*own, *options])  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in (*own, *options)}
    command.__doc__ = fn.__doc__
    command.__name__ = fn.__name__
    return command


def plan_from(model: str | None, config: Path | None, plan_file: Path | None, fields: dict[str, Any]) -> Plan:
    """The plan of a command line: the plan file, then the model or config, then every option given."""
    data: dict[str, Any] = {}
    if plan_file is not None:
        data = _read_json(plan_file, "plan")
    if config is not None:
        data = data | {"config": _read_json(config, "config"), "model": None}
    elif model is not None:
        data = data | {"model": model, "config": None}
    kinds = {f.name: f.spec.kind for f in PLAN_OPTIONS}
    for key, value in fields.items():
        if value is None:
            continue
        if kinds[key] in ("modules", "targets") and value != "all-linear":
            value = [t.strip() for t in value.replace(" ", ",").split(",") if t.strip()]
        elif kinds[key] == "number" and float(value).is_integer():
            value = int(value)
        data[key] = value
    if data.get("model") is None and data.get("config") is None:
        raise UsageError("name a model (catalog id or Hub id), or give --config config.json or --plan plan.json")
    return Plan.from_dict(data)


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"cannot read the {what} file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise UsageError(f"the {what} file must hold a JSON object")
    return data


class _LazyHub:
    """The Hub client, built on first use: catalog and inline plans never import it."""

    def __init__(self) -> None:
        self._client: HubClient | None = None

    def resolve(self, repo_id: str, token: str | None = None, revision: str = "main") -> ResolvedModel:
        if self._client is None:
            from app.hub import HubClient
            from app.settings import Settings

            self._client = HubClient(Settings())
        return self._client.resolve(repo_id, token or os.environ.get("HF_TOKEN"), revision)


def _calibration(gpu: str) -> CalibrationProfile | None:
    """The latest calibration this machine's verify runs measured on ``gpu`` (the server's job database, read only
    when it exists)."""
    from app.settings import Settings

    db = Settings().jobs_db
    if not db.exists():
        return None
    from sqlalchemy import create_engine

    from app.jobs.calibration import CalibrationStore

    engine = create_engine(f"sqlite:///{db}")
    try:
        return CalibrationStore(engine).latest(gpu)
    finally:
        engine.dispose()


SERVICE = EstimateService(_LazyHub(), calibrations=_calibration)

PricesOpt = Annotated[
    Path | None,
    Opt("--prices", envvar="TUNEPLAN_PRICES", help="a price table (JSON, like estimator/data/prices.json) to cost "
        "with instead of the built-in one"),
]  # fmt: skip


def _service(prices: Path | None) -> EstimateService:
    """The CLI's service, costing with ``prices`` when given."""
    if prices is None:
        return SERVICE
    return EstimateService(SERVICE.hub, SERVICE.max_config_bytes, price_table(prices))


def _run(fn: Callable[[], None]) -> None:
    try:
        fn()
    except (EstimatorError, UsageError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except AppError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None


# ---------------------------------------------------------------------------------------------- estimate


def _print_estimate(d: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console()
    m, p, s, mem, plan = d["model"], d["params"], d["storage"], d["memory"], d["plan"]
    con.print(
        f"[bold]{m['id'] or 'config'}[/bold] ({m['model_type']}) — {plan['method']}, {plan['dtype']}, "
        f"batch {plan['batch_size']} × seq {plan['seq_len']}, "
        f"{'GC on' if plan['gradient_checkpointing'] else 'GC off'}, {plan['attn_implementation']}, "
        f"{plan['optimizer']}, device {plan['device']}"
    )
    con.print(f"parameters: {p['total']:,} total, {p['trainable']:,} trainable ({p['trainable_percent']}%)"
              + (f", {p['quantized']:,} quantized" if p["quantized"] else ""))  # fmt: skip
    st = Table(title="Storage (disk)")
    st.add_column("item")
    st.add_column("size", justify="right")
    for key, label in (("base_16bit", "base model, 16-bit (download)"), ("base_fp32", "base model, fp32"),
                       ("base_quantized", f"quantized ({s['quantized_bits_per_weight']:.3f} bits/weight on linears)"),
                       ("adapter_fp32", "LoRA adapter, fp32"), ("adapter_bf16", "LoRA adapter, bf16"),
                       ("checkpoint", "training checkpoint (+ optimizer state)"),
                       ("merged", "merged model, 16-bit")):  # fmt: skip
        st.add_row(label, size_text(s[key]))
    con.print(st)
    mt = Table(title=f"GPU memory (peak in phase: {mem['peak_phase']})")
    mt.add_column("component")
    mt.add_column("bytes", justify="right")
    mt.add_column("size", justify="right")
    for name, value in mem["components"].items():
        mt.add_row(name, f"{value:,}", size_text(value))
    mt.add_row("[bold]peak allocated[/bold]", f"{mem['peak_allocated']:,}", size_text(mem["peak_allocated"]))
    mt.add_row("peak reserved", f"{mem['peak_reserved']:,}", size_text(mem["peak_reserved"]))
    mt.add_row("[bold]total (nvidia-smi)[/bold]", f"{mem['total']:,}", size_text(mem["total"]))
    low, high = mem["range"]["total"]
    mt.add_row("total range (fits use the high)", f"{low:,} – {high:,}", f"{size_text(low)} – {size_text(high)}")
    con.print(mt)
    _print_fit(con, d)
    _print_time(con, d)
    for note in d["notes"]:
        con.print(f"• {note}")


def _print_fit(con: Any, d: dict[str, Any]) -> None:
    plan, fit = d["plan"], d.get("fit")
    fits = [g["name"] for g in d["fits"] if g["fits"]]
    if plan["device"] == "cuda":
        con.print("fits on: " + (", ".join(fits[:8]) + (" …" if len(fits) > 8 else "") if fits else "no catalog GPU"))
    if fit:
        verdict = "fits" if fit["fits"] else f"does not fit ({fit['reason']})" if fit["reason"] else "does not fit"
        con.print(
            f"on {fit['name']} ({size_text(fit['usable_bytes'])} usable): {verdict}, "
            f"headroom {size_text(fit['headroom_bytes'])}; "
            f"largest batch at {plan['seq_len']} tokens: {fit['max_batch_size']}; "
            f"longest sequence at batch {plan['batch_size']}: {fit['max_seq_len']:,} tokens"
        )


def _print_time(con: Any, d: dict[str, Any]) -> None:
    t = d.get("time")
    if not t:
        return
    run = f"; {t['steps']:,} steps, {_hours(t['run_s'])} for {t['run_tokens']:,} tokens" if t["run_s"] else ""
    con.print(
        f"time on {t['num_gpus']} × {t['gpu']}: {t['step_s']:.3f} s per step of {t['tokens_per_step']:,} tokens, "
        f"{t['tokens_per_s']:,.0f} tokens/s ({t['bound']}-bound, MFU {t['mfu']['value']:.0%}: {t['mfu']['kind']})" + run
    )
    for c in d["cost"][:5]:
        total = f", ${c['run_usd']:,.2f} for the run" if c["run_usd"] is not None else ""
        con.print(f"  {c['provider']} {c['offer']} ({c['date']}): ${c['usd_per_hour']:,.2f}/h, "
                  f"${c['usd_per_million_tokens']:,.3f} per million tokens{total}")  # fmt: skip


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:,.1f} h" if seconds >= 3600 else f"{seconds / 60:,.1f} min"


def _estimate(
    model: Annotated[str | None, typer.Argument(help="catalog id or Hugging Face Hub id")] = None,
    config: Annotated[Path | None, Opt(help="a config.json file instead of a model id")] = None,
    plan: Annotated[Path | None, Opt("--plan", help="read the whole plan from a JSON file")] = None,
    traced: Annotated[bool, Opt(help="trace a real step under FakeTensorMode (needs the train extra)")] = False,
    prices: PricesOpt = None,
    as_json: Annotated[bool, Opt("--json", help="print the JSON contract")] = False,
    *,
    fields: dict[str, Any],
) -> None:
    """Storage and GPU memory of a fine-tune, by component (with --gpu: time and cost too)."""

    def go() -> None:
        p = plan_from(model, config, plan, fields)
        contract, resolved = _service(prices).estimate(p)
        if traced:
            contract["traced"] = _trainer_run("trainer.traced", p, resolved, [])
        if as_json:
            typer.echo(json.dumps(contract, indent=2))
            return
        _print_estimate(contract)
        if traced:
            typer.echo(f"traced peak (FakeTensorMode): {size_text(contract['traced']['measured']['peak_allocated'])}")

    _run(go)


cli.command("estimate")(with_plan_options(_estimate))


# ---------------------------------------------------------------------------------------------- verify


def _trainer_run(module: str, plan: Plan, resolved: Resolved, extra: list[str]) -> dict[str, Any]:
    """Run a trainer recipe in its own process (never in this one) and read its result JSON."""
    if importlib.util.find_spec("torch") is None:
        raise UsageError("this needs the train extra: pip install -e '.[train]'")
    if "cuda" in extra:
        from app.gpu import nvidia_gpu_present

        if not nvidia_gpu_present():
            raise UsageError("--device cuda needs an NVIDIA GPU and its driver (nvidia-smi finds none); use cpu")
    with tempfile.TemporaryDirectory() as tmp:
        plan_path = Path(tmp, "plan.json")
        plan_path.write_text(json.dumps(plan.to_dict() | {"config": dict(resolved.config), "model": None}))
        out = Path(tmp, "result.json")
        cmd = [sys.executable, "-m", module, "--plan", str(plan_path), "--out", str(out), *extra]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if not out.exists():
            lines = [line for line in proc.stderr.splitlines() if line.strip()]
            raise UsageError(f"the run failed (exit {proc.returncode}): {lines[-1] if lines else 'no output'}")
        result: dict[str, Any] = json.loads(out.read_text())
        return result


def _verify(
    model: Annotated[str | None, typer.Argument(help="catalog id or Hub id")] = None,
    config: Annotated[Path | None, Opt(help="a config.json file instead of a model id")] = None,
    plan: Annotated[Path | None, Opt("--plan", help="read the whole plan from a JSON file")] = None,
    steps: Annotated[int, Opt(help="measured steps after one warm-up step")] = 1,
    as_json: Annotated[bool, Opt("--json", help="print the comparison as JSON")] = False,
    *,
    fields: dict[str, Any],
) -> None:
    """Run a real training step and print measured next to estimated, per component (--device: where it runs,
    cpu unless given)."""

    def go() -> None:
        p = plan_from(model, config, plan, fields | {"device": fields.get("device") or "cpu"})
        est, resolved = SERVICE.estimate(p)
        result = _trainer_run("trainer.run", p, resolved, ["--device", p.device, "--steps", str(steps)])
        report = compare(est, result) | {"plan": est["plan"], "versions": result.get("versions"),
                                          "estimate": est, "result": result}  # fmt: skip
        if as_json:
            typer.echo(json.dumps(report, indent=2))
        else:
            _print_comparison(report)

    _run(go)


cli.command("verify")(with_plan_options(_verify))


def _print_comparison(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"measured vs estimated ({report.get('device')})")
    for col in ("", "estimated", "measured", "error"):
        t.add_column(col, justify="right" if col else "left")
    for r in report["components"] + report["tiers"]:
        m = r["measured"]
        if m is None and r in report["tiers"]:
            continue  # not measured on this device (a CPU run has no allocator cache and no driver figure)
        err = "" if r["error_percent"] is None else f"{r['error_percent']:+.2f}%"
        t.add_row(r["name"], size_text(r["estimated"]), "—" if m is None else size_text(m), err)
    Console().print(t)
    if report["oom"]:
        Console().print("[red]the run ran out of memory[/red]")


# ---------------------------------------------------------------------------------------------- rent, configs


def _rent(
    model: Annotated[str | None, typer.Argument(help="catalog id or Hugging Face Hub id")] = None,
    config: Annotated[Path | None, Opt(help="a config.json file instead of a model id")] = None,
    plan: Annotated[Path | None, Opt("--plan", help="read the whole plan from a JSON file")] = None,
    prices: PricesOpt = None,
    limit: Annotated[int, Opt(help="show this many options (the JSON has them all)", min=1)] = 20,
    as_json: Annotated[bool, Opt("--json", help="print JSON")] = False,
    *,
    fields: dict[str, Any],
) -> None:
    """Which GPU to rent: every catalog GPU and count (1, 2, 4, 8) that fits, cheapest first for the token budget
    (--train-tokens, or --dataset-tokens × --epochs)."""

    def go() -> None:
        out = _service(prices).rent(plan_from(model, config, plan, fields))
        if as_json:
            typer.echo(json.dumps(out, indent=2))
        else:
            _print_rent(out, limit)

    _run(go)


cli.command("rent")(with_plan_options(_rent))


def _print_rent(out: dict[str, Any], limit: int) -> None:
    from rich.console import Console
    from rich.table import Table

    by_run = out["sorted_by"] == "run_usd"
    basis = f"for {out['run_tokens']:,} tokens" if by_run else "per million tokens"
    t = Table(title=f"GPUs that fit {out['model'] or 'the plan'}, cheapest first ({basis})")
    for col in ("GPU", "×", "per GPU", "tokens/s", "run", "cheapest price", "cost"):
        t.add_column(col, justify="left" if col in ("GPU", "cheapest price") else "right")
    for o in out["options"][:limit]:
        c = o["cheapest"]
        price = (
            "no price listed" if c is None else f"{c['provider']} {c['offer']} ${c['usd_per_gpu_hour']}/h ({c['date']})"
        )
        cost = "—" if c is None else f"${c['run_usd']:,.2f}" if by_run else f"${c['usd_per_million_tokens']:,.3f}/M"
        run = _hours(o["run_s"]) if o["run_s"] is not None else "—"
        t.add_row(o["gpu"], str(o["num_gpus"]), gib_text(o["per_gpu_bytes"]), f"{o['tokens_per_s']:,.0f}", run,
                  price, cost)  # fmt: skip
    Console().print(t)
    Console().print(f"{len(out['options'])} of {out['checked']} GPU × count options fit; prices: {out['prices']}")


def _export(
    model: Annotated[str | None, typer.Argument(help="catalog id or Hugging Face Hub id")] = None,
    config: Annotated[Path | None, Opt(help="a config.json file instead of a model id")] = None,
    plan: Annotated[Path | None, Opt("--plan", help="read the whole plan from a JSON file")] = None,
    fmt: Annotated[
        ExportFormat, Opt("--format", help="trl (trl sft --config YAML), trl-python, axolotl, accelerate or deepspeed")
    ] = "trl",  # fmt: skip
    out: Annotated[Path | None, Opt("--out", help="write to this file instead of standard output")] = None,
    *,
    fields: dict[str, Any],
) -> None:
    """The plan as ready-to-run configuration for TRL, axolotl, accelerate or DeepSpeed."""
    from app.configs import export_plan

    def go() -> None:
        p = plan_from(model, config, plan, fields)
        _, resolved = SERVICE.estimate(p)  # the plan must estimate: a bad plan or config is exit code 2
        exported = export_plan(p, fmt, SERVICE.model_id(p, resolved))
        if out is None:
            typer.echo(exported.text, nl=False)
        else:
            out.write_text(exported.text)
            typer.echo(f"wrote {out} ({fmt})", err=True)
        for note in exported.notes:
            typer.echo(f"note: {note}", err=True)

    _run(go)


ExportFormat = Literal["trl", "trl-python", "axolotl", "accelerate", "deepspeed"]
cli.command("export")(with_plan_options(_export))


@cli.command("import")
def import_cmd(
    file: Annotated[Path, typer.Argument(help="an axolotl YAML or a TRL config (YAML or JSON)")],
    fmt: Annotated[
        Literal["axolotl", "trl"] | None, Opt("--format", help="axolotl or trl; default: from the keys")
    ] = None,  # fmt: skip
    as_json: Annotated[bool, Opt("--json", help="print mapped and ignored keys too, not only the plan")] = False,
) -> None:
    """Read an axolotl or TRL config into a plan (printed as plan JSON for --plan); keys memory does not depend on
    are listed as ignored."""
    from app.configs import import_config

    def go() -> None:
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read {file}: {exc}") from None
        imported = import_config(text, fmt, str(file))
        if as_json:
            typer.echo(json.dumps(imported.to_dict(), indent=2))
            return
        plan = {k: v for k, v in imported.plan.to_dict().items() if v is not None}
        typer.echo(json.dumps(plan, indent=2))
        if imported.ignored:
            typer.echo(f"ignored (memory does not depend on them): {', '.join(imported.ignored)}", err=True)
        for note in imported.notes:
            typer.echo(f"note: {note}", err=True)

    _run(go)


# ---------------------------------------------------------------------------------------------- the rest


@cli.command("storage")
def storage_cmd(
    params: Annotated[float, Opt(help="number of parameters, e.g. 10e9")],
    trainable_fraction: Annotated[float, Opt(help="share of parameters in the adapter")] = 0.01,
    as_json: Annotated[bool, Opt("--json", help="print JSON")] = False,
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
            typer.echo(f"  {label + ':':31s} {size_text(value)}")
        typer.echo("Why the exact figure for a real model differs (tuneplan estimate shows it):")
        for why in WHY_EXACT_DIFFERS:
            typer.echo(f"  - {why}")

    _run(go)


@cli.command("models")
def models_cmd(
    q: Annotated[str, typer.Argument(help="search text: id, Hub id, name or family")] = "",
    as_json: Annotated[bool, Opt("--json", help="print JSON")] = False,
) -> None:
    """Search the built-in model catalog."""
    from rich.console import Console
    from rich.table import Table

    found = catalog.search_models(q, limit=100) if q else list(catalog.models())
    if as_json:
        typer.echo(json.dumps([{"id": m.id, "hf_id": m.hf_id, "params": m.params} for m in found], indent=2))
        return
    t = Table(title="Catalog models")
    for col in ("id", "Hub id", "parameters"):
        t.add_column(col, justify="right" if col == "parameters" else "left")
    for m in found:
        t.add_row(m.id, m.hf_id, f"{m.params / 1e9:.2f} B")
    Console().print(t)


@cli.command("gpus")
def gpus_cmd(as_json: Annotated[bool, Opt("--json", help="print JSON")] = False) -> None:
    """List the built-in GPU catalog."""
    from rich.console import Console
    from rich.table import Table

    gs = catalog.gpus()
    if as_json:
        typer.echo(json.dumps([{"id": g.id, "name": g.name, "usable_bytes": g.usable_bytes} for g in gs], indent=2))
        return
    t = Table(title="Catalog GPUs")
    for col in ("id", "name", "usable"):
        t.add_column(col, justify="right" if col == "usable" else "left")
    for g in gs:
        t.add_row(g.id, g.name, gib_text(g.usable_bytes))
    Console().print(t)


@cli.command("serve")
def serve_cmd(
    host: Annotated[str, Opt(help="interface to bind")] = "127.0.0.1",
    port: Annotated[int, Opt(help="port")] = 8000,
) -> None:
    """Start the web app and REST API (http://127.0.0.1:8000, API docs at /docs)."""
    import uvicorn

    from app.main import create_app
    from app.settings import Settings

    uvicorn.run(create_app(Settings(host=host, port=port)), host=host, port=port, log_level="info")


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
