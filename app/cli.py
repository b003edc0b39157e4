"""The ``tuneplan`` command line: estimate, verify, rent, export, import, storage, models, gpus, serve.

argparse (standard library) + Rich. The plan options of ``estimate`` and ``verify`` are derived from
``estimator.Plan``'s field declarations (one ``--kebab-case`` option per field, with its help, default and choices,
grouped by the field's form group), so a field added to the plan is an option here without another edit. A command
imports only what it needs: ``estimate`` and ``storage`` import neither torch, nor the web stack, nor pydantic (a
catalog estimate answers in well under a quarter of a second, docs/performance.md). Bad input exits with code 2 and
a message that says what to fix.

    tuneplan estimate meta-llama/Llama-3.1-8B --method qlora --seq-len 2048 --batch-size 1
    tuneplan estimate --config config.json --method lora --json
    tuneplan storage --params 10e9 --trainable-fraction 0.01
    tuneplan verify llama-3.2-1b --method qlora --device cpu
    tuneplan rent llama-3.1-8b --method qlora --train-tokens 1e9
    tuneplan export llama-3.1-8b --method qlora --format trl
    tuneplan serve --port 8000 --workers 2
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.errors import FALLBACK_HINT, AppError
from app.service import EstimateService, Resolved, price_table
from estimator import (
    OBJECTIVES,
    WHY_EXACT_DIFFERS,
    CalibrationProfile,
    EstimatorError,
    Plan,
    PlanField,
    RuleOfThumb,
    catalog,
    compare,
    gib_text,
    parse_pair,
    plan_fields,
    size_text,
)

if TYPE_CHECKING:
    from app.hub import HubClient, ResolvedModel
    from app.settings import Settings


class UsageError(Exception):
    """Bad input from the command line (exit code 2)."""


def echo(text: str = "", err: bool = False) -> None:
    print(text, file=sys.stderr if err else sys.stdout)


# ---------------------------------------------------------------------------------------------- plan options


PLAN_OPTIONS = tuple(f for f in plan_fields() if f.spec.kind not in ("model", "config"))


_FLAG_NAMES = {f.name: f.flag for f in PLAN_OPTIONS if "_" in f.name}
_FIELD_WORD = re.compile(r"\b(" + "|".join(sorted(_FLAG_NAMES, key=len, reverse=True)) + r")\b")


def flags(text: str) -> str:
    """Plan field names in a message or help text as the command line spells them (``allow_long_context`` ->
    ``--allow-long-context``); one-word names (``gpu``, ``loss``) stay words."""
    return _FIELD_WORD.sub(lambda m: _FLAG_NAMES[m.group(1)], text)


def _add_option(group: Any, f: PlanField) -> None:
    """The option of one plan field: ``--seq-len``; choices as choices; booleans as ``--x/--no-x``."""
    s = f.spec
    shown = ",".join(f.default) if isinstance(f.default, tuple) else f.default
    shown = str(shown).lower() if isinstance(shown, bool) else shown
    default = (
        f" Default: {'unset' if s.kind == 'tristate' else 'none'}." if shown in (None, "") else f" Default: {shown}."
    )
    bounds = f.bounds_text()
    help_text = flags(s.help + (f" Allowed: {bounds}." if bounds and s.kind != "choice" else "") + default).replace(
        "%", "%%"
    )
    kwargs: dict[str, Any] = {"dest": f.name, "default": None, "help": help_text}
    if s.kind == "choice":
        kwargs.update(choices=s.choices, metavar="{" + ",".join(s.choices) + "}")
    elif s.kind in ("bool", "tristate"):
        kwargs["action"] = argparse.BooleanOptionalAction
    elif s.kind == "int":
        kwargs.update(type=int, metavar="N")
    elif s.kind == "number":
        kwargs.update(type=float, metavar="X")
    elif s.kind == "pair":
        kwargs["metavar"] = "HxW"
    else:
        kwargs["metavar"] = "TEXT"
    group.add_argument(f.flag, **kwargs)


def add_plan_options(parser: argparse.ArgumentParser) -> None:
    """One option per plan field, grouped as the page groups them (``Plan: Training``, ...)."""
    groups: dict[str, Any] = {}
    for f in PLAN_OPTIONS:
        if f.spec.group not in groups:
            groups[f.spec.group] = parser.add_argument_group(f"Plan: {f.spec.group}")
        _add_option(groups[f.spec.group], f)


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
        elif kinds[key] == "pair":
            value = parse_pair(value)
        data[key] = value
    if data.get("model") is None and data.get("config") is None:
        raise UsageError("name a model (catalog id or Hub id), or give --config config.json or --plan plan.json")
    return Plan.from_dict(data)


def _plan_of(args: argparse.Namespace, **forced: Any) -> Plan:
    fields = {f.name: getattr(args, f.name) for f in PLAN_OPTIONS} | forced
    return plan_from(args.model, args.config, args.plan_file, fields)


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
        self._settings: Settings

    def resolve(
        self, repo_id: str, token: str | None = None, revision: str = "main", deadline: float | None = None
    ) -> ResolvedModel:
        """A Hub lookup with the user's own token (``HF_TOKEN``): the command line runs as the user."""
        if self._client is None:
            from app.hub import HubClient
            from app.settings import Settings

            self._settings = Settings()
            self._client = HubClient(self._settings)
        return self._client.resolve(repo_id, token or self._settings.token(), revision, deadline)


def _calibration(gpu: str) -> CalibrationProfile | None:
    """The latest calibration this machine's verify runs measured on ``gpu`` (the server's job database, read only
    when it exists)."""
    # the server's default data directory (app.settings.Settings.data_dir), without importing pydantic-settings
    db = Path(os.environ.get("TUNEPLAN_DATA_DIR") or "data") / "jobs.sqlite3"
    if not db.exists():
        return None
    from sqlalchemy import create_engine

    from app.jobs.calibration import CalibrationStore

    engine = create_engine(f"sqlite:///{db}")
    try:
        return CalibrationStore(engine).latest(gpu)
    finally:
        engine.dispose()


HUB = _LazyHub()


def _service(args: argparse.Namespace) -> EstimateService:
    """The command's service: costs from ``--prices`` (or ``TUNEPLAN_PRICES``) when given, else the built-in table."""
    prices = getattr(args, "prices", None)
    return EstimateService(HUB, cache_entries=0, prices=price_table(prices), calibrations=_calibration)


# ---------------------------------------------------------------------------------------------- estimate


def _images_text(plan: dict[str, Any], inputs: dict[str, Any]) -> str:
    """``+ 2 images (2,454 image tokens per row), `` for a plan with images, ``+ a video of 8 frames (1,028 video
    tokens per row), `` for one with a video (both when it has both); empty otherwise."""
    text = ""
    n = plan.get("images_per_sample") or 0
    if n:
        tokens = inputs.get("image_tokens_per_row", 0)
        text += f"+ {n} image{'s' if n > 1 else ''} ({tokens:,} image tokens per row), "
    frames = plan.get("video_frames") or 0
    if frames:
        tokens = inputs.get("video_tokens_per_row", 0)
        text += f"+ a video of {frames} frame{'s' if frames > 1 else ''} ({tokens:,} video tokens per row), "
    return text


def _print_estimate(d: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console()
    m, p, s, mem, plan = d["model"], d["params"], d["storage"], d["memory"], d["plan"]
    con.print(
        f"[bold]{m['id'] or 'config'}[/bold] ({m['model_type']}) — {plan['method']}, {plan['dtype']}, "
        f"batch {plan['batch_size']} × seq {plan['seq_len']}, "
        + _images_text(plan, d.get("inputs") or {})
        + f"{'GC on' if plan['gradient_checkpointing'] else 'GC off'}, {plan['attn_implementation']}, "
        f"{plan['optimizer']}, device {plan['device']}"
    )
    con.print(f"parameters: {p['total']:,} total, {p['trainable']:,} trainable ({p['trainable_percent']}%)"
              + (f", {p['quantized']:,} quantized" if p["quantized"] else ""))  # fmt: skip
    st = Table(title="Storage (disk)")
    st.add_column("item")
    st.add_column("size", justify="right")
    fmt = s["download_format"]
    published = fmt if fmt == "16-bit" or fmt.startswith("as published") else f"{fmt} as published"
    for key, label in (("download", f"download ({published})"), ("base_16bit", "base model, 16-bit"),
                       ("base_fp32", "base model, fp32"),
                       ("base_quantized", f"quantized ({s['quantized_bits_per_weight']:.3f} bits/weight on linears)"),
                       ("adapter_fp32", "LoRA adapter, fp32"), ("adapter_bf16", "LoRA adapter, bf16"),
                       ("checkpoint", "training checkpoint (+ optimizer state)"),
                       ("merged", "merged model, 16-bit")):  # fmt: skip
        st.add_row(label, size_text(s[key]))
    con.print(st)
    rank = mem.get("per_rank") or {}
    n = int(rank.get("num_gpus") or 1)
    each = f"per GPU, each of {n} ({rank.get('sharding')}), " if n > 1 else ""
    mt = Table(title=f"GPU memory ({each}peak in phase: {mem['peak_phase']})")
    mt.add_column("component")
    mt.add_column("bytes", justify="right")
    mt.add_column("size", justify="right")
    for name, value in mem["components"].items():
        mt.add_row(mem["component_labels"][name], f"{value:,}", size_text(value))
    mt.add_row("[bold]peak allocated[/bold]", f"{mem['peak_allocated']:,}", size_text(mem["peak_allocated"]))
    mt.add_row("peak reserved", f"{mem['peak_reserved']:,}", size_text(mem["peak_reserved"]))
    mt.add_row("[bold]total (nvidia-smi)[/bold]", f"{mem['total']:,}", size_text(mem["total"]))
    low, high = mem["range"]["total"]
    mt.add_row("total range (fits use the high)", f"{low:,} – {high:,}", f"{size_text(low)} – {size_text(high)}")
    if n > 1:
        every = rank["all_gpus_total"]
        mt.add_row(f"[bold]all {n} GPUs (total)[/bold]", f"{every:,}", size_text(every))
    if mem.get("host_peak"):
        mt.add_row("host RAM (CPU)" + (" per rank" if n > 1 else ""), f"{mem['host_peak']:,}",
                   size_text(mem["host_peak"]))  # fmt: skip
    if nvme := int((mem.get("host") or {}).get("nvme") or 0):
        mt.add_row("NVMe (ZeRO-Infinity)" + (" per rank" if n > 1 else ""), f"{nvme:,}", size_text(nvme))
    con.print(mt)
    _print_fit(con, d)
    _print_time(con, d)
    _print_serving(con, d)
    for note in d["notes"]:
        con.print(f"• {note}")


def _print_advice(d: dict[str, Any]) -> None:
    """The make-it-fit levers (the contract's ``advice``), best first, with the options that apply each."""
    from rich.console import Console
    from rich.table import Table

    fit = d.get("fit")
    title = f"Make it fit{' on ' + fit['name'] if fit else ''}: levers, best first (each one re-estimated)"
    t = Table(title=title)
    for col in ("lever", "options", "total", "saves", "fits", "step"):
        t.add_column(col, justify="left" if col in ("lever", "options") else "right")
    for lv in d["advice"]:
        options = " ".join(_option(k, v) for k, v in lv["plan_changes"].items())
        fits = "—" if lv["fits"] is None else "yes" if lv["fits"] else "no"
        step = "—" if lv["step_s"] is None else f"{lv['step_s']:.2f} s"
        t.add_row(lv["label"], options, gib_text(lv["total"]), gib_text(lv["saves_bytes"]), fits, step)
    con = Console()
    con.print(t if d["advice"] else "no lever lowers this plan's memory further")
    for lv in d["advice"][:3]:
        con.print(f"• {lv['label']}: {lv['tradeoff']}")


def _option(name: str, value: Any) -> str:
    """A plan change as the command-line option that makes it."""
    flag = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return flag if value else "--no-" + flag[2:]
    return f"{flag} {','.join(value) if isinstance(value, list) else value}"


def _print_serving(con: Any, d: dict[str, Any]) -> None:
    s = d.get("serving")
    if not s:
        return
    verdict = "" if "fits" not in s else f"; {'fits' if s['fits'] else 'does not fit'} on {d['fit']['name']}"
    con.print(
        f"serving ({s['format']}, {s['context_len']:,} tokens × {s['concurrency']}): weights {gib_text(s['weights'])}"
        f" + KV cache {gib_text(s['kv_cache'])} + activations {gib_text(s['activations'])} + overhead "
        f"{gib_text(s['overhead'])} = {gib_text(s['total'])}{verdict}"
    )


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


def estimate_cmd(args: argparse.Namespace) -> None:
    """Storage and GPU memory of a fine-tune, by component (with --gpu: the fit, time and cost too)."""
    p = _plan_of(args)
    service = _service(args)
    resolved = service.resolve(p)
    if args.traced:  # the trace starts first and runs beside the estimate, on the other core
        depth = [] if args.traced_all_layers else ["--extrapolate"]
        with _trainer_started("trainer.traced", p, resolved, depth) as traced:
            contract = service.contract(p, resolved)
            contract["traced"] = traced()
    else:
        contract = service.contract(p, resolved)
    if args.as_json:
        echo(json.dumps(contract, indent=2))
        return
    _print_estimate(contract)
    if args.advise:
        _print_advice(contract)
    if args.traced:
        traced = contract["traced"]
        echo(f"traced peak (FakeTensorMode): {size_text(traced['measured']['peak_allocated'])}")
        echo(_depth_text(traced.get("depth") or {}))
        for note in traced.get("notes") or ():
            if note not in contract["memory"]["notes"]:  # the trace's own (a value it could not read)
                echo(f"  note: {note}")


def _depth_text(depth: Mapping[str, Any]) -> str:
    """How deep the trace went: every layer, or a few extended to the model's depth (and why not, if not)."""
    layers = depth.get("layers")
    if depth.get("extrapolated"):
        traced = ", ".join(str(d) for d in depth["traced"])
        return (f"  traced at {traced} decoder layers and extended to {layers} (every figure exactly affine in "
                "depth; --traced-all-layers traces the whole stack)")  # fmt: skip
    why = depth.get("why")
    return f"  traced all {layers} decoder layers" + (f" ({why})" if why else "")


# ---------------------------------------------------------------------------------------------- verify


def _trainer_run(module: str, plan: Plan, resolved: Resolved, extra: list[str]) -> dict[str, Any]:
    """Run a trainer recipe in its own process (never in this one) and read its result JSON."""
    with _trainer_started(module, plan, resolved, extra) as result:
        return result()


@contextlib.contextmanager
def _trainer_started(
    module: str, plan: Plan, resolved: Resolved, extra: list[str]
) -> Iterator[Callable[[], dict[str, Any]]]:
    """A trainer recipe started in its own process (never in this one); the value waits for it and reads its result
    JSON. Leaving the block stops a process still running (this command failed meanwhile)."""
    import subprocess
    import tempfile

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
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

        def result() -> dict[str, Any]:
            _, stderr = proc.communicate()
            if not out.exists():
                lines = [line for line in stderr.splitlines() if line.strip()]
                raise UsageError(f"the run failed (exit {proc.returncode}): {lines[-1] if lines else 'no output'}")
            data: dict[str, Any] = json.loads(out.read_text())
            return data

        try:
            yield result
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


def verify_cmd(args: argparse.Namespace) -> None:
    """Run a real training step and print measured next to estimated, per component."""
    p = _plan_of(args, device=args.device or "cpu")
    est, resolved = _service(args).estimate(p)
    result = _trainer_run("trainer.run", p, resolved, ["--device", p.device, "--steps", str(args.steps)])
    report = compare(est, result) | {"plan": est["plan"], "versions": result.get("versions"),
                                      "estimate": est, "result": result}  # fmt: skip
    if args.as_json:
        echo(json.dumps(report, indent=2))
    else:
        _print_comparison(report)


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


def rent_cmd(args: argparse.Namespace) -> None:
    """Which GPU to rent: every catalog GPU and count (1, 2, 4, 8) that fits, cheapest first for the token budget
    (--train-tokens, or --dataset-tokens × --epochs)."""
    out = _service(args).rent(_plan_of(args))
    if args.as_json:
        echo(json.dumps(out, indent=2))
    else:
        _print_rent(out, args.limit)


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


EXPORT_FORMATS = ("trl", "trl-python", "axolotl", "accelerate", "deepspeed")


def export_cmd(args: argparse.Namespace) -> None:
    """The plan as ready-to-run configuration for TRL, axolotl, accelerate or DeepSpeed."""
    from app.configs import export_plan

    service = _service(args)
    p = _plan_of(args)
    _, resolved = service.estimate(p)  # the plan must estimate: a bad plan or config is exit code 2
    exported = export_plan(p, args.format, service.model_id(p, resolved))
    if args.out is None:
        sys.stdout.write(exported.text)
    else:
        args.out.write_text(exported.text)
        echo(f"wrote {args.out} ({args.format})", err=True)
    for note in exported.notes:
        echo(f"note: {note}", err=True)


def import_cmd(args: argparse.Namespace) -> None:
    """Read an axolotl or TRL config into a plan (printed as plan JSON for --plan); keys memory does not depend on
    are listed as ignored."""
    from app.configs import import_config

    try:
        text = args.file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {args.file}: {exc}") from None
    imported = import_config(text, args.format, str(args.file), args.objective)
    if args.as_json:
        echo(json.dumps(imported.to_dict(), indent=2))
        return
    echo(json.dumps({k: v for k, v in imported.plan.to_dict().items() if v is not None}, indent=2))
    if imported.ignored:
        echo(f"ignored (memory does not depend on them): {', '.join(imported.ignored)}", err=True)
    for note in imported.notes:
        echo(f"note: {note}", err=True)


# ---------------------------------------------------------------------------------------------- the rest


def storage_cmd(args: argparse.Namespace) -> None:
    """The rule of thumb: parameters × bytes per parameter."""
    params, fraction = args.params, args.trainable_fraction
    if not params >= 1 or params != int(params):
        raise UsageError("--params must be a whole number of parameters ≥ 1, e.g. 10e9")
    if not 0 <= fraction <= 1:
        raise UsageError("--trainable-fraction must be between 0 and 1")
    r = RuleOfThumb(int(params), fraction)
    if args.as_json:
        echo(json.dumps(r.to_dict() | {"why_exact_differs": list(WHY_EXACT_DIFFERS)}, indent=2))
        return
    echo(f"{int(params):,} parameters")
    rows = (
        ("FP16 / BF16 (2 B each)", r.fp16),
        ("4-bit (0.5 B each)", r.int4),
        (f"adapter, {fraction:.2%} in FP16", r.adapter),
        ("QLoRA total (4-bit + adapter)", r.qlora_total),
    )
    for label, value in rows:
        echo(f"  {label + ':':31s} {size_text(value)}")
    echo("Why the exact figure for a real model differs (tuneplan estimate shows it):")
    for why in WHY_EXACT_DIFFERS:
        echo(f"  - {why}")


def models_cmd(args: argparse.Namespace) -> None:
    """Search the built-in model catalog."""
    found = catalog.search_models(args.q, limit=100) if args.q else list(catalog.models())
    if args.as_json:
        echo(json.dumps([{"id": m.id, "hf_id": m.hf_id, "params": m.params} for m in found], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title="Catalog models")
    for col in ("id", "Hub id", "parameters"):
        t.add_column(col, justify="right" if col == "parameters" else "left")
    for m in found:
        t.add_row(m.id, m.hf_id, f"{m.params / 1e9:.2f} B")
    Console().print(t)


def gpus_cmd(args: argparse.Namespace) -> None:
    """List the built-in GPU catalog."""
    gs = catalog.gpus()
    if args.as_json:
        echo(json.dumps([{"id": g.id, "name": g.name, "usable_bytes": g.usable_bytes} for g in gs], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title="Catalog GPUs")
    for col in ("id", "name", "usable"):
        t.add_column(col, justify="right" if col == "usable" else "left")
    for g in gs:
        t.add_row(g.id, g.name, gib_text(g.usable_bytes))
    Console().print(t)


def serve_cmd(args: argparse.Namespace) -> None:
    """Start the web app and REST API (http://127.0.0.1:8000, API docs at /docs)."""
    from app.serve import serve

    serve(host=args.host, port=args.port, workers=args.workers, jobs=not args.no_jobs)


# ---------------------------------------------------------------------------------------------- the parser


def _model_inputs(parser: argparse.ArgumentParser, model_help: str) -> None:
    parser.add_argument("model", nargs="?", help=model_help + " (default: none: give --config or --plan instead)")
    parser.add_argument("--config", type=Path, metavar="FILE", help="a config.json file instead of a model id "
                        "(default: none)")  # fmt: skip
    parser.add_argument("--plan", dest="plan_file", type=Path, metavar="FILE", help="read the whole plan from a JSON "
                        "file; options given too override its fields (default: none)")  # fmt: skip
    parser.add_argument("--prices", type=Path, metavar="FILE", default=os.environ.get("TUNEPLAN_PRICES") or None,
                        help="a price table (JSON, like estimator/data/prices.json) to cost with instead of the "
                        "built-in one (default: TUNEPLAN_PRICES)")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The ``tuneplan`` command and its subcommands."""
    parser = argparse.ArgumentParser(prog="tuneplan", description="Plan the disk and GPU memory of a fine-tune.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, fn: Callable[[argparse.Namespace], None], summary: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=summary, description=fn.__doc__)
        p.set_defaults(run=fn)
        return p

    est = command("estimate", estimate_cmd, "storage and GPU memory of a fine-tune, by component")
    _model_inputs(est, "catalog id or Hugging Face Hub id")
    est.add_argument("--traced", action="store_true", help="trace a real step under FakeTensorMode (train extra). "
                     "Default: off")  # fmt: skip
    est.add_argument("--traced-all-layers", action="store_true", help="with --traced: trace every decoder layer "
                     "instead of a few extended to the model's depth (the shortcut is taken only where it is exact). "
                     "Default: off")  # fmt: skip
    est.add_argument("--json", dest="as_json", action="store_true", help="print the JSON contract (it always "
                     "holds the advice) instead of the tables. Default: tables")  # fmt: skip
    est.add_argument("--advise", action="store_true", help="also print the make-it-fit advisor's levers: each "
                     "change that lowers the memory, with the peak it gives. Default: off")  # fmt: skip
    add_plan_options(est)

    ver = command("verify", verify_cmd, "a real training step, measured next to the estimate (train extra)")
    _model_inputs(ver, "catalog id or Hub id")
    ver.add_argument("--steps", type=int, default=1, metavar="N", help="measured steps after one warm-up step "
                     "(default: 1)")  # fmt: skip
    ver.add_argument("--json", dest="as_json", action="store_true", help="print the comparison as JSON (default: "
                     "a table)")  # fmt: skip
    add_plan_options(ver)

    rent = command("rent", rent_cmd, "which GPU to rent: every catalog GPU and count that fits, cheapest first")
    _model_inputs(rent, "catalog id or Hugging Face Hub id")
    rent.add_argument("--limit", type=int, default=20, metavar="N", help="show this many options (the JSON has all; "
                      "default: 20)")  # fmt: skip
    rent.add_argument("--json", dest="as_json", action="store_true", help="print JSON (default: a table)")
    add_plan_options(rent)

    exp = command("export", export_cmd, "the plan as TRL, axolotl, accelerate or DeepSpeed configuration")
    _model_inputs(exp, "catalog id or Hugging Face Hub id")
    exp.add_argument("--format", choices=EXPORT_FORMATS, default="trl", help="trl (a trl <objective> --config "
                     "YAML), trl-python, axolotl, accelerate or deepspeed (default: trl)")  # fmt: skip
    exp.add_argument("--out", type=Path, metavar="FILE", help="write to this file (default: standard output)")
    add_plan_options(exp)

    imp = command("import", import_cmd, "an axolotl or TRL config read into a plan")
    imp.add_argument("file", type=Path, help="an axolotl YAML or a TRL config (YAML or JSON); required, no default")
    imp.add_argument("--format", choices=("axolotl", "trl"), help="axolotl or trl (default: from the keys)")
    imp.add_argument("--objective", choices=OBJECTIVES, help="the objective (the trl command) the file is for "
                     "(default: axolotl's rl:, a TRL file's name such as dpo.yaml, or its keys; else sft)")  # fmt: skip
    imp.add_argument("--json", dest="as_json", action="store_true", help="print mapped and ignored keys too "
                     "(default: the plan only)")  # fmt: skip

    st = command("storage", storage_cmd, "the rule of thumb: parameters × bytes per parameter")
    st.add_argument("--params", type=float, required=True, metavar="N", help="number of parameters, e.g. 10e9 "
                    "(required, no default)")  # fmt: skip
    st.add_argument("--trainable-fraction", type=float, default=0.01, metavar="X",
                    help="share of parameters in the adapter (default 0.01)")  # fmt: skip
    st.add_argument("--json", dest="as_json", action="store_true", help="print JSON (default: text)")

    models = command("models", models_cmd, "search the built-in model catalog")
    models.add_argument("q", nargs="?", default="", help="search text: id, Hub id, name or family (default: list "
                        "them all)")  # fmt: skip
    models.add_argument("--json", dest="as_json", action="store_true", help="print JSON (default: a table)")

    gpus = command("gpus", gpus_cmd, "list the built-in GPU catalog")
    gpus.add_argument("--json", dest="as_json", action="store_true", help="print JSON (default: a table)")

    serve = command("serve", serve_cmd, "start the web app and REST API")
    serve.add_argument("--host", help="interface to bind (default: TUNEPLAN_HOST, else 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: TUNEPLAN_PORT, else 8000)")
    serve.add_argument("--workers", type=int, metavar="N", help="web worker processes (default: TUNEPLAN_WORKERS, "
                       "else 1); one of them runs the verify jobs")  # fmt: skip
    serve.add_argument("--no-jobs", action="store_true", help="serve estimates only: no verify runs (default: verify "
                       "runs on, as TUNEPLAN_JOBS_ENABLED says)")  # fmt: skip
    return parser


CLI_FALLBACK_HINT = "use a catalog model (tuneplan models) or give its config.json with --config"


def cli_message(exc: AppError) -> str:
    """An app error as the command line says it: its own options instead of the API's, and the catalog models of the
    same shape family when the model could not be looked up."""
    message = exc.message.replace(FALLBACK_HINT, CLI_FALLBACK_HINT)
    suggestions = exc.extra.get("suggestions") or []
    if suggestions:
        message += f"; catalog models of the same family or close to it: {', '.join(suggestions)}"
    return message


def main(argv: list[str] | None = None) -> int:
    """Run one command; the exit code (2: bad input, with a message on stderr saying what to fix)."""
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (EstimatorError, UsageError) as exc:
        echo(f"error: {flags(str(exc))}", err=True)
        return 2
    except AppError as exc:
        echo(f"error: {flags(cli_message(exc))}", err=True)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
