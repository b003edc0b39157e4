"""Package boundaries: the estimator is standard library only; the web app never imports the training stack."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY_FOR_ESTIMATOR = ("torch", "fastapi", "starlette", "jinja2", "httpx", "sqlite3", "numpy", "pydantic")
TRAIN_STACK = ("torch", "transformers", "peft", "bitsandbytes")


def _loaded_after(code: str, names: tuple[str, ...]) -> list[str]:
    probe = f"{code}\nimport sys\nprint(' '.join(n for n in {names!r} if n in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.split()


def test_estimator_imports_no_heavy_module() -> None:
    code = "import estimator\nfrom estimator import Plan, estimate\nestimate(Plan(model='llama-3.1-8b'))"
    assert _loaded_after(code, HEAVY_FOR_ESTIMATOR) == []


def test_estimator_sources_import_only_the_standard_library() -> None:
    files = sorted((ROOT / "estimator").glob("*.py"))
    assert files
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                tops = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: inside the package
                    continue
                tops = [(node.module or "").split(".")[0]]
            else:
                continue
            for top in tops:
                assert top == "__future__" or top in sys.stdlib_module_names, f"{path.name}: imports {top}"


def test_app_does_not_import_the_training_stack() -> None:
    code = "import app.main\napp.main.create_app()"
    assert _loaded_after(code, TRAIN_STACK) == []


def test_trainer_does_not_import_app() -> None:
    for path in sorted((ROOT / "trainer").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                assert not any(a.name == "app" or a.name.startswith("app.") for a in node.names), path.name
            elif isinstance(node, ast.ImportFrom) and not node.level:
                mod = node.module or ""
                assert mod != "app" and not mod.startswith("app."), path.name
