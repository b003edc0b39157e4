"""The codebase's shape: one public surface for the estimator, no import cycles, short functions, and one
declaration of the plan that every surface derives from."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import estimator

ROOT = Path(__file__).resolve().parents[1]
MAX_FUNCTION_LINES = 80


def _sources(*folders: str) -> Iterator[Path]:
    for folder in folders:
        yield from sorted((ROOT / folder).rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


# ---------------------------------------------------------------------------------------------- estimator's surface


def _isort_key(name: str) -> tuple[int, str]:
    """CONSTANTS, then Classes, then functions, each alphabetical (as ruff's RUF022 sorts ``__all__``)."""
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)


def test_estimator_all_is_sorted_and_complete() -> None:
    names = list(estimator.__all__)
    assert names == sorted(names, key=_isort_key) and len(set(names)) == len(names)
    assert all(hasattr(estimator, name) for name in names)
    tree = ast.parse((ROOT / "estimator" / "__init__.py").read_text())
    imported = {alias.asname or alias.name for node in tree.body if isinstance(node, ast.ImportFrom)
                for alias in node.names}  # fmt: skip
    assert imported == set(names), (imported - set(names), set(names) - imported)


def test_nothing_outside_the_estimator_imports_its_private_modules() -> None:
    offenders = []
    for path in _sources("app", "trainer", "bench", "tests"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            modules: list[str] = []
            if isinstance(node, ast.ImportFrom) and not node.level and node.module:
                modules = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            if any(m.startswith("estimator._") or m.startswith("estimator.") and ".._" in m for m in modules):
                offenders.append(f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}")
            elif isinstance(node, ast.ImportFrom) and node.module == "estimator":
                offenders += [f"{path.relative_to(ROOT)}:{node.lineno}" for a in node.names if a.name.startswith("_")]
    assert offenders == []


# ---------------------------------------------------------------------------------------------- imports and size


def _app_import_graph() -> dict[str, set[str]]:
    """Module → the ``app`` modules it imports (anywhere in the file, function bodies included)."""
    modules = {_module_name(p): p for p in _sources("app")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                assert not node.level, f"{name}: use absolute imports"
                base = node.module or ""
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_app_has_no_import_cycle() -> None:
    graph = _app_import_graph()
    assert "app.routes.api" in graph["app.routes"]  # the graph sees package imports
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]


def test_the_job_runner_and_the_hub_client_know_nothing_of_http_frameworks() -> None:
    for name in ("app/jobs/runner.py", "app/jobs/store.py", "app/hub/client.py", "app/service.py", "app/errors.py"):
        tree = ast.parse((ROOT / name).read_text())
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not imported & {"fastapi", "starlette"}, name


def test_no_function_is_longer_than_80_lines() -> None:
    long = []
    for path in _sources("estimator", "app"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert long == []


# ---------------------------------------------------------------------------------------------- one plan


THROWAWAY = """\
    throwaway_knob: int = _spec(
        3, "int", "Throw-away knob", "A field a test adds to show it reaches every surface.", "Training",
        low=1, high=9)
"""

PROBE = """
import contextlib, io, json, sys
from fastapi.testclient import TestClient
from app.cli import main
from app.main import create_app
from estimator import Plan


def cli(*args):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        code = main(list(args))
        return code, out.getvalue()
    return 0, out.getvalue()


report = {"default": Plan(model="gpt2").throwaway_knob}
with TestClient(create_app(), base_url="http://127.0.0.1") as client:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    report["body"] = schemas["PlanBody"]["properties"].get("throwaway_knob")
    query = client.get("/openapi.json").json()["paths"]["/api/estimate"]["get"]["parameters"]
    report["query"] = [p["name"] for p in query]
    report["refused"] = client.post("/api/estimate", json={"model": "gpt2", "throwaway_knob": 10}).json()["detail"]
    page = client.get("/?model=gpt2&seq_len=256&throwaway_knob=4")
    report["page_status"] = page.status_code
    report["page"] = 'name="throwaway_knob"' in page.text and 'value="4"' in page.text
    report["script"] = '"name": "throwaway_knob"' in page.text or '"name":"throwaway_knob"' in page.text
report["cli_help"] = "--throwaway-knob" in cli("estimate", "--help")[1]
code, output = cli("estimate", "gpt2", "--seq-len", "256", "--throwaway-knob", "5", "--json")
report["cli_plan"] = json.loads(output)["plan"]["throwaway_knob"] if code == 0 else output
print(json.dumps(report))
"""


def test_a_field_added_to_the_plan_reaches_the_api_the_cli_and_the_page(tmp_path: Path) -> None:
    """Add one field to ``Plan`` in a copy of the code, edit nothing else: the API schema, the query parameters,
    the validation, the CLI's options and the page form all have it."""
    for folder in ("estimator", "app", "templates", "static"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    plan_py = tmp_path / "estimator" / "_plan.py"
    source = plan_py.read_text()
    anchor = "    def __post_init__(self) -> None:"
    assert source.count(anchor) == 1
    plan_py.write_text(source.replace(anchor, THROWAWAY + "\n" + anchor))
    env = os.environ | {"PYTHONPATH": str(tmp_path), "TUNEPLAN_DATA_DIR": str(tmp_path / "data")}
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["default"] == 3
    assert report["body"]["minimum"] == 1 and report["body"]["maximum"] == 9 and report["body"]["default"] == 3
    assert "throwaway_knob" in report["query"]
    assert "throwaway_knob" in report["refused"] and "9" in report["refused"]
    assert report["page_status"] == 200 and report["page"] and report["script"]
    assert report["cli_help"] is True and report["cli_plan"] == 5
